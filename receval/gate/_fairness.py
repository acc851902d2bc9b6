"""Fairness and data-quality gates (read the disparity and data-quality audit results)."""

from __future__ import annotations

from typing import Any


def fairness_gate(spec, audit: Any, make, GateError, level: float) -> dict[str, Any]:
    """Tolerance rule on a :class:`~receval.audits.disparity.DisparityAudit` breakdown.

    Every non-suppressed group of ``attribute`` (an attribute, or an
    intersection written ``"country & age_band"``) must have its ratio to the
    reference within ``ratio = [low, high]`` (default the Aequitas
    [0.8, 1.25]) and/or its absolute difference to the reference at most
    ``max_difference``. Point values decide, as in the Aequitas convention;
    the intervals are reported as evidence. Suppressed groups are listed and
    do not decide; a group whose ratio is undefined (reference 0) is an error.
    """
    p = spec.params
    try:
        md = audit[p["attribute"], p["metric"]]
    except KeyError:
        names = [a.name for a in audit.attributes]
        raise GateError(f"the disparity audit has no breakdown of {p['metric']} by {p['attribute']!r} "
                        f"(attributes: {', '.join(names)}; metrics: {', '.join(audit.settings.get('metrics', []))})") from None
    ratio = p.get("ratio")
    max_diff = p.get("max_difference")
    details = []
    for g in md.groups:
        if g.suppressed:
            details.append({"group": g.group, "n": g.n, "status": "suppressed", "value": None})
            continue
        r = g.ratio.value if g.ratio is not None else None
        d = g.difference.value if g.difference is not None else None
        status = "pass"
        if ratio is not None:
            if r is None:
                status = "error"
            elif not ratio[0] <= r <= ratio[1]:
                status = "fail"
        if max_diff is not None and status != "error":
            if d is None:
                status = "error"
            elif abs(d) > float(max_diff):
                status = "fail"
        details.append({
            "group": g.group, "n": g.n, "value": g.value.value if g.value else None,
            "ratio": r, "ratio_ci": [g.ratio.low, g.ratio.high] if g.ratio is not None else None,
            "difference": d, "status": status,
        })
    decided = [x for x in details if x["status"] != "suppressed"]
    if not decided:
        raise GateError(f"every group of {p['attribute']!r} is suppressed (fewer than min_group_size users)")
    errs = [x for x in decided if x["status"] == "error"]
    if errs:
        raise GateError(f"ratio or difference undefined for group(s) {', '.join(x['group'] for x in errs)} "
                        f"(reference value {md.reference_value.value if md.reference_value else None})")
    fails = [x for x in decided if x["status"] == "fail"]
    # evidence: the failing group, else the group furthest from parity
    def distance(x):
        return abs(x["ratio"] - 1.0) if x["ratio"] is not None else abs(x["difference"] or 0.0)

    worst = fails[0] if fails else max(decided, key=distance)
    rule = (f"ratio to {md.reference} within [{ratio[0]:g}, {ratio[1]:g}]" if ratio is not None else "") + (
        (" and " if ratio is not None and max_diff is not None else "")
        + (f"|difference| <= {float(max_diff):g}" if max_diff is not None else ""))
    out = make(spec, subject=f"{p['attribute']}", metric=md.metric, value=worst.get("ratio"),
               bound=worst.get("ratio") if ratio is not None else worst.get("difference"),
               op="within" if ratio is not None else "<=",
               threshold=list(ratio) if ratio is not None else float(max_diff),
               ci_low=(worst.get("ratio_ci") or [None, None])[0], ci_high=(worst.get("ratio_ci") or [None, None])[1],
               level=level, n=sum(x["n"] for x in decided), details=details,
               status="fail" if fails else "pass")
    n_sup = len(details) - len(decided)
    sup = f"; {n_sup} suppressed group(s) not decided" if n_sup else ""
    out["message"] = (
        f"{md.metric} by {p['attribute']}: {rule} fails for "
        + ", ".join(f"{x['group']} (ratio {x['ratio']:.4g})" if x["ratio"] is not None else f"{x['group']} (difference {x['difference']:.4g})" for x in fails)
        + sup if fails else f"{md.metric} by {p['attribute']}: {rule} holds for {len(decided)} group(s){sup}"
    )
    return out


def data_quality_gate(spec, reports: Any, make, GateError, all_of) -> dict[str, Any]:
    """Limits on one input's data-quality report (or every profiled input when ``input`` is not given).

    * ``max_missing_rate``: the largest missing rate over the input's columns;
    * ``max_duplicates``: rows in repeated (request, item) pairs;
    * ``max_errors``: number of error-level findings (contract violations and checks with status error).
    Without any limit the gate requires zero error-level findings.
    """
    p = spec.params
    want = p.get("input")
    if want is not None and want not in reports:
        raise GateError(f"input {want!r} is not profiled: add it to [audits.data_quality] inputs")
    names = [want] if want is not None else sorted(reports)
    checks = []
    for n in names:
        d = reports[n].to_dict()
        if "max_missing_rate" in p:
            rates = [c.get("missing_rate") for c in d.get("columns", [])]
            if any(r is None for r in rates) or not rates:
                checks.append((f"{n}: max missing rate", None, "<=", float(p["max_missing_rate"])))
            else:
                checks.append((f"{n}: max missing rate", float(max(rates)), "<=", float(p["max_missing_rate"])))
        if "max_duplicates" in p:
            dup = [c for c in d.get("checks", []) if c.get("name") == "duplicate_pairs"]
            checks.append((f"{n}: duplicate (request, item) rows", float(dup[0]["n_rows"]) if dup else None, "<=",
                           float(p["max_duplicates"])))
        if "max_errors" in p or not ({"max_missing_rate", "max_duplicates"} & set(p)):
            n_err = sum(c.get("status") == "error" for c in d.get("checks", [])) + len(d.get("violations", []))
            checks.append((f"{n}: error-level findings", float(n_err), "<=", float(p.get("max_errors", 0))))
    return all_of(spec, want or "all profiled inputs", checks)
