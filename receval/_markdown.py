"""Tiny Markdown table writer (no third-party dependency), escaping cell text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from receval._text import no_controls


def cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    # a cell must not break the table, inject markup, or carry control / bidirectional characters to a terminal
    text = " ".join(no_controls(str(value)).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 4, numeric: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    if numeric is None:
        numeric = [bool(rows) and all(isinstance(r[j], int | float) and not isinstance(r[j], bool) for r in rows) for j in range(len(headers))]
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v, digits) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
