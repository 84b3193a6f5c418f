"""Hand-computed cases, one rule each: duplicates, direction, absent relations, empty predictions,
records without gold, normalisation, invalid predictions, span and undirected matching, sub-tasks."""

from __future__ import annotations

import pytest

from kecpm.errors import DataError
from kecpm.eval import (
    entity_f1,
    evaluate,
    macro_f1,
    make_scorer,
    micro_f1,
    pair_relation_f1,
    per_relation_scores,
    precision_recall_f1,
    relation_confusion,
)
from kecpm.labels import RELATIONS
from kecpm.predictions import PredictedQuintuple, PredictionRecord
from kecpm.records import Entity, Post, Quintuple

ANN_BO = ("Ann Lee", "per", "Bo Park", "per", "couple")
BO_ANN = ("Bo Park", "per", "Ann Lee", "per", "couple")
ANN_OSLO = ("Ann Lee", "per", "Oslo", "loc", "place_of_birth")
ACME_OSLO = ("Acme", "org", "Oslo", "loc", "locate_at")


def prf(result):
    return result.micro.precision, result.micro.recall, result.micro.f1


@pytest.mark.parametrize("mode", ["paper", "standard"])
def test_duplicate_predictions_count_once(mode):
    result = evaluate([[ANN_BO]], [[ANN_BO, ANN_BO, ("Ann Lee", "person", "Bo Park", "per", "couple")]], mode=mode)
    assert prf(result) == (1.0, 1.0, 1.0)
    assert result.micro.predicted == 1


def test_duplicate_gold_counts_twice_in_paper_mode_only():
    # The release counts every gold quintuple but can match a sentence once: recall 1/2.
    assert prf(evaluate([[ANN_BO, ANN_BO]], [[ANN_BO]], mode="paper")) == (1.0, 0.5, 2 / 3)
    assert prf(evaluate([[ANN_BO, ANN_BO]], [[ANN_BO]], mode="standard")) == (1.0, 1.0, 1.0)


def test_direction_matters_unless_undirected():
    assert micro_f1([[ANN_BO]], [[BO_ANN]], mode="paper") == 0.0
    assert micro_f1([[ANN_BO]], [[BO_ANN]], mode="standard") == 0.0
    assert micro_f1([[ANN_BO]], [[BO_ANN]], mode="standard", directed=False) == 1.0
    # Undirected still checks the types travel with their names.
    flipped_types = ("Bo Park", "loc", "Ann Lee", "per", "couple")
    assert micro_f1([[ANN_BO]], [[flipped_types]], mode="standard", directed=False) == 0.0
    with pytest.raises(ValueError, match="paper mode"):
        micro_f1([[ANN_BO]], [[BO_ANN]], mode="paper", directed=False)


def test_absent_relations_count_zero_in_paper_macro_only():
    gold = [[ANN_BO]]
    assert macro_f1(gold, gold, mode="paper") == 1 / 21
    assert precision_recall_f1(gold, gold, average="macro", mode="paper") == (1 / 21, 1 / 21, 1 / 21)
    assert macro_f1(gold, gold, mode="standard") == 1.0
    # A spurious prediction of a relation absent from the gold: P 0 in its row, excluded from standard's macro.
    pred = [[ANN_BO, ANN_OSLO]]
    result = evaluate(gold, pred, mode="paper")
    assert result.per_relation["place_of_birth"].precision == 0.0
    assert (result.macro_precision, result.macro_recall, result.macro_f1) == (1 / 21, 1 / 21, 1 / 21)
    assert prf(result) == (0.5, 1.0, 2 / 3)
    assert macro_f1(gold, pred, mode="standard") == 1.0
    assert macro_f1(gold, pred, mode="standard", labels=["couple", "place of birth"]) == 0.5
    with pytest.raises(ValueError, match="labels"):
        macro_f1(gold, pred, mode="paper", labels=["couple"])


def test_paper_macro_uses_mean_of_per_relation_figures():
    # couple: P 1/2 (one of two predictions right), R 1; locate_at: P 1, R 1/2.
    gold = [[ANN_BO], [ACME_OSLO, ("Acme", "org", "Bergen", "loc", "locate_at")]]
    pred = [[ANN_BO, ("Ann Lee", "per", "Cy", "per", "couple")], [ACME_OSLO]]
    result = evaluate(gold, pred, mode="paper")
    assert result.macro_precision == (0.5 + 1.0) / 21
    assert result.macro_recall == (1.0 + 0.5) / 21
    assert result.macro_f1 == (2 * 0.5 * 1 / 1.5 + 2 * 1 * 0.5 / 1.5) / 21
    assert prf(result) == (2 / 3, 2 / 3, 2 * (2 / 3) * (2 / 3) / (4 / 3))


@pytest.mark.parametrize("mode", ["paper", "standard"])
def test_empty_predictions_score_zero(mode):
    result = evaluate([[ANN_BO], [ANN_OSLO]], [[], []], mode=mode)
    assert prf(result) == (0.0, 0.0, 0.0)
    assert result.macro_f1 == 0.0
    assert result.micro.support == 2
    assert prf(evaluate([], [], mode=mode)) == (0.0, 0.0, 0.0)
    assert prf(evaluate([[]], [[]], mode=mode)) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("mode", ["paper", "standard"])
def test_predictions_on_records_without_gold_are_false_positives(mode):
    result = evaluate([[ANN_BO], []], [[ANN_BO], [ACME_OSLO]], mode=mode)
    assert prf(result) == (0.5, 1.0, 2 / 3)
    assert result.per_relation["locate_at"].predicted == 1


def test_paper_normalisation():
    gold = [[("Ann_Lee", "per", 'Bo "B" Park', "per", "couple")]]
    assert micro_f1(gold, [[("Ann Lee\n", "per", "Bo B Park", "per", "couple")]], mode="paper") == 1.0
    # " #" disappears from the whole sentence, as in the release.
    assert micro_f1([[("Ann #1", "per", "Bo", "per", "peer")]], [[("Ann1", "per", "Bo", "per", "peer")]]) == 1.0
    assert (
        micro_f1([[("Ann #1", "per", "Bo", "per", "peer")]], [[("Ann1", "per", "Bo", "per", "peer")]], mode="standard")
        == 0
    )
    # Case and inner spacing are not normalised.
    assert micro_f1(gold, [[("ann lee", "per", "Bo B Park", "per", "couple")]]) == 0.0


def test_paper_macro_keeps_quotes_like_the_release():
    # The release's macro scorer keeps quotes: the same prediction is right for micro, wrong for macro.
    gold = [[("Macy's", "org", "New York", "loc", "locate_at")]]
    pred = [[("Macys", "org", "New York", "loc", "locate_at")]]
    result = evaluate(gold, pred, mode="paper")
    assert result.micro.f1 == 1.0
    assert result.per_relation["locate_at"].f1 == 0.0
    assert result.macro_f1 == 0.0
    assert evaluate(gold, pred, mode="standard").macro_f1 == 1.0


def test_unknown_labels_fail_naming_the_record_or_count_as_invalid():
    gold = [[ANN_BO], [ANN_OSLO]]
    pred = [[ANN_BO], [("Ann Lee", "per", "Oslo", "loc", "born_in"), ("Ann Lee", "human", "Oslo", "loc", "couple")]]
    with pytest.raises(DataError) as caught:
        evaluate(gold, pred)
    messages = [str(p) for p in caught.value.problems]
    assert len(messages) == 2
    assert "prediction 1, quintuple 1" in messages[0] and "born_in" in messages[0]
    assert "prediction 1, quintuple 2" in messages[1] and "human" in messages[1]
    result = evaluate(gold, pred, lenient=True)
    assert len(result.invalid) == 2
    # Both are false positives in micro; only the one with a known relation has a row in the macro.
    assert (result.micro.correct, result.micro.predicted, result.micro.support) == (1, 3, 2)
    assert result.per_relation["couple"].predicted == 2
    assert sum(row.predicted for row in result.per_relation.values()) == 2
    # A record read from a file names its line.
    with pytest.raises(DataError, match="line 7"):
        evaluate([[ANN_BO]], [PredictionRecord(index=0, line=7, quintuples=[{**_dict(ANN_BO), "relation": "x"}])])


def test_gold_must_be_valid_even_when_lenient():
    with pytest.raises(DataError, match="gold quintuple 1"):
        evaluate([[("A", "per", "B", "per", "best_friend")]], [[]], lenient=True)


def test_record_count_mismatch_is_an_error():
    with pytest.raises(DataError, match="1 prediction records for 2 gold records"):
        evaluate([[ANN_BO], [ANN_OSLO]], [[ANN_BO]])


def test_single_quintuple_instead_of_a_record_is_refused():
    with pytest.raises(TypeError, match="wrap it in a list"):
        evaluate([[ANN_BO]], [ANN_BO])


def _dict(q):
    return dict(zip(("head", "head_type", "tail", "tail_type", "relation"), q, strict=True))


def _quintuple(q, spans=(None, None)):
    return Quintuple(
        head=Entity(name=q[0], type=q[1], span=spans[0]),
        tail=Entity(name=q[2], type=q[3], span=spans[1]),
        relation=q[4],
    )


def test_input_forms_are_equivalent():
    post = Post(id="p1", text="Ann Lee and Bo Park wed in Oslo", quintuples=[_quintuple(ANN_BO)])
    forms = [
        [[ANN_BO]],
        [[_quintuple(ANN_BO)]],
        [[_dict(ANN_BO)]],
        [[PredictedQuintuple(**_dict(ANN_BO))]],
        [PredictionRecord(index=0, quintuples=[PredictedQuintuple(**_dict(ANN_BO))])],
        [post],
    ]
    for gold in forms:
        for pred in forms:
            assert evaluate(gold, pred).micro.f1 == 1.0


def test_span_matching():
    gold = [[_quintuple(ANN_BO, spans=((0, 2), (3, 5)))]]
    same_span = [[_quintuple(ANN_BO, spans=((0, 2), (3, 5)))]]
    other_span = [[_quintuple(ANN_BO, spans=((6, 8), (3, 5)))]]
    renamed = [[_quintuple(("Ann", "per", "Bo", "per", "couple"), spans=((0, 2), (3, 5)))]]
    assert micro_f1(gold, other_span, mode="standard") == 1.0
    assert micro_f1(gold, other_span, mode="standard", match="span") == 0.0
    assert micro_f1(gold, renamed, mode="standard", match="span") == 1.0
    assert micro_f1(gold, same_span, mode="standard", match="span") == 1.0
    with pytest.raises(DataError, match="no span"):
        micro_f1(gold, [[ANN_BO]], mode="standard", match="span")
    result = evaluate(gold, [[ANN_BO]], mode="standard", match="span", lenient=True)
    assert (result.micro.predicted, result.micro.correct, len(result.invalid)) == (1, 0, 1)
    with pytest.raises(ValueError, match="paper mode"):
        micro_f1(gold, same_span, mode="paper", match="span")


def test_sub_task_scores():
    gold = [[ANN_BO, ANN_OSLO]]
    # Right pair and relation with a wrong type; a reversed pair; one entity right.
    pred = [[("Ann Lee", "per", "Bo Park", "org", "couple"), ("Oslo", "loc", "Ann Lee", "per", "place_of_birth")]]
    # Entities: gold {Ann/per, Bo/per, Oslo/loc}; predicted {Ann/per, Bo/org, Oslo/loc}: 2 of 3 each way.
    assert entity_f1(gold, pred) == 2 / 3
    # Pairs ignoring types: (Ann, Bo, couple) right; (Oslo, Ann, place_of_birth) wrong unless undirected.
    assert pair_relation_f1(gold, pred) == 0.5
    assert pair_relation_f1(gold, pred, directed=False) == 1.0
    assert micro_f1(gold, pred) == 0.0


def test_per_relation_rows_and_confusion():
    gold = [[ANN_BO, ACME_OSLO]]
    pred = [[("Ann Lee", "per", "Bo Park", "per", "peer"), ACME_OSLO, ("Ann Lee", "per", "Oslo", "loc", "nationality")]]
    rows = per_relation_scores(gold, pred)
    assert list(rows) == [r.value for r in RELATIONS]
    assert (rows["couple"].support, rows["couple"].predicted, rows["couple"].recall) == (1, 0, 0.0)
    assert (rows["peer"].support, rows["peer"].predicted, rows["peer"].f1) == (0, 1, 0.0)
    assert rows["locate_at"].f1 == 1.0
    matrix = relation_confusion(gold, pred)
    index = {r.value: i for i, r in enumerate(RELATIONS)}
    assert matrix[index["couple"]][index["peer"]] == 1
    assert matrix[index["locate_at"]][index["locate_at"]] == 1
    # (Ann, Oslo) is not a gold pair: not in the matrix.
    assert sum(map(sum, matrix)) == 2


def test_make_scorer_is_a_plain_callable():
    gold = [Post(id="p", text="Ann Lee and Bo Park", quintuples=[_quintuple(ANN_BO), _quintuple(ANN_OSLO)])]
    pred = [[_quintuple(ANN_BO)]]
    assert make_scorer()(gold, pred) == 2 / 3
    assert make_scorer(mode="paper", metric="micro_recall")(gold, pred) == 0.5
    assert make_scorer(mode="standard", metric="macro_f1")(gold, pred) == 0.5
    assert make_scorer(mode="paper", metric="macro_f1")(gold, pred) == 1 / 21
    assert make_scorer(metric="micro_f1").__name__ == "paper_micro_f1"
    with pytest.raises(ValueError, match="unknown metric"):
        make_scorer(metric="accuracy")
    with pytest.raises(ValueError, match="paper mode"):
        make_scorer(mode="paper", directed=False)
