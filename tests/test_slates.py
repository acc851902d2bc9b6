"""Slate off-policy estimators: loop references, pseudo-inverse vs an explicit pinv, bias, errors."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from receval.counterfactual import (
    IndependentIPS,
    PseudoInverse,
    RewardInteractionIPS,
    SlateFeedback,
    SNIndependentIPS,
    SNPseudoInverse,
    SNRewardInteractionIPS,
    SNStandardIPS,
    StandardIPS,
    estimate_slates,
    simulate_slates,
    slate_feedback,
)
from receval.errors import InputError, UsageError
from receval.stats.bootstrap import replicate_weights

ALL = [
    StandardIPS(),
    SNStandardIPS(),
    IndependentIPS(),
    SNIndependentIPS(),
    RewardInteractionIPS(),
    SNRewardInteractionIPS(),
    PseudoInverse(),
    SNPseudoInverse(),
]


def _random(seed: int, n: int = 15, L: int = 3) -> SlateFeedback:
    rng = np.random.default_rng(seed)
    return SlateFeedback.from_arrays(
        rng.integers(0, 2, (n, L)).astype(float),
        rng.uniform(0.05, 1.0, (n, L)),
        rng.uniform(0.0, 1.0, (n, L)),
        propensity_cond=rng.uniform(0.05, 1.0, (n, L)),
        target_cond=rng.uniform(0.0, 1.0, (n, L)),
        slate_propensity=rng.uniform(0.01, 1.0, n),
        target_slate_prob=rng.uniform(0.0, 1.0, n),
        reward_range=(0, 1),
    )


def _reference(name: str, d: SlateFeedback) -> float:
    """Plain loops over slates and slots, straight from the formulas."""
    n, L = d.reward.shape
    num = [0.0] * L
    den = [0.0] * L
    tot_num = tot_den = 0.0
    for i in range(n):
        R = sum(d.reward[i, sl] for sl in range(L))
        if name in ("standard_ips", "sn_standard_ips"):
            w = d.target_slate_prob[i] / d.slate_propensity[i]
            tot_num += w * R
            tot_den += w
        elif name in ("pseudo_inverse", "sn_pseudo_inverse"):
            w = sum(d.target_prob[i, sl] / d.propensity[i, sl] for sl in range(L)) - (L - 1)
            tot_num += w * R
            tot_den += w
        else:
            cum = 1.0
            for sl in range(L):
                if name in ("independent_ips", "sn_independent_ips"):
                    w = d.target_prob[i, sl] / d.propensity[i, sl]
                else:
                    cum *= d.target_cond[i, sl] / d.propensity_cond[i, sl]
                    w = cum
                num[sl] += w * d.reward[i, sl]
                den[sl] += w
    if name.startswith("sn_"):
        if name in ("sn_standard_ips", "sn_pseudo_inverse"):
            return tot_num / tot_den
        return sum(num[sl] / den[sl] for sl in range(L))
    if name in ("standard_ips", "pseudo_inverse"):
        return tot_num / n
    return sum(num) / n


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("est", ALL, ids=lambda e: e.name)
def test_point_equals_loop_reference(est, seed):
    d = _random(seed, L=2 + seed)
    ref = _reference(est.name, d)
    assert est.point(d) == pytest.approx(ref, rel=1e-12)
    assert est.estimate(d, n_boot=50).value == pytest.approx(ref, rel=1e-12)


def test_slate_weight_falls_back_to_product_of_conditionals():
    d = _random(3)
    d2 = SlateFeedback.from_arrays(
        d.reward,
        d.propensity,
        d.target_prob,
        propensity_cond=d.propensity_cond,
        target_cond=d.target_cond,
    )
    expect = np.mean(np.prod(d.target_cond / d.propensity_cond, axis=1) * d.reward.sum(axis=1))
    assert StandardIPS().point(d2) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_pseudo_inverse_equals_explicit_pinv(seed):
    """The closed form for independent-slot logging equals q_e^T pinv(Gamma_b) 1_s."""
    rng = np.random.default_rng(seed)
    m, L, X, n = 4, 3, 3, 60
    p = rng.dirichlet(np.ones(m), (X, L))  # logging, independent slots
    q = rng.dirichlet(np.ones(m) * 0.5, (X, L))  # target slot-item marginals
    x = rng.integers(0, X, n)
    items = np.array([[rng.choice(m, p=p[x[i], sl]) for sl in range(L)] for i in range(n)])
    reward = rng.uniform(0, 1, (n, L))
    ref = []
    pi_w = []
    for i in range(n):
        gamma = np.zeros((m * L, m * L))
        for sl in range(L):
            for k in range(L):
                block = np.diag(p[x[i], sl]) if sl == k else np.outer(p[x[i], sl], p[x[i], k])
                gamma[sl * m : (sl + 1) * m, k * m : (k + 1) * m] = block
        ind = np.zeros(m * L)
        for sl in range(L):
            ind[sl * m + items[i, sl]] = 1.0
        w = q[x[i]].ravel() @ np.linalg.pinv(gamma) @ ind
        pi_w.append(w)
        ref.append(reward[i].sum() * w)
    d = SlateFeedback.from_arrays(
        reward,
        p[x[:, None], np.arange(L)[None, :], items],
        q[x[:, None], np.arange(L)[None, :], items],
        reward_range=(0, 1),
    )
    np.testing.assert_allclose(d.pi_weights(), pi_w, rtol=1e-8, atol=1e-9)
    assert PseudoInverse().point(d) == pytest.approx(np.mean(ref), rel=1e-8)
    assert SNPseudoInverse().point(d) == pytest.approx(np.sum(ref) / np.sum(pi_w), rel=1e-8)


def test_on_policy_standard_ips_equals_mean_slate_reward():
    s = simulate_slates(2000, seed=4, frame=False)
    d = s.data
    on = SlateFeedback.from_arrays(
        d.reward,
        d.propensity,
        d.propensity,
        propensity_cond=d.propensity_cond,
        target_cond=d.propensity_cond,
        slate_propensity=d.slate_propensity,
        target_slate_prob=d.slate_propensity,
    )
    mean_reward = d.reward.sum(axis=1).mean()
    for r in estimate_slates(ALL, on, interval="normal"):
        assert r.value == pytest.approx(mean_reward, rel=1e-12), r.name
        assert r.diagnostics["mean_weight"] == pytest.approx(1.0)
    # off-policy it differs
    assert StandardIPS().point(d) != pytest.approx(mean_reward, rel=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_self_normalised_forms_within_reward_range(seed):
    d = _random(seed, n=8, L=3)  # extreme, unrelated weights
    L = d.n_slots
    for est in (SNStandardIPS(), SNIndependentIPS(), SNRewardInteractionIPS()):
        v = est.point(d)
        lo = (
            sum(d.reward[:, sl].min() for sl in range(L))
            if est.name != "sn_standard_ips"
            else d.reward.sum(1).min()
        )
        hi = (
            sum(d.reward[:, sl].max() for sl in range(L))
            if est.name != "sn_standard_ips"
            else d.reward.sum(1).max()
        )
        assert lo - 1e-12 <= v <= hi + 1e-12, est.name


def test_unnormalised_estimate_outside_range_is_warned():
    n, L = 10, 2
    d = SlateFeedback.from_arrays(
        np.ones((n, L)), np.full((n, L), 0.1), np.full((n, L), 0.9), reward_range=(0, 1)
    )
    r = IndependentIPS().estimate(d, interval="normal")
    assert r.value == pytest.approx(18.0)
    assert any("outside the slate-reward range" in w for w in r.warnings)
    assert any("mean importance weight" in w for w in r.warnings)
    assert SNIndependentIPS().point(d) == pytest.approx(2.0)


def test_bootstrap_resamples_slates_and_the_normaliser():
    d = _random(5, n=30)
    r = SNIndependentIPS().estimate(d, n_boot=200, seed=11, level=0.9)
    w = d.slot_weights()
    reps = []
    for block in replicate_weights(d.n_slates, n_boot=200, seed=11, method="multinomial"):
        for b in block:
            reps.append(
                sum(
                    sum(b[i] * w[i, sl] * d.reward[i, sl] for i in range(d.n_slates))
                    / sum(b[i] * w[i, sl] for i in range(d.n_slates))
                    for sl in range(d.n_slots)
                )
            )
    lo, hi = np.quantile(reps, [0.05, 0.95])
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-10)
    assert "multinomial" in r.interval and "slates" in r.interval


def test_shared_bootstrap_equals_single_runs():
    d = _random(6, n=40)
    many = estimate_slates(ALL, d, n_boot=300, seed=5)
    for est, r in zip(ALL, many, strict=True):
        one = est.estimate(d, n_boot=300, seed=5)
        assert (r.value, r.ci_low, r.ci_high) == pytest.approx(
            (one.value, one.ci_low, one.ci_high), rel=1e-12
        )


def test_normal_interval_of_standard_ips():
    d = _random(7, n=50)
    r = StandardIPS().estimate(d, interval="normal", level=0.9)
    x = d.target_slate_prob / d.slate_propensity * d.reward.sum(1)
    half = NormalDist().inv_cdf(0.95) * x.std(ddof=1) / math.sqrt(len(x))
    assert (r.ci_low, r.ci_high) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-9)


def _within(r, truth, k=4.0):
    se = (r.ci_high - r.ci_low) / (2 * NormalDist().inv_cdf(0.975))
    return abs(r.value - truth) <= k * se, (r.name, r.value, truth, se)


def test_unbiased_in_simulation_short():
    """One sample of 100k slates: estimators whose assumption holds land within 4 standard errors."""
    s = simulate_slates(100_000, seed=21, frame=False)
    for r in estimate_slates(ALL, s.data, interval="normal"):
        ok, info = _within(r, s.true_value)
        assert ok, info
    c = simulate_slates(300_000, seed=21, click_model="cascade", frame=False)
    res = {r.name: r for r in estimate_slates(ALL, c.data, interval="normal")}
    for name in ("standard_ips", "rips", "sn_rips"):
        ok, info = _within(res[name], c.true_value)
        assert ok, info
    # independent IPS assumes no slot interaction: the cascade biases it detectably
    ok, info = _within(res["independent_ips"], c.true_value)
    assert not ok, info


@pytest.mark.slow
@pytest.mark.parametrize("click_model", ["additive", "cascade"])
def test_unbiased_over_replications(click_model):
    """Mean over 1,000 independent logs of ~5,000 slates is within 4 s.e. of the exact value."""
    valid = {
        "additive": ["standard_ips", "independent_ips", "rips", "pseudo_inverse"],
        "cascade": ["standard_ips", "rips"],
    }[click_model]
    vals: dict[str, list[float]] = {}
    truth = None
    for rep in range(1000):
        s = simulate_slates(5000 + rep, seed=21, click_model=click_model, frame=False)
        truth = s.true_value
        for e in ALL:
            vals.setdefault(e.name, []).append(e.point(s.data))
    for name in valid:
        v = np.array(vals[name])
        se = v.std(ddof=1) / math.sqrt(len(v))
        assert abs(v.mean() - truth) <= 4 * se, (name, v.mean(), truth, se)
    if click_model == "cascade":
        v = np.array(vals["independent_ips"])
        assert abs(v.mean() - truth) > 4 * v.std(ddof=1) / math.sqrt(len(v))


def test_seeded_reproducibility():
    a = simulate_slates(3000, seed=9)
    b = simulate_slates(3000, seed=9)
    c = simulate_slates(3000, seed=10)
    pd.testing.assert_frame_equal(a.log, b.log)
    assert a.true_value == b.true_value
    assert not a.log["reward"].equals(c.log["reward"])
    ra = [r.to_dict() for r in estimate_slates(ALL, a.data, n_boot=100, seed=1)]
    rb = [r.to_dict() for r in estimate_slates(ALL, b.data, n_boot=100, seed=1)]
    rc = [r.to_dict() for r in estimate_slates(ALL, a.data, n_boot=100, seed=2)]
    assert ra == rb
    assert [r["ci_low"] for r in ra] != [r["ci_low"] for r in rc]
    json.dumps(ra)


def test_frame_builder_matches_arrays_in_any_row_order():
    s = simulate_slates(500, seed=2)
    shuffled = s.log.sample(frac=1.0, random_state=0)
    d = slate_feedback(shuffled, reward_range=(0, 1))
    for f in ("reward", "propensity", "target_prob", "propensity_cond", "target_cond"):
        np.testing.assert_array_equal(getattr(d, f), getattr(s.data, f))
    np.testing.assert_array_equal(d.slate_propensity, s.data.slate_propensity)
    # a separate target frame gives the same data
    target = s.log[["slate_id", "position"]].assign(
        probability=s.log["target_probability"],
        conditional_probability=s.log["target_conditional"],
        slate_probability=s.log["target_slate_probability"],
    )
    log = s.log.drop(
        columns=["target_probability", "target_conditional", "target_slate_probability"]
    )
    d2 = slate_feedback(log, target.iloc[::-1], reward_range=(0, 1))
    for e in ALL:
        assert e.point(d2) == pytest.approx(e.point(s.data), rel=1e-12)
    r = StandardIPS().estimate(d2, n_boot=50)
    for key in ("ess", "max_weight", "weight_q50", "weight_q90", "weight_q99", "mean_weight"):
        assert key in r.diagnostics


def _small_log():
    return pd.DataFrame(
        {
            "slate_id": [1, 1, 2, 2, 3, 3],
            "position": [1, 2, 1, 2, 1, 2],
            "reward": [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            "propensity": [0.5, 0.4, 0.3, 0.2, 0.6, 0.5],
            "target_probability": [0.2, 0.4, 0.5, 0.2, 0.1, 0.3],
        }
    )


def test_bad_propensity_and_reward():
    log = _small_log()
    log.loc[1, "propensity"] = 0.0
    log.loc[2, "propensity"] = 1.5
    log.loc[3, "reward"] = 2.0
    with pytest.raises(InputError) as e:
        slate_feedback(log, reward_range=(0, 1))
    msg = str(e.value)
    assert "propensity: must lie in (0, 1]; 2 rows violate" in msg
    assert "reward: must lie in the declared reward_range" in msg
    assert "row 1 (0.0)" in msg


def test_inconsistent_slate_lengths_and_positions():
    log = pd.concat([_small_log(), _small_log().iloc[[0]].assign(position=3)], ignore_index=True)
    with pytest.raises(
        InputError, match=r"slate_id: every slate must have the same number of slots.*slate 1 has 3"
    ):
        slate_feedback(log)
    log = _small_log()
    log.loc[3, "position"] = 1  # slate 2 shows position 1 twice
    with pytest.raises(InputError, match=r"position: must run 1..L once per slate; 1 row"):
        slate_feedback(log)


def test_missing_target_entries():
    log = _small_log().drop(columns="target_probability")
    target = log[["slate_id", "position"]].assign(probability=0.3).iloc[:4]
    with pytest.raises(
        InputError, match=r"target: must give a probability for every logged .*; 2 rows.*slate 3"
    ):
        slate_feedback(log, target)
    log2 = _small_log()
    log2.loc[0, "target_probability"] = np.nan
    with pytest.raises(InputError, match=r"target_probability: must not be missing; 1 row"):
        slate_feedback(log2)


def test_slate_propensity_must_be_constant_within_slate():
    log = _small_log().assign(slate_propensity=0.2, target_slate_probability=0.1)
    log.loc[1, "slate_propensity"] = 0.3
    with pytest.raises(
        InputError, match=r"slate_propensity: must be constant within a slate; 1 row.*slate 1"
    ):
        slate_feedback(log)


def test_estimators_needing_missing_probabilities_raise_usage_errors():
    d = slate_feedback(_small_log())
    with pytest.raises(UsageError, match="slate probabilities"):
        StandardIPS().point(d)
    with pytest.raises(UsageError, match="RIPS needs conditional"):
        RewardInteractionIPS().estimate(d)
    assert IndependentIPS().point(d) == pytest.approx(_reference("independent_ips", d))
    with pytest.raises(UsageError, match="missing required column"):
        slate_feedback(_small_log().drop(columns="propensity"))
    with pytest.raises(UsageError, match="interval"):
        IndependentIPS().estimate(d, interval="bca")


def test_pi_warns_when_logging_is_not_slot_independent():
    d = _random(8)
    r = PseudoInverse().estimate(d, interval="normal")
    assert any("does not fill slots independently" in w for w in r.warnings)
    s = simulate_slates(1000, seed=1, frame=False)
    r = PseudoInverse().estimate(s.data, interval="normal")
    assert not any("independently" in w for w in r.warnings)


# ---------------------------------------------------------------- slates of varying length


def _raw_varying(seed: int, n: int = 25, L: int = 4):
    """Random slates with lengths 1..L; the cells beyond a slate's length hold garbage."""
    rng = np.random.default_rng(seed)
    length = rng.integers(1, L + 1, n)
    length[0] = L  # the longest slate sets L
    raw = {
        "reward": rng.integers(0, 2, (n, L)).astype(float),
        "propensity": rng.uniform(0.05, 1.0, (n, L)),
        "target_prob": rng.uniform(0.0, 1.0, (n, L)),
        "propensity_cond": rng.uniform(0.05, 1.0, (n, L)),
        "target_cond": rng.uniform(0.0, 1.0, (n, L)),
    }
    pad = np.arange(L)[None, :] >= length[:, None]
    for key, junk in (("reward", 7.0), ("propensity", 0.0), ("target_prob", -3.0), ("propensity_cond", np.nan)):
        raw[key] = np.where(pad, junk, raw[key])
    slate_p = np.array([np.prod(raw["propensity_cond"][i, : length[i]]) for i in range(n)])
    slate_t = np.array([np.prod(raw["target_cond"][i, : length[i]]) for i in range(n)])
    return raw, length, slate_p, slate_t


def _reference_varying(name: str, raw: dict, length: np.ndarray) -> float:
    """Loops over each slate's own slots, straight from the formulas in the docstrings."""
    n, L = raw["reward"].shape
    num, den, n_l = [0.0] * L, [0.0] * L, [0] * L
    tot_num = tot_den = 0.0
    for i in range(n):
        slots = range(int(length[i]))
        R = sum(raw["reward"][i, sl] for sl in slots)
        if name in ("standard_ips", "sn_standard_ips"):
            w = math.prod(raw["target_cond"][i, sl] / raw["propensity_cond"][i, sl] for sl in slots)
            tot_num += w * R
            tot_den += w
        elif name in ("pseudo_inverse", "sn_pseudo_inverse"):
            w = sum(raw["target_prob"][i, sl] / raw["propensity"][i, sl] for sl in slots) - (length[i] - 1)
            tot_num += w * R
            tot_den += w
        else:
            cum = 1.0
            for sl in slots:
                if name in ("independent_ips", "sn_independent_ips"):
                    w = raw["target_prob"][i, sl] / raw["propensity"][i, sl]
                else:
                    cum *= raw["target_cond"][i, sl] / raw["propensity_cond"][i, sl]
                    w = cum
                num[sl] += w * raw["reward"][i, sl]
                den[sl] += w
                n_l[sl] += 1
    if name in ("sn_standard_ips", "sn_pseudo_inverse"):
        return tot_num / tot_den
    if name.startswith("sn_"):
        return sum(n_l[sl] / n * num[sl] / den[sl] for sl in range(L))
    if name in ("standard_ips", "pseudo_inverse"):
        return tot_num / n
    return sum(num) / n


def _varying(seed: int, n: int = 25, L: int = 4) -> tuple[SlateFeedback, dict, np.ndarray]:
    raw, length, slate_p, slate_t = _raw_varying(seed, n, L)
    d = SlateFeedback.from_arrays(
        raw["reward"], raw["propensity"], raw["target_prob"],
        propensity_cond=raw["propensity_cond"], target_cond=raw["target_cond"],
        slate_propensity=slate_p, target_slate_prob=slate_t, reward_range=(0, 1), length=length,
    )
    return d, raw, length


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("est", ALL, ids=lambda e: e.name)
def test_varying_length_point_equals_loop_reference(est, seed):
    d, raw, length = _varying(seed, L=3 + seed)
    assert d.length is not None and d.n_slots == 3 + seed
    ref = _reference_varying(est.name, raw, length)
    assert est.point(d) == pytest.approx(ref, rel=1e-12)
    r = est.estimate(d, n_boot=50)
    assert r.value == pytest.approx(ref, rel=1e-12)
    assert r.diagnostics["min_slots"] == length.min() and r.diagnostics["n_slots"] == 3 + seed


def test_varying_length_slate_weights_from_conditionals_equal_given_slate_probabilities():
    raw, length, slate_p, slate_t = _raw_varying(3)
    with_slate = _varying(3)[0]
    from_cond = SlateFeedback.from_arrays(
        raw["reward"], raw["propensity"], raw["target_prob"], propensity_cond=raw["propensity_cond"],
        target_cond=raw["target_cond"], reward_range=(0, 1), length=length,
    )
    np.testing.assert_allclose(from_cond.slate_weights(), with_slate.slate_weights(), rtol=1e-12)


def test_full_lengths_are_the_fixed_length_layout():
    d = _random(4, n=20, L=3)
    same = SlateFeedback.from_arrays(
        d.reward, d.propensity, d.target_prob, propensity_cond=d.propensity_cond, target_cond=d.target_cond,
        slate_propensity=d.slate_propensity, target_slate_prob=d.target_slate_prob, reward_range=(0, 1),
        length=np.full(20, 3),
    )
    assert same.length is None
    for a, b in zip(estimate_slates(ALL, d, n_boot=100, seed=3), estimate_slates(ALL, same, n_boot=100, seed=3),
                    strict=True):
        assert a.to_dict() == b.to_dict()


def test_varying_length_bootstrap_resamples_slot_counts_too():
    d, raw, length = _varying(5, n=30)
    r = SNIndependentIPS().estimate(d, n_boot=200, seed=11, level=0.9)
    n, L = d.reward.shape
    reps = []
    for block in replicate_weights(n, n_boot=200, seed=11, method="multinomial"):
        for b in block:
            total, v = sum(b), 0.0
            for sl in range(L):
                has = [i for i in range(n) if length[i] > sl]
                n_l = sum(b[i] for i in has)
                if n_l:
                    w = [raw["target_prob"][i, sl] / raw["propensity"][i, sl] for i in has]
                    v += n_l / total * sum(b[i] * wi * raw["reward"][i, sl] for i, wi in zip(has, w, strict=True)) / sum(
                        b[i] * wi for i, wi in zip(has, w, strict=True))
            reps.append(v)
    lo, hi = np.quantile(reps, [0.05, 0.95])
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-10)
    normal = SNIndependentIPS().estimate(d, interval="normal")
    assert normal.ci_low < normal.value < normal.ci_high


def test_varying_length_weight_diagnostics_use_real_slots_only():
    d, raw, length = _varying(6, n=40)
    r = IndependentIPS().estimate(d, n_boot=20)
    assert r.diagnostics["n_weights"] == int(length.sum())
    for sl, mean in enumerate(r.diagnostics["mean_weight_per_slot"]):
        own = [raw["target_prob"][i, sl] / raw["propensity"][i, sl] for i in range(40) if length[i] > sl]
        assert mean == pytest.approx(np.mean(own), rel=1e-12)
    assert r.diagnostics["mean_slots"] == pytest.approx(length.mean())


def test_varying_length_frame_builder():
    s = simulate_slates(400, seed=2, n_slots=4, min_slots=2)
    assert s.data.length is not None and set(s.data.length) == {2, 3, 4}
    assert len(s.log) == s.data.length.sum()
    d = slate_feedback(s.log.sample(frac=1.0, random_state=1), reward_range=(0, 1), varying_length=True)
    for f in ("reward", "propensity", "target_prob", "propensity_cond", "target_cond", "length"):
        np.testing.assert_array_equal(getattr(d, f), getattr(s.data, f))
    np.testing.assert_allclose(d.slate_propensity, s.data.slate_propensity, rtol=1e-12)
    with pytest.raises(InputError, match="pass varying_length=True"):
        slate_feedback(s.log)
    gap = s.log[~((s.log.slate_id == 0) & (s.log.position == 2))]  # slate 0 shows 1, 3, ...
    with pytest.raises(InputError, match=r"position: must run 1..L_i once per slate"):
        slate_feedback(gap, varying_length=True)


def test_varying_length_is_validated():
    raw, length, slate_p, slate_t = _raw_varying(7)
    for bad in (np.where(np.arange(len(length)) == 3, 0, length), np.where(np.arange(len(length)) == 3, 9, length)):
        with pytest.raises(InputError, match=r"length: must be an integer in 1..4"):
            SlateFeedback.from_arrays(raw["reward"], raw["propensity"], raw["target_prob"], length=bad)
    with pytest.raises(UsageError, match="length has shape"):
        SlateFeedback.from_arrays(raw["reward"], raw["propensity"], raw["target_prob"], length=length[:-1])
    with pytest.raises(UsageError, match="min_slots"):
        simulate_slates(10, n_slots=3, min_slots=4)


def test_varying_length_unbiased_in_simulation_short():
    """One sample of 200k slates of 1-3 slots: estimators whose assumption holds land within 4 s.e."""
    s = simulate_slates(200_000, seed=23, min_slots=1, frame=False)
    assert s.true_value < simulate_slates(10, seed=23, frame=False).true_value  # shorter slates earn less
    for r in estimate_slates(ALL, s.data, interval="normal"):
        ok, info = _within(r, s.true_value)
        assert ok, info
    c = simulate_slates(200_000, seed=23, click_model="cascade", min_slots=1, frame=False)
    res = {r.name: r for r in estimate_slates(ALL, c.data, interval="normal")}
    for name in ("standard_ips", "sn_standard_ips", "rips", "sn_rips"):
        ok, info = _within(res[name], c.true_value)
        assert ok, info
