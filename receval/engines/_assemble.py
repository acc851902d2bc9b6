"""Driver side of the chunked engines: per-request rows -> :class:`~receval.evaluation.Scored`.

The rows come from :func:`receval.engines._chunks.score_requests`, in any
order and from any number of chunks or partitions. They are put in a
canonical order — requests with run rows first, then requests found only in
the labels, each group sorted by request id — so the per-unit vectors, and
therefore the bootstrap intervals for a seed, do not depend on partitioning.
From here on everything is the in-memory engine's code: the missing-request
policies, the statistics objects, the counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from receval.data.contract import ColumnMapping
from receval.engines._chunks import KIND_LABEL_DUPLICATE, KIND_RUN_DUPLICATE, KIND_UNIT, ChunkSpec
from receval.errors import InputError, Violation
from receval.metrics.registry import Metric

__all__ = ["assemble", "raise_chunk_errors"]


def raise_chunk_errors(units: pl.DataFrame, name: str, run_map: ColumnMapping) -> None:
    """Raise the InputError of duplicate rows found in any chunk (labels first, as locally)."""
    errors = units.filter(pl.col("__kind") != KIND_UNIT)
    if errors.height == 0:
        return
    for kind in (KIND_LABEL_DUPLICATE, KIND_RUN_DUPLICATE):
        found = errors.filter(pl.col("__kind") == kind).sort("request_id")
        if found.height == 0:
            continue
        n = int(found["__n"].sum())
        examples = tuple(e for ex in found["__examples"].to_list() for e in ex)[:3]
        if kind == KIND_LABEL_DUPLICATE:
            raise InputError("labels", [Violation(
                "request_id, item_id", "each (request, item) pair must be judged once", n, examples,
                "keep one judgement per pair (e.g. the maximum grade) before evaluating")])
        raise InputError(name, [Violation(
            f"{run_map.label('request_id')}, {run_map.label('item_id')}", "each item may appear once per request", n,
            examples, "drop duplicate (request, item) rows, keeping the one the system really ranked")])


def _flat(series: pl.Series, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list column without nulls."""
    lengths = series.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = series.explode().drop_nulls().to_numpy().astype(dtype, copy=False)
    return np.concatenate([[0], np.cumsum(lengths)]), values


def _calibration(metric: Metric, units: pl.DataFrame, j: int, idx: np.ndarray, shared: dict,
                 quantile_edges: dict[int, np.ndarray]) -> Any:
    from receval.metrics import calibration as cal
    from receval.metrics.base import MetricStats

    n_positive = int(units[f"c{j}_pos"].to_numpy()[idx].sum())
    if metric.name in ("brier", "logloss"):
        _, values = _flat(units[f"c{j}_v"], np.float64)
        stats = values.reshape(-1, 2)[idx]
        return MetricStats(
            stats, cal._ratio, per_unit=None, scope="population",
            extra={"n_rows": int(stats[:, 1].sum()), "n_positive": n_positive,
                   "pooled": "rows (impressions); intervals resample requests"},
        )
    requested, strategy, min_label = int(metric.param("bins")), str(metric.param("strategy")), float(metric.param("min_label"))
    if strategy == "quantile":  # the edges the kernel binned with (repeated edges collapsed)
        edges = quantile_edges[requested]
    else:
        edges = np.arange(requested + 1, dtype=np.float64) / requested
    bins = len(edges) - 1
    key = (requested, strategy, min_label)
    if key not in shared:
        kept = units[f"c{j}_i"].gather(idx)
        offsets, b = _flat(kept, np.int64)
        _, values = _flat(units[f"c{j}_v"].gather(idx), np.float64)
        n = len(idx)
        per_unit = np.diff(offsets)
        unit = np.repeat(np.arange(n), per_unit)
        if 3 * n * bins <= cal._DENSE_CELLS:
            cells = np.zeros((n, bins, 3), dtype=np.float64)
            cells[unit, b, :] = values.reshape(-1, 3)
            stats = cells.reshape(n, 3 * bins)
        else:
            import scipy.sparse as sparse

            cols = (3 * b)[:, None] + np.arange(3)
            stats = sparse.csr_matrix((values, cols.ravel(), 3 * offsets), shape=(n, 3 * bins))
        shared[key] = stats
    stats = shared[key]
    n, sp, sy = (x[0] for x in cal._split(np.asarray(stats.sum(axis=0), dtype=np.float64).reshape(1, -1)))
    extra = {
        "reliability": cal._table_rows(edges, n, sp, sy, cal.RELIABILITY_LEVEL),
        "reliability_level": cal.RELIABILITY_LEVEL,
        "strategy": strategy,
        "bins_requested": requested,
        "bins": bins,
        "nonempty_bins": int(np.count_nonzero(n)),
        "edges": [float(e) for e in edges],
        "n_rows": int(n.sum()),
        "n_positive": n_positive,
    }
    finish = cal._ece_finish(bins) if metric.name == "ece" else cal._mce_finish(bins)
    return MetricStats(stats, finish, per_unit=None, scope="population", extra=extra, recentre=True)


def _beyond(metrics: list[Metric], units: pl.DataFrame, idx: np.ndarray, catalog: Any) -> dict[Metric, Any]:
    """Beyond-accuracy statistics: the local ``compute`` on the top-k lists of the evaluated requests.

    The context holds only the top-k rows (``__top``: item ids in rank order)
    of the evaluated requests, in the canonical request order; ``top_rows``
    has the local engine's width (the largest cutoff, or the longest list of
    the run when a metric has no cutoff), so every sum runs as locally.
    Beyond-accuracy metrics read the lists and the catalog only: the rows
    carry no score, grade or prediction.
    """
    from receval.metrics import beyond
    from receval.metrics.base import EvalContext

    top = units["__top"]
    width = max([int(m.k) for m in metrics if m.k is not None] + [0])
    if any(m.k is None for m in metrics):  # whole lists: the longest list of any request, as locally
        width = max(width, int(top.list.len().fill_null(0).max() or 0))
    kept = top.gather(idx)
    lengths = kept.list.len().fill_null(0).to_numpy().astype(np.int64)
    items = kept.explode().drop_nulls()
    n = len(idx)
    unit = np.repeat(np.arange(n), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.arange(len(unit))
    top_rows = np.full((n, width), -1, dtype=np.int64)
    top_rows[unit, rows - offsets[unit]] = rows
    context = EvalContext(
        n_units=n,
        request_ids=units["request_id"].gather(idx),
        row_unit=unit,
        row_item=items,
        row_score=np.full(len(unit), np.nan),  # not carried: no beyond-accuracy metric reads it
        row_grade=None,
        row_prediction=None,
        top_rows=top_rows if width else None,
        catalog=catalog,
    )
    return beyond.compute(metrics, context)


def assemble(
    units: pl.DataFrame,
    spec: ChunkSpec,
    parsed: list[Metric],
    *,
    missing_in_run: str,
    missing_in_labels: str,
    name: str,
    run_map: ColumnMapping,
    run_rows: int,
    label_rows: int,
    slice_columns: tuple[str, ...] = (),
    catalog: Any = None,
) -> Any:
    """Scored statistics from the per-request rows of all chunks.

    ``catalog``: a zero-argument function returning the checked catalog frame
    (called, as locally, only when a non-ranking metric is asked for).
    """
    from receval.evaluation import Scored
    from receval.metrics.base import mean_stats

    raise_chunk_errors(units, name, run_map)
    units = units.filter(pl.col("__kind") == KIND_UNIT).sort(["__in_run", "request_id"], descending=[True, False])
    in_run = units["__in_run"].to_numpy()
    has_labels = units["__has_labels"].to_numpy()
    n_run_requests = int(in_run.sum())
    keep = np.ones(units.height, dtype=bool)
    labels_only = ~in_run
    run_only = in_run & ~has_labels
    if missing_in_run == "ignore":
        keep &= ~labels_only
    if missing_in_labels == "ignore":
        keep &= ~run_only
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise InputError(f"{name} and labels", [Violation(
            "request_id", "at least one request must be evaluable", 0,
            (f"run has {n_run_requests} requests, labels {int(has_labels.sum())}, "
             f"missing_in_run={missing_in_run!r}, missing_in_labels={missing_in_labels!r}",),
            "check that both inputs use the same request ids (and the same column mapping)")])

    by_name = {str(m): m for m in parsed}
    stats: dict[Metric, Any] = {}
    for j, m in enumerate(spec.ranking):
        stats[by_name[m]] = mean_stats(units[f"r{j}"].to_numpy()[idx])
    shared: dict = {}
    quantile_edges = {bins: np.asarray(e, dtype=np.float64) for bins, e in spec.quantile_edges}
    for j, m in enumerate(spec.calibration):
        stats[by_name[m]] = _calibration(by_name[m], units, j, idx, shared, quantile_edges)
    catalog_df = catalog() if catalog is not None and (spec.calibration or spec.beyond) else None
    if spec.beyond:
        stats.update(_beyond([by_name[m] for m in spec.beyond], units, idx, catalog_df))

    n_rel = units["__n_rel"].to_numpy()
    counts = {
        "evaluated": int(len(idx)),
        "run_requests": n_run_requests,
        "label_requests": int(has_labels.sum()),
        "labels_only_scored_zero" if missing_in_run == "zero" else "labels_only_ignored": int(labels_only.sum()),
        "run_only_ignored" if missing_in_labels == "ignore" else "run_only_scored_zero": int(run_only.sum()),
        "evaluated_without_relevant": int((n_rel[idx] == 0).sum()),
        "run_rows": int(run_rows),
        "label_rows": int(label_rows),
    }
    per_unit: dict[str, pl.Series] = {}
    for j, c in enumerate(spec.constant):
        varies = units[f"k{j}_varies"].to_numpy()
        if varies.any():
            bad = units["request_id"].filter(pl.Series(varies))
            hint = (
                "a request is one list shown to one user; check the join that produced the run"
                if c == "user_id"
                else "slice by attributes of the request or its user; item attributes vary within a list"
            )
            label = run_map.label(c) if c == "user_id" else c
            raise InputError(name, [Violation(label, "must be the same for every row of a request", len(bad),
                                               tuple(repr(v) for v in bad.head(3).to_list()), hint)])
        per_unit[c] = units[f"k{j}"].gather(idx).alias(c)
    unit_attrs = pl.DataFrame({c: per_unit[c] for c in slice_columns}) if slice_columns else None
    return Scored(parsed, {m: stats[m] for m in parsed}, units["request_id"].gather(idx), counts, None,
                  per_unit.get("user_id"), unit_attrs, in_run[idx])
