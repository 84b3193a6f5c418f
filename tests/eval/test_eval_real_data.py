"""Acceptance on the real val files (skipped without the data): gold as predictions, then planted errors
whose effect on every figure is computed by hand from the relation counts of the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.eval import evaluate
from kecpm.fewshot import relation_counts
from kecpm.labels import RELATIONS
from kecpm.post_files import read_kecpm
from kecpm.predictions import PredictedQuintuple, PredictionRecord, write_predictions

SEEDS = (17, 67, 97)


def val_posts(real_data: Path, seed: int):
    return read_kecpm(real_data / "jmere" / "few_shot" / f"seed_{seed}" / "val.json")


@pytest.mark.realdata
@pytest.mark.parametrize("seed", SEEDS)
def test_gold_as_predictions(real_data, seed):
    gold = val_posts(real_data, seed)
    present = len(relation_counts(gold))
    pred = [post.quintuples for post in gold]
    paper = evaluate(gold, pred, mode="paper")
    standard = evaluate(gold, pred, mode="standard")
    assert paper.micro.f1 == paper.micro.precision == paper.micro.recall == 1.0
    assert standard.micro.f1 == 1.0
    assert standard.macro_f1 == 1.0
    assert paper.macro_f1 == present / 21
    assert paper.micro.support == sum(len(post.quintuples) for post in gold)


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r else 0.0


def plant_errors(gold):
    """Predictions = gold with six planted changes, and what each relation's (P, R) must become."""
    pred = [[q.surface() for q in post.quintuples] for post in gold]

    def first(relation):
        for i, record in enumerate(pred):
            for j, q in enumerate(record):
                if q[4] == relation:
                    return i, j
        raise AssertionError(f"no {relation} in this file")

    # 1. One member_of reversed (the reversed quintuple is not itself gold there).
    i, j = first("member_of")
    h, ht, t, tt, r = pred[i][j]
    assert (t, tt, h, ht, r) not in pred[i]
    pred[i][j] = (t, tt, h, ht, r)
    # 2. Every siblings quintuple missed.
    pred = [[q for q in record if q[4] != "siblings"] for record in pred]
    # 3. A spurious religion quintuple, in a record that has one.
    i, _ = first("religion")
    pred[i].append(("Nobody Atall", "per", "Nowhere Creed", "misc", "religion"))
    # 4. One contain quintuple labelled part_of instead.
    i, j = first("contain")
    assert (*pred[i][j][:4], "part_of") not in pred[i]
    pred[i][j] = (*pred[i][j][:4], "part_of")
    # 5. A duplicated prediction (no effect) and 6. a name spelled with underscores and a newline (no effect).
    i, j = first("held_on")
    pred[i].append(pred[i][j])
    i, j = first("peer")
    h, ht, t, tt, r = pred[i][j]
    pred[i][j] = (h.replace(" ", "_") + "\n", ht, t, tt, r)

    support = relation_counts(gold)
    a, s, g, c, m = (support[x] for x in ("member_of", "siblings", "religion", "contain", "part_of"))
    expected = {relation.value: (1.0, 1.0) for relation in RELATIONS}
    expected["member_of"] = ((a - 1) / a, (a - 1) / a)
    expected["siblings"] = (0.0, 0.0)
    expected["religion"] = (g / (g + 1), 1.0)
    expected["contain"] = (1.0, (c - 1) / c)
    expected["part_of"] = (m / (m + 1), 1.0)
    total = sum(support.values())
    micro = (total - 1 - s - 1, total - s + 1, total)  # correct, predicted, gold
    return pred, expected, micro, s


@pytest.mark.realdata
@pytest.mark.parametrize("seed", SEEDS)
def test_planted_errors_give_the_hand_computed_figures(real_data, seed):
    gold = val_posts(real_data, seed)
    assert len(relation_counts(gold)) == 21  # all relations present, so both macros average over 21
    pred, expected, (correct, predicted, total), siblings = plant_errors(gold)
    for mode in ("paper", "standard"):
        result = evaluate(gold, pred, mode=mode)
        assert (result.micro.correct, result.micro.predicted, result.micro.support) == (correct, predicted, total)
        assert result.micro.precision == correct / predicted
        assert result.micro.recall == correct / total
        for relation, (p, r) in expected.items():
            row = result.per_relation[relation]
            assert (row.precision, row.recall) == pytest.approx((p, r), abs=1e-15), relation
        assert result.macro_precision == pytest.approx(sum(p for p, _ in expected.values()) / 21, abs=1e-15)
        assert result.macro_recall == pytest.approx(sum(r for _, r in expected.values()) / 21, abs=1e-15)
        assert result.macro_f1 == pytest.approx(sum(_f1(p, r) for p, r in expected.values()) / 21, abs=1e-15)
    # Undirected matching forgives the reversed member_of, and only that.
    undirected = evaluate(gold, pred, mode="standard", directed=False)
    assert undirected.micro.correct == correct + 1
    assert undirected.per_relation["member_of"].f1 == 1.0
    assert siblings >= 1


@pytest.mark.realdata
def test_cli_on_three_seeds_writes_report_and_plots(real_data, tmp_path):
    arguments = []
    for seed in SEEDS:
        gold = val_posts(real_data, seed)
        pred, *_ = plant_errors(gold)
        records = [PredictionRecord(index=i, quintuples=[_predicted(q) for q in r]) for i, r in enumerate(pred)]
        path = write_predictions(tmp_path / f"pred_{seed}.jsonl", records)
        arguments += [
            "--gold",
            str(real_data / "jmere" / "few_shot" / f"seed_{seed}" / "val.json"),
            "--pred",
            str(path),
        ]
    result = CliRunner().invoke(app, ["eval", *arguments, "--out", str(tmp_path / "out"), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert len(scores["runs"]) == 3
    assert 0.9 < scores["summary"]["micro_f1"]["mean"] < 1.0
    assert scores["summary"]["micro_f1"]["std"] > 0
    for name in ("relation_f1.png", "relation_confusion.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _predicted(q):
    return PredictedQuintuple(head=q[0], head_type=q[1], tail=q[2], tail_type=q[3], relation=q[4])
