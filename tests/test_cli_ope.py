"""The `receval ope` command: JSON and table output, equality with the Python API, exit codes."""

from __future__ import annotations

import json

import pytest

from receval.cli import main
from receval.counterfactual import IPS, SNIPS, logged_feedback
from receval.counterfactual.synthetic import simulate


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def bandit():
    return simulate(400, n_positions=2, seed=3)


@pytest.fixture()
def files(tmp_path, bandit):
    log = tmp_path / "log.parquet"
    target = tmp_path / "target.parquet"
    bandit.log.drop(columns=["target_probability", "q_true"]).to_parquet(log)
    bandit.target.drop(columns=["q_true"]).to_parquet(target)
    return str(log), str(target)


def test_json_ips_equals_python_api(capsys, files, bandit):
    log, target = files
    code, out, err = run_cli(
        capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "--estimator", "snips",
        "--reward-range", "0,1", "--n-boot", "200", "--seed", "4", "--output", "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["estimates"]) == ["ips", "snips"]
    data = logged_feedback(bandit.log.drop(columns=["target_probability"]), bandit.target, reward_range=(0, 1))
    ips = IPS().estimate(data, n_boot=200, seed=4)
    got = doc["estimates"]["ips"]
    assert got["value"] == pytest.approx(ips.value, rel=1e-12)
    assert got["ci_low"] == pytest.approx(ips.ci_low, rel=1e-12)
    assert got["ci_high"] == pytest.approx(ips.ci_high, rel=1e-12)
    assert got["n"] == 400
    assert doc["estimates"]["snips"]["value"] == pytest.approx(SNIPS().point(data), rel=1e-12)
    s = doc["settings"]
    assert s["reward_range"] == [0.0, 1.0] and s["n_boot"] == 200 and s["n_rows"] == 800
    assert s["reward_model"] is None


def test_model_based_estimators_and_normal_interval(capsys, files):
    log, target = files
    code, out, err = run_cli(
        capsys, "ope", "--logs", log, "--target", target, "-e", "dm", "-e", "dr", "-e", "clipped_ips",
        "--clip", "3", "--context", "context", "--interval", "normal", "--output", "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["estimates"]["clipped_ips"]["name"] == "clipped_ips(clip=3)"
    assert doc["estimates"]["dr"]["interval"].startswith("normal")
    assert doc["settings"]["reward_model"]["features"] == ["context", "item_id", "position"]
    for r in doc["estimates"].values():
        assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_table_output(capsys, files):
    log, target = files
    code, out, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "-e", "snips", "--n-boot", "50")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "| estimator | value | CI | n | ESS% | warnings |"
    assert lines[2].startswith("| ips | ") and lines[3].startswith("| snips | ")
    assert "| 400 |" in lines[2]
    assert "800 rows, 400 requests" in out


def test_column_mapping_and_click_as_reward(capsys, tmp_path, bandit):
    log = bandit.log.drop(columns=["target_probability"]).rename(columns={"reward": "click", "propensity": "pscore"})
    log.to_csv(tmp_path / "log.csv", index=False)
    bandit.target.rename(columns={"probability": "p"}).to_csv(tmp_path / "t.csv", index=False)
    code, out, err = run_cli(
        capsys, "ope", "--logs", str(tmp_path / "log.csv"), "--target", str(tmp_path / "t.csv"), "-e", "ips",
        "--column", "propensity=pscore", "--column", "probability=p", "--output", "json", "--n-boot", "10",
    )
    assert code == 0, err
    data = logged_feedback(bandit.log.drop(columns=["target_probability"]), bandit.target)
    assert json.loads(out)["estimates"]["ips"]["value"] == pytest.approx(IPS().point(data), rel=1e-9)


def test_bad_estimator_name_exit_2(capsys, files):
    log, target = files
    code, out, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "-e", "magic")
    assert code == 2 and out == ""
    assert "unknown estimator(s) ['magic']" in err and "Traceback" not in err


def test_missing_file_exit_2(capsys, files, tmp_path):
    _, target = files
    code, _, err = run_cli(capsys, "ope", "--logs", str(tmp_path / "nope.parquet"), "--target", target, "-e", "ips")
    assert code == 2
    assert "file not found" in err and "nope.parquet" in err and "Traceback" not in err


def test_bad_propensity_exit_2_names_column(capsys, tmp_path, bandit):
    log = bandit.log.drop(columns=["target_probability"]).copy()
    log.loc[[0, 5], "propensity"] = 0.0
    log.to_parquet(tmp_path / "bad.parquet")
    bandit.target.to_parquet(tmp_path / "t.parquet")
    code, out, err = run_cli(capsys, "ope", "--logs", str(tmp_path / "bad.parquet"), "--target", str(tmp_path / "t.parquet"), "-e", "ips")
    assert code == 2 and out == ""
    assert "propensity: must lie in (0, 1]; 2 rows violate this" in err
    assert "Traceback" not in err


def test_bad_reward_range_exit_2(capsys, files):
    log, target = files
    code, _, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "--reward-range", "0")
    assert code == 2 and "--reward-range expects LOW,HIGH" in err
    code, _, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "--context", "nope")
    assert code == 2 and "--context column(s) ['nope']" in err


def test_logging_file_enables_the_context_support_check(capsys, tmp_path, files, bandit):
    log, target = files
    logging = bandit.logging.copy()
    # request 0, position 1: move the logging mass of one item that was not logged onto another
    logged = int(bandit.log.query("request_id == 0 and position == 1").item_id.iloc[0])
    y, z = [i for i in range(3) if i != logged][:2]
    ctx = (logging.request_id == 0) & (logging.position == 1)
    p_y = float(logging.loc[ctx & (logging.item_id == y), "probability"].iloc[0])
    logging.loc[ctx & (logging.item_id == z), "probability"] += p_y
    logging.loc[ctx & (logging.item_id == y), "probability"] = 0.0
    path = tmp_path / "logging.parquet"
    logging.to_parquet(path)
    code, out, err = run_cli(
        capsys, "ope", "--logs", log, "--target", target, "--logging", str(path), "-e", "ips",
        "--n-boot", "50", "--output", "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    support = doc["settings"]["support"]
    expected = float(bandit.target.query("request_id == 0 and position == 1 and item_id == @y").probability.iloc[0])
    assert support["context_unsupported_triples"] == 1
    assert support["context_unsupported_target_mass"] == pytest.approx(expected / 800)
    assert doc["settings"]["logging"] == str(path)
    assert any("could never" in w for w in doc["estimates"]["ips"]["warnings"])
    # a logging file that contradicts the log's propensities: exit 2, the rule named
    logging.loc[ctx & (logging.item_id == logged), "probability"] = 0.0
    logging.to_parquet(path)
    code, out, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "--logging", str(path), "-e", "ips")
    assert code == 2
    assert "the logger showed it" in err


# ---------------------------------------------------------------- slate estimators


@pytest.fixture(scope="module")
def slate_sim():
    from receval.counterfactual import simulate_slates

    return simulate_slates(600, n_slots=3, seed=5)


def test_slate_estimators_json_equal_python_api(capsys, tmp_path, slate_sim):
    from receval.counterfactual import (
        RewardInteractionIPS,
        SNPseudoInverse,
        StandardIPS,
        estimate_slates,
    )

    path = tmp_path / "slates.parquet"
    slate_sim.log.to_parquet(path)
    code, out, err = run_cli(
        capsys, "ope", "--logs", str(path), "-e", "standard_ips", "-e", "rips", "-e", "sn_pi",
        "--n-boot", "200", "--seed", "3", "--reward-range", "0,1", "--output", "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["estimates"]) == ["standard_ips", "rips", "sn_pi"]
    want = estimate_slates([StandardIPS(), RewardInteractionIPS(), SNPseudoInverse()], slate_sim.data, n_boot=200, seed=3)
    for got, ref in zip(doc["estimates"].values(), want, strict=True):
        assert got["name"] == ref.name
        assert (got["value"], got["ci_low"], got["ci_high"]) == pytest.approx((ref.value, ref.ci_low, ref.ci_high), rel=1e-12)
        assert got["n"] == 600
    s = doc["settings"]
    assert (s["n_slates"], s["n_slots"], s["n_rows"], s["varying_length"]) == (600, 3, 1800, False)


def test_slate_target_file_varying_length_and_table(capsys, tmp_path):
    from receval.counterfactual import (
        IndependentIPS,
        SNIndependentIPS,
        estimate_slates,
        simulate_slates,
    )

    sim = simulate_slates(500, n_slots=4, min_slots=2, seed=6)
    log = sim.log.drop(columns=["target_probability", "target_conditional", "target_slate_probability",
                                "propensity_conditional", "slate_propensity"])
    target = sim.log[["slate_id", "position"]].assign(probability=sim.log["target_probability"])
    log.to_csv(tmp_path / "log.csv", index=False)
    target.to_csv(tmp_path / "target.csv", index=False)
    argv = ["ope", "--logs", str(tmp_path / "log.csv"), "--target", str(tmp_path / "target.csv"),
            "-e", "independent_ips", "-e", "sn_independent_ips", "--n-boot", "100"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "--varying-length" in err
    code, out, err = run_cli(capsys, *argv, "--varying-length")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "| estimator | value | CI | n | ESS% | warnings |"
    ref = estimate_slates([IndependentIPS(), SNIndependentIPS()], sim.data, n_boot=100)
    assert lines[2].startswith(f"| independent_ips | {ref[0].value:.6f} |")
    assert f"{int(sim.data.length.sum())} rows, 500 slates of 2-4 slots" in out


def test_slate_cli_usage_errors(capsys, files, tmp_path, slate_sim):
    log, target = files
    code, _, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "-e", "rips")
    assert code == 2 and "read different logs" in err
    code, _, err = run_cli(capsys, "ope", "--logs", log, "--target", target, "-e", "ips", "--varying-length")
    assert code == 2 and "slate estimators only" in err
    code, _, err = run_cli(capsys, "ope", "--logs", log, "-e", "ips")
    assert code == 2 and "--target is required" in err
    path = tmp_path / "slates.parquet"
    slate_sim.log.to_parquet(path)
    code, _, err = run_cli(capsys, "ope", "--logs", str(path), "-e", "rips", "--context", "context")
    assert code == 2 and "--context do not apply" in err
    code, _, err = run_cli(capsys, "ope", "--logs", str(path), "-e", "standard_ips", "-e", "sn_magic")
    assert code == 2 and "unknown estimator(s) ['sn_magic']" in err
