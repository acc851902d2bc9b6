"""The governance report (Markdown for ``$GITHUB_STEP_SUMMARY``, and self-contained HTML)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receval.reporting._doc import Section, to_html, to_markdown
from receval.reporting._sections import (
    banner,
    errors_blocks,
    gates_blocks,
    provenance_blocks,
    settings_blocks,
    warnings_blocks,
)
from receval.reporting._util import as_dict, as_str, get, model_name


def _title(report: Mapping[str, Any]) -> str:
    version = as_str(get(report, "model", "version")).strip()
    return f"Governance report: {model_name(report)}" + (f" {version}" if version else "")


def _sections(report: Mapping[str, Any]) -> list[Section]:
    return [
        Section("Gates", gates_blocks(report), "gates"),
        Section("Errors", errors_blocks(report), "errors"),
        Section("Warnings", warnings_blocks(report), "warnings"),
        Section("Provenance", provenance_blocks(report), "provenance"),
        Section("Settings", settings_blocks(report), "settings"),
    ]


def render_report_md(report: Mapping[str, Any]) -> str:
    """The governance report as GitHub-flavoured Markdown (fit for ``$GITHUB_STEP_SUMMARY``).

    Verdict banner, one table row per gate (id, type, subject, status, value,
    bound, op, threshold, interval, n, p / p_adj, message), per-group gate
    details, errors, provenance (config hash, input fingerprints, versions, git
    commit) and settings. A pure function of ``report``: same dict, same text.
    """
    report = as_dict(report)
    return to_markdown(_title(report), _sections(report), preamble=[banner(report)])


def render_report_html(report: Mapping[str, Any]) -> str:
    """The governance report as one self-contained HTML page (inline CSS, no scripts, no external resource)."""
    report = as_dict(report)
    return to_html(_title(report), _sections(report), preamble=[banner(report)])
