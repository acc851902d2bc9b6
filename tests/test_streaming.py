"""The streaming (out-of-core) engine gives the numbers of the in-memory engine.

Inputs are Parquet files or LazyFrames; small ``bucket_rows`` force the
hash-partitioned path (buckets written to disk by polars' streaming sink), so
the tests cover the code a larger-than-memory input takes.
"""

from __future__ import annotations

import math

import polars as pl
import pytest
from _engine_data import BEYOND, BEYOND_AT_K, CALIBRATION, RANKING, make_catalog, make_data
from hypothesis import given
from hypothesis import strategies as st

import receval
from receval.engines import streaming
from receval.errors import InputError, UsageError


@pytest.fixture
def small_buckets(monkeypatch):
    monkeypatch.setattr(streaming, "BUCKET_ROWS", 150)  # about 10 buckets for make_data's ~1,000 rows


def assert_same_result(local, other):
    assert other.counts == local.counts
    for name, a in local.summary.items():
        b = other.summary[name]
        assert math.isclose(b.mean, a.mean, rel_tol=0, abs_tol=1e-9), name
        assert (b.ci_low, b.ci_high) == (a.ci_low, a.ci_high), name
    assert other.per_request_polars().equals(local.per_request_polars())
    assert other.to_dict() == local.to_dict()


@pytest.mark.parametrize("id_type", ["str", "int"])
def test_every_supported_metric_equals_local(tmp_path, small_buckets, id_type):
    run, labels = make_data(3 if id_type == "str" else 4, id_type)
    path = tmp_path / "run.parquet"
    run.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(path)  # any row order on disk
    metrics = RANKING + CALIBRATION
    local = receval.evaluate(run, labels, metrics)
    assert_same_result(local, receval.evaluate(str(path), labels.lazy(), metrics, engine="streaming"))
    kwargs = dict(missing_in_run="ignore", missing_in_labels="zero", bootstrap="poisson", seed=3)
    assert_same_result(receval.evaluate(run, labels, metrics, **kwargs),
                       receval.evaluate(path, labels, metrics, engine="streaming", **kwargs))


@pytest.mark.parametrize("id_type", ["str", "int"])
def test_beyond_accuracy_metrics_equal_local(tmp_path, small_buckets, id_type):
    run, labels = make_data(5 if id_type == "str" else 6, id_type)
    catalog = make_catalog(run, 1)
    path = tmp_path / "run.parquet"
    run.sample(fraction=1.0, shuffle=True, seed=2).write_parquet(path)
    catalog.write_parquet(tmp_path / "catalog.parquet")
    metrics = ["ndcg@5"] + BEYOND
    local = receval.evaluate(run, labels, metrics, catalog=catalog)
    assert_same_result(local, receval.evaluate(str(path), labels.lazy(), metrics, catalog=str(tmp_path / "catalog.parquet"),
                                               engine="streaming"))
    kwargs = dict(missing_in_run="ignore", missing_in_labels="zero", seed=3)
    metrics = ["ndcg@5"] + BEYOND_AT_K  # the chunks send the top 10 items per request only
    assert_same_result(receval.evaluate(run, labels, metrics, catalog=catalog, **kwargs),
                       receval.evaluate(path, labels, metrics, catalog=catalog, engine="streaming", **kwargs))
    with pytest.raises(UsageError, match="need an item catalog"):
        receval.evaluate(path, labels, metrics, engine="streaming")


def test_one_bucket_and_many_buckets_agree(tmp_path, monkeypatch):
    run, labels = make_data(5, "str")
    parts = tmp_path / "run"
    parts.mkdir()
    for i, part in enumerate(run.sample(fraction=1.0, shuffle=True, seed=2).iter_slices(300)):
        part.write_parquet(parts / f"part-{i}.parquet")  # a directory of Parquet files
    metrics = ["ndcg@10", "map", "ece(bins=5)"]
    one = receval.evaluate(parts, labels, metrics, engine="streaming", by="country")
    assert_same_result(one, receval.evaluate(str(parts / "part-*.parquet"), labels, metrics, engine="streaming", by="country"))
    monkeypatch.setattr(streaming, "BUCKET_ROWS", 100)
    many = receval.evaluate(parts, labels, metrics, engine="streaming", by="country")
    assert_same_result(one, many)
    assert many.slices.equals(one.slices)
    assert_same_result(receval.evaluate(run, labels, metrics, by="country"), many)


def test_labels_from_the_run(small_buckets):
    run, labels = make_data(6, "int")
    impressions = run.join(labels, on=["request_id", "item_id"], how="left").with_columns(pl.col("label").fill_null(0.0))
    local = receval.evaluate(impressions, None, ["ndcg@10", "brier"])
    assert_same_result(local, receval.evaluate(impressions.lazy(), None, ["ndcg@10", "brier"], engine="streaming"))


def test_compare_equals_local(small_buckets):
    run, labels = make_data(7, "str")
    cand = run.with_columns(score=pl.col("score").reverse().over("request_id"))
    local = receval.compare({"a": run, "b": cand}, labels, ["ndcg@10", "mrr"], unit="user", missing_in_run="ignore")
    other = receval.compare({"a": run.lazy(), "b": cand.lazy()}, labels, ["ndcg@10", "mrr"], unit="user",
                            missing_in_run="ignore", engine="streaming")
    assert other.to_dict() == local.to_dict()


def _bad_cases():
    run, labels = make_data(8, "str", n_requests=12)
    row = pl.int_range(pl.len())
    return {
        "null-item-id": (run.with_columns(pl.when(row == 1).then(None).otherwise(pl.col("item_id")).alias("item_id")), labels, ["ndcg"]),
        "nan-score": (run.with_columns(pl.when(row < 2).then(float("nan")).otherwise(pl.col("score")).alias("score")), labels, ["ndcg"]),
        "non-finite-label": (run, labels.with_columns(pl.when(row == 0).then(float("-inf")).otherwise(pl.col("label")).alias("label")), ["ndcg"]),
        "missing-column": (run.drop("item_id"), labels, ["ndcg"]),
        "float-request-ids": (run.with_columns(row.cast(pl.Float64).alias("request_id")), labels, ["ndcg"]),
        "duplicate-run-rows": (pl.concat([run, run.head(2)]), labels, ["ndcg"]),
        "duplicate-label-rows": (run, pl.concat([labels, labels.head(2)]), ["ndcg"]),
        "prediction-out-of-range": (run.with_columns(pl.when(row == 4).then(-0.5).otherwise(pl.col("prediction")).alias("prediction")), labels, ["ece"]),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_gets_the_local_error(small_buckets, case):
    run, labels, metrics = _bad_cases()[case]
    with pytest.raises(InputError) as local:
        receval.evaluate(run, labels, metrics)
    with pytest.raises(InputError) as other:
        receval.evaluate(run.lazy(), labels.lazy(), metrics, engine="streaming")
    describe = [(v.column, v.rule, v.n_rows) for v in local.value.violations]
    assert local.value.frame == other.value.frame
    assert [(v.column, v.rule, v.n_rows) for v in other.value.violations] == describe


def test_unsupported_metric_and_engine_names():
    run, labels = make_data(9, "str", n_requests=4)
    with pytest.raises(UsageError, match="not available on the streaming engine"):
        receval.evaluate(run.lazy(), labels, ["ndcg", "ece(strategy=quantile)"], engine="streaming")
    with pytest.raises(UsageError, match="engine must be one of"):
        receval.evaluate(run, labels, ["ndcg"], engine="dask")


def test_a_run_grouped_by_request_is_sliced_not_rewritten(tmp_path, monkeypatch):
    run, labels = make_data(10, "int")
    # grouped by request (rows of a request together) but requests in no particular order
    order = run.select(pl.col("request_id").unique().shuffle(seed=3).alias("request_id")).with_row_index("__o")
    grouped = run.join(order, on="request_id").sort("__o", "item_id", descending=[False, True]).drop("__o")
    grouped.write_parquet(tmp_path / "run.parquet", row_group_size=100)
    monkeypatch.setattr(streaming, "BUCKET_ROWS", max(labels.height, run.height // 4))

    def no_rewrite(*args, **kwargs):
        raise AssertionError("a grouped run must not be partitioned to disk")

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", no_rewrite)
    metrics = RANKING + CALIBRATION
    other = receval.evaluate(tmp_path / "run.parquet", labels, metrics, engine="streaming")
    assert_same_result(receval.evaluate(run, labels, metrics), other)


def test_a_request_split_across_the_file_is_not_cut_into_ranges(tmp_path, monkeypatch):
    run, labels = make_data(12, "int")
    sizes = run.group_by("request_id", maintain_order=True).len()
    first = sizes.filter(pl.col("len") >= 2)["request_id"][0]
    run = pl.concat([run.filter(pl.col("request_id") == first), run.filter(pl.col("request_id") != first)])
    # grouped, except that all but one row of the first request come last: grouped at the start, not overall
    head_rows = run.filter(pl.col("request_id") == first)
    split = pl.concat([head_rows.head(1), run.filter(pl.col("request_id") != first), head_rows.tail(head_rows.height - 1)])
    assert split.height == run.height
    split.write_parquet(tmp_path / "run.parquet")
    monkeypatch.setattr(streaming, "BUCKET_ROWS", max(labels.height, run.height // 3))
    sinks = []
    original = pl.LazyFrame.sink_parquet

    def counting_sink(self, *args, **kwargs):
        sinks.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", counting_sink)
    metrics = ["ndcg@10", "map", "brier"]
    other = receval.evaluate(tmp_path / "run.parquet", labels, metrics, engine="streaming")
    assert sinks  # partitioned to disk: a range of rows would have split the request
    assert_same_result(receval.evaluate(run.sort("request_id", "item_id"), labels, metrics), other)


_ITEMS = ["B", "a", "b10", "b9", "é", "z"]
_request = st.tuples(
    st.dictionaries(st.sampled_from(_ITEMS), st.integers(-2, 4).map(lambda i: i / 2), min_size=0, max_size=6),
    st.dictionaries(st.sampled_from(_ITEMS), st.integers(-1, 3).map(float), min_size=0, max_size=4),
)


@pytest.mark.filterwarnings("ignore::receval.errors.CoverageWarning")  # runs missing most judged requests are drawn
@given(requests=st.lists(_request, min_size=1, max_size=8), bucket_rows=st.integers(1, 12))
def test_any_small_input_gives_the_in_memory_result(requests, bucket_rows):
    run = pl.DataFrame(
        [(f"q{i}", item, s) for i, (scored, _) in enumerate(requests) for item, s in scored.items()],
        schema={"request_id": pl.String, "item_id": pl.String, "score": pl.Float64}, orient="row",
    )
    labels = pl.DataFrame(
        [(f"q{i}", item, g) for i, (_, judged) in enumerate(requests) for item, g in judged.items()],
        schema={"request_id": pl.String, "item_id": pl.String, "label": pl.Float64}, orient="row",
    )
    metrics = ["ndcg@3", "map", "mrr", "auc(ties=average)", "r_precision"]
    try:
        local = receval.evaluate(run.sort("request_id", "item_id"), labels.sort("request_id", "item_id"), metrics, n_boot=50)
    except InputError as err:  # nothing evaluable: the same error
        with pytest.raises(InputError) as other:
            receval.evaluate(run.lazy(), labels.lazy(), metrics, engine="streaming", n_boot=50)
        assert [(v.column, v.rule) for v in other.value.violations] == [(v.column, v.rule) for v in err.violations]
        return
    from receval.engines.streaming import score_streaming
    from receval.evaluation import summarise
    from receval.metrics.registry import parse_metrics

    parsed = parse_metrics(metrics)
    scored = score_streaming(run.lazy(), labels.lazy(), parsed, bucket_rows=bucket_rows)
    summary, _ = summarise(scored, level=0.95, n_boot=50, seed=0, bootstrap="auto")
    assert scored.counts == local.counts
    assert scored.request_ids.to_list() == local.per_request_polars()["request_id"].to_list()
    for m in parsed:
        assert scored.stats[m].per_unit.tolist() == local.per_request_polars()[str(m)].to_list()
        assert summary[str(m)] == local.summary[str(m)]
