"""Drift and parity audits.

* :func:`psi` — population stability index between a baseline and a current
  sample (numeric: bins from the baseline; categorical: categories as bins);
* :func:`ks_distance` — two-sample Kolmogorov-Smirnov statistic and p-value;
* :func:`drift_audit` — both, per declared column of two frames, with missing
  rates and a conventional stability flag;
* :func:`parity_audit` — offline/online parity: skew between offline re-scored
  and logged scores, and top-k overlap between offline and logged rankings.

Conventions (see docs/audits.md, section "Drift and parity"):

* PSI = sum_i (c_i - b_i) * ln(c_i / b_i), with b_i, c_i the baseline and
  current shares of bin i, each floored at ``epsilon`` (no renormalisation);
* numeric bins come from the baseline only: quantile edges (numpy's linear
  quantiles, repeated edges collapsed) or equal-width edges over the baseline
  range; values outside the baseline range fall into the end bins;
* categorical bins are the baseline categories, plus one bin per category seen
  only in the current sample (baseline share 0, floored at ``epsilon``);
* missing values (null, and NaN in float columns) are counted and reported,
  then excluded from PSI and KS; the standalone functions refuse them;
* stability flags: PSI < 0.1 "stable", 0.1 <= PSI <= 0.25 "moderate",
  PSI > 0.25 "significant" — an industry convention, not a statistical test;
* rankings use receval's order: score descending, ties by item id descending
  in byte order (integer ids compare by their decimal text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from receval.data.readers import to_polars
from receval.errors import InputError, UsageError, Violation

__all__ = [
    "psi",
    "ks_distance",
    "KSResult",
    "drift_audit",
    "DriftAudit",
    "ColumnDrift",
    "parity_audit",
    "ParityAudit",
    "psi_flag",
]

Strategy = Literal["quantile", "uniform"]
Kind = Literal["auto", "numeric", "categorical"]

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25


def _clean(x: Any) -> Any:
    if isinstance(x, np.floating | np.integer | np.bool_):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def psi_flag(value: float) -> str:
    """Conventional reading of a PSI value (a rule of thumb, not a test)."""
    if value < PSI_MODERATE:
        return "stable"
    if value <= PSI_SIGNIFICANT:
        return "moderate"
    return "significant"


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def _as_series(values: Any, name: str) -> pl.Series:
    if isinstance(values, pl.Series):
        return values.rename(name)
    module = type(values).__module__.split(".")[0]
    if module == "pandas":
        return pl.from_pandas(values).rename(name)
    if module == "pyarrow":
        return pl.Series(name, pl.from_arrow(values))
    if isinstance(values, np.ndarray):
        return pl.Series(name, values)
    try:
        return pl.Series(name, list(values))
    except TypeError:
        raise UsageError(
            f"{name}: expected a 1-D array-like of values, got {type(values).__name__}"
        ) from None


def _is_numeric(s: pl.Series) -> bool:
    return s.dtype.is_numeric()


def _missing_mask(s: pl.Series) -> pl.Series:
    mask = s.is_null()
    if s.dtype.is_float():
        mask = mask | s.is_nan().fill_null(False)
    return mask


def _examples(s: pl.Series, mask: pl.Series) -> tuple[str, ...]:
    rows = np.flatnonzero(mask.to_numpy())[:3]
    return tuple(f"row {int(r)}: {s[int(r)]!r}" for r in rows)


def _numeric_values(s: pl.Series, label: str, column: str) -> np.ndarray:
    """Float64 values of a numeric series; refuses missing and infinite values."""
    missing = _missing_mask(s)
    if missing.any():
        raise InputError(
            label,
            [
                Violation(
                    column,
                    "must not be null or NaN",
                    int(missing.sum()),
                    _examples(s, missing),
                    "drop missing values first, or use drift_audit, which counts and excludes them",
                )
            ],
        )
    x = s.cast(pl.Float64).to_numpy()
    bad = ~np.isfinite(x)
    if bad.any():
        raise InputError(
            label,
            [
                Violation(
                    column,
                    "must be finite",
                    int(bad.sum()),
                    tuple(f"row {int(r)}: {x[r]!r}" for r in np.flatnonzero(bad)[:3]),
                    "clip or drop infinite values before a drift audit",
                )
            ],
        )
    return x


def _require_nonempty(n: int, label: str, column: str) -> None:
    if n == 0:
        raise UsageError(
            f"{label}: column {column!r} has no non-missing values; PSI and KS need at least one"
        )


# ---------------------------------------------------------------------------
# PSI
# ---------------------------------------------------------------------------


def _psi_from_counts(b_counts: np.ndarray, c_counts: np.ndarray, epsilon: float) -> float:
    b = np.maximum(b_counts / b_counts.sum(), epsilon)
    c = np.maximum(c_counts / c_counts.sum(), epsilon)
    return float(np.sum((c - b) * np.log(c / b)))


def _numeric_edges(b: np.ndarray, bins: int, strategy: str, column: str) -> np.ndarray:
    """Interior edges from the baseline; bin i is [e_{i-1}, e_i), end bins are open."""
    if strategy == "quantile":
        edges = np.unique(np.quantile(b, np.linspace(0.0, 1.0, bins + 1)))
    elif strategy == "uniform":
        lo, hi = float(b.min()), float(b.max())
        edges = np.unique(np.linspace(lo, hi, bins + 1)) if hi > lo else np.array([lo])
    else:
        raise UsageError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    if len(edges) < 2:
        raise UsageError(
            f"column {column!r}: the baseline holds a single value ({edges[0]!r}), so numeric binning has "
            "one bin and PSI would be 0 whatever the current sample; treat the column as categorical"
        )
    return edges[1:-1]


def _check_bins(bins: int, epsilon: float) -> None:
    if not isinstance(bins, int | np.integer) or isinstance(bins, bool) or bins < 1:
        raise UsageError(f"bins must be a positive integer, got {bins!r}")
    if not (isinstance(epsilon, int | float) and 0 < epsilon < 1):
        raise UsageError(f"epsilon must be a number in (0, 1), got {epsilon!r}")


def _numeric_psi(
    b: np.ndarray, c: np.ndarray, bins: int, strategy: str, epsilon: float, column: str
) -> tuple[float, int]:
    interior = _numeric_edges(b, bins, strategy, column)
    n_bins = len(interior) + 1
    b_counts = np.bincount(np.searchsorted(interior, b, side="right"), minlength=n_bins)
    c_counts = np.bincount(np.searchsorted(interior, c, side="right"), minlength=n_bins)
    return _psi_from_counts(b_counts, c_counts, epsilon), n_bins


@dataclass(frozen=True)
class _CategoricalPSI:
    psi: float
    n_bins: int
    n_unseen_categories: int
    n_unseen_rows: int


def _categorical_psi(b: pl.Series, c: pl.Series, epsilon: float) -> _CategoricalPSI:
    return _categorical_psi_counts(
        b.rename("v").value_counts(name="b"), c.rename("v").value_counts(name="c"), epsilon
    )


def _categorical_psi_counts(bc: pl.DataFrame, cc: pl.DataFrame, epsilon: float) -> _CategoricalPSI:
    """PSI from per-category counts ``(v, b)`` and ``(v, c)`` (the Spark engine passes its groupBy counts).

    Categories of different types on the two sides are compared as text. The
    bins are summed in category order, so the value does not depend on the
    order in which the counts arrive (a hash order, locally and on Spark).
    """
    if bc.schema["v"] != cc.schema["v"]:
        bc = bc.group_by(pl.col("v").cast(pl.String)).agg(pl.col("b").sum())
        cc = cc.group_by(pl.col("v").cast(pl.String)).agg(pl.col("c").sum())
    joined = (
        bc.join(cc, on="v", how="full", coalesce=True)
        .with_columns(pl.col("b").fill_null(0), pl.col("c").fill_null(0))
        .sort("v")
    )
    unseen = joined.filter(pl.col("b") == 0)
    value = _psi_from_counts(
        joined["b"].to_numpy().astype(float), joined["c"].to_numpy().astype(float), epsilon
    )
    return _CategoricalPSI(value, joined.height, unseen.height, int(unseen["c"].sum()))


def psi(
    baseline: Any,
    current: Any,
    *,
    bins: int = 10,
    strategy: Strategy = "quantile",
    epsilon: float = 1e-4,
    kind: Kind = "auto",
) -> float:
    """Population stability index of ``current`` against ``baseline``.

    ``kind="auto"`` bins numeric arrays (bools excepted) and treats everything
    else as categories. Numeric bins come from the baseline: ``bins`` quantile
    edges (repeated edges collapsed) or ``bins`` equal-width edges over the
    baseline range (``strategy="uniform"``); values outside that range go to
    the end bins. Categorical: one bin per baseline category plus one per
    category seen only in ``current``. Shares are floored at ``epsilon``.
    Missing values are refused (use :func:`drift_audit` to count and exclude
    them).
    """
    _check_bins(bins, epsilon)
    b, c = _as_series(baseline, "baseline"), _as_series(current, "current")
    for s, label in ((b, "baseline"), (c, "current")):
        _require_nonempty(len(s), label, "values")
    numeric = _resolve_kind(kind, b, c, "values")
    if numeric:
        bx = _numeric_values(b, "baseline", "values")
        cx = _numeric_values(c, "current", "values")
        return _numeric_psi(bx, cx, bins, strategy, epsilon, "values")[0]
    for s, label in ((b, "baseline"), (c, "current")):
        missing = _missing_mask(s)
        if missing.any():
            raise InputError(
                label,
                [
                    Violation(
                        "values",
                        "must not be null",
                        int(missing.sum()),
                        _examples(s, missing),
                        "drop missing values first, or use drift_audit, which counts and excludes them",
                    )
                ],
            )
    return _categorical_psi(b, c, epsilon).psi


def _resolve_kind(kind: str, b: pl.Series, c: pl.Series, column: str) -> bool:
    if kind not in ("auto", "numeric", "categorical"):
        raise UsageError(f"kind must be 'auto', 'numeric' or 'categorical', got {kind!r}")
    if kind == "categorical":
        return False
    both_numeric = _is_numeric(b) and _is_numeric(c)
    if kind == "numeric" and not both_numeric:
        raise UsageError(
            f"column {column!r}: numeric PSI/KS needs numeric values on both sides, "
            f"got {b.dtype} (baseline) and {c.dtype} (current)"
        )
    if kind == "auto" and _is_numeric(b) != _is_numeric(c):
        raise UsageError(
            f"column {column!r}: baseline is {b.dtype} but current is {c.dtype}; "
            "cast one side, or declare the column categorical"
        )
    return both_numeric


# ---------------------------------------------------------------------------
# KS
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KSResult:
    """Two-sample Kolmogorov-Smirnov distance D = sup |F_b - F_c| and its p-value."""

    statistic: float
    pvalue: float

    def __iter__(self):
        return iter((self.statistic, self.pvalue))


def _ks_statistic(b: np.ndarray, c: np.ndarray) -> float:
    b, c = np.sort(b), np.sort(c)
    grid = np.concatenate([b, c])
    fb = np.searchsorted(b, grid, side="right") / len(b)
    fc = np.searchsorted(c, grid, side="right") / len(c)
    return float(np.max(np.abs(fb - fc)))


def _ks(b: np.ndarray, c: np.ndarray) -> KSResult:
    from scipy.stats import ks_2samp

    d = _ks_statistic(b, c)
    # the p-value is scipy's (exact or asymptotic as scipy chooses, two-sided); when
    # the exact computation fails (heavy ties, e.g. constant samples) scipy falls
    # back to the asymptotic one itself and warns: that fallback is what we want
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful", category=RuntimeWarning)
        p = float(ks_2samp(b, c).pvalue)
    return KSResult(d, p)


def ks_distance(baseline: Any, current: Any) -> KSResult:
    """Two-sample KS statistic and two-sided p-value (as ``scipy.stats.ks_2samp``).

    D is computed here from the empirical CDFs on the pooled sample; the
    p-value is scipy's (exact for small samples, asymptotic otherwise, as
    scipy's ``method="auto"`` chooses). Missing values are refused.
    """
    b, c = _as_series(baseline, "baseline"), _as_series(current, "current")
    for s, label in ((b, "baseline"), (c, "current")):
        _require_nonempty(len(s), label, "values")
        if not _is_numeric(s):
            raise UsageError(f"{label}: KS needs numeric values, got {s.dtype}")
    return _ks(_numeric_values(b, "baseline", "values"), _numeric_values(c, "current", "values"))


# ---------------------------------------------------------------------------
# drift audit
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column. ``ks_*`` are None for categorical columns."""

    column: str
    kind: str
    n_baseline: int
    n_current: int
    missing_baseline: int
    missing_current: int
    missing_rate_baseline: float
    missing_rate_current: float
    n_bins: int
    psi: float
    flag: str
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    n_unseen_categories: int | None = None
    n_unseen_rows: int | None = None


@dataclass
class DriftAudit:
    """What :func:`drift_audit` returns: one :class:`ColumnDrift` per column."""

    columns: list[ColumnDrift]
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(c) for c in self.columns])

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [{k: _clean(v) for k, v in asdict(c).items()} for c in self.columns],
            "settings": dict(self.settings),
        }


def drift_audit(
    baseline: Any,
    current: Any,
    columns: Sequence[str],
    *,
    bins: int = 10,
    strategy: Strategy = "quantile",
    epsilon: float = 1e-4,
    categorical: Sequence[str] = (),
    engine: str = "auto",
) -> DriftAudit:
    """PSI (and KS for numeric columns) of each declared column, current vs baseline.

    ``baseline`` / ``current``: pandas, polars or pyarrow frames, or file
    paths; or PySpark DataFrames (``engine="auto"``), or paths read by Spark
    (``engine="spark"``): then only aggregates are computed on Spark and the
    result equals the local one (:mod:`receval.engines.spark_drift`).
    Numeric columns (bools excepted) are binned unless listed in
    ``categorical``. Missing values (null; NaN in float columns) are counted
    per column and side, reported as missing rates, and excluded from PSI/KS.
    """
    from receval.engines.spark_audits import audit_engine

    _check_bins(bins, epsilon)
    if isinstance(columns, str) or not columns:
        raise UsageError("columns: pass a non-empty list of column names to audit")
    columns = list(columns)
    unknown = sorted(set(categorical) - set(columns))
    if unknown:
        raise UsageError(f"categorical: {unknown} are not among the audited columns {columns}")
    settings = {
        "bins": int(bins),
        "strategy": strategy,
        "epsilon": float(epsilon),
        "thresholds": {"moderate": PSI_MODERATE, "significant": PSI_SIGNIFICANT},
    }
    if audit_engine(engine, baseline, current, audit="drift_audit") == "spark":
        from receval.engines.spark_drift import drift_audit_spark

        return DriftAudit(drift_audit_spark(baseline, current, columns, bins=bins, strategy=strategy,
                                            epsilon=epsilon, categorical=categorical), settings)
    b_frame = to_polars(baseline, kind="baseline", columns=columns)
    c_frame = to_polars(current, kind="current", columns=columns)
    for frame, label in ((b_frame, "baseline"), (c_frame, "current")):
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise absent_columns_error(label, absent, frame.height, frame.columns)
    results = []
    for col in columns:
        b_all, c_all = b_frame[col], c_frame[col]
        b_miss, c_miss = _missing_mask(b_all), _missing_mask(c_all)
        b, c = b_all.filter(~b_miss), c_all.filter(~c_miss)
        _require_nonempty(len(b), "baseline", col)
        _require_nonempty(len(c), "current", col)
        numeric = _resolve_kind("categorical" if col in categorical else "auto", b, c, col)
        common = dict(
            column=col,
            n_baseline=len(b_all),
            n_current=len(c_all),
            missing_baseline=int(b_miss.sum()),
            missing_current=int(c_miss.sum()),
            missing_rate_baseline=float(b_miss.mean()),
            missing_rate_current=float(c_miss.mean()),
        )
        if numeric:
            bx = _numeric_values(b, "baseline", col)
            cx = _numeric_values(c, "current", col)
            value, n_bins = _numeric_psi(bx, cx, bins, strategy, epsilon, col)
            ks = _ks(bx, cx)
            results.append(
                ColumnDrift(
                    kind="numeric",
                    n_bins=n_bins,
                    psi=value,
                    flag=psi_flag(value),
                    ks_statistic=ks.statistic,
                    ks_pvalue=ks.pvalue,
                    **common,
                )
            )
        else:
            cat = _categorical_psi(b, c, epsilon)
            results.append(
                ColumnDrift(
                    kind="categorical",
                    n_bins=cat.n_bins,
                    psi=cat.psi,
                    flag=psi_flag(cat.psi),
                    n_unseen_categories=cat.n_unseen_categories,
                    n_unseen_rows=cat.n_unseen_rows,
                    **common,
                )
            )
    return DriftAudit(results, settings)


# ---------------------------------------------------------------------------
# offline / online parity
# ---------------------------------------------------------------------------


@dataclass
class ParityAudit:
    """What :func:`parity_audit` returns.

    Score skew is over (request, item) pairs present on both sides, with
    ``diff = logged - offline``; ``topk_overlap`` is the mean over shared
    requests of |top-k offline ∩ top-k logged| / min(k, max(n_offline, n_logged)).
    ``per_request`` holds one row per shared request.
    """

    k: int
    n_requests_both: int
    n_requests_only_offline: int
    n_requests_only_logged: int
    n_pairs_both: int
    n_pairs_only_offline: int
    n_pairs_only_logged: int
    mean_diff: float | None
    mean_abs_diff: float | None
    max_abs_diff: float | None
    correlation: float | None
    share_diff: float | None
    topk_overlap: float | None
    n_requests_short: int
    tolerance: float
    logged_order: str
    per_request: pl.DataFrame = field(repr=False)

    def _summary(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items() if k != "per_request"}

    def to_dict(self) -> dict[str, Any]:
        return self._summary()

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([self._summary()])


def absent_columns_error(label: str, absent: list[str], n_rows: int, present: list[str]) -> InputError:
    """The error for input ``label`` lacking the columns ``absent`` (one violation each, with the rows
    and the columns it has)."""
    return InputError(label, [Violation(c, "column must be present", n_rows, (), f"columns present: {list(present)}")
                              for c in absent])


def _parity_frame(obj: Any, label: str, need_position: bool | None) -> pl.DataFrame:
    wanted = ["request_id", "item_id", "score"] + (
        ["position"] if need_position is not False else []
    )
    frame = to_polars(obj, kind=label, columns=None)
    required = ["request_id", "item_id", "score"]
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise absent_columns_error(label, absent, frame.height, frame.columns)
    frame = frame.select([c for c in wanted if c in frame.columns])
    violations = []
    for c in ("request_id", "item_id"):
        nulls = frame[c].is_null()
        if nulls.any():
            violations.append(
                Violation(c, "must not be null", int(nulls.sum()), _examples(frame[c], nulls))
            )
    score = frame["score"]
    if not score.dtype.is_numeric():
        violations.append(Violation("score", f"must be numeric, got {score.dtype}", frame.height))
    else:
        x = score.cast(pl.Float64)
        bad = x.is_null() | ~x.is_finite().fill_null(False)
        if bad.any():
            violations.append(
                Violation("score", "must be a finite number", int(bad.sum()), _examples(score, bad))
            )
    if "position" in frame.columns:
        pos = frame["position"]
        if not pos.dtype.is_integer():
            violations.append(
                Violation("position", f"must be an integer, got {pos.dtype}", frame.height)
            )
        elif pos.is_null().any():
            nulls = pos.is_null()
            violations.append(
                Violation("position", "must not be null", int(nulls.sum()), _examples(pos, nulls))
            )
        else:
            dup = frame.select(~pl.struct("request_id", "position").is_first_distinct()).to_series()
            if dup.any():
                violations.append(
                    Violation(
                        "request_id, position",
                        "each position must appear once per request",
                        int(dup.sum()),
                        _examples(frame["position"], dup),
                        "deduplicate impressions before the audit",
                    )
                )
    if not violations:
        dup = frame.select(~pl.struct("request_id", "item_id").is_first_distinct()).to_series()
        if dup.any():
            violations.append(
                Violation(
                    "request_id, item_id",
                    "each (request, item) pair must appear once",
                    int(dup.sum()),
                    _examples(frame["item_id"], dup),
                    "keep one row per pair before the audit",
                )
            )
    if violations:
        raise InputError(label, violations)
    return frame.with_columns(pl.col("score").cast(pl.Float64))


def _harmonise_ids(a: pl.DataFrame, b: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    for col in ("request_id", "item_id"):
        if a.schema[col] != b.schema[col]:
            if a.schema[col].is_integer() and b.schema[col].is_integer():
                a, b = (
                    a.with_columns(pl.col(col).cast(pl.Int64)),
                    b.with_columns(pl.col(col).cast(pl.Int64)),
                )
            else:
                a, b = (
                    a.with_columns(pl.col(col).cast(pl.String)),
                    b.with_columns(pl.col(col).cast(pl.String)),
                )
    return a, b


def _ranked(frame: pl.DataFrame, by_position: bool) -> pl.DataFrame:
    """Add ``rank`` (0-based) within each request in receval's order."""
    tb = pl.col("item_id").cast(pl.String).alias("__tb")
    frame = frame.with_columns(tb)
    if by_position:
        frame = frame.sort(["request_id", "position"])
    else:
        # score descending, ties by item id descending in byte order (ints by decimal text)
        frame = frame.sort(["request_id", "score", "__tb"], descending=[False, True, True])
    return frame.with_columns(pl.int_range(pl.len()).over("request_id").alias("rank")).drop("__tb")


def _scaled(v: np.ndarray) -> np.ndarray:
    top = float(np.abs(v).max()) if len(v) else 0.0
    return v / top if top > 0 and np.isfinite(top) else v


def _finite_mean(v: np.ndarray) -> float | None:
    """Mean of ``v`` without overflow; None (undefined) when a value is infinite."""
    if not np.all(np.isfinite(v)):
        return None
    top = float(np.abs(v).max())
    return float((v / top).mean() * top) if top > 1e300 else float(v.mean())


def parity_audit(offline: Any, logged: Any, *, k: int = 10, tolerance: float = 1e-6) -> ParityAudit:
    """Offline/online parity of scores and rankings.

    ``offline``: frame (request_id, item_id, score) from re-scoring offline;
    ``logged``: frame (request_id, item_id, score[, position]) as served.
    The logged ranking follows ``position`` (ascending) when the column is
    present, else the logged score in receval's order. Requests and pairs on
    one side only are counted, never silently dropped.
    """
    from receval.engines.spark_audits import refuse_spark

    refuse_spark("parity_audit", offline, logged,
                 why="it returns the per-request table as a local frame and has no Spark path yet: the pair join, "
                     "the ranking and the top-k overlap run in memory")
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise UsageError(f"k must be a positive integer, got {k!r}")
    if not (isinstance(tolerance, int | float) and tolerance >= 0):
        raise UsageError(f"tolerance must be a non-negative number, got {tolerance!r}")
    off = _parity_frame(offline, "offline", need_position=False)
    log = _parity_frame(logged, "logged", need_position=None)
    off, log = _harmonise_ids(off, log)
    by_position = "position" in log.columns

    off_req = off.select("request_id").unique()
    log_req = log.select("request_id").unique()
    both_req = off_req.join(log_req, on="request_id", how="semi")
    keys = ["request_id", "item_id"]
    pairs = off.select(*keys, pl.col("score").alias("offline")).join(
        log.select(*keys, pl.col("score").alias("logged")), on=keys, how="inner"
    )
    n_pairs_only_offline = off.join(log, on=keys, how="anti").height
    n_pairs_only_logged = log.join(off, on=keys, how="anti").height

    if pairs.height:
        o, g = pairs["offline"].to_numpy(), pairs["logged"].to_numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            d = g - o  # may overflow to inf for scores near +-1.8e308: reported as None below
        ad = np.abs(d)
        mean_diff, mean_abs, max_abs = _finite_mean(d), _finite_mean(ad), float(ad.max())
        share = float(np.mean(ad > tolerance))
        corr = None
        # correlation of the scaled scores (scaling leaves it unchanged; avoids overflow near 1e308)
        os_, gs = _scaled(o), _scaled(g)
        if len(o) >= 2 and np.all(np.isfinite(os_)) and np.all(np.isfinite(gs)) and np.std(os_) > 0 \
                and np.std(gs) > 0:
            corr = float(np.corrcoef(os_, gs)[0, 1])
    else:
        mean_diff = mean_abs = max_abs = share = corr = None

    off_r = _ranked(off.join(both_req, on="request_id", how="semi"), by_position=False)
    log_r = _ranked(log.join(both_req, on="request_id", how="semi"), by_position=by_position)
    sizes = (
        off_r.group_by("request_id")
        .agg(pl.len().alias("n_offline"))
        .join(log_r.group_by("request_id").agg(pl.len().alias("n_logged")), on="request_id")
    )
    common = (
        off_r.filter(pl.col("rank") < k)
        .select(keys)
        .join(log_r.filter(pl.col("rank") < k).select(keys), on=keys, how="inner")
        .group_by("request_id")
        .agg(pl.len().alias("n_common"))
    )
    per_request = (
        sizes.join(common, on="request_id", how="left")
        .with_columns(pl.col("n_common").fill_null(0).cast(pl.Int64))
        .with_columns(
            (
                pl.col("n_common")
                / pl.min_horizontal(pl.lit(k), pl.max_horizontal("n_offline", "n_logged"))
            ).alias("overlap")
        )
        .sort("request_id")
    )
    n_short = per_request.filter((pl.col("n_offline") < k) | (pl.col("n_logged") < k)).height
    overlap = float(per_request["overlap"].mean()) if per_request.height else None

    return ParityAudit(
        k=int(k),
        n_requests_both=both_req.height,
        n_requests_only_offline=off_req.height - both_req.height,
        n_requests_only_logged=log_req.height - both_req.height,
        n_pairs_both=pairs.height,
        n_pairs_only_offline=n_pairs_only_offline,
        n_pairs_only_logged=n_pairs_only_logged,
        mean_diff=mean_diff,
        mean_abs_diff=mean_abs,
        max_abs_diff=max_abs,
        correlation=corr,
        share_diff=share,
        topk_overlap=overlap,
        n_requests_short=n_short,
        tolerance=float(tolerance),
        logged_order="position" if by_position else "score",
        per_request=per_request,
    )
