"""Neutralising characters that change how text displays (no dependencies: used by every renderer).

Two kinds of character in a model name, group name, item id or column name could fake what a page,
a terminal or a CI log shows:

* C0 and C1 control characters (tab, newline and carriage return excepted): an ANSI escape can erase or
  recolour lines, NUL and BEL confuse viewers;
* Unicode bidirectional controls and invisible characters: U+202A-U+202E (embeddings and overrides,
  U+202E reverses the text after it), U+2066-U+2069 (isolates), U+200E / U+200F / U+061C (directional
  marks), U+200B (zero-width space), U+2060-U+2064 (word joiner, invisible operators) and U+FEFF
  (zero-width no-break space): they can reorder what a reviewer reads ("Trojan Source", CVE-2021-42574)
  or make two different names look identical.

In HTML, Markdown, JUnit, SVG and terminal output both become U+FFFD (visible). JSON and YAML keep the
exact text but write these characters as ``\\uXXXX`` escapes, so the file displays safely and loads back
to the same string. The zero-width (non-)joiners U+200C / U+200D are kept: they are part of Persian and
Indic spelling and of emoji sequences, and cannot reorder text.
"""

from __future__ import annotations

import re

#: bidirectional controls and invisible characters (see the module docstring)
BIDI_INVISIBLE = "\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_CONTROL = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{BIDI_INVISIBLE}]")
_ESCAPE_IN_JSON = re.compile(f"[\x7f-\x9f{BIDI_INVISIBLE}\u2028\u2029]")


def no_controls(text: str) -> str:
    """``text`` with control characters (other than tab, newline, carriage return), bidirectional
    controls and invisible characters replaced by U+FFFD."""
    return _CONTROL.sub("\ufffd", text)


def escape_invisible(json_text: str) -> str:
    """JSON (or YAML double-quoted) text with DEL, C1 controls, bidirectional controls, invisible characters
    and the line / paragraph separators written as ``\\uXXXX`` escapes: the value is unchanged, the file
    shows no hidden reordering. (``json.dumps`` already escapes C0 controls; these characters can only
    occur inside strings, so the substitution never touches the syntax.)"""
    return _ESCAPE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)
