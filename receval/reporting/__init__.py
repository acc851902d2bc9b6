"""Renderers of ``report.json`` (docs/report-schema.md): governance report, JUnit XML,
model card (Markdown, HTML, JSON), Model Card Toolkit and Hugging Face exports, figures.

Every function is a pure function of the report dict (same dict, byte-identical
output; no timestamps), copes with partial reports ("not evaluated"), and
escapes every string that came from a user. Only :func:`write_all` writes
files. matplotlib loads only when a figure is drawn.

    >>> from receval.reporting import render_report_md
    >>> print(render_report_md({"verdict": "pass", "gates": []}).splitlines()[0])
    # Governance report: unnamed model
"""

from __future__ import annotations

from receval.reporting._card import card_json, render_card_html, render_card_md
from receval.reporting._export import (
    render_hf_model_index,
    to_hf_model_index,
    to_model_card_toolkit,
)
from receval.reporting._junit import render_junit
from receval.reporting._report import render_report_html, render_report_md
from receval.reporting._write import write_all

__all__ = [
    "render_report_md",
    "render_report_html",
    "render_junit",
    "render_card_md",
    "render_card_html",
    "card_json",
    "to_model_card_toolkit",
    "to_hf_model_index",
    "render_hf_model_index",
    "write_all",
]
