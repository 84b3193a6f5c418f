"""``kecpm run`` (the whole method on a data set), ``kecpm demo`` (the same on a synthetic sample) and
``kecpm extract`` (one post)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._output import console, err_console, print_error, print_table
from ._spend import (
    EXIT_BUDGET,
    BudgetOption,
    BudgetTokensOption,
    DryRunOption,
    print_estimate,
    spend_guard,
    spend_limit,
)

if TYPE_CHECKING:
    from ..agents import SpendLimit
    from ..pipeline import PipelineConfig, RunConfig


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("extract")(extract)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="A pipeline config file (.toml or .yaml); see kecpm.pipeline.PipelineConfig."),
]


RayOption = typer.Option(
    "--ray",
    help="Build knowledge and predict on a Ray cluster: auto, local or HOST:PORT (needs kecpm[ray]; "
    "overrides the config's ray).",
)


def _pipeline_config(path: Path | None, **overrides: object) -> PipelineConfig:
    from ..errors import KecpmError
    from ..pipeline import PipelineConfig

    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return PipelineConfig.from_file(path, **values) if path is not None else PipelineConfig(**values)
    except (KecpmError, FileNotFoundError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None


def _print_stage(stage: str, status: str, seconds: float) -> None:
    if status == "done":
        console.print(f"[green]{stage}[/green]: done in {seconds:.1f} s")
    elif status == "running":
        console.print(f"[bold]{stage}[/bold]: running")
    else:
        console.print(f"{stage}: {status}")


def _run(config: object, *, dry_run: bool = False, budget: SpendLimit | None = None) -> None:
    from ..agents import BudgetStopped
    from ..errors import KecpmError
    from ..pipeline import estimate_method, run_method

    settings: RunConfig = config  # type: ignore[assignment]
    guard = spend_guard(budget or settings.pipeline.budget, settings.pipeline.llm)
    try:
        if dry_run:
            print_estimate(estimate_method(settings, on_stage=_print_stage), settings.out)
            return
        result = run_method(settings, on_stage=_print_stage, spend=guard)
    except BudgetStopped as exc:
        err_console.print(f"[yellow]stopped:[/yellow] {exc}")
        raise typer.Exit(EXIT_BUDGET) from None
    except KecpmError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    print_table(
        "scores on the evaluated split (%)",
        ["metric", "value"],
        [(name, f"{100 * value:.2f}") for name, value in result.scores.items()],
    )
    if any(result.text_only_posts.values()):
        counts = ", ".join(f"{n} {split}" for split, n in result.text_only_posts.items())
        console.print(f"posts without an image description, read by their text alone: {counts}")
    console.print(f"predictions: {result.predictions}")
    console.print(f"report:      {result.report}")
    console.print(f"manifest:    {result.manifest}")


def run(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the run writes (caches included).")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="A KECPM seed folder (train.json, val.json, captions); none: synthetic."),
    ] = None,
    config: ConfigOption = None,
    knowledge: Annotated[
        str, typer.Option("--knowledge", help="llm (build it), released (the authors' ChatGPT files) or none.")
    ] = "llm",
    pool: Annotated[str, typer.Option("--pool", help="Demonstrations to index: train or human.")] = "train",
    split: Annotated[str, typer.Option("--split", help="The split to predict and score.")] = "val",
    parts: Annotated[str, typer.Option("--parts", help="Extractor input preset.")] = "imagecap_know",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    seed: Annotated[int, typer.Option("--seed")] = 17,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N posts of each split.")] = None,
    dry_run: DryRunOption = False,
    budget: BudgetOption = None,
    budget_tokens: BudgetTokensOption = None,
    input_price: Annotated[
        float | None, typer.Option("--input-price", help="Cost per million input tokens (default: the config's).")
    ] = None,
    output_price: Annotated[
        float | None, typer.Option("--output-price", help="Cost per million output tokens (default: the config's).")
    ] = None,
    ray: Annotated[str | None, RayOption] = None,
) -> None:
    """index -> knowledge -> train -> predict -> eval; each stage cached, a rerun redoes only what changed.

    --dry-run says what the knowledge stage would cost (the local index stage runs); --budget/--budget-tokens
    stop the run before it costs more (exit code 4; rerun with a higher budget to resume)."""
    from ..pipeline import RunConfig

    pipeline = _pipeline_config(config, ray=ray)
    prices = {k: v for k, v in {"input_price": input_price, "output_price": output_price}.items() if v is not None}
    if prices:
        pipeline = pipeline.model_copy(update={"llm": pipeline.llm.model_copy(update=prices)})
    try:
        settings = RunConfig(
            out=out,
            data=data,
            pipeline=pipeline,
            knowledge=knowledge,
            pool=pool,
            eval_split=split,
            parts=parts,
            epochs=epochs,
            seed=seed,
            limit=limit,
        )
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    _run(settings, dry_run=dry_run, budget=spend_limit(budget, budget_tokens))


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path("runs/demo"),
    data: Annotated[
        Path | None, typer.Option("--data", help="A KECPM seed folder instead of the synthetic sample.")
    ] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=0, help="Critique/revise rounds.")] = 1,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 20,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N posts of each split.")] = None,
) -> None:
    """The whole method offline on the embedded defaults (SmolLM2, MiniLM), on a small synthetic sample
    (21 train and 7 val posts: a few minutes on 2 cores) unless --data."""
    from ..pipeline import RunConfig

    # The embedded 135M model: short answers keep it fast and stop it rambling.
    pipeline = _pipeline_config(None, llm={"base_url": None, "max_tokens": 160}, rounds=rounds)
    _run(RunConfig(out=out, data=data, pipeline=pipeline, epochs=epochs, limit=limit, synthetic_size=(21, 7)))


def extract(
    text: Annotated[str, typer.Argument(help="The post's text.")],
    model: Annotated[Path, typer.Option("--model", help="A trained extractor folder.")],
    image: Annotated[Path | None, typer.Option("--image", help="The post's image file.")] = None,
    caption: Annotated[str | None, typer.Option("--caption", help="A description of the image.")] = None,
    store: Annotated[str | None, typer.Option("--store", help="A demonstration store (folder or URL).")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """Quintuples for one post, with the knowledge that justified them."""
    from ..errors import KecpmError
    from ..pipeline import KECPMPipeline
    from ..records import PostInput

    settings = _pipeline_config(config, extractor=model, store=store)
    try:
        with KECPMPipeline(settings) as pipeline:
            result = pipeline.invoke(PostInput(text=text, image_path=image, image_description=caption))
    except (KecpmError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(json.dumps(result.model_dump(mode="json")))
        return
    print_table(
        "quintuples",
        ["head", "head type", "tail", "tail type", "relation"],
        [(q.head, q.head_type, q.tail, q.tail_type, q.relation) for q in result.quintuples],
    )
    if result.knowledge is not None:
        console.print("[bold]knowledge[/bold]")
        for statement in result.knowledge.knowledge:
            console.print(f"- {statement}", markup=False)
