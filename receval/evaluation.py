"""``receval.evaluate``: score a run against labels, per request and in aggregate."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from receval.data.contract import ColumnMapping, validate
from receval.data.readers import FileFormat, to_polars
from receval.errors import InputError, UsageError, Violation
from receval.metrics.registry import Metric, parse_metrics

__all__ = ["evaluate", "EvaluationResult", "MetricSummary"]


@dataclass(frozen=True)
class MetricSummary:
    """Aggregate of one metric over the evaluated requests."""

    metric: str
    mean: float
    n: int
    ci_low: float
    ci_high: float
    greater_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": _json_float(self.mean),
            "n": self.n,
            "ci_low": _json_float(self.ci_low),
            "ci_high": _json_float(self.ci_high),
            "greater_is_better": self.greater_is_better,
        }


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars / non-finite floats / tuples into JSON-safe values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, int | str | bool) or value is None:
        return value
    if hasattr(value, "to_dict"):  # a small frame
        try:
            return _json_safe(value.to_dict(orient="records"))
        except TypeError:
            return _json_safe(value.to_dict())
    return str(value)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns, whatever the number of metrics.

    Attributes
    ----------
    metrics : the parsed metrics, in the order asked
    summary : canonical metric name -> :class:`MetricSummary`
    counts : how many requests were evaluated, scored 0, or left out, and why
    settings : conventions used (interval level, replicates, seed, policies)
    """

    metrics: list[Metric]
    summary: dict[str, MetricSummary]
    counts: dict[str, int]
    settings: dict[str, Any]
    _per_request: Any = field(repr=False)  # polars DataFrame
    details: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    """per metric, extra tables (e.g. the reliability table of ``ece``)"""
    _slices: Any = field(default=None, repr=False)  # polars DataFrame or None
    _item_cohorts: Any = field(default=None, repr=False)  # polars DataFrame or None

    @property
    def item_cohorts(self):
        """Ranking metrics with relevance restricted to cold / warm items (pandas), when asked for."""
        return None if self._item_cohorts is None else self._item_cohorts.to_pandas()

    @property
    def slices(self):
        """Per-slice results (pandas): slice columns, metric, mean, ci_low, ci_high, n; None without ``by``."""
        return None if self._slices is None else self._slices.to_pandas()

    def per_slice_polars(self):
        """Per-slice results as a polars DataFrame (None without ``by``)."""
        return self._slices

    def __getitem__(self, metric: str | Metric) -> MetricSummary:
        from receval.metrics.registry import parse_metric

        return self.summary[str(parse_metric(metric))]

    @property
    def per_request(self):
        """Per-request values: a pandas DataFrame, ``request_id`` then one column per metric."""
        return self._per_request.to_pandas()

    def per_request_polars(self):
        """Per-request values as a polars DataFrame."""
        return self._per_request

    def to_frame(self):
        """One row per metric: metric, mean, ci_low, ci_high, n (pandas)."""
        import pandas as pd

        rows = [
            {"metric": s.metric, "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}
            for s in self.summary.values()
        ]
        return pd.DataFrame(rows, columns=["metric", "mean", "ci_low", "ci_high", "n"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``metrics`` maps canonical names to mean, n, ci_low, ci_high."""
        out: dict[str, Any] = {
            "metrics": {name: s.to_dict() for name, s in self.summary.items()},
            "counts": dict(self.counts),
            "settings": dict(self.settings),
        }
        if self.details:
            out["details"] = _json_safe(self.details)
        if self._item_cohorts is not None:
            out["item_cohorts"] = _json_safe(list(self._item_cohorts.iter_rows(named=True)))
        if self._slices is not None:
            out["slices"] = [
                {k: (_json_float(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in self._slices.iter_rows(named=True)
            ]
        return out

    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table of the summary (rounding happens only here)."""
        level = int(round(self.settings["level"] * 100))
        lines = [f"| metric | mean | {level}% CI | n |", "|---|---:|---:|---:|"]
        for s in self.summary.values():
            ci = f"[{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]" if math.isfinite(s.ci_low) else "n/a"
            lines.append(f"| {s.metric} | {s.mean:.{digits}f} | {ci} | {s.n} |")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v.mean:.4f}" for k, v in self.summary.items())
        return f"EvaluationResult({body}; n={self.counts.get('evaluated', 0)})"


MissingPolicy = Literal["zero", "ignore"]

#: metric kind -> module with ``compute(metrics, ctx) -> dict[Metric, MetricStats]``
_FAMILIES = {
    "calibration": "receval.metrics.calibration",
    "beyond": "receval.metrics.beyond",
}


@dataclass
class Scored:
    """Everything :func:`score` computes before statistics: shared by evaluate and compare."""

    metrics: list[Metric]
    stats: dict[Metric, Any]  # Metric -> MetricStats
    request_ids: Any  # polars Series, one per unit
    counts: dict[str, int]
    context: Any  # EvalContext or None
    unit_user: Any = None  # polars Series: the user of each unit (null when unknown), if the run has user_id
    unit_attrs: Any = None  # polars DataFrame: slice columns per unit, when asked for
    unit_in_run: Any = None  # bool per unit: the request has rows in the run (else scored 0 by policy)


def _warn_missing_in_run(counts: Mapping[str, int], name: str, *, stacklevel: int = 3) -> None:
    """A :class:`~receval.errors.CoverageWarning` when more than half of the judged requests are missing
    from the run and scored 0 (``missing_in_run="zero"``); the result is still returned, counted."""
    missing = int(counts.get("labels_only_scored_zero", 0))
    judged = int(counts.get("label_requests", 0))
    if missing == 0 or 2 * missing <= judged:
        return
    import warnings

    from receval.errors import CoverageWarning

    shared = judged - missing
    what = ("the run and the labels share no request" if shared == 0
            else f"only {shared} judged request{'s appear' if shared != 1 else ' appears'} in the run")
    warnings.warn(
        f"{name}: {missing} of {judged} judged requests ({100 * missing / judged:.0f}%) are missing from the run "
        f"and scored 0 (missing_in_run='zero'): {what}; the metrics mostly measure the missing requests. "
        "Check that both inputs use the same request ids (and column mapping), or pass missing_in_run='ignore' "
        "to evaluate only the requests the run lists (counts: result.counts)",
        CoverageWarning, stacklevel=stacklevel,
    )


def _check_options(level: float, n_boot: int, missing_in_run: str, missing_in_labels: str) -> None:
    for name, value in (("missing_in_run", missing_in_run), ("missing_in_labels", missing_in_labels)):
        if value not in ("zero", "ignore"):
            raise UsageError(f"{name} must be 'zero' or 'ignore', got {value!r}")
    if not (isinstance(level, float | int) and not isinstance(level, bool) and 0 < level < 1):
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    if not (isinstance(n_boot, int) and not isinstance(n_boot, bool) and n_boot >= 1):
        raise UsageError(f"n_boot must be a positive integer, got {n_boot!r}")


def score(
    run: Any,
    labels: Any,
    parsed: list[Metric],
    *,
    columns: Mapping[str, str] | ColumnMapping | None = None,
    label_columns: Mapping[str, str] | ColumnMapping | None = None,
    catalog: Any = None,
    catalog_columns: Mapping[str, str] | None = None,
    format: FileFormat = "auto",
    missing_in_run: MissingPolicy = "zero",
    missing_in_labels: MissingPolicy = "ignore",
    name: str = "run",
    slice_columns: tuple[str, ...] = (),
    engine: str = "auto",
) -> Scored:
    """Validate, reduce and compute per-unit statistics of ``parsed`` metrics."""
    import importlib

    import polars as pl

    from receval.engines import resolve_engine

    engine = resolve_engine(engine, run, labels)
    if engine != "polars":  # the chunked engines: receval/engines/
        chunked = dict(columns=columns, label_columns=label_columns, catalog=catalog, catalog_columns=catalog_columns,
                       format=format,
                       missing_in_run=missing_in_run, missing_in_labels=missing_in_labels, name=name,
                       slice_columns=slice_columns)
        if engine == "spark":
            from receval.engines.spark import score_spark

            return score_spark(run, labels, parsed, **chunked)
        from receval.engines.streaming import score_streaming

        return score_streaming(run, labels, parsed, **chunked)

    from receval.metrics._prepare import prepare
    from receval.metrics.base import EvalContext, mean_stats
    from receval.metrics.ranking import DuplicateItems, HashCollision, score_chunk

    kinds = {m.spec.kind for m in parsed}
    unknown = kinds - {"ranking"} - set(_FAMILIES)
    if unknown:  # pragma: no cover - registry and dispatch out of sync
        raise UsageError(f"no evaluator for metric kind(s) {sorted(unknown)}")
    need_prediction = "calibration" in kinds

    run_map = ColumnMapping.of(columns)
    lab_map = ColumnMapping.of(label_columns) if label_columns is not None else run_map
    run_cols = ("request_id", "item_id", "score") + (("prediction",) if need_prediction else ())
    optional_run = ("user_id",)
    raw_run = to_polars(
        run, kind="run", format=format, name=name,
        columns=[run_map.source(c) for c in run_cols] + [run_map.source(c) for c in optional_run]
        + ([run_map.source("label")] if labels is None else []) + list(slice_columns),
    )
    if need_prediction and run_map.source("prediction") not in raw_run.columns:
        raise InputError(
            name,
            [Violation(run_map.label("prediction"), "required column is missing", raw_run.height, (),
                       "calibration metrics need a predicted probability per row; map it with columns={'prediction': 'your_name'}")],
        )
    run_df = validate(raw_run, "run", run_map, name=name, use=run_cols + optional_run, passthrough=slice_columns)
    lab_cols = ("request_id", "item_id", "label")
    if labels is None:
        if run_map.source("label") not in raw_run.columns:
            raise UsageError(
                f"{name}: no labels given and no label column in the run; pass labels=... "
                "(a frame or a qrels file) or include a 'label' column in the run"
            )
        lab_df = validate(raw_run.select([run_map.source(c) for c in lab_cols]), "labels", run_map, name=f"{name} labels", use=lab_cols)
    else:
        lab_df = validate(
            to_polars(labels, kind="labels", format=format, columns=[lab_map.source(c) for c in lab_cols]),
            "labels", lab_map, use=lab_cols,
        )

    prepared = prepare(run_df, lab_df)
    ranking = [m for m in parsed if m.spec.kind == "ranking"]
    top_k = max([m.k or 0 for m in parsed if m.spec.kind == "beyond"] + [0])
    if any(m.spec.kind == "beyond" and m.k is None for m in parsed):
        top_k = max(top_k, int(np.diff(prepared.chunk.run_starts).max(initial=0)))
    try:
        try:
            scores = score_chunk(prepared.chunk, ranking, row_grades=need_prediction, top_k=top_k)
        except HashCollision:  # two text ids share a 64-bit hash: redo with exact codes
            scores = score_chunk(prepared.make_exact(), ranking, row_grades=need_prediction, top_k=top_k)
    except DuplicateItems as dup:
        rows = dup.example_rows if prepared.run_rows is None else np.sort(prepared.run_rows[dup.example_rows])
        first = rows[:3]
        ex = run_df[first.tolist()] if len(first) else run_df.head(0)
        raise InputError(
            name,
            [
                Violation(
                    f"{run_map.label('request_id')}, {run_map.label('item_id')}",
                    "each item may appear once per request",
                    dup.n_rows,
                    tuple(
                        f"row {int(r)}: ({a!r}, {b!r})"
                        for r, a, b in zip(first, ex["request_id"].to_list(), ex["item_id"].to_list(), strict=True)
                    ),
                    "drop duplicate (request, item) rows, keeping the one the system really ranked",
                )
            ],
        ) from None

    n_codes = len(prepared.request_ids)
    in_run = np.arange(n_codes) < prepared.n_run_requests
    keep = np.ones(n_codes, dtype=bool)
    labels_only = ~in_run
    run_only = in_run & ~prepared.has_labels
    if missing_in_run == "ignore":
        keep &= ~labels_only
    if missing_in_labels == "ignore":
        keep &= ~run_only
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise InputError(
            f"{name} and labels",
            [
                Violation(
                    "request_id",
                    "at least one request must be evaluable",
                    0,
                    (
                        f"run has {prepared.n_run_requests} requests, labels {int(prepared.has_labels.sum())}, "
                        f"missing_in_run={missing_in_run!r}, missing_in_labels={missing_in_labels!r}",
                    ),
                    "check that both inputs use the same request ids (and the same column mapping)",
                )
            ],
        )

    stats: dict[Metric, Any] = {m: mean_stats(scores.values[m][idx]) for m in ranking}
    context = None
    if len(ranking) < len(parsed):
        chunk = prepared.chunk
        code_of_row = np.repeat(np.arange(n_codes), np.diff(chunk.run_starts))
        unit_of_code = np.full(n_codes, -1, dtype=np.int64)
        unit_of_code[idx] = np.arange(len(idx))
        unit_all = unit_of_code[code_of_row]
        kept = unit_all >= 0
        kept_rows = np.flatnonzero(kept)
        new_index = np.cumsum(kept) - 1
        frame = prepared.run_frame
        top = None
        if scores.top is not None:
            t = scores.top[idx]
            top = np.where(t >= 0, new_index[np.maximum(t, 0)], -1)
        catalog_df = None
        if catalog is not None:
            catalog_df = _catalog_frame(catalog, catalog_columns, format)
        context = EvalContext(
            n_units=len(idx),
            request_ids=prepared.request_ids.gather(idx),
            row_unit=unit_all[kept],
            row_item=frame["item_id"].gather(kept_rows),
            row_score=chunk.score[kept],
            row_grade=scores.row_grade[kept] if scores.row_grade is not None else None,
            row_prediction=frame["prediction"].to_numpy()[kept] if "prediction" in frame.columns else None,
            top_rows=top,
            catalog=catalog_df,
            row_user=frame["user_id"].gather(kept_rows) if "user_id" in frame.columns else None,
        )
        for kind, module in _FAMILIES.items():
            family = [m for m in parsed if m.spec.kind == kind]
            if family:
                stats.update(importlib.import_module(module).compute(family, context))

    chunk = prepared.chunk
    n_rel = np.bincount(
        np.repeat(np.arange(n_codes), np.diff(chunk.lab_starts)), weights=(chunk.grade > 0), minlength=n_codes
    )
    counts = {
        "evaluated": int(len(idx)),
        "run_requests": int(prepared.n_run_requests),
        "label_requests": int(prepared.has_labels.sum()),
        "labels_only_scored_zero" if missing_in_run == "zero" else "labels_only_ignored": int(labels_only.sum()),
        "run_only_ignored" if missing_in_labels == "ignore" else "run_only_scored_zero": int(run_only.sum()),
        "evaluated_without_relevant": int((n_rel[idx] == 0).sum()),
        "run_rows": int(run_df.height),
        "label_rows": int(lab_df.height),
    }
    frame = prepared.run_frame
    per_unit = {
        c: _per_request_value(frame, prepared.chunk.run_starts, idx, c, name, run_map.label(c) if c == "user_id" else c)
        for c in (("user_id",) if "user_id" in frame.columns else ()) + tuple(c for c in slice_columns if c != "user_id")
    }
    unit_user = per_unit.get("user_id")
    unit_attrs = pl.DataFrame({c: per_unit[c] for c in slice_columns}) if slice_columns else None
    return Scored(parsed, {m: stats[m] for m in parsed}, prepared.request_ids.gather(idx), counts, context,
                  unit_user, unit_attrs, in_run[idx])


def _per_request_value(frame, starts: np.ndarray, idx: np.ndarray, column: str, name: str, label: str):
    """The value of ``column`` for each evaluated request (null without run rows).

    The column must be constant within a request (rows are contiguous by
    request here, so neighbours are compared).
    """
    import polars as pl

    firsts = starts[idx]
    has_rows = np.diff(starts)[idx] > 0
    col = frame[column]
    values = col.gather(np.minimum(firsts, max(frame.height - 1, 0))) if frame.height else col.clear(len(idx))
    values = pl.select(pl.when(pl.Series(has_rows)).then(values).otherwise(None).alias(column)).to_series()
    if frame.height > 1:
        changed = (col.slice(1) != col.slice(0, frame.height - 1)).fill_null(False).to_numpy()
        changed |= (col.slice(1).is_null() != col.slice(0, frame.height - 1).is_null()).to_numpy()
        same_request = np.ones(frame.height - 1, dtype=bool)
        inner_starts = starts[(starts > 0) & (starts < frame.height)]
        same_request[inner_starts - 1] = False
        bad = np.flatnonzero(changed & same_request)
        if len(bad):
            bad_requests = frame["request_id"].gather(bad).unique(maintain_order=True)
            hint = (
                "a request is one list shown to one user; check the join that produced the run"
                if column == "user_id"
                else "slice by attributes of the request or its user; item attributes vary within a list"
            )
            raise InputError(
                name,
                [Violation(label, "must be the same for every row of a request", len(bad_requests),
                           tuple(repr(v) for v in bad_requests.head(3).to_list()), hint)],
            )
    return values


def _catalog_frame(catalog: Any, mapping: Mapping[str, str] | None, format: FileFormat):
    import polars as pl

    frame = to_polars(catalog, kind="catalog", format=format, name="catalog")
    if mapping:
        frame = frame.rename({v: k for k, v in mapping.items() if v in frame.columns and v != k})
    if "item_id" not in frame.columns:
        raise InputError("catalog", [Violation("item_id", "required column is missing", frame.height, (),
                                               f"available columns are {frame.columns[:12]}; pass catalog_columns={{'item_id': 'your_name'}}")])
    dtype = frame.schema["item_id"]
    if dtype in (pl.Categorical,) or isinstance(dtype, pl.Enum):
        frame = frame.with_columns(pl.col("item_id").cast(pl.String))
    elif dtype.is_integer():
        frame = frame.with_columns(pl.col("item_id").cast(pl.Int64))
    nulls = frame["item_id"].null_count()
    dups = frame.height - frame["item_id"].n_unique()
    violations = []
    if nulls:
        violations.append(Violation("item_id", "must not be null", nulls))
    if dups:
        ex = frame.filter(pl.col("item_id").is_duplicated())["item_id"].head(3).to_list()
        violations.append(Violation("item_id", "each catalog item must appear once", dups, tuple(repr(v) for v in ex)))
    if violations:
        raise InputError("catalog", violations)
    # item-id order: sums over the catalog (e.g. novelty's popularity total) then do not depend on its row
    # order, which a Spark DataFrame does not have
    return frame.sort("item_id")


def summarise(
    scored: Scored,
    *,
    level: float,
    n_boot: int,
    seed: int | None,
    bootstrap: str,
) -> tuple[dict[str, MetricSummary], str]:
    """Point estimates and percentile bootstrap intervals over units."""
    from receval.stats.bootstrap import bootstrap_replicates, percentile_interval

    n = len(scored.request_ids)
    stats = [scored.stats[m] for m in scored.metrics]
    reps, method = bootstrap_replicates(stats, n, n_boot=n_boot, seed=seed, method=bootstrap)  # type: ignore[arg-type]
    low, high = percentile_interval(reps, level)
    summary = {
        str(m): MetricSummary(str(m), scored.stats[m].value(), n, float(low[j]), float(high[j]), m.greater_is_better)
        for j, m in enumerate(scored.metrics)
    }
    return summary, method


def evaluate(
    run: Any,
    labels: Any = None,
    metrics: Iterable[str | Metric] | str = ("ndcg@10",),
    *,
    columns: Mapping[str, str] | ColumnMapping | None = None,
    label_columns: Mapping[str, str] | ColumnMapping | None = None,
    catalog: Any = None,
    catalog_columns: Mapping[str, str] | None = None,
    by: str | list[str] | None = None,
    attributes: Any = None,
    cold_start: Mapping[str, Any] | None = None,
    format: FileFormat = "auto",
    missing_in_run: MissingPolicy = "zero",
    missing_in_labels: MissingPolicy = "ignore",
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    bootstrap: Literal["auto", "multinomial", "poisson", "poisson-fused"] = "auto",
    engine: Literal["auto", "polars", "streaming", "spark"] = "auto",
) -> EvaluationResult:
    """Score a run against relevance labels.

    Parameters
    ----------
    run : frame or path
        One row per (request, item) with a ``score``: pandas, polars (eager or
        lazy), pyarrow, or a Parquet / CSV / JSONL / TREC run file. Optional
        columns: ``prediction`` (calibration metrics), ``user_id``, and
        ``label`` (used when ``labels`` is None, as in logged impressions).
    labels : frame or path, optional
        One row per judged (request, item) with a graded ``label``; a TREC
        qrels file works too. Labels <= 0 mean judged-not-relevant.
    metrics : metric names, e.g. ``["ndcg@10", "map@100", "recall(min_label=2)@20"]``.
    columns, label_columns : your column names, e.g. ``{"request_id": "qid"}``
        (``label_columns`` defaults to ``columns``).
    catalog : frame or path, optional
        Items and their attributes (``item_id``, ``popularity``, ``category``,
        ...) for beyond-accuracy metrics; ``catalog_columns`` renames them.
    by : column name(s) to slice by, e.g. ``["country", "is_new_user"]``:
        columns of the run (constant within a request) or of ``attributes``.
        Per-slice values, n and intervals are in ``result.slices``.
    attributes : frame or path keyed by ``request_id`` or ``user_id`` holding
        slice columns (e.g. a users table).
    cold_start : ``{"history": frame_or_path, "min_interactions": 5}`` adds the
        slice ``cold_start_user``: users with fewer than ``min_interactions``
        rows in the history (needs ``user_id`` in the run). With
        ``"cohort": "item"`` (or ``"both"``) it adds ``result.item_cohorts``:
        ranking metrics with relevance restricted to cold items (fewer than
        ``min_interactions`` history rows) and to warm items.
    format : file format of paths, ``"auto"`` by extension.
    missing_in_run : requests judged in ``labels`` but absent from ``run``:
        ``"zero"`` (default, trec_eval ``-c``) scores them 0; ``"ignore"`` leaves them out.
    missing_in_labels : requests in ``run`` with no labels at all: ``"ignore"``
        (default, as trec_eval) or ``"zero"``.
    level, n_boot, seed, bootstrap : the percentile bootstrap interval over
        requests (see :func:`receval.stats.bootstrap_means`).
    engine : where the reduce step runs (docs/scale.md). ``"auto"`` (default):
        on Spark when ``run`` or ``labels`` is a PySpark DataFrame, else in
        memory with polars. ``"spark"`` also reads paths with Spark;
        ``"streaming"`` evaluates Parquet files larger than memory (polars'
        streaming engine, request buckets on disk). The chunked engines
        compute the ranking, calibration (uniform bins) and beyond-accuracy
        metrics (from the top-k item ids of each request; a beyond metric
        without a cutoff brings whole lists to the driver) and order
        requests by id before the bootstrap, so their intervals do not depend
        on partitioning. A Spark ``catalog`` is collected and read in item-id
        order.

    Returns
    -------
    EvaluationResult

    Notes
    -----
    Ranking follows trec_eval 10.0: score descending, ties broken by item id
    descending in byte order; see docs/metrics.md for every formula and
    convention. Both kinds of missing request are counted in ``counts``.

    Examples
    --------
    >>> import pandas as pd
    >>> run = pd.DataFrame({"request_id": [1, 1, 1], "item_id": ["a", "b", "c"], "score": [0.9, 0.8, 0.1]})
    >>> labels = pd.DataFrame({"request_id": [1], "item_id": ["b"], "label": [1]})
    >>> res = evaluate(run, labels, ["mrr", "precision@2"])
    >>> res["mrr"].mean, res["precision@2"].mean
    (0.5, 0.5)
    """
    import polars as pl

    from receval.slices import resolve_by, slice_summaries, unit_table

    parsed = parse_metrics(metrics)
    _check_options(level, n_boot, missing_in_run, missing_in_labels)
    slice_cols, from_run, attr_table = resolve_by(by, attributes, cold_start)
    scored = score(
        run, labels, parsed, columns=columns, label_columns=label_columns, catalog=catalog,
        catalog_columns=catalog_columns, format=format, missing_in_run=missing_in_run,
        missing_in_labels=missing_in_labels, slice_columns=from_run, engine=engine,
    )
    _warn_missing_in_run(scored.counts, "run")
    summary, method = summarise(scored, level=level, n_boot=n_boot, seed=seed, bootstrap=bootstrap)
    slices = None
    if slice_cols:
        units = unit_table(scored, slice_cols, attr_table, cold_start)
        slices = slice_summaries(scored, slice_cols, units, level=level, n_boot=n_boot, seed=seed, bootstrap=method)
    cohorts = None
    if cold_start is not None and cold_start.get("cohort", "user") in ("item", "both"):
        from receval.slices import item_cohorts

        cohorts = item_cohorts(
            run, labels, parsed, cold_start, label_columns=label_columns if label_columns is not None else columns,
            score_kwargs={"columns": columns, "format": format, "missing_in_run": missing_in_run,
                          "missing_in_labels": missing_in_labels},
            summary_kwargs={"level": level, "n_boot": n_boot, "seed": seed, "bootstrap": method},
        )

    columns_out: dict[str, Any] = {"request_id": scored.request_ids}
    for m in parsed:
        ms = scored.stats[m]
        if ms.per_unit is not None:
            columns_out[str(m)] = ms.per_unit
        elif ms.extra and "per_request" in ms.extra:
            columns_out[str(m)] = ms.extra["per_request"]
    per_request = pl.DataFrame(columns_out)

    settings = {
        "level": float(level),
        "n_boot": int(n_boot),
        "seed": seed,
        "bootstrap": method,
        "interval": "percentile bootstrap over requests",
        "missing_in_run": missing_in_run,
        "missing_in_labels": missing_in_labels,
        "ties": "score descending, then item id descending (byte order), as trec_eval",
    }
    extras = {str(m): scored.stats[m].extra for m in parsed if scored.stats[m].extra}
    result = EvaluationResult(parsed, summary, scored.counts, settings, per_request, _slices=slices, _item_cohorts=cohorts)
    result.details = {k: {kk: vv for kk, vv in v.items() if kk != "per_request"} for k, v in extras.items()}
    return result
