"""Write every artefact of a report to a directory (the only I/O in receval.reporting)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from receval._text import escape_invisible
from receval.reporting._card import card_json, render_card_all
from receval.reporting._export import render_hf_model_index, to_model_card_toolkit
from receval.reporting._junit import render_junit
from receval.reporting._report import render_report_html, render_report_md
from receval.reporting._util import as_dict

FIGURES_DIR = "figures"


def _json(obj: Any) -> str:
    return escape_invisible(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)) + "\n"


def write_all(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write report.md, report.html, junit.xml, model_card.{md,html,json},
    model_card_toolkit.json, model_index.yaml and ``figures/*.svg`` (linked
    from model_card.md) into ``out_dir`` (created if needed).

    UTF-8, ``\\n`` newlines, JSON with sorted keys: the same report gives
    byte-identical files. Returns the written paths, in the order above.
    """
    report = as_dict(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card_md, card_html, figures = render_card_all(report, figures_dir=FIGURES_DIR)
    files: list[tuple[str, str]] = [
        ("report.md", render_report_md(report)),
        ("report.html", render_report_html(report)),
        ("junit.xml", render_junit(report)),
        ("model_card.md", card_md),
        ("model_card.html", card_html),
        ("model_card.json", _json(card_json(report))),
        ("model_card_toolkit.json", _json(to_model_card_toolkit(report))),
        ("model_index.yaml", render_hf_model_index(report)),
    ]
    files += [(f"{FIGURES_DIR}/{name}.svg", svg) for name, svg in figures.items()]
    written = []
    for name, text in files:
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # newline="\n": no platform newline translation, so bytes match everywhere
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        written.append(path)
    return written
