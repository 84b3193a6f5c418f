"""``kecpm adapt``, ``kecpm pseudo-label``, ``kecpm train`` and ``kecpm predict``: adapt the encoder to
unlabelled in-domain text, label such text with a teacher model, fine-tune the extractor on labelled posts
(after pseudo-labelled ones, if given), then run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._output import print_error

if TYPE_CHECKING:
    from kecpm.records import Post


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt)
    app.command("pseudo-label")(pseudo_label)
    app.command("train")(train)
    app.command("predict")(predict)


def _load_posts(path: Path, knowledge: Path | None = None) -> list[Post]:
    """A post file's posts with its sibling caption and knowledge files (see
    :func:`kecpm.post_files.read_post_file`); ``knowledge`` (a KECPM file, e.g. the knowledge agent's
    export) then replaces each post's knowledge, record by record."""
    from kecpm.post_files import read_post_file

    if not path.is_file():
        raise typer.BadParameter(f"{path}: no such file")
    return read_post_file(path, knowledge_file=knowledge).posts


def _overrides(items: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes KEY=VALUE, not {item!r}")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


UnlabelledTexts = Annotated[
    list[Path],
    typer.Option("--texts", metavar="FILE", help="unlabelled text: MNRE .txt (every sentence) or KECPM files; repeat"),
]


def _check_files(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file")


def adapt(
    texts: UnlabelledTexts,
    out: Annotated[Path, typer.Option("--out", help="the adapted encoder's folder (for train --checkpoint)")],
    exclude: Annotated[
        list[Path] | None,
        typer.Option(metavar="FILE", help="post files whose texts are left out (the scored splits: val); repeat"),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(metavar="DIR", help="the encoder to adapt (default all-MiniLM-L6-v2)")
    ] = None,
    epochs: Annotated[int, typer.Option()] = 3,
    batch_size: Annotated[int, typer.Option()] = 32,
    learning_rate: Annotated[float, typer.Option(help="of the encoder")] = 1e-4,
    head_steps: Annotated[int, typer.Option(help="first steps training only the new masked-LM head")] = 100,
    seed: Annotated[int, typer.Option()] = 17,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Task-adaptive pretraining: continue the encoder's masked-LM training on unlabelled text, so that
    `kecpm train --checkpoint OUT` starts from an encoder that has read the domain. Its scores are not
    the paper's protocol: report them apart, and --exclude every split that is scored."""
    from kecpm.extractor import AdaptConfig, adapt_encoder
    from kecpm.post_files import unlabelled_posts

    _check_files([*texts, *(exclude or [])])
    chosen, left_out = unlabelled_posts(texts, exclude=exclude or [])
    config = AdaptConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        head_steps=head_steps,
        seed=seed,
        threads=threads,
    )
    typer.echo(f"{len(chosen)} texts ({left_out} left out as in --exclude)")
    report = adapt_encoder([p.tokens for p in chosen], out, encoder=checkpoint, config=config, progress=not quiet)
    losses = ", ".join(f"{loss:.3f}" for loss in report.epoch_losses)
    typer.echo(f"masked-LM loss per epoch: {losses} ({report.seconds:.0f} s)\nadapted encoder: {out}")


def pseudo_label(
    model_dir: Annotated[str, typer.Option("--model", metavar="DIR", help="the teacher: a span-pair model folder")],
    texts: UnlabelledTexts,
    out: Annotated[Path, typer.Option("--out", help="the pseudo-labelled posts to write (KECPM file)")],
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE", help="post files whose texts are left out (the labelled and the scored splits); repeat"
        ),
    ] = None,
    posts: Annotated[
        int | None, typer.Option(min=1, help="read a seeded sample of this many texts (default: all)")
    ] = None,
    seed: Annotated[int, typer.Option(help="of the sample")] = 0,
    entity_threshold: Annotated[float, typer.Option()] = 0.5,
    relation_threshold: Annotated[
        float, typer.Option(help="stricter than prediction's 0.5: fewer, cleaner labels")
    ] = 0.7,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="posts per batch (default: kecpm.extractor.PREDICT_BATCH_SIZE)")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
) -> None:
    """Self-training: label unlabelled text with a trained model's confident quintuples, for `kecpm train
    --pseudo OUT`. The posts it finds nothing in are left out. Not the paper's protocol: report apart, and
    --exclude every split that is trained on or scored."""
    import torch

    from kecpm.extractor import PREDICT_BATCH_SIZE, load_extractor
    from kecpm.extractor import pseudo_label as label
    from kecpm.post_files import unlabelled_posts, write_kecpm

    if threads is not None:
        torch.set_num_threads(threads)
    _check_files([*texts, *(exclude or [])])
    unlabelled, left_out = unlabelled_posts(texts, exclude=exclude or [], sample=posts, seed=seed)
    teacher = load_extractor(model_dir)
    try:
        labelled = label(
            teacher,
            unlabelled,
            entity_threshold=entity_threshold,
            relation_threshold=relation_threshold,
            batch_size=batch_size or PREDICT_BATCH_SIZE,
        )
    except TypeError as error:
        raise typer.BadParameter(str(error)) from error
    write_kecpm(labelled, out)
    quintuples = sum(len(p.quintuples) for p in labelled)
    typer.echo(
        f"{len(unlabelled)} texts read ({left_out} left out as in --exclude); {len(labelled)} labelled, "
        f"{quintuples} quintuples: {out}"
    )


def train(
    train_path: Annotated[Path, typer.Option("--train", help="training posts (KECPM file)")],
    val_path: Annotated[Path, typer.Option("--val", help="validation posts, for early stopping")],
    out: Annotated[Path, typer.Option("--out", help="the model directory to write")],
    inputs: Annotated[
        str, typer.Option(help="what the model reads: imagecap_know, imagecap, know or only_text")
    ] = "imagecap_know",
    knowledge_sentences: Annotated[int | None, typer.Option(help="use the first N knowledge sentences")] = None,
    knowledge_filter: Annotated[
        str, typer.Option(help="all, or naming_post: only the knowledge sentences sharing a word with the post")
    ] = "all",
    train_knowledge: Annotated[
        Path | None, typer.Option(help="a KECPM file whose knowledge replaces the training posts'")
    ] = None,
    val_knowledge: Annotated[
        Path | None, typer.Option(help="a KECPM file whose knowledge replaces the validation posts'")
    ] = None,
    family: Annotated[str, typer.Option(help="span_pair (default, offline) or generative")] = "span_pair",
    checkpoint: Annotated[
        str | None, typer.Option(help="encoder folder (span_pair; default all-MiniLM-L6-v2) or seq2seq/LM folder")
    ] = None,
    epochs: Annotated[int, typer.Option()] = 20,
    batch_size: Annotated[int, typer.Option()] = 16,
    learning_rate: Annotated[float, typer.Option(help="of the pretrained weights")] = 1e-4,
    head_learning_rate: Annotated[float, typer.Option(help="of the new layers")] = 1e-3,
    patience: Annotated[int, typer.Option()] = 6,
    seed: Annotated[int, typer.Option()] = 17,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    metric: Annotated[str, typer.Option(help="val metric for early stopping (kecpm.eval)")] = "micro_f1",
    mode: Annotated[str, typer.Option(help="paper or standard scoring")] = "paper",
    template: Annotated[str | None, typer.Option(help="input template, e.g. extract_input@v1")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="a model or TrainConfig field, K=V")] = None,
    pseudo_path: Annotated[
        Path | None,
        typer.Option(
            "--pseudo",
            metavar="FILE",
            help="self-training: pseudo-labelled posts (kecpm pseudo-label) to train on first "
            "(--set pseudo_epochs=N, default 2)",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Fine-tune the extractor; the model with the best val score is saved to OUT."""
    from kecpm.eval import evaluate, make_scorer
    from kecpm.extractor import (
        GenerativeConfig,
        GenerativeExtractor,
        InputParts,
        SpanPairConfig,
        SpanPairExtractor,
        TrainConfig,
    )
    from kecpm.predictions import write_predictions
    from kecpm.prompts import load_template

    chosen = {"knowledge_filter": knowledge_filter}
    if knowledge_sentences is not None:
        chosen["knowledge_sentences"] = knowledge_sentences
    try:  # validated, so that a bad preset, count or filter is named before training starts
        parts = InputParts.model_validate({**InputParts.preset(inputs).model_dump(), **chosen})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    train_posts = _load_posts(train_path, train_knowledge)
    val_posts = _load_posts(val_path, val_knowledge)
    pseudo_posts = _load_posts(pseudo_path) if pseudo_path is not None else []
    chosen_template = load_template(template) if template else None
    extra = _overrides(settings or [])
    # --set KEY=VALUE names a field of the model's config or of TrainConfig (e.g. return_freed_memory=false)
    train_extra = {key: extra.pop(key) for key in list(extra) if key in TrainConfig.model_fields}
    if family == "span_pair":
        model = SpanPairExtractor(SpanPairConfig(encoder=checkpoint, **extra), parts=parts, template=chosen_template)
    elif family == "generative":
        if checkpoint is None:
            raise typer.BadParameter("the generative family needs --checkpoint (a local HF folder)")
        model = GenerativeExtractor(GenerativeConfig(model=checkpoint, **extra), parts=parts, template=chosen_template)
    else:
        raise typer.BadParameter(f"unknown family {family!r} (span_pair or generative)")
    config = TrainConfig(
        **{
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "head_learning_rate": head_learning_rate,
            "patience": patience,
            "seed": seed,
            "threads": threads,
            **train_extra,
        }
    )
    report = model.fit(
        train_posts,
        val_posts,
        scorer=make_scorer(mode=mode, metric=metric),
        config=config,
        checkpoint_dir=out,
        progress=not quiet,
        data_files={
            role: path
            for role, path in (
                ("train", train_path),
                ("val", val_path),
                ("train_knowledge", train_knowledge),
                ("val_knowledge", val_knowledge),
                ("pseudo", pseudo_path),
            )
            if path is not None
        },
        pseudo=pseudo_posts,
    )
    predictions = model.predict(val_posts)
    write_predictions(out / "val_predictions.jsonl", predictions, img_ids=[p.img_id for p in val_posts])
    result = evaluate(val_posts, predictions, mode=mode)
    typer.echo(
        f"best val {metric} {report.best_score:.4f} at epoch {report.best_epoch} "
        f"({report.seconds_to_best:.0f} s); micro-F1 {result.micro.f1:.4f}, macro-F1 {result.macro_f1:.4f}\n"
        f"model: {out}\nval predictions: {out / 'val_predictions.jsonl'}"
    )


def predict(
    model_dirs: Annotated[
        list[str],
        typer.Option(
            "--model",
            metavar="DIR",
            help="a folder written by kecpm train, or a Hugging Face Hub id of one; given more than once, the "
            "span-pair models' probabilities are averaged (an ensemble)",
        ),
    ],
    data: Annotated[Path, typer.Option("--data", help="posts to read (KECPM file)")],
    out: Annotated[Path, typer.Option("--out", help="predictions file (JSON Lines) to write")],
    knowledge: Annotated[Path | None, typer.Option(help="a KECPM file whose knowledge replaces the posts'")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="posts per batch (default: kecpm.extractor.PREDICT_BATCH_SIZE); with --ray, posts per worker "
            "block (default: ClusterSettings.batch_size)",
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    int8: Annotated[bool, typer.Option(help="int8 encoder (span-pair model): faster, ~2 F1 lower")] = False,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Predict on a Ray cluster: auto, local or HOST:PORT (needs kecpm[ray])."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="With --ray: extractor replicas (default: one per CPU).")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="the Hub revision, for a Hub id")] = None,
) -> None:
    """Predict quintuples for every post, in the predictions format ``kecpm eval`` reads (the same bytes
    on a Ray cluster as here)."""
    from kecpm.errors import KecpmError
    from kecpm.extractor import PREDICT_BATCH_SIZE, load_extractor
    from kecpm.predictions import write_predictions

    if ray is not None and len(model_dirs) > 1:
        raise typer.BadParameter("--ray predicts with one model; an ensemble (several --model) runs here")
    posts = _load_posts(data, knowledge)
    if ray is not None:
        (model_dir,) = model_dirs
        from kecpm.pipeline import ClusterSettings, predict_on_cluster

        blocks = {"batch_size": batch_size} if batch_size is not None else {}
        settings = ClusterSettings(workers=workers, cpus_per_worker=threads or 1, **blocks)
        try:
            predictions = predict_on_cluster(model_dir, posts, address=ray, settings=settings, int8=int8)
        except KecpmError as exc:
            print_error(exc)
            raise typer.Exit(1) from None
    else:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        try:
            models = [load_extractor(model_dir, revision=revision) for model_dir in model_dirs]
            if int8 or len(models) > 1:
                for model_dir, model in zip(model_dirs, models, strict=True):
                    if not hasattr(model, "quantized"):
                        what = "--int8" if int8 else "an ensemble"
                        raise typer.BadParameter(
                            f"{what} is for span-pair models; {model_dir} is a {model.family!r} one"
                        )
            if int8:
                models = [model.quantized() for model in models]
        except KecpmError as exc:  # one sentence naming the folder (or torch) and what to do, not a traceback
            print_error(exc)
            raise typer.Exit(1) from None
        if len(models) > 1:
            from kecpm.extractor import SpanPairEnsemble

            model = SpanPairEnsemble(models)
        else:
            (model,) = models
        predictions = model.predict(posts, batch_size=batch_size or PREDICT_BATCH_SIZE, progress=True)
    write_predictions(out, predictions, img_ids=[p.img_id for p in posts])
    typer.echo(f"{sum(len(p) for p in predictions)} quintuples for {len(posts)} posts: {out}")
