"""The streaming engine: Parquet inputs larger than memory, on one machine.

The in-memory engine holds the run as one polars frame. This engine never
does: it works on polars LazyFrames and the streaming engine, in three passes.

1. **Validate** from the schema (required columns, id and number types), then
   one streaming aggregation over each input for row counts, nulls / NaN,
   non-finite labels and predictions outside [0, 1] — the same violations as
   the in-memory contract (examples name request and item, not row numbers).
2. **Partition** run and labels by a hash of ``request_id`` into ``K``
   buckets of about :data:`BUCKET_ROWS` rows, written as Parquet by a
   streaming sink to a temporary directory (skipped when everything fits in
   one bucket). Every request lands in one bucket, whole.
3. **Reduce** bucket by bucket: read its run and label rows (sorted by
   request and item when calibration metrics sum over rows) and score them
   with :func:`receval.engines._chunks.score_requests`, the in-memory
   engine's kernel. Only one row per request is kept.

Peak memory is one bucket plus the per-request rows, whatever the input size;
the price is one extra write and read of the used columns. The per-request
rows then go through :func:`receval.engines._assemble.assemble`, as on Spark,
so both chunked engines give the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from receval.data.contract import ColumnMapping
from receval.engines._chunks import ChunkSpec, chunk_spec, output_schema, score_requests
from receval.engines._contract import (
    ColumnType,
    ValueCheck,
    check_schema,
    format_example,
    raise_value_violations,
    run_and_label_frames,
    value_checks,
)
from receval.errors import UsageError

__all__ = ["score_streaming", "BUCKET_ROWS"]

#: rows (run + labels) per bucket: bounds the memory of the reduce step
BUCKET_ROWS = 5_000_000

_HASH_SEED = 0x5CA1E
_COMPRESSION = "lz4"  # temporary files: speed over size


def _scan(scan: Any, path: str, fmt: str, kind: str) -> pl.LazyFrame:
    """A lazy scan whose schema could be read: an empty, truncated or mislabelled file is the UsageError the
    in-memory reader gives (``cannot read ... as parquet``), not a polars ComputeError at the first collect."""
    try:
        lf = scan()
        lf.collect_schema()
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{kind}: cannot read {path} as {fmt}: {first}") from None
    return lf


def _lazy(obj: Any, *, kind: str, format: str, name: str) -> pl.LazyFrame:
    from receval.data.readers import _detect, read_file, to_polars

    if isinstance(obj, pl.LazyFrame):
        return obj
    if isinstance(obj, pl.DataFrame):
        return obj.lazy()
    if isinstance(obj, str | os.PathLike):
        path = os.fspath(obj)
        if any(c in path for c in "*?[") and format in ("auto", "parquet"):
            return _scan(lambda: pl.scan_parquet(path), path, "parquet", kind)  # a glob of Parquet files
        if not os.path.exists(path):
            raise UsageError(f"{kind}: file not found: {path}")
        if os.path.isdir(path):
            return _scan(lambda: pl.scan_parquet(os.path.join(path, "**", "*.parquet")), path, "parquet", kind)
        fmt = _detect(Path(path)) if format == "auto" else format
        if fmt == "parquet":
            return _scan(lambda: pl.scan_parquet(path), path, fmt, kind)
        if fmt in ("csv", "tsv"):
            return _scan(lambda: pl.scan_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema_length=10000),
                         path, fmt, kind)
        if fmt == "jsonl":
            return _scan(lambda: pl.scan_ndjson(path), path, fmt, kind)
        return read_file(path, kind=kind, format=format).lazy()  # TREC text files
    return to_polars(obj, kind=kind, format=format, name=name).lazy()


def column_type(dtype: pl.DataType) -> ColumnType:
    name = str(dtype)
    if dtype.is_integer():
        return ColumnType("int", name)
    if dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        return ColumnType("str", name)
    if dtype.is_numeric():
        return ColumnType("numeric", name)
    if dtype == pl.Boolean:
        return ColumnType("bool", name)
    if dtype == pl.Null:
        return ColumnType("null", name)
    return ColumnType("other", name)


_CAST = {"int": pl.Int64, "str": pl.String, "float": pl.Float64}


class _Frame:
    """A LazyFrame checked against the contract (schema only) and cast to canonical columns."""

    def __init__(self, lf: pl.LazyFrame, kind: str, mapping: ColumnMapping, *, name: str, use: tuple[str, ...],
                 passthrough: tuple[str, ...] = ()):
        self.name, self.mapping = name, mapping
        schema = lf.collect_schema()
        self.targets = check_schema(
            {c: column_type(t) for c, t in schema.items()}, kind, mapping, name=name, use=use, passthrough=passthrough,
            count=lambda: int(lf.select(pl.len()).collect(engine="streaming").item()),
            head=lambda c: lf.select(c).head(3).collect()[c].to_list(),
        )
        self.passthrough = tuple(c for c in passthrough if c not in self.targets)
        self.lf = lf.select(
            [pl.col(mapping.source(c)).cast(_CAST[t]).alias(c) for c, t in self.targets.items()]
            + [pl.col(c) for c in self.passthrough]
        )
        self.checks = value_checks(self.targets)

    def text_ids(self, column: str) -> None:
        if self.targets.get(column) == "int":
            self.targets[column] = "str"
            self.lf = self.lf.with_columns(pl.col(column).cast(pl.String))


def _bad(check: ValueCheck) -> pl.Expr:
    col = pl.col(check.column)
    if check.kind == "null":
        return col.is_null()
    if check.kind == "null_or_nan":
        return col.is_null() | col.is_nan().fill_null(False)
    if check.kind == "finite":
        return col.is_nan() | col.is_infinite()
    return col.is_nan() | (col < 0.0) | (col > 1.0)


def _show(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _check_values(frames: list[_Frame]) -> list[int]:
    """One streaming pass per input: row counts and every value rule; raises on violations."""
    queries = [
        f.lf.select(pl.len().alias("__rows"), *[_bad(c).sum().alias(f"c{j}") for j, c in enumerate(f.checks)])
        for f in frames
    ]
    results = pl.collect_all(queries, engine="streaming")
    for f, res in zip(frames, results, strict=True):
        counts = [int(res[f"c{j}"][0] or 0) for j in range(len(f.checks))]
        examples: dict[int, list[str]] = {}
        for j, n in enumerate(counts):
            if n:
                c = f.checks[j].column
                ex = f.lf.filter(_bad(f.checks[j])).select("request_id", "item_id", pl.col(c).alias("__value")).head(3).collect()
                examples[j] = [format_example(r, i, _show(v)) for r, i, v in ex.iter_rows()]
        raise_value_violations(f.name, f.mapping, f.checks, counts, examples)
    return [int(r["__rows"][0]) for r in results]


def score_streaming(
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
    bucket_rows: int | None = None,
    tmpdir: str | None = None,
):
    """:func:`receval.evaluation.score` out of core; returns a :class:`~receval.evaluation.Scored`."""
    from receval.engines._assemble import assemble

    spec = chunk_spec(parsed, catalog, engine="streaming")
    run_map = ColumnMapping.of(columns)
    lab_map = ColumnMapping.of(label_columns) if label_columns is not None else run_map
    need_prediction = bool(spec.calibration)
    src = _lazy(run, kind="run", format=format, name=name)
    read_labels = None if labels is None else (lambda cols: _lazy(labels, kind="labels", format=format, name="labels"))
    run_f, lab_f, constant = run_and_label_frames(
        src, src.collect_schema().names(), lambda: int(src.select(pl.len()).collect().item()), _Frame, read_labels,
        run_map=run_map, lab_map=lab_map, name=name, slice_columns=slice_columns, need_prediction=need_prediction)
    spec = dataclasses.replace(spec, constant=constant)
    run_rows, label_rows = _check_values([run_f, lab_f])

    run_cols = ["request_id", "item_id", "score"] + (["prediction"] if need_prediction else []) + list(constant)
    run_lf = run_f.lf.select(run_cols)
    lab_lf = lab_f.lf.select("request_id", "item_id", "label")
    order = ["request_id", "item_id"] if spec.calibration else None  # row sums in a fixed order
    budget = max(1, int(bucket_rows or BUCKET_ROWS))
    n_buckets = max(1, math.ceil((run_rows + label_rows) / budget))
    parts = []
    ranges = _request_ranges(run_lf, budget) if n_buckets > 1 and label_rows <= budget else None
    if n_buckets == 1:
        parts.append(_score_bucket(run_lf.collect(engine="streaming"), lab_lf.collect(engine="streaming"), spec, order))
    elif ranges is not None:
        # the run is grouped by request: slices of the file are request-complete
        # chunks; the labels (they fit the budget) are split to match
        starts, bounds = ranges
        lab = lab_lf.collect(engine="streaming").join(starts.select("request_id", "__chunk"), on="request_id", how="left")
        by_chunk = lab.partition_by("__chunk", as_dict=True, include_key=False)
        empty = lab.clear().drop("__chunk")
        for c, (lo, hi) in enumerate(bounds):
            parts.append(_score_bucket(run_lf.slice(lo, hi - lo).collect(), by_chunk.get((c,), empty), spec, order))
        if (None,) in by_chunk:  # requests judged but absent from the run
            parts.append(_score_bucket(run_lf.clear().collect(), by_chunk[(None,)], spec, order))
    else:
        with tempfile.TemporaryDirectory(prefix="receval-buckets-", dir=tmpdir) as tmp:
            key = (pl.col("request_id").hash(seed=_HASH_SEED) % n_buckets).alias("__bucket")
            for side, lf in (("run", run_lf), ("labels", lab_lf)):
                lf.sink_parquet(pl.PartitionBy(os.path.join(tmp, side), key=key, include_key=False),
                                maintain_order=False, mkdir=True, engine="streaming", compression=_COMPRESSION)
            run_schema, lab_schema = run_lf.collect_schema(), lab_lf.collect_schema()
            for b in range(n_buckets):
                parts.append(_score_bucket(_read(tmp, "run", b, run_schema), _read(tmp, "labels", b, lab_schema), spec, order))
    parts = [p for p in parts if p is not None]
    if parts:
        units = pl.concat(parts, how="vertical")
    else:  # no row at all
        schema = run_lf.collect_schema()
        units = pl.DataFrame(schema=output_schema(spec, schema["request_id"], {c: schema[c] for c in constant},
                                                  schema["item_id"]))
    return assemble(units, spec, parsed, missing_in_run=missing_in_run, missing_in_labels=missing_in_labels,
                    name=name, run_map=run_map, run_rows=run_rows, label_rows=label_rows, slice_columns=slice_columns,
                    catalog=None if catalog is None else lambda: _catalog(catalog, catalog_columns, format))


def _catalog(catalog: Any, catalog_columns: Mapping[str, str] | None, format: str) -> pl.DataFrame:
    from receval.evaluation import _catalog_frame

    return _catalog_frame(catalog, catalog_columns, format)


def _request_ranges(run: pl.LazyFrame, budget: int) -> tuple[pl.DataFrame, list[tuple[int, int]]] | None:
    """Row ranges of about ``budget`` rows cut at request boundaries, if the run is grouped by request.

    The run is grouped when every request's rows are contiguous: per request,
    last row - first row + 1 = number of rows (one streaming group-by, memory
    bounded by the number of requests). A cheap look at the first rows
    rejects an obviously scattered file first. Returns the first row of every
    request with its chunk (``request_id``, ``__row``, ``__chunk``) and the
    (first, end) row of every chunk, or None when requests are scattered.
    """
    rid = pl.col("request_id")
    head = run.select(rid).head(min(budget, 1 << 20)).collect()["request_id"]
    if len(head) and int(head.ne_missing(head.shift(1)).sum()) != head.n_unique():
        return None
    spans = (
        run.select(rid).with_row_index("__row").group_by("request_id")
        .agg(pl.col("__row").min().alias("first"), pl.col("__row").max().alias("last"), pl.len().alias("n"))
        .collect(engine="streaming")
    )
    if spans.height == 0 or not bool(((spans["last"] - spans["first"] + 1) == spans["n"]).all()):
        return None
    total = int(spans["n"].sum())
    starts = spans.select("request_id", pl.col("first").cast(pl.Int64).alias("__row")).sort("__row")
    starts = starts.with_columns((pl.col("__row") // budget).alias("__chunk"))
    firsts = starts.group_by("__chunk", maintain_order=True).agg(pl.col("__row").first())["__row"].to_list()
    bounds = list(zip(firsts, firsts[1:] + [total], strict=True))
    starts = starts.with_columns(pl.col("__chunk").rank("dense").cast(pl.Int64) - 1)  # chunks numbered 0..len(bounds)-1
    return starts, bounds


def _read(tmp: str, side: str, bucket: int, schema) -> pl.DataFrame:
    path = os.path.join(tmp, side, f"__bucket={bucket}")
    if not os.path.isdir(path):  # no row hashed to this bucket
        return pl.DataFrame(schema=schema)
    return pl.read_parquet(path, hive_partitioning=False).select(list(schema.names())).cast(dict(schema))


def _score_bucket(run: pl.DataFrame, labels: pl.DataFrame, spec: ChunkSpec, order: list[str] | None) -> pl.DataFrame | None:
    if run.height == 0 and labels.height == 0:
        return None
    if order:
        run = run.sort(order)
        labels = labels.sort(order)
    return score_requests(run, labels, spec)
