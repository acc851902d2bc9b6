"""``drift_audit`` on Spark: only aggregates are computed on the executors.

What runs where (docs/scale.md, "Audits on Spark"; the conventions are the
local ones, :mod:`receval.audits.drift`):

* **Checks** — one aggregation job over both frames: per column and side the
  row count, the missing values (null; NaN in float / double columns), the
  infinite values and the baseline's min / max. Every ``InputError`` /
  ``UsageError`` the local audit raises (missing column, empty or all-missing
  side, numeric vs non-numeric, infinite values, a single-valued numeric
  baseline, a bad strategy) is raised from these numbers, in the local order,
  before any other job.
* **Numeric PSI** — the baseline edges: ``strategy="quantile"`` takes the exact
  numpy linear quantiles from :func:`receval.engines.spark_ope.exact_quantiles`
  (exact order statistics found by rank, never by collecting the column);
  ``"uniform"`` takes the min / max of the checks job. Then one aggregation
  job over both frames counts, for every numeric column, the rows below each
  interior edge; the bin counts are their differences (bin ``i`` is
  ``[e_{i-1}, e_i)``, numpy's ``searchsorted(side="right")``), and the local
  ``_psi_from_counts`` turns them into PSI.
* **Categorical PSI** — one ``groupBy`` per column and side; the (category,
  count) pairs are collected (driver memory: one row per distinct category)
  and the local ``_categorical_psi_counts`` computes PSI.
* **KS** — per numeric column the distinct values with their counts on each
  side, ``(v, n_b, n_c)``. When there are at most :data:`KS_COLLECT` of them
  they are collected (driver memory: three numbers per distinct value) and
  the cumulative sums taken on the driver; otherwise the distinct values are
  cut into ranges by approximate quantiles (:class:`pyspark.ml.feature.Bucketizer`),
  one job sums each range (the per-range prefix offsets), and a window per
  range adds the running sums to its offset: D = max |F_b - F_c| is computed on
  the executors and only one row comes back. F_b = cum_b / n_b is the same
  float division as numpy's, so D equals the local D bit for bit.
  The p-value is scipy's for (D, n_b, n_c): see :func:`ks_pvalue`.

pyspark (and scipy) are imported only inside these functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from receval.errors import InputError, UsageError, Violation

__all__ = ["drift_audit_spark", "ks_pvalue", "KS_COLLECT"]

# at most this many distinct values of a numeric column are collected for KS; more run on the executors
KS_COLLECT = 1_000_000
# target number of distinct values per range in the distributed KS pass
KS_RANGE_ROWS = 1_000_000
# scipy's ks_2samp(method="auto") is exact when both samples have at most this many values
SCIPY_MAX_AUTO_N = 10_000


def ks_pvalue(i: int, j: int, n1: int, n2: int) -> float:
    """The two-sided p-value ``scipy.stats.ks_2samp`` gives two samples of sizes ``n1``, ``n2`` whose
    statistic is D = |i/n1 - j/n2| (i, j: the counts of each sample at or below the point where D is
    reached).

    scipy's p-value is a function of (D, n1, n2) only. In its exact mode
    (``max(n1, n2) <= 10,000``) ks_2samp itself is called on two small
    stand-in samples with exactly that D (i zeros and n1 - i twos; j zeros and
    n2 - j twos: the same float divisions give the same D bit for bit), so the
    exact path, its rounding of D and its fall-back to the asymptotic formula
    are scipy's own, and its RuntimeWarning on that fall-back is suppressed as
    in the local audit. Above that size scipy uses Smirnov's asymptotic
    distribution ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``, computed here as
    scipy does (tested equal to ks_2samp on samples of that size).
    """
    from scipy.stats import distributions, ks_2samp

    if max(n1, n2) <= SCIPY_MAX_AUTO_N:
        a = np.concatenate([np.zeros(i), np.full(n1 - i, 2.0)])
        b = np.concatenate([np.zeros(j), np.full(n2 - j, 2.0)])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful",
                                    category=RuntimeWarning)
            return float(ks_2samp(a, b).pvalue)
    d = abs(i / n1 - j / n2)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(distributions.kstwo.sf(d, np.round(en)), 0, 1))


def _col(c: str):
    """A column by its exact name (dots and backticks are not parsed)."""
    from pyspark.sql import functions as F

    return F.col("`" + c.replace("`", "``") + "`")


def _is_float(dt) -> bool:
    return type(dt).__name__ in ("FloatType", "DoubleType")


def drift_audit_spark(baseline: Any, current: Any, columns: list[str], *, bins: int, strategy: str,
                      epsilon: float, categorical: Sequence[str]) -> list:
    """The ``ColumnDrift`` rows of :func:`receval.audits.drift.drift_audit` for Spark inputs (see the module doc)."""
    from pyspark.sql import functions as F

    from receval.audits import drift as local
    from receval.engines.spark import _session, column_type, to_spark

    spark = _session(baseline, current)
    frames = {
        "baseline": to_spark(spark, baseline, kind="baseline", format="auto", name="baseline", columns=columns),
        "current": to_spark(spark, current, kind="current", format="auto", name="current", columns=columns),
    }
    for label, df in frames.items():
        absent = [c for c in columns if c not in df.columns]
        if absent:
            raise local.absent_columns_error(label, absent, int(df.count()), df.columns)
    types = {label: {f.name: f.dataType for f in df.schema.fields} for label, df in frames.items()}

    def missing(label: str, c: str):
        x = _col(c)
        return x.isNull() | F.isnan(x) if _is_float(types[label][c]) else x.isNull()

    def is_numeric(label: str, c: str) -> bool:
        return column_type(types[label][c]).kind in ("int", "numeric")

    def maybe_numeric(c: str) -> bool:
        return c not in categorical and is_numeric("baseline", c) and is_numeric("current", c)

    # one job: counts, missing, infinite values and the baseline range, per column and side
    stats = {}
    for label, df in frames.items():
        aggs = [F.count(F.lit(1)).alias("n")]
        for i, c in enumerate(columns):
            miss = missing(label, c)
            aggs.append(F.sum(F.when(miss, 1).otherwise(0)).alias(f"m{i}"))
            if maybe_numeric(c):
                x = _col(c).cast("double")
                inf = ~miss & ((x == math.inf) | (x == -math.inf))
                aggs.append(F.sum(F.when(inf, 1).otherwise(0)).alias(f"i{i}"))
                if label == "baseline":
                    ok = ~miss & ~((x == math.inf) | (x == -math.inf))
                    aggs += [F.min(F.when(ok, x)).alias(f"lo{i}"), F.max(F.when(ok, x)).alias(f"hi{i}")]
        stats[label] = df.agg(*aggs).collect()[0].asDict()

    # the local audit's checks, in its order (column by column), before any other job
    plan = []
    for i, c in enumerate(columns):
        n = {label: int(stats[label]["n"]) for label in frames}
        m = {label: int(stats[label][f"m{i}"] or 0) for label in frames}
        for label in frames:
            local._require_nonempty(n[label] - m[label], label, c)
        numeric = False
        if c not in categorical:
            nb, nc = is_numeric("baseline", c), is_numeric("current", c)
            if nb != nc:
                tb, tc = column_type(types["baseline"][c]).name, column_type(types["current"][c]).name
                raise UsageError(f"column {c!r}: baseline is {tb} but current is {tc}; "
                                 "cast one side, or declare the column categorical")
            numeric = nb
        if numeric:
            for label in frames:
                n_inf = int(stats[label][f"i{i}"] or 0)
                if n_inf:
                    x = _col(c).cast("double")
                    ex = [r[0] for r in frames[label].select(x).where((x == math.inf) | (x == -math.inf))
                          .limit(3).collect()]
                    raise InputError(label, [Violation(c, "must be finite", n_inf, tuple(f"value {v!r}" for v in ex),
                                                       "clip or drop infinite values before a drift audit")])
            if strategy not in ("quantile", "uniform"):
                raise UsageError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
            lo, hi = float(stats["baseline"][f"lo{i}"]), float(stats["baseline"][f"hi{i}"])
            if not hi > lo:
                local._numeric_edges(np.array([lo]), bins, strategy, c)  # raises the local single-value error
        plan.append((c, numeric, n, m))

    # numeric edges (exact quantiles, or the baseline range)
    edges: dict[str, np.ndarray] = {}
    for i, (c, numeric, n, m) in enumerate(plan):
        if not numeric:
            continue
        if strategy == "quantile":
            from receval.engines.spark_ope import exact_quantiles

            w = frames["baseline"].where(~missing("baseline", c)).select(_col(c).cast("double").alias("w"))
            qs = exact_quantiles(w, n["baseline"] - m["baseline"], np.linspace(0.0, 1.0, bins + 1))
            edges[c] = np.unique(np.asarray(qs, dtype=np.float64))[1:-1]
        else:
            lo, hi = float(stats["baseline"][f"lo{i}"]), float(stats["baseline"][f"hi{i}"])
            edges[c] = local._numeric_edges(np.array([lo, hi]), bins, "uniform", c)

    # one job: rows below each interior edge, per numeric column and side
    below: dict[tuple[str, str], list[int]] = {}
    if edges:
        parts = []
        for side, (label, df) in enumerate(frames.items()):
            cols = [F.lit(side).alias("__side")]
            for j, c in enumerate(edges):
                cols.append(F.when(~missing(label, c), _col(c).cast("double")).alias(f"x{j}"))
            parts.append(df.select(*cols))
        both = parts[0].unionByName(parts[1])
        aggs = []
        for side in (0, 1):
            for j, c in enumerate(edges):
                x = F.col(f"x{j}")
                aggs += [F.count(F.when((F.col("__side") == side) & (x < float(e)), 1)).alias(f"s{side}_{j}_{k}")
                         for k, e in enumerate(edges[c])]
        row = both.agg(*aggs).collect()[0].asDict() if aggs else {}
        for side, label in enumerate(frames):
            for j, c in enumerate(edges):
                below[(label, c)] = [int(row[f"s{side}_{j}_{k}"]) for k in range(len(edges[c]))]

    results = []
    for c, numeric, n, m in plan:
        common = dict(
            column=c, n_baseline=n["baseline"], n_current=n["current"],
            missing_baseline=m["baseline"], missing_current=m["current"],
            missing_rate_baseline=_rate(m["baseline"], n["baseline"]),
            missing_rate_current=_rate(m["current"], n["current"]),
        )
        if numeric:
            counts = {label: np.diff(np.asarray([0, *below[(label, c)], n[label] - m[label]], dtype=np.int64))
                      for label in frames}
            value = local._psi_from_counts(counts["baseline"], counts["current"], epsilon)
            d, pvalue = _ks_spark(frames, c, missing, n["baseline"] - m["baseline"], n["current"] - m["current"])
            results.append(local.ColumnDrift(kind="numeric", n_bins=len(edges[c]) + 1, psi=value,
                                             flag=local.psi_flag(value), ks_statistic=d, ks_pvalue=pvalue, **common))
        else:
            cat = local._categorical_psi_counts(_category_counts(frames["baseline"], c, missing("baseline", c), "b"),
                                                _category_counts(frames["current"], c, missing("current", c), "c"),
                                                epsilon)
            results.append(local.ColumnDrift(kind="categorical", n_bins=cat.n_bins, psi=cat.psi,
                                             flag=local.psi_flag(cat.psi), n_unseen_categories=cat.n_unseen_categories,
                                             n_unseen_rows=cat.n_unseen_rows, **common))
    return results


def _rate(k: int, n: int) -> float:
    return k / n  # the local float(mask.mean()): the count over the length, one float division


def _category_counts(df, c: str, miss, name: str):
    import polars as pl

    from receval.engines.spark import _collect_arrow

    table = _collect_arrow(df.where(~miss).groupBy(_col(c).alias("v")).count())
    frame = pl.from_arrow(table)
    return frame.select(pl.col("v"), pl.col("count").cast(pl.Int64).alias(name))


def _ks_spark(frames: dict, c: str, missing, n_b: int, n_c: int) -> tuple[float, float]:
    """D = max |F_b - F_c| over the distinct values, and its p-value (:func:`ks_pvalue`)."""
    from pyspark.sql import functions as F

    from receval.engines.spark import _collect_arrow

    parts = []
    for side, (label, df) in enumerate(frames.items()):
        parts.append(df.where(~missing(label, c)).select(_col(c).cast("double").alias("v"),
                                                          F.lit(side).alias("__side")))
    grouped = parts[0].unionByName(parts[1]).groupBy("v").agg(
        F.sum(F.when(F.col("__side") == 0, 1).otherwise(0)).cast("long").alias("nb"),
        F.sum(F.when(F.col("__side") == 1, 1).otherwise(0)).cast("long").alias("nc"))
    head = _collect_arrow(grouped.limit(KS_COLLECT + 1))
    if head.num_rows <= KS_COLLECT:
        v = head.column("v").to_numpy()
        order = np.argsort(v, kind="stable")
        cb = np.cumsum(head.column("nb").to_numpy()[order])
        cc = np.cumsum(head.column("nc").to_numpy()[order])
        diff = np.abs(cb / n_b - cc / n_c)
        k = int(np.argmax(diff))
        i, j = int(cb[k]), int(cc[k])
    else:
        i, j = _ks_ranges(grouped, n_b, n_c)
    return abs(i / n_b - j / n_c), ks_pvalue(i, j, n_b, n_c)


def _ks_ranges(grouped, n_b: int, n_c: int) -> tuple[int, int]:
    """The counts (cum_b, cum_c) where |cum_b/n_b - cum_c/n_c| is largest, without collecting the values."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    grouped = grouped.persist()
    try:
        n_distinct = int(grouped.count())
        n_ranges = max(2, math.ceil(n_distinct / KS_RANGE_ROWS))
        probs = [k / n_ranges for k in range(1, n_ranges)]
        cuts = sorted({float(q) for q in grouped.approxQuantile("v", probs, 1.0 / (4 * n_ranges))})
        splits = [-math.inf, *[q for q in cuts if math.isfinite(q)], math.inf]
        if len(splits) < 3:
            splits = [-math.inf, 0.0, math.inf]
        ranged = Bucketizer(splits=splits, inputCol="v", outputCol="r").transform(grouped)
        sums = sorted((int(r[0]), int(r[1]), int(r[2]))
                      for r in ranged.groupBy("r").agg(F.sum("nb"), F.sum("nc")).collect())
        offsets, ob, oc = [], 0, 0
        for r, sb, sc in sums:
            offsets.append((r, ob, oc))
            ob, oc = ob + sb, oc + sc
        spark = grouped.sparkSession
        off = spark.createDataFrame(offsets, "r long, ob long, oc long")
        w = Window.partitionBy("r").orderBy("v").rowsBetween(Window.unboundedPreceding, Window.currentRow)
        cum = (ranged.withColumn("r", F.col("r").cast("long")).join(F.broadcast(off), "r")
               .select((F.col("ob") + F.sum("nb").over(w)).alias("cb"), (F.col("oc") + F.sum("nc").over(w)).alias("cc")))
        d = F.abs(F.col("cb") / F.lit(n_b) - F.col("cc") / F.lit(n_c))
        best = cum.agg(F.max(F.struct(d.alias("d"), F.col("cb"), F.col("cc"))).alias("m")).collect()[0]["m"]
        return int(best["cb"]), int(best["cc"])
    finally:
        grouped.unpersist()
