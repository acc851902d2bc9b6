"""The data contract for engines that never hold the whole frame.

:func:`receval.data.contract.validate` checks an eager polars frame with
pandera. The Spark and streaming engines check the same rules in two steps
that need no materialised frame, and raise the same violations (column, rule,
row count, hint; examples name the offending row's request and item instead
of a row number, which a distributed frame does not have):

1. :func:`check_schema`: required columns present, ids integer or text,
   other columns numeric — from the schema alone, before any data is read
   (the row count of a violation costs one count, on the error path only);
2. :func:`value_checks`: nulls / NaN, non-finite labels, predictions outside
   [0, 1] — one aggregation pass (each engine evaluates the listed checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from receval.data.contract import _ID_COLUMNS, FRAME_KINDS, ColumnMapping
from receval.errors import InputError, Violation

__all__ = ["ColumnType", "ValueCheck", "check_schema", "value_checks", "format_example"]

_NULL_HINT = "drop or fill those rows explicitly; receval never guesses missing values"


@dataclass(frozen=True)
class ColumnType:
    """An engine's column type, reduced to what the contract needs.

    ``kind``: ``"int"``, ``"str"``, ``"numeric"`` (floats, decimals),
    ``"bool"``, ``"null"`` or ``"other"``; ``name``: the polars name of the
    type (``Float64``, ``String``...), used in messages as locally.
    """

    kind: str
    name: str


@dataclass(frozen=True)
class ValueCheck:
    column: str  # canonical name
    kind: str  # "null" (ids), "null_or_nan", "finite", "unit_interval"
    rule: str
    hint: str = ""


def check_schema(
    types: dict[str, ColumnType],
    kind: str,
    mapping: ColumnMapping,
    *,
    name: str,
    use: tuple[str, ...],
    passthrough: tuple[str, ...] = (),
    count: Callable[[], int],
    head: Callable[[str], list] | None = None,
) -> dict[str, str]:
    """Check columns and types as :func:`receval.data.contract.validate` does.

    ``types``: source column -> type. Returns canonical column -> target type
    (``"int"``, ``"str"`` or ``"float"``) for the columns kept. Raises
    :class:`InputError` (``count()`` gives the row count of whole-column
    violations; it is only called on that error path).
    """
    required, optional = FRAME_KINDS[kind]
    available = list(types)
    missing = [c for c in required if mapping.source(c) not in types]
    if missing:
        n = count()
        violations = []
        for c in missing:
            close = [a for a in available if a.lower() == c.lower() or c.split("_")[0] in a.lower()]
            hint = (
                f"map your column with columns={{'{c}': '{close[0]}'}}"
                if close
                else f"available columns are {available[:12]}; pass columns={{'{c}': 'your_name'}}"
            )
            violations.append(Violation(mapping.label(c), "required column is missing", n, (), hint))
        raise InputError(name, violations)
    keep = tuple(c for c in optional if c in use)
    wanted = [c for c in (*required, *keep) if mapping.source(c) in types]
    absent = [c for c in passthrough if c not in wanted and c not in types]
    if absent:
        n = count()
        raise InputError(name, [Violation(c, "column named in by= is missing", n, (), f"available columns are {available[:12]}")
                                for c in absent])
    targets: dict[str, str] = {}
    bad: list[tuple[str, str, str]] = []
    for c in wanted:
        t = types[mapping.source(c)]
        if c in _ID_COLUMNS:
            if t.kind == "int":
                targets[c] = "int"
            elif t.kind in ("str", "null"):
                targets[c] = "str"
            else:
                bad.append((c, f"must hold integers or text, found dtype {t.name}",
                            "cast ids to int or str; float ids lose precision and '7.0' != '7'"))
        elif t.kind in ("int", "numeric", "bool", "null"):
            targets[c] = "float"
        else:
            bad.append((c, f"must be numeric, found dtype {t.name}", "convert the column to numbers before evaluating"))
    if bad:
        n = count()
        raise InputError(name, [
            Violation(mapping.label(c), rule, n,
                      tuple(_fmt(v) for v in head(mapping.source(c))) if head is not None else (), hint)
            for c, rule, hint in bad
        ])
    return targets


def _fmt(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return repr(value)


def value_checks(targets: dict[str, str]) -> list[ValueCheck]:
    """The row-level rules of the contract for the kept columns, in report order."""
    checks = []
    for c, target in targets.items():
        checks.append(ValueCheck(c, "null" if target in ("int", "str") else "null_or_nan", "must not be null or NaN", _NULL_HINT))
        if c == "label":
            checks.append(ValueCheck(c, "finite", "must be finite"))
        elif c == "prediction":
            checks.append(ValueCheck(c, "unit_interval", "must lie in [0, 1]"))
    return checks


def format_example(request_id: object, item_id: object, value: object) -> str:
    shown = "null or NaN" if value is None else value
    return f"request_id {request_id!r}, item_id {item_id!r}: {shown}"


def raise_value_violations(
    name: str,
    mapping: ColumnMapping,
    checks: list[ValueCheck],
    counts: list[int],
    examples: dict[int, list[str]],
) -> None:
    violations = [
        Violation(mapping.label(chk.column), chk.rule, int(n), tuple(examples.get(j, ())[:5]), chk.hint)
        for j, (chk, n) in enumerate(zip(checks, counts, strict=True))
        if n
    ]
    if violations:
        raise InputError(name, violations)


def run_and_label_frames(
    src: Any,
    src_columns: list[str],
    count_rows: Callable[[], int],
    frame: Callable[..., Any],
    read_labels: Callable[[list[str]], Any] | None,
    *,
    run_map: ColumnMapping,
    lab_map: ColumnMapping,
    name: str,
    slice_columns: tuple[str, ...],
    need_prediction: bool,
) -> tuple[Any, Any, tuple[str, ...]]:
    """The chunked engines' common preamble, before any value check: the run and label frames checked
    against the contract (``frame(source, kind, mapping, name=, use=, passthrough=)`` is the engine's
    ``_Frame``), labels from the run's ``label`` column when ``read_labels`` is None, ids given one type
    on both sides (text when they differ, as in memory), and the run columns constant within a request.
    Returns (run frame, label frame, constant columns).
    """
    from receval.errors import UsageError

    if need_prediction and run_map.source("prediction") not in src_columns:
        raise InputError(name, [Violation(
            run_map.label("prediction"), "required column is missing", count_rows(), (),
            "calibration metrics need a predicted probability per row; map it with columns={'prediction': 'your_name'}")])
    run_use = ("request_id", "item_id", "score", "user_id") + (("prediction",) if need_prediction else ())
    run_f = frame(src, "run", run_map, name=name, use=run_use, passthrough=slice_columns)
    lab_use = ("request_id", "item_id", "label")
    if read_labels is None:
        if run_map.source("label") not in src_columns:
            raise UsageError(
                f"{name}: no labels given and no label column in the run; pass labels=... "
                "(a frame or a qrels file) or include a 'label' column in the run"
            )
        lab_f = frame(src.select([run_map.source(c) for c in lab_use]), "labels", run_map, name=f"{name} labels",
                      use=lab_use)
    else:
        lab_f = frame(read_labels([lab_map.source(c) for c in lab_use]), "labels", lab_map, name="labels", use=lab_use)
    for c in ("request_id", "item_id"):
        if run_f.targets[c] != lab_f.targets[c]:
            run_f.text_ids(c)
            lab_f.text_ids(c)
    constant = (("user_id",) if "user_id" in run_f.targets else ()) + tuple(c for c in slice_columns if c != "user_id")
    return run_f, lab_f, constant
