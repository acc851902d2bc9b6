"""Off-policy estimators on Spark: ``logged_feedback`` on PySpark DataFrames.

What runs where (docs/scale.md, docs/counterfactual.md):

* **driver, before any job**: required columns, id and number types (from
  the schema), unsupported options (a ``reward_model`` to cross-fit, a
  ``logging`` frame);
* **scans** (no shuffle): row counts, null ids, positions < 1, propensities
  outside (0, 1], target probabilities outside [0, 1], non-finite rewards,
  rewards outside ``reward_range`` and the observed reward range;
* **aggregations of the target**: sums per (request, position) within
  ``tol``, duplicate (request, item, position) rows, logged (request,
  position)s without a target distribution, target mass on (item, position)
  pairs never logged — all raised / warned as the same
  :class:`~receval.errors.InputError` / warning as locally, before the join;
* **the reduce job**: log left-joined with the target's probability of the
  logged item (0 when absent) and q_hat(x, pi_e) per (request, position);
  repartitioned by request, sorted within partitions; ``mapInArrow`` cuts
  each partition into request-complete chunks, builds a
  :class:`~receval.counterfactual.LoggedFeedback` of the chunk and runs every
  estimator's own ``_columns`` / ``_count_columns`` on it, summed per request
  (the same code as locally, no second copy of a formula), plus per-request
  partial sums of the importance weights;
* **exact weight quantiles**: order statistics found by an approximate
  quantile pass that only brackets them, then the (value, count) pairs inside
  the brackets — checked by rank, so the result is exact (never the
  approximation), equal to ``numpy.quantile``;
* **driver**: one row per request, sorted by request id (the order of
  ``LoggedFeedback.unit`` locally), handed to the same statistics code.

pyspark is imported only inside these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from receval.errors import InputError, UsageError, Violation

__all__ = ["SparkFeedback", "spark_logged_feedback", "exact_quantiles", "read_spark_frame", "CHUNK_ROWS"]

#: rows handed to the per-request reduction at once inside a partition
CHUNK_ROWS = 1 << 20
#: with at most this many weights, the quantiles come from all (value, count) pairs
EXACT_QUANTILE_COLLECT = 50_000
#: relative rank error of the approximate pass that brackets each order statistic
QUANTILE_REL_ERR = 1e-4

_WEIGHT_STATS = ("n", "total", "top", "scale", "a", "sq", "m2")


def _quiet():
    from receval.engines.spark import _quiet_pandas_check

    return _quiet_pandas_check()


# ---------------------------------------------------------------------------
# the data object
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkFeedback:
    """Validated logged feedback whose rows stay on Spark (build with :func:`receval.counterfactual.logged_feedback`).

    Works with :func:`~receval.counterfactual.estimate_many` and
    ``Estimator.estimate`` / ``point`` like a
    :class:`~receval.counterfactual.LoggedFeedback`: each call runs one Spark
    job that returns per-request sums for the estimators asked for. The weight
    diagnostics (exact quantiles included) are computed on the first call and
    kept.

    rows : Spark DataFrame ``request_id, reward, propensity, target_prob[, q_logged, q_target]``
    """

    rows: Any = field(repr=False)
    n_rows: int
    n_units: int
    reward_range: tuple[float, float]
    support: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    model: dict[str, Any] | None = None
    has_reward_estimates: bool = False
    refit: Any = None
    chunk_rows: int | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def reduce_units(self, estimators: Sequence):
        """Per-request sums of every estimator's columns, weight summary and counts (one Spark job)."""
        return _reduce(self, list(estimators))


def read_spark_frame(path: str, kind: str, mapping: dict[str, str], format: str = "auto"):
    """A file read by Spark (the active session, or a new local one), columns renamed canonical <- yours."""
    from receval.engines.spark import _session, to_spark

    df = to_spark(_session(), path, kind=kind, format=format, name=kind)
    for canon, src in mapping.items():
        if src in df.columns and src != canon:
            df = df.withColumnRenamed(src, canon)
    return df


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _pandas_dtype(ct) -> str:
    """A Spark column type named as pandas names the dtype of that column locally."""
    if ct.kind == "str":
        import pandas as pd

        return str(pd.Series(["a"]).dtype)
    return {"Float64": "float64", "Float32": "float32", "Boolean": "bool", "Int8": "int8", "Int16": "int16",
            "Int32": "int32", "Int64": "int64"}.get(ct.name, ct.name)


def _show(v: Any) -> str:
    return repr(math.nan if v is None else v)


def _where(rid: Any, item: Any) -> str:
    return f"request {rid!r}, item {item!r}"


def _type_checks(df, types: dict, frame: str, ids: tuple[str, ...], numeric: tuple[str, ...],
                 null_counts: dict[str, int] | None = None, n_rows: int | None = None) -> None:
    """Local ``_column_checks``: types from the schema, null ids from ``null_counts``; raises InputError(frame)."""
    from pyspark.sql import functions as F

    out: list[Violation] = []

    def head(c):
        return tuple(repr(r[0]) for r in df.select(c).limit(3).collect())

    def count():
        return n_rows if n_rows is not None else df.count()

    for c in ids:
        if c not in types:
            continue
        if null_counts and null_counts.get(c):
            ex = df.filter(F.col(c).isNull()).select(*[x for x in ("request_id", "item_id") if x in types]).limit(5).collect()
            out.append(Violation(c, "must not be null", null_counts[c],
                                 tuple(", ".join(f"{k} {v!r}" for k, v in r.asDict().items()) for r in ex),
                                 "drop or fill those rows explicitly; receval never guesses missing values"))
        if types[c].kind not in ("int", "str"):
            out.append(Violation(c, f"must hold integers or text, found dtype {_pandas_dtype(types[c])}", count(),
                                 head(c), "cast ids to int or str; float ids lose precision and '7.0' != '7'"))
    for c in numeric:
        if c in types and types[c].kind not in ("int", "numeric", "bool", "null"):
            out.append(Violation(c, f"must be numeric, found dtype {_pandas_dtype(types[c])}", count(), head(c),
                                 "convert the column to numbers first"))
    if out:
        raise InputError(frame, out)


def _null_ids(df, types: dict) -> tuple[int, dict[str, int]]:
    """One scan: rows and null ids (run once the types are fine; they are raised first, as locally)."""
    from pyspark.sql import functions as F

    ids = [c for c in ("request_id", "item_id") if c in types]
    row = df.agg(F.count(F.lit(1)).alias("__n"), *[F.count(F.when(F.col(c).isNull(), 1)).alias(c) for c in ids]).collect()[0]
    return int(row["__n"]), {c: int(row[c]) for c in ids}


def _types(df) -> dict:
    from receval.engines.spark import column_type

    return {f.name: column_type(f.dataType) for f in df.schema.fields}


def _bad_unit(col, *, open_low: bool):
    """Spark predicate for values outside (0, 1] / [0, 1], null and NaN included (Spark orders NaN above +inf)."""
    from pyspark.sql import functions as F

    low = col <= 0.0 if open_low else col < 0.0
    return col.isNull() | F.isnan(col) | low | (col > 1.0)


def _not_finite(col):
    from pyspark.sql import functions as F

    return col.isNull() | F.isnan(col) | (F.abs(col) == float("inf"))


def _row_examples(df, pred, column: str, k: int = 5) -> tuple[str, ...]:
    rows = df.filter(pred).select("request_id", "item_id", column).limit(k).collect()
    return tuple(f"{_where(r[0], r[1])} ({_show(r[2])})" for r in rows)


# ---------------------------------------------------------------------------
# logged_feedback on Spark
# ---------------------------------------------------------------------------


def spark_logged_feedback(
    log: Any,
    target: Any = None,
    *,
    reward_range: tuple[float, float] | None = None,
    reward_model: Any = None,
    q_hat_column: str | None = None,
    context_columns: Sequence[str] = (),
    tol: float = 1e-6,
    logging: Any = None,
    format: str = "auto",
    chunk_rows: int | None = None,
) -> SparkFeedback:
    """:func:`receval.counterfactual.logged_feedback` with the rows on Spark (same rules, same errors)."""
    from pyspark.sql import functions as F

    from receval.engines.spark import _session, to_spark

    if reward_model is not None:
        raise UsageError(
            "a RewardModel is cross-fitted on the driver and is not available on the Spark engine; fit the reward "
            "model where the data lives and pass its predictions as a column present in both the log and the "
            "target: logged_feedback(log, target, q_hat_column='q_hat')"
        )
    if logging is not None:
        raise UsageError(
            "the context-level support check (logging=...) is not available on the Spark engine; run it on a "
            "sample locally, or leave logging out (the (item, position) support check still runs)"
        )
    if reward_range is not None and not float(reward_range[0]) <= float(reward_range[1]):
        raise UsageError(f"reward_range must be (low, high) with low <= high, got {reward_range}")
    spark = _session(log, target)
    log = to_spark(spark, log, kind="logs", format=format, name="log")
    ltypes = _types(log)
    missing = [c for c in ("item_id", "reward", "propensity") if c not in ltypes]
    if missing:
        raise UsageError(f"log is missing required column(s) {missing}; it has {list(log.columns)}")
    if "request_id" not in ltypes:
        raise UsageError(
            "on the Spark engine the log needs a request_id column (the resampling unit): Spark rows have no "
            "order to number them by; add one (e.g. one id per logged row) or run locally"
        )
    numeric = ("reward", "propensity", "position", "target_probability") + ((q_hat_column,) if q_hat_column else ())
    # types from the schema first (no job), then null ids: the same order of errors as locally
    _type_checks(log, ltypes, "log", ("request_id", "item_id"), numeric)
    n_log, nulls = _null_ids(log, ltypes)
    _type_checks(log, ltypes, "log", ("request_id", "item_id"), (), nulls, n_log)
    if target is not None:
        target = to_spark(spark, target, kind="target", format=format, name="target")
        ttypes = _types(target)
        t_numeric = ("probability", "position") + ((q_hat_column,) if q_hat_column else ())
        _type_checks(target, ttypes, "target", ("request_id", "item_id"), t_numeric)
        n_target, nulls = _null_ids(target, ttypes)
        _type_checks(target, ttypes, "target", ("request_id", "item_id"), (), nulls, n_target)
        # one id type on both sides (text when they differ, as locally)
        for c in ("request_id", "item_id"):
            if c in ttypes and ltypes[c].kind != ttypes[c].kind:
                log = log.withColumn(c, F.col(c).cast("string"))
                target = target.withColumn(c, F.col(c).cast("string"))
    if q_hat_column is not None:
        if q_hat_column not in ltypes:
            raise UsageError(f"q_hat_column {q_hat_column!r} is not a column of the log; it has {list(log.columns)}")
        if target is not None and q_hat_column not in target.columns:
            raise UsageError(f"q_hat_column {q_hat_column!r} is not a column of the target; it has {list(target.columns)}")

    pos = F.col("position").cast("double") if "position" in ltypes else F.lit(1.0)
    cols = [F.col("request_id"), F.col("item_id"), pos.alias("position"),
            F.col("reward").cast("double").alias("reward"), F.col("propensity").cast("double").alias("propensity")]
    no_target = target is None
    if no_target:
        if "target_probability" not in ltypes:
            raise UsageError("give a target frame or a 'target_probability' column in the log")
        if q_hat_column is not None:
            raise UsageError("DM and DR need the full target distribution: pass the target frame")
        cols.append(F.col("target_probability").cast("double").alias("target_prob"))
    if q_hat_column is not None:
        cols.append(F.col(q_hat_column).cast("double").alias("q_logged"))
    lg = log.select(*cols)

    # --- one scan of the log: every per-row rule, the observed reward range
    lo_r = hi_r = None
    if reward_range is not None:
        lo_r, hi_r = float(reward_range[0]), float(reward_range[1])
    r = F.col("reward")
    preds = {
        "position": F.col("position").isNull() | F.isnan("position") | (F.col("position") < 1.0),
        "propensity": _bad_unit(F.col("propensity"), open_low=True),
        "reward_finite": _not_finite(r),
    }
    if no_target:
        preds["target_probability"] = _bad_unit(F.col("target_prob"), open_low=False)
    if q_hat_column is not None:
        preds["q_hat"] = _not_finite(F.col("q_logged"))
    if reward_range is not None:
        preds["reward_range"] = ~_not_finite(r) & ((r < lo_r) | (r > hi_r))
    finite_r = F.when(~_not_finite(r), r)
    row = lg.agg(F.count(F.lit(1)).alias("__n"), F.min(finite_r).alias("__lo"), F.max(finite_r).alias("__hi"),
                 F.countDistinct("request_id").alias("__units"),
                 *[F.count(F.when(p, 1)).alias(k) for k, p in preds.items()]).collect()[0]
    n_rows = int(row["__n"])
    counts = {k: int(row[k]) for k in preds}

    if q_hat_column is not None and counts["q_hat"]:  # the local order: before the other value rules
        raise InputError("log", [Violation(q_hat_column, "must be finite (a reward estimate)", counts["q_hat"],
                                           _row_examples(lg, preds["q_hat"], "q_logged"),
                                           "fill or drop the rows without an estimate explicitly")])
    violations: list[Violation] = []
    if counts["position"]:
        violations.append(Violation("position", "must be >= 1", counts["position"],
                                    _row_examples(lg, preds["position"], "position")))
    support: dict[str, Any] = {}
    warns: list[str] = []
    if no_target:
        if violations:
            raise InputError("log", violations)
        rows = lg
    else:
        rows, support, warns = _check_target(lg, target, q_hat_column, tol, violations)

    # --- the per-row rules of LoggedFeedback.from_arrays
    violations = []
    if counts["propensity"]:
        violations.append(Violation("propensity", "must lie in (0, 1]", counts["propensity"],
                                    _row_examples(lg, preds["propensity"], "propensity"),
                                    "zero propensities break the positivity assumption; drop or re-log those rows"))
    if no_target and counts["target_probability"]:
        violations.append(Violation("target probability", "must lie in [0, 1]", counts["target_probability"],
                                    _row_examples(lg, preds["target_probability"], "target_prob")))
    if counts["reward_finite"]:
        violations.append(Violation("reward", "must be finite", counts["reward_finite"],
                                    _row_examples(lg, preds["reward_finite"], "reward")))
    if reward_range is not None and counts["reward_range"]:
        violations.append(Violation("reward", f"must lie in the declared reward_range [{lo_r:g}, {hi_r:g}]",
                                    counts["reward_range"], _row_examples(lg, preds["reward_range"], "reward"),
                                    "declare the right reward_range, e.g. reward_range=(0, 1) for clicks"))
    if violations:
        raise InputError("logged feedback", violations)
    if reward_range is None:
        rng = (0.0, 0.0) if row["__lo"] is None else (float(row["__lo"]), float(row["__hi"]))
    else:
        rng = (lo_r, hi_r)
    n_units = row["__units"]
    keep = ["request_id", "reward", "propensity", "target_prob"] + (["q_logged", "q_target"] if q_hat_column else [])
    return SparkFeedback(
        rows.select(*keep), n_rows, int(n_units), rng, support, tuple(warns),
        {"kind": "column", "column": q_hat_column} if q_hat_column else None,
        q_hat_column is not None, None, chunk_rows,
    )


def _check_target(lg, target, q_hat_column, tol, violations):
    """The target rules (aggregations of the target), support diagnostics, and the per-row frame."""
    from pyspark.sql import functions as F

    missing = [c for c in ("request_id", "item_id", "probability") if c not in target.columns]
    if missing:
        raise UsageError(f"target is missing required column(s) {missing}; it has {list(target.columns)}")
    keys = ["request_id", "position"]
    triple = ["request_id", "item_id", "position"]
    pos = F.col("position").cast("double") if "position" in target.columns else F.lit(1.0)
    tcols = [F.col("request_id"), F.col("item_id"), pos.alias("position"),
             F.col("probability").cast("double").alias("probability")]
    if q_hat_column is not None:
        tcols.append(F.col(q_hat_column).cast("double").alias("q"))
    t = target.select(*tcols)
    if q_hat_column is not None:
        bad_q = _not_finite(F.col("q"))
        n_bad_q = t.filter(bad_q).count()
        if n_bad_q:
            raise InputError("target", [Violation(q_hat_column, "must be finite (a reward estimate)", n_bad_q,
                                                  _row_examples(t, bad_q, "q"),
                                                  "fill or drop the rows without an estimate explicitly")])
    p = F.col("probability")
    bad_p = _bad_unit(p, open_low=False)
    n_bad = t.filter(bad_p).count()
    if n_bad:
        violations.append(Violation("target probability", "must lie in [0, 1]", n_bad, _row_examples(t, bad_p, "probability")))
    # sums per (request, position); like pandas, null / NaN probabilities are skipped
    p0 = F.when(p.isNull() | F.isnan(p), 0.0).otherwise(p)
    # one job: per (request, item, position) the sum and the row count, then per (request, position)
    per_triple = t.groupBy(*triple).agg(F.sum(p0).alias("s"), F.count(F.lit(1)).alias("k"))
    sums = per_triple.groupBy(*keys).agg(F.sum("s").alias("s"), F.sum(F.col("k") - 1).alias("dup"))
    off = F.abs(F.col("s") - 1.0) > tol
    agg = sums.agg(F.count(F.lit(1)).alias("n"), F.count(F.when(off, 1)).alias("off"),
                   F.sum("dup").alias("dup")).collect()[0]
    n_dist, n_off, n_dup = int(agg["n"]), int(agg["off"]), int(agg["dup"] or 0)
    if n_off:
        ex = sums.filter(off).limit(5).collect()
        violations.append(Violation(
            "target probability", f"must sum to 1 within {tol:g} per (request, position)", n_off,
            tuple(f"(request {r['request_id']!r}, position {_pos(r['position'])!r}) sums to {r['s']:.6g}" for r in ex),
            "normalise the target distribution per request and position"))
    if n_dup:
        violations.append(Violation("target", "must have one row per (request, item, position)", int(n_dup)))
    uncovered = lg.select(*keys).distinct().join(sums.select(*keys), on=keys, how="left_anti")
    n_unc = uncovered.count()
    if n_unc:
        ex = uncovered.limit(5).collect()
        violations.append(Violation(
            "target", "must give a distribution for every logged (request, position)", n_unc,
            tuple(f"(request {r['request_id']!r}, position {_pos(r['position'])!r})" for r in ex)))
    if violations:
        raise InputError("logged feedback / target policy", violations)
    # support: target mass on (item, position) pairs that the log never shows
    pairs = lg.select("item_id", "position").distinct()
    outside = t.filter(p > 0).select("item_id", "position", "probability").join(
        pairs, on=["item_id", "position"], how="left_anti")
    o = outside.agg(F.sum("probability").alias("m"), F.countDistinct("item_id", "position").alias("k")).collect()[0]
    mass = float(o["m"] or 0.0) / n_dist if n_dist else 0.0
    n_pairs = int(o["k"])
    support = {"unsupported_pairs": n_pairs, "unsupported_target_mass": mass}
    warns = []
    if n_pairs:
        warns.append(
            f"the target policy puts {mass:.1%} of its mass on {n_pairs} (item, position) pairs never logged: "
            "IPS-type estimates miss that mass (common support fails)"
        )
    # the per-row frame: pi_e of the logged action (0 when the target omits it), q_hat(x, pi_e)
    tsel = [*triple, F.col("probability").alias("__tp")]
    rows = lg.join(t.select(*tsel), on=triple, how="left").withColumn("target_prob", F.coalesce("__tp", F.lit(0.0)))
    if q_hat_column is not None:
        qt = t.groupBy(*keys).agg(F.sum(F.col("probability") * F.col("q")).alias("q_target"))
        rows = rows.join(qt, on=keys, how="left")
    return rows, support, warns


def _pos(v):
    """A position as pandas shows it (integers stay integers)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


# ---------------------------------------------------------------------------
# the reduce job
# ---------------------------------------------------------------------------


def unit_partials(table, estimators: Sequence, has_q: bool):
    """Per-request sums of a request-complete chunk (rows of a request contiguous).

    Returns (request ids, weight stats (n_u, 7), estimator sums (n_u, k),
    counts (n_u, m)); the estimator columns are the estimators' own
    ``_columns`` / ``_count_columns`` on a LoggedFeedback of the chunk.
    """
    from receval.counterfactual._data import LoggedFeedback
    from receval.engines.spark import key_runs

    starts, sizes, unit = key_runs(table, "request_id")
    n_u = len(starts)

    def col(name):
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    d = LoggedFeedback(unit, n_u, col("reward"), col("propensity"), col("target_prob"),
                       col("q_logged") if has_q else None, col("q_target") if has_q else None)
    w = d.weight
    top = np.maximum.reduceat(w, starts)
    scale = np.where((top > 0) & np.isfinite(top), top, 1.0)
    ws = w / scale[unit]
    a = np.bincount(unit, weights=ws, minlength=n_u)
    mean = a / sizes
    stats = np.column_stack([
        sizes.astype(np.float64), np.bincount(unit, weights=w, minlength=n_u), top, scale, a,
        np.bincount(unit, weights=ws * ws, minlength=n_u),
        np.bincount(unit, weights=(ws - mean[unit]) ** 2, minlength=n_u),
    ])
    cols = [c for e in estimators for c in e._columns(d)]
    sums = np.column_stack([np.bincount(unit, weights=c, minlength=n_u) for c in cols]) if cols else np.zeros((n_u, 0))
    cnt = [np.asarray(v, dtype=np.float64) for e in estimators for v in e._count_columns(d).values()]
    counts = np.column_stack([np.bincount(unit, weights=c, minlength=n_u) for c in cnt]) if cnt else np.zeros((n_u, 0))
    return table.column("request_id").take(starts), stats, sums, counts


def _reduce(data: SparkFeedback, estimators: list):
    import polars as pl
    import pyarrow as pa
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    from receval.counterfactual._data import LoggedFeedback
    from receval.counterfactual._estimators import UnitReduction, WeightSummary, column_spans
    from receval.engines.spark import _collect_arrow

    empty = LoggedFeedback(np.zeros(0, dtype=np.int64), 0, *(np.zeros(0),) * 3,
                           *((np.zeros(0), np.zeros(0)) if data.has_reward_estimates else (None, None)))
    spans = column_spans(estimators, empty)
    k = spans[-1][1] if spans else 0
    count_names = [list(e._count_columns(empty)) for e in estimators]
    m = sum(len(c) for c in count_names)
    id_type = data.rows.schema["request_id"].dataType
    fields = [T.StructField("request_id", id_type, True)]
    fields += [T.StructField(f"w_{s}", T.DoubleType(), True) for s in _WEIGHT_STATS]
    fields += [T.StructField(f"s{j}", T.DoubleType(), True) for j in range(k)]
    fields += [T.StructField(f"c{j}", T.DoubleType(), True) for j in range(m)]
    schema = T.StructType(fields)
    arrow_schema = to_arrow_schema(schema)
    has_q = data.has_reward_estimates
    rows_per_chunk = int(data.chunk_rows or CHUNK_ROWS)

    from receval.engines.spark import key_complete_chunks

    def kernel(batches):
        for table in key_complete_chunks(batches, rows_per_chunk):
            ids, stats, sums, counts = unit_partials(table, estimators, has_q)
            arrays = [ids] + [pa.array(c) for c in np.column_stack([stats, sums, counts]).T]
            yield from pa.Table.from_arrays(arrays, schema=arrow_schema).to_batches()

    rows = data.rows
    need_quantiles = "quantiles" not in data._cache
    if need_quantiles and data.n_rows > EXACT_QUANTILE_COLLECT:
        rows = rows.persist()  # the quantile passes read the joined rows again
    try:
        part = rows.repartition("request_id").sortWithinPartitions("request_id")
        with _quiet():
            per_unit = part.mapInArrow(kernel, schema)
        units = pl.from_arrow(_collect_arrow(per_unit)).sort("request_id")
        if need_quantiles:
            from pyspark.sql import functions as F

            w = rows.select((F.col("target_prob") / F.col("propensity")).alias("w"))
            data._cache["quantiles"] = exact_quantiles(w, data.n_rows, [0.5, 0.9, 0.99])
    finally:
        if rows is not data.rows:
            rows.unpersist()
    if units.height != data.n_units or (units.height and int(units["w_n"].sum()) != data.n_rows):
        raise RuntimeError("the per-request reduction lost rows: the data changed between validation and reduction")
    st = {s: units[f"w_{s}"].to_numpy() for s in _WEIGHT_STATS}
    S = np.asfortranarray(units.select([f"s{j}" for j in range(k)]).to_numpy().reshape(units.height, k), dtype=np.float64)
    C = units.select([f"c{j}" for j in range(m)]).to_numpy().reshape(units.height, m)
    n = data.n_rows
    q50, q90, q99 = data._cache["quantiles"]
    if n:
        top = float(st["top"].max())
        scale = top if top > 0 and math.isfinite(top) else 1.0
        r = st["scale"] / scale
        ws_sum = float((st["a"] * r).sum())
        ws_sq = float((st["sq"] * r * r).sum())
        mean = ws_sum / n
        m2 = float((st["m2"] * r * r).sum() + (st["n"] * (st["a"] / st["n"] * r - mean) ** 2).sum())
        std = math.sqrt(m2 / (n - 1)) if n > 1 else math.nan
        summary = WeightSummary(n, data.n_units, float(st["total"].sum()), top, scale, ws_sum, ws_sq, std,
                                q50, q90, q99)
    else:
        summary = WeightSummary(0, data.n_units, 0.0, math.nan, 1.0, 0.0, 0.0, math.nan, q50, q90, q99)
    totals, j = [], 0
    for names in count_names:
        totals.append({name: float(C[:, j + i].sum()) for i, name in enumerate(names)})
        j += len(names)
    return UnitReduction(S, spans, summary, totals)


# ---------------------------------------------------------------------------
# exact quantiles
# ---------------------------------------------------------------------------


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation of ``quantile(method='linear')``, operation for operation."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def exact_quantiles(df, n: int, qs: Sequence[float]) -> list[float]:
    """``numpy.quantile(w, qs)`` (method ``linear``) of the single column ``w`` of a Spark frame with ``n`` rows.

    Exact: the order statistics it needs are found by rank (see
    :func:`order_statistics`), then interpolated as numpy does.
    """
    if n == 0:
        return [math.nan] * len(qs)
    virtual = (n - 1) * np.asarray(qs, dtype=np.float64)
    prev = np.floor(virtual)
    above = virtual >= n - 1
    lo = np.where(above, n - 1, prev).astype(np.int64)
    hi = np.where(above, n - 1, prev + 1).astype(np.int64)
    values = order_statistics(df, n, sorted(set(lo.tolist()) | set(hi.tolist())))
    out = []
    for v, a, b, p, up in zip(virtual, lo, hi, prev, above, strict=True):
        out.append(values[int(a)] if up else _lerp(values[int(a)], values[int(b)], float(v - p)))
    return out


def order_statistics(df, n: int, ranks: Sequence[int]) -> dict[int, float]:
    """The exact k-th smallest values (0-based ranks) of column ``w``, without sorting or collecting it.

    Small inputs: every distinct (value, count) pair. Otherwise an approximate
    quantile pass brackets each rank by two values, then one job counts the
    rows below each bracket and one collects the distinct (value, count) pairs
    inside the brackets; a rank whose bracket turns out not to hold it is
    re-bracketed wider (never guessed), so the result is always exact.
    """
    from pyspark.sql import functions as F

    def pick(pairs: list, below: int, rank: int) -> float | None:
        c = below
        for v, k in pairs:
            c += k
            if c > rank:
                return float(v)
        return None

    if n <= EXACT_QUANTILE_COLLECT:
        pairs = sorted((r[0], int(r[1])) for r in df.groupBy("w").count().collect())
        return {k: pick(pairs, 0, k) for k in ranks}
    eps = QUANTILE_REL_ERR
    probs = []
    for k in ranks:
        probs += [max(0.0, k / n - 2 * eps), min(1.0, (k + 1) / n + 2 * eps)]
    approx = df.approxQuantile("w", probs, eps)
    bounds = {k: [approx[2 * i], approx[2 * i + 1]] for i, k in enumerate(ranks)}
    out: dict[int, float] = {}
    for _ in range(4):
        todo = [k for k in ranks if k not in out]
        if not todo:
            break
        w = F.col("w")
        below = df.agg(*[F.count(F.when(w < bounds[k][0], 1)).alias(f"b{i}") for i, k in enumerate(todo)]).collect()[0]
        inside = None
        for k in todo:
            lo, hi = bounds[k]
            cond = (w >= lo) & (w <= hi)
            inside = cond if inside is None else inside | cond
        pairs = sorted((r[0], int(r[1])) for r in df.filter(inside).groupBy("w").count().collect())
        for i, k in enumerate(todo):
            lo, hi = bounds[k]
            window = [(v, c) for v, c in pairs if lo <= v <= hi]
            b = int(below[f"b{i}"])
            v = pick(window, b, k) if b <= k else None
            if v is not None:
                out[k] = v
            elif b > k:
                bounds[k][0] = -math.inf
            else:
                bounds[k][1] = math.inf
    missing = [k for k in ranks if k not in out]
    if missing:  # pragma: no cover - the last round brackets every value
        raise RuntimeError(f"could not bracket the order statistics {missing}")
    return out
