"""The Spark engine: the reduce step of ``evaluate`` / ``compare`` on a PySpark DataFrame.

What runs where (docs/scale.md):

* **driver, before any job**: column mapping, required columns, id and
  number types (from the schema), unsupported metrics;
* **one aggregation job** (a scan, no shuffle): row counts, nulls / NaN,
  non-finite labels, predictions outside [0, 1] — raised as the same
  :class:`~receval.errors.InputError` as locally, before the expensive job;
* **quantile bin edges** (``ece`` / ``mce`` with ``strategy=quantile`` only):
  the exact quantiles of the evaluated rows' predictions, by counting and
  bracketing jobs (:func:`_quantile_edges`), shipped to the kernel in the
  :class:`~receval.engines._chunks.ChunkSpec`;
* **the kernel job**: run and label rows are unioned, repartitioned by
  ``request_id`` and sorted within partitions by ``request_id`` (one key: a
  radix sort for integer ids), so each partition holds whole requests and each
  request's rows arrive together; ``mapInArrow`` streams each partition
  through :func:`receval.engines._chunks.score_requests` — the numpy kernel of
  the in-memory engine — a request-complete chunk (about
  :data:`CHUNK_ROWS` rows) at a time, and emits one row per request (with
  beyond-accuracy metrics: plus its top-k item ids in rank order);
* **driver**: the per-request rows (one per request: far fewer than the
  impressions) are collected as Arrow, put in canonical order and handed to
  the same statistics code as locally (bootstrap, tests, slices); the
  beyond-accuracy metrics run the local ``beyond.compute`` on the top-k
  lists and the catalog (a Spark catalog is collected, in item-id order).

pyspark is imported only inside these functions.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from receval.data.contract import ColumnMapping
from receval.engines._chunks import ChunkSpec, chunk_spec, output_schema
from receval.engines._contract import (
    ColumnType,
    ValueCheck,
    check_schema,
    raise_value_violations,
    run_and_label_frames,
    value_checks,
)
from receval.errors import UsageError

__all__ = ["score_spark", "CHUNK_ROWS"]

#: rows (run + label) handed to the kernel at once inside a partition
CHUNK_ROWS = 1 << 20

_SIDE_RUN, _SIDE_LABELS = 0, 1

#: order statistics found per bracketing pass for quantile bin edges (at most 2 * (bins + 1) ranks in all)
_RANKS_PER_PASS = 64


@contextmanager
def _quiet_pandas_check():
    # pyspark warns that it does not fully support pandas >= 3 whenever an
    # Arrow UDF is declared; receval's mapInArrow function never touches
    # pandas, so that warning is not about anything receval does
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        yield


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def _session(*frames: Any):
    from receval.engines import is_spark_frame

    for f in frames:
        if is_spark_frame(f):
            return f.sparkSession
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    return active if active is not None else SparkSession.builder.getOrCreate()


def _spark_format(path: str, format: str) -> str:
    from receval.data.readers import _EXTENSIONS

    if format != "auto":
        return format
    for suffix in reversed([s.lower() for s in os.path.splitext(path.rstrip("/"))[1:] if s]):
        if suffix in _EXTENSIONS:
            return _EXTENSIONS[suffix]
    return "parquet"  # a directory of Parquet files, the usual layout on a cluster


def to_spark(spark, obj: Any, *, kind: str, format: str, name: str, columns: list[str] | None = None):
    """A Spark DataFrame from a Spark frame, a path read by Spark, or a local frame."""
    from receval.data.readers import to_polars
    from receval.engines import is_spark_frame

    if is_spark_frame(obj):
        return obj
    if isinstance(obj, str | os.PathLike):
        path = os.fspath(obj)
        fmt = _spark_format(path, format)
        if fmt == "parquet":
            return spark.read.parquet(path)
        if fmt in ("csv", "tsv"):
            return spark.read.csv(path, header=True, inferSchema=True, sep="\t" if fmt == "tsv" else ",")
        if fmt == "jsonl":
            return spark.read.json(path)
        if fmt != "trec":
            raise UsageError(f"unknown format {format!r}; use auto, trec, parquet, csv, tsv or jsonl")
        # TREC files are small text files on the driver: read them locally
    frame = to_polars(obj, kind=kind, format=format, name=name, columns=columns)
    return _from_polars(spark, frame)


def _from_polars(spark, frame):
    table = frame.to_arrow()
    import pyarrow as pa

    # Spark reads plain (not large / view) Arrow strings
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type) else f
        for f in table.schema
    ]
    table = table.cast(pa.schema(fields))
    try:
        return spark.createDataFrame(table)  # pyspark >= 4
    except TypeError:  # pragma: no cover - pyspark 3.5 takes pandas
        with _quiet_pandas_check():
            return spark.createDataFrame(table.to_pandas())


_INT = {"ByteType": "Int8", "ShortType": "Int16", "IntegerType": "Int32", "LongType": "Int64"}
_OTHER = {
    "DateType": "Date",
    "TimestampType": "Datetime(time_unit='us', time_zone='UTC')",
    "TimestampNTZType": "Datetime(time_unit='us', time_zone=None)",
    "BinaryType": "Binary",
}


def column_type(dt) -> ColumnType:
    """A Spark type as the contract sees it, named as polars would name it."""
    n = type(dt).__name__
    if n in _INT:
        return ColumnType("int", _INT[n])
    if n in ("StringType", "VarcharType", "CharType"):
        return ColumnType("str", "String")
    if n == "FloatType":
        return ColumnType("numeric", "Float32")
    if n == "DoubleType":
        return ColumnType("numeric", "Float64")
    if n == "DecimalType":
        return ColumnType("numeric", f"Decimal(precision={dt.precision}, scale={dt.scale})")
    if n == "BooleanType":
        return ColumnType("bool", "Boolean")
    if n == "NullType":
        return ColumnType("null", "Null")
    return ColumnType("other", _OTHER.get(n, dt.simpleString()))


_CAST = {"int": "bigint", "str": "string", "float": "double"}


class _Frame:
    """A Spark frame checked against the contract and cast to canonical columns."""

    def __init__(self, df, kind: str, mapping: ColumnMapping, *, name: str, use: tuple[str, ...],
                 passthrough: tuple[str, ...] = ()):
        from pyspark.sql import functions as F

        self.name, self.mapping = name, mapping
        types = {f.name: column_type(f.dataType) for f in df.schema.fields}
        self.targets = check_schema(
            types, kind, mapping, name=name, use=use, passthrough=passthrough,
            count=df.count, head=lambda c: [r[0] for r in df.select(c).limit(3).collect()],
        )
        self.passthrough = tuple(c for c in passthrough if c not in self.targets)
        self.df = df.select(
            [F.col(mapping.source(c)).cast(_CAST[t]).alias(c) for c, t in self.targets.items()]
            + [F.col(c) for c in self.passthrough]
        )
        self.checks = value_checks(self.targets)

    def text_ids(self, column: str) -> None:
        """Compare ``column`` as text (when the other side has text ids, as locally)."""
        from pyspark.sql import functions as F

        if self.targets.get(column) == "int":
            self.targets[column] = "str"
            self.df = self.df.withColumn(column, F.col(column).cast("string"))


def _bad(check: ValueCheck):
    from pyspark.sql import functions as F

    col = F.col(check.column)
    if check.kind == "null":
        return col.isNull()
    if check.kind == "null_or_nan":
        return col.isNull() | F.isnan(col)
    if check.kind == "finite":  # null is not counted here (it is a null violation)
        return F.isnan(col) | (F.abs(col) == float("inf"))
    return F.isnan(col) | (col < 0.0) | (col > 1.0)  # unit_interval


def _aggregates(frame: _Frame, prefix: str):
    from pyspark.sql import functions as F

    return frame.df.agg(
        F.count(F.lit(1)).alias(f"{prefix}rows"),
        *[F.count(F.when(_bad(c), 1)).alias(f"{prefix}{j}") for j, c in enumerate(frame.checks)],
    )


def _show(value: str | None) -> str | None:
    return {"Infinity": "inf", "-Infinity": "-inf"}.get(value, value) if value is not None else None


def _examples(frame: _Frame, failing: list[int]) -> dict[int, list[str]]:
    from functools import reduce

    from pyspark.sql import functions as F

    from receval.engines._contract import format_example

    parts = [
        frame.df.filter(_bad(frame.checks[j])).select(
            F.lit(j).alias("__check"), "request_id", "item_id", F.col(frame.checks[j].column).cast("string").alias("__value")
        ).limit(3)
        for j in failing
    ]
    out: dict[int, list[str]] = {}
    for row in reduce(lambda a, b: a.unionByName(b), parts).collect():
        out.setdefault(row["__check"], []).append(format_example(row["request_id"], row["item_id"], _show(row["__value"])))
    return out


def _check_values(run: _Frame, labels: _Frame) -> tuple[int, int]:
    """One job: row counts and every value rule of both frames; raises on violations."""
    row = _aggregates(run, "r").crossJoin(_aggregates(labels, "l")).collect()[0]
    for frame, prefix in ((run, "r"), (labels, "l")):
        counts = [int(row[f"{prefix}{j}"]) for j in range(len(frame.checks))]
        failing = [j for j, n in enumerate(counts) if n]
        if failing:
            raise_value_violations(frame.name, frame.mapping, frame.checks, counts, _examples(frame, failing))
    return int(row["rrows"]), int(row["lrows"])


# ---------------------------------------------------------------------------
# the kernel job
# ---------------------------------------------------------------------------


def _spark_type(dtype):
    """Spark type of a fixed output column (polars dtype)."""
    import polars as pl
    from pyspark.sql import types as T

    if isinstance(dtype, pl.List):
        return T.ArrayType(_spark_type(dtype.inner), containsNull=True)
    return {
        pl.Int8: T.ByteType(), pl.Int32: T.IntegerType(), pl.Int64: T.LongType(), pl.Float64: T.DoubleType(),
        pl.Boolean: T.BooleanType(), pl.String: T.StringType(),
    }[dtype.base_type()]


def _out_schema(spec: ChunkSpec, df):
    """Spark schema of the per-request rows (constant columns keep their input type)."""
    import polars as pl
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in df.schema.fields}
    id_dtype = pl.Int64() if type(fields["request_id"]).__name__ == "LongType" else pl.String()
    schema = output_schema(spec, id_dtype, {c: pl.Null() for c in spec.constant})
    out = []
    for name, dtype in schema.items():
        if name.startswith("k") and not name.endswith("_varies") and name[1:].isdigit():
            out.append(T.StructField(name, fields[spec.constant[int(name[1:])]], True))
        elif name == "__top":  # the top-k item ids of the request, in rank order
            out.append(T.StructField(name, T.ArrayType(fields["item_id"], True), True))
        else:
            out.append(T.StructField(name, _spark_type(dtype), True))
    return T.StructType(out)


def key_complete_chunks(batches: Iterator, chunk_rows: int, key: str = "request_id") -> Iterator:
    """Inside a task: Arrow tables of about ``chunk_rows`` rows cut from a partition sorted by ``key``, each
    holding whole keys (a request's or user's rows never straddle two tables)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pending: list = []
    n_pending = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        n_pending += batch.num_rows
        if n_pending < chunk_rows:
            continue
        table = pa.Table.from_batches(pending)
        ids = table.column(key)
        cut = pc.index(ids, ids[len(ids) - 1]).as_py()  # first row of the last (maybe partial) key
        if cut > 0:
            yield table.slice(0, cut)
            rest = table.slice(cut)
            pending, n_pending = rest.to_batches(), rest.num_rows
    if n_pending:
        yield pa.Table.from_batches(pending)


def key_runs(table, key: str) -> tuple:
    """The runs of equal ``key`` in an Arrow table whose rows of a key are contiguous (a chunk of
    :func:`key_complete_chunks`): numpy arrays (first row of each run, its length, each row's run number)."""
    import numpy as np
    import pyarrow.compute as pc

    n = table.num_rows
    ids = table.column(key)
    change = np.asarray(pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False), dtype=bool)
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    sizes = np.diff(np.append(starts, n))
    return starts, sizes, np.repeat(np.arange(len(starts)), sizes)


def _run_partition(batches: Iterator, spec: ChunkSpec, arrow_schema, chunk_rows: int) -> Iterator:
    """Inside a task: cut the sorted partition into request-complete chunks and score them."""

    def score(table):
        import polars as pl

        from receval.engines._chunks import score_requests

        df = pl.from_arrow(table)
        side = df["__side"]
        run = df.filter(side == _SIDE_RUN).drop("__side", "label")
        labels = df.filter(side == _SIDE_LABELS).select("request_id", "item_id", "label").sort("request_id", "item_id")
        if spec.calibration:  # sums over rows, in a fixed order
            run = run.sort("request_id", "item_id")
        out = score_requests(run, labels, spec).to_arrow()
        yield from out.cast(arrow_schema).to_batches()

    for table in key_complete_chunks(batches, chunk_rows):
        yield from score(table)


def _collect_arrow(df):
    if hasattr(df, "toArrow"):
        return df.toArrow()  # pyspark >= 4
    import pyarrow as pa  # pragma: no cover - pyspark 3.5

    with _quiet_pandas_check():  # pragma: no cover
        return pa.Table.from_pandas(df.toPandas(), preserve_index=False)


def score_spark(
    run: Any,
    labels: Any,
    parsed: list,
    *,
    columns: Mapping[str, str] | ColumnMapping | None = None,
    label_columns: Mapping[str, str] | ColumnMapping | None = None,
    catalog: Any = None,
    catalog_columns: Mapping[str, str] | None = None,
    format: str = "auto",
    missing_in_run: str = "zero",
    missing_in_labels: str = "ignore",
    name: str = "run",
    slice_columns: tuple[str, ...] = (),
    chunk_rows: int | None = None,
):
    """:func:`receval.evaluation.score` on Spark; returns a :class:`~receval.evaluation.Scored`."""
    import polars as pl
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    from receval.engines._assemble import assemble

    spec = chunk_spec(parsed, catalog, engine="Spark", quantile=True)
    spark = _session(run, labels)
    run_map = ColumnMapping.of(columns)
    lab_map = ColumnMapping.of(label_columns) if label_columns is not None else run_map
    need_prediction = bool(spec.calibration)
    src = to_spark(spark, run, kind="run", format=format, name=name)
    read_labels = None if labels is None else (
        lambda cols: to_spark(spark, labels, kind="labels", format=format, name="labels", columns=cols))
    run_f, lab_f, constant = run_and_label_frames(
        src, list(src.columns), src.count, _Frame, read_labels, run_map=run_map, lab_map=lab_map, name=name,
        slice_columns=slice_columns, need_prediction=need_prediction)
    spec = dataclasses.replace(spec, constant=constant)

    run_rows, label_rows = _check_values(run_f, lab_f)
    if spec.quantile_bins:
        spec = dataclasses.replace(spec, quantile_edges=_quantile_edges(
            run_f.df, lab_f.df, spec.quantile_bins, labelled_only=missing_in_labels == "ignore"))

    run_cols = ["request_id", "item_id", "score"] + (["prediction"] if need_prediction else []) + list(constant)
    run_df = run_f.df.select(*run_cols, F.lit(_SIDE_RUN).cast("tinyint").alias("__side"),
                             F.lit(None).cast("double").alias("label"))
    types = {f.name: f.dataType for f in run_df.schema.fields}
    lab_df = lab_f.df.select(
        "request_id", "item_id",
        *[F.lit(None).cast(types[c]).alias(c) for c in run_cols[2:]],
        F.lit(_SIDE_LABELS).cast("tinyint").alias("__side"), "label",
    )
    union = run_df.unionByName(lab_df).repartition("request_id").sortWithinPartitions("request_id")
    out_schema = _out_schema(spec, run_df)
    arrow_schema = to_arrow_schema(out_schema)

    rows = int(chunk_rows or CHUNK_ROWS)

    def kernel(batches):
        yield from _run_partition(batches, spec, arrow_schema, rows)

    with _quiet_pandas_check():
        per_request = union.mapInArrow(kernel, out_schema)
    units = pl.from_arrow(_collect_arrow(per_request))
    return assemble(units, spec, parsed, missing_in_run=missing_in_run, missing_in_labels=missing_in_labels,
                    name=name, run_map=run_map, run_rows=run_rows, label_rows=label_rows, slice_columns=slice_columns,
                    catalog=None if catalog is None else lambda: _catalog(catalog, catalog_columns, format))


def _quantile_edges(run_df, lab_df, bins: tuple[int, ...], *, labelled_only: bool) -> tuple:
    """The quantile edges of ``ece`` / ``mce`` (``strategy=quantile``), exactly as the in-memory engine's.

    Locally the edges are the quantiles of the predictions of every run row of
    the *evaluated* requests: requests found only in the labels have no rows,
    and a run request without labels is dropped when ``missing_in_labels`` is
    ``"ignore"`` (``labelled_only``; a left semi join on the label request
    ids). The order statistics at the ranks ``calibration._quantile_ranks``
    asks for are found exactly by ``spark_ope.order_statistics`` (bracketing
    and counting jobs, never a sort or a collect of the column), then the same
    interpolation and collapse of repeated edges run on the driver.
    Returns ``((bins, edges), ...)`` for :class:`ChunkSpec`.
    """
    import numpy as np
    from pyspark.sql import functions as F

    from receval.engines.spark_ope import order_statistics
    from receval.metrics import calibration as cal

    rows = run_df
    if labelled_only:
        rows = rows.join(lab_df.select("request_id").distinct(), on="request_id", how="left_semi")
    # one column of doubles, kept for the few passes below (the semi join runs once)
    w = rows.select(F.col("prediction").cast("double").alias("w")).persist()
    try:
        n = int(w.count())
        if n == 0:  # as locally: no evaluated row (the assembly then raises, or bins nothing)
            return tuple((b, (0.0, 1.0)) for b in bins)
        plan = {b: cal._quantile_ranks(n, b) for b in bins}
        ranks = sorted({int(k) for lo, hi, _ in plan.values() for k in np.concatenate([lo, hi])})
        value: dict[int, float] = {}
        for i in range(0, len(ranks), _RANKS_PER_PASS):  # one filter per pass ORs a bracket per rank: keep it short
            value.update(order_statistics(w, n, ranks[i:i + _RANKS_PER_PASS]))
    finally:
        w.unpersist()
    out = []
    for b, (lo, hi, frac) in plan.items():
        a = np.array([value[int(k)] for k in lo], dtype=np.float64)
        c = np.array([value[int(k)] for k in hi], dtype=np.float64)
        edges = cal._collapse(cal._interpolate(a, c, frac))
        out.append((b, tuple(float(e) for e in edges)))
    return tuple(out)


def _catalog(catalog: Any, catalog_columns: Mapping[str, str] | None, format: str):
    """The catalog as a checked local frame (a Spark DataFrame is collected: one row per item)."""
    import polars as pl

    from receval.engines import is_spark_frame
    from receval.evaluation import _catalog_frame

    if not is_spark_frame(catalog):
        return _catalog_frame(catalog, catalog_columns, format)
    # a Spark frame has no row order: read it in item-id order, so partitioning never changes a
    # number (nor the examples of an error)
    frame = pl.from_arrow(_collect_arrow(catalog))
    key = dict(catalog_columns or {}).get("item_id", "item_id")
    if key in frame.columns:
        frame = frame.sort(key, nulls_last=True)
    return _catalog_frame(frame, catalog_columns, format)
