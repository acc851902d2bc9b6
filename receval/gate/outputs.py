"""Writing a gate run's artefacts, and verifying a report against its inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from receval.gate.runner import report_json

__all__ = ["write_outputs", "verify_report"]


def write_outputs(report: dict[str, Any], out_dir: str | Path, *, summary: bool = True) -> list[Path]:
    """Write report.json and every rendered artefact to ``out_dir``; append the summary to $GITHUB_STEP_SUMMARY
    (unless ``summary`` is False). report.json is written first, so it exists even if a renderer fails."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json"]
    paths[0].write_text(report_json(report), encoding="utf-8", newline="\n")
    from receval.reporting import render_report_md, write_all

    paths.extend(Path(p) for p in write_all(report, out))
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY") if summary else None
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(render_report_md(report))
            fh.write("\n")
    return paths


def verify_report(report_path: str | Path, base: str | Path | None = None) -> tuple[bool, list[str]]:
    """Re-hash the inputs a report names; (True, lines) when every fingerprint still matches.

    Input paths in the report are relative to the config file's directory; pass
    ``base`` (that directory) when the report was moved away from it. By
    default the config is looked for next to the report, then in the current
    directory.
    """
    import json

    from receval.errors import UsageError
    from receval.gate.runner import _sha256

    report_path = Path(report_path)
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read report {str(report_path)!r}: {e}") from None
    if report.get("schema") != "receval.report":
        raise UsageError(f"{report_path} is not a receval report (no 'schema': 'receval.report')")
    prov = report.get("provenance") or {}
    if base is None:
        cfg_name = (prov.get("config") or {}).get("path", "")
        candidates = [report_path.parent, Path.cwd()]
        base = next((c for c in candidates if cfg_name and (c / cfg_name).exists()), Path.cwd())
    base = Path(base)
    lines: list[str] = []
    ok = True
    cfg = prov.get("config") or {}
    entries = [("config", cfg.get("path"), cfg.get("sha256"))] + [
        (f"input {e.get('name')}", e.get("path"), e.get("sha256")) for e in prov.get("inputs", [])
    ]
    for what, rel, want in entries:
        if not rel:
            ok = False
            lines.append(f"MISSING  {what}: no path recorded")
            continue
        p = base / rel
        if not p.exists():
            ok = False
            lines.append(f"MISSING  {what}: {rel} not found under {base}")
            continue
        got, _ = _sha256(p)
        if got != want:
            ok = False
            lines.append(f"CHANGED  {what}: {rel} sha256 {got[:12]}... != recorded {str(want)[:12]}...")
        else:
            lines.append(f"OK       {what}: {rel}")
    return ok, lines
