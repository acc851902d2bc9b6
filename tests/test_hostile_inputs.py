"""Hostile but legal inputs give correct numbers; illegal ones a receval error, never a crash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

import receval
from receval.errors import InputError

METRICS = ["ndcg@10", "mrr", "auc", "precision@1"]


def _lab(request, item, label=1):
    return pd.DataFrame({"request_id": [request], "item_id": [item], "label": [label]})


@pytest.mark.parametrize(
    "run, labels, expected",
    [
        # +inf first, -inf last: the relevant -inf item is ranked 3rd of 3
        (pd.DataFrame({"request_id": ["q"] * 3, "item_id": ["a", "b", "c"], "score": [np.inf, -np.inf, 0.0]}),
         _lab("q", "b"), {"mrr": 1 / 3, "auc": 0.0, "precision@1": 0.0}),
        # -0.0 == 0.0 is a tie: "b" ranks above "a" (id descending), so the relevant "a" is 2nd
        (pd.DataFrame({"request_id": ["q"] * 2, "item_id": ["a", "b"], "score": [-0.0, 0.0]}),
         _lab("q", "a"), {"mrr": 0.5, "auc": 0.5}),
        # unicode and markup ids tie: code point order, U+00E9 above '<'
        (pd.DataFrame({"request_id": ["ü"] * 2, "item_id": ["é", "<script>"], "score": [1.0, 1.0]}),
         _lab("ü", "é", 2), {"mrr": 1.0, "ndcg@10": 1.0}),
        # "007" is not 7: ids are compared as text when one side is text
        (pd.DataFrame({"request_id": [1, 1], "item_id": ["007", "8"], "score": [1.0, 0.5]}),
         pd.DataFrame({"request_id": [1], "item_id": [7], "label": [1]}), {"mrr": 0.0}),
        # extreme int64 ids tie: decimal text "9223372036854775807" > "-9223372036854775808"
        (pd.DataFrame({"request_id": [2**62] * 2, "item_id": [2**63 - 1, -(2**63)], "score": [1.0, 1.0]}),
         pd.DataFrame({"request_id": [2**62], "item_id": [2**63 - 1], "label": [1]}), {"mrr": 1.0}),
        # uint64 ids beyond int64 become text on both sides
        (pd.DataFrame({"request_id": np.array([1, 1], dtype=np.uint64), "item_id": np.array([2**64 - 1, 5], dtype=np.uint64), "score": [1.0, 0.0]}),
         pd.DataFrame({"request_id": np.array([1], dtype=np.uint64), "item_id": np.array([5], dtype=np.uint64), "label": [1]}), {"mrr": 0.5}),
        # boolean labels are grades 0/1; categorical ids are text
        (pd.DataFrame({"request_id": pd.Categorical(["q", "q"]), "item_id": pd.Categorical(["a", "b"]), "score": [1.0, 0.0]}),
         pd.DataFrame({"request_id": ["q"], "item_id": ["b"], "label": [True]}), {"mrr": 0.5}),
        # a single row
        (pd.DataFrame({"request_id": ["q"], "item_id": ["a"], "score": [0.3]}), _lab("q", "a"), {"mrr": 1.0, "auc": 1.0}),
        # lazy polars inputs
        (pl.LazyFrame({"request_id": ["q"], "item_id": ["a"], "score": [0.3]}), pl.LazyFrame({"request_id": ["q"], "item_id": ["a"], "label": [1]}), {"mrr": 1.0}),
    ],
    ids=["inf", "negative-zero", "unicode", "007-vs-7", "int64-extremes", "uint64", "categorical-bool", "single-row", "lazy"],
)
def test_hostile_but_legal_inputs(run, labels, expected):
    res = receval.evaluate(run, labels, METRICS, n_boot=20)
    for metric, value in expected.items():
        assert res[metric].mean == pytest.approx(value, abs=1e-12), metric


@pytest.mark.parametrize(
    "run, fragment",
    [
        (pd.DataFrame({"request_id": ["q", None], "item_id": ["a", "b"], "score": [1.0, 0.0]}), "request_id: must not be null"),
        (pd.DataFrame({"request_id": ["q", 1], "item_id": ["a", "b"], "score": [1.0, 0.0]}), "must hold one type"),
        (pd.DataFrame({"request_id": ["q", "q"], "item_id": ["a", "b"], "score": [np.nan, 0.0]}), "score: must not be null or NaN"),
        (pd.DataFrame({"request_id": [1.5, 2.5], "item_id": ["a", "b"], "score": [1.0, 0.0]}), "must hold integers or text"),
    ],
    ids=["null-id", "mixed-id-types", "nan-score", "float-ids"],
)
def test_illegal_inputs_are_receval_errors(run, fragment):
    with pytest.raises(InputError, match=fragment):
        receval.evaluate(run, _lab("q", "b"), METRICS)
