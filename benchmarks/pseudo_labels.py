"""Pseudo-labels for self-training: a trained teacher's confident quintuples on unlabelled MNRE text.

For each data seed, the teacher ``TEACHERS/PRESET_seedN/full`` (saved by ``extractor_quality.py --save``)
reads a seeded sample of the distinct MNRE texts that are in no train or val split of any seed (their
labels are never read) through :func:`kecpm.extractor.pseudo_label` (stricter decoding than prediction's:
``--relation-threshold``, no forced quintuple), and the posts with at least one quintuple are written to
``OUT/seed_N/pseudo.json``: what ``kecpm pseudo-label`` writes for one teacher. The same decoding is scored
on the seed's val, so the printed precision says how clean the labels are likely to be. The files feed
``extractor_quality.py --pretrain-dir OUT``. Not the paper's protocol: report apart.

    .venv/bin/python benchmarks/pseudo_labels.py --teachers runs/m_tt --texts MNRE/mnre_train.txt --out runs/pseudo
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the jmere/few_shot folder")
    parser.add_argument("--texts", type=Path, nargs="+", required=True, help="MNRE .txt files (labels unread)")
    parser.add_argument("--teachers", type=Path, required=True, help="extractor_quality.py --save folder")
    parser.add_argument("--preset", default="only_text", help="the teachers' preset (text only: MNRE has no knowledge)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[17, 67, 97])
    parser.add_argument("--posts", type=int, default=2000, help="texts sampled for the teacher to read")
    parser.add_argument("--entity-threshold", type=float, default=0.5)
    parser.add_argument("--relation-threshold", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from kecpm.eval import evaluate
    from kecpm.extractor import load_extractor, pseudo_label
    from kecpm.paths import require_data_dir
    from kecpm.post_files import load_split, unlabelled_posts, write_kecpm

    torch.set_num_threads(args.threads)
    data = args.data or require_data_dir() / "jmere" / "few_shot"
    splits = sorted(p for p in data.glob("seed_*/*.json") if p.name in ("train.json", "val.json"))
    unlabelled, left_out = unlabelled_posts(args.texts, exclude=splits, sample=args.posts)
    for seed in args.seeds:
        started = time.perf_counter()
        teacher_dir = args.teachers / f"{args.preset}_seed{seed}" / "full"
        teacher = load_extractor(teacher_dir)
        thresholds = {"entity_threshold": args.entity_threshold, "relation_threshold": args.relation_threshold}
        val = load_split(data / f"seed_{seed}", "val")
        kept_val = {p.id: p for p in pseudo_label(teacher, val, **thresholds)}
        paper = evaluate(val, [kept_val[p.id].quintuples if p.id in kept_val else [] for p in val], mode="paper")
        kept = pseudo_label(teacher, unlabelled, **thresholds)
        write_kecpm(kept, args.out / f"seed_{seed}" / "pseudo.json")
        summary = {
            "seed": seed,
            "teacher": str(teacher_dir),
            "read": len(unlabelled),
            "left_out_as_in_splits": left_out,
            "kept": len(kept),
            "quintuples": sum(len(p.quintuples) for p in kept),
            "val_precision": round(paper.micro.precision, 4),
            "val_recall": round(paper.micro.recall, 4),
            "val_f1": round(paper.micro.f1, 4),
            **thresholds,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(summary), flush=True)
        with (args.out / "summary.jsonl").open("a") as handle:
            handle.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
