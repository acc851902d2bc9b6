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
    if cold_start is not None and COLD_START_COLUMN not in cols:
        cols.append(COLD_START_COLUMN)
    if not cols:
        return [], from_run, table
    return cols, from_run, table


def _cold_start_flags(unit_user: Any, cold_start: Mapping[str, Any]):
    import polars as pl

    from receval.data.readers import to_polars

    unknown = set(cold_start) - {"history", "min_interactions", "user_column"}
    if unknown:
        raise UsageError(f"cold_start has unknown key(s) {sorted(unknown)}; use history, min_interactions, user_column")
    if "history" not in cold_start:
        raise UsageError("cold_start needs a 'history' table (one row per past interaction, with user_id)")
    n_min = cold_start.get("min_interactions", 5)
    if not isinstance(n_min, int) or n_min < 1:
        raise UsageError(f"cold_start min_interactions must be a positive integer, got {n_min!r}")
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
    if cold_start is not None:
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
