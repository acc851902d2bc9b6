"""Random inputs shared by the Spark and streaming engine tests.

Ties on purpose (scores on a coarse grid, some +-inf), text ids whose byte
order differs from their "natural" order ("B" < "a" < "b10" < "b9" < "é"),
requests judged but missing from the run, requests in the run without labels,
graded and negative labels, judged items the run never listed, a per-request
``user_id`` and slice column, and predictions for calibration metrics.
"""

from __future__ import annotations

import numpy as np
import polars as pl

TEXT_ITEMS = ["B", "a", "b", "b10", "b9", "Z", "é", "ü1", "d0", "d00", "d1"] + [f"d{i}" for i in range(2, 60)]


def make_data(seed: int, id_type: str = "str", n_requests: int = 60) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(run, labels) as polars frames sorted by (request_id, item_id)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 25, n_requests)
    if id_type == "str":
        req_ids = np.array([f"q{i}" for i in rng.permutation(10 * n_requests)[:n_requests]], dtype=object)
        pool = np.array(TEXT_ITEMS, dtype=object)
    else:
        req_ids = rng.permutation(10 * n_requests)[:n_requests].astype(np.int64) * 37
        pool = np.array([9, 10, 100, 99, 1, 0] + list(range(11, 75)), dtype=np.int64)
    rows = []
    for q, n in zip(req_ids, lens, strict=True):
        items = rng.choice(pool, size=int(n), replace=False)
        score = np.round(rng.random(n) * 2, 1)  # coarse grid: many ties
        score[rng.random(n) < 0.03] = np.inf
        score[rng.random(n) < 0.03] = -np.inf
        user = f"u{int(rng.integers(0, 15))}"
        country = ["DE", "FR", "US"][int(rng.integers(0, 3))]
        for it, s in zip(items, score, strict=True):
            rows.append((q, it, float(s), float(rng.random()), user, country))
    run = pl.DataFrame(
        {
            "request_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "score": [r[2] for r in rows],
            "prediction": [r[3] for r in rows],
            "user_id": [r[4] for r in rows],
            "country": [r[5] for r in rows],
        }
    )
    judged = run.select("request_id", "item_id").sample(fraction=0.45, seed=seed)
    judged = judged.with_columns(label=pl.Series(rng.choice([-1.0, 0.0, 1.0, 1.0, 2.0, 3.0], judged.height)))
    # judged items the run never listed (they count in R and the ideal DCG)
    extra_items = pool[:3]
    k = min(10, n_requests)
    unlisted = pl.DataFrame({"request_id": req_ids[:k].tolist() * 3, "item_id": [x for x in extra_items for _ in range(k)]})
    unlisted = unlisted.join(run.select("request_id", "item_id"), on=["request_id", "item_id"], how="anti")
    unlisted = unlisted.with_columns(label=pl.lit(2.0))
    # judged requests missing from the run
    if id_type == "str":
        only = pl.DataFrame({"request_id": ["zz1", "zz1", "a0"], "item_id": [pool[0], pool[1], pool[2]]})
    else:
        only = pl.DataFrame({"request_id": [5, 5, 10**9], "item_id": [pool[0], pool[1], pool[2]]})
    only = only.with_columns(label=pl.Series([1.0, 3.0, 0.0]))
    labels = pl.concat([judged, unlisted.select(judged.columns), only.select(judged.columns)])
    # requests of the run without any label
    no_labels = req_ids[-3:].tolist()
    labels = labels.filter(~pl.col("request_id").is_in(no_labels))
    return run.sort("request_id", "item_id"), labels.sort("request_id", "item_id")


RANKING = [
    "ndcg@5", "ndcg(gain=exponential)@10", "ndcg", "map", "map@10", "mrr", "mrr@3", "precision@5",
    "recall@10", "recall(min_label=2)@10", "hit@3", "r_precision", "auc", "auc(ties=average)",
]
CALIBRATION = ["brier", "logloss", "ece", "mce(bins=5)", "ece(bins=10,min_label=2)"]


#: every beyond-accuracy metric of the registry, with and without a cutoff, non-default parameters
BEYOND = [
    "coverage@5", "coverage", "gini@3", "gini", "novelty@5", "novelty", "arp@10", "arp(popularity=clicks)@4",
    "long_tail_share@5", "long_tail_share(tail_quantile=0.5)", "diversity@5", "diversity(by=vec)@6",
    "diversity(by=vec)", "personalization@5", "personalization(sample=7)@3",
]
#: with cutoffs only: the chunks then send just the top max(k) items of each request
BEYOND_AT_K = [m for m in BEYOND if "@" in m]


def make_catalog(run: pl.DataFrame, seed: int) -> pl.DataFrame:
    """One row per item of ``run``'s id pool (sorted by item_id): popularity with ties and fractions,
    a category, a 3-d feature vector."""
    rng = np.random.default_rng(seed)
    pool = TEXT_ITEMS if run.schema["item_id"] == pl.String else [9, 10, 100, 99, 1, 0] + list(range(11, 75))
    n = len(pool)
    return pl.DataFrame({
        "item_id": pool,
        "popularity": np.round(rng.exponential(20.0, n), 1) * (rng.random(n) < 0.9),
        "clicks": rng.integers(0, 5, n),
        "category": rng.choice(["x", "y", "z", "w"], n),
        "vec": [list(v) for v in np.round(rng.normal(size=(n, 3)), 2) + 0.01],
    }).sort("item_id")
