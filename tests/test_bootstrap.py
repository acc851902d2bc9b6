"""bootstrap_means: reproducibility, shape, Poisson weights, agreement with theory, coverage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from receval import evaluate
from receval.stats import bootstrap_means
from receval.stats.bootstrap import _multinomial_weights, _poisson_weights

Z975 = 1.959963984540054  # standard normal 97.5% quantile


def normal_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    assert level == 0.95
    half = Z975 * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused", "auto"])
def test_same_seed_gives_identical_intervals(method):
    x = np.random.default_rng(0).random((300, 3))
    a = bootstrap_means(x, n_boot=500, seed=42, method=method)
    b = bootstrap_means(x, n_boot=500, seed=42, method=method)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)
    c = bootstrap_means(x, n_boot=500, seed=43, method=method)
    assert not np.array_equal(a.low, c.low)  # the seed matters
    assert a.method == ("multinomial" if method == "auto" else method)
    assert (a.n_boot, a.level, a.seed) == (500, 0.95, 42)


def test_columns_are_resampled_jointly():
    # identical columns give identical intervals; a column scaled by 2 gives a doubled one
    x = np.random.default_rng(1).random(200)
    res = bootstrap_means(np.column_stack([x, x, 2 * x]), n_boot=400, seed=0)
    assert res.low.shape == res.high.shape == (3,)
    assert res.low[0] == res.low[1] and res.high[0] == res.high[1]
    assert res.low[2] == pytest.approx(2 * res.low[0]) and res.high[2] == pytest.approx(2 * res.high[0])
    one = bootstrap_means(x, n_boot=400, seed=0)  # 1-D input: one column
    assert one.low.shape == (1,)
    assert one.low[0] == res.low[0]


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused"])
def test_interval_contains_the_mean(method):
    rng = np.random.default_rng(3)
    for n in (5, 50, 500):
        x = rng.exponential(size=(n, 2))
        res = bootstrap_means(x, n_boot=1000, seed=1, method=method)
        mean = x.mean(axis=0)
        assert (res.low <= mean).all() and (mean <= res.high).all()
        assert (res.low < res.high).all()


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused"])
def test_width_shrinks_like_one_over_sqrt_n(method):
    rng = np.random.default_rng(4)
    widths = {}
    for n in (100, 10_000):
        res = bootstrap_means(rng.random(n), n_boot=1000, seed=2, method=method)
        widths[n] = float(res.high[0] - res.low[0])
    ratio = widths[100] / widths[10_000]  # sqrt(10_000 / 100) = 10
    assert 8 < ratio < 12.5


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused"])
def test_wider_level_gives_wider_interval(method):
    x = np.random.default_rng(5).random(400)
    r90 = bootstrap_means(x, level=0.90, seed=0, method=method)
    r99 = bootstrap_means(x, level=0.99, seed=0, method=method)
    assert r99.low[0] < r90.low[0] and r90.high[0] < r99.high[0]


def test_poisson_weights_follow_poisson_one():
    rng = np.random.default_rng(6)
    w = _poisson_weights(rng, (1000, 1000)).ravel().astype(np.int64)  # 10^6 draws
    assert w.min() == 0
    assert abs(w.mean() - 1.0) < 0.005  # sd of the mean: 0.001
    assert abs(w.var() - 1.0) < 0.01
    freq = np.bincount(w, minlength=8)[:8] / w.size
    pmf = np.array([math.exp(-1) / math.factorial(k) for k in range(8)])
    # pmf: 0.3679, 0.3679, 0.1839, 0.0613, 0.0153, 0.0031, 0.0005, 0.0001
    np.testing.assert_allclose(freq, pmf, atol=0.002)
    # chi-square over k = 0..5 and the tail >= 6: 6 degrees of freedom
    observed = np.append(np.bincount(w, minlength=6)[:6], (w >= 6).sum())
    probs = np.append(pmf[:6], 1 - pmf[:6].sum())
    chi2 = ((observed - w.size * probs) ** 2 / (w.size * probs)).sum()
    assert chi2 < 22.5  # 99.9% quantile of chi2(6)


def test_poisson_weights_of_rare_values_are_exact():
    # the table is refined in the cells straddling a CDF step: P(w >= 4) = 0.01899
    rng = np.random.default_rng(7)
    w = _poisson_weights(rng, (2000, 1000))
    tail = (w >= 4).mean()
    expected = 1 - sum(math.exp(-1) / math.factorial(k) for k in range(4))
    assert abs(tail - expected) < 0.0005  # sd 0.0001


def test_multinomial_weights_sum_to_n():
    w = _multinomial_weights(np.random.default_rng(8), (50, 37))
    assert w.shape == (50, 37)
    assert (w.sum(axis=1) == 37).all()
    assert abs(w.mean() - 1.0) < 1e-12
    assert 0.8 < w.var() < 1.2  # Binomial(37, 1/37) variance 36/37


def test_methods_agree_with_the_normal_interval_for_large_n():
    x = np.random.default_rng(9).random(5000)  # uniform: symmetric, the normal interval is right
    lo, hi = normal_interval(x)
    width = hi - lo
    for method in ("multinomial", "poisson", "poisson-fused"):
        res = bootstrap_means(x, n_boot=2000, seed=10, method=method)
        assert abs(res.low[0] - lo) < 0.1 * width, method
        assert abs(res.high[0] - hi) < 0.1 * width, method
    m = bootstrap_means(x, n_boot=2000, seed=10, method="multinomial")
    p = bootstrap_means(x, n_boot=2000, seed=10, method="poisson")
    assert abs(m.low[0] - p.low[0]) < 0.1 * width and abs(m.high[0] - p.high[0]) < 0.1 * width


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused", "auto"])
def test_no_units_gives_nan(method):
    res = bootstrap_means(np.empty((0, 2)), n_boot=100, method=method)
    assert res.low.shape == (2,)
    assert np.isnan(res.low).all() and np.isnan(res.high).all()


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused"])
def test_one_unit_gives_a_degenerate_interval(method):
    res = bootstrap_means(np.array([[0.25, 0.75]]), n_boot=200, seed=0, method=method)
    np.testing.assert_array_equal(res.low, [0.25, 0.75])
    np.testing.assert_array_equal(res.high, [0.25, 0.75])


def test_constant_values_give_a_zero_width_interval():
    res = bootstrap_means(np.full(100, 0.4), n_boot=200, seed=0)
    assert res.low[0] == pytest.approx(0.4) and res.high[0] == pytest.approx(0.4)


def test_auto_switches_to_poisson_for_large_problems(monkeypatch):
    from receval.stats import bootstrap as B

    monkeypatch.setattr(B, "_FUSED_WARM", False)  # the compiled kernel not loaded yet
    assert bootstrap_means(np.zeros(100), n_boot=1000).method == "multinomial"  # 10^5 draws
    assert bootstrap_means(np.zeros(30_000), n_boot=1000).method == "poisson"  # 3 * 10^7 draws
    monkeypatch.setattr(B, "_NUMBA", False)  # without numba, even 3e8 draws use the numpy scheme
    assert B._auto(300_000, 1000) == "poisson"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"n_boot": 0}, "n_boot"),
        ({"method": "jackknife"}, "method"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bootstrap_means(np.ones(10), **kwargs)


# ---------------------------------------------------------------------------
# coverage: does the 95% interval contain the true mean 95% of the time?
# ---------------------------------------------------------------------------


def coverage(n_sims: int, n: int, method: str, seed: int) -> float:
    rng = np.random.default_rng(seed)
    a, b = 2.0, 5.0  # Beta(2, 5): bounded and skewed, like per-request metric values
    true_mean = a / (a + b)
    hits = 0
    for i in range(n_sims):
        x = rng.beta(a, b, size=n)
        res = bootstrap_means(x, n_boot=1000, level=0.95, seed=i, method=method)
        hits += res.low[0] <= true_mean <= res.high[0]
    return hits / n_sims


@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused"])
def test_coverage_quick(method):
    # 200 simulated data sets: the sd of the estimated coverage is about 0.015
    assert 0.90 <= coverage(200, 100, method, seed=11) <= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("method", ["multinomial", "poisson", "poisson-fused"])
def test_coverage_simulation(method):
    # 2000 simulated data sets: sd about 0.005, so this pins coverage to 0.95 +- 0.02
    assert 0.93 <= coverage(2000, 100, method, seed=12) <= 0.97


# ---------------------------------------------------------------------------
# through evaluate()
# ---------------------------------------------------------------------------


def _toy_eval(**kwargs):
    rng = np.random.default_rng(13)
    rows = [(f"q{q}", f"d{i}", float(rng.integers(0, 5))) for q in range(200) for i in range(10)]
    run = pd.DataFrame(rows, columns=["request_id", "item_id", "score"])
    labels = pd.DataFrame(
        [(f"q{q}", f"d{i}", int(rng.integers(0, 3))) for q in range(200) for i in range(0, 10, 2)],
        columns=["request_id", "item_id", "label"],
    )
    return evaluate(run, labels, ["ndcg@5", "mrr"], **kwargs)


def test_evaluate_intervals_are_seeded_and_consistent():
    a = _toy_eval(seed=3, n_boot=300)
    b = _toy_eval(seed=3, n_boot=300)
    c = _toy_eval(seed=4, n_boot=300)
    assert a.to_dict() == b.to_dict()
    assert a["mrr"].ci_low != c["mrr"].ci_low
    for s in a.summary.values():
        assert s.ci_low < s.mean < s.ci_high
        assert s.n == 200
    # same seed, same replicates: the interval equals bootstrap_means on the per-request matrix
    matrix = a.per_request[["ndcg@5", "mrr"]].to_numpy()
    direct = bootstrap_means(matrix, n_boot=300, seed=3)
    assert a["ndcg@5"].ci_low == direct.low[0] and a["mrr"].ci_high == direct.high[1]
    assert a.settings["n_boot"] == 300 and a.settings["seed"] == 3 and a.settings["bootstrap"] == "multinomial"


def test_evaluate_level_and_method():
    narrow = _toy_eval(seed=0, level=0.5, n_boot=400)
    wide = _toy_eval(seed=0, level=0.99, n_boot=400)
    assert wide["mrr"].ci_low < narrow["mrr"].ci_low < narrow["mrr"].ci_high < wide["mrr"].ci_high
    assert "| metric | mean | 50% CI | n |" in narrow.to_markdown()
    poisson = _toy_eval(seed=0, bootstrap="poisson", n_boot=400)
    assert poisson.settings["bootstrap"] == "poisson"


def test_summary_of_an_empty_request_set_is_nan_and_json_null():
    # evaluate() refuses inputs with no evaluable request; the summary type
    # still renders an empty aggregate safely
    from receval.evaluation import MetricSummary

    s = MetricSummary("mrr", math.nan, 0, math.nan, math.nan, True)
    assert s.to_dict() == {"mean": None, "n": 0, "ci_low": None, "ci_high": None, "greater_is_better": True}


def test_evaluate_with_no_evaluable_request_is_an_input_error():
    from receval.errors import InputError

    run = pd.DataFrame({"request_id": ["a"], "item_id": ["x"], "score": [1.0]})
    labels = pd.DataFrame({"request_id": ["b"], "item_id": ["x"], "label": [1]})
    with pytest.raises(InputError) as info:
        evaluate(run, labels, ["mrr"], missing_in_run="ignore")
    (v,) = info.value.violations
    assert v.column == "request_id"
    assert "at least one request must be evaluable" in v.rule
    assert "same request ids" in v.hint
    # with the default missing_in_run="zero", request b counts as 0 instead (with a CoverageWarning)
    from receval.errors import CoverageWarning

    with pytest.warns(CoverageWarning, match="share no request"):
        res = evaluate(run, labels, ["mrr"])
    assert res.counts["evaluated"] == 1 and res["mrr"].mean == 0.0
    assert res["mrr"].ci_low == 0.0 and res["mrr"].ci_high == 0.0
