"""Blocks shared by the governance report and the model card: verdict, gates,
errors, provenance, and a generic table writer for result dicts whose layout
the renderers do not know in detail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receval.reporting._doc import Banner, Bullets, Cell, Fields, Section, Table, Text, table
from receval.reporting._util import (
    NA,
    as_dict,
    as_dicts,
    as_int,
    as_list,
    as_str,
    fmt,
    fmt_estimate,
    fmt_interval,
    fmt_level,
    fmt_threshold,
    get,
    is_estimate,
    is_suppressed,
    num,
    status,
    suppressed_text,
    verdict,
)

NOT_EVALUATED = "Not evaluated: the report holds no data for this section."


def not_evaluated(what: str = "") -> Text:
    return Text(f"Not evaluated: the report holds no {what} results." if what else NOT_EVALUATED, "muted")


def summary_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """The report's own summary; gates are counted only when it is missing."""
    s = as_dict(report.get("summary"))
    gates = as_dicts(report.get("gates"))
    out = {k: as_int(s.get(k)) for k in ("gates", "passed", "failed", "errors")}
    counted = {
        "gates": len(gates),
        "passed": sum(status(g) == "pass" for g in gates),
        "failed": sum(status(g) == "fail" for g in gates),
        "errors": sum(status(g) == "error" for g in gates),
    }
    return {k: (v if v is not None else counted[k]) for k, v in out.items()}


def banner(report: Mapping[str, Any]) -> Banner:
    v = verdict(report)
    c = summary_counts(report)
    n_err = len(as_dicts(report.get("errors")))
    if v == "pass":
        detail = f"All {c['gates']} gate(s) passed." if c["gates"] else "No gate was declared."
    elif v == "fail":
        detail = f"{c['failed']} of {c['gates']} gate(s) failed; {c['passed']} passed, {c['errors']} errored."
    else:
        detail = (f"The gate run could not be completed: {c['errors']} gate error(s), {n_err} run error(s). "
                  "An error is never a pass: fix the input or configuration and re-run.")
    return Banner(v, f"Verdict: {v.upper()}", detail)


def _p(g: Mapping[str, Any]) -> str:
    p, pa = num(g.get("p_value")), num(g.get("p_adjusted"))
    if p is None and pa is None:
        return NA
    return f"{fmt(p)} / {fmt(pa)}"


def _interval(g: Mapping[str, Any]) -> str:
    iv = fmt_interval(g.get("ci_low"), g.get("ci_high"))
    lvl = fmt_level(g.get("level"))
    return f"{iv} ({lvl})" if iv != NA and lvl else iv


GATE_HEADERS = ["id", "type", "subject", "status", "value", "bound", "op", "threshold", "interval", "n", "p / p_adj",
                "message"]


def gate_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for g in as_dicts(report.get("gates")):
        s = status(g)
        n = as_int(g.get("n"))
        rows.append([
            as_str(g.get("id")) or "(no id)", as_str(g.get("type")), as_str(g.get("subject")), Cell(s.upper(), s),
            fmt(g.get("value")), fmt(g.get("bound")), as_str(g.get("op")) or NA, fmt_threshold(g.get("threshold")),
            _interval(g), str(n) if n is not None else NA, _p(g), as_str(g.get("message")),
        ])
    return rows


def gates_blocks(report: Mapping[str, Any], *, details: bool = True) -> list[Any]:
    rows = gate_rows(report)
    if not rows:
        return [Text("No gates were evaluated.", "muted")]
    numeric = [False, False, False, False, True, True, False, True, True, True, True, False]
    blocks: list[Any] = [table(GATE_HEADERS, rows, numeric=numeric, wrap_last=True)]
    described = [(as_str(g.get("id")), as_str(g.get("description"))) for g in as_dicts(report.get("gates"))]
    if any(d for _, d in described):
        blocks.append(Fields(tuple((i or "(no id)", d) for i, d in described if d)))
    if details:
        for g in as_dicts(report.get("gates")):
            rows_d = as_dicts(g.get("details"))
            if rows_d:
                # the threshold that suppressed a detail row is the audit's, not known here
                blocks.append(Section(f"Gate {as_str(g.get('id')) or '(no id)'}: details",
                                      [generic_rows_table(rows_d)]))
    return blocks


def run_warnings(report: Mapping[str, Any]) -> list[str]:
    """Warnings the evaluation recorded per run (e.g. most judged requests missing from the run), as
    sentences naming the run."""
    out = []
    evaluation = as_dict(get(report, "results", "evaluation"))
    for name in sorted(evaluation, key=str):
        for w in as_list(as_dict(evaluation[name]).get("warnings")):
            if as_str(w):
                out.append(f"Evaluation of {as_str(name)}: {as_str(w)}")
    return out


def warnings_blocks(report: Mapping[str, Any]) -> list[Any]:
    found = run_warnings(report)
    return [Bullets(tuple(found))] if found else [Text("No warnings.", "muted")]


def errors_blocks(report: Mapping[str, Any]) -> list[Any]:
    errs = as_dicts(report.get("errors"))
    bad = [x for x in as_list(report.get("errors")) if not isinstance(x, Mapping)]
    rows = [[as_str(e.get("where")) or NA, as_str(e.get("message"))] for e in errs]
    rows += [[NA, as_str(x)] for x in bad]
    if not rows:
        return [Text("No errors.", "muted")]
    return [table(["where", "message"], rows, wrap_last=True)]


def provenance_blocks(report: Mapping[str, Any]) -> list[Any]:
    prov = as_dict(report.get("provenance"))
    if not prov:
        return [Text("Not recorded: the report holds no provenance.", "warn")]
    cfg = as_dict(prov.get("config"))
    pairs = [
        ("config", as_str(cfg.get("path")) or NA),
        ("config sha256", as_str(cfg.get("sha256")) or NA),
        ("git commit", as_str(prov.get("git_commit")) or "not recorded"),
        ("report schema", f"{as_str(report.get('schema')) or NA} v{as_str(report.get('schema_version')) or '?'}"),
    ]
    blocks: list[Any] = [Fields(tuple(pairs))]
    inputs = sorted(as_dicts(prov.get("inputs")), key=lambda d: (as_str(d.get("name")), as_str(d.get("path"))))
    if inputs:
        blocks.append(table(
            ["input", "path", "sha256", "bytes"],
            [[as_str(i.get("name")), as_str(i.get("path")), as_str(i.get("sha256")) or NA, fmt(as_int(i.get("bytes")))]
             for i in inputs],
            numeric=[False, False, False, True], caption="Inputs and their SHA-256 fingerprints",
        ))
    else:
        blocks.append(Text("No input fingerprints recorded.", "muted"))
    versions = as_dict(prov.get("versions"))
    if versions:
        blocks.append(table(["package", "version"], [[k, as_str(versions[k])] for k in sorted(versions)],
                            caption="Versions"))
    return blocks


def settings_blocks(report: Mapping[str, Any]) -> list[Any]:
    s = as_dict(report.get("settings"))
    if not s:
        return [Text("No settings recorded.", "muted")]
    return [Fields(tuple((k, fmt_any(s[k])) for k in sorted(s)))]


# --------------------------------------------------------------------------- generic values and rows


def fmt_any(v: Any, depth: int = 0) -> str:
    """Any JSON value as short text (estimates as 'value [low, high]')."""
    if v is None:
        return NA
    if isinstance(v, bool | int | float):
        return fmt(v)
    if isinstance(v, str):
        return v
    if is_estimate(v):
        return fmt_estimate(v)
    if isinstance(v, Mapping):
        if depth >= 2:
            return "{…}"
        return ", ".join(f"{k}={fmt_any(v[k], depth + 1)}" for k in sorted(v, key=str))
    if isinstance(v, list | tuple):
        if depth >= 2:
            return "[…]"
        items = [fmt_any(x, depth + 1) for x in v[:12]]
        return "[" + ", ".join(items) + (", …" if len(v) > 12 else "") + "]"
    return as_str(v)


def _is_value(v: Any) -> bool:
    """A statistic (to hide in a suppressed row), as opposed to a name or a count."""
    return (isinstance(v, float) and not isinstance(v, bool)) or is_estimate(v)


def generic_rows_table(rows: list[dict[str, Any]], *, min_group_size: Any = None, caption: str = "") -> Table:
    """A table of arbitrary row dicts: columns in first-seen order; in suppressed rows every
    statistic is replaced by the suppression note (counts and names stay)."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k != "suppressed":
                cols.append(k)
    any_suppressed = any(is_suppressed(r) for r in rows)
    headers = cols + (["suppressed"] if any_suppressed else [])
    out = []
    note = suppressed_text(min_group_size)
    for r in rows:
        sup = is_suppressed(r)
        line: list[Any] = []
        for c in cols:
            v = r.get(c)
            if sup and (_is_value(v) or (v is None and c not in ("group", "name"))):
                line.append(Cell(note, "suppressed"))
            else:
                line.append(Cell(fmt_any(v), "na") if v is None else fmt_any(v))
        if any_suppressed:
            line.append(Cell("yes", "suppressed") if sup else "no")
        out.append(line)
    numeric = [all(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in cols] + ([False] if any_suppressed else [])
    return table(headers, out, numeric=numeric, caption=caption)


def generic_blocks(obj: Any, *, min_group_size: Any = None) -> list[Any]:
    """Tables for a result dict of unknown layout: scalars as fields, lists of rows as tables,
    nested dicts as sub-tables (two levels). Never raises on odd input."""
    if isinstance(obj, list):
        rows = as_dicts(obj)
        return [generic_rows_table(rows, min_group_size=min_group_size)] if rows else [Text(fmt_any(obj))]
    d = as_dict(obj)
    if not d:
        return [Text(fmt_any(obj))] if obj not in (None, {}, []) else []
    mgs = get(d, "settings", "min_group_size") if get(d, "settings", "min_group_size") is not None else min_group_size
    blocks: list[Any] = []
    scalars = [(k, fmt_any(v)) for k, v in d.items() if not isinstance(v, Mapping | list) or is_estimate(v)]
    if scalars:
        blocks.append(Fields(tuple(scalars)))
    for k, v in d.items():
        if k in ("settings", "counts") or is_estimate(v):
            continue
        if isinstance(v, list):
            rows = as_dicts(v)
            if rows:
                blocks.append(generic_rows_table(rows, min_group_size=mgs, caption=k))
            elif v:
                blocks.append(Fields(((k, fmt_any(v)),)))
        elif isinstance(v, Mapping) and v:
            if all(isinstance(x, Mapping) for x in v.values()):
                rows = [{"name": name, **as_dict(x)} for name, x in v.items()]
                blocks.append(generic_rows_table(rows, min_group_size=mgs, caption=k))
            else:
                blocks.append(table(["field", "value"], [[kk, fmt_any(vv)] for kk, vv in v.items()], caption=k))
    for k in ("counts", "settings"):
        v = as_dict(d.get(k))
        if v:
            blocks.append(table(["field", "value"], [[kk, fmt_any(v[kk])] for kk in sorted(v)], caption=k))
    return blocks
