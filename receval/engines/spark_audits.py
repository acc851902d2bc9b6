"""The audits on Spark: the reduce step runs on the executors, the statistics on the driver.

What runs where (docs/scale.md, "Audits on Spark"):

* ``disparity_audit`` / ``calibration_audit``: the per-request metric values
  and calibration statistics come from the Spark engine of
  :func:`receval.evaluate` (:func:`receval.engines.spark.score_spark`: the
  same contract checks before any job, the same numpy kernel in
  ``mapInArrow``); only per-request rows reach the driver. The attribute and
  ``users`` tables are per user / request: their used columns are collected
  (:func:`unit_inputs`). From there on the audit is the local code.
* ``popularity_bias_audit`` / ``safety_audit``: run and label rows are
  checked on Spark (one aggregation job, the local audit's rules), unioned,
  repartitioned by request and sorted within partitions; ``mapInArrow`` runs
  the local audit's per-request code (``_ranked`` + ``_request_matrix``) on
  request-complete chunks, with the item table (catalog / flags, one row per
  item) shipped to the tasks. One row per request comes back (its matrix
  row, its user); the group statistics and the bootstrap run on the driver
  as locally.
* ``miscalibration_audit``: run and history rows are unioned and
  partitioned by *user*; each task cuts user-complete chunks and runs the
  local per-user code (``_ranked``, ``_history_frame``, ``_user_values``);
  one row per request (with its user's C_KL) comes back, and the driver runs
  the local ``_result``.
* ``exposure_audit``: the run is checked and ranked on Spark (the local
  ``_run_frame`` rules and ``rank_rows`` on request-complete chunks) and only
  its top-k rows come back (:func:`ranked_rows_spark`): the request x item
  exposure matrix its Gini and intervals read; from there the local code.

Everything not supported raises a :class:`~receval.errors.UsageError` before
any job. pyspark is imported only inside these functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from receval.errors import InputError, UsageError, Violation

__all__ = ["audit_engine", "refuse_spark", "unit_inputs", "SparkRun", "ranked_requests_spark", "popularity_spark",
           "safety_spark", "miscalibration_spark"]


def audit_engine(engine: str, *frames: Any, audit: str) -> str:
    """``"polars"`` or ``"spark"`` for an audit (``"auto"``: Spark when any input is a Spark DataFrame)."""
    from receval.engines import resolve_engine

    resolved = resolve_engine(engine, *frames)
    if resolved == "streaming":
        raise UsageError(f"{audit} runs in memory (engine='polars') or on Spark (engine='spark'); "
                         "the streaming engine serves receval.evaluate and receval.compare")
    return resolved


def refuse_spark(audit: str, *frames: Any, why: str) -> None:
    """UsageError (before any job) for an audit without a Spark path, when an input is a Spark DataFrame."""
    from receval.engines import is_spark_frame

    if any(is_spark_frame(f) for f in frames if f is not None):
        raise UsageError(
            f"{audit} does not run on Spark ({why}); collect its inputs (df.toArrow()) or write Parquet "
            "and audit locally. On Spark: disparity_audit, calibration_audit, exposure_audit, "
            "popularity_bias_audit, safety_audit, miscalibration_audit and drift_audit (docs/scale.md)")


def _local(obj: Any, columns: Sequence[str], *, all_columns: bool = False):
    """A per-unit table (one row per item / user / request) given as a Spark DataFrame, collected to the
    driver as polars: ``columns`` when all are present, else every column (as ``to_polars(columns=...)``
    projects, so errors list the same columns). Other inputs pass through."""
    import polars as pl

    from receval.engines import is_spark_frame
    from receval.engines.spark import _collect_arrow

    if not is_spark_frame(obj):
        return obj
    keep = [c for c in obj.columns if c in columns]
    if all_columns or len(keep) < len(set(columns)):
        keep = list(obj.columns)
    return pl.from_arrow(_collect_arrow(obj.select(*keep)))


# ---------------------------------------------------------------------------
# disparity_audit / calibration_audit
# ---------------------------------------------------------------------------


class SparkRun:
    """A run on Spark as ``disparity._units`` sees it: column names, and a row count on demand."""

    def __init__(self, df):
        self.df = df
        self.columns = list(df.columns)

    @property
    def height(self) -> int:  # error paths only
        return int(self.df.count())


def unit_inputs(run: Any, attributes: Any, users: Any, sensitive: Sequence[str]) -> tuple[SparkRun, Any, Any]:
    """The run as a Spark DataFrame (a path is read by Spark) and the attribute / users tables collected.

    Only the key columns and the sensitive attributes of ``attributes`` are
    collected (every column when a key or an attribute is missing, so that the
    error lists them as locally).
    """
    from receval.engines.spark import _session, to_spark

    spark = _session(run, attributes, users)
    df = to_spark(spark, run, kind="run", format="auto", name="run")
    if attributes is not None:
        from receval.engines import is_spark_frame

        if is_spark_frame(attributes):
            cols = set(attributes.columns)
            incomplete = not ({"request_id", "user_id"} & cols) or any(
                c not in cols and c not in df.columns for c in sensitive)
            wanted = [c for c in ("request_id", "user_id", *sensitive) if c in cols]
            attributes = _local(attributes, wanted, all_columns=incomplete)
    users = _local(users, ["request_id", "user_id"])
    return SparkRun(df), attributes, users


# ---------------------------------------------------------------------------
# popularity_bias_audit / safety_audit: per-request rows computed on Spark
# ---------------------------------------------------------------------------

_SIDE_RUN, _SIDE_LABELS = 0, 1
KIND_REQUEST, KIND_ERROR, KIND_UNKNOWN_ITEM = 0, 1, 2


@dataclass(frozen=True)
class RequestKernel:
    """What a task computes per request-complete chunk (picklable).

    ``audit``: ``"popularity"``, ``"safety"`` or ``"miscalibration"``;
    ``items``: the item table as Arrow IPC bytes (catalog with ``__pop``,
    ``__tail`` / flags with ``__flag`` / categories with ``__c``, ``__pc``);
    ``width``: columns of the per-request matrix; ``options``: the audit's
    settings ((n_head, n_tail), (negative_label,), (alpha, position_weight,
    history_weight)). Spark ships a large pickled function to the tasks as a
    broadcast variable.
    """

    audit: str
    items: bytes
    width: int
    k: int | None
    has_user: bool
    has_labels: bool
    options: tuple = ()


def _ipc(frame) -> bytes:
    import pyarrow as pa

    table = frame.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes):
    import polars as pl
    import pyarrow as pa

    return pl.from_arrow(pa.ipc.open_stream(pa.py_buffer(data)).read_all())


def _error_payload(err: InputError) -> str:
    return json.dumps({"frame": err.frame, "violations": [
        [v.column, v.rule, int(v.n_rows), list(v.examples), v.hint] for v in err.violations]})


def _chunk_rows(table, kernel: RequestKernel):
    """Per-request rows of one request-complete chunk (a polars frame with some of the output columns).

    The checks run in the local audit's order: the run (``_ranked``: duplicates, one user per request),
    the labels (duplicates), items missing from the item table (run, then relevant labels).
    """
    import polars as pl

    from receval.audits.exposure import _labels_frame
    from receval.audits.popularity import _ranked

    df = pl.from_arrow(table)
    side = df["__side"]
    run = df.filter(side == _SIDE_RUN).drop("__side", "label")
    if not kernel.has_user:
        run = run.drop("user_id")
    lab = df.filter(side == _SIDE_LABELS).select("request_id", "item_id", "label") if kernel.has_labels else None
    try:
        ranked = _ranked(run, kernel.k) if run.height else None
        if lab is not None:
            lab = _labels_frame(lab)  # nulls / finiteness were checked before the job; duplicates here
    except InputError as err:
        return pl.DataFrame({"__kind": [KIND_ERROR], "__error": [_error_payload(err)]},
                            schema={"__kind": pl.Int8, "__error": pl.String})
    if ranked is None:
        return None
    frame, requests = ranked
    items = _from_ipc(kernel.items)
    if kernel.audit == "popularity":
        from receval.audits.popularity import _request_matrix

        frame, missing = _join_items(frame, items, "run", "__pop", "__tail")
        if missing is None and lab is not None:
            missing = _unknown_relevant(lab, requests, items)
        if missing is not None:
            return missing
        n_head, n_tail = kernel.options
        mat, _, _ = _request_matrix(frame, requests, items, lab, n_head=n_head, n_tail=n_tail)
    else:
        from receval.audits.safety import _request_matrix

        frame, missing = _join_items(frame, items, "run", "__flag")
        if missing is not None:
            return missing
        (negative_label,) = kernel.options
        mat, _ = _request_matrix(frame, requests, lab, negative_label)
    out = requests.select("request_id", *(["user_id"] if kernel.has_user else []))
    out = out.with_columns(__kind=pl.lit(KIND_REQUEST, dtype=pl.Int8))
    return out.with_columns([pl.Series(f"m{j}", mat[:, j]) for j in range(kernel.width)])


def _unknown_relevant(lab, requests, items):
    """Relevant labels (label > 0) of the chunk's ranked requests whose item is not in the catalog (the
    local audit's check on PopREO's universe), as error rows; None when there is none."""
    import polars as pl

    from receval.audits._rank import item_positions

    rel = lab.filter(pl.col("label") > 0).join(requests.select("request_id"), on="request_id", how="semi")
    rel = rel.sort("request_id", "item_id").with_row_index("__rank")
    pos = item_positions(rel["item_id"], items["item_id"])
    if not (pos < 0).any():
        return None
    return _missing_rows(rel.filter(pl.Series(pos < 0)).with_columns(pl.col("__rank").cast(pl.Int64)), "labels")


def _missing_rows(rows, frame: str):
    import polars as pl

    rows = rows.with_columns(pl.col("item_id").cast(pl.String).alias("__item"))
    out = rows.group_by("__item", maintain_order=True).agg(
        pl.col("request_id").first(), pl.col("__rank").first(), pl.len().cast(pl.Int64).alias("__n"))
    return out.with_columns(__kind=pl.lit(KIND_UNKNOWN_ITEM, dtype=pl.Int8), __error=pl.lit(frame))


def _join_items(frame, items, name: str, *columns: str):
    """The ranked rows with the item table's columns; or error rows for items missing from it
    (one per distinct item: its first request and rank, and how many slots it fills)."""
    import polars as pl

    from receval.audits._rank import item_positions

    pos = item_positions(frame["item_id"], items["item_id"])
    if (pos < 0).any():
        return frame, _missing_rows(frame.filter(pl.Series(pos < 0)).rename({"rank": "__rank"}), name)
    return frame.with_columns([items[c].gather(pos) for c in columns]), None


def _partition(batches: Iterator, kernel: RequestKernel, arrow_schema, chunk_rows: int,
               key: str = "request_id") -> Iterator:
    """Inside a task: cut the partition, sorted by ``key``, into key-complete chunks (as the evaluate kernel)."""
    import pyarrow as pa

    chunk = _user_chunk_rows if key == "user_id" else _rank_chunk_rows if kernel.audit == "rank" else _chunk_rows

    def emit(table):
        out = chunk(table, kernel)
        if out is None or out.height == 0:
            return
        cols = []
        for f in arrow_schema:
            if f.name in out.columns:
                cols.append(out[f.name].to_arrow().cast(f.type))
            else:
                cols.append(pa.nulls(out.height, f.type))
        yield from pa.Table.from_arrays(cols, schema=arrow_schema).to_batches()

    from receval.engines.spark import key_complete_chunks

    for table in key_complete_chunks(batches, chunk_rows, key):
        yield from emit(table)


def _kernel_rows(df: Any, kernel: RequestKernel, schema: Any, chunk_rows: int | None, key: str = "request_id") -> Any:
    """Run ``kernel`` over ``df`` (repartitioned by ``key`` and sorted within partitions) in
    ``mapInArrow`` tasks and collect its rows (per-request rows and error rows) as a polars frame."""
    import polars as pl
    from pyspark.sql.pandas.types import to_arrow_schema

    from receval.engines import spark as engine

    arrow_schema = to_arrow_schema(schema)
    rows_per_chunk = int(chunk_rows or engine.CHUNK_ROWS)

    def fn(batches):
        yield from _partition(batches, kernel, arrow_schema, rows_per_chunk, key=key)

    with engine._quiet_pandas_check():
        out = df.mapInArrow(fn, schema)
    return pl.from_arrow(engine._collect_arrow(out))


# ---- input checks on Spark (the local audit's rules, one aggregation job)


def _audit_frame(obj: Any, spark, *, name: str, required: Sequence[str], optional: Sequence[str], hint: str):
    """A run / labels input on Spark with its columns checked (the local ``_require``), from the schema."""
    from receval.engines.spark import to_spark

    df = to_spark(spark, obj, kind=name, format="auto", name=name)
    missing = [c for c in required if c not in df.columns]
    if missing:
        n = int(df.count())
        raise InputError(name, [Violation(c, "required column is missing", n, (), hint) for c in missing])
    return df.select(*[c for c in (*required, *optional) if c in df.columns])


def _numeric(df, column: str) -> tuple[bool, str]:
    from receval.engines.spark import column_type

    t = column_type(df.schema[column].dataType)
    return t.kind in ("int", "numeric"), t.name


def _check_values(run, labels) -> None:
    """Nulls, numeric and finite scores / labels: the local ``_run_frame`` / ``_labels_frame`` rules, one job."""
    from functools import reduce

    from pyspark.sql import functions as F

    aggs, rules = [], []
    for frame, df, value in (("run", run, "score"), ("labels", labels, "label")):
        if df is None:
            continue
        ok, dtype = _numeric(df, value)
        exprs = [F.count(F.lit(1)).alias(f"n_{frame}")]
        for c in ("request_id", "item_id", value, *(["sample_id"] if "sample_id" in df.columns else [])):
            exprs.append(F.count(F.when(F.col(c).isNull(), 1)).alias(f"a{len(rules)}"))
            rules.append((frame, c, "must not be null"))
        if ok:
            v = F.col(value).cast("double")
            exprs.append(F.count(F.when(F.isnan(v) | (F.abs(v) == float("inf")), 1)).alias(f"a{len(rules)}"))
            rules.append((frame, value, "must be finite"))
        else:
            rules.append((frame, value, f"must be numeric:{dtype}"))
        aggs.append(df.agg(*exprs))
    row = reduce(lambda a, b: a.crossJoin(b), aggs).collect()[0]
    errors: dict[str, list[Violation]] = {}
    for j, (frame, column, rule) in enumerate(rules):
        if rule.startswith("must be numeric:"):
            errors.setdefault(frame, []).append(Violation(column, "must be numeric", int(row[f"n_{frame}"]),
                                                          (f"dtype {rule.split(':', 1)[1]}",)))
        elif n := int(row[f"a{j}"]):
            errors.setdefault(frame, []).append(Violation(column, rule, n))
    for frame in ("run", "labels"):
        if frame in errors:
            raise InputError(frame, errors[frame])


def _raise_kernel_errors(rows, table_name: str, types: dict, *, frames: Sequence[str] = ("run", "labels"),
                         unknown_order: Sequence[str] = ("run", "labels"), extra: dict | None = None) -> None:
    """The errors found by the tasks, as the local audit raises them: run errors, then label errors
    (counts summed over chunks), then items missing from the item table (run, then labels).
    ``extra``: (column, rule) -> [count, hint] of run errors found on the driver, merged in."""
    import polars as pl

    from receval.audits.popularity import _unknown

    errors = rows.filter(pl.col("__kind") == KIND_ERROR)
    payloads = [json.loads(p) for p in errors["__error"].to_list()]
    for frame in frames:
        merged: dict[tuple, list] = {}
        if frame == "run":
            for (col, rule), (n, hint) in (extra or {}).items():
                merged[(col, rule)] = [n, [], hint]
        for e in payloads:
            if e["frame"] != frame:
                continue
            for col, rule, n, ex, hint in e["violations"]:
                m = merged.setdefault((col, rule), [0, [], hint])
                m[0] += n
                m[1].extend(ex)
        if merged:
            raise InputError(frame, [Violation(c, r, n, tuple(ex[:5]), h) for (c, r), (n, ex, h) in merged.items()])
    unknown = rows.filter(pl.col("__kind") == KIND_UNKNOWN_ITEM)
    for frame in unknown_order:
        found = unknown.filter(pl.col("__error") == frame)
        if not found.height:
            continue
        found = found.with_columns(_typed(found["request_id"], types["request_id"]))
        first = found.sort("request_id", "__rank").unique("__item", keep="first", maintain_order=True)
        items = _typed(first["__item"].rename("item_id"), types[f"{frame}_item_id"])
        err = _unknown(items, frame, table_name)
        v = err.violations[0]
        raise InputError(err.frame, [Violation(v.column, v.rule, int(found["__n"].sum()), v.examples, v.hint)])


def _typed(series, dtype):
    """Ids cast to text for the shuffle (run and labels disagreed) back to their own type (integers)."""
    if dtype is not None and series.dtype != dtype:
        return series.cast(dtype)
    return series


def _polars_int(dt):
    """The polars integer type of a Spark integer type, else None."""
    import polars as pl

    from receval.engines.spark import column_type

    t = column_type(dt)
    return getattr(pl, t.name) if t.kind == "int" else None


def _request_rows_schema(run_u, width: int):
    """Spark schema of the per-request rows a task emits: ids, the row kind, error fields, m0..m{width-1}."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField("request_id", run_u.schema["request_id"].dataType, True),
        T.StructField("user_id", run_u.schema["user_id"].dataType, True),
        T.StructField("__kind", T.ByteType(), True),
        T.StructField("__item", T.StringType(), True),
        T.StructField("__rank", T.LongType(), True),
        T.StructField("__n", T.LongType(), True),
        T.StructField("__error", T.StringType(), True),
        *[T.StructField(f"m{j}", T.DoubleType(), True) for j in range(width)],
    ])


def ranked_requests_spark(run: Any, labels: Any, items, kernel: RequestKernel, *, table_name: str,
                          item_columns: Sequence[str], chunk_rows: int | None = None):
    """Per-request rows of ``kernel`` on Spark: a polars frame (request_id[, user_id], m0..m{width-1})
    sorted by request_id, the order of the local audit's requests."""
    import polars as pl
    from pyspark.sql import functions as F

    from receval.engines import spark as engine

    spark = engine._session(run, labels)
    run_df = _audit_frame(run, spark, name="run", required=("request_id", "item_id", "score"),
                          optional=("user_id", "sample_id"), hint="a run has request_id, item_id, score")
    if "user_id" in run_df.columns and "sample_id" in run_df.columns:
        # as locally: _ranked keeps (and checks) sample_id only from a run without user_id
        run_df = run_df.drop("sample_id")
    lab_df = None
    if labels is not None:
        lab_df = _audit_frame(labels, spark, name="labels", required=("request_id", "item_id", "label"),
                              optional=(), hint="labels have request_id, item_id, label")
    _check_values(run_df, lab_df)
    has_user = "user_id" in run_df.columns
    kernel = RequestKernel(kernel.audit, _ipc(items.select("item_id", *item_columns)), kernel.width, kernel.k,
                           has_user, lab_df is not None, kernel.options)

    # one id type on both sides (text when they differ, as the local joins); cast back on the driver
    types = {"request_id": _polars_int(run_df.schema["request_id"].dataType),
             "run_item_id": _polars_int(run_df.schema["item_id"].dataType),
             "labels_item_id": _polars_int(lab_df.schema["item_id"].dataType) if lab_df is not None else None}
    if lab_df is not None:
        for c in ("request_id", "item_id"):
            if run_df.schema[c].dataType != lab_df.schema[c].dataType:
                run_df = run_df.withColumn(c, F.col(c).cast("string"))
                lab_df = lab_df.withColumn(c, F.col(c).cast("string"))
    user = F.col("user_id") if has_user else F.lit(None).cast("string").alias("user_id")
    sample = ["sample_id"] if "sample_id" in run_df.columns else []
    run_u = run_df.select("request_id", "item_id", F.col("score").cast("double").alias("score"), user,
                          F.lit(_SIDE_RUN).cast("tinyint").alias("__side"), F.lit(None).cast("double").alias("label"),
                          *sample)
    union = run_u
    if lab_df is not None:
        utype = run_u.schema["user_id"].dataType
        union = run_u.unionByName(lab_df.select(
            "request_id", "item_id", F.lit(None).cast("double").alias("score"), F.lit(None).cast(utype).alias("user_id"),
            F.lit(_SIDE_LABELS).cast("tinyint").alias("__side"), F.col("label").cast("double").alias("label"),
            *[F.lit(None).cast(run_u.schema[c].dataType).alias(c) for c in sample]))
    union = union.repartition("request_id").sortWithinPartitions("request_id")
    schema = _request_rows_schema(run_u, kernel.width)
    rows = _kernel_rows(union, kernel, schema, chunk_rows)
    _raise_kernel_errors(rows, table_name, types)
    rows = rows.filter(pl.col("__kind") == KIND_REQUEST)
    rows = rows.with_columns(_typed(rows["request_id"], types["request_id"])).sort("request_id")
    if rows.height == 0:
        raise InputError("run", [Violation("request_id", "the run must hold at least one ranked item", 0)])
    return rows.select("request_id", *(["user_id"] if has_user else []), *[f"m{j}" for j in range(kernel.width)])


# ---------------------------------------------------------------------------
# exposure_audit: the ranked top-k rows computed on Spark
# ---------------------------------------------------------------------------


def _rank_chunk_rows(table, kernel: RequestKernel):
    """The ranked top-k rows of one request-complete chunk (the local ``_run_frame`` checks and
    ``rank_rows``), or an error row."""
    import polars as pl

    from receval.audits._rank import rank_rows
    from receval.audits.exposure import _run_frame

    try:
        frame = _run_frame(pl.from_arrow(table))
    except InputError as err:
        return pl.DataFrame({"__kind": [KIND_ERROR], "__error": [_error_payload(err)]},
                            schema={"__kind": pl.Int8, "__error": pl.String})
    ranked = rank_rows(frame, kernel.k, ("request_id", "sample_id"))
    return ranked.with_columns(__kind=pl.lit(KIND_REQUEST, dtype=pl.Int8))


def ranked_rows_spark(run: Any, k: int | None, *, chunk_rows: int | None = None):
    """The top-k rows of every (request, sample) block of ``run`` ranked on Spark, as the local
    ``rank_rows(_run_frame(run), k, ("request_id", "sample_id"))`` returns them: a polars frame
    (request_id, item_id, score, sample_id, rank), blocks in (request_id, sample_id) order; and
    whether the run has a ``sample_id`` column.

    Checks before the shuffle: required columns, nulls, numeric and finite scores (one aggregation
    job, the local rules); repeated items within a block come back from the tasks. Only the top-k
    rows reach the driver (``k=None``: every row: the whole run).
    """
    import polars as pl
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from receval.engines import spark as engine

    spark = engine._session(run)
    run_df = _audit_frame(run, spark, name="run", required=("request_id", "item_id", "score"),
                          optional=("sample_id",), hint="a run has request_id, item_id, score")
    _check_values(run_df, None)
    types = {"request_id": _polars_int(run_df.schema["request_id"].dataType),
             "run_item_id": _polars_int(run_df.schema["item_id"].dataType)}
    sample = F.col("sample_id") if "sample_id" in run_df.columns else F.lit(0).cast("long").alias("sample_id")
    rows_df = run_df.select("request_id", "item_id", F.col("score").cast("double").alias("score"), sample)
    rows_df = rows_df.repartition("request_id").sortWithinPartitions("request_id")
    schema = T.StructType([
        T.StructField("request_id", rows_df.schema["request_id"].dataType, True),
        T.StructField("item_id", rows_df.schema["item_id"].dataType, True),
        T.StructField("score", T.DoubleType(), True),
        T.StructField("sample_id", rows_df.schema["sample_id"].dataType, True),
        T.StructField("rank", T.LongType(), True),
        T.StructField("__kind", T.ByteType(), True),
        T.StructField("__item", T.StringType(), True),
        T.StructField("__rank", T.LongType(), True),
        T.StructField("__n", T.LongType(), True),
        T.StructField("__error", T.StringType(), True),
    ])
    rows = _kernel_rows(rows_df, RequestKernel("rank", b"", 0, k, False, False), schema, chunk_rows)
    _raise_kernel_errors(rows, "groups", types, frames=("run",), unknown_order=())
    rows = rows.filter(pl.col("__kind") == KIND_REQUEST)
    rows = rows.with_columns(_typed(rows["request_id"], types["request_id"]),
                             _typed(rows["item_id"], types["run_item_id"]))
    ranked = rows.select("request_id", "item_id", "score", "sample_id", "rank").sort("request_id", "sample_id", "rank")
    return ranked, "sample_id" in run_df.columns


def exposure_inputs_spark(run: Any, groups: Any, labels: Any, *, k: int | None, group_column: str):
    """``exposure_audit``'s inputs with the run ranked on Spark: (PreparedRun of the top-k rows, groups,
    labels), the two tables collected (one row per item; the judged pairs)."""
    from receval.audits._prepared import PreparedRun

    if isinstance(run, list | tuple):
        raise UsageError("exposure_audit on Spark: give one run frame, with a sample_id column for several "
                         "sampled rankings per request (a list of frames is for local frames)")
    ranked, sampled = ranked_rows_spark(run, k)
    return (PreparedRun(run, ranked, k, sampled), _local(groups, ["item_id", group_column]),
            _local(labels, ["request_id", "item_id", "label"]))


# ---------------------------------------------------------------------------
# the driver side of popularity_bias_audit / safety_audit
# ---------------------------------------------------------------------------


def popularity_spark(run: Any, catalog: Any, *, k, popularity, tail_quantile, labels, user_groups, group_column,
                     history, n_boot, level, seed, min_group_size):
    """:func:`receval.audits.popularity.popularity_bias_audit` with the per-request reduce on Spark."""

    from receval.audits import popularity as P

    if history is not None:
        raise UsageError("popularity_bias_audit on Spark: history= (the popularity lift, per user) is not "
                         "supported yet; run the lift on a local frame (e.g. df.toArrow()) or without history")
    if isinstance(run, list | tuple):
        raise UsageError("run: one run frame expected (sampled rankings are for exposure_audit)")
    cat = P._catalog_popularity(_local(catalog, ["item_id", popularity]), popularity)
    cat, threshold, n_head, n_tail = P._head_and_tail(cat, tail_quantile)
    kernel = RequestKernel("popularity", b"", 12, k, False, False, (n_head, n_tail))
    rows = ranked_requests_spark(run, labels, cat, kernel, table_name="catalog", item_columns=("__pop", "__tail"))
    mat = np.ascontiguousarray(rows.select([f"m{j}" for j in range(12)]).to_numpy())  # the local layout: same sums
    requests = rows.drop([f"m{j}" for j in range(12)])
    finishes = P._finishes(labels is not None)
    codes, names = P._user_group_codes(requests, _local(user_groups, ["request_id", "user_id", group_column or ""]),
                                       group_column)
    overall, groups, method = P._rows(mat, finishes, codes, names, min_group_size=min_group_size,
                                      n_boot=n_boot, level=level, seed=seed, fold=("pop_rsp", "pop_reo"))
    counts = {
        "n_requests": requests.height,
        "n_catalog_items": cat.height,
        "n_head_items": n_head,
        "n_tail_items": n_tail,
        "tail_threshold": P._num(threshold),
        "n_relevant": int(mat[:, 8].sum() + mat[:, 9].sum()),  # relevant labels of ranked requests, head + tail
        "n_groups": len(names),
        "n_groups_suppressed": sum(g.suppressed for g in groups),
    }
    return P.PopularityAudit(
        overall=overall,
        groups=groups,
        settings={
            "k": k,
            "popularity": popularity,
            "tail_quantile": float(tail_quantile),
            "labels": labels is not None,
            "group_column": group_column,
            "history": False,
            "exclude_history": False,
            **P.interval_settings(min_group_size, n_boot, level, seed, method),
        },
        counts=counts,
        lift=None,
    )


def safety_spark(run: Any, flags: Any, *, k, flag_column, user_groups, group_column, labels, negative_label,
                 n_boot, level, seed, min_group_size):
    """:func:`receval.audits.safety.safety_audit` with the per-request reduce on Spark."""
    from receval.audits import safety as S

    if isinstance(run, list | tuple):
        raise UsageError("run: one run frame expected (sampled rankings are for exposure_audit)")
    table = S._flags_frame(_local(flags, ["item_id", flag_column]), flag_column)
    kernel = RequestKernel("safety", b"", 8, k, False, False,
                           (None if negative_label is None else float(negative_label),))
    rows = ranked_requests_spark(run, labels, table, kernel, table_name="flags", item_columns=("__flag",))
    mat = np.ascontiguousarray(rows.select([f"m{j}" for j in range(8)]).to_numpy())  # the local layout: same sums
    requests = rows.drop([f"m{j}" for j in range(8)])
    return S._result(mat, requests, table, _local(user_groups, ["request_id", "user_id", group_column or ""]),
                     int(mat[:, 6].sum() + mat[:, 7].sum()),  # negative shown items, flagged or not
                     k=k, flag_column=flag_column, has_labels=labels is not None, negative_label=negative_label,
                     group_column=group_column, n_boot=n_boot, level=level, seed=seed, min_group_size=min_group_size)


# ---------------------------------------------------------------------------
# miscalibration_audit: user-complete chunks (run and history rows by user)
# ---------------------------------------------------------------------------

_SIDE_HISTORY = 2
KIND_COUNTS = 3


def _user_chunk_rows(table, kernel: RequestKernel):
    """Per-request rows of a user-complete chunk with their user's C_KL, weight and history flag
    (``m0``..``m2``), and one counts row (history rows, repeated pairs, history users not in the run)."""
    import polars as pl

    from receval.audits._rank import item_positions
    from receval.audits.miscalibration import _user_values
    from receval.audits.popularity import _history_frame, _history_of_run_users, _ranked, _run_users

    alpha, position_weight, weight = kernel.options
    df = pl.from_arrow(table)
    side = df["__side"]
    run = df.filter(side == _SIDE_RUN).select("request_id", "user_id", "item_id", "score")
    # a user's history rows in a fixed order (Spark's order within a partition is arbitrary)
    hist_rows = df.filter(side == _SIDE_HISTORY).select("user_id", "item_id", "__w").sort("user_id", "item_id", "__w")
    hist_rows = hist_rows.rename({"__w": weight}) if weight else hist_rows.drop("__w")
    try:
        ranked = _ranked(run, kernel.k) if run.height else None
        hist, hinfo = _history_frame(hist_rows, weight=weight)
    except InputError as err:
        return pl.DataFrame({"__kind": [KIND_ERROR], "__error": [_error_payload(err)]},
                            schema={"__kind": pl.Int8, "__error": pl.String})
    if ranked is None:
        frame = requests = None
        users = pl.DataFrame({"user_id": pl.Series([], dtype=hist["user_id"].dtype), "__u": pl.Series([], dtype=pl.Int64)})
    else:
        frame, requests = ranked
        users, uq = _run_users(requests)  # null users were refused before the job
    hist = _history_of_run_users(hist, users, hinfo)
    counts = pl.DataFrame({"__kind": [KIND_COUNTS], "m0": [float(hinfo["n_history_rows"])],
                           "m1": [float(hinfo["n_history_repeats"])],
                           "m2": [float(hinfo["n_history_users_not_in_run"])]},
                          schema={"__kind": pl.Int8, "m0": pl.Float64, "m1": pl.Float64, "m2": pl.Float64})
    if requests is None:
        return counts
    cats = _from_ipc(kernel.items)
    known = cats["item_id"].unique()
    missing = []
    for name, rows in (("history", hist.with_columns(request_id=pl.lit(None, dtype=requests["request_id"].dtype),
                                                      __rank=pl.int_range(pl.len(), dtype=pl.Int64))),
                       ("run", frame.rename({"rank": "__rank"}))):
        pos = item_positions(rows["item_id"], known)
        if (pos < 0).any():
            missing.append(_missing_rows(rows.filter(pl.Series(pos < 0)), name))
    if missing:
        return pl.concat(missing, how="diagonal_relaxed")
    ckl_u, hw, has_rows = _user_values(frame, uq, users.height, requests.height, hist, cats, alpha, position_weight)
    out = requests.select("request_id", "user_id").with_columns(
        __kind=pl.lit(KIND_REQUEST, dtype=pl.Int8), m0=pl.Series(ckl_u[uq]), m1=pl.Series(hw[uq]),
        m2=pl.Series(has_rows[uq].astype(np.float64)))
    return pl.concat([out, counts], how="diagonal_relaxed")


def miscalibration_spark(run: Any, history: Any, catalog: Any, *, category, k, alpha, position_weight,
                         history_weight, user_groups, group_column, n_boot, level, seed, min_group_size):
    """:func:`receval.audits.miscalibration.miscalibration_audit` with the per-user reduce on Spark.

    Run and history rows are unioned and partitioned by ``user_id``; each task cuts user-complete
    chunks and runs the local ``_ranked`` / ``_history_frame`` / ``_user_values``; one row per request
    (with its user's values) comes back, and the driver runs the local ``_result``.
    """
    import polars as pl
    from pyspark.sql import functions as F

    from receval.audits import miscalibration as M
    from receval.audits import popularity as P
    from receval.engines import spark as engine

    if isinstance(run, list | tuple):
        raise UsageError("run: one run frame expected (sampled rankings are for exposure_audit)")
    spark = engine._session(run, history, catalog)
    run_df = _audit_frame(run, spark, name="run", required=("request_id", "item_id", "score"), optional=("user_id",),
                          hint="a run has request_id, item_id, score")
    _check_values(run_df, None)
    if "user_id" not in run_df.columns:  # the local error: a history is per user
        P._run_users(pl.DataFrame({"request_id": [], "__q": []}))
    n_null = run_df.agg(F.count(F.when(F.col("user_id").isNull(), 1)).alias("n")).collect()[0]["n"]
    if n_null:  # the local error, counted in requests
        ids = engine._collect_arrow(run_df.filter(F.col("user_id").isNull()).select("request_id").distinct())
        null_requests = pl.from_arrow(ids).with_columns(user_id=pl.lit(None, dtype=pl.String),
                                                       __q=pl.int_range(pl.len(), dtype=pl.Int64))
        P._run_users(null_requests)
    cats, names, ccounts = M._categories(_local(catalog, ["item_id", category]), category)
    hist_df = _history_spark(history, spark, history_weight)

    types = {"request_id": _polars_int(run_df.schema["request_id"].dataType),
             "run_item_id": _polars_int(run_df.schema["item_id"].dataType),
             "history_item_id": _polars_int(hist_df.schema["item_id"].dataType),
             "user_id": _polars_int(run_df.schema["user_id"].dataType)}
    for c in ("user_id", "item_id"):  # one type on both sides (text when they differ, as the local joins)
        if run_df.schema[c].dataType != hist_df.schema[c].dataType:
            run_df = run_df.withColumn(c, F.col(c).cast("string"))
            hist_df = hist_df.withColumn(c, F.col(c).cast("string"))
    w = F.col(history_weight).cast("double") if history_weight else F.lit(1.0)
    run_u = run_df.select("user_id", "request_id", "item_id", F.col("score").cast("double").alias("score"),
                          F.lit(None).cast("double").alias("__w"), F.lit(_SIDE_RUN).cast("tinyint").alias("__side"))
    hist_u = hist_df.select("user_id", F.lit(None).cast(run_u.schema["request_id"].dataType).alias("request_id"),
                            "item_id", F.lit(None).cast("double").alias("score"), w.alias("__w"),
                            F.lit(_SIDE_HISTORY).cast("tinyint").alias("__side"))
    union = run_u.unionByName(hist_u).repartition("user_id").sortWithinPartitions("user_id")
    kernel = RequestKernel("miscalibration", _ipc(cats), 3, k, True, False, (alpha, position_weight, history_weight))
    schema = _request_rows_schema(run_u, 3)
    rows = _kernel_rows(union, kernel, schema, None, key="user_id")
    per_request = rows.filter(pl.col("__kind") == KIND_REQUEST)
    # a request whose rows name two users lands in two users' chunks: counted as the local _ranked does
    split = per_request.filter(pl.col("request_id").is_duplicated()).height
    extra = {("user_id", "one user per request"): [split, "a request belongs to a single user"]} if split else None
    _raise_kernel_errors(rows, "catalog", types, frames=("run", "history"), unknown_order=("history", "run"),
                         extra=extra)
    per_request = per_request.with_columns(_typed(per_request["request_id"], types["request_id"]),
                                           _typed(per_request["user_id"], types["user_id"])).sort("request_id")
    if per_request.height == 0:
        raise InputError("run", [Violation("request_id", "the run must hold at least one ranked item", 0)])
    counts = rows.filter(pl.col("__kind") == KIND_COUNTS)
    hinfo = {"n_history_rows": int(counts["m0"].sum()), "n_history_repeats": int(counts["m1"].sum()),
             "n_history_users_not_in_run": int(counts["m2"].sum())}
    requests = per_request.select("request_id", "user_id").with_columns(__q=pl.int_range(pl.len(), dtype=pl.Int64))
    users, uq = P._run_users(requests)
    first = np.unique(uq, return_index=True)[1]  # a request of each user, in user order
    vals = per_request.select("m0", "m1", "m2").to_numpy()[first]
    return M._result(requests, uq, users.height, np.ascontiguousarray(vals[:, 0]), np.ascontiguousarray(vals[:, 1]),
                     vals[:, 2] > 0, hinfo, ccounts, user_groups=_local(user_groups, ["request_id", "user_id",
                                                                                      group_column or ""]),
                     group_column=group_column, category=category, k=k, alpha=alpha,
                     position_weight=position_weight, history_weight=history_weight, n_boot=n_boot, level=level,
                     seed=seed, min_group_size=min_group_size)


def _history_spark(history: Any, spark, weight: str | None):
    """The history on Spark, checked with the local ``_history_frame`` rules: columns and types from the
    schema (the local function run on an empty frame of the same schema), values by one aggregation job.
    Violations of values carry no examples (the local ones name row numbers, which Spark has not)."""
    import polars as pl
    from pyspark.sql import functions as F

    from receval.audits.popularity import _history_frame
    from receval.engines.spark import to_spark

    df = to_spark(spark, history, kind="history", format="auto", name="history")
    cols = ["user_id", "item_id"] + ([weight] if weight else [])
    empty = pl.from_arrow(_arrow_schema_of(df.select(*[c for c in df.columns if c in cols] if all(
        c in df.columns for c in cols) else df.columns)).empty_table())
    try:
        _history_frame(empty, weight=weight)
    except InputError as err:
        n = int(df.count())  # whole-column violations count every row, as locally
        raise InputError(err.frame, [Violation(v.column, v.rule, n, v.examples, v.hint) for v in err.violations]) from None
    df = df.select(*cols)
    exprs = [F.count(F.when(F.col(c).isNull(), 1)).alias(c) for c in ("user_id", "item_id")]
    if weight:
        x = F.col(weight).cast("double")
        exprs.append(F.count(F.when(x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")) | (x < 0), 1)).alias("__w"))
    row = df.agg(*exprs).collect()[0]
    violations = [Violation(c, "must not be null", int(row[c])) for c in ("user_id", "item_id") if row[c]]
    if weight and row["__w"]:
        violations.append(Violation(weight, "must be finite, >= 0 and not null", int(row["__w"])))
    if violations:
        raise InputError("history", violations)
    return df


def _arrow_schema_of(df):
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)
