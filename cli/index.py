"""``kecpm index``: build and query a Chroma store of demonstrations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._output import console, err_console, print_error, print_table

index_app = typer.Typer(help="Build and query the demonstration store (Chroma).", no_args_is_help=True)

StoreOption = Annotated[
    str,
    typer.Option("--store", help="The store: a directory (embedded Chroma) or http://HOST:PORT (a Chroma server)."),
]
CollectionOption = Annotated[str, typer.Option("--collection", help="The Chroma collection.")]


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")


@index_app.command("build")
def build(
    pool: Annotated[
        str,
        typer.Option(
            "--pool",
            help="'human' (the human-written demonstrations of the KECPM prompts), a KECPM seed folder, "
            "or a labelled file (KECPM .json with captions, MNRE .txt).",
        ),
    ],
    store: StoreOption,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The data folder (for --pool human).")] = None,
    split: Annotated[str, typer.Option("--split", help="The split of a seed folder.")] = "train",
    collection: CollectionOption = "kecpm-demonstrations",
) -> None:
    """Embed a pool of demonstrations into a store (re-running replaces them, by id)."""
    from ..errors import DataError
    from ..retrieval import DemonstrationStore, RetrievalError, StoreConfig, load_pool

    try:
        demonstrations = load_pool(pool, data_dir=data_dir, split=split)
        target = DemonstrationStore(StoreConfig.from_location(store, collection=collection), create=True)
        report = target.add(demonstrations, skip_invalid=True)
    except (DataError, FileNotFoundError, RetrievalError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    for problem in report.problems:
        err_console.print(f"[yellow]skipped:[/yellow] {problem}")
    console.print(
        f"{len(report.added)} demonstrations added from {pool} to {store} (collection {collection!r}, "
        f"{target.model_id}); the store holds {target.count()}"
    )


@index_app.command("query")
def query(
    text: Annotated[str, typer.Argument(help="The post's text.")],
    store: StoreOption,
    caption: Annotated[str, typer.Option("--caption", help="The post's image description.")] = "",
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many demonstrations.")] = 2,
    text_weight: Annotated[float, typer.Option("--text-weight", min=0.0)] = 0.5,
    image_weight: Annotated[float, typer.Option("--image-weight", min=0.0, help="0 for text only.")] = 0.5,
    mmr: Annotated[bool, typer.Option("--mmr", help="Diversify by maximal marginal relevance.")] = False,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Ids to leave out (repeatable).")] = None,
    collection: CollectionOption = "kecpm-demonstrations",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The demonstrations most similar to a post (text and image description)."""
    from ..retrieval import DemonstrationStore, RetrievalError, SelectionConfig, StoreConfig

    try:
        selection = SelectionConfig(k=k, text_weight=text_weight, image_weight=image_weight, mmr=mmr)
        source = DemonstrationStore(StoreConfig.from_location(store, collection=collection))
        hits = source.search(text, caption=caption, selection=selection, exclude_ids=exclude or ())
    except (RetrievalError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(json.dumps([hit.model_dump(mode="json") for hit in hits], ensure_ascii=False))
        return
    rows = [
        (
            hit.demonstration.id,
            f"{hit.score:.3f}",
            f"{hit.text_similarity:.3f}",
            "-" if hit.image_similarity is None else f"{hit.image_similarity:.3f}",
            hit.demonstration.text,
            "; ".join(" | ".join(q.surface()) for q in hit.demonstration.quintuples),
        )
        for hit in hits
    ]
    print_table(f"top {k} of {source.count()}", ["id", "score", "text", "image", "post", "quintuples"], rows)
