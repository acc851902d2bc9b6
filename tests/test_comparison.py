"""``receval.compare`` and ``receval compare``: numbers against independent computations.

Every reported number is recomputed here from ``receval.evaluate`` per-request
values, scipy/statsmodels or a direct bootstrap of the paired differences:
differences and relative differences, paired intervals (the same unit weights
in both runs), p-values, corrections over all (candidate, metric) pairs,
non-inferiority decided by the one-sided bound, per-user units, mismatched
request sets, degenerate inputs, serialisation and the command line.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from receval import compare, evaluate
from receval.cli import main
from receval.comparison import ComparisonRow
from receval.errors import InputError, UsageError
from receval.metrics.registry import REGISTRY
from receval.stats import bootstrap_means
from receval.stats.bootstrap import replicate_weights
from receval.stats.power import sample_size
from receval.stats.significance import paired_t

ROOT = Path(__file__).resolve().parents[1]
SYN = ROOT / "fixtures" / "synthetic"
PROD, CAND, LABELS = (str(SYN / f) for f in ("run_prod.parquet", "run_cand.parquet", "labels.parquet"))
METRICS = ["ndcg@10", "recall@20"]


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def syn():
    """The synthetic runs (polars) plus a third, weaker-effect candidate."""
    prod = pl.read_parquet(PROD)
    cand = pl.read_parquet(CAND)
    labels = pl.read_parquet(LABELS)
    rng = np.random.default_rng(7)
    # prod's scores plus noise: a small, mixed effect, so p-values are not all ~0
    noisy = prod.with_columns(pl.Series("score", prod["score"].to_numpy() + rng.normal(0, 0.1, prod.height)))
    return {"prod": prod, "cand": cand, "noisy": noisy, "labels": labels}


@pytest.fixture(scope="module")
def syn_result(syn):
    return compare({"prod": syn["prod"], "cand": syn["cand"]}, syn["labels"], METRICS, seed=0)


@pytest.fixture(scope="module")
def per_request(syn):
    """Per-request values of each run from evaluate(), aligned on request_id."""
    out = {}
    for name in ("prod", "cand", "noisy"):
        frame = evaluate(syn[name], syn["labels"], METRICS + ["mrr"], n_boot=1).per_request
        out[name] = frame.set_index("request_id").sort_index()
    assert out["prod"].index.equals(out["cand"].index)
    return out


def hit_runs(base_hits: np.ndarray, cand_hits: np.ndarray):
    """Toy runs where hit@1 per request is given: item 'a' (relevant) first iff hit."""
    n = len(base_hits)
    labels = pd.DataFrame({"request_id": np.arange(n), "item_id": "a", "label": 1})

    def run(hits):
        score_a = np.where(hits, 1.0, 0.0)
        return pd.DataFrame({
            "request_id": np.repeat(np.arange(n), 2),
            "item_id": np.tile(["a", "b"], n),
            "score": np.column_stack([score_a, 1.0 - score_a]).ravel(),
        })

    return run(base_hits), run(cand_hits), labels


@pytest.fixture(scope="module")
def slightly_worse():
    """2000 requests; the baseline hits 1000, the candidate wins 20 and loses 30: diff -0.005."""
    n = 2000
    base = np.zeros(n, dtype=bool)
    base[:1000] = True
    cand = base.copy()
    cand[:30] = False  # 30 losses
    cand[1000:1020] = True  # 20 wins
    b, c, labels = hit_runs(base, cand)
    return b, c, labels, cand.astype(float) - base.astype(float)


# ---------------------------------------------------------------------------
# the numbers, on the synthetic fixture
# ---------------------------------------------------------------------------


def test_means_and_diff_equal_evaluate(syn, syn_result, per_request):
    assert [(r.candidate, r.baseline, r.metric) for r in syn_result.rows] == [
        ("cand", "prod", "ndcg@10"), ("cand", "prod", "recall@20")
    ]
    for metric in METRICS:
        row = syn_result["cand", metric]
        base_mean = evaluate(syn["prod"], syn["labels"], [metric], n_boot=1)[metric].mean
        cand_mean = evaluate(syn["cand"], syn["labels"], [metric], n_boot=1)[metric].mean
        assert row.baseline_mean == pytest.approx(base_mean, rel=1e-12)
        assert row.candidate_mean == pytest.approx(cand_mean, rel=1e-12)
        assert row.diff == pytest.approx(cand_mean - base_mean, rel=1e-10)
        assert row.rel_diff == pytest.approx((cand_mean - base_mean) / base_mean, rel=1e-10)
        assert row.n == 2000 and row.scope == "request" and row.greater_is_better
        assert row.ci_low <= row.diff <= row.ci_high
        assert row.rel_ci_low <= row.rel_diff <= row.rel_ci_high
    assert syn_result.counts == {"cand": {"paired_requests": 2000, "only_in_baseline": 0, "only_in_candidate": 0,
                                          "missing_from_candidate_run": 0, "missing_from_baseline_run": 0}}


def test_test_effect_size_and_sample_size_equal_direct_computation(syn_result, per_request):
    for metric in METRICS:
        row = syn_result["cand", metric]
        base, cand = per_request["prod"][metric].to_numpy(), per_request["cand"][metric].to_numpy()
        d = cand - base
        ref = sps.ttest_rel(cand, base)
        assert row.test == "paired_t"
        assert row.p_value == pytest.approx(float(ref.pvalue), rel=1e-6, abs=1e-300)
        assert row.effect_size == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-10)
        assert row.sd_baseline == pytest.approx(base.std(ddof=1), rel=1e-10)
        assert row.sd_candidate == pytest.approx(cand.std(ddof=1), rel=1e-10)
        assert row.ab_units_per_arm == sample_size(base.std(ddof=1), cand.std(ddof=1), abs(d.mean()))


def test_interval_is_the_paired_bootstrap_of_the_differences(syn_result, per_request):
    # compare resamples requests with one set of weights for both runs, so its
    # interval of the difference is the bootstrap interval of the per-request
    # differences with the same seed (same n, n_boot, method -> same weights)
    d = np.column_stack([per_request["cand"][m].to_numpy() - per_request["prod"][m].to_numpy() for m in METRICS])
    ref = bootstrap_means(d, n_boot=1000, level=0.95, seed=0)
    for j, metric in enumerate(METRICS):
        row = syn_result["cand", metric]
        assert row.ci_low == pytest.approx(ref.low[j], abs=1e-12)
        assert row.ci_high == pytest.approx(ref.high[j], abs=1e-12)
    # an unpaired interval (independent resampling of the runs) would be much wider
    unpaired = math.hypot(*[bootstrap_means(per_request[r]["ndcg@10"].to_numpy(), seed=s).high[0]
                            - bootstrap_means(per_request[r]["ndcg@10"].to_numpy(), seed=s).low[0]
                            for r, s in (("prod", 1), ("cand", 2))])
    row = syn_result["cand", "ndcg@10"]
    assert row.ci_high - row.ci_low < 0.8 * unpaired


def test_relative_interval_uses_shared_weights(syn_result, per_request):
    base, cand = per_request["prod"]["ndcg@10"].to_numpy(), per_request["cand"]["ndcg@10"].to_numpy()
    reps = np.concatenate([
        (w @ cand) / (w @ base) - 1.0
        for w in replicate_weights(len(base), n_boot=1000, seed=0, method="multinomial")
    ])
    low, high = np.quantile(reps, [0.025, 0.975])
    row = syn_result["cand", "ndcg@10"]
    assert row.rel_ci_low == pytest.approx(low, abs=1e-12)
    assert row.rel_ci_high == pytest.approx(high, abs=1e-12)


def manual_holm(p: list[float]) -> list[float]:
    """Holm (1979) step-down, written out: the k-th smallest p times (m - k + 1), running max, cap 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, (m - k) * p[i])
        out[i] = min(1.0, running)
    return out


@pytest.fixture(scope="module")
def three_runs(syn):
    runs = {"prod": syn["prod"], "cand": syn["cand"], "noisy": syn["noisy"]}
    metrics = METRICS + ["mrr"]
    return {
        corr: compare(runs, syn["labels"], metrics, correction=corr, n_boot=200, seed=0)
        for corr in ("holm", "bonferroni", "bh", "none")
    }


def test_corrections_span_all_candidate_metric_pairs(three_runs, per_request):
    holm = three_runs["holm"]
    assert [(r.candidate, r.metric) for r in holm.rows] == [
        (c, m) for c in ("cand", "noisy") for m in ("ndcg@10", "recall@20", "mrr")
    ]
    p = [r.p_value for r in holm.rows]
    assert len(set(p)) == 6
    # the noisy candidate has a p-value below alpha that Holm lifts above it
    assert any(r.p_value < 0.05 <= r.p_adjusted for r in holm.rows)
    # the noisy candidate's p-values agree with a direct paired t test
    for r in holm.rows[3:]:
        d = per_request["noisy"][r.metric].to_numpy() - per_request["prod"][r.metric].to_numpy()
        assert r.p_value == pytest.approx(paired_t(d).p_value, rel=1e-9)
    np.testing.assert_allclose([r.p_adjusted for r in holm.rows], manual_holm(p), rtol=1e-12)
    for name, sm in (("bonferroni", "bonferroni"), ("bh", "fdr_bh")):
        res = three_runs[name]
        assert [r.p_value for r in res.rows] == p  # the correction changes nothing else
        np.testing.assert_allclose([r.p_adjusted for r in res.rows], multipletests(p, method=sm)[1], rtol=1e-12)
    assert [r.p_adjusted for r in three_runs["none"].rows] == p
    for res in three_runs.values():
        assert [r.significant for r in res.rows] == [r.p_adjusted < 0.05 for r in res.rows]
        assert res.settings["correction"] in ("holm", "bonferroni", "bh", "none")


def test_population_metrics_get_no_p_value_and_do_not_count_in_corrections():
    b, c, labels = calibration_runs(worse_by=0.01)
    res = compare({"b": b, "c": c}, labels, ["brier", "mrr"], correction="bonferroni", n_boot=300)
    brier, mrr = res["c", "brier"], res["c", "mrr"]
    assert brier.scope == "population" and brier.test == "none"
    assert math.isnan(brier.p_value) and math.isnan(brier.p_adjusted) and brier.significant is None
    assert "population-level metric" in brier.note
    assert brier.ci_low <= brier.diff <= brier.ci_high and brier.ci_low < brier.ci_high
    # m = 1: the only finite p-value is unchanged by Bonferroni
    assert mrr.p_adjusted == mrr.p_value


# ---------------------------------------------------------------------------
# non-inferiority
# ---------------------------------------------------------------------------


def test_non_inferiority_absolute_margin(slightly_worse):
    b, c, labels, d = slightly_worse
    res = {mg: compare({"b": b, "c": c}, labels, ["hit@1"], margin=mg, seed=0)["c", "hit@1"]
           for mg in (0.02, 0.006, 0.001)}
    row = res[0.02]
    assert row.diff == pytest.approx(-0.005, abs=1e-15)
    # the one-sided 95% bound is the 5% quantile of the paired bootstrap of the differences
    ref = bootstrap_means(d, n_boot=1000, level=0.90, seed=0)
    assert row.ni_bound == pytest.approx(ref.low[0], abs=1e-12)
    assert row.ci_low <= row.ni_bound <= row.diff  # one-sided 95% bound is inside the two-sided 95% interval
    assert row.ni_bound < -0.006  # about -0.005 - 1.645 * 0.0035
    assert (row.margin, row.margin_type) == (0.02, "absolute")
    assert res[0.02].non_inferior is True
    assert res[0.001].non_inferior is False  # even the point estimate is beyond the margin
    # the point estimate -0.005 is within the margin 0.006, the bound is not: not shown
    assert res[0.006].diff > -0.006 and res[0.006].ni_bound < -0.006
    assert res[0.006].non_inferior is False


def test_non_inferiority_relative_margin(slightly_worse):
    b, c, labels, _ = slightly_worse
    rows = {mg: compare({"b": b, "c": c}, labels, ["hit@1"], margin=mg, margin_type="relative", seed=0)["c", "hit@1"]
            for mg in (0.05, 0.015)}
    row = rows[0.05]
    assert row.rel_diff == pytest.approx(-0.01, abs=1e-12)  # 0.495 / 0.5 - 1
    assert row.margin_type == "relative"
    assert row.rel_ci_low <= row.ni_bound <= row.rel_diff  # the bound is on the relative scale
    base = (np.arange(2000) < 1000).astype(float)  # hit@1 per request, as in the fixture
    cand = base.copy()
    cand[:30], cand[1000:1020] = 0.0, 1.0
    reps = np.concatenate([(w @ cand) / (w @ base) - 1.0
                           for w in replicate_weights(2000, n_boot=1000, seed=0, method="multinomial")])
    assert row.ni_bound == pytest.approx(np.quantile(reps, 0.05), abs=1e-12)  # one-sided 95%, shared weights
    assert -0.05 < row.ni_bound < -0.015
    assert rows[0.05].non_inferior is True
    assert rows[0.015].rel_diff > -0.015 and rows[0.015].non_inferior is False  # point inside, bound outside


def test_non_inferiority_margins_per_metric_and_to_markdown(slightly_worse):
    b, c, labels, _ = slightly_worse
    res = compare({"b": b, "c": c}, labels, ["hit@1", "mrr"], margin={"HIT@1": 0.02}, seed=0)
    assert res["c", "hit@1"].margin == 0.02 and res["c", "hit@1"].non_inferior is True
    assert res["c", "mrr"].margin is None and res["c", "mrr"].non_inferior is None and res["c", "mrr"].ni_bound is None
    md = res.to_markdown()
    assert "| c | hit@1 |" in md and "| yes |" in md
    assert md.splitlines()[2].endswith("| yes |") and md.splitlines()[3].endswith("| n/a |")
    res = compare({"b": b, "c": c}, labels, ["hit@1"], margin=0.001, seed=0)
    assert res.to_markdown().splitlines()[2].endswith("| NO |")


def calibration_runs(worse_by: float, n: int = 600):
    """Runs with predictions; the candidate's are noisier (higher Brier score)."""
    rng = np.random.default_rng(0)
    req = np.repeat(np.arange(n), 2)
    y = np.tile([1, 0], n)
    pb = np.clip(0.15 + 0.7 * y + rng.normal(0, 0.1, 2 * n), 0, 1)
    pc = np.clip(pb + np.where(y == 1, -worse_by, worse_by) + rng.normal(0, 0.03, 2 * n), 0, 1)
    labels = pl.DataFrame({"request_id": np.arange(n), "item_id": ["a"] * n, "label": [1] * n})
    item = np.tile(["a", "b"], n)
    base = pl.DataFrame({"request_id": req, "item_id": item, "score": pb, "prediction": pb})
    cand = pl.DataFrame({"request_id": req, "item_id": item, "score": pc, "prediction": pc})
    return base, cand, labels


def test_non_inferiority_for_a_lower_is_better_metric():
    lower = sorted(name for name, spec in REGISTRY.items() if not spec.greater_is_better)
    if "brier" not in lower:
        pytest.skip(f"no registered lower-is-better metric usable here (have {lower})")
    b, c, labels = calibration_runs(worse_by=0.02)
    rows = {mg: compare({"b": b, "c": c}, labels, ["brier"], margin=mg, seed=0)["c", "brier"] for mg in (0.05, 0.0075)}
    row = rows[0.05]
    assert row.greater_is_better is False
    assert row.diff > 0  # the candidate is worse: higher Brier score
    # the bound that would show harm is the upper one (95% one-sided), compared with +margin
    assert row.diff <= row.ni_bound <= row.ci_high
    assert row.ni_bound < 0.05 and rows[0.05].non_inferior is True
    assert rows[0.0075].diff < 0.0075 < rows[0.0075].ni_bound  # point estimate inside, bound outside
    assert rows[0.0075].non_inferior is False


# ---------------------------------------------------------------------------
# per-user units
# ---------------------------------------------------------------------------


def test_unit_user_compares_per_user_means(syn, per_request):
    res = compare({"prod": syn["prod"], "cand": syn["cand"]}, syn["labels"], METRICS, unit="user", seed=0)
    users = syn["prod"].group_by("request_id").agg(pl.col("user_id").first()).to_pandas().set_index("request_id")
    n_users = users["user_id"].nunique()
    assert res.counts["cand"]["paired_users"] == n_users
    assert res.counts["cand"]["paired_requests"] == 2000
    assert res.settings["unit"] == "user" and "users" in res.settings["interval"]
    for metric in METRICS:
        frame = pd.DataFrame({
            "user": users.loc[per_request["prod"].index, "user_id"].to_numpy(),
            "b": per_request["prod"][metric].to_numpy(),
            "c": per_request["cand"][metric].to_numpy(),
        })
        by_user = frame.groupby("user")[["b", "c"]].mean()  # a user's requests averaged first
        row = res["cand", metric]
        assert row.n == n_users
        assert row.baseline_mean == pytest.approx(by_user["b"].mean(), rel=1e-12)
        assert row.candidate_mean == pytest.approx(by_user["c"].mean(), rel=1e-12)
        d = (by_user["c"] - by_user["b"]).to_numpy()
        assert row.p_value == pytest.approx(paired_t(d).p_value, rel=1e-9)
        assert row.sd_baseline == pytest.approx(by_user["b"].std(ddof=1), rel=1e-10)
        # the per-user mean differs from the per-request mean (users have different numbers of requests)
        assert row.baseline_mean != pytest.approx(per_request["prod"][metric].mean(), rel=1e-6)


def test_unit_user_without_user_id_is_a_usage_error(syn):
    runs = {k: syn[k].drop("user_id") for k in ("prod", "cand")}
    with pytest.raises(UsageError, match="unit='user' needs a user_id column"):
        compare(runs, syn["labels"], ["ndcg@10"], unit="user", n_boot=1)


# ---------------------------------------------------------------------------
# mismatched, empty and degenerate inputs
# ---------------------------------------------------------------------------


def drop_requests(run: pl.DataFrame, ids) -> pl.DataFrame:
    return run.filter(~pl.col("request_id").is_in(list(ids)))


def test_mismatched_request_sets_are_an_error_naming_the_counts(syn):
    ids = syn["prod"]["request_id"].unique().sort().to_list()
    prod = drop_requests(syn["prod"], ids[:3])  # 3 requests only in cand
    cand = drop_requests(syn["cand"], ids[100:107])  # 7 only in prod
    runs = {"prod": prod, "cand": cand}
    with pytest.raises(InputError) as err:
        compare(runs, syn["labels"], ["ndcg@10"], missing_in_run="ignore", n_boot=1)
    msg = str(err.value)
    assert "prod vs cand" in msg and "same requests" in msg
    assert "7 only in prod" in msg and "3 only in cand" in msg
    assert repr(ids[100]) in msg and repr(ids[0]) in msg  # examples
    assert "on_mismatch='intersect'" in msg
    assert err.value.violations[0].n_rows == 10

    res = compare(runs, syn["labels"], ["ndcg@10"], missing_in_run="ignore", on_mismatch="intersect", n_boot=50)
    assert res.counts["cand"] == {"paired_requests": 1990, "only_in_baseline": 7, "only_in_candidate": 3,
                                  "missing_from_candidate_run": 0, "missing_from_baseline_run": 0}
    row = res["cand", "ndcg@10"]
    assert row.n == 1990
    common = sorted(set(ids) - set(ids[:3]) - set(ids[100:107]))
    b = evaluate(syn["prod"], syn["labels"], ["ndcg@10"], n_boot=1).per_request.set_index("request_id")
    c = evaluate(syn["cand"], syn["labels"], ["ndcg@10"], n_boot=1).per_request.set_index("request_id")
    assert row.baseline_mean == pytest.approx(b.loc[common, "ndcg@10"].mean(), rel=1e-12)
    assert row.candidate_mean == pytest.approx(c.loc[common, "ndcg@10"].mean(), rel=1e-12)


def test_requests_missing_from_a_run_are_counted_under_the_default_policy(syn):
    ids = syn["cand"]["request_id"].unique().sort().to_list()
    cand = drop_requests(syn["cand"], ids[:50])
    try:
        res = compare({"prod": syn["prod"], "cand": cand}, syn["labels"], ["ndcg@10"], n_boot=1)
    except InputError as err:  # an error naming the 50 requests would do too
        assert "50" in str(err)
        return
    assert 50 in res.counts["cand"].values()


def test_runs_sharing_no_request_are_an_error():
    base, cand, labels = hit_runs(np.ones(10, dtype=bool), np.ones(10, dtype=bool))
    base = base[base.request_id < 5]
    cand = cand[cand.request_id >= 5]
    with pytest.raises(InputError, match="the runs share no evaluated request"):
        compare({"b": base, "c": cand}, labels, ["hit@1"], missing_in_run="ignore", on_mismatch="intersect")


@pytest.mark.parametrize("test", ["paired_t", "wilcoxon", "randomization"])
def test_identical_runs_give_p_one_and_json_safe_output(test):
    base, cand, labels = hit_runs(np.zeros(50, dtype=bool), np.zeros(50, dtype=bool))
    res = compare({"b": base, "c": cand}, labels, ["hit@1", "mrr"], test=test, margin=0.01, n_perm=99)
    row = res["c", "hit@1"]
    assert (row.baseline_mean, row.candidate_mean, row.diff) == (0.0, 0.0, 0.0)
    assert (row.ci_low, row.ci_high) == (0.0, 0.0)
    assert row.p_value == 1.0 and row.p_adjusted == 1.0 and row.significant is False
    assert row.effect_size == 0.0
    assert math.isnan(row.rel_diff)  # baseline mean 0: relative difference undefined
    assert row.ab_units_per_arm == math.inf  # no difference to detect
    assert row.non_inferior is True  # bound 0 > -0.01
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    first = doc["comparisons"][0]
    assert first["rel_diff"] is None and first["ab_units_per_arm"] is None and first["p_value"] == 1.0


def rank_runs(base_rank: np.ndarray, cand_rank: np.ndarray):
    """Toy runs: per request, the one relevant item 'a' at the given rank (1 or 2) of two."""
    n = len(base_rank)
    labels = pd.DataFrame({"request_id": np.arange(n), "item_id": "a", "label": 1})

    def run(rank):
        score_a = np.where(rank == 1, 1.0, 0.0)
        return pd.DataFrame({
            "request_id": np.repeat(np.arange(n), 2),
            "item_id": np.tile(["a", "b"], n),
            "score": np.column_stack([score_a, 1.0 - score_a]).ravel(),
        })

    return run(base_rank), run(cand_rank), labels


def test_constant_nonzero_difference_gives_the_sign_test_p():
    n = 20
    base, cand, labels = rank_runs(np.full(n, 2), np.full(n, 1))  # mrr 0.5 -> 1 on every request
    row = compare({"b": base, "c": cand}, labels, ["mrr"])["c", "mrr"]
    assert row.diff == 0.5 and row.rel_diff == 1.0
    assert (row.ci_low, row.ci_high, row.rel_ci_low, row.rel_ci_high) == (0.5, 0.5, 1.0, 1.0)
    assert row.p_value == 2 * 0.5**n
    assert row.note == "constant non-zero difference: exact sign-test p-value"
    assert row.effect_size == math.inf
    assert json.loads(json.dumps(compare({"b": base, "c": cand}, labels, ["mrr"]).to_dict(), allow_nan=False))


def test_zero_baseline_mean_gives_undefined_relative_difference_quietly():
    base, cand, labels = hit_runs(np.zeros(20, dtype=bool), np.ones(20, dtype=bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = compare({"b": base, "c": cand}, labels, ["hit@1"])["c", "hit@1"]
    assert row.diff == 1.0 and row.p_value == 2 * 0.5**20
    assert math.isnan(row.rel_diff) and math.isnan(row.rel_ci_low) and math.isnan(row.rel_ci_high)


def test_constant_scores_are_ranked_by_the_tie_rule_not_refused(syn, per_request):
    flat = syn["cand"].with_columns(pl.lit(0.5).alias("score"))
    row = compare({"prod": syn["prod"], "flat": flat}, syn["labels"], ["ndcg@10"], n_boot=1)["flat", "ndcg@10"]
    ref = evaluate(flat, syn["labels"], ["ndcg@10"], n_boot=1)["ndcg@10"].mean
    assert row.candidate_mean == pytest.approx(ref, rel=1e-12)
    assert row.diff < 0 and row.p_value < 1e-6


# ---------------------------------------------------------------------------
# randomization, seeds, serialisation
# ---------------------------------------------------------------------------


def test_randomization_p_is_never_zero(syn):
    res = compare({"prod": syn["prod"], "cand": syn["cand"]}, syn["labels"], METRICS, test="randomization",
                  n_perm=999, n_boot=100)
    for row in res.rows:
        assert row.test == "randomization"
        assert row.p_value == 1 / 1000  # the effect is huge: no sign flip reaches it, p = (0 + 1) / (999 + 1)
        assert row.p_adjusted == pytest.approx(2 / 1000)  # Holm over two pairs
        assert row.note == "999 sign-flip permutations"
    assert res.settings["n_perm"] == 999


def test_same_seed_same_result(syn):
    runs = {"prod": syn["prod"], "cand": syn["cand"], "noisy": syn["noisy"]}
    kwargs = {"test": "randomization", "n_perm": 500, "n_boot": 200, "margin": 0.01}
    a = compare(runs, syn["labels"], METRICS, seed=3, **kwargs).to_dict()
    b = compare(runs, syn["labels"], METRICS, seed=3, **kwargs).to_dict()
    assert a == b
    c = compare(runs, syn["labels"], METRICS, seed=4, **kwargs).to_dict()
    assert [r["ci_low"] for r in c["comparisons"]] != [r["ci_low"] for r in a["comparisons"]]
    noisy = [r["p_value"] for r in a["comparisons"] if r["candidate"] == "noisy"]
    assert noisy != [r["p_value"] for r in c["comparisons"] if r["candidate"] == "noisy"]


def test_to_dict_is_json_and_to_markdown_names_the_metrics(syn_result):
    doc = syn_result.to_dict()
    text = json.dumps(doc, allow_nan=False)
    back = json.loads(text)
    assert set(back) == {"comparisons", "settings", "counts"}
    fields = set(ComparisonRow.__dataclass_fields__)
    assert all(set(r) == fields for r in back["comparisons"])
    assert back["settings"]["baseline"] == "prod" and back["settings"]["correction"] == "holm"
    md = syn_result.to_markdown()
    for metric in METRICS:
        assert f"| cand | {metric} |" in md
    assert "95% CI" in md and "p adj. (holm)" in md
    frame = syn_result.to_frame()
    assert list(frame["metric"]) == METRICS and len(frame.columns) == len(fields)


def test_getitem_uses_canonical_names(syn_result):
    assert syn_result["cand", "NDCG( gain = linear )@10"].metric == "ndcg@10"
    with pytest.raises(KeyError):
        syn_result["prod", "ndcg@10"]  # the baseline is not a candidate


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"test": "t"}, "test must be one of"),
    ({"correction": "fdr"}, "correction must be one of"),
    ({"alpha": 1.0}, "alpha must lie in"),
    ({"margin": -0.1}, "margins must be finite numbers >= 0"),
    ({"margin": {"hit@1": math.inf}}, "margins must be finite numbers >= 0"),
    ({"margin_type": "percent"}, "margin_type"),
    ({"unit": "session"}, "unit must be"),
    ({"on_mismatch": "drop"}, "on_mismatch"),
    ({"n_perm": 0}, "n_perm"),
    ({"baseline": "nope"}, "baseline 'nope' is not one of the runs"),
])
def test_bad_arguments_are_usage_errors(kwargs, fragment):
    base, cand, labels = hit_runs(np.ones(4, dtype=bool), np.ones(4, dtype=bool))
    with pytest.raises(UsageError, match=fragment):
        compare({"b": base, "c": cand}, labels, ["hit@1"], **kwargs)


def test_fewer_than_two_runs_is_a_usage_error():
    base, _, labels = hit_runs(np.ones(4, dtype=bool), np.ones(4, dtype=bool))
    with pytest.raises(UsageError, match="at least two"):
        compare({"b": base}, labels, ["hit@1"])


def test_baseline_argument_chooses_the_reference(slightly_worse):
    b, c, labels, _ = slightly_worse
    res = compare({"b": b, "c": c}, labels, ["hit@1"], baseline="c", n_boot=10)
    row = res["b", "hit@1"]
    assert (row.baseline, row.candidate) == ("c", "b")
    assert row.diff == pytest.approx(0.005, abs=1e-15)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_mirrors_the_api(capsys, syn_result):
    code, out, err = run_cli(capsys, "compare", "--run", f"prod={PROD}", "--run", f"cand={CAND}",
                             "--labels", LABELS, "-m", "ndcg@10", "-m", "recall@20", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert "comparisons" in doc
    assert doc["comparisons"] == json.loads(json.dumps(syn_result.to_dict()))["comparisons"]


def test_cli_table_and_options(capsys, tmp_path, slightly_worse):
    b, c, labels, _ = slightly_worse
    paths = {}
    for name, frame in (("b", b), ("c", c), ("labels", labels)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        frame.to_parquet(paths[name])
    base_args = ("compare", "--run", f"b={paths['b']}", "--run", f"c={paths['c']}", "--labels", paths["labels"],
                 "-m", "hit@1")
    code, out, err = run_cli(capsys, *base_args, "--margin", "0.02")
    assert code == 0, err
    assert "| c | hit@1 |" in out and "| yes |" in out
    assert "paired_t test, holm correction over 1 comparisons" in out
    code, out, err = run_cli(capsys, *base_args, "--margin", "0.015", "--relative-margin", "--test", "wilcoxon",
                             "--correction", "bh", "--output", "json", "--n-boot", "300", "--seed", "5")
    assert code == 0, err
    doc = json.loads(out)
    row = doc["comparisons"][0]
    assert (row["margin_type"], row["test"], row["non_inferior"]) == ("relative", "wilcoxon", False)
    assert (doc["settings"]["correction"], doc["settings"]["n_boot"], doc["settings"]["seed"]) == ("bh", 300, 5)
    api = compare({"b": paths["b"], "c": paths["c"]}, paths["labels"], ["hit@1"], margin=0.015,
                  margin_type="relative", test="wilcoxon", correction="bh", n_boot=300, seed=5)
    assert doc["comparisons"] == json.loads(json.dumps(api.to_dict()))["comparisons"]
    code, out, err = run_cli(capsys, *base_args, "--output", "csv")
    assert code == 0 and out.splitlines()[0].startswith("candidate,baseline,metric,")


def test_cli_mirrors_missing_in_run_and_on_mismatch(capsys, tmp_path, slightly_worse):
    b, c, labels, _ = slightly_worse
    c = c[c.request_id >= 3]
    paths = {}
    for name, frame in (("b", b), ("c", c), ("labels", labels)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        frame.to_parquet(paths[name])
    argv = ("compare", "--run", f"b={paths['b']}", "--run", f"c={paths['c']}", "--labels", paths["labels"],
            "-m", "hit@1", "--missing-in-run", "ignore", "--on-mismatch", "intersect", "--output", "json")
    try:
        code, out, err = run_cli(capsys, *argv)
    except SystemExit as exc:  # argparse rejects the option
        code, out, err = exc.code, "", capsys.readouterr().err
    assert code == 0, err
    assert json.loads(out)["counts"]["c"]["only_in_baseline"] == 3


@pytest.mark.parametrize(("argv", "fragment"), [
    (("--run", f"prod={PROD}"), "at least two"),
    (("--run", f"prod={PROD}", "--run", CAND), "--run expects NAME=PATH"),
    (("--run", f"prod={PROD}", "--run", f"={CAND}"), "--run expects NAME=PATH"),
    (("--run", f"prod={PROD}", "--run", f"prod={CAND}"), "given twice"),
    (("--run", f"prod={PROD}", "--run", f"cand={CAND}", "--baseline", "main"), "baseline 'main' is not one of"),
    (("--run", f"prod={PROD}", "--run", f"cand={CAND}", "--test", "ttest"), "invalid choice"),
])
def test_cli_usage_errors_exit_2(capsys, argv, fragment):
    try:
        code, out, err = run_cli(capsys, "compare", *argv, "--labels", LABELS, "-m", "ndcg@10")
    except SystemExit as exc:  # argparse errors
        code, err = exc.code, capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
