"""Gate decisions: pure functions of the computed results.

Each gate returns one dict (docs/report-schema.md, ``gates[]``) with status
``pass`` / ``fail`` / ``error`` and its evidence. Conventions:

* ``bound`` picks the number compared with the threshold: the point estimate
  (``value``, default) or an end of its interval (``ci_low`` / ``ci_high``);
* change and non-inferiority gates read the metric's direction from the
  registry, so "at least as good" means >= for nDCG and <= for ECE;
* gates that test a hypothesis (non-inferiority, and change gates with
  ``significant = true``) form one family whose p-values are corrected
  together (Holm by default) before comparing with ``alpha``;
* anything undefined (missing section, metric, group or value) is an error,
  never a pass.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from receval.gate.config import GateConfig, GateSpec
from receval.gate.runner import _ALL, SectionError, _num

__all__ = ["decide_gates"]


class _GateError(Exception):
    """This gate cannot be decided; the message says why."""


def _cmp(x: float, op: str, t: float) -> bool:
    return {">=": x >= t, "<=": x <= t, ">": x > t, "<": x < t}[op]


def _need(sections: dict[str, Any], key: str) -> Any:
    sec = sections.get(key)
    if sec is None:
        raise _GateError(f"needs the '{key}' section, which the config does not compute "
                         f"(add [{key}] to the config)")
    if isinstance(sec, Exception):
        raise _GateError(f"the '{key}' section could not be computed: {sec}")
    return sec


def _gate(spec: GateSpec, **kw: Any) -> dict[str, Any]:
    out = {
        "id": spec.id, "type": spec.type, "status": "error", "description": spec.description, "subject": "",
        "metric": None, "value": None, "bound": None, "op": None, "threshold": None, "ci_low": None,
        "ci_high": None, "level": None, "n": None, "p_value": None, "p_adjusted": None, "message": "",
        "details": [],
    }
    out.update(kw)
    return out


def _pick(value: float | None, low: float | None, high: float | None, bound: str) -> float | None:
    return {"value": value, "ci_low": low, "ci_high": high}[bound]


def _threshold_verdict(out: dict[str, Any], x: float | None, op: str, t: float, what: str) -> None:
    out["bound"], out["op"], out["threshold"] = x, op, t
    if x is None:
        raise _GateError(f"{what} is undefined (no value or interval to compare; an interval needs n_boot > 0)")
    ok = _cmp(x, op, t)
    out["status"] = "pass" if ok else "fail"
    out["message"] = f"{what} = {x:.6g} {'satisfies' if ok else 'violates'} {op} {t:g}"


# --------------------------------------------------------------------------- per type


def _metric(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    p = spec.params
    ev = _need(sections, "evaluation")
    run = p.get("run") or cfg.evaluation["candidate"]
    if run not in ev["dict"]:
        raise _GateError(f"run {run!r} is not evaluated (evaluation covers: {', '.join(ev['dict'])})")
    m = ev["dict"][run]["metrics"].get(p["metric"])
    if m is None:
        raise _GateError(f"metric {p['metric']} was not computed for {run!r}")
    bound = p.get("bound", "value")
    out = _gate(spec, subject=run, metric=p["metric"], value=_num(m.get("mean")), ci_low=_num(m.get("ci_low")),
                ci_high=_num(m.get("ci_high")), level=cfg.settings["level"], n=m.get("n"))
    op = p.get("op") or (">=" if m.get("greater_is_better", True) else "<=")
    _threshold_verdict(out, _pick(out["value"], out["ci_low"], out["ci_high"], bound), op, float(p["threshold"]),
                       f"{p['metric']} {bound}" if bound != "value" else p["metric"])
    return out


def _comparison_row(sections: dict[str, Any], cfg: GateConfig, metric: str):
    cmp = _need(sections, "comparison")
    try:
        return cmp[(cfg.evaluation["candidate"], metric)]
    except KeyError:
        raise _GateError(f"metric {metric} is not in the comparison") from None


def _paired_diffs(sections: dict[str, Any], cfg: GateConfig, metric: str) -> np.ndarray:
    """Per-request candidate - baseline values on the requests both runs were scored on."""
    ev = _need(sections, "evaluation")
    cand = ev["objects"][cfg.evaluation["candidate"]].per_request_polars()
    base = ev["objects"][cfg.evaluation["baseline"]].per_request_polars()
    if metric not in cand.columns or metric not in base.columns:
        raise _GateError(f"{metric} has no per-request values (population-level metric): a paired test is "
                         "not defined; gate it with a 'change' gate on its interval instead")
    j = cand.select("request_id", metric).join(base.select("request_id", metric), on="request_id", how="inner",
                                               suffix="_base")
    d = (j[metric] - j[f"{metric}_base"]).to_numpy().astype(np.float64)
    return d[np.isfinite(d)]


def _one_sided_p(d: np.ndarray, shift: float, greater: bool) -> float:
    """p-value of H0: mean(d) <= -shift (greater) / >= +shift (not greater), paired t."""
    from scipy import stats

    n = len(d)
    if n < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    m = float(d.mean())
    stat = m + shift if greater else shift - m
    if sd == 0:
        return 0.0 if stat > 0 else 1.0
    t = stat / (sd / math.sqrt(n))
    return float(stats.t.sf(t, n - 1))


def _change(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any], family: list) -> dict[str, Any]:
    p = spec.params
    row = _comparison_row(sections, cfg, p["metric"])
    rel = bool(p.get("relative", False))
    sign = 1.0 if row.greater_is_better else -1.0
    diff, lo, hi = (row.rel_diff, row.rel_ci_low, row.rel_ci_high) if rel else (row.diff, row.ci_low, row.ci_high)
    bound = p.get("bound", "value")
    # improvement in the metric's good direction; the conservative interval end when a bound is asked for
    if bound == "value":
        x = _num(sign * diff)
    else:
        x = _num(sign * (lo if sign > 0 else hi))
    t = float(p.get("min_change", 0.0))
    what = f"{'relative ' if rel else ''}improvement of {p['metric']}" + ("" if bound == "value" else " (interval end)")
    out = _gate(spec, subject=f"{row.candidate} vs {row.baseline}", metric=p["metric"], value=_num(diff),
                ci_low=_num(lo), ci_high=_num(hi), level=cfg.settings["level"], n=row.n,
                p_value=_num(row.p_value))
    _threshold_verdict(out, x, ">=", t, what)
    if p.get("significant"):
        if out["p_value"] is None:
            raise _GateError(f"no p-value for {p['metric']} (population-level metric or degenerate differences)")
        family.append((out, out["p_value"]))
    return out


def _non_inferiority(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any], family: list) -> dict[str, Any]:
    p = spec.params
    row = _comparison_row(sections, cfg, p["metric"])
    margin = float(p["margin"])
    if p.get("relative"):
        margin = margin * abs(row.baseline_mean)
    d = _paired_diffs(sections, cfg, p["metric"])
    pv = _one_sided_p(d, margin, row.greater_is_better)
    worst = row.ci_low if row.greater_is_better else row.ci_high
    out = _gate(spec, subject=f"{row.candidate} vs {row.baseline}", metric=p["metric"], value=_num(row.diff),
                ci_low=_num(row.ci_low), ci_high=_num(row.ci_high), level=cfg.settings["level"], n=len(d),
                p_value=_num(pv), op=">" if row.greater_is_better else "<",
                threshold=-margin if row.greater_is_better else margin, bound=_num(worst),
                status="pending")  # decided with the corrected family, in decide_gates
    if out["p_value"] is None:
        raise _GateError(f"non-inferiority test of {p['metric']} is undefined on {len(d)} paired requests")
    family.append((out, out["p_value"]))
    return out


def _sample_size(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    p = spec.params
    of = p.get("of", "requests")
    if of == "ope_rounds":
        cf = _need(sections, "counterfactual")
        n = cf["dict"]["data"]["requests"]
        subject = "counterfactual logs"
    else:
        ev = _need(sections, "evaluation")
        run = p.get("run") or cfg.evaluation["candidate"]
        if of == "users":
            frame = ev["objects"][run].per_request_polars()
            if "user_id" not in frame.columns:
                raise _GateError("the per-request results carry no user_id: count users with of = 'requests'")
            n = frame["user_id"].n_unique()
        else:
            n = ev["dict"][run]["counts"]["evaluated"]
        subject = run
    out = _gate(spec, subject=subject, value=float(n), n=int(n))
    _threshold_verdict(out, float(n), ">=", float(p["min_n"]), f"evaluated {of}")
    return out


def _ope(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    p = spec.params
    cf = _need(sections, "counterfactual")
    name = p["estimator"]
    lift = bool(p.get("lift"))
    src = cf["lifts"] if lift else cf["by_name"]
    if name not in src:
        raise _GateError(f"estimator {name!r} is not among the configured counterfactual estimators")
    r = src[name]
    out = _gate(spec, subject=r.name, value=_num(r.value), ci_low=_num(r.ci_low), ci_high=_num(r.ci_high),
                level=r.level, n=r.n, details=[{"warning": w} for w in r.warnings])
    bound = p.get("bound", "ci_low" if lift else "value")
    op = p.get("op", ">" if lift else ">=")
    t = float(p.get("threshold", 0.0))
    _threshold_verdict(out, _pick(out["value"], out["ci_low"], out["ci_high"], bound), op, t,
                       f"{r.name} {bound}")
    return out


def _ope_diagnostics(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    p = spec.params
    cf = _need(sections, "counterfactual")
    if p["estimator"] not in cf["by_name"]:
        raise _GateError(f"estimator {p['estimator']!r} is not among the configured counterfactual estimators")
    r = cf["by_name"][p["estimator"]]
    diag = r.diagnostics
    checks = []
    if "min_ess_share" in p:
        checks.append(("ess_share", _num(diag.get("ess_share")), ">=", float(p["min_ess_share"])))
    if "max_weight" in p:
        checks.append(("max_weight", _num(diag.get("max_weight")), "<=", float(p["max_weight"])))
    if "max_unsupported_mass" in p:
        checks.append(("unsupported_mass", _num(diag.get("unsupported_mass", 0.0)), "<=",
                       float(p["max_unsupported_mass"])))
    return _all_of(spec, r.name, checks, n=r.n)


def _all_of(spec: GateSpec, subject: str, checks: list[tuple[str, float | None, str, float]], **kw: Any) -> dict:
    """A gate made of several named comparisons; it passes when all do (undefined ones error)."""
    details = []
    for name, x, op, t in checks:
        ok = None if x is None else _cmp(x, op, t)
        details.append({"check": name, "value": x, "op": op, "threshold": t,
                        "status": "error" if ok is None else ("pass" if ok else "fail")})
    out = _gate(spec, subject=subject, details=details, **kw)
    bad = [d for d in details if d["status"] != "pass"]
    if any(d["status"] == "error" for d in details):
        raise _GateError("undefined: " + ", ".join(d["check"] for d in details if d["status"] == "error"))
    out["status"] = "fail" if bad else "pass"
    first = bad[0] if bad else details[0]
    out["value"], out["bound"], out["op"], out["threshold"] = first["value"], first["value"], first["op"], first["threshold"]
    out["message"] = ("; ".join(f"{d['check']} = {d['value']:.6g} violates {d['op']} {d['threshold']:g}" for d in bad)
                      if bad else f"all {len(details)} check(s) within limits")
    return out


def _group_rows(audit_dict: dict[str, Any]) -> list[dict[str, Any]]:
    overall = audit_dict.get("overall")
    rows = [overall] if isinstance(overall, dict) else []
    return rows + list(audit_dict.get("groups") or [])


def _estimate_fields(row: dict[str, Any], quantity: str) -> tuple[float | None, float | None, float | None]:
    est = row.get(quantity)
    if isinstance(est, dict):
        return _num(est.get("value")), _num(est.get("low")), _num(est.get("high"))
    return _num(est), None, None


def _group_gate(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any], key: str) -> dict[str, Any]:
    """exposure / popularity / safety: a quantity per group (or a scalar), every listed group must pass."""
    p = spec.params
    audit = _need(sections, key).to_dict()
    q = p["quantity"]
    bound = p.get("bound", "value")
    within = p.get("within")
    op = p.get("op", "<=")
    t = p.get("threshold")
    if isinstance(audit.get(q), dict) and "value" in audit[q]:  # a scalar of the audit (awrf, gini, ...)
        rows = [{"group": _ALL, q: audit[q], "suppressed": False}]
    elif q == "ee_l" or q == "ee_d" or q == "ee_r":
        rows = [{"group": _ALL, q: audit["expected_exposure"][q], "suppressed": False}]
    else:
        if q in ("gap_profile", "gap_recommended", "delta_gap"):  # popularity lift over the users' history
            lift = audit.get("lift")
            if not lift:
                raise _GateError(f"{q} needs the popularity audit's history (set history = ... in [audits.popularity])")
            audit = {"overall": lift.get("overall"), "groups": list(lift.get("profile_groups") or [])
                     + list(lift.get("groups") or [])}
        rows = _group_rows(audit)
        if not rows or not any(q in r for r in rows):
            raise _GateError(f"quantity {q!r} is not reported by the {key} audit")
        want = p.get("group")
        if want is not None:
            rows = [r for r in rows if r.get("group") == want]
            if not rows:
                raise _GateError(f"group {want!r} is not in the {key} audit")
        elif key != "audits.exposure":
            rows = [r for r in rows if r.get("group") == _ALL] or rows
    details = []
    for r in rows:
        v, lo, hi = _estimate_fields(r, q)
        if r.get("suppressed"):
            details.append({"group": r.get("group"), "status": "suppressed", "value": None})
            continue
        x = _pick(v, lo, hi, bound)
        if x is None:
            status = "error"
        elif within is not None:
            status = "pass" if within[0] <= x <= within[1] else "fail"
        else:
            status = "pass" if _cmp(x, op, float(t)) else "fail"
        details.append({"group": r.get("group"), "value": v, "ci_low": lo, "ci_high": hi, "bound": x,
                        "status": status})
    decided = [d for d in details if d["status"] != "suppressed"]
    if not decided:
        raise _GateError(f"every group of the {key} audit is suppressed (fewer than min_group_size members)")
    errs = [d for d in decided if d["status"] == "error"]
    if errs:
        raise _GateError(f"{q} is undefined for group(s) {', '.join(str(d['group']) for d in errs)} "
                         f"(bound {bound!r} needs n_boot > 0)")
    fails = [d for d in decided if d["status"] == "fail"]
    worst = fails[0] if fails else decided[0]
    cond = f"within [{within[0]:g}, {within[1]:g}]" if within is not None else f"{op} {float(t):g}"
    out = _gate(spec, subject=key.split(".", 1)[1] + (f" group={p['group']}" if p.get("group") else ""),
                metric=q, value=worst["value"], bound=worst["bound"], ci_low=worst.get("ci_low"),
                ci_high=worst.get("ci_high"), level=cfg.settings["level"],
                op="within" if within is not None else op,
                threshold=list(within) if within is not None else float(t), details=details,
                status="fail" if fails else "pass")
    n_sup = len(details) - len(decided)
    sup = f"; {n_sup} suppressed group(s) not decided" if n_sup else ""
    out["message"] = (
        f"{q} ({bound}) {cond} fails for " + ", ".join(f"{d['group']} ({d['bound']:.6g})" for d in fails) + sup
        if fails else f"{q} ({bound}) {cond} holds for {len(decided)} group(s){sup}"
    )
    return out


def _drift(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    p = spec.params
    audit = _need(sections, "audits.drift")
    try:
        col = audit[p["column"]]
    except KeyError:
        raise _GateError(f"column {p['column']!r} is not in the drift audit") from None
    d = col.to_dict() if hasattr(col, "to_dict") else dict(vars(col))
    checks = []
    if "max_psi" in p:
        checks.append(("psi", _num(d.get("psi")), "<=", float(p["max_psi"])))
    if "max_ks" in p:
        checks.append(("ks", _num(d.get("ks")), "<=", float(p["max_ks"])))
    return _all_of(spec, f"column {p['column']}", checks)


def _fairness(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    from receval.gate._fairness import fairness_gate

    audit = _need(sections, "audits.disparity")
    return fairness_gate(spec, audit, _gate, _GateError, cfg.settings["level"])


def _data_quality(cfg: GateConfig, spec: GateSpec, sections: dict[str, Any]) -> dict[str, Any]:
    from receval.gate._fairness import data_quality_gate

    reports = _need(sections, "audits.data_quality")
    return data_quality_gate(spec, reports, _gate, _GateError, _all_of)


# --------------------------------------------------------------------------- all gates


def decide_gates(cfg: GateConfig, sections: dict[str, Any], inputs: Any) -> list[dict[str, Any]]:
    from receval.stats.corrections import adjust_pvalues

    family: list[tuple[dict[str, Any], float]] = []
    out = []
    for spec in cfg.gates:
        try:
            if spec.type == "metric":
                g = _metric(cfg, spec, sections)
            elif spec.type == "change":
                g = _change(cfg, spec, sections, family)
            elif spec.type == "non_inferiority":
                g = _non_inferiority(cfg, spec, sections, family)
            elif spec.type == "sample_size":
                g = _sample_size(cfg, spec, sections)
            elif spec.type == "ope":
                g = _ope(cfg, spec, sections)
            elif spec.type == "ope_diagnostics":
                g = _ope_diagnostics(cfg, spec, sections)
            elif spec.type in ("exposure", "popularity", "safety", "miscalibration"):
                g = _group_gate(cfg, spec, sections, f"audits.{spec.type}")
            elif spec.type == "drift":
                g = _drift(cfg, spec, sections)
            elif spec.type == "fairness":
                g = _fairness(cfg, spec, sections)
            elif spec.type == "data_quality":
                g = _data_quality(cfg, spec, sections)
            else:  # pragma: no cover - the config rejects unknown types
                raise _GateError(f"unsupported gate type {spec.type!r}")
        except (_GateError, SectionError) as e:
            g = _gate(spec, status="error", message=str(e))
        if not g["description"]:
            g["description"] = _describe(spec)
        out.append(g)
    # one family of hypothesis tests, corrected together
    if family:
        method = cfg.settings["correction"]
        p = np.array([pv for _, pv in family])
        adj = adjust_pvalues(p, method if method != "none" else "none")
        alpha = cfg.settings["alpha"]
        for (g, _), pa in zip(family, adj, strict=True):
            g["p_adjusted"] = float(pa)
            if g["status"] == "error":
                continue
            sig = pa < alpha
            if g["type"] == "non_inferiority":
                g["status"] = "pass" if sig else "fail"
                g["message"] = (
                    f"diff = {g['value']:.6g}; H0 'worse by at least the margin' {'rejected' if sig else 'not rejected'}: "
                    f"one-sided paired t p = {g['p_value']:.3g}, {method}-adjusted {pa:.3g} "
                    f"{'<' if sig else '>='} alpha {alpha:g} ({len(family)} test(s) in the family)"
                )
            elif not sig and g["status"] == "pass":
                g["status"] = "fail"
                g["message"] += f"; but not significant: {method}-adjusted p = {pa:.3g} >= alpha {alpha:g}"
            elif g["status"] == "pass":
                g["message"] += f"; significant: {method}-adjusted p = {pa:.3g} < alpha {alpha:g}"
    return out


def _describe(spec: GateSpec) -> str:
    p = spec.params
    t = spec.type
    if t == "metric":
        b = p.get("bound", "value")
        return f"{p['metric']}{'' if b == 'value' else ' ' + b} {p.get('op', '>=')} {p['threshold']:g}"
    if t == "change":
        return f"{p['metric']} change vs baseline >= {float(p.get('min_change', 0.0)):g}" + (
            " (relative)" if p.get("relative") else "") + (" and significant" if p.get("significant") else "")
    if t == "non_inferiority":
        return f"{p['metric']} non-inferior to baseline, margin {p['margin']:g}" + (
            " (relative)" if p.get("relative") else "")
    if t == "sample_size":
        return f"at least {p['min_n']:g} {p.get('of', 'requests')}"
    if t == "ope":
        return (f"off-policy lift of {p['estimator']} {p.get('bound', 'ci_low')} {p.get('op', '>')} {p.get('threshold', 0):g}"
                if p.get("lift") else f"{p['estimator']} {p.get('bound', 'value')} {p.get('op', '>=')} {p['threshold']:g}")
    if t == "ope_diagnostics":
        return f"{p['estimator']} weight diagnostics within limits"
    if t == "fairness":
        lim = f"ratio within {p['ratio']}" if "ratio" in p else f"difference <= {p['max_difference']:g}"
        return f"{p['metric']} by {p['attribute']}: {lim}"
    if t in ("exposure", "popularity", "safety", "miscalibration"):
        cond = f"within {p['within']}" if "within" in p else f"{p.get('op', '<=')} {p['threshold']:g}"
        return f"{t} {p['quantity']}{' (' + p['group'] + ')' if p.get('group') else ''} {cond}"
    if t == "drift":
        return f"drift of {p['column']} within limits"
    if t == "data_quality":
        return "data quality within limits"
    return t
