"""Defensive accessors, number formatting and text escaping shared by the renderers.

The renderers read a ``report`` dict that may be partial or hand-edited, so
every access goes through these helpers: a wrong type reads as "absent",
never as an exception.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from typing import Any

from receval._text import no_controls as _no_controls

NA = "n/a"


# --------------------------------------------------------------------------- accessors


def as_dict(x: Any) -> dict[str, Any]:
    return dict(x) if isinstance(x, Mapping) else {}


def as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, list | tuple) else []


def as_dicts(x: Any) -> list[dict[str, Any]]:
    return [dict(v) for v in as_list(x) if isinstance(v, Mapping)]


def as_str(x: Any) -> str:
    """Text of a scalar; containers and None read as ''."""
    if x is None or isinstance(x, Mapping | list | tuple | set):
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float) and not math.isfinite(x):
        return ""
    return str(x)


def num(x: Any) -> float | None:
    """A finite number, else None (booleans are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        x = float(x)
    except OverflowError:  # an int beyond the float range
        return None
    return x if math.isfinite(x) else None


def as_int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and math.isfinite(x) and x == int(x):
        return int(x)
    return None


def get(obj: Any, *path: str | int) -> Any:
    """``obj[p0][p1]...`` or None when any step is missing or of the wrong type."""
    for p in path:
        if isinstance(p, int):
            if not isinstance(obj, list | tuple) or not -len(obj) <= p < len(obj):
                return None
            obj = obj[p]
        else:
            if not isinstance(obj, Mapping) or p not in obj:
                return None
            obj = obj[p]
    return obj


def estimate(x: Any) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of an audit Estimate dict, a number, or a row with mean/ci_low/ci_high."""
    if isinstance(x, Mapping):
        value = x.get("value", x.get("mean"))
        low = x.get("low", x.get("ci_low"))
        high = x.get("high", x.get("ci_high"))
        return num(value), num(low), num(high)
    return num(x), None, None


def is_estimate(x: Any) -> bool:
    return isinstance(x, Mapping) and ("value" in x or "mean" in x) and set(x) <= {
        "value", "low", "high", "mean", "ci_low", "ci_high", "n", "level",
    }


def json_safe(x: Any) -> Any:
    """A copy that ``json.dumps(allow_nan=False)`` accepts: non-finite floats -> None, keys -> str."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, str | int | float | bool):
        return x
    return str(x)


def is_suppressed(row: Mapping[str, Any]) -> bool:
    return row.get("suppressed") is True


# --------------------------------------------------------------------------- numbers


def fmt(x: Any) -> str:
    """One number as text, the same everywhere (rounding happens only here).

    Integers as they are; |x| < 0.01 or >= 1e6 with 3 significant digits
    (CTR-like OPE values and p-values keep their information); else 4 decimals.
    """
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    v = num(x)
    if v is None:
        return NA if not isinstance(x, str) else x
    if v == 0:
        return "0"
    if abs(v) < 0.01 or abs(v) >= 1e6:
        return f"{v:.3g}"
    return f"{v:.4f}"


def fmt_interval(low: Any, high: Any) -> str:
    lo, hi = num(low), num(high)
    if lo is None and hi is None:
        return NA
    return f"[{fmt(lo)}, {fmt(hi)}]"


def fmt_estimate(x: Any) -> str:
    """"value [low, high]" of an Estimate-like dict, or the number alone."""
    value, low, high = estimate(x)
    if value is None:
        return NA
    if low is None and high is None:
        return fmt(value)
    return f"{fmt(value)} {fmt_interval(low, high)}"


def fmt_threshold(x: Any) -> str:
    if isinstance(x, list | tuple):
        return "[" + ", ".join(fmt(v) for v in x) + "]"
    return fmt(x) if x is not None else NA


def fmt_level(level: Any) -> str:
    v = num(level)
    if v is None or not 0 < v < 1:
        return ""
    pct = v * 100
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-9 else f"{pct:.1f}%"


def fmt_share(x: Any) -> str:
    v = num(x)
    return NA if v is None else f"{v * 100:.1f}%"


# --------------------------------------------------------------------------- text


def suppressed_text(min_group_size: Any = None) -> str:
    m = as_int(min_group_size)
    return f"suppressed (n < {m})" if m is not None else "suppressed (n < min_group_size)"


_MD_SPECIAL = re.compile(r"([\\`*\[\]|~$])")  # "$": GitHub renders $...$ as math
# '_' only opens or closes emphasis next to a non-alphanumeric: leave snake_case alone
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# block markers that only act at the start of a line: headings, list items, setext underlines
_MD_LINE_START = re.compile(r"^(\s*)(#{1,6}(?=\s|$)|[-+](?=\s|$)|\d{1,9}[.)](?=\s|$)|[=-]+\s*$)", re.MULTILINE)


def _md_inline(s: str) -> str:
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return _MD_UNDERSCORE.sub(r"\\_", s)


def md_escape(text: Any) -> str:
    """Plain text -> Markdown text that renders as the same characters.

    ``& < >`` become entities (no raw HTML reaches GitHub's renderer; no
    ``<script`` survives even as text), Markdown punctuation is
    backslash-escaped, and line-start markers (headings, lists, setext
    underlines) are neutralised.
    """
    s = _md_inline(no_controls(as_str(text)))

    def neutralise(m: re.Match[str]) -> str:
        marker = m.group(2)
        if marker[0].isdigit():  # "1." -> "1\." (a backslash before a digit is not an escape)
            return m.group(1) + marker[:-1] + "\\" + marker[-1]
        return m.group(1) + "\\" + marker

    return _MD_LINE_START.sub(neutralise, s)


def md_cell(text: Any) -> str:
    """Inline Markdown (a table cell, a list item): escaped and on one line."""
    s = " ".join(no_controls(as_str(text)).split())
    return _md_inline(s) if s else " "


# C0 and C1 control characters (tab, newline and carriage return excepted), bidirectional controls
# and invisible characters (receval/_text.py): an ANSI escape, NUL, BEL or U+202E in a group name or
# gate id must not reach a page, a terminal or a CI log as what it is
no_controls = _no_controls


def h(text: Any) -> str:
    """HTML-escape any text (quotes too: the result may sit in an attribute); control characters become U+FFFD."""
    return html.escape(no_controls(text if isinstance(text, str) else as_str(text)), quote=True)


# XML 1.0 forbids most C0 controls; ElementTree would write them verbatim and
# produce a file no JUnit reader can parse.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: Any) -> str:
    """Text for XML: characters XML forbids, other control characters, bidirectional controls and
    invisible characters become U+FFFD (JUnit messages reach CI views and logs)."""
    s = text if isinstance(text, str) else as_str(text)
    return _XML_ILLEGAL.sub("\ufffd", no_controls(s))


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: Any, default: str = "x") -> str:
    s = _SLUG.sub("-", as_str(text).lower()).strip("-")
    return s or default


def model_name(report: Mapping[str, Any]) -> str:
    return as_str(get(report, "model", "name")).strip() or "unnamed model"


def verdict(report: Mapping[str, Any]) -> str:
    """'pass' | 'fail' | 'error'; anything else reads as 'error' (fail closed)."""
    v = as_str(report.get("verdict")).lower() if isinstance(report, Mapping) else ""
    return v if v in ("pass", "fail") else "error"


def status(gate: Mapping[str, Any]) -> str:
    s = as_str(gate.get("status")).lower()
    return s if s in ("pass", "fail") else "error"
