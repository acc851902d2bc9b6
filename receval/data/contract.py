"""The data contract: canonical columns, column mapping, schemas, validation.

Every frame entering receval is renamed to the canonical column names below
(a :class:`ColumnMapping` translates the user's own names), then checked once
against the contract. All violations are collected and raised together in one
:class:`~receval.errors.InputError`, each naming the column, the rule, how many
rows break it and a few examples. Nothing downstream re-checks.

Column rules are declared as pandera schemas (:func:`schema`), so the contract
is readable, testable and reusable outside receval; the type rules that
pandera cannot express (an id may be an integer *or* text) are checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from receval.errors import InputError, UsageError, Violation

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "CANONICAL_COLUMNS",
    "FRAME_KINDS",
    "ColumnMapping",
    "schema",
    "validate",
]

#: canonical column -> meaning
CANONICAL_COLUMNS: dict[str, str] = {
    "request_id": "one ranked list shown to one user at one time (unit of ranking metrics)",
    "user_id": "who saw the list (unit of user-level audits)",
    "item_id": "what was shown or scored",
    "position": "1-based rank at which the item was shown in the log",
    "score": "a model's score; higher ranks first",
    "label": "observed feedback or graded relevance (negative: judged not relevant)",
    "propensity": "probability that the logging policy showed this item at this position, in (0, 1]",
    "prediction": "a predicted probability in [0, 1], for calibration metrics",
}

#: frame kind -> (required columns, optional canonical columns)
FRAME_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "run": (("request_id", "item_id", "score"), ("user_id", "position", "prediction")),
    "labels": (("request_id", "item_id", "label"), ("user_id",)),
    "impressions": (
        ("request_id", "item_id"),
        ("user_id", "position", "score", "label", "propensity", "prediction"),
    ),
}

_ID_COLUMNS = ("request_id", "user_id", "item_id")


@dataclass(frozen=True)
class ColumnMapping:
    """Canonical column name -> the name used in the user's data.

    >>> m = ColumnMapping({"request_id": "qid", "item_id": "docno"})
    >>> m.source("request_id"), m.source("score")
    ('qid', 'score')
    """

    names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(CANONICAL_COLUMNS))
        if unknown:
            raise UsageError(
                f"column mapping names unknown canonical column(s) {unknown}; "
                f"canonical columns are {', '.join(CANONICAL_COLUMNS)}"
            )
        sources = list(self.names.values())
        repeated = sorted({s for s in sources if sources.count(s) > 1})
        if repeated:
            raise UsageError(f"column mapping uses source column(s) {repeated} more than once")

    @classmethod
    def of(cls, value: ColumnMapping | Mapping[str, str] | None) -> ColumnMapping:
        if value is None:
            return cls({})
        if isinstance(value, ColumnMapping):
            return value
        if not isinstance(value, Mapping):
            raise UsageError(
                f"columns must map canonical names to your column names, e.g. "
                f"{{'request_id': 'qid'}}; got {type(value).__name__}"
            )
        return cls(dict(value))

    def source(self, canonical: str) -> str:
        return self.names.get(canonical, canonical)

    def label(self, canonical: str) -> str:
        """How to name a column in messages: canonical, with the user's name."""
        src = self.source(canonical)
        return canonical if src == canonical else f"{canonical} (your column {src!r})"


def _import_pandera() -> None:
    """Import pandera once, without pyspark's pandas-version warning.

    When pyspark is installed, importing pandera imports ``pyspark.pandas``,
    which warns (FutureWarning) that it does not fully support pandas >= 3.
    receval never uses pandas-on-Spark, so that warning is noise here.
    """
    import sys
    import warnings

    if "pandera" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        import pandera  # noqa: F401


def schema(kind: str, dtypes: Mapping[str, Any] | None = None):
    """The pandera (polars) schema of a frame kind.

    ``dtypes`` fixes the dtype of the id columns, which may be integer or
    text; other columns are coerced to float64 before validation.
    """
    _import_pandera()
    import pandera.polars as pa
    import polars as pl

    required, optional = FRAME_KINDS[kind]
    dtypes = dict(dtypes or {})
    present = set(dtypes) if dtypes else set(required)

    def col(name: str) -> Any:
        if name in _ID_COLUMNS:
            return pa.Column(dtypes.get(name, pl.String), nullable=False, required=name in required)
        checks = []
        if name == "score":
            pass  # any number; +-inf allowed (they sort first/last), NaN/null not
        elif name == "label":
            checks.append(pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).is_finite()), error="must be finite"))
        elif name == "position":
            checks.append(pa.Check.ge(1, error="must be >= 1"))
        elif name == "propensity":
            checks.append(pa.Check.gt(0, error="must be > 0"))
            checks.append(pa.Check.le(1, error="must be <= 1"))
        elif name == "prediction":
            checks.append(pa.Check.in_range(0, 1, error="must lie in [0, 1]"))
        return pa.Column(pl.Float64, checks=checks, nullable=False, required=name in required)

    columns = {name: col(name) for name in (*required, *optional) if name in present or name in required}
    return pa.DataFrameSchema(columns, strict=False, name=kind)


def _fmt_example(value: Any) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    return repr(value)


def validate(
    frame: pl.DataFrame,
    kind: str,
    mapping: ColumnMapping,
    *,
    name: str | None = None,
    use: tuple[str, ...] | None = None,
    passthrough: tuple[str, ...] = (),
) -> pl.DataFrame:
    """Rename to canonical names, coerce types and check the contract.

    Returns a frame with canonical column names: ids as Int64 or String,
    numeric columns as Float64. ``use`` limits the optional columns kept and
    checked to those the caller needs (default: all present).
    ``passthrough`` names extra (non-canonical) columns kept unchanged, e.g.
    slice attributes. Raises :class:`InputError` listing every violation.
    """
    import polars as pl

    label = name or kind
    required, optional = FRAME_KINDS[kind]
    violations: list[Violation] = []

    available = list(frame.columns)
    missing = [c for c in required if mapping.source(c) not in available]
    for c in missing:
        close = [a for a in available if a.lower() == c.lower() or c.split("_")[0] in a.lower()]
        hint = (
            f"map your column with columns={{'{c}': '{close[0]}'}}"
            if close
            else f"available columns are {available[:12]}; pass columns={{'{c}': 'your_name'}}"
        )
        violations.append(Violation(mapping.label(c), "required column is missing", frame.height, (), hint))
    if missing:
        raise InputError(label, violations)

    keep = optional if use is None else tuple(c for c in optional if c in use)
    wanted = [c for c in (*required, *keep) if mapping.source(c) in available]
    extra = [c for c in passthrough if c not in wanted]
    absent = [c for c in extra if c not in available]
    for c in absent:
        violations.append(Violation(c, "column named in by= is missing", frame.height, (), f"available columns are {available[:12]}"))
    if absent:
        raise InputError(label, violations)
    frame = frame.select([pl.col(mapping.source(c)).alias(c) for c in wanted] + [pl.col(c) for c in extra])

    casts: list[pl.Expr] = []
    dtypes: dict[str, Any] = {}
    for c in wanted:
        dtype = frame.schema[c]
        if c in _ID_COLUMNS:
            if dtype.is_integer():
                if dtype == pl.UInt64 and frame.height and frame[c].max() > 2**63 - 1:  # type: ignore[operator]
                    casts.append(pl.col(c).cast(pl.String))
                    dtypes[c] = pl.String
                else:
                    casts.append(pl.col(c).cast(pl.Int64))
                    dtypes[c] = pl.Int64
            elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
                casts.append(pl.col(c).cast(pl.String))
                dtypes[c] = pl.String
            elif dtype == pl.Null or frame.height == 0:
                # no values: nothing to type-check (an empty pandas column arrives as object/float)
                casts.append(pl.col(c).cast(pl.String))
                dtypes[c] = pl.String
            else:
                violations.append(
                    Violation(
                        mapping.label(c),
                        f"must hold integers or text, found dtype {dtype}",
                        frame.height,
                        tuple(_fmt_example(v) for v in frame[c].head(3).to_list()),
                        "cast ids to int or str; float ids lose precision and '7.0' != '7'",
                    )
                )
        else:
            if dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null:
                casts.append(pl.col(c).cast(pl.Float64))
            else:
                sample = frame[c].head(3).to_list()
                violations.append(
                    Violation(
                        mapping.label(c),
                        f"must be numeric, found dtype {dtype}",
                        frame.height,
                        tuple(_fmt_example(v) for v in sample),
                        "convert the column to numbers before evaluating",
                    )
                )
                casts.append(pl.col(c))
            dtypes[c] = pl.Float64
    frame = frame.with_columns(casts)
    if violations:
        raise InputError(label, violations)

    violations.extend(_run_schema(frame, kind, dtypes, mapping))
    if violations:
        raise InputError(label, violations)
    return frame


def _run_schema(frame: pl.DataFrame, kind: str, dtypes: dict[str, Any], mapping: ColumnMapping) -> list[Violation]:
    _import_pandera()
    import pandera.errors as pe
    import polars as pl

    try:
        schema(kind, dtypes).validate(frame, lazy=True)
    except pe.SchemaErrors as err:
        cases = err.failure_cases
        if not isinstance(cases, pl.DataFrame):  # pragma: no cover - other backends
            cases = pl.from_pandas(cases)
        out = []
        for (column, check), group in cases.group_by(["column", "check"], maintain_order=True):
            rule = {
                "not_nullable": "must not be null or NaN",
            }.get(str(check), str(check))
            examples = []
            for idx, value in zip(group["index"].head(5).to_list(), group["failure_case"].head(5).to_list(), strict=True):
                shown = "null or NaN" if value is None else value
                examples.append(f"row {idx}: {shown}" if idx is not None else str(shown))
            hint = {
                "must not be null or NaN": "drop or fill those rows explicitly; receval never guesses missing values",
                "must be > 0": "zero propensities break the positivity assumption; drop or re-log those rows",
            }.get(rule, "")
            out.append(Violation(mapping.label(str(column)), rule, group.height, tuple(examples), hint))
        return out
    return []
