"""Calibration metrics: ``ece``, ``mce``, ``brier``, ``logloss``, reliability tables.

Each run row carries a predicted probability ``prediction`` in [0, 1] and a
binary outcome ``y = (label grade >= min_label)``; a run row with no label row
has grade 0, so it is a negative. All four metrics are **population-level**:
they pool the rows of all evaluated requests (impressions), and their
statistics are kept per request so that bootstrap intervals resample
requests, never rows.

* ``brier``   = sum over rows of (p - y)^2 / rows; per-request statistics
  ``[sum (p - y)^2, rows]``.
* ``logloss`` = sum over rows of -(y log p + (1 - y) log(1 - p)) / rows, with
  ``p`` and ``1 - p`` clipped to ``[eps, 1 - eps]``, ``eps`` the float64 machine
  epsilon (scikit-learn's ``log_loss`` convention); statistics
  ``[sum of losses, rows]``.
* ``ece``     = sum over bins b of (n_b / N) |mean_p_b - mean_y_b|
  = sum_b |sum_p_b - sum_y_b| / N; statistics per request and bin
  ``[count, sum p, sum y]`` (``3 * bins`` columns).
* ``mce``     = max over non-empty bins of |mean_p_b - mean_y_b|, same statistics.

Binning (``strategy``):

* ``uniform`` (default): bin ``b = min(floor(p * bins), bins - 1)`` computed in
  double precision, i.e. bins ``[b/bins, (b+1)/bins)`` with the last bin closed
  so that ``p = 1`` lands in it.
* ``quantile``: edges are the sample quantiles of p at j / bins, j = 0..bins
  (numpy's default linear interpolation, the rank computed exactly) over all
  evaluated rows, repeated edges are collapsed (so fewer bins may be used; with
  all predictions equal there is exactly one bin), and a row goes to the last
  bin whose lower edge is <= p (the last edge is inclusive). The edges are
  fixed from the full sample; bootstrap replicates reuse them.

The reliability table of ``ece`` / ``mce`` (``MetricStats.extra["reliability"]``)
lists every bin with its count, mean prediction, observed rate and a 95 %
Wilson score interval for the observed rate; :func:`reliability_table` builds
the same table from plain arrays.

numpy, pandas and scipy are imported on first use, so registering these
metrics (which happens when :mod:`receval.metrics.registry` is imported) costs
no heavy import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from receval.metrics.registry import MetricSpec, Param, register

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from receval.metrics.base import EvalContext, MetricStats
    from receval.metrics.registry import Metric

__all__ = ["compute", "reliability_table", "RELIABILITY_LEVEL", "MAX_BINS"]

#: coverage of the Wilson interval in the reliability tables of ``ece`` / ``mce``
RELIABILITY_LEVEL = 0.95

#: largest ``bins`` accepted (the reliability table lists every bin)
MAX_BINS = 100_000

# dense per-request bin statistics up to this many cells (8 bytes each);
# beyond it they are stored as a scipy.sparse CSR matrix
_DENSE_CELLS = 1 << 23
# (unit, bin) cells counted at once when building the sparse statistics
_CHUNK_CELLS = 1 << 16

_MIN_LABEL = Param(
    float,
    1.0,
    exclusive_minimum=0.0,
    doc="a row is a positive iff its label grade >= min_label (rows without a label have grade 0)",
)
_BINS = Param(int, 15, minimum=1, doc="number of bins (quantile: at most this many, repeated edges collapse)")
_STRATEGY = Param(
    str,
    "uniform",
    choices=("uniform", "quantile"),
    doc="equal-width bins on [0, 1], or bins with equal numbers of predictions",
)

register(
    MetricSpec(
        "ece",
        False,
        "none",
        {"bins": _BINS, "strategy": _STRATEGY, "min_label": _MIN_LABEL},
        kind="calibration",
        description="expected calibration error: row-weighted mean over bins of |mean prediction - observed rate|",
    )
)
register(
    MetricSpec(
        "mce",
        False,
        "none",
        {"bins": _BINS, "strategy": _STRATEGY, "min_label": _MIN_LABEL},
        kind="calibration",
        description="maximum calibration error: largest |mean prediction - observed rate| over non-empty bins",
    )
)
register(
    MetricSpec(
        "brier",
        False,
        "none",
        {"min_label": _MIN_LABEL},
        kind="calibration",
        description="Brier score: mean squared error of the prediction, pooled over rows",
        aliases=("brier_score",),
    )
)
register(
    MetricSpec(
        "logloss",
        False,
        "none",
        {"min_label": _MIN_LABEL},
        kind="calibration",
        description="log loss (cross-entropy) of the prediction, pooled over rows, clipped to [eps, 1-eps]",
        aliases=("log_loss",),
    )
)


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------


def _check_prediction(p: np.ndarray, frame: str = "run", column: str = "prediction") -> None:
    """Raise InputError unless every prediction lies in [0, 1] (NaN does not)."""
    import numpy as np

    from receval.errors import InputError, Violation

    bad = ~((p >= 0.0) & (p <= 1.0))  # NaN fails both comparisons
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        examples = tuple(f"value {float(v)!r}" for v in p[np.flatnonzero(bad)[:5]])
        raise InputError(
            frame,
            [
                Violation(
                    column,
                    "must lie in [0, 1]",
                    n_bad,
                    examples,
                    "calibration metrics need predicted probabilities: map raw scores to [0, 1] "
                    "(e.g. a sigmoid) and drop or fill NaN before evaluating",
                )
            ],
        )


# ---------------------------------------------------------------------------
# binning
# ---------------------------------------------------------------------------


def _quantile_ranks(n: int, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, frac)``: the quantile at j / bins of n sorted values lies between the
    values of 0-based ranks ``lo[j]`` and ``hi[j]``, ``frac[j]`` of the way.

    The rank ``(n - 1) j / bins`` is split into integer and fractional parts
    exactly (integer arithmetic). Shared by the in-memory path and the Spark
    engine (which finds the order statistics ``lo`` / ``hi`` by rank), so both
    run the same float operations.
    """
    import numpy as np

    num = (n - 1) * np.arange(bins + 1, dtype=np.int64)
    lo = num // bins
    frac = (num - lo * bins) / bins
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, frac


def _interpolate(a: np.ndarray, b: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Linear interpolation between the order statistics ``a`` (rank lo) and ``b`` (rank hi)."""
    import numpy as np

    return np.clip(a + frac * (b - a), a, b)


def _quantiles(p: np.ndarray, bins: int) -> np.ndarray:
    """Sample quantiles of ``p`` at j / bins, j = 0..bins (numpy's default "linear" method).

    The rank is computed exactly (:func:`_quantile_ranks`), so a quantile that
    falls on a rank is exactly that prediction; ``np.quantile`` can be one ulp
    off there, which would move a prediction equal to the edge into the bin below.
    """
    import numpy as np

    lo, hi, frac = _quantile_ranks(len(p), bins)
    part = np.partition(p, np.unique(np.concatenate([lo, hi])))
    return _interpolate(part[lo], part[hi], frac)


def _collapse(edges: np.ndarray) -> np.ndarray:
    """Quantile edges sorted, repeated edges collapsed; all equal: one bin ``[e, e]``."""
    import numpy as np

    edges = np.unique(np.maximum.accumulate(edges))
    if len(edges) == 1:
        return np.array([edges[0], edges[0]])
    return edges


def _assign(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of every prediction for sorted quantile edges: the number of interior
    edges <= p (the last edge is inclusive); predictions outside the edges go to
    the first / last bin."""
    import numpy as np

    n_bins = len(edges) - 1
    if n_bins <= 32:  # a few vectorised comparisons beat a binary search per row
        b16 = np.zeros(len(p), dtype=np.int16)
        for edge in edges[1:-1]:
            b16 += p >= edge
        return b16.astype(np.int64)
    b = np.searchsorted(edges, p, side="right") - 1
    np.clip(b, 0, n_bins - 1, out=b)
    return b


def _edges_and_bins(
    p: np.ndarray, bins: int, strategy: str, edges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges (n_bins + 1) and the bin index of every prediction.

    ``edges``: quantile edges fixed beforehand (the chunked engines compute
    them over all evaluated rows before scoring a chunk).
    """
    import numpy as np

    if strategy == "uniform":
        b = np.floor(p * bins).astype(np.int64)
        np.minimum(b, bins - 1, out=b)
        return np.arange(bins + 1, dtype=np.float64) / bins, b
    if strategy != "quantile":  # pragma: no cover - the registry checks choices
        raise ValueError(f"unknown binning strategy {strategy!r}")
    if edges is None:
        if len(p) == 0:
            return np.array([0.0, 1.0]), np.zeros(0, dtype=np.int64)
        edges = _collapse(_quantiles(p, bins))
    edges = np.asarray(edges, dtype=np.float64)
    return edges, _assign(p, edges)


def _unit_bin_stats(unit: np.ndarray, b: np.ndarray, p: np.ndarray, y: np.ndarray, n_units: int, n_bins: int):
    """Per-unit bin statistics: column ``3 * bin + j`` holds, for j = 0, 1, 2,
    the bin's row count, sum of predictions and sum of outcomes.

    Dense while ``n_units * 3 * n_bins`` is small, else a CSR matrix holding
    only the occupied (unit, bin) cells, counted chunk of units by chunk of
    units so no array of ``n_units * n_bins`` cells is ever allocated.
    """
    import numpy as np

    size = n_units * n_bins
    if 3 * size <= _DENSE_CELLS:
        key = unit * n_bins + b
        out = np.empty((size, 3), dtype=np.float64)
        out[:, 0] = np.bincount(key, minlength=size)
        out[:, 1] = np.bincount(key, weights=p, minlength=size)
        out[:, 2] = np.bincount(key, weights=y, minlength=size)
        return out.reshape(n_units, 3 * n_bins)

    import scipy.sparse as sparse

    if len(unit) > 1 and not bool(np.all(unit[1:] >= unit[:-1])):
        order = np.argsort(unit, kind="stable")
        unit, b, p, y = unit[order], b[order], p[order], y[order]
    step = max(1, _CHUNK_CELLS // n_bins)  # units per chunk
    bounds = np.searchsorted(unit, np.arange(0, n_units + step, step))
    idx_dtype = np.int32 if 3 * len(unit) < 2**31 - 1 else np.int64
    triple = np.arange(3, dtype=idx_dtype)
    per_unit, indices, values = [], [], []
    for i in range(len(bounds) - 1):
        r0, r1 = int(bounds[i]), int(bounds[i + 1])
        u0 = i * step
        chunk_units = min(step, n_units - u0)
        if r0 == r1:
            per_unit.append(np.zeros(chunk_units, dtype=np.int64))
            continue
        key = (unit[r0:r1] - u0) * n_bins + b[r0:r1]
        cells_size = chunk_units * n_bins
        cnt = np.bincount(key, minlength=cells_size)
        cells = np.flatnonzero(cnt)  # sorted: by unit, then bin
        rows = cells // n_bins
        per_unit.append(np.bincount(rows, minlength=chunk_units))
        indices.append((3 * (cells - rows * n_bins)).astype(idx_dtype)[:, None] + triple)
        v = np.empty((len(cells), 3), dtype=np.float64)
        v[:, 0] = cnt[cells]
        v[:, 1] = np.bincount(key, weights=p[r0:r1], minlength=cells_size)[cells]
        v[:, 2] = np.bincount(key, weights=y[r0:r1], minlength=cells_size)[cells]
        values.append(v)
    # each unit's cells are contiguous and in bin order, three entries per cell
    indptr = np.zeros(n_units + 1, dtype=idx_dtype)
    np.cumsum(3 * np.concatenate(per_unit), out=indptr[1:])
    data = np.concatenate(values).ravel() if values else np.zeros(0)
    cols = np.concatenate(indices).ravel() if indices else np.zeros(0, dtype=idx_dtype)
    return sparse.csr_matrix((data, cols, indptr), shape=(n_units, 3 * n_bins))


def _split(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum p, sum y) from interleaved column sums."""
    return sums[:, 0::3], sums[:, 1::3], sums[:, 2::3]


def _ece_finish(n_bins: int):
    import numpy as np

    def finish(sums: np.ndarray) -> np.ndarray:
        n, sp, sy = _split(np.asarray(sums, dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            # sum_b (n_b / N) |sp_b / n_b - sy_b / n_b| = sum_b |sp_b - sy_b| / N
            return np.abs(sp - sy).sum(axis=1) / n.sum(axis=1)

    return finish


def _mce_finish(n_bins: int):
    import numpy as np

    def finish(sums: np.ndarray) -> np.ndarray:
        n, sp, sy = _split(np.asarray(sums, dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.where(n > 0, np.abs(sp - sy) / n, -np.inf)
        out = gap.max(axis=1) if n_bins else np.full(len(n), -np.inf)
        return np.where(np.isneginf(out), np.nan, out)

    return finish


def _ratio(sums: np.ndarray) -> np.ndarray:
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


# ---------------------------------------------------------------------------
# reliability table
# ---------------------------------------------------------------------------


def _wilson(successes: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion (NaN where n = 0)."""
    from statistics import NormalDist

    import numpy as np

    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    z2 = z * z
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = successes / n
        denom = 1.0 + z2 / n
        centre = (phat + z2 / (2.0 * n)) / denom
        half = z * np.sqrt(phat * (1.0 - phat) / n + z2 / (4.0 * n * n)) / denom
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def _table_rows(edges: np.ndarray, n: np.ndarray, sp: np.ndarray, sy: np.ndarray, level: float) -> list[dict[str, Any]]:
    low, high = _wilson(sy, n, level)
    rows = []
    for j in range(len(n)):
        count = n[j]
        filled = count > 0
        rows.append(
            {
                "bin": j,
                "lower": float(edges[j]),
                "upper": float(edges[j + 1]),
                "count": int(round(count)),
                "mean_predicted": float(sp[j] / count) if filled else None,
                "observed_rate": float(sy[j] / count) if filled else None,
                "ci_low": float(low[j]) if filled else None,
                "ci_high": float(high[j]) if filled else None,
            }
        )
    return rows


def reliability_table(
    prediction: Any,
    label: Any,
    *,
    bins: int = 15,
    strategy: str = "uniform",
    level: float = 0.95,
    min_label: float = 1.0,
) -> pd.DataFrame:
    """Reliability table of predicted probabilities against binary outcomes.

    Parameters
    ----------
    prediction : array-like of probabilities in [0, 1] (NaN is an error)
    label : array-like of outcomes; a row is positive iff ``label >= min_label``
        (0/1 or booleans work as they are)
    bins, strategy : binning, as for the ``ece`` metric (``"uniform"`` or ``"quantile"``)
    level : coverage of the Wilson score interval of the observed rate

    Returns
    -------
    pandas.DataFrame with one row per bin: ``bin, lower, upper, count,
    mean_predicted, observed_rate, ci_low, ci_high``. Empty bins have count 0
    and NaN rates and bounds.

    Examples
    --------
    >>> t = reliability_table([0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1], bins=2)
    >>> t[["count", "mean_predicted", "observed_rate"]].to_numpy().tolist()
    [[2.0, 0.15000000000000002, 0.5], [2.0, 0.8500000000000001, 1.0]]
    """
    import numpy as np
    import pandas as pd

    from receval.errors import UsageError

    p = np.asarray(prediction, dtype=np.float64).ravel()
    lab = np.asarray(label, dtype=np.float64).ravel()
    if len(p) != len(lab):
        raise UsageError(f"prediction and label must have the same length, got {len(p)} and {len(lab)}")
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 1 <= bins <= MAX_BINS:
        raise UsageError(f"bins must be an integer in [1, {MAX_BINS}], got {bins!r}")
    if strategy not in ("uniform", "quantile"):
        raise UsageError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    if not 0 < level < 1:
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    if not min_label > 0:
        raise UsageError(f"min_label must be > 0, got {min_label!r}")
    _check_prediction(p, frame="prediction")
    y = (lab >= min_label).astype(np.float64)
    edges, b = _edges_and_bins(p, int(bins), strategy)
    n_bins = len(edges) - 1
    n = np.bincount(b, minlength=n_bins).astype(np.float64)
    sp = np.bincount(b, weights=p, minlength=n_bins)
    sy = np.bincount(b, weights=y, minlength=n_bins)
    frame = pd.DataFrame(_table_rows(edges, n, sp, sy, level))
    for c in ("mean_predicted", "observed_rate", "ci_low", "ci_high"):
        frame[c] = frame[c].astype(np.float64)
    frame["count"] = frame["count"].astype(np.int64)
    return frame


# ---------------------------------------------------------------------------
# the family entry point
# ---------------------------------------------------------------------------


def compute(
    metrics: list[Metric], ctx: EvalContext, quantile_edges: dict[int, Any] | None = None
) -> dict[Metric, MetricStats]:
    """Per-request sufficient statistics of the calibration ``metrics``.

    ``quantile_edges``: bins -> the (collapsed) quantile edges to use instead
    of the quantiles of ``ctx``'s predictions (the chunked engines compute them
    over every evaluated row before scoring a chunk of requests).

    Raises :class:`~receval.errors.InputError` naming ``prediction`` when a
    prediction is missing, NaN or outside [0, 1].
    """
    import numpy as np

    from receval.errors import InputError, UsageError, Violation
    from receval.metrics.base import MetricStats

    if ctx.row_prediction is None:
        raise InputError(
            "run",
            [Violation("prediction", "required column is missing", len(ctx.row_unit), (),
                       "calibration metrics need a predicted probability per row")],
        )
    p = np.asarray(ctx.row_prediction, dtype=np.float64)
    _check_prediction(p)
    grade = np.zeros(len(p)) if ctx.row_grade is None else np.asarray(ctx.row_grade, dtype=np.float64)
    unit = np.asarray(ctx.row_unit, dtype=np.int64)
    n_units = int(ctx.n_units)
    n_rows = len(p)

    ys: dict[float, np.ndarray] = {}
    positives: dict[float, np.ndarray] = {}
    cache: dict[str, np.ndarray] = {}
    edged: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    binned: dict[tuple[int, str, float], tuple[Any, np.ndarray, int]] = {}
    out: dict[Metric, MetricStats] = {}

    def positive(min_label: float) -> np.ndarray:
        if min_label not in positives:
            positives[min_label] = grade >= min_label
        return positives[min_label]

    def outcome(min_label: float) -> np.ndarray:
        if min_label not in ys:
            ys[min_label] = positive(min_label).astype(np.float64)
        return ys[min_label]

    def rows_per_unit() -> np.ndarray:
        if "rows" not in cache:
            cache["rows"] = np.bincount(unit, minlength=n_units).astype(np.float64)
        return cache["rows"]

    for m in metrics:
        min_label = float(m.param("min_label"))
        y = outcome(min_label)
        if m.name in ("brier", "logloss"):
            if m.name == "brier":
                loss = p - y
                loss *= loss
            else:
                eps = np.finfo(np.float64).eps
                # clip the probability given to the observed outcome, as sklearn clips [1 - p, p]
                loss = 1.0 - p
                np.copyto(loss, p, where=positive(min_label))
                np.clip(loss, eps, 1.0 - eps, out=loss)
                np.log(loss, out=loss)
                np.negative(loss, out=loss)
            stats = np.column_stack([np.bincount(unit, weights=loss, minlength=n_units), rows_per_unit()])
            out[m] = MetricStats(
                stats, _ratio, per_unit=None, scope="population",
                extra={"n_rows": n_rows, "n_positive": int(np.count_nonzero(positive(min_label))), "pooled": "rows (impressions); intervals resample requests"},
            )
            continue
        if m.name not in ("ece", "mce"):  # pragma: no cover - registry and module out of sync
            raise KeyError(f"no calibration kernel for {m}")
        bins, strategy = int(m.param("bins")), str(m.param("strategy"))
        if bins > MAX_BINS:
            raise UsageError(f"{m}: at most {MAX_BINS} bins are supported, got {bins}")
        key = (bins, strategy, min_label)
        if key not in binned:
            if (bins, strategy) not in edged:
                fixed = quantile_edges.get(bins) if quantile_edges and strategy == "quantile" else None
                edged[bins, strategy] = _edges_and_bins(p, bins, strategy, fixed)
            edges, b = edged[bins, strategy]
            n_bins = len(edges) - 1
            binned[key] = (_unit_bin_stats(unit, b, p, y, n_units, n_bins), edges, n_bins)
        stats, edges, n_bins = binned[key]
        n, sp, sy = (x[0] for x in _split(np.asarray(stats.sum(axis=0), dtype=np.float64).reshape(1, -1)))
        extra = {
            "reliability": _table_rows(edges, n, sp, sy, RELIABILITY_LEVEL),
            "reliability_level": RELIABILITY_LEVEL,
            "strategy": strategy,
            "bins_requested": bins,
            "bins": n_bins,
            "nonempty_bins": int(np.count_nonzero(n)),
            "edges": [float(e) for e in edges],
            "n_rows": n_rows,
            "n_positive": int(np.count_nonzero(positive(min_label))),
        }
        finish = _ece_finish(n_bins) if m.name == "ece" else _mce_finish(n_bins)
        out[m] = MetricStats(stats, finish, per_unit=None, scope="population", extra=extra, recentre=True)
    return out
