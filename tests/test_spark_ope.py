"""Off-policy estimators on Spark give the numbers and the errors of the in-memory path (local-mode Spark).

The inputs are random: several positions per request, integer and text ids
(text ids whose byte order differs from their numeric order), logged items
the target omits (pi_e = 0), target mass on (item, position) pairs never
logged (a support warning), importance weights with many ties (the exact
quantiles), rows shuffled over several partitions. Values within 1e-9,
diagnostics equal (weight quantiles exactly), warnings identical, and
bootstrap intervals drawn from the same per-request vectors: exactly equal
with one row per request, within 1e-12 with several (the sums inside a
request are then added in another order). Bad input gets the same
InputError as locally, from validation jobs that run before the join and the
reduction job.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from test_spark import _java_available, spark  # noqa: F401 - the shared session fixture

from receval.counterfactual import (
    DM,
    DR,
    DROS,
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    RewardModel,
    SwitchDR,
    estimate_many,
    logged_feedback,
)
from receval.counterfactual.lift import Lift
from receval.errors import InputError, UsageError

pytestmark = pytest.mark.skipif(
    not _java_available(), reason="no Java runtime (java on PATH or JAVA_HOME): Spark needs a JVM (Java 17)"
)

ESTIMATORS = [IPS(), ClippedIPS(clip=2.0), SNIPS(), DM(), DR(), SNDR(), SwitchDR(threshold=2.0), DROS(lam=3.0),
              Lift(base=ClippedIPS(clip=2.0), relative=True)]  # any Estimator: its own columns run on Spark


def make_bandit(seed: int, id_type: str, *, n_requests: int = 60, max_positions: int = 3):
    """A log and a target with q_hat columns; see the module docstring for what the data contain."""
    rng = np.random.default_rng(seed)
    n_items = 7
    log_rows, target_rows = [], []
    for r in range(n_requests):
        rid = r * 7 + 3 if id_type == "int" else f"r{r * 7 + 3}"
        for pos in range(1, rng.integers(1, max_positions + 1) + 1):
            # the logging policy: a few propensity levels, so weights tie
            pb = rng.choice([1.0, 2.0, 4.0], n_items)
            pb /= pb.sum()
            item = int(rng.choice(n_items, p=pb))
            # the target: a distribution over a random subset (others omitted: pi_e = 0)
            keep = rng.random(n_items) < 0.6
            keep[rng.integers(n_items)] = True
            pe = np.where(keep, rng.choice([1.0, 3.0], n_items), 0.0)
            never = rng.random() < 0.3  # some mass on an item that is never logged
            total = pe.sum() + (1.0 if never else 0.0)
            for i in np.flatnonzero(keep):
                target_rows.append((rid, i, pos, pe[i] / total, float(rng.random())))
            if never:
                target_rows.append((rid, 99, pos, 1.0 / total, 0.5))
            log_rows.append((rid, item, pos, float(rng.random() < 0.4) * rng.choice([1.0, 0.5]), float(pb[item]),
                             float(rng.random())))
    log = pd.DataFrame(log_rows, columns=["request_id", "item_id", "position", "reward", "propensity", "q_hat"])
    target = pd.DataFrame(target_rows, columns=["request_id", "item_id", "position", "probability", "q_hat"])
    return log, target


def sdf(spark, frame: pd.DataFrame, seed: int = 0, partitions: int = 3):  # noqa: F811
    """A Spark DataFrame of ``frame`` with its rows shuffled over ``partitions`` partitions."""
    import pyarrow as pa

    table = pl.from_pandas(frame).sample(fraction=1.0, shuffle=True, seed=seed).to_arrow()
    table = table.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
                                  for f in table.schema]))
    return spark.createDataFrame(table).repartition(partitions)


def assert_same(local, remote, *, exact_intervals: bool):
    assert [r.name for r in remote] == [r.name for r in local]
    for a, b in zip(local, remote, strict=True):
        assert b.n == a.n and b.interval == a.interval and b.level == a.level
        assert math.isclose(b.value, a.value, rel_tol=1e-9, abs_tol=1e-9), a.name
        if exact_intervals:
            assert (b.ci_low, b.ci_high) == (a.ci_low, a.ci_high), a.name
        else:
            assert math.isclose(b.ci_low, a.ci_low, rel_tol=1e-12, abs_tol=1e-12), a.name
            assert math.isclose(b.ci_high, a.ci_high, rel_tol=1e-12, abs_tol=1e-12), a.name
        assert b.warnings == a.warnings, a.name
        assert list(b.diagnostics) == list(a.diagnostics)
        for k, u in a.diagnostics.items():
            v = b.diagnostics[k]
            if k.startswith("weight_q") or k == "max_weight" or not isinstance(u, float):
                assert v == u, (a.name, k, u, v)  # quantiles and counts exactly
            else:
                assert math.isclose(v, u, rel_tol=1e-12, abs_tol=1e-12), (a.name, k, u, v)


@pytest.mark.parametrize("id_type", ["int", "str"])
def test_every_estimator_equals_local(spark, id_type):  # noqa: F811
    log, target = make_bandit(3 if id_type == "int" else 4, id_type)
    kw = dict(reward_range=(0, 1), q_hat_column="q_hat")
    local_data = logged_feedback(log, target, **kw)
    remote_data = logged_feedback(sdf(spark, log, seed=1), sdf(spark, target, seed=2, partitions=2), **kw)
    assert (remote_data.n_rows, remote_data.n_units) == (local_data.n_rows, local_data.n_units)
    assert remote_data.n_rows > remote_data.n_units  # several positions per request
    assert remote_data.support == pytest.approx(local_data.support, rel=1e-12)
    assert local_data.support["unsupported_pairs"] > 0 and remote_data.warnings == local_data.warnings
    assert (local_data.target_prob == 0).any()  # logged items the target omits
    local = estimate_many(ESTIMATORS, local_data, n_boot=300, seed=5)
    remote = estimate_many(ESTIMATORS, remote_data, n_boot=300, seed=5)
    assert_same(local, remote, exact_intervals=False)
    # the normal interval and a single estimator's point
    assert_same(estimate_many([SNIPS(), DR()], local_data, interval="normal"),
                estimate_many([SNIPS(), DR()], remote_data, interval="normal"), exact_intervals=False)
    assert math.isclose(SNDR().point(remote_data), SNDR().point(local_data), rel_tol=1e-12)


def test_one_row_per_request_gives_identical_intervals(spark, monkeypatch):  # noqa: F811
    from receval.engines import spark_ope

    log, target = make_bandit(8, "str", n_requests=120, max_positions=1)
    # no target frame: pi_e of the logged item as a column; the inferred reward range
    log["target_probability"] = log.merge(target, on=["request_id", "item_id", "position"], how="left")[
        "probability"].fillna(0.0).to_numpy()
    # also: the exact-quantile path that brackets order statistics (approximate pass + exact pick)
    monkeypatch.setattr(spark_ope, "EXACT_QUANTILE_COLLECT", 0)
    monkeypatch.setattr(spark_ope, "CHUNK_ROWS", 7)  # tiny chunks inside each partition
    remote_data = logged_feedback(sdf(spark, log.drop(columns=["q_hat"]), seed=3, partitions=4), engine="spark")
    local_data = logged_feedback(log.drop(columns=["q_hat"]))
    assert remote_data.reward_range == local_data.reward_range == (0.0, 1.0)
    est = [IPS(), ClippedIPS(clip=1.5), SNIPS()]
    assert_same(estimate_many(est, local_data, n_boot=500, seed=11),
                estimate_many(est, remote_data, n_boot=500, seed=11), exact_intervals=True)


def test_text_and_integer_ids_meet_as_text(spark):  # noqa: F811
    # integer request ids in the log, text ids in the target: compared as text on both engines
    log, target = make_bandit(12, "int", n_requests=30)
    target["request_id"] = target["request_id"].astype(str)
    local = estimate_many([IPS(), DR()], logged_feedback(log, target, q_hat_column="q_hat"), n_boot=200)
    remote = estimate_many([IPS(), DR()], logged_feedback(sdf(spark, log), sdf(spark, target), q_hat_column="q_hat"),
                           n_boot=200)
    assert_same(local, remote, exact_intervals=False)


def test_exact_quantiles_equal_numpy_and_survive_bad_brackets(spark, monkeypatch):  # noqa: F811
    from receval.engines import spark_ope

    rng = np.random.default_rng(0)
    w = np.concatenate([np.zeros(400), rng.choice([0.5, 1.0, 2.0], 900), rng.exponential(1.0, 701)])
    df = spark.createDataFrame(pl.DataFrame({"w": w}).to_arrow()).repartition(3)
    qs = [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0]
    expected = np.quantile(w, qs).tolist()
    assert spark_ope.exact_quantiles(df, len(w), qs) == expected  # every distinct value
    monkeypatch.setattr(spark_ope, "EXACT_QUANTILE_COLLECT", 0)
    assert spark_ope.exact_quantiles(df, len(w), qs) == expected  # brackets from the approximate pass

    class WrongBrackets:  # an approximate pass that brackets nothing: the ranks must still come out exact
        def __init__(self, df):
            self.df = df

        def approxQuantile(self, col, probs, eps):
            return [1.7] * len(probs)

        def __getattr__(self, name):
            return getattr(self.df, name)

    assert spark_ope.exact_quantiles(WrongBrackets(df), len(w), qs) == expected


def test_cli_ope_on_spark(spark, tmp_path, capsys):  # noqa: F811
    import json

    from receval.cli import main

    log, target = make_bandit(22, "int", n_requests=25)
    log.to_parquet(tmp_path / "log.parquet")
    target.to_csv(tmp_path / "target.csv", index=False)  # paths read by Spark: Parquet and CSV
    args = ["ope", "--logs", str(tmp_path / "log.parquet"), "--target", str(tmp_path / "target.csv"),
            "-e", "snips", "-e", "dr", "--q-hat-column", "q_hat", "--n-boot", "100", "--output", "json"]
    assert main(args) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "--engine", "spark"]) == 0
    remote = json.loads(capsys.readouterr().out)
    for name in ("snips", "dr"):
        a, b = local["estimates"][name], remote["estimates"][name]
        assert math.isclose(a["value"], b["value"], rel_tol=1e-9)
        assert math.isclose(a["ci_high"], b["ci_high"], rel_tol=1e-12)
        assert a["diagnostics"]["weight_q99"] == b["diagnostics"]["weight_q99"]
    assert remote["settings"]["n_requests"] == local["settings"]["n_requests"] == 25
    assert remote["settings"]["engine"] == "spark"


def _bad_cases():
    log, target = make_bandit(31, "str", n_requests=15)
    first = log.index < 2
    return {
        "propensity-zero": (log.assign(propensity=np.where(first, 0.0, log["propensity"])), target, {}),
        "propensity-above-one": (log.assign(propensity=np.where(log.index == 4, 1.5, log["propensity"])), target, {}),
        "propensity-null": (log.assign(propensity=np.where(log.index == 3, np.nan, log["propensity"])), target, {}),
        "reward-outside-range": (log.assign(reward=np.where(first, 3.0, log["reward"])), target, {"reward_range": (0, 1)}),
        "target-not-summing-to-one": (log, target.assign(probability=np.where(target.index < 3, 0.9, target["probability"])), {}),
        "target-row-duplicated": (log, pd.concat([target, target.head(2)], ignore_index=True), {}),
        "logged-context-without-target": (log, target[target["request_id"] != log["request_id"][0]], {}),
        "position-zero": (log.assign(position=np.where(first, 0, log["position"])), target, {}),
        "text-propensity": (log.assign(propensity=log["propensity"].astype(str)), target, {}),
        "float-item-ids": (log.assign(item_id=log["item_id"].astype(float)), target, {}),
        "null-request-id": (log.assign(request_id=np.where(log.index == 5, None, log["request_id"])), target, {}),
        "q-hat-nan-in-log": (log.assign(q_hat=np.where(first, np.nan, log["q_hat"])), target, {"q_hat_column": "q_hat"}),
        "q-hat-inf-in-target": (log, target.assign(q_hat=np.where(target.index == 2, np.inf, target["q_hat"])),
                                {"q_hat_column": "q_hat"}),
    }


def _describe(err: InputError):
    return err.frame, [(v.column, v.rule, v.n_rows) for v in err.violations]


def same_error_before_the_reduction(monkeypatch, local_call, spark_call) -> InputError:
    """Run ``local_call`` and ``spark_call`` (no reduction job allowed: the input must be checked first);
    both raise an InputError with the same frame and (column, rule, rows) violations. Returns Spark's."""
    from receval.engines import spark as engine

    with pytest.raises(InputError) as local:
        local_call()

    def reduction_job(*args):
        raise AssertionError("the reduction job started before the input was checked")

    monkeypatch.setattr(engine, "_collect_arrow", reduction_job)
    with pytest.raises(InputError) as remote:
        spark_call()
    assert _describe(remote.value) == _describe(local.value)
    return remote.value


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_gets_the_local_error_before_the_reduction(spark, case, monkeypatch):  # noqa: F811
    log, target, kw = _bad_cases()[case]
    remote = same_error_before_the_reduction(monkeypatch, lambda: logged_feedback(log, target, **kw),
                                             lambda: logged_feedback(sdf(spark, log), sdf(spark, target), **kw))
    assert all(v.examples for v in remote.violations if v.column != "target" or "distribution" in v.rule)


def test_usage_errors(spark):  # noqa: F811
    log, target = make_bandit(41, "int", n_requests=5)
    s_log, s_target = sdf(spark, log), sdf(spark, target)
    with pytest.raises(UsageError, match="q_hat_column"):
        logged_feedback(s_log, s_target, reward_model=RewardModel())
    with pytest.raises(UsageError, match=r"log is missing required column\(s\) \['propensity'\]"):
        logged_feedback(s_log.drop("propensity"), s_target)
    with pytest.raises(UsageError, match=r"target is missing required column\(s\) \['probability'\]"):
        logged_feedback(s_log, s_target.drop("probability"))
    with pytest.raises(UsageError, match="needs a request_id"):
        logged_feedback(s_log.drop("request_id"), s_target)
    with pytest.raises(UsageError, match="needs reward-model estimates"):
        estimate_many([DM()], logged_feedback(s_log, s_target))
    with pytest.raises(UsageError, match="engine='polars' or 'spark'"):
        logged_feedback(log, target, engine="streaming")


def test_cli_evaluate_on_spark(spark, tmp_path, capsys):  # noqa: F811
    import json

    from receval.cli import main

    rng = np.random.default_rng(5)
    run = pl.DataFrame({"request_id": np.repeat(np.arange(20), 5), "item_id": np.tile(np.arange(5), 20),
                        "score": rng.random(100)})
    labels = run.select("request_id", "item_id").with_columns(label=pl.Series(rng.integers(0, 2, 100)).cast(pl.Float64))
    run.write_parquet(tmp_path / "run.parquet")
    labels.write_parquet(tmp_path / "labels.parquet")
    args = ["evaluate", "--run", str(tmp_path / "run.parquet"), "--labels", str(tmp_path / "labels.parquet"),
            "-m", "ndcg@3", "-m", "mrr", "--output", "json"]
    assert main(args) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "--engine", "spark"]) == 0
    assert json.loads(capsys.readouterr().out) == local
