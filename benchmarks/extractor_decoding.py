"""Decoding options of the span-pair extractor, measured on saved models without retraining.

Reads the models that ``benchmarks/extractor_quality.py --save DIR`` kept (``DIR/PRESET_seedN/full``,
selected on all of val, and ``half0``/``half1``, selected on each seed-drawn half of val) and scores
on val, per data seed, each decoding variant:

- ``base``: the saved configuration without ``text_order_relations``;
- ``one_type``: ``SpanPairConfig(one_type_per_entity=True)``, without ``text_order_relations``;
- ``text_order``: ``text_order_relations`` = the symmetric relations (peer, couple, neighbor,
  siblings, alternate_names);
- ``one_type+text_order``: both;
- ``thresholds`` and ``one_type+text_order+thresholds``: entity and relation thresholds chosen on val
  per data seed by ``SpanPairExtractor.tune_thresholds`` (its ``THRESHOLD_GRID``);
- ``knowledge_free=W`` (not run unless named in ``--variants``): the saved decoding with
  ``knowledge_free_weight=W``, the reading without knowledge averaged in with weight W (1: it alone).

Plain val: the ``full`` model, thresholds chosen on all of val. Split-val: each half is predicted by
the model selected on the other half, with the thresholds chosen on that other half
(as ``kecpm.eval.cross_select`` pools them), pooled and scored on all of val. Each variant's gain over
``--base`` (``base`` by default) is given as the mean +- std of its per-seed differences. Rows go to
``OUT/runs.json``; a rerun skips the (preset, seed, variant) rows already there with the same grid, so seeds
and variants can be added as their models appear.

    nice -n 5 .venv/bin/python benchmarks/extractor_decoding.py --models runs/models --out runs/decoding
    .venv/bin/python benchmarks/extractor_decoding.py --models runs/models --presets imagecap_know \
        --variants text_order knowledge_free=0.5 knowledge_free=1 --base text_order --out runs/kfree

Models trained on other knowledge (``extractor_quality.py --presets llm_know --knowledge-dir DIR``) are
scored on that knowledge with the same ``--knowledge-dir DIR`` (and an ``--out`` of their own); without
it, val carries the authors' ChatGPT knowledge.

The threshold grid costs one network pass per model and tuning set: ``tune_thresholds`` scores the
candidates once at the lowest entity threshold and decodes each grid point from those verdicts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from extractor_quality import both, gain, load_posts, scores

from kecpm.extractor.span_pair import SYMMETRIC_RELATIONS  # after HF_HUB_OFFLINE is set

SYMMETRIC = [r.value for r in SYMMETRIC_RELATIONS]  # SpanPairConfig's default
VARIANTS: dict[str, dict] = {
    "base": {"text_order_relations": []},
    "one_type": {"one_type_per_entity": True, "text_order_relations": []},
    "text_order": {"text_order_relations": SYMMETRIC},
    "one_type+text_order": {"one_type_per_entity": True, "text_order_relations": SYMMETRIC},
}
TUNED = {"thresholds": "base", "one_type+text_order+thresholds": "one_type+text_order"}
KNOWLEDGE_FREE = "knowledge_free="


def variant_options(name: str) -> dict:
    """The decoding options of a variant named in the module's doc."""
    if name.startswith(KNOWLEDGE_FREE):
        return {"knowledge_free_weight": float(name.removeprefix(KNOWLEDGE_FREE))}
    try:
        return VARIANTS[TUNED.get(name, name)]
    except KeyError:
        raise SystemExit(f"unknown variant {name!r}: {', '.join([*VARIANTS, *TUNED])} or {KNOWLEDGE_FREE}W") from None


def decode(model, posts, options: dict, *, tune_on=None, scorer=None) -> tuple[list, tuple | None]:
    """``model``'s predictions on ``posts`` with the decoding ``options``; with ``tune_on``, its entity and
    relation thresholds first chosen on those posts (``SpanPairExtractor.tune_thresholds``)."""
    base = model.config
    model.config = base.model_copy(update=options)
    try:
        chosen = None
        if tune_on is not None:
            choice = model.tune_thresholds(tune_on, scorer=scorer)
            chosen = (choice.entity_threshold, choice.relation_threshold)
        return model.predict(posts), chosen
    finally:
        model.config = base


def study_one(folder: Path, val, seed: int, variants: list[str]) -> list[dict]:
    from kecpm.eval import make_scorer, val_halves
    from kecpm.extractor import load_extractor

    scorer = make_scorer(mode="paper", metric="micro_f1")
    halves = val_halves(len(val), seed=seed)
    full, *by_half = (load_extractor(folder / name) for name in ("full", "half0", "half1"))
    rows = []
    for name in variants:
        options, tune = variant_options(name), name in TUNED
        plain, plain_choice = decode(full, val, options, tune_on=val if tune else None, scorer=scorer)
        # Split-val: each half is predicted by the model (and thresholds) chosen on the other half.
        split, split_choices = [None] * len(val), []
        for h, model in enumerate(by_half):
            chosen_on, predicted = [val[i] for i in halves[h]], halves[1 - h]
            found, choice = decode(
                model, [val[i] for i in predicted], options, tune_on=chosen_on if tune else None, scorer=scorer
            )
            split_choices.append(choice)
            for i, quintuples in zip(predicted, found, strict=True):
                split[i] = quintuples
        row = {"seed": seed, "variant": name, "plain_choice": plain_choice, "split_choices": split_choices}
        rows.append(row | scores("", val, plain) | scores("split_", val, split))
    return rows


def table(rows: list[dict], base_variant: str) -> str:
    lines = [
        f"| input | decoding | seeds | paper micro-F1 | gain over {base_variant} | paper macro-F1 | standard micro-F1 "
        "| entity F1 | thresholds (entity, relation) chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        base = {r["seed"]: r for r in mine if r["variant"] == base_variant}
        for variant in dict.fromkeys(r["variant"] for r in mine):
            these = [r for r in mine if r["variant"] == variant]
            chosen = "; ".join(
                f"{r['seed']}: {r['plain_choice']} / {r['split_choices']}" for r in these if variant in TUNED
            )
            lines.append(
                f"| {preset} | {variant} | {','.join(str(r['seed']) for r in these)} | {both(these, 'paper_micro_f1')} "
                f"| {gain(these, base)} | {both(these, 'paper_macro_f1')} | {both(these, 'standard_micro_f1')} "
                f"| {both(these, 'entity_f1')} | {chosen or '-'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="the --save folder of extractor_quality.py")
    parser.add_argument("--data", type=Path, default=None, help="the jmere/few_shot folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[17, 67, 97])
    parser.add_argument("--presets", nargs="+", default=["imagecap_know", "only_text"])
    parser.add_argument(
        "--knowledge-dir", type=Path, default=None, help="the val knowledge the models were trained with (llm_know)"
    )
    parser.add_argument("--variants", nargs="+", default=[*VARIANTS, *TUNED], help="see the module's doc")
    parser.add_argument("--base", default="base", help="the variant the gains are measured from")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from kecpm.paths import require_data_dir

    torch.set_num_threads(args.threads)
    data = args.data or require_data_dir() / "jmere" / "few_shot"
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.json"
    # A rerun keeps the seeds already studied with the same grid (seeds can be added as models appear).
    from kecpm.extractor import THRESHOLD_GRID

    grid = [list(THRESHOLD_GRID), list(THRESHOLD_GRID)]
    rows = [r for r in (json.loads(log.read_text()) if log.exists() else []) if r.get("grid") == grid]
    for name in args.variants:
        variant_options(name)  # an unknown name stops the run before any model is read
    for preset in args.presets:
        for seed in args.seeds:
            done = {r["variant"] for r in rows if r["preset"] == preset and r["seed"] == seed}
            missing = [name for name in args.variants if name not in done]
            if not missing:
                continue
            folder = args.models / f"{preset}_seed{seed}"
            if not (folder / "full").is_dir():
                print(f"{folder}: no saved models, skipped", file=sys.stderr)
                continue
            val = load_posts(data, seed, "val", args.knowledge_dir)
            found = study_one(folder, val, seed, missing)
            rows += [{"preset": preset, "grid": grid, **r} for r in found]
            for r in found:
                print(
                    f"{preset} seed {seed} {r['variant']}: {100 * r['paper_micro_f1']:.1f} / "
                    f"split {100 * r['split_paper_micro_f1']:.1f}",
                    flush=True,
                )
            log.write_text(json.dumps(rows, indent=1, default=str))
            (args.out / "table.md").write_text(
                "Decoding variants on saved span-pair models; each cell: plain val / split-val, mean ± std over "
                f"seeds; gain over {args.base}: mean ± std of the per-seed differences.\n\n" + table(rows, args.base)
            )
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
