"""The launch gate: config checking, gate decisions, fail-closed behaviour, reports, verify.

Runs against the demo data (fixtures/demo/data) with small bootstrap sizes so
the file stays fast; the demo configs themselves run in test_gate_cli.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from receval.gate import ConfigError, load_config, run_gate
from receval.gate.runner import report_json

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
GOLDEN = Path(__file__).resolve().parent / "golden"

BASE = """
[model]
name = "test model"

[settings]
n_boot = 200
seed = 1

[inputs]
labels = "{d}/labels.parquet"
prod = "{d}/run_prod.parquet"
cand = "{d}/run_cand.parquet"
unsafe = "{d}/run_cand_unsafe.parquet"
users = "{d}/users.parquet"
catalog = "{d}/catalog.parquet"

[evaluation]
candidate = "{cand}"
baseline = "prod"
labels = "labels"
metrics = ["ndcg@10", "recall@20", "ece"]
"""


def _cfg(tmp_path: Path, gates: str, *, cand: str = "cand", extra: str = "", name: str = "g.toml") -> Path:
    text = BASE.format(d=(DEMO / "data").as_posix(), cand=cand) + extra + gates
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _run(path: Path):
    return run_gate(load_config(path))


def _gate(report, gid):
    return next(g for g in report["gates"] if g["id"] == gid)


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("snippet", "needle", "line"),
    [
        ('[[gates]]\ntype = "metric"\nmetric = "ndcg@10"\nthreshold = "high"\n', "gates[0].threshold", 4),
        ('[[gates]]\ntype = "metric"\nmetric = "ndgc@10"\nthreshold = 0.3\n', "gates[0].metric", 3),
        ('[[gates]]\ntype = "latency"\nthreshold = 0.3\n', "unsupported gate type 'latency'", 2),
        ('[[gates]]\ntype = "metric"\nmetric = "ndcg@10"\nthreshhold = 0.3\n', "did you mean 'threshold'", 4),
        ('[[gates]]\ntype = "metric"\nmetric = "ndcg@10"\nthreshold = 0.3\nop = "=>"\n', "gates[0].op", 5),
        ('[[gates]]\ntype = "non_inferiority"\nmetric = "ndcg@10"\n', "needs the key 'margin'", 1),
        ('[[gates]]\ntype = "fairness"\nmetric = "ndcg@10"\nattribute = "age"\nratio = [1.25, 0.8]\n', "low <= high", 5),
    ],
)
def test_config_errors_name_key_and_line(tmp_path, snippet, needle, line):
    p = tmp_path / "bad.toml"
    p.write_text('[model]\nname = "m"\n\n' + snippet, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert needle in msg
    assert f"(line {line + 3})" in msg or "needs the key" in msg  # 3 header lines precede the snippet


def test_config_syntax_error_and_missing_file(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('[model\nname = "m"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML.*line 1"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")


def test_config_rejects_unknown_input_reference_and_no_gates(tmp_path):
    p = _cfg(tmp_path, "", cand="nope")
    with pytest.raises(ConfigError, match=r"evaluation\.candidate \(line \d+\): names no input: 'nope'"):
        load_config(p)
    p = _cfg(tmp_path, "")
    with pytest.raises(ConfigError, match="declares no gate"):
        load_config(p)


def test_unknown_top_level_section_is_an_error(tmp_path):
    p = _cfg(tmp_path, '[[gates]]\ntype = "sample_size"\nmin_n = 1\n', extra="[evaluaton]\nx = 1\n")
    with pytest.raises(ConfigError, match="did you mean 'evaluation'"):
        load_config(p)


# --------------------------------------------------------------------------- decisions


GATES = """
[[gates]]
id = "n"
type = "sample_size"
min_n = 2000

[[gates]]
id = "floor"
type = "metric"
metric = "ndcg@10"
bound = "ci_low"
op = ">="
threshold = 0.55

[[gates]]
id = "better"
type = "change"
metric = "ndcg@10"
significant = true

[[gates]]
id = "ni"
type = "non_inferiority"
metric = "recall@20"
margin = 0.01

[[gates]]
id = "ece"
type = "metric"
metric = "ece"
bound = "ci_high"
op = "<="
threshold = 0.03
"""


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    p = _cfg(tmp_path_factory.mktemp("pass"), GATES)
    return p, _run(p)


def test_passing_config_passes_with_evidence(passing):
    _, run = passing
    r = run.report
    assert run.exit_code == 0 and r["verdict"] == "pass"
    assert [g["status"] for g in r["gates"]] == ["pass"] * 5
    floor = _gate(r, "floor")
    m = r["results"]["evaluation"]["cand"]["metrics"]["ndcg@10"]
    assert floor["bound"] == m["ci_low"] and floor["value"] == m["mean"] and floor["n"] == m["n"]
    assert floor["ci_low"] < floor["value"] < floor["ci_high"]
    # the two hypothesis gates form one Holm family: the smaller p is doubled
    ps = sorted([_gate(r, "better")["p_value"], _gate(r, "ni")["p_value"]])
    adj = sorted([_gate(r, "better")["p_adjusted"], _gate(r, "ni")["p_adjusted"]])
    assert adj[0] == pytest.approx(min(1.0, 2 * ps[0]), rel=1e-12)
    assert adj[1] == pytest.approx(max(adj[0], ps[1]), rel=1e-12)


def test_non_inferiority_p_value_matches_shifted_paired_t(passing):
    from scipy import stats

    import receval

    _, run = passing
    d = pl.read_parquet(DEMO / "data" / "labels.parquet")
    a = receval.evaluate(str(DEMO / "data" / "run_cand.parquet"), d, ["recall@20"], n_boot=10).per_request_polars()
    b = receval.evaluate(str(DEMO / "data" / "run_prod.parquet"), d, ["recall@20"], n_boot=10).per_request_polars()
    j = a.join(b, on="request_id", suffix="_b")
    diff = (j["recall@20"] - j["recall@20_b"]).to_numpy()
    want = stats.ttest_1samp(diff + 0.01, 0.0, alternative="greater").pvalue
    assert _gate(run.report, "ni")["p_value"] == pytest.approx(want, rel=1e-9)


def test_report_is_byte_identical_on_rerun(passing):
    p, run = passing
    again = _run(p)
    assert report_json(run.report) == report_json(again.report)
    text = report_json(run.report)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["schema_version"] == 1


def test_failing_gate_exits_1_and_says_why(tmp_path):
    gates = GATES.replace("threshold = 0.55", "threshold = 0.70")
    run = _run(_cfg(tmp_path, gates))
    assert run.exit_code == 1 and run.report["verdict"] == "fail"
    g = _gate(run.report, "floor")
    assert g["status"] == "fail" and "violates >= 0.7" in g["message"]
    assert run.report["summary"] == {"gates": 5, "passed": 4, "failed": 1, "errors": 0}


def test_lower_is_better_metrics_use_their_direction(tmp_path):
    # ECE gets worse when it grows: a change gate reads the registry's direction
    gates = '[[gates]]\nid = "ece-change"\ntype = "change"\nmetric = "ece"\nmin_change = 0.0\n'
    run = _run(_cfg(tmp_path, gates))
    g = _gate(run.report, "ece-change")
    row = next(c for c in run.report["results"]["comparison"]["comparisons"] if c["metric"] == "ece")
    assert g["bound"] == pytest.approx(-row["diff"])
    assert g["status"] == ("pass" if row["diff"] <= 0 else "fail")


def test_non_inferiority_fails_with_a_tiny_margin_on_a_worse_metric(tmp_path):
    # the unsafe candidate has a worse MRR than production: not non-inferior with margin 0
    gates = '[[gates]]\nid = "ni"\ntype = "non_inferiority"\nmetric = "mrr@10"\nmargin = 0.0\n'
    run = _run(_cfg(tmp_path, gates, cand="unsafe"))
    g = _gate(run.report, "ni")
    assert g["value"] < 0 and g["status"] == "fail" and run.exit_code == 1
    assert "not rejected" in g["message"]


# --------------------------------------------------------------------------- fail closed


def test_missing_input_file_is_an_error_not_a_pass(tmp_path):
    p = _cfg(tmp_path, GATES)
    p.write_text(p.read_text().replace("run_cand.parquet", "run_gone.parquet"))
    run = _run(p)
    assert run.exit_code == 2 and run.report["verdict"] == "error"
    assert any("file not found" in e["message"] for e in run.report["errors"])
    assert all(g["status"] == "error" for g in run.report["gates"])


def test_bad_input_data_is_an_error(tmp_path):
    bad = pl.read_parquet(DEMO / "data" / "run_cand.parquet").with_columns(
        pl.when(pl.int_range(pl.len()) < 7).then(None).otherwise(pl.col("score")).alias("score"))
    bad.write_parquet(tmp_path / "bad.parquet")
    p = _cfg(tmp_path, GATES)
    p.write_text(p.read_text().replace((DEMO / "data" / "run_cand.parquet").as_posix(), (tmp_path / "bad.parquet").as_posix()))
    run = _run(p)
    assert run.exit_code == 2
    msg = run.report["errors"][0]["message"]
    assert "score" in msg and "7 rows" in msg


def test_gate_on_a_section_that_is_not_configured_errors(tmp_path):
    gates = GATES + '\n[[gates]]\nid = "safe"\ntype = "safety"\nquantity = "slot_share"\nthreshold = 0.05\n'
    run = _run(_cfg(tmp_path, gates))
    g = _gate(run.report, "safe")
    assert g["status"] == "error" and "audits.safety" in g["message"]
    assert run.exit_code == 2 and run.report["verdict"] == "error"


def test_intervals_cannot_be_switched_off(tmp_path):
    # gates may read interval bounds, so a config without bootstrap replicates is rejected up front
    p = _cfg(tmp_path, GATES)
    p.write_text(p.read_text().replace("n_boot = 200", "n_boot = 0"))
    with pytest.raises(ConfigError, match=r"settings\.n_boot \(line \d+\): must lie in \[1"):
        load_config(p)


def test_population_metric_non_inferiority_is_an_error(tmp_path):
    gates = '[[gates]]\nid = "ni"\ntype = "non_inferiority"\nmetric = "ece"\nmargin = 0.01\n'
    run = _run(_cfg(tmp_path, gates))
    g = _gate(run.report, "ni")
    assert g["status"] == "error" and "population-level" in g["message"]


# --------------------------------------------------------------------------- audits and OPE gates


AUDITS = """
[audits.safety]
run = "{run}"
flags = "catalog"
flag_column = "flagged"
user_groups = "users"
group_column = "age_band"

[audits.exposure]
run = "{run}"
groups = "catalog"
group_column = "provider_tier"
k = 10
"""

AUDIT_GATES = """
[[gates]]
id = "safe"
type = "safety"
quantity = "slot_share"
bound = "ci_high"
threshold = 0.05

[[gates]]
id = "safe-by-age"
type = "safety"
quantity = "slot_share"
group = "55+"
threshold = 0.05

[[gates]]
id = "exposure"
type = "exposure"
quantity = "share_ratio"
within = [0.75, 1.33]
"""


def test_safety_gate_fails_only_for_the_unsafe_candidate(tmp_path):
    good = _run(_cfg(tmp_path, AUDIT_GATES, extra=AUDITS.format(run="cand"), name="a.toml"))
    bad = _run(_cfg(tmp_path, AUDIT_GATES, extra=AUDITS.format(run="unsafe"), cand="unsafe", name="b.toml"))
    assert _gate(good.report, "safe")["status"] == "pass"
    assert _gate(bad.report, "safe")["status"] == "fail" and bad.exit_code == 1
    overall = bad.report["results"]["audits"]["safety"]["overall"]["slot_share"]
    assert _gate(bad.report, "safe")["bound"] == overall["high"]
    age = _gate(bad.report, "safe-by-age")
    assert age["subject"].endswith("group=55+") and age["details"][0]["group"] == "55+"
    ex = _gate(good.report, "exposure")
    assert len(ex["details"]) == 3 and ex["op"] == "within"


def test_suppressed_groups_do_not_decide(tmp_path):
    p = _cfg(tmp_path, AUDIT_GATES, extra=AUDITS.format(run="cand"))
    p.write_text(p.read_text().replace("seed = 1", "seed = 1\nmin_group_size = 100000"))
    run = _run(p)
    g = _gate(run.report, "exposure")
    assert g["status"] == "error" and "suppressed" in g["message"]


def test_ope_gates_on_obd(tmp_path):
    obd = (DEMO.parent / "obd").as_posix()
    extra = """
[counterfactual]
logs = "rnd"
policy_log = "bts"
estimators = ["ips", "snips"]
reward_range = [0, 1]
reward_model = "none"
"""
    gates = """
[[gates]]
id = "lift"
type = "ope"
estimator = "snips"
lift = true
bound = "ci_low"
op = ">"
threshold = -0.002

[[gates]]
id = "lift-positive"
type = "ope"
estimator = "snips"
lift = true

[[gates]]
id = "diag"
type = "ope_diagnostics"
estimator = "ips"
min_ess_share = 0.5
"""
    text = BASE.format(d=(DEMO / "data").as_posix(), cand="cand")
    text = text.replace("[evaluation]", f'rnd = {{ path = "{obd}/random/all/all.csv.gz", format = "obd" }}\n'
                        f'bts = {{ path = "{obd}/bts/all/all.csv.gz", format = "obd" }}\n\n[evaluation]')
    p = tmp_path / "ope.toml"
    p.write_text(text + extra + gates)
    run = _run(p)
    r = run.report
    lift = _gate(r, "lift")
    est = {e["name"]: e for e in r["results"]["counterfactual"]["estimates"]}
    logged = r["results"]["counterfactual"]["data"]["logged_policy_value"]
    assert lift["value"] == pytest.approx(est["snips"]["value"] - logged, abs=1e-15)
    assert lift["status"] == "pass"
    # about 40 clicks: the lift's interval straddles 0, so "lift > 0" fails rather than passing on noise
    assert _gate(r, "lift-positive")["status"] == "fail" and _gate(r, "lift-positive")["ci_low"] < 0
    diag = _gate(r, "diag")
    assert diag["status"] == "fail" and diag["value"] == pytest.approx(est["ips"]["diagnostics"]["ess_share"])


def test_lift_estimator_matches_difference_and_is_paired():
    from receval.counterfactual import IPS, SNIPS, estimate_many, logged_feedback
    from receval.counterfactual.lift import Lift

    rng = np.random.default_rng(3)
    n = 4000
    import pandas as pd

    p_log = rng.uniform(0.2, 0.8, n)
    log = pd.DataFrame({"request_id": np.arange(n), "item_id": rng.integers(0, 2, n), "reward": rng.binomial(1, 0.3, n),
                        "propensity": p_log, "target_probability": rng.uniform(0.1, 0.9, n)})
    d = logged_feedback(log, reward_range=(0, 1))
    res = estimate_many([IPS(), SNIPS(), Lift(IPS()), Lift(SNIPS(), relative=True)], d, n_boot=300)
    mean_r = log["reward"].mean()
    assert res[2].value == pytest.approx(res[0].value - mean_r, abs=1e-14)
    assert res[3].value == pytest.approx(res[1].value / mean_r - 1, abs=1e-12)
    assert res[2].name == "lift(ips)" and res[3].name == "relative_lift(snips)"
    assert res[2].ci_low < res[2].value < res[2].ci_high
    with pytest.raises(Exception, match="base must be an estimator"):
        Lift(None)


# --------------------------------------------------------------------------- provenance and verify


def test_provenance_fingerprints_and_verify(tmp_path):
    from receval.gate import verify_report

    data = tmp_path / "data"
    shutil.copytree(DEMO / "data", data)
    text = BASE.replace("{d}", "data").format(cand="cand") + GATES
    cfg = tmp_path / "g.toml"
    cfg.write_text(text)
    run = _run(cfg)
    prov = run.report["provenance"]
    import hashlib

    assert prov["config"]["sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    lab = next(i for i in prov["inputs"] if i["name"] == "labels")
    assert lab["path"] == "data/labels.parquet"
    assert lab["sha256"] == hashlib.sha256((data / "labels.parquet").read_bytes()).hexdigest()
    assert [i["name"] for i in prov["inputs"]] == sorted(i["name"] for i in prov["inputs"])
    assert prov["versions"]["python"] and prov["versions"]["receval"]
    rp = tmp_path / "report.json"
    rp.write_text(report_json(run.report))
    ok, lines = verify_report(rp)
    assert ok and all(line.startswith("OK") for line in lines)
    # change one input: verify notices
    lab_df = pl.read_parquet(data / "labels.parquet")
    lab_df.head(len(lab_df) - 1).write_parquet(data / "labels.parquet")
    ok, lines = verify_report(rp)
    assert not ok and any(line.startswith("CHANGED") and "labels" in line for line in lines)
    os.remove(data / "users.parquet")
    ok, lines = verify_report(rp)
    assert any(line.startswith("MISSING") and "users" in line for line in lines)


def test_golden_decisions(passing, tmp_path):
    """Gate ids, types, statuses, subjects and thresholds of the passing and failing runs.

    Regenerate with RECEVAL_UPDATE_GOLDEN=1 after an intended change.
    """
    _, run_pass = passing
    run_fail = _run(_cfg(tmp_path, GATES.replace("threshold = 0.55", "threshold = 0.70")))

    def digest(report):
        keep = ("id", "type", "status", "subject", "metric", "op", "threshold", "n")
        return {"verdict": report["verdict"], "summary": report["summary"],
                "gates": [{k: g[k] for k in keep} for g in report["gates"]]}

    got = {"pass": digest(run_pass.report), "fail": digest(run_fail.report)}
    path = GOLDEN / "gate_decisions.json"
    if os.environ.get("RECEVAL_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    assert got == want


def test_error_report_shape():
    from receval.gate.runner import error_report

    r = error_report("config", "bad key")
    assert r["verdict"] == "error" and r["errors"] == [{"where": "config", "message": "bad key"}]
    assert r["schema"] == "receval.report" and not math.isnan(r["schema_version"])


def test_data_quality_gate_fails_on_a_dirty_input(tmp_path):
    dirty = pl.read_parquet(DEMO / "data" / "run_cand.parquet").with_columns(
        pl.when(pl.int_range(pl.len()) < 30).then(None).otherwise(pl.col("score")).alias("score"))
    dirty.write_parquet(tmp_path / "dirty.parquet")
    extra = """
[audits.data_quality]
inputs = ["cand", "dirty", "labels"]
"""
    gates = """
[[gates]]
id = "clean-cand"
type = "data_quality"
input = "cand"

[[gates]]
id = "clean-dirty"
type = "data_quality"
input = "dirty"
max_missing_rate = 0.0001
"""
    p = _cfg(tmp_path, gates, extra=extra)
    p.write_text(p.read_text().replace("[evaluation]", f'dirty = "{(tmp_path / "dirty.parquet").as_posix()}"\n\n[evaluation]'))
    run = _run(p)
    assert _gate(run.report, "clean-cand")["status"] == "pass"
    g = _gate(run.report, "clean-dirty")
    assert g["status"] == "fail" and g["value"] == pytest.approx(30 / len(dirty))
    q = run.report["results"]["audits"]["data_quality"]
    assert q["labels"]["kind"] == "labels" and q["cand"]["kind"] == "run"


def test_popularity_lift_and_miscalibration_gates(tmp_path):
    extra = """
[audits.popularity]
run = "cand"
catalog = "catalog"
{hist}

[audits.miscalibration]
run = "cand"
history = "history"
catalog = "catalog"
"""
    gates = """
[[gates]]
id = "lift"
type = "popularity"
quantity = "delta_gap"
threshold = 0.6

[[gates]]
id = "miscal"
type = "miscalibration"
quantity = "miscalibration"
threshold = 0.1
"""
    hist = f'history = "{(DEMO / "data" / "history.parquet").as_posix()}"'
    base = BASE.replace('[evaluation]', hist + "\n\n[evaluation]")
    p = tmp_path / "a.toml"
    p.write_text(base.format(d=(DEMO / "data").as_posix(), cand="cand") + extra.format(hist='history = "history"') + gates)
    run = _run(p)
    lift = run.report["results"]["audits"]["popularity"]["lift"]["overall"]["delta_gap"]["value"]
    assert _gate(run.report, "lift")["value"] == lift and _gate(run.report, "lift")["status"] == ("pass" if lift <= 0.6 else "fail")
    m = _gate(run.report, "miscal")
    assert m["status"] == "fail" and m["value"] > 0.1
    # without a history the lift is undefined: error, not pass
    p.write_text(base.format(d=(DEMO / "data").as_posix(), cand="cand") + extra.format(hist="") + gates)
    g = _gate(_run(p).report, "lift")
    assert g["status"] == "error" and "history" in g["message"]


def test_fairness_gate_reads_the_disparity_audit(tmp_path):
    extra = """
[audits.disparity]
run = "cand"
labels = "labels"
metrics = ["ndcg@10"]
attributes = "users"
sensitive = ["age_band", "country"]
"""
    gates = """
[[gates]]
id = "loose"
type = "fairness"
metric = "ndcg@10"
attribute = "age_band"

[[gates]]
id = "tight"
type = "fairness"
metric = "ndcg@10"
attribute = "country"
ratio = [0.999, 1.001]

[[gates]]
id = "diff"
type = "fairness"
metric = "ndcg@10"
attribute = "age_band & country"
max_difference = 0.5

[[gates]]
id = "unknown"
type = "fairness"
metric = "ndcg@10"
attribute = "gender"
"""
    run = _run(_cfg(tmp_path, gates, extra=extra))
    r = run.report
    audit = r["results"]["audits"]["disparity"]
    age = next(a for a in audit["attributes"] if a["attribute"] == "age_band")["metrics"]["ndcg@10"]
    loose = _gate(r, "loose")
    assert loose["status"] == "pass" and loose["threshold"] == [0.8, 1.25]
    assert {d["group"] for d in loose["details"]} == {g["group"] for g in age["groups"]}
    for d in loose["details"]:
        g = next(x for x in age["groups"] if x["group"] == d["group"])
        assert d["ratio"] == g["ratio"]["value"]
    tight = _gate(r, "tight")
    assert tight["status"] == "fail" and not 0.999 <= tight["value"] <= 1.001
    assert _gate(r, "diff")["status"] == "pass"
    unknown = _gate(r, "unknown")
    assert unknown["status"] == "error" and "gender" in unknown["message"]
    assert run.exit_code == 2  # one undecidable gate: the verdict is error, not fail or pass


def test_small_slices_are_suppressed_in_the_report(tmp_path):
    p = _cfg(tmp_path, GATES)
    text = p.read_text().replace("seed = 1", "seed = 1\nmin_group_size = 500")
    text = text.replace('metrics = ["ndcg@10", "recall@20", "ece"]',
                        'metrics = ["ndcg@10", "recall@20", "ece"]\nby = ["age_band"]\nattributes = "users"')
    p.write_text(text)
    r = _run(p).report
    rows = r["results"]["evaluation"]["cand"]["slices"]
    small = [x for x in rows if x["n"] < 500]
    big = [x for x in rows if x["n"] >= 500]
    assert small and big
    assert all(x["suppressed"] and x["mean"] is None and x["ci_low"] is None for x in small)
    assert all(not x["suppressed"] and x["mean"] is not None for x in big)
    assert r["model"]["run"] == "cand"
