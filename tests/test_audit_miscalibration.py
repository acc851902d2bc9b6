"""Miscalibration audit (Steck 2018): hand toy, scipy.stats.entropy oracle, properties, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import entropy

from receval.audits.miscalibration import miscalibration_audit
from receval.errors import InputError, UsageError

CATALOG = pl.DataFrame({
    "item_id": ["a", "b", "c", "d", "e"],
    "category": [["drama"], ["comedy"], ["drama", "comedy"], ["action"], None],  # e -> "(missing)"
})
# k = 2: R1 (u1) [b, d]; R2 (u2) [d, a]; R3 (u2) [e, d]; R4 (u3) [a, b]
RUN = pl.DataFrame({
    "request_id": ["R1"] * 3 + ["R2"] * 2 + ["R3"] * 2 + ["R4"] * 2,
    "user_id": ["u1"] * 3 + ["u2"] * 4 + ["u3"] * 2,
    "item_id": ["b", "d", "a", "d", "a", "e", "d", "a", "b"],
    "score": [2.0, 1.0, 0.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0],
})
# u1 {a, c}: drama (1 + 1/2) / 2 = 0.75, comedy 0.25;  u2 {d, e}: action 0.5, (missing) 0.5;
# u3: no history
HISTORY = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["a", "c", "d", "e"]})
LN100 = math.log(100.0)


def audit(**kw):
    kw.setdefault("k", 2)
    kw.setdefault("n_boot", 0)
    kw.setdefault("min_group_size", 1)
    return miscalibration_audit(kw.pop("run", RUN), kw.pop("history", HISTORY), kw.pop("catalog", CATALOG), **kw)


def value(row):
    return row["miscalibration"].value


# u1, R1 [b, d]: q = comedy 0.5, action 0.5; q~ = 0.99 q + 0.01 p
#   drama 0.0075, comedy 0.4975 -> 0.75 ln(0.75 / 0.0075) + 0.25 ln(0.25 / 0.4975)
U1 = 0.75 * LN100 + 0.25 * math.log(0.25 / 0.4975)
# u2, R2 [d, a]: q action 0.5, drama 0.5; q~ action 0.5, (missing) 0.005 -> 0.5 ln 100
#     R3 [e, d]: q = p -> 0; u2 is the mean of its two requests
U2 = (0.5 * LN100 + 0.0) / 2


def test_hand_toy():
    res = audit()
    assert U1 == pytest.approx(3.281844, abs=1e-6)
    assert value(res.overall) == pytest.approx((U1 + U2) / 2)
    o = res.overall
    assert (o.n_users, o.n_undefined) == (3, 1)  # u3 has no history: counted, left out
    assert res.counts["n_users_no_history"] == 1
    assert res.counts["n_items_missing_category"] == 1
    assert res.counts["n_categories"] == 4  # action, comedy, drama, (missing)


def test_position_weighted_list():
    # R1 [b, d] with weights 1 and 1/log2(3): q comedy = 1 / (1 + 1/log2 3), action the rest
    w2 = 1 / math.log2(3)
    q_comedy = 1 / (1 + w2)
    u1 = 0.75 * LN100 + 0.25 * math.log(0.25 / (0.99 * q_comedy + 0.01 * 0.25))
    # R2 [d, a]: action 1 / (1 + w2); (missing) q = 0 -> 0.5 ln(0.5 / 0.005); R3 [e, d]:
    # q (missing) 1 / (1 + w2), action w2 / (1 + w2)
    qa = 1 / (1 + w2)
    r2 = 0.5 * math.log(0.5 / (0.99 * qa + 0.005)) + 0.5 * LN100
    r3 = 0.5 * math.log(0.5 / (0.99 * qa + 0.005)) + 0.5 * math.log(0.5 / (0.99 * (1 - qa) + 0.005))
    res = audit(position_weight="log")
    assert value(res.overall) == pytest.approx((u1 + (r2 + r3) / 2) / 2)


def test_alpha_enters_the_mixture():
    res = audit(alpha=0.5)
    # u1: q~ drama 0.375, comedy 0.375 -> 0.75 ln 2 + 0.25 ln(0.25 / 0.375)
    u1 = 0.75 * math.log(2) + 0.25 * math.log(0.25 / 0.375)
    # u2 R2: q~ action 0.5, (missing) 0.25 -> 0.5 ln 2; R3: 0
    u2 = 0.5 * math.log(2) / 2
    assert value(res.overall) == pytest.approx((u1 + u2) / 2)


def test_user_groups_and_undefined_users():
    ug = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "segment": ["x", "y", "y"]})
    res = audit(user_groups=ug, group_column="segment")
    x, y = res.group("x"), res.group("y")
    assert value(x) == pytest.approx(U1)
    assert value(y) == pytest.approx(U2)
    assert (y.n_users, y.n_undefined) == (2, 1)
    # groups keyed by request: fine while each user has one group
    by_req = pl.DataFrame({"request_id": ["R1", "R2", "R3"], "segment": ["x", "y", "y"]})  # R4 -> (missing)
    res = audit(user_groups=by_req, group_column="segment")
    assert [g.group for g in res.groups] == ["(missing)", "x", "y"]
    miss = res.group("(missing)")  # u3 alone, without a history: no user with a value
    assert (miss.n_users, miss.n_undefined, miss.suppressed, miss.values) == (1, 1, True, {})
    with pytest.raises(InputError, match="one group per user"):
        audit(user_groups=pl.DataFrame({"request_id": ["R2", "R3"], "segment": ["x", "y"]}), group_column="segment")


def test_no_user_has_a_history():
    res = audit(history=pl.DataFrame({"user_id": ["zz"], "item_id": ["a"]}))
    assert value(res.overall) is None
    assert res.overall.n_undefined == 3 and res.counts["n_history_users_not_in_run"] == 1


def test_history_weights_and_repeats():
    # weights: u1 a 3, c 1 -> drama (3 + 0.5) / 4 = 0.875, comedy 0.125; repeated rows add
    hist = pl.DataFrame({"user_id": ["u1", "u1", "u1", "u2"], "item_id": ["a", "a", "c", "d"],
                         "w": [1.0, 2.0, 1.0, 0.0]})
    res = audit(history=hist, history_weight="w")
    u1 = 0.875 * math.log(0.875 / 0.00875) + 0.125 * math.log(0.125 / (0.99 * 0.5 + 0.00125))
    assert value(res.overall) == pytest.approx(u1)
    assert res.counts["n_history_repeats"] == 1
    assert res.counts["n_users_zero_history_weight"] == 1  # u2's only weight is 0: undefined
    assert res.overall.n_undefined == 2


def test_scalar_category_column_and_integer_codes():
    catalog = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "category": [1, 2, 1, 3, 3]})
    res = audit(catalog=catalog)
    # u1 {a, c}: p = {1: 1}; R1 [b, d] q = {2: .5, 3: .5}: q~(1) = 0.01 -> ln 100
    # u2 {d, e}: p = {3: 1}; R2 [d, a] q(3) = 0.5 -> ln(1 / 0.505); R3 [e, d] -> 0
    assert value(res.overall) == pytest.approx((LN100 + math.log(1 / 0.505) / 2) / 2)


def _reference(run, history, catalog, k, alpha):
    """Slow reference: per user, scipy.stats.entropy(p, q~) averaged over the user's requests."""
    cats = {i: sorted(set(c)) for i, c in zip(catalog["item_id"], catalog["category"], strict=True)}
    names = sorted({c for cs in cats.values() for c in cs})

    def dist(items, weights):
        v = np.zeros(len(names))
        for i, w in zip(items, weights, strict=True):
            for c in cats[i]:
                v[names.index(c)] += w / len(cats[i])
        return v / v.sum()

    hist = {}
    for u, i in zip(history["user_id"], history["item_id"], strict=True):
        hist.setdefault(u, set()).add(i)
    per_user = {}
    for _, g in run.group_by(["request_id"]):
        u = g["user_id"][0]
        if u not in hist:
            continue
        top = g.sort("score", descending=True)["item_id"].to_list()[:k]
        p = dist(sorted(hist[u]), [1.0] * len(hist[u]))
        q = dist(top, [1.0] * len(top))
        per_user.setdefault(u, []).append(entropy(p, (1 - alpha) * q + alpha * p))
    return {u: float(np.mean(v)) for u, v in per_user.items()}


def _random_data(seed, n_users=60, n_items=25):
    rng = np.random.default_rng(seed)
    genres = ["g0", "g1", "g2", "g3", "g4", "g5"]
    items = [f"secret_item_{i}" for i in range(n_items)]
    catalog = pl.DataFrame({"item_id": items, "category": [
        list(rng.choice(genres, size=rng.integers(1, 4), replace=False)) for _ in items]})
    runs, hist = [], []
    for u in range(n_users):
        for r in range(rng.integers(1, 3)):
            for i in rng.choice(n_items, 8, replace=False):
                runs.append((f"secret_req_{u}_{r}", f"secret_user_{u}", items[i], float(rng.random())))
        if u % 10:  # every tenth user has no history
            hist += [(f"secret_user_{u}", items[i]) for i in rng.choice(n_items, rng.integers(1, 9), replace=False)]
    run = pl.DataFrame(runs, schema=["request_id", "user_id", "item_id", "score"], orient="row")
    history = pl.DataFrame(hist, schema=["user_id", "item_id"], orient="row")
    return run, history, catalog


def test_matches_scipy_entropy_reference():
    run, history, catalog = _random_data(1)
    ref = _reference(run, history, catalog, k=5, alpha=0.05)
    ug = pl.DataFrame({"user_id": [f"secret_user_{u}" for u in range(60)], "half": ["lo"] * 30 + ["hi"] * 30})
    res = miscalibration_audit(run, history, catalog, k=5, alpha=0.05, n_boot=200, min_group_size=5,
                               user_groups=ug, group_column="half")
    assert res.overall.n_users == 60 and res.overall.n_undefined == 6
    assert value(res.overall) == pytest.approx(np.mean(list(ref.values())), rel=1e-12)
    lo = [v for u, v in ref.items() if int(u.rsplit("_", 1)[1]) < 30]
    assert value(res.group("lo")) == pytest.approx(np.mean(lo), rel=1e-12)
    for row in (res.overall, *res.groups):
        est = row["miscalibration"]
        assert est.low <= est.value <= est.high
    assert "secret_" not in json.dumps(res.to_dict(), allow_nan=False)
    frame = res.to_frame()
    assert frame.columns[:4] == ["group", "n_users", "n_undefined", "suppressed"]
    assert frame["group"].to_list() == ["(all)", "hi", "lo"]


GENRES = st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=1, max_size=3)


@given(st.lists(GENRES, min_size=2, max_size=8), st.data(), st.floats(0.001, 1.0))
def test_list_mirroring_the_history_scores_zero(item_genres, data, alpha):
    n = len(item_genres)
    items = [f"i{j}" for j in range(n)]
    catalog = pl.DataFrame({"item_id": items, "category": item_genres})
    chosen = data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=n, unique=True))
    # the list holds exactly the history's items: q(c|u) = p(c|u), so C_KL = 0 whatever alpha
    run = pl.DataFrame({"request_id": [1] * len(chosen), "user_id": ["u"] * len(chosen), "item_id": chosen,
                        "score": np.arange(len(chosen), dtype=float)})
    hist = pl.DataFrame({"user_id": ["u"] * len(chosen), "item_id": chosen[::-1]})
    res = miscalibration_audit(run, hist, catalog, k=None, alpha=alpha, n_boot=0, min_group_size=1)
    assert value(res.overall) == pytest.approx(0.0, abs=1e-12)
    # any other list of the catalog: 0 <= C_KL <= log(1 / alpha)
    other = data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=n, unique=True))
    run2 = pl.DataFrame({"request_id": [1] * len(other), "user_id": ["u"] * len(other), "item_id": other,
                         "score": np.arange(len(other), dtype=float)})
    v = value(miscalibration_audit(run2, hist, catalog, k=None, alpha=alpha, n_boot=0, min_group_size=1).overall)
    assert -1e-12 <= v <= math.log(1 / alpha) + 1e-12


def test_errors():
    with pytest.raises(UsageError, match="alpha"):
        audit(alpha=0)
    with pytest.raises(UsageError, match="alpha"):
        audit(alpha=1.5)
    with pytest.raises(UsageError, match="position_weight"):
        audit(position_weight="exp")
    with pytest.raises(InputError, match="user_id"):
        audit(run=RUN.drop("user_id"))
    with pytest.raises(InputError, match="required column is missing"):
        audit(catalog=CATALOG.rename({"category": "genre"}))
    with pytest.raises(InputError, match="must be text"):
        audit(catalog=CATALOG.with_columns(category=pl.Series([1.0, 2.0, 1.0, 3.0, 3.0])))
    with pytest.raises(InputError, match="history and catalog"):
        audit(history=pl.DataFrame({"user_id": ["u1"], "item_id": ["zz"]}))
    with pytest.raises(InputError, match="run and catalog"):
        audit(catalog=CATALOG.filter(pl.col("item_id") != "b"))
    with pytest.raises(InputError, match="must be finite, >= 0 and not null"):
        audit(history=HISTORY.with_columns(w=pl.Series([1.0, -1.0, None, 1.0])), history_weight="w")
