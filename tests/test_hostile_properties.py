"""Property tests over every public entry point with hostile inputs (receval.testing strategies).

For any drawn input the outcome is a correct result or a ReceValError naming the broken rule —
never another exception type, never a NaN in a published number. The ``ci`` hypothesis profile
keeps this file quick; ``--hypothesis-profile=fuzz`` turns it into the long fuzzing run
(docs/robustness.md).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import receval
from receval.errors import CoverageWarning, ReceValError
from receval.testing import (
    Hostile,
    assert_published_numbers_explained,
    attribute_tables,
    catalogs,
    check_outcome,
    drift_frames,
    logged_feedback_frames,
    run_and_labels,
    slate_frames,
)

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

METRICS = ["ndcg@10", "mrr", "auc", "map", "recall@2", "precision@1", "hit@3", "r_precision"]
EMPTY = ("at least one request must be evaluable",)


def _pandas(frame):
    if isinstance(frame, pd.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect().to_pandas()
    return frame.to_pandas()


# =========================================================================== evaluate, compare


@given(run_and_labels())
def test_evaluate_hostile(case: Hostile):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CoverageWarning)  # other warnings stay errors (pyproject filterwarnings)
        res = check_outcome(case, lambda: receval.evaluate(*case.value, METRICS, n_boot=5), allow=EMPTY)
    if res is None:
        return
    # a CoverageWarning exactly when more than half of the judged requests are missing from the run
    run_req = {str(v) for v in _pandas(case.value[0])["request_id"].astype(object)}
    judged = {str(v) for v in _pandas(case.value[1])["request_id"].astype(object)}
    warned = [str(w.message) for w in caught if issubclass(w.category, CoverageWarning)]
    assert bool(warned) == (2 * len(judged - run_req) > len(judged)), (warned, res.counts)
    if warned:
        assert f"{len(judged - run_req)} of {len(judged)} judged requests" in warned[0]
        assert res.counts["labels_only_scored_zero"] == len(judged - run_req)
    d = assert_published_numbers_explained(res)
    n = res.counts["evaluated"]
    assert n >= 1
    for m in METRICS:
        s = res[m]
        assert s.n == n
        assert 0.0 <= s.mean <= 1.0 + 1e-12, (m, s.mean)
        assert 0.0 <= s.ci_low <= s.ci_high <= 1.0 + 1e-12  # percentile bounds need not contain the mean
    assert len(res.per_request) == n
    assert d["counts"]["evaluated"] == n


@pytest.mark.filterwarnings("ignore::receval.errors.CoverageWarning")  # checked in test_hostile_compare.py
@given(run_and_labels(broken=False), st.data())
def test_compare_hostile(case: Hostile, data):
    run, lab = case.value
    other = _pandas(run).copy()
    if len(other):
        other["score"] = data.draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, np.inf, -np.inf]),
                                            min_size=len(other), max_size=len(other)))
    other = other[["request_id", "item_id", "score"]]
    res = check_outcome(case, lambda: receval.compare({"a": run, "b": other}, lab, ["ndcg@10", "mrr"], n_boot=5,
                                                      margin=0.01, test=data.draw(st.sampled_from(
                                                          ["paired_t", "wilcoxon", "randomization"])), n_perm=20),
                        allow=EMPTY)
    if res is None:
        return
    d = assert_published_numbers_explained(res)
    for row in d["comparisons"]:
        if row.get("p_value") is None:  # an undefined p-value (all differences 0) must be explained
            assert row.get("diff") == 0 or row.get("note") or row.get("test_note"), row


# =========================================================================== counterfactual


def _estimators():
    from receval.counterfactual import DM, DR, DROS, IPS, SNDR, SNIPS, ClippedIPS, SwitchDR

    return [DM(), IPS(), ClippedIPS(), SNIPS(), DR(), SNDR(), SwitchDR(), DROS()]


def _check_ope(results):
    for r in results:
        assert_published_numbers_explained(r)
        for name in ("value", "ci_low", "ci_high"):
            v = getattr(r, name)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                assert r.warnings, (r.name, name, v)  # undefined numbers carry a reason
        if r.value is not None and math.isfinite(r.value) and math.isfinite(r.ci_low) and math.isfinite(r.ci_high):
            assert r.ci_low <= r.value + 1e-9 * max(1.0, abs(r.value)) or r.interval != "bootstrap" or r.warnings


@given(logged_feedback_frames())
def test_logged_feedback_and_estimators(case: Hostile):
    from receval.counterfactual import estimate_many, logged_feedback

    log, tgt = case.value
    data = check_outcome(case, lambda: logged_feedback(log, tgt, reward_range=(0, 1), q_hat_column="q_hat"),
                         strict_rule="column")
    if data is None:
        return
    _check_ope(estimate_many(_estimators(), data, n_boot=5))


@given(logged_feedback_frames(broken=False))
def test_estimators_without_target_frame(case: Hostile):
    """The log carries target_probability; IPS-family estimators only."""
    from receval.counterfactual import IPS, SNIPS, ClippedIPS, estimate_many, logged_feedback

    log, tgt = case.value
    merged = log.merge(tgt[["request_id", "item_id", "position", "probability"]],
                       on=["request_id", "item_id", "position"], how="left")
    log = log.assign(target_probability=merged["probability"].fillna(0.0).to_numpy())
    data = logged_feedback(log, reward_range=(0, 1))
    _check_ope(estimate_many([IPS(), ClippedIPS(), SNIPS()], data, n_boot=5, interval="normal"
                             if len(log) % 2 else "bootstrap"))


@given(slate_frames())
def test_slate_estimators(case: Hostile):
    from receval.counterfactual import (
        IndependentIPS,
        PseudoInverse,
        RewardInteractionIPS,
        SNIndependentIPS,
        SNPseudoInverse,
        SNRewardInteractionIPS,
        SNStandardIPS,
        StandardIPS,
        estimate_slates,
        slate_feedback,
    )

    log, tgt = case.value
    data = check_outcome(case, lambda: slate_feedback(log, tgt, reward_range=(0, 1)), strict_rule="column")
    if data is None:
        return
    ests = [StandardIPS(), SNStandardIPS(), IndependentIPS(), SNIndependentIPS(), RewardInteractionIPS(),
            SNRewardInteractionIPS(), PseudoInverse(), SNPseudoInverse()]
    try:
        results = estimate_slates(ests, data, n_boot=5)
    except ReceValError:
        return
    _check_ope(results)


# =========================================================================== audits


@st.composite
def audit_inputs(draw, *, broken: bool | None = False):
    """run (with user_id, constant per request), labels, item catalog, user attributes."""
    case = draw(run_and_labels(broken=broken, backend=False, which="run"))
    run, lab = case.value
    run = run.copy()
    if "request_id" in run.columns and not run.empty:
        n_users = draw(st.integers(1, 3))
        codes = pd.factorize(run["request_id"].astype(str))[0]
        run["user_id"] = [f"u{c % n_users}" for c in codes]
    else:
        run["user_id"] = pd.Series([], dtype=object) if run.empty else "u0"
    items = list(pd.unique(pd.concat([run["item_id"], lab["item_id"]]))) if "item_id" in run.columns else []
    items = [i for i in items if i is not None and not (isinstance(i, float))] or [0]
    cat = draw(catalogs(items))
    attrs = draw(attribute_tables(sorted(set(run["user_id"].dropna().astype(str)))))
    return Hostile((run, lab, cat, attrs), case.broken, case.column, case.fragment)


AUDIT_REFUSALS = ("must be finite", "not in the", "missing from", "no request", "no user", "at least one",
                  "empty", "items missing", "unknown item", "not in catalog", "no item")


def _audit_outcome(case, call, *, allow=AUDIT_REFUSALS):
    res = check_outcome(case, call, strict_rule="column", allow=allow)
    if res is not None:
        assert_published_numbers_explained(res)
        res.to_frame()
    return res


@given(audit_inputs(broken=None), st.sampled_from([None, 1, 3]), st.sampled_from(["log", "rbp", "cascade"]))
def test_exposure_audit(case, k, browsing):
    from receval.audits.exposure import exposure_audit

    run, lab, cat, _ = case.value
    _audit_outcome(case, lambda: exposure_audit(run, cat, group_column="provider", k=k, browsing=browsing,
                                                labels=lab if len(lab) else None, n_boot=5, min_group_size=1))


@given(audit_inputs(broken=None), st.sampled_from([None, 1, 10]), st.booleans())
def test_popularity_audit(case, k, with_groups):
    from receval.audits.popularity import popularity_bias_audit

    run, lab, cat, attrs = case.value
    kw = {"user_groups": attrs, "group_column": "gender"} if with_groups else {}
    _audit_outcome(case, lambda: popularity_bias_audit(run, cat, k=k, n_boot=5, min_group_size=1, **kw))


@given(audit_inputs(broken=None), st.sampled_from([None, 2]), st.booleans())
def test_safety_audit(case, k, with_labels):
    from receval.audits.safety import safety_audit

    run, lab, cat, attrs = case.value
    kw = {"labels": lab, "negative_label": -1.0} if with_labels else {}
    _audit_outcome(case, lambda: safety_audit(run, cat, k=k, n_boot=5, min_group_size=1,
                                              user_groups=attrs, group_column="country", **kw))


@given(audit_inputs(broken=None), st.sampled_from(["uniform", "log"]))
def test_miscalibration_audit(case, weight):
    from receval.audits.miscalibration import miscalibration_audit

    run, lab, cat, attrs = case.value
    hist = run[["user_id", "item_id"]].iloc[::2] if "item_id" in run.columns else run
    _audit_outcome(case, lambda: miscalibration_audit(run, hist, cat, k=3, position_weight=weight, n_boot=5,
                                                      min_group_size=1, user_groups=attrs, group_column="age"))


@given(audit_inputs(broken=None), st.sampled_from(["user", "request"]), st.sampled_from(["group", "error"]))
def test_disparity_audit(case, unit, missing):
    from receval.audits.disparity import disparity_audit

    run, lab, _, attrs = case.value
    _audit_outcome(case, lambda: disparity_audit(run, lab, ["ndcg@10", "mrr"], attributes=attrs,
                                                 sensitive=["gender", "country"], unit=unit, missing=missing,
                                                 n_boot=5, min_group_size=1),
                   allow=AUDIT_REFUSALS + ("(missing)", "missing value", "must not be null", "null"))


@given(audit_inputs(broken=False), st.data())
def test_calibration_audit(case, data):
    from receval.audits.disparity import calibration_audit

    run, lab, _, attrs = case.value
    run = run.assign(prediction=data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, 1e-300]) | st.floats(0, 1),
                                                   min_size=len(run), max_size=len(run))))
    lab = lab.assign(label=(lab["label"] > 0).astype(float))
    _audit_outcome(case, lambda: calibration_audit(run, lab, attributes=attrs, sensitive="age", n_boot=5,
                                                   min_group_size=1, reliability=True),
                   allow=AUDIT_REFUSALS + ("label",))


@given(drift_frames(), st.sampled_from(["quantile", "uniform"]), st.integers(1, 12))
def test_drift_audit(frames, strategy, bins):
    from receval.audits.drift import drift_audit

    base, cur = frames
    try:
        res = drift_audit(base, cur, ["score", "country", "timestamp"], bins=bins, strategy=strategy,
                          categorical=["country"])
    except ReceValError as e:  # e.g. a column with no non-missing value on one side: named
        assert any(f"'{c}'" in str(e) for c in ("score", "country", "timestamp")), e
        return
    d = assert_published_numbers_explained(res)
    for col in d.get("columns", []):
        if isinstance(col, dict) and col.get("psi") is not None:
            assert col["psi"] >= 0


@given(run_and_labels(broken=False), st.data())
def test_parity_audit(case, data):
    from receval.audits.drift import parity_audit

    run, _ = case.value
    off = _pandas(run)[["request_id", "item_id", "score"]]
    logged = off.sample(frac=data.draw(st.sampled_from([0.0, 0.5, 1.0])), random_state=0)
    logged = logged.assign(score=logged["score"] * data.draw(st.sampled_from([1.0, -1.0, 0.0])))
    res = check_outcome(case, lambda: parity_audit(off, logged, k=data.draw(st.integers(1, 4))),
                        allow=("must be finite", "score"))
    if res is not None:
        d = assert_published_numbers_explained(res)
        if d.get("topk_overlap") is not None:
            assert 0 <= d["topk_overlap"] <= 1


@example(Hostile((pd.DataFrame({"request_id": [1], "item_id": [1]}), pd.DataFrame(columns=["request_id", "item_id",
                                                                                            "label"])),
                 "run:missing_column", "score", "required column is missing"), "impressions")  # fuzz finding
@given(run_and_labels(), st.sampled_from(["run", "labels", "impressions"]))
def test_data_quality_never_raises_on_bad_data(case, kind):
    from receval.audits.quality import data_quality

    run, lab = case.value
    frame = lab if kind == "labels" else run
    rep = data_quality(frame, kind)  # never raises on bad data: a report with status error instead
    d = assert_published_numbers_explained(rep)
    # the rule the frame breaks is one of its kind's: impressions need only request_id and item_id (a run
    # without score is a legal impressions frame) and may repeat an item (it can be shown twice)
    rule = (case.broken or "").split(":")[-1]
    side = (case.broken or "").split(":")[0]
    if kind == "impressions":
        applies = side == "run" and rule in ("null_id", "float_id", "mixed_id", "nan_score", "text_score")
    else:
        applies = side == kind
    if applies:
        assert d["status"] == "error", (case.broken, kind, d["status"])
    elif case.valid and kind != "impressions":
        assert d["status"] in ("ok", "warning"), d["status"]


# =========================================================================== regressions found by the fuzzer


def _log(**over):
    base = {"request_id": [1, 2], "item_id": [1, 2], "position": [1, 1], "reward": [0.0, 1.0],
            "propensity": [0.5, 0.5], "q_hat": [0.2, 0.3]}
    base.update(over)
    return pd.DataFrame(base)


_TARGET = pd.DataFrame({"request_id": [1, 2], "item_id": [1, 2], "position": [1, 1], "probability": [1.0, 1.0],
                        "q_hat": [0.2, 0.3]})


@pytest.mark.parametrize("over, column", [
    ({"reward": ["r0", "r1"]}, "reward"),                # was: ValueError from numpy
    ({"propensity": ["0.5", "0.5"]}, "propensity"),
    ({"request_id": [None, 2]}, "request_id"),            # was: pandas merge ValueError (object vs int64)
    ({"item_id": [1.0, 2.5]}, "item_id"),                 # float ids, as in the data contract
    ({"item_id": [1, "x"]}, "item_id"),                   # mixed ids
], ids=["text-reward", "text-propensity", "null-request", "float-item", "mixed-item"])
def test_regression_logged_feedback_column_types_are_input_errors(over, column):
    from receval.counterfactual import logged_feedback
    from receval.errors import InputError

    with pytest.raises(InputError, match=column):
        logged_feedback(_log(**over), _TARGET, reward_range=(0, 1), q_hat_column="q_hat")


def test_regression_text_ids_in_the_log_match_integer_ids_in_the_target():
    from receval.counterfactual import IPS, estimate_many, logged_feedback

    data = logged_feedback(_log(request_id=["1", "2"], item_id=["1", "2"]), _TARGET, reward_range=(0, 1))
    (r,) = estimate_many([IPS()], data, n_boot=5)
    assert r.value == pytest.approx(1.0)  # (0 + 1) / 2 * weight 2


def test_regression_propensity_1e300_gives_finite_diagnostics_without_overflow():
    """Was: RuntimeWarning overflow in w * w (ESS) and in DROS's lam w / (w^2 + lam)."""
    from receval.counterfactual import DROS, IPS, estimate_many, logged_feedback

    data = logged_feedback(_log(propensity=[1.0, 1e-300]), _TARGET, reward_range=(0, 1), q_hat_column="q_hat")
    res = estimate_many([IPS(), DROS()], data, n_boot=5)
    for r in res:
        assert r.diagnostics["ess"] == pytest.approx(1.0)  # one weight dominates: ESS 1 of 2
        assert math.isfinite(r.diagnostics["mean_weight_se"])
    dros = res[1]
    # w = 1e300: the shrunk weight lam w / (w^2 + lam) is ~1e-298, so DROS is DM plus a tiny correction
    assert dros.value == pytest.approx((0.2 + 0.3) / 2 * 0 + (1.0 * 0.2 + 1.0 * 0.3) / 2, abs=0.5)
    assert math.isfinite(dros.value)


def test_regression_undefined_intervals_are_explained():
    """Was: one unit, delta-method interval NaN and no warning."""
    from receval.counterfactual import IPS, estimate_many, logged_feedback

    data = logged_feedback(_log(request_id=[1, 1], position=[1, 2]),
                           pd.concat([_TARGET.assign(request_id=1, position=p) for p in (1, 2)]).assign(
                               item_id=[1, 2, 1, 2], probability=[1.0, 0.0, 0.0, 1.0]), reward_range=(0, 1))
    (r,) = estimate_many([IPS()], data, interval="normal")
    assert r.n == 1 and math.isnan(r.ci_low)
    assert any("interval is undefined" in w for w in r.warnings)
    assert r.to_dict()["ci_low"] is None


def test_regression_slate_weight_overflow_is_an_input_error():
    """Was: RuntimeWarning overflow in np.prod and inf / NaN estimates."""
    from receval.counterfactual import slate_feedback
    from receval.errors import InputError

    log = pd.DataFrame({"slate_id": [0, 0, 0], "position": [1, 2, 3], "reward": [0.0, 1.0, 0.0],
                        "propensity": [0.5] * 3, "propensity_conditional": [1e-300, 1e-300, 1e-300]})
    tgt = pd.DataFrame({"slate_id": [0, 0, 0], "position": [1, 2, 3], "probability": [0.5] * 3,
                        "conditional_probability": [1.0] * 3})
    with pytest.raises(InputError, match="must be finite in float64"):
        slate_feedback(log, tgt, reward_range=(0, 1))


def test_regression_parity_and_data_quality_on_scores_near_the_float_limit():
    """Was: RuntimeWarning overflow in np.std / mean of 1e308 scores."""
    from receval.audits.drift import parity_audit
    from receval.audits.quality import data_quality

    off = pd.DataFrame({"request_id": [1, 1, 1], "item_id": [1, 2, 3], "score": [1e308, -1e308, 1e308]})
    logged = off.assign(score=[1e308, -1e308, 0.0])
    p = parity_audit(off, logged, k=2)
    assert p.correlation is not None and 0 < p.correlation < 1
    assert p.mean_abs_diff == pytest.approx(1e308 / 3)
    q = data_quality(off, "run").to_dict()
    json.dumps(q, allow_nan=False)
    assert "1e+308" in json.dumps(q) or "3.333" in json.dumps(q)  # the mean 1e308/3 is published, not inf


def test_regression_calibration_audit_with_a_subnormal_group_value():
    """Was: RuntimeWarning overflow in 1 / ratio when a group's ECE is subnormal (a prediction of 1e-313),
    found by test_calibration_audit in the CI profile."""
    from receval.audits.disparity import calibration_audit

    run = pd.DataFrame({"request_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 2], "score": [1.0, 0.0, 1.0, 0.0],
                        "user_id": ["a", "a", "b", "b"], "prediction": [1e-313, 0.0, 0.0, 0.0]})
    lab = pd.DataFrame({"request_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 2], "label": [0.0, 0.0, 1.0, 1.0]})
    attrs = pd.DataFrame({"user_id": ["a", "b"], "age": ["<25", "50+"]})
    res = calibration_audit(run, lab, attributes=attrs, sensitive="age", metrics=["ece"], n_boot=5,
                            min_group_size=1)
    d = assert_published_numbers_explained(res)
    young = next(g for g in res["age", "ece"].groups if g.values == ("<25",))
    assert 0 < young.value.value < 1e-300 and young.ratio.value < 1e-300  # the tiny numbers, not 0 or inf
    json.dumps(d, allow_nan=False)
