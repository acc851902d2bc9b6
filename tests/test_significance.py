"""Paired tests, multiple-comparison corrections and power: oracles and simulations.

Oracles: scipy (``ttest_rel``, ``wilcoxon``), statsmodels (``multipletests``,
``NormalIndPower``, ``TTestIndPower``, ``TTestPower``) and, for the sign-flip
randomization test, the exact permutation distribution enumerated on tiny n.
Simulations: false-positive rate of the three paired tests under the null and
coverage of 95% bootstrap intervals of a mean; each has a short seeded version
for CI and a longer one under ``@pytest.mark.slow``.
"""

from __future__ import annotations

import itertools
import math
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower, TTestPower

from receval import compare
from receval.stats import bootstrap_means
from receval.stats.corrections import CORRECTIONS, adjust_pvalues
from receval.stats.power import minimum_detectable_effect, sample_size
from receval.stats.significance import (
    TESTS,
    paired_t,
    paired_test,
    randomization,
    randomization_many,
    wilcoxon,
)

ALPHA = 0.05


# ---------------------------------------------------------------------------
# paired t and Wilcoxon against scipy
# ---------------------------------------------------------------------------

# metric-like values: multiples of 1/1000 in [0, 1] (ties and zeros occur)
metric_values = st.integers(0, 1000).map(lambda i: i / 1000)


@given(st.lists(st.tuples(metric_values, metric_values), min_size=2, max_size=60))
def test_paired_t_equals_scipy_ttest_rel(pairs):
    base = np.array([p[0] for p in pairs])
    cand = np.array([p[1] for p in pairs])
    d = cand - base
    res = paired_t(d)
    if np.all(d == d[0]):  # degenerate: covered by the convention tests below
        assert res.note
        return
    ref = sps.ttest_rel(cand, base)
    assert res.statistic == pytest.approx(float(ref.statistic), rel=1e-9, abs=1e-12)
    assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-300)
    assert res.n == len(d)
    assert res.effect_size == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)


def check_against_scipy_wilcoxon(d: np.ndarray) -> None:
    res = wilcoxon(d)
    if np.all(d == d[0]):  # degenerate: covered by the convention tests below
        assert res.note
        return
    nz = d[d != 0]
    # receval drops zero differences *before* calling scipy (zero_method="wilcox"
    # drops them too), so scipy picks exact / permutation / normal by the number
    # of non-zero differences
    ref = sps.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
    assert res.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-300)
    if len(nz) == len(d):  # no zeros: literally scipy's call on d
        ref_d = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        assert res.p_value == pytest.approx(float(ref_d.pvalue), rel=1e-9, abs=1e-300)
    assert res.n == len(d)
    n_zero = len(d) - len(nz)
    assert (f"{n_zero} zero differences dropped" in res.note) == (n_zero > 0)


# distinct |d| (no ties; small tied samples, where scipy runs a slow permutation
# test, are the explicit cases below), zeros allowed once
@given(st.lists(st.floats(-1, 1, allow_nan=False, allow_subnormal=False), min_size=1, max_size=70, unique_by=abs))
def test_wilcoxon_equals_scipy_wilcoxon(values):
    check_against_scipy_wilcoxon(np.array(values))


# integer differences: many zeros and ties (scipy's tie-corrected normal approximation)
@given(st.lists(st.integers(-5, 5).map(float), min_size=30, max_size=80))
def test_wilcoxon_equals_scipy_wilcoxon_with_ties_and_zeros(values):
    check_against_scipy_wilcoxon(np.array(values))


@pytest.mark.parametrize("values", [
    [1.0, -1.0, 2.0, 2.0, 3.0, 0.0, 4.0],  # ties, small n: scipy's exact permutation distribution
    [0.5, 0.5, -0.25, 1.0, 0.0, 0.0, 0.75, 0.5, -1.0, 2.0],
    [3.0, -2.0, 1.0],
])
def test_wilcoxon_small_samples_with_ties(values):
    check_against_scipy_wilcoxon(np.array(values))


def test_wilcoxon_decides_exact_or_normal_on_the_non_zero_differences():
    # 45 distinct non-zero differences and 15 zeros: scipy on all 60 would use the
    # normal approximation (n > 50); receval drops the zeros first, so the exact
    # null distribution of the 45 non-zero ranks is used (documented convention)
    rng = np.random.default_rng(1)
    d = np.concatenate([rng.normal(0.3, 1.0, size=45), np.zeros(15)])
    exact = sps.wilcoxon(d[d != 0], method="exact").pvalue
    assert wilcoxon(d).p_value == pytest.approx(exact, rel=1e-12)
    assert wilcoxon(d).p_value != pytest.approx(sps.wilcoxon(d, zero_method="wilcox").pvalue, rel=1e-6)


def test_paired_t_effect_size_by_hand():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd (ddof=1) = sqrt(((1.5^2 + 0.5^2) * 2) / 3) = sqrt(5/3)
    res = paired_t(d)
    assert res.effect_size == pytest.approx(2.5 / math.sqrt(5 / 3), rel=1e-12)
    assert res.statistic == pytest.approx(2.5 / (math.sqrt(5 / 3) / 2), rel=1e-12)
    assert paired_t(-d).effect_size == pytest.approx(-res.effect_size)


def test_wilcoxon_rank_biserial_by_hand():
    d = np.array([1.0, -2.0, 3.0, 4.0, 0.0])
    # zero dropped; ranks of |1|, |2|, |3|, |4| are 1..4: W+ = 1 + 3 + 4 = 8, W- = 2
    res = wilcoxon(d)
    assert res.effect_size == pytest.approx((8 - 2) / (8 + 2))
    assert res.statistic == 2.0  # scipy's two-sided statistic min(W+, W-)
    assert res.note == "1 zero differences dropped"
    # ties get average ranks: |1|, |1|, |3| -> 1.5, 1.5, 3; W+ = 1.5 + 3, W- = 1.5
    assert wilcoxon(np.array([1.0, -1.0, 3.0])).effect_size == pytest.approx((4.5 - 1.5) / 6)


def test_randomization_effect_size_is_d_z():
    d = np.array([0.3, -0.1, 0.2, 0.5, 0.0, 0.1])
    assert randomization(d, n_perm=99).effect_size == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)


# ---------------------------------------------------------------------------
# degenerate conventions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("test", TESTS)
def test_all_zero_differences_give_p_one(test):
    res = paired_test(np.zeros(25), test, n_perm=199)
    assert res.p_value == 1.0
    assert res.statistic == 0.0 and res.effect_size == 0.0
    assert res.n == 25
    assert res.note == "all differences are zero"


@pytest.mark.parametrize("test", TESTS)
def test_empty_differences_give_nan(test):
    res = paired_test(np.array([]), test, n_perm=99)
    assert math.isnan(res.p_value) and math.isnan(res.statistic) and math.isnan(res.effect_size)
    assert res.n == 0
    assert res.note == "no paired units"


@pytest.mark.parametrize("test", ["paired_t", "wilcoxon"])
@pytest.mark.parametrize("n", [1, 2, 5, 12])
@pytest.mark.parametrize("value", [0.25, -0.1])
def test_constant_nonzero_difference_gives_the_sign_test_p(test, n, value):
    res = paired_test(np.full(n, value), test)
    assert res.p_value == pytest.approx(min(1.0, 2 * 0.5**n), rel=1e-15)
    assert res.note == "constant non-zero difference: exact sign-test p-value"
    assert math.copysign(1.0, res.effect_size) == math.copysign(1.0, value)
    if test == "paired_t":
        assert math.isinf(res.effect_size) and math.isinf(res.statistic)
    else:  # rank-biserial correlation is +-1: every rank has the same sign
        assert res.effect_size == math.copysign(1.0, value)


def test_paired_test_rejects_unknown_test():
    with pytest.raises(ValueError, match="paired_t, wilcoxon, randomization"):
        paired_test(np.ones(3), "sign")


# ---------------------------------------------------------------------------
# randomization: (b + 1) / (m + 1) and the exact permutation distribution
# ---------------------------------------------------------------------------


@given(
    st.lists(st.floats(-1, 1, allow_nan=False, allow_subnormal=False), min_size=1, max_size=40),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
)
def test_randomization_p_is_b_plus_one_over_m_plus_one(values, n_perm, seed):
    p = float(randomization_many(np.array(values), n_perm=n_perm, seed=seed)[0])
    b = p * (n_perm + 1) - 1
    assert 1 / (n_perm + 1) <= p <= 1.0  # never 0
    assert b == pytest.approx(round(b), abs=1e-6)  # an integer count of permutations


def test_randomization_huge_effect_gives_exactly_one_over_m_plus_one():
    # 40 positive differences: only the all-+ and all-- sign vectors (probability
    # 2^-39 each draw) reach the observed |sum|
    d = 1.0 + np.random.default_rng(0).random(40)
    for n_perm in (99, 999, 10_000):
        assert randomization_many(d, n_perm=n_perm, seed=1)[0] == 1 / (n_perm + 1)
        assert randomization(-d, n_perm=n_perm, seed=2).p_value == 1 / (n_perm + 1)


def test_randomization_is_seeded_and_columns_share_sign_flips():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(50, 3)) + 0.2  # no zero row, so every column sees the same units
    a = randomization_many(d, n_perm=2000, seed=7)
    np.testing.assert_array_equal(a, randomization_many(d, n_perm=2000, seed=7))
    for j in range(3):  # same seed and units: a column alone gets the same sign vectors
        assert randomization_many(d[:, j], n_perm=2000, seed=7)[0] == a[j]
    assert not np.array_equal(a, randomization_many(d, n_perm=2000, seed=8))


def exact_sign_flip_p(d: np.ndarray) -> float:
    """Share of all 2^n sign vectors whose |sum| reaches the observed |sum| (float64)."""
    n = len(d)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    sums = np.abs(signs @ d)
    observed = abs(d.sum())
    return float(np.mean(sums >= observed - 1e-9 * np.abs(d).sum()))


_rng = np.random.default_rng(2024)
EXACT_CASES = {
    "integers with ties and zeros": np.array([3.0, -1.0, 2.0, 0.0, 1.0, 1.0, -2.0, 4.0]),
    "moderate effect, n=10": np.round(_rng.normal(0.4, 1.0, size=10), 3),
    "no effect, n=9": np.round(_rng.normal(0.0, 1.0, size=9), 3),
    "observed sum zero": np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5]),
    "constant non-zero, n=6": np.full(6, 0.3),
    "all positive, n=10": np.arange(1.0, 11.0) / 7,
    "large offset (float32 rounding)": 1e4 + np.round(_rng.normal(size=8), 3),
    "tiny n=3": np.array([0.2, -0.05, 0.4]),
}


@pytest.mark.parametrize("name", list(EXACT_CASES))
def test_randomization_agrees_with_the_exact_permutation_distribution(name):
    d = EXACT_CASES[name]
    m = 20_000
    p_exact = exact_sign_flip_p(d)
    p_mc = float(randomization_many(d, n_perm=m, seed=11)[0])
    # b ~ Binomial(m, p_exact), p_mc = (b + 1) / (m + 1)
    expected = (m * p_exact + 1) / (m + 1)
    sd = math.sqrt(m * p_exact * (1 - p_exact)) / (m + 1)
    assert abs(p_mc - expected) <= 4.5 * sd + 1e-12, (p_exact, p_mc)
    if name == "observed sum zero":
        assert p_exact == 1.0 and p_mc == 1.0
    if name == "constant non-zero, n=6":
        assert p_exact == pytest.approx(2 * 0.5**6)


# ---------------------------------------------------------------------------
# corrections against statsmodels
# ---------------------------------------------------------------------------

p_values = st.one_of(
    st.sampled_from([0.0, 0.001, 0.01, 0.01, 0.04, 0.05, 0.05, 0.3, 1.0, math.nan]),
    st.floats(0, 1, allow_nan=False),
)
SM_METHOD = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh"}


def statsmodels_adjusted(p: np.ndarray, method: str) -> np.ndarray:
    # statsmodels' Holm branch calls gc.collect() (50 ms a call); skip that, nothing else
    with mock.patch("gc.collect"):
        return multipletests(p, alpha=ALPHA, method=method)[1]


@pytest.mark.parametrize("method", list(SM_METHOD))
@given(st.lists(p_values, max_size=40))
def test_adjust_pvalues_equals_statsmodels(method, p):
    p = np.array(p, dtype=np.float64)
    before = p.copy()
    adj = adjust_pvalues(p, method)
    np.testing.assert_array_equal(p, before)  # input untouched
    assert adj.shape == p.shape
    nan = np.isnan(p)
    assert np.array_equal(np.isnan(adj), nan)  # NaNs stay NaN ...
    if (~nan).sum():
        # ... and do not count towards m: the oracle sees only the finite p-values
        ref = statsmodels_adjusted(p[~nan], SM_METHOD[method])
        # subnormal p-values (< 2.2e-308) carry only a few significant bits, so
        # the two implementations' different operation order may differ there
        np.testing.assert_allclose(adj[~nan], ref, rtol=1e-12, atol=np.finfo(np.float64).tiny)


@given(st.lists(p_values, max_size=20))
def test_adjust_none_is_the_identity(p):
    p = np.array(p, dtype=np.float64)
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), p)


def test_adjust_pvalues_by_hand_and_errors():
    # Holm: sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04, 0.03], "holm"), [0.03, 0.06, 0.06])
    # BH: 0.01*3/1, 0.03*3/2, 0.04*3/3 -> step-up minimum from the top
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04, 0.03], "bh"), [0.03, 0.04, 0.04])
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.5, math.nan], "bonferroni")[:2], [0.02, 1.0])
    assert adjust_pvalues([], "holm").shape == (0,)
    assert np.isnan(adjust_pvalues([math.nan, math.nan], "bh")).all()
    assert set(CORRECTIONS) == {"holm", "bonferroni", "bh", "none"}
    with pytest.raises(ValueError, match="holm, bonferroni, bh, none"):
        adjust_pvalues([0.1], "fdr")


# ---------------------------------------------------------------------------
# power analysis
# ---------------------------------------------------------------------------


def test_power_docstring_numbers():
    assert sample_size(1.0, 1.0, 0.1) == 1570  # 2 * (1.96 + 0.8416)^2 / 0.01 = 1569.8
    assert minimum_detectable_effect(1.0, 1.0, 1570) == pytest.approx(0.1, abs=5e-5)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("power", [0.8, 0.9])
@pytest.mark.parametrize(("sd_a", "sd_b"), [(1.0, 1.0), (0.3, 0.5), (0.25, 0.0)])
def test_sample_size_is_the_smallest_n_whose_mde_is_small_enough(alpha, power, sd_a, sd_b):
    for delta in (0.5, 0.1, 0.01, 0.0037):
        n = sample_size(sd_a, sd_b, delta, alpha=alpha, power=power)
        assert n == int(n) and n >= 1
        mde = minimum_detectable_effect(sd_a, sd_b, n, alpha=alpha, power=power)
        assert mde <= delta * (1 + 1e-12)
        if n > 1:  # one unit fewer does not reach delta
            assert minimum_detectable_effect(sd_a, sd_b, n - 1, alpha=alpha, power=power) > delta * (1 - 1e-12)
        assert sample_size(sd_a, sd_b, -delta, alpha=alpha, power=power) == n  # direction does not matter


def test_sample_size_inverts_minimum_detectable_effect_exactly():
    for n in range(1, 2000):
        mde = minimum_detectable_effect(1.3, 0.7, n)
        assert sample_size(1.3, 0.7, mde) == n, n


@pytest.mark.parametrize("es", [0.4, 0.2, 0.1, 0.05])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("power", [0.8, 0.9])
def test_sample_size_matches_statsmodels(es, alpha, power):
    # statsmodels parametrises by effect_size = delta / sd (equal sds) and returns nobs1 per arm
    sd = 0.3
    n = sample_size(sd, sd, es * sd, alpha=alpha, power=power)
    n_normal = NormalIndPower().solve_power(effect_size=es, alpha=alpha, power=power, ratio=1.0)
    assert n == pytest.approx(n_normal, rel=0.01)
    n_t = TTestIndPower().solve_power(effect_size=es, alpha=alpha, power=power, ratio=1.0)
    if n_t >= 150:  # the normal approximation is for large n; the t test needs slightly more
        assert n == pytest.approx(n_t, rel=0.02)
    # unequal sds: the same as equal sds of sqrt((sd_a^2 + sd_b^2) / 2)
    sd_a, sd_b = 0.2, 0.4
    pooled = math.sqrt((sd_a**2 + sd_b**2) / 2)
    assert sample_size(sd_a, sd_b, es * pooled, alpha=alpha, power=power) == pytest.approx(n_normal, rel=0.01)
    # paired design: sd of the differences and sd_b = 0 against the one-sample t test
    n_paired = sample_size(sd, 0.0, es * sd, alpha=alpha, power=power)
    n_one = TTestPower().solve_power(effect_size=es, alpha=alpha, power=power)
    if n_one >= 150:
        assert n_paired == pytest.approx(n_one, rel=0.02)


@pytest.mark.parametrize("n", [10, 50, 400, 5000])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("power", [0.8, 0.95])
def test_minimum_detectable_effect_matches_statsmodels(n, alpha, power):
    sd_a, sd_b = 0.2, 0.4
    pooled = math.sqrt((sd_a**2 + sd_b**2) / 2)
    es = NormalIndPower().solve_power(nobs1=n, alpha=alpha, power=power, ratio=1.0)
    assert minimum_detectable_effect(sd_a, sd_b, n, alpha=alpha, power=power) == pytest.approx(es * pooled, rel=1e-3)


def test_power_edge_cases_and_errors():
    assert sample_size(1.0, 1.0, 0.0) == math.inf
    assert sample_size(1.0, 1.0, math.nan) == math.inf
    with pytest.raises(ValueError, match="alpha"):
        sample_size(1.0, 1.0, 0.1, alpha=1.5)
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect(1.0, 1.0, 100, power=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        sample_size(-1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="n_per_arm"):
        minimum_detectable_effect(1.0, 1.0, 0)


# ---------------------------------------------------------------------------
# simulation: false-positive rate under the null
# ---------------------------------------------------------------------------


def null_differences(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-request metric differences of two exchangeable runs.

    Each request has a difficulty u; each run independently scores 0 on it
    with probability 1 - u and otherwise a Beta(2, 2) value (a metric in
    [0, 1] with many zeros), so the two runs' values are exchangeable and
    many differences are exactly zero.
    """
    u = rng.beta(1.0, 1.5, size=n)
    a = np.where(rng.random(n) < u, rng.beta(2, 2, size=n), 0.0)
    b = np.where(rng.random(n) < u, rng.beta(2, 2, size=n), 0.0)
    return b - a


def false_positive_rates(n_sims: int, seed: int, n: int = 200, n_perm: int = 999) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(TESTS, 0)
    for i in range(n_sims):
        d = null_differences(rng, n)
        hits["paired_t"] += paired_t(d).p_value < ALPHA
        hits["wilcoxon"] += wilcoxon(d).p_value < ALPHA
        # (b+1)/(m+1) with m = 999: P(p <= 0.05) = 50/1000 exactly under the null
        hits["randomization"] += randomization(d, n_perm=n_perm, seed=seed * 100_003 + i).p_value <= ALPHA
    return {k: v / n_sims for k, v in hits.items()}


# The target band is [0.03, 0.07] at 4000 simulations (binomial SE 0.0034, so
# the band is +-5.8 SE around 0.05). The short run has its own binomial SE,
# sqrt(0.05 * 0.95 / 400) = 0.0109, and the band is widened by exactly that on
# each side: [0.0191, 0.0809]. A test whose true rate is 0.05 leaves it with
# probability 0.4%; one whose rate is 0.10 stays inside with probability ~10%.
SHORT_SIMS = 400
SHORT_SE = math.sqrt(0.05 * 0.95 / SHORT_SIMS)


def test_false_positive_rate_under_the_null_short():
    rates = false_positive_rates(SHORT_SIMS, seed=1)
    for test, rate in rates.items():
        assert 0.03 - SHORT_SE <= rate <= 0.07 + SHORT_SE, (test, rate)


@pytest.mark.slow
def test_false_positive_rate_under_the_null():
    rates = false_positive_rates(4000, seed=2)
    for test, rate in rates.items():
        assert 0.03 <= rate <= 0.07, (test, rate)


def exchangeable_runs(rng: np.random.Generator, n_req: int = 100, n_items: int = 10):
    """Two runs whose scores are the same signal plus independent noise (exchangeable)."""
    req = np.repeat(np.arange(n_req), n_items)
    item = np.tile(np.arange(n_items), n_req)
    grade = (rng.random(n_req * n_items) < 0.2) * rng.integers(1, 4, n_req * n_items)
    labels = pd.DataFrame({"request_id": req, "item_id": item, "label": grade})
    labels = labels[labels.label > 0]
    base = pd.DataFrame({"request_id": req, "item_id": item, "score": 0.5 * grade + rng.normal(size=len(req))})
    cand = pd.DataFrame({"request_id": req, "item_id": item, "score": 0.5 * grade + rng.normal(size=len(req))})
    return base, cand, labels


# 150 end-to-end simulations per test: binomial SE sqrt(0.05 * 0.95 / 150) = 0.0178,
# band [0.03 - SE, 0.07 + SE] = [0.0122, 0.0878] (the same rule as above).
E2E_SIMS = 150


@pytest.mark.parametrize("test", TESTS)
def test_false_positive_rate_through_compare_short(test):
    rng = np.random.default_rng(5)
    rejections = 0
    for i in range(E2E_SIMS):
        base, cand, labels = exchangeable_runs(rng)
        res = compare({"base": base, "cand": cand}, labels, ["ndcg@10"], test=test, n_boot=1, n_perm=999, seed=i)
        row = res.rows[0]
        # requests without any label are left out (missing_in_labels="ignore")
        assert row.test == test and row.n == labels.request_id.nunique()
        rejections += row.p_value < ALPHA
    se = math.sqrt(0.05 * 0.95 / E2E_SIMS)
    assert 0.03 - se <= rejections / E2E_SIMS <= 0.07 + se


# ---------------------------------------------------------------------------
# simulation: coverage of 95% bootstrap intervals of a mean
# ---------------------------------------------------------------------------


def coverage_of_mean(n_sims: int, seed: int, method: str, n: int = 200) -> float:
    """Share of 95% intervals covering the true mean of a skewed metric-like variable.

    x = 0 with probability 0.4, else Beta(2, 5): true mean 0.6 * 2/7.
    """
    rng = np.random.default_rng(seed)
    truth = 0.6 * 2 / 7
    hits = 0
    for i in range(n_sims):
        x = np.where(rng.random(n) < 0.6, rng.beta(2, 5, size=n), 0.0)
        res = bootstrap_means(x, n_boot=1000, level=0.95, seed=i, method=method)
        hits += res.low[0] <= truth <= res.high[0]
    return hits / n_sims


# band [0.93, 0.97] at 2000 simulations (SE 0.0049); the short run (300) widens it by
# its own binomial SE sqrt(0.95 * 0.05 / 300) = 0.0126 on each side: [0.9174, 0.9826].
COVER_SIMS = 300
COVER_SE = math.sqrt(0.95 * 0.05 / COVER_SIMS)


def test_bootstrap_coverage_short():
    assert 0.93 - COVER_SE <= coverage_of_mean(COVER_SIMS, seed=6, method="multinomial") <= 0.97 + COVER_SE


@pytest.mark.slow
@pytest.mark.parametrize("method", ["multinomial", "poisson"])
def test_bootstrap_coverage(method):
    assert 0.93 <= coverage_of_mean(2000, seed=7, method=method) <= 0.97
