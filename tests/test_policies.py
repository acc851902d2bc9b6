"""Target policies from scores: deterministic top-k, softmax, Plackett-Luce marginals."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import polars as pl
import pytest

from receval.counterfactual import logged_feedback
from receval.counterfactual.policies import TargetPolicy, deterministic_topk, softmax_policy
from receval.errors import InputError, UsageError


def _scores(n_requests=6, n_min=3, n_max=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_requests):
        for i in range(int(rng.integers(n_min, n_max + 1))):
            rows.append((f"r{r}", 100 + i, float(rng.normal())))
    return pd.DataFrame(rows, columns=["request_id", "item_id", "score"])


def _brute_force(scores: np.ndarray, k: int, temperature: float = 1.0) -> np.ndarray:
    """P(item i at position j) by summing the probability of every ordered prefix."""
    w = np.exp(scores / temperature)
    n = len(w)
    out = np.zeros((n, k))
    for prefix in itertools.permutations(range(n), k):
        p, rest = 1.0, w.sum()
        for i in prefix:
            p *= w[i] / rest
            rest -= w[i]
        for j, i in enumerate(prefix):
            out[i, j] += p
    return out


def _matrix(policy: TargetPolicy, request, items, k) -> np.ndarray:
    f = policy.frame[policy.frame["request_id"] == request]
    m = np.zeros((len(items), k))
    pos_of = {it: n for n, it in enumerate(items)}
    for it, pos, p in f[["item_id", "position", "probability"]].itertuples(index=False):
        m[pos_of[it], pos - 1] = p
    return m


def test_deterministic_topk_tie_rule_byte_order_and_decimal_text():
    scores = pd.DataFrame(
        {
            "request_id": ["a"] * 5 + ["b"] * 3,
            # integer ids compare by decimal text: "9" > "10" > "1"
            "item_id": [1, 9, 10, 2, 3] + [7, 8, 6],
            "score": [0.5, 0.5, 0.5, 0.9, 0.1] + [1.0, 1.0, 2.0],
        }
    )
    tp = deterministic_topk(scores, k=3)
    assert tp.method == "deterministic"
    a = tp.frame[tp.frame["request_id"] == "a"].sort_values("position")
    assert a["item_id"].tolist() == [2, 9, 10]  # 0.9 first, then ties: "9" > "10" > "1"
    b = tp.frame[tp.frame["request_id"] == "b"].sort_values("position")
    assert b["item_id"].tolist() == [6, 8, 7]
    assert (tp.frame["probability"] == 1.0).all()
    assert tp.frame.groupby(["request_id", "position"]).size().eq(1).all()


def test_deterministic_topk_string_ids_byte_order_and_polars_input():
    scores = pl.DataFrame({"request_id": [1, 1, 1], "item_id": ["B", "a", "Z"], "score": [0.0, 0.0, 0.0]})
    tp = deterministic_topk(scores, k=3)
    # byte order: "a" (0x61) > "Z" (0x5A) > "B" (0x42); descending
    assert tp.frame.sort_values("position")["item_id"].tolist() == ["a", "Z", "B"]


def test_softmax_k1_equals_closed_form():
    scores = _scores()
    tp = softmax_policy(scores, k=1, temperature=0.7)
    assert tp.method == "closed_form"
    for r, g in scores.groupby("request_id"):
        s = g["score"].to_numpy()
        expect = np.exp(s / 0.7) / np.exp(s / 0.7).sum()
        got = _matrix(tp, r, g["item_id"].tolist(), 1)[:, 0]
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-15)
    sums = tp.frame.groupby(["request_id", "position"])["probability"].sum()
    assert np.abs(sums - 1).max() < 1e-12


@pytest.mark.parametrize("k", [2, 3, 4])
def test_plackett_luce_exact_equals_brute_force(k):
    scores = _scores(n_min=4, n_max=6, seed=k)
    tp = softmax_policy(scores, k=k, temperature=0.8)
    assert tp.method == "exact" and tp.n_samples == 0 and tp.max_se == 0.0
    for r, g in scores.groupby("request_id"):
        expect = _brute_force(g["score"].to_numpy(), k, 0.8)
        got = _matrix(tp, r, g["item_id"].tolist(), k)
        np.testing.assert_allclose(got, expect, atol=1e-12)
    sums = tp.frame.groupby(["request_id", "position"])["probability"].sum()
    assert len(sums) == scores["request_id"].nunique() * k
    assert np.abs(sums - 1).max() < 1e-9
    # a probability of an item over all positions is at most 1
    assert tp.frame.groupby(["request_id", "item_id"])["probability"].sum().max() <= 1 + 1e-12


def test_monte_carlo_within_four_standard_errors_of_exact():
    scores = _scores(n_requests=8, n_min=4, n_max=7, seed=5)
    exact = softmax_policy(scores, k=3)
    n_samples = 20_000
    mc = softmax_policy(scores, k=3, max_exact=0, n_samples=n_samples, seed=11)
    assert mc.method == "monte_carlo" and mc.n_samples == n_samples
    merged = exact.frame.merge(mc.frame, on=["request_id", "item_id", "position"], suffixes=("_x", "_mc"))
    assert len(merged) == len(exact.frame) == len(mc.frame)
    p = merged["probability_x"].to_numpy()
    se = np.sqrt(p * (1 - p) / n_samples)
    err = np.abs(merged["probability_mc"].to_numpy() - p)
    assert (err <= 4 * se + 1e-12).all(), float((err / np.maximum(se, 1e-300)).max())
    assert err.max() > 0  # it really sampled
    sums = mc.frame.groupby(["request_id", "position"])["probability"].sum()
    assert np.abs(sums - 1).max() < 1e-12
    assert 0 < mc.max_se <= 0.5 / np.sqrt(n_samples)


def test_mixed_exact_and_monte_carlo_by_candidate_count():
    scores = pd.concat([_scores(3, 3, 3, seed=1), _scores(2, 8, 8, seed=2).assign(request_id=lambda d: d["request_id"] + "x")])
    tp = softmax_policy(scores, k=2, max_exact=6, n_samples=2000)  # 3*2 = 6 prefixes exact, 8*7 = 56 not
    assert tp.method == "exact+monte_carlo"
    assert tp.details == {"exact": 3, "monte_carlo": 2}


def test_monte_carlo_seeded_reproducible():
    scores = _scores(seed=3)
    a = softmax_policy(scores, k=2, max_exact=0, n_samples=500, seed=7)
    b = softmax_policy(scores, k=2, max_exact=0, n_samples=500, seed=7)
    c = softmax_policy(scores, k=2, max_exact=0, n_samples=500, seed=8)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.frame["probability"].equals(c.frame["probability"])


def test_temperature_limits():
    scores = _scores(n_min=5, n_max=5, seed=9)
    top = deterministic_topk(scores, k=3).frame
    cold = softmax_policy(scores, k=3, temperature=1e-4).frame
    m = cold.merge(top, on=["request_id", "item_id", "position"], how="left", suffixes=("", "_top"))
    np.testing.assert_allclose(m["probability"], m["probability_top"].fillna(0.0), atol=1e-9)
    hot = softmax_policy(scores, k=3, temperature=1e6).frame
    np.testing.assert_allclose(hot["probability"], 1 / 5, atol=1e-5)


def test_extreme_score_range_stays_normalised():
    # weights e^0, e^-1000, e^-2000: the naive 1 - p normaliser would be 0
    scores = pd.DataFrame({"request_id": 1, "item_id": [1, 2, 3, 4], "score": [0.0, -1000.0, -2000.0, -2000.5]})
    tp = softmax_policy(scores, k=3)
    f = tp.frame.set_index(["item_id", "position"])["probability"]
    assert f[(1, 1)] == pytest.approx(1.0)
    assert f[(2, 2)] == pytest.approx(1.0)
    assert f[(3, 3)] == pytest.approx(1 / (1 + np.exp(-0.5)), rel=1e-12)
    assert np.isfinite(tp.frame["probability"]).all()


def test_target_policy_feeds_logged_feedback():
    scores = pd.DataFrame({"request_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 2], "score": [0.0, 1.0, 0.0, 0.0]})
    tp = softmax_policy(scores)
    log = pd.DataFrame({"request_id": [1, 2], "item_id": [2, 1], "reward": [1.0, 0.0], "propensity": [0.5, 0.5]})
    data = logged_feedback(log, tp)
    np.testing.assert_allclose(data.target_prob, [np.exp(1) / (1 + np.exp(1)), 0.5])


def test_errors():
    scores = _scores()
    bad = scores.copy()
    bad.loc[[0, 2], "score"] = np.nan
    with pytest.raises(InputError, match=r"score: must be finite.*2 rows"):
        softmax_policy(bad)
    with pytest.raises(UsageError, match="temperature"):
        softmax_policy(scores, temperature=0)
    with pytest.raises(UsageError, match="temperature"):
        softmax_policy(scores, temperature=-1.0)
    sizes = scores.groupby("request_id").size()
    k = int(sizes.max())
    n_short, fewest = int((sizes < k).sum()), int(sizes.min())
    assert n_short > 0
    with pytest.raises(UsageError, match=rf"k={k} exceeds the number of candidates in {n_short} of 6 requests \(fewest: {fewest}\)"):
        softmax_policy(scores, k=k)
    softmax_policy(scores, k=fewest)  # the boundary is allowed
    with pytest.raises(UsageError, match="k must be"):
        deterministic_topk(scores, k=0)
    with pytest.raises(UsageError, match="missing required column"):
        deterministic_topk(scores.drop(columns="score"), k=1)
    with pytest.raises(InputError, match="scored once"):
        deterministic_topk(pd.concat([scores, scores.head(1)]), k=1)
    with pytest.raises(UsageError, match="n_samples"):
        softmax_policy(scores, k=2, n_samples=0)
