"""The fused Poisson(1) bootstrap kernel: exact weights, sums, determinism, statistics.

Checked against a pure-Python reference of the same random streams (bit-exact),
against plain matrix products of its own weights, against the Poisson(1)
distribution and against the analytic standard error of a mean.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from receval.errors import UsageError
from receval.stats import _bootstrap_kernel as K
from receval.stats import bootstrap as B
from receval.stats import bootstrap_means

ROOT = K.root_key(2024)
PMF = [math.exp(-1) / math.factorial(k) for k in range(21)]


def test_thresholds_are_the_poisson_cdf_rounded_to_2_pow_32():
    t = K.poisson_thresholds()
    assert t.dtype == np.uint32 and len(t) == 12  # weights 0..12
    # exact CDF by rationals: e^-1 from its series to far beyond 2^-64
    e_inv = sum(Fraction((-1) ** j, math.factorial(j)) for j in range(40))
    cdf = Fraction(0)
    for k in range(12):
        cdf += e_inv / math.factorial(k)
        assert abs(Fraction(int(t[k])) - cdf * 2**32) <= Fraction(1, 2)
    assert (cdf + e_inv / math.factorial(12)) * 2**32 > 2**32 - Fraction(1, 2)  # T_12 would round to 2^32
    assert np.all(np.diff(t.astype(object)) > 0)


def test_two_units_share_one_64_bit_output():
    # unit 2j takes the low 32 bits of output j, unit 2j + 1 the high 32 bits (pure-Python check of the scheme)
    s = K._py_mix64((ROOT + K.GOLDEN) & K.MASK64)
    g = K._py_mix_gamma((ROOT + 2 * K.GOLDEN) & K.MASK64)
    t = [int(v) for v in K.poisson_thresholds()]
    for i in range(40):
        u = K._py_mix64((s + (i // 2 + 1) * g) & K.MASK64)
        h = u % 2**32 if i % 2 == 0 else u // 2**32
        assert K.reference_weights(ROOT, range(1), range(i, i + 1))[0, 0] == sum(h >= tk for tk in t)


def test_the_branch_free_count_equals_counting_the_thresholds():
    # _count8 / _count8_u8 find the count by a binary search with selects: check it at and around
    # every threshold, at the ends of the range and on random values
    t = K.poisson_thresholds()
    edge = [int(v) + d for v in t[:8] for d in (-1, 0, 1)] + [0, 1, 2**32 - 1]
    xs = np.r_[np.array(edge, dtype=np.uint32), np.random.default_rng(3).integers(0, 2**32, 20_000, dtype=np.uint32)]
    args = [t[j] for j in range(8)]
    for x in xs:
        expected = sum(int(x) >= int(v) for v in t[:8])
        assert K._count8.py_func(x, *args) == expected
        assert K._count8_u8.py_func(x, *args) == expected


def test_root_key_follows_seed_sequence():
    assert K.root_key(5) == K.root_key(5) != K.root_key(6)
    assert K.root_key(2**80 + 3) != K.root_key(3)  # big seeds are not truncated
    assert 0 <= K.root_key(None) < 2**64


@pytest.mark.parametrize("root", [ROOT, 0, 2**64 - 1])
def test_weights_equal_the_pure_python_reference(root):
    got = K.poisson_weights(300, 0, 6, root)
    ref = K.reference_weights(root, range(6), range(300))
    assert got.dtype == np.uint8 and got.shape == (6, 300)
    np.testing.assert_array_equal(got, ref)
    # an arbitrary block of replicates and units: weights are random-access
    np.testing.assert_array_equal(
        K.poisson_weights(300, 40, 43, root)[:, 250:], K.reference_weights(root, range(40, 43), range(250, 300))
    )


def test_rare_large_weights_are_exact():
    # find weights >= 8 (P = 1.0e-5) among 4e6 draws and recompute each in pure Python
    w = K.poisson_weights(200_000, 0, 20, ROOT)
    rows, cols = np.nonzero(w >= 8)
    assert 10 <= len(rows) <= 90  # expected 41
    for r, c in zip(rows[:15], cols[:15], strict=True):
        assert w[r, c] == K.reference_weights(ROOT, range(r, r + 1), range(c, c + 1))[0, 0]
    assert w.max() <= 20


def test_weights_do_not_depend_on_n():
    np.testing.assert_array_equal(K.poisson_weights(50, 0, 5, ROOT), K.poisson_weights(500, 0, 5, ROOT)[:, :50])


def test_sums_equal_the_product_of_the_weights_exactly_for_integer_columns():
    # integer-valued columns: every partial sum is exact, so any summation order gives the same bits;
    # 300,000 units x 12 replicates pass through the refinement of weights >= 8 (~36 of them)
    rng = np.random.default_rng(1)
    n, b = 300_000, 12
    x = rng.integers(-1000, 1000, (n, 3)).astype(np.float64)
    sums, wsum = K.poisson_sums(x.T, b, ROOT)
    w = K.poisson_weights(n, 0, b, ROOT).astype(np.int64)
    np.testing.assert_array_equal(sums, (w @ x.astype(np.int64)).astype(np.float64))
    np.testing.assert_array_equal(wsum, w.sum(axis=1))


def test_sums_match_the_product_of_the_weights_for_float_columns():
    rng = np.random.default_rng(2)
    n, b = 5_003, 40
    x = rng.normal(size=(n, 4))
    sums, wsum = K.poisson_sums(x.T, b, ROOT)
    w = K.poisson_weights(n, 0, b, ROOT).astype(np.float64)
    np.testing.assert_allclose(sums, w @ x, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(wsum, w.sum(axis=1))


def test_sums_are_identical_for_any_thread_count_and_replicate_block():
    x = np.random.default_rng(3).normal(size=(20_000, 3))
    ref, ref_w = K.poisson_sums(x.T, 50, ROOT, threads=1)
    for threads, block in [(2, 16), (3, 7), (4, 1), (2, 50)]:
        got, got_w = K.poisson_sums(x.T, 50, ROOT, threads=threads, block=block)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(got_w, ref_w)


def test_chunk_size_changes_only_float_rounding():
    rng = np.random.default_rng(4)
    xi = rng.integers(0, 50, (10_000, 2)).astype(np.float64)
    xf = rng.random((10_000, 2))
    ref_i, ref_w = K.poisson_sums(xi.T, 30, ROOT)
    ref_f, _ = K.poisson_sums(xf.T, 30, ROOT)
    for chunk in (1, 7, 333, 4096, 50_000):
        got_i, got_w = K.poisson_sums(xi.T, 30, ROOT, chunk=chunk)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_array_equal(got_w, ref_w)
        np.testing.assert_allclose(K.poisson_sums(xf.T, 30, ROOT, chunk=chunk)[0], ref_f, rtol=1e-12)


def test_a_column_sums_the_same_alone_and_alongside_others():
    x = np.random.default_rng(5).normal(size=(30_001, 5))
    together, _ = K.poisson_sums(x.T, 20, ROOT)
    for j in range(5):
        alone, _ = K.poisson_sums(x[:, j : j + 1].T, 20, ROOT)
        np.testing.assert_array_equal(alone[:, 0], together[:, j])


def test_no_units_and_no_columns():
    sums, wsum = K.poisson_sums(np.empty((2, 0)), 5, ROOT)
    assert sums.shape == (5, 2) and not sums.any() and not wsum.any()
    sums, wsum = K.poisson_sums(np.empty((0, 100)), 5, ROOT)
    assert sums.shape == (5, 0)
    np.testing.assert_array_equal(wsum, K.poisson_weights(100, 0, 5, ROOT).sum(axis=1))
    with pytest.raises(ValueError, match="chunk and block"):
        K.poisson_sums(np.ones((1, 3)), 5, ROOT, chunk=0)


# ---------------------------------------------------------------------------
# the weights are iid Poisson(1)
# ---------------------------------------------------------------------------


def test_weights_follow_poisson_one():
    w = K.poisson_weights(100_000, 0, 100, ROOT).ravel().astype(np.int64)  # 10^7 draws
    assert abs(w.mean() - 1.0) < 0.0013  # sd of the mean 0.00032
    assert abs(w.var() - 1.0) < 0.0045  # sd of the variance about 0.00055 (4th central moment 4)
    counts = np.bincount(w, minlength=21)
    observed = np.append(counts[:7], counts[7:].sum())
    probs = np.append(PMF[:7], 1 - sum(PMF[:7]))
    chi2 = ((observed - w.size * probs) ** 2 / (w.size * probs)).sum()
    assert chi2 < 24.3  # 99.9% quantile of chi2(7)


def test_each_unit_and_each_replicate_has_mean_and_variance_one():
    w = K.poisson_weights(2_000, 0, 2_000, ROOT).astype(np.float64)
    per_unit_mean, per_unit_var = w.mean(axis=0), w.var(axis=0)  # over replicates
    per_rep_mean = w.mean(axis=1)  # over units
    # each mean has sd 1/sqrt(2000) = 0.022; the averages of 2000 of them have sd 0.0005
    assert abs(per_unit_mean.mean() - 1) < 0.003 and abs(per_unit_var.mean() - 1) < 0.006
    assert abs(per_unit_mean.std() - 1 / math.sqrt(2000)) < 0.002
    assert abs(per_rep_mean.std() - 1 / math.sqrt(2000)) < 0.002
    assert abs(per_unit_var.std() - math.sqrt(3 / 2000)) < 0.004  # var of a sample variance: (mu4 - 1)/n = 3/n


def test_weights_are_uncorrelated_across_units_and_replicates():
    w = K.poisson_weights(2_000, 0, 2_000, ROOT).astype(np.float64)
    z = (w - 1.0).ravel()
    limit = 5 / math.sqrt(w.size)  # 5 sd of a correlation over ~4e6 pairs
    wz = w - 1.0
    for lag in (1, 2, 7, 64):
        across_units = (wz[:, :-lag] * wz[:, lag:]).mean()
        across_reps = (wz[:-lag] * wz[lag:]).mean()
        assert abs(across_units) < limit and abs(across_reps) < limit, lag
    # neighbouring streams are not shifted copies of each other
    for shift in range(1, 4):
        assert abs((wz[0, shift:] * wz[1, :-shift]).mean()) < 5 / math.sqrt(2000)
    assert abs(z.mean()) < limit


def test_the_two_units_of_one_output_are_independent():
    # units 2j and 2j + 1 read the low and high halves of one 64-bit output: their weights must be
    # independent Poisson(1) pairs (chi-square test of the joint table against the product of PMFs)
    w = K.poisson_weights(100_000, 0, 100, ROOT).astype(np.int64)  # 5e6 pairs
    a, b = np.minimum(w[:, 0::2], 3).ravel(), np.minimum(w[:, 1::2], 3).ravel()
    observed = np.bincount(4 * a + b, minlength=16).reshape(4, 4)
    p = np.array(PMF[:3] + [1 - sum(PMF[:3])])
    expected = a.size * np.outer(p, p)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 37.7  # 99.9% quantile of chi2(15)
    za, zb = w[:, 0::2] - 1.0, w[:, 1::2] - 1.0
    assert abs((za * zb).mean()) < 5 / math.sqrt(za.size)


def test_bootstrap_se_matches_the_analytic_se_of_a_mean():
    rng = np.random.default_rng(6)
    x = rng.exponential(size=100_000)
    sums, wsum = K.poisson_sums(np.vstack([x, np.ones_like(x)]), 2000, ROOT)
    means = sums[:, 0] / wsum
    se = x.std(ddof=1) / math.sqrt(len(x))
    # the sd of 2000 replicate means estimates se within about 1/sqrt(2 * 2000) = 1.6%
    assert abs(means.std(ddof=1) / se - 1) < 0.065
    assert abs(means.mean() - x.mean()) < 4 * se / math.sqrt(2000)
    np.testing.assert_array_equal(sums[:, 1], wsum)  # a column of ones sums to the weight total


# ---------------------------------------------------------------------------
# as a bootstrap method
# ---------------------------------------------------------------------------


def test_fused_method_is_seeded_and_matches_the_kernel():
    x = np.random.default_rng(7).random((1_000, 2))
    a = bootstrap_means(x, n_boot=400, seed=11, method="poisson-fused")
    b = bootstrap_means(x, n_boot=400, seed=11, method="poisson-fused")
    c = bootstrap_means(x, n_boot=400, seed=12, method="poisson-fused")
    assert a.method == "poisson-fused"
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)
    assert not np.array_equal(a.low, c.low)
    w = K.poisson_weights(1_000, 0, 400, K.root_key(11)).astype(np.float64)
    reps = (w @ x) / w.sum(axis=1)[:, None]
    lo, hi = B.percentile_interval(reps, 0.95)
    np.testing.assert_allclose(a.low, lo, rtol=1e-12)
    np.testing.assert_allclose(a.high, hi, rtol=1e-12)


def test_replicate_weights_of_the_fused_method_are_the_kernel_weights():
    blocks = list(B.replicate_weights(300, n_boot=10, seed=3, method="poisson-fused"))
    np.testing.assert_array_equal(np.vstack(blocks), K.poisson_weights(300, 0, 10, K.root_key(3)))


class _Stat:
    def __init__(self, stats, finish=None):
        self.stats = stats
        self._finish = finish

    def finish(self, sums):
        return self._finish(sums) if self._finish else sums[:, 0] / sums[:, 1]


def test_shared_duplicate_and_ones_columns_give_the_same_replicates():
    # IPS ([w*r, 1]) and SNIPS ([w*r, w]) share a column and IPS has a column of ones: the
    # bootstrap sums them once (or not at all); replicates equal the direct computation
    rng = np.random.default_rng(8)
    n = 20_000
    wr, w = rng.exponential(size=n), rng.exponential(size=n)
    ips = _Stat(np.column_stack([wr, np.ones(n)]))
    snips = _Stat(np.column_stack([wr, w]))
    both = np.column_stack([wr, np.ones(n), w])
    ratio = _Stat(both, lambda s: s[:, 0] / s[:, 2])
    diff = _Stat(both, lambda s: s[:, 0] / s[:, 1] - s[:, 0] / s[:, 2])  # shares ratio's array
    reps, method = B.bootstrap_replicates([ips, snips, ratio, diff], n, n_boot=300, seed=9, method="poisson-fused")
    assert method == "poisson-fused"
    weights = K.poisson_weights(n, 0, 300, K.root_key(9)).astype(np.float64)
    s_wr, s_1, s_w = weights @ wr, weights.sum(axis=1), weights @ w
    np.testing.assert_allclose(reps[:, 0], s_wr / s_1, rtol=1e-12)
    np.testing.assert_allclose(reps[:, 1], s_wr / s_w, rtol=1e-12)
    np.testing.assert_allclose(reps[:, 2], s_wr / s_w, rtol=1e-12)
    np.testing.assert_allclose(reps[:, 3], s_wr / s_1 - s_wr / s_w, rtol=1e-10)
    # each statistic's replicates are the same bits as when it is bootstrapped alone
    for j, m in enumerate([ips, snips]):
        alone, _ = B.bootstrap_replicates([m], n, n_boot=300, seed=9, method="poisson-fused")
        np.testing.assert_array_equal(alone[:, 0], reps[:, j])


def test_sparse_statistics_use_the_same_weights():
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(10)
    dense = np.column_stack([rng.random(3_000) * (rng.random(3_000) < 0.1), np.ones(3_000)])
    a, _ = B.bootstrap_replicates([_Stat(dense)], 3_000, n_boot=100, seed=4, method="poisson-fused")
    b, _ = B.bootstrap_replicates([_Stat(sparse.csr_matrix(dense))], 3_000, n_boot=100, seed=4, method="poisson-fused")
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_auto_uses_the_kernel_for_large_problems(monkeypatch):
    monkeypatch.setattr(B, "_FUSED_WARM", False)
    assert B._auto(100, 1000) == "multinomial"
    # before the kernel has run: only when the numpy scheme would take longer than loading it
    assert B._auto(30_000, 1000, 2) == "poisson"  # 3e7 draws x 2 columns: about 0.1 s
    assert B._auto(300_000, 1000, 2) == "poisson-fused"  # 3e8 draws: about 1 s
    assert B._auto(100_000, 1000, 8) == "poisson"  # evaluate() of 4 metrics at 100k requests: 0.65 s
    assert B._auto(100_000, 1000, 24) == "poisson-fused"  # compare() of 6 metrics: 1.45 s
    reps = [_Stat(np.ones((30_000, 24)))]  # the columns are counted by bootstrap_replicates
    assert B.bootstrap_replicates(reps, 30_000, n_boot=1000)[1] == "poisson"  # 3e7 x 24: 0.44 s
    assert B.bootstrap_replicates(reps * 2, 30_000, n_boot=1000)[1] == "poisson"  # one array counted once
    monkeypatch.setattr(B, "_FUSED_WARM", True)
    assert B._auto(30_000, 1000) == "poisson-fused"  # already loaded: worth it above 2e7
    assert B._auto(20_000, 1000) == "multinomial"
    monkeypatch.setattr(B, "_NUMBA", False)  # numba missing: the numpy scheme
    assert B._auto(300_000, 1000) == "poisson"
    with pytest.raises(UsageError, match="needs numba"):
        bootstrap_means(np.ones(10), method="poisson-fused")


def test_bootstrap_of_a_large_mean_agrees_across_schemes():
    # same data: the fused and numpy Poisson schemes give intervals within Monte Carlo error
    x = np.random.default_rng(12).exponential(size=200_000)
    fused = bootstrap_means(x, n_boot=1000, seed=1, method="poisson-fused")
    numpy_ = bootstrap_means(x, n_boot=1000, seed=1, method="poisson")
    width = numpy_.high[0] - numpy_.low[0]
    assert abs(fused.low[0] - numpy_.low[0]) < 0.08 * width
    assert abs(fused.high[0] - numpy_.high[0]) < 0.08 * width


def test_csr_kernel_equals_dense_product_with_the_same_weights():
    import scipy.sparse as sp

    from receval.stats._bootstrap_kernel import poisson_sums_csr, poisson_weights

    x = sp.random(3000, 40, density=0.05, random_state=7, format="csr")
    x.data = np.round(x.data * 8)  # small integers: sums are exact, so equality is exact
    s, wsum = poisson_sums_csr(x.indptr, x.indices, x.data, 40, 5, 37, 987654321)
    w = poisson_weights(3000, 5, 37, 987654321).astype(np.float64)
    assert np.array_equal(s, w @ x.toarray())
    assert np.array_equal(wsum, w.sum(axis=1))
    for threads in (1, 2, 3):
        s2, _ = poisson_sums_csr(x.indptr, x.indices, x.data, 40, 5, 37, 987654321, threads=threads)
        assert np.array_equal(s2, s)


def test_sparse_and_dense_statistics_share_replicates_in_the_fused_scheme():
    import scipy.sparse as sp

    from receval.stats.bootstrap import bootstrap_replicates

    rng = np.random.default_rng(2)
    dense = np.column_stack([rng.integers(0, 5, 2000).astype(float), np.ones(2000)])

    class S:
        def __init__(self, m):
            self.stats = m

        @staticmethod
        def finish(s):
            return np.asarray(s)[:, 0] / np.asarray(s)[:, 1]

    a, b = S(dense), S(sp.csr_matrix(dense))
    reps, method = bootstrap_replicates([a, b], 2000, n_boot=64, seed=11, method="poisson-fused")
    assert method == "poisson-fused"
    assert np.array_equal(reps[:, 0], reps[:, 1])
    # two statistics on one sparse matrix share a single product (same numbers, computed once)
    reps2, _ = bootstrap_replicates([b, b], 2000, n_boot=64, seed=11, method="poisson")
    assert np.array_equal(reps2[:, 0], reps2[:, 1])
