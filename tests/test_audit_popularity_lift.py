"""Popularity lift (GAP, Abdollahpouri et al. 2019) and history exclusion in popularity_bias_audit."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from receval.audits.popularity import _profile_codes, popularity_bias_audit
from receval.errors import InputError, UsageError

# popularity 100, 50, 10, 5, 1; 0.8 quantile = 60 -> head {a}, tail {b, c, d, e}
CATALOG = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "popularity": [100, 50, 10, 5, 1]})
# k = 2 top lists (third items are cut):
#   R1 (u1) [a, b] ARP 75    R3 (u1) [d, e] ARP 3   -> GAP_r(u1) = (75 + 3) / 2 = 39
#   R2 (u2) [c, a] ARP 55                             -> GAP_r(u2) = 55
#   R4 (u3) [b, c] ARP 30                             -> GAP_r(u3) = 30
#   R5 (u4) [a, c] ARP 55  (u4 has no history: undefined)
RUN = pl.DataFrame({
    "request_id": ["R1"] * 3 + ["R3"] * 3 + ["R2"] * 3 + ["R4"] * 3 + ["R5"] * 3,
    "user_id": ["u1"] * 6 + ["u2"] * 3 + ["u3"] * 3 + ["u4"] * 3,
    "item_id": ["a", "b", "c", "d", "e", "a", "c", "a", "e", "b", "c", "d", "a", "c", "b"],
    "score": [3.0, 2.0, 1.0] * 5,
})
# u1 {a, c} (a twice: counted once) GAP_p 55, head share 1/2; u2 {d, e} GAP_p 3, share 0;
# u3 {a} GAP_p 100, share 1; u9 is not in the run
HISTORY = pl.DataFrame({
    "user_id": ["u1", "u1", "u1", "u2", "u2", "u3", "u9"],
    "item_id": ["a", "a", "c", "d", "e", "a", "b"],
})


def audit(**kw):
    kw.setdefault("k", 2)
    kw.setdefault("n_boot", 0)
    kw.setdefault("min_group_size", 1)
    kw.setdefault("history", HISTORY)
    return popularity_bias_audit(kw.pop("run", RUN), kw.pop("catalog", CATALOG), **kw)


def val(row, name):
    return row[name].value


def test_gap_overall_by_hand():
    lift = audit().lift
    o = lift.overall
    gap_p = (55 + 3 + 100) / 3
    gap_r = (39 + 55 + 30) / 3
    assert val(o, "gap_profile") == pytest.approx(gap_p)
    assert val(o, "gap_recommended") == pytest.approx(gap_r)
    assert val(o, "delta_gap") == pytest.approx((gap_r - gap_p) / gap_p)  # = -34 / 158
    assert (o.n_users, o.n_undefined) == (4, 1)
    assert lift.counts == {
        "n_users": 4, "n_users_no_history": 1, "n_history_rows": 7, "n_history_repeats": 1,
        "n_history_users_not_in_run": 1, "n_history_items_used": 5,
    }


def test_gap_profile_groups_by_hand():
    # head shares u2 0, u1 1/2, u3 1 -> mid-rank percentiles 1/6, 1/2, 5/6 with cuts (0.2, 0.8)
    lift = audit().lift
    assert [g.group for g in lift.profile_groups] == ["niche", "diverse", "blockbuster"]
    niche, diverse, block = (lift.profile_group(n) for n in ("niche", "diverse", "blockbuster"))
    assert (niche.n_users, diverse.n_users, block.n_users) == (1, 1, 1)
    assert val(niche, "delta_gap") == pytest.approx((55 - 3) / 3)  # u2
    assert val(diverse, "delta_gap") == pytest.approx((39 - 55) / 55)  # u1
    assert val(block, "delta_gap") == pytest.approx((30 - 100) / 100)  # u3


def test_gap_declared_user_groups_by_hand():
    ug = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "segment": ["x", "x", "y", "y"]})
    lift = audit(user_groups=ug, group_column="segment").lift
    x, y = lift.group("x"), lift.group("y")
    assert val(x, "gap_profile") == pytest.approx((55 + 3) / 2)
    assert val(x, "delta_gap") == pytest.approx(((39 + 55) / 2 - 29) / 29)
    assert (y.n_users, y.n_undefined) == (2, 1)  # u4 has no history
    assert val(y, "delta_gap") == pytest.approx(-0.7)  # u3 alone
    # suppression counts users with a history: y has one
    lift = audit(user_groups=ug, group_column="segment", min_group_size=2).lift
    assert lift.group("y").suppressed and lift.group("y").values == {}
    assert not lift.group("x").suppressed


def test_declared_groups_must_be_one_per_user():
    ug = pl.DataFrame({"request_id": ["R1", "R3"], "segment": ["x", "y"]})  # u1's requests differ
    with pytest.raises(InputError, match="one group per user"):
        audit(user_groups=ug, group_column="segment")


def test_exclude_history_rates_by_hand():
    # per request: head universe 1 - |hist ∩ head|, tail universe 4 - |hist ∩ tail|, and
    # recommended history items do not count:
    #   R1 u1 {a, c}: universes (0, 3), shown head a in history -> 0, tail b -> 1
    #   R3 u1:        (0, 3), head 0, tail d, e -> 2
    #   R2 u2 {d, e}: (1, 2), head a -> 1, tail c -> 1
    #   R4 u3 {a}:    (0, 4), head 0, tail b, c -> 2
    #   R5 u4 {}:     (1, 4), head a -> 1, tail c -> 1
    res = audit(exclude_history=True)
    o = res.overall
    assert val(o, "rec_rate_head") == pytest.approx(2 / 2)
    assert val(o, "rec_rate_tail") == pytest.approx(7 / 16)
    assert val(o, "pop_rsp") == pytest.approx((1 - 7 / 16) / (1 + 7 / 16))  # 9 / 23
    assert res.counts["n_recommended_in_history"] == 1  # a in R1
    # without exclusion: 3 head slots / (5 requests * 1), 7 tail slots / (5 * 4)
    o = audit().overall
    assert (val(o, "rec_rate_head"), val(o, "rec_rate_tail")) == pytest.approx((0.6, 0.35))
    # ARP is unaffected by the exclusion
    assert val(o, "arp") == pytest.approx((75 + 3 + 55 + 30 + 55) / 5)


def test_exclude_history_relevant_items():
    labels = pl.DataFrame({"request_id": ["R1", "R1", "R2"], "item_id": ["a", "d", "e"], "label": [1.0, 1.0, 1.0]})
    res = audit(labels=labels, exclude_history=True)
    assert res.counts["n_relevant_in_history"] == 2  # a for u1, e for u2
    assert res.counts["n_relevant"] == 1  # d is left
    o = res.overall
    assert o["rel_rec_rate_head"].value is None  # no relevant head item left
    assert val(o, "rel_rec_rate_tail") == 0.0  # d is not shown
    assert o["pop_reo"].value is None
    o = audit(labels=labels).overall  # kept: head a shown 1/1, tail d, e not shown 0/2
    assert (val(o, "rel_rec_rate_head"), val(o, "rel_rec_rate_tail"), val(o, "pop_reo")) == (1.0, 0.0, 1.0)


def test_profile_codes_ties_share_a_group():
    assert _profile_codes(np.array([0.3] * 7), (0.2, 0.8)).tolist() == [1] * 7  # all tied: diverse
    ten = _profile_codes(np.arange(10) / 10, (0.2, 0.8))
    assert ten.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2, 2]  # 20% / 60% / 20%
    # a tie block goes where its middle lies: ranks 1-3 (mid 2, percentile 0.15) niche,
    # ranks 7-10 (mid 8.5, percentile 0.8) blockbuster
    shares = np.array([0, 0, 0, 0.4, 0.5, 0.6, 1, 1, 1, 1])
    assert _profile_codes(shares, (0.2, 0.8)).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # of 5: the zeros' mid rank 2 is percentile 0.3 (diverse); 0.4 is 0.7, 0.5 is 0.9
    assert _profile_codes(shares[:5], (0.2, 0.8)).tolist() == [1, 1, 1, 1, 2]


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=40),
       st.floats(0, 1), st.floats(0, 1))
def test_profile_codes_are_monotone_in_the_share(shares, c1, c2):
    x = np.array(shares)
    codes = _profile_codes(x, (min(c1, c2), max(c1, c2)))
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(codes[order]) >= 0)  # a higher share never lands in a lower group
    for v in np.unique(x):
        assert len(np.unique(codes[x == v])) == 1  # ties share a group


def test_lift_is_over_users_not_requests():
    # two identical requests per user leave every value and interval unchanged
    twice = pl.concat([RUN, RUN.with_columns(pl.col("request_id") + "_copy")])
    a, b = audit(n_boot=200).lift, audit(run=twice, n_boot=200).lift
    assert a.to_dict()["overall"] == b.to_dict()["overall"]
    assert a.overall["gap_profile"].low < a.overall["gap_profile"].high


def test_lift_intervals_output_and_privacy():
    rng = np.random.default_rng(0)
    items = [f"secret_item_{i}" for i in range(30)]
    pop = rng.integers(1, 1000, 30)
    users = [f"secret_user_{u}" for u in range(120)]
    rows = [(f"secret_req_{u}", users[u], items[i], float(pop[i]) + rng.normal(0, 50))
            for u in range(120) for i in rng.choice(30, 6, replace=False)]
    run = pl.DataFrame(rows, schema=["request_id", "user_id", "item_id", "score"], orient="row")
    hist = pl.DataFrame([(users[u], items[i]) for u in range(110) for i in rng.choice(30, 12, replace=False)],
                        schema=["user_id", "item_id"], orient="row")
    res = popularity_bias_audit(run, pl.DataFrame({"item_id": items, "popularity": pop}), k=3, history=hist,
                                exclude_history=True, n_boot=100, min_group_size=10)
    lift = res.lift
    assert lift.overall.n_undefined == 10
    for row in (lift.overall, *lift.profile_groups):
        assert not row.suppressed
        for name, est in row.values.items():
            assert est.low <= est.value <= est.high, name
    text = json.dumps(res.to_dict(), allow_nan=False)
    assert "secret_" not in text
    frame = lift.to_frame()
    assert frame["grouping"].to_list() == ["all", "profile", "profile", "profile"]
    assert frame["n_users"].to_list() == [120, *(g.n_users for g in lift.profile_groups)]
    assert sum(g.n_users for g in lift.profile_groups) == 110


def test_lift_errors():
    with pytest.raises(UsageError, match="exclude_history"):
        popularity_bias_audit(RUN, CATALOG, exclude_history=True)
    with pytest.raises(InputError, match="user_id"):
        audit(run=RUN.drop("user_id"))
    with pytest.raises(InputError, match="history and catalog"):
        audit(history=pl.DataFrame({"user_id": ["u1"], "item_id": ["zz"]}))
    with pytest.raises(InputError) as err:
        audit(history=pl.DataFrame({"user_id": ["u1", None], "item_id": ["a", "b"]}))
    assert "user_id: must not be null; 1 row violates this, e.g. row 1" in str(err.value)
    with pytest.raises(InputError, match="required column is missing"):
        audit(history=pl.DataFrame({"user": ["u1"], "item_id": ["a"]}))
    with pytest.raises(UsageError, match="profile_cuts"):
        audit(profile_cuts=(0.8, 0.2))
