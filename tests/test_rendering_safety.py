"""Rendering safety: every user-provided or data-derived string is escaped in every artefact,
and the package source holds no dangerous call (eval, exec, pickle, unsafe YAML, shell=True).

tests/test_reporting.py checks the fields a config controls (model name, card text, gate ids and
messages) on a report built from the real APIs. Here the *data* is hostile too: group names,
item ids, provider names, column and input names come from the inputs of a real gate run, and a
property test replaces every string of a report (keys included) with hostile text.
"""

from __future__ import annotations

import ast
import copy
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from receval.gate.runner import report_json
from receval.reporting import (
    card_json,
    render_card_html,
    render_card_md,
    render_hf_model_index,
    render_junit,
    render_report_html,
    render_report_md,
    to_model_card_toolkit,
)
from receval.testing import HOSTILE_STRINGS, toml_string

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

ROOT = Path(__file__).resolve().parent.parent
# tokens that must never appear unescaped: an element, an attribute break-out, an event handler
INJECT = ["<x-el>", '"><x-attr a="', "' onx='1", "</td></tr></table><x-tbl>", "]]><x-cdata>", "<!--x-cmt-->",
          "\x1b[2Kx-ansi", "\x00x-nul", "\x07x-bel", "\u202ex-bidi", "\u2067x-iso\u2069", "x\u200b-zw\ufeff",
          "\u200fx-rlm\u202b\u202c"]
# bidirectional controls and invisible characters (receval/_text.py): U+FFFD in HTML, Markdown, XML, SVG and
# terminals; \uXXXX escapes in JSON and YAML (same value, nothing hidden in the file)
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200b",
        "\u200e", "\u200f", "\u061c", "\u2060", "\ufeff"]


def _assert_no_bidi(text: str, where: str) -> None:
    found = sorted({f"U+{ord(c):04X}" for c in text if c in BIDI})
    assert not found, (where, found)


def _hostile_data(d: Path) -> dict[str, Path]:
    """Small inputs whose ids, group names and providers are injection strings."""
    rng = np.random.default_rng(1)
    d.mkdir(parents=True, exist_ok=True)
    items = [f"item{j}{INJECT[j]}{INJECT[9 + j % 4]}" for j in range(8)]  # markup or controls, and bidi
    req = np.repeat(np.arange(40), len(items))
    run = pd.DataFrame({"request_id": req, "item_id": np.tile(items, 40), "score": rng.normal(size=len(req)),
                        "user_id": [f"u{r % 10}" for r in req]})
    lab = run[["request_id", "item_id"]].assign(label=rng.integers(0, 2, len(req)))
    users = pd.DataFrame({"user_id": [f"u{j}" for j in range(10)],
                          "country": [INJECT[j % 3] + "country" + INJECT[9 + j % 4] for j in range(10)]})
    cat = pd.DataFrame({"item_id": items, "provider": [INJECT[j % 4] + "prov" + INJECT[10] for j in range(8)],
                        "popularity": rng.integers(0, 100, 8), "flagged": [j % 3 == 0 for j in range(8)]})
    paths = {"cand": d / "cand.parquet", "labels": d / "labels.parquet", "users": d / "users.parquet",
             "catalog": d / "catalog.parquet"}
    run.to_parquet(paths["cand"])
    lab.to_parquet(paths["labels"])
    users.to_parquet(paths["users"])
    cat.to_parquet(paths["catalog"])
    return paths


@pytest.fixture(scope="module")
def gate_out(tmp_path_factory):
    from receval.cli import main

    tmp = tmp_path_factory.mktemp("hostile-gate")
    paths = _hostile_data(tmp / "data")
    inputs = "\n".join(f"{k} = {toml_string(v.as_posix())}" for k, v in paths.items())
    gid = toml_string("<x-el>gate" + INJECT[1] + INJECT[6] + INJECT[10] + INJECT[11])
    cfg = tmp / "g.toml"
    cfg.write_text(f"""
[model]
name = {toml_string("model " + " ".join(INJECT))}
owners = [{{ name = {toml_string(INJECT[0])}, contact = {toml_string(INJECT[1])} }}]
references = [{toml_string("javascript:alert(1)")}]

[card]
limitations = {toml_string(" | ".join(INJECT))}

[settings]
n_boot = 20
min_group_size = 1

[inputs]
{inputs}

[evaluation]
candidate = "cand"
labels = "labels"
metrics = ["ndcg@10", "mrr"]
by = ["country"]
attributes = "users"

[audits.exposure]
run = "cand"
groups = "catalog"
group_column = "provider"

[audits.popularity]
run = "cand"
catalog = "catalog"

[audits.safety]
run = "cand"
flags = "catalog"
flag_column = "flagged"

[audits.disparity]
run = "cand"
labels = "labels"
metrics = ["ndcg@10"]
attributes = "users"
sensitive = ["country"]

[[gates]]
id = {gid}
description = {toml_string(INJECT[0] + INJECT[2])}
type = "metric"
metric = "ndcg@10"
threshold = 0.0

[[gates]]
id = "fair"
type = "fairness"
metric = "ndcg@10"
attribute = "country"
""", encoding="utf-8")
    out = tmp / "out"
    code = main(["gate", "--config", str(cfg), "--out", str(out), "--quiet"])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return out, code, report


class _Tags(HTMLParser):
    """Every element, attribute and comment a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [a for a, _ in attrs]

    handle_startendtag = handle_starttag

    def handle_comment(self, data):
        self.comments.append(data)


def _assert_clean_html(html: str, where: str) -> None:
    for m in ("\x1b", "\x00", "\x07"):
        assert m not in html, (where, repr(m))
    _assert_no_bidi(html, where)
    p = _Tags()
    p.feed(html)
    assert not [t for t in p.tags if t.startswith("x-")], (where, set(p.tags))  # no element from the data
    assert not [a for a in p.attrs if a.startswith("on") or a in ("a", "x-attr")], (where, set(p.attrs))
    assert not [c for c in p.comments if "x-cmt" in c], where


def _assert_clean_md(md: str, where: str) -> None:
    for m in ["<x-el", "<x-attr", "<x-tbl", "<x-cdata", "<!--x-cmt", "\x1b", "\x00", "\x07"]:
        assert m not in md, (where, m)
    _assert_no_bidi(md, where)


def test_hostile_data_reaches_the_report_and_is_escaped_everywhere(gate_out):
    out, code, report = gate_out
    assert code in (0, 1), report["errors"]  # the hostile data is legal: the run completes
    text = json.dumps(report, ensure_ascii=False)
    assert "<x-tbl>prov" in text or "<x-el>prov" in text  # data-derived group names are in the report...
    assert "country" in text
    assert "country\u202ex-bidi" in text or "country\u2067x-iso" in text  # bidi-bearing group names too
    for name in ("model_card.html", "report.html"):
        _assert_clean_html((out / name).read_text(encoding="utf-8"), name)  # ... and escaped in HTML
    for name in ("model_card.md", "report.md"):
        _assert_clean_md((out / name).read_text(encoding="utf-8"), name)
    ET.parse(out / "junit.xml")  # control characters replaced, markup escaped: well-formed XML
    _assert_no_bidi((out / "junit.xml").read_text(encoding="utf-8"), "junit.xml")
    yaml_text = (out / "model_index.yaml").read_text(encoding="utf-8")
    assert "\x1b" not in yaml_text and "\x00" not in yaml_text
    _assert_no_bidi(yaml_text, "model_index.yaml")
    for svg in (out / "figures").glob("*.svg"):
        _assert_no_bidi(svg.read_text(encoding="utf-8"), svg.name)
    # JSON keeps the exact text, written with \uXXXX escapes: nothing reorders the file when it is displayed
    for name in ("report.json", "model_card.json", "model_card_toolkit.json"):
        _assert_no_bidi((out / name).read_text(encoding="utf-8"), name)
    assert "\\u202ex-bidi" in (out / "report.json").read_text(encoding="utf-8")
    assert "model " + " ".join(INJECT) == report["model"]["name"]  # ... and loads back to the same string


def test_terminal_output_has_no_control_characters(gate_out, tmp_path, capsys):
    """Gate ids and messages are printed to CI logs: an ANSI escape from the config or the data could
    erase or fake lines ("[PASS]"), so control characters are replaced before printing."""
    from receval.cli import main

    out, _, _ = gate_out
    cfg = next(out.parent.glob("*.toml"))
    main(["gate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
    captured = capsys.readouterr()
    # only what receval printed: other libraries' output captured in the same process is not ours to judge
    ours = [line for line in (captured.out + captured.err).splitlines()
            if line.startswith(("verdict:", "  [", "wrote ", "receval", "  error in"))]
    assert any(line.startswith("  [") for line in ours)
    for line in ours:
        assert "\x1b" not in line and "\x00" not in line and "\x07" not in line
        _assert_no_bidi(line, line)
    assert "x-ansi" in captured.out  # the id is still shown, minus the escape


# --------------------------------------------------------------------------- every string hostile


def _replace_strings(obj: Any, draw) -> Any:
    if isinstance(obj, str):
        return draw()
    if isinstance(obj, dict):
        return {(draw() if isinstance(k, str) and k not in _STRUCTURAL else k): _replace_strings(v, draw)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_strings(v, draw) for v in obj]
    return obj


# keys the renderers navigate by: replaced values, kept names (replacing them would only hide the data)
_STRUCTURAL = {"results", "evaluation", "audits", "gates", "model", "card", "errors", "metrics", "slices", "groups",
               "overall", "counterfactual", "estimates", "comparison", "provenance", "inputs", "settings", "summary",
               "exposure", "popularity", "safety", "disparity", "drift", "data_quality", "name", "id", "message",
               "status", "group", "metric", "value", "verdict", "where", "mean", "ci_low", "ci_high", "n",
               "attributes", "columns", "description", "type", "curves", "reliability", "suppressed"}


@given(st.data())
def test_any_string_anywhere_is_escaped(gate_out, data):
    _, _, report = gate_out
    pool = st.sampled_from(INJECT) | st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=5)

    def draw() -> str:
        return data.draw(pool) + data.draw(st.sampled_from(INJECT))  # every string carries an injection

    r = _replace_strings(copy.deepcopy(report), draw)
    r["verdict"] = data.draw(st.sampled_from(["pass", "fail", "error", "<x-el>"]))
    _assert_clean_html(render_card_html(r, figures=False), "card html")
    _assert_clean_html(render_report_html(r), "report html")
    _assert_clean_md(render_card_md(r), "card md")
    _assert_clean_md(render_report_md(r), "report md")
    junit = render_junit(r)
    ET.fromstring(junit)
    _assert_no_bidi(junit, "junit")
    assert "\x1b" not in render_hf_model_index(r)
    _assert_no_bidi(render_hf_model_index(r), "model_index.yaml")
    _assert_no_bidi(report_json(r), "report.json")
    assert json.loads(report_json(r)) == json.loads(json.dumps(r))  # escaped, not changed
    json.dumps(card_json(r), allow_nan=False)
    json.dumps(to_model_card_toolkit(r, graphics=False), allow_nan=False)


def test_comparison_and_cli_tables_escape_run_names():
    """Was: ComparisonResult.to_markdown wrote run names raw (a '|' broke the table, '<b>' and an ANSI escape
    or U+202E reached the page or the terminal of `receval compare`)."""
    import re

    import receval
    from receval._markdown import table

    run = pd.DataFrame({"request_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 2], "score": [1.0, 0.0, 0.0, 1.0]})
    lab = pd.DataFrame({"request_id": [1, 2], "item_id": [1, 1], "label": [1, 1]})
    names = ["prod", "a | b <x-el>\u202eevil\x1b[2K\nline"]
    md = receval.compare({names[0]: run, names[1]: run.assign(score=-run["score"])}, lab, ["mrr"],
                         n_boot=5).to_markdown()
    md += table(["name\u2066", "v"], [[names[1], 1.0]])
    _assert_clean_md(md, "compare markdown")
    assert "\x1b" not in md and "\n" not in md.strip().replace("\n|", "")  # one line per row
    for line in md.strip().splitlines():  # every row has as many unescaped cell separators as its header
        assert len(re.findall(r"(?<!\\)\|", line)) in (11, 3), line
    assert "a \\| b &lt;x-el&gt;\ufffdevil" in md


# --------------------------------------------------------------------------- the source holds no dangerous call

# (path relative to the repository, pattern) -> why it is safe
ALLOWED: dict[tuple[str, str], str] = {
    ("receval/gate/runner.py", "subprocess"): "`git rev-parse HEAD` with an argument list, no shell, for provenance",
}


def _dangerous(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else "")
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if name in ("eval", "exec", "compile", "__import__") and isinstance(f, ast.Name):
                found.append((node.lineno, name))
            if base == "os" and name in ("system", "popen"):
                found.append((node.lineno, f"os.{name}"))
            if base == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    found.append((node.lineno, "yaml.load without SafeLoader"))
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                found.append((node.lineno, "shell=True"))
            if base in ("pickle", "cPickle", "marshal", "shelve", "dill", "joblib"):
                found.append((node.lineno, f"{base}.{name}"))
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                   else [])
            for m in mods:
                top = m.split(".")[0]
                if top in ("pickle", "cPickle", "marshal", "shelve", "dill"):
                    found.append((node.lineno, f"import {top}"))
                if top == "subprocess":
                    found.append((node.lineno, "subprocess"))
    return found


def test_source_has_no_dangerous_calls():
    bad = []
    for path in sorted((ROOT / "receval").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, what in _dangerous(ast.parse(path.read_text(encoding="utf-8"))):
            key = (rel, what.split(" ")[0] if what.startswith("subprocess") else what)
            if key not in ALLOWED:
                bad.append(f"{rel}:{line}: {what}")
    assert not bad, "dangerous calls (allow-list them in ALLOWED with a justification if safe):\n" + "\n".join(bad)


def test_the_scanner_finds_what_it_looks_for():
    src = """
import pickle, subprocess
eval("1"); exec("x=1")
os.system("ls")
yaml.load(s)
yaml.load(s, Loader=yaml.SafeLoader)
subprocess.run("ls", shell=True)
subprocess.run(["ls"], shell=False)
"""
    what = [w for _, w in _dangerous(ast.parse(src))]
    assert what.count("yaml.load without SafeLoader") == 1 and what.count("shell=True") == 1
    for w in ("import pickle", "subprocess", "eval", "exec", "os.system"):
        assert w in what, w


def test_allow_list_is_not_stale():
    for (rel, what), why in ALLOWED.items():
        found = [w for _, w in _dangerous(ast.parse((ROOT / rel).read_text(encoding="utf-8")))]
        assert any(w.startswith(what) for w in found), f"{rel}: {what} is allow-listed ({why}) but gone"
    src = (ROOT / "receval/gate/runner.py").read_text(encoding="utf-8")
    assert "shell=True" not in src


def test_cli_error_and_warning_lines_have_no_bidi_or_control_characters(tmp_path, capsys):
    """Column names and ids reach `receval: error:` / `receval: warning:` lines: neutralised like control
    characters (a U+202E in a column name would otherwise reverse the rest of the CI log line)."""
    from receval.cli import main

    run = pd.DataFrame({"request_id": ["q\u202e1"] * 2, "item_id": ["a", "b"], "sc\u2066ore\x1b[2K": [1.0, 0.0]})
    lab = pd.DataFrame({"request_id": ["x\u200b"], "item_id": ["a"], "label": [1]})
    rp, lp = tmp_path / "run.parquet", tmp_path / "labels.parquet"
    run.to_parquet(rp)
    lab.to_parquet(lp)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(rp), "--labels", str(lp), "-m", "mrr"]) == 2  # no score column
    err = capsys.readouterr().err
    assert err.startswith("receval: error: ") and "'sc\\u2066ore\\x1b[2K'" in err, err  # named, as a repr
    _assert_no_bidi(err, "error line")
    run.rename(columns={"sc\u2066ore\x1b[2K": "score"}).to_parquet(rp)
    assert main(["evaluate", "--run", str(rp), "--labels", str(lp), "-m", "mrr"]) == 0  # no request in common
    err = capsys.readouterr().err
    assert err.startswith("receval: warning: run: 1 of 1 judged requests"), err
    _assert_no_bidi(err, "warning line")
    assert "\x1b" not in err
