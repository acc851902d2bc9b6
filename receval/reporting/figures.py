"""Figures for reports and model cards: matplotlib -> SVG text, byte-identical across runs.

Every function takes one part of ``report.json`` and returns the SVG markup
(no XML prolog or doctype, ready to inline in HTML) or ``None`` when that part
is absent or holds nothing to draw. matplotlib is imported inside the
functions (``import receval`` stays fast) and pyplot is never used: figures
are plain :class:`matplotlib.figure.Figure` objects rendered by the SVG
backend, so no GUI backend or global figure state is involved.

Determinism: ``svg.hashsalt`` is fixed (clip-path and marker ids are hashes),
text is written as ``<text>`` elements (``svg.fonttype = "none"``: no glyph
outlines that depend on the installed fonts), and the metadata carries no date.
Ids are prefixed per figure so several figures can share one HTML page.
"""

from __future__ import annotations

import base64
import contextvars
import io
import math
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from receval._text import BIDI_INVISIBLE
from receval.reporting._util import (
    as_dict,
    as_dicts,
    as_int,
    as_str,
    estimate,
    get,
    is_estimate,
    is_suppressed,
    num,
    slug,
)

__all__ = [
    "metric_curves_svg",
    "reliability_svg",
    "slice_bars_svg",
    "group_bars_svg",
    "exposure_svg",
    "ope_svg",
    "report_figures",
]

_RC = {
    "svg.hashsalt": "receval",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "text.usetex": False,
}
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MAX_PANELS = 9
MAX_BARS = 60


_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{BIDI_INVISIBLE}]")  # and bidirectional controls (receval/_text.py)


_PLOT_MAX = 1e100


def _n(x: Any) -> float | None:
    """A plottable number: finite and small enough that axis arithmetic cannot overflow
    (tables still show the value; only the drawing leaves it out)."""
    v = num(x)
    return v if v is not None and abs(v) <= _PLOT_MAX else None


def _e(x: Any) -> tuple[float | None, float | None, float | None]:
    value, low, high = estimate(x)
    return _n(value), _n(low), _n(high)


def _t(text: Any, limit: int = 40) -> str:
    """User text for matplotlib: '$' would start mathtext (and can raise), so escape it; cap the length."""
    s = " ".join(_CONTROL.sub(" ", as_str(text)).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


# "svg" (the public contract) or "png" (base64 text, only for the Model Card
# Toolkit export, whose schema wants PNG graphics); set by png_figures() alone.
_OUTPUT: contextvars.ContextVar[str] = contextvars.ContextVar("receval_figure_output", default="svg")


def _render(draw: Callable[[Any], None], width: float, height: float, name: str) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC), warnings.catch_warnings():
        # group names in scripts DejaVu lacks (CJK, emoji) only lose their glyphs in the PNG export;
        # the SVG keeps them as text that the browser draws with its own fonts
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        fig = Figure(figsize=(width, height), layout="constrained")
        draw(fig)
        if _OUTPUT.get() == "png":
            raw = io.BytesIO()
            fig.savefig(raw, format="png", dpi=100, metadata={"Software": None})
            return base64.b64encode(raw.getvalue()).decode("ascii")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return _clean_svg(buf.getvalue(), prefix=slug(name))


_PROLOG = re.compile(r"\A\s*<\?xml[^>]*\?>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


def _clean_svg(svg: str, *, prefix: str) -> str:
    svg = _PROLOG.sub("", svg)
    svg = _METADATA.sub("", svg)  # RDF boilerplate only (no date, no creator)
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    def ref(m: re.Match[str]) -> str:
        target = m.group(2)
        return f"{m.group(1)}#{prefix}-{target}" if target in ids else m.group(0)

    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r"(url\()#([^)\s]+)", ref, svg)
    svg = re.sub(r'((?:xlink:)?href=")#([^"]+)', ref, svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{prefix}" ', 1)
    return svg.strip() + "\n"


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return cols, math.ceil(n / cols)


def _yerr(values: list[float], lows: list[float | None], highs: list[float | None]) -> list[list[float]]:
    # matplotlib wants distances, not bounds; a missing bound draws no whisker
    return [
        [max(v - lo, 0.0) if lo is not None else 0.0 for v, lo in zip(values, lows, strict=True)],
        [max(hi - v, 0.0) if hi is not None else 0.0 for v, hi in zip(values, highs, strict=True)],
    ]


# --------------------------------------------------------------------------- metric@k curves


def metric_curves_svg(evaluation: Any) -> str | None:
    """Metric@k curves with interval bands: one panel per metric family, one line per run.

    ``evaluation``: ``results.evaluation`` (run name -> run dict with ``curves``).
    """
    series: dict[str, dict[str, list[tuple[float, float, float | None, float | None]]]] = {}
    for run, body in sorted(as_dict(evaluation).items()):
        for family, rows in sorted(as_dict(get(body, "curves")).items()):
            pts = []
            for r in as_dicts(rows):
                k, mean = _n(r.get("k")), _n(r.get("mean"))
                if k is not None and mean is not None:
                    pts.append((k, mean, _n(r.get("ci_low")), _n(r.get("ci_high"))))
            if pts:
                series.setdefault(family, {})[run] = sorted(pts, key=lambda p: p[0])
    if not series:
        return None
    families = sorted(series)[:MAX_PANELS]
    cols, rows = _grid(len(families))

    def draw(fig: Any) -> None:
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, family in enumerate(families):
            ax = axes[i // cols][i % cols]
            for j, (run, pts) in enumerate(sorted(series[family].items())):
                color = _COLORS[j % len(_COLORS)]
                ks = [p[0] for p in pts]
                ax.plot(ks, [p[1] for p in pts], marker="o", ms=3, color=color, label=_t(run, 24))
                if all(p[2] is not None and p[3] is not None for p in pts):
                    ax.fill_between(ks, [p[2] for p in pts], [p[3] for p in pts], color=color, alpha=0.18, lw=0)
            ax.set_title(_t(family))
            ax.set_xlabel("k (cutoff)")
            ax.legend(fontsize=8)
        for i in range(len(families), rows * cols):
            axes[i // cols][i % cols].set_visible(False)

    return _render(draw, 3.4 * cols + 0.4, 2.8 * rows + 0.2, "metric-curves")


# --------------------------------------------------------------------------- reliability


def reliability_svg(evaluation: Any) -> str | None:
    """Reliability diagram: observed rate vs mean predicted probability per bin, with intervals."""
    runs = []
    for run, body in sorted(as_dict(evaluation).items()):
        pts = []
        for r in as_dicts(get(body, "reliability")):
            x, y = _n(r.get("mean_predicted")), _n(r.get("observed_rate"))
            if x is not None and y is not None and (as_int(r.get("count")) or 0) > 0:
                pts.append((x, y, _n(r.get("ci_low")), _n(r.get("ci_high"))))
        if pts:
            runs.append((run, sorted(pts, key=lambda p: p[0])))
    if not runs:
        return None

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], ls="--", color="#57606a", lw=1, label="perfect calibration")
        for j, (run, pts) in enumerate(runs):
            ys = [p[1] for p in pts]
            ax.errorbar([p[0] for p in pts], ys, yerr=_yerr(ys, [p[2] for p in pts], [p[3] for p in pts]),
                        marker="o", ms=4, capsize=2, color=_COLORS[j % len(_COLORS)], label=_t(run, 24))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed rate")
        ax.set_title("Reliability diagram")
        ax.legend(fontsize=8)

    return _render(draw, 4.6, 4.2, "reliability")


# --------------------------------------------------------------------------- per-group bars


def group_bars_svg(rows: Any, *, title: str = "", value_label: str = "", name: str = "group-bars") -> str | None:
    """Bars with error bars, one per group.

    ``rows``: dicts with ``group``, ``value`` and optional ``low`` / ``high``
    and ``suppressed``. Suppressed groups and groups without a value are not
    drawn (the tables say why).
    """
    pts = []
    for r in as_dicts(rows):
        value, low, high = _e(r)
        if value is None or is_suppressed(r):
            continue
        pts.append((as_str(r.get("group")), value, low, high))
    if not pts:
        return None
    pts = pts[:MAX_BARS]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ys = [p[1] for p in pts]
        pos = list(range(len(pts)))
        ax.barh(pos, ys, xerr=_yerr(ys, [p[2] for p in pts], [p[3] for p in pts]), color=_COLORS[0],
                alpha=0.85, capsize=2)
        ax.set_yticks(pos, [_t(p[0], 28) for p in pts])
        ax.invert_yaxis()
        ax.set_xlabel(_t(value_label, 60))
        ax.set_title(_t(title, 60))

    return _render(draw, 5.6, 0.26 * len(pts) + 1.2, name)


def slice_label(row: Mapping[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={as_str(row.get(k)) or '(missing)'}" for k in keys)


SLICE_VALUE_KEYS = frozenset({"metric", "mean", "ci_low", "ci_high", "n", "suppressed", "level"})


def slice_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The slicing columns of ``slices`` rows (everything but the metric fields), in first-seen order.

    A field holding a float in any row is a statistic, not a slice value: it is
    left out, so no number can leak into the label of a suppressed group.
    """
    keys: list[str] = []
    floats = {k for r in rows for k, v in r.items() if isinstance(v, float)}
    for r in rows:
        for k in r:
            if k not in SLICE_VALUE_KEYS and k not in floats and k not in keys:
                keys.append(k)
    return keys


def slice_hidden(row: Mapping[str, Any], min_group_size: Any) -> bool:
    """Suppressed upstream, or smaller than min_group_size (slices may not be suppressed upstream)."""
    m, n = as_int(min_group_size), as_int(row.get("n"))
    return is_suppressed(row) or (m is not None and n is not None and n < m)


def slice_bars_svg(run: Any, *, min_group_size: Any = None, name: str = "slices") -> str | None:
    """Per-slice means with intervals for one evaluation run: one panel per metric.

    Slices that are suppressed, or smaller than ``min_group_size``, are not drawn.
    """
    rows = as_dicts(get(run, "slices"))
    keys = slice_keys(rows)
    by_metric: dict[str, list[tuple[str, float, float | None, float | None]]] = {}
    for r in rows:
        value = _n(r.get("mean"))
        if value is None or slice_hidden(r, min_group_size):
            continue
        by_metric.setdefault(as_str(r.get("metric")), []).append(
            (slice_label(r, keys), value, _n(r.get("ci_low")), _n(r.get("ci_high")))
        )
    if not by_metric:
        return None
    metrics = list(by_metric)[:MAX_PANELS]  # report order
    cols, nrows = _grid(len(metrics))
    longest = max(len(by_metric[m]) for m in metrics)

    def draw(fig: Any) -> None:
        axes = fig.subplots(nrows, cols, squeeze=False)
        for i, metric in enumerate(metrics):
            ax = axes[i // cols][i % cols]
            pts = by_metric[metric][:MAX_BARS]
            ys = [p[1] for p in pts]
            pos = list(range(len(pts)))
            ax.barh(pos, ys, xerr=_yerr(ys, [p[2] for p in pts], [p[3] for p in pts]), color=_COLORS[i % len(_COLORS)],
                    alpha=0.85, capsize=2)
            ax.set_yticks(pos, [_t(p[0], 24) for p in pts])
            ax.invert_yaxis()
            ax.set_title(_t(metric))
        for i in range(len(metrics), nrows * cols):
            axes[i // cols][i % cols].set_visible(False)

    return _render(draw, 3.6 * cols + 0.6, (0.24 * min(longest, MAX_BARS) + 1.0) * nrows, name)


# --------------------------------------------------------------------------- exposure


def exposure_svg(exposure: Any) -> str | None:
    """Exposure share (with interval) against the target share, per item group.

    ``exposure``: ``results.audits.exposure`` (ExposureAudit.to_dict()).
    """
    pts = []
    for g in as_dicts(get(exposure, "groups")):
        if is_suppressed(g):
            continue
        share, low, high = _e(g.get("exposure_share"))
        if share is None:
            continue
        pts.append((as_str(g.get("group")), share, low, high, _e(g.get("target_share"))[0]))
    if not pts:
        return None
    pts = pts[:MAX_BARS]
    column = as_str(get(exposure, "settings", "group_column")) or "group"

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ys = [p[1] for p in pts]
        pos = list(range(len(pts)))
        ax.barh(pos, ys, xerr=_yerr(ys, [p[2] for p in pts], [p[3] for p in pts]), color=_COLORS[0], alpha=0.8,
                capsize=2, label="exposure share")
        tp = [(i, p[4]) for i, p in enumerate(pts) if p[4] is not None]
        if tp:
            ax.scatter([t for _, t in tp], [i for i, _ in tp], marker="|", s=160, color="#d62728", linewidths=2,
                       zorder=3, label="target share")
        ax.set_yticks(pos, [_t(p[0], 28) for p in pts])
        ax.invert_yaxis()
        ax.set_xlabel("share of attention")
        ax.set_title(_t(f"Exposure share vs target by {column}", 60))
        ax.legend(fontsize=8, loc="lower right")

    return _render(draw, 5.8, 0.26 * len(pts) + 1.4, "exposure")


# --------------------------------------------------------------------------- off-policy estimates


def ope_svg(counterfactual: Any) -> str | None:
    """Off-policy estimates with intervals, and the importance-weight quantiles behind them.

    ``counterfactual``: ``results.counterfactual`` (``estimates``: OPEResult.to_dict() rows).
    """
    est = []
    for e in as_dicts(get(counterfactual, "estimates")):
        value = _n(e.get("value"))
        if value is not None:
            est.append((as_str(e.get("name")) or "?", value, _n(e.get("ci_low")), _n(e.get("ci_high")), as_dict(e.get("diagnostics"))))
    if not est:
        return None
    quant_keys = (("weight_q50", "q50"), ("weight_q90", "q90"), ("weight_q99", "q99"), ("max_weight", "max"))
    weights = [(e[0], [_n(e[4].get(k)) for k, _ in quant_keys]) for e in est]
    weights = [(n, q) for n, q in weights if any(v is not None and v > 0 for v in q)]

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 2 if weights else 1, squeeze=False)[0]
        ax = axes[0]
        pos = list(range(len(est)))
        ys = [e[1] for e in est]
        ax.errorbar(ys, pos, xerr=_yerr(ys, [e[2] for e in est], [e[3] for e in est]), fmt="o", capsize=3,
                    color=_COLORS[0])
        ax.set_yticks(pos, [_t(e[0], 28) for e in est])
        ax.invert_yaxis()
        ax.set_xlabel("estimated policy value")
        ax.set_title("Off-policy estimates")
        if weights:
            ax2 = axes[1]
            for j, (_, label) in enumerate(quant_keys):
                xs = [q[j] for _, q in weights]
                keep = [(i, x) for i, x in enumerate(xs) if x is not None and x > 0]
                if keep:
                    ax2.scatter([x for _, x in keep], [i for i, _ in keep], label=label, color=_COLORS[j], s=18)
            ax2.set_xscale("log")
            ax2.set_yticks(list(range(len(weights))), [_t(n, 28) for n, _ in weights])
            ax2.invert_yaxis()
            ax2.axvline(1.0, color="#57606a", lw=1, ls="--")
            ax2.set_xlabel("importance weight (log scale)")
            ax2.set_title("Weight quantiles")
            ax2.legend(fontsize=8)

    return _render(draw, 9.0 if weights else 5.0, 0.35 * len(est) + 1.6, "ope")


# --------------------------------------------------------------------------- all of a report


def report_figures(report: Any) -> dict[str, tuple[str, str]]:
    """Every figure a report supports: name -> (svg, caption), in card order. Absent data: no entry."""
    results = as_dict(get(report, "results"))
    evaluation = as_dict(results.get("evaluation"))
    settings = as_dict(get(report, "settings"))
    level = _n(settings.get("level"))
    band = f"{level * 100:.0f}% intervals" if level is not None else "intervals"
    out: dict[str, tuple[str, str]] = {}

    def add(name: str, svg: str | None, caption: str) -> None:
        if svg is not None:
            out[name] = (svg, caption)

    add("metric-curves", metric_curves_svg(evaluation), f"Metric@k curves per run; bands are {band}.")
    add("reliability", reliability_svg(evaluation),
        "Reliability diagram: observed rate against mean predicted probability per bin (Wilson intervals).")
    for i, (run, body) in enumerate(sorted(evaluation.items())):
        name = slice_figure_name(i, run)
        add(name, slice_bars_svg(body, min_group_size=settings.get("min_group_size"), name=name),
            f"Run {as_str(run)}: metric by group with {band}; suppressed groups are not drawn.")
    disparity = get(results, "audits", "disparity")
    rows = disparity_rows(disparity)
    if rows:
        add("disparity", group_bars_svg(rows[1], title=f"Disparity: {rows[0]}", value_label=rows[0], name="disparity"),
            "Per-group values from the disparity audit; suppressed groups are not drawn.")
    add("exposure", exposure_svg(get(results, "audits", "exposure")),
        "Exposure share per item group (bars, with intervals) against its target share (red ticks).")
    add("ope", ope_svg(results.get("counterfactual")),
        "Off-policy estimates with intervals (left) and the importance-weight quantiles behind them (right).")
    return out


def slice_figure_name(index: int, run: Any) -> str:
    """Unique per run even when two run names slug alike (index in sorted run order)."""
    return f"slices-{index + 1}-{slug(run)}"


def png_figures(report: Any) -> dict[str, tuple[str, str]]:
    """:func:`report_figures` as base64-encoded PNG (for the Model Card Toolkit export)."""
    token = _OUTPUT.set("png")
    try:
        return report_figures(report)
    finally:
        _OUTPUT.reset(token)


def disparity_rows(disparity: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """(quantity, rows) for a per-group bar chart of a disparity-like audit, or None.

    The disparity audit's layout is not fixed by the report schema yet, so this
    reads the first per-group estimate it finds: rows of ``groups`` with a
    ``group`` name and either ``mean``/``ci_low``/``ci_high`` or an estimate
    field ``{"value", "low", "high"}``.
    """
    groups = as_dicts(get(disparity, "groups"))
    if not groups:
        return None
    for quantity in _estimate_fields(groups):
        rows = []
        for g in groups:
            v, lo, hi = _e(g if quantity == "mean" else g.get(quantity))
            rows.append({"group": g.get("group", g.get("name")), "value": v, "low": lo, "high": hi,
                         "suppressed": is_suppressed(g)})
        if any(r["value"] is not None for r in rows):
            metric = as_str(get(disparity, "settings", "metric")) or as_str(groups[0].get("metric"))
            label = (metric or "mean") if quantity == "mean" else quantity
            return label or quantity, rows
    return None


def _estimate_fields(rows: list[dict[str, Any]]) -> list[str]:
    fields: list[str] = []
    for r in rows:
        if "mean" in r and "mean" not in fields:
            fields.append("mean")
        for k, v in r.items():
            if is_estimate(v) and k not in fields:
                fields.append(k)
    return fields

