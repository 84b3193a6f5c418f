"""Ensembles of saved span-pair models (``SpanPairEnsemble``: probabilities averaged) against their members.

Reads models that ``benchmarks/extractor_quality.py --save DIR`` kept (``DIR/PRESET_seedN/{full,half0,half1}``).
``--member KEY=PREFIX`` names a member: its models for seed N are in ``PREFIX_seedN`` (e.g.
``text=runs/models/only_text``); ``--ensemble text+know`` averages the members named. Every member alone and
every ensemble is scored on val per data seed, in the same run:

- plain val: the ``full`` models (epochs selected on all of val);
- split-val: each half of val is predicted by the models selected on the other half (``half0`` predicts
  half 1 and ``half1`` half 0, as ``kecpm.eval.val_halves`` cut them), pooled and scored on all of val.

Each row's gain over ``--baseline KEY`` is the mean +- std of the per-seed differences. An ensemble costs
its members' prediction time added up (one network pass per member). Rows go to ``OUT/runs.json`` (a
rerun skips the (row, seed) pairs already there) and the table to ``OUT/table.md``.

    nice -n 5 .venv/bin/python benchmarks/extractor_ensemble.py --member text=runs/models/only_text \\
        --member know=runs/models/imagecap_know --ensemble text+know --baseline text --out runs/ensemble
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from extractor_quality import both, gain, scores

SELECTIONS = ("full", "half0", "half1")


def score_row(name: str, models: dict[str, list], val, halves, seed: int) -> dict:
    """``models[selection]``: the members' models selected on all of val and on each half."""
    from kecpm.extractor import SpanPairEnsemble

    started = time.perf_counter()
    plain = SpanPairEnsemble(models["full"]).predict(val)
    seconds = time.perf_counter() - started
    split = [None] * len(val)
    for h in (0, 1):
        predicted = halves[1 - h]
        found = SpanPairEnsemble(models[f"half{h}"]).predict([val[i] for i in predicted])
        for i, quintuples in zip(predicted, found, strict=True):
            split[i] = quintuples
    row = {"row": name, "seed": seed, "members": len(models["full"]), "seconds": round(seconds, 1)}
    return row | scores("", val, plain) | scores("split_", val, split)


def table(rows: list[dict], baseline: str | None) -> str:
    base = {r["seed"]: r for r in rows if r["row"] == baseline}
    lines = [
        "| members | seeds | paper micro-F1 | per seed (plain) | gain over baseline | paper macro-F1 "
        "| standard micro-F1 | entity F1 | s to predict val |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in rows):
        these = [r for r in rows if r["row"] == name]
        paired = name != baseline and any(r["seed"] in base for r in these)
        gained = gain(these, base) if paired else "-"
        per_seed = ", ".join(f"{100 * r['paper_micro_f1']:.1f}" for r in these)
        seconds = sum(r["seconds"] for r in these) / len(these)
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in these)} | {both(these, 'paper_micro_f1')} | {per_seed} "
            f"| {gained} | {both(these, 'paper_macro_f1')} | {both(these, 'standard_micro_f1')} "
            f"| {both(these, 'entity_f1')} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", action="append", required=True, metavar="KEY=PREFIX")
    parser.add_argument("--ensemble", action="append", default=[], metavar="KEY+KEY[+...]")
    parser.add_argument("--baseline", default=None, help="the row the gains are measured from")
    parser.add_argument("--data", type=Path, default=None, help="the jmere/few_shot folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[17, 67, 97])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    members = {}
    for item in args.member:
        key, sep, prefix = item.partition("=")
        if not sep or not key or not prefix:
            parser.error(f"--member {item!r}: expected KEY=PREFIX")
        members[key] = prefix
    rows_wanted = {key: [key] for key in members}
    for spec in args.ensemble:
        unknown = [k for k in spec.split("+") if k not in members]
        if unknown:
            parser.error(f"--ensemble {spec!r}: no --member named {', '.join(unknown)}")
        rows_wanted[spec] = spec.split("+")
    if args.baseline is not None and args.baseline not in rows_wanted:
        parser.error(f"--baseline {args.baseline!r} is neither a member nor an ensemble")

    import torch

    from kecpm.eval import val_halves
    from kecpm.extractor import SpanPairExtractor
    from kecpm.paths import require_data_dir
    from kecpm.post_files import load_split

    torch.set_num_threads(args.threads)
    data = args.data or require_data_dir() / "jmere" / "few_shot"
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.json"
    rows = json.loads(log.read_text()) if log.exists() else []
    for seed in args.seeds:
        todo = [name for name in rows_wanted if not any(r["row"] == name and r["seed"] == seed for r in rows)]
        folders = {key: Path(f"{prefix}_seed{seed}") for key, prefix in members.items()}
        missing = [str(f) for key, f in folders.items() if not (f / "full").is_dir()]
        if missing:
            print(f"seed {seed}: no saved models in {', '.join(missing)}; skipped", file=sys.stderr)
            continue
        if not todo:
            continue
        val = load_split(data / f"seed_{seed}", "val")
        halves = val_halves(len(val), seed=seed)
        loaded = {
            key: {s: SpanPairExtractor.from_pretrained(folder / s) for s in SELECTIONS}
            for key, folder in folders.items()
            if any(key in rows_wanted[name] for name in todo)
        }
        for name in todo:
            models = {s: [loaded[key][s] for key in rows_wanted[name]] for s in SELECTIONS}
            row = score_row(name, models, val, halves, seed)
            rows.append(row)
            print(
                f"{name} seed {seed}: {100 * row['paper_micro_f1']:.1f} / "
                f"split {100 * row['split_paper_micro_f1']:.1f}",
                flush=True,
            )
            log.write_text(json.dumps(rows, indent=1))
            (args.out / "table.md").write_text(
                "Span-pair models alone and averaged (SpanPairEnsemble) on val; each cell: plain val / split-val, "
                "mean ± std over seeds; gain: mean ± std of the per-seed differences from the baseline.\n\n"
                + table(rows, args.baseline)
            )
    if (args.out / "table.md").exists():
        print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
