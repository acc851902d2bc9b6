"""A tiny document model (sections of paragraphs, tables, lists, figures) and its
Markdown and HTML writers.

The report and the card are built once as a list of :class:`Section` and then
written by :func:`to_markdown` or :func:`to_html`, so both formats always
carry the same content. Blocks hold raw text; escaping happens in the writers
only (Markdown: :func:`md_escape`; HTML: :func:`html.escape`), so no caller can
forget it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from receval.reporting._util import h, md_cell, md_escape

# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Cell:
    """A table cell with a style: 'pass', 'fail', 'error', 'suppressed', 'na' or ''."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Text:
    """Plain text; blank lines separate paragraphs. style: '', 'muted', 'warn'."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    numeric: tuple[bool, ...] = ()
    caption: str = ""
    wrap_last: bool = False  # a free-text last column (messages) that needs room to wrap


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Fields:
    """Label: value pairs (model details, provenance)."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Figure:
    name: str  # file stem when written out, e.g. "metric-curves"
    svg: str
    caption: str


@dataclass(frozen=True)
class Banner:
    verdict: str  # pass | fail | error
    headline: str
    detail: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)
    anchor: str = ""


def table(headers: list[str], rows: list[list[Any]], *, numeric: list[bool] | None = None, caption: str = "",
          wrap_last: bool = False) -> Table:
    return Table(tuple(headers), tuple(tuple(r) for r in rows), tuple(numeric or ()), caption, wrap_last)


def cell_text(c: Any) -> str:
    return c.text if isinstance(c, Cell) else str(c)


def cell_style(c: Any) -> str:
    return c.style if isinstance(c, Cell) else ""


# --------------------------------------------------------------------------- Markdown


def _md_block(b: Any, level: int, figures_dir: str | None) -> list[str]:
    if isinstance(b, Section):
        return _md_section(b, level + 1, figures_dir)
    if isinstance(b, Banner):
        line = f"> **{md_escape(b.headline)}**"
        return [line + (f"  \n> {md_escape(b.detail)}" if b.detail else ""), ""]
    if isinstance(b, Text):
        paras = [p.strip() for p in re.split(r"\n\s*\n", b.text) if p.strip()]
        out = []
        for p in paras:
            body = "  \n".join(md_escape(line.strip()) for line in p.splitlines())
            out += [f"_{body}_" if b.style == "muted" else (f"**Warning:** {body}" if b.style == "warn" else body), ""]
        return out
    if isinstance(b, Bullets):
        return [f"- {md_cell(i)}" for i in b.items] + [""] if b.items else []
    if isinstance(b, Fields):
        return [f"- **{md_cell(k)}:** {md_cell(v)}" for k, v in b.pairs] + [""] if b.pairs else []
    if isinstance(b, Table):
        numeric = b.numeric or (False,) * len(b.headers)
        lines = [f"_{md_escape(b.caption)}_", ""] if b.caption else []
        lines.append("| " + " | ".join(md_cell(x) for x in b.headers) + " |")
        lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        for r in b.rows:
            cells = []
            for c in r:
                text = md_cell(cell_text(c))
                cells.append(f"**{text}**" if cell_style(c) in ("fail", "error") and text.strip() else text)
            lines.append("| " + " | ".join(cells) + " |")
        return lines + [""]
    if isinstance(b, Figure):
        if figures_dir is None:
            return [f"_Figure: {md_escape(b.caption)} (embedded in the HTML version)._", ""]
        return [f"![{md_cell(b.caption)}]({figures_dir}/{b.name}.svg)", ""]
    raise TypeError(f"unknown block {type(b).__name__}")  # pragma: no cover - programming error


def _md_section(s: Section, level: int, figures_dir: str | None) -> list[str]:
    out = ["#" * min(level, 6) + " " + md_escape(s.title), ""]
    for b in s.blocks:
        out += _md_block(b, level, figures_dir)
    return out


def to_markdown(title: str, sections: list[Section], *, preamble: list[Any] = (), figures_dir: str | None = None) -> str:
    lines = ["# " + md_escape(title), ""]
    for b in preamble:
        lines += _md_block(b, 1, figures_dir)
    for s in sections:
        lines += _md_section(s, 2, figures_dir)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
:root{--pass:#1a7f37;--fail:#cf222e;--error:#9a6700;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;
max-width:1280px;margin:2rem auto;padding:0 1rem;line-height:1.45;font-size:15px}
h1{font-size:1.7rem;border-bottom:1px solid var(--line);padding-bottom:.3rem}
h2{font-size:1.3rem;border-bottom:1px solid var(--line);padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.1rem;margin-top:1.4rem} h4{font-size:1rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid var(--line);padding:4px 8px;vertical-align:top;text-align:left}
th{background:var(--bg)} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.wrap-last td:last-child{min-width:18rem}
caption{caption-side:top;text-align:left;color:var(--muted);font-style:italic;padding-bottom:.2rem}
td.pass{color:var(--pass);font-weight:600} td.fail{color:var(--fail);font-weight:700}
td.error{color:var(--error);font-weight:700} td.suppressed,td.na{color:var(--muted);font-style:italic}
.banner{border-radius:6px;padding:.8rem 1rem;margin:1rem 0;border:2px solid}
.banner strong{font-size:1.25rem} .banner p{margin:.2rem 0 0}
.banner.pass{border-color:var(--pass);background:#dafbe1} .banner.fail{border-color:var(--fail);background:#ffebe9}
.banner.error{border-color:var(--error);background:#fff8c5}
p.muted{color:var(--muted);font-style:italic} p.warn{color:var(--fail)}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem} dt{font-weight:600} dd{margin:0}
figure{margin:1rem 0} figure svg{max-width:100%;height:auto} figcaption{color:var(--muted);font-size:13px}
nav ol{columns:2;font-size:14px} code{font-size:13px}
""".strip()

# defence in depth: even if some text slipped through unescaped, the page can
# load nothing and run no script
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _html_text(text: str, style: str) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    cls = f' class="{style}"' if style else ""
    return "".join(f"<p{cls}>" + "<br>".join(h(line) for line in p.splitlines()) + "</p>\n" for p in paras)


def _html_block(b: Any, level: int) -> str:
    if isinstance(b, Section):
        return _html_section(b, level + 1)
    if isinstance(b, Banner):
        v = b.verdict if b.verdict in ("pass", "fail", "error") else "error"
        detail = f"<p>{h(b.detail)}</p>" if b.detail else ""
        return f'<div class="banner {v}" role="status"><strong>{h(b.headline)}</strong>{detail}</div>\n'
    if isinstance(b, Text):
        return _html_text(b.text, b.style)
    if isinstance(b, Bullets):
        return "<ul>\n" + "".join(f"<li>{h(i)}</li>\n" for i in b.items) + "</ul>\n" if b.items else ""
    if isinstance(b, Fields):
        return "<dl>\n" + "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>\n" for k, v in b.pairs) + "</dl>\n" if b.pairs else ""
    if isinstance(b, Table):
        numeric = b.numeric or (False,) * len(b.headers)
        out = ['<table class="wrap-last">' if b.wrap_last else "<table>"]
        if b.caption:
            out.append(f"<caption>{h(b.caption)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{h(x)}</th>" for x in b.headers) + "</tr></thead><tbody>")
        for r in b.rows:
            tds = []
            for j, c in enumerate(r):
                classes = " ".join(x for x in ("num" if j < len(numeric) and numeric[j] else "", cell_style(c)) if x)
                attr = f' class="{classes}"' if classes else ""
                tds.append(f"<td{attr}>{h(cell_text(c))}</td>")
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
        return "\n".join(out) + "\n"
    if isinstance(b, Figure):
        return f'<figure id="fig-{h(b.name)}">\n{b.svg}\n<figcaption>{h(b.caption)}</figcaption>\n</figure>\n'
    raise TypeError(f"unknown block {type(b).__name__}")  # pragma: no cover - programming error


def _html_section(s: Section, level: int) -> str:
    n = min(level, 6)
    anchor = f' id="{h(s.anchor)}"' if s.anchor else ""
    body = "".join(_html_block(b, level) for b in s.blocks)
    return f"<section{anchor}>\n<h{n}>{h(s.title)}</h{n}>\n{body}</section>\n"


def to_html(title: str, sections: list[Section], *, preamble: list[Any] = (), toc: bool = False) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="receval">',
        f"<title>{h(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{h(title)}</h1>",
    ]
    parts += [_html_block(b, 1).rstrip("\n") for b in preamble]
    if toc:
        items = "".join(f'<li><a href="#{h(s.anchor)}">{h(s.title)}</a></li>' for s in sections if s.anchor)
        parts.append(f'<nav aria-label="Contents"><ol>{items}</ol></nav>')
    parts += [_html_section(s, 2).rstrip("\n") for s in sections]
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
