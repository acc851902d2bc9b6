"""``drift_audit`` on Spark equals the local audit (receval/engines/spark_drift.py).

Oracle: the local ``drift_audit`` (itself tested against hand-computed toys,
slow references and scipy in test_audit_drift.py) on the same data, and
``scipy.stats.ks_2samp`` for the p-value helper.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp
from test_spark import _java_available, spark  # noqa: F401  (the session fixture)

from receval.audits.drift import drift_audit, parity_audit
from receval.audits.quality import data_quality
from receval.errors import InputError, UsageError

pytestmark = pytest.mark.skipif(not _java_available(), reason="no Java runtime: Spark needs a JVM")


def _frames(seed: int, n_b: int, n_c: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Numeric columns with ties, NaN, nulls and current values outside the baseline range; categorical
    columns with categories seen only in the current sample."""
    rng = np.random.default_rng(seed)

    def side(n: int, shift: float, cats: list[str]) -> pl.DataFrame:
        x = np.round(rng.normal(shift, 1.0 + shift, n), 1)  # rounded: many ties
        x[rng.random(n) < 0.05] = np.nan
        nulls = rng.random(n) < 0.05
        k = rng.integers(0, 40, n) + int(10 * shift)  # an integer column, ties everywhere
        heavy = np.where(rng.random(n) < 0.9, 0.0, rng.exponential(1.0, n))  # a point mass at 0
        cat = rng.choice(cats, n)
        return pl.DataFrame({
            "score": pl.Series(x).set(pl.Series(nulls), None),
            "k": pl.Series(k, dtype=pl.Int32),
            "f32": pl.Series(np.where(rng.random(n) < 0.05, np.nan, rng.gamma(2.0, 1.0 + shift, n)),
                             dtype=pl.Float32),
            "heavy": heavy,
            "country": pl.Series(cat).set(pl.Series(rng.random(n) < 0.03), None),
            "flag": rng.random(n) < 0.3 + shift / 4,
        })

    return side(n_b, 0.0, ["de", "fr", "it"]), side(n_c, 0.6, ["de", "fr", "it", "es", "pl"])


def _sdf(spark, frame: pl.DataFrame):  # noqa: F811
    from receval.engines.spark import _from_polars

    return _from_polars(spark, frame)


COLUMNS = ["score", "k", "f32", "heavy", "country", "flag"]


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_small_samples_equal_local_exact_pvalues(spark, strategy):  # noqa: F811
    b, c = _frames(1, 300, 217)
    kw = dict(bins=7, strategy=strategy, categorical=["k"] if strategy == "uniform" else [])
    local = drift_audit(b, c, COLUMNS, **kw)
    remote = drift_audit(_sdf(spark, b), _sdf(spark, c), COLUMNS, **kw)
    assert remote.to_dict() == local.to_dict()
    got = local["score"]
    assert got.missing_baseline > 0 and got.missing_current > 0 and got.ks_pvalue < 1
    assert local["country"].n_unseen_categories == 2 and local["country"].n_unseen_rows > 0
    assert local["heavy"].n_bins < 8  # repeated quantile edges collapsed (quantile) or not (uniform)
    if strategy == "uniform":
        assert local["k"].kind == "categorical"


def test_large_samples_equal_local_asymptotic_pvalues(spark):  # noqa: F811
    b, c = _frames(2, 12_000, 10_500)
    local = drift_audit(b, c, ["score", "k", "heavy", "country"], bins=10)
    remote = drift_audit(_sdf(spark, b), _sdf(spark, c), ["score", "k", "heavy", "country"], bins=10)
    assert remote.to_dict() == local.to_dict()
    assert 0 < local["score"].ks_pvalue < 1e-6 or local["score"].ks_pvalue == 0.0


def test_distributed_paths_equal_local(spark, monkeypatch):  # noqa: F811
    """The KS pass over ranges of distinct values and the bracketed order statistics (the paths taken when
    there are many distinct values / rows), forced on small data by lowering the thresholds."""
    from receval.engines import spark_drift, spark_ope

    monkeypatch.setattr(spark_drift, "KS_COLLECT", 50)
    monkeypatch.setattr(spark_drift, "KS_RANGE_ROWS", 40)
    monkeypatch.setattr(spark_ope, "EXACT_QUANTILE_COLLECT", 100)
    b, c = _frames(3, 900, 700)
    local = drift_audit(b, c, ["score", "heavy"], bins=9)
    remote = drift_audit(_sdf(spark, b), _sdf(spark, c), ["score", "heavy"], bins=9)
    assert remote.to_dict() == local.to_dict()


def test_paths_read_by_spark(spark, tmp_path):  # noqa: F811
    b, c = _frames(4, 200, 150)
    b.write_parquet(tmp_path / "b.parquet")
    c.write_parquet(tmp_path / "c.parquet")
    cols = ["score", "country"]
    local = drift_audit(b, c, cols)
    remote = drift_audit(str(tmp_path / "b.parquet"), str(tmp_path / "c.parquet"), cols, engine="spark")
    assert remote.to_dict() == local.to_dict()
    # one Spark frame and one local frame: the local one is sent to Spark
    assert drift_audit(_sdf(spark, b), c, cols).to_dict() == local.to_dict()


def test_ks_pvalue_is_scipys():
    from receval.engines.spark_drift import ks_pvalue

    rng = np.random.default_rng(5)
    for n1, n2, shift in [(30, 40, 0.5), (500, 500, 0.1), (9_999, 10_000, 0.03), (3, 3, 0.0),
                          (12_000, 10_500, 0.05), (20_000, 20_000, 0.0)]:
        a, b = np.round(rng.normal(0, 1, n1), 1), np.round(rng.normal(shift, 1, n2), 1)
        a, b = np.sort(a), np.sort(b)
        grid = np.concatenate([a, b])
        cb = np.searchsorted(a, grid, side="right")
        cc = np.searchsorted(b, grid, side="right")
        k = int(np.argmax(np.abs(cb / n1 - cc / n2)))
        with warnings.catch_warnings():  # scipy's exact-mode fall-back warning, as drift.py
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = ks_2samp(a, b)
        assert ks_pvalue(int(cb[k]), int(cc[k]), n1, n2) == float(expected.pvalue), (n1, n2)
        if max(n1, n2) > 10_000:  # (the exact mode reports D rounded to a multiple of 1/lcm(n1, n2))
            assert abs(cb[k] / n1 - cc[k] / n2) == float(expected.statistic)


def _describe(err: Exception):
    if isinstance(err, InputError):
        return ("input", err.frame, [(v.column, v.rule, v.n_rows, v.hint) for v in err.violations])
    return (type(err).__name__, str(err))


def _bad_cases():
    b, c = _frames(6, 60, 50)
    inf = c.with_columns(pl.when(pl.col("k") > 30).then(float("inf")).otherwise(pl.col("score")).alias("score"))
    return {
        "missing-column": (b.drop("heavy"), c, ["score", "heavy"], {}),
        "missing-in-current": (b, c.drop("k"), ["k"], {}),
        "numeric-vs-text": (b, c.with_columns(pl.col("k").cast(pl.String)), ["score", "k"], {}),
        "all-missing-baseline": (b.with_columns(pl.lit(None, dtype=pl.Float64).alias("score")), c, ["score"], {}),
        "all-nan-current": (b, c.with_columns(pl.lit(float("nan")).alias("heavy")), ["k", "heavy"], {}),
        "empty-current": (b, c.head(0), ["country"], {}),
        "infinite-current": (b, inf, ["k", "score"], {}),
        "single-valued-baseline": (b.with_columns(pl.lit(2.5).alias("heavy")), c, ["heavy"], {}),
        "bad-strategy": (b, c, ["country", "score"], {"strategy": "deciles"}),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_errors_equal_local(spark, case, monkeypatch):  # noqa: F811
    from receval.engines import spark_drift, spark_ope

    b, c, cols, kw = _bad_cases()[case]
    with pytest.raises((InputError, UsageError)) as local:
        drift_audit(b, c, cols, **kw)

    def no_job(*args, **kwargs):
        raise AssertionError("an expensive job started before the input was checked")

    monkeypatch.setattr(spark_ope, "exact_quantiles", no_job)
    monkeypatch.setattr(spark_drift, "_ks_spark", no_job)
    monkeypatch.setattr(spark_drift, "_category_counts", no_job)
    with pytest.raises((InputError, UsageError)) as remote:
        drift_audit(_sdf(spark, b), _sdf(spark, c), cols, **kw)
    assert _describe(remote.value) == _describe(local.value)


def test_local_only_audits_say_why(spark):  # noqa: F811
    frame = _sdf(spark, pl.DataFrame({"request_id": [1], "item_id": [2], "score": [0.5]}))
    with pytest.raises(UsageError, match="row numbers"):
        data_quality(frame)
    with pytest.raises(UsageError, match="parity_audit does not run on Spark .*in memory"):
        parity_audit(frame, frame)
