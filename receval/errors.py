"""Error types raised by receval.

Every error a user can trigger with bad input is a :class:`ReceValError`
subclass whose message names what is wrong, where, how often and how to fix it.
The CLI maps them to exit code 2; anything else is an internal error (exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ReceValError",
    "InputError",
    "Violation",
    "MetricNameError",
    "UsageError",
    "ResourceError",
    "ReceValWarning",
    "CoverageWarning",
]


class ReceValError(Exception):
    """Base class of all errors receval raises on purpose."""


class UsageError(ReceValError, ValueError):
    """A call or command line that cannot be carried out as written."""


class ResourceError(ReceValError, MemoryError):
    """An input too large for a computation that cannot stream, refused before allocating.

    The message names the computation, the predicted allocation, the limit (``RECEVAL_MAX_DENSE_BYTES``,
    default half the machine's memory) and what to do instead.
    """


class ReceValWarning(UserWarning):
    """Base class of the warnings receval emits: the result is computed, but may not mean what you think."""


class CoverageWarning(ReceValWarning):
    """Most judged requests are missing from the run (or the run and the labels share no request).

    Under ``missing_in_run="zero"`` those requests score 0, so the metrics mostly count the
    run's absence, not its ranking. The counts are in ``result.counts``.
    """


def keep_warnings(caught: list, category: type[Warning]) -> list:
    """The recorded warnings (``warnings.catch_warnings(record=True)``) of ``category``; every other one
    is emitted again, so it is shown (or filtered) as it would have been without the recording."""
    import warnings

    kept = []
    for w in caught:
        if issubclass(w.category, category):
            kept.append(w)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return kept


class MetricNameError(ReceValError, ValueError):
    """A metric name that cannot be parsed or is not registered."""


@dataclass(frozen=True)
class Violation:
    """One broken rule of the data contract.

    Attributes
    ----------
    column : the column (canonical name, with the user's name when remapped)
    rule : the rule in words, e.g. ``"must not be null"``
    n_rows : how many rows break it
    examples : up to five offending values or rows, already formatted
    hint : what to do about it
    """

    column: str
    rule: str
    n_rows: int
    examples: tuple[str, ...] = ()
    hint: str = ""

    def __str__(self) -> str:
        rows = "row violates" if self.n_rows == 1 else "rows violate"
        text = f"{self.column}: {self.rule}; {self.n_rows} {rows} this"
        if self.examples:
            text += f", e.g. {', '.join(self.examples)}"
        if self.hint:
            text += f". Hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "n_rows": self.n_rows,
            "examples": list(self.examples),
            "hint": self.hint,
        }


@dataclass
class InputError(ReceValError, ValueError):
    """Input data that breaks the data contract; lists every violation found."""

    frame: str
    violations: list[Violation] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.violations)
        head = f"{self.frame}: {n} data contract violation{'s' if n != 1 else ''}"
        return head + "".join(f"\n  - {v}" for v in self.violations)
