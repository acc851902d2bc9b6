"""Exposure fairness audit: hand-computed toys, properties, errors, privacy."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy.spatial.distance import jensenshannon

from receval.audits.exposure import MISSING_GROUP, exposure_audit
from receval.errors import InputError, UsageError


def v(j: int) -> float:
    """log attention of rank j."""
    return 1.0 / math.log2(1.0 + j)


# R1 ranks a, b, c; R2 ranks c, d.  Groups: x = {a, b}, y = {c}, z = {d}.
RUN = pl.DataFrame({
    "request_id": [1, 1, 1, 2, 2],
    "item_id": ["a", "b", "c", "c", "d"],
    "score": [3.0, 2.0, 1.0, 2.0, 1.0],
})
GROUPS = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "provider": ["x", "x", "y", "z"]})
# relevance: R1 a=1, c=1; R2 d=2  -> per group x=1, y=1, z=2 (total 4)
LABELS = pl.DataFrame({"request_id": [1, 1, 2], "item_id": ["a", "c", "d"], "label": [1.0, 1.0, 2.0]})


def audit(**kw):
    kw.setdefault("min_group_size", 1)
    kw.setdefault("n_boot", 0)
    return exposure_audit(kw.pop("run", RUN), kw.pop("groups", GROUPS), **kw)


def values(res, field):
    return {g.group: getattr(g, field).value for g in res.groups}


# ---------------------------------------------------------------- exposure shares


def test_log_exposure_shares_by_hand():
    x = v(1) + v(2)  # a, b in R1
    y = v(3) + v(1)  # c in R1 and R2
    z = v(2)  # d in R2
    total = x + y + z
    res = audit()
    assert values(res, "exposure_share") == pytest.approx({"x": x / total, "y": y / total, "z": z / total})
    # mean exposure per item and request: group attention / (2 requests * n_items)
    assert values(res, "mean_item_exposure") == pytest.approx({"x": x / 4, "y": y / 2, "z": z / 2})
    g = res.group("x")
    assert (g.n_items, g.n_items_shown, g.n_requests) == (2, 2, 1)
    assert res.group("y").n_requests == 2


def test_rbp_exposure_shares_by_hand():
    # patience 0.5: ranks 1, 2, 3 get 1, 0.5, 0.25
    x, y, z = 1 + 0.5, 0.25 + 1, 0.5
    res = audit(browsing="rbp", patience=0.5)
    t = x + y + z
    assert values(res, "exposure_share") == pytest.approx({"x": x / t, "y": y / t, "z": z / t})


def test_cascade_uses_stop_probabilities_from_labels():
    # gmax = 2: stop = (2^g - 1) / 4 -> R1: a 0.25, c 0.25; R2: d 0.75 (c unlabelled there: 0)
    # patience 0.5. R1: a 1, b 0.5 * (1 - 0.25), c 0.25 * (1 - 0.25) * (1 - 0);
    # R2: c 1, d 0.5 * (1 - 0)  (an item's own stop does not lower its attention)
    x = 1 + 0.5 * 0.75
    y = 0.25 * 0.75 + 1
    z = 0.5
    res = audit(browsing="cascade", patience=0.5, labels=LABELS)
    t = x + y + z
    assert values(res, "exposure_share") == pytest.approx({"x": x / t, "y": y / t, "z": z / t})
    # without labels the cascade has no stops: it is RBP
    assert values(audit(browsing="cascade", patience=0.5), "exposure_share") == pytest.approx(
        values(audit(browsing="rbp", patience=0.5), "exposure_share"))


def test_ties_by_item_id_descending_in_byte_order_and_top_k():
    # equal scores: "9" > "10" as text, so item 9 ranks first
    run = pl.DataFrame({"request_id": [1, 1], "item_id": [10, 9], "score": [1.0, 1.0]})
    groups = pl.DataFrame({"item_id": [9, 10], "provider": ["nine", "ten"]})
    res = audit(run=run, groups=groups)
    assert values(res, "exposure_share") == pytest.approx({"nine": 1 / (1 + v(2)), "ten": v(2) / (1 + v(2))})
    cut = audit(run=run, groups=groups, k=1)
    assert values(cut, "exposure_share") == pytest.approx({"nine": 1.0, "ten": 0.0})
    assert cut.group("ten").n_items_shown == 0


# ---------------------------------------------------------------- targets, ratios, disparity


def test_equal_target_ratio_difference_and_disparate_exposure():
    x, y, z = v(1) + v(2), v(3) + v(1), v(2)
    t = x + y + z
    res = audit()
    assert values(res, "target_share") == pytest.approx({"x": 0.5, "y": 0.25, "z": 0.25})
    assert values(res, "share_ratio") == pytest.approx({"x": x / t / 0.5, "y": y / t / 0.25, "z": z / t / 0.25})
    assert values(res, "share_difference") == pytest.approx({"x": x / t - 0.5, "y": y / t - 0.25, "z": z / t - 0.25})
    # demographic parity: Exp(G) / Exp(reference), reference = largest group x
    assert res.reference_group == "x"
    assert values(res, "disparate_exposure_ratio") == pytest.approx({"x": 1.0, "y": (y / 2) / (x / 4), "z": (z / 2) / (x / 4)})
    assert all(g.mean_item_utility is None for g in res.groups)


def test_merit_target_and_disparate_treatment():
    x, y, z = v(1) + v(2), v(3) + v(1), v(2)
    t = x + y + z
    res = audit(target="merit", labels=LABELS)
    assert values(res, "target_share") == pytest.approx({"x": 0.25, "y": 0.25, "z": 0.5})
    assert values(res, "share_ratio") == pytest.approx({"x": x / t / 0.25, "y": y / t / 0.25, "z": z / t / 0.5})
    util = {"x": 1 / 4, "y": 1 / 2, "z": 2 / 2}  # relevance / (2 requests * n_items)
    assert values(res, "mean_item_utility") == pytest.approx(util)
    exp = {"x": x / 4, "y": y / 2, "z": z / 2}
    ref = exp["x"] / util["x"]
    assert values(res, "disparate_exposure_ratio") == pytest.approx({g: exp[g] / util[g] / ref for g in exp})


def test_declared_target():
    x, y, z = v(1) + v(2), v(3) + v(1), v(2)
    t = x + y + z
    res = audit(target={"x": 0.5, "y": 0.3, "z": 0.2})
    assert values(res, "target_share") == pytest.approx({"x": 0.5, "y": 0.3, "z": 0.2})
    assert values(res, "share_ratio") == pytest.approx({"x": x / t / 0.5, "y": y / t / 0.3, "z": z / t / 0.2})
    # a group absent from the mapping gets target 0: its ratio is undefined
    part = audit(target={"x": 0.5, "y": 0.5})
    assert part.group("z").target_share.value == 0.0
    assert part.group("z").share_ratio.value is None


# ---------------------------------------------------------------- AWRF


def _awrf_by_hand(dists, target):
    return float(np.mean([1.0 - jensenshannon(d, target, base=2) ** 2 for d in dists]))


def test_awrf_equal_target_against_scipy():
    r1 = np.array([v(1) + v(2), v(3), 0.0])
    r2 = np.array([0.0, v(1), v(2)])
    expected = _awrf_by_hand([r1 / r1.sum(), r2 / r2.sum()], np.array([0.5, 0.25, 0.25]))
    assert audit().awrf.value == pytest.approx(expected, abs=1e-12)


def test_awrf_merit_uses_each_requests_relevance():
    r1 = np.array([v(1) + v(2), v(3), 0.0])
    r2 = np.array([0.0, v(1), v(2)])
    t1 = np.array([0.5, 0.5, 0.0])  # R1: a (x) and c (y) relevant
    t2 = np.array([0.0, 0.0, 1.0])  # R2: d (z)
    expected = np.mean([1 - jensenshannon(r1 / r1.sum(), t1, base=2) ** 2,
                        1 - jensenshannon(r2 / r2.sum(), t2, base=2) ** 2])
    assert audit(target="merit", labels=LABELS).awrf.value == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- expected exposure

STOCH = pl.DataFrame({
    "request_id": [1] * 6,
    "sample_id": [0, 0, 0, 1, 1, 1],
    "item_id": ["a", "b", "c", "b", "a", "c"],
    "score": [3.0, 2.0, 1.0, 3.0, 2.0, 1.0],
})
STOCH_GROUPS = pl.DataFrame({"item_id": ["a", "b", "c"], "provider": ["x", "y", "y"]})
STOCH_LABELS = pl.DataFrame({"request_id": [1], "item_id": ["a"], "label": [1.0]})


def test_expected_exposure_two_sampled_rankings():
    # rbp, patience 0.5: weights 1, 0.5, 0.25
    eps = {"a": (1 + 0.5) / 2, "b": (0.5 + 1) / 2, "c": 0.25}
    # target: relevant a alone gets position 1; b, c share positions 2-3
    star = {"a": 1.0, "b": (0.5 + 0.25) / 2, "c": (0.5 + 0.25) / 2}
    ee_l = sum((eps[d] - star[d]) ** 2 for d in eps)  # 0.21875
    ee_d = sum(eps[d] ** 2 for d in eps)  # 1.1875
    ee_r = sum(eps[d] * star[d] for d in eps)  # 1.125
    res = exposure_audit(STOCH, STOCH_GROUPS, labels=STOCH_LABELS, browsing="rbp", patience=0.5,
                         min_group_size=1, n_boot=0)
    assert (res.ee_l.value, res.ee_d.value, res.ee_r.value) == pytest.approx((0.21875, 1.1875, 1.125))
    assert (ee_l, ee_d, ee_r) == pytest.approx((0.21875, 1.1875, 1.125))
    # the decomposition EE-L = EE-D - 2 EE-R + ||eps*||^2
    assert res.ee_l.value == pytest.approx(res.ee_d.value - 2 * res.ee_r.value + sum(s * s for s in star.values()))
    # group exposure averages the samples: x gets eps_a
    assert res.group("x").exposure_share.value == pytest.approx(0.75 / 1.75)
    # the same samples as a list of frames
    parts = [STOCH.filter(pl.col("sample_id") == s).drop("sample_id") for s in (0, 1)]
    res2 = exposure_audit(parts, STOCH_GROUPS, labels=STOCH_LABELS, browsing="rbp", patience=0.5,
                          min_group_size=1, n_boot=0)
    assert res2.to_dict() == res.to_dict()


def test_expected_exposure_counts_relevant_items_never_shown():
    run = STOCH.filter(pl.col("sample_id") == 0).filter(pl.col("item_id") != "a")  # b, c only
    res = exposure_audit(run, STOCH_GROUPS, labels=STOCH_LABELS, browsing="rbp", patience=0.5,
                         min_group_size=1, n_boot=0)
    # lists have 2 positions: eps b 1, c 0.5, a 0; target a 1, b and c share 0.5 -> 0.25
    assert res.ee_l.value == pytest.approx(1.0 + 0.75**2 + 0.25**2)
    assert res.ee_r.value == pytest.approx(0.25 + 0.125)


# ---------------------------------------------------------------- Gini


def _slow_gini(run, groups, k=None):
    exposure = {item: 0.0 for item in groups["item_id"].to_list()}
    rows = run.to_dicts()
    for req in {r["request_id"] for r in rows}:
        lst = sorted((r for r in rows if r["request_id"] == req), key=lambda r: (r["score"], str(r["item_id"])),
                     reverse=True)
        for j, r in enumerate(lst[:k] if k else lst, start=1):
            exposure[r["item_id"]] += 1.0 / math.log2(1.0 + j)
    x = sorted(exposure.values())
    n = len(x)
    return sum((2 * i - n - 1) * xi for i, xi in enumerate(x, start=1)) / (n * sum(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [None, 3])
def test_gini_against_slow_reference(seed, k):
    rng = np.random.default_rng(seed)
    items = np.arange(30)
    rows = []
    for req in range(12):
        shown = rng.choice(items[:20], size=6, replace=False)  # items 20-29 are never shown
        scores = rng.integers(0, 3, size=6).astype(float)  # ties on purpose
        rows += [(req, int(i), float(s)) for i, s in zip(shown, scores, strict=True)]
    run = pl.DataFrame(rows, schema=["request_id", "item_id", "score"], orient="row")
    groups = pl.DataFrame({"item_id": items, "provider": ["g"] * 30})
    assert audit(run=run, groups=groups, k=k).gini.value == pytest.approx(_slow_gini(run, groups, k), abs=1e-12)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("browsing", ["log", "rbp", "cascade"])
def test_ranking_at_its_target_has_ratio_one_no_disparity_awrf_one(browsing):
    run = pl.DataFrame({"request_id": [1, 1, 2, 2, 3, 3], "item_id": ["a", "b"] * 3, "score": [2.0, 1.0] * 3})
    groups = pl.DataFrame({"item_id": ["a", "b"], "provider": ["x", "y"]})
    w2 = v(2) if browsing == "log" else 0.7
    target = {"x": 1 / (1 + w2), "y": w2 / (1 + w2)}
    res = audit(run=run, groups=groups, browsing=browsing, patience=0.7, target=target)
    for g in res.groups:
        assert g.share_ratio.value == pytest.approx(1.0)
        assert g.share_difference.value == pytest.approx(0.0, abs=1e-12)
    assert res.awrf.value == pytest.approx(1.0)
    # equal exposure per item under the equal target: both swaps of a/b
    swap = pl.DataFrame({"request_id": [1, 1, 2, 2], "item_id": ["a", "b"] * 2, "score": [2.0, 1.0, 1.0, 2.0]})
    eq = audit(run=swap, groups=groups, browsing=browsing, patience=0.7)
    assert values(eq, "share_ratio") == pytest.approx({"x": 1.0, "y": 1.0})
    assert values(eq, "disparate_exposure_ratio") == pytest.approx({"x": 1.0, "y": 1.0})


def _random_case(seed, n_req=40):
    rng = np.random.default_rng(seed)
    rows = []
    for req in range(n_req):
        shown = rng.choice(12, size=5, replace=False)
        rows += [(req, f"i{i}", float(s)) for i, s in zip(shown, rng.random(5), strict=True)]
    run = pl.DataFrame(rows, schema=["request_id", "item_id", "score"], orient="row")
    groups = pl.DataFrame({"item_id": [f"i{i}" for i in range(12)], "provider": ["p"] * 6 + ["q"] * 4 + ["r"] * 2})
    labels = run.filter(pl.col("score") > 0.6).select("request_id", "item_id", label=pl.lit(1.0))
    return run, groups, labels


def _flat(row):
    """The numbers of a group row, None as NaN (group name dropped)."""
    out = {}
    for key, val in row.items():
        if isinstance(val, dict):
            out.update({f"{key}.{k}": (math.nan if x is None else x) for k, x in val.items()})
        elif key != "group":
            out[key] = math.nan if val is None else float(val)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_swapping_group_labels_swaps_rows(seed):
    run, groups, labels = _random_case(seed)
    swapped = groups.with_columns(pl.col("provider").replace({"q": "r", "r": "q"}))
    for target in ("equal", "merit"):
        a = audit(run=run, groups=groups, target=target, labels=labels, n_boot=50).to_dict()
        b = audit(run=run, groups=swapped, target=target, labels=labels, n_boot=50).to_dict()
        rows_a = {r["group"]: r for r in a["groups"]}
        rows_b = {r["group"]: r for r in b["groups"]}
        for g, h in (("p", "p"), ("q", "r"), ("r", "q")):
            assert _flat(rows_a[g]) == pytest.approx(_flat(rows_b[h]), rel=1e-12, abs=1e-15)
            assert rows_a[g]["n_items"] == rows_b[h]["n_items"]
        assert rows_a["q"] != rows_a["r"]  # the swap is visible
        assert a["awrf"] == pytest.approx(b["awrf"]) and a["gini"] == b["gini"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_contain_the_estimate(seed):
    run, groups, labels = _random_case(seed, n_req=60)
    for target in ("equal", "merit"):
        res = audit(run=run, groups=groups, target=target, labels=labels, n_boot=300, seed=seed).to_dict()
        ests = [r[f] for r in res["groups"] for f in r if isinstance(r[f], dict)]
        ests += [res["awrf"], res["gini"], *res["expected_exposure"].values()]
        checked = 0
        for e in ests:
            if e["value"] is None or e["low"] is None:
                continue
            assert e["low"] - 1e-12 <= e["value"] <= e["high"] + 1e-12
            checked += 1
        assert checked >= 20
        assert res["awrf"]["low"] < res["awrf"]["high"]  # a real interval, not a point


def test_no_intervals_with_n_boot_zero_and_reproducible_with_seed():
    run, groups, labels = _random_case(5)
    assert audit(run=run, groups=groups).awrf.low is None
    a = audit(run=run, groups=groups, n_boot=100, seed=3).to_dict()
    assert a == audit(run=run, groups=groups, n_boot=100, seed=3).to_dict()
    assert a != audit(run=run, groups=groups, n_boot=100, seed=4).to_dict()


# ---------------------------------------------------------------- missing groups, errors


def test_missing_group_values_form_their_own_group_and_single_item_group_works():
    groups = GROUPS.with_columns(pl.when(pl.col("item_id") == "d").then(None).otherwise(pl.col("provider"))
                                 .alias("provider"))
    res = audit(groups=groups)
    names = [g.group for g in res.groups]
    assert names == [MISSING_GROUP, "x", "y"]
    assert res.group(MISSING_GROUP).n_items == 1
    assert res.group(MISSING_GROUP).exposure_share.value == pytest.approx(v(2) / (v(1) + v(2) + v(3) + v(1) + v(2)))


def test_unknown_items_are_an_input_error_with_count_and_examples():
    run = pl.concat([RUN, pl.DataFrame({"request_id": [2, 3], "item_id": ["zz", "zz"], "score": [0.5, 0.5]})])
    with pytest.raises(InputError) as err:
        audit(run=run)
    v0 = err.value.violations[0]
    assert v0.n_rows == 2 and v0.examples == ("'zz'",)
    assert "1 distinct item is missing" in v0.hint


@pytest.mark.parametrize("target, match", [
    ({"x": 0.5, "y": 0.3, "z": 0.3}, "sum to 1"),
    ({"x": 0.5, "nope": 0.5}, "not in the groups table"),
    ({"x": 1.5, "y": -0.5}, ">= 0"),
    ("uniform", "unknown target"),
    ("merit", "needs labels"),
])
def test_bad_targets(target, match):
    with pytest.raises(UsageError, match=match):
        audit(target=target)


@pytest.mark.parametrize("kw, match", [
    ({"browsing": "dcg"}, "unknown browsing model"),
    ({"browsing": "rbp", "patience": 0.0}, "patience"),
    ({"k": 0}, "k must"),
    ({"group_column": "brand"}, None),
])
def test_bad_arguments(kw, match):
    if match is None:
        with pytest.raises(InputError, match="brand"):
            audit(**kw)
    else:
        with pytest.raises(UsageError, match=match):
            audit(**kw)


def test_duplicate_items_in_a_ranking_are_an_input_error():
    run = pl.concat([RUN, RUN.head(1)])
    with pytest.raises(InputError, match="once per request"):
        audit(run=run)


# ---------------------------------------------------------------- privacy


def test_small_groups_are_suppressed_but_listed_and_no_item_ids_leak():
    run, groups, labels = _random_case(7)
    res = exposure_audit(run, groups, min_group_size=3, n_boot=20, target="merit", labels=labels)
    d = res.to_dict()
    rows = {r["group"]: r for r in d["groups"]}
    assert set(rows) == {"p", "q", "r"}
    assert rows["r"]["suppressed"] is True and rows["r"]["n_items"] == 2 and rows["r"]["n_requests"] > 0
    assert all(rows["r"][f] is None for f in ("exposure_share", "share_ratio", "disparate_exposure_ratio"))
    assert rows["p"]["suppressed"] is False and rows["p"]["exposure_share"]["value"] is not None
    frame = res.to_frame()
    assert frame.filter(pl.col("group") == "r")["exposure_share"].null_count() == 1
    text = json.dumps(d, allow_nan=False)  # JSON-safe
    assert not any(f'"i{i}"' in text for i in range(12))
    # default threshold: 20 items -> every toy group suppressed, no reference group
    default = exposure_audit(RUN, GROUPS, n_boot=0)
    assert all(g.suppressed for g in default.groups) and default.reference_group is None


@pytest.mark.parametrize("n_boot", [0, 40])
def test_per_request_thread_never_changes_the_audit(monkeypatch, n_boot):
    """AWRF and EE run on a thread while the statistics matrix is built: however late that thread
    finishes, every number is the one computed without a thread (fused and other schemes)."""
    import time

    from receval.audits import _rank
    from receval.audits._result import Background

    rng = np.random.default_rng(31)
    n_req, n_items = 300, 80
    run = pl.DataFrame({
        "request_id": np.repeat(np.arange(n_req), 6),
        "item_id": np.concatenate([rng.choice(n_items, 6, replace=False) for _ in range(n_req)]),
        "score": rng.random(6 * n_req),
    })
    groups = pl.DataFrame({"item_id": np.arange(n_items), "provider": [f"p{i % 5}" for i in range(n_items)]})
    monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)  # the compiled per-request pass (the threaded one)
    if n_boot:  # the fused scheme: the statistics matrix reads the thread's columns while building
        from receval.stats import bootstrap

        monkeypatch.setattr(bootstrap, "MULTINOMIAL_MAX_DRAWS", 0)
        monkeypatch.setattr(bootstrap, "_FUSED_WARM", True)

    def inline(self, fn, *args):
        return Background.done(fn(*args))

    def late(self, fn, *args):
        def slow(*a):
            time.sleep(0.3)
            return fn(*a)
        return start(self, slow, *args)

    start = Background.start
    monkeypatch.setattr(Background, "start", inline)
    want = exposure_audit(run, groups, group_column="provider", min_group_size=1, n_boot=n_boot).to_dict()
    monkeypatch.setattr(Background, "start", late)
    got = exposure_audit(run, groups, group_column="provider", min_group_size=1, n_boot=n_boot).to_dict()
    assert got == want
    assert want["awrf"]["value"] is not None and want["expected_exposure"]["ee_l"]["value"] is not None
    assert want["settings"]["bootstrap_method"] == ("poisson-fused" if n_boot else None)
