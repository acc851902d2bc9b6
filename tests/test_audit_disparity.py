"""User-side performance disparity and calibration by group.

Oracles: fairlearn's MetricFrame on per-user rows built here independently
(``receval.evaluate`` per-request values, averaged per user with polars),
hand-computed toys, a brute-force bootstrap, ``receval.evaluate`` restricted
to a group's requests (calibration), numpy's quantile, and hypothesis
properties (relabelling groups, permuting rows).
"""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import receval
from receval.audits.disparity import (
    ALL_GROUP,
    MISSING_GROUP,
    SEP,
    _cell_sums,
    _Cells,
    _percentiles,
    _plan,
    calibration_audit,
    disparity_audit,
)
from receval.errors import InputError, UsageError

# fairlearn and the pandas it drives are imported lazily by the audit; the
# oracle needs them too
MetricFrame = pytest.importorskip("fairlearn.metrics").MetricFrame


def make_data(n_users: int = 150, seed: int = 0, length: int = 5, extra: float = 0.7, countries=("DE", "FR", "US"),
              int_ids: bool = False):
    """Users (ids 'user-00042', or 42 with ``int_ids``) making 1+ requests of ``length`` items,
    graded labels, a users table.

    About 5% of countries are null and 3% of users have no row in the table.
    """
    rng = np.random.default_rng(seed)
    n_req = n_users + int(extra * n_users)
    owner = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n_req - n_users)])
    rng.shuffle(owner)
    uid = np.arange(n_users) if int_ids else np.array([f"user-{i:05d}" for i in range(n_users)])
    run = pl.DataFrame({
        "request_id": np.repeat(np.arange(n_req), length),
        "item_id": np.tile(np.arange(length), n_req),
        "score": rng.random(n_req * length),
        "user_id": np.repeat(uid[owner], length),
        "prediction": rng.random(n_req * length),
    })
    item = rng.integers(0, length, (n_req, 2))
    item[:, 1] = (item[:, 0] + 1 + rng.integers(0, length - 1, n_req)) % length
    labels = pl.DataFrame({
        "request_id": np.repeat(np.arange(n_req), 2),
        "item_id": item.ravel(),
        "label": rng.integers(0, 3, 2 * n_req),
    })
    country = np.array(countries, dtype=object)[rng.integers(0, len(countries), n_users)]
    country[rng.random(n_users) < 0.05] = None
    keep = rng.random(n_users) >= 0.03
    attrs = pl.DataFrame({
        "user_id": uid[keep],
        "country": pl.Series(list(country[keep]), dtype=pl.String),
        "age_band": np.array(["young", "mid", "old"])[rng.integers(0, 3, n_users)][keep],
        "gender": np.array(["f", "m"])[rng.integers(0, 2, n_users)][keep],
    })
    return run, labels, attrs


RUN, LABELS, ATTRS = make_data()


def mean_metric(y_true, y_pred):
    return float(np.mean(y_true))


def per_user_rows(run, labels, metrics, attrs, cols, **kw):
    """The oracle's per-user rows: evaluate's per-request values, mean per user, attributes joined."""
    res = receval.evaluate(run, labels, metrics, n_boot=1, **kw)
    per_req = res.per_request_polars()
    owners = run.select("request_id", "user_id").unique()
    rows = per_req.join(owners, on="request_id").group_by("user_id").agg([pl.col(m).mean() for m in metrics])
    rows = rows.join(attrs.select("user_id", *cols), on="user_id", how="left")
    return rows.with_columns([pl.col(c).fill_null(MISSING_GROUP) for c in cols]).sort("user_id").to_pandas()


def frame_of(rows, metric, cols):
    feats = rows[cols[0]] if len(cols) == 1 else rows[list(cols)]
    return MetricFrame(metrics=mean_metric, y_true=rows[metric].to_numpy(), y_pred=np.zeros(len(rows)),
                       sensitive_features=feats)


def audit(**kw):
    kw.setdefault("metrics", ["ndcg@10", "mrr"])
    kw.setdefault("attributes", ATTRS)
    kw.setdefault("sensitive", ["country"])
    kw.setdefault("n_boot", 0)
    kw.setdefault("min_group_size", 0)
    return disparity_audit(kw.pop("run", RUN), kw.pop("labels", LABELS), **kw)


def check_against_frame(md, mf):
    """Every group value, difference, ratio and summary of ``md`` equals MetricFrame's."""
    by_group = mf.by_group.dropna()  # several features: empty combinations are listed as NaN
    assert len(md.groups) == len(by_group)
    overall = float(mf.overall)
    assert md.reference_value.value == pytest.approx(overall, abs=1e-12)
    for g in md.groups:
        key = g.values[0] if len(g.values) == 1 else tuple(g.values)
        expected = float(by_group.loc[key])
        assert g.value.value == pytest.approx(expected, abs=1e-12)
        assert g.difference.value == pytest.approx(expected - overall, abs=1e-12)
        assert g.ratio.value == pytest.approx(expected / overall, abs=1e-12)
    assert md.group_min == pytest.approx(float(mf.group_min()), abs=1e-12)
    assert md.group_max == pytest.approx(float(mf.group_max()), abs=1e-12)
    assert md.difference_between_groups == pytest.approx(float(mf.difference()), abs=1e-12)
    assert md.ratio_between_groups == pytest.approx(float(mf.ratio()), abs=1e-12)
    assert md.max_abs_difference == pytest.approx(float(mf.difference(method="to_overall")), abs=1e-12)
    assert md.min_ratio == pytest.approx(float(mf.ratio(method="to_overall")), abs=1e-12)


# --------------------------------------------------------------------------- fairlearn as oracle


def test_group_values_differences_ratios_equal_metric_frame():
    res = audit(sensitive=["country", "age_band"], intersections=False)
    rows = per_user_rows(RUN, LABELS, ["ndcg@10", "mrr"], ATTRS, ["country", "age_band"])
    for col in ("country", "age_band"):
        for metric in ("ndcg@10", "mrr"):
            md = res[col, metric]
            assert md.engine == "fairlearn.MetricFrame"
            check_against_frame(md, frame_of(rows, metric, [col]))
            sizes = rows.groupby(col).size()
            assert {g.group: g.n for g in md.groups} == {k: int(v) for k, v in sizes.items()}
    assert res.overall["ndcg@10"].value == pytest.approx(rows["ndcg@10"].mean(), abs=1e-12)
    assert res.counts["n_users"] == len(rows)


def test_intersections_equal_metric_frame_with_several_features():
    res = audit(sensitive=["country", "age_band", "gender"], metrics=["ndcg@10"],
                intersections=[("country", "age_band"), ("country", "age_band", "gender")])
    assert [a.name for a in res.attributes] == ["country", "age_band", "gender", "country & age_band",
                                                "country & age_band & gender"]
    rows = per_user_rows(RUN, LABELS, ["ndcg@10"], ATTRS, ["country", "age_band", "gender"])
    for cols in (("country", "age_band"), ("country", "age_band", "gender")):
        md = res[cols, "ndcg@10"]
        check_against_frame(md, frame_of(rows, "ndcg@10", list(cols)))
        assert all(g.group == SEP.join(g.values) for g in md.groups)
    # default: every pair
    pairs = audit(sensitive=["country", "age_band", "gender"], metrics=["mrr"])
    assert [a.columns for a in pairs.attributes][3:] == [("country", "age_band"), ("country", "gender"),
                                                         ("age_band", "gender")]


def test_engines_agree_above_the_metric_frame_limit(monkeypatch):
    import receval.audits.disparity as mod

    fair = audit(sensitive=["country", "age_band"], n_boot=50)
    monkeypatch.setattr(mod, "METRIC_FRAME_MAX_GROUPS", 0)
    own = audit(sensitive=["country", "age_band"], n_boot=50)
    for a, b in zip(fair.attributes, own.attributes, strict=True):
        for metric in ("ndcg@10", "mrr"):
            assert a.metrics[metric].engine == "fairlearn.MetricFrame" and b.metrics[metric].engine == "receval"
            for ga, gb in zip(a.metrics[metric].groups, b.metrics[metric].groups, strict=True):
                for q in ("value", "difference", "ratio"):
                    assert getattr(gb, q).value == pytest.approx(getattr(ga, q).value, abs=1e-12)
                    assert getattr(gb, q).low == getattr(ga, q).low  # same replicates


# --------------------------------------------------------------------------- hand-computed toy

# reciprocal rank of the one relevant item: rank 1 -> 1, rank 2 -> 1/2, rank 4 -> 1/4
TOY_RUN = pl.DataFrame({
    "request_id": [1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5],
    "item_id": ["a", "b", "a", "b", "a", "b", "c", "d", "a", "b", "a", "b"],
    "score": [2.0, 1.0, 2.0, 1.0, 4.0, 3.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0],
    "user_id": ["u1", "u1", "u1", "u1", "u2", "u2", "u2", "u2", "u3", "u3", "u4", "u4"],
})
TOY_LABELS = pl.DataFrame({"request_id": [1, 2, 3, 4, 5], "item_id": ["a", "b", "d", "a", "b"], "label": [1] * 5})
TOY_ATTRS = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "segment": ["A", "A", "B", "B"]})


def toy(**kw):
    kw.setdefault("metrics", ["mrr"])
    kw.setdefault("attributes", TOY_ATTRS)
    kw.setdefault("sensitive", ["segment"])
    kw.setdefault("n_boot", 0)
    kw.setdefault("min_group_size", 1)
    return disparity_audit(kw.pop("run", TOY_RUN), kw.pop("labels", TOY_LABELS), **kw)


def test_toy_by_hand():
    res = toy()
    md = res["segment", "mrr"]
    # per user: u1 (1 + 1/2) / 2 = 0.75, u2 1/4, u3 1, u4 1/2
    a, b = md.group("A"), md.group("B")
    assert a.value.value == pytest.approx((0.75 + 0.25) / 2)  # 0.5
    assert b.value.value == pytest.approx((1.0 + 0.5) / 2)  # 0.75
    overall = (0.75 + 0.25 + 1.0 + 0.5) / 4  # 0.625 (per request it would be 3.25 / 5 = 0.65)
    assert res.overall["mrr"].value == pytest.approx(overall)
    assert a.difference.value == pytest.approx(0.5 - overall)
    assert a.ratio.value == pytest.approx(0.5 / overall)  # 0.8: on the boundary, passes
    assert b.ratio.value == pytest.approx(0.75 / overall)  # 1.2
    assert (a.passes, b.passes, md.passes) == (True, True, True)
    assert (md.worst_group, md.best_group) == ("A", "B")
    assert (a.n, b.n) == (2, 2)
    strict = toy(tolerance=(0.85, 1.25))["segment", "mrr"]
    assert (strict.group("A").passes, strict.group("B").passes, strict.passes) == (False, True, False)
    by_diff = toy(tolerance=None, difference_tolerance=0.1)["segment", "mrr"]
    assert (by_diff.group("A").passes, by_diff.group("B").passes) == (False, False)  # |-0.125|, 0.125 > 0.1
    assert toy(tolerance=None)["segment", "mrr"].passes is None  # no rule declared


def test_a_user_with_many_requests_counts_once():
    # u1 makes ten requests with RR 1, u2 one request with RR 0; both in group A
    reqs = list(range(11))
    run = pl.DataFrame({
        "request_id": np.repeat(reqs, 2),
        "item_id": ["a", "b"] * 11,
        "score": [2.0, 1.0] * 11,
        "user_id": np.repeat(["u1"] * 10 + ["u2"], 2),
    })
    labels = pl.DataFrame({"request_id": reqs, "item_id": ["a"] * 10 + ["z"], "label": [1] * 11})
    attrs = pl.DataFrame({"user_id": ["u1", "u2"], "segment": ["A", "A"]})
    per_user = toy(run=run, labels=labels, attributes=attrs)["segment", "mrr"].group("A")
    assert (per_user.value.value, per_user.n) == (pytest.approx(0.5), 2)
    per_request = toy(run=run, labels=labels, attributes=attrs, unit="request")["segment", "mrr"].group("A")
    assert (per_request.value.value, per_request.n) == (pytest.approx(10 / 11), 11)


def test_reference_best_and_named_group():
    rows = per_user_rows(RUN, LABELS, ["ndcg@10"], ATTRS, ["country"])
    by_group = frame_of(rows, "ndcg@10", ["country"]).by_group
    best = audit(metrics=["ndcg@10"], reference="best")["country", "ndcg@10"]
    assert best.reference == by_group.idxmax() == best.best_group
    named = audit(metrics=["ndcg@10"], reference="FR")["country", "ndcg@10"]
    assert named.reference == "FR"
    for md, ref in ((best, by_group.max()), (named, by_group["FR"])):
        for g in md.groups:
            assert g.ratio.value == pytest.approx(by_group[g.group] / ref, abs=1e-12)
            assert g.difference.value == pytest.approx(by_group[g.group] - ref, abs=1e-12)
    per_attr = audit(metrics=["ndcg@10"], sensitive=["country", "age_band"], intersections=False,
                     reference={"country": "DE", "age_band": "best"})
    assert per_attr["country", "ndcg@10"].reference == "DE"
    with pytest.raises(UsageError, match="not a group of 'age_band'"):
        audit(sensitive=["country", "age_band"], intersections=False, reference="DE")
    with pytest.raises(UsageError, match="suppressed"):
        audit(reference="FR", min_group_size=10_000)
    with pytest.raises(UsageError, match="not audited"):
        audit(reference={"gender": "f"})


# --------------------------------------------------------------------------- missing, small, suppressed


MISSING_ATTRS = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "segment": ["A", None, "B"]})  # u4: no row


def test_missing_values_form_a_group_or_raise():
    md = toy(attributes=MISSING_ATTRS)["segment", "mrr"]
    miss = md.group(MISSING_GROUP)
    assert miss.n == 2  # u2 (null) and u4 (no row)
    assert miss.value.value == pytest.approx((0.25 + 0.5) / 2)
    assert toy(attributes=MISSING_ATTRS).attribute("segment").n_missing == 2
    with pytest.raises(InputError) as err:
        toy(attributes=MISSING_ATTRS, missing="error")
    v = err.value.violations[0]
    assert (v.column, v.n_rows) == ("segment", 2)
    assert "missing" in v.rule and set(v.examples) == {"user 'u2'", "user 'u4'"}
    # NaN in a float attribute is missing too
    nan_attrs = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "score_band": [1.0, float("nan"), 2.0, 2.0]})
    assert toy(attributes=nan_attrs, sensitive=["score_band"])["score_band", "mrr"].group(MISSING_GROUP).n == 1


def test_single_member_group_has_a_value_and_no_interval():
    attrs = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "segment": ["A", "A", "A", "B"]})
    md = toy(attributes=attrs, n_boot=200)["segment", "mrr"]
    b = md.group("B")
    assert b.single_member and not b.suppressed and b.n == 1
    assert b.value.value == pytest.approx(0.5) and (b.value.low, b.value.high) == (None, None)
    assert (b.ratio.low, b.difference.high) == (None, None)
    a = md.group("A")
    assert not a.single_member and a.value.low is not None
    assert toy(attributes=attrs, min_group_size=2)["segment", "mrr"].group("B").suppressed


def test_suppressed_groups_are_listed_and_do_not_decide():
    attrs = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "segment": ["A", "A", "A", "B"]})
    # B (u4, RR 1/2) alone would fail a strict rule, but it is below min_group_size
    res = toy(attributes=attrs, min_group_size=2, tolerance=(0.95, 1.05))
    md = res["segment", "mrr"]
    b = md.group("B")
    assert b.suppressed and b.n == 1 and b.value is None and b.passes is None
    assert md.suppressed == ("B",)
    assert md.worst_group == "A" and md.best_group == "A"
    assert res.overall["mrr"].value == pytest.approx(0.625)  # u4 still counts overall
    d = res.to_dict()["attributes"][0]["metrics"]["mrr"]
    assert d["n_suppressed"] == 1 and d["suppressed"] == [{"group": "B", "n": 1}]
    row = res.to_frame().filter(pl.col("group") == "B").row(0, named=True)
    assert row["suppressed"] and row["value"] is None and row["n"] == 1


def test_thousands_of_levels():
    n_users, levels = 50_000, 5000
    rng = np.random.default_rng(3)
    run = pl.DataFrame({
        "request_id": np.repeat(np.arange(n_users), 3),
        "item_id": np.tile(np.arange(3), n_users),
        "score": rng.random(3 * n_users),
        "user_id": np.repeat(np.arange(n_users), 3),
        "zip": np.repeat(rng.integers(0, levels, n_users), 3),  # a run column, constant per user
    })
    labels = pl.DataFrame({"request_id": np.arange(n_users), "item_id": rng.integers(0, 3, n_users), "label": 1})
    start = time.perf_counter()
    res = disparity_audit(run, labels, ["mrr"], sensitive=["zip"], n_boot=1000, min_group_size=5)
    elapsed = time.perf_counter() - start
    md = res["zip", "mrr"]
    assert md.engine == "receval" and len(md.groups) == levels
    rr = receval.evaluate(run, labels, ["mrr"], n_boot=1).per_request_polars()
    expected = rr.join(run.select("request_id", "zip").unique(), on="request_id").group_by("zip").agg(
        pl.col("mrr").mean(), pl.len())
    got = {int(g.group): (g.value.value if g.value else None, g.n) for g in md.groups}
    for z, mean, n in expected.iter_rows():
        assert got[z][1] == n
        assert got[z][0] is None if n < 5 else got[z][0] == pytest.approx(mean, abs=1e-12)
    shown = [g for g in md.groups if not g.suppressed]
    assert shown and all(g.value.low <= g.value.value <= g.value.high for g in shown if g.value.low is not None)
    assert elapsed < 20, elapsed  # typically 1-2 s


# --------------------------------------------------------------------------- properties


# each example runs two audits: a quarter of the profile's examples (15 in "ci",
# 250 in "thorough")
PROPERTY_EXAMPLES = max(15, settings.default.max_examples // 4)


@st.composite
def labelled(draw):
    n_users = draw(st.integers(4, 25))
    seed = draw(st.integers(0, 2**16))
    groups = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n_users, max_size=n_users))
    return n_users, seed, groups


def _toy_data(n_users, seed, groups):
    run, labels, _ = make_data(n_users, seed=seed, length=3, extra=0.5)
    attrs = pl.DataFrame({"user_id": [f"user-{i:05d}" for i in range(n_users)], "g": groups,
                          "h": ["x" if i % 2 else "y" for i in range(n_users)]})
    return run, labels, attrs


@settings(max_examples=PROPERTY_EXAMPLES)
@given(labelled())
def test_swapping_group_labels_swaps_results(case):
    n_users, seed, groups = case
    run, labels, attrs = _toy_data(n_users, seed, groups)
    swap = {"a": "b", "b": "a", "c": "c"}
    kw = {"metrics": ["mrr"], "sensitive": ["g", "h"], "n_boot": 30, "min_group_size": 2}
    res = disparity_audit(run, labels, attributes=attrs, **kw)
    swapped = disparity_audit(run, labels, attributes=attrs.with_columns(pl.col("g").replace(swap)), **kw)

    def rename(name):
        return SEP.join(swap.get(v, v) for v in name.split(SEP))

    for attr in ("g", "g & h"):
        mine, theirs = res[attr, "mrr"], swapped[attr, "mrr"]
        if mine.worst_group is None:
            assert theirs.worst_group is None
        else:  # ties go to the first name, which the swap may change: compare values
            worst = mine.group(mine.worst_group).value.value
            assert theirs.group(theirs.worst_group).value.value == pytest.approx(worst, abs=1e-12)
            tied = [g for g in mine.groups if g.value is not None and abs(g.value.value - worst) <= 1e-12]
            if len(tied) == 1:
                assert theirs.worst_group == rename(mine.worst_group)
        assert theirs.passes == mine.passes
        for g in mine.groups:
            t = theirs.group(rename(g.group))
            assert (t.n, t.suppressed, t.single_member, t.passes) == (g.n, g.suppressed, g.single_member, g.passes)
            for q in ("value", "difference", "ratio"):
                a, b = getattr(g, q), getattr(t, q)
                assert (a is None) == (b is None)
                if a is not None:
                    for x, y in ((a.value, b.value), (a.low, b.low), (a.high, b.high)):
                        assert (x is None and y is None) or x == pytest.approx(y, abs=1e-12)
    untouched = res["h", "mrr"].to_dict(), swapped["h", "mrr"].to_dict()
    assert json.dumps(untouched[0]) == json.dumps(untouched[1])


@settings(max_examples=PROPERTY_EXAMPLES)
@given(labelled(), st.integers(0, 2**16))
def test_permuting_rows_leaves_results_unchanged(case, perm_seed):
    n_users, seed, groups = case
    run, labels, attrs = _toy_data(n_users, seed, groups)
    kw = {"metrics": ["ndcg@10"], "sensitive": ["g", "h"], "n_boot": 30, "min_group_size": 1}
    res = disparity_audit(run, labels, attributes=attrs, **kw).to_frame()
    shuffled = disparity_audit(run.sample(fraction=1.0, shuffle=True, seed=perm_seed),
                               labels.sample(fraction=1.0, shuffle=True, seed=perm_seed + 1),
                               attributes=attrs.sample(fraction=1.0, shuffle=True, seed=perm_seed + 2), **kw).to_frame()
    assert res.columns == shuffled.columns and res.height == shuffled.height
    for c in res.columns:
        if res.schema[c] == pl.Float64:
            a, b = res[c].to_numpy(), shuffled[c].to_numpy()
            assert np.allclose(a, b, atol=1e-12, rtol=0, equal_nan=True), c
        else:
            assert res[c].to_list() == shuffled[c].to_list(), c


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_intervals_contain_the_estimates():
    kw = {"sensitive": ["country", "age_band"], "n_boot": 300, "min_group_size": 5}
    one, two, other = audit(seed=7, **kw), audit(seed=7, **kw), audit(seed=8, **kw)
    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())
    assert json.dumps(one.to_dict()) != json.dumps(other.to_dict())
    assert one.settings["bootstrap_method"] == "multinomial"
    checked = 0
    for a in one.attributes:
        for md in a.metrics.values():
            for g in md.groups:
                if g.suppressed:
                    continue
                for q in ("value", "difference", "ratio"):
                    e = getattr(g, q)
                    assert e.low <= e.value <= e.high
                    checked += 1
    assert checked > 50
    o = one.overall["ndcg@10"]
    assert o.low < o.value < o.high


# coarse attributes (summed in one sweep over cells) vs attributes with a sweep each:
# all coarse / country alone (4 levels with "(missing)": 10 users per cell; age_band
# also has 4 and comes second) / none
@pytest.mark.parametrize(("min_cell_units", "coarse"), [(1, ["country", "age_band"]), (8, ["country"]), (10**9, [])])
def test_intervals_equal_a_brute_force_bootstrap(monkeypatch, min_cell_units, coarse):
    """Replicates re-weight units in the documented order -- by coarse cell (values of
    the coarse attributes), then cell, each numbered by first appearance in unit
    order (integer user ids ascending), then unit order -- and recompute every
    group mean."""
    import receval.audits.disparity as mod
    from receval.stats.bootstrap import replicate_weights

    monkeypatch.setattr(mod, "_MIN_CELL_UNITS", min_cell_units)

    run, labels, attrs = make_data(40, seed=5, int_ids=True)
    res = disparity_audit(run, labels, ["mrr"], attributes=attrs, sensitive=["country", "age_band"],
                          n_boot=40, min_group_size=1, seed=11)
    rows = per_user_rows(run, labels, ["mrr"], attrs, ["country", "age_band"])  # sorted by user id
    cell = rows["country"] + "|" + rows["age_band"]
    coarse_cell = rows[coarse].astype(str).agg("|".join, axis=1) if coarse else cell.map(lambda _: "")
    first = {c: i for i, c in reversed(list(enumerate(cell)))}
    first_coarse = {c: i for i, c in reversed(list(enumerate(coarse_cell)))}
    order = sorted(range(len(rows)), key=lambda i: (first_coarse[coarse_cell[i]], first[cell[i]], i))
    rows = rows.iloc[order].reset_index(drop=True)
    w = np.vstack(list(replicate_weights(len(rows), n_boot=40, seed=11, method="multinomial"))).astype(float)
    y = rows["mrr"].to_numpy()
    overall = (w @ y) / w.sum(axis=1)
    checked = 0
    for cols in (["country"], ["age_band"], ["country", "age_band"]):
        md = res[tuple(cols), "mrr"]
        for g in md.groups:
            member = np.all([(rows[c] == v).to_numpy() for c, v in zip(cols, g.values, strict=True)], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                reps = (w[:, member] @ y[member]) / w[:, member].sum(axis=1)
            for q, r in (("value", reps), ("difference", reps - overall), ("ratio", reps / overall)):
                r = r[np.isfinite(r)]
                lo, hi = np.quantile(r, [0.025, 0.975])
                est = getattr(g, q)
                if g.n > 1:
                    assert (est.low, est.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
                    checked += 1
    assert checked > 30


@pytest.mark.parametrize("cells_per_unit", [0.001, 0.3, 1.0])
@pytest.mark.parametrize("sparse", [False, True])
def test_cell_sums_equal_a_dense_product(cells_per_unit, sparse):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n = 3000
    cell = np.sort(rng.integers(0, max(1, int(cells_per_unit * n)), n))
    cell = np.unique(cell, return_inverse=True)[1]  # every cell occupied
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    cells = _Cells(np.arange(n), cell, starts, n)
    x = rng.random((n, 3)) * (rng.random((n, 3)) < 0.5)
    w = rng.poisson(1.0, (7, n)).astype(np.uint8)
    got = _cell_sums(w, sp.csr_matrix(x) if sparse else x, _plan(cells, 7), cells.n_cells)
    onehot = np.zeros((n, cells.n_cells))
    onehot[np.arange(n), cell] = 1.0
    expected = np.einsum("bu,us,uc->csb", w.astype(float), x, onehot)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_vectorised_percentiles_equal_numpy():
    rng = np.random.default_rng(1)
    reps = rng.normal(size=(101, 40))
    reps[rng.random(reps.shape) < 0.2] = np.nan
    reps[:, 3] = np.nan  # no valid replicate
    reps[1:, 4] = np.nan  # one
    reps[:, 5] = 0.25  # constant
    lo, hi = _percentiles(reps, 0.9)
    for j in range(reps.shape[1]):
        col = reps[:, j][~np.isnan(reps[:, j])]
        if len(col):
            assert (lo[j], hi[j]) == (pytest.approx(np.quantile(col, 0.05), abs=1e-15),
                                      pytest.approx(np.quantile(col, 0.95), abs=1e-15))
        else:
            assert np.isnan(lo[j]) and np.isnan(hi[j])
    assert lo[5] == hi[5] == 0.25


# --------------------------------------------------------------------------- outputs


def test_to_dict_is_json_safe_and_has_no_ids():
    res = audit(sensitive=["country", "age_band"], n_boot=50, min_group_size=10)
    text = json.dumps(res.to_dict(), allow_nan=False)
    assert "user-" not in text
    d = json.loads(text)
    assert d["settings"]["intersections"] == [["country", "age_band"]]
    assert {a["attribute"] for a in d["attributes"]} == {"country", "age_band", "country & age_band"}
    frame = res.to_frame()
    expected_rows = sum(len(md.groups) for a in res.attributes for md in a.metrics.values())
    assert frame.height == expected_rows
    assert frame.filter(pl.col("worst")).height == sum(
        md.worst_group is not None for a in res.attributes for md in a.metrics.values())
    assert not any("user-" in str(v) for v in frame["group"].to_list())
    assert res.passes == d["passes"]


def test_undefined_values_are_left_out_per_metric():
    # diversity is undefined for a single-item list: u2's only request has one item
    run = pl.DataFrame({
        "request_id": [1, 1, 2, 3, 3, 4, 4],
        "item_id": ["a", "b", "a", "a", "c", "b", "c"],
        "score": [2.0, 1.0, 1.0, 2.0, 1.0, 2.0, 1.0],
        "user_id": ["u1", "u1", "u2", "u3", "u3", "u4", "u4"],
    })
    labels = pl.DataFrame({"request_id": [1, 2, 3, 4], "item_id": ["a", "a", "c", "b"], "label": [1] * 4})
    catalog = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["x", "y", "x"]})
    attrs = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "segment": ["A", "A", "B", "B"]})
    res = disparity_audit(run, labels, ["mrr", "diversity"], attributes=attrs, sensitive=["segment"], catalog=catalog,
                          n_boot=20, min_group_size=1)
    a = res["segment", "diversity"].group("A")
    assert a.n == 1 and a.value.value == pytest.approx(1.0)  # u1: a (x) vs b (y)
    assert res["segment", "mrr"].group("A").n == 2
    assert res.counts["units_without_value"] == {"mrr": 0, "diversity": 1}
    assert res["segment", "diversity"].group("B").value.value == pytest.approx((0.0 + 1.0) / 2)  # u3 x,x; u4 y,x


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"metrics": ["ece"]}, "calibration_audit"),
    ({"sensitive": []}, "at least one"),
    ({"sensitive": ["user_id"]}, "data-contract"),
    ({"intersections": [("country", "planet")]}, "planet"),
    ({"unit": "session"}, "unit"),
    ({"missing": "drop"}, "missing"),
    ({"tolerance": (1.25, 0.8)}, "tolerance"),
    ({"difference_tolerance": -1}, "difference_tolerance"),
    ({"n_boot": -1}, "n_boot"),
    ({"min_group_size": 1.5}, "min_group_size"),
    ({"level": 1.0}, "level"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UsageError, match=match):
        audit(**kwargs)


def test_bad_data_errors():
    with pytest.raises(InputError) as err:
        audit(sensitive=["planet"])
    assert err.value.violations[0].column == "planet" and "missing" in err.value.violations[0].rule
    # an attribute that varies between the requests of a user
    run = TOY_RUN.with_columns(segment=pl.Series(["A"] * 2 + ["B"] * 2 + ["A"] * 8))
    with pytest.raises(InputError) as err:
        toy(run=run, attributes=None)
    v = err.value.violations[0]
    assert (v.column, v.n_rows) == ("segment", 1) and "every request of a user" in v.rule and "'u1'" in v.examples[0]
    assert toy(run=run, attributes=None, unit="request")["segment", "mrr"].group("B").n == 1
    # no user_id for unit="user"
    with pytest.raises(InputError, match="user_id"):
        toy(run=TOY_RUN.drop("user_id"), attributes=pl.DataFrame({"request_id": [1, 2, 3, 4, 5], "segment": "A"}))
    # reserved names, duplicate keys
    with pytest.raises(InputError, match="reserved"):
        toy(attributes=TOY_ATTRS.with_columns(segment=pl.lit(ALL_GROUP)))
    with pytest.raises(InputError, match="one row per user_id"):
        toy(attributes=pl.concat([TOY_ATTRS, TOY_ATTRS.head(1)]))


def test_judged_requests_without_a_user():
    labels = pl.concat([TOY_LABELS, pl.DataFrame({"request_id": [9], "item_id": ["a"], "label": [1]})])
    with pytest.raises(InputError) as err:
        toy(labels=labels)
    assert "needs a user" in err.value.violations[0].rule and "request 9" in err.value.violations[0].examples[0]
    ignored = toy(labels=labels, missing_in_run="ignore")
    assert ignored.overall["mrr"].value == pytest.approx(0.625)
    mapped = toy(labels=labels, users=pl.DataFrame({"request_id": [9], "user_id": ["u4"]}))
    # u4 now has RR 1/2 and 0 (request 9 scored 0): 0.25
    assert mapped["segment", "mrr"].group("B").value.value == pytest.approx((1.0 + 0.25) / 2)
    assert mapped.counts["requests_user_from_users_table"] == 1
    with pytest.raises(InputError, match="must agree with the run's user_id"):
        toy(labels=labels, users=pl.DataFrame({"request_id": [1, 9], "user_id": ["u2", "u4"]}))


def test_attributes_keyed_by_request_and_run_columns():
    by_request = pl.DataFrame({"request_id": [1, 2, 3, 4, 5], "segment": ["A", "A", "A", "B", "B"]})
    assert toy(attributes=by_request)["segment", "mrr"].group("A").value.value == pytest.approx(0.5)
    on_run = TOY_RUN.join(TOY_ATTRS, on="user_id")
    assert toy(run=on_run, attributes=None)["segment", "mrr"].group("B").value.value == pytest.approx(0.75)
    mapped = TOY_RUN.rename({"user_id": "uid"})
    res = toy(run=mapped, columns={"user_id": "uid"})
    assert res["segment", "mrr"].group("A").value.value == pytest.approx(0.5)


# --------------------------------------------------------------------------- calibration


def _restricted(run, labels, requests, metrics):
    sub = run.filter(pl.col("request_id").is_in(requests))
    return receval.evaluate(sub, labels, metrics, n_boot=1)


@pytest.mark.parametrize("unit", ["user", "request"])
@pytest.mark.filterwarnings("ignore::receval.errors.CoverageWarning")  # evaluate on one group's run
def test_calibration_per_group_equals_evaluate_restricted_to_the_group(unit):
    metrics = ["ece", "brier", "mce(bins=5)", "logloss"]
    res = calibration_audit(RUN, LABELS, attributes=ATTRS, sensitive=["country"], metrics=metrics, unit=unit,
                            n_boot=100, min_group_size=1, reliability=True)
    owners = RUN.select("request_id", "user_id").unique().join(ATTRS, on="user_id", how="left").with_columns(
        pl.col("country").fill_null(MISSING_GROUP))
    for name in ("DE", "FR", "US", MISSING_GROUP):
        requests = owners.filter(pl.col("country") == name)["request_id"]
        expected = _restricted(RUN, LABELS, requests, metrics)
        for m in metrics:
            g = res["country", m].group(name)
            assert g.value.value == pytest.approx(expected[m].mean, abs=1e-12), (name, m)
            assert g.value.low <= g.value.high
        table = res.reliability["country"]["ece"][name]
        assert table == [pytest.approx(row, abs=1e-12) for row in expected.details["ece"]["reliability"]]
    overall = receval.evaluate(RUN, LABELS, metrics, n_boot=1)
    for m in metrics:
        assert res.overall[str(receval.parse_metric(m))].value == pytest.approx(overall[m].mean, abs=1e-12)
        md = res["country", m]
        assert not md.greater_is_better
        values = {g.group: g.value.value for g in md.groups}
        assert md.worst_group == max(values, key=values.get)
    json.dumps(res.to_dict(), allow_nan=False)


@pytest.mark.filterwarnings("ignore::receval.errors.CoverageWarning")  # evaluate on one group's run
def test_calibration_intersections_equal_evaluate_restricted():
    res = calibration_audit(RUN, LABELS, attributes=ATTRS, sensitive=["country", "age_band"], intersections=True,
                            metrics=["ece(bins=8)"], n_boot=0, min_group_size=1)
    md = res[("country", "age_band"), "ece(bins=8)"]
    owners = RUN.select("request_id", "user_id").unique().join(ATTRS, on="user_id", how="left")
    for g in md.groups:
        country, age = g.values
        members = owners.filter(pl.col("country").fill_null(MISSING_GROUP) == country,
                                pl.col("age_band").fill_null(MISSING_GROUP) == age)["request_id"]
        expected = _restricted(RUN, LABELS, members, ["ece(bins=8)"])["ece(bins=8)"].mean
        assert g.value.value == pytest.approx(expected, abs=1e-12), g.group
        assert g.ratio.value == pytest.approx(expected / res.overall["ece(bins=8)"].value, abs=1e-12)


def test_calibration_errors():
    with pytest.raises(UsageError, match="disparity_audit"):
        calibration_audit(RUN, LABELS, attributes=ATTRS, sensitive=["country"], metrics=["ndcg@10"])
    with pytest.raises(InputError, match="prediction"):
        calibration_audit(RUN.drop("prediction"), LABELS, attributes=ATTRS, sensitive=["country"])
    bad = RUN.with_columns(prediction=pl.col("prediction") * 2)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        calibration_audit(bad, LABELS, attributes=ATTRS, sensitive=["country"])


# --------------------------------------------------------------------------- slow statistics


@pytest.mark.slow
def test_interval_coverage_of_a_group_mean():
    """95% intervals of a group's mean cover the true mean ~95% of the time (per-user values)."""
    rng = np.random.default_rng(0)
    hits, trials = 0, 150
    for t in range(trials):
        n_users = 120
        run = pl.DataFrame({
            "request_id": np.repeat(np.arange(n_users), 2),
            "item_id": np.tile([0, 1], n_users),
            "score": np.tile([2.0, 1.0], n_users),
            "user_id": np.repeat(np.arange(n_users), 2),
        })
        # item 0 relevant with probability 0.6 (RR 1), else item 1 (RR 1/2): true mean 0.8
        first = rng.random(n_users) < 0.6
        labels = pl.DataFrame({"request_id": np.arange(n_users), "item_id": np.where(first, 0, 1), "label": 1})
        attrs = pl.DataFrame({"user_id": np.arange(n_users), "g": np.where(np.arange(n_users) < 60, "a", "b")})
        g = disparity_audit(run, labels, ["mrr"], attributes=attrs, sensitive=["g"], n_boot=400, seed=t)["g", "mrr"]
        a = g.group("a").value
        hits += a.low <= 0.8 <= a.high
    assert 0.88 <= hits / trials <= 0.99, hits / trials



def test_importing_the_audit_loads_neither_fairlearn_nor_pandas():
    import subprocess
    import sys

    probe = ("import sys, receval.audits.disparity; "
             "print(','.join(m for m in ('fairlearn', 'pandas', 'polars', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
