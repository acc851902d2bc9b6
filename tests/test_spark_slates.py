"""Slate off-policy estimators on Spark give the numbers and the errors of the in-memory path (local-mode Spark).

Random slates (fixed and varying length, integer and text ids whose byte
order differs from their numeric order, rows shuffled over partitions, some
slates whose logging conditionals differ from the marginals): values within
1e-9, bootstrap and normal intervals exactly equal (each slate's row of
per-slate columns is computed by the same code on the same numbers in the
same order, and the rows come back sorted by slate id as locally),
diagnostics and warnings equal. Bad input gets the same InputError (frame,
column, rule, count) as locally, before the reduction job.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_spark import _java_available, spark  # noqa: F401 - the shared session fixture
from test_spark_ope import same_error_before_the_reduction, sdf

from receval.counterfactual.slates import (
    IndependentIPS,
    PseudoInverse,
    RewardInteractionIPS,
    SNIndependentIPS,
    SNPseudoInverse,
    SNRewardInteractionIPS,
    SNStandardIPS,
    StandardIPS,
    estimate_slates,
    simulate_slates,
    slate_feedback,
)
from receval.engines.spark_slates import SparkSlateFeedback
from receval.errors import UsageError

ALL = [StandardIPS(), SNStandardIPS(), IndependentIPS(), SNIndependentIPS(), RewardInteractionIPS(),
       SNRewardInteractionIPS(), PseudoInverse(), SNPseudoInverse()]


def make_slates(seed: int, ids: str, *, n: int = 300, min_slots: int | None = None, separate_target=False):
    s = simulate_slates(n, seed=seed, n_slots=4, min_slots=min_slots)
    log = s.log.copy()
    rng = np.random.default_rng(seed)
    # a few slates whose logging conditionals are not the marginals (the PI warning)
    odd = log["slate_id"].isin(rng.choice(log["slate_id"].unique(), 5, replace=False))
    log.loc[odd, "propensity_conditional"] *= 0.9
    if ids == "text":
        log["slate_id"] = "s" + log["slate_id"].astype(str)  # "s10" < "s9": byte order != numeric order
    target = None
    if separate_target:
        target = log[["slate_id", "position"]].assign(
            probability=log["target_probability"], conditional_probability=log["target_conditional"],
            slate_probability=log["target_slate_probability"])
        log = log.drop(columns=["target_probability", "target_conditional", "target_slate_probability"])
    return log, target


def _same(a, b, exact: bool):
    assert (a.name, a.n, a.interval, a.level) == (b.name, b.n, b.interval, b.level)
    assert a.value == pytest.approx(b.value, rel=1e-9, abs=1e-12)
    if exact:
        np.testing.assert_array_equal([a.ci_low, a.ci_high], [b.ci_low, b.ci_high])
    assert a.diagnostics == b.diagnostics
    assert a.warnings == b.warnings


@pytest.mark.parametrize(
    "ids, min_slots, separate",
    [("int", None, False), ("text", None, True), ("int", 1, True), ("text", 2, False)],
)
def test_spark_equals_local_for_all_slate_estimators(spark, ids, min_slots, separate):  # noqa: F811
    log, target = make_slates(7 + (min_slots or 0), ids, min_slots=min_slots, separate_target=separate)
    kw = {"reward_range": (0, 1), "varying_length": min_slots is not None}
    local = slate_feedback(log, target, **kw)
    remote = slate_feedback(sdf(spark, log), None if target is None else sdf(spark, target, seed=1), **kw)
    assert isinstance(remote, SparkSlateFeedback)
    assert (remote.n_slates, remote.n_slots) == (local.n_slates, local.n_slots)
    for interval in ("bootstrap", "normal"):
        a = estimate_slates(ALL, local, n_boot=200, seed=3, interval=interval)
        b = estimate_slates(ALL, remote, n_boot=200, seed=3, interval=interval)
        for x, y in zip(a, b, strict=True):
            _same(x, y, exact=True)
    # the PI warning fires on both paths (some conditionals differ from the marginals)
    assert any("fill slots independently" in w for w in a[6].warnings)


def test_small_chunks_and_marginals_only(spark):  # noqa: F811
    log, _ = make_slates(3, "int", n=120, min_slots=2)
    log = log.drop(columns=["propensity_conditional", "target_conditional", "slate_propensity",
                            "target_slate_probability"])
    est = [IndependentIPS(), SNIndependentIPS(), PseudoInverse(), SNPseudoInverse()]
    local = slate_feedback(log, varying_length=True)
    remote = slate_feedback(sdf(spark, log), varying_length=True)
    remote.chunk_rows = 7  # many slate-complete chunks per partition
    for x, y in zip(estimate_slates(est, local, n_boot=100), estimate_slates(est, remote, n_boot=100), strict=True):
        _same(x, y, exact=True)
    assert est[1].point(remote) == pytest.approx(est[1].point(local), rel=1e-12)
    assert est[1].estimate(remote, n_boot=50).to_dict() == est[1].estimate(local, n_boot=50).to_dict()
    with pytest.raises(UsageError, match="standard"):
        estimate_slates([StandardIPS()], remote)


def _bad_cases():
    base = pd.DataFrame({
        "slate_id": [1, 1, 2, 2, 3, 3],
        "position": [1, 2, 1, 2, 1, 2],
        "reward": [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        "propensity": [0.5, 0.4, 0.3, 0.2, 0.6, 0.5],
        "target_probability": [0.2, 0.4, 0.5, 0.2, 0.1, 0.3],
    })
    cond = base.assign(propensity_conditional=base["propensity"], target_conditional=base["target_probability"],
                       slate_propensity=[0.2, 0.2, 0.06, 0.06, 0.3, 0.3],
                       target_slate_probability=[0.08, 0.08, 0.1, 0.1, 0.03, 0.03])
    target = base[["slate_id", "position"]].assign(probability=base["target_probability"])
    no_t = base.drop(columns=["target_probability"])
    return {
        "propensity": (base.assign(propensity=[0.0, 0.4, 1.5, 0.2, 0.6, 0.5]), None, {}),
        "reward": (base.assign(reward=[np.nan, 0.0, 3.0, 1.0, 0.0, 0.0]), None, {"reward_range": (0, 1)}),
        "target_prob": (base.assign(target_probability=[-0.1, 0.4, 0.5, np.nan, 0.1, 0.3]), None, {}),
        "length": (base.iloc[:5], None, {}),
        "positions": (base.assign(position=[1, 1, 1, 2, 1, 3]), None, {}),
        "positions_varying": (base.assign(position=[1, 1, 1, 2, 1, 3]), None, {"varying_length": True}),
        "slate_prob": (cond.assign(slate_propensity=[0.2, 0.3, 0.06, 0.06, 0.3, 0.3]), None, {}),
        "conditional": (cond.assign(propensity_conditional=[0.5, 0.0, 0.3, 0.2, 0.6, 0.5],
                                    slate_propensity=[0.2, 0.2, 1.2, 1.2, 0.3, 0.3]), None, {}),
        "overflow": (cond.assign(propensity_conditional=[1e-300, 1e-300, 0.3, 0.2, 0.6, 0.5],
                                 target_conditional=[1.0, 1.0, 0.5, 0.2, 0.1, 0.3]), None, {}),
        "null_slate_id": (base.assign(slate_id=pd.array([1, 1, None, None, 3, 3], dtype="Int64")), None, {}),
        "text_numbers": (base.assign(position=["1", "2", "1", "x", "1", "2"],
                                     reward=["1", "0", "0", "1", "0", "y"]), None, {}),
        "target_missing": (no_t, target.iloc[1:], {}),
        "target_duplicate": (no_t, pd.concat([target, target.iloc[:2]]), {}),
        "target_nan": (no_t, target.assign(probability=[np.nan, 0.4, 0.5, 0.2, 0.1, 0.3]), {}),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_gets_the_local_error_before_the_reduction(spark, case, monkeypatch):  # noqa: F811
    log, target, kw = _bad_cases()[case]
    remote = same_error_before_the_reduction(
        monkeypatch, lambda: slate_feedback(log, target, **kw),
        lambda: slate_feedback(sdf(spark, log), None if target is None else sdf(spark, target), **kw))
    assert all(v.examples for v in remote.violations
               if (v.column != "target" or "probability" in v.rule) and v.rule != "must not be null")


def test_usage_errors(spark):  # noqa: F811
    log = _bad_cases()["propensity"][0].assign(propensity=0.5)
    s = sdf(spark, log)
    with pytest.raises(UsageError, match=r"log is missing required column\(s\) \['propensity'\]"):
        slate_feedback(s.drop("propensity"))
    with pytest.raises(UsageError, match="target_probability"):
        slate_feedback(s.drop("target_probability"))
    with pytest.raises(UsageError, match="RIPS needs conditional"):
        estimate_slates([RewardInteractionIPS()], slate_feedback(s))


def test_cli_ope_slates_on_spark(spark, tmp_path, capsys):  # noqa: F811
    import json

    from receval.cli import main

    log, target = make_slates(5, "int", n=150, min_slots=2, separate_target=True)
    log.to_parquet(tmp_path / "log.parquet")
    target.to_csv(tmp_path / "target.csv", index=False)  # paths read by Spark: Parquet and CSV
    args = ["ope", "--logs", str(tmp_path / "log.parquet"), "--target", str(tmp_path / "target.csv"),
            "-e", "sn_rips", "-e", "pi", "--varying-length", "--n-boot", "100", "--output", "json"]
    assert main(args) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "--engine", "spark"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["settings"].pop("engine") == "spark" and local["settings"].pop("engine") == "polars"
    assert remote["settings"] == local["settings"] and local["settings"]["varying_length"]
    assert remote["estimates"] == local["estimates"]
