"""Counterfactual (off-policy) estimators: reference formulas, intervals, errors, OBD."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from receval.counterfactual import (
    DM,
    DR,
    DROS,
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    LoggedFeedback,
    RewardModel,
    SwitchDR,
    estimate_many,
    logged_feedback,
)
from receval.counterfactual.obd import USER_FEATURES, empirical_target, read_obd
from receval.counterfactual.synthetic import simulate
from receval.errors import InputError, UsageError
from receval.stats.bootstrap import replicate_weights

OBD = Path(__file__).resolve().parent.parent / "fixtures" / "obd"


def _random_data(seed: int, n_rows: int = 40, multi: bool = True) -> LoggedFeedback:
    rng = np.random.default_rng(seed)
    unit = rng.integers(0, n_rows // 2, n_rows) if multi else np.arange(n_rows)
    return LoggedFeedback.from_arrays(
        rng.integers(0, 2, n_rows).astype(float),
        rng.uniform(0.05, 1.0, n_rows),
        rng.uniform(0.0, 1.0, n_rows),
        unit=unit,
        q_logged=rng.uniform(0, 1, n_rows),
        q_target=rng.uniform(0, 1, n_rows),
        reward_range=(0, 1),
    )


def _reference(name: str, d: LoggedFeedback, lam: float = 3.0) -> float:
    """Slow plain-loop formulas (mean over logged rows)."""
    n = d.n_rows
    rows = []
    for i in range(n):
        w = d.target_prob[i] / d.propensity[i]
        rows.append((w, d.reward[i], d.q_logged[i], d.q_target[i]))
    if name == "dm":
        return sum(qt for _, _, _, qt in rows) / n
    if name == "ips":
        return sum(w * r for w, r, _, _ in rows) / n
    if name == "clipped":
        return sum(min(w, lam) * r for w, r, _, _ in rows) / n
    if name == "snips":
        return sum(w * r for w, r, _, _ in rows) / sum(w for w, _, _, _ in rows)
    if name == "dr":
        return sum(qt + w * (r - qa) for w, r, qa, qt in rows) / n
    if name == "sndr":
        mean_w = sum(w for w, _, _, _ in rows) / n
        return sum(qt + w / mean_w * (r - qa) for w, r, qa, qt in rows) / n
    if name == "switch":
        return sum(qt + (w * (r - qa) if w <= lam else 0.0) for w, r, qa, qt in rows) / n
    if name == "dros":
        return sum(qt + lam * w / (w * w + lam) * (r - qa) for w, r, qa, qt in rows) / n
    raise AssertionError(name)


CASES = [
    (DM(), "dm"),
    (IPS(), "ips"),
    (ClippedIPS(clip=3.0), "clipped"),
    (SNIPS(), "snips"),
    (DR(), "dr"),
    (SNDR(), "sndr"),
    (SwitchDR(threshold=3.0), "switch"),
    (DROS(lam=3.0), "dros"),
]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("est", "ref"), CASES, ids=[c[1] for c in CASES])
def test_point_equals_reference_formula(est, ref, seed):
    d = _random_data(seed)
    assert est.point(d) == pytest.approx(_reference(ref, d), rel=1e-12, abs=1e-12)
    assert est.estimate(d, n_boot=20).value == pytest.approx(
        _reference(ref, d), rel=1e-12, abs=1e-12
    )


def test_dros_limits():
    d = _random_data(1)
    assert DROS(lam=math.inf).point(d) == pytest.approx(DR().point(d), rel=1e-12)
    assert DROS(lam=0.0).point(d) == pytest.approx(DM().point(d), rel=1e-12)


def test_bootstrap_reapplies_whole_estimator_per_resample():
    """SNIPS replicates resample the normaliser: equal to a slow loop over multinomial weights."""
    d = _random_data(3, n_rows=30)
    n_boot = 200
    res = SNIPS().estimate(d, n_boot=n_boot, seed=11, level=0.9)
    w = d.target_prob / d.propensity
    reps = []
    for block in replicate_weights(d.n_units, n_boot=n_boot, seed=11, method="multinomial"):
        for b in block:
            num = sum(b[d.unit[i]] * w[i] * d.reward[i] for i in range(d.n_rows))
            den = sum(b[d.unit[i]] * w[i] for i in range(d.n_rows))
            reps.append(num / den)
    lo, hi = np.quantile(reps, [0.05, 0.95])
    assert res.ci_low == pytest.approx(lo, rel=1e-10)
    assert res.ci_high == pytest.approx(hi, rel=1e-10)
    assert "multinomial" in res.interval


def test_estimate_many_shares_replicates_with_single_runs():
    d = _random_data(4)
    many = estimate_many([IPS(), SNIPS(), DR()], d, n_boot=300, seed=5)
    for est, r in zip([IPS(), SNIPS(), DR()], many, strict=True):
        one = est.estimate(d, n_boot=300, seed=5)
        assert r.value == pytest.approx(one.value, rel=1e-12)
        assert (r.ci_low, r.ci_high) == pytest.approx((one.ci_low, one.ci_high), rel=1e-12)


def test_on_policy_ips_equals_mean_reward():
    s = simulate(500, n_items=8, n_positions=2, seed=3)
    log = s.log.assign(target_probability=s.log["propensity"])
    d = logged_feedback(log, reward_range=(0, 1))
    assert IPS().point(d) == pytest.approx(log["reward"].mean(), rel=1e-12)
    assert SNIPS().point(d) == pytest.approx(log["reward"].mean(), rel=1e-12)
    r = IPS().estimate(d, n_boot=50)
    assert r.diagnostics["ess_share"] == pytest.approx(1.0)
    assert r.diagnostics["max_weight"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(20))
def test_snips_within_reward_range(seed):
    rng = np.random.default_rng(seed)
    n = 25
    r = rng.uniform(-2, 3, n)
    d = LoggedFeedback.from_arrays(r, rng.uniform(0.01, 1, n), rng.uniform(0, 1, n) ** 4)
    res = SNIPS().estimate(d, n_boot=100, seed=seed)
    lo, hi = r.min(), r.max()
    assert lo - 1e-12 <= res.value <= hi + 1e-12
    assert lo - 1e-12 <= res.ci_low <= res.ci_high <= hi + 1e-12


def test_seeded_reproducibility():
    d = _random_data(7, n_rows=200, multi=False)
    a = DR().estimate(d, seed=1, n_boot=200)
    b = DR().estimate(d, seed=1, n_boot=200)
    c = DR().estimate(d, seed=2, n_boot=200)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    s1, s2 = simulate(300, seed=4), simulate(300, seed=4)
    pd.testing.assert_frame_equal(s1.log, s2.log)
    assert s1.true_value == s2.true_value


def test_normal_interval_matches_textbook_formulas():
    d = _random_data(8, n_rows=300, multi=False)
    n = d.n_rows
    w = d.weight
    z = 1.959963984540054
    ips = IPS().estimate(d, interval="normal")
    x = w * d.reward
    se = x.std(ddof=1) / math.sqrt(n)
    assert ips.ci_high - ips.value == pytest.approx(z * se, rel=1e-9)
    sn = SNIPS().estimate(d, interval="normal")
    v = sn.value
    # delta method for a ratio of means: sqrt(sum w^2 (r - V)^2 / (n - 1) / n) / mean(w)
    se = math.sqrt(np.sum((w * (d.reward - v)) ** 2) / (n - 1) / n) / w.mean()
    assert sn.ci_high - v == pytest.approx(z * se, rel=1e-6)
    assert sn.ci_low == pytest.approx(v - z * se, rel=1e-6)
    assert sn.interval.startswith("normal")


def test_to_dict_is_json_safe():
    d = _random_data(9)
    res = DR().estimate(d, n_boot=30)
    text = json.dumps(res.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["name"] == "dr" and back["value"] == pytest.approx(res.value)
    assert set(back["diagnostics"]) >= {
        "ess",
        "ess_share",
        "max_weight",
        "weight_q50",
        "weight_q90",
        "weight_q99",
        "mean_weight",
    }
    one = LoggedFeedback.from_arrays([1.0], [0.5], [0.5])
    assert (
        json.loads(json.dumps(IPS().estimate(one, interval="normal").to_dict(), allow_nan=False))[
            "ci_low"
        ]
        is None
    )


def test_clipped_and_switch_diagnostics():
    d = LoggedFeedback.from_arrays(
        [1, 0, 1, 0],
        [0.1, 0.5, 0.5, 0.5],
        [1.0, 0.5, 0.5, 0.5],
        q_logged=[0.5] * 4,
        q_target=[0.5] * 4,
    )
    assert ClippedIPS(clip=5).estimate(d, n_boot=10).diagnostics["share_clipped"] == 0.25
    assert SwitchDR(threshold=5).estimate(d, n_boot=10).diagnostics["share_switched_to_dm"] == 0.25


def test_ess_warning_in_words():
    n = 1000
    tp = np.full(n, 1e-4)
    tp[:5] = 1.0
    d = LoggedFeedback.from_arrays(np.zeros(n), np.full(n, 0.01), tp)
    res = IPS().estimate(d, n_boot=20)
    assert res.diagnostics["ess_share"] < 0.01
    assert any(w.startswith("ESS is 0.5% of rows") for w in res.warnings), res.warnings
    assert not any("mean importance weight" in w for w in res.warnings)
    # every weight 2: the target cannot be a distribution over the logged support
    d2 = LoggedFeedback.from_arrays(np.zeros(50), np.full(50, 0.5), np.ones(50))
    assert any(
        "mean importance weight is 2.000" in w for w in IPS().estimate(d2, n_boot=20).warnings
    )


def test_ips_outside_reward_range_is_warned():
    d = LoggedFeedback.from_arrays([1.0, 1.0], [0.1, 0.1], [1.0, 1.0], reward_range=(0, 1))
    assert IPS().point(d) == 10.0
    assert any("outside the reward range" in w for w in IPS().estimate(d, n_boot=10).warnings)


# ---------------------------------------------------------------- validation


def _log(**over):
    log = pd.DataFrame(
        {
            "request_id": [0, 0, 1, 2],
            "item_id": [1, 2, 1, 3],
            "position": [1, 2, 1, 1],
            "reward": [1.0, 0.0, 0.0, 1.0],
            "propensity": [0.5, 0.25, 0.5, 0.25],
            "target_probability": [0.5, 0.5, 1.0, 0.0],
        }
    )
    for k, v in over.items():
        log[k] = v
    return log


def _target(log):
    rows = []
    for rid, pos in log[["request_id", "position"]].drop_duplicates().itertuples(index=False):
        rows += [(rid, 1, pos, 0.5), (rid, 2, pos, 0.25), (rid, 3, pos, 0.25)]
    return pd.DataFrame(rows, columns=["request_id", "item_id", "position", "probability"])


def test_bad_propensities_are_counted():
    with pytest.raises(InputError) as e:
        logged_feedback(_log(propensity=[0.0, 0.5, 1.5, 0.2]))
    (v,) = e.value.violations
    assert v.column == "propensity" and v.n_rows == 2
    assert "row 0 (0.0)" in str(e.value) and "row 2 (1.5)" in str(e.value)


def test_target_not_summing_to_one_is_counted():
    log = _log()
    t = _target(log)
    t.loc[(t.request_id == 1) & (t.item_id == 1), "probability"] = 0.9
    t.loc[(t.request_id == 2) & (t.item_id == 3), "probability"] = 0.0
    with pytest.raises(InputError) as e:
        logged_feedback(log, t)
    (v,) = e.value.violations
    assert v.n_rows == 2 and "sum to 1" in v.rule
    assert "request 1" in str(e.value)


def test_target_probability_outside_unit_interval():
    with pytest.raises(InputError) as e:
        logged_feedback(_log(target_probability=[0.5, -0.1, 1.2, 0.0]))
    assert e.value.violations[0].n_rows == 2


def test_rewards_out_of_declared_range():
    log = _log(reward=[1.0, 2.0, -1.0, 1.0])
    with pytest.raises(InputError) as e:
        logged_feedback(log, reward_range=(0, 1))
    (v,) = e.value.violations
    assert v.column == "reward" and v.n_rows == 2
    d = logged_feedback(log)  # default range: observed min..max
    assert d.reward_range == (-1.0, 2.0)


def test_missing_target_distribution_for_logged_pair():
    log = _log()
    t = _target(log)
    t = t[t.request_id != 2]
    with pytest.raises(InputError) as e:
        logged_feedback(log, t)
    assert e.value.violations[0].n_rows == 1 and "every logged" in e.value.violations[0].rule


def test_model_estimators_need_a_model():
    d = logged_feedback(_log())
    with pytest.raises(UsageError, match="reward-model"):
        DR().estimate(d)
    with pytest.raises(UsageError):
        IPS().estimate(d, interval="wald")


def test_target_lookup_and_unsupported_mass():
    log = _log()
    t = _target(log)
    extra = pd.DataFrame({"request_id": [1], "item_id": [9], "position": [1], "probability": [0.0]})
    t = pd.concat([t, extra])
    t.loc[(t.request_id == 1) & (t.item_id == 3), "probability"] = 0.0
    t.loc[(t.request_id == 1) & (t.item_id == 9), "probability"] = 0.25
    d = logged_feedback(log, t)
    np.testing.assert_allclose(d.target_prob, [0.5, 0.25, 0.5, 0.25])
    # (9, 1) is never logged, nor are (2, 1), (3, 2): count pairs with positive target mass
    assert d.support["unsupported_pairs"] == 4
    res = IPS().estimate(d, n_boot=10)
    assert res.diagnostics["unsupported_pairs"] == 4
    assert any("never logged" in w for w in res.warnings)


def _logging(rows):
    return pd.DataFrame(rows, columns=["request_id", "item_id", "position", "probability"])


def _toy_logging():
    # consistent with _log()'s propensities; item 3 has probability 0 in (0, 1), is absent in (0, 2),
    # item 2 is absent in (2, 1); request 1 can show every item
    return _logging([
        (0, 1, 1, 0.5), (0, 2, 1, 0.5), (0, 3, 1, 0.0),
        (0, 1, 2, 0.75), (0, 2, 2, 0.25),
        (1, 1, 1, 0.5), (1, 2, 1, 0.25), (1, 3, 1, 0.25),
        (2, 1, 1, 0.75), (2, 3, 1, 0.25),
    ])


def test_context_support_counts_target_mass_the_logger_could_never_show():
    log = _log()
    d = logged_feedback(log, _target(log), logging=_toy_logging())
    # target: items 1, 2, 3 with 0.5, 0.25, 0.25 in each of the 4 logged (request, position)s;
    # unsupported: (0, 3, 1), (0, 3, 2), (2, 2, 1), 0.25 each -> 0.75 / 4 contexts
    assert d.support["context_unsupported_triples"] == 3
    assert d.support["context_unsupported_contexts"] == 3
    assert d.support["context_unsupported_target_mass"] == pytest.approx(0.1875)
    assert d.support["context_max_unsupported_target_mass"] == pytest.approx(0.25)
    # the pooled (item, position) check sees other gaps: (2, 1), (1, 2), (3, 2) are never logged, while
    # (3, 1), logged in request 2, counts as supported although request 0 could never show it
    assert d.support["unsupported_pairs"] == 3
    (w,) = [w for w in d.warnings if "could never" in w]
    assert "18.8% of its mass" in w and "3 (request, item, position) triples" in w and "in 3 contexts" in w
    res = IPS().estimate(d, n_boot=10)
    assert res.diagnostics["context_unsupported_triples"] == 3
    assert res.diagnostics["context_unsupported_target_mass"] == pytest.approx(0.1875)
    assert any("could never" in x for x in res.warnings)
    # without the logging frame the context-level check does not run
    plain = logged_feedback(log, _target(log))
    assert "context_unsupported_triples" not in plain.support
    assert IPS().estimate(plain, n_boot=10).diagnostics["context_unsupported_triples"] is None


def test_context_support_matches_a_loop_reference():
    rng = np.random.default_rng(3)
    n_req, n_items, n_pos = 60, 6, 2
    log_rows, logging_rows, target_rows = [], [], []
    for r in range(n_req):
        for p in range(1, n_pos + 1):
            lp = rng.random(n_items) * (rng.random(n_items) > 0.3)
            lp[rng.integers(n_items)] += 0.5  # at least one showable item
            lp /= lp.sum()
            tp = rng.random(n_items) * (rng.random(n_items) > 0.2)
            tp[rng.integers(n_items)] += 0.1
            tp /= tp.sum()
            for i in range(n_items):
                if lp[i] > 0 or rng.random() < 0.5:  # zero-probability items sometimes listed, sometimes absent
                    logging_rows.append((r, i, p, lp[i]))
                target_rows.append((r, i, p, tp[i]))
            shown = rng.choice(n_items, p=lp)
            log_rows.append((r, shown, p, float(rng.integers(0, 2)), lp[shown]))
    log = pd.DataFrame(log_rows, columns=["request_id", "item_id", "position", "reward", "propensity"])
    log["target_probability"] = 0.0
    logging, target = _logging(logging_rows), _logging(target_rows)
    d = logged_feedback(log, target, logging=logging)
    lp_of = {(r, i, p): q for r, i, p, q in logging_rows}
    triples, per_ctx = 0, {}
    for r, i, p, q in target_rows:
        if q > 0 and lp_of.get((r, i, p), 0.0) == 0.0:
            triples += 1
            per_ctx[(r, p)] = per_ctx.get((r, p), 0.0) + q
    assert triples > 10
    assert d.support["context_unsupported_triples"] == triples
    assert d.support["context_unsupported_contexts"] == len(per_ctx)
    assert d.support["context_unsupported_target_mass"] == pytest.approx(sum(per_ctx.values()) / (n_req * n_pos))
    assert d.support["context_max_unsupported_target_mass"] == pytest.approx(max(per_ctx.values()))


def test_full_support_logging_gives_no_context_warning():
    s = simulate(300, n_items=5, n_positions=2, seed=4)
    d = logged_feedback(s.log, s.target, logging=s.logging)
    assert d.support["context_unsupported_triples"] == 0
    assert d.support["context_unsupported_target_mass"] == 0.0
    assert not any("could never" in w for w in d.warnings)


def test_logging_frame_contract():
    log, target = _log(), _target(_log())
    # the logged item (2, 3, 1) with logging probability 0, request 0 position 1 summing to 0.9,
    # request 1 without a distribution, a propensity that disagrees (0.25 logged, 0.3 in the frame)
    bad = _logging([
        (0, 1, 1, 0.5), (0, 2, 1, 0.4),
        (0, 1, 2, 0.7), (0, 2, 2, 0.3),
        (2, 1, 1, 1.0), (2, 3, 1, 0.0),
    ])
    with pytest.raises(InputError) as e:
        logged_feedback(log, target, logging=bad)
    rules = {v.rule: v for v in e.value.violations}
    assert rules["must sum to 1 within 1e-06 per (request, position)"].n_rows == 1
    assert rules["must give a distribution for every logged (request, position)"].n_rows == 1
    assert rules["must be positive for every logged (request, item, position): the logger showed it"].n_rows == 1
    assert rules["must equal the logging frame's probability within 1e-06"].n_rows == 1
    with pytest.raises(InputError, match="one row per"):
        logged_feedback(log, target, logging=pd.concat([_toy_logging(), _toy_logging().head(1)]))
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        logged_feedback(log, target, logging=_toy_logging().assign(probability=lambda f: f.probability * -1))
    with pytest.raises(UsageError, match="missing required column"):
        logged_feedback(log, target, logging=_toy_logging().drop(columns="probability"))
    with pytest.raises(UsageError, match="needs the target frame"):
        logged_feedback(log, logging=_toy_logging())


# ---------------------------------------------------------------- reward models


def test_cross_fitted_model_and_single_class_fold():
    s = simulate(400, n_items=6, seed=2)
    log = s.log.copy()
    log["reward"] = 0.0
    log.loc[log.request_id == 0, "reward"] = 1.0  # one click: one training fold has a single class
    d = logged_feedback(
        log, s.target, reward_model=RewardModel(n_folds=2), context_columns=["context"]
    )
    assert d.model["constant_folds"] == 1
    assert np.isfinite(DR().point(d)) and np.isfinite(DM().point(d))
    assert np.sum(d.q_logged == 0.0) > 100  # the fold predicted by the constant model
    log["reward"] = 0.0
    d0 = logged_feedback(
        log, s.target, reward_model=RewardModel(n_folds=5), context_columns=["context"]
    )
    assert d0.model["constant_folds"] == 5 and DM().point(d0) == 0.0


def test_reward_model_is_cross_fitted_and_accurate():
    s = simulate(3000, n_items=6, n_positions=2, seed=5)
    d = logged_feedback(
        s.log,
        s.target,
        reward_range=(0, 1),
        reward_model=RewardModel(n_folds=2),
        context_columns=["context"],
    )
    err = np.abs(d.q_logged - s.log["q_true"].to_numpy())
    assert err.mean() < 0.05
    assert abs(DM().point(d) - s.true_value) < 0.03
    hgb = logged_feedback(
        s.log,
        s.target,
        reward_model=RewardModel(kind="hgb", n_folds=2),
        context_columns=["context"],
    )
    assert np.abs(hgb.q_logged - s.log["q_true"].to_numpy()).mean() < 0.08
    with pytest.raises(UsageError):
        RewardModel(kind="forest")


# ---------------------------------------------------------------- simulation


def _simulate_runs(n_reps: int, n_requests: int):
    errs = {"ips": [], "snips": [], "dr": []}
    cover = {"ips": 0, "snips": 0, "dr": 0}
    for rep in range(n_reps):
        s = simulate(
            n_requests, n_items=8, seed=100 + rep, logging_temperature=1.0, target_temperature=0.5
        )
        d = logged_feedback(s.log, s.target, reward_range=(0, 1), q_hat_column="q_true")
        for r in estimate_many([IPS(), SNIPS(), DR()], d, n_boot=500, seed=rep):
            errs[r.name].append(r.value - s.true_value)
            cover[r.name] += r.ci_low <= s.true_value <= r.ci_high
    return errs, cover


def _check_unbiased(errs, k):
    for name in ("ips", "dr"):
        e = np.asarray(errs[name])
        assert abs(e.mean()) <= k * e.std(ddof=1) / math.sqrt(len(e)), (name, e.mean())


def test_simulation_short():
    """Each replication draws its own population (seed), so errors are taken against its own truth."""
    n_reps = 80
    errs, cover = _simulate_runs(n_reps, 1500)
    _check_unbiased(errs, 3.0)
    # coverage: Binomial(80, 0.95) falls below 70 with probability < 0.2% (at 0.93, the
    # finite-sample coverage seen at ~1000 requests, about 1.5%)
    for name in ("ips", "snips", "dr"):
        assert 70 <= cover[name] <= n_reps, (name, cover[name])


@pytest.mark.slow
def test_simulation_long():
    # the percentile bootstrap needs a few thousand requests here (ESS ~20% of rows):
    # at 1,000 requests coverage is ~92% for all three, at 3,000 ~94-95%
    n_reps = 1000
    errs, cover = _simulate_runs(n_reps, 3000)
    _check_unbiased(errs, 2.0)
    for name in ("ips", "snips", "dr"):
        assert 0.93 <= cover[name] / n_reps <= 0.97, (name, cover[name] / n_reps)


def test_synthetic_true_value_is_exact():
    s = simulate(200_000, n_items=5, n_positions=2, seed=9)
    # on-policy Monte Carlo check of the exact value through IPS with the true weights
    d = logged_feedback(s.log, reward_range=(0, 1))
    ips = IPS().estimate(d, interval="normal")
    assert ips.ci_low <= s.true_value <= ips.ci_high
    assert s.log["reward"].mean() == pytest.approx(
        s.logging_value, abs=4 * math.sqrt(0.25 / len(s.log))
    )


# ---------------------------------------------------------------- OBD


@pytest.fixture(scope="module")
def obd():
    rnd = read_obd(OBD / "random" / "all" / "all.csv.gz")
    bts = read_obd(OBD / "bts" / "all" / "all.csv.gz")
    return rnd, bts


def test_read_obd(obd):
    rnd, bts = obd
    assert len(rnd) == len(bts) == 10_000
    assert set(rnd["position"]) == {1, 2, 3}
    assert np.allclose(rnd["propensity"], 1 / 80)
    assert rnd["reward"].sum() == 38 and bts["reward"].sum() == 42
    assert rnd["request_id"].is_unique
    with pytest.raises(UsageError):
        read_obd(OBD / "nope.csv")


def test_obd_random_to_bts(obd):
    rnd, bts = obd
    truth = bts["reward"].mean()
    t = empirical_target(bts, rnd)
    assert np.allclose(t.groupby("request_id")["probability"].sum(), 1.0)
    assert t["request_id"].nunique() == 10_000
    d = logged_feedback(
        rnd,
        t,
        reward_range=(0, 1),
        reward_model=RewardModel(n_folds=2),
        context_columns=list(USER_FEATURES),
    )
    res = {r.name: r for r in estimate_many([DM(), IPS(), SNIPS(), DR()], d, n_boot=500)}
    # BTS concentrates on a few items: ESS about a quarter of the rows, full support
    assert 0.2 < res["ips"].diagnostics["ess_share"] < 0.35
    assert res["ips"].diagnostics["unsupported_pairs"] == 0
    for name in ("ips", "snips", "dr"):
        assert res[name].ci_low <= truth <= res[name].ci_high
        assert abs(res[name].value - truth) / truth < 0.5
    assert abs(res["dm"].value - truth) / truth < 0.5


# ---------------------------------------------------------------- refitting bootstrap


def test_refit_bootstrap():
    s = simulate(600, n_items=6, seed=12)
    d = logged_feedback(
        s.log,
        s.target,
        reward_range=(0, 1),
        reward_model=RewardModel(n_folds=2),
        context_columns=["context"],
    )
    # unit counts of one everywhere reproduce the original fit
    ql, qt = d.refit(np.ones(d.n_units))
    np.testing.assert_allclose(ql, d.q_logged, rtol=1e-10)
    np.testing.assert_allclose(qt, d.q_target, rtol=1e-10)
    fixed = estimate_many([DM(), IPS()], d, n_boot=200, seed=3)
    refit = estimate_many([DM(), IPS()], d, n_boot=200, refit_boot=25, seed=3)
    again = DM().estimate(d, refit_boot=25, seed=3)
    assert (again.ci_low, again.ci_high) == (refit[0].ci_low, refit[0].ci_high)
    assert "refitted" in refit[0].interval and "refitted" not in refit[1].interval
    assert (refit[1].ci_low, refit[1].ci_high) == (fixed[1].ci_low, fixed[1].ci_high)
    assert refit[0].value == fixed[0].value
    # the model's own estimation error widens DM's interval
    assert refit[0].ci_high - refit[0].ci_low > 1.2 * (fixed[0].ci_high - fixed[0].ci_low)
    with pytest.raises(UsageError):
        DM().estimate(d, refit_boot=5, interval="normal")
    dq = logged_feedback(s.log, s.target, q_hat_column="q_true")
    with pytest.raises(UsageError, match="refit_boot"):
        DR().estimate(dq, refit_boot=5)


def test_polars_input_matches_pandas():
    import polars as pl

    s = simulate(300, n_items=5, n_positions=2, seed=21)
    a = logged_feedback(s.log, s.target, reward_range=(0, 1), q_hat_column="q_true")
    b = logged_feedback(
        pl.from_pandas(s.log), pl.from_pandas(s.target), reward_range=(0, 1), q_hat_column="q_true"
    )
    for est in (IPS(), SNIPS(), DR(), DM()):
        assert est.point(a) == est.point(b)
    np.testing.assert_array_equal(a.target_prob, s.log["target_probability"].to_numpy())


def test_non_finite_reward_estimates_are_input_errors():
    # a NaN q_hat used to pass through DM / DR as a NaN estimate
    s = simulate(40, n_items=4, n_positions=1, seed=5)
    log = s.log.assign(q_true=s.log["q_true"].where(s.log.index % 7 != 3))  # 6 NaN rows
    with pytest.raises(InputError) as e:
        logged_feedback(log, s.target, q_hat_column="q_true")
    (v,) = e.value.violations
    assert e.value.frame == "log" and v.column == "q_true" and v.n_rows == 6 and "finite" in v.rule
    assert "row 3 (nan)" in str(e.value)
    target = s.target.assign(q_true=np.where(s.target.index == 1, np.inf, s.target["q_true"]))
    with pytest.raises(InputError) as e:
        logged_feedback(s.log, target, q_hat_column="q_true")
    assert e.value.frame == "target" and e.value.violations[0].n_rows == 1
    with pytest.raises(InputError, match="q_target"):
        LoggedFeedback.from_arrays([1.0, 0.0], [0.5, 0.5], [0.5, 0.5], q_logged=[0.1, 0.2], q_target=[0.1, np.nan])
    with pytest.raises(UsageError, match="one value per row"):
        LoggedFeedback.from_arrays([1.0, 0.0], [0.5, 0.5], [0.5, 0.5], q_logged=[0.1], q_target=[0.1, 0.2])
