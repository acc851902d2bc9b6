"""Data-quality summary: one test per check, contract violations, statuses, no identifiers in outputs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import polars as pl
import pytest

from receval.audits.quality import data_quality
from receval.errors import UsageError

# The shared environment's pyspark warns about pandas 3 when pandera (the contract) is first
# imported; it is not about receval's code.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

CLEAN = pl.DataFrame({
    "request_id": [1, 1, 1, 2, 2, 3],
    "item_id": ["a", "b", "c", "a", "d", "b"],
    "score": [0.9, 0.5, 0.1, 0.3, 0.7, 0.2],
})


def test_clean_run_is_ok_and_profiled():
    rep = data_quality(CLEAN, "run")
    assert rep.violations == ()
    assert all(c.status == "ok" for c in rep.checks if c.name != "single_item_requests")
    assert rep.status == "warning"  # the worst status: request 3's single item
    assert (rep.n_rows, rep.n_requests) == (6, 3)
    prof = {c.column: c for c in rep.columns}
    assert (prof["item_id"].n_distinct, prof["item_id"].n_missing, prof["item_id"].dtype) == (4, 0, "String")
    score = rep.check("score_range").summary
    assert (score["min"], score["max"]) == (0.1, 0.9)
    assert score["mean"] == pytest.approx(np.mean([0.9, 0.5, 0.1, 0.3, 0.7, 0.2]))
    # request 3 has one item
    single = rep.check("single_item_requests")
    assert (single.status, single.n_rows, single.summary["share"]) == ("warning", 1, pytest.approx(1 / 3))
    assert "invalid_propensity: no propensity column" in rep.skipped


def test_rows_per_request_quantiles_match_numpy():
    rng = np.random.default_rng(0)
    req = rng.integers(0, 40, 500)
    frame = pl.DataFrame({"request_id": req, "item_id": np.arange(500), "score": rng.random(500)})
    sizes = np.array(list(Counter(req.tolist()).values()))
    got = data_quality(frame).check("rows_per_request").summary
    want = np.quantile(sizes, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
    assert [got[k] for k in ("min", "p05", "p25", "median", "p75", "p95", "max")] == pytest.approx(want)
    assert got["mean"] == pytest.approx(sizes.mean())


def test_missing_values_per_column():
    frame = pl.DataFrame({"request_id": [1, 1, 2, 2], "item_id": ["a", "b", "a", None],
                          "score": [0.1, float("nan"), None, 0.4], "segment": ["x", None, None, None]})
    rep = data_quality(frame)
    prof = {c.column: c for c in rep.columns}
    assert (prof["score"].n_missing, prof["score"].missing_rate) == (2, 0.5)  # null and NaN
    assert prof["segment"].n_missing == 3 and prof["segment"].canonical is None
    assert rep.status == "error"
    rules = {(v.column, v.rule): v for v in rep.violations}
    assert rules[("score", "must not be null or NaN")].n_rows == 2
    assert rules[("item_id", "must not be null or NaN")].examples == ("row 3",)
    score = rep.check("score_range")
    assert score.status == "error" and score.n_rows == 2 and score.examples == ("row 1", "row 2")
    assert (score.summary["n_nan"], score.summary["n_null"]) == (1, 1)


def test_invalid_propensities():
    frame = pl.DataFrame({"request_id": [1] * 7, "item_id": list("abcdefg"),
                          "propensity": [0.5, 0.0, 1.2, None, float("nan"), float("inf"), 1.0]})
    rep = data_quality(frame, "impressions")
    check = rep.check("invalid_propensity")
    assert check.status == "error" and check.n_rows == 5
    assert check.summary == {"n_null": 1, "n_nan": 1, "n_infinite": 1, "n_not_positive": 1, "n_above_one": 1}
    assert check.examples == ("row 1", "row 2", "row 3", "row 4", "row 5")
    rules = {v.rule for v in rep.violations if v.column == "propensity"}
    assert {"must be > 0", "must be <= 1", "must not be null or NaN"} <= rules
    ok = data_quality(frame.filter(pl.col("propensity").is_in([0.5, 1.0])), "impressions")
    assert ok.check("invalid_propensity").status == "ok" and ok.status != "error"


def test_duplicate_pairs():
    frame = pl.DataFrame({"request_id": [1, 1, 1, 2, 1], "item_id": ["a", "b", "a", "a", "a"],
                          "score": [1.0, 2.0, 3.0, 4.0, 5.0]})
    check = data_quality(frame, "run").check("duplicate_pairs")
    assert (check.status, check.n_rows, check.examples) == ("error", 2, ("row 2", "row 4"))  # repeats of (1, a)
    assert check.summary["n_rows_in_repeated_groups"] == 3
    # for a run it is also a contract violation (the rule evaluate() applies after validate)
    (v,) = data_quality(frame, "run").violations
    assert (v.column, v.rule, v.n_rows, v.examples) == (
        "request_id, item_id", "each item may appear once per request", 2, ("row 2", "row 4"))
    # the same repeat in logged impressions is a warning; labels must be unique, an error
    assert data_quality(frame.drop("score"), "impressions").check("duplicate_pairs").status == "warning"
    lab = frame.rename({"score": "label"})
    assert data_quality(lab, "labels").check("duplicate_pairs").status == "error"
    assert data_quality(CLEAN).check("duplicate_pairs").n_rows == 0


def test_duplicate_positions():
    frame = pl.DataFrame({"request_id": [1, 1, 1, 2], "item_id": ["a", "b", "c", "a"], "position": [1, 2, 2, 1]})
    check = data_quality(frame, "impressions").check("duplicate_positions")
    assert (check.status, check.n_rows, check.examples) == ("warning", 1, ("row 2",))


def test_label_distribution():
    frame = pl.DataFrame({"request_id": [1, 1, 1, 2, 2, 2], "item_id": list("abcdef"), "label": [0, 1, 1, 2, -1, 1]})
    check = data_quality(frame, "labels").check("label_distribution")
    assert check.summary["counts"] == {"1.0": 3, "-1.0": 1, "0.0": 1, "2.0": 1}  # by count, then value
    assert list(check.summary["counts"]) == ["1.0", "-1.0", "0.0", "2.0"]
    assert (check.summary["n_positive"], check.summary["n_negative"], check.status) == (4, 1, "ok")
    short = data_quality(frame, "labels", max_label_values=2).check("label_distribution").summary
    assert short["counts"] == {"1.0": 3, "-1.0": 1} and short["n_values_not_shown"] == 2
    none = data_quality(frame.with_columns(label=pl.lit(0)), "labels").check("label_distribution")
    assert none.status == "warning" and "no positive label" in none.hint


def test_score_and_prediction_ranges():
    frame = pl.DataFrame({"request_id": [1, 1, 1], "item_id": ["a", "b", "c"], "score": [float("inf"), 1.0, 2.0],
                          "prediction": [0.2, 1.5, -0.1]})
    rep = data_quality(frame)
    score = rep.check("score_range")
    assert (score.status, score.n_rows, score.summary["n_posinf"], score.summary["max"]) == ("warning", 1, 1, 2.0)
    pred = rep.check("prediction_range")
    assert (pred.status, pred.n_rows, pred.summary["n_outside_0_1"], pred.examples) == ("error", 2, 2,
                                                                                          ("row 1", "row 2"))
    constant = data_quality(frame.with_columns(score=pl.lit(3.0)).drop("prediction")).check("score_range")
    assert constant.status == "warning" and "equal" in constant.hint


def test_wrong_types_do_not_hide_the_other_violations():
    # validate() stops at the type stage; data_quality still checks the others' value rules
    frame = pl.DataFrame({"request_id": [1, None], "item_id": [1.0, 2.0], "score": ["high", "low"]})
    rep = data_quality(frame)
    rules = [(v.column, v.rule.split(",")[0]) for v in rep.violations]
    assert ("item_id", "must hold integers or text") in rules
    assert ("score", "must be numeric") in rules
    assert ("request_id", "must not be null or NaN") in rules
    assert "score_range: score is not numeric" in rep.skipped
    # ids of a type that cannot even be cast (lists): the null rule is still checked
    nested = data_quality(pl.DataFrame({"request_id": [1, 2], "item_id": [[1], None], "score": [1.0, 2.0]}))
    assert [(v.column, v.rule.split(",")[0], v.examples) for v in nested.violations] == [
        ("item_id", "must hold integers or text", ("(identifier values withheld)",)),
        ("item_id", "must not be null or NaN", ("row 1",))]


def test_missing_required_column_and_mapping():
    frame = pl.DataFrame({"qid": [1, 1], "docno": ["a", "b"]})
    rep = data_quality(frame, "run", columns={"request_id": "qid", "item_id": "docno"})
    assert rep.status == "error"
    assert [(v.column, v.rule) for v in rep.violations] == [("score", "required column is missing")]
    prof = {c.column: c.canonical for c in rep.columns}
    assert prof == {"qid": "request_id", "docno": "item_id"}
    assert rep.n_requests == 1
    assert rep.check("duplicate_pairs").column == "request_id (your column 'qid'), item_id (your column 'docno')"


def test_no_identifiers_in_outputs():
    frame = pd.DataFrame({"request_id": ["secret_q1", "secret_q1", None, "secret_q2"],
                          "item_id": ["secret_a", "secret_a", "secret_b", "secret_c"],
                          "score": [1.0, 2.0, 3.0, 4.0], "user_id": [1.25, 2.5, 3.5, 4.5]})  # float user ids
    rep = data_quality(frame)
    text = json.dumps(rep.to_dict(), allow_nan=False)
    assert "secret" not in text and "1.25" not in text
    assert rep.to_frame("findings").filter(pl.col("examples").str.contains("secret")).height == 0
    user = next(v for v in rep.violations if v.column == "user_id")
    assert user.examples == ("(identifier values withheld)",)
    # a frame that cannot be read at all (ids mixing numbers and text) is reported, not raised
    mixed = pd.DataFrame({"request_id": [1, "secret_x"], "item_id": ["a", "b"], "score": [1.0, 2.0]})
    rep = data_quality(mixed)
    assert rep.status == "error" and rep.n_rows == 0 and rep.violations[0].n_rows == 1
    assert "secret" not in json.dumps(rep.to_dict())


def test_frames_and_errors():
    rep = data_quality(CLEAN)
    assert rep.to_frame().columns == ["column", "canonical", "dtype", "n_missing", "missing_rate", "n_distinct"]
    findings = rep.to_frame("findings")
    assert findings.height == len(rep.checks) + len(rep.violations)
    with pytest.raises(UsageError):
        rep.to_frame("nope")
    with pytest.raises(UsageError, match="kind"):
        data_quality(CLEAN, "catalog")
    with pytest.raises(UsageError):
        data_quality(CLEAN, columns={"nope": "x"})
