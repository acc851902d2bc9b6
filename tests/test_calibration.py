"""Calibration metrics: ``ece``, ``mce``, ``brier``, ``logloss`` and reliability tables.

Oracles: scikit-learn's ``brier_score_loss`` / ``log_loss``, slow pure-Python
reference loops for ECE and MCE (uniform and quantile bins), and hand-computed
toys with the arithmetic written out. Conventions under test are documented in
docs/metrics.md, section "Calibration metrics".
"""

from __future__ import annotations

import math
import re
import time
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from receval import evaluate
from receval.errors import InputError, MetricNameError, UsageError
from receval.metrics import REGISTRY, parse_metric
from receval.metrics import calibration as cal
from receval.metrics.base import EvalContext

CALIBRATION = ("ece", "mce", "brier", "logloss")


# ---------------------------------------------------------------------------
# slow, obviously-correct references
# ---------------------------------------------------------------------------


def ref_quantile(sorted_values: list[float], q: Fraction) -> float:
    """Linear-interpolation quantile (numpy's default method), by hand, exact rank."""
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + float(h - lo) * (sorted_values[hi] - sorted_values[lo])


def ref_bins(p: list[float], bins: int, strategy: str) -> tuple[list[float], list[int]]:
    """Edges and bin of every prediction, one row at a time."""
    if strategy == "uniform":
        edges = [b / bins for b in range(bins + 1)]
        return edges, [min(math.floor(x * bins), bins - 1) for x in p]
    s = sorted(p)
    edges = sorted(set(ref_quantile(s, Fraction(j, bins)) for j in range(bins + 1)))
    if len(edges) == 1:
        return [edges[0], edges[0]], [0] * len(p)
    out = []
    for x in p:
        b = 0
        for i in range(len(edges) - 1):  # the last bin whose lower edge is <= x
            if edges[i] <= x:
                b = i
        out.append(b)
    return edges, out


def ref_ece_mce(p, y, bins=15, strategy="uniform") -> tuple[float, float]:
    p = [float(x) for x in p]
    y = [float(v) for v in y]
    edges, assigned = ref_bins(p, bins, strategy)
    members: dict[int, list[int]] = {}
    for i, b in enumerate(assigned):
        members.setdefault(b, []).append(i)
    n = len(p)
    ece, mce = 0.0, 0.0
    for rows in members.values():
        mean_p = sum(p[i] for i in rows) / len(rows)
        rate = sum(y[i] for i in rows) / len(rows)
        ece += len(rows) / n * abs(mean_p - rate)
        mce = max(mce, abs(mean_p - rate))
    return ece, mce


def wilson(k: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval, written out."""
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def impressions(n_requests=80, seed=0, max_rows=12, decimals=None, graded=False, bias=1.0) -> pd.DataFrame:
    """Logged impressions: one row per (request, item) with prediction and label."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_rows + 1, n_requests)
    req = np.repeat(np.arange(n_requests), sizes)
    p = rng.random(len(req))
    if decimals is not None:
        p = np.round(p, decimals)  # many exact ties, some predictions exactly 0 or 1
    truth = np.clip(p * bias, 0, 1)
    if graded:
        label = rng.integers(0, 4, len(req))
    else:
        label = (rng.random(len(req)) < truth).astype(np.int64)
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in req],
            "item_id": [f"i{j}" for j in range(len(req))],
            "score": rng.random(len(req)),
            "prediction": p,
            "label": label,
        }
    )


def values(result) -> dict[str, float]:
    return {name: s.mean for name, s in result.summary.items()}


# ---------------------------------------------------------------------------
# registry and names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CALIBRATION)
def test_registered_as_calibration_lower_is_better(name):
    spec = REGISTRY[name]
    assert spec.kind == "calibration"
    assert spec.cutoff == "none"
    assert spec.greater_is_better is False
    assert spec.description
    assert spec.params["min_label"].default == 1.0
    m = parse_metric(name)
    assert m.greater_is_better is False
    assert str(m) == name


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ece", "ece"),
        ("ECE(bins=15)", "ece"),
        ("ece(strategy=uniform)", "ece"),
        ("ece(bins=10)", "ece(bins=10)"),
        ("ece( strategy = quantile )", "ece(strategy=quantile)"),
        ("ece(strategy=quantile, bins=20, min_label=2.0)", "ece(bins=20,min_label=2,strategy=quantile)"),
        ("mce(bins=5)", "mce(bins=5)"),
        ("brier", "brier"),
        ("brier_score", "brier"),
        ("logloss(min_label=1)", "logloss"),
        ("log_loss(min_label=0.5)", "logloss(min_label=0.5)"),
    ],
)
def test_names_round_trip(text, canonical):
    m = parse_metric(text)
    assert str(m) == canonical
    assert parse_metric(str(m)) == m


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ece@10", "takes no cutoff"),
        ("brier@5", "takes no cutoff"),
        ("ece(bins=0)", "must be >= 1"),
        ("ece(bins=2.5)", "must be a int"),
        ("ece(strategy=kmeans)", "must be one of uniform, quantile"),
        ("brier(bins=10)", "brier has no parameter 'bins'"),
        ("logloss(min_label=0)", "must be > 0"),
    ],
)
def test_bad_names(text, fragment):
    with pytest.raises(MetricNameError, match=re.escape(fragment)):
        parse_metric(text)


# ---------------------------------------------------------------------------
# scikit-learn equivalences
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brier_and_logloss_equal_sklearn_labels_in_run(seed):
    run = impressions(seed=seed, decimals=2 if seed == 2 else None)
    res = evaluate(run, None, ["brier", "logloss"], n_boot=20)
    y, p = run["label"].to_numpy(), run["prediction"].to_numpy()
    assert res["brier"].mean == pytest.approx(brier_score_loss(y, p), rel=0, abs=1e-12)
    assert res["logloss"].mean == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=0, abs=1e-12)
    assert res["brier"].n == run["request_id"].nunique()


def test_brier_and_logloss_equal_sklearn_separate_labels():
    # labels for a subset of rows only: unlabelled run rows are negatives
    run = impressions(seed=4).drop(columns="label")
    rng = np.random.default_rng(4)
    labelled = rng.random(len(run)) < 0.5
    # every request keeps at least one label row, so none is left out
    labelled[run.groupby("request_id").head(1).index] = True
    labels = pd.DataFrame(
        {
            "request_id": run["request_id"][labelled],
            "item_id": run["item_id"][labelled],
            "label": rng.integers(0, 2, int(labelled.sum())),
        }
    )
    y = run[["request_id", "item_id"]].merge(labels, how="left", on=["request_id", "item_id"])["label"].fillna(0)
    p = run["prediction"].to_numpy()
    res = evaluate(run, labels, ["brier", "logloss", "ndcg@10"], n_boot=20)
    assert res["brier"].mean == pytest.approx(brier_score_loss(y, p), rel=0, abs=1e-12)
    assert res["logloss"].mean == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=0, abs=1e-12)


def test_requests_without_labels_are_left_out_by_default():
    run = impressions(seed=5).drop(columns="label")
    first = run["request_id"].iloc[0]
    labels = run.loc[run["request_id"] != first, ["request_id", "item_id"]].assign(label=1)
    kept = run["request_id"] != first
    res = evaluate(run, labels, ["brier"], n_boot=5)
    assert res.counts["run_only_ignored"] == 1
    assert res["brier"].mean == pytest.approx(brier_score_loss(np.ones(kept.sum()), run["prediction"][kept]), abs=1e-12)
    # missing_in_labels="zero" keeps its rows, as negatives
    res0 = evaluate(run, labels, ["brier"], n_boot=5, missing_in_labels="zero")
    y = kept.astype(int)
    assert res0["brier"].mean == pytest.approx(brier_score_loss(y, run["prediction"]), abs=1e-12)


def test_logloss_clips_exact_zero_and_one_like_sklearn():
    eps = np.finfo(np.float64).eps
    run = pd.DataFrame(
        {
            "request_id": ["a", "a", "b", "b"],
            "item_id": ["x", "y", "x", "y"],
            "score": [1.0, 0.0, 1.0, 0.0],
            "prediction": [0.0, 1.0, 1.0, 0.0],
            "label": [1, 0, 1, 0],
        }
    )
    res = evaluate(run, None, ["logloss", "brier"], n_boot=10)
    # two confident mistakes cost -log(eps) each, two confident hits -log(1 - eps) each
    expected = (2 * -math.log(eps) + 2 * -math.log(1 - eps)) / 4
    assert res["logloss"].mean == pytest.approx(expected, rel=1e-15)
    assert res["logloss"].mean == pytest.approx(log_loss(run["label"], run["prediction"]), rel=1e-15)
    assert res["brier"].mean == 0.5  # (1 + 1 + 0 + 0) / 4


# ---------------------------------------------------------------------------
# ECE and MCE against the slow reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("bins", [1, 2, 5, 10, 15, 40])
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_ece_and_mce_equal_reference(strategy, bins, decimals):
    run = impressions(n_requests=60, seed=bins, decimals=decimals, bias=0.8)
    names = [f"ece(bins={bins},strategy={strategy})", f"mce(bins={bins},strategy={strategy})"]
    res = evaluate(run, None, names, n_boot=10)
    ece, mce = ref_ece_mce(run["prediction"], run["label"], bins, strategy)
    got = list(values(res).values())
    assert got[0] == pytest.approx(ece, rel=1e-12, abs=1e-15)
    assert got[1] == pytest.approx(mce, rel=1e-12, abs=1e-15)


def test_quantile_edges_are_the_sample_quantiles_with_repeats_collapsed():
    run = impressions(n_requests=50, seed=8, decimals=1)
    res = evaluate(run, None, ["ece(strategy=quantile,bins=20)"], n_boot=5)
    extra = res.details["ece(bins=20,strategy=quantile)"]
    s = sorted(run["prediction"])
    expected = sorted(set(ref_quantile(s, Fraction(j, 20)) for j in range(21)))
    assert extra["edges"] == pytest.approx(expected, abs=1e-15)
    # numpy's default quantile method, up to an ulp
    numpy_edges = np.unique(np.quantile(run["prediction"], np.linspace(0, 1, 21)))
    assert extra["edges"] == pytest.approx(numpy_edges.tolist(), abs=1e-15)
    assert extra["bins"] == len(expected) - 1 < 20  # one decimal: at most 11 distinct values
    assert extra["bins_requested"] == 20
    assert sum(r["count"] for r in extra["reliability"]) == len(run)


# ---------------------------------------------------------------------------
# hand-computed toy
# ---------------------------------------------------------------------------


def toy_run() -> pd.DataFrame:
    # two requests; predictions 0.1, 0.3 | 0.6, 0.8, 0.9 with labels 0, 1 | 0, 1, 1
    return pd.DataFrame(
        {
            "request_id": ["q1", "q1", "q2", "q2", "q2"],
            "item_id": ["a", "b", "c", "d", "e"],
            "score": [5.0, 4.0, 3.0, 2.0, 1.0],
            "prediction": [0.1, 0.3, 0.6, 0.8, 0.9],
            "label": [0, 1, 0, 1, 1],
        }
    )


def test_toy_by_hand():
    res = evaluate(toy_run(), None, ["ece(bins=2)", "mce(bins=2)", "brier", "logloss"], n_boot=10)
    # bins=2: [0, 0.5) holds 0.1, 0.3 (mean 0.2, rate 1/2, gap 0.3);
    #         [0.5, 1] holds 0.6, 0.8, 0.9 (mean 2.3/3, rate 2/3, gap 0.1)
    # ECE = 2/5 * 0.3 + 3/5 * 0.1 = 0.12 + 0.06 = 0.18; MCE = 0.3
    assert res["ece(bins=2)"].mean == pytest.approx(0.18, abs=1e-15)
    assert res["mce(bins=2)"].mean == pytest.approx(0.3, abs=1e-15)
    # Brier = (0.1^2 + 0.7^2 + 0.6^2 + 0.2^2 + 0.1^2) / 5 = (0.01 + 0.49 + 0.36 + 0.04 + 0.01) / 5 = 0.182
    assert res["brier"].mean == pytest.approx(0.182, abs=1e-15)
    # log loss = -(ln 0.9 + ln 0.3 + ln 0.4 + ln 0.8 + ln 0.9) / 5 = 2.5541281 / 5 = 0.5108256
    expected = -(math.log(0.9) + math.log(0.3) + math.log(0.4) + math.log(0.8) + math.log(0.9)) / 5
    assert res["logloss"].mean == pytest.approx(expected, abs=1e-15)
    assert res["logloss"].mean == pytest.approx(0.5108256, abs=1e-7)
    # population metrics: no per-request column, and n is the number of requests
    assert list(res.per_request.columns) == ["request_id"]
    assert res["brier"].n == 2


def test_toy_reliability_table():
    res = evaluate(toy_run(), None, ["ece(bins=2)"], n_boot=10)
    extra = res.details["ece(bins=2)"]
    assert extra["nonempty_bins"] == 2 and extra["bins"] == 2 and extra["strategy"] == "uniform"
    assert extra["reliability_level"] == 0.95
    lo0, hi0 = wilson(1, 2)  # 1 positive of 2
    lo1, hi1 = wilson(2, 3)
    # the textbook Wilson interval of 1/2 at 95 %
    assert (lo0, hi0) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    expected = [
        {"bin": 0, "lower": 0.0, "upper": 0.5, "count": 2, "mean_predicted": 0.2, "observed_rate": 0.5, "ci_low": lo0, "ci_high": hi0},
        {"bin": 1, "lower": 0.5, "upper": 1.0, "count": 3, "mean_predicted": 2.3 / 3, "observed_rate": 2 / 3, "ci_low": lo1, "ci_high": hi1},
    ]
    got = extra["reliability"]
    assert len(got) == 2
    for row, want in zip(got, expected, strict=True):
        assert row.keys() == want.keys()
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=1e-12), key

    table = cal.reliability_table(toy_run()["prediction"], toy_run()["label"], bins=2)
    assert list(table.columns) == ["bin", "lower", "upper", "count", "mean_predicted", "observed_rate", "ci_low", "ci_high"]
    for row, want in zip(table.to_dict("records"), expected, strict=True):
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=1e-12), key


def test_wilson_interval_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.proportion")
    p = np.r_[np.full(7, 0.05), np.full(40, 0.5), np.full(13, 0.95)]
    y = np.r_[np.zeros(7), np.ones(11), np.zeros(29), np.ones(13)]
    for level in (0.9, 0.95, 0.99):
        table = cal.reliability_table(p, y, bins=10, level=level)
        full = table[table["count"] > 0]
        for row in full.itertuples():
            k = round(row.observed_rate * row.count)
            lo, hi = sm.proportion_confint(k, row.count, alpha=1 - level, method="wilson")
            assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_empty_bins_are_listed_with_count_zero():
    table = cal.reliability_table([0.05, 0.95], [0, 1], bins=4)
    assert table["count"].tolist() == [1, 0, 0, 1]
    assert table["lower"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert table["upper"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert table.loc[1:2, ["mean_predicted", "observed_rate", "ci_low", "ci_high"]].isna().all().all()
    res = evaluate(
        pd.DataFrame({"request_id": [1, 1], "item_id": [1, 2], "score": [1.0, 0.0], "prediction": [0.05, 0.95], "label": [0, 1]}),
        None, ["ece(bins=4)"], n_boot=5,
    )
    rows = res.details["ece(bins=4)"]["reliability"]
    assert [r["count"] for r in rows] == [1, 0, 0, 1]
    assert rows[1]["mean_predicted"] is None and rows[1]["ci_low"] is None
    assert res.details["ece(bins=4)"]["nonempty_bins"] == 2


def test_prediction_exactly_zero_and_one_land_in_first_and_last_bins():
    p = [0.0, 0.0, 1.0, 1.0, 0.5]
    y = [0, 1, 1, 1, 0]
    table = cal.reliability_table(p, y, bins=4)
    # p = 1 is in the last bin [0.75, 1] (closed), p = 0.5 in [0.5, 0.75)
    assert table["count"].tolist() == [2, 0, 1, 2]
    run = pd.DataFrame({"request_id": 1, "item_id": range(5), "score": 0.0, "prediction": p, "label": y})
    res = evaluate(run, None, ["ece(bins=4)", "mce(bins=4)", "brier", "logloss"], n_boot=5)
    # bins: {0, 0} rate 1/2 gap 1/2; {0.5} rate 0 gap 0.5; {1, 1} rate 1 gap 0
    assert res["ece(bins=4)"].mean == pytest.approx((2 * 0.5 + 1 * 0.5 + 0) / 5)
    assert res["mce(bins=4)"].mean == pytest.approx(0.5)
    assert res["brier"].mean == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    assert res["logloss"].mean == pytest.approx(log_loss(y, p), rel=1e-14)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "n_bad"),
    [([1.5, 0.2, 0.3, 0.4, 0.5], 1), ([-0.1, 2.0, 0.3, 0.4, np.inf], 3), ([np.nan, 0.2, 0.3, 0.4, 0.5], 1)],
)
def test_predictions_outside_unit_interval_are_an_input_error(bad, n_bad):
    run = toy_run().assign(prediction=bad)
    with pytest.raises(InputError) as err:
        evaluate(run, None, ["ece", "brier"], n_boot=5)
    msg = str(err.value)
    assert "prediction" in msg
    assert f"{n_bad} row" in msg
    assert any(v.column == "prediction" for v in err.value.violations)
    # ranking metrics alone do not look at the prediction column
    assert evaluate(run, None, ["mrr"], n_boot=5)["mrr"].n == 2


def test_missing_prediction_column_is_an_input_error():
    run = toy_run().drop(columns="prediction")
    with pytest.raises(InputError) as err:
        evaluate(run, None, ["brier"], n_boot=5)
    (v,) = err.value.violations
    assert v.column == "prediction"
    assert v.rule == "required column is missing"
    assert v.n_rows == 5
    # a mapped column works
    res = evaluate(toy_run().rename(columns={"prediction": "p_click"}), None, ["brier"], columns={"prediction": "p_click"}, n_boot=5)
    assert res["brier"].mean == pytest.approx(0.182)


def _context(p, grade, unit, n_units) -> EvalContext:
    return EvalContext(
        n_units=n_units, request_ids=None, row_unit=np.asarray(unit), row_item=None, row_score=np.zeros(len(p)),
        row_grade=np.asarray(grade, dtype=np.float64), row_prediction=np.asarray(p, dtype=np.float64),
        top_rows=None, catalog=None,
    )


def test_compute_checks_predictions_itself():
    # the contract already refuses such rows; compute() re-checks for callers that skip it
    p = [0.1, np.nan, 1.2, -3.0, 0.5, 7.0, 8.0, 9.0]
    ctx = _context(p, [0] * 8, [0] * 8, 1)
    with pytest.raises(InputError) as err:
        cal.compute([parse_metric("brier")], ctx)
    (v,) = err.value.violations
    assert (v.column, v.rule, v.n_rows) == ("prediction", "must lie in [0, 1]", 6)
    assert v.examples == ("value nan", "value 1.2", "value -3.0", "value 7.0", "value 8.0")  # at most five
    assert "6 rows violate this" in str(err.value)
    ctx.row_prediction = None
    with pytest.raises(InputError, match="prediction: required column is missing"):
        cal.compute([parse_metric("ece")], ctx)


def test_reliability_table_input_errors():
    with pytest.raises(InputError, match=r"prediction: must lie in \[0, 1\]; 1 row"):
        cal.reliability_table([0.5, 1.5], [0, 1])
    with pytest.raises(UsageError, match="same length"):
        cal.reliability_table([0.5, 0.5], [0, 1, 1])
    with pytest.raises(UsageError, match="bins"):
        cal.reliability_table([0.5], [1], bins=0)
    with pytest.raises(UsageError, match="strategy"):
        cal.reliability_table([0.5], [1], strategy="kmeans")


def test_too_many_bins_is_a_usage_error():
    with pytest.raises(UsageError, match="at most"):
        evaluate(toy_run(), None, [f"ece(bins={cal.MAX_BINS + 1})"], n_boot=5)


# ---------------------------------------------------------------------------
# conventions
# ---------------------------------------------------------------------------


def test_constant_predictions():
    run = toy_run().assign(prediction=0.3)  # 3 positives of 5
    names = ["ece", "ece(strategy=quantile)", "mce(strategy=quantile)", "brier", "logloss"]
    res = evaluate(run, None, names, n_boot=10)
    # one (non-empty) bin: ECE = MCE = |0.3 - 3/5|
    for name in ("ece", "ece(strategy=quantile)", "mce(strategy=quantile)"):
        assert res[name].mean == pytest.approx(0.3, abs=1e-15)
    assert res.details["ece(strategy=quantile)"]["bins"] == 1
    assert res.details["ece(strategy=quantile)"]["nonempty_bins"] == 1
    assert res.details["ece(strategy=quantile)"]["edges"] == [0.3, 0.3]
    assert res.details["ece"]["bins"] == 15 and res.details["ece"]["nonempty_bins"] == 1
    assert res["brier"].mean == pytest.approx(brier_score_loss(run["label"], run["prediction"]), abs=1e-15)
    assert res["logloss"].mean == pytest.approx(log_loss(run["label"], run["prediction"]), abs=1e-15)
    table = cal.reliability_table(run["prediction"], run["label"], strategy="quantile")
    assert table[["lower", "upper", "count", "observed_rate"]].to_numpy().tolist() == [[0.3, 0.3, 5, 0.6]]


@pytest.mark.parametrize("min_label", [0.5, 2, 3])
def test_min_label(min_label):
    run = impressions(n_requests=40, seed=11, graded=True)
    y = (run["label"] >= min_label).astype(int)
    suffix = f"(min_label={min_label})"
    res = evaluate(run, None, [f"brier{suffix}", f"logloss{suffix}", f"ece{suffix}", f"mce(bins=7,min_label={min_label})"], n_boot=5)
    got = list(values(res).values())
    assert got[0] == pytest.approx(brier_score_loss(y, run["prediction"]), abs=1e-12)
    assert got[1] == pytest.approx(log_loss(y, run["prediction"], labels=[0, 1]), abs=1e-12)
    assert got[2] == pytest.approx(ref_ece_mce(run["prediction"], y, 15)[0], abs=1e-12)
    assert got[3] == pytest.approx(ref_ece_mce(run["prediction"], y, 7)[1], abs=1e-12)


def test_intervals_contain_the_point_estimate():
    # clearly miscalibrated (true rate 0.6 p) so ECE is dominated by signal, not noise
    run = impressions(n_requests=300, seed=12, bias=0.6)
    names = ["ece", "mce(bins=5)", "ece(strategy=quantile)", "brier", "logloss"]
    res = evaluate(run, None, names, n_boot=500, seed=1)
    for name in names:
        s = res[name]
        assert s.greater_is_better is False
        assert math.isfinite(s.ci_low) and math.isfinite(s.ci_high)
        assert s.ci_low <= s.mean <= s.ci_high, name
        assert s.ci_low < s.ci_high


def test_intervals_resample_requests_not_rows():
    # two requests of 500 identical rows each: request-level resampling can only give
    # Brier 0.01 (twice the first), 0.81 (twice the second) or 0.41 (one of each)
    run = pd.DataFrame(
        {
            "request_id": np.repeat(["good", "bad"], 500),
            "item_id": np.tile(np.arange(500), 2),
            "score": 0.0,
            "prediction": 0.9,
            "label": np.repeat([1, 0], 500),
        }
    )
    res = evaluate(run, None, ["brier"], n_boot=2000, seed=0)
    assert res["brier"].mean == pytest.approx(0.41)
    assert res["brier"].ci_low == pytest.approx(0.01)
    assert res["brier"].ci_high == pytest.approx(0.81)


def test_mixed_ranking_and_calibration_metrics():
    run = impressions(n_requests=50, seed=13)
    mixed = evaluate(run, None, ["ndcg@10", "ece", "brier", "mrr"], n_boot=50, seed=3)
    ranking = evaluate(run, None, ["ndcg@10", "mrr"], n_boot=50, seed=3)
    calib = evaluate(run, None, ["ece", "brier"], n_boot=50, seed=3)
    assert list(mixed.summary) == ["ndcg@10", "ece", "brier", "mrr"]
    for name in ("ndcg@10", "mrr"):
        assert mixed[name] == ranking[name]  # same values and, with the same seed, same intervals
    for name in ("ece", "brier"):
        assert mixed[name] == calib[name]
    assert mixed["ece"].mean == pytest.approx(ref_ece_mce(run["prediction"], run["label"])[0], abs=1e-12)
    assert list(mixed.per_request.columns) == ["request_id", "ndcg@10", "mrr"]
    assert "reliability" in mixed.details["ece"]
    assert mixed.to_dict()["metrics"]["ece"]["greater_is_better"] is False


# ---------------------------------------------------------------------------
# the sparse path, unsorted rows, speed
# ---------------------------------------------------------------------------


def test_sparse_statistics_equal_dense(monkeypatch):
    rng = np.random.default_rng(21)
    m, n_units = 5000, 700
    unit = np.sort(rng.integers(0, n_units, m))
    unit[unit == 5] = 6  # an empty unit
    p = np.round(rng.random(m), 2)
    grade = rng.integers(0, 3, m).astype(float)
    metrics = [parse_metric(s) for s in ("ece", "mce", "ece(bins=9,strategy=quantile)", "mce(min_label=2)", "brier")]
    dense = cal.compute(metrics, _context(p, grade, unit, n_units))
    monkeypatch.setattr(cal, "_DENSE_CELLS", 0)
    monkeypatch.setattr(cal, "_CHUNK_CELLS", 64)  # many chunks
    sparse = cal.compute(metrics, _context(p, grade, unit, n_units))
    order = rng.permutation(m)  # rows in any order
    shuffled = cal.compute(metrics, _context(p[order], grade[order], unit[order], n_units))
    from receval.stats.bootstrap import bootstrap_replicates

    reps = [bootstrap_replicates([r[k] for k in metrics], n_units, n_boot=50, seed=2)[0] for r in (dense, sparse, shuffled)]
    for k in metrics:
        if k.name != "brier":
            assert isinstance(dense[k].stats, np.ndarray)
            assert not isinstance(sparse[k].stats, np.ndarray)  # scipy.sparse
            for a, b in zip(sparse[k].extra["reliability"], dense[k].extra["reliability"], strict=True):
                assert a.keys() == b.keys()
                for key in a:
                    assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], abs=1e-14)
        assert sparse[k].value() == pytest.approx(dense[k].value(), abs=1e-14)
        assert shuffled[k].value() == pytest.approx(dense[k].value(), abs=1e-14)
        assert sparse[k].value(np.arange(100)) == pytest.approx(dense[k].value(np.arange(100)), abs=1e-14)
    np.testing.assert_allclose(reps[1], reps[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(reps[2], reps[0], rtol=0, atol=1e-13)


@pytest.mark.slow
def test_two_million_rows_are_fast():
    rng = np.random.default_rng(0)
    m, n_units = 2_000_000, 200_000
    unit = np.sort(rng.integers(0, n_units, m))
    p = rng.random(m)
    grade = (rng.random(m) < p).astype(float)
    ctx = _context(p, grade, unit, n_units)
    metrics = [parse_metric(s) for s in ("ece", "brier", "logloss")]
    cal.compute(metrics, ctx)  # warm up
    best = min(_timed(lambda: cal.compute(metrics, ctx)) for _ in range(3))
    assert best < 1.0  # measured 0.14 s on a loaded 2-core machine; 10M rows 0.3-0.5 s


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
