"""User-side performance disparity and calibration by user group.

``disparity_audit(run, labels, metrics, attributes=..., sensitive=[...])``
asks whether the recommender serves some groups of users worse than others:

* every registered per-request metric (``ndcg@10``, ``recall@20``, ...) is
  computed by :func:`receval.evaluation.score` (never re-implemented here),
  then averaged per **user** (the mean of the user's requests; a user counts
  once however many requests they made) or kept per request (``unit="request"``);
* the per-unit rows are broken down by each sensitive attribute and by
  intersections of them (all pairs by default) with fairlearn's
  ``MetricFrame`` (group value = mean of the per-unit values of the group);
* each group gets its n, value, difference and ratio to a reference (the
  overall value by default), percentile bootstrap intervals over units, and a
  pass/fail under a tolerance rule (ratio within [0.8, 1.25], the Aequitas
  convention); the worst group per attribute and metric follows the metric's
  direction in the registry.

``calibration_audit(...)`` does the same for calibration metrics (``ece``,
``brier``, ...), which pool the impressions of a group: their per-request
sufficient statistics (``receval.metrics.calibration``) are summed per unit
and per group.

One engine serves both. Units are sorted into *cells* (units sharing every
sensitive value); each group of each attribute or intersection is a union of
cells. A bootstrap replicate draws one weight per unit
(``receval.stats.bootstrap.replicate_weights``), sums weighted statistics per
(coarse) cell in one sweep (a BLAS product per cell, or segment sums for runs
of small cells) and aggregates cells into groups with a sparse matrix;
high-cardinality attributes get a sweep of their own (see ``_sweeps``). The
cost is O(n_boot x units) per sweep whatever the number of groups, and no
Python loop runs over groups inside the bootstrap.

Formulas and conventions: docs/audits.md, "User-side performance disparity"
and "Calibration by group".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from receval.audits._result import Background
from receval.audits.exposure import MISSING_GROUP, Estimate, _num
from receval.audits.popularity import ALL_GROUP
from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = [
    "ALL_GROUP",
    "MISSING_GROUP",
    "GroupDisparity",
    "MetricDisparity",
    "AttributeDisparity",
    "DisparityAudit",
    "CalibrationAudit",
    "disparity_audit",
    "calibration_audit",
]

#: separator of the attribute names and group values of an intersection
SEP = " & "

#: partitions with more groups get their point values from receval's own group
#: sums (the same formula) instead of MetricFrame, whose cost is ~0.35 ms per group
METRIC_FRAME_MAX_GROUPS = 1000

_DEFAULT_TOLERANCE = (0.8, 1.25)
_RESERVED = (ALL_GROUP, MISSING_GROUP)
_KEYS = ("request_id", "user_id", "item_id", "score", "label", "prediction", "position", "propensity")
_CHUNK_BYTES = 1 << 21  # float weights converted at once (b x chunk): stays in cache
_FEW_SEGMENTS = 16  # a chunk spanning at most this many cells: one BLAS product per cell
_CELL_BUFFER = 1 << 23  # replicate x cell x statistic sums held at once (8 bytes each)
_MIN_CELL_UNITS = 12  # mean units per cell below which replicates are summed per attribute
_PERCENTILE_COLUMNS = 2048  # replicate columns sorted at once
_HASH_SEED = 0x5EED


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class GroupDisparity:
    """One group of one attribute (or intersection) for one metric.

    ``value``, ``difference`` (value - reference) and ``ratio`` (value /
    reference) are None when ``suppressed``; their intervals are None for a
    single-member group. ``passes`` is None when suppressed or undecidable
    (undefined ratio, no rule declared).
    """

    group: str
    values: tuple[str, ...]  # one value per column of the attribute
    n: int  # units (users or requests) with a defined value
    suppressed: bool
    single_member: bool
    value: Estimate | None = None
    difference: Estimate | None = None
    ratio: Estimate | None = None
    passes: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "values": list(self.values),
            "n": self.n,
            "suppressed": self.suppressed,
            "single_member": self.single_member,
            "value": None if self.value is None else self.value.to_dict(),
            "difference": None if self.difference is None else self.difference.to_dict(),
            "ratio": None if self.ratio is None else self.ratio.to_dict(),
            "passes": self.passes,
        }


@dataclass(frozen=True)
class MetricDisparity:
    """One metric broken down by one attribute (or intersection)."""

    metric: str
    greater_is_better: bool
    reference: str | None  # "(all)" for the overall value, else a group; None: undefined
    reference_value: Estimate | None
    groups: tuple[GroupDisparity, ...]
    worst_group: str | None
    best_group: str | None
    passes: bool | None
    group_min: float | None = None
    group_max: float | None = None
    difference_between_groups: float | None = None  # group_max - group_min
    ratio_between_groups: float | None = None  # group_min / group_max
    max_abs_difference: float | None = None  # max |value - reference|
    min_ratio: float | None = None  # min of min(r, 1/r), r = value / reference
    engine: str = "fairlearn.MetricFrame"

    def group(self, name: str) -> GroupDisparity:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    @property
    def suppressed(self) -> tuple[str, ...]:
        return tuple(g.group for g in self.groups if g.suppressed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "reference": self.reference,
            "reference_value": None if self.reference_value is None else self.reference_value.to_dict(),
            "worst_group": self.worst_group,
            "best_group": self.best_group,
            "passes": self.passes,
            "group_min": self.group_min,
            "group_max": self.group_max,
            "difference_between_groups": self.difference_between_groups,
            "ratio_between_groups": self.ratio_between_groups,
            "max_abs_difference": self.max_abs_difference,
            "min_ratio": self.min_ratio,
            "n_groups": len(self.groups),
            "n_suppressed": len(self.suppressed),
            "suppressed": [{"group": g.group, "n": g.n} for g in self.groups if g.suppressed],
            "engine": self.engine,
            "groups": [g.to_dict() for g in self.groups],
        }


@dataclass(frozen=True)
class AttributeDisparity:
    """A sensitive attribute (``columns`` of length 1) or an intersection of several."""

    name: str
    columns: tuple[str, ...]
    n_groups: int
    n_missing: int  # units with at least one missing value of ``columns``
    metrics: dict[str, MetricDisparity] = field(default_factory=dict)

    @property
    def passes(self) -> bool | None:
        """False if any metric fails, None if none fails but some is undecided, else True."""
        return _combine(m.passes for m in self.metrics.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.name,
            "columns": list(self.columns),
            "n_groups": self.n_groups,
            "n_missing": self.n_missing,
            "passes": self.passes,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
        }


@dataclass(frozen=True)
class DisparityAudit:
    """Result of :func:`disparity_audit`; ``to_dict()`` is JSON-safe and holds no id."""

    overall: dict[str, Estimate]
    attributes: tuple[AttributeDisparity, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)

    def attribute(self, name: str | Sequence[str]) -> AttributeDisparity:
        key = name if isinstance(name, str) else SEP.join(name)
        for a in self.attributes:
            if a.name == key:
                return a
        raise KeyError(name)

    def __getitem__(self, key: tuple[str | Sequence[str], str]) -> MetricDisparity:
        """``audit["country", "ndcg@10"]`` or ``audit[("country", "age_band"), "ndcg@10"]``."""
        from receval.metrics.registry import parse_metric

        attr, metric = key
        return self.attribute(attr).metrics[str(parse_metric(metric))]

    @property
    def passes(self) -> bool | None:
        return _combine(a.passes for a in self.attributes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "counts": dict(self.counts),
            "passes": self.passes,
            "overall": {k: v.to_dict() for k, v in self.overall.items()},
            "attributes": [a.to_dict() for a in self.attributes],
        }

    def to_frame(self) -> pl.DataFrame:
        """One row per attribute x group x metric (polars)."""
        import polars as pl

        cols: dict[str, list[Any]] = {c: [] for c in (
            "attribute", "group", "metric", "n", "suppressed", "single_member",
            "value", "value_low", "value_high", "difference", "difference_low", "difference_high",
            "ratio", "ratio_low", "ratio_high", "passes", "worst", "reference")}
        for a in self.attributes:
            for m in a.metrics.values():
                for g in m.groups:
                    cols["attribute"].append(a.name)
                    cols["group"].append(g.group)
                    cols["metric"].append(m.metric)
                    cols["n"].append(g.n)
                    cols["suppressed"].append(g.suppressed)
                    cols["single_member"].append(g.single_member)
                    for q in ("value", "difference", "ratio"):
                        est = getattr(g, q)
                        cols[q].append(None if est is None else est.value)
                        cols[q + "_low"].append(None if est is None else est.low)
                        cols[q + "_high"].append(None if est is None else est.high)
                    cols["passes"].append(g.passes)
                    cols["worst"].append(g.group == m.worst_group)
                    cols["reference"].append(m.reference)
        schema: dict[str, Any] = {c: pl.Float64 for c in cols}
        schema.update(attribute=pl.String, group=pl.String, metric=pl.String, n=pl.Int64, suppressed=pl.Boolean,
                      single_member=pl.Boolean, passes=pl.Boolean, worst=pl.Boolean, reference=pl.String)
        return pl.DataFrame(cols, schema=schema)


@dataclass(frozen=True)
class CalibrationAudit(DisparityAudit):
    """Result of :func:`calibration_audit`; ``reliability[attribute][metric][group]`` holds
    the group's reliability table (bin rows) when asked for."""

    reliability: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.reliability is not None:
            out["reliability"] = self.reliability
        return out


def _combine(flags: Iterable[bool | None]) -> bool | None:
    flags = list(flags)
    if any(f is False for f in flags):
        return False
    if not flags or any(f is None for f in flags):
        return None
    return True


# --------------------------------------------------------------------------- arguments


def _check_args(sensitive: Any, intersections: Any, unit: Any, missing: Any, tolerance: Any,
                difference_tolerance: Any, reference: Any, n_boot: Any, level: Any, min_group_size: Any
                ) -> tuple[list[str], list[tuple[str, ...]], tuple[float, float] | None]:
    if isinstance(sensitive, str):
        sensitive = [sensitive]
    if not isinstance(sensitive, Sequence) or not sensitive or not all(isinstance(c, str) for c in sensitive):
        raise UsageError(f"sensitive must name at least one attribute column, e.g. ['country'], got {sensitive!r}")
    sensitive = list(sensitive)
    if len(set(sensitive)) != len(sensitive):
        raise UsageError(f"sensitive names a column twice: {sensitive}")
    clash = [c for c in sensitive if c in _KEYS]
    if clash:
        raise UsageError(f"sensitive names data-contract column(s) {clash}; name user attribute columns")
    if intersections is True:
        crossed = list(itertools.combinations(sensitive, 2))
    elif intersections is False or intersections is None:
        crossed = []
    elif isinstance(intersections, Sequence) and not isinstance(intersections, str):
        crossed = []
        for combo in intersections:
            if (isinstance(combo, str) or not isinstance(combo, Sequence) or len(combo) < 2
                    or len(set(combo)) != len(combo)):
                raise UsageError(f"each intersection is a tuple of at least two distinct attributes, got {combo!r}")
            unknown = [c for c in combo if c not in sensitive]
            if unknown:
                raise UsageError(f"intersection {tuple(combo)} names {unknown}, which are not in sensitive={sensitive}")
            if any(set(combo) == set(c) for c in crossed):
                raise UsageError(f"intersection {tuple(combo)} is given twice")
            crossed.append(tuple(combo))
    else:
        raise UsageError(f"intersections must be True, False or a list of tuples of attributes, got {intersections!r}")
    if unit not in ("user", "request"):
        raise UsageError(f"unit must be 'user' or 'request', got {unit!r}")
    if missing not in ("group", "error"):
        raise UsageError(f"missing must be 'group' (a '{MISSING_GROUP}' group) or 'error', got {missing!r}")
    tol: tuple[float, float] | None = None
    if tolerance is not None:
        try:
            lo, hi = (float(x) for x in tolerance)
        except (TypeError, ValueError):
            raise UsageError(f"tolerance must be a pair (low, high) such as (0.8, 1.25), or None; got {tolerance!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= 1.0 <= hi):
            raise UsageError(f"tolerance (low, high) needs 0 < low <= 1 <= high, got {tolerance!r}")
        tol = (lo, hi)
    if difference_tolerance is not None and (
            isinstance(difference_tolerance, bool) or not isinstance(difference_tolerance, int | float)
            or not math.isfinite(difference_tolerance) or difference_tolerance < 0):
        raise UsageError(f"difference_tolerance must be a number >= 0 or None, got {difference_tolerance!r}")
    if not (isinstance(reference, str) or isinstance(reference, Mapping)):
        raise UsageError(f"reference must be 'overall', 'best', a group name or a mapping attribute -> group, got {reference!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise UsageError(f"n_boot must be a non-negative integer (0: no intervals), got {n_boot!r}")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 0:
        raise UsageError(f"min_group_size must be a non-negative integer, got {min_group_size!r}")
    return sensitive, crossed, tol


# --------------------------------------------------------------------------- units and attributes


@dataclass
class _Units:
    scored: Any  # receval.evaluation.Scored
    unit_of_request: np.ndarray  # (n_requests,) unit code; units in canonical (id-sorted) order
    n: int
    ids: Any  # polars Series: the unit ids in unit order (error examples only, never in outputs)
    attrs: Any  # polars DataFrame: one String column per sensitive attribute (null = missing)
    sources: dict[str, str]  # attribute -> the frame it comes from ("attributes" or "run")
    counts: dict[str, Any]


def _load_table(obj: Any, name: str) -> pl.DataFrame:
    from receval.data.readers import to_polars

    return to_polars(obj, kind="attributes", name=name)


def _check_key(table: pl.DataFrame, key: str, name: str) -> None:
    import polars as pl

    violations = []
    nulls = table[key].null_count()
    if nulls:
        violations.append(Violation(key, "must not be null", nulls))
    if table[key].n_unique() != table.height and (dup := table[key].drop_nulls().is_duplicated()).any():
        ex = table.filter(pl.col(key).is_duplicated())[key].unique(maintain_order=True).head(3).to_list()
        violations.append(Violation(key, f"one row per {key}", int(dup.sum()), tuple(repr(v) for v in ex),
                                    f"{name} gives each {key} one row"))
    if violations:
        raise InputError(name, violations)


def _lookup(keys: pl.Series, table: pl.DataFrame, key: str, columns: list[str]) -> pl.DataFrame:
    """The rows of ``table`` for each value of ``keys`` (nulls where absent), in ``keys`` order."""
    import polars as pl

    right = table.select(key, *columns)
    if keys.dtype.is_integer() and right.schema[key].is_integer() and not keys.null_count() and len(keys) and len(right):
        # dense integer ids: a position table instead of a hash join (10x faster at 1M rows)
        k, tk = keys.to_numpy(), right[key].to_numpy()
        low, high = min(int(k.min()), int(tk.min())), max(int(k.max()), int(tk.max()))
        if high - low < 4 * (len(k) + len(tk)) + (1 << 16):
            pos = np.full(high - low + 1, len(right), dtype=np.int64)  # absent -> the null row appended below
            pos[tk - low] = np.arange(len(right))
            values = right.select(columns)
            padded = pl.concat([values, values.clear(1)])  # clear(1): one all-null row
            return padded[pos[k - low]]
    left = pl.DataFrame({key: keys})
    if left.schema[key] != right.schema[key]:
        left = left.with_columns(pl.col(key).cast(pl.String))
        right = right.with_columns(pl.col(key).cast(pl.String))
    return left.join(right, on=key, how="left", maintain_order="left").select(columns)


def _as_text(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Attribute columns as text, NaN counted as missing."""
    import polars as pl

    exprs = []
    for c in columns:
        e = pl.col(c)
        if frame.schema[c].is_float():
            e = e.fill_nan(None)
        exprs.append(e.cast(pl.String).alias(c))
    return frame.select(exprs)


def _units(run: Any, labels: Any, parsed: list, *, attributes: Any, users: Any, sensitive: list[str], unit: str,
           columns: Any, label_columns: Any, missing_in_run: str, missing_in_labels: str, catalog: Any = None,
           catalog_columns: Any = None, engine: str = "auto") -> _Units:
    import polars as pl

    from receval.data.contract import ColumnMapping
    from receval.data.readers import to_polars
    from receval.engines.spark_audits import audit_engine
    from receval.evaluation import score

    run_map = ColumnMapping.of(columns)
    engine = audit_engine(engine, run, labels, attributes, users, audit="the disparity audit")
    if engine == "spark":  # per-request values on Spark; attribute tables collected (receval/engines/spark_audits.py)
        from receval.engines.spark_audits import unit_inputs

        run_pl, attributes, users = unit_inputs(run, attributes, users, sensitive)
    else:
        run_pl = to_polars(run, kind="run", name="run")
    table, key = None, None
    if attributes is not None:
        table = _load_table(attributes, "attributes")
        key = "request_id" if "request_id" in table.columns else "user_id" if "user_id" in table.columns else None
        if key is None:
            raise InputError("attributes", [Violation(
                "user_id / request_id", "the attributes table needs a user_id or request_id key column", table.height,
                (), f"available columns are {table.columns[:12]}")])
        _check_key(table, key, "attributes")
    from_table = [c for c in sensitive if table is not None and c in table.columns]
    from_run = [c for c in sensitive if c not in from_table]
    absent = [c for c in from_run if c not in run_pl.columns]
    if absent:
        where = "the attributes table or the run" if table is not None else "the run (or pass attributes=...)"
        raise InputError("attributes" if table is not None else "run", [Violation(
            c, "sensitive attribute column is missing", (table if table is not None else run_pl).height, (),
            f"a sensitive attribute must be a column of {where}; available: "
            f"{sorted(set(run_pl.columns) | set(table.columns if table is not None else []))[:12]}")
            for c in absent])

    scored = score(run_pl.df if engine == "spark" else run_pl, labels, parsed, columns=columns,
                   label_columns=label_columns, catalog=catalog, catalog_columns=catalog_columns,
                   missing_in_run=missing_in_run, missing_in_labels=missing_in_labels, slice_columns=tuple(from_run),
                   engine=engine)
    req_ids = scored.request_ids
    n_req = len(req_ids)
    in_run = np.asarray(scored.unit_in_run, dtype=bool)
    req_user = scored.unit_user  # polars Series or None
    n_from_users = 0
    if users is not None:
        req_user, n_from_users = _users_of_requests(req_ids, req_user, users)

    if unit == "user" or key == "user_id":
        if req_user is None:
            raise InputError("run", [Violation(
                run_map.label("user_id"), "required column is missing", n_req, (),
                ("unit='user' " if unit == "user" else "an attributes table keyed by user_id ")
                + "needs the user of each request: give the run a user_id column (columns={'user_id': ...}), "
                "pass users=... (request_id -> user_id)" + (", or use unit='request'" if unit == "user" else ""))])
    if unit == "user":
        nulls = req_user.is_null()
        if nulls.any():
            ex = req_ids.filter(nulls).head(3).to_list()
            raise InputError("run", [Violation(
                run_map.label("user_id"), "every evaluated request needs a user", int(nulls.sum()),
                tuple(f"request {v!r}" for v in ex),
                "requests judged in the labels but absent from the run have no user; pass users=... "
                "(request_id -> user_id) or missing_in_run='ignore' to leave them out (counted)")])
        codes, ids = _canonical_codes(req_user)
    else:
        codes, ids = _canonical_codes(req_ids)
    n_units = len(ids)

    # attribute values per request (run columns; tables keyed by request, or by
    # user when the unit is the request), then per unit
    per_request = pl.DataFrame({"__u": codes, "__in_run": in_run})
    if from_run:
        per_request = pl.concat([per_request, _as_text(scored.unit_attrs, from_run)], how="horizontal")
    user_table = unit == "user" and key == "user_id"
    if from_table and not user_table:
        keys = req_ids if key == "request_id" else req_user
        per_request = pl.concat([per_request, _as_text(_lookup(keys, table, key, from_table), from_table)],
                                how="horizontal")
    if unit == "request":
        attrs = per_request.sort("__u").select(sensitive)
    else:
        frames = []
        per_req_cols = [c for c in sensitive if c in per_request.columns]
        if per_req_cols:
            frames.append(_per_user(per_request, per_req_cols, n_units, ids, from_run))
        if from_table and user_table:
            frames.append(_as_text(_lookup(ids, table, "user_id", from_table), from_table))
        attrs = pl.concat(frames, how="horizontal").select(sensitive)

    counts: dict[str, Any] = {"n_requests": n_req, "n_units": n_units, "unit": unit,
                              "requests_user_from_users_table": n_from_users}
    if unit == "user":
        per_user = np.bincount(codes, minlength=n_units)
        counts.update(n_users=n_units, max_requests_per_user=int(per_user.max()) if n_units else 0,
                      users_with_several_requests=int((per_user > 1).sum()))
    counts.update(scored.counts)
    sources = {c: "attributes" if c in from_table else "run" for c in sensitive}
    return _Units(scored, codes, n_units, ids, attrs, sources, counts)


def _canonical_codes(ids: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Dense codes of ``ids`` in an order that depends on the id values only, never on row order,
    and the id of each code.

    Integer ids are ordered by value; text ids by a seeded 64-bit hash (sorting a
    million strings costs seconds), checked to be collision-free.
    """
    import polars as pl

    if ids.dtype.is_integer():
        keys = ids.to_numpy()
        low = int(keys.min()) if len(keys) else 0
        if len(keys) and int(keys.max()) - low < 4 * len(keys) + (1 << 16):  # dense ids: a table, no sort
            present = np.zeros(int(keys.max()) - low + 1, dtype=bool)
            present[keys - low] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            values = np.flatnonzero(present) + low
            return code_of[keys - low], pl.Series(ids.name, values, dtype=ids.dtype)
    else:
        keys = ids.hash(seed=_HASH_SEED).to_numpy()
        if len(np.unique(keys)) != ids.n_unique():  # a hash collision: order by the text itself
            keys = ids.rank("dense").to_numpy()
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), ids.gather(first)


def _value_codes(values: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Codes of text values in sorted order, and the sorted distinct values."""
    import polars as pl

    names = values.unique().sort()
    codes = values.replace_strict(names, np.arange(len(names), dtype=np.int64), return_dtype=pl.Int64)
    return codes.to_numpy(), names.to_list()


def _users_of_requests(req_ids: pl.Series, req_user: pl.Series | None, users: Any) -> tuple[pl.Series, int]:
    """The user of each request: the run's user_id, else the ``users`` table's."""
    import polars as pl

    table = _load_table(users, "users")
    for c in ("request_id", "user_id"):
        if c not in table.columns:
            raise InputError("users", [Violation(c, "required column is missing", table.height, (),
                                                 "users maps request_id -> user_id")])
    _check_key(table, "request_id", "users")
    if table["user_id"].null_count():
        raise InputError("users", [Violation("user_id", "must not be null", table["user_id"].null_count())])
    mapped = _lookup(req_ids, table, "request_id", ["user_id"])["user_id"]
    if req_user is None:
        return mapped, int(mapped.is_not_null().sum())
    if req_user.dtype != mapped.dtype:
        req_user, mapped = req_user.cast(pl.String), mapped.cast(pl.String)
    clash = (req_user.is_not_null() & mapped.is_not_null() & (req_user != mapped)).fill_null(False)
    if clash.any():
        ex = req_ids.filter(clash).head(3).to_list()
        raise InputError("users", [Violation("user_id", "must agree with the run's user_id", int(clash.sum()),
                                             tuple(f"request {v!r}" for v in ex))])
    filled = req_user.is_null() & mapped.is_not_null()
    return pl.select(pl.coalesce(req_user, mapped)).to_series(), int(filled.sum())


def _per_user(per_request: pl.DataFrame, cols: list[str], n_units: int, ids: pl.Series,
              from_run: list[str]) -> pl.DataFrame:
    """One row per user (in unit order) of request-level attributes, which must be constant per user.

    Run columns are read from the requests the run ranked only (a request
    judged but not ranked carries no run row, hence no value).
    """
    import polars as pl

    out = pl.DataFrame({"__u": np.arange(n_units, dtype=np.int64)})
    violations = []
    for c in cols:
        frame = per_request.select("__u", c, "__in_run")
        if c in from_run:
            frame = frame.filter(pl.col("__in_run"))
        agg = frame.group_by("__u").agg(pl.col(c).first(), pl.col(c).n_unique().alias("__k"))
        bad = agg.filter(pl.col("__k") > 1)
        if bad.height:
            ex = ids.gather(bad["__u"].sort().head(3).to_numpy()).to_list()
            violations.append(Violation(
                c, "must be the same for every request of a user", bad.height, tuple(f"user {v!r}" for v in ex),
                "a user attribute has one value per user (a null on some requests counts as a different "
                "value); audit per request with unit='request' if it really varies"))
            continue
        out = out.join(agg.select("__u", c), on="__u", how="left", maintain_order="left")
    if violations:
        raise InputError("run" if all(v.column in from_run for v in violations) else "attributes", violations)
    return out.select(cols)


# --------------------------------------------------------------------------- groups and cells


@dataclass
class _Partition:
    name: str
    columns: tuple[str, ...]
    names: list[tuple[str, ...]]  # group values, in output (sorted) order
    cell_group: np.ndarray  # (n_cells,) group index of each cell
    n_units: np.ndarray  # (n_groups,) units per group
    n_missing: int

    def label(self, g: int) -> str:
        return SEP.join(self.names[g])


@dataclass
class _Cells:
    order: np.ndarray  # units sorted by cell (stable within a cell: unit order)
    cell: np.ndarray  # (n,) cell of each unit, in sorted order
    starts: np.ndarray  # (n_cells,) first sorted position of each cell
    n: int
    coarse: np.ndarray | None = None  # (n_cells,) coarse cell of each cell (non-decreasing)
    coarse_columns: tuple[str, ...] = ()

    @property
    def n_cells(self) -> int:
        return len(self.starts)


def _groups(attrs: pl.DataFrame, sensitive: list[str], crossed: list[tuple[str, ...]], missing: str,
            ids: pl.Series, unit: str, sources: Mapping[str, str]) -> tuple[_Cells, list[_Partition]]:
    """Check the attribute values; sort units into cells; one partition per attribute and intersection."""
    n = attrs.height
    violations = []
    for c in sensitive:
        s = attrs[c]
        reserved = ((s == ALL_GROUP) | (s == MISSING_GROUP)).fill_null(False)
        if reserved.any():
            violations.append(Violation(c, f"must not use the reserved group names {list(_RESERVED)}", int(reserved.sum()),
                                        hint="rename those values"))
        nulls = s.is_null()
        if missing == "error" and nulls.any():
            ex = ids.filter(nulls).head(3).to_list()
            violations.append(Violation(
                c, "must not be missing (missing='error')", int(nulls.sum()), tuple(f"{unit} {v!r}" for v in ex),
                f"a {unit} without a row in the attributes table or with a null / NaN value has no {c}; fill it, "
                f"or pass missing='group' to audit such {unit}s as the group '{MISSING_GROUP}'"))
    if violations:
        raise InputError(sources.get(violations[0].column, "attributes"), violations)

    codes: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    nulls_of: dict[str, np.ndarray] = {}
    for c in sensitive:
        s = attrs[c]
        nulls_of[c] = s.is_null().to_numpy()
        codes[c], names[c] = _value_codes(s.fill_null(MISSING_GROUP))

    # cells: units sharing every sensitive value. *Coarse* cells share the values of
    # the low-cardinality attributes only (added by increasing number of levels
    # while cells keep >= _MIN_CELL_UNITS units on average); replicates sum them in
    # one sweep, other attributes get a sweep each (see _sweeps)
    coarse: list[str] = []
    ckey = np.zeros(n, dtype=np.int64)
    for c in sorted(sensitive, key=lambda c: len(names[c])):
        trial = _dense(ckey * len(names[c]) + codes[c])
        if n and (int(trial.max()) + 1) * _MIN_CELL_UNITS <= n:
            coarse.append(c)
            ckey = trial
    key = ckey
    for c in sensitive:
        if c not in coarse:
            key = _dense(key * len(names[c]) + codes[c])
    # numbered by first appearance in unit order (coarse cells first), so that
    # renaming values (swapping group labels) leaves the cells, their order and
    # hence every unit's bootstrap weight unchanged
    coarse_of_unit = _first_appearance(ckey)
    if len(coarse) == len(sensitive):  # every attribute coarse: cells are the coarse cells
        cell_of_unit = coarse_of_unit
    else:
        cell_of_unit = _dense(coarse_of_unit * max(n, 1) + _first_appearance(key))
    order = _stable_argsort(cell_of_unit)
    cell_sorted = cell_of_unit[order]
    starts = np.flatnonzero(np.r_[True, cell_sorted[1:] != cell_sorted[:-1]]) if n else np.zeros(0, dtype=np.int64)
    first_unit = order[starts]
    cell_size = np.diff(np.r_[starts, n])
    cells = _Cells(order, cell_sorted, starts, n, coarse=coarse_of_unit[first_unit], coarse_columns=tuple(coarse))

    parts = []
    for combo in [(c,) for c in sensitive] + list(crossed):
        # group key of each cell: its values' codes in mixed radix, re-ranked after
        # each column (ranks keep the lexicographic order and never overflow)
        cell_group = np.zeros(len(starts), dtype=np.int64)
        for c in combo:
            cell_group = _dense(cell_group * len(names[c]) + codes[c][first_unit])
        n_groups = int(cell_group.max()) + 1 if len(starts) else 0
        # decode each group's values from one of its cells (dense ranks keep the
        # lexicographic order of the columns' sorted values)
        rep = np.zeros(n_groups, dtype=np.int64)
        rep[cell_group] = np.arange(len(cell_group))
        gnames = [tuple(names[c][codes[c][first_unit[r]]] for c in combo) for r in rep]
        n_units = np.bincount(cell_group, weights=cell_size, minlength=n_groups).astype(np.int64)
        miss = np.zeros(n, dtype=bool)
        for c in combo:
            miss |= nulls_of[c]
        parts.append(_Partition(SEP.join(combo), combo, gnames, cell_group.astype(np.int64), n_units, int(miss.sum())))
    return cells, parts


def _stable_argsort(key: np.ndarray) -> np.ndarray:
    """Stable argsort of a dense non-negative key (numpy radix-sorts 16-bit keys)."""
    if len(key) and int(key.max()) < 1 << 16:
        return np.argsort(key.astype(np.uint16), kind="stable")
    return np.argsort(key, kind="stable")


def _first_appearance(key: np.ndarray) -> np.ndarray:
    """Renumber the values of a dense key 0, 1, ... in order of first appearance."""
    n_values = int(key.max()) + 1 if len(key) else 0
    first = np.full(n_values, len(key), dtype=np.int64)
    np.minimum.at(first, key, np.arange(len(key), dtype=np.int64))
    rank = np.empty(n_values, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_values)
    return rank[key]


def _dense(key: np.ndarray) -> np.ndarray:
    """Ranks of the distinct values of a non-negative int64 key (order-preserving)."""
    if not len(key):
        return key
    top = int(key.max())
    if top < 4 * len(key) + (1 << 16):  # small range: a table beats a sort
        present = np.zeros(top + 1, dtype=np.int64)
        present[key] = 1
        return (np.cumsum(present) - 1)[key]
    return np.unique(key, return_inverse=True)[1].astype(np.int64).reshape(-1)


# --------------------------------------------------------------------------- statistics engine


@dataclass
class _Spec:
    """A metric as column sums of the unit statistics: value = finish(sums[:, cols])."""

    metric: str
    greater_is_better: bool
    cols: np.ndarray
    finish: Callable[[np.ndarray], np.ndarray]
    count_col: int | None  # statistic column whose sum is the group's n (None: units)
    recentre: bool = False


def _ratio_finish(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def _plan(cells: _Cells, rows: int) -> list[tuple[int, int, int, np.ndarray]]:
    """Chunks of sorted units: (start, stop, first cell, segment bounds within the chunk)."""
    m = max(256, _CHUNK_BYTES // (8 * max(rows, 1)))
    out = []
    for c0 in range(0, cells.n, m):
        c1 = min(cells.n, c0 + m)
        cc = cells.cell[c0:c1]
        st = np.flatnonzero(np.r_[True, cc[1:] != cc[:-1]])
        out.append((c0, c1, int(cc[0]), np.r_[st, c1 - c0]))
    return out


def _cell_sums(w: np.ndarray, x: Any, plan: list, n_cells: int) -> np.ndarray:
    """(n_cells, s, b): per cell, statistic and replicate, the sum over the cell's units of w[r, u] * x[u, :].

    Units are sorted by cell, so each chunk covers a contiguous run of cells:
    few large cells get one BLAS product each, many small ones segment sums.
    """
    import scipy.sparse as sp

    b = w.shape[0]
    s = x.shape[1]
    out = np.zeros((n_cells, s, b))
    sparse = sp.issparse(x)
    for c0, c1, first, bounds in plan:
        wf = w[:, c0:c1].astype(np.float64)
        xc = x[c0:c1].toarray() if sparse else x[c0:c1]
        k = len(bounds) - 1
        if k <= _FEW_SEGMENTS:
            for i in range(k):
                a, e = bounds[i], bounds[i + 1]
                out[first + i] += (wf[:, a:e] @ xc[a:e]).T
        else:
            xt = np.ascontiguousarray(xc.T)
            tmp = np.empty_like(wf)
            for j in range(s):
                np.multiply(wf, xt[j], out=tmp)
                out[first : first + k, j, :] += np.add.reduceat(tmp, bounds[:-1], axis=1).T
    return out


@dataclass
class _Sweep:
    """One sweep of a replicate's weights: units (positions in cell order; None: all, in
    order) sorted into segments, and the sparse map segments -> output rows."""

    positions: np.ndarray | None
    segments: _Cells
    to_rows: Any  # scipy.sparse (n_rows, n_segments)
    x: Any  # the statistics of the pass's units, in segment order


def _sweeps(xs: Any, cells: _Cells, parts: list[_Partition], sel: list[np.ndarray], offsets: np.ndarray) -> list[_Sweep]:
    """How replicates are summed. Output row 0 is the overall sum, row 1 + j the j-th selected group.

    One sweep over the units in cell order sums each coarse cell (units sharing
    the low-cardinality attributes, typically hundreds of units each); a sparse
    matrix adds coarse cells into the overall sum and into every group of the
    partitions made of those attributes. Each other partition (an attribute
    with so many levels that cells would be tiny, and its intersections) gets a
    sweep over the units of its reported groups, sorted by group.
    """
    import scipy.sparse as sp

    n = cells.n
    n_rows = 1 + int(offsets[-1])
    coarse = cells.coarse if cells.coarse is not None else np.zeros(cells.n_cells, dtype=np.int64)
    n_coarse = int(coarse.max()) + 1 if len(coarse) else 0
    unit_coarse = coarse[cells.cell]
    starts = np.flatnonzero(np.r_[True, unit_coarse[1:] != unit_coarse[:-1]]) if n else np.zeros(0, dtype=np.int64)
    rows, cols = [np.zeros(n_coarse, dtype=np.int64)], [np.arange(n_coarse)]
    out = []
    for i, p in enumerate(parts):
        if not len(sel[i]):
            continue
        row_of_group = np.full(len(p.names), -1, dtype=np.int64)
        row_of_group[sel[i]] = 1 + offsets[i] + np.arange(len(sel[i]))
        if set(p.columns) <= set(cells.coarse_columns):
            # every cell of a coarse cell is in the same group of this partition
            group_of_coarse = np.zeros(n_coarse, dtype=np.int64)
            group_of_coarse[coarse] = p.cell_group
            r = row_of_group[group_of_coarse]
            rows.append(r[r >= 0])
            cols.append(np.flatnonzero(r >= 0))
            continue
        local = np.full(len(p.names), -1, dtype=np.int64)
        local[sel[i]] = np.arange(len(sel[i]))
        seg = local[p.cell_group[cells.cell]]
        positions = np.flatnonzero(seg >= 0)
        order = positions[_stable_argsort(seg[positions])]
        seg_sorted = seg[order]
        seg_starts = np.flatnonzero(np.r_[True, seg_sorted[1:] != seg_sorted[:-1]])
        to_rows = sp.csr_matrix((np.ones(len(sel[i])), (row_of_group[sel[i]], np.arange(len(sel[i])))),
                                shape=(n_rows, len(sel[i])))
        out.append(_Sweep(order, _Cells(order, seg_sorted, seg_starts, len(order)), to_rows, xs[order]))
    rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
    to_rows = sp.csr_matrix((np.ones(len(rows_)), (rows_, cols_)), shape=(n_rows, n_coarse))
    return [_Sweep(None, _Cells(np.arange(n), unit_coarse, starts, n), to_rows, xs), *out]


def _percentiles(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the percentile interval of the non-NaN replicates (numpy's linear quantile).

    Vectorised over columns (receval.stats.percentile_interval loops over them),
    so thousands of groups cost one sort.
    """
    alpha = (1.0 - level) / 2.0
    b, k = reps.shape
    srt = np.sort(reps, axis=0)  # NaN last
    valid = (~np.isnan(reps)).sum(axis=0)
    out = []
    for q in (alpha, 1.0 - alpha):
        h = (valid - 1) * q
        lo = np.clip(np.floor(h).astype(np.int64), 0, max(b - 1, 0))
        hi = np.minimum(lo + 1, np.maximum(valid - 1, 0))
        t = h - lo
        a = np.take_along_axis(srt, lo[None, :], 0)[0] if b else np.full(k, np.nan)
        c = np.take_along_axis(srt, hi[None, :], 0)[0] if b else np.full(k, np.nan)
        with np.errstate(invalid="ignore"):
            diff = c - a
            v = np.where(t >= 0.5, c - diff * (1.0 - t), a + diff * t)
            v = np.where(diff == 0, a, v)
        v[valid == 0] = np.nan
        out.append(v)
    return out[0], out[1]


@dataclass
class _Point:
    value: np.ndarray  # (n_groups,)
    n: np.ndarray  # (n_groups,)


@dataclass
class _Stats:
    """What the engine computed: totals, point values and replicates."""

    cell_tot: np.ndarray  # (n_cells, s) statistic sums per cell
    group_tot: list[np.ndarray]  # per partition (n_groups, s)
    points: list[dict[str, _Point]]  # per partition, per metric
    overall: dict[str, float]
    sel: list[np.ndarray]  # per partition: groups with replicates
    offsets: np.ndarray  # column offset of each partition's selected groups in the replicates
    reps: dict[str, np.ndarray]  # per metric (n_boot, selected groups)
    reps_all: dict[str, np.ndarray]  # per metric (n_boot,): the overall value
    method: str | None


def _engine(x: Any, cells: _Cells, parts: list[_Partition], specs: list[_Spec], *, n_boot: int, level: float,
            seed: int | None, min_group_size: int, on_totals: Callable[[np.ndarray], Any] | None = None) -> _Stats:
    """Point values per partition and metric, and bootstrap replicates of the groups that need them.
    ``on_totals(cell_tot)`` is called once the cell totals are known, before the replicates."""
    import scipy.sparse as sp

    from receval.stats.bootstrap import _check

    n, n_cells = cells.n, cells.n_cells
    xs = x[cells.order]
    # cell totals, then group totals through a sparse cell -> group matrix
    hmat = sp.csr_matrix((np.ones(n), (cells.cell, np.arange(n))), shape=(n_cells, n))
    cell_tot = hmat @ xs
    cell_tot = cell_tot.toarray() if sp.issparse(cell_tot) else np.asarray(cell_tot)
    overall_tot = cell_tot.sum(axis=0, keepdims=True)
    points: list[dict[str, _Point]] = []
    group_tot = []
    for p in parts:
        amat = sp.csr_matrix((np.ones(n_cells), (p.cell_group, np.arange(n_cells))), shape=(len(p.names), n_cells))
        gtot = amat @ cell_tot
        group_tot.append(gtot)
        per = {}
        for spec in specs:
            with np.errstate(invalid="ignore", divide="ignore"):
                value = spec.finish(gtot[:, spec.cols])
            cnt = p.n_units if spec.count_col is None else np.rint(gtot[:, spec.count_col]).astype(np.int64)
            per[spec.metric] = _Point(np.asarray(value, dtype=np.float64), np.asarray(cnt, dtype=np.int64))
        points.append(per)
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = {s.metric: float(s.finish(overall_tot[:, s.cols])[0]) for s in specs}
    if on_totals is not None:
        on_totals(cell_tot)

    # replicates: every group large enough to be reported (and any reference) of
    # every partition, all from one set of unit weights
    sel = [np.flatnonzero(p.n_units >= max(min_group_size, 1)) for p in parts]
    offsets = np.cumsum([0] + [len(s) for s in sel])
    reps: dict[str, np.ndarray] = {}
    reps_all: dict[str, np.ndarray] = {}
    method = None
    if n_boot > 0 and n > 0:
        method = _check(n_boot, level, "auto", n)
        g_sel = int(offsets[-1])
        s_dim = xs.shape[1]
        for spec in specs:
            reps[spec.metric] = np.full((n_boot, g_sel), np.nan)
            reps_all[spec.metric] = np.full(n_boot, np.nan)
        sweeps = _sweeps(xs, cells, parts, sel, offsets)
        widest = max(sw.segments.n_cells for sw in sweeps)
        blocks = _fused_totals if method == "poisson-fused" and not sp.issparse(xs) else _weight_totals
        row = 0
        for totals in blocks(sweeps, n, g_sel, s_dim, widest, n_boot=n_boot, seed=seed, method=method):
            bs = totals.shape[2]
            with np.errstate(invalid="ignore", divide="ignore"):
                for spec in specs:
                    part_ = totals[:, spec.cols, :].transpose(0, 2, 1).reshape((1 + g_sel) * bs, len(spec.cols))
                    vals = spec.finish(part_).reshape(1 + g_sel, bs)
                    reps_all[spec.metric][row : row + bs] = vals[0]
                    reps[spec.metric][row : row + bs] = vals[1:].T
            row += bs
        for spec in specs:
            for arr in (reps[spec.metric], reps_all[spec.metric]):
                arr[~np.isfinite(arr)] = np.nan
            if spec.recentre:
                # as receval.stats.bootstrap: statistics that are not smooth functions of
                # means (ECE's absolute deviations) are biased in resamples; recentre the
                # replicates on the point estimate
                _recentre(reps_all[spec.metric][:, None], np.array([overall[spec.metric]]))
                est = np.concatenate([points[i][spec.metric].value[sel[i]] for i in range(len(parts))]) \
                    if g_sel else np.zeros(0)
                _recentre(reps[spec.metric], est)
    return _Stats(cell_tot, group_tot, points, overall, sel, offsets, reps, reps_all, method)


def _weight_totals(sweeps: list[_Sweep], n: int, g_sel: int, s_dim: int, widest: int, *, n_boot: int,
                   seed: int | None, method: str):
    """Blocks of replicate totals, shape (1 + g_sel, s_dim, b): weights drawn as a matrix
    (``replicate_weights``), summed per cell by BLAS products and segment sums."""
    from receval.stats.bootstrap import replicate_weights

    plans: dict[tuple[int, int], list] = {}
    for w in replicate_weights(n, n_boot=n_boot, seed=seed, method=method):
        sub = max(1, min(len(w), _CELL_BUFFER // max(widest * s_dim, 1)))
        for r0 in range(0, len(w), sub):
            ws = w[r0 : r0 + sub]
            bs = len(ws)
            totals = np.zeros((1 + g_sel, s_dim * bs))
            for k, sw in enumerate(sweeps):
                if (k, bs) not in plans:
                    plans[k, bs] = _plan(sw.segments, bs)
                wk = ws if sw.positions is None else ws[:, sw.positions]
                seg = _cell_sums(wk, sw.x, plans[k, bs], sw.segments.n_cells)
                totals += sw.to_rows @ seg.reshape(sw.segments.n_cells, s_dim * bs)
            yield totals.reshape(1 + g_sel, s_dim, bs)


def _fused_totals(sweeps: list[_Sweep], n: int, g_sel: int, s_dim: int, widest: int, *, n_boot: int,
                  seed: int | None, method: str):
    """As _weight_totals under "poisson-fused", without a weight matrix: the compiled kernel draws
    each unit's weight (the same weights: unit = position in cell order) where each segment's
    sums need it, one pass over the units per sweep."""
    from receval.stats._bootstrap_kernel import poisson_segment_sums, root_key

    root = root_key(seed)
    bs = max(4, min(n_boot, _CELL_BUFFER // max(widest * s_dim, 1)) // 4 * 4)
    for b0 in range(0, n_boot, bs):
        b1 = min(b0 + bs, n_boot)
        totals = np.zeros((1 + g_sel, s_dim * (b1 - b0)))
        for sw in sweeps:
            units = np.arange(n) if sw.positions is None else sw.positions
            bounds = np.r_[sw.segments.starts, sw.segments.n]
            seg, _ = poisson_segment_sums(np.asarray(sw.x), units, bounds, b0, b1, root)
            totals += sw.to_rows @ seg.transpose(1, 2, 0).reshape(sw.segments.n_cells, s_dim * (b1 - b0))
        yield totals.reshape(1 + g_sel, s_dim, b1 - b0)


def _recentre(reps: np.ndarray, estimate: np.ndarray) -> None:
    ok = ~np.isnan(reps)
    cnt = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, reps, 0.0).sum(axis=0) / cnt
    shift = np.where((cnt > 0) & np.isfinite(estimate), estimate - mean, 0.0)
    reps += shift[None, :]


# --------------------------------------------------------------------------- assembling results


def _metric_frame_values(parts: list[_Partition], specs: list[_Spec], cell_tot: np.ndarray
                         ) -> list[dict[str, tuple[np.ndarray, float]]]:
    """Per partition and metric, the group values and the overall value from fairlearn's MetricFrame
    ({} for a partition of more than METRIC_FRAME_MAX_GROUPS groups).

    MetricFrame receives the per-unit rows grouped into cells (units sharing
    every sensitive value): one row per cell, weighted by its number of units
    with a value, so a group's weighted mean over its cells is the mean over its
    units, with thousands of times fewer rows to group. One frame serves every
    attribute and intersection and every metric: the cells' rows are repeated
    once per partition, the partition is the control feature and the cell's
    group (its index in the partition) the sensitive feature, so ``by_group``
    holds every (partition, group) and ``overall`` each partition's value over
    all its cells. ``y_true`` is the cell's number; each metric function reads
    its own cell means and weights (units with a value) by that number.
    """
    import pandas as pd
    from fairlearn.metrics import MetricFrame

    chosen = [i for i, p in enumerate(parts) if len(p.names) <= METRIC_FRAME_MAX_GROUPS]
    out: list[dict[str, tuple[np.ndarray, float]]] = [{} for _ in parts]
    if not chosen:
        return out
    n_cells = cell_tot.shape[0]
    functions = {}
    for spec in specs:
        count = cell_tot[:, spec.cols[1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            functions[spec.metric] = _cell_mean(np.where(count > 0, cell_tot[:, spec.cols[0]] / count, 0.0), count)
    cells = np.tile(np.arange(n_cells), len(chosen))
    frame = MetricFrame(metrics=functions, y_true=cells, y_pred=np.zeros(len(cells)),
                        sensitive_features=pd.DataFrame({"group": np.concatenate([parts[i].cell_group for i in chosen])}),
                        control_features=pd.DataFrame({"partition": np.repeat(np.arange(len(chosen)), n_cells)}))
    for spec in specs:
        values = [np.full(len(parts[i].names), np.nan) for i in chosen]
        for (c, g), v in frame.by_group[spec.metric].items():
            if g < len(values[c]):  # by_group lists every (partition, group) pair, NaN where absent
                values[c][g] = float(v)
        overall = frame.overall[spec.metric]
        for c, i in enumerate(chosen):
            out[i][spec.metric] = (values[c], float(overall[c]))
    return out


def _cell_mean(mean: np.ndarray, weight: np.ndarray) -> Callable[..., float]:
    def metric(cells: Any, _: Any) -> float:
        idx = np.asarray(cells)
        w = weight[idx]
        total = w.sum()
        # a group whose units have no value for this metric has no value
        return float(np.dot(mean[idx], w) / total) if total > 0 else math.nan

    return metric


def _check_reference(reference: Any, parts: list[_Partition]) -> None:
    if isinstance(reference, Mapping):
        known = {p.name for p in parts} | {p.columns for p in parts}
        unknown = [k for k in reference if k not in known]
        if unknown:
            raise UsageError(f"reference names attribute(s) {unknown} that are not audited; audited: "
                             f"{[p.name for p in parts]}")
        bad = [v for v in reference.values() if not isinstance(v, str | tuple)]
        if bad:
            raise UsageError(f"reference groups must be group names, 'overall' or 'best', got {bad}")


def _reference_index(part: _Partition, reference: Any, value: np.ndarray, ok: np.ndarray,
                     greater_is_better: bool, metric: str) -> int | None:
    """Group index of the reference (None: the overall value); -1 when no group qualifies."""
    if isinstance(reference, Mapping):
        wanted = reference.get(part.name, reference.get(part.columns, "overall"))
    else:
        wanted = reference
    if wanted == "overall":
        return None
    if wanted == "best":
        cand = np.flatnonzero(ok & np.isfinite(value))
        if not len(cand):
            return -1
        pick = np.argmax(value[cand]) if greater_is_better else np.argmin(value[cand])
        return int(cand[pick])
    name = SEP.join(wanted) if isinstance(wanted, tuple) else str(wanted)
    labels = [part.label(g) for g in range(len(part.names))]
    if name not in labels:
        raise UsageError(f"reference group {name!r} is not a group of {part.name!r}; its groups are {labels[:10]}"
                         + ("; give a mapping attribute -> group to choose one per attribute"
                            if not isinstance(reference, Mapping) else ""))
    g = labels.index(name)
    if not ok[g]:
        raise UsageError(f"reference group {name!r} of {part.name!r} is suppressed for {metric} "
                         f"(n = {int(part.n_units[g])} < min_group_size) or has no value; choose another reference")
    return g


def _assemble(parts: list[_Partition], specs: list[_Spec], st: _Stats, *,
              engine_values: list[dict[str, tuple[np.ndarray, float]]], reference: Any,
              tolerance: tuple[float, float] | None, difference_tolerance: float | None, level: float,
              n_boot: int, min_group_size: int) -> tuple[dict[str, Estimate], tuple[AttributeDisparity, ...]]:
    points, overall, sel, offsets, reps, reps_all = st.points, st.overall, st.sel, st.offsets, st.reps, st.reps_all
    boot = n_boot > 0 and bool(reps)
    overall_est: dict[str, Estimate] = {}
    for spec in specs:
        v = _num(overall[spec.metric])
        if boot and v is not None:
            lo, hi = _percentiles(reps_all[spec.metric][:, None], level)
            overall_est[spec.metric] = Estimate(v, _num(lo[0]), _num(hi[0]))
        else:
            overall_est[spec.metric] = Estimate(v)

    attributes = []
    for i, part in enumerate(parts):
        metrics: dict[str, MetricDisparity] = {}
        for spec in specs:
            pt = points[i][spec.metric]
            value, engine = pt.value.copy(), "receval"
            ov = overall[spec.metric]
            mf = engine_values[i].get(spec.metric)
            if mf is not None:  # fairlearn's values (equal to the sums' up to rounding)
                value, ov, engine = mf[0], mf[1], "fairlearn.MetricFrame"
            shown = (pt.n >= min_group_size) & (pt.n > 0)
            ok = shown & np.isfinite(value)
            ref = _reference_index(part, reference, value, ok, spec.greater_is_better, spec.metric)
            ref_value = ov if ref is None else (math.nan if ref < 0 else value[ref])
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = value - ref_value
                ratio = np.where(ref_value != 0, value / ref_value, np.nan)
            # intervals from the replicates of the selected groups
            lows = {q: np.full(len(part.names), np.nan) for q in ("value", "difference", "ratio")}
            highs = {q: np.full(len(part.names), np.nan) for q in ("value", "difference", "ratio")}
            ref_lo = ref_hi = math.nan
            if boot:
                cols = reps[spec.metric][:, offsets[i] : offsets[i + 1]]
                if ref is None:
                    ref_rep = reps_all[spec.metric]
                elif ref >= 0:
                    ref_rep = cols[:, int(np.searchsorted(sel[i], ref))]
                else:
                    ref_rep = np.full(len(cols), np.nan)
                rl, rh = _percentiles(ref_rep[:, None], level)
                ref_lo, ref_hi = rl[0], rh[0]
                ref_col = ref_rep[:, None]
                # a few thousand groups at a time: the temporaries stay small
                for c0 in range(0, cols.shape[1], _PERCENTILE_COLUMNS):
                    block = cols[:, c0 : c0 + _PERCENTILE_COLUMNS]
                    where = sel[i][c0 : c0 + _PERCENTILE_COLUMNS]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        derived = (("value", block), ("difference", block - ref_col),
                                   ("ratio", np.where(ref_col != 0, block / ref_col, np.nan)))
                    for q, arr in derived:
                        lo, hi = _percentiles(np.where(np.isfinite(arr), arr, np.nan), level)
                        lows[q][where] = lo
                        highs[q][where] = hi
            groups = []
            for g in range(len(part.names)):
                n_g = int(pt.n[g])
                single = n_g == 1
                if not shown[g]:
                    groups.append(GroupDisparity(part.label(g), part.names[g], n_g, True, single))
                    continue
                # a single unit gives no interval
                ests = {q: _estimate(x[g], lows[q][g], highs[q][g], boot and not single)
                        for q, x in (("value", value), ("difference", diff), ("ratio", ratio))}
                passes = _passes(ratio[g], diff[g], tolerance, difference_tolerance)
                groups.append(GroupDisparity(part.label(g), part.names[g], n_g, False, single,
                                             ests["value"], ests["difference"], ests["ratio"], passes))
            defined = np.flatnonzero(ok)
            worst = best = None
            gmin = gmax = None
            if len(defined):
                vals = value[defined]
                lo_i, hi_i = defined[int(np.argmin(vals))], defined[int(np.argmax(vals))]
                worst, best = (lo_i, hi_i) if spec.greater_is_better else (hi_i, lo_i)
                gmin, gmax = float(vals.min()), float(vals.max())
            # a subnormal ratio (e.g. a group's ECE of 1e-313) overflows 1 / ratio to inf: min() keeps the ratio
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                folded = np.minimum(ratio[defined], 1.0 / ratio[defined]) if len(defined) else np.zeros(0)
            metrics[spec.metric] = MetricDisparity(
                metric=spec.metric,
                greater_is_better=spec.greater_is_better,
                reference=ALL_GROUP if ref is None else (None if ref < 0 else part.label(ref)),
                reference_value=None if _num(ref_value) is None else Estimate(
                    _num(ref_value), *((_num(ref_lo), _num(ref_hi)) if boot else (None, None))),
                groups=tuple(groups),
                worst_group=None if worst is None else part.label(worst),
                best_group=None if best is None else part.label(best),
                passes=_combine(g.passes for g in groups if not g.suppressed),
                group_min=_num(gmin),
                group_max=_num(gmax),
                difference_between_groups=None if gmin is None else _num(gmax - gmin),
                ratio_between_groups=None if gmin is None or not gmax else _num(gmin / gmax),
                max_abs_difference=_num(np.abs(diff[defined]).max()) if len(defined) else None,
                min_ratio=_num(np.nanmin(folded)) if len(folded) and np.isfinite(folded).any() else None,
                engine=engine,
            )
        attributes.append(AttributeDisparity(part.name, part.columns, len(part.names), part.n_missing, metrics))
    return overall_est, tuple(attributes)


def _estimate(x: float, low: float, high: float, interval: bool) -> Estimate:
    v = _num(x)
    if v is None or not interval:
        return Estimate(v)
    return Estimate(v, _num(low), _num(high))


def _passes(ratio: float, diff: float, tolerance: tuple[float, float] | None,
            difference_tolerance: float | None) -> bool | None:
    """The tolerance rule on point estimates; None when a declared part of it cannot be evaluated."""
    if tolerance is None and difference_tolerance is None:
        return None
    verdicts = []
    if tolerance is not None:
        verdicts.append(None if not math.isfinite(ratio) else bool(tolerance[0] <= ratio <= tolerance[1]))
    if difference_tolerance is not None:
        verdicts.append(None if not math.isfinite(diff) else bool(abs(diff) <= difference_tolerance))
    return _combine(verdicts)


def _settings(kind: str, metrics: list[str], sensitive: list[str], crossed: list[tuple[str, ...]], *, unit: str,
              missing: str, tolerance: Any, difference_tolerance: Any, reference: Any, n_boot: int, level: float,
              seed: int | None, min_group_size: int, method: str | None) -> dict[str, Any]:
    if isinstance(reference, Mapping):
        ref: Any = {(SEP.join(k) if isinstance(k, tuple) else str(k)): (SEP.join(v) if isinstance(v, tuple) else str(v))
                    for k, v in reference.items()}
    else:
        ref = reference
    return {
        "audit": kind,
        "metrics": metrics,
        "unit": unit,
        "sensitive": list(sensitive),
        "intersections": [list(c) for c in crossed],
        "missing": missing,
        "tolerance": None if tolerance is None else list(tolerance),
        "difference_tolerance": None if difference_tolerance is None else float(difference_tolerance),
        "reference": ref,
        "min_group_size": min_group_size,
        "n_boot": n_boot,
        "level": float(level),
        "seed": seed,
        "bootstrap_method": method,
        "interval": f"percentile bootstrap over {unit}s",
    }


# --------------------------------------------------------------------------- public functions


def disparity_audit(
    run: Any,
    labels: Any = None,
    metrics: Iterable[str] | str = ("ndcg@10",),
    *,
    attributes: Any = None,
    sensitive: Sequence[str] | str,
    intersections: bool | Sequence[tuple[str, ...]] = True,
    unit: str = "user",
    users: Any = None,
    columns: Mapping[str, str] | None = None,
    label_columns: Mapping[str, str] | None = None,
    catalog: Any = None,
    catalog_columns: Mapping[str, str] | None = None,
    missing: str = "group",
    missing_in_run: str = "zero",
    missing_in_labels: str = "ignore",
    tolerance: tuple[float, float] | None = _DEFAULT_TOLERANCE,
    difference_tolerance: float | None = None,
    reference: str | Mapping[Any, Any] = "overall",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 20,
    engine: str = "auto",
) -> DisparityAudit:
    """Performance disparity of a run across groups of users.

    Parameters
    ----------
    run, labels : as for :func:`receval.evaluate` (frames or paths; ``run`` may
        be a :class:`~receval.audits.PreparedRun`, whose original run is scored); ``columns``
        / ``label_columns`` map your column names; ``catalog`` /
        ``catalog_columns`` feed beyond-accuracy metrics (novelty, diversity, ...).
    metrics : registered per-request metrics, e.g. ``["ndcg@10", "recall@20"]``.
        Population-level metrics (coverage, Gini, calibration) are refused:
        calibration has :func:`calibration_audit`.
    attributes : table keyed by ``request_id`` or ``user_id`` holding the
        sensitive columns; columns not in it are read from the run (constant
        within a request).
    sensitive : the attribute columns, e.g. ``["country", "age_band"]``.
    intersections : ``True`` (every pair of ``sensitive``), ``False``, or a
        list of tuples of attributes, e.g. ``[("country", "age_band")]``.
    unit : ``"user"`` (default: a user's value is the mean of their requests'
        values and each user counts once) or ``"request"``.
    users : optional table ``request_id -> user_id`` for requests whose user
        the run does not give (e.g. judged requests the run did not rank).
    missing : ``"group"`` (missing values form the group ``"(missing)"``) or
        ``"error"`` (InputError naming the column, count and examples).
    missing_in_run, missing_in_labels : as for :func:`receval.evaluate`.
    tolerance : ``(low, high)``: a group passes iff low <= value / reference
        <= high (Aequitas: (0.8, 1.25)); None: no ratio rule.
    difference_tolerance : optional: a group must also have |value - reference|
        <= this.
    reference : ``"overall"`` (the value over all units), ``"best"`` (the best
        reported group of each attribute) or a group name, or a mapping
        attribute -> group (intersections keyed ``"a & b"`` with groups
        ``"x & y"``).
    n_boot, level, seed : percentile bootstrap over units (0: no intervals).
    min_group_size : groups with fewer units are listed as suppressed (n only).
    engine : ``"auto"`` (Spark when an input is a PySpark DataFrame), ``"polars"``
        or ``"spark"`` (paths read by Spark): per-request values are computed
        on Spark, the attribute tables and the statistics stay on the driver
        (docs/scale.md).

    Returns
    -------
    DisparityAudit : ``to_dict()`` (JSON-safe, no ids), ``to_frame()`` (one row
    per attribute x group x metric), ``audit["country", "ndcg@10"]``.

    Raises
    ------
    UsageError : bad arguments.  InputError : bad data (missing columns,
    attributes varying within a user, missing values under ``missing="error"``).
    """
    from receval.audits._prepared import PreparedRun
    from receval.metrics.registry import parse_metrics

    if isinstance(run, PreparedRun):  # its metrics rank the run as receval.evaluate does
        run = run.source
    sensitive, crossed, tol = _check_args(sensitive, intersections, unit, missing, tolerance,
                                          difference_tolerance, reference, n_boot, level, min_group_size)
    parsed = parse_metrics(metrics)
    calib = [str(m) for m in parsed if m.spec.kind == "calibration"]
    if calib:
        raise UsageError(f"{calib} pool impressions rather than averaging per-request values; "
                         "audit them with receval.audits.disparity.calibration_audit")
    units = _units(run, labels, parsed, attributes=attributes, users=users, sensitive=sensitive, unit=unit,
                   columns=columns, label_columns=label_columns, missing_in_run=missing_in_run,
                   missing_in_labels=missing_in_labels, catalog=catalog, catalog_columns=catalog_columns,
                   engine=engine)
    scored = units.scored

    # per-request values (NaN: undefined for that request) -> per-unit means
    n, codes = units.n, units.unit_of_request
    all_defined = True
    values, defined = [], []
    for m in parsed:
        ms = scored.stats[m]
        if ms.per_unit is not None:
            v = np.asarray(ms.per_unit, dtype=np.float64)
        elif ms.extra and "per_request" in ms.extra:
            v = np.asarray(ms.extra["per_request"], dtype=np.float64)
        else:
            raise UsageError(f"{m} is a population-level metric (no per-request value) and cannot be "
                             "averaged per user; audit per-request metrics such as ndcg@10")
        d = np.isfinite(v)
        s = np.bincount(codes, weights=np.where(d, v, 0.0), minlength=n)
        c = np.bincount(codes, weights=d.astype(np.float64), minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append(np.where(c > 0, s / np.where(c > 0, c, 1.0), 0.0))
        defined.append(c > 0)
        all_defined &= bool((c > 0).all())
    # statistics per unit: [value x defined, defined] per metric (one shared count
    # column when every unit has every value)
    cols, specs = [], []
    if all_defined:
        cols = [*values, np.ones(n)]
        for j, m in enumerate(parsed):
            specs.append(_Spec(str(m), m.greater_is_better, np.array([j, len(parsed)]), _ratio_finish, len(parsed)))
    else:
        for j, m in enumerate(parsed):
            cols += [np.where(defined[j], values[j], 0.0), defined[j].astype(np.float64)]
            specs.append(_Spec(str(m), m.greater_is_better, np.array([2 * j, 2 * j + 1]), _ratio_finish, 2 * j + 1))
    x = np.column_stack(cols) if n else np.zeros((0, len(cols)))

    cells, parts = _groups(units.attrs, sensitive, crossed, missing, units.ids, unit, units.sources)
    _check_reference(reference, parts)
    # the reported group values come from fairlearn's MetricFrame (see _metric_frame_values), which
    # runs from the cell totals while the bootstrap's compiled kernel draws the replicates
    with Background() as fairlearn:
        st = _engine(x, cells, parts, specs, n_boot=n_boot, level=level, seed=seed, min_group_size=min_group_size,
                     on_totals=lambda cell_tot: fairlearn.start(_metric_frame_values, parts, specs, cell_tot))
    engine_values = fairlearn.result()
    overall_est, attrs = _assemble(parts, specs, st, engine_values=engine_values, reference=reference, tolerance=tol,
                                   difference_tolerance=difference_tolerance, level=level, n_boot=n_boot,
                                   min_group_size=min_group_size)
    counts = dict(units.counts)
    counts["units_without_value"] = {str(m): int((~defined[j]).sum()) for j, m in enumerate(parsed)}
    counts["n_cells"] = cells.n_cells
    return DisparityAudit(
        overall=overall_est,
        attributes=attrs,
        settings=_settings("disparity", [str(m) for m in parsed], sensitive, crossed, unit=unit, missing=missing,
                           tolerance=tol, difference_tolerance=difference_tolerance, reference=reference,
                           n_boot=n_boot, level=level, seed=seed, min_group_size=min_group_size, method=st.method),
        counts=counts,
    )


def calibration_audit(
    run: Any,
    labels: Any = None,
    *,
    attributes: Any = None,
    sensitive: Sequence[str] | str,
    metrics: Iterable[str] | str = ("ece", "brier"),
    intersections: bool | Sequence[tuple[str, ...]] = False,
    unit: str = "user",
    users: Any = None,
    columns: Mapping[str, str] | None = None,
    label_columns: Mapping[str, str] | None = None,
    missing: str = "group",
    missing_in_run: str = "zero",
    missing_in_labels: str = "ignore",
    tolerance: tuple[float, float] | None = _DEFAULT_TOLERANCE,
    difference_tolerance: float | None = None,
    reference: str | Mapping[Any, Any] = "overall",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 20,
    reliability: bool = False,
    engine: str = "auto",
) -> CalibrationAudit:
    """Calibration metrics (``ece``, ``mce``, ``brier``, ``logloss``) per group of users.

    A group's value is the metric over the pooled impressions (run rows) of
    its units, computed from receval's per-request sufficient statistics
    (``receval.metrics.calibration``: per-bin counts and sums for ECE), so it
    equals ``receval.evaluate(...)`` restricted to the group's requests (with
    ``strategy="quantile"`` the bin edges come from the whole sample, so that
    every group is binned alike). The run needs a ``prediction`` column in
    [0, 1]; a row is positive iff its label >= ``min_label``.

    Parameters are as for :func:`disparity_audit`, ``engine`` included (intervals
    resample units: users or requests); ``reliability=True`` adds each reported group's
    reliability table (``CalibrationAudit.reliability``) for ``ece`` / ``mce``.
    Lower is better for every calibration metric, so the worst group has the
    largest value.
    """
    import scipy.sparse as sp

    from receval.audits._prepared import PreparedRun
    from receval.metrics.calibration import RELIABILITY_LEVEL, _split, _table_rows
    from receval.metrics.registry import parse_metrics

    if isinstance(run, PreparedRun):  # its metrics rank the run as receval.evaluate does
        run = run.source
    sensitive, crossed, tol = _check_args(sensitive, intersections, unit, missing, tolerance,
                                          difference_tolerance, reference, n_boot, level, min_group_size)
    if not isinstance(reliability, bool):
        raise UsageError(f"reliability must be True or False, got {reliability!r}")
    parsed = parse_metrics(metrics)
    other = [str(m) for m in parsed if m.spec.kind != "calibration"]
    if other:
        raise UsageError(f"{other} are not calibration metrics; audit them with disparity_audit")
    units = _units(run, labels, parsed, attributes=attributes, users=users, sensitive=sensitive, unit=unit,
                   columns=columns, label_columns=label_columns, missing_in_run=missing_in_run,
                   missing_in_labels=missing_in_labels, engine=engine)
    scored = units.scored
    n, codes = units.n, units.unit_of_request
    # per-request statistics summed per unit
    to_unit = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n, len(codes)))
    blocks, specs, extras = [], [], {}
    start = 0
    any_sparse = False
    for m in parsed:
        ms = scored.stats[m]
        st = ms.stats
        any_sparse |= sp.issparse(st)
        blocks.append(to_unit @ (st if sp.issparse(st) else np.asarray(st, dtype=np.float64)))
        width = st.shape[1]
        specs.append(_Spec(str(m), m.greater_is_better, np.arange(start, start + width), ms.finish, None, ms.recentre))
        extras[str(m)] = ms.extra or {}
        start += width
    if any_sparse:
        x = sp.hstack([b if sp.issparse(b) else sp.csr_matrix(b) for b in blocks]).tocsr()
    else:
        x = np.hstack([np.asarray(b) for b in blocks])

    cells, parts = _groups(units.attrs, sensitive, crossed, missing, units.ids, unit, units.sources)
    _check_reference(reference, parts)
    st = _engine(x, cells, parts, specs, n_boot=n_boot, level=level, seed=seed, min_group_size=min_group_size)
    overall_est, attrs = _assemble(parts, specs, st, engine_values=[{} for _ in parts], reference=reference,
                                   tolerance=tol, difference_tolerance=difference_tolerance, level=level,
                                   n_boot=n_boot, min_group_size=min_group_size)
    tables = None
    if reliability:
        tables = {}
        for i, (part, attr) in enumerate(zip(parts, attrs, strict=True)):
            per_metric = {}
            for spec in specs:
                if "edges" not in extras[spec.metric]:  # ece / mce: binned statistics
                    continue
                edges = np.asarray(extras[spec.metric]["edges"])
                per_group = {}
                for g, row in enumerate(attr.metrics[spec.metric].groups):
                    if not row.suppressed:
                        cnt, sp_, sy = (a[0] for a in _split(st.group_tot[i][g : g + 1, spec.cols]))
                        per_group[row.group] = _table_rows(edges, cnt, sp_, sy, RELIABILITY_LEVEL)
                per_metric[spec.metric] = per_group
            tables[part.name] = per_metric
    counts = dict(units.counts)
    counts["n_cells"] = cells.n_cells
    counts["n_rows"] = {k: v.get("n_rows") for k, v in extras.items()}
    return CalibrationAudit(
        overall=overall_est,
        attributes=attrs,
        settings=_settings("calibration", [str(m) for m in parsed], sensitive, crossed, unit=unit, missing=missing,
                           tolerance=tol, difference_tolerance=difference_tolerance, reference=reference,
                           n_boot=n_boot, level=level, seed=seed, min_group_size=min_group_size, method=st.method),
        counts=counts,
        reliability=tables,
    )
