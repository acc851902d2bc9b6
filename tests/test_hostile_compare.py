"""``receval.compare`` with hostile and broken inputs (receval.testing.compare_inputs).

Several runs, some with broken columns, disjoint request sets, a single run, identical runs, ±inf and
tied scores, duplicate rows: the outcome is a correct comparison (its means equal ``evaluate``'s, identical
runs differ by exactly 0 with p = 1) or a ReceValError naming the rule — never another exception, never
a NaN in the published result, never a number computed over zero paired requests.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

import receval
from receval.errors import CoverageWarning, InputError
from receval.testing import (
    Hostile,
    assert_published_numbers_explained,
    check_outcome,
    compare_inputs,
)

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

METRICS = ["ndcg@10", "mrr", "precision@1"]
EMPTY = ("at least one request must be evaluable",)


def _pandas(frame) -> pd.DataFrame:
    if isinstance(frame, pd.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect().to_pandas()
    return frame.to_pandas()


def _requests(frame) -> set[str]:
    df = _pandas(frame)
    return {str(v) for v in df["request_id"].astype(object)} if len(df) else set()


def _oracle(runs: dict, labels, on_mismatch: str) -> tuple[str | None, dict[str, set[str]]]:
    """The refusal ``compare`` must give (a message fragment) or None, and per candidate the paired requests."""
    judged = _requests(labels)
    if not judged:
        return EMPTY[0], {}
    names = list(runs)
    listed = {n: judged & _requests(runs[n]) for n in names}
    base = names[0]
    paired = {}
    for c in names[1:]:
        if on_mismatch == "error":
            if listed[c] != listed[base]:
                return "both runs must list the same judged requests", {}
            paired[c] = judged
        else:
            paired[c] = {r for r in judged if (r in listed[base]) == (r in listed[c])}
            if not paired[c]:
                return "the runs share no judged request that both list", {}
    return None, paired


def _coverage_warning_expected(runs: dict, labels) -> bool:
    judged = _requests(labels)
    return any(2 * len(judged - _requests(r)) > len(judged) for r in runs.values())


@given(compare_inputs(), st.sampled_from(["paired_t", "wilcoxon", "randomization"]),
       st.sampled_from(["error", "intersect"]), st.sampled_from([None, 0.01]),
       st.sampled_from(["holm", "bh", "none"]))
def test_compare_hostile(case: Hostile, test, on_mismatch, margin, correction):
    runs, labels = case.value
    refusal, paired = (None, {}) if not case.valid else _oracle(runs, labels, on_mismatch)

    def call():
        return receval.compare(runs, labels, METRICS, n_boot=5, n_perm=20, test=test, on_mismatch=on_mismatch,
                               margin=margin, correction=correction)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if refusal is not None:
            with pytest.raises(InputError, match=refusal):
                call()
            return
        res = check_outcome(case, call, allow=EMPTY)
    if res is None:
        return
    other = [w for w in caught if not issubclass(w.category, CoverageWarning)]
    assert not other, [str(w.message) for w in other]  # no RuntimeWarning (mean of empty slice, overflow...)
    assert any(issubclass(w.category, CoverageWarning) for w in caught) == _coverage_warning_expected(runs, labels)

    d = assert_published_numbers_explained(res)
    res.to_markdown()
    names = list(runs)
    base = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)
        single = {n: receval.evaluate(r, labels, METRICS, n_boot=5) for n, r in runs.items()}
    assert len(d["comparisons"]) == len(METRICS) * (len(names) - 1)
    for row in d["comparisons"]:
        cand = row["candidate"]
        assert row["n"] == len(paired[cand]) == res.counts[cand]["paired_requests"] >= 1
        if on_mismatch == "error" or res.counts[cand]["missing_from_candidate_run"] + \
                res.counts[cand]["missing_from_baseline_run"] == 0:
            # every judged request paired: the means are evaluate()'s
            assert row["baseline_mean"] == pytest.approx(single[base][row["metric"]].mean, abs=1e-12)
            assert row["candidate_mean"] == pytest.approx(single[cand][row["metric"]].mean, abs=1e-12)
        assert row["diff"] == pytest.approx(row["candidate_mean"] - row["baseline_mean"], abs=1e-12)
        assert row["p_value"] is not None and 0 < row["p_value"] <= 1, row  # per-request metrics: always defined
        assert row["p_adjusted"] is not None and row["p_value"] <= row["p_adjusted"] + 1e-15 <= 1 + 1e-15
        assert row["ci_low"] is None or row["ci_low"] <= row["ci_high"]
        if _pandas(runs[cand]).equals(_pandas(runs[base])):  # identical runs: exactly no difference, p = 1
            assert row["diff"] == 0 and row["ci_low"] == 0 and row["ci_high"] == 0, row
            assert row["p_value"] == 1.0, row
        if margin is not None:
            assert isinstance(row["non_inferior"], bool)


@pytest.mark.parametrize("test", ["paired_t", "wilcoxon", "randomization"])
def test_regression_intersect_with_no_request_listed_by_both_runs_is_an_input_error(test):
    """Was: n = 0 rows with p = 1.0 ("not significant") from the randomization test, and a population
    metric's difference 0.0, computed over no request at all."""
    a = pd.DataFrame({"request_id": [1, 1], "item_id": [1, 2], "score": [1.0, 0.0]})
    b = a.assign(request_id=2)
    lab = pd.DataFrame({"request_id": [1, 2], "item_id": [1, 2], "label": [1, 1]})
    cat = pd.DataFrame({"item_id": [1, 2, 3], "popularity": [1, 2, 3]})
    with pytest.raises(InputError, match="share no judged request that both list") as e:
        receval.compare({"a": a, "b": b}, lab, ["ndcg@10", "coverage@10"], catalog=cat, n_boot=5, test=test,
                        n_perm=10, on_mismatch="intersect")
    assert "request_id" in str(e.value) and "1 listed only by a" in str(e.value)


def test_identical_runs_have_defined_p_values_and_zero_differences():
    run = pd.DataFrame({"request_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 1, 2, 1],
                        "score": [1.0, math.inf, -0.0, 0.0, -math.inf]})
    lab = pd.DataFrame({"request_id": [1, 2, 3], "item_id": [2, 1, 1], "label": [1, 2, 0]})
    for test in ("paired_t", "wilcoxon", "randomization"):
        res = receval.compare({"a": run, "b": run.copy()}, lab, ["ndcg@10", "mrr"], n_boot=20, test=test, n_perm=50)
        for row in res.to_dict()["comparisons"]:
            assert (row["diff"], row["ci_low"], row["ci_high"], row["p_value"]) == (0.0, 0.0, 0.0, 1.0), row
            assert row["significant"] is False


def test_coverage_warning_from_compare_names_the_run():
    a = pd.DataFrame({"request_id": [1, 1], "item_id": [1, 2], "score": [1.0, 0.0]})
    lab = pd.DataFrame({"request_id": [1, 2, 3], "item_id": [1, 1, 1], "label": [1, 1, 1]})
    prod = pd.concat([a, a.assign(request_id=2), a.assign(request_id=3)])
    with pytest.warns(CoverageWarning, match=r"cand: 2 of 3 judged requests \(67%\) are missing from the run .*"
                                             r"only 1 judged request appears in the run"):
        receval.compare({"prod": prod, "cand": a}, lab, ["ndcg@10"], n_boot=5, on_mismatch="intersect")


def test_regression_runs_giving_a_request_different_users_is_an_input_error():
    """Was: unit='user' resampled by the baseline's users and silently ignored the candidate's."""
    lab = pd.DataFrame({"request_id": [1, 2, 3], "item_id": [1, 1, 1], "label": [1, 1, 0]})

    def run(users):
        return pd.DataFrame({"request_id": [1, 1, 2, 2, 3, 3], "item_id": [1, 2] * 3, "score": [1.0, 0.5] * 3,
                             "user_id": [u for u in users for _ in range(2)]})

    with pytest.raises(InputError, match=r"user_id: both runs must give each request the same user; 2 rows .*"
                                         r"request 2: 'b' in a, 'y' in b"):
        receval.compare({"a": run(["a", "b", "c"]), "b": run(["a", "y", "z"])}, lab, ["mrr"], unit="user", n_boot=5)
    # the same users written as integers in one run and text in the other are the same users
    res = receval.compare({"a": run([1, 2, 3]), "b": run(["1", "2", "3"])}, lab, ["mrr"], unit="user", n_boot=5)
    assert res.counts["b"]["paired_users"] == 3
