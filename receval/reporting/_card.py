"""The model card (Mitchell et al., 2019): content extraction, Markdown, HTML and JSON.

Every section reads its part of the report defensively and says "Not
evaluated" (data sections) or "Not provided" (human-written sections) when the
part is absent, so a partial report still gives a complete card.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from receval._version import __version__
from receval.reporting import figures as F
from receval.reporting._doc import (
    Banner,
    Bullets,
    Cell,
    Fields,
    Figure,
    Section,
    Text,
    table,
    to_html,
    to_markdown,
)
from receval.reporting._sections import (
    banner,
    errors_blocks,
    fmt_any,
    gates_blocks,
    generic_blocks,
    not_evaluated,
    provenance_blocks,
    run_warnings,
    settings_blocks,
    summary_counts,
)
from receval.reporting._util import (
    NA,
    as_dict,
    as_dicts,
    as_int,
    as_list,
    as_str,
    estimate,
    fmt,
    fmt_estimate,
    fmt_interval,
    fmt_level,
    fmt_share,
    get,
    is_estimate,
    is_suppressed,
    json_safe,
    model_name,
    num,
    status,
    suppressed_text,
    verdict,
)

CARD_TEXT_FIELDS = (
    "intended_use", "out_of_scope_use", "factors", "training_data", "evaluation_data", "limitations",
    "ethical_considerations", "caveats_and_recommendations",
)
KNOWN_AUDITS = ("disparity", "calibration_by_group", "exposure", "popularity", "safety", "drift", "miscalibration",
                "data_quality")
AUDIT_TITLES = {
    "disparity": "Performance disparity between groups",
    "calibration_by_group": "Calibration by group",
    "exposure": "Exposure fairness (item groups)",
    "popularity": "Popularity bias",
    "safety": "Safety: exposure of flagged items",
    "drift": "Data drift",
    "miscalibration": "Miscalibration",
    "data_quality": "Data quality",
}


# =========================================================================== extraction (shared by all formats)


def _results(report: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(report.get("results"))


def _evaluation(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(k): as_dict(v) for k, v in sorted(as_dict(_results(report).get("evaluation")).items())}


def _audits(report: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(_results(report).get("audits"))


def _level(report: Mapping[str, Any]) -> float | None:
    lvl = num(get(report, "settings", "level"))
    if lvl is None:
        for run in _evaluation(report).values():
            lvl = num(get(run, "settings", "level"))
            if lvl is not None:
                break
    return lvl


def _min_group_size(report: Mapping[str, Any]) -> Any:
    return get(report, "settings", "min_group_size")


def overall_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run, body in _evaluation(report).items():
        for metric, s in as_dict(body.get("metrics")).items():
            s = as_dict(s)
            rows.append({
                "run": run, "metric": str(metric), "mean": num(s.get("mean")), "ci_low": num(s.get("ci_low")),
                "ci_high": num(s.get("ci_high")), "n": as_int(s.get("n")),
                "greater_is_better": s.get("greater_is_better") if isinstance(s.get("greater_is_better"), bool) else None,
            })
    return rows


def slice_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-group metric rows; groups that are suppressed or smaller than min_group_size carry no value."""
    mgs = _min_group_size(report)
    out = []
    for run, body in _evaluation(report).items():
        rows = as_dicts(body.get("slices"))
        keys = F.slice_keys(rows)
        for r in rows:
            hidden = F.slice_hidden(r, mgs)
            attrs = {k: r.get(k) if isinstance(r.get(k), str | int | bool) else as_str(r.get(k)) or None for k in keys}
            out.append({
                "run": run, "group": F.slice_label(r, keys), "attributes": attrs, "metric": as_str(r.get("metric")),
                "mean": None if hidden else num(r.get("mean")),
                "ci_low": None if hidden else num(r.get("ci_low")),
                "ci_high": None if hidden else num(r.get("ci_high")),
                "n": as_int(r.get("n")), "suppressed": hidden,
            })
    return out


COMPARISON_FIELDS = ("candidate", "baseline", "metric", "n", "baseline_mean", "candidate_mean", "diff", "ci_low", "ci_high",
                     "rel_diff", "test", "p_value", "p_adjusted", "significant", "effect_size", "margin", "margin_type",
                     "non_inferior", "note")


def comparison_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = as_dicts(get(_results(report), "comparison", "comparisons"))
    return [{k: r.get(k) for k in COMPARISON_FIELDS if k in r} for r in rows]


DIAGNOSTIC_FIELDS = ("ess", "ess_share", "max_weight", "weight_q50", "weight_q90", "weight_q99", "mean_weight",
                     "unsupported_pairs", "unsupported_target_mass", "share_clipped", "weights", "n_weights")


def ope_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in as_dicts(get(_results(report), "counterfactual", "estimates")):
        d = as_dict(e.get("diagnostics"))
        out.append({
            "estimator": as_str(e.get("name")) or "?", "value": num(e.get("value")), "ci_low": num(e.get("ci_low")),
            "ci_high": num(e.get("ci_high")), "level": num(e.get("level")), "n": as_int(e.get("n")),
            "interval": as_str(e.get("interval")),
            "diagnostics": {k: d[k] for k in DIAGNOSTIC_FIELDS if k in d},
            "warnings": [as_str(w) for w in as_list(e.get("warnings")) if as_str(w)],
        })
    return out


def factors(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """Attributes the report breaks results down by: (attribute, where)."""
    out: list[dict[str, str]] = []

    def add(attr: Any, where: str) -> None:
        a = as_str(attr)
        if a and {"attribute": a, "where": where} not in out:
            out.append({"attribute": a, "where": where})

    for run, body in _evaluation(report).items():
        for k in F.slice_keys(as_dicts(body.get("slices"))):
            add(k, f"evaluation slices (run {run})")
    for name, audit in sorted(_audits(report).items()):
        s = as_dict(get(audit, "settings"))
        for key in ("group_column", "by", "attribute", "sensitive_attribute"):
            if isinstance(s.get(key), list):
                for a in s[key]:
                    add(a, f"{name} audit")
            else:
                add(s.get(key), f"{name} audit")
    return out


def metric_rationale(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each metric the report uses, where, and which gates judge it."""
    seen: dict[str, dict[str, Any]] = {}

    def add(metric: str, where: str) -> None:
        if not metric:
            return
        entry = seen.setdefault(metric, {"metric": metric, "where": [], "gates": []})
        if where and where not in entry["where"]:
            entry["where"].append(where)

    for r in overall_rows(report):
        add(r["metric"], f"evaluation ({r['run']})")
    for r in comparison_rows(report):
        add(as_str(r.get("metric")), "comparison")
    for r in ope_rows(report):
        add(r["estimator"], "counterfactual estimate")
    for g in as_dicts(report.get("gates")):
        m = as_str(g.get("metric"))
        add(m, "")
        if m:
            gid = as_str(g.get("id")) or "(no id)"
            desc = as_str(g.get("description"))
            seen[m]["gates"].append(f"{gid}: {desc}" if desc else gid)
    return list(seen.values())


def findings(report: Mapping[str, Any]) -> list[str]:
    """Automatic caveats read off the report (never recomputed): failed gates, estimator
    warnings, suppressed groups, drift flags, non-inferiority failures, missing provenance."""
    out: list[str] = []
    v = verdict(report)
    if v != "pass":
        out.append(f"The governance verdict is {v.upper()}: this model did not clear its launch gates.")
    for g in as_dicts(report.get("gates")):
        s = status(g)
        if s != "pass":
            out.append(f"Gate {as_str(g.get('id')) or '(no id)'} {'failed' if s == 'fail' else 'errored'}: "
                       f"{as_str(g.get('message')) or as_str(g.get('description'))}")
    out.extend(run_warnings(report))
    for e in ope_rows(report):
        for w in e["warnings"]:
            out.append(f"Off-policy estimator {e['estimator']}: {w}")
    for r in comparison_rows(report):
        if r.get("non_inferior") is False:
            out.append(f"{as_str(r.get('candidate'))} is not shown non-inferior to {as_str(r.get('baseline'))} on "
                       f"{as_str(r.get('metric'))} (margin {fmt(r.get('margin'))}).")
    for name, audit in sorted(_audits(report).items()):
        c = as_dict(get(audit, "counts"))
        ns, ng = as_int(c.get("n_groups_suppressed")), as_int(c.get("n_groups"))
        if ns:
            mgs = get(audit, "settings", "min_group_size")
            out.append(f"{name} audit: {ns} of {ng if ng is not None else '?'} groups "
                       f"{suppressed_text(mgs if mgs is not None else _min_group_size(report))}; "
                       "their values are not published, so no gate can judge them.")
    hidden = sum(1 for r in slice_rows(report) if r["suppressed"])
    if hidden:
        out.append(f"{hidden} per-group metric value(s) {suppressed_text(_min_group_size(report))}.")
    for col in as_dicts(get(_audits(report), "drift", "columns")):
        flag = as_str(col.get("flag"))
        if flag and flag != "stable":
            out.append(f"Drift in {as_str(col.get('column'))}: PSI {fmt(col.get('psi'))} ({flag} shift).")
    if not as_dicts(get(report, "provenance", "inputs")):
        out.append("No input fingerprints are recorded: the numbers cannot be traced to their data.")
    return out


SECTION_KEYS = ("evaluation", "by_group", "comparison", "counterfactual", "audits")


def missing_sections(report: Mapping[str, Any]) -> list[str]:
    """Data sections with nothing to show ("not evaluated")."""
    have = {
        "evaluation": bool(overall_rows(report)),
        "by_group": bool(slice_rows(report)) or bool(get(_audits(report), "disparity")),
        "comparison": bool(comparison_rows(report)),
        "counterfactual": bool(ope_rows(report)),
        "audits": any(bool(v) for v in _audits(report).values()),
    }
    missing = [k for k in SECTION_KEYS if not have[k]]
    missing += [f"audits.{a}" for a in KNOWN_AUDITS if not _audits(report).get(a)]
    return missing


# =========================================================================== document


def _text_or(report: Mapping[str, Any], key: str) -> Text:
    t = as_str(get(report, "card", key)).strip()
    if t:
        return Text(t)
    return Text(f"Not provided: add `{key}` to the [card] table of the gate configuration.", "muted")


def _model_details(report: Mapping[str, Any]) -> list[Any]:
    m = as_dict(report.get("model"))
    owners = []
    for o in as_list(m.get("owners")):
        if isinstance(o, Mapping):
            name, contact = as_str(o.get("name")), as_str(o.get("contact"))
            owners.append(f"{name} <{contact}>" if contact and name else name or contact)
        elif as_str(o):
            owners.append(as_str(o))
    refs = [as_str(r) for r in as_list(m.get("references")) if as_str(r)]
    pairs = [
        ("name", model_name(report)),
        ("version", as_str(m.get("version")) or NA),
        ("type", as_str(m.get("type")) or NA),
        ("owners", "; ".join(o for o in owners if o) or NA),
        ("license", as_str(m.get("license")) or NA),
        ("citation", as_str(m.get("citation")) or NA),
    ]
    blocks: list[Any] = []
    if as_str(m.get("description")):
        blocks.append(Text(as_str(m.get("description"))))
    blocks.append(Fields(tuple(pairs)))
    if refs:
        blocks.append(Section("References", [Bullets(tuple(refs))]))
    blocks.append(Text(f"Card generated by receval {__version__} from report.json "
                       f"(schema {as_str(report.get('schema')) or NA} v{as_str(report.get('schema_version')) or '?'}).",
                       "muted"))
    return blocks


def _factors_blocks(report: Mapping[str, Any]) -> list[Any]:
    blocks: list[Any] = [_text_or(report, "factors")]
    fs = factors(report)
    if fs:
        blocks.append(table(["attribute", "audited in"], [[f["attribute"], f["where"]] for f in fs],
                            caption="Attributes the results are broken down by"))
    else:
        blocks.append(Text("No group attribute was audited (not evaluated).", "muted"))
    return blocks


def _metrics_blocks(report: Mapping[str, Any]) -> list[Any]:
    rat = metric_rationale(report)
    if not rat:
        return [not_evaluated("metric")]
    rows = [[r["metric"], ", ".join(r["where"]) or "gate only", "; ".join(r["gates"]) or "none (reported only)"]
            for r in rat]
    blocks: list[Any] = [table(["metric", "reported in", "judged by gate"], rows)]
    notes = []
    lvl = fmt_level(_level(report))
    for run, body in _evaluation(report).items():
        s = as_dict(body.get("settings"))
        if as_str(s.get("interval")):
            notes.append(f"Evaluation ({run}): {lvl or 'level n/a'} {as_str(s.get('interval'))}, "
                         f"{fmt(s.get('n_boot'))} resamples, seed {fmt(s.get('seed'))}; ties: {as_str(s.get('ties')) or NA}.")
    cs = as_dict(get(_results(report), "comparison", "settings"))
    if cs:
        notes.append(f"Comparison: {as_str(cs.get('test')) or NA} test, {as_str(cs.get('correction')) or NA} correction "
                     f"for multiple comparisons, alpha {fmt(cs.get('alpha'))}; interval: {as_str(cs.get('interval')) or NA}.")
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _evaluation_data_blocks(report: Mapping[str, Any]) -> list[Any]:
    blocks: list[Any] = [_text_or(report, "evaluation_data")]
    rows = []
    for run, body in _evaluation(report).items():
        c = as_dict(body.get("counts"))
        rows.append([run, fmt(as_int(c.get("evaluated"))), fmt(as_int(c.get("run_rows"))), fmt(as_int(c.get("label_rows"))),
                     fmt(as_int(c.get("labels_only_scored_zero"))), fmt(as_int(c.get("run_only_ignored")))])
    if rows:
        blocks.append(table(["run", "requests evaluated", "run rows", "label rows", "requests missing from run (scored 0)",
                             "requests without labels (ignored)"], rows, numeric=[False] + [True] * 5))
    cf = as_dict(get(_results(report), "counterfactual", "data"))
    if cf:
        blocks.append(Fields((("logged feedback rows", fmt(as_int(cf.get("rows")))),
                              ("logged requests", fmt(as_int(cf.get("requests")))))))
    inputs = sorted(as_dicts(get(report, "provenance", "inputs")), key=lambda d: as_str(d.get("name")))
    if inputs:
        blocks.append(table(["input", "path", "sha256", "bytes"],
                            [[as_str(i.get("name")), as_str(i.get("path")), as_str(i.get("sha256")) or NA,
                              fmt(as_int(i.get("bytes")))] for i in inputs],
                            numeric=[False, False, False, True], caption="Input files (SHA-256)"))
    if not rows and not cf and not inputs:
        blocks.append(not_evaluated("evaluation data"))
    return blocks


Figs = dict[str, tuple[str, str]]  # name -> (svg, caption), from figures.report_figures


def _fig(figs: Figs, name: str) -> list[Any]:
    return [Figure(name, *figs[name])] if name in figs else []


def _overall_blocks(report: Mapping[str, Any], figs: Figs) -> list[Any]:
    rows = overall_rows(report)
    if not rows:
        return [not_evaluated("evaluation")]
    lvl = fmt_level(_level(report))
    blocks: list[Any] = [table(
        ["run", "metric", "mean", f"{lvl} interval".strip(), "n", "better"],
        [[r["run"], r["metric"], fmt(r["mean"]), fmt_interval(r["ci_low"], r["ci_high"]), fmt(r["n"]),
          {True: "higher", False: "lower", None: NA}[r["greater_is_better"]]] for r in rows],
        numeric=[False, False, True, True, True, False],
    )]
    return blocks + _fig(figs, "metric-curves") + _fig(figs, "reliability")


def _by_group_blocks(report: Mapping[str, Any], figs: Figs) -> list[Any]:
    rows = slice_rows(report)
    mgs = _min_group_size(report)
    blocks: list[Any] = []
    lvl = fmt_level(_level(report))
    runs = list(_evaluation(report))
    for run in sorted({r["run"] for r in rows}):
        rr = [r for r in rows if r["run"] == run]
        metrics = list(dict.fromkeys(r["metric"] for r in rr))
        groups = list(dict.fromkeys(r["group"] for r in rr))
        cells: dict[tuple[str, str], dict[str, Any]] = {(r["group"], r["metric"]): r for r in rr}
        out = []
        for g in groups:
            ns = [cells[(g, m)]["n"] for m in metrics if (g, m) in cells and cells[(g, m)]["n"] is not None]
            line: list[Any] = [g, fmt(max(ns)) if ns else NA]
            for m in metrics:
                r = cells.get((g, m))
                if r is None:
                    line.append(Cell(NA, "na"))
                elif r["suppressed"]:
                    line.append(Cell(suppressed_text(mgs), "suppressed"))
                else:
                    line.append(f"{fmt(r['mean'])} {fmt_interval(r['ci_low'], r['ci_high'])}")
            out.append(line)
        sub = [table(["group", "n"] + metrics, out, numeric=[False, True] + [True] * len(metrics),
                     caption=f"cells: mean [{lvl} interval]" if lvl else "cells: mean [interval]")]
        sub += _fig(figs, F.slice_figure_name(runs.index(run), run))
        blocks.append(Section(f"Run {run}", sub))
    disparity = get(_audits(report), "disparity")
    if disparity:
        sub = generic_blocks(disparity, min_group_size=mgs) + _fig(figs, "disparity")
        blocks.append(Section(AUDIT_TITLES["disparity"], sub))
    return blocks or [not_evaluated("per-group")]


def _comparison_blocks(report: Mapping[str, Any]) -> list[Any]:
    rows = comparison_rows(report)
    if not rows:
        return [not_evaluated("comparison")]
    cs = as_dict(get(_results(report), "comparison", "settings"))
    lvl = fmt_level(cs.get("level")) or fmt_level(_level(report))
    corr = as_str(cs.get("correction")) or "p_adj"
    out = []
    for r in rows:
        ni = r.get("non_inferior")
        out.append([
            as_str(r.get("candidate")), as_str(r.get("baseline")), as_str(r.get("metric")), fmt(r.get("baseline_mean")),
            fmt(r.get("candidate_mean")), f"{fmt(r.get('diff'))} {fmt_interval(r.get('ci_low'), r.get('ci_high'))}",
            fmt_share(r.get("rel_diff")), f"{fmt(r.get('p_value'))} / {fmt(r.get('p_adjusted'))}",
            fmt(r.get("significant")) if isinstance(r.get("significant"), bool) else NA,
            Cell(NA, "na") if ni is None else (Cell("yes", "pass") if ni else Cell("NO", "fail")),
        ])
    return [table(["candidate", "baseline", "metric", "baseline mean", "candidate mean", f"difference {lvl} interval",
                   "relative", f"p / p adj. ({corr})", "significant", "non-inferior"], out,
                  numeric=[False, False, False, True, True, True, True, True, False, False])]


def _ope_blocks(report: Mapping[str, Any], figs: Figs) -> list[Any]:
    rows = ope_rows(report)
    if not rows:
        return [not_evaluated("counterfactual (off-policy)")]
    out = []
    for r in rows:
        d = r["diagnostics"]
        lvl = fmt_level(r["level"])
        out.append([
            r["estimator"], fmt(r["value"]), fmt_interval(r["ci_low"], r["ci_high"]) + (f" ({lvl})" if lvl else ""),
            fmt(r["n"]), fmt_share(d.get("ess_share")), fmt(d.get("max_weight")),
            " / ".join(fmt(d.get(k)) for k in ("weight_q50", "weight_q90", "weight_q99")),
            fmt(d.get("unsupported_target_mass")),
            Cell(str(len(r["warnings"])), "fail") if r["warnings"] else "0",
        ])
    blocks: list[Any] = [table(
        ["estimator", "value", "interval", "n", "ESS share", "max weight", "weight q50 / q90 / q99",
         "unsupported target mass", "warnings"], out,
        numeric=[False, True, False, True, True, True, True, True, True],
    )]
    methods = sorted({r["interval"] for r in rows if r["interval"]})
    if methods:
        blocks.append(Text("Intervals: " + "; ".join(methods) + "."))
    warns = [f"{r['estimator']}: {w}" for r in rows for w in r["warnings"]]
    if warns:
        blocks.append(Section("Estimator warnings", [Bullets(tuple(warns))]))
    return blocks + _fig(figs, "ope")


# ---------------------------------------------------------------- audits


def _estimate_cell(x: Any, suppressed: bool, mgs: Any) -> Any:
    if suppressed:
        return Cell(suppressed_text(mgs), "suppressed")
    return Cell(NA, "na") if estimate(x)[0] is None else fmt_estimate(x)


def _exposure_blocks(audit: dict[str, Any], mgs: Any, figs: Figs) -> list[Any]:
    s, c = as_dict(audit.get("settings")), as_dict(audit.get("counts"))
    mgs = s.get("min_group_size", mgs)
    pairs = [
        ("group column", as_str(s.get("group_column")) or NA), ("k", fmt(s.get("k"))),
        ("browsing model", as_str(s.get("browsing")) or NA), ("target", fmt_any(s.get("target"))),
        ("reference group", as_str(audit.get("reference_group")) or NA),
        ("AWRF", fmt_estimate(audit.get("awrf"))), ("Gini of item exposure", fmt_estimate(audit.get("gini"))),
    ]
    for k, v in as_dict(audit.get("expected_exposure")).items():
        pairs.append((f"expected exposure {k}", fmt_estimate(v)))
    if c:
        pairs.append(("groups", f"{fmt(c.get('n_groups'))} ({fmt(c.get('n_groups_suppressed'))} suppressed)"))
    blocks: list[Any] = [Fields(tuple(pairs))]
    rows = []
    for g in as_dicts(audit.get("groups")):
        sup = is_suppressed(g)
        rows.append([as_str(g.get("group")), fmt(g.get("n_items")), fmt(g.get("n_items_shown")), fmt(g.get("n_requests"))]
                    + [_estimate_cell(g.get(q), sup, mgs) for q in
                       ("exposure_share", "target_share", "share_ratio", "disparate_exposure_ratio")])
    if rows:
        blocks.append(table(["group", "catalog items", "items shown", "requests", "exposure share", "target share",
                             "share / target", "disparate exposure ratio"], rows, numeric=[False] + [True] * 7))
    return blocks + _fig(figs, "exposure")


def _overall_and_groups(audit: dict[str, Any], mgs: Any) -> list[Any]:
    """Popularity / safety layout: one row per quantity, one column per group (overall first)."""
    cols = [as_dict(audit.get("overall"))] if isinstance(audit.get("overall"), Mapping) else []
    cols += as_dicts(audit.get("groups"))
    if not cols:
        return generic_blocks(audit, min_group_size=mgs)
    quantities: list[str] = []
    for col in cols:
        for k, v in col.items():
            if (is_estimate(v) or (v is None and k not in ("group", "suppressed", "n_requests"))) and k not in quantities:
                quantities.append(k)
    headers = ["quantity"] + [as_str(c.get("group")) or "(missing)" for c in cols]
    rows: list[list[Any]] = [["requests"] + [fmt(c.get("n_requests")) for c in cols]]
    for q in quantities:
        if all(c.get(q) is None for c in cols if not is_suppressed(c)):
            continue  # not computed for this audit (e.g. no labels)
        rows.append([q] + [_estimate_cell(c.get(q), is_suppressed(c), mgs) for c in cols])
    return [table(headers, rows, numeric=[False] + [True] * len(cols))]


def _drift_blocks(audit: dict[str, Any]) -> list[Any]:
    rows = []
    for col in as_dicts(audit.get("columns")):
        flag = as_str(col.get("flag"))
        rows.append([
            as_str(col.get("column")), as_str(col.get("kind")), fmt(col.get("psi")),
            Cell(flag or NA, "pass" if flag == "stable" else ("fail" if flag == "significant" else ("error" if flag else "na"))),
            fmt(col.get("ks_statistic")), fmt(col.get("ks_pvalue")),
            f"{fmt_share(col.get('missing_rate_baseline'))} / {fmt_share(col.get('missing_rate_current'))}",
            fmt(col.get("n_unseen_categories")),
        ])
    if not rows:
        return generic_blocks(audit)
    blocks: list[Any] = [table(["column", "kind", "PSI", "flag", "KS D", "KS p", "missing (baseline / current)",
                                "unseen categories"], rows, numeric=[False, False, True, False, True, True, True, True])]
    s = as_dict(audit.get("settings"))
    if s:
        th = as_dict(s.get("thresholds"))
        blocks.append(Text(f"PSI over {fmt(s.get('bins'))} {as_str(s.get('strategy')) or ''} bins of the baseline "
                           f"(epsilon {fmt(s.get('epsilon'))}); flags: stable < {fmt(th.get('moderate'))} <= moderate "
                           f"<= {fmt(th.get('significant'))} < significant (rules of thumb, not a test)."))
    return blocks


def _audit_blocks(report: Mapping[str, Any], figs: Figs) -> list[Any]:
    audits = _audits(report)
    mgs = _min_group_size(report)
    blocks: list[Any] = []
    builders: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
        "exposure": lambda a: _exposure_blocks(a, mgs, figs),
        "popularity": lambda a: _overall_and_groups(a, get(a, "settings", "min_group_size") or mgs),
        "safety": lambda a: _overall_and_groups(a, get(a, "settings", "min_group_size") or mgs),
        "drift": _drift_blocks,
    }
    order = [a for a in KNOWN_AUDITS if a != "disparity"] + sorted(k for k in audits if k not in KNOWN_AUDITS)
    for name in order:
        audit = audits.get(name)
        title = AUDIT_TITLES.get(name, f"Audit: {name}")
        if not audit:
            blocks.append(Section(title, [not_evaluated(f"{name} audit")]))
            continue
        try:
            body = builders[name](as_dict(audit)) if name in builders and isinstance(audit, Mapping) else None
        except (TypeError, ValueError, KeyError, AttributeError):  # an unexpected layout: fall back to plain tables
            body = None
        if body is None:
            body = generic_blocks(audit, min_group_size=mgs)
        blocks.append(Section(title, body))
    return blocks


def _caveat_blocks(report: Mapping[str, Any]) -> list[Any]:
    blocks: list[Any] = [_text_or(report, "caveats_and_recommendations")]
    lim = as_str(get(report, "card", "limitations")).strip()
    if lim:
        blocks.append(Section("Known limitations", [Text(lim)]))
    f = findings(report)
    missing = missing_sections(report)
    if missing:
        f.append("Not evaluated in this report: " + ", ".join(missing) + ".")
    blocks.append(Section("Findings from the report", [Bullets(tuple(f)) if f else Text("None.", "muted")]))
    return blocks


def _verdict_blocks(report: Mapping[str, Any]) -> list[Any]:
    return [banner(report), *gates_blocks(report), Section("Errors", errors_blocks(report))]


def card_sections(report: Mapping[str, Any], *, figures: bool = True) -> list[Section]:
    figs: Figs = F.report_figures(report) if figures else {}
    return [
        Section("Model details", _model_details(report), "model-details"),
        Section("Intended use", [_text_or(report, "intended_use"),
                                 Section("Out-of-scope use", [_text_or(report, "out_of_scope_use")])], "intended-use"),
        Section("Factors", _factors_blocks(report), "factors"),
        Section("Metrics", _metrics_blocks(report), "metrics"),
        Section("Evaluation data", _evaluation_data_blocks(report), "evaluation-data"),
        Section("Training data", [_text_or(report, "training_data")], "training-data"),
        Section("Quantitative analyses", [
            Section("Overall", _overall_blocks(report, figs)),
            Section("By group", _by_group_blocks(report, figs)),
            Section("Candidate vs baseline", _comparison_blocks(report)),
            Section("Counterfactual (off-policy) estimates", _ope_blocks(report, figs)),
        ], "quantitative-analyses"),
        Section("Fairness and safety audits", _audit_blocks(report, figs), "audits"),
        Section("Ethical considerations", [_text_or(report, "ethical_considerations")], "ethical-considerations"),
        Section("Caveats and recommendations", _caveat_blocks(report), "caveats"),
        Section("Governance verdict", _verdict_blocks(report), "verdict"),
        Section("Provenance", provenance_blocks(report) + [Section("Settings", settings_blocks(report))], "provenance"),
    ]


def _title(report: Mapping[str, Any]) -> str:
    version = as_str(get(report, "model", "version")).strip()
    return f"Model card: {model_name(report)}" + (f" {version}" if version else "")


def _preamble(report: Mapping[str, Any]) -> list[Any]:
    b = banner(report)
    return [Banner(b.verdict, f"Governance verdict: {b.verdict.upper()}", b.detail)]


def render_card_md(report: Mapping[str, Any], *, figures_dir: str | None = None) -> str:
    """The model card as Markdown (same sections and numbers as the HTML card).

    Markdown cannot embed the figures: with ``figures_dir`` (a relative path,
    as :func:`write_all` uses) each figure is rendered and linked as
    ``{figures_dir}/{name}.svg`` (the caller writes the files); without it the
    Markdown card has no figures and renders fast.
    """
    report = as_dict(report)
    return to_markdown(_title(report), card_sections(report, figures=figures_dir is not None),
                       preamble=_preamble(report), figures_dir=figures_dir)


def render_card_html(report: Mapping[str, Any], *, figures: bool = True) -> str:
    """The model card as one self-contained HTML page: inline CSS, figures as inline SVG,
    no scripts and no external resources; every string from the report is HTML-escaped."""
    report = as_dict(report)
    return to_html(_title(report), card_sections(report, figures=figures), preamble=_preamble(report), toc=True)


def render_card_all(report: Mapping[str, Any], *, figures_dir: str) -> tuple[str, str, dict[str, str]]:
    """(Markdown, HTML, {figure name: svg}) from one build of the card (figures rendered once)."""
    report = as_dict(report)
    sections = card_sections(report, figures=True)
    figs: dict[str, str] = {}

    def walk(blocks: list[Any]) -> None:
        for b in blocks:
            if isinstance(b, Figure):
                figs[b.name] = b.svg
            elif isinstance(b, Section):
                walk(b.blocks)

    walk(list(sections))
    md = to_markdown(_title(report), sections, preamble=_preamble(report), figures_dir=figures_dir)
    html = to_html(_title(report), sections, preamble=_preamble(report), toc=True)
    return md, html, figs


# =========================================================================== JSON


def card_json(report: Mapping[str, Any]) -> dict[str, Any]:
    """receval's own model card JSON: the card's content by section, numbers unrounded.

    Keys: ``schema`` ("receval.model_card"), ``schema_version``, ``model``,
    ``card`` (the human-written sections), ``verdict``, ``summary``, ``gates``,
    ``factors``, ``metrics`` (which metric, where, judged by which gate),
    ``quantitative_analysis`` (``overall``, ``by_group`` — suppressed groups
    without values —, ``comparison``, ``counterfactual``), ``audits`` (as in
    the report: already suppressed upstream), ``findings``,
    ``not_evaluated``, ``errors``, ``provenance``, ``settings``.
    """
    report = as_dict(report)
    return json_safe(_card_json(report))


def _card_json(report: dict[str, Any]) -> dict[str, Any]:
    m = as_dict(report.get("model"))
    model = {k: as_str(m.get(k)) for k in ("name", "version", "type", "description", "license", "citation") if as_str(m.get(k))}
    model["name"] = model_name(report)
    owners = [{"name": as_str(o.get("name")), "contact": as_str(o.get("contact"))} for o in as_dicts(m.get("owners"))]
    if owners:
        model["owners"] = owners
    refs = [as_str(r) for r in as_list(m.get("references")) if as_str(r)]
    if refs:
        model["references"] = refs
    card = {k: as_str(get(report, "card", k)) for k in CARD_TEXT_FIELDS if as_str(get(report, "card", k))}
    return {
        "schema": "receval.model_card",
        "schema_version": 1,
        "generator": f"receval {__version__}",
        "model": model,
        "card": card,
        "verdict": verdict(report),
        "summary": summary_counts(report),
        "gates": as_dicts(report.get("gates")),
        "factors": factors(report),
        "metrics": metric_rationale(report),
        "quantitative_analysis": {
            "level": _level(report),
            "overall": overall_rows(report),
            "by_group": slice_rows(report),
            "comparison": comparison_rows(report),
            "counterfactual": ope_rows(report),
        },
        "audits": _audits(report),
        "findings": findings(report),
        "not_evaluated": missing_sections(report),
        "errors": as_dicts(report.get("errors")),
        "provenance": as_dict(report.get("provenance")),
        "settings": as_dict(report.get("settings")),
    }
