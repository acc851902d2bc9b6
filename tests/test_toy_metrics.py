"""Hand-computed toy cases for every metric family, arithmetic kept visible.

Conventions under test (trec_eval 10.0, see /work/shared/REFERENCES.md §1 and
docs/metrics.md): score descending, ties broken by item id descending in byte
order; grade > 0 gives gain, grade >= min_label is relevant, negative grades
are judged-not-relevant; R counts every relevant label of the request; AP
divides by R; P@k divides by k; a request with no relevant item scores 0.
"""

from __future__ import annotations

import json
from math import log2
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import receval
from receval import evaluate, parse_metric
from receval.errors import CoverageWarning, InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trec"


def _frames(run_rows, label_rows):
    run = pd.DataFrame(run_rows, columns=["request_id", "item_id", "score"])
    labels = pd.DataFrame(label_rows, columns=["request_id", "item_id", "label"])
    return run, labels


def single(items, grades, metrics, scores=None, **kwargs):
    """Evaluate one request "q" whose run lists ``items`` best first.

    ``scores`` defaults to strictly decreasing scores (no ties); ``grades``
    maps judged item -> grade. Returns {metric as spelled: value}.
    """
    if scores is None:
        scores = [float(len(items) - i) for i in range(len(items))]
    run_rows = [("q", item, s) for item, s in zip(items, scores, strict=True)]
    label_rows = [("q", item, g) for item, g in grades.items()]
    run, labels = _frames(run_rows, label_rows)
    res = evaluate(run, labels, metrics, n_boot=10, **kwargs)
    frame = res.per_request
    assert frame["request_id"].tolist() == ["q"]
    return {m: float(frame[str(parse_metric(m))].iloc[0]) for m in metrics}


def check(items, grades, expected, scores=None):
    got = single(items, grades, list(expected), scores=scores)
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=1e-12), metric


# --------------------------------------------------------------------------
# Case A: ranked d1 > d2 > d3 > d4 > d5; relevant d1, d3 and the unretrieved
# d9 (so R = 3); d2 judged 0. Relevant at ranks 1 and 3.
# --------------------------------------------------------------------------
A_ITEMS = ["d1", "d2", "d3", "d4", "d5"]
A_GRADES = {"d1": 1, "d2": 0, "d3": 1, "d9": 1}
A_IDCG = 1 / log2(2) + 1 / log2(3) + 1 / log2(4)  # three grade-1 items, ideally at ranks 1..3
A_EXPECTED = {
    "map": (1 / 1 + 2 / 3) / 3,  # precision at each relevant hit, divided by R = 3
    "map@1": (1 / 1) / 3,
    "map@2": (1 / 1) / 3,
    "map@3": (1 / 1 + 2 / 3) / 3,
    "map@100": (1 / 1 + 2 / 3) / 3,
    "mrr": 1 / 1,
    "mrr@1": 1 / 1,
    "precision@1": 1 / 1,
    "precision@2": 1 / 2,
    "precision@3": 2 / 3,
    "precision@5": 2 / 5,
    "precision@10": 2 / 10,  # the list has 5 items, still divided by k = 10
    "recall": 2 / 3,
    "recall@1": 1 / 3,
    "recall@2": 1 / 3,
    "recall@3": 2 / 3,
    "recall@50": 2 / 3,
    "hit": 1.0,
    "hit@1": 1.0,
    "r_precision": 2 / 3,  # R = 3: d1, d2, d3 hold 2 relevant
    "ndcg": (1 / log2(2) + 1 / log2(4)) / A_IDCG,
    "ndcg@1": (1 / log2(2)) / (1 / log2(2)),
    "ndcg@2": (1 / log2(2)) / (1 / log2(2) + 1 / log2(3)),
    "ndcg@3": (1 / log2(2) + 1 / log2(4)) / A_IDCG,
    "ndcg(gain=exponential)": ((2**1 - 1) / log2(2) + (2**1 - 1) / log2(4)) / A_IDCG,
    # retrieved positives d1 (rank 1), d3 (rank 3); retrieved negatives d2, d4, d5:
    # d1 beats 3 negatives, d3 beats d4 and d5 -> (3 + 2) / (2 * 3)
    "auc": (3 + 2) / (2 * 3),
    "auc(ties=order)": (3 + 2) / (2 * 3),
}


@pytest.mark.parametrize("metric", list(A_EXPECTED))
def test_case_a(metric):
    check(A_ITEMS, A_GRADES, {metric: A_EXPECTED[metric]})


# --------------------------------------------------------------------------
# Case B: first relevant item at rank 3; grades d3 = 1, d5 = 2 (R = 2).
# --------------------------------------------------------------------------
B_ITEMS = ["d1", "d2", "d3", "d4", "d5"]
B_GRADES = {"d3": 1, "d5": 2, "d1": 0}
B_EXPECTED = {
    "mrr": 1 / 3,
    "mrr@2": 0.0,  # first relevant item lies beyond the cutoff
    "mrr@3": 1 / 3,
    "hit@2": 0.0,
    "hit@3": 1.0,
    "hit": 1.0,
    "map": (1 / 3 + 2 / 5) / 2,
    "map@4": (1 / 3) / 2,
    "precision@5": 2 / 5,
    "recall@3": 1 / 2,
    "recall@5": 2 / 2,
    "r_precision": 0 / 2,  # R = 2, top 2 hold nothing relevant
    "ndcg": (1 / log2(4) + 2 / log2(6)) / (2 / log2(2) + 1 / log2(3)),
    "ndcg@3": (1 / log2(4)) / (2 / log2(2) + 1 / log2(3) + 0 / log2(4)),
    "ndcg(gain=exponential)": ((2**1 - 1) / log2(4) + (2**2 - 1) / log2(6))
    / ((2**2 - 1) / log2(2) + (2**1 - 1) / log2(3)),
    "ndcg(gain=exponential)@3": ((2**1 - 1) / log2(4)) / ((2**2 - 1) / log2(2) + (2**1 - 1) / log2(3)),
    # positives at ranks 3 and 5, negatives d1, d2, d4: d3 beats d4 only
    "auc": (1 + 0) / (2 * 3),
}


@pytest.mark.parametrize("metric", list(B_EXPECTED))
def test_case_b(metric):
    check(B_ITEMS, B_GRADES, {metric: B_EXPECTED[metric]})


def test_map_cut_divides_by_all_relevant_not_min_r_k():
    # R = 10 relevant items, the top 5 retrieved are all relevant
    items = [f"r{i}" for i in range(5)]
    grades = {f"r{i}": 1 for i in range(10)}
    check(
        items,
        grades,
        {
            "map@5": (1 / 1 + 2 / 2 + 3 / 3 + 4 / 4 + 5 / 5) / 10,  # = 0.5, not 1.0
            "map": 5 / 10,
            "precision@5": 5 / 5,
            "recall@5": 5 / 10,
            "r_precision": 5 / 10,
            "ndcg@5": 1.0,  # the ideal top 5 holds five grade-1 items too
            "ndcg": sum(1 / log2(i + 1) for i in range(1, 6)) / sum(1 / log2(i + 1) for i in range(1, 11)),
        },
    )
    assert single(items, grades, ["map@5"])["map@5"] == 0.5


# --------------------------------------------------------------------------
# The REFERENCES.md / fixtures/trec/README.md demos
# --------------------------------------------------------------------------


def test_tie_demo():
    # qrels {d1: 1}; d1, d2, d3 all at 0.5 -> ranked d3, d2, d1 (id descending)
    expected = {
        "mrr": 1 / 3,
        "map": (1 / 3) / 1,
        "ndcg@10": (1 / log2(4)) / (1 / log2(2)),  # = 0.5
        "precision@1": 0 / 1,
        "hit@2": 0.0,
        "hit@3": 1.0,
        "r_precision": 0 / 1,
        "auc": (1 / 2 + 1 / 2) / (1 * 2),  # d1 tied with both negatives: 1/2 each
        "auc(ties=order)": 0 / (1 * 2),  # tie broken: d1 ranked below both
    }
    check(["d1", "d2", "d3"], {"d1": 1}, expected, scores=[0.5, 0.5, 0.5])
    got = single(["d1", "d2", "d3"], {"d1": 1}, ["ndcg@10"], scores=[0.5, 0.5, 0.5])
    assert got["ndcg@10"] == 0.5


def test_negative_grade_demo():
    # q1 {d1: -1, d2: 1, d3: 0}, run d1 > d2 > d3
    expected = {
        "precision@1": 0.0,
        "mrr": 1 / 2,
        "ndcg@3": (1 / log2(3)) / (1 / log2(2)),  # 0.6309; d1's -1 adds no (negative) gain
        "ndcg(gain=exponential)@3": ((2**1 - 1) / log2(3)) / ((2**1 - 1) / log2(2)),
        "map": (1 / 2) / 1,  # R = 1: d1 is not relevant and not counted in R
        "recall": 1 / 1,
        "r_precision": 0 / 1,
        "auc": 1 / (1 * 2),  # d2 beats d3, loses to d1 (a negative)
    }
    check(["d1", "d2", "d3"], {"d1": -1, "d2": 1, "d3": 0}, expected)
    assert round(single(["d1", "d2", "d3"], {"d1": -1, "d2": 1, "d3": 0}, ["ndcg@3"])["ndcg@3"], 4) == 0.6309


def test_graded_ndcg_demo():
    # grades a = 3, b = 1, ranked b, a
    linear = (1 / log2(2) + 3 / log2(3)) / (3 / log2(2) + 1 / log2(3))
    exponential = ((2**1 - 1) / log2(2) + (2**3 - 1) / log2(3)) / ((2**3 - 1) / log2(2) + (2**1 - 1) / log2(3))
    got = single(["b", "a"], {"a": 3, "b": 1}, ["ndcg", "ndcg(gain=exponential)", "ndcg@1"])
    assert got["ndcg"] == pytest.approx(linear, abs=1e-12)
    assert got["ndcg(gain=exponential)"] == pytest.approx(exponential, abs=1e-12)
    assert round(got["ndcg"], 4) == 0.7967
    assert round(got["ndcg(gain=exponential)"], 4) == 0.7098
    assert got["ndcg@1"] == pytest.approx(1 / 3)  # b's gain 1 vs ideal a's gain 3


def test_trec_toy_fixture_matches_its_readme():
    res = evaluate(
        FIXTURES / "toy.run",
        FIXTURES / "toy.qrels",
        ["mrr", "map", "ndcg@10", "precision@1", "ndcg@3", "ndcg", "ndcg(gain=exponential)"],
        n_boot=10,
    )
    frame = res.per_request.set_index("request_id")
    assert sorted(frame.index) == ["q1", "q2", "q3", "q4", "q5"]  # q6 (unjudged) ignored
    assert frame.loc["q1", "mrr"] == pytest.approx(1 / 3)
    assert frame.loc["q1", "map"] == pytest.approx(1 / 3)
    assert frame.loc["q1", "ndcg@10"] == pytest.approx(0.5)
    assert frame.loc["q1", "precision@1"] == 0.0
    assert frame.loc["q2", "precision@1"] == 0.0
    assert frame.loc["q2", "mrr"] == 0.5
    assert round(frame.loc["q2", "ndcg@3"], 4) == 0.6309
    assert frame.loc["q2", "map"] == 0.5
    assert round(frame.loc["q3", "ndcg"], 4) == 0.7967
    assert round(frame.loc["q3", "ndcg(gain=exponential)"], 4) == 0.7098
    assert frame.loc["q4", "mrr"] == 0.5  # "d9" ranks above "d10" on the tie
    assert (frame.loc["q5"] == 0.0).all()  # judged, not retrieved: 0 (trec_eval -c)
    assert res.counts["labels_only_scored_zero"] == 1
    assert res.counts["run_only_ignored"] == 1


# --------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------


def test_auc_no_negatives_is_one_and_no_positives_is_zero():
    assert single(["a", "b"], {"a": 1, "b": 2}, ["auc"])["auc"] == 1.0
    assert single(["a", "b"], {"a": 1, "b": 2}, ["auc(ties=order)"])["auc(ties=order)"] == 1.0
    # the only relevant item is not retrieved: no positive among the ranked items
    got = single(["a", "b"], {"z": 1, "a": 0}, ["auc", "recall", "mrr"])
    assert got == {"auc": 0.0, "recall": 0.0, "mrr": 0.0}


def test_auc_ties_average_vs_order():
    # a (pos) 2.0; b (pos) 1.0, c (neg) 1.0 tied; d (neg) 0.0. pairs = 2 * 2
    # average: a beats c, d (2); b ties c (1/2), beats d (1)          -> 3.5 / 4
    # order:   the tie is broken by id descending, c above b: b-c = 0 -> 3 / 4
    got = single(
        ["a", "b", "c", "d"],
        {"a": 1, "b": 1, "c": 0, "d": 0},
        ["auc", "auc(ties=order)"],
        scores=[2.0, 1.0, 1.0, 0.0],
    )
    assert got["auc"] == pytest.approx((2 + 1 / 2 + 1) / (2 * 2))
    assert got["auc(ties=order)"] == pytest.approx((2 + 0 + 1) / (2 * 2))


def test_auc_all_tied():
    # 2 positives, 2 negatives, every score equal: every pos/neg pair counts 1/2
    got = single(["a", "b", "c", "d"], {"a": 1, "c": 1}, ["auc"], scores=[1.0] * 4)
    assert got["auc"] == pytest.approx((4 * (1 / 2)) / (2 * 2))


def test_auc_min_label():
    # grades d1 = 1, d2 = 2, d3 = 3 ranked d1 > d2 > d3; with min_label = 2 the
    # positives d2, d3 both sit below the negative d1 -> 0 / (2 * 1)
    got = single(["d1", "d2", "d3"], {"d1": 1, "d2": 2, "d3": 3}, ["auc(min_label=2)", "auc"])
    assert got["auc(min_label=2)"] == 0.0
    assert got["auc"] == 1.0  # min_label = 1: all three positive, no negative


# --------------------------------------------------------------------------
# min_label: relevance threshold for binary measures
# --------------------------------------------------------------------------
E_ITEMS = ["d1", "d2", "d3"]
E_GRADES = {"d1": 1, "d2": 2, "d3": 3, "d4": 2}  # d4 judged, not retrieved
E_EXPECTED = {
    "recall": 3 / 4,
    "recall(min_label=2)": 2 / 3,  # d2, d3 of d2, d3, d4
    "recall(min_label=3)": 1 / 1,
    "recall(min_label=2.5)": 1 / 1,  # only d3 >= 2.5
    "precision(min_label=2)@1": 0 / 1,
    "precision(min_label=2)@3": 2 / 3,
    "mrr(min_label=2)": 1 / 2,
    "mrr(min_label=3)": 1 / 3,
    "map(min_label=2)": (1 / 2 + 2 / 3) / 3,
    "r_precision(min_label=2)": 2 / 3,  # R = 3
    "hit(min_label=3)@2": 0.0,
    "hit(min_label=3)@3": 1.0,
    "hit(min_label=4)": 0.0,  # nothing that relevant: R = 0 -> 0
    "map(min_label=4)": 0.0,
    # nDCG ignores the threshold (trec_eval -l does not affect it)
    "ndcg": (1 / log2(2) + 2 / log2(3) + 3 / log2(4)) / (3 / log2(2) + 2 / log2(3) + 2 / log2(4) + 1 / log2(5)),
}


@pytest.mark.parametrize("metric", list(E_EXPECTED))
def test_min_label(metric):
    check(E_ITEMS, E_GRADES, {metric: E_EXPECTED[metric]})


@pytest.mark.parametrize("threshold", ["0", "-1", "0.0", "-0.5"])
def test_min_label_must_be_positive(threshold):
    # items without a label have grade 0: a threshold <= 0 would make every
    # unjudged item relevant (recall could exceed 1), so it is rejected, as
    # pytrec_eval rejects relevance_level <= 0
    with pytest.raises(receval.MetricNameError, match="min_label"):
        single(["x", "y", "z"], {"x": 0, "w": 1}, [f"recall(min_label={threshold})"])


@pytest.mark.parametrize("threshold", ["nan", "inf", "1e400"])
def test_min_label_must_be_finite(threshold):
    # nan would silently score every request 0 (and nan != nan breaks round trips)
    with pytest.raises(receval.MetricNameError, match="min_label"):
        single(["x", "y"], {"x": 1}, [f"recall(min_label={threshold})"])


# --------------------------------------------------------------------------
# Tie-breaking: item id descending in byte order
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "relevant", "expected_rr"),
    [
        (["10", "9"], "9", 1 / 1),  # "9" > "10" as text: ranks first
        (["10", "9"], "10", 1 / 2),
        (["d10", "d9"], "d9", 1 / 1),
        (["d9", "d10"], "d10", 1 / 2),
        (["B", "a"], "a", 1 / 1),  # byte order, not case-insensitive: 'a' (0x61) > 'B' (0x42)
        (["B", "a"], "B", 1 / 2),
        (["ab", "b", "aa"], "b", 1 / 1),
        (["ab", "b", "aa"], "ab", 1 / 2),
        (["ab", "b", "aa"], "aa", 1 / 3),
        (["z", "é"], "é", 1 / 1),  # UTF-8 bytes 0xC3 0xA9 > 'z' (0x7A)
    ],
)
def test_ties_broken_by_item_id_descending_bytes(items, relevant, expected_rr):
    got = single(items, {relevant: 1}, ["mrr"], scores=[1.0] * len(items))
    assert got["mrr"] == pytest.approx(expected_rr)


@pytest.mark.parametrize(
    ("relevant", "expected_rr"),
    [
        (9, 1 / 1),  # as decimal text "9" > "100" > "10" (a prefix sorts first)
        (100, 1 / 2),
        (10, 1 / 3),
    ],
)
def test_integer_item_ids_tie_break_by_decimal_text(relevant, expected_rr):
    run = pd.DataFrame({"request_id": [1, 1, 1], "item_id": [100, 10, 9], "score": [0.5, 0.5, 0.5]})
    labels = pd.DataFrame({"request_id": [1], "item_id": [relevant], "label": [1]})
    res = evaluate(run, labels, ["mrr"], n_boot=10)
    assert res.per_request["mrr"].tolist() == [pytest.approx(expected_rr)]


def test_ties_only_within_equal_scores():
    # "9" would win a tie but its score is lower: score decides first
    got = single(["10", "9"], {"10": 1}, ["mrr"], scores=[0.5000001, 0.5])
    assert got["mrr"] == 1.0


# --------------------------------------------------------------------------
# Missing requests on either side
# --------------------------------------------------------------------------
RUN_ROWS = [("a", "x", 1.0), ("a", "y", 2.0), ("b", "x", 1.0)]  # b: run only
LABEL_ROWS = [("a", "x", 1), ("c", "x", 1)]  # c: labels only


@pytest.mark.parametrize(
    ("missing_in_run", "missing_in_labels", "expected", "count_keys"),
    [
        # a: x ranked 2nd -> RR 1/2; c judged, not retrieved -> 0; b unjudged
        ("zero", "ignore", {"a": 1 / 2, "c": 0.0}, {"labels_only_scored_zero": 1, "run_only_ignored": 1}),
        ("ignore", "ignore", {"a": 1 / 2}, {"labels_only_ignored": 1, "run_only_ignored": 1}),
        ("zero", "zero", {"a": 1 / 2, "b": 0.0, "c": 0.0}, {"labels_only_scored_zero": 1, "run_only_scored_zero": 1}),
        ("ignore", "zero", {"a": 1 / 2, "b": 0.0}, {"labels_only_ignored": 1, "run_only_scored_zero": 1}),
    ],
)
def test_missing_requests(missing_in_run, missing_in_labels, expected, count_keys):
    run, labels = _frames(RUN_ROWS, LABEL_ROWS)
    res = evaluate(run, labels, ["mrr"], missing_in_run=missing_in_run, missing_in_labels=missing_in_labels, n_boot=10)
    frame = res.per_request
    got = dict(zip(frame["request_id"], frame["mrr"], strict=True))
    assert got == pytest.approx(expected)
    assert set(got) == set(expected)
    for key, n in count_keys.items():
        assert res.counts[key] == n
    assert res.counts["evaluated"] == len(expected)
    assert res.counts["run_requests"] == 2
    assert res.counts["label_requests"] == 2
    assert res.summary["mrr"].n == len(expected)
    assert res.summary["mrr"].mean == pytest.approx(sum(expected.values()) / len(expected))


def test_defaults_follow_trec_eval_dash_c():
    run, labels = _frames(RUN_ROWS, LABEL_ROWS)
    res = evaluate(run, labels, ["mrr"], n_boot=10)
    assert res.settings["missing_in_run"] == "zero"
    assert res.settings["missing_in_labels"] == "ignore"
    assert res["mrr"].mean == pytest.approx((1 / 2 + 0.0) / 2)


def test_request_without_relevant_labels_scores_zero():
    all_metrics = [
        "ndcg", "ndcg@3", "ndcg(gain=exponential)", "map", "map@2", "mrr", "mrr@2",
        "precision@2", "recall", "recall@2", "hit", "hit@2", "r_precision", "auc", "auc(ties=order)",
    ]  # fmt: skip
    run_rows = [("n", "x", 3.0), ("n", "y", 2.0), ("n", "z", 1.0), ("p", "x", 1.0)]
    label_rows = [("n", "x", -1), ("n", "y", 0), ("n", "z", -2), ("p", "x", 1)]
    run, labels = _frames(run_rows, label_rows)
    res = evaluate(run, labels, all_metrics, n_boot=10)
    frame = res.per_request.set_index("request_id")
    assert (frame.loc["n"] == 0.0).all()
    assert frame.loc["p", "ndcg"] == 1.0
    assert res.counts["evaluated"] == 2
    assert res.counts["evaluated_without_relevant"] == 1


def test_only_negative_grades_everywhere():
    run, labels = _frames([("n", "x", 1.0)], [("n", "x", -1), ("m", "q", -3)])
    res = evaluate(run, labels, ["ndcg", "map", "mrr", "auc"], n_boot=10)
    assert res.per_request.set_index("request_id").to_dict("index") == {
        "n": {"ndcg": 0.0, "map": 0.0, "mrr": 0.0, "auc": 0.0},
        "m": {"ndcg": 0.0, "map": 0.0, "mrr": 0.0, "auc": 0.0},
    }


# --------------------------------------------------------------------------
# Row order and id types
# --------------------------------------------------------------------------
METRICS = ["ndcg@3", "ndcg", "map", "mrr", "precision@2", "recall@2", "hit@1", "r_precision", "auc"]


def _toy_dataset():
    run_rows = [
        ("q1", "a", 0.9), ("q1", "b", 0.5), ("q1", "c", 0.5), ("q1", "d", 0.1),
        ("q2", "a", 0.3), ("q2", "e", 0.7), ("q2", "f", 0.7),
        ("q3", "g", 1.0), ("q3", "h", 2.0),
    ]  # fmt: skip
    label_rows = [("q1", "c", 2), ("q1", "d", 1), ("q2", "a", 1), ("q2", "f", -1), ("q3", "g", 3), ("q3", "z", 1)]
    return _frames(run_rows, label_rows)


def test_toy_dataset_values():
    run, labels = _toy_dataset()
    frame = evaluate(run, labels, METRICS, n_boot=10).per_request.set_index("request_id")
    # q1: a .9, then c/b tied at .5 -> c before b (id desc), d. grades c=2, d=1: ranks 2 and 4
    assert frame.loc["q1", "mrr"] == pytest.approx(1 / 2)
    assert frame.loc["q1", "map"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert frame.loc["q1", "ndcg"] == pytest.approx((2 / log2(3) + 1 / log2(5)) / (2 / log2(2) + 1 / log2(3)))
    # q2: f/e tied at .7 -> f (-1) before e, then a (1) at rank 3
    assert frame.loc["q2", "mrr"] == pytest.approx(1 / 3)
    assert frame.loc["q2", "precision@2"] == 0.0
    # q3: h, g(3); z relevant unretrieved (R = 2)
    assert frame.loc["q3", "recall@2"] == pytest.approx(1 / 2)
    assert frame.loc["q3", "r_precision"] == pytest.approx(1 / 2)


def test_scattered_run_rows_give_the_same_result_as_grouped_rows():
    run, labels = _toy_dataset()
    grouped = evaluate(run, labels, METRICS, n_boot=10).per_request.sort_values("request_id", ignore_index=True)
    rng = np.random.default_rng(7)
    for _ in range(5):
        shuffled_run = run.iloc[rng.permutation(len(run))].reset_index(drop=True)
        shuffled_labels = labels.iloc[rng.permutation(len(labels))].reset_index(drop=True)
        got = evaluate(shuffled_run, shuffled_labels, METRICS, n_boot=10).per_request
        got = got.sort_values("request_id", ignore_index=True)
        pd.testing.assert_frame_equal(got, grouped, rtol=0, atol=1e-12)
    # a specific interleaving: every request's rows split in two
    order = [0, 4, 7, 1, 5, 8, 2, 6, 3]
    got = evaluate(run.iloc[order], labels, METRICS, n_boot=10).per_request.sort_values("request_id", ignore_index=True)
    pd.testing.assert_frame_equal(got, grouped, rtol=0, atol=1e-12)


def test_mixed_id_dtypes_match_as_text():
    # int request ids in the run, str in the labels; int item ids vs str item ids
    run = pd.DataFrame({"request_id": [1, 1, 2, 2], "item_id": [10, 9, 5, 6], "score": [0.5, 0.5, 0.2, 0.8]})
    labels = pd.DataFrame({"request_id": ["1", "2"], "item_id": ["10", "5"], "label": [1, 1]})
    res = evaluate(run, labels, ["mrr", "recall@1"], n_boot=10)
    got = dict(zip(res.per_request["request_id"], res.per_request["mrr"], strict=True))
    # request 1: 9 and 10 tied, "9" > "10" -> 10 second; request 2: 6 (0.8) before 5
    assert got == {"1": pytest.approx(1 / 2), "2": pytest.approx(1 / 2)}
    assert res.counts["evaluated"] == 2
    assert res.counts["labels_only_scored_zero"] == 0


def test_integer_ids_on_both_sides_stay_integers():
    run = pd.DataFrame({"request_id": [7, 7, 3], "item_id": [1, 2, 1], "score": [0.1, 0.2, 0.3]})
    labels = pd.DataFrame({"request_id": [7, 3], "item_id": [1, 1], "label": [1, 1]})
    frame = evaluate(run, labels, ["mrr"], n_boot=10).per_request
    assert dict(zip(frame["request_id"].tolist(), frame["mrr"].tolist(), strict=True)) == {7: 0.5, 3: 1.0}


def test_summary_is_the_mean_of_per_request_values():
    run, labels = _toy_dataset()
    res = evaluate(run, labels, METRICS, n_boot=200, seed=1)
    for m in METRICS:
        s = res.summary[m]
        assert s.mean == pytest.approx(res.per_request[m].mean())
        assert s.n == 3
        assert s.ci_low <= s.mean <= s.ci_high
        assert s.greater_is_better is True
    # results can be looked up by any spelling of the metric
    assert res["NDCG@3"] is res.summary["ndcg@3"]
    assert res["ap"] is res.summary["map"]


def test_result_renderers():
    run, labels = _toy_dataset()
    res = evaluate(run, labels, ["ndcg@3", "mrr"], n_boot=50, seed=3)
    frame = res.to_frame()
    assert frame.columns.tolist() == ["metric", "mean", "ci_low", "ci_high", "n"]
    assert frame["metric"].tolist() == ["ndcg@3", "mrr"]
    d = res.to_dict()
    json.dumps(d)  # JSON-safe
    assert d["metrics"]["mrr"]["mean"] == pytest.approx(res.per_request["mrr"].mean())
    assert d["metrics"]["mrr"]["n"] == 3
    assert d["counts"]["evaluated"] == 3
    md = res.to_markdown()
    assert md.splitlines()[0] == "| metric | mean | 95% CI | n |"
    assert f"| mrr | {res['mrr'].mean:.4f} |" in md
    assert res.per_request.columns.tolist() == ["request_id", "ndcg@3", "mrr"]


def test_columns_keep_the_order_asked_and_drop_repeats():
    run, labels = _toy_dataset()
    res = evaluate(run, labels, ["mrr", "ndcg@3", "MRR", "rr", "ndcg(gain=linear)@3"], n_boot=10)
    assert res.per_request.columns.tolist() == ["request_id", "mrr", "ndcg@3"]
    assert [str(m) for m in res.metrics] == ["mrr", "ndcg@3"]


def test_hash_collisions_fall_back_to_exact_item_codes(monkeypatch):
    """Text item ids are hashed; a collision is detected and the exact path gives the same numbers."""
    import receval.metrics._prepare as prep

    rng = np.random.default_rng(7)
    run = pd.DataFrame({
        "request_id": np.repeat([f"q{i}" for i in range(30)], 6),
        "item_id": [f"d{j}" for _ in range(30) for j in range(6)],
        "score": rng.integers(0, 3, 180).astype(float),
    })
    labels = pd.DataFrame({"request_id": [f"q{i}" for i in range(30)], "item_id": [f"d{i % 6}" for i in range(30)], "label": 1})
    expected = evaluate(run, labels, ["ndcg@3", "mrr"], n_boot=10).per_request
    # every text id now hashes to 0: all items of a request collide
    monkeypatch.setattr(prep, "_hash", lambda items: np.zeros(len(items), dtype=np.int64))
    got = evaluate(run, labels, ["ndcg@3", "mrr"], n_boot=10).per_request
    pd.testing.assert_frame_equal(got, expected)


def test_empty_pandas_run_scores_judged_requests_zero_and_empty_inputs_are_an_error():
    # an empty pandas frame has object columns with no values: no dtype complaint
    empty_run = pd.DataFrame({"request_id": [], "item_id": [], "score": []})
    labels = pd.DataFrame({"request_id": ["q"], "item_id": ["a"], "label": [1]})
    with pytest.warns(CoverageWarning, match="1 of 1 judged requests"):  # scored 0, counted, and warned about
        res = evaluate(empty_run, labels, ["mrr"], n_boot=10)
    assert res["mrr"].mean == 0.0 and res["mrr"].n == 1
    assert res.counts["labels_only_scored_zero"] == 1
    with pytest.raises(InputError, match="at least one request must be evaluable"):
        evaluate(empty_run, labels.head(0), ["mrr"])
