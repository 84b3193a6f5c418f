"""Quality study of the span-pair extractor on the real few-shot splits (val), as a Markdown table.

For each input setting and seed: train on ``seed_N/train`` (with the OFA captions and the authors'
ChatGPT knowledge that ``kecpm.post_files.load_split`` overlays), select the epoch on val paper micro-F1,
then report val micro/macro F1 in paper and standard modes and entity F1, mean +- std over the seeds.
Beside each plain val figure stands the split-val one: val is cut in two seeded halves
(``kecpm.eval.val_halves``), the epoch is chosen on each half and the other half predicted with that
epoch's weights, the pooled predictions scored on all of val (``kecpm.eval.cross_select``); a gain that
comes from selecting on the reported val shows as a gap between the two. (Early stopping still watches
all of val; the halves choose among the epochs it ran.)

    nice -n 10 .venv/bin/python benchmarks/extractor_quality.py --out runs/extractor_quality

Options: ``--seeds 17 67 97``, ``--presets only_text imagecap_know imagecap`` (also ``know``, and
``llm_know`` with ``--knowledge-dir DIR``: a folder of ``seed_N/{train,val}_ofa_knowledge.json`` exported
by the knowledge agent, whose knowledge replaces the ChatGPT one), ``--knowledge-filter naming_post``
(only the knowledge sentences sharing a word with the post, ``InputParts.knowledge_filter``), ``--epochs 20``,
``--set key=value`` (a SpanPairConfig or TrainConfig field; ``--set seed=N`` trains with seed N instead of the
data seed), ``--threads 1``, ``--save DIR`` (keep each run's models in ``DIR/PRESET_seedN/{full,half0,half1}``:
selected on all of val and on each half, for ``benchmarks/extractor_decoding.py``), ``--pretrain-dir DIR``
(self-training, ``fit(pseudo=...)``: first train ``--pretrain-epochs`` epochs on ``DIR/seed_N/pseudo.json``,
written by ``benchmarks/pseudo_labels.py``, without selection, then on the gold posts as usual; not the
paper's protocol; ``--set text_only_epochs=N`` is the labels-only warm start: N epochs on the training
posts' text alone before the full input). "Minutes to best val" counts every stage before the selected one.
Results are appended to ``OUT/runs.jsonl`` as each run ends (a rerun skips the runs already
there with the same epochs, overrides, ``--knowledge-sentences``, ``--knowledge-filter``, ``--knowledge-dir`` and
pretraining), and ``OUT/table.md`` is rewritten after each one.
``--baseline RUNS.jsonl...`` (``--baseline-preset P``) also prints each preset's gain over other studies' runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = {
    "only_text": "text only",
    "imagecap": "+ image description",
    "know": "+ ChatGPT knowledge",
    "imagecap_know": "+ image description + ChatGPT knowledge",
    "llm_know": "+ image description + embedded-LLM knowledge",
}


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_posts(data: Path, seed: int, split: str, knowledge_dir: Path | None):
    from kecpm.post_files import load_split, read_kecpm

    posts = load_split(data / f"seed_{seed}", split)
    if knowledge_dir is None:
        return posts
    folder = knowledge_dir / f"seed_{seed}"
    names = [f"{split}_ofa_knowledge.json", f"{split}_knowledge.json"]
    found = next((folder / n for n in names if (folder / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{folder}: none of {names}")
    generated = read_kecpm(found)
    if [p.tokens for p in generated] != [p.tokens for p in posts]:
        raise ValueError(f"{found}: not the same posts, in the same order, as {split}.json")
    return [p.model_copy(update={"knowledge": g.knowledge}) for p, g in zip(posts, generated, strict=True)]


class EpochRecorder:
    """The trainer's val scorer, recording each epoch's val predictions and, with ``keep_states``, the
    network's weights at the best epoch of each val half (the checkpoints a split-val decoding study
    needs)."""

    def __init__(self, model, halves, scorer, keep_states: bool) -> None:
        self.model, self.halves, self.scorer, self.keep_states = model, halves, scorer, keep_states
        self.predictions: list[list] = []
        self.best = [(float("-inf"), None) for _ in halves]

    def __call__(self, gold, predictions) -> float:
        import copy

        self.predictions.append(list(predictions))
        for h, half in enumerate(self.halves):
            score = self.scorer([gold[i] for i in half], [predictions[i] for i in half])
            if score > self.best[h][0]:
                state = copy.deepcopy(self.model.network.state_dict()) if self.keep_states else None
                self.best[h] = (score, state)
        return self.scorer(gold, predictions)


def scores(prefix: str, val, predictions) -> dict:
    from kecpm.eval import evaluate

    paper = evaluate(val, predictions, mode="paper")
    standard = evaluate(val, predictions, mode="standard")
    return {
        f"{prefix}paper_micro_f1": paper.micro.f1,
        f"{prefix}paper_macro_f1": paper.macro_f1,
        f"{prefix}standard_micro_f1": standard.micro.f1,
        f"{prefix}standard_macro_f1": standard.macro_f1,
        f"{prefix}precision": paper.micro.precision,
        f"{prefix}recall": paper.micro.recall,
        f"{prefix}entity_f1": paper.entity.f1,
    }


def cell(values: list[float], sign: str = "") -> str:
    """Fractions as a percentage cell: the mean ± std over seeds (the value alone for one seed);
    ``sign="+"`` signs a gain."""
    from kecpm.eval import mean_std

    mean, std = mean_std(values)
    return f"{100 * mean:{sign}.1f}" + (f" ± {100 * std:.1f}" if len(values) > 1 else "")


def both(rows: list[dict], name: str) -> str:
    """The plain val and split-val cells of field ``name`` over ``rows``."""
    return f"{cell([r[name] for r in rows])} / {cell([r['split_' + name] for r in rows])}"


def gain(rows: list[dict], base: dict[int, dict], name: str = "paper_micro_f1") -> str:
    """Plain val / split-val gain of ``rows`` over ``base`` (its row per seed): the mean ± std of the
    per-seed differences, over the seeds both have."""
    paired = [r for r in rows if r["seed"] in base]
    return " / ".join(cell([r[k] - base[r["seed"]][k] for r in paired], "+") for k in (name, "split_" + name))


def save_models(model, recorder: EpochRecorder, folder: Path) -> None:
    """``folder/full``: the model selected on all of val; ``folder/half0``, ``half1``: on each half."""
    best = model.network.state_dict()
    model.save(folder / "full")
    for h, (_, state) in enumerate(recorder.best):
        model.network.load_state_dict(state)
        model.save(folder / f"half{h}")
    model.network.load_state_dict(best)


def knowledge_dir_of(preset: str, args: argparse.Namespace) -> Path | None:
    """The folder whose knowledge replaces ChatGPT's: only the ``llm_know`` setting reads one."""
    return args.knowledge_dir if preset == "llm_know" else None


def run_key(preset: str, args: argparse.Namespace, overrides: dict) -> dict:
    """What besides preset and seed makes two runs the same run: a rerun skips a run only if all match."""
    knowledge_dir = knowledge_dir_of(preset, args)
    return {
        "epochs": args.epochs,
        "overrides": overrides,
        "knowledge_sentences": args.knowledge_sentences,
        **({"knowledge_filter": args.knowledge_filter} if args.knowledge_filter != "all" else {}),
        "knowledge_dir": str(knowledge_dir.resolve()) if knowledge_dir is not None else None,
        "pretrain_dir": str(args.pretrain_dir.resolve()) if args.pretrain_dir is not None else None,
        "pretrain_epochs": args.pretrain_epochs if args.pretrain_dir is not None else None,
    }


def same_run(run: dict, key: dict) -> bool:
    # A line written before the knowledge options were recorded reads as neither option given: right for the
    # ChatGPT runs of that time, while an old llm_know run (no folder recorded) is run again, never wrongly skipped.
    return all(run.get(k) == v for k, v in key.items())


def run_one(data: Path, seed: int, preset: str, args: argparse.Namespace, overrides: dict) -> dict:
    import torch

    from kecpm.eval import cross_select, make_scorer, val_halves
    from kecpm.extractor import InputParts, SpanPairConfig, SpanPairExtractor, TrainConfig
    from kecpm.post_files import read_kecpm

    torch.set_num_threads(args.threads)
    knowledge_dir = knowledge_dir_of(preset, args)
    parts = InputParts.preset("imagecap_know" if preset == "llm_know" else preset)
    if args.knowledge_sentences:
        parts = parts.model_copy(update={"knowledge_sentences": args.knowledge_sentences})
    parts = parts.model_copy(update={"knowledge_filter": args.knowledge_filter})
    train = load_posts(data, seed, "train", knowledge_dir)
    val = load_posts(data, seed, "val", knowledge_dir)
    model_fields = {k: v for k, v in overrides.items() if k in SpanPairConfig.model_fields}
    train_fields = {k: v for k, v in overrides.items() if k in TrainConfig.model_fields}
    train_seed = train_fields.pop("seed", seed)
    # The epochs' recorded predictions are at the model's thresholds: choosing thresholds on val is
    # benchmarks/extractor_decoding.py's job, on the saved models, with its own split-val.
    train_fields.setdefault("tune_thresholds", False)
    model = SpanPairExtractor(SpanPairConfig(**model_fields), parts=parts)
    train_fields.setdefault("pseudo_epochs", args.pretrain_epochs)
    config = TrainConfig(seed=train_seed, epochs=args.epochs, **train_fields)
    scorer = make_scorer(mode="paper", metric="micro_f1")
    halves = val_halves(len(val), seed=seed)
    pseudo = read_kecpm(args.pretrain_dir / f"seed_{seed}" / "pseudo.json") if args.pretrain_dir else []
    recorder = EpochRecorder(model, halves, scorer, keep_states=args.save is not None)
    report = model.fit(train, val, scorer=recorder, config=config, progress=False, pseudo=pseudo)
    if args.save is not None:
        save_models(model, recorder, args.save / f"{preset}_seed{seed}")
    # The restored best epoch's predictions: those recorded for it (prediction is deterministic).
    plain = recorder.predictions[report.best_epoch - 1]
    split = cross_select(val, dict(enumerate(recorder.predictions, 1)), scorer, halves)
    return {
        "preset": preset,
        "seed": seed,
        **run_key(preset, args, overrides),
        "best_epoch": report.best_epoch,
        "split_epochs": split.choices,
        "epochs_run": len(report.history),
        "seconds_to_best": round(report.seconds_to_best, 1),
        "seconds": round(report.seconds, 1),
        **({"pretrain_seconds": round(report.pseudo_seconds, 1)} if pseudo else {}),
        **({"text_only_seconds": round(report.text_only_seconds, 1)} if report.text_only_seconds else {}),
        **scores("", val, plain),
        **scores("split_", val, split.predictions),
        "history": [round(e.val_score, 4) for e in report.history],
    }


def table(runs: list[dict], presets: list[str]) -> str:
    """One row per setting: mean +- std over seeds, plain val / split-val in each cell."""

    lines = [
        "| input | seeds | paper micro-F1 | paper macro-F1 | standard micro-F1 | standard macro-F1 | entity F1 "
        "| P / R (paper) | minutes to best val |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in presets:
        rows = [r for r in runs if r["preset"] == preset]
        if not rows:
            continue
        seeds = ",".join(str(r["seed"]) for r in rows)
        p = sum(r["precision"] for r in rows) / len(rows)
        rc = sum(r["recall"] for r in rows) / len(rows)
        # The stages before the selected one are part of the time to the best val model.
        stages = ("seconds_to_best", "pretrain_seconds", "text_only_seconds")
        minutes = sum(r.get(key, 0.0) for r in rows for key in stages) / len(rows) / 60
        lines.append(
            f"| {LABELS.get(preset, preset)} | {seeds} | {both(rows, 'paper_micro_f1')} "
            f"| {both(rows, 'paper_macro_f1')} | {both(rows, 'standard_micro_f1')} "
            f"| {both(rows, 'standard_macro_f1')} | {both(rows, 'entity_f1')} | {100 * p:.1f} / {100 * rc:.1f} "
            f"| {minutes:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the jmere/few_shot folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[17, 67, 97])
    parser.add_argument("--presets", nargs="+", default=["only_text", "imagecap_know", "imagecap"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--knowledge-sentences", type=int, default=None)
    parser.add_argument("--knowledge-dir", type=Path, default=None)
    parser.add_argument("--knowledge-filter", choices=["all", "naming_post"], default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--save", type=Path, default=None, help="save each run's models under DIR (see doc)")
    parser.add_argument("--pretrain-dir", type=Path, default=None, help="self-training: pseudo-labels (see doc)")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--baseline", type=Path, nargs="+", default=None, help="runs.jsonl of other studies: print the gain over them"
    )
    parser.add_argument(
        "--baseline-preset", default=None, help="compare with this preset of --baseline (default: the same)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from kecpm.paths import require_data_dir

    data = args.data or require_data_dir() / "jmere" / "few_shot"
    overrides = {k: _value(v) for k, _, v in (item.partition("=") for item in args.set)}
    if "llm_know" in args.presets and args.knowledge_dir is None:
        parser.error("the llm_know setting needs --knowledge-dir")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    # Seed-major order: a partial study already compares the settings on the same seeds.
    for seed in args.seeds:
        for preset in args.presets:
            key = run_key(preset, args, overrides)
            if any(r["preset"] == preset and r["seed"] == seed and same_run(r, key) for r in runs):
                continue
            started = time.perf_counter()
            run = run_one(data, seed, preset, args, overrides)
            runs.append(run)
            with log.open("a") as handle:
                handle.write(json.dumps(run) + "\n")
            print(
                f"{preset} seed {seed}: paper micro {100 * run['paper_micro_f1']:.1f}, split-val "
                f"{100 * run['split_paper_micro_f1']:.1f} (best epoch {run['best_epoch']}, halves' "
                f"{run['split_epochs']}, {time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            write_table(args, overrides, runs)
    write_table(args, overrides, runs)  # also when every run was done before (a study rerun prints its table)
    print((args.out / "table.md").read_text(), file=sys.stdout)
    if args.baseline:
        print_gains(args, overrides, runs)


def print_gains(args: argparse.Namespace, overrides: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Per preset of this study, paper micro-F1 gain (plain / split-val, per-seed differences) over the
    ``--baseline`` runs of the same preset, or of ``--baseline-preset``."""
    others = [json.loads(line) for file in args.baseline for line in file.read_text().splitlines() if line.strip()]
    mine = [r for r in runs if same_run(r, run_key(r["preset"], args, overrides)) and r["seed"] in args.seeds]
    for preset in args.presets:
        against = args.baseline_preset or preset
        base = {r["seed"]: r for r in others if r["preset"] == against}
        rows = [r for r in mine if r["preset"] == preset and r["seed"] in base]
        if rows:
            print(f"gain of {preset} over {against} of {', '.join(str(f) for f in args.baseline)}: {gain(rows, base)}")


def write_table(args: argparse.Namespace, overrides: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """``OUT/table.md``: the runs of this study's settings."""
    mine = [r for r in runs if same_run(r, run_key(r["preset"], args, overrides))]
    pretraining = f"{args.pretrain_dir}, {args.pretrain_epochs} epochs" if args.pretrain_dir else "none"
    encoder = overrides.get("encoder", "all-MiniLM-L6-v2")
    header = (
        f"Span-pair extractor ({encoder}), val of the KECPM few-shot seeds, {args.epochs} epochs "
        f"max, early stopping on val paper micro-F1; overrides {overrides or 'none'}; knowledge sentences "
        f"{args.knowledge_sentences or 'all'} ({args.knowledge_filter}); knowledge dir {args.knowledge_dir or 'none'}; "
        f"pretraining on pseudo-labels {pretraining}. Each cell: "
        "plain val (epoch selected on all of val) / split-val (epoch selected on one half of val, that half "
        "scored with the other's choice, both pooled); mean ± std over seeds.\n\n"
    )
    (args.out / "table.md").write_text(header + table(mine, args.presets))


if __name__ == "__main__":
    main()
