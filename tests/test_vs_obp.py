"""Cross-check of receval's off-policy point estimates against Open Bandit Pipeline (OBP).

OBP (obp 0.5.7, Saito et al. 2021) is used only as a test oracle: the same
logged data, the same target probabilities and the same reward-model
estimates are handed to OBP's estimator classes, and their point estimates
must equal receval's to ~1e-12 relative. CI has no obp (it pins Python < 3.11
and an old scikit-learn); there the OBP comparisons are skipped and only the
self-checks of the input builders run. To run everything, see
``benchmarks/obp_crosscheck.py`` (``/work/obp-env/bin/python -m pytest -q tests/test_vs_obp.py``).

OBP's inputs: ``action`` (0-based item), ``position`` (0-based), ``reward``,
``pscore`` (pi_b of the logged action), ``action_dist`` (n_rounds, n_actions,
len_list) = pi_e(a | x_i, position) and ``estimated_rewards_by_reg_model`` of
the same shape = q_hat(x_i, a, position). OBP reads only the slice
[i, :, position_i] of both arrays; the other slices of a row are filled
with a uniform distribution (action_dist) and 0 (q_hat) because OBP's input
check requires every slice of action_dist to be a distribution.

Conventions checked here (see docs/counterfactual.md, "Cross-check against OBP"):

* OBP's value is the mean over rounds of a per-round value; every logged row
  is a round (the position is an input of the round). receval's value is the
  mean over logged rows (sum over requests of per-request sums / number of
  rows). Both are the same per-row mean, on OBD (one row per request) and on
  a multi-position synthetic log (3 rows per request) alike.
* q_hat(x, pi_e): OBP uses np.average(q_hat, weights=pi_e) (divides by
  sum pi_e, which is 1 up to rounding); receval sums pi_e * q_hat.
* DR-OS with lambda = 0: OBP computes 0 * w / (w^2 + 0), NaN where w = 0;
  receval defines it as DM (shrunk weight 0).
"""

from __future__ import annotations

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
    RewardModel,
    SwitchDR,
    estimate_many,
    logged_feedback,
)
from receval.counterfactual.obd import USER_FEATURES, empirical_target, read_obd
from receval.counterfactual.synthetic import simulate

try:  # the oracle is optional: CI does not install it
    import obp  # noqa: F401
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        DoublyRobustWithShrinkage,
        InverseProbabilityWeighting,
        OffPolicyEvaluation,
        SelfNormalizedDoublyRobust,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobust,
    )

    HAVE_OBP = True
    OBP_MISSING = ""
except Exception as exc:  # ImportError, or an obp broken by its dependencies
    HAVE_OBP = False
    OBP_MISSING = f"{type(exc).__name__}: {exc}"

needs_obp = pytest.mark.skipif(
    not HAVE_OBP,
    reason=(
        "Open Bandit Pipeline (obp) is not importable, so the cross-check oracle is absent "
        f"({OBP_MISSING}); run benchmarks/obp_crosscheck.py in an environment with obp==0.5.7"
    ),
)

OBD = Path(__file__).resolve().parent.parent / "fixtures" / "obd"
RTOL = 1e-12
CLIP = 5.0  # on OBD (max weight 9.6) 5.1% of rows lie above it: clipping and switching bite


# ------------------------------------------------------------------ OBP input builders


def obp_inputs(log: pd.DataFrame, target: pd.DataFrame, q_logged, q_target_rows) -> dict:
    """OBP's arrays for the rows of ``log`` (receval's long frames; positions 1-based).

    ``q_target_rows`` are q_hat(x, a, position) for the rows of ``target``,
    ``q_logged`` q_hat for the logged rows (both as receval uses them).
    """
    n = len(log)
    n_actions = int(max(log["item_id"].max(), target["item_id"].max())) + 1
    len_list = int(max(log["position"].max(), target["position"].max()))
    action = log["item_id"].to_numpy(dtype=np.int64)
    pos0 = log["position"].to_numpy(dtype=np.int64) - 1
    keyed = log[["request_id", "position"]].assign(_row=np.arange(n))
    t = target[["request_id", "item_id", "position", "probability"]].assign(_q=q_target_rows)
    t = t.merge(keyed, on=["request_id", "position"], how="inner")
    rows = t["_row"].to_numpy()
    items = t["item_id"].to_numpy(dtype=np.int64)
    tpos = t["position"].to_numpy(dtype=np.int64) - 1
    action_dist = np.zeros((n, n_actions, len_list))
    q_hat = np.zeros((n, n_actions, len_list))
    action_dist[rows, items, tpos] = t["probability"].to_numpy(dtype=np.float64)
    q_hat[rows, items, tpos] = t["_q"].to_numpy(dtype=np.float64)
    filled = np.zeros((n, len_list), dtype=bool)
    filled[rows, tpos] = True
    # slices OBP never reads (other positions of the row): any distribution passes its check
    action_dist.transpose(0, 2, 1)[~filled] = 1.0 / n_actions
    # the logged action's q_hat is receval's q_logged (it may have no target row: pi_e = 0)
    ql = np.asarray(q_logged, dtype=np.float64)
    have = filled[np.arange(n), pos0] & (action_dist[np.arange(n), action, pos0] > 0)
    # where a target row exists, receval's two predictions of the same action must agree
    assert np.array_equal(q_hat[np.arange(n), action, pos0][have], ql[have])
    q_hat[np.arange(n), action, pos0] = ql
    return {
        "action": action,
        "position": pos0,
        "reward": log["reward"].to_numpy(dtype=np.float64),
        "pscore": log["propensity"].to_numpy(dtype=np.float64),
        "action_dist": action_dist,
        "estimated_rewards_by_reg_model": q_hat,
    }


def _check_inputs_match(data, inp) -> None:
    """OBP's arrays describe exactly receval's per-row quantities."""
    n = len(inp["action"])
    idx = (np.arange(n), inp["action"], inp["position"])
    assert np.array_equal(inp["pscore"], data.propensity)
    assert np.array_equal(inp["reward"], data.reward)
    assert np.array_equal(inp["action_dist"][idx], data.target_prob)
    assert np.array_equal(inp["estimated_rewards_by_reg_model"][idx], data.q_logged)
    at = (np.arange(n), slice(None), inp["position"])
    q_pi = (inp["action_dist"][at] * inp["estimated_rewards_by_reg_model"][at]).sum(axis=1)
    np.testing.assert_allclose(q_pi, data.q_target, rtol=1e-14, atol=0)
    np.testing.assert_allclose(inp["action_dist"].sum(axis=1), 1.0, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ cases


def load_obd() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The OBD random log and the BTS empirical target on it."""
    rnd = read_obd(OBD / "random" / "all" / "all.csv.gz")
    bts = read_obd(OBD / "bts" / "all" / "all.csv.gz")
    return rnd, empirical_target(bts, rnd)


def _fixed_q(frame: pd.DataFrame) -> np.ndarray:
    """A fixed, non-trivial q_hat(x, item, position) in (0, 1) from the OBD user features."""
    h = pd.util.hash_pandas_object(frame["user_feature_0"], index=False).to_numpy() % 97
    return 0.002 + 0.001 * ((frame["item_id"].to_numpy() * 7 + frame["position"].to_numpy() * 3 + h) % 13)


def obd_case(kind: str, frames=None):
    """OBD random log, BTS empirical target; q_hat from receval's RewardModel or a fixed array.

    Returns (receval LoggedFeedback, OBP inputs).
    """
    rnd, tgt = load_obd() if frames is None else frames
    if kind == "cross-fitted":
        rm = RewardModel(n_folds=2)
        data = logged_feedback(rnd, tgt, reward_range=(0, 1), reward_model=rm,
                               context_columns=list(USER_FEATURES))
        # the same deterministic cross-fit, for the per-candidate predictions OBP needs
        ql, qt_rows, _ = rm.cross_fit(rnd, tgt, list(USER_FEATURES))
        assert np.array_equal(ql, data.q_logged)
    elif kind == "fixed-array":
        feats = rnd[["request_id", *USER_FEATURES]]
        tgt = tgt.merge(feats, on="request_id", how="left")
        rnd = rnd.assign(q_fixed=_fixed_q(rnd))
        tgt = tgt.assign(q_fixed=_fixed_q(tgt))
        data = logged_feedback(rnd, tgt, reward_range=(0, 1), q_hat_column="q_fixed")
        ql, qt_rows = rnd["q_fixed"].to_numpy(), tgt["q_fixed"].to_numpy()
    else:
        raise ValueError(kind)
    return data, obp_inputs(rnd, tgt, ql, qt_rows)


def synthetic_case(kind: str):
    """receval's synthetic bandit with 3 positions (3 rows per request), 12 items."""
    sim = simulate(3000, n_items=12, n_positions=3, n_contexts=30, logging_temperature=0.7,
                   target_temperature=0.4, seed=11)
    log, tgt = sim.log, sim.target
    if kind == "q_true":
        data = logged_feedback(log, tgt, reward_range=(0, 1), q_hat_column="q_true")
        ql, qt_rows = log["q_true"].to_numpy(), tgt["q_true"].to_numpy()
    elif kind == "cross-fitted":
        rm = RewardModel(n_folds=3, seed=2)
        data = logged_feedback(log, tgt, reward_range=(0, 1), reward_model=rm, context_columns=["context"])
        ql, qt_rows, _ = rm.cross_fit(log, tgt, ["context"])
        assert np.array_equal(ql, data.q_logged)
    else:
        raise ValueError(kind)
    return data, obp_inputs(log, tgt, ql, qt_rows)


OBD_KINDS = ("cross-fitted", "fixed-array")
SYNTHETIC_KINDS = ("q_true", "cross-fitted")


@pytest.fixture(scope="module")
def obd_frames():
    return load_obd()


@pytest.fixture(scope="module", params=OBD_KINDS, name="obd_case")
def _obd_case(request, obd_frames):
    return obd_case(request.param, obd_frames)


@pytest.fixture(scope="module", params=SYNTHETIC_KINDS, name="synthetic_case")
def _synthetic_case(request):
    return synthetic_case(request.param)


def _tie(data) -> float:
    """A threshold equal to an observed weight (shared by several rows): tells w <= t from w < t."""
    w = data.weight
    vals, counts = np.unique(w[(w > 1) & (w < CLIP)], return_counts=True)
    return float(vals[np.argmax(counts)])


def _pairs(tie: float = 3.0):
    """(receval estimator, OBP estimator factory, OBP needs q_hat) triples compared point for point.

    ``tie``: a threshold equal to some rows' weight, so that OBP's ``iw <= lambda_``
    (Switch-DR) is checked at equality.
    """
    return [
        (IPS(), lambda: InverseProbabilityWeighting(), False),
        (ClippedIPS(CLIP), lambda: InverseProbabilityWeighting(lambda_=CLIP), False),
        (ClippedIPS(2.0), lambda: InverseProbabilityWeighting(lambda_=2.0), False),
        (SNIPS(), lambda: SelfNormalizedInverseProbabilityWeighting(), False),
        (DM(), lambda: DirectMethod(), True),
        (DR(), lambda: DoublyRobust(), True),
        (SNDR(), lambda: SelfNormalizedDoublyRobust(), True),
        (SwitchDR(CLIP), lambda: SwitchDoublyRobust(lambda_=CLIP), True),
        (SwitchDR(2.0), lambda: SwitchDoublyRobust(lambda_=2.0), True),
        (SwitchDR(tie), lambda: SwitchDoublyRobust(lambda_=tie), True),
        (ClippedIPS(tie), lambda: InverseProbabilityWeighting(lambda_=tie), False),
        (DROS(10.0), lambda: DoublyRobustWithShrinkage(lambda_=10.0), True),
        (DROS(1.0), lambda: DoublyRobustWithShrinkage(lambda_=1.0), True),
        (DROS(math.inf), lambda: DoublyRobustWithShrinkage(lambda_=np.inf), True),
    ]


def _obp_value(est, inp, needs_q: bool) -> float:
    kw = {k: inp[k] for k in ("reward", "action", "position", "pscore", "action_dist")}
    if needs_q:
        kw["estimated_rewards_by_reg_model"] = inp["estimated_rewards_by_reg_model"]
    if isinstance(est, DirectMethod):  # DM takes no reward/action/pscore
        kw = {k: kw[k] for k in ("position", "action_dist", "estimated_rewards_by_reg_model")}
    return float(est.estimate_policy_value(**kw))


def compare_values(data, inp) -> list[tuple[str, float, float, float]]:
    """(label, receval point(), receval estimate_many value, OBP value) for every pair."""
    tie = _tie(data)
    pairs = _pairs(tie)
    many = estimate_many([p[0] for p in pairs], data, interval="normal")
    return [
        (ours.label, ours.point(data), res.value, _obp_value(make(), inp, needs_q))
        for (ours, make, needs_q), res in zip(pairs, many, strict=True)
    ]


def _compare_all(data, inp) -> list[tuple[str, float, float]]:
    """Compare every pair to RTOL; return (label, receval, OBP) for each."""
    assert (data.weight == _tie(data)).sum() >= 2
    out = []
    for label, point, value, theirs in compare_values(data, inp):
        assert math.isfinite(theirs), label
        assert point == pytest.approx(theirs, rel=RTOL, abs=0), (label, point, theirs)
        assert value == pytest.approx(theirs, rel=RTOL, abs=0), (label, value, theirs)
        out.append((label, point, theirs))
    return out


# ------------------------------------------------------------------ self-checks (run without obp)


def test_obd_inputs_describe_receval_data(obd_case):
    data, inp = obd_case
    _check_inputs_match(data, inp)
    # the case is informative: some weights are clipped / switched, some logged items have pi_e = 0
    w = data.weight
    assert 0 < np.mean(w > CLIP) < 0.2 and np.mean(w > 2.0) > 0.1
    assert (data.target_prob == 0).sum() > 0


def test_synthetic_inputs_describe_receval_data(synthetic_case):
    data, inp = synthetic_case
    _check_inputs_match(data, inp)
    assert data.n_rows == 3 * data.n_units  # 3 rows (positions) per request
    assert set(np.unique(inp["position"])) == {0, 1, 2}
    assert 0 < np.mean(data.weight > CLIP) < 0.5


def test_builder_detects_a_wrong_q_logged(obd_frames):
    """The builder's consistency check can fail: q_logged that disagrees with the target rows."""
    rnd, tgt = obd_frames
    rnd = rnd.head(500)
    tgt = tgt[tgt["request_id"] < 500]
    q_rows = np.full(len(tgt), 0.01)
    with pytest.raises(AssertionError):
        obp_inputs(rnd, tgt, np.full(len(rnd), 0.02), q_rows)


# ------------------------------------------------------------------ the cross-check


@needs_obp
def test_obd_point_estimates_equal_obp(obd_case):
    data, inp = obd_case
    out = _compare_all(data, inp)
    assert len(out) == len(_pairs())  # every pair compared
    # sanity: the estimators really differ from each other on this data
    assert len({round(v, 10) for _, v, _ in out}) >= 8


@needs_obp
def test_synthetic_multi_position_point_estimates_equal_obp(synthetic_case):
    data, inp = synthetic_case
    out = _compare_all(data, inp)
    assert len({round(v, 10) for _, v, _ in out}) >= 8


@needs_obp
def test_obd_through_obp_off_policy_evaluation(obd_case):
    """The same values through OBP's user-facing OffPolicyEvaluation."""
    data, inp = obd_case
    feedback = {k: inp[k] for k in ("action", "position", "reward", "pscore")}
    feedback["n_rounds"] = len(inp["action"])
    feedback["n_actions"] = inp["action_dist"].shape[1]
    feedback["context"] = np.zeros((len(inp["action"]), 1))  # required key; unused by these estimators
    ope = OffPolicyEvaluation(
        bandit_feedback=feedback,
        ope_estimators=[
            InverseProbabilityWeighting(),
            SelfNormalizedInverseProbabilityWeighting(),
            DirectMethod(),
            DoublyRobust(),
            SelfNormalizedDoublyRobust(),
        ],
    )
    theirs = ope.estimate_policy_values(
        action_dist=inp["action_dist"],
        estimated_rewards_by_reg_model=inp["estimated_rewards_by_reg_model"],
    )
    ours = {e: est.point(data) for e, est in
            [("ipw", IPS()), ("snipw", SNIPS()), ("dm", DM()), ("dr", DR()), ("sndr", SNDR())]}
    assert set(theirs) == set(ours)
    for k, v in ours.items():
        assert v == pytest.approx(theirs[k], rel=RTOL, abs=0), k


@needs_obp
def test_dros_lambda_zero_convention(obd_case):
    """Documented difference: OBP's DR-OS at lambda = 0 is NaN where w = 0; receval's is DM."""
    data, inp = obd_case
    assert (data.target_prob == 0).any()
    ours = DROS(0.0).point(data)
    assert ours == DM().point(data)
    with pytest.warns(RuntimeWarning, match="invalid value"):  # 0 / 0 where w = 0
        theirs = _obp_value(DoublyRobustWithShrinkage(lambda_=0.0), inp, True)
    assert math.isnan(theirs)
    # on the rows with w > 0 OBP's lambda = 0 is DM as well
    keep = data.target_prob > 0
    sub = {k: (v[keep] if k != "n_rounds" else v) for k, v in inp.items()}
    theirs_kept = _obp_value(DoublyRobustWithShrinkage(lambda_=0.0), sub, True)
    assert float(np.mean(data.q_target[keep])) == pytest.approx(theirs_kept, rel=RTOL, abs=0)
