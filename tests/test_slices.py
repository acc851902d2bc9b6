"""Cohorts and slices: per-slice values equal evaluating the slice alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import receval
from receval.errors import InputError, UsageError


def _data(n_req: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for r in range(n_req):
        user = f"u{r % 12}"
        country = ["DE", "FR", "JP"][r % 3]
        for i in range(8):
            rows.append((f"q{r}", user, f"i{i}", float(rng.integers(0, 5)), country))
        for i in rng.choice(8, size=2, replace=False):
            labels.append((f"q{r}", f"i{i}", int(rng.integers(1, 3))))
    run = pd.DataFrame(rows, columns=["request_id", "user_id", "item_id", "score", "country"])
    lab = pd.DataFrame(labels, columns=["request_id", "item_id", "label"])
    return run, lab


def test_slice_from_run_column_equals_evaluating_the_subset():
    run, lab = _data()
    res = receval.evaluate(run, lab, ["ndcg@5", "mrr"], by="country", n_boot=200)
    sl = res.slices
    assert set(sl["country"]) == {"DE", "FR", "JP"}
    for country in ("DE", "FR", "JP"):
        sub = run[run["country"] == country]
        alone = receval.evaluate(sub, lab[lab["request_id"].isin(sub["request_id"])], ["ndcg@5", "mrr"], n_boot=200)
        for metric in ("ndcg@5", "mrr"):
            row = sl[(sl["country"] == country) & (sl["metric"] == metric)].iloc[0]
            assert row["mean"] == pytest.approx(alone[metric].mean, abs=1e-12)
            assert row["n"] == alone[metric].n == 20
            assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    # the slices partition the evaluated requests
    assert sl[sl["metric"] == "mrr"]["n"].sum() == res["mrr"].n


def test_slice_from_attributes_table_and_unknown_users_form_their_own_slice():
    run, lab = _data()
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(10)], "segment": ["a", "b"] * 5})  # u10, u11 unknown
    res = receval.evaluate(run, lab, ["hit@3"], by="segment", attributes=users, n_boot=100)
    sl = res.slices
    assert list(sl["segment"].isna()) == [False, False, True]  # null slice last
    assert int(sl["n"].sum()) == 60
    assert int(sl[sl["segment"].isna()]["n"].iloc[0]) == 10  # requests of u10 and u11: 5 each
    json.dumps(res.to_dict(), allow_nan=False)


def test_two_slice_columns_cross():
    run, lab = _data()
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(12)], "segment": ["a", "b", "c"] * 4})
    res = receval.evaluate(run, lab, ["mrr"], by=["country", "segment"], attributes=users, n_boot=50)
    assert len(res.slices) == len(res.slices[["country", "segment"]].drop_duplicates())
    assert int(res.slices["n"].sum()) == 60


def test_item_attribute_that_varies_within_a_request_is_refused():
    run, lab = _data()
    run["item_colour"] = np.where(run["item_id"] < "i4", "red", "blue")
    with pytest.raises(InputError) as err:
        receval.evaluate(run, lab, ["mrr"], by="item_colour")
    msg = str(err.value)
    assert "item_colour" in msg and "must be the same for every row of a request" in msg and "60 rows" in msg


def test_missing_slice_column_names_it():
    run, lab = _data()
    with pytest.raises(InputError, match="nope"):
        receval.evaluate(run, lab, ["mrr"], by="nope")


def test_cold_start_users():
    run, lab = _data()
    # u0 has 6 past interactions, u1 has 1, everyone else none; threshold 5
    history = pd.DataFrame({"user_id": ["u0"] * 6 + ["u1"]})
    res = receval.evaluate(run, lab, ["mrr"], cold_start={"history": history, "min_interactions": 5}, n_boot=50)
    sl = res.slices
    warm = sl[sl["cold_start_user"] == False]  # noqa: E712
    cold = sl[sl["cold_start_user"] == True]  # noqa: E712
    assert int(warm["n"].iloc[0]) == 5  # the five requests of u0
    assert int(cold["n"].iloc[0]) == 55


def test_cold_start_needs_history_and_valid_threshold():
    run, lab = _data()
    with pytest.raises(UsageError, match="history"):
        receval.evaluate(run, lab, ["mrr"], cold_start={"min_interactions": 5})
    with pytest.raises(UsageError, match="min_interactions"):
        receval.evaluate(run, lab, ["mrr"], cold_start={"history": pd.DataFrame({"user_id": ["u0"]}), "min_interactions": 0})


def test_attributes_with_duplicate_keys_are_refused():
    run, lab = _data()
    users = pd.DataFrame({"user_id": ["u0", "u0"], "segment": ["a", "b"]})
    with pytest.raises(InputError, match="each key must appear once"):
        receval.evaluate(run, lab, ["mrr"], by="segment", attributes=users)


def test_item_cold_start_cohorts_restrict_relevance_to_cold_or_warm_items():
    run, lab = _data()
    # items i0..i3 have 10 past interactions each (warm), i4..i7 none (cold); threshold 5
    history = pd.DataFrame({"item_id": [f"i{i}" for i in range(4) for _ in range(10)]})
    res = receval.evaluate(run, lab, ["ndcg@5", "mrr"], cold_start={"history": history, "min_interactions": 5, "cohort": "item"},
                           n_boot=50)
    assert res.slices is None  # cohort="item" adds no user slice
    coh = res.item_cohorts
    for cold, items in ((True, {"i4", "i5", "i6", "i7"}), (False, {"i0", "i1", "i2", "i3"})):
        subset = lab[lab["item_id"].isin(items)]
        alone = receval.evaluate(run, subset, ["ndcg@5", "mrr"], n_boot=50)
        for metric in ("ndcg@5", "mrr"):
            row = coh[(coh["cold_start_item"] == cold) & (coh["metric"] == metric)].iloc[0]
            assert row["mean"] == pytest.approx(alone[metric].mean, abs=1e-12)
            assert row["n"] == alone[metric].n == subset["request_id"].nunique()
            assert row["labels"] == len(subset)
    json.dumps(res.to_dict(), allow_nan=False)


def test_item_cohort_without_labels_in_a_cohort_reports_n_zero():
    run, lab = _data()
    history = pd.DataFrame({"item_id": [f"i{i}" for i in range(8) for _ in range(10)]})  # every item warm
    coh = receval.evaluate(run, lab, ["mrr"], cold_start={"history": history, "cohort": "item"}, n_boot=20).item_cohorts
    cold = coh[coh["cold_start_item"] == True].iloc[0]  # noqa: E712
    assert cold["n"] == 0 and cold["labels"] == 0 and np.isnan(cold["mean"])


def test_cold_start_option_errors():
    run, lab = _data()
    history = pd.DataFrame({"item_id": ["i0"]})
    with pytest.raises(UsageError, match="cohort must be"):
        receval.evaluate(run, lab, ["mrr"], cold_start={"history": history, "cohort": "items"})
    with pytest.raises(UsageError, match="unknown key"):
        receval.evaluate(run, lab, ["mrr"], cold_start={"history": history, "minimum": 3})
    run_with_labels = run.merge(lab, on=["request_id", "item_id"], how="left").fillna({"label": 0})
    with pytest.raises(UsageError, match="separate labels table"):
        receval.evaluate(run_with_labels, None, ["mrr"], cold_start={"history": history, "cohort": "item"})
