"""Tiny Markdown table writer (no third-party dependency), escaping cell text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    text = str(value)
    # a cell must not break the table or inject markup
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 4, numeric: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    if numeric is None:
        numeric = [bool(rows) and all(isinstance(r[j], int | float) and not isinstance(r[j], bool) for r in rows) for j in range(len(headers))]
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v, digits) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
