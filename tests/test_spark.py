"""The Spark engine gives the numbers of the in-memory engine (local-mode Spark).

One SparkSession (``local[2]``, 4 shuffle partitions, no UI) serves the whole
test session. The inputs are random, with ties, text ids whose byte order
matters, and requests missing from the run or the labels. Per-request values
must be identical, means within 1e-9, and intervals *identical* for the same
seed: only per-request vectors come back to the driver, which runs the same
bootstrap code as locally. Bad input gets the same InputError as locally.
"""

from __future__ import annotations

import math
import os
import shutil
import sys

import numpy as np
import polars as pl
import pytest
from _engine_data import BEYOND, BEYOND_AT_K, CALIBRATION, RANKING, make_catalog, make_data

import receval
from receval.errors import InputError, UsageError


def _java_available() -> bool:
    home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(home and os.path.exists(os.path.join(home, "bin", "java")))


pytestmark = pytest.mark.skipif(
    not _java_available(), reason="no Java runtime (java on PATH or JAVA_HOME): Spark needs a JVM (Java 17)"
)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (receval, numpy and polars importable)
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("receval-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
        # a short-lived test JVM: the quick C1 compiler only, no adaptive re-planning of tiny jobs
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .config("spark.sql.adaptive.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if previous is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = previous


def sdf(spark, frame: pl.DataFrame, seed: int = 0, partitions: int = 3):
    """A Spark DataFrame of ``frame`` with its rows shuffled over ``partitions`` partitions."""
    import pyarrow as pa

    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed) if frame.height else frame
    table = shuffled.to_arrow()
    table = table.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema]))
    return spark.createDataFrame(table).repartition(partitions)


def assert_same_result(local, remote):
    assert remote.counts == local.counts
    assert list(remote.summary) == list(local.summary)
    for name, a in local.summary.items():
        b = remote.summary[name]
        assert b.n == a.n
        assert math.isclose(b.mean, a.mean, rel_tol=0, abs_tol=1e-9), name
        # identical, not close: the same per-request vectors meet the same bootstrap
        assert (b.ci_low, b.ci_high) == (a.ci_low, a.ci_high) or (math.isnan(a.ci_low) and math.isnan(b.ci_low)), name
    pa_, pb = local.per_request_polars(), remote.per_request_polars()
    assert pb.columns == pa_.columns
    assert pb.equals(pa_)
    assert remote.to_dict() == local.to_dict()


@pytest.mark.parametrize("id_type", ["str", "int"])
def test_every_supported_metric_equals_local(spark, id_type):
    run, labels = make_data(11 if id_type == "str" else 12, id_type)
    metrics = RANKING + CALIBRATION
    local = receval.evaluate(run, labels, metrics)
    remote = receval.evaluate(sdf(spark, run, seed=1), sdf(spark, labels, seed=2), metrics)
    assert local.counts["labels_only_scored_zero"] == 2 and local.counts["run_only_ignored"] >= 3  # the data has both
    assert_same_result(local, remote)
    # other missing-request policies, Poisson weights, another seed; labels stay local
    kwargs = dict(missing_in_run="ignore", missing_in_labels="zero", bootstrap="poisson", seed=7, n_boot=300)
    assert_same_result(receval.evaluate(run, labels, metrics, **kwargs),
                       receval.evaluate(sdf(spark, run, seed=3), labels, metrics, **kwargs))


def test_results_do_not_depend_on_partitioning(spark, monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(21, "str")
    metrics = ["ndcg@10", "map", "brier", "ece(bins=4)"]
    local = receval.evaluate(run, labels, metrics, by="country")
    # tiny kernel chunks inside each partition, other shuffle partitions, other input layout
    monkeypatch.setattr(engine, "CHUNK_ROWS", 40)
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        remote = receval.evaluate(sdf(spark, run, seed=9, partitions=5), sdf(spark, labels, seed=4, partitions=1),
                                  metrics, by="country")
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    assert_same_result(local, remote)
    assert remote.slices.equals(local.slices)


def test_text_ids_break_ties_in_byte_order(spark):
    # every score tied: the ranking is item id descending in byte order: é, b9, b10, a, B
    run = pl.DataFrame({"request_id": ["q1"] * 5 + ["q2"] * 5, "item_id": ["B", "a", "b10", "b9", "é"] * 2, "score": [1.0] * 10})
    labels = pl.DataFrame({"request_id": ["q1", "q2"], "item_id": ["é", "B"], "label": [1.0, 1.0]})
    remote = receval.evaluate(sdf(spark, run), sdf(spark, labels), ["mrr", "ndcg"])
    per = remote.per_request_polars().sort("request_id")
    assert per["mrr"].to_list() == [1.0, 0.2]
    assert per["ndcg"].to_list() == [1.0, 1.0 / math.log2(6.0)]


def test_local_frames_on_spark_with_integer_and_text_ids(spark):
    # engine="spark" sends local frames to the active session; ids are compared as text
    # when one side has text ids (TREC qrels), as locally
    run, labels = make_data(71, "int", n_requests=20)
    labels = labels.with_columns(pl.col("request_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    metrics = ["ndcg@10", "map", "auc"]
    remote = receval.evaluate(run, labels, metrics, engine="spark")
    # requests are then ordered by their text, so the in-memory run is ordered that way too
    local = receval.evaluate(run.sort(pl.col("request_id").cast(pl.String)), labels.sort("request_id"), metrics)
    assert_same_result(local, remote)


def test_compare_equals_local(spark):
    run, labels = make_data(31, "int")
    rng = np.random.default_rng(3)
    cand = run.with_columns(score=pl.col("score") + pl.Series(np.round(rng.normal(0, 0.3, run.height), 1)))
    metrics = ["ndcg@10", "mrr", "brier"]
    kwargs = dict(unit="user", margin=0.02, n_boot=400, missing_in_run="ignore")
    local = receval.compare({"prod": run, "cand": cand}, labels, metrics, **kwargs)
    remote = receval.compare({"prod": sdf(spark, run, seed=5), "cand": sdf(spark, cand, seed=6)}, sdf(spark, labels), metrics, **kwargs)
    assert remote.counts == local.counts
    assert remote.to_dict() == local.to_dict()
    assert {r.metric for r in remote.rows} == {"ndcg@10", "mrr", "brier"}


def test_paths_read_by_spark_with_a_column_mapping(spark, tmp_path):
    run, labels = make_data(41, "str")
    run.rename({"request_id": "qid", "item_id": "docno"}).write_parquet(tmp_path / "run.parquet")
    labels.rename({"request_id": "qid", "item_id": "docno", "label": "rel"}).write_parquet(tmp_path / "labels.parquet")
    metrics = ["ndcg@10", "recall@10"]
    local = receval.evaluate(run, labels, metrics)
    remote = receval.evaluate(str(tmp_path / "run.parquet"), str(tmp_path / "labels.parquet"), metrics, engine="spark",
                              columns={"request_id": "qid", "item_id": "docno"},
                              label_columns={"request_id": "qid", "item_id": "docno", "label": "rel"})
    assert_same_result(local, remote)


def _bad_cases():
    run, labels = make_data(51, "str", n_requests=12)
    first = run["request_id"][0]
    return {
        "null-request-id": (run.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("request_id")).alias("request_id")), labels, ["ndcg"]),
        "nan-and-null-score": (run.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(float("nan"))
                                                .when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("score")).alias("score")), labels, ["ndcg"]),
        "non-finite-label": (run, labels.with_columns(pl.when(pl.int_range(pl.len()) < 2).then(float("inf"))
                                                      .when(pl.int_range(pl.len()) == 4).then(float("nan")).otherwise(pl.col("label")).alias("label")), ["ndcg"]),
        "missing-column": (run.drop("score"), labels, ["ndcg"]),
        "float-item-ids": (run.with_columns(pl.int_range(pl.len()).cast(pl.Float64).alias("item_id")), labels, ["ndcg"]),
        "text-score": (run.with_columns(pl.col("score").cast(pl.String)), labels, ["ndcg"]),
        "duplicate-run-rows": (pl.concat([run, run.head(4)]), labels, ["ndcg", "map"]),
        "duplicate-label-rows": (run, pl.concat([labels, labels.head(3)]), ["ndcg"]),
        "prediction-out-of-range": (run.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(1.5).otherwise(pl.col("prediction")).alias("prediction")), labels, ["brier"]),
        "user-varies-within-request": (run.with_columns(pl.when((pl.col("request_id") == first) & (pl.int_range(pl.len()) == 0))
                                                        .then(pl.lit("other")).otherwise(pl.col("user_id")).alias("user_id")), labels, ["ndcg"]),
        "no-evaluable-request": (run, labels.with_columns(pl.lit("nope").alias("request_id")).unique(["request_id", "item_id"]), ["ndcg"]),
    }


def _describe(err: InputError):
    return err.frame, [(v.column, v.rule, v.n_rows) for v in err.violations]


# found only by the kernel job, which sees whole requests; every other violation
# is raised from the schema or the aggregation job, before the kernel job starts
_FOUND_BY_THE_KERNEL = {"duplicate-run-rows", "duplicate-label-rows", "user-varies-within-request", "no-evaluable-request"}


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_gets_the_local_error(spark, case, monkeypatch):
    from receval.engines import spark as engine

    run, labels, metrics = _bad_cases()[case]
    kwargs = {"missing_in_run": "ignore"} if case == "no-evaluable-request" else {}
    with pytest.raises(InputError) as local:
        receval.evaluate(run, labels, metrics, **kwargs)
    if case not in _FOUND_BY_THE_KERNEL:
        def kernel_job(*args):
            raise AssertionError("the kernel job started before the input was checked")

        monkeypatch.setattr(engine, "_collect_arrow", kernel_job)
    with pytest.raises(InputError) as remote:
        receval.evaluate(sdf(spark, run), sdf(spark, labels), metrics, **kwargs)
    assert _describe(remote.value) == _describe(local.value)
    assert all(v.examples for v in remote.value.violations if v.rule != "required column is missing"
               and "evaluable" not in v.rule)


QUANTILE = ["ece(strategy=quantile)", "mce(strategy=quantile,bins=4)", "ece(strategy=quantile,bins=7,min_label=2)",
            "mce(strategy=quantile,bins=3000)", "ece(bins=4)"]


@pytest.mark.parametrize("policies", [{}, {"missing_in_run": "ignore", "missing_in_labels": "zero"}])
def test_quantile_calibration_equals_local(spark, policies):
    # edges from the predictions of every evaluated request's rows: with missing_in_labels="ignore"
    # the run requests without labels are left out of the quantiles, with "zero" they count
    run, labels = make_data(13, "str")
    local = receval.evaluate(run, labels, QUANTILE, **policies)
    remote = receval.evaluate(sdf(spark, run, seed=1), sdf(spark, labels, seed=2), QUANTILE, **policies)
    assert local.counts["run_only_ignored" if not policies else "run_only_scored_zero"] >= 3
    assert_same_result(local, remote)  # to_dict(): the reliability tables (edges, counts) too
    # more bins than rows (distinct predictions: interpolated edges between consecutive ones, none repeated)
    rel = remote.to_dict()["details"]["mce(bins=3000,strategy=quantile)"]["reliability"]
    assert len(rel) == 3000 > local.counts["run_rows"]
    assert len(remote.to_dict()["details"]["ece(strategy=quantile)"]["reliability"]) == 15


def test_quantile_edges_from_the_evaluated_rows_only(spark):
    # a run-only request whose predictions are all 0.99: it moves the edges when it is evaluated
    run = pl.DataFrame({"request_id": [1, 1, 2, 2, 3, 3, 3], "item_id": [1, 2, 1, 2, 1, 2, 3],
                        "score": [1.0, 0.5, 1.0, 0.2, 1.0, 0.9, 0.8],
                        "prediction": [0.1, 0.4, 0.2, 0.3, 0.99, 0.99, 0.99]})
    labels = pl.DataFrame({"request_id": [1, 2], "item_id": [1, 2], "label": [1.0, 1.0]})
    metric = ["ece(strategy=quantile,bins=2)"]
    edges = {}
    for policy in ("ignore", "zero"):
        local = receval.evaluate(run, labels, metric, missing_in_labels=policy)
        remote = receval.evaluate(sdf(spark, run), sdf(spark, labels), metric, missing_in_labels=policy)
        assert_same_result(local, remote)
        rel = remote.to_dict()["details"]["ece(bins=2,strategy=quantile)"]["reliability"]
        edges[policy] = [r["lower"] for r in rel] + [rel[-1]["upper"]]
    # hand-computed: quantiles at 0, 1/2, 1 of {0.1, 0.2, 0.3, 0.4} and of those and 3 x 0.99
    assert edges["ignore"] == [0.1, 0.2 + 0.5 * (0.3 - 0.2), 0.4]
    assert edges["zero"] == [0.1, 0.4, 0.99]


@pytest.mark.parametrize("collect", [50_000, 5])
def test_quantile_edges_with_ties_and_few_distinct_predictions(spark, monkeypatch, collect):
    from receval.engines import spark_ope

    # collect=5: the order statistics come from the bracketing path (approximate pass, counts, brackets)
    monkeypatch.setattr(spark_ope, "EXACT_QUANTILE_COLLECT", collect)
    run, labels = make_data(14, "int", n_requests=40)
    coarse = run.with_columns(pl.col("prediction").round(1))  # 11 distinct values: many repeated edges
    metrics = ["ece(strategy=quantile,bins=30)", "mce(strategy=quantile,bins=8)"]
    if collect > 5:  # more bins than rows, with ties (the bracketing path would take a pass per 64 ranks)
        metrics.append("ece(strategy=quantile,bins=5000)")
    local = receval.evaluate(coarse, labels, metrics)
    remote = receval.evaluate(sdf(spark, coarse, seed=4), sdf(spark, labels, seed=5), metrics)
    assert_same_result(local, remote)
    details = remote.to_dict()["details"]
    assert len(details["ece(bins=30,strategy=quantile)"]["reliability"]) < 12  # collapsed
    # one distinct prediction: one bin [p, p]
    flat = run.with_columns(pl.lit(0.25).alias("prediction"))
    local = receval.evaluate(flat, labels, metrics[:1])
    remote = receval.evaluate(sdf(spark, flat, seed=6), sdf(spark, labels, seed=7), metrics[:1])
    assert_same_result(local, remote)
    rel = remote.to_dict()["details"]["ece(bins=30,strategy=quantile)"]["reliability"]
    assert [(r["lower"], r["upper"]) for r in rel] == [(0.25, 0.25)]


def test_beyond_list_covers_the_registry():
    from receval.metrics.registry import REGISTRY, parse_metric

    assert {parse_metric(m).name for m in BEYOND} == {s.name for s in REGISTRY.values() if s.kind == "beyond"}
    assert {parse_metric(m).k is None for m in BEYOND} == {True, False}  # cutoffs and whole lists


@pytest.mark.parametrize("id_type", ["str", "int"])
def test_beyond_accuracy_metrics_equal_local(spark, id_type, monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(81 if id_type == "str" else 82, id_type)
    catalog = make_catalog(run, 3)
    metrics = ["ndcg@5", "brier"] + BEYOND
    local = receval.evaluate(run, labels, metrics, catalog=catalog, by="country")
    assert local.counts["labels_only_scored_zero"] == 2 and local.counts["run_only_ignored"] >= 3
    # the catalog as a local frame, then as a shuffled Spark frame (read in item-id order); slices too
    remote = receval.evaluate(sdf(spark, run, seed=1), sdf(spark, labels, seed=2), metrics, catalog=catalog, by="country")
    assert_same_result(local, remote)
    assert remote.slices.equals(local.slices)
    kwargs = dict(missing_in_run="ignore", missing_in_labels="zero", bootstrap="poisson", seed=7, n_boot=300)
    monkeypatch.setattr(engine, "CHUNK_ROWS", 40)  # many request-complete chunks per partition
    metrics = ["ndcg@5"] + BEYOND_AT_K  # the kernel sends the top 10 items per request only
    remote = receval.evaluate(sdf(spark, run, seed=3, partitions=4), labels, metrics,
                              catalog=sdf(spark, catalog.rename({"popularity": "pop"}), seed=4), catalog_columns={"popularity": "pop"},
                              **kwargs)
    assert_same_result(receval.evaluate(run, labels, metrics, catalog=catalog, **kwargs), remote)
    assert remote.per_request_polars()["novelty@5"].null_count() == 0  # per-request values are there


def test_beyond_accuracy_metrics_in_compare_and_disparity_equal_local(spark):
    from receval.audits.disparity import disparity_audit

    run, labels = make_data(84, "int", n_requests=30)
    catalog = make_catalog(run, 5)
    cand = run.with_columns(score=-pl.col("score"))
    metrics = ["ndcg@5", "novelty@5", "diversity@5", "coverage@5"]
    local = receval.compare({"a": run, "b": cand}, labels, metrics, catalog=catalog, n_boot=300)
    remote = receval.compare({"a": sdf(spark, run), "b": sdf(spark, cand)}, sdf(spark, labels), metrics,
                             catalog=sdf(spark, catalog), n_boot=300)
    assert remote.to_dict() == local.to_dict()
    per_request = ["ndcg@5", "novelty@5", "diversity@5"]
    local = disparity_audit(run, labels, per_request, sensitive=["country"], catalog=catalog, unit="request", n_boot=300)
    remote = disparity_audit(sdf(spark, run), sdf(spark, labels), per_request, sensitive=["country"], catalog=catalog,
                             unit="request", n_boot=300)
    assert remote.to_dict() == local.to_dict()


def test_beyond_accuracy_errors_equal_local(spark, monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(83, "str", n_requests=15)
    catalog = make_catalog(run, 4)
    metrics = ["ndcg", "novelty@3", "coverage"]
    # no catalog: the local UsageError, before any Spark job
    with pytest.raises(UsageError) as local:
        receval.evaluate(run, labels, metrics)

    def no_job(*args):
        raise AssertionError("a Spark job ran")

    with monkeypatch.context() as m:
        m.setattr(engine, "_collect_arrow", no_job)
        m.setattr(engine, "_check_values", no_job)
        with pytest.raises(UsageError) as remote:
            receval.evaluate(sdf(spark, run), labels, metrics)
    assert str(remote.value) == str(local.value)
    shown = run.sort("score", descending=True).group_by("request_id").head(3)["item_id"].unique()
    bad_catalogs = {
        "item-not-in-catalog": catalog.filter(pl.col("item_id") != shown[0]),
        "duplicate-catalog-item": pl.concat([catalog, catalog.head(2)]).sort("item_id"),  # a Spark catalog is read in id order
        "negative-popularity": catalog.with_columns(popularity=pl.col("popularity") - 100.0),
    }
    for case, bad in bad_catalogs.items():
        with pytest.raises(InputError) as local:
            receval.evaluate(run, labels, metrics, catalog=bad)
        with pytest.raises(InputError) as remote:
            receval.evaluate(sdf(spark, run), sdf(spark, labels), metrics, catalog=sdf(spark, bad))
        assert _describe(remote.value) == _describe(local.value), case
        assert [v.examples for v in remote.value.violations] == [v.examples for v in local.value.violations], case
