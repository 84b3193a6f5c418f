"""``kecpm knowledge``: build background knowledge for posts with an LLM, and inspect trajectories."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..agents.schemas import Reflection
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
    from ..agents import KnowledgeFailure, KnowledgeResult
    from ..errors import Problem
    from ..records import Post

knowledge_app = typer.Typer(
    help="Background knowledge for posts: generate -> critique -> revise.", no_args_is_help=True
)

CACHE_NAME = "knowledge.sqlite"
REPORT_NAME = "knowledge_report.json"


def register(app: typer.Typer) -> None:
    app.add_typer(knowledge_app, name="knowledge")


def _input_failures(problems: list[Problem], posts: list[Post]) -> list[KnowledgeFailure]:
    """Unreadable records as failures of kind ``input``, filed under the record's id when it is known
    and no valid post has it, else under ``FILE:LINE`` (a duplicate, a line that is not JSON)."""
    from ..agents import KnowledgeFailure

    taken = {p.id for p in posts}
    failures = []
    for problem in problems:
        name = problem.record if problem.record and problem.record not in taken else None
        where = f"{Path(problem.source).name}:{problem.line}" if problem.source else f"line {problem.line}"
        failures.append(KnowledgeFailure(post_id=name or where, kind="input", message=str(problem), retryable=True))
    return failures


@knowledge_app.command("build")
def build(
    data: Annotated[
        Path, typer.Option("--data", help="A KECPM file (e.g. seed_17/val.json; its captions are read too).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The output folder (knowledge file, cache, report, manifest).")],
    store: Annotated[
        str | None, typer.Option("--store", help="A demonstration store (folder or http://HOST:PORT); none: no demos.")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=0, help="Demonstrations per post.")] = 2,
    collection: Annotated[str, typer.Option("--collection", help="The store's collection.")] = "kecpm-demonstrations",
    llm: Annotated[
        str | None,
        typer.Option(
            "--llm",
            help="'embedded' (SmolLM2 on llama.cpp, offline) or an OpenAI-compatible base URL; "
            "default: $KECPM_LLM_BASE_URL, else embedded.",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="The model name (default: $KECPM_LLM_MODEL).")] = None,
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="The environment variable holding the API key.")
    ] = "KECPM_LLM_API_KEY",
    rounds: Annotated[int, typer.Option("--rounds", min=0, help="Critique/revise rounds (0: generate only).")] = 1,
    reflection: Annotated[
        Reflection,
        typer.Option(
            "--reflection",
            help="What a round does with its critique: revise (another LLM call) or drop_unsupported "
            "(keep the statements the critique does not mark unsupported).",
        ),
    ] = "revise",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Posts in flight (default: 1 embedded, 16 remote).")
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Retries of a failed call (429, 5xx, timeouts).")
    ] = 4,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=16, help="Cap on each answer's tokens.")] = 320,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.2,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per call.")] = 120.0,
    vision: Annotated[bool, typer.Option("--vision", help="Send post images (when their paths are known).")] = False,
    template: Annotated[
        list[str] | None, typer.Option("--template", help="stage=name@vN, e.g. generate=generate@v2 (repeatable).")
    ] = None,
    templates_dir: Annotated[
        list[Path] | None, typer.Option("--templates-dir", help="A folder of template files (repeatable).")
    ] = None,
    input_price: Annotated[float, typer.Option("--input-price", help="Cost per million input tokens.")] = 0.0,
    output_price: Annotated[float, typer.Option("--output-price", help="Cost per million output tokens.")] = 0.0,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N posts.")] = None,
    only_failed: Annotated[
        bool,
        typer.Option(
            "--only-failed", help="Build only the posts that failed before or have no knowledge yet in this run."
        ),
    ] = False,
    cache: Annotated[Path | None, typer.Option("--cache", help=f"The cache (default: OUT/{CACHE_NAME}).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    dry_run: DryRunOption = False,
    budget: BudgetOption = None,
    budget_tokens: BudgetTokensOption = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray", help="Build on a Ray cluster: auto, local or HOST:PORT (needs kecpm[ray] and an --llm URL)."
        ),
    ] = None,
) -> None:
    """Build knowledge for every post of --data; resumable (finished calls are cached), failures listed.

    --dry-run says what it would cost first; --budget/--budget-tokens stop it before it costs more
    (exit code 4; rerun with a higher budget to resume)."""
    from ..errors import DataError, KecpmError
    from ..llm import LLMConfig
    from ..pipeline import Manifest, PipelineConfig, RetrieveDemonstrations, knowledge_builder
    from ..post_files import read_post_file
    from ..retrieval import RetrievalError, SelectionConfig

    try:
        # Lenient: a bad record is listed as a failure and the rest of the file is built.
        read = read_post_file(data, knowledge=False, lenient=True)
    except (DataError, FileNotFoundError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    posts, split = read.posts[:limit] if limit else read.posts, read.split
    for warning in read.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    unreadable = _input_failures(read.problems, posts)
    try:
        templates = dict(item.split("=", 1) for item in template or [])
    except ValueError:
        err_console.print("[red]error:[/red] --template takes stage=name@vN")
        raise typer.Exit(2) from None
    base_url = None if llm == "embedded" else llm
    try:
        config = LLMConfig.from_env(
            model=model,
            api_key_env=api_key_env,
            max_tokens=max_tokens,
            temperature=temperature,
            timeout=timeout,
            vision=vision,
            input_price=input_price,
            output_price=output_price,
        )
        if llm is not None:
            config = config.model_copy(update={"base_url": base_url})
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    # The pipeline's own stages, configured from the flags: the prompts are the ones `kecpm run` and
    # KECPMPipeline send for the same post.
    pipeline = PipelineConfig(
        store=store if k > 0 else None,
        collection=collection,
        selection=SelectionConfig(k=max(k, 1)),
        llm=config,
        rounds=rounds,
        reflection=reflection,
        concurrency=concurrency,
        retries=retries,
        templates=templates,
        template_dirs=templates_dir or [],
        knowledge_cache=cache or out / CACHE_NAME,
        ray=ray,
    )
    out.mkdir(parents=True, exist_ok=True)
    retrieve = RetrieveDemonstrations(pipeline)
    try:
        retrieve.store()  # open it now: a store that is not there is one error, not one per post
    except (RetrievalError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    if store is None:
        err_console.print("[yellow]note:[/yellow] no --store: the prompts carry no demonstrations")
    guard = spend_guard(spend_limit(budget, budget_tokens), config)
    if ray is not None and guard is not None:
        print_error(KecpmError("a budget is not held across a Ray cluster's tasks yet: build with --ray or a budget"))
        raise typer.Exit(2)
    builder = knowledge_builder(
        pipeline, progress=progress, server_log=out / "llm_server.log" if config.embedded else None, spend=guard
    )
    if dry_run:
        # No server, no claims, no writes to the cache: the prompts are rendered and counted, never sent.
        try:
            estimate = asyncio.run(builder.aestimate(posts, retrieve))
        except KecpmError as exc:
            print_error(exc)
            raise typer.Exit(1) from None
        print_estimate(estimate, out)
        return

    async def run() -> tuple:
        async with builder:
            assert builder.cache is not None
            todo = posts
            if only_failed:
                # Failed before, or never built (a record that could not be read then, since fixed)
                failed = {f.post_id for f in builder.cache.failures(builder.run_key)}
                todo = [p for p in posts if p.id in failed or builder.cache.result(p.id, builder.run_key) is None]
            now = {f.post_id for f in unreadable}
            stale = [f.post_id for f in builder.cache.failures(builder.run_key) if f.kind == "input"]
            builder.cache.drop_failures(builder.run_key, [i for i in stale if i not in now])
            for failure in unreadable:
                builder.cache.put_failure(builder.run_key, failure)
            if ray is not None:  # the cluster's tasks share this cache file through its actor
                from ..pipeline import build_knowledge_on_cluster

                report = await asyncio.to_thread(build_knowledge_on_cluster, pipeline, todo, progress=progress)
                retrieve.text_only = report.text_only_posts
            else:
                report = await builder.abuild(todo, retrieve, keep_results=False)
            report.total += len(unreadable)
            report.failures[:0] = unreadable
            path, missing = builder.cache.export_kecpm(posts, out / f"{split}_ofa_knowledge.json", run=builder.run_key)
            return report, builder.run_key, path, missing, builder.chain.templates if builder.chain else {}

    try:
        report, run_key, path, missing, chain_templates = asyncio.run(run())
    except KecpmError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    summary = {
        "run": run_key,
        "data": str(data),
        "knowledge": str(path),
        "missing": missing,
        "text_only_posts": retrieve.text_only,
        **report.model_dump(),
    }
    (out / REPORT_NAME).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    Manifest.create(
        "knowledge",
        config=pipeline,
        inputs=[data],
        models={"llm": config.model},
        templates={stage: t.ref for stage, t in chain_templates.items()},
        outputs={"knowledge": path, "report": out / REPORT_NAME, "cache": cache or out / CACHE_NAME},
        extra={"run": run_key, "posts": len(posts), "text_only_posts": retrieve.text_only},
    ).write(out / "manifest.json")
    print_table(
        f"knowledge for {report.total} posts in {report.wall_s:.1f} s (run {run_key})",
        ["stage", "calls", "cached", "retries", "input tokens", "output tokens", "cost"],
        [
            [s, u.calls, u.cached, u.retries, u.input_tokens, u.output_tokens, f"{u.cost:.4f}"]
            for s, u in report.usage.items()
        ],
    )
    for post_id, warnings in report.warnings.items():
        for warning in warnings:
            err_console.print(f"[yellow]warning:[/yellow] {post_id}: {warning}")
    for failure in report.failures:
        err_console.print(f"[red]failed:[/red] {failure.post_id} ({failure.stage}, {failure.kind}): {failure.message}")
    if retrieve.text_only:
        err_console.print(
            f"[yellow]note:[/yellow] {retrieve.text_only} posts have no image description: "
            "their demonstrations were ranked by text alone"
        )
    console.print(f"wrote {path} ({len(posts) - len(missing)} of {len(posts)} posts with knowledge)")
    if report.left:
        assert report.spend is not None
        spent = report.spend
        err_console.print(
            f"[yellow]stopped by the budget[/yellow] ({spent.limit.describe()}) before crossing it: "
            f"{report.succeeded} posts done, {len(report.left)} left; spent {spent.cost:.6g} "
            f"({spent.tokens:,} tokens in {spent.calls} calls). {spent.refused}. "
            "Every finished call is cached: rerun with a higher --budget to resume."
        )
    if report.failures:
        err_console.print(
            f"{len(report.failures)} posts failed; rerun with --only-failed to retry them (finished calls are cached; "
            "fix the records that could not be read first)"
        )
        raise typer.Exit(1)
    if report.left:
        raise typer.Exit(EXIT_BUDGET)


def _print_result(result: KnowledgeResult) -> None:
    from ..agents import Critique

    console.print(f"[bold]{result.post_id}[/bold]  accepted={result.accepted}")
    for step in result.steps:
        cost = "cached" if step.cached else f"{step.usage.input_tokens}+{step.usage.output_tokens} tokens"
        console.print(f"\n[bold]{step.stage}[/bold] round {step.round} ({step.template}, {cost})")
        if isinstance(step.output, Critique):
            for check in step.output.checks:
                console.print(f"  {check.index}. {check.verdict}: {check.reason}")
            for item in step.output.missing:
                console.print(f"  missing: {item}")
            console.print(f"  accept: {step.output.accept}")
        else:
            for number, statement in enumerate(step.output.statements, start=1):
                console.print(f"  {number}. {statement}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print("\n[bold]knowledge[/bold]")
    for statement in result.knowledge:
        console.print(f"  - {statement}")


@knowledge_app.command("show")
def show(
    out: Annotated[Path, typer.Option("--out", help="The output folder of a build.")],
    post_id: Annotated[str | None, typer.Argument(help="A post id; none: a summary of the build.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help=f"The cache (default: OUT/{CACHE_NAME}).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="A run key (default: the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One post's trajectory (every round's output), or a summary: runs, results, failures."""
    from ..agents import KnowledgeCache

    path = cache or out / CACHE_NAME
    if not path.exists():
        err_console.print(f"[red]error:[/red] no cache at {path}")
        raise typer.Exit(1)
    with KnowledgeCache(path) as store:
        runs = store.runs()
        chosen = run or (runs[0] if runs else None)
        if post_id is not None:
            result = store.result(post_id, chosen)
            if result is None:
                err_console.print(f"[red]error:[/red] no result for {post_id!r} in run {chosen}")
                raise typer.Exit(1)
            if as_json:
                console.print_json(result.model_dump_json())
            else:
                _print_result(result)
            return
        failures = store.failures(chosen)
        results = sum(1 for _ in store.results(chosen))
        if as_json:
            summary = {"runs": runs, "run": chosen, "results": results, "calls": store.count_calls()}
            summary["failures"] = [f.model_dump() for f in failures]
            console.print_json(json.dumps(summary))
            return
        console.print(f"runs: {', '.join(runs) or '(none)'}; showing {chosen}")
        console.print(f"{results} posts with knowledge, {len(failures)} failed, {store.count_calls()} cached calls")
        for failure in failures:
            console.print(f"  failed: {failure.post_id} ({failure.stage}, {failure.kind}): {failure.message}")
