"""The launch gate fails closed on configs with ``[audits.*]`` and ``[counterfactual]`` sections.

Generated configs (receval.testing.section_gate_configs) with broken keys, values, inputs and gates end
with a ConfigError naming the key (exit 2) or an ``error`` verdict (exit 2) whose report says why — never
exit 0 or 1 on anything broken, never an exception other than a receval error (exit 3 is for internal
errors, i.e. bugs). Legal configs are decided (exit 0 or 1) with no section error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from receval.gate import ConfigError, load_config, run_gate
from receval.gate.runner import report_json
from receval.testing import SECTION_INPUTS, section_gate_configs

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


def _section_data(d: Path, *, n_req: int = 24, n_items: int = 6, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    req = np.repeat(np.arange(n_req), n_items)
    item = np.tile(np.arange(n_items), n_req)
    cand = pd.DataFrame({"request_id": req, "item_id": item, "score": rng.normal(size=len(req)),
                         "user_id": req % 6, "prediction": rng.uniform(size=len(req))})
    frames = {
        "cand": cand,
        "prod": cand.assign(score=rng.normal(size=len(req)), prediction=rng.uniform(size=len(req))),
        "labels": pd.DataFrame({"request_id": req, "item_id": item, "label": rng.integers(0, 2, len(req))}),
        "users": pd.DataFrame({"user_id": np.arange(6), "country": ["DE", "FR", "<b>x</b>"] * 2,
                               "age_band": ["<25", "25+"] * 3}),
        "catalog": pd.DataFrame({"item_id": np.arange(n_items), "provider": ["big", "small", "small"] * 2,
                                 "popularity": rng.integers(0, 50, n_items), "flagged": [True] + [False] * 5,
                                 "category": ["a", "b", "c"] * 2}),
        "history": pd.DataFrame({"user_id": np.repeat(np.arange(6), 3), "item_id": rng.integers(0, n_items, 18)}),
    }
    n_log = 60
    shown = rng.integers(0, 3, n_log)
    frames["logs"] = pd.DataFrame({"request_id": np.arange(n_log), "item_id": shown, "position": 1,
                                   "reward": rng.integers(0, 2, n_log).astype(float), "propensity": 1 / 3,
                                   "user_feature_0": rng.integers(0, 3, n_log)})
    frames["target"] = pd.DataFrame({"request_id": np.repeat(np.arange(n_log), 3), "item_id": np.tile([0, 1, 2], n_log),
                                     "position": 1, "probability": np.tile([0.5, 0.3, 0.2], n_log)})
    bad = cand.copy()
    bad.loc[3, "score"] = np.nan
    bad.loc[4, "prediction"] = np.nan
    frames["cand_nan"] = bad
    cat = frames["catalog"].astype({"flagged": object})
    cat.loc[1, "flagged"] = None
    cat.loc[2, "popularity"] = -5
    frames["catalog_bad"] = cat
    frames["logs_bad"] = frames["logs"].assign(propensity=[0.0] + [1 / 3] * (n_log - 1))
    assert set(frames) == set(SECTION_INPUTS)
    paths = {}
    for name, df in frames.items():
        paths[name] = d / f"{name}.parquet"
        df.to_parquet(paths[name])
    return paths


@pytest.fixture(scope="module")
def section_data(tmp_path_factory):
    return _section_data(tmp_path_factory.mktemp("sdata"))


def _texts(report: dict) -> str:
    return "\n".join([e["message"] for e in report["errors"]] + [str(g.get("message")) for g in report["gates"]])


def check_section_config(case, tmp: Path) -> tuple[int | None, dict | None]:
    """Run one generated config; assert the fail-closed contract. Returns (exit code, report)."""
    p = tmp / "g.toml"
    p.write_text(case.value, encoding="utf-8")
    try:
        cfg = load_config(p)
    except ConfigError as e:
        assert not case.valid, f"legal config refused: {e}\n{case.value}"
        assert case.column.split(".")[0] in str(e), (case, str(e))
        if case.fragment != case.column:
            assert case.fragment in str(e) or case.column in str(e), (case, str(e))
        return None, None
    run = run_gate(cfg)  # any exception but a receval one fails the test (the CLI would exit 3)
    r = run.report
    json.loads(report_json(r))
    statuses = [g["status"] for g in r["gates"]]
    expected = 2 if ("error" in statuses or r["errors"]) else (1 if "fail" in statuses else 0)
    assert run.exit_code == expected, (statuses, r["errors"])
    for g in r["gates"]:
        assert g["status"] in ("pass", "fail", "error") and g["message"]
        if g["status"] == "pass":
            assert g.get("value") is None or math.isfinite(g["value"])
    if case.valid:
        assert not r["errors"], (r["errors"], case.value)  # legal config, legal data: every section computed
        assert run.exit_code in (0, 1), [g for g in r["gates"] if g["status"] == "error"]
    elif case.broken == "audit_broken_input:data_quality":
        # profiling a broken input is the data-quality audit's job: its gate fails (exit 1) or errors, never passes
        assert run.exit_code in (1, 2)
        assert any(g["type"] == "data_quality" and g["status"] in ("fail", "error") for g in r["gates"]), r["gates"]
    else:
        assert run.exit_code == 2, (case, statuses)  # never 0 (or 1) on anything broken
        assert case.fragment in _texts(r), (case, _texts(r))  # ... and the report says why
    return run.exit_code, r


# each example runs a whole gate (audits, a reward model): half the profile's examples keeps CI quick
@settings(max_examples=max(20, settings.default.max_examples // 2), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_generated_section_configs_fail_closed(section_data, tmp_path_factory, data):
    case = data.draw(section_gate_configs({k: str(v) for k, v in section_data.items()}))
    code, r = check_section_config(case, tmp_path_factory.mktemp("scfg"))
    event(f"{(case.broken or 'legal').split(':')[0]} -> {'config error' if code is None else f'exit {code}'}")
    if r is not None and data.draw(st.booleans()):
        from receval.reporting import render_card_html, render_junit, render_report_md

        assert "<script>alert(1)</script>" not in render_card_html(r, figures=False)
        render_report_md(r)
        render_junit(r)


# --------------------------------------------------------------------------- regressions found by the generator

_MINIMAL = {
    "exposure": {"run": "cand", "groups": "catalog", "group_column": "provider"},
    "popularity": {"run": "cand", "catalog": "catalog"},
    "miscalibration": {"run": "cand", "history": "history", "catalog": "catalog"},
    "safety": {"run": "cand", "flags": "catalog"},
    "drift": {"baseline": "prod", "current": "cand", "columns": ["prediction"]},
    "disparity": {"run": "cand", "labels": "labels", "attributes": "users", "sensitive": ["country"]},
    "data_quality": {"inputs": ["cand"]},
}


@pytest.mark.parametrize("audit, key, value", [
    ("drift", "bins", "ten"),            # was: ValueError from int() deep in the runner (exit 3)
    ("drift", "bins", 2.5),              # was: silently truncated to 2
    ("drift", "columns", 5),             # was: drift_audit on the integer column name 5
    ("safety", "flag_column", ["flagged"]),  # was: a section error about a column "['flagged']"
    ("exposure", "group_column", 5),
    ("exposure", "patience", "high"),
    ("popularity", "tail_quantile", "high"),
    ("popularity", "exclude_history", "no"),
    ("miscalibration", "alpha", "x"),
    ("safety", "negative_label", "neg"),
    ("disparity", "tolerance", "wide"),  # was: tuple("wide") = ('w', 'i', 'd', 'e') passed to the audit
    ("disparity", "intersections", "yes"),
    ("disparity", "sensitive", 3),
    ("data_quality", "inputs", ["cand", "cand"]),
])
def test_regression_wrongly_typed_audit_keys_are_config_errors_with_the_key_and_line(tmp_path, section_data, audit,
                                                                                      key, value):
    from receval.testing import _toml_table

    spec = {**_MINIMAL[audit], key: value}
    text = "\n".join(["[model]", 'name = "m"'] + _toml_table("[inputs]", {k: str(v) for k, v in section_data.items()})
                     + _toml_table(f"[audits.{audit}]", spec)
                     + _toml_table("[[gates]]", {"type": "sample_size", "min_n": 0})) + "\n"
    p = tmp_path / "g.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"audits\.{audit}\.{key}.* \(line \d+\)"):
        load_config(p)
