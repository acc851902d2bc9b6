"""Bootstrap confidence intervals for means of per-unit values.

Units (requests, users) are resampled, never rows, and every column of the
value matrix is resampled jointly (one set of weights per replicate), so
intervals of different metrics come from the same replicates.

Three resampling schemes, chosen by ``method``:

* ``"multinomial"`` — the classic bootstrap: each replicate draws n units with
  replacement. Exact, but costs one bounded random integer per unit and
  replicate; used by ``"auto"`` for up to 2 * 10^7 draws.
* ``"poisson"`` — each unit gets an independent Poisson(1) weight and the
  replicate is the weighted mean (Hanley & MacGibbon 2006; Chamandy et al. 2012).
  It needs no knowledge of n, so it also runs chunk by chunk or on a cluster,
  and it is cheap: Poisson(1) variates come from 32-bit uniforms by an
  inverse-CDF table on the top 16 bits, refined exactly in the few table cells
  that straddle a CDF step (so the draw is exact to 2^-32). Replicates are
  generated in fixed-size blocks from ``numpy.random.default_rng(seed)``.
* ``"poisson-fused"`` — the same Poisson(1) bootstrap computed by a compiled
  numba kernel (:mod:`receval.stats._bootstrap_kernel`) that draws each weight
  where it is used, so no weight matrix is stored: about 3x less CPU than
  ``"poisson"`` on large inputs (more with many statistics), spread over all
  cores. Its random numbers are counter-based
  SplitMix64 streams, one per replicate, each 64-bit output split into two
  32-bit uniforms inverted against the Poisson(1) CDF rounded to 2^-32; a different stream from ``"poisson"``'s, so the same
  seed gives different (equally distributed) replicates. When numba can be
  imported, ``"auto"`` uses it instead of ``"poisson"`` above 2 * 10^7 draws
  once the kernel has run in the process, and before that when the numpy
  scheme's estimated time, draws * (2.5 + 0.5 * columns) ns, exceeds the
  0.8 s it costs to import numba and load the kernel (``_auto``).

The interval is the percentile interval of the replicate means. The same
data, seed and method give identical intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BootstrapResult", "ColumnRuns", "bootstrap_means", "bootstrap_replicates", "percentile_interval", "replicate_weights"]

Method = Literal["auto", "multinomial", "poisson", "poisson-fused"]
METHODS = ("auto", "multinomial", "poisson", "poisson-fused")

MULTINOMIAL_MAX_DRAWS = 20_000_000  # "auto": multinomial up to this many draws (n * n_boot)
# "auto" before the kernel has run in the process: importing numba and loading
# the cached kernel costs 0.6-0.9 s, so the kernel is used when the numpy
# scheme would take longer than that. Its cost per draw, measured on the
# development machine: about 2.5 ns for the weights plus 0.1-3 ns per column
# of statistics (more when many small matrices each take their own product);
# 0.5 ns per column is a conservative middle. The kernel itself costs about
# 0.8 ns per draw plus 0.07 ns per distinct column, spread over the cores.
FUSED_COLD_SECONDS = 0.8
NUMPY_NS_PER_DRAW = 2.5
NUMPY_NS_PER_DRAW_COLUMN = 0.5

_BLOCK_CELLS = 1 << 24  # weights generated per block: bounds memory
_UNIT_CHUNK = 2048  # units converted to float at once: keeps the product in cache


def _poisson_tables() -> tuple[np.ndarray, np.ndarray]:
    # CDF of Poisson(1) scaled to 2^32: draw k iff T[k-1] <= u < T[k]
    k = np.arange(0, 30)
    pmf = np.exp(-1.0) / np.array([math.factorial(int(i)) for i in k], dtype=np.float64)
    cdf = np.minimum(np.cumsum(pmf), 1.0)
    thresholds = np.minimum(np.round(cdf * 2.0**32), 2.0**32).astype(np.uint64)
    thresholds = thresholds[: int(np.searchsorted(thresholds, 2**32)) + 1]
    # one table cell per value of the top 16 bits of u; cells that contain a
    # CDF step are marked 255 and resolved with 16 more random bits
    cell_lo = np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)
    count_lo = np.searchsorted(thresholds, cell_lo, side="right")
    count_hi = np.searchsorted(thresholds, cell_lo + np.uint64((1 << 16) - 1), side="right")
    lut = np.where(count_lo == count_hi, count_lo, _AMBIGUOUS).astype(np.uint8)
    return lut, thresholds


_AMBIGUOUS = 255
_TABLES: tuple[np.ndarray, np.ndarray] | None = None


def _poisson_weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    global _TABLES
    if _TABLES is None:
        _TABLES = _poisson_tables()
    lut, thresholds = _TABLES
    size = shape[0] * shape[1]
    high = rng.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size]
    w = lut[high]
    fix = np.flatnonzero(w == _AMBIGUOUS)
    if len(fix):
        low = rng.bit_generator.random_raw((len(fix) + 3) // 4).view(np.uint16)[: len(fix)]
        u = (high[fix].astype(np.uint64) << np.uint64(16)) | low.astype(np.uint64)
        w[fix] = np.searchsorted(thresholds, u, side="right")
    return w.reshape(shape)


def _multinomial_weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    b, n = shape
    idx = rng.integers(0, n, size=(b, n), dtype=np.int64)
    idx += (np.arange(b, dtype=np.int64) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile interval per column, and how it was made."""

    low: np.ndarray
    high: np.ndarray
    level: float
    n_boot: int
    method: str
    seed: int | None


_NUMBA: bool | None = None
_FUSED_WARM = False  # the kernel has run in this process


def fused_available() -> bool:
    """Whether the compiled ``"poisson-fused"`` scheme can run (numba importable, kernel loadable)."""
    global _NUMBA
    if _NUMBA is None:
        try:
            import receval.stats._bootstrap_kernel  # noqa: F401  (imports numba)
        except Exception:  # ImportError, a numba broken against this numpy, no cache location
            _NUMBA = False
        else:
            _NUMBA = True
    return _NUMBA


def _auto(n: int, n_boot: int, columns: int = 1) -> str:
    draws = n * n_boot
    if draws <= MULTINOMIAL_MAX_DRAWS:
        return "multinomial"
    numpy_seconds = draws * (NUMPY_NS_PER_DRAW + NUMPY_NS_PER_DRAW_COLUMN * columns) * 1e-9
    if (_FUSED_WARM or numpy_seconds >= FUSED_COLD_SECONDS) and fused_available():
        return "poisson-fused"
    return "poisson"


def _check(n_boot: int, level: float, method: str, n: int, columns: int = 1) -> str:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if method not in METHODS:
        raise ValueError(
            f"method must be 'auto', 'multinomial', 'poisson' or 'poisson-fused', got {method!r}"
        )
    if method == "auto":
        return _auto(n, n_boot, columns)
    if method == "poisson-fused" and not fused_available():
        from receval.errors import UsageError

        raise UsageError(
            "method 'poisson-fused' needs numba (pip install 'numba>=0.59'); "
            "use 'poisson' or 'auto' without it"
        )
    return method


def replicate_weights(
    n: int, *, n_boot: int, seed: int | None, method: str
):
    """Yield blocks of unit weights, shape (b, n), ``n_boot`` rows in all.

    The same seed gives the same weights, so every statistic computed from
    them (several metrics, two runs of a paired comparison) shares replicates.
    """
    block = max(1, min(n_boot, _BLOCK_CELLS // max(n, 1)))
    if method == "poisson-fused":
        yield from _fused_weight_blocks(n, n_boot, _root(seed), block)
        return
    rng = np.random.default_rng(seed)
    draw = _poisson_weights if method == "poisson" else _multinomial_weights
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        yield draw(rng, (b, n))
        done += b


def _root(seed: int | None) -> int:
    from receval.stats._bootstrap_kernel import root_key

    return root_key(seed)


def _fused_weight_blocks(n: int, n_boot: int, root: int, block: int):
    from receval.stats._bootstrap_kernel import poisson_weights

    for b0 in range(0, n_boot, block):
        yield poisson_weights(n, b0, min(b0 + block, n_boot), root)


def bootstrap_replicates(
    stats: list,
    n: int,
    *,
    n_boot: int = 1000,
    seed: int | None = 0,
    method: Method = "auto",
) -> tuple[np.ndarray, str]:
    """Replicate values of several statistics, resampling the same units.

    ``stats`` holds :class:`receval.metrics.base.MetricStats`-like objects
    (``.stats`` of shape (n, s_j), dense or scipy.sparse, ``.finish`` and
    optionally ``.recentre``: such replicates are recentred on the point
    estimate, see below).
    Each statistic gets its own matrix product, so its replicates do not
    depend on which other statistics are computed alongside. Returns (values of shape (n_boot, len(stats)),
    method used). Replicates whose finish is undefined (e.g. a Poisson
    replicate with total weight 0) are NaN.
    """
    distinct = {id(m.stats): m.stats.shape[1] for m in stats}
    method = _check(n_boot, 0.5, method, n, sum(distinct.values()))
    out = np.full((n_boot, len(stats)), np.nan)
    if n == 0 or not stats:
        return out, method
    if method == "poisson-fused":
        out = _fused_replicates(stats, n, out, n_boot=n_boot, seed=seed)
    else:
        out = _replicates(stats, n, out, n_boot=n_boot, seed=seed, method=method)
    # Statistics that are not smooth functions of means (distinct counts such as
    # coverage, Gini, ECE's absolute deviations) are biased in resamples: a
    # resample holds only ~63% of the distinct units, so coverage falls and Gini
    # rises in every replicate. Their replicates are recentred on the point
    # estimate (replicate - mean + estimate), removing the first-order bootstrap
    # bias; means and ratios of sums need no correction.
    for j, m in enumerate(stats):
        if getattr(m, "recentre", False):
            col = out[:, j]
            ok = np.isfinite(col)
            if ok.any():
                total = np.asarray(m.stats.sum(axis=0), dtype=np.float64).reshape(1, -1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    estimate = float(m.finish(total)[0])
                if np.isfinite(estimate):
                    col[ok] += estimate - col[ok].mean()
    return out, method


def _replicates(stats: list, n: int, out: np.ndarray, *, n_boot: int, seed: int | None, method: str) -> np.ndarray:
    # statistics that share one stats array (e.g. a difference and a ratio of
    # the same two means) share its weighted sums
    first: dict[int, int] = {}
    for j, m in enumerate(stats):
        first.setdefault(id(m.stats), j)
    dense = [j for j, m in enumerate(stats) if isinstance(m.stats, np.ndarray)]
    owners = [j for j in dense if first[id(stats[j].stats)] == j]
    sparse = [j for j, m in enumerate(stats) if j not in dense]
    row = 0
    for w in replicate_weights(n, n_boot=n_boot, seed=seed, method=method):
        b = len(w)
        sums = {j: np.zeros((b, stats[j].stats.shape[1])) for j in owners}
        # weights are converted to float a cache-sized chunk of units at a time and
        # every statistic consumes the chunk while it is hot; each statistic's sums
        # accumulate in a fixed order, whatever other statistics ride along
        for c in range(0, n, _UNIT_CHUNK):
            wf = w[:, c : c + _UNIT_CHUNK].astype(np.float64)
            for j in owners:
                sums[j] += wf @ stats[j].stats[c : c + _UNIT_CHUNK]
        with np.errstate(invalid="ignore", divide="ignore"):
            for j in dense:
                out[row : row + b, j] = stats[j].finish(sums[first[id(stats[j].stats)]])
            if sparse:
                wf = w.astype(np.float64)
                shared: dict[int, np.ndarray] = {}  # one product per distinct sparse matrix
                for j in sparse:  # scipy.sparse, or ColumnRuns (as scipy)
                    key = first[id(stats[j].stats)]
                    if key not in shared:
                        shared[key] = np.asarray((_scipy(stats[j].stats).T @ wf.T).T)
                    out[row : row + b, j] = stats[j].finish(shared[key])
                del wf, shared
        row += b
        del w, sums  # before the next block is drawn: one block of weights alive at a time, whatever n_boot
    return out


def _distinct_columns(mats: list[np.ndarray]) -> tuple[list[np.ndarray], list[list[int]], int]:
    """Distinct non-constant-one columns of the dense matrices, and where each column went.

    Returns (distinct columns, per matrix the index of each of its columns in
    the kernel's output, -1 for an all-ones column, whose sum is the weight
    total), number of columns. Equal columns (e.g. IPS's and SNIPS's w*r) are
    summed once: the sums are the same numbers either way.
    """
    distinct: list[np.ndarray] = []
    seen: dict[tuple, list[int]] = {}
    where: list[list[int]] = []
    for mat in mats:
        idx = []
        for c in range(mat.shape[1]):
            col = mat[:, c]  # a view: copied once, into the kernel's matrix
            total = float(col.sum())
            key = (total, np.asarray(col[:: max(1, len(col) // 64)], dtype=np.float64).tobytes())
            if total == len(col) and (col == 1).all():
                idx.append(-1)
                continue
            hit = next((d for d in seen.get(key, []) if np.array_equal(distinct[d], col, equal_nan=True)), None)
            if hit is None:
                hit = len(distinct)
                distinct.append(col)
                seen.setdefault(key, []).append(hit)
            idx.append(hit)
        where.append(idx)
    return distinct, where, len(distinct)


def _fused_replicates(stats: list, n: int, out: np.ndarray, *, n_boot: int, seed: int | None) -> np.ndarray:
    from receval.stats._bootstrap_kernel import poisson_sums

    global _FUSED_WARM
    root = _root(seed)
    first: dict[int, int] = {}
    for j, m in enumerate(stats):
        first.setdefault(id(m.stats), j)
    dense = [j for j, m in enumerate(stats) if isinstance(m.stats, np.ndarray)]
    owners = [j for j in dense if first[id(stats[j].stats)] == j]
    sparse = [j for j, m in enumerate(stats) if j not in dense]
    distinct, where, k = _distinct_columns([stats[j].stats for j in owners])
    xt = np.empty((k, n))
    for c, col in enumerate(distinct):
        xt[c] = col
    del distinct
    if owners:
        sums, wsum = poisson_sums(xt, n_boot, root)
    _FUSED_WARM = True
    del xt
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, idx in zip(owners, where, strict=True):
            own = np.column_stack([wsum if c < 0 else sums[:, c] for c in idx]) if idx else np.zeros((n_boot, 0))
            for jj in dense:
                if first[id(stats[jj].stats)] == j:
                    out[:, jj] = stats[jj].finish(own)
        # sparse statistics (scipy.sparse, ColumnRuns): the compiled CSC kernel, the same weights,
        # products shared by identity
        from receval.stats._bootstrap_kernel import LANES, WIDE_LANES, poisson_sums_csc

        for j in sparse:
            if first[id(stats[j].stats)] != j:
                continue
            mat = stats[j].stats
            if isinstance(mat, ColumnRuns):
                colptr, rows, data, runs = mat.colptr, mat.rows, mat.data, True
            else:  # sorted row indices: the CSR kernel's sums, bit for bit
                csc = mat.tocsc()
                csc.sort_indices()
                colptr, rows, data, runs = csc.indptr, csc.indices, csc.data, False
            m = mat.shape[1]
            # replicates per call: one pass of the widest weight rows (WIDE_LANES), more when the
            # columns are few, the (replicates x columns) output bounded by 4 * _BLOCK_CELLS; whole
            # multiples of LANES (the threads share a pass, splitting the columns)
            cap = max(LANES, 4 * _BLOCK_CELLS // max(m, 1) // LANES * LANES)
            block = max(1, min(n_boot, max(WIDE_LANES, _BLOCK_CELLS // max(m, 1)), cap))
            scratch: dict = {}  # the blocks share the weight rows' and the sums' memory (mapped once)
            for b0 in range(0, n_boot, block):
                b1 = min(b0 + block, n_boot)
                part, _ = poisson_sums_csc(colptr, rows, data, n, b0, b1, root, runs=runs, scratch=scratch)
                for jj in sparse:
                    if first[id(stats[jj].stats)] == j:
                        out[b0:b1, jj] = stats[jj].finish(part)
    return out


class ColumnRuns:
    """Sparse statistics (units x columns) stored column by column, for the fused kernel.

    Column c holds the entries colptr[c]..colptr[c+1]-1: unit ``rows[p]`` has
    value ``data[p]`` (a unit listed twice in a column has the sum of its
    values). Store each column value by value, in runs of equal values: the
    fused scheme (:func:`receval.stats._bootstrap_kernel.poisson_sums_csc` with
    ``runs=True``) adds a run's integer weights exactly and multiplies once, so
    a column of few distinct values costs one integer addition per entry and
    replicate. The other schemes read it as a scipy matrix (:meth:`tocsr`).
    """

    def __init__(self, colptr: np.ndarray, rows: np.ndarray, data: np.ndarray, n_units: int,
                 column_sums: np.ndarray | None = None):
        self.colptr = np.ascontiguousarray(colptr, dtype=np.int64)
        self.rows = np.ascontiguousarray(rows, dtype=np.int32 if n_units < 2**31 else np.int64)
        self.data = np.ascontiguousarray(data, dtype=np.float64)
        self.shape = (int(n_units), len(self.colptr) - 1)
        self._sums = None if column_sums is None else np.asarray(column_sums, dtype=np.float64).reshape(1, -1)

    def columns(self) -> np.ndarray:
        """The column of each entry."""
        return np.repeat(np.arange(self.shape[1], dtype=np.int64), np.diff(self.colptr))

    def sum(self, axis: int = 0) -> np.ndarray:
        """Column sums, shape (1, columns) (``axis=0`` only)."""
        if axis != 0:
            raise ValueError("ColumnRuns.sum: axis=0 only")
        if self._sums is None:  # the caller may know them (e.g. summed before the entries were reordered)
            self._sums = np.bincount(self.columns(), weights=self.data, minlength=self.shape[1]).reshape(1, -1)
        return self._sums

    def tocsr(self) -> object:
        import scipy.sparse as sp

        mat = sp.csr_matrix((self.data, (self.rows, self.columns())), shape=self.shape)
        mat.sum_duplicates()
        return mat


def _scipy(mat: object) -> object:
    return mat.tocsr() if isinstance(mat, ColumnRuns) else mat


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column, ignoring undefined (NaN) replicates.

    numpy's default (linear) quantile of each column's non-NaN values, the same
    arithmetic as ``np.quantile`` column by column, vectorised over columns in
    slices (thousands of group statistics cost a few sorts).
    """
    alpha = (1.0 - level) / 2.0
    reps = np.asarray(replicates, dtype=np.float64)
    b, k = reps.shape
    low = np.full(k, np.nan)
    high = np.full(k, np.nan)
    step = max(1, (1 << 22) // max(b, 1))
    qs = np.array([alpha, 1.0 - alpha])
    for c0 in range(0, k, step):
        srt = np.sort(reps[:, c0 : c0 + step], axis=0)  # NaN last
        valid = b - np.isnan(srt).sum(axis=0)
        cols = np.flatnonzero(valid > 0)
        if not len(cols):
            continue
        n = valid[cols]
        for q, dest in zip(qs, (low, high), strict=True):
            h = (n - 1) * q  # np.quantile's virtual index, its neighbours and weight
            prev = np.floor(h)
            nxt = prev + 1
            top = h >= n - 1
            prev = np.where(top, n - 1, prev).astype(np.intp)
            nxt = np.where(top, n - 1, nxt).astype(np.intp)
            t = h - np.where(top, -1.0, prev)
            a = srt[prev, cols]
            diff = srt[nxt, cols] - a
            v = a + diff * t
            upper = t >= 0.5
            v[upper] = srt[nxt, cols][upper] - diff[upper] * (1 - t[upper])
            dest[c0 + cols] = v
    return low, high


class _Mean:
    def __init__(self, x: np.ndarray):
        self.stats = np.column_stack([x, np.ones(len(x))])

    @staticmethod
    def finish(sums: np.ndarray) -> np.ndarray:
        return sums[:, 0] / sums[:, 1]


def bootstrap_means(
    values: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    method: Method = "auto",
) -> BootstrapResult:
    """Percentile bootstrap interval of the mean of each column of ``values``.

    Parameters
    ----------
    values : array of shape (n_units,) or (n_units, n_columns)
        One row per resampling unit (request, user). Must be finite.
    n_boot : number of replicates.
    level : coverage of the two-sided interval, in (0, 1).
    seed : seed of the random numbers (``numpy.random.default_rng``, or
        ``numpy.random.SeedSequence`` for ``"poisson-fused"``); ``None`` draws
        fresh entropy.
    method : ``"auto"``, ``"multinomial"``, ``"poisson"`` or
        ``"poisson-fused"`` (see module doc).

    Returns
    -------
    BootstrapResult with ``low`` and ``high`` of shape (n_columns,). With no
    units the bounds are NaN; with one unit they equal its value.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n, m = x.shape
    method = _check(n_boot, level, method, n, 2 * m)
    if n == 0:
        nan = np.full(m, np.nan)
        return BootstrapResult(nan, nan.copy(), level, n_boot, method, seed)
    reps, method = bootstrap_replicates([_Mean(x[:, j]) for j in range(m)], n, n_boot=n_boot, seed=seed, method=method)
    low, high = percentile_interval(reps, level)
    return BootstrapResult(low, high, level, n_boot, method, seed)
