"""Popularity bias and safety exposure audits: hand-computed toys, groups, suppression, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from receval.audits.popularity import popularity_bias_audit
from receval.audits.safety import safety_audit
from receval.errors import InputError, UsageError

# popularity sorted: 1, 5, 10, 50, 100; 0.8 quantile (linear) = 50 + 0.2 * (100 - 50) = 60
# -> long tail {b, c, d, e} (pop <= 60), short head {a}
CATALOG = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "popularity": [100, 50, 10, 5, 1]})
# k = 2: R1 -> [a, b] (d cut), R2 -> [c, a] (e cut)
RUN = pl.DataFrame({
    "request_id": [1, 1, 1, 2, 2, 2],
    "item_id": ["a", "b", "d", "c", "a", "e"],
    "score": [3.0, 2.0, 1.0, 2.0, 1.0, 0.0],
})
# relevant: R1 {a, d}, R2 {a, c, e}; label 0 is not relevant
LABELS = pl.DataFrame({
    "request_id": [1, 1, 1, 2, 2, 2],
    "item_id": ["a", "d", "b", "a", "c", "e"],
    "label": [1.0, 1.0, 0.0, 1.0, 2.0, 1.0],
})
GROUPS = pl.DataFrame({"request_id": [1], "segment": ["x"]})  # request 2 has no row -> "(missing)"


def pop(**kw):
    kw.setdefault("k", 2)
    kw.setdefault("n_boot", 0)
    kw.setdefault("min_group_size", 1)
    return popularity_bias_audit(kw.pop("run", RUN), kw.pop("catalog", CATALOG), **kw)


def val(row, name):
    return row[name].value


# ---------------------------------------------------------------- popularity


def test_arp_aplt_aclt_by_hand():
    res = pop()
    o = res.overall
    assert val(o, "arp") == pytest.approx(((100 + 50) / 2 + (10 + 100) / 2) / 2)  # (75 + 55) / 2 = 65
    assert val(o, "aplt") == pytest.approx((1 / 2 + 1 / 2) / 2)  # b of R1, c of R2
    assert val(o, "aclt") == pytest.approx((1 + 1) / 2)
    assert res.counts["n_head_items"] == 1 and res.counts["n_tail_items"] == 4
    assert res.counts["tail_threshold"] == pytest.approx(60.0)


def test_tail_quantile_moves_the_threshold():
    # 0.5 quantile = 10 -> tail {c, d, e}: R1 [a, b] has 0 tail items, R2 [c, a] has 1
    o = pop(tail_quantile=0.5).overall
    assert val(o, "aplt") == pytest.approx((0 / 2 + 1 / 2) / 2)
    assert val(o, "aclt") == pytest.approx((0 + 1) / 2)


def test_pop_rsp_by_hand():
    o = pop().overall
    p_head = (1 + 1) / (2 * 1)  # head slots / (requests * head items)
    p_tail = (1 + 1) / (2 * 4)  # tail slots / (requests * tail items) = 0.25
    assert val(o, "rec_rate_head") == pytest.approx(p_head)
    assert val(o, "rec_rate_tail") == pytest.approx(p_tail)
    rates = np.array([p_head, p_tail])
    assert val(o, "pop_rsp") == pytest.approx(rates.std() / rates.mean())  # = 0.75 / 1.25 = 0.6
    assert val(o, "pop_rsp") == pytest.approx(0.6)
    assert o["pop_reo"] is None  # no labels


def test_pop_reo_by_hand():
    o = pop(labels=LABELS).overall
    head = 2 / 2  # relevant head items: a in R1 (shown), a in R2 (shown)
    tail = 1 / 3  # relevant tail items: d in R1 (cut), c in R2 (shown), e in R2 (cut)
    assert val(o, "rel_rec_rate_head") == pytest.approx(head)
    assert val(o, "rel_rec_rate_tail") == pytest.approx(tail)
    assert val(o, "pop_reo") == pytest.approx(abs(head - tail) / (head + tail))  # = 0.5
    assert val(o, "pop_reo") == pytest.approx(0.5)


def test_ties_broken_by_item_id_text_descending():
    run = pl.DataFrame({"request_id": [1, 1], "item_id": ["a", "b"], "score": [1.0, 1.0]})
    assert val(pop(run=run, k=1).overall, "arp") == pytest.approx(50.0)  # b before a


def test_popularity_per_user_group_and_missing():
    res = pop(user_groups=GROUPS, group_column="segment")
    assert [g.group for g in res.groups] == ["(missing)", "x"]
    x, miss = res.group("x"), res.group("(missing)")
    assert (x.n_requests, miss.n_requests) == (1, 1)
    assert val(x, "arp") == pytest.approx(75.0)  # R1: (100 + 50) / 2
    assert val(miss, "arp") == pytest.approx(55.0)  # R2: (10 + 100) / 2
    # per group rate of the tail: 1 tail slot / (1 request * 4 tail items)
    assert val(x, "rec_rate_tail") == pytest.approx(0.25)


def test_user_groups_keyed_by_user_id():
    run = RUN.with_columns(user_id=pl.Series(["u1", "u1", "u1", "u2", "u2", "u2"]))
    ug = pl.DataFrame({"user_id": ["u1", "u2"], "segment": ["old", None]})  # null group -> "(missing)"
    res = pop(run=run, user_groups=ug, group_column="segment")
    assert val(res.group("old"), "arp") == pytest.approx(75.0)
    assert val(res.group("(missing)"), "arp") == pytest.approx(55.0)
    with pytest.raises(InputError, match="user_id"):
        pop(user_groups=ug, group_column="segment")  # RUN has no user_id


def test_popularity_suppression():
    res = pop(user_groups=GROUPS, group_column="segment", min_group_size=2)
    for g in res.groups:
        assert g.suppressed and g.values == {} and g.n_requests == 1
        assert g.to_dict(res.FIELDS)["arp"] is None
    assert res.counts["n_groups_suppressed"] == 2
    assert val(res.overall, "arp") == pytest.approx(65.0)  # overall is never suppressed
    frame = res.to_frame()
    assert frame["arp"].to_list() == [65.0, None, None]


def test_popularity_errors():
    with pytest.raises(InputError) as err:
        pop(catalog=CATALOG.filter(pl.col("item_id") != "b"))
    assert "1 row violates" in str(err.value) and "'b'" in str(err.value)
    with pytest.raises(InputError, match="must not be null"):
        pop(catalog=CATALOG.with_columns(popularity=pl.Series([1, None, 3, 4, 5])))
    with pytest.raises(InputError, match=">= 0"):
        pop(catalog=CATALOG.with_columns(popularity=pl.Series([1, -1, 3, 4, 5])))
    with pytest.raises(InputError, match="labels and catalog"):
        pop(labels=pl.DataFrame({"request_id": [1], "item_id": ["zz"], "label": [1.0]}))
    with pytest.raises(UsageError):
        pop(tail_quantile=1.5)
    with pytest.raises(UsageError):
        pop(user_groups=GROUPS)  # no group_column
    with pytest.raises(UsageError):
        pop(k=0)


# ---------------------------------------------------------------- safety

FLAGS = pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "flagged": [True, False, False, False, False]})
# k = 2: R1 -> [a, b], R2 -> [c, b]
SRUN = pl.DataFrame({
    "request_id": [1, 1, 1, 2, 2, 2],
    "item_id": ["a", "b", "d", "c", "b", "e"],
    "score": [3.0, 2.0, 1.0, 2.0, 1.0, 0.0],
})
FEEDBACK = pl.DataFrame({"request_id": [1, 1, 2, 2], "item_id": ["a", "b", "c", "e"], "label": [-1.0, 1.0, -1.0, -1.0]})


def v(j):
    return 1.0 / math.log2(1.0 + j)


def safe(**kw):
    kw.setdefault("k", 2)
    kw.setdefault("n_boot", 0)
    kw.setdefault("min_group_size", 1)
    return safety_audit(kw.pop("run", SRUN), kw.pop("flags", FLAGS), **kw)


def test_safety_shares_by_hand():
    o = safe().overall
    assert val(o, "slot_share") == pytest.approx(1 / 4)  # a in R1 of 4 slots
    assert val(o, "exposure_share") == pytest.approx(v(1) / (2 * (v(1) + v(2))))
    assert val(o, "request_share") == pytest.approx(1 / 2)
    assert o["negative_rate_flagged"] is None


def test_safety_negative_feedback_by_hand():
    o = safe(labels=FEEDBACK, negative_label=-1).overall
    assert val(o, "negative_rate_flagged") == pytest.approx(1 / 1)  # a shown, negative
    # unflagged shown: b (R1, label 1), c (R2, -1), b (R2, no label); e (-1) is not shown
    assert val(o, "negative_rate_unflagged") == pytest.approx(1 / 3)
    assert val(o, "negative_rate_ratio") == pytest.approx(3.0)


def test_safety_per_group_missing_and_suppression():
    res = safe(user_groups=GROUPS, group_column="segment")
    x, miss = res.group("x"), res.group("(missing)")
    assert val(x, "slot_share") == pytest.approx(1 / 2)
    assert val(x, "exposure_share") == pytest.approx(v(1) / (v(1) + v(2)))
    assert val(miss, "slot_share") == 0.0 and val(miss, "request_share") == 0.0
    res = safe(user_groups=GROUPS, group_column="segment", min_group_size=2)
    assert all(g.suppressed and g.values == {} for g in res.groups)


def test_safety_flags_as_integers():
    o = safe(flags=FLAGS.with_columns(pl.col("flagged").cast(pl.Int64))).overall
    assert val(o, "slot_share") == pytest.approx(1 / 4)


def test_safety_errors():
    with pytest.raises(InputError) as err:
        safe(flags=FLAGS.filter(pl.col("item_id") != "c"))
    assert "run and flags" in str(err.value) and "'c'" in str(err.value) and "1 row violates" in str(err.value)
    with pytest.raises(InputError, match="must not be null"):
        safe(flags=FLAGS.with_columns(flagged=pl.Series([True, None, False, False, False])))
    with pytest.raises(InputError, match="boolean"):
        safe(flags=FLAGS.with_columns(flagged=pl.Series(["y", "n", "n", "n", "n"])))
    with pytest.raises(UsageError):
        safe(labels=FEEDBACK)  # no negative_label
    with pytest.raises(UsageError):
        safe(negative_label=-1)  # no labels


# ---------------------------------------------------------------- intervals, privacy


def _random_data(n_req=300, seed=1):
    rng = np.random.default_rng(seed)
    items = [f"secret_item_{i}" for i in range(40)]
    popularity = rng.integers(0, 1000, 40)
    rows = []
    for r in range(n_req):
        for i in rng.choice(40, size=5, replace=False):  # a popularity-biased ranker
            rows.append((f"secret_req_{r}", items[i], float(popularity[i]) + rng.normal(0, 100)))
    run = pl.DataFrame(rows, schema=["request_id", "item_id", "score"], orient="row")
    catalog = pl.DataFrame({"item_id": items, "popularity": popularity,
                            "flagged": rng.random(40) < 0.2})
    ug = pl.DataFrame({"request_id": [f"secret_req_{r}" for r in range(n_req)],
                       "segment": [["g1", "g2", None][r % 3] for r in range(n_req)]})
    labels = run.sample(fraction=0.3, seed=2).select("request_id", "item_id").with_columns(
        label=pl.Series(rng.choice([-1.0, 1.0], size=int(run.height * 0.3))))
    return run, catalog, ug, labels


def test_intervals_contain_estimates_and_output_has_no_ids():
    run, catalog, ug, labels = _random_data()
    results = [
        popularity_bias_audit(run, catalog, k=3, labels=labels, user_groups=ug, group_column="segment", n_boot=200),
        safety_audit(run, catalog, k=3, labels=labels, negative_label=-1, user_groups=ug, group_column="segment",
                     n_boot=200),
    ]
    for res in results:
        assert [g.group for g in res.groups] == ["(missing)", "g1", "g2"]
        for row in (res.overall, *res.groups):
            assert not row.suppressed and row.n_requests >= 100
            for name, est in row.values.items():
                assert est.value is not None, name
                assert est.low <= est.value + 1e-12 and est.value <= est.high + 1e-12, name
        assert res.overall.values[res.FIELDS[0]].low < res.overall.values[res.FIELDS[0]].high
        text = json.dumps(res.to_dict(), allow_nan=False)
        assert "secret_" not in text
        assert res.to_frame().height == 4


# ---------------------------------------------------------------- PopRSP / PopREO intervals near parity


def _exact_parity(n_req=10_000):
    # tail_quantile 0.5 of popularity 1..4 is 2.5: tail {c, d}, head {a, b}. k = 1; half the
    # requests show a head item, half a tail item: both rates are (n/2) / (n * 2), PopRSP = 0.
    # Every item is relevant to every request: both relevant rates are (n/2) / (2n), PopREO = 0
    catalog = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "popularity": [4, 3, 2, 1]})
    top = ["a", "c", "b", "d"]
    run = pl.DataFrame({"request_id": list(range(n_req)), "item_id": [top[r % 4] for r in range(n_req)],
                        "score": [1.0] * n_req})
    labels = pl.DataFrame({"request_id": np.repeat(np.arange(n_req), 4), "item_id": ["a", "b", "c", "d"] * n_req,
                           "label": 1.0})
    return run, catalog, labels


def test_pop_rsp_interval_reaches_parity():
    # The percentile interval of |d*| lies above an estimate of 0 (every replicate is >= 0 and,
    # with many requests, fewer than 2.5% are exactly 0); the folded interval of the signed
    # d = (a - b) / (a + b) starts at 0.
    run, catalog, labels = _exact_parity()
    o = popularity_bias_audit(run, catalog, k=1, tail_quantile=0.5, labels=labels, n_boot=200).overall
    for name in ("pop_rsp", "pop_reo"):
        est = o[name]
        assert est.value == 0.0, name
        assert est.low == 0.0 and est.high > 0.0, name


def test_folded_interval_is_the_image_of_the_signed_interval():
    from receval.audits._result import group_rows
    from receval.audits.popularity import _signed_rsp

    rng = np.random.default_rng(4)
    n = 60
    mat = np.column_stack([rng.poisson(1.0, n), rng.poisson(1.0, n), np.ones(n)]).astype(float)
    finishes = {"d": lambda s: _signed_rsp(s[:, 0] / s[:, 2], s[:, 1] / s[:, 2])}
    codes = np.zeros(n, dtype=np.int64)
    kw = {"min_group_size": 1, "n_boot": 300, "level": 0.9, "seed": 5}
    signed = group_rows(mat, finishes, codes, [], **kw)[0]["d"]
    folded = group_rows(mat, finishes, codes, [], fold=("d",), **kw)[0]["d"]
    assert folded.value == pytest.approx(abs(signed.value))
    assert signed.low < 0 < signed.high  # this sample straddles parity
    assert (folded.low, folded.high) == (0.0, max(-signed.low, signed.high))


@pytest.mark.parametrize(("d", "low", "high", "expected"), [
    (0.1, -0.2, 0.3, (0.1, 0.0, 0.3)),  # interval holds 0: [0, max |bound|]
    (-0.1, -0.4, 0.3, (0.1, 0.0, 0.4)),
    (0.5, 0.2, 0.7, (0.5, 0.2, 0.7)),  # all positive: unchanged
    (-0.5, -0.7, -0.2, (0.5, 0.2, 0.7)),  # all negative: mirrored
])
def test_fold_interval_cases(d, low, high, expected):
    from receval.audits._result import fold_interval

    assert fold_interval(d, low, high) == pytest.approx(expected)


@pytest.mark.slow
def test_pop_rsp_interval_coverage_near_parity():
    # Known truth: k = 1, a head item (of 2) with probability p, else a tail item (of 2):
    # rate_H = p / 2, rate_T = (1 - p) / 2, PopRSP = |2p - 1|. At parity (p = 0.5) the old
    # percentile interval of |d*| covered 0 in almost no sample; the folded one must cover
    # the truth about as often as its level says, at and near parity.
    catalog = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "popularity": [4, 3, 2, 1]})
    rng = np.random.default_rng(11)
    n_req, n_sim = 150, 200
    for p in (0.5, 0.53):
        truth = abs(2 * p - 1)
        hits = 0
        for _ in range(n_sim):
            head = rng.random(n_req) < p
            pick = np.where(head, rng.choice(["a", "b"], n_req), rng.choice(["c", "d"], n_req))
            run = pl.DataFrame({"request_id": np.arange(n_req), "item_id": pick, "score": np.ones(n_req)})
            est = popularity_bias_audit(run, catalog, k=1, tail_quantile=0.5, n_boot=200, seed=None).overall["pop_rsp"]
            hits += est.low <= truth <= est.high
        assert hits / n_sim >= 0.9, (p, hits / n_sim)


def test_no_intervals_when_n_boot_zero():
    o = pop(n_boot=0).overall
    assert o["arp"].low is None and o["arp"].high is None
