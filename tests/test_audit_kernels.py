"""Compiled paths of the audits and the kernels behind them, each against a slow or plain reference.

* the CSC bootstrap kernel (4-bit lanes, runs of equal values) against the CSR
  kernel (bit for bit) and against products of the kernel's own weights;
* the grouped / segment kernel against masked products of the same weights;
* the compiled Gini of rows against sorting;
* the vectorised percentile interval against ``np.quantile`` column by column;
* the linear-time ranking, duplicate check and item lookup against polars;
* the exposure audit's sparse and compiled AWRF / EE against the dense formulas;
* each audit's fused path (ColumnRuns, grouped pass, segment kernel) against its
  general path under the same weights.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("numba")

from receval.audits import _rank, _rank_kernel  # noqa: E402
from receval.audits import _result as R  # noqa: E402
from receval.audits import disparity as D  # noqa: E402
from receval.audits import exposure as E  # noqa: E402
from receval.audits.popularity import popularity_bias_audit  # noqa: E402
from receval.stats import _bootstrap_kernel as K  # noqa: E402
from receval.stats import bootstrap as B  # noqa: E402

ROOT = K.root_key(77)


def _sparse(n, m, density, seed, values="float"):
    import scipy.sparse as sp

    x = sp.random(n, m, density=density, random_state=seed, format="csr")
    rng = np.random.default_rng(seed)
    if values == "quarters":  # products and sums of small multiples of 1/4 are exact
        x.data = np.round(rng.standard_normal(x.nnz) * 8) / 4
    else:
        x.data = rng.standard_normal(x.nnz) * 10.0 ** rng.integers(-3, 3, x.nnz)
    return x


# ---------------------------------------------------------------- CSC kernel


@pytest.mark.parametrize("b0,b1", [(0, 1), (3, 131), (0, 300)])
def test_csc_kernel_is_the_csr_kernel_bit_for_bit(b0, b1):
    x = _sparse(2500, 300, 0.02, 1)
    x.data[::97] = np.nan  # non-finite values count only under positive weights, as in the CSR kernel
    x.data[5] = np.inf
    c = x.tocsc()
    a, wa = K.poisson_sums_csr(x.indptr, x.indices, x.data, 300, b0, b1, ROOT)
    b, wb = K.poisson_sums_csc(c.indptr, c.indices, c.data, 2500, b0, b1, ROOT)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(wa, wb)


def test_csc_kernel_runs_sum_the_weights_of_equal_values():
    x = _sparse(3000, 200, 0.03, 2, values="quarters")
    c = x.tocsc()
    col = np.repeat(np.arange(200), np.diff(c.indptr))
    o = np.lexsort((c.indices, c.data, col))  # by value within each column, units ascending
    s, wsum = K.poisson_sums_csc(c.indptr, c.indices[o], c.data[o], 3000, 0, 250, ROOT, runs=True)
    w = K.poisson_weights(3000, 0, 250, ROOT).astype(np.float64)
    np.testing.assert_array_equal(s, w @ x.toarray())  # exact: quarter multiples
    np.testing.assert_array_equal(wsum, w.sum(axis=1))
    f = _sparse(3000, 200, 0.03, 3)
    fc = f.tocsc()
    s2, _ = K.poisson_sums_csc(fc.indptr, fc.indices, fc.data, 3000, 0, 250, ROOT, runs=True)
    np.testing.assert_allclose(s2, w @ f.toarray(), rtol=1e-12, atol=1e-12)


def test_csc_kernel_does_not_depend_on_threads():
    x = _sparse(4000, 50, 0.05, 4).tocsc()
    ref, _ = K.poisson_sums_csc(x.indptr, x.indices, x.data, 4000, 0, 520, ROOT, threads=1)
    for threads in (2, 3):
        got, _ = K.poisson_sums_csc(x.indptr, x.indices, x.data, 4000, 0, 520, ROOT, threads=threads)
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("runs", [False, True])
def test_csc_kernel_sums_do_not_depend_on_row_width_or_threads(runs):
    # wider weight rows (several cache lines per unit) and threads splitting units and columns only
    # regroup the replicates: every sum is the same number, and (runs=False) the CSR kernel's
    x = _sparse(3000, 120, 0.04, 8)
    x.data[::53] = np.nan
    c = x.tocsc()
    col = np.repeat(np.arange(120), np.diff(c.indptr))
    if runs:  # few distinct values, stored value by value: long runs
        c.data = np.round(c.data) / 4
        o = np.lexsort((c.indices, c.data, col))
        c.indices, c.data = c.indices[o], c.data[o]
    ref, wref = K.poisson_sums_csr(x.indptr, x.indices, x.data, 120, 7, 607, ROOT) if not runs else (None, None)
    base, wbase = K.poisson_sums_csc(c.indptr, c.indices, c.data, 3000, 7, 607, ROOT, runs=runs, threads=1,
                                     width=K.LINE)
    if not runs:
        np.testing.assert_array_equal(base, ref)
        np.testing.assert_array_equal(wbase, wref)
    for width in (2 * K.LINE, 4 * K.LINE, 3 * K.LINE):
        for threads in (1, 2, 3):
            got, wgot = K.poisson_sums_csc(c.indptr, c.indices, c.data, 3000, 7, 607, ROOT, runs=runs,
                                           threads=threads, width=width)
            np.testing.assert_array_equal(got, base)
            np.testing.assert_array_equal(wgot, wbase)
    with pytest.raises(ValueError):
        K.poisson_sums_csc(c.indptr, c.indices, c.data, 3000, 0, 10, ROOT, width=100)


def test_lane_width_grows_with_the_replicates_and_stays_under_the_memory_bound():
    assert K.lane_width(1000, 10) == K.LINE
    assert K.lane_width(1000, 200) == 2 * K.LINE
    assert K.lane_width(1000, 1000) == K.WIDE_LINES * K.LINE
    big = K.LANE_BYTES_MAX // K.LINE  # units whose one-line rows fill the bound
    assert K.lane_width(big, 1000) == K.LINE
    assert K.lane_width(big // 2, 1000) == 2 * K.LINE


def test_lane_weight_rows_of_any_width_and_unit_range_are_the_kernel_weights():
    starts, gammas = K._streams(np.uint64(ROOT), 3, 3 + 300)
    w = K.poisson_weights(500, 3, 303, ROOT)
    lanes = np.zeros((500, 3 * K.LINE), dtype=np.uint8)
    tot = np.zeros(6 * K.LINE, dtype=np.int64)
    for u0, u1 in ((0, 170), (170, 171), (171, 500)):  # pieces: the rows of the whole range
        K._lane_weights_range(starts, gammas, K._thresholds(), lanes, u0, u1, tot)
    nib = np.concatenate([lanes & 15, lanes >> 4], axis=1).T  # replicate r in byte r % L, high nibble from L
    np.testing.assert_array_equal(nib[:300], w)
    assert not nib[300:].any()
    np.testing.assert_array_equal(tot[:300], w.sum(axis=1))
    assert not tot[300:].any()


def test_lane_weights_are_the_kernel_weights_in_nibbles():
    starts, gammas = K._streams(np.uint64(ROOT), 5, 5 + 100)
    lanes = np.empty((700, K.LINE), dtype=np.uint8)
    tot = np.zeros(2 * K.LINE, dtype=np.int64)
    K._lane_weights_range(starts, gammas, K._thresholds(), lanes, 0, 700, tot)
    wsum = tot[:100]
    w = K.poisson_weights(700, 5, 105, ROOT)
    nib = np.concatenate([lanes & 15, lanes >> 4], axis=1).T  # lane r in byte r % 64, high nibble from 64
    np.testing.assert_array_equal(nib[:100], w)
    assert not nib[100:].any()
    np.testing.assert_array_equal(wsum, w.sum(axis=1))


def test_every_weight_fits_a_nibble():
    # the CSC kernel packs two weights per byte: the largest weight the thresholds allow is 12
    assert len(K.poisson_thresholds()) == 12 < 16
    t = K.poisson_thresholds()
    assert K._quantile.py_func(np.uint32(2**32 - 1), t) == 12


def test_csc_kernel_with_scratch_memory_gives_the_same_sums():
    # a loop over replicate blocks sharing one scratch dict (weight rows and sums mapped once): every
    # block's sums equal a fresh call's, also for a shorter last block and after a matrix of other shape
    x = _sparse(900, 30, 0.08, 9).tocsc()
    y = _sparse(900, 12, 0.1, 10).tocsc()
    scratch: dict = {}
    for mat, spans in ((x, [(0, 128), (128, 256), (256, 300)]), (y, [(0, 64)]), (x, [(300, 428)])):
        for b0, b1 in spans:
            got, wgot = K.poisson_sums_csc(mat.indptr, mat.indices, mat.data, 900, b0, b1, ROOT, scratch=scratch)
            got = got.copy()
            ref, wref = K.poisson_sums_csc(mat.indptr, mat.indices, mat.data, 900, b0, b1, ROOT)
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(wgot, wref)
    assert set(scratch) == {"out", "lanes"}


# ---------------------------------------------------------------- grouped / segment kernel


def test_group_sums_are_masked_products_of_the_same_weights():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 7, (3000, 4)).astype(np.float64)
    codes = rng.integers(0, 9, 3000)
    codes[codes == 4] = 5  # an empty group
    s, wsum = K.poisson_group_sums(x, codes, 9, 123, ROOT)
    w = K.poisson_weights(3000, 0, 123, ROOT).astype(np.float64)
    for g in range(9):
        np.testing.assert_array_equal(s[:, g], w @ (x * (codes == g)[:, None]))
    np.testing.assert_array_equal(wsum, w.sum(axis=1))


def test_segment_sums_take_each_rows_unit_weight():
    rng = np.random.default_rng(7)
    units = rng.permutation(5000)[:1200]  # a subset, in any order
    xs = rng.integers(0, 5, (1200, 2)).astype(np.float64)
    bounds = np.array([0, 1, 400, 400, 1200])
    s, _ = K.poisson_segment_sums(xs, units, bounds, 10, 47, ROOT)
    w = K.poisson_weights(5000, 10, 47, ROOT).astype(np.float64)[:, units]
    for j in range(4):
        np.testing.assert_array_equal(s[:, j], w[:, bounds[j] : bounds[j + 1]] @ xs[bounds[j] : bounds[j + 1]])


def test_segment_sums_draw_consecutive_units_in_stream_order_with_the_same_weights():
    # runs of consecutive units (odd and even first units, runs cut by segment and chunk ends, and
    # runs broken inside a chunk) take the in-order path; the sums equal the weight matrix's products
    rng = np.random.default_rng(8)
    units = np.r_[np.arange(3, 1500), np.arange(2000, 2700), rng.permutation(np.arange(2700, 4000))[:600],
                  np.arange(4001, 4003), 7000, np.arange(5000, 5400)]
    xs = rng.integers(0, 5, (len(units), 3)).astype(np.float64)
    bounds = np.array([0, 1, 700, 1497, 2197, 2800, len(units)])
    plan = K._segment_plan(np.asarray(units, dtype=np.int64), bounds)
    first = plan[:, 3]
    assert (first >= 0).sum() >= 6 and (first < 0).sum() >= 2  # both paths are exercised
    for lo, hi, _, u0 in plan:
        assert (u0 >= 0) == bool(np.all(np.diff(units[lo:hi]) == 1))
        assert u0 < 0 or u0 == units[lo]
    s, wsum = K.poisson_segment_sums(xs, units, bounds, 4, 61, ROOT)
    w = K.poisson_weights(7001, 4, 61, ROOT).astype(np.float64)[:, units]
    for j in range(len(bounds) - 1):
        np.testing.assert_array_equal(s[:, j], w[:, bounds[j] : bounds[j + 1]] @ xs[bounds[j] : bounds[j + 1]])
    np.testing.assert_array_equal(wsum, w.sum(axis=1))


# ---------------------------------------------------------------- Gini of rows


def _gini_sorted(x, n_total, mult=None):
    out = []
    for row in x:
        vals = np.repeat(row, (np.ones(len(row)) if mult is None else mult).astype(int))
        s = np.sort(np.concatenate([np.zeros(n_total - len(vals)), vals]))
        n = len(s)
        out.append(((2 * np.arange(1, n + 1) - n - 1) * s).sum() / (n * s.sum()) if s.sum() else np.nan)
    return np.array(out)


def test_compiled_gini_equals_sorting():
    rng = np.random.default_rng(8)
    x = rng.exponential(size=(6, 400)) * (rng.random((6, 400)) < 0.6)
    x[1] = 0.0  # undefined
    x[2, :200] = 0.75  # ties
    x[3] = np.round(x[3] * 3) / 3
    x[4, :] = 1.0 + np.arange(400) * 1e-12
    x[4, 0] = 1e300  # one bucket holds every other value: the insertion pass gives way to a sort
    np.testing.assert_allclose(K.gini_rows(x, 1000), _gini_sorted(x, 1000), rtol=1e-12, equal_nan=True)
    mult = rng.integers(0, 4, 400).astype(np.float64)
    np.testing.assert_allclose(K.gini_rows(x, 1500, mult), _gini_sorted(x, 1500, mult), rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(K.gini_rows(x, 1000, threads=3), K.gini_rows(x, 1000, threads=1))


def _gini_numerator_runs(row, n_total, mult=None):
    """The kernel's numerator, step by step in Python: positive values sorted (stable), runs of equal
    values adding v * h * (2s + h - n) in ascending order (the same additions, bit for bit)."""
    mult = np.ones(len(row)) if mult is None else mult
    keep = (row > 0) & (mult > 0)
    n = float(n_total)
    before = n
    if (mult == 1).all():
        before -= int(keep.sum())
    else:
        for mu in mult[keep]:
            before -= mu
    order = np.argsort(row[keep], kind="stable")
    v, mu = row[keep][order], mult[keep][order]
    acc, pos, p = 0.0, before, 0
    while p < len(v):
        h, value = 0.0, v[p]
        while p < len(v) and v[p] == value:
            h += mu[p]
            p += 1
        acc += value * h * (2.0 * pos + h - n)
        pos += h
    return acc


def test_gini_buckets_follow_skewed_values_exactly():
    """The bucket map adapts to the values; whatever the skew, the numerators are those of a plain sort."""
    rng = np.random.default_rng(21)
    c = 3000
    x = np.zeros((9, c))
    x[0] = rng.poisson(2e5 / (np.arange(c) + 10.0)) * rng.choice([0.5, 1 / np.log2(3), 0.43], c)  # long tail
    x[1] = np.where(rng.random(c) < 0.5, 5e-324 * rng.integers(1, 9, c), rng.exponential(size=c))  # subnormals
    x[2] = np.exp(rng.normal(0, 30, c))  # spans hundreds of binades
    x[2, :5] = [1e300, 1e-300, 1e300, 2.5, 2.5]
    x[3] = rng.integers(0, 4, c).astype(np.float64)  # few distinct values, many ties
    x[4] = 1.0 + rng.integers(0, 1 << 20, c) * 2.0**-52  # adjacent doubles: one coarse cell
    x[5, 7] = 3.0  # a single positive value
    x[6] = x[0] * (rng.random(c) < 0.01)
    x[7] = 1.0 + np.arange(c) * 1e-12  # distinct values in one cell
    x[7, 0] = 1e300  # ... and one outlier: every other value in one bucket, the sort takes over
    x[8] = rng.permutation(x[0])
    mult = rng.integers(0, 4, c).astype(np.float64)
    for m, n_total in ((None, 4000), (mult, 9000)):
        num = np.zeros(len(x))
        K._gini_numerators(x, n_total, np.ones(c) if m is None else m, m is None, num)
        expected = np.array([_gini_numerator_runs(r, n_total, m) for r in x])
        np.testing.assert_array_equal(num, expected)


def test_gini_of_rows_uses_the_kernel_for_large_inputs(monkeypatch):
    from receval.metrics import beyond

    rng = np.random.default_rng(9)
    x = rng.exponential(size=(20, 300))
    numpy_path = beyond.gini_of_rows(x, 500)  # small: the numpy sort
    monkeypatch.setattr(beyond, "GINI_KERNEL_CELLS", 1)
    assert beyond._gini_kernel(x) is K.gini_rows
    np.testing.assert_allclose(beyond.gini_of_rows(x, 500), numpy_path, rtol=1e-12)
    assert beyond._gini_kernel(-x) is None  # negative values: the sort


# ---------------------------------------------------------------- percentile interval


def test_vectorised_percentile_interval_is_np_quantile_bit_for_bit():
    rng = np.random.default_rng(10)
    for b in (1, 2, 5, 1000, 1001):
        for level in (0.95, 0.9, 0.5):
            r = rng.standard_normal((b, 40)) * 10.0 ** rng.integers(-4, 4, 40)
            r[rng.random(r.shape) < 0.2] = np.nan
            r[:, 0] = np.nan
            r[:, 1] = 2.5
            low, high = B.percentile_interval(r, level)
            a = (1 - level) / 2
            for j in range(40):
                col = r[~np.isnan(r[:, j]), j]
                want = np.quantile(col, [a, 1 - a]) if len(col) else [np.nan, np.nan]
                np.testing.assert_array_equal([low[j], high[j]], want)


# ---------------------------------------------------------------- ranking helpers


def _runs(seed, n_req=300, text=False, scattered=False, samples=1):
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_req):
        for s in range(samples):
            m = int(rng.integers(1, 45))
            items = rng.choice(400, m, replace=False)
            score = np.round(rng.random(m) * 4) / 4  # many ties
            score[score == 0.5] = -0.0
            rows.append(pl.DataFrame({"request_id": np.full(m, q * 7 % 1000), "sample_id": np.full(m, s),
                                      "item_id": items, "score": score}))
    f = pl.concat(rows)
    if text:
        f = f.with_columns(pl.col("item_id").cast(pl.String), pl.format("r{}", "request_id").alias("request_id"))
    if scattered:
        f = f.sample(fraction=1.0, shuffle=True, seed=seed)
    return f


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("scattered", [False, True])
@pytest.mark.parametrize("k", [None, 3])
def test_compiled_ranking_is_the_polars_sort(monkeypatch, text, scattered, k):
    f = _runs(11, text=text, scattered=scattered, samples=2)
    by = ("request_id", "sample_id")
    want = _rank._rank_polars(f, k, by, "item_id")
    monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)
    got = _rank.rank_rows(f, k, by)
    assert got.select(*by, "item_id", "score", "rank").equals(want.select(*by, "item_id", "score", "rank"))


def test_duplicate_items_within_blocks_are_found(monkeypatch):
    monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)
    f = _runs(12, samples=2)
    assert _rank.repeats_within_blocks(f, ("request_id", "sample_id")) is False
    # the same item in two samples of a request is no repeat; twice in one sample is
    assert _rank.repeats_within_blocks(f, ("request_id",)) is True
    long = pl.DataFrame({"request_id": np.zeros(100, dtype=np.int64), "item_id": np.r_[np.arange(99), 42]})
    assert _rank.repeats_within_blocks(long, ("request_id",)) is True
    assert _rank.repeats_within_blocks(long.head(99), ("request_id",)) is False
    assert _rank.repeats_within_blocks(f.sample(fraction=1.0, shuffle=True, seed=1), ("request_id", "sample_id")) \
        is None  # scattered blocks: undecided here, the exact check decides


def test_item_positions_equal_a_join():
    cat = pl.Series("item_id", [5, 3, 1000, 9, -4])
    items = pl.Series("item_id", [3, 3, 9, -4, 7, 1000, 2_000_000])
    np.testing.assert_array_equal(_rank.item_positions(items, cat), [1, 1, 3, 4, -1, 2, -1])
    np.testing.assert_array_equal(_rank.item_positions(items.cast(pl.String), cat), [1, 1, 3, 4, -1, 2, -1])
    inside = pl.Series("item_id", [3, 9, 7, -4, 1000])  # every id within the table's range (7 absent)
    np.testing.assert_array_equal(_rank.item_positions(inside, cat), [1, 3, -1, 4, 2])
    big = pl.Series("item_id", [10**15, 3])  # a wide range: the join
    np.testing.assert_array_equal(_rank.item_positions(pl.Series([3, 10**15, 4]), big), [1, 0, -1])


def test_counting_scatter_places_values_in_stable_key_order():
    rng = np.random.default_rng(14)
    keys = rng.integers(0, 70, 6000)
    a, b = rng.integers(0, 10**6, 6000), rng.standard_normal(6000)
    out_a, out_b = np.empty(6000, dtype=np.int32), np.empty(6000)
    counts = _rank_kernel.counting_scatter(keys, 80, a, b, out_a, out_b)
    order = np.argsort(keys, kind="stable")
    np.testing.assert_array_equal(out_a, a[order])
    np.testing.assert_array_equal(out_b, b[order])
    np.testing.assert_array_equal(counts, np.bincount(keys, minlength=80))


@pytest.mark.parametrize("by_rank", [True, False])
def test_exposure_column_runs_by_counting_scatter_equal_the_gathers(monkeypatch, by_rank):
    rng = np.random.default_rng(15)
    n_req, n_cat, n_groups = 400, 300, 7
    q = np.repeat(np.arange(n_req), 10)
    item_pos = np.concatenate([rng.choice(n_cat, 10, replace=False) for _ in range(n_req)])
    rank = np.tile(np.arange(1, 11), n_req)
    val = 1.0 / np.log2(1.0 + rank) if by_rank else rng.choice([0.5, 0.25, 1 / 3], len(q))
    cat_g = rng.integers(0, n_groups, n_cat)
    dense = rng.standard_normal((n_req, 5))
    args = (q, item_pos, cat_g[item_pos], val, rank if by_rank else None, cat_g, None, n_groups, lambda: dense, n_req,
            np.bincount(item_pos, minlength=n_cat))
    monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)  # the compiled scatter
    got, _ = E._column_runs(*args)
    monkeypatch.setattr(E, "_kernels", lambda *a, **k: None)  # stable_order and two gathers
    want, _ = E._column_runs(*args)
    for attr in ("colptr", "rows", "data"):
        np.testing.assert_array_equal(getattr(got, attr), getattr(want, attr))
        assert getattr(got, attr).dtype == getattr(want, attr).dtype
    np.testing.assert_array_equal(got.sum(), want.sum())


def test_counting_order_is_a_stable_argsort():
    keys = np.random.default_rng(13).integers(0, 50, 5000)
    np.testing.assert_array_equal(_rank_kernel.counting_order(keys, 50), np.argsort(keys, kind="stable"))


# ---------------------------------------------------------------- exposure: AWRF and EE


def _request_rows(seed, n_req=400, n_groups=12):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 12, n_req)
    q = np.repeat(np.arange(n_req), lens)
    g = rng.integers(0, n_groups, len(q))
    val = rng.random(len(q))
    val[rng.random(len(q)) < 0.05] = 0.0
    val[np.isin(q, [3, 4])] = 0.0  # requests without exposure: AWRF undefined
    return q, g, val, n_req, n_groups


def _dense_awrf(q, g, val, n_req, n_groups, target):
    a = np.zeros((n_req, n_groups))
    np.add.at(a, (q, g), val)
    row = a.sum(axis=1)
    ok = row > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = a / row[:, None]
    t = np.broadcast_to(target, a.shape) if target.ndim == 1 else target
    jsd = E._jsd_bits(np.where(ok[:, None], dist, 0.0), np.where(ok[:, None], t, 0.0))
    return np.where(ok, 1.0 - jsd, 0.0), ok


def test_sparse_and_compiled_awrf_equal_the_dense_formula():
    q, g, val, n_req, n_groups = _request_rows(14)
    target = np.random.default_rng(1).random(n_groups)
    target[2] = 0.0
    target /= target.sum()
    want, ok = _dense_awrf(q, g, val, n_req, n_groups, target)
    got, got_ok = E._awrf(E._request_groups(q, g, val, n_req, n_groups), None, target)
    np.testing.assert_array_equal(got_ok, ok)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    starts = np.r_[np.flatnonzero(np.r_[True, q[1:] != q[:-1]]), len(q)]
    awrf, kok, n_req_g = np.empty(n_req), np.empty(n_req, dtype=bool), np.zeros(n_groups, dtype=np.int64)
    _rank_kernel.exposure_per_request(starts, g, val, target, n_groups, awrf, kok, n_req_g)
    np.testing.assert_array_equal(kok, ok)
    np.testing.assert_allclose(awrf, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(n_req_g, np.bincount(np.unique(q * n_groups + g) % n_groups, minlength=n_groups))


def test_sparse_merit_awrf_equals_the_dense_formula():
    q, g, val, n_req, n_groups = _request_rows(15)
    rng = np.random.default_rng(2)
    rq, rg = rng.integers(0, n_req, 300), rng.integers(0, n_groups, 300)
    rv = rng.integers(1, 3, 300).astype(np.float64)
    r = np.zeros((n_req, n_groups))
    np.add.at(r, (rq, rg), rv)
    with np.errstate(invalid="ignore", divide="ignore"):
        tdist = r / r.sum(axis=1, keepdims=True)
    want, ok = _dense_awrf(q, g, val, n_req, n_groups, np.nan_to_num(tdist))
    ok &= r.sum(axis=1) > 0
    want = np.where(ok, want, 0.0)
    got, got_ok = E._awrf(E._request_groups(q, g, val, n_req, n_groups),
                          E._request_groups(rq, rg, rv, n_req, n_groups), None)
    np.testing.assert_array_equal(got_ok, ok)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_compiled_expected_exposure_is_the_numpy_path_bit_for_bit(monkeypatch):
    f = _rank._rank_polars(_runs(16), 6, ("request_id", "sample_id"), "item_id")
    f = f.with_columns(__q=pl.col("request_id").rle_id().cast(pl.Int64), __ns=pl.lit(1.0), gain=pl.lit(0.0))
    n_req = int(f["__q"].max()) + 1
    want = E._expected_exposure(f, None, "log", 0.8, n_req)
    monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)
    got = E._expected_exposure(f, None, "log", 0.8, n_req)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("browsing", ["log", "rbp"])
def test_expected_exposure_takes_the_audits_row_exposure_unchanged(browsing):
    # exposure_audit hands its rows' attention / samples to _expected_exposure when attention is a
    # function of the rank: the same numbers as the weights computed there
    f = _rank._rank_polars(_runs(16, n_req=80, samples=2), 6, ("request_id", "sample_id"), "item_id")
    f = f.with_columns(__q=pl.col("request_id").rle_id().cast(pl.Int64), gain=pl.lit(0.0))
    q, rank = f["__q"].to_numpy(), f["rank"].to_numpy()
    ns = np.bincount(q[rank == 1]).astype(np.float64)[q]  # samples per request, as the audit counts them
    f = f.with_columns(__ns=pl.Series(ns))
    r = rank.astype(np.float64)
    att = 1.0 / np.log2(1.0 + r) if browsing == "log" else 0.8 ** (r - 1.0)
    n_req = int(q.max()) + 1
    for kw in ({}, {"w": att / ns}):
        got = E._expected_exposure(f, None, browsing, 0.8, n_req, **kw)
        if not kw:
            want = got
    np.testing.assert_array_equal(got, want)
    assert ns.max() > 1


# ---------------------------------------------------------------- fused paths = general paths


def _catalog_run(seed, n_req=3000, n_items=600, n_providers=40):
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 12, n_req)
    q = np.repeat(np.arange(n_req), lens)
    items = np.concatenate([rng.choice(n_items, m, replace=False, p=None) for m in lens])
    run = pl.DataFrame({"request_id": q, "item_id": items, "score": rng.random(len(q)),
                        "user_id": q // 2})
    cat = pl.DataFrame({"item_id": np.arange(n_items), "provider": rng.integers(0, n_providers, n_items),
                        "popularity": rng.zipf(1.8, n_items).clip(max=10**5)})
    lab = pl.DataFrame({"request_id": q[::3], "item_id": items[::3], "label": rng.integers(0, 3, len(q[::3]))})
    users = pl.DataFrame({"user_id": np.arange(n_req // 2), "g": rng.choice(["a", "b", "c"], n_req // 2)})
    return run, cat, lab, users


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setattr(B, "_auto", lambda n, n_boot, columns=1: "poisson-fused")


@pytest.mark.parametrize("kw", [{}, {"labels": True, "target": "merit", "browsing": "cascade"},
                                {"labels": True, "browsing": "rbp", "k": 4}])
def test_exposure_column_runs_equal_the_general_statistics(monkeypatch, fused, kw):
    run, cat, lab, _ = _catalog_run(17)
    kw = dict(kw)
    if kw.pop("labels", False):
        kw["labels"] = lab
    a = E.exposure_audit(run, cat, group_column="provider", n_boot=150, min_group_size=5, **kw)
    assert a.settings["bootstrap_method"] == "poisson-fused"
    monkeypatch.setattr(E, "_FUSED_COLUMN_RUNS", False)
    b = E.exposure_audit(run, cat, group_column="provider", n_boot=150, min_group_size=5, **kw)
    _close(a.to_dict(), b.to_dict())


def test_exposure_compiled_paths_equal_the_numpy_paths(monkeypatch):
    run, cat, _, _ = _catalog_run(18)
    a = E.exposure_audit(run, cat, group_column="provider", n_boot=0, min_group_size=5)
    monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)
    b = E.exposure_audit(run, cat, group_column="provider", n_boot=0, min_group_size=5)
    _close(a.to_dict(), b.to_dict())


def test_group_rows_grouped_pass_equals_masked_copies(monkeypatch, fused):
    run, cat, lab, users = _catalog_run(19)
    kw = {"k": 5, "labels": lab, "user_groups": users, "group_column": "g", "n_boot": 120, "min_group_size": 5}
    a = popularity_bias_audit(run, cat, **kw)
    assert a.settings["bootstrap_method"] == "poisson-fused"
    monkeypatch.setattr(R, "_GROUPED_PASS", False)
    b = popularity_bias_audit(run, cat, **kw)
    _close(a.to_dict(), b.to_dict())


def test_disparity_segment_kernel_equals_the_weight_matrix(monkeypatch, fused):
    run, _, lab, users = _catalog_run(20)
    users = users.with_columns(h=pl.Series(np.arange(users.height) % 7).cast(pl.String))
    kw = {"attributes": users, "sensitive": ["g", "h"], "n_boot": 100, "min_group_size": 3}
    a = D.disparity_audit(run, lab, ["ndcg@5"], **kw)
    assert a.settings["bootstrap_method"] == "poisson-fused"
    monkeypatch.setattr(D, "_fused_totals", D._weight_totals)
    b = D.disparity_audit(run, lab, ["ndcg@5"], **kw)
    _close(a.to_dict(), b.to_dict())
