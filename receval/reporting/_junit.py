"""JUnit XML for CI systems: one testcase per gate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receval.reporting._sections import fmt_any
from receval.reporting._util import (
    NA,
    as_dict,
    as_dicts,
    as_list,
    as_str,
    fmt,
    fmt_interval,
    fmt_level,
    fmt_threshold,
    get,
    is_suppressed,
    model_name,
    num,
    status,
    suppressed_text,
    verdict,
    xml_text,
)


def _evidence(g: Mapping[str, Any]) -> str:
    lines = []
    if as_str(g.get("description")):
        lines.append(f"gate: {as_str(g.get('description'))}")
    lines.append(f"subject: {as_str(g.get('subject')) or NA}")
    if as_str(g.get("metric")):
        lines.append(f"metric: {as_str(g.get('metric'))}")
    lines.append(f"value: {fmt(g.get('value'))}")
    lines.append(f"check: bound {fmt(g.get('bound'))} {as_str(g.get('op')) or '?'} threshold {fmt_threshold(g.get('threshold'))}")
    iv = fmt_interval(g.get("ci_low"), g.get("ci_high"))
    if iv != NA:
        lvl = fmt_level(g.get("level"))
        lines.append(f"interval: {iv}" + (f" ({lvl})" if lvl else ""))
    if g.get("n") is not None:
        lines.append(f"n: {fmt(g.get('n'))}")
    if num(g.get("p_value")) is not None or num(g.get("p_adjusted")) is not None:
        lines.append(f"p: {fmt(g.get('p_value'))}, p_adjusted: {fmt(g.get('p_adjusted'))}")
    lines.append(f"message: {as_str(g.get('message'))}")
    for row in as_dicts(g.get("details")):
        if is_suppressed(row):
            keep = {k: v for k, v in row.items() if isinstance(v, str | int) and not isinstance(v, bool)}
            lines.append(f"detail: {fmt_any(keep)}: {suppressed_text(None)}")
        else:
            lines.append(f"detail: {fmt_any(row)}")
    return "\n".join(lines)


def render_junit(report: Mapping[str, Any]) -> str:
    """JUnit XML: testsuites/testsuite ``receval.gate``, one testcase per gate.

    ``classname`` is the gate type and ``name`` the gate id; a failed gate has a
    ``<failure>`` (message + evidence), an errored gate an ``<error>``, a passed
    gate its evidence in ``<system-out>``. Run-level errors (``report["errors"]``,
    or an "error" verdict with no recorded cause) become one extra testcase
    ``receval.run`` with an ``<error>``, so CI never shows green for a run that
    did not complete. Properties carry the verdict and the config hash.
    """
    import xml.etree.ElementTree as ET

    report = as_dict(report)
    gates = as_dicts(report.get("gates"))
    run_errors = [f"{as_str(e.get('where')) or NA}: {as_str(e.get('message'))}" for e in as_dicts(report.get("errors"))]
    run_errors += [as_str(x) for x in as_list(report.get("errors")) if not isinstance(x, Mapping)]
    v = verdict(report)
    gate_errors = sum(status(g) == "error" for g in gates)
    if v == "error" and not run_errors and not gate_errors:
        run_errors.append(f"verdict is {as_str(report.get('verdict')) or 'missing'!r} but no error was recorded")

    failures = sum(status(g) == "fail" for g in gates)
    errors = gate_errors + (1 if run_errors else 0)
    tests = len(gates) + (1 if run_errors else 0)
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors), "skipped": "0"}

    root = ET.Element("testsuites", {"name": "receval", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "receval.gate", **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("verdict", v),
        ("config_sha256", as_str(get(report, "provenance", "config", "sha256"))),
        ("git_commit", as_str(get(report, "provenance", "git_commit"))),
        ("model", model_name(report)),
        ("model_version", as_str(get(report, "model", "version"))),
        ("schema_version", as_str(report.get("schema_version"))),
    ):
        ET.SubElement(props, "property", {"name": name, "value": xml_text(value)})

    for g in gates:
        s = status(g)
        tc = ET.SubElement(suite, "testcase", {
            "classname": xml_text(as_str(g.get("type")) or "gate"),
            "name": xml_text(as_str(g.get("id")) or "(no id)"),
        })
        evidence = xml_text(_evidence(g))
        message = xml_text(as_str(g.get("message")) or s)
        if s == "fail":
            el = ET.SubElement(tc, "failure", {"message": message, "type": "GateFailed"})
            el.text = evidence
        elif s == "error":
            el = ET.SubElement(tc, "error", {"message": message, "type": "GateError"})
            el.text = evidence
        else:
            ET.SubElement(tc, "system-out").text = evidence
    if run_errors:
        tc = ET.SubElement(suite, "testcase", {"classname": "receval", "name": "receval.run"})
        el = ET.SubElement(tc, "error", {"message": xml_text(run_errors[0]), "type": "RunError"})
        el.text = xml_text("\n".join(run_errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
