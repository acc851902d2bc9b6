"""Fairness and data-quality gates (read the disparity and data-quality audit results)."""

from __future__ import annotations

from typing import Any


def fairness_gate(spec, audit: Any, make, GateError, level: float) -> dict[str, Any]:
    raise GateError("the fairness gate is not supported by this receval version")


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
