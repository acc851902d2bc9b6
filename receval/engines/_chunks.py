"""Per-chunk work of the chunked engines: request-complete rows -> per-request rows.

:func:`score_requests` takes the run rows and label rows of a set of
*complete* requests (validated, canonical columns) and returns one row per
request with everything the driver needs: the request's ranking metric values,
its calibration sufficient statistics, the value of per-request columns
(``user_id``, slice columns), and whether it has run rows and labels. It runs
the very code of the in-memory engine (``prepare`` + ``score_chunk``, the
calibration family's ``compute``), so a metric is defined once.

Errors that only the full rows can reveal (an item listed twice in a request,
a pair judged twice) come back as error rows (``__kind`` 1 and 2) with a
count and examples, so a Spark task never fails with a Python traceback; the
driver sums them and raises the same :class:`~receval.errors.InputError` as
locally.

Every per-request value depends only on that request's rows, summed in the
order the rows arrive; the engines sort rows by (request, item), so results do
not depend on how requests are spread over chunks or partitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["ChunkSpec", "chunk_spec", "KIND_UNIT", "KIND_RUN_DUPLICATE", "KIND_LABEL_DUPLICATE", "output_schema", "score_requests"]

KIND_UNIT = 0
KIND_RUN_DUPLICATE = 1
KIND_LABEL_DUPLICATE = 2


@dataclass(frozen=True)
class ChunkSpec:
    """What to compute per chunk (picklable: metric names, not objects)."""

    ranking: tuple[str, ...] = ()
    calibration: tuple[str, ...] = ()
    constant: tuple[str, ...] = ()  # run columns constant within a request (user_id, slice columns)
    beyond: tuple[str, ...] = ()  # beyond-accuracy metrics: computed on the driver from the top-k lists
    top_k: int | None = 0  # items per request sent to the driver (``__top``); None: whole lists
    # ece / mce with strategy=quantile: (bins, collapsed edges) pairs, computed by the engine over every
    # evaluated row before the kernel job (the edges of the in-memory engine, see calibration._quantiles)
    quantile_edges: tuple[tuple[int, tuple[float, ...]], ...] = ()

    @property
    def quantile_bins(self) -> tuple[int, ...]:
        """The ``bins`` of the quantile-binned metrics (sorted, distinct)."""
        from receval.metrics.registry import parse_metric

        found = set()
        for m in self.calibration:
            metric = parse_metric(m)
            if metric.name in ("ece", "mce") and metric.param("strategy") == "quantile":
                found.add(int(metric.param("bins")))
        return tuple(sorted(found))

    @property
    def need_prediction(self) -> bool:
        return bool(self.calibration)


def chunk_spec(parsed: list, catalog: object = None, *, engine: str, quantile: bool = False) -> ChunkSpec:
    """The metrics a chunked engine computes; UsageError (before any data is read) for the others.

    ``quantile``: the engine computes the quantile edges of ``ece`` / ``mce``
    (``strategy=quantile``) itself and puts them in ``quantile_edges``.
    """
    from receval.errors import UsageError

    ranking, calibration, beyond, other = [], [], [], []
    for m in parsed:
        if m.spec.kind == "ranking":
            ranking.append(str(m))
        elif m.spec.kind == "beyond":
            beyond.append(m)
        elif m.spec.kind == "calibration" and (quantile or not (m.name in ("ece", "mce") and m.param("strategy") == "quantile")):
            calibration.append(str(m))
        else:
            other.append(str(m))
    if other:
        binning = ("uniform or quantile bins" if quantile else
                   "uniform bins, whose per-request statistics need no global pass")
        raise UsageError(
            f"{', '.join(other)}: not available on the {engine} engine yet (it computes the ranking metrics and "
            f"brier, logloss, ece / mce with {binning}, "
            "and the beyond-accuracy metrics); evaluate these on a local frame (e.g. a sample: df.toArrow()) "
            "or with engine='polars'"
        )
    if beyond and catalog is None:  # before any job (locally: after the scoring)
        from receval.metrics.beyond import no_catalog

        raise no_catalog(beyond)
    top_k: int | None = 0
    if beyond:  # as locally: the largest cutoff, whole lists when a metric has none
        top_k = None if any(m.k is None for m in beyond) else max(int(m.k) for m in beyond)
    return ChunkSpec(tuple(ranking), tuple(calibration), beyond=tuple(str(m) for m in beyond), top_k=top_k)


def output_schema(
    spec: ChunkSpec, id_dtype: pl.DataType, constant_dtypes: dict[str, pl.DataType], item_dtype: pl.DataType | None = None
) -> dict[str, pl.DataType]:
    """Column -> polars dtype of :func:`score_requests`' output (``item_dtype``: needed with beyond metrics)."""
    schema: dict[str, pl.DataType] = {
        "request_id": id_dtype,
        "__kind": pl.Int8(),
        "__in_run": pl.Boolean(),
        "__has_labels": pl.Boolean(),
        "__n_rel": pl.Int64(),
        "__n": pl.Int64(),
        "__examples": pl.List(pl.String),
    }
    for j in range(len(spec.ranking)):
        schema[f"r{j}"] = pl.Float64()
    for j in range(len(spec.calibration)):
        schema[f"c{j}_i"] = pl.List(pl.Int32)
        schema[f"c{j}_v"] = pl.List(pl.Float64)
        schema[f"c{j}_pos"] = pl.Int64()
    for j, c in enumerate(spec.constant):
        schema[f"k{j}"] = constant_dtypes[c]
        schema[f"k{j}_varies"] = pl.Boolean()
    if spec.beyond:
        schema["__top"] = pl.List(item_dtype if item_dtype is not None else pl.String())
    return schema


def _complete(columns: dict[str, pl.Series], schema: dict[str, pl.DataType], height: int) -> pl.DataFrame:
    return pl.DataFrame(
        [columns[c].cast(t).alias(c) if c in columns else pl.Series(c, [None] * height, dtype=t) for c, t in schema.items()]
    )


def _error(kind: int, n: int, examples: list[str], first_request, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    cols = {
        "request_id": pl.Series([first_request], dtype=schema["request_id"]),
        "__kind": pl.Series([kind], dtype=pl.Int8),
        "__n": pl.Series([n], dtype=pl.Int64),
        "__examples": pl.Series([examples], dtype=pl.List(pl.String)),
    }
    return _complete(cols, schema, 1)


def _lists(offsets: np.ndarray, values: np.ndarray, dtype) -> pl.Series:
    import pyarrow as pa

    arr = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values, dtype))
    return pl.Series(arr)


def score_requests(run: pl.DataFrame, labels: pl.DataFrame, spec: ChunkSpec) -> pl.DataFrame:
    """One row per request of the chunk (see the module docstring).

    ``run``: ``request_id, item_id, score`` (+ ``prediction`` and the
    ``spec.constant`` columns); ``labels``: ``request_id, item_id, label``.
    Ids are Int64 or String, of the same type on both sides.
    """
    from receval.metrics._prepare import prepare
    from receval.metrics.ranking import DuplicateItems, HashCollision, score_chunk
    from receval.metrics.registry import parse_metric

    schema = output_schema(spec, run.schema["request_id"], {c: run.schema[c] for c in spec.constant}, run.schema["item_id"])
    dup = labels.select(~pl.struct("request_id", "item_id").is_first_distinct()).to_series()
    if dup.any():
        ex = labels.filter(dup).head(3)
        examples = [f"({r!r}, {i!r})" for r, i in zip(ex["request_id"].to_list(), ex["item_id"].to_list(), strict=True)]
        return _error(KIND_LABEL_DUPLICATE, int(dup.sum()), examples, ex["request_id"][0], schema)

    ranking = [parse_metric(m) for m in spec.ranking]
    calibration = [parse_metric(m) for m in spec.calibration]
    prepared = prepare(run, labels)
    chunk = prepared.chunk
    top_k = 0
    if spec.beyond:
        top_k = spec.top_k if spec.top_k is not None else int(np.diff(chunk.run_starts).max(initial=0))
    try:
        try:
            scores = score_chunk(chunk, ranking, row_grades=bool(calibration), top_k=top_k)
        except HashCollision:  # two text ids share a 64-bit hash: redo with exact codes
            chunk = prepared.make_exact()
            scores = score_chunk(chunk, ranking, row_grades=bool(calibration), top_k=top_k)
    except DuplicateItems as d:
        ex = prepared.run_frame[np.sort(d.example_rows)[:3].tolist()]
        examples = [f"({r!r}, {i!r})" for r, i in zip(ex["request_id"].to_list(), ex["item_id"].to_list(), strict=True)]
        return _error(KIND_RUN_DUPLICATE, int(d.n_rows), examples, ex["request_id"][0], schema)

    n_codes = len(prepared.request_ids)
    lab_code = np.repeat(np.arange(n_codes), np.diff(chunk.lab_starts))
    columns: dict[str, pl.Series] = {
        "request_id": prepared.request_ids,
        "__kind": pl.Series(np.zeros(n_codes, dtype=np.int8)),
        "__in_run": pl.Series(np.arange(n_codes) < prepared.n_run_requests),
        "__has_labels": pl.Series(prepared.has_labels),
        "__n_rel": pl.Series(np.bincount(lab_code, weights=chunk.grade > 0, minlength=n_codes).astype(np.int64)),
    }
    for j, m in enumerate(ranking):
        columns[f"r{j}"] = pl.Series(scores.values[m])

    frame = prepared.run_frame
    code_of_row = np.repeat(np.arange(n_codes), np.diff(chunk.run_starts))
    if calibration:
        _calibration_columns(calibration, prepared, scores.row_grade, code_of_row, columns, spec.quantile_edges)
    for j, c in enumerate(spec.constant):
        columns[f"k{j}"], columns[f"k{j}_varies"] = _constant(frame[c], chunk.run_starts, code_of_row, n_codes)
    if spec.beyond:
        columns["__top"] = _top_items(scores.top, frame["item_id"], n_codes)
    return _complete(columns, schema, n_codes)


def _top_items(top: np.ndarray | None, items: pl.Series, n_codes: int) -> pl.Series:
    """Per request, the item ids at ranks 1..k (the rows ``score_chunk`` ranked, in rank order)."""
    if top is None:  # no request of the chunk has run rows
        top = np.full((n_codes, 0), -1, dtype=np.int64)
    valid = top >= 0
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int64)
    import pyarrow as pa

    values = items.gather(top[valid]).to_arrow()  # row-major: by request, then rank
    return pl.Series(pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values))


def _calibration_columns(metrics, prepared, row_grade: np.ndarray, code_of_row: np.ndarray, columns: dict,
                         spec_edges: tuple = ()) -> None:
    """Per-request statistics of the calibration metrics, as list columns.

    ``brier`` / ``logloss``: ``[sum of losses, rows]``; ``ece`` / ``mce``
    (uniform bins, or the quantile edges ``spec_edges``): the occupied bins of the request and, per occupied bin,
    ``[count, sum of predictions, sum of outcomes]``.
    """
    from receval.metrics import calibration as cal
    from receval.metrics.base import EvalContext

    n_codes = len(prepared.request_ids)
    frame = prepared.run_frame
    ctx = EvalContext(
        n_units=n_codes,
        request_ids=prepared.request_ids,
        row_unit=code_of_row,
        row_item=frame["item_id"],
        row_score=prepared.chunk.score,
        row_grade=row_grade,
        row_prediction=frame["prediction"].to_numpy(),
        top_rows=None,
        catalog=None,
    )
    edges = {bins: np.asarray(e, dtype=np.float64) for bins, e in spec_edges}
    for m in metrics:  # never the quantiles of one chunk: the engine must have fixed the edges
        if m.name in ("ece", "mce") and m.param("strategy") == "quantile" and int(m.param("bins")) not in edges:
            raise RuntimeError(f"{m}: no quantile edges were computed for this chunk")  # pragma: no cover
    stats = cal.compute(list(metrics), ctx, quantile_edges=edges)
    for j, m in enumerate(metrics):
        s = stats[m].stats
        positive = row_grade >= float(m.param("min_label"))
        columns[f"c{j}_pos"] = pl.Series(np.bincount(code_of_row, weights=positive, minlength=n_codes).astype(np.int64))
        if m.name in ("brier", "logloss"):
            offsets = np.arange(0, 2 * n_codes + 1, 2, dtype=np.int64)
            columns[f"c{j}_v"] = _lists(offsets, np.ascontiguousarray(s, dtype=np.float64).ravel(), None)
            continue
        n_bins = int(stats[m].extra["bins"])
        if isinstance(s, np.ndarray):
            cells = s.reshape(n_codes, n_bins, 3)
            unit, b = np.nonzero(cells[:, :, 0] > 0)  # row-major: by unit, then bin
            values = cells[unit, b, :].ravel()
        else:  # scipy.sparse CSR: three entries (count, sum p, sum y) per occupied (unit, bin) cell
            csr = s.tocsr()
            unit = np.repeat(np.arange(n_codes), np.diff(csr.indptr))[0::3]
            b = csr.indices[0::3] // 3
            values = csr.data
        per_unit = np.bincount(unit, minlength=n_codes)
        offsets = np.concatenate([[0], np.cumsum(per_unit)]).astype(np.int64)
        columns[f"c{j}_i"] = _lists(offsets, b.astype(np.int32), None)
        columns[f"c{j}_v"] = _lists(3 * offsets, np.asarray(values, dtype=np.float64), None)


def _constant(col: pl.Series, starts: np.ndarray, code_of_row: np.ndarray, n_codes: int) -> tuple[pl.Series, pl.Series]:
    """First value of the column per request (null without run rows) and whether it varies."""
    height = len(col)
    has_rows = np.diff(starts) > 0
    if height:
        first = col.gather(np.minimum(starts[:-1], height - 1))
        first = pl.select(pl.when(pl.Series(has_rows)).then(first).otherwise(None).alias(col.name)).to_series()
    else:
        first = pl.Series(col.name, [None] * n_codes, dtype=col.dtype)
    varies = np.zeros(n_codes, dtype=bool)
    if height > 1:
        a, b = col.slice(1), col.slice(0, height - 1)
        changed = (a != b).fill_null(False).to_numpy() | (a.is_null() != b.is_null()).to_numpy()
        same = code_of_row[1:] == code_of_row[:-1]
        varies[code_of_row[:-1][changed & same]] = True
    return first, pl.Series(varies)
