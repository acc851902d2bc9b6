"""``receval gate`` and ``receval verify`` end to end: exit codes, artefacts, evidence, escaping.

The demo configs (fixtures/demo/*.toml) are run once each per session (module
fixtures); the other cases use small configs over the same data.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from receval.cli import main

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
ARTEFACTS = {"report.json", "report.md", "report.html", "junit.xml", "model_card.md", "model_card.html",
             "model_card.json"}


def _gate(config: Path, out: Path, *extra: str) -> int:
    return main(["gate", "--config", str(config), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    codes = {name: _gate(DEMO / f"{name}.toml", out / name) for name in ("pass", "fail")}
    return out, codes


def test_demo_pass_exits_0_and_writes_every_artefact(demo_runs):
    out, codes = demo_runs
    assert codes["pass"] == 0
    assert ARTEFACTS <= {p.name for p in (out / "pass").iterdir()}
    report = json.loads((out / "pass" / "report.json").read_text())
    assert report["verdict"] == "pass" and report["summary"]["failed"] == 0 and report["summary"]["errors"] == 0


def test_demo_fail_exits_1_for_the_safety_gate(demo_runs):
    out, codes = demo_runs
    assert codes["fail"] == 1
    report = json.loads((out / "fail" / "report.json").read_text())
    failed = [g["id"] for g in report["gates"] if g["status"] == "fail"]
    assert failed == ["flagged-slots"]
    # JUnit: one test case per gate, the failing one carries a <failure> with the evidence
    root = ET.parse(out / "fail" / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert {c.get("name") for c in cases} == {g["id"] for g in report["gates"]}
    bad = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in bad] == ["flagged-slots"]
    assert "0.118" in bad[0].find("failure").get("message") + (bad[0].find("failure").text or "")
    suite_failures = sum(int(s.get("failures")) for s in root.iter("testsuite"))
    assert suite_failures == 1
    md = (out / "fail" / "report.md").read_text()
    assert "FAIL" in md and "flagged-slots" in md


def test_cli_report_is_byte_identical_on_rerun(demo_runs, tmp_path):
    out, _ = demo_runs
    assert _gate(DEMO / "pass.toml", tmp_path / "again") == 0
    for name in ("report.json", "junit.xml", "report.md", "model_card.md", "model_card.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / "pass" / name).read_bytes(), name


def test_verify_cli(demo_runs, tmp_path, capsys):
    out, _ = demo_runs
    assert main(["verify", str(out / "pass" / "report.json"), "--base", str(DEMO)]) == 0
    assert "report matches its inputs" in capsys.readouterr().out
    # a copy of the demo with one input changed no longer matches
    copy = tmp_path / "demo"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns("*.toml"))
    shutil.copy(DEMO / "pass.toml", copy / "pass.toml")
    (copy / "data" / "users.parquet").write_bytes((copy / "data" / "users.parquet").read_bytes() + b"\0")
    assert main(["verify", str(out / "pass" / "report.json"), "--base", str(copy)]) == 1
    text = capsys.readouterr().out
    assert "CHANGED  input users" in text and "does NOT match" in text


def test_config_error_exits_2_and_still_leaves_evidence(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\nname = "m"\n\n[[gates]]\ntype = "latency"\n')
    assert _gate(cfg, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "unsupported gate type 'latency'" in err and "line 5" in err and "Traceback" not in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verdict"] == "error" and report["errors"][0]["where"] == "config"
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert sum(int(s.get("errors")) for s in root.iter("testsuite")) >= 1


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert _gate(tmp_path / "nope.toml", tmp_path / "out") == 2
    assert "cannot read the config file" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verdict"] == "error"


def _small_config(tmp_path: Path, name: str = "<script>alert(1)</script>", data: Path = DEMO / "data") -> Path:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f"""
[model]
name = {json.dumps(name)}
owners = [{{ name = "A & B <team>", contact = "x@y.z" }}]

[card]
limitations = "Don't trust <b>bold</b> claims & \\"quotes\\""

[settings]
n_boot = 50

[inputs]
labels = "{(data / 'labels.parquet').as_posix()}"
cand = "{(data / 'run_cand.parquet').as_posix()}"

[evaluation]
candidate = "cand"
labels = "labels"
metrics = ["ndcg@10"]

[[gates]]
id = "floor<img src=x onerror=alert(2)>"
type = "metric"
metric = "ndcg@10"
threshold = 0.1
""")
    return cfg


def test_hostile_strings_are_escaped_end_to_end(tmp_path):
    out = tmp_path / "out"
    assert _gate(_small_config(tmp_path), out) == 0
    for name in ("model_card.html", "report.html"):
        html = (out / name).read_text()
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x" not in html and "<b>bold</b>" not in html
    md = (out / "model_card.md").read_text()
    assert "<script>" not in md
    card = json.loads((out / "model_card.json").read_text())
    assert "<script>alert(1)</script>" in json.dumps(card)  # JSON keeps the exact text; escaping is per format
    ET.parse(out / "junit.xml")  # well-formed despite the hostile gate id


def test_bad_input_exits_2_with_a_report(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.parquet").write_bytes((DEMO / "data" / "labels.parquet").read_bytes())
    (data / "run_cand.parquet").write_bytes(b"not a parquet file")
    out = tmp_path / "out"
    assert _gate(_small_config(tmp_path, "m", data), out) == 2
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "error" and report["gates"][0]["status"] == "error"
    assert "Traceback" not in capsys.readouterr().err


def test_github_step_summary_is_appended(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert _gate(_small_config(tmp_path, "m"), tmp_path / "out") == 0
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "PASS" in text and len(text) > 100


def test_internal_error_exits_3_and_leaves_a_report(tmp_path, monkeypatch, capsys):
    import receval.gate.runner as runner

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(runner, "_evaluation", boom)
    out = tmp_path / "out"
    assert _gate(_small_config(tmp_path, "m"), out) == 3
    assert "internal error" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "error" and "simulated crash" in report["errors"][0]["message"]
