"""Data-quality summary of a run, labels or impressions frame.

``data_quality(frame, kind="run", columns=...)`` reads the frame as
:func:`receval.evaluate` would, checks it against the data contract
(:func:`receval.data.contract.validate`, every violation collected, nothing
raised) and adds the checks the contract does not make:

* per column: dtype, missing values (null, and NaN in float columns) and their
  rate, number of distinct values;
* ``invalid_propensity``: null, non-finite, <= 0 and > 1 propensities;
* ``duplicate_pairs``: rows repeating an earlier (request_id, item_id) pair;
* ``duplicate_positions``: rows repeating an earlier (request_id, position);
* ``label_distribution``: rows per label value;
* ``score_range`` / ``prediction_range``: min, max, null, NaN and infinite counts;
* ``single_item_requests`` and ``rows_per_request`` (quantiles).

Each check and each contract violation carries a status ``ok``, ``warning``
or ``error``; the report's status is the worst of them. Outputs hold counts
and row numbers ("row 17", 0-based positions in the frame as passed in),
never an identifier: examples of contract violations on id columns are
reduced to their row numbers.

Conventions: docs/audits.md, "Data quality".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from receval.audits._result import _num
from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = ["STATUSES", "ColumnProfile", "QualityCheck", "DataQualityReport", "data_quality"]

#: statuses, from best to worst
STATUSES = ("ok", "warning", "error")
KINDS = ("run", "labels", "impressions")
_IDS = ("request_id", "user_id", "item_id")
_WITHHELD = "(identifier values withheld)"
_MAX_EXAMPLES = 5
#: the contract's duplicate rule per kind, as receval.evaluate words it
_PAIR_RULES = {
    "run": ("each item may appear once per request",
            "drop duplicate (request, item) rows, keeping the one the system really ranked"),
    "labels": ("each (request, item) pair must be judged once",
               "keep one judgement per pair (e.g. the maximum grade) before evaluating"),
}


def _worst(statuses: Any) -> str:
    return max(statuses, key=STATUSES.index, default="ok")


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the frame: ``canonical`` is its contract name (None for other columns)."""

    column: str
    canonical: str | None
    dtype: str
    n_missing: int
    missing_rate: float | None
    n_distinct: int

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "canonical": self.canonical, "dtype": self.dtype,
                "n_missing": self.n_missing, "missing_rate": self.missing_rate, "n_distinct": self.n_distinct}


@dataclass(frozen=True)
class QualityCheck:
    """One check: ``n_rows`` flagged (rows, or requests for request-level checks), JSON-safe ``summary``."""

    name: str
    column: str
    status: str
    n_rows: int
    summary: dict[str, Any] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "status": self.status, "n_rows": self.n_rows,
                "summary": dict(self.summary), "examples": list(self.examples), "hint": self.hint}


@dataclass(frozen=True)
class DataQualityReport:
    """Result of :func:`data_quality`. ``violations`` are the contract's, all with status ``error``."""

    kind: str
    name: str
    status: str
    n_rows: int
    n_requests: int | None
    columns: tuple[ColumnProfile, ...]
    checks: tuple[QualityCheck, ...]
    violations: tuple[Violation, ...]
    skipped: tuple[str, ...] = ()

    def check(self, name: str) -> QualityCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; holds counts and row numbers, no identifier."""
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "n_rows": self.n_rows,
            "n_requests": self.n_requests,
            "columns": [c.to_dict() for c in self.columns],
            "checks": [c.to_dict() for c in self.checks],
            "violations": [{"status": "error", **v.to_dict()} for v in self.violations],
            "skipped": list(self.skipped),
        }

    def to_frame(self, table: str = "columns") -> pl.DataFrame:
        """``"columns"``: one row per column profile; ``"findings"``: one row per check and violation
        (source, name, column, status, n_rows, examples, hint)."""
        import polars as pl

        if table == "columns":
            schema = {"column": pl.String, "canonical": pl.String, "dtype": pl.String, "n_missing": pl.Int64,
                      "missing_rate": pl.Float64, "n_distinct": pl.Int64}
            return pl.DataFrame([c.to_dict() for c in self.columns], schema=schema, orient="row")
        if table == "findings":
            rows = [("check", c.name, c.column, c.status, c.n_rows, "; ".join(c.examples), c.hint)
                    for c in self.checks]
            rows += [("contract", v.rule, v.column, "error", v.n_rows, "; ".join(v.examples), v.hint)
                     for v in self.violations]
            schema = {"source": pl.String, "name": pl.String, "column": pl.String, "status": pl.String,
                      "n_rows": pl.Int64, "examples": pl.String, "hint": pl.String}
            return pl.DataFrame(rows, schema=schema, orient="row")
        raise UsageError(f"unknown table {table!r}: use 'columns' or 'findings'")


# --------------------------------------------------------------------------- contract


def _mask(v: Violation, id_labels: set[str]) -> Violation:
    """Examples of violations on id columns, reduced to their row numbers."""
    if not (set(re.split(r",\s*", v.column)) & id_labels) or not v.examples:
        return v
    rows = [m.group(1) for e in v.examples if (m := re.match(r"(row \d+)", e))]
    return Violation(v.column, v.rule, v.n_rows, tuple(rows) if rows else (_WITHHELD,), v.hint)


def _contract(raw: pl.DataFrame, kind: str, mapping: Any, label: str) -> tuple[list[Violation], list[str]]:
    """Every contract violation of ``raw``; when a column has the wrong type (which stops
    ``validate`` before its value rules), the value rules of the other columns are checked too."""
    import polars as pl

    from receval.data.contract import CANONICAL_COLUMNS, FRAME_KINDS, validate

    try:
        validate(raw, kind, mapping, name=label)
        return [], []
    except InputError as err:
        found = list(err.violations)
    by_label = {mapping.label(c): c for c in CANONICAL_COLUMNS}
    typed = {by_label[v.column] for v in found if v.column in by_label
             and v.rule.startswith(("must hold integers or text", "must be numeric"))}
    if not typed or len(typed) < len(found):  # missing columns: validate stopped before the types
        return found, []
    required = FRAME_KINDS[kind][0]
    fixed = raw
    for c in sorted(typed):
        src = mapping.source(c)
        if c in _IDS:  # the null rule still applies to ids of the wrong type: keep where they are missing
            missing = pl.col(src).is_null() | (pl.col(src).is_nan() if fixed.schema[src].is_float() else False)
            fixed = fixed.with_columns(pl.when(missing).then(None).otherwise(pl.lit("id")).alias(src))
        elif c in required:  # a non-numeric column has no value rules to check
            fixed = fixed.with_columns(pl.lit(0.0).alias(src))
        else:
            fixed = fixed.drop(src)
    skipped = [f"value rules of {mapping.label(c)}: the column is not numeric" for c in sorted(typed - set(_IDS))]
    try:
        validate(fixed, kind, mapping, name=label)
    except InputError as err:
        found += err.violations
    return found, skipped


# --------------------------------------------------------------------------- checks


def _rows_of(mask: np.ndarray) -> tuple[str, ...]:
    return tuple(f"row {int(i)}" for i in np.flatnonzero(mask)[:_MAX_EXAMPLES])


def _numeric(s: pl.Series) -> bool:
    import polars as pl

    return s.dtype.is_numeric() or s.dtype in (pl.Boolean, pl.Null)


def _value_counts(s: pl.Series) -> tuple[dict[str, int], np.ndarray]:
    """(counts of null, NaN, +inf, -inf values; the finite values as float64)."""
    import polars as pl

    x = s.cast(pl.Float64)
    null = x.is_null().to_numpy()
    v = x.fill_null(0.0).to_numpy()
    return {
        "n_null": int(null.sum()),
        "n_nan": int((np.isnan(v) & ~null).sum()),
        "n_posinf": int(np.isposinf(v).sum()),
        "n_neginf": int(np.isneginf(v).sum()),
    }, v[~null & np.isfinite(v)]


def _mean(v: np.ndarray) -> float:
    """Mean without overflow for values near the float64 limit (1e308 + 1e308)."""
    top = float(np.abs(v).max())
    return float((v / top).mean() * top) if top > 1e300 else float(v.mean())


def _range_summary(s: pl.Series) -> tuple[dict[str, Any], np.ndarray]:
    counts, finite = _value_counts(s)
    summary = {"min": _num(finite.min()) if len(finite) else None,
               "max": _num(finite.max()) if len(finite) else None,
               "mean": _num(_mean(finite)) if len(finite) else None, **counts}
    return summary, finite


def _checks(raw: pl.DataFrame, kind: str, mapping: Any, max_label_values: int
            ) -> tuple[list[QualityCheck], list[Violation], list[str], int | None]:
    """The checks, the contract's duplicate-pair violation (evaluate checks it after validate), skipped
    checks, number of requests."""
    import polars as pl

    checks: list[QualityCheck] = []
    skipped: list[str] = []
    contract: list[Violation] = []

    def col(c: str) -> pl.Series | None:
        src = mapping.source(c)
        return raw[src] if src in raw.columns else None

    def name(c: str) -> str:
        return mapping.label(c)

    req = col("request_id")
    n_requests = None
    if req is not None:
        n_requests = int(req.n_unique())

    # ---- propensity
    prop = col("propensity")
    if prop is None:
        skipped.append("invalid_propensity: no propensity column")
    elif not _numeric(prop):
        skipped.append(f"invalid_propensity: {name('propensity')} is not numeric")
    else:
        counts, _ = _value_counts(prop)
        x = prop.cast(pl.Float64).to_numpy()
        with np.errstate(invalid="ignore"):
            low = np.nan_to_num(x, nan=0.5) <= 0
            high = np.nan_to_num(x, nan=0.5) > 1
        bad = ~np.isfinite(x) | low | high  # null arrives as NaN
        summary = {"n_null": counts["n_null"], "n_nan": counts["n_nan"],
                   "n_infinite": counts["n_posinf"] + counts["n_neginf"],
                   "n_not_positive": int((low & np.isfinite(x)).sum()), "n_above_one": int((high & np.isfinite(x)).sum())}
        checks.append(QualityCheck("invalid_propensity", name("propensity"), "error" if bad.any() else "ok",
                                   int(bad.sum()), summary, _rows_of(bad),
                                   "propensities must lie in (0, 1]; drop or re-log the flagged rows" if bad.any()
                                   else ""))

    # ---- duplicates per request
    for other, check, statuses, hint in (
        ("item_id", "duplicate_pairs", {"run": "error", "labels": "error", "impressions": "warning"},
         "keep one row per (request, item): the one the system really ranked / one judgement per pair"),
        ("position", "duplicate_positions", {"run": "warning", "labels": "warning", "impressions": "warning"},
         "two items at one position of one list: check the logging"),
    ):
        o = col(other)
        if req is None or o is None:
            if other == "item_id" or o is not None:
                skipped.append(f"{check}: needs request_id and {other}")
            continue
        pair = pl.DataFrame({"r": req, "o": o})
        dup = pair.is_duplicated().to_numpy()  # every row of a repeated pair
        repeat = ~pair.select(pl.struct("r", "o").is_first_distinct()).to_series().to_numpy()  # all but the first
        n = int(repeat.sum())
        if check == "duplicate_pairs" and n and kind in _PAIR_RULES:  # a contract rule, checked after validate
            contract.append(Violation(f"{name('request_id')}, {name('item_id')}", _PAIR_RULES[kind][0], n,
                                      _rows_of(repeat), _PAIR_RULES[kind][1]))
        checks.append(QualityCheck(check, f"{name('request_id')}, {name(other)}", statuses[kind] if n else "ok", n,
                                   {"n_rows_in_repeated_groups": int(dup.sum())}, _rows_of(repeat),
                                   hint if n else ""))

    # ---- labels
    lab = col("label")
    if lab is None:
        if kind == "labels":
            skipped.append("label_distribution: no label column")
    elif not _numeric(lab):
        skipped.append(f"label_distribution: {name('label')} is not numeric")
    else:
        vc = lab.cast(pl.Float64).value_counts(sort=True, name="n")
        vc = vc.sort(["n", lab.name], descending=[True, False], nulls_last=True)
        shown = vc.head(max_label_values)
        dist = {("null" if v is None else "nan" if v != v else repr(float(v))): int(n)
                for v, n in zip(shown[lab.name].to_list(), shown["n"].to_list(), strict=True)}
        x = lab.cast(pl.Float64).drop_nulls().drop_nans()
        n_pos = int((x > 0).sum())
        status, hint = "ok", ""
        if raw.height and n_pos == 0:
            status, hint = "warning", "no positive label: every ranking metric is 0"
        elif raw.height and x.n_unique() == 1:
            status, hint = "warning", "a single label value: the labels do not separate items"
        checks.append(QualityCheck("label_distribution", name("label"), status, 0, {
            "counts": dist, "n_values": int(vc.height), "n_values_not_shown": int(max(vc.height - max_label_values, 0)),
            "n_positive": n_pos, "n_negative": int((x < 0).sum())}, (), hint))

    # ---- score and prediction ranges
    for c in ("score", "prediction"):
        s = col(c)
        if s is None:
            continue
        if not _numeric(s):
            skipped.append(f"{c}_range: {name(c)} is not numeric")
            continue
        summary, finite = _range_summary(s)
        x = s.cast(pl.Float64)
        missing = x.is_null().to_numpy() | np.isnan(x.fill_null(0.0).to_numpy())
        status, hint, flagged = "ok", "", missing
        if c == "score":
            inf = np.isinf(x.fill_null(0.0).to_numpy())
            if missing.any():
                status, hint = "error", "scores must not be null or NaN"
            elif inf.any():
                status, hint, flagged = "warning", "infinite scores rank first / last; ties among them are broken by id", inf
            elif len(finite) > 1 and finite.min() == finite.max():
                status, hint = "warning", "every score is equal: the order comes from the tie-break alone"
        else:
            v = x.fill_null(0.0).to_numpy()
            with np.errstate(invalid="ignore"):
                out = ~np.isfinite(v) | (v < 0) | (v > 1)
            flagged = missing | out
            summary["n_outside_0_1"] = int((out & ~missing).sum())
            if flagged.any():
                status, hint = "error", "predictions are probabilities in [0, 1], not null"
        checks.append(QualityCheck(f"{c}_range", name(c), status, int(flagged.sum()) if status != "ok" else 0,
                                   summary, _rows_of(flagged) if status != "ok" else (), hint))

    # ---- rows per request
    if req is None:
        skipped.append("rows_per_request, single_item_requests: no request_id column")
    else:
        sizes = pl.DataFrame({"r": req}).group_by("r").len()["len"].to_numpy()
        qs = np.quantile(sizes, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]) if len(sizes) else [None] * 7
        checks.append(QualityCheck("rows_per_request", name("request_id"), "ok", 0, {
            k: _num(v) for k, v in zip(("min", "p05", "p25", "median", "p75", "p95", "max"), qs, strict=True)
        } | {"mean": _num(sizes.mean()) if len(sizes) else None}))
        single = int((sizes == 1).sum())
        checks.append(QualityCheck(
            "single_item_requests", name("request_id"), "warning" if single else "ok", single,
            {"share": _num(single / len(sizes)) if len(sizes) else None},
            hint="a one-item list ranks trivially: ranking metrics of such requests carry no information"
            if single else ""))
    return checks, contract, skipped, n_requests


def _profile(raw: pl.DataFrame, mapping: Any) -> list[ColumnProfile]:
    import polars as pl

    from receval.data.contract import CANONICAL_COLUMNS

    canonical_of = {mapping.source(c): c for c in CANONICAL_COLUMNS}
    out = []
    for c in raw.columns:
        s = raw[c]
        n_missing = s.null_count()
        if s.dtype.is_float():
            n_missing += int(s.is_nan().fill_null(False).sum())
        try:
            n_distinct = int(s.n_unique())
        except pl.exceptions.PolarsError:  # e.g. nested types without hashing support
            n_distinct = -1
        out.append(ColumnProfile(c, canonical_of.get(c), str(s.dtype), int(n_missing),
                                 _num(n_missing / raw.height) if raw.height else None, n_distinct))
    return out


def data_quality(
    frame: Any,
    kind: str = "run",
    columns: Mapping[str, str] | Any = None,
    *,
    name: str | None = None,
    format: str = "auto",
    max_label_values: int = 50,
) -> DataQualityReport:
    """Data-quality summary of ``frame`` (see the module doc and docs/audits.md).

    Parameters
    ----------
    frame : pandas / polars / pyarrow frame or a file path.
    kind : ``"run"``, ``"labels"`` or ``"impressions"``: the contract it is held to.
    columns : canonical name -> your column name (as ``receval.evaluate``).
    max_label_values : label values listed in ``label_distribution`` (the most
        frequent first); the others are counted in ``n_values_not_shown``.

    Returns
    -------
    DataQualityReport; never raises on bad data (a frame that cannot be read
    at all gives a report with the reader's violations and status ``error``).

    Raises
    ------
    UsageError : unknown kind, bad mapping, unreadable file path.
    """
    from receval.data.contract import ColumnMapping
    from receval.data.readers import to_polars
    from receval.engines.spark_audits import refuse_spark

    refuse_spark("data_quality", frame,
                 why="its examples name row numbers, which a distributed Spark frame does not have")
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}: use one of {', '.join(map(repr, KINDS))}")
    if isinstance(max_label_values, bool) or not isinstance(max_label_values, int) or max_label_values < 1:
        raise UsageError(f"max_label_values must be a positive integer, got {max_label_values!r}")
    mapping = ColumnMapping.of(columns)
    label = name or kind
    id_labels = {mapping.label(c) for c in _IDS} | {mapping.source(c) for c in _IDS}
    try:
        raw = to_polars(frame, kind=kind, format=format, name=label)  # type: ignore[arg-type]
    except InputError as err:  # e.g. a pandas column mixing numbers and text
        violations = tuple(_mask(v, id_labels | {v.column}) for v in err.violations)
        return DataQualityReport(kind, label, "error", 0, None, (), (), violations,
                                 ("every check: the frame could not be read",))
    found, skipped = _contract(raw, kind, mapping, label)
    violations = tuple(_mask(v, id_labels) for v in found)
    checks, pairs, more, n_requests = _checks(raw, kind, mapping, max_label_values)
    violations += tuple(pairs)
    status = _worst([c.status for c in checks] + ["error"] * bool(violations))
    return DataQualityReport(kind, label, status, raw.height, n_requests, tuple(_profile(raw, mapping)),
                             tuple(checks), violations, tuple(skipped + more))
