"""Exposure of flagged (unsafe, sensitive, policy-violating) items in the top-k lists of a run.

``safety_audit(run, flags, ...)`` reads a table item_id -> boolean flag and reports,
overall and per user group, with request-level bootstrap intervals:

* **slot_share**: share of the top-k slots (all requests pooled) holding a flagged item;
* **exposure_share**: share of position-weighted exposure (v_j = 1/log2(1+j)) going to flagged items;
* **request_share**: share of requests with at least one flagged item in the top-k;
* with ``labels`` and ``negative_label``: the **negative-feedback rate** among
  shown flagged and shown unflagged items (a shown item is negative when its
  label equals ``negative_label``; shown items without a label count as not
  negative) and their ratio.

Formulas and conventions: docs/audits.md, "Safety exposure".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from receval.audits._result import interval_settings
from receval.audits.exposure import _harmonise, _labels_frame, _require
from receval.audits.popularity import (
    _Audit,
    _check_common,
    _ranked,
    _ratio,
    _rows,
    _unknown,
    _user_group_codes,
)
from receval.errors import InputError, UsageError, Violation

__all__ = ["SAFETY_FIELDS", "SafetyAudit", "safety_audit"]

SAFETY_FIELDS = (
    "slot_share",
    "exposure_share",
    "request_share",
    "negative_rate_flagged",
    "negative_rate_unflagged",
    "negative_rate_ratio",
)


@dataclass(frozen=True)
class SafetyAudit(_Audit):
    """Result of :func:`safety_audit`; ``to_dict()`` is JSON-safe and holds no id."""

    FIELDS: ClassVar[tuple[str, ...]] = SAFETY_FIELDS


def _flags_frame(flags: Any, flag_column: str) -> Any:
    import polars as pl

    from receval.data.readers import to_polars

    table = to_polars(flags, kind="catalog", name="flags", columns=["item_id", flag_column])
    _require(table, "flags", ["item_id", flag_column], f"the flags table maps item_id to a boolean {flag_column!r}")
    table = table.select("item_id", pl.col(flag_column).alias("__flag"))
    s = table["__flag"]
    violations = []
    if table["item_id"].null_count():
        violations.append(Violation("item_id", "must not be null", table["item_id"].null_count()))
    dup = table["item_id"].is_duplicated()
    if dup.any():
        violations.append(Violation("item_id", "one row per item", int(dup.sum())))
    if s.null_count():
        violations.append(Violation(
            flag_column, "must not be null", s.null_count(),
            tuple(repr(v) for v in table.filter(s.is_null())["item_id"].head(5).to_list()),
            "decide for every item: fill unknown flags with true (conservative) or false before the audit"))
    if s.dtype != pl.Boolean:
        if s.dtype.is_integer() and bool(s.drop_nulls().is_in([0, 1]).all()):
            table = table.with_columns(pl.col("__flag").cast(pl.Boolean))
        else:
            violations.append(Violation(flag_column, "must be boolean (or 0/1)", s.len(), (f"dtype {s.dtype}",)))
    if violations:
        raise InputError("flags", violations)
    return table


def safety_audit(
    run: Any,
    flags: Any,
    *,
    k: int | None = 10,
    flag_column: str = "flagged",
    user_groups: Any = None,
    group_column: str | None = None,
    labels: Any = None,
    negative_label: float | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 20,
    engine: str = "auto",
) -> SafetyAudit:
    """Exposure of flagged items in the top-k lists of ``run`` (see the module doc and docs/audits.md).

    Parameters
    ----------
    run : request_id, item_id, score (optional user_id); ranked by score
        descending, ties by item id text descending.
    flags : item_id and ``flag_column`` (boolean or 0/1, no nulls); every
        recommended item must have a row.
    user_groups, group_column, min_group_size, n_boot : as in
        :func:`receval.audits.popularity.popularity_bias_audit`.
    labels, negative_label : feedback on shown items; label == negative_label
        is negative feedback. Both or neither.
    engine : ``"auto"`` (Spark when an input is a PySpark DataFrame), ``"polars"``
        or ``"spark"``: the per-request reduce runs on Spark (docs/scale.md).

    Raises
    ------
    UsageError : bad arguments.  InputError : bad data, e.g. recommended items missing from ``flags``.
    """
    import polars as pl

    _check_common(k, min_group_size, n_boot, level, user_groups, group_column)
    if (labels is None) != (negative_label is None):
        raise UsageError("labels and negative_label go together: negative feedback is label == negative_label")
    if negative_label is not None and (isinstance(negative_label, bool) or not isinstance(negative_label, int | float)):
        raise UsageError(f"negative_label must be a number, got {negative_label!r}")
    from receval.engines.spark_audits import audit_engine

    if audit_engine(engine, run, flags, labels, user_groups, audit="safety_audit") == "spark":
        # per-request rows on Spark, statistics here
        from receval.engines.spark_audits import safety_spark

        return safety_spark(run, flags, k=k, flag_column=flag_column, user_groups=user_groups,
                            group_column=group_column, labels=labels, negative_label=negative_label, n_boot=n_boot,
                            level=level, seed=seed, min_group_size=min_group_size)
    frame, requests = _ranked(run, k)
    table = _flags_frame(flags, flag_column)
    lab = _labels_frame(labels) if labels is not None else None

    fr, tj = _harmonise(frame, table, "item_id")
    frame = fr.join(tj, on="item_id", how="left", maintain_order="left")
    if frame["__flag"].null_count():
        raise _unknown(frame.filter(pl.col("__flag").is_null())["item_id"], "run", "flags")

    mat, n_negative = _request_matrix(frame, requests, lab, negative_label)
    return _result(mat, requests, table, user_groups, n_negative, k=k, flag_column=flag_column,
                   has_labels=lab is not None, negative_label=negative_label, group_column=group_column,
                   n_boot=n_boot, level=level, seed=seed, min_group_size=min_group_size)


def _result(mat: np.ndarray, requests: Any, table: Any, user_groups: Any, n_negative: int, *, k, flag_column,
            has_labels: bool, negative_label, group_column, n_boot, level, seed, min_group_size) -> SafetyAudit:
    """The audit from the per-request matrix (``_request_matrix``), its requests (request_id[, user_id]) and the
    flags table: user groups, intervals, settings and counts. Shared by the Spark engine."""
    codes, names = _user_group_codes(requests, user_groups, group_column)
    overall, groups, method = _rows(mat, _finishes(has_labels), codes, names, min_group_size=min_group_size,
                                    n_boot=n_boot, level=level, seed=seed)
    return SafetyAudit(
        overall=overall,
        groups=groups,
        settings={
            "k": k,
            "flag_column": flag_column,
            "labels": has_labels,
            "negative_label": None if negative_label is None else float(negative_label),
            "group_column": group_column,
            **interval_settings(min_group_size, n_boot, level, seed, method),
        },
        counts={
            "n_requests": requests.height,
            "n_slots": int(mat[:, 0].sum()),
            "n_flagged_slots": int(mat[:, 1].sum()),
            "n_flag_items": table.height,
            "n_flagged_items": int(table["__flag"].sum()),
            "n_negative_shown": n_negative,
            "n_groups": len(names),
            "n_groups_suppressed": sum(g.suppressed for g in groups),
        },
    )


def _request_matrix(frame: Any, requests: Any, lab: Any, negative_label: float | None) -> tuple[np.ndarray, int]:
    """The per-request matrix (one row per request, in ``__q`` order) whose column sums give every
    quantity (``_finishes``), and the negative shown items. ``frame``: the ranked top-k rows with ``__q``,
    ``rank`` and ``__flag``. Shared by the Spark engine (receval/engines/spark_audits.py)."""
    import polars as pl

    n_req = requests.height
    q = frame["__q"].to_numpy()
    flag = frame["__flag"].to_numpy().astype(np.float64)
    w = 1.0 / np.log2(1.0 + frame["rank"].to_numpy().astype(np.float64))
    mat = np.zeros((n_req, 8))
    mat[:, 0] = np.bincount(q, minlength=n_req)  # slots
    mat[:, 1] = np.bincount(q, weights=flag, minlength=n_req)  # flagged slots
    mat[:, 2] = np.bincount(q, weights=w, minlength=n_req)  # exposure
    mat[:, 3] = np.bincount(q, weights=w * flag, minlength=n_req)  # flagged exposure
    mat[:, 4] = mat[:, 1] > 0  # any flagged
    mat[:, 5] = 1.0
    n_negative = 0
    if lab is not None:
        neg = lab.filter(pl.col("label") == float(negative_label)).select("request_id", "item_id").with_columns(
            __neg=pl.lit(1.0))
        fr, nj = _harmonise(frame, neg, "item_id")
        fr, nj = _harmonise(fr, nj, "request_id")
        is_neg = fr.join(nj, on=["request_id", "item_id"], how="left", maintain_order="left")["__neg"].fill_null(0.0)
        is_neg_np = is_neg.to_numpy()
        n_negative = int(is_neg_np.sum())
        mat[:, 6] = np.bincount(q, weights=is_neg_np * flag, minlength=n_req)
        mat[:, 7] = np.bincount(q, weights=is_neg_np * (1.0 - flag), minlength=n_req)

    return mat, n_negative


def _finishes(with_labels: bool) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each quantity as a function of (replicate) column sums of the per-request matrix."""
    finishes: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "slot_share": lambda s: _ratio(s[:, 1], s[:, 0]),
        "exposure_share": lambda s: _ratio(s[:, 3], s[:, 2]),
        "request_share": lambda s: _ratio(s[:, 4], s[:, 5]),
    }
    if with_labels:
        finishes.update({
            "negative_rate_flagged": lambda s: _ratio(s[:, 6], s[:, 1]),
            "negative_rate_unflagged": lambda s: _ratio(s[:, 7], s[:, 0] - s[:, 1]),
            "negative_rate_ratio": lambda s: _ratio(_ratio(s[:, 6], s[:, 1]), _ratio(s[:, 7], s[:, 0] - s[:, 1])),
        })
    return finishes
