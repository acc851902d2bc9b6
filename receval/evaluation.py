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
        return {
            "metrics": {name: s.to_dict() for name, s in self.summary.items()},
            "counts": dict(self.counts),
            "settings": {k: v for k, v in self.settings.items()},
        }

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


def evaluate(
    run: Any,
    labels: Any,
    metrics: Iterable[str | Metric] | str = ("ndcg@10",),
    *,
    columns: Mapping[str, str] | ColumnMapping | None = None,
    label_columns: Mapping[str, str] | ColumnMapping | None = None,
    format: FileFormat = "auto",
    missing_in_run: MissingPolicy = "zero",
    missing_in_labels: MissingPolicy = "ignore",
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    bootstrap: Literal["auto", "multinomial", "poisson"] = "auto",
) -> EvaluationResult:
    """Score a run against relevance labels.

    Parameters
    ----------
    run : frame or path
        One row per (request, item) with a ``score``: pandas, polars (eager or
        lazy), pyarrow, or a Parquet / CSV / JSONL / TREC run file.
    labels : frame or path
        One row per judged (request, item) with a graded ``label``; a TREC
        qrels file works too. Labels <= 0 mean judged-not-relevant.
    metrics : metric names, e.g. ``["ndcg@10", "map@100", "recall(min_label=2)@20"]``.
    columns, label_columns : your column names, e.g. ``{"request_id": "qid"}``
        (``label_columns`` defaults to ``columns``).
    format : file format of paths, ``"auto"`` by extension.
    missing_in_run : requests judged in ``labels`` but absent from ``run``:
        ``"zero"`` (default, trec_eval ``-c``) scores them 0; ``"ignore"`` leaves them out.
    missing_in_labels : requests in ``run`` with no labels at all: ``"ignore"``
        (default, as trec_eval) or ``"zero"``.
    level, n_boot, seed, bootstrap : the percentile bootstrap interval over
        requests (see :func:`receval.stats.bootstrap_means`).

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

    from receval.metrics._prepare import prepare
    from receval.metrics.ranking import DuplicateItems, HashCollision, score_chunk
    from receval.stats.bootstrap import bootstrap_means

    parsed = parse_metrics(metrics)
    for m in parsed:
        if m.spec.kind != "ranking":
            raise UsageError(f"{m} is not a ranking metric; evaluate() scores ranking metrics")
    for name, value in (("missing_in_run", missing_in_run), ("missing_in_labels", missing_in_labels)):
        if value not in ("zero", "ignore"):
            raise UsageError(f"{name} must be 'zero' or 'ignore', got {value!r}")
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise UsageError(f"n_boot must be a positive integer, got {n_boot!r}")

    run_map = ColumnMapping.of(columns)
    lab_map = ColumnMapping.of(label_columns) if label_columns is not None else run_map
    run_cols, lab_cols = ("request_id", "item_id", "score"), ("request_id", "item_id", "label")
    run_df = validate(
        to_polars(run, kind="run", format=format, columns=[run_map.source(c) for c in run_cols]),
        "run", run_map, use=run_cols,
    )
    lab_df = validate(
        to_polars(labels, kind="labels", format=format, columns=[lab_map.source(c) for c in lab_cols]),
        "labels", lab_map, use=lab_cols,
    )

    prepared = prepare(run_df, lab_df)
    try:
        try:
            values = score_chunk(prepared.chunk, parsed).values
        except HashCollision:  # pragma: no cover - needs a 64-bit hash collision
            values = score_chunk(prepared.make_exact(), parsed).values
    except DuplicateItems as dup:
        rows = dup.example_rows if prepared.run_rows is None else np.sort(prepared.run_rows[dup.example_rows])
        first = rows[:3]
        ex = run_df[first.tolist()] if len(first) else run_df.head(0)
        raise InputError(
            "run",
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
            "run and labels",
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

    columns_out = {"request_id": prepared.request_ids.gather(idx)}
    matrix = np.empty((len(idx), len(parsed)))
    for j, m in enumerate(parsed):
        matrix[:, j] = values[m][idx]
        columns_out[str(m)] = matrix[:, j]
    per_request = pl.DataFrame(columns_out)

    boot = bootstrap_means(matrix, n_boot=n_boot, level=level, seed=seed, method=bootstrap)
    means = matrix.mean(axis=0) if len(idx) else np.full(len(parsed), np.nan)
    summary = {
        str(m): MetricSummary(
            str(m), float(means[j]), len(idx), float(boot.low[j]), float(boot.high[j]), m.greater_is_better
        )
        for j, m in enumerate(parsed)
    }

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
    settings = {
        "level": float(level),
        "n_boot": int(n_boot),
        "seed": seed,
        "bootstrap": boot.method,
        "interval": "percentile bootstrap over requests",
        "missing_in_run": missing_in_run,
        "missing_in_labels": missing_in_labels,
        "ties": "score descending, then item id descending (byte order), as trec_eval",
    }
    return EvaluationResult(parsed, summary, counts, settings, per_request)
