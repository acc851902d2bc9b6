"""Cohorts and slices: any metric broken down by request or user attributes.

A slice is a set of evaluated requests sharing the values of the ``by``
columns. Slice columns come from the run (they must be constant within a
request: user or request attributes, not item attributes), from an
``attributes`` table keyed by ``request_id`` or ``user_id``, or from the
built-in cold-start cohort. Each slice gets the metric's value over its
requests, its n and a percentile bootstrap interval resampling its requests
(the same sufficient statistics as the overall result, restricted to the
slice). Requests whose attribute is unknown form their own slice (value null),
never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from receval.errors import InputError, UsageError, Violation

__all__ = ["resolve_by", "unit_table", "slice_summaries", "COLD_START_COLUMN"]

COLD_START_COLUMN = "cold_start_user"
ITEM_COHORT_COLUMN = "cold_start_item"
_COLD_START_KEYS = {"history", "min_interactions", "user_column", "item_column", "cohort"}


def _cold_start_settings(cold_start: Mapping[str, Any]) -> tuple[int, str]:
    unknown = set(cold_start) - _COLD_START_KEYS
    if unknown:
        raise UsageError(f"cold_start has unknown key(s) {sorted(unknown)}; use {', '.join(sorted(_COLD_START_KEYS))}")
    if "history" not in cold_start:
        raise UsageError("cold_start needs a 'history' table (one row per past interaction, with user_id / item_id)")
    n_min = cold_start.get("min_interactions", 5)
    if not isinstance(n_min, int) or isinstance(n_min, bool) or n_min < 1:
        raise UsageError(f"cold_start min_interactions must be a positive integer, got {n_min!r}")
    cohort = cold_start.get("cohort", "user")
    if cohort not in ("user", "item", "both"):
        raise UsageError(f"cold_start cohort must be 'user', 'item' or 'both', got {cohort!r}")
    return n_min, cohort


def resolve_by(by: str | Sequence[str] | None, attributes: Any, cold_start: Mapping[str, Any] | None):
    """Split ``by`` into run columns and attribute-table columns; load the table."""
    from receval.data.readers import to_polars

    cols = [by] if isinstance(by, str) else list(by or [])
    if len(set(cols)) != len(cols):
        raise UsageError(f"by= names a column twice: {cols}")
    table = None
    if attributes is not None:
        table = to_polars(attributes, kind="attributes", name="attributes")
        if "request_id" not in table.columns and "user_id" not in table.columns:
            raise InputError(
                "attributes",
                [Violation("request_id / user_id", "the attributes table needs a request_id or user_id key column",
                           table.height, (), f"available columns are {table.columns[:12]}")],
            )
    from_table = [c for c in cols if table is not None and c in table.columns and c not in ("request_id", "user_id")]
    from_run = tuple(c for c in cols if c not in from_table and c != COLD_START_COLUMN)
    if cold_start is not None and _cold_start_settings(cold_start)[1] in ("user", "both") and COLD_START_COLUMN not in cols:
        cols.append(COLD_START_COLUMN)
    if not cols:
        return [], from_run, table
    return cols, from_run, table


def _cold_start_flags(unit_user: Any, cold_start: Mapping[str, Any]):
    import polars as pl

    from receval.data.readers import to_polars

    n_min, _ = _cold_start_settings(cold_start)
    column = cold_start.get("user_column", "user_id")
    history = to_polars(cold_start["history"], kind="history", name="cold_start history")
    if column not in history.columns:
        raise InputError("cold_start history", [Violation(column, "required column is missing", history.height, (),
                                                           f"available columns are {history.columns[:12]}")])
    if unit_user is None:
        raise UsageError("cold_start slices need a user_id column in the run")
    hist = history.select(pl.col(column).alias("__user"))
    users = unit_user.alias("__user")
    if hist.schema["__user"] != users.dtype:
        hist = hist.with_columns(pl.col("__user").cast(pl.String))
        users = users.cast(pl.String)
    counts = hist.group_by("__user").agg(pl.len().alias("__n"))
    joined = pl.DataFrame({"__user": users}).join(counts, on="__user", how="left", maintain_order="left")
    n = joined["__n"].fill_null(0)
    return pl.select(pl.when(users.is_null()).then(None).otherwise(n < n_min).alias(COLD_START_COLUMN)).to_series()


def unit_table(scored: Any, cols: list[str], table: Any, cold_start: Mapping[str, Any] | None):
    """One row per evaluated request with its slice values."""
    import polars as pl

    units = pl.DataFrame({"__unit": np.arange(len(scored.request_ids)), "request_id": scored.request_ids})
    if scored.unit_attrs is not None:
        units = pl.concat([units, scored.unit_attrs], how="horizontal")
    if table is not None:
        wanted = [c for c in cols if c in table.columns and c not in ("request_id", "user_id")]
        key = "request_id" if "request_id" in table.columns else "user_id"
        dups = table.height - table[key].n_unique()
        if dups:
            raise InputError("attributes", [Violation(key, "each key must appear once in the attributes table", dups,
                                                      tuple(repr(v) for v in table.filter(pl.col(key).is_duplicated())[key].head(3).to_list()))])
        attrs = table.select([key, *wanted])
        if key == "user_id":
            if scored.unit_user is None:
                raise UsageError("attributes keyed by user_id need a user_id column in the run")
            units = units.with_columns(scored.unit_user.alias("user_id"))
        if attrs.schema[key] != units.schema[key]:
            attrs = attrs.with_columns(pl.col(key).cast(pl.String))
            units = units.with_columns(pl.col(key).cast(pl.String))
        units = units.join(attrs, on=key, how="left", maintain_order="left")
    if cold_start is not None and COLD_START_COLUMN in cols:
        units = units.with_columns(_cold_start_flags(scored.unit_user, cold_start))
    return units.select(["__unit", *cols])


def slice_summaries(
    scored: Any,
    cols: list[str],
    units: Any,
    *,
    level: float,
    n_boot: int,
    seed: int | None,
    bootstrap: str,
):
    """One row per (slice, metric): slice values, metric, mean, ci_low, ci_high, n."""
    import polars as pl

    from receval.stats.bootstrap import bootstrap_replicates, percentile_interval

    rows: list[dict[str, Any]] = []
    groups = units.group_by(cols, maintain_order=True).agg(pl.col("__unit"))
    groups = groups.sort(cols, nulls_last=True)
    for record in groups.iter_rows(named=True):
        members = np.asarray(record["__unit"], dtype=np.int64)
        taken = [scored.stats[m].take(members) for m in scored.metrics]
        reps, _ = bootstrap_replicates(taken, len(members), n_boot=n_boot, seed=seed, method=bootstrap)  # type: ignore[arg-type]
        low, high = percentile_interval(reps, level)
        for j, m in enumerate(scored.metrics):
            row = {c: record[c] for c in cols}
            row.update(metric=str(m), mean=taken[j].value(), ci_low=float(low[j]), ci_high=float(high[j]), n=len(members))
            rows.append(row)
    schema_cols = [*cols, "metric", "mean", "ci_low", "ci_high", "n"]
    return pl.DataFrame(rows) if rows else pl.DataFrame({c: [] for c in schema_cols})


def item_cohorts(run: Any, labels: Any, metrics: list, cold_start: Mapping[str, Any], *, label_columns: Any,
                 score_kwargs: dict[str, Any], summary_kwargs: dict[str, Any]):
    """Ranking metrics with relevance restricted to cold (or warm) items.

    Cold items have fewer than ``min_interactions`` rows in the history (items
    absent from it count 0). For each cohort the labels of the other cohort's
    items are dropped, so a request is scored on how it ranks that cohort's
    relevant items; requests left without any label follow
    ``missing_in_labels`` (ignored by default) and n says how many remain.
    """
    import math

    import polars as pl

    from receval.data.contract import ColumnMapping
    from receval.data.readers import to_polars
    from receval.evaluation import score, summarise

    n_min, _ = _cold_start_settings(cold_start)
    if labels is None:
        raise UsageError("item cold-start cohorts need a separate labels table (labels=...)")
    ranking = [m for m in metrics if m.spec.kind == "ranking"]
    if not ranking:
        return None
    lab_map = ColumnMapping.of(label_columns)
    lab = to_polars(labels, kind="labels", name="labels")
    item_col = lab_map.source("item_id")
    if item_col not in lab.columns:
        raise InputError("labels", [Violation(lab_map.label("item_id"), "required column is missing", lab.height)])
    hist_col = cold_start.get("item_column", "item_id")
    history = to_polars(cold_start["history"], kind="history", name="cold_start history")
    if hist_col not in history.columns:
        raise InputError("cold_start history", [Violation(hist_col, "required column is missing", history.height, (),
                                                           f"available columns are {history.columns[:12]}")])
    counts = history.group_by(pl.col(hist_col).cast(pl.String).alias("__item")).agg(pl.len().alias("__n"))
    flags = (
        pl.DataFrame({"__item": lab[item_col].cast(pl.String)})
        .join(counts, on="__item", how="left", maintain_order="left")["__n"]
        .fill_null(0)
        < n_min
    )
    rows: list[dict[str, Any]] = []
    for cold in (True, False):
        subset = lab.filter(flags == cold)
        try:
            scored = score(run, subset, ranking, label_columns=label_columns, **score_kwargs)
        except InputError as err:
            if subset.height and not any("evaluable" in v.rule for v in err.violations):
                raise
            scored = None
        if scored is None:
            for m in ranking:
                rows.append({ITEM_COHORT_COLUMN: cold, "metric": str(m), "mean": math.nan, "ci_low": math.nan,
                             "ci_high": math.nan, "n": 0, "labels": subset.height})
            continue
        summary, _ = summarise(scored, **summary_kwargs)
        for m in ranking:
            s = summary[str(m)]
            rows.append({ITEM_COHORT_COLUMN: cold, "metric": s.metric, "mean": s.mean, "ci_low": s.ci_low,
                         "ci_high": s.ci_high, "n": s.n, "labels": subset.height})
    return pl.DataFrame(rows)
