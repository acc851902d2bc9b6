"""Slate off-policy estimators on Spark: ``slate_feedback`` on PySpark DataFrames.

What runs where (docs/scale.md, docs/counterfactual.md):

* **driver, before any job**: required columns (the same UsageErrors as locally);
* **aggregations** (before the reduction, the same InputErrors as locally:
  column, rule and count; examples name (slate, position) instead of a row
  number, Spark rows having none): duplicate target rows, logged (slate,
  position)s without a target probability or with a missing one, slate
  lengths (one L unless ``varying_length``), positions 1..L_i once per slate,
  slate probabilities constant within a slate, every probability's range,
  finite rewards within ``reward_range`` (the observed range without it), and
  the whole-slate weight finite in float64 (a running product per slate in
  position order, as ``numpy.cumprod``);
* **the reduce job**: the rows repartitioned by slate, sorted by (slate,
  position) within partitions; ``mapInArrow`` cuts each partition into
  slate-complete chunks (:func:`receval.engines.spark.key_complete_chunks`),
  builds a chunk-local :class:`~receval.counterfactual.slates.SlateFeedback`
  padded to the global L, and runs the estimators' own per-slate column code
  (``slates._slate_columns``, no second copy of a formula); one row per
  slate: the estimator columns, the importance weights of each kind used
  (1 or L per slate) and the slate's length;
* **driver**: the rows sorted by slate id (the local order), then the same
  statistics, bootstrap and weight diagnostics as locally. The driver holds
  O(n_slates * L) numbers — the same order as the per-slate columns the
  bootstrap needs anyway — so the weight diagnostics (ESS, exact quantiles,
  per-slot means) are computed from the collected weights by the local
  function, equal to the local result.

pyspark is imported only inside these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from receval.counterfactual.slates import (  # the local column names
    _LOG_COLS,
    _TARGET_FRAME,
    _TARGET_IN_LOG,
)
from receval.errors import InputError, UsageError, Violation

__all__ = ["SparkSlateFeedback", "spark_slate_feedback"]

#: rows handed to the per-slate reduction at once inside a partition
CHUNK_ROWS = 1 << 20



@dataclass
class SparkSlateFeedback:
    """Validated logged slates on Spark: the rows stay there; ``estimate_slates`` reduces them per slate.

    ``rows`` has one row per shown slot with the columns ``slate_id``,
    ``position`` (double) and the canonical probability columns of
    :class:`~receval.counterfactual.slates.SlateFeedback`.
    """

    rows: Any
    n_slates: int
    n_slots: int
    varying: bool
    reward_range: tuple[float, float]
    has_cond: bool
    has_slate: bool
    n_rows: int = 0
    min_slots: int | None = None
    chunk_rows: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def reduce_slates(self, estimators):
        return _reduce(self, list(estimators))


def _pos(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _ex(rows, col: str | None = None) -> tuple[str, ...]:
    out = []
    for r in rows:
        s = f"(slate {r['slate_id']!r}, position {_pos(r['position'])!r})"
        out.append(s if col is None else f"{s} ({r[col]!r})")
    return tuple(out)


def _num(name: str):
    """The column as double; text that is no number becomes null (reported by the rules), as pandas coerces."""
    from pyspark.sql import functions as F

    return F.expr(f"try_cast(`{name}` AS DOUBLE)")


def _finite(c):
    from pyspark.sql import functions as F

    return c.isNotNull() & ~F.isnan(c) & (F.abs(c) != float("inf"))


def spark_slate_feedback(
    log, target=None, *, reward_range: tuple[float, float] | None = None, varying_length: bool = False,
    chunk_rows: int | None = None,
) -> SparkSlateFeedback:
    """:func:`receval.counterfactual.slates.slate_feedback` with the rows on Spark (same rules, same errors)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from receval.engines.spark import _session, to_spark

    spark = _session(log, target)
    log = to_spark(spark, log, kind="logs", format="auto", name="log")
    need = [c for c in ("slate_id", "position", "reward", "propensity") if c not in log.columns]
    if need:
        raise UsageError(f"log is missing required column(s) {need}; it has {list(log.columns)}")
    n_null = log.filter(F.col("slate_id").isNull()).count()
    if n_null:
        raise InputError("logged slates", [Violation(
            "slate_id", "must not be null", n_null, (), "drop or fill those rows explicitly")])
    keys = ["slate_id", "position"]
    sel = [F.col("slate_id"), _num("position").alias("position"),
           _num("reward").alias("reward"), _num("propensity").alias("propensity")]
    sel += [_num(k).alias(v) for k, v in _LOG_COLS.items() if k in log.columns]
    violations: list[Violation] = []
    if target is not None:
        target = to_spark(spark, target, kind="target", format="auto", name="target")
        need = [c for c in ("slate_id", "position", "probability") if c not in target.columns]
        if need:
            raise UsageError(f"target is missing required column(s) {need}; it has {list(target.columns)}")
        t = target.select(F.col("slate_id"), _num("position").alias("position"),
                          *[_num(k).alias(v) for k, v in _TARGET_FRAME.items() if k in target.columns])
        n_t = t.count()
        n_dup = n_t - t.select(*keys).distinct().count()
        if n_dup:
            raise InputError("target policy", [Violation("target", "must have one row per (slate_id, position)", n_dup)])
        tcols = {"__t_" + k: v for k, v in _TARGET_FRAME.items() if k in target.columns}
        rows = log.select(*sel).join(t.withColumn("__in_t", F.lit(True)), on=keys, how="left")
        miss = F.col("__in_t").isNull()
        n_miss = rows.filter(miss).count()
        if n_miss:
            violations.append(Violation("target", "must give a probability for every logged (slate_id, position)",
                                        n_miss, _ex(rows.filter(miss).limit(5).collect())))
        rows = rows.drop("__in_t")
    else:
        if "target_probability" not in log.columns:
            raise UsageError("give a target frame or a 'target_probability' column in the log")
        tcols = {k: v for k, v in _TARGET_IN_LOG.items() if k in log.columns}
        rows = log.select(*sel, *[_num(k).alias(v) for k, v in tcols.items()])
        n_miss = 0
    if not n_miss:
        for src, dst in tcols.items():
            c = F.col(dst)
            bad = c.isNull() | F.isnan(c)
            n_bad = rows.filter(bad).count()
            if n_bad:
                violations.append(Violation(src, "must not be missing", n_bad,
                                            _ex(rows.filter(bad).limit(5).collect(), dst)))
    # slate structure
    counts = rows.groupBy("slate_id").agg(F.count(F.lit(1)).alias("k"))
    hist = sorted((int(r["k"]), int(r["n"])) for r in counts.groupBy("k").agg(F.count(F.lit(1)).alias("n")).collect())
    n_slates = sum(n for _, n in hist)
    L = max(hist, key=lambda kn: (kn[1], -kn[0]))[0] if hist else 0  # the most common count, the smallest on ties
    bad_len = sum(n for k, n in hist if k != L)
    if bad_len and not varying_length:
        ex = counts.filter(F.col("k") != L).orderBy("slate_id").limit(5).collect()
        violations.append(Violation(
            "slate_id", f"every slate must have the same number of slots (most have {L})", bad_len,
            tuple(f"slate {r['slate_id']!r} has {r['k']}" for r in ex),
            "pad or drop short slates, or pass varying_length=True (receval ope --varying-length) if slates "
            "really differ in length"))
    else:
        if varying_length and hist:
            L = max(k for k, _ in hist)
        w = Window.partitionBy("slate_id").orderBy(F.col("position").asc_nulls_last())
        off = F.col("position").isNull() | (F.col("position") != F.row_number().over(w).cast("double"))
        ranked = rows.select("slate_id", "position", off.alias("__off")).filter("__off")
        n_off = ranked.count()
        if n_off:
            violations.append(Violation(
                "position", "must run 1..L_i once per slate" if varying_length else "must run 1..L once per slate",
                n_off, _ex(ranked.limit(5).collect())))
    if violations:
        raise InputError("logged slates", violations)
    source = {v: k for k, v in list(_LOG_COLS.items()) + list(tcols.items())}
    for key in ("slate_propensity", "target_slate_prob"):
        if key in rows.columns:
            c = F.col(key)
            v = F.when(c.isNull(), F.lit(float("nan"))).otherwise(c)
            bad = rows.groupBy("slate_id").agg(F.countDistinct(v).alias("d")).filter(F.col("d") > 1)
            n_bad = bad.count()
            if n_bad:
                ex = bad.orderBy("slate_id").limit(5).collect()
                raise InputError("logged slates", [Violation(
                    source[key].removeprefix("__t_"), "must be constant within a slate", n_bad,
                    tuple(f"slate {r['slate_id']!r}" for r in ex))])
    if "target_prob" not in rows.columns:
        raise UsageError("the target marginal probability is required")
    has_cond = "propensity_cond" in rows.columns
    if has_cond != ("target_cond" in rows.columns):
        raise UsageError("give both the logging and the target conditional probabilities, or neither")
    has_slate = "slate_propensity" in rows.columns
    if has_slate != ("target_slate_prob" in rows.columns):
        raise UsageError("give both the logging and the target slate probabilities, or neither")
    # the value rules of SlateFeedback.from_arrays, in its order (slate probabilities once per slate)
    checks = [("propensity", "propensity", False, False), ("target probability", "target_prob", True, False)]
    if has_cond:
        checks += [("conditional propensity", "propensity_cond", False, False),
                   ("conditional target probability", "target_cond", True, False)]
    if has_slate:
        checks += [("slate propensity", "slate_propensity", False, True),
                   ("slate target probability", "target_slate_prob", True, True)]
    first = F.col("position") == 1.0
    preds = []
    for _name, col, closed, per_slate in checks:
        c = F.col(col)
        ok = _finite(c) & (c <= 1.0) & ((c >= 0.0) if closed else (c > 0.0))
        pred = ~ok & first if per_slate else ~ok
        preds.append(pred)
    r = F.col("reward")
    fin = _finite(r)
    aggs = [F.count(F.when(p, 1)).alias(f"b{i}") for i, p in enumerate(preds)]
    aggs += [F.count(F.when(~fin, 1)).alias("nonfinite"), F.min(F.when(fin, r)).alias("lo"),
             F.max(F.when(fin, r)).alias("hi")]
    if reward_range is not None:
        lo, hi = float(reward_range[0]), float(reward_range[1])
        aggs.append(F.count(F.when(fin & ((r < lo) | (r > hi)), 1)).alias("outside"))
    agg = rows.agg(*aggs).collect()[0]
    for i, (name, col, closed, _per_slate) in enumerate(checks):
        if agg[f"b{i}"]:
            rule = "must lie in [0, 1]" if closed else "must lie in (0, 1]"
            hint = "" if closed else "zero propensities break common support; drop or re-log those slates"
            violations.append(Violation(name, rule, int(agg[f"b{i}"]),
                                        _ex(rows.filter(preds[i]).limit(5).collect(), col), hint))
    if agg["nonfinite"]:
        violations.append(Violation("reward", "must be finite", int(agg["nonfinite"]),
                                    _ex(rows.filter(~fin).limit(5).collect(), "reward")))
    if reward_range is None:
        rng = (0.0, 0.0) if agg["lo"] is None else (float(agg["lo"]), float(agg["hi"]))
    else:
        if not lo <= hi:
            raise UsageError(f"reward_range must be (low, high) with low <= high, got {reward_range}")
        rng = (lo, hi)
        if agg["outside"]:
            bad = fin & ((r < lo) | (r > hi))
            violations.append(Violation(
                "reward", f"must lie in the declared reward_range [{lo:g}, {hi:g}]", int(agg["outside"]),
                _ex(rows.filter(bad).limit(5).collect(), "reward"), "declare the right reward_range (of one slot's reward)"))
    if not violations and has_cond:
        # the running product of target / logging conditionals in position order (numpy's cumprod)
        w = Window.partitionBy("slate_id").orderBy("position").rowsBetween(Window.unboundedPreceding, 0)
        run = F.product(F.col("target_cond") / F.col("propensity_cond")).over(w)
        big = rows.select("slate_id", (~_finite(run)).alias("__big")).filter("__big").select("slate_id").distinct()
        n_big = big.count()
        if n_big:
            ex = big.orderBy("slate_id").limit(5).collect()
            violations.append(Violation(
                "conditional propensity",
                "the product over a slate's slots of target / logging conditional probabilities (its "
                "importance weight) must be finite in float64", n_big,
                tuple(f"slate {r['slate_id']!r}" for r in ex),
                "propensities this small (e.g. 1e-300) cannot support an importance-weighted estimate; "
                "drop those slates or check the logging probabilities"))
    if violations:
        raise InputError("logged slates", violations)
    varying = bool(varying_length and any(k != L for k, _ in hist))
    n_rows = sum(k * n for k, n in hist)
    min_slots = min(k for k, _ in hist) if hist else None
    return SparkSlateFeedback(rows, n_slates, L, varying, rng, has_cond, has_slate, n_rows, min_slots, chunk_rows)


# ---------------------------------------------------------------------------
# the reduce job
# ---------------------------------------------------------------------------


def _chunk_feedback(table, L: int, varying: bool, reward_range, has_cond: bool, has_slate: bool):
    """A SlateFeedback of a slate-complete chunk sorted by (slate, position), padded to the global L."""
    from receval.counterfactual.slates import SlateFeedback, _grid
    from receval.engines.spark import key_runs

    starts, sizes, cell_slate = key_runs(table, "slate_id")
    n_s = len(starts)
    cell_slot = np.asarray(table.column("position").to_numpy(zero_copy_only=False), dtype=np.float64).astype(np.int64) - 1

    def grid(name, fill=1.0):
        v = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        return _grid(v, cell_slate, cell_slot, n_s, L, fill)

    pc_, tc_ = (grid("propensity_cond"), grid("target_cond")) if has_cond else (None, None)
    ps, ts = (grid("slate_propensity")[:, 0], grid("target_slate_prob")[:, 0]) if has_slate else (None, None)
    d = SlateFeedback(grid("reward", 0.0), grid("propensity"), grid("target_prob"), pc_, tc_, ps, ts,
                      tuple(reward_range), None, sizes.astype(np.int64) if varying else None)
    return table.column("slate_id").take(starts), d, sizes


def _reduce(data: SparkSlateFeedback, estimators: list):
    import polars as pl
    import pyarrow as pa
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    from receval.counterfactual.slates import SlateFeedback, _pi_mismatch, _slate_columns
    from receval.engines.spark import _collect_arrow, _quiet_pandas_check, key_complete_chunks

    L, varying, rng = data.n_slots, data.varying, data.reward_range
    has_cond, has_slate = data.has_cond, data.has_slate
    # the column layout, from a one-slate dummy of the same shape
    one = np.ones((1, L))
    dummy = SlateFeedback(np.zeros((1, L)), one, one, one if has_cond else None, one if has_cond else None,
                          np.ones(1) if has_slate else None, np.ones(1) if has_slate else None, rng, None,
                          np.array([L]) if varying else None)
    S0, spans, w0 = _slate_columns(estimators, dummy)
    k = S0.shape[1]
    kinds = list(w0)
    widths = {kd: (w0[kd].shape[1] if w0[kd].ndim == 2 else 1) for kd in kinds}
    want_pi = any(e.weight_kind == "pi" for e in estimators)
    id_type = data.rows.schema["slate_id"].dataType
    fields = [T.StructField("slate_id", id_type, True), T.StructField("n_rows", T.DoubleType(), True),
              T.StructField("pi_bad", T.DoubleType(), True)]
    fields += [T.StructField(f"s{j}", T.DoubleType(), True) for j in range(k)]
    fields += [T.StructField(f"w_{kd}_{j}", T.DoubleType(), True) for kd in kinds for j in range(widths[kd])]
    schema = T.StructType(fields)
    arrow_schema = to_arrow_schema(schema)
    chunk_rows = int(data.chunk_rows or CHUNK_ROWS)

    def kernel(batches):
        for table in key_complete_chunks(batches, chunk_rows, key="slate_id"):
            ids, d, sizes = _chunk_feedback(table, L, varying, rng, has_cond, has_slate)
            S, _, weights = _slate_columns(estimators, d)
            pi_bad = _pi_mismatch(d) if want_pi else np.zeros(d.n_slates, dtype=bool)
            parts = [sizes.astype(np.float64)[:, None], pi_bad.astype(np.float64)[:, None], S]
            parts += [weights[kd].reshape(d.n_slates, widths[kd]) for kd in kinds]
            arrays = [ids] + [pa.array(c) for c in np.column_stack(parts).T]
            yield from pa.Table.from_arrays(arrays, schema=arrow_schema).to_batches()

    part = data.rows.repartition("slate_id").sortWithinPartitions("slate_id", "position")
    with _quiet_pandas_check():
        per_slate = part.mapInArrow(kernel, schema)
    units = pl.from_arrow(_collect_arrow(per_slate)).sort("slate_id")
    n = units.height
    if n != data.n_slates:
        raise RuntimeError("the per-slate reduction lost slates: the data changed between validation and reduction")
    S = np.empty((n, k))
    for j in range(k):
        S[:, j] = units[f"s{j}"].to_numpy()
    weights = {}
    for kd in kinds:
        # C order, as locally: numpy's reductions along axis 0 add in another order on Fortran arrays
        m = np.ascontiguousarray(units.select([f"w_{kd}_{j}" for j in range(widths[kd])]).to_numpy(),
                                 dtype=np.float64)
        weights[kd] = m if w0[kd].ndim == 2 else np.ascontiguousarray(m[:, 0])
    lengths = units["n_rows"].to_numpy().astype(np.int64)
    # the layout seen by the statistics code: shapes, lengths and the reward range (no values)
    zero = np.broadcast_to(np.zeros(1), (n, L))
    layout = SlateFeedback(zero, zero, zero, reward_range=rng, slate_ids=units["slate_id"].to_numpy(),
                           length=lengths if varying else None)
    return S, spans, weights, bool(units["pi_bad"].sum() > 0), layout
