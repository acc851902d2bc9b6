"""The audits on Spark give the local audits' results (local-mode Spark).

Same random inputs as the engine tests (ties, text ids in byte order,
requests missing from the run or the labels), plus attribute tables with null
values and users without a row. Results must be *equal* (``to_dict()``: every
value, interval, count and suppressed group), not just close: only
per-request vectors come back to the driver, which runs the local statistics
code. Bad input gets the local InputError, from the schema or the aggregation
job when the local audit finds it there, before the shuffle.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from _engine_data import make_data
from test_spark import _java_available, spark  # noqa: F401  (the session-wide local Spark fixture)
from test_spark import sdf as _sdf

from receval.audits.disparity import MISSING_GROUP, calibration_audit, disparity_audit
from receval.audits.exposure import exposure_audit
from receval.audits.miscalibration import miscalibration_audit
from receval.audits.popularity import popularity_bias_audit
from receval.audits.safety import safety_audit
from receval.errors import InputError, UsageError

pytestmark = [
    pytest.mark.skipif(not _java_available(),
                       reason="no Java runtime (java on PATH or JAVA_HOME): Spark needs a JVM (Java 17)"),
    pytest.mark.usefixtures("spark"),
]


def sdf(frame: pl.DataFrame, seed: int = 0, partitions: int = 3):
    """``frame`` as a Spark DataFrame of the test session, rows shuffled over ``partitions`` partitions."""
    from pyspark.sql import SparkSession

    return _sdf(SparkSession.getActiveSession(), frame, seed=seed, partitions=partitions)


def _user_data(seed: int):
    """(run, labels, attributes, users): a per-user run column ``plan``; attributes keyed by user with
    nulls and missing users; ``users`` gives the user of the requests judged but not ranked."""
    run, labels = make_data(seed, "str")
    run = run.with_columns(plan=pl.when(pl.col("user_id").str.slice(1).cast(pl.Int64) % 4 == 0).then(pl.lit("pro"))
                           .otherwise(pl.lit("free")))
    users = sorted(run["user_id"].unique().to_list())
    rng = np.random.default_rng(seed)
    attrs = pl.DataFrame({
        "user_id": users,
        "age": [None if r < 0.2 else ("young" if r < 0.6 else "old") for r in rng.random(len(users))],
        "segment": rng.choice(["a", "b", "c"], len(users)).tolist(),
    }).head(len(users) - 2)  # two users without an attribute row
    judged_only = labels.join(run, on="request_id", how="anti")["request_id"].unique().sort()
    users_table = pl.DataFrame({"request_id": judged_only, "user_id": [users[0], "u_new"][: judged_only.len()]})
    return run, labels, attrs, users_table


def _assert_equal(local, remote):
    assert remote.to_dict() == local.to_dict()


def test_disparity_and_calibration_equal_local():
    run, labels, attrs, users = _user_data(11)
    kw = dict(sensitive=["age", "segment", "plan"], intersections=True, n_boot=200, min_group_size=4)
    local = disparity_audit(run, labels, ["ndcg@10", "mrr", "recall@5"], attributes=attrs, users=users, **kw)
    remote = disparity_audit(sdf(run, seed=1), sdf(labels, seed=2), ["ndcg@10", "mrr", "recall@5"],
                             attributes=sdf(attrs), users=sdf(users), **kw)
    # the data has what the test is about: missing attribute values, suppressed groups, judged-only requests
    age = local.attribute("age")
    assert age.n_missing > 0 and any(m.suppressed for m in local.attribute(("age", "segment")).metrics.values())
    assert local.counts["requests_user_from_users_table"] > 0
    _assert_equal(local, remote)

    kw = dict(sensitive=["country"], unit="request", n_boot=150, min_group_size=3, seed=5)
    local = calibration_audit(run, labels, metrics=["ece(bins=5)", "brier"], reliability=True, **kw)
    remote = calibration_audit(sdf(run, seed=3), labels, metrics=["ece(bins=5)", "brier"], reliability=True, **kw)
    _assert_equal(local, remote)
    assert remote.reliability == local.reliability


def test_calibration_audit_with_quantile_bins_equals_local():
    # quantile edges from the whole sample (every evaluated row), then every group binned alike
    run, labels, _, _ = _user_data(13)
    metrics = ["ece(strategy=quantile,bins=6)", "mce(strategy=quantile)"]
    kw = dict(sensitive=["country"], unit="request", n_boot=150, min_group_size=3, seed=2)
    local = calibration_audit(run, labels, metrics=metrics, reliability=True, **kw)
    remote = calibration_audit(sdf(run, seed=4), sdf(labels, seed=5), metrics=metrics, reliability=True, **kw)
    _assert_equal(local, remote)
    assert remote.reliability == local.reliability


def test_disparity_with_integer_ids_and_missing_group():
    run, labels = make_data(12, "int")
    attrs = pl.DataFrame({"request_id": run["request_id"].unique().sort()}).with_columns(
        band=pl.when(pl.col("request_id") % 3 == 0).then(None).otherwise((pl.col("request_id") % 2).cast(pl.String)))
    kw = dict(sensitive=["band"], unit="request", n_boot=100, min_group_size=2, missing_in_run="ignore")
    local = disparity_audit(run, labels, ["ndcg", "map@10"], attributes=attrs, **kw)
    remote = disparity_audit(sdf(run), sdf(labels), ["ndcg", "map@10"], attributes=sdf(attrs), **kw)
    assert MISSING_GROUP in [g.group for g in local["band", "ndcg"].groups]
    _assert_equal(local, remote)


def _item_tables(run: pl.DataFrame, labels: pl.DataFrame, seed: int) -> pl.DataFrame:
    items = pl.concat([run["item_id"], labels["item_id"]]).unique().sort()
    rng = np.random.default_rng(seed)
    pop = rng.integers(0, 60, len(items)).astype(float)
    pop[rng.random(len(items)) < 0.3] = 3.0  # ties at the tail threshold
    return pl.DataFrame({"item_id": items, "popularity": pop, "flagged": rng.random(len(items)) < 0.3})


def _groups(run: pl.DataFrame) -> pl.DataFrame:
    users = sorted(run["user_id"].unique().to_list())
    return pl.DataFrame({"user_id": users[:-2], "g": [None if i % 5 == 0 else f"g{i % 3}" for i in range(len(users) - 2)]})


@pytest.mark.parametrize("id_type", ["str", "int"])
def test_popularity_and_safety_equal_local(id_type, monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(21 if id_type == "str" else 22, id_type)
    run = run.filter(pl.col("score").is_finite())  # the audits refuse infinite scores
    table = _item_tables(run, labels, 3)
    groups = _groups(run)
    monkeypatch.setattr(engine, "CHUNK_ROWS", 50)  # several request-complete chunks per partition
    kw = dict(user_groups=groups, group_column="g", n_boot=150, min_group_size=12)
    local = popularity_bias_audit(run, table, labels=labels, **kw)
    remote = popularity_bias_audit(sdf(run, seed=4), sdf(table), labels=sdf(labels, seed=5),
                                   **{**kw, "user_groups": sdf(groups)})
    assert local.counts["n_head_items"] > 0 and local.counts["n_tail_items"] > 0
    assert any(g.suppressed for g in local.groups) and any(not g.suppressed for g in local.groups)
    _assert_equal(local, remote)

    kw = dict(user_groups=groups, group_column="g", n_boot=150, min_group_size=12, k=5, seed=9)
    local = safety_audit(run, table, labels=labels, negative_label=0, **kw)
    remote = safety_audit(sdf(run, seed=6), table, labels=sdf(labels), negative_label=0, **kw)
    assert local.counts["n_negative_shown"] > 0
    _assert_equal(local, remote)


def _providers(run: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    items = pl.concat([run["item_id"], labels["item_id"]]).unique().sort()
    return pl.DataFrame({"item_id": items,
                         "provider": [None if i % 11 == 0 else f"p{i % 4}" for i in range(len(items))]})


@pytest.mark.parametrize("id_type", ["str", "int"])
def test_exposure_equals_local(id_type, monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(61 if id_type == "str" else 62, id_type)
    run = run.filter(pl.col("score").is_finite())  # the audits refuse infinite scores
    groups = _providers(run, labels)
    monkeypatch.setattr(engine, "CHUNK_ROWS", 50)  # several request-complete chunks per partition
    cases = [
        dict(k=5, n_boot=120, min_group_size=3),
        dict(k=None, browsing="cascade", labels=labels, target="merit", n_boot=80, seed=3, min_group_size=14),
    ]
    for kw in cases:
        local = exposure_audit(run, groups, group_column="provider", **kw)
        remote = exposure_audit(sdf(run, seed=7), sdf(groups), group_column="provider",
                                **{**kw, **({"labels": sdf(labels, seed=8)} if "labels" in kw else {})})
        assert any(g.suppressed for g in local.groups) == (kw["min_group_size"] > 3)
        _assert_equal(local, remote)


def test_exposure_of_sampled_rankings_equals_local():
    run, labels = make_data(63, "str", n_requests=30)
    run = run.filter(pl.col("score").is_finite())
    rng = np.random.default_rng(0)
    # three sampled rankings per request: the same items, scores redrawn
    sampled = pl.concat([run.with_columns(score=pl.Series(rng.random(run.height)), sample_id=pl.lit(s, dtype=pl.Int64))
                         for s in range(3)])
    groups = _providers(run, labels)
    local = exposure_audit(sampled, groups, group_column="provider", k=4, n_boot=60, min_group_size=2)
    remote = exposure_audit(sdf(sampled, seed=2), groups, group_column="provider", k=4, n_boot=60, min_group_size=2)
    assert local.counts["n_samples_max"] == 3 and local.to_dict()["expected_exposure"]["ee_l"]["value"] > 0
    _assert_equal(local, remote)


@pytest.mark.parametrize("case", ["null-score", "duplicate-run-rows", "items-missing-from-the-catalog"])
def test_exposure_bad_input_gets_the_local_error(case, monkeypatch):
    from receval.engines import spark as engine

    _, cases = _bad_cases()
    run, labels = cases[case]
    groups = _providers(run.filter(pl.col("score").is_not_null()), labels)
    if case == "items-missing-from-the-catalog":
        groups = groups.filter(~pl.col("item_id").is_in(["d7", "a", "d12"]))
    with pytest.raises(InputError) as local:
        exposure_audit(run, groups, group_column="provider", n_boot=10)
    if case == "null-score":
        def kernel_job(*args):
            raise AssertionError("the kernel job started before the input was checked")

        monkeypatch.setattr(engine, "_collect_arrow", kernel_job)
    with pytest.raises(InputError) as remote:
        exposure_audit(sdf(run), groups, group_column="provider", n_boot=10)
    assert _describe(remote.value) == _describe(local.value)


def test_paths_read_by_spark_and_text_labels_for_integer_ids(tmp_path):
    run, labels = make_data(23, "int", n_requests=25)
    run = run.filter(pl.col("score").is_finite())
    table = _item_tables(run, labels, 4)
    run.write_parquet(tmp_path / "run.parquet")
    local = safety_audit(run, table, k=None, n_boot=50)
    remote = safety_audit(str(tmp_path / "run.parquet"), table, k=None, n_boot=50, engine="spark")
    _assert_equal(local, remote)
    # a run without user_id has its sample_id column checked too (as locally: the audit reads it then)
    sampled = run.drop("user_id").with_columns(sample_id=pl.when(pl.col("item_id") % 5 == 0).then(None)
                                               .otherwise(pl.col("item_id") % 2))
    with pytest.raises(InputError) as local:
        safety_audit(sampled, table, n_boot=50)
    with pytest.raises(InputError) as remote:
        safety_audit(sdf(sampled), table, n_boot=50)
    assert _describe(remote.value) == _describe(local.value) and local.value.violations[0].column == "sample_id"
    # labels with text ids (as TREC qrels): joined as text, requests still in integer order (as locally)
    text = labels.with_columns(pl.col("request_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    local = popularity_bias_audit(run, table, labels=text, n_boot=50, k=3)
    remote = popularity_bias_audit(sdf(run), table, labels=sdf(text), n_boot=50, k=3)
    assert local.counts["n_relevant"] > 0
    _assert_equal(local, remote)


def test_miscalibration_equal_local(monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(25, "str")
    run = run.filter(pl.col("score").is_finite())
    rng = np.random.default_rng(7)
    items = pl.concat([run["item_id"], labels["item_id"]]).unique().sort()
    cats = [["x"], ["y"], ["x", "y"], ["z"], [], ["y", "z", "y"]]
    catalog = pl.DataFrame({"item_id": items, "genre": [cats[i] for i in rng.integers(0, len(cats), len(items))]})
    users = sorted(run["user_id"].unique().to_list())
    # the history of most run users (two without one, one with zero weight), and of users not in the run;
    # repeated pairs; ordered by user and item (see docs/scale.md: the order of a user's history rows)
    hist = pl.DataFrame({"user_id": rng.choice(users[:-2] + ["v1", "v2"], 300).tolist(),
                         "item_id": rng.choice(items.to_list(), 300).tolist(),
                         "plays": np.round(rng.random(300) * 3, 1)})
    hist = pl.concat([hist, pl.DataFrame({"user_id": [users[0]], "item_id": [items[0]], "plays": [0.0]})])
    hist = hist.with_columns(plays=pl.when(pl.col("user_id") == users[0]).then(0.0).otherwise(pl.col("plays")))
    hist = hist.sort("user_id", "item_id", "plays")
    groups = _groups(run)
    monkeypatch.setattr(engine, "CHUNK_ROWS", 60)
    kw = dict(category="genre", k=6, history_weight="plays", position_weight="log", user_groups=groups,
              group_column="g", n_boot=150, min_group_size=4)
    local = miscalibration_audit(run, hist, catalog, **kw)
    remote = miscalibration_audit(sdf(run, seed=8), sdf(hist, seed=9), catalog, **{**kw, "user_groups": sdf(groups)})
    assert local.counts["n_users_no_history"] == 2 and local.counts["n_users_zero_history_weight"] == 1
    assert local.counts["n_history_repeats"] > 0 and local.counts["n_history_users_not_in_run"] == 2
    _assert_equal(local, remote)
    kw = dict(category="genre", n_boot=100, min_group_size=2)
    _assert_equal(miscalibration_audit(run, hist, catalog, **kw), miscalibration_audit(sdf(run), hist, catalog, **kw))


# --------------------------------------------------------------------------- errors


def _bad_cases():
    run, labels = make_data(31, "str", n_requests=12)
    run = run.filter(pl.col("score").is_finite())
    table = _item_tables(run, labels, 5)
    row = pl.int_range(pl.len())
    first = run["request_id"][0]
    return table, {
        "null-score": (run.with_columns(pl.when(row == 2).then(None).otherwise(pl.col("score")).alias("score")), labels),
        "nan-score": (run.with_columns(pl.when(row < 3).then(float("nan")).otherwise(pl.col("score")).alias("score")), labels),
        "null-item": (run.with_columns(pl.when(row == 4).then(None).otherwise(pl.col("item_id")).alias("item_id")), labels),
        "text-score": (run.with_columns(pl.col("score").cast(pl.String)), labels),
        "missing-column": (run.drop("score"), labels),
        "null-label": (run, labels.with_columns(pl.when(row == 1).then(None).otherwise(pl.col("label")).alias("label"))),
        "labels-without-label": (run, labels.drop("label")),
        "duplicate-run-rows": (pl.concat([run, run.head(4)]), labels),
        "duplicate-label-rows": (run, pl.concat([labels, labels.head(3)])),
        "user-varies-within-request": (run.with_columns(pl.when((pl.col("request_id") == first) & (row == 0))
                                                        .then(pl.lit("other")).otherwise(pl.col("user_id")).alias("user_id")), labels),
        "items-missing-from-the-catalog": (run, labels),
        "relevant-label-items-missing-from-the-catalog": (run, pl.concat([labels, pl.DataFrame({
            "request_id": run["request_id"].unique().sort().head(3).to_list() + [run["request_id"][0]],
            "item_id": ["zzz", "zzz", "zzy", "zzx"], "label": [2.0, 1.0, 3.0, 0.0]})])),
    }


def _describe(err: InputError):
    return err.frame, [(v.column, v.rule, v.n_rows, v.examples, v.hint) for v in err.violations]


# found by the tasks, which see whole requests; the others before the shuffle
_FOUND_BY_THE_KERNEL = {"duplicate-run-rows", "duplicate-label-rows", "user-varies-within-request",
                        "items-missing-from-the-catalog", "relevant-label-items-missing-from-the-catalog"}


# cases that exercise the same path as a quick one run in the full profile only (the file stays ~1 minute)
_SLOW = {"nan-score", "null-item", "null-label", "labels-without-label", "duplicate-label-rows",
         "user-varies-within-request", "history-without-item-id", "text-weight", "null-history-user",
         "run-items-missing-from-the-catalog"}


def _params(cases):
    return [pytest.param(c, marks=pytest.mark.slow) if c in _SLOW else c for c in cases]


@pytest.mark.parametrize("case", _params(_bad_cases()[1]))
def test_bad_input_gets_the_local_error(case, monkeypatch):
    from receval.engines import spark as engine

    table, cases = _bad_cases()
    run, labels = cases[case]
    if case == "items-missing-from-the-catalog":
        table = table.filter(~pl.col("item_id").is_in(["d7", "a", "d12"]))
    kw = dict(labels=labels, n_boot=10)
    with pytest.raises(InputError) as local:
        popularity_bias_audit(run, table, **kw)
    if case not in _FOUND_BY_THE_KERNEL:
        def kernel_job(*args):
            raise AssertionError("the kernel job started before the input was checked")

        monkeypatch.setattr(engine, "_collect_arrow", kernel_job)
    with pytest.raises(InputError) as remote:
        popularity_bias_audit(sdf(run), table, **{**kw, "labels": sdf(labels)})
    assert _describe(remote.value) == _describe(local.value)


def test_disparity_bad_input_before_the_shuffle(monkeypatch):
    from receval.engines import spark as engine

    run, labels, attrs, _ = _user_data(41)
    run = run.with_columns(pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("score")).alias("score"))
    kw = dict(attributes=attrs, sensitive=["age"], missing_in_run="ignore", n_boot=10)
    with pytest.raises(InputError) as local:
        disparity_audit(run, labels, ["ndcg"], **kw)

    def kernel_job(*args):
        raise AssertionError("the kernel job started before the input was checked")

    monkeypatch.setattr(engine, "_collect_arrow", kernel_job)
    with pytest.raises(InputError) as remote:
        disparity_audit(sdf(run), sdf(labels), ["ndcg"], **kw)
    assert [(v.column, v.rule, v.n_rows) for v in remote.value.violations] == \
        [(v.column, v.rule, v.n_rows) for v in local.value.violations]
    # a sensitive attribute in neither table: the local message, from the schemas alone
    with pytest.raises(InputError) as local:
        disparity_audit(run, labels, ["ndcg"], **{**kw, "sensitive": ["nope"]})
    with pytest.raises(InputError) as remote:
        disparity_audit(sdf(run), labels, ["ndcg"], **{**kw, "sensitive": ["nope"]})
    assert _describe(remote.value) == _describe(local.value)


def test_what_does_not_run_on_spark_is_a_usage_error_before_any_job(monkeypatch):
    from receval.engines import spark as engine

    run, labels = make_data(51, "str", n_requests=6)
    run = run.filter(pl.col("score").is_finite())
    table = _item_tables(run, labels, 6)
    history = run.select("user_id", "item_id").head(10)

    def no_job(*args):
        raise AssertionError("a Spark job ran")

    monkeypatch.setattr(engine, "_collect_arrow", no_job)
    monkeypatch.setattr(engine, "_check_values", no_job)
    remote = sdf(run)
    with pytest.raises(UsageError, match="history"):
        popularity_bias_audit(remote, table, history=history)
    with pytest.raises(UsageError, match="one run frame, with a sample_id column"):
        exposure_audit([remote, remote], table.with_columns(provider=pl.lit("p")))
    with pytest.raises(UsageError, match="needs an item catalog"):
        disparity_audit(remote, labels, ["novelty@10"], sensitive=["country"], unit="request")
    with pytest.raises(UsageError, match="streaming"):
        safety_audit(run, table, engine="streaming")


def _miscalibration_cases():
    run, labels = make_data(61, "str", n_requests=14)
    run = run.filter(pl.col("score").is_finite())
    items = pl.concat([run["item_id"], labels["item_id"]]).unique().sort()
    catalog = pl.DataFrame({"item_id": items, "genre": ["x", "y", "z"] * (len(items) // 3) + ["x"] * (len(items) % 3)})
    hist = run.select("user_id", "item_id").unique().sort("user_id", "item_id").with_columns(plays=pl.lit(1.0))
    row = pl.int_range(pl.len())
    first = run["request_id"][0]
    other = run.filter(pl.col("request_id") != first)["user_id"][0]
    return catalog, {
        "run-without-user-id": (run.drop("user_id"), hist),
        "null-user": (run.with_columns(pl.when(pl.col("request_id") == first).then(None).otherwise(pl.col("user_id"))
                                       .alias("user_id")), hist),
        "two-users-in-a-request": (run.with_columns(pl.when((pl.col("request_id") == first) & (row == 0))
                                                    .then(pl.lit(other)).otherwise(pl.col("user_id")).alias("user_id")), hist),
        "history-without-item-id": (run, hist.drop("item_id")),
        "text-weight": (run, hist.with_columns(pl.col("plays").cast(pl.String))),
        "null-history-user": (run, hist.with_columns(pl.when(row < 2).then(None).otherwise(pl.col("user_id")).alias("user_id"))),
        "negative-weight": (run, hist.with_columns(pl.when(row == 3).then(-1.0).otherwise(pl.col("plays")).alias("plays"))),
        "history-items-missing-from-the-catalog": (run, pl.concat([hist, pl.DataFrame({
            "user_id": [run["user_id"][0]] * 2, "item_id": ["nope1", "nope2"], "plays": [1.0, 1.0]})])),
        "run-items-missing-from-the-catalog": (run.with_columns(
            pl.when(row % 7 == 0).then(pl.lit("gone")).otherwise(pl.col("item_id")).alias("item_id")).unique(
            ["request_id", "item_id"], keep="first", maintain_order=True), hist),
    }


@pytest.mark.parametrize("case", _params(_miscalibration_cases()[1]))
def test_miscalibration_bad_input_gets_the_local_error(case):
    catalog, cases = _miscalibration_cases()
    run, hist = cases[case]
    kw = dict(category="genre", history_weight="plays", n_boot=10)
    with pytest.raises(InputError) as local:
        miscalibration_audit(run, hist, catalog, **kw)
    with pytest.raises(InputError) as remote:
        miscalibration_audit(sdf(run), sdf(hist), catalog, **kw)
    if case.startswith(("null-history-user", "negative-weight")):  # local examples name rows: Spark has none
        assert [(v.column, v.rule, v.n_rows) for v in remote.value.violations] == \
            [(v.column, v.rule, v.n_rows) for v in local.value.violations]
    else:
        assert _describe(remote.value) == _describe(local.value)


def test_a_prepared_run_on_the_spark_engine_is_the_run_read_by_spark(tmp_path):
    # engine="spark" reads the prepared run's source with Spark: the local audit's result
    from receval.audits import prepare

    run, labels = make_data(24, "int", n_requests=25)
    run = run.filter(pl.col("score").is_finite())
    table = _item_tables(run, labels, 4)
    run.write_parquet(tmp_path / "run.parquet")
    kw = dict(k=5, n_boot=80, min_group_size=3)
    local = popularity_bias_audit(run, table, **kw)
    remote = popularity_bias_audit(prepare(str(tmp_path / "run.parquet")), table, engine="spark", **kw)
    _assert_equal(local, remote)
    with pytest.raises(UsageError, match="local frame"):
        prepare(sdf(run))
