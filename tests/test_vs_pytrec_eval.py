"""receval against reference implementations, per request.

* pytrec_eval (trec_eval 9.0.8 inside) is the oracle for every metric both
  support, on random runs with many exact score ties (scores are multiples of
  1/4, exactly representable in the 32-bit floats pytrec_eval stores) and
  item ids whose byte order differs from their "natural" order ("9" > "10",
  "a" > "B", "é" > "z").
* ranx is a second oracle on data without ties (its sort is unstable).

pytrec_eval is never given a query whose grades are all <= 0: trec_eval
crashes on all-negative queries (REFERENCES.md §1). Those queries are checked
separately: receval scores them 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import pytrec_eval
from hypothesis import given
from hypothesis import strategies as st

from receval import evaluate, parse_metric
from receval.errors import InputError
from receval.metrics import ranking

KS = (1, 2, 3, 5, 10)

# pytrec_eval measure key -> receval metric
PAIRS: dict[str, str] = {"ndcg": "ndcg", "map": "map", "recip_rank": "mrr", "Rprec": "r_precision"}
for _k in KS:
    PAIRS[f"ndcg_cut_{_k}"] = f"ndcg@{_k}"
    PAIRS[f"map_cut_{_k}"] = f"map@{_k}"
    PAIRS[f"P_{_k}"] = f"precision@{_k}"
    PAIRS[f"recall_{_k}"] = f"recall@{_k}"
    PAIRS[f"success_{_k}"] = f"hit@{_k}"
_KLIST = ",".join(map(str, KS))
MEASURES = {
    "ndcg",
    "map",
    "recip_rank",
    "Rprec",
    f"ndcg_cut.{_KLIST}",
    f"map_cut.{_KLIST}",
    f"P.{_KLIST}",
    f"recall.{_KLIST}",
    f"success.{_KLIST}",
}
def receval_metric(pytrec_key: str, level: int) -> str:
    """The receval metric matching a pytrec_eval key at a relevance level.

    ``relevance_level`` (trec_eval -l) applies to the binary measures only, as
    ``min_label`` does; nDCG uses the grades as gains whatever the level.
    """
    name = PAIRS[pytrec_key]
    if level == 1 or name.startswith("ndcg"):
        return name
    base, _, k = name.partition("@")
    return f"{base}(min_label={level})" + (f"@{k}" if k else "")


def to_frames(requests: dict[str, tuple[dict[str, float], dict[str, int]]]):
    run_rows, label_rows = [], []
    for q, (run, labels) in requests.items():
        run_rows += [(q, item, score) for item, score in run.items()]
        label_rows += [(q, item, grade) for item, grade in labels.items()]
    run = pd.DataFrame(run_rows, columns=["request_id", "item_id", "score"]).astype({"score": "float64"})
    labels = pd.DataFrame(label_rows, columns=["request_id", "item_id", "label"]).astype({"label": "int64"})
    return run, labels


def pytrec_values(requests, level: int) -> dict[str, dict[str, float]]:
    """pytrec_eval per-query values, on queries it can handle."""
    qrels = {q: dict(lab) for q, (_, lab) in requests.items() if any(g > 0 for g in lab.values())}
    run = {q: dict(r) for q, (r, _) in requests.items() if r}
    if not qrels:
        return {}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES, relevance_level=level)
    return evaluator.evaluate(run)


def compare(requests, level: int, atol: float = 1e-9) -> int:
    """Assert receval == pytrec_eval per request; return how many were compared."""
    oracle = pytrec_values(requests, level)
    keys = sorted(PAIRS)
    metrics = [receval_metric(k, level) for k in keys]
    run, labels = to_frames(requests)
    both = {q for q, (r, lab) in requests.items() if r and lab}
    if not both:  # nothing to evaluate is an input error, not a silent NaN
        with pytest.raises(InputError, match="at least one request must be evaluable"):
            evaluate(run, labels, metrics, missing_in_run="ignore", missing_in_labels="ignore", n_boot=1)
        assert oracle == {}
        return 0
    res = evaluate(run, labels, metrics, missing_in_run="ignore", missing_in_labels="ignore", n_boot=1)
    frame = res.per_request.set_index("request_id")

    assert set(frame.index) == both  # ignore/ignore keeps exactly the common requests
    no_positive = {q for q in both if not any(g > 0 for g in requests[q][1].values())}
    assert set(oracle) == both - no_positive

    for q, values in oracle.items():
        for key, metric in zip(keys, metrics, strict=True):
            got = frame.loc[q, str(parse_metric(metric))]
            assert got == pytest.approx(values[key], abs=atol), (q, key, metric, requests[q])
    for q in no_positive:  # trec_eval would crash; receval: every metric 0
        assert (frame.loc[q] == 0.0).all(), (q, requests[q])
    return len(oracle)


# ---------------------------------------------------------------------------
# hypothesis: small random requests, many ties
# ---------------------------------------------------------------------------
ITEMS = ["d1", "d2", "d9", "d10", "d11", "9", "10", "100", "a", "B", "é", "z", "x_1"]

scores = st.integers(min_value=-4, max_value=6).map(lambda i: i / 4)  # exact in float32, many ties
grades = st.integers(min_value=-1, max_value=3)
run_lists = st.dictionaries(st.sampled_from(ITEMS), scores, min_size=0, max_size=len(ITEMS))
label_sets = st.dictionaries(st.sampled_from(ITEMS), grades, min_size=0, max_size=8)
request_sets = st.lists(st.tuples(run_lists, label_sets), min_size=1, max_size=6).map(
    lambda reqs: {f"q{i}": req for i, req in enumerate(reqs) if req[0] or req[1]}
)


@given(requests=request_sets, level=st.sampled_from([1, 2]))
def test_matches_pytrec_eval_with_ties(requests, level):
    compare(requests, level)


# ---------------------------------------------------------------------------
# deterministic: ~2000 random requests, every metric, both relevance levels
# ---------------------------------------------------------------------------


def random_requests(n: int, seed: int, max_len: int = 300, ties: bool = True):
    rng = np.random.default_rng(seed)
    pool = 400
    requests = {}
    for q in range(n):
        # a few long lists so several length buckets (and chunks) are exercised
        n_run = int(rng.integers(1, max_len)) if rng.random() < 0.1 else int(rng.integers(1, 30))
        items = rng.choice(pool, size=n_run, replace=False)
        if ties:
            sc = rng.integers(-8, 12, size=n_run) / 4.0
        else:
            sc = rng.permutation(n_run).astype(np.float64) + 0.5
        n_lab = int(rng.integers(0, 20))
        # labels mostly on retrieved items, some on unretrieved ones
        lab_items = rng.choice(pool, size=n_lab, replace=False)
        on_run = rng.random(n_lab) < 0.7
        lab_items[on_run] = rng.choice(items, size=int(on_run.sum()), replace=True)
        lab_items = np.unique(lab_items)
        g = rng.integers(-1, 4, size=len(lab_items))
        requests[f"q{q}"] = (
            {str(i): float(s) for i, s in zip(items, sc, strict=True)},
            {str(i): int(x) for i, x in zip(lab_items, g, strict=True)},
        )
    return requests


@pytest.fixture(scope="module")
def big_requests():
    return random_requests(2000, seed=12345)


@pytest.mark.parametrize("level", [1, 2])
def test_matches_pytrec_eval_on_2000_requests(big_requests, level):
    n = compare(big_requests, level)
    assert n > 1500  # most requests have a positive grade and are compared


def test_integer_ids_give_the_same_values_as_their_text(big_requests):
    metrics = sorted(set(PAIRS.values()))
    run, labels = to_frames(big_requests)
    as_text = evaluate(run, labels, metrics, n_boot=1).per_request
    run_int = run.assign(request_id=run["request_id"].str[1:].astype(int), item_id=run["item_id"].astype(int))
    labels_int = labels.assign(
        request_id=labels["request_id"].str[1:].astype(int), item_id=labels["item_id"].astype(int)
    )
    as_int = evaluate(run_int, labels_int, metrics, n_boot=1).per_request
    as_int["request_id"] = "q" + as_int["request_id"].astype(str)
    pd.testing.assert_frame_equal(
        as_int.sort_values("request_id", ignore_index=True),
        as_text.sort_values("request_id", ignore_index=True),
        rtol=0,
        atol=1e-12,
    )


def test_small_cell_budget_gives_the_same_values(big_requests, monkeypatch):
    """The kernel splits length buckets into chunks; results must not depend on it."""
    metrics = sorted(set(PAIRS.values())) + ["auc", "auc(ties=order)", "ndcg(gain=exponential)@5"]
    run, labels = to_frames(big_requests)
    reference = evaluate(run, labels, metrics, n_boot=1).per_request
    monkeypatch.setattr(ranking, "CELL_BUDGET", 1000)
    chunked = evaluate(run, labels, metrics, n_boot=1).per_request
    pd.testing.assert_frame_equal(chunked, reference, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# ranx, on data without ties
# ---------------------------------------------------------------------------
RANX_PAIRS = {
    "ndcg@10": "ndcg@10",
    "map@100": "map@100",
    "mrr@10": "mrr@10",
    "recall@100": "recall@100",
    "precision@5": "precision@5",
    "hit_rate@5": "hit@5",
    "ndcg_burges@10": "ndcg(gain=exponential)@10",  # 2^rel - 1 gains
}


def test_matches_ranx_without_ties():
    from numba.core.errors import NumbaWarning

    with warnings.catch_warnings():
        # numba may warn while JIT-compiling ranx's kernels; not ours to fix
        warnings.simplefilter("ignore", NumbaWarning)
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate

        requests = random_requests(300, seed=99, max_len=150, ties=False)
        # ranx: same query set on both sides, grades >= 0, at least one relevant
        requests = {
            q: (r, {i: max(g, 0) for i, g in lab.items()})
            for q, (r, lab) in requests.items()
            if any(g > 0 for g in lab.values())
        }
        qrels = Qrels({q: lab for q, (_, lab) in requests.items()})
        run = Run({q: r for q, (r, _) in requests.items()})
        assert list(qrels.get_query_ids()) == list(run.get_query_ids())
        oracle = ranx_evaluate(qrels, run, list(RANX_PAIRS), return_mean=False, make_comparable=False)

    qids = list(qrels.get_query_ids())
    assert len(qids) > 200
    run_df, labels_df = to_frames(requests)
    frame = evaluate(run_df, labels_df, list(RANX_PAIRS.values()), n_boot=1).per_request.set_index("request_id")
    for ranx_name, metric in RANX_PAIRS.items():
        expected = np.asarray(oracle[ranx_name], dtype=np.float64)
        got = frame.loc[qids, str(parse_metric(metric))].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=ranx_name)
