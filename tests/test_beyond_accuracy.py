"""Beyond-accuracy metrics on hand-computed toy cases, arithmetic kept visible.

Toy catalog (6 items) and run (3 requests, best first):

    item  popularity  category  vec          q1: a b c
    a     10          X         ( 1,  0)     q2: a c e
    b      5          X         ( 1,  0)     q3: b d      (shorter than k = 3)
    c      3          Y         ( 0,  1)
    d      1          Y         ( 1,  1)
    e      1          Z         (-1,  0)
    f      0          Z         ( 0, -1)     (never recommended)

sum of popularity = 20, |I| = 6. Conventions (docs/metrics.md, "Beyond-accuracy
metrics"): novelty uses add-one smoothing p(i) = (pop_i + 1) / (20 + 6); the
long tail is popularity <= the tail_quantile quantile (numpy "linear"); lists
shorter than k use their own length; personalization uses the cosine overlap
|A ∩ B| / sqrt(|A| |B|).
"""

from __future__ import annotations

from math import log2, sqrt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from receval import evaluate, parse_metric
from receval.errors import InputError, MetricNameError, UsageError
from receval.evaluation import score
from receval.metrics import beyond
from receval.metrics.base import EvalContext
from receval.metrics.registry import REGISTRY, parse_metrics

SYNTH = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic"

LISTS = {"q1": ["a", "b", "c"], "q2": ["a", "c", "e"], "q3": ["b", "d"]}
CATALOG = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e", "f"],
        "popularity": [10, 5, 3, 1, 1, 0],
        "category": ["X", "X", "Y", "Y", "Z", "Z"],
        "vec": [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]],
    }
)


def _run(lists):
    rows = [(q, item, float(len(items) - r)) for q, items in lists.items() for r, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["request_id", "item_id", "score"])


def _labels(lists):
    # one judged item per request, so every request is evaluated
    return pd.DataFrame([(q, items[0], 1) for q, items in lists.items()], columns=["request_id", "item_id", "label"])


def run_toy(metrics, lists=LISTS, catalog=CATALOG, **kwargs):
    kwargs.setdefault("n_boot", 50)
    return evaluate(_run(lists), _labels(lists), metrics, catalog=catalog, **kwargs)


def means(metrics, **kwargs):
    res = run_toy(metrics, **kwargs)
    return {m: res[m].mean for m in metrics}


def per_request(metric, **kwargs):
    res = run_toy([metric], **kwargs)
    frame = res.per_request.set_index("request_id")
    return frame[str(parse_metric(metric))].to_dict()


# --------------------------------------------------------------------------
# coverage: distinct items in the top-k lists / |catalog|
# --------------------------------------------------------------------------


def test_coverage_respects_k():
    got = means(["coverage@1", "coverage@2", "coverage@3", "coverage"])
    assert got["coverage@1"] == pytest.approx(2 / 6)  # top-1: a, a, b -> {a, b}
    assert got["coverage@2"] == pytest.approx(4 / 6)  # {a, b} | {a, c} | {b, d}
    assert got["coverage@3"] == pytest.approx(5 / 6)  # all but f
    assert got["coverage"] == pytest.approx(5 / 6)  # whole lists
    assert got["coverage@1"] < got["coverage@3"]  # Evidently's coverage ignores k; receval does not


def test_coverage_of_constant_lists_and_full_catalog():
    same = {"q1": ["a", "b", "c"], "q2": ["a", "b", "c"], "q3": ["a", "b", "c"]}
    assert means(["coverage@3"], lists=same)["coverage@3"] == pytest.approx(3 / 6)
    spread = {"q1": ["a", "b"], "q2": ["c", "d"], "q3": ["e", "f"]}
    assert means(["coverage@2"], lists=spread)["coverage@2"] == pytest.approx(1.0)


# --------------------------------------------------------------------------
# novelty: mean over the list of -log2 p(i), p(i) = (pop_i + 1) / (20 + 6)
# --------------------------------------------------------------------------


def test_novelty_per_request_with_add_one_smoothing():
    info = {i: -log2((p + 1) / 26) for i, p in zip("abcdef", [10, 5, 3, 1, 1, 0], strict=True)}
    assert info["a"] == pytest.approx(log2(26 / 11))
    assert info["f"] == pytest.approx(log2(26))  # popularity 0 is finite thanks to the +1
    got = per_request("novelty@3")
    assert got["q1"] == pytest.approx((info["a"] + info["b"] + info["c"]) / 3)
    assert got["q2"] == pytest.approx((info["a"] + info["c"] + info["e"]) / 3)
    assert got["q3"] == pytest.approx((info["b"] + info["d"]) / 2)  # shorter list: its own length
    assert per_request("novelty@1")["q3"] == pytest.approx(info["b"])


def test_novelty_of_a_zero_popularity_item_is_finite():
    got = per_request("novelty@1", lists={"q1": ["f"], "q2": ["a"]})
    assert got["q1"] == pytest.approx(log2(26))


# --------------------------------------------------------------------------
# arp: mean popularity of the list; long_tail_share: share of tail items
# --------------------------------------------------------------------------


def test_arp():
    got = per_request("arp@3")
    assert got == pytest.approx({"q1": (10 + 5 + 3) / 3, "q2": (10 + 3 + 1) / 3, "q3": (5 + 1) / 2})
    assert means(["arp@3"])["arp@3"] == pytest.approx((6 + 14 / 3 + 3) / 3)
    assert per_request("arp@1") == pytest.approx({"q1": 10, "q2": 10, "q3": 5})


def test_long_tail_share():
    # popularity sorted: 0 1 1 3 5 10; the 0.8 quantile (linear) sits at position
    # 0.8 * 5 = 4 -> 5, so the tail is {b, c, d, e, f} and the head is {a}
    assert np.quantile([10, 5, 3, 1, 1, 0], 0.8) == 5
    got = per_request("long_tail_share@3")
    assert got == pytest.approx({"q1": 2 / 3, "q2": 2 / 3, "q3": 1.0})
    # the 0.5 quantile: position 2.5, between 1 and 3 -> 2; tail {d, e, f}
    got = per_request("long_tail_share(tail_quantile=0.5)@3")
    assert got == pytest.approx({"q1": 0.0, "q2": 1 / 3, "q3": 1 / 2})
    assert means(["aplt(tail_quantile=0.5)@3"])["aplt(tail_quantile=0.5)@3"] == pytest.approx((0 + 1 / 3 + 1 / 2) / 3)


# --------------------------------------------------------------------------
# diversity: mean pairwise dissimilarity over the L (L - 1) / 2 pairs of a list
# --------------------------------------------------------------------------


def test_diversity_by_category():
    got = per_request("diversity@3")
    # q1: X X Y -> pairs (a,b)=0, (a,c)=1, (b,c)=1; q2: X Y Z -> 1; q3: X Y -> 1
    assert got == pytest.approx({"q1": 2 / 3, "q2": 1.0, "q3": 1.0})
    assert means(["ild@3"])["ild@3"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    same = {"q1": ["a", "b"], "q2": ["c", "d"]}  # each list within one category
    assert means(["diversity@2"], lists=same)["diversity@2"] == 0.0


def test_diversity_by_feature_vectors_is_cosine_distance():
    got = per_request("diversity(by=vec)@3")
    # q1: a.b cos 1 -> 0, a.c cos 0 -> 1, b.c -> 1
    # q2: a.c -> 1, a.e cos -1 -> 2, c.e -> 1
    # q3: b.d cos 1/sqrt(2) -> 1 - 1/sqrt(2)
    assert got == pytest.approx({"q1": 2 / 3, "q2": 4 / 3, "q3": 1 - 1 / sqrt(2)})


def test_diversity_of_lists_shorter_than_two_is_undefined_and_counted():
    res = run_toy(["diversity@3", "diversity@1"], lists={"q1": ["a", "c"], "q2": ["b"], "q3": ["d", "e"]})
    frame = res.per_request.set_index("request_id")
    assert frame["diversity@3"]["q1"] == 1.0
    assert np.isnan(frame["diversity@3"]["q2"])  # one item: no pair
    assert res["diversity@3"].mean == 1.0  # mean over the two defined lists
    assert res.details["diversity@3"] == {"requests_with_fewer_than_2_items": 1}
    assert np.isnan(res["diversity@1"].mean)  # no list has a pair at k = 1
    assert res.details["diversity@1"] == {"requests_with_fewer_than_2_items": 3}


def test_diversity_of_vectors_with_arrays_and_checks():
    catalog = pl.from_pandas(CATALOG).with_columns(pl.col("vec").list.to_array(2))
    assert per_request("diversity(by=vec)@3", catalog=catalog)["q1"] == pytest.approx(2 / 3)
    zero = CATALOG.assign(vec=[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(InputError, match="non-zero"):
        run_toy(["diversity(by=vec)@3"], catalog=zero)
    ragged = CATALOG.assign(vec=[[1.0, 0.0], [1.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(InputError, match="same length"):
        run_toy(["diversity(by=vec)@3"], catalog=ragged)


# --------------------------------------------------------------------------
# gini: sum_i (2i - n - 1) x_(i) / (n sum x), x = exposure over the whole catalog
# --------------------------------------------------------------------------


def test_gini_over_the_whole_catalog():
    got = means(["gini@3", "gini@1"])
    # top-3 exposure: a 2, b 2, c 2, d 1, e 1, f 0 -> ascending 0 1 1 2 2 2, sum 8
    # coefficients 2i - 7 = -5 -3 -1 1 3 5: 0 - 3 - 1 + 2 + 6 + 10 = 14
    assert got["gini@3"] == pytest.approx(14 / (6 * 8))
    # top-1 exposure: a 2, b 1, rest 0 -> 0 0 0 0 1 2: 3 * 1 + 5 * 2 = 13, sum 3
    assert got["gini@1"] == pytest.approx(13 / (6 * 3))


def test_gini_of_equal_exposure_is_zero_and_constant_lists():
    small = pd.DataFrame({"item_id": ["a", "b", "c"], "popularity": [1, 1, 1]})
    equal = {"q1": ["a"], "q2": ["b"], "q3": ["c"]}
    assert means(["gini@1", "coverage@1"], lists=equal, catalog=small) == pytest.approx({"gini@1": 0.0, "coverage@1": 1.0})
    # the same 3 items in every list: exposure 0 0 0 3 3 3 -> (1 + 3 + 5) * 3 / (6 * 9) = 0.5
    same = {"q1": ["a", "b", "c"], "q2": ["a", "b", "c"], "q3": ["a", "b", "c"]}
    assert means(["gini@3"], lists=same)["gini@3"] == pytest.approx(0.5)


def test_gini_of_rows_matches_the_sorted_formula():
    rng = np.random.default_rng(3)
    x = rng.poisson(1.5, size=(6, 40)).astype(float)
    mult = rng.integers(1, 4, size=40).astype(float)
    full = np.repeat(x, mult.astype(int), axis=1)
    n = 200  # the other 200 - sum(mult) items were never shown
    pad = np.hstack([np.zeros((6, n - full.shape[1])), full])
    i = np.arange(1, n + 1)
    expected = (np.sort(pad, axis=1) * (2 * i - n - 1)).sum(axis=1) / (n * pad.sum(axis=1))
    assert beyond.gini_of_rows(x, n, mult) == pytest.approx(expected, abs=1e-12)  # counts: histogram
    assert beyond.gini_of_rows(x + 0.5, n, mult) == pytest.approx(
        (np.sort(np.hstack([np.zeros((6, n - full.shape[1])), full + 0.5]), axis=1) * (2 * i - n - 1)).sum(axis=1)
        / (n * (full + 0.5).sum(axis=1)),
        abs=1e-12,
    )  # not counts: sorted


# --------------------------------------------------------------------------
# personalization: 1 - mean over pairs of |A ∩ B| / sqrt(|A| |B|)
# --------------------------------------------------------------------------


def test_personalization():
    got = means(["personalization@3", "personalization@1"])
    # q1.q2 share {a, c}: 2 / sqrt(3 * 3); q1.q3 share {b}: 1 / sqrt(3 * 2); q2.q3 share nothing
    assert got["personalization@3"] == pytest.approx(1 - (2 / 3 + 1 / sqrt(6) + 0) / 3)
    # top-1: {a}, {a}, {b}: similarities 1, 0, 0
    assert got["personalization@1"] == pytest.approx(1 - 1 / 3)


def test_personalization_identical_and_disjoint_lists():
    same = {"q1": ["a", "b", "c"], "q2": ["a", "b", "c"], "q3": ["a", "b", "c"]}
    assert means(["personalization@3"], lists=same)["personalization@3"] == 0.0
    disjoint = {"q1": ["a", "b"], "q2": ["c", "d"], "q3": ["e", "f"]}
    assert means(["personalization@2"], lists=disjoint)["personalization@2"] == 1.0
    # a list and its prefix are identical at k = 2
    prefix = {"q1": ["a", "b"], "q2": ["a", "b", "c"]}
    assert means(["personalization@2"], lists=prefix)["personalization@2"] == 0.0


def test_personalization_needs_two_lists():
    res = run_toy(["personalization@3", "personalization(sample=1)@3"], lists={"q1": ["a", "b"]})
    assert np.isnan(res["personalization@3"].mean)  # one non-empty list: no pair
    assert np.isnan(res["personalization(sample=1)@3"].mean)
    assert res.details["personalization(sample=1)@3"]["sampled_requests"] == 1


def test_personalization_sample_is_deterministic():
    res = run_toy(["personalization(sample=2)@3"])
    pairs = {1 - 2 / 3, 1 - 1 / sqrt(6), 1.0}
    value = res["personalization(sample=2)@3"].mean
    assert any(value == pytest.approx(p) for p in pairs)
    assert run_toy(["personalization(sample=2)@3"])["personalization(sample=2)@3"].mean == value
    assert res.details["personalization(sample=2)@3"] == {
        "sampled_requests": 2, "requests_with_items": 3, "sample_seed": beyond.SAMPLE_SEED,
    }


# --------------------------------------------------------------------------
# scope, replicates, intervals
# --------------------------------------------------------------------------

ALL = [
    "coverage@3", "novelty@3", "diversity@3", "gini@3", "arp@3", "long_tail_share@3", "personalization@3",
]


def test_scope_per_request_vs_population():
    scored = score(_run(LISTS), _labels(LISTS), parse_metrics(ALL), catalog=CATALOG)
    scope = {m.name: scored.stats[m].scope for m in scored.metrics}
    assert scope == {
        "coverage": "population", "gini": "population", "personalization": "population",
        "novelty": "request", "diversity": "request", "arp": "request", "long_tail_share": "request",
    }
    res = run_toy(ALL)
    assert list(res.per_request.columns) == ["request_id", "novelty@3", "diversity@3", "arp@3", "long_tail_share@3"]


def _context(lists, catalog):
    """An EvalContext over ``lists`` (best first) without going through evaluate."""
    items = [i for items in lists for i in items]
    k = max(len(x) for x in lists)
    top = np.full((len(lists), k), -1, dtype=np.int64)
    start = 0
    for u, x in enumerate(lists):
        top[u, : len(x)] = np.arange(start, start + len(x))
        start += len(x)
    return EvalContext(
        n_units=len(lists), request_ids=pl.Series(range(len(lists))),
        row_unit=np.repeat(np.arange(len(lists)), [len(x) for x in lists]), row_item=pl.Series(items),
        row_score=np.zeros(len(items)), row_grade=None, row_prediction=None, top_rows=top, catalog=catalog,
    )


def _replicate_by_hand(name, lists, weights, n_items, k):
    """The statistic on the resampled data: request u repeated weights[u] times."""
    drawn = [x[:k] for x, w in zip(lists, weights, strict=True) for _ in range(int(w))]
    if name == "coverage":
        return len({i for x in drawn for i in x}) / n_items
    if name == "gini":
        counts = {}
        for x in drawn:
            for i in x:
                counts[i] = counts.get(i, 0) + 1
        v = np.sort(np.array(list(counts.values()) + [0] * (n_items - len(counts)), dtype=float))
        i = np.arange(1, n_items + 1)
        return float(((2 * i - n_items - 1) * v).sum() / (n_items * v.sum()))
    # personalization: pairs of distinct requests (copies of one request do not pair)
    copies = [(u, x[:k]) for u, (x, w) in enumerate(zip(lists, weights, strict=True)) for _ in range(int(w))]
    sims = [
        len(set(a) & set(b)) / sqrt(len(a) * len(b))
        for j, (ua, a) in enumerate(copies) for (ub, b) in copies[j + 1 :] if ua != ub
    ]
    return 1 - float(np.mean(sims))


@pytest.mark.parametrize("name", ["coverage", "gini", "personalization"])
def test_population_replicates_equal_the_statistic_on_resampled_requests(name):
    rng = np.random.default_rng(7)
    n_items = 40
    catalog = pl.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "popularity": np.ones(n_items)})
    lists = [list(rng.choice([f"i{j}" for j in range(n_items)], size=rng.integers(1, 6), replace=False)) for _ in range(12)]
    ctx = _context(lists, catalog)
    k = 4
    (ms,) = beyond.compute([parse_metric(f"{name}@{k}")], ctx).values()
    assert ms.value() == pytest.approx(_replicate_by_hand(name, lists, np.ones(12), n_items, k))
    weights = rng.poisson(1.0, size=(20, 12)).astype(float)
    weights[:, :2] = np.maximum(weights[:, :2], 1)  # at least two distinct requests drawn
    sums = np.asarray((ms.stats.T @ weights.T).T)
    got = ms.finish(sums)
    expected = [_replicate_by_hand(name, lists, w, n_items, k) for w in weights]
    assert got == pytest.approx(expected, abs=1e-12)
    # a slice: the statistic over a subset of requests
    units = np.array([0, 3, 5, 8])
    assert ms.value(units) == pytest.approx(
        _replicate_by_hand(name, lists, np.isin(np.arange(12), units).astype(float), n_items, k)
    )


@pytest.fixture(scope="module")
def synthetic():
    return evaluate(
        SYNTH / "run_cand.parquet", SYNTH / "labels.parquet",
        ["ndcg@10", "coverage@10", "novelty@10", "gini@10", "diversity@10", "arp@10",
         "long_tail_share@10", "personalization@10"],
        catalog=SYNTH / "catalog.parquet", n_boot=200,
    )


@pytest.mark.parametrize(
    "metric", ["ndcg@10", "novelty@10", "diversity@10", "arp@10", "long_tail_share@10", "personalization@10"]
)
def test_intervals_contain_the_point_estimate(synthetic, metric):
    s = synthetic[metric]
    assert s.ci_low <= s.mean <= s.ci_high


@pytest.mark.parametrize("metric", ["coverage@10", "gini@10"])
def test_population_distinct_count_intervals_contain_the_point_estimate(synthetic, metric):
    s = synthetic[metric]
    assert s.ci_low <= s.mean <= s.ci_high


def test_evaluate_mix_on_synthetic_matches_a_direct_computation():
    res = evaluate(
        SYNTH / "run_cand.parquet", SYNTH / "labels.parquet", ["ndcg@10", "coverage@10", "novelty@10"],
        catalog=SYNTH / "catalog.parquet", n_boot=100,
    )
    alone = evaluate(SYNTH / "run_cand.parquet", SYNTH / "labels.parquet", ["ndcg@10"], n_boot=100)
    assert res["ndcg@10"].mean == alone["ndcg@10"].mean
    run = pl.read_parquet(SYNTH / "run_cand.parquet")
    catalog = pl.read_parquet(SYNTH / "catalog.parquet")
    # top 10 per request: score descending, ties by item id descending (trec_eval order)
    top = run.sort(["request_id", "score", "item_id"], descending=[False, True, True]).group_by(
        "request_id", maintain_order=True
    ).head(10)
    assert res["coverage@10"].mean == pytest.approx(top["item_id"].n_unique() / catalog.height)
    total, n_items = float(catalog["popularity"].sum()), catalog.height
    info = catalog.select("item_id", (-((pl.col("popularity") + 1) / (total + n_items)).log(2)).alias("info"))
    nov = top.join(info, on="item_id").group_by("request_id").agg(pl.col("info").mean())
    assert res["novelty@10"].mean == pytest.approx(nov["info"].mean(), rel=1e-12)
    frame = res.per_request
    assert list(frame.columns) == ["request_id", "ndcg@10", "novelty@10"]
    assert res.counts["evaluated"] == 2000


# --------------------------------------------------------------------------
# inputs: catalog missing, items missing, ids of mixed types, bad columns
# --------------------------------------------------------------------------


def test_missing_catalog_is_a_usage_error_naming_the_metric():
    with pytest.raises(UsageError, match=r"coverage@3.*catalog="):
        evaluate(_run(LISTS), _labels(LISTS), ["ndcg@3", "coverage@3"])


def test_recommended_items_missing_from_the_catalog_are_an_error():
    short = CATALOG[CATALOG["item_id"] != "e"]
    with pytest.raises(InputError) as info:
        run_toy(["coverage@3"], catalog=short)
    (v,) = info.value.violations
    assert (v.column, v.rule, v.n_rows, v.examples) == ("item_id", "every recommended item must be in the catalog", 1, ("'e'",))
    # e is below rank 1 everywhere, so it is not recommended at k = 1
    assert means(["coverage@1"], catalog=short)["coverage@1"] == pytest.approx(2 / 5)


def test_int_and_str_ids_are_compared_as_text():
    code = {i: n for n, i in enumerate("abcdef", start=1)}
    int_lists = {q: [code[i] for i in items] for q, items in LISTS.items()}
    int_catalog = CATALOG.assign(item_id=[code[i] for i in CATALOG["item_id"]])
    str_catalog = int_catalog.assign(item_id=int_catalog["item_id"].astype(str))
    expected = means(ALL)
    assert means(ALL, lists=int_lists, catalog=int_catalog) == pytest.approx(expected)
    assert means(ALL, lists=int_lists, catalog=str_catalog) == pytest.approx(expected)  # int run, str catalog
    str_lists = {q: [str(i) for i in items] for q, items in int_lists.items()}
    assert means(ALL, lists=str_lists, catalog=int_catalog) == pytest.approx(expected)  # str run, int catalog


def test_catalog_column_errors():
    with pytest.raises(InputError, match=r"nope: required column is missing.*novelty\(popularity=nope\)@3"):
        run_toy(["novelty(popularity=nope)@3"])
    with pytest.raises(InputError, match="genre: required column is missing"):
        run_toy(["diversity(by=genre)@3"])
    with pytest.raises(InputError, match="popularity: must be finite and >= 0"):
        run_toy(["arp@3"], catalog=CATALOG.assign(popularity=[10, -5, 3, 1, 1, 0]))
    with pytest.raises(InputError, match="popularity: must not be null"):
        run_toy(["arp@3"], catalog=CATALOG.assign(popularity=[10, None, 3, 1, 1, 0]))
    with pytest.raises(InputError, match="popularity: must be numeric"):
        run_toy(["arp@3"], catalog=CATALOG.assign(popularity=list("abcdef")))
    with pytest.raises(InputError, match="category: must not be null for a recommended item"):
        run_toy(["diversity@3"], catalog=CATALOG.assign(category=["X", None, "Y", "Y", "Z", "Z"]))
    # a null attribute of an item nobody recommends is fine
    assert means(["diversity@3"], catalog=CATALOG.assign(category=["X", "X", "Y", "Y", "Z", None]))


def test_catalog_columns_mapping_renames():
    catalog = CATALOG.rename(columns={"popularity": "clicks", "item_id": "sku"})
    got = run_toy(["arp@3"], catalog=catalog, catalog_columns={"item_id": "sku", "popularity": "clicks"})
    assert got["arp@3"].mean == pytest.approx((6 + 14 / 3 + 3) / 3)


def test_requests_without_items_are_left_out_of_per_request_means():
    # q9 is judged but not in the run (missing_in_run="zero" keeps it as a unit)
    labels = pd.concat([_labels(LISTS), pd.DataFrame([("q9", "a", 1)], columns=["request_id", "item_id", "label"])])
    res = evaluate(_run(LISTS), labels, ["arp@3", "coverage@3"], catalog=CATALOG, n_boot=20)
    assert res["arp@3"].mean == pytest.approx((6 + 14 / 3 + 3) / 3)
    assert res.details["arp@3"] == {"requests_with_empty_list": 1}
    assert res["coverage@3"].mean == pytest.approx(5 / 6)


# --------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------

NAMES = [
    "coverage", "coverage@10", "novelty@5", "novelty(popularity=clicks)@5", "diversity@10",
    "diversity(by=genre)@10", "ild(by=vec)@3", "gini@10", "gini", "arp@20", "arp(popularity=pop)",
    "long_tail_share@10", "long_tail_share(tail_quantile=0.9)@10", "aplt(popularity=pop,tail_quantile=0.5)@10",
    "personalization@10", "personalization(sample=50)@10",
]


@pytest.mark.parametrize("name", NAMES)
def test_parse_str_round_trip(name):
    m = parse_metric(name)
    assert parse_metric(str(m)) == m
    assert m.spec.kind == "beyond"


def test_canonical_names_and_directions():
    assert str(parse_metric("ILD(by = genre)@10")) == "diversity(by=genre)@10"
    assert str(parse_metric("aplt(tail_quantile=0.80)@10")) == "long_tail_share@10"
    assert str(parse_metric("personalization(sample=1000)")) == "personalization"
    direction = {n: REGISTRY[n].greater_is_better for n in
                 ("coverage", "novelty", "diversity", "gini", "arp", "long_tail_share", "personalization")}
    assert direction == {"coverage": True, "novelty": True, "diversity": True, "gini": False, "arp": False,
                         "long_tail_share": True, "personalization": True}


@pytest.mark.parametrize(
    "name, message",
    [
        ("long_tail_share(tail_quantile=-0.1)@10", "must be >= 0"),
        ("personalization(sample=0)@10", "must be >= 1"),
        ("personalization(sample=20000)@10", "must be <= 10000"),
        ("coverage@0", "positive integer"),
        ("coverage(popularity=x)@10", "has no parameter"),
    ],
)
def test_invalid_names(name, message):
    with pytest.raises(MetricNameError, match=message):
        parse_metric(name)


def test_tail_quantile_above_one_is_refused_when_parsing():
    with pytest.raises(MetricNameError, match=r"long_tail_share: parameter 'tail_quantile' must be <= 1; got '1.5'"):
        parse_metric("long_tail_share(tail_quantile=1.5)@3")
    assert means(["long_tail_share(tail_quantile=1)@3"])["long_tail_share(tail_quantile=1)@3"] == 1.0


def test_per_request_metrics_match_brute_force_on_random_lists():
    rng = np.random.default_rng(11)
    n_items = 30
    ids = [f"i{j}" for j in range(n_items)]
    pop = rng.integers(0, 50, n_items).astype(float)
    cat = rng.integers(0, 4, n_items)
    vec = rng.normal(size=(n_items, 3))
    catalog = pl.DataFrame({"item_id": ids, "popularity": pop, "category": cat, "vec": vec.tolist()})
    lists = [list(rng.choice(n_items, size=rng.integers(1, 8), replace=False)) for _ in range(40)]
    ctx = _context([[ids[i] for i in x] for x in lists], catalog)
    k = 5
    names = ["novelty@5", "arp@5", "long_tail_share(tail_quantile=0.6)@5", "diversity@5", "diversity(by=vec)@5"]
    got = beyond.compute(parse_metrics(names), ctx)
    t = np.quantile(pop, 0.6)
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    for u, x in enumerate(lists):
        x = x[:k]
        pairs = [(a, b) for j, a in enumerate(x) for b in x[j + 1 :]]
        expected = {
            "novelty@5": np.mean(-np.log2((pop[x] + 1) / (pop.sum() + n_items))),
            "arp@5": np.mean(pop[x]),
            "long_tail_share(tail_quantile=0.6)@5": np.mean(pop[x] <= t),
            "diversity@5": np.mean([cat[a] != cat[b] for a, b in pairs]) if pairs else np.nan,
            "diversity(by=vec)@5": np.mean([1 - unit[a] @ unit[b] for a, b in pairs]) if pairs else np.nan,
        }
        for m, ms in got.items():
            values = ms.per_unit if ms.per_unit is not None else ms.extra["per_request"]
            assert values[u] == pytest.approx(expected[str(m)], abs=1e-12, nan_ok=True), (str(m), u)
