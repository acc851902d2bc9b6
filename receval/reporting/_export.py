"""Exports of the model card to other ecosystems' formats.

* Model Card Toolkit (MCT) JSON, schema v0.0.2 (tensorflow/model-card-toolkit,
  ``model_card_toolkit/schema/v0.0.2/model_card.schema.json``). MCT 1.x/2.x
  write ``performance_metrics[].value`` and ``confidence_interval`` bounds as
  strings (``ConfidenceInterval(lower_bound: str, upper_bound: str)``), and so
  does this export; graphics are base64 PNG as the schema asks.
* Hugging Face ``model-index`` metadata (the YAML front matter of a model
  card's README.md: hub-docs ``modelcard.md``), as a dict and as YAML text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from receval._text import escape_invisible
from receval.reporting._card import (
    comparison_rows,
    factors,
    findings,
    ope_rows,
    overall_rows,
    slice_rows,
)
from receval.reporting._util import (
    as_dict,
    as_dicts,
    as_list,
    as_str,
    estimate,
    fmt_level,
    get,
    is_estimate,
    is_suppressed,
    model_name,
    num,
)

MCT_SCHEMA_VERSION = "0.0.2"
_SPDX = re.compile(r"^[A-Za-z0-9.+-]+( (WITH|AND|OR) [A-Za-z0-9.+-]+)*$")


def _num_str(x: float) -> str:
    return repr(float(x))


def _metric(type_: str, value: Any, slice_: str, low: Any = None, high: Any = None) -> dict[str, Any] | None:
    v = num(value)
    if v is None:
        return None
    out: dict[str, Any] = {"type": type_, "value": _num_str(v), "slice": slice_}
    lo, hi = num(low), num(high)
    if lo is not None and hi is not None:
        out["confidence_interval"] = {"lower_bound": _num_str(lo), "upper_bound": _num_str(hi)}
    return out


def _performance_metrics(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = []
    for r in overall_rows(report):
        out.append(_metric(r["metric"], r["mean"], f"run={r['run']}", r["ci_low"], r["ci_high"]))
    for r in slice_rows(report):
        if not r["suppressed"]:  # suppressed groups publish no value
            out.append(_metric(r["metric"], r["mean"], f"run={r['run']}, {r['group']}", r["ci_low"], r["ci_high"]))
    for r in comparison_rows(report):
        out.append(_metric(f"{as_str(r.get('metric'))} difference", r.get("diff"),
                           f"{as_str(r.get('candidate'))} vs {as_str(r.get('baseline'))}", r.get("ci_low"), r.get("ci_high")))
    for r in ope_rows(report):
        out.append(_metric(f"off-policy value ({r['estimator']})", r["value"], "logged feedback", r["ci_low"], r["ci_high"]))
    audits = as_dict(get(report, "results", "audits"))
    for name in sorted(audits):
        audit = as_dict(audits[name])
        rows = ([as_dict(audit["overall"])] if isinstance(audit.get("overall"), Mapping) else []) + as_dicts(audit.get("groups"))
        column = as_str(get(audit, "settings", "group_column")) or "group"
        for row in rows:
            if is_suppressed(row):
                continue
            group = as_str(row.get("group"))
            slice_ = "overall" if group in ("(all)", "") else f"{column}={group}"
            for q, v in row.items():
                if is_estimate(v):
                    value, low, high = estimate(v)
                    out.append(_metric(f"{name}.{q}", value, slice_, low, high))
        for q, v in audit.items():
            if is_estimate(v):
                value, low, high = estimate(v)
                out.append(_metric(f"{name}.{q}", value, "overall", low, high))
    return [m for m in out if m is not None]


def to_model_card_toolkit(report: Mapping[str, Any], *, graphics: bool = True) -> dict[str, Any]:
    """The card as Model Card Toolkit JSON (schema v0.0.2).

    Maps ``model`` to ``model_details`` (license: SPDX ``identifier`` when it
    looks like one, else ``custom_text``), inputs to ``model_parameters.data``,
    metrics (overall, unsuppressed groups, comparisons, off-policy estimates,
    audit estimates) to ``quantitative_analysis.performance_metrics`` with
    string values and ``confidence_interval``, the card text to
    ``considerations``; with ``graphics`` the figures as base64 PNG.
    """
    report = as_dict(report)
    m = as_dict(report.get("model"))
    card = as_dict(report.get("card"))
    details: dict[str, Any] = {"name": model_name(report)}
    if as_str(m.get("description")):
        details["overview"] = as_str(m.get("description"))
    details["owners"] = [{"name": as_str(o.get("name")), "contact": as_str(o.get("contact"))} for o in as_dicts(m.get("owners"))]
    if as_str(m.get("version")):
        details["version"] = {"name": as_str(m.get("version"))}
    lic = as_str(m.get("license")).strip()
    details["licenses"] = [{"identifier": lic} if _SPDX.match(lic) else {"custom_text": lic}] if lic else []
    details["references"] = [{"reference": as_str(r)} for r in as_list(m.get("references")) if as_str(r)]
    details["citations"] = [{"citation": as_str(m.get("citation"))}] if as_str(m.get("citation")) else []

    # MCT has no "factors" field: the audited attributes go into the documentation text
    fs = factors(report)
    doc = [as_str(card.get("factors"))] if as_str(card.get("factors")) else []
    if fs:
        doc.append("Results are broken down by: " + "; ".join(f"{f['attribute']} ({f['where']})" for f in fs) + ".")
    if doc:
        details["documentation"] = "\n\n".join(doc)
    data = []
    for i in sorted(as_dicts(get(report, "provenance", "inputs")), key=lambda d: as_str(d.get("name"))):
        ds: dict[str, Any] = {"name": as_str(i.get("name")) or as_str(i.get("path"))}
        ds["description"] = f"{as_str(i.get('path'))} (sha256 {as_str(i.get('sha256')) or 'n/a'}, {as_str(i.get('bytes')) or '?'} bytes)"
        data.append(ds)
    params: dict[str, Any] = {"data": data}
    if as_str(m.get("type")):
        params["model_architecture"] = as_str(m.get("type"))

    qa: dict[str, Any] = {"performance_metrics": _performance_metrics(report)}
    lvl = fmt_level(get(report, "settings", "level"))
    collection = []
    if graphics:
        from receval.reporting.figures import png_figures

        collection = [{"name": caption, "image": png} for png, caption in png_figures(report).values()]
    qa["graphics"] = {"description": f"receval figures; intervals are {lvl or 'stated per figure'}.",
                      "collection": collection}

    def descs(*texts: str) -> list[dict[str, str]]:
        return [{"description": t} for t in texts if t]

    risks = []
    if as_str(card.get("ethical_considerations")):
        risks.append({"name": as_str(card.get("ethical_considerations")),
                      "mitigation_strategy": as_str(card.get("caveats_and_recommendations")) or "not provided"})
    considerations = {
        "users": [],  # the report schema has no intended-users field yet
        "use_cases": descs(as_str(card.get("intended_use")), *(
            [f"Out of scope: {as_str(card.get('out_of_scope_use'))}"] if as_str(card.get("out_of_scope_use")) else [])),
        # the automatic findings (failed gates, estimator warnings, suppressed groups) are limitations of this release
        "limitations": descs(as_str(card.get("limitations")), as_str(card.get("caveats_and_recommendations")),
                             *findings(report)),
        "tradeoffs": descs(*[
            f"{as_str(r.get('candidate'))} vs {as_str(r.get('baseline'))} on {as_str(r.get('metric'))}: difference "
            f"{_num_str(num(r.get('diff')))}" for r in comparison_rows(report) if num(r.get("diff")) is not None
        ]),
        "ethical_considerations": risks,
    }
    return {
        "schema_version": MCT_SCHEMA_VERSION,
        "model_details": details,
        "model_parameters": params,
        "quantitative_analysis": qa,
        "considerations": considerations,
    }


# =========================================================================== Hugging Face model-index

_HF_ID = re.compile(r"[^\w.-]+")


def _hf_id(text: str, default: str) -> str:
    # the Hub rejects dataset types outside /^(?:[\w-]+\/)?[\w-.]+$/; metric types follow the same shape
    s = _HF_ID.sub("_", text).strip("_.")
    return s or default


def to_hf_model_index(
    report: Mapping[str, Any],
    *,
    task_type: str = "recommendation",
    task_name: str = "Recommendation",
    dataset_type: str | None = None,
    dataset_name: str | None = None,
) -> dict[str, Any]:
    """Hugging Face ``model-index`` metadata: ``{"model-index": [{"name", "results": [...]}]}``.

    One result per evaluation run (overall metrics) and one for the
    off-policy estimates. Metric ``type`` is the metric name made Hub-safe
    (``ndcg@10`` -> ``ndcg_10``), ``name`` the canonical receval name with the
    interval. ``dataset_type`` / ``dataset_name`` default to the run name.
    """
    report = as_dict(report)
    results = []
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in overall_rows(report):
        by_run.setdefault(r["run"], []).append(r)
    lvl = fmt_level(get(report, "settings", "level"))
    for run, rows in by_run.items():
        metrics = []
        for r in rows:
            if r["mean"] is None:
                continue
            name = r["metric"]
            if r["ci_low"] is not None and r["ci_high"] is not None:
                name += f" ({lvl or 'interval'} [{r['ci_low']:.4g}, {r['ci_high']:.4g}], n={r['n']})"
            metrics.append({"type": _hf_id(r["metric"], "metric"), "value": r["mean"], "name": name})
        if metrics:
            results.append({
                "task": {"type": task_type, "name": task_name},
                "dataset": {"type": _hf_id(dataset_type or run, "evaluation"),
                            "name": dataset_name or f"offline evaluation ({run})"},
                "metrics": metrics,
            })
    ope = [r for r in ope_rows(report) if r["value"] is not None]
    if ope:
        results.append({
            "task": {"type": task_type, "name": task_name},
            "dataset": {"type": "logged_feedback", "name": "logged feedback (off-policy evaluation)"},
            "metrics": [{"type": _hf_id(f"ope_{r['estimator']}", "ope"), "value": r["value"],
                         "name": f"off-policy value, {r['estimator']}"} for r in ope],
        })
    return {"model-index": [{"name": model_name(report), "results": results}]}


_YAML_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _yaml_str(s: str) -> str:
    # JSON strings are YAML double-quoted scalars, except that YAML also breaks
    # lines at NEL / LS / PS and refuses some code points raw: escape those.
    out = escape_invisible(json.dumps(s, ensure_ascii=False))  # also bidirectional controls (receval/_text.py)
    return re.sub("[\x85\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", out)


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "null"
        r = repr(v)
        # YAML 1.1 readers (PyYAML) need a dot in floats: 1e-05 -> 1.0e-05
        return r.replace("e", ".0e", 1) if "e" in r and "." not in r else r
    return _yaml_str(as_str(v) if not isinstance(v, str) else v)


def _yaml_key(k: Any) -> str:
    k = str(k)
    return k if _YAML_PLAIN_KEY.match(k) and k not in ("true", "false", "null", "yes", "no", "on", "off") else _yaml_str(k)


def _yaml(v: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(v, Mapping):
        for k, x in v.items():
            if isinstance(x, Mapping | list) and x:
                lines.append(f"{pad}{_yaml_key(k)}:")
                lines += _yaml(x, indent + 1)
            else:
                lines.append(f"{pad}{_yaml_key(k)}: {_yaml_scalar(x) if not isinstance(x, Mapping | list) else ('{}' if isinstance(x, Mapping) else '[]')}")
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, Mapping | list) and x:
                sub = _yaml(x, indent + 1)
                # "- " then the first line of the item, the rest aligned under it
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_yaml_scalar(x) if not isinstance(x, Mapping | list) else '[]'}")
    else:
        lines.append(pad + _yaml_scalar(v))
    return lines


def render_hf_model_index(report: Mapping[str, Any], **kwargs: Any) -> str:
    """:func:`to_hf_model_index` as YAML text (block style, strings double-quoted), ready to paste
    between the ``---`` lines of a Hugging Face README.md."""
    return "\n".join(_yaml(to_hf_model_index(report, **kwargs), 0)) + "\n"
