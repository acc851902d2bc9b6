"""Hostile inputs through the chunked engines: the streaming engine and Spark give the local engine's outcome.

Every drawn (run, labels) case (receval.testing.run_and_labels: nulls, NaN, text scores, float and mixed
ids, duplicates, empty frames, ±inf, ties, unicode and int64-extreme ids) is written to Parquet and
evaluated from the files by the local engine, ``engine="streaming"`` and ``engine="spark"``: the same
numbers, or the same exception type with the same (column, rule, count) violations, and the same
CoverageWarning. Plus files the strategies cannot draw: 0-byte and truncated files, zero-row files,
all-null columns. Spark property tests run few examples (a tenth of the profile's).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_spark import _java_available, spark  # noqa: F401 - the session fixture of the Spark tests

import receval
from receval.errors import CoverageWarning, InputError, ReceValError
from receval.testing import Hostile, compare_inputs, run_and_labels

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

METRICS = ["ndcg@10", "mrr", "map", "recall@2", "precision@1", "hit@3"]
SPARK_EXAMPLES = max(4, settings.default.max_examples // 10)


def _write(case: Hostile, d: Path) -> tuple[Path, Path] | None:
    run, lab = case.value
    rp, lp = d / "run.parquet", d / "labels.parquet"
    try:
        run.to_parquet(rp)
        lab.to_parquet(lp)
    except (ValueError, TypeError, OverflowError, NotImplementedError) as e:  # pyarrow cannot hold it
        event(f"not writable: {type(e).__name__}")
        return None
    except Exception as e:  # noqa: BLE001 - pyarrow's own error types (ArrowInvalid, ArrowTypeError)
        if type(e).__module__.startswith("pyarrow"):
            event(f"not writable: {type(e).__name__}")
            return None
        raise
    return rp, lp


def _outcome(call):
    """("ok", result, warnings) or ("error", exception, warnings); any other exception propagates."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CoverageWarning)
        try:
            out = ("ok", call())
        except ReceValError as e:
            out = ("error", e)
    return (*out, sorted(str(w.message) for w in caught if issubclass(w.category, CoverageWarning)))


def _describe(e: ReceValError):
    if isinstance(e, InputError):
        return type(e), [(v.column, v.rule, v.n_rows) for v in e.violations]
    # a file the reader refuses: the same type and the same "<kind>: cannot read <path> as <format>" (the
    # library's own words after it may differ between a scan and a read)
    return type(e), str(e).split(": ", 2)[:2] if "cannot read" in str(e) else str(e)


def assert_same_outcome(local, other, engine: str) -> None:
    assert local[0] == other[0], (engine, local[1], other[1])
    if local[0] == "error":
        assert _describe(other[1]) == _describe(local[1]), (engine, str(local[1]), str(other[1]))
        return
    a, b = local[1], other[1]
    assert a.counts == b.counts, engine
    for m in METRICS:
        assert b[m].n == a[m].n
        assert math.isclose(b[m].mean, a[m].mean, rel_tol=1e-12, abs_tol=1e-12), (engine, m, a[m].mean, b[m].mean)
    pa = a.per_request.sort_values("request_id", key=lambda s: s.astype(str)).reset_index(drop=True)
    pb = b.per_request.sort_values("request_id", key=lambda s: s.astype(str)).reset_index(drop=True)
    assert list(pa["request_id"].astype(str)) == list(pb["request_id"].astype(str)), engine
    for m in METRICS:
        np.testing.assert_allclose(pb[m].to_numpy(), pa[m].to_numpy(), rtol=0, atol=1e-12, err_msg=f"{engine} {m}")
    assert local[2] == other[2], (engine, local[2], other[2])  # the same CoverageWarning, or none


def _evaluate(paths, engine: str):
    return lambda: receval.evaluate(str(paths[0]), str(paths[1]), METRICS, n_boot=5, engine=engine)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(run_and_labels(backend=False))
def test_streaming_engine_gives_the_local_outcome(tmp_path_factory, case):
    paths = _write(case, tmp_path_factory.mktemp("stream"))
    if paths is None:
        return
    local = _outcome(_evaluate(paths, "polars"))
    event(f"{case.broken or 'legal'} -> {local[0]}")
    if case.broken and local[0] == "ok":  # Parquet can change a broken column (e.g. an all-null id column's type)
        event("broken case legal after the Parquet round trip")
    assert_same_outcome(local, _outcome(_evaluate(paths, "streaming")), "streaming")


@settings(max_examples=SPARK_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@pytest.mark.parametrize("broken", [False, True], ids=["legal", "broken"])
@given(data=st.data())
def test_spark_engine_gives_the_local_outcome(spark, tmp_path_factory, broken, data):  # noqa: F811
    if not _java_available():
        pytest.skip("no Java runtime")
    case = data.draw(run_and_labels(backend=False, broken=broken))
    paths = _write(case, tmp_path_factory.mktemp("spark"))
    if paths is None:
        return
    local = _outcome(_evaluate(paths, "polars"))
    event(f"{case.broken or 'legal'} -> {local[0]}")
    assert_same_outcome(local, _outcome(_evaluate(paths, "spark")), "spark")


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(compare_inputs(backend=False), st.sampled_from(["error", "intersect"]))
def test_compare_on_the_streaming_engine_gives_the_local_outcome(tmp_path_factory, case, on_mismatch):
    runs, lab = case.value
    d = tmp_path_factory.mktemp("cmp")
    paths = {}
    try:
        for i, (name, frame) in enumerate(runs.items()):
            paths[name] = str(d / f"run{i}.parquet")
            frame.to_parquet(paths[name])
        lab.to_parquet(d / "labels.parquet")
    except Exception as e:  # noqa: BLE001 - pyarrow cannot hold it (mixed object columns)
        if isinstance(e, ValueError | TypeError | OverflowError) or type(e).__module__.startswith("pyarrow"):
            return
        raise

    def call(engine):
        return lambda: receval.compare(paths, str(d / "labels.parquet"), ["ndcg@10", "mrr"], n_boot=5,
                                       on_mismatch=on_mismatch, engine=engine)

    local, other = _outcome(call("polars")), _outcome(call("streaming"))
    event(f"{case.broken or 'legal'} -> {local[0]}")
    assert local[0] == other[0], (local[1], other[1])
    assert local[2] == other[2]
    if local[0] == "error":
        assert _describe(other[1]) == _describe(local[1]), (str(local[1]), str(other[1]))
        return
    a, b = local[1].to_dict(), other[1].to_dict()
    assert a["counts"] == b["counts"]
    for ra, rb in zip(a["comparisons"], b["comparisons"], strict=True):
        for k in ("candidate", "metric", "n", "test", "significant"):
            assert ra[k] == rb[k], k
        for k in ("baseline_mean", "candidate_mean", "diff", "p_value"):  # paired t: order-free
            assert (ra[k] is None) == (rb[k] is None) and (ra[k] is None or math.isclose(ra[k], rb[k], abs_tol=1e-12)), k
        # the chunked engines order requests by id before the bootstrap (docs/scale.md), the local engine by
        # first appearance: the same replicates only up to that order, so intervals are compared as defined or not
        for k in ("ci_low", "ci_high"):
            assert (ra[k] is None) == (rb[k] is None), k


# --------------------------------------------------------------------------- files the strategies cannot draw

_RUN = pd.DataFrame({"request_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 2], "score": [0.5, 0.1, 0.2, 0.9]})
_LAB = pd.DataFrame({"request_id": [1, 2], "item_id": [2, 2], "label": [1, 1]})


def _files(tmp: Path, kind: str) -> tuple[Path, Path]:
    rp, lp = tmp / "run.parquet", tmp / "labels.parquet"
    _LAB.to_parquet(lp)
    if kind == "zero-byte":
        rp.write_bytes(b"")
    elif kind == "truncated":
        _RUN.to_parquet(rp)
        rp.write_bytes(rp.read_bytes()[:40])
    elif kind == "zero-rows":
        _RUN.head(0).to_parquet(rp)
    elif kind == "all-null-score":
        _RUN.assign(score=pd.Series([None] * 4, dtype=object)).to_parquet(rp)
    elif kind == "all-null-ids":
        _RUN.assign(item_id=pd.Series([None] * 4, dtype=object)).to_parquet(rp)
    elif kind == "text-score":
        _RUN.assign(score=["a", "b", "c", "d"]).to_parquet(rp)
    elif kind == "nan-score":
        _RUN.assign(score=[0.5, np.nan, 0.2, 0.9]).to_parquet(rp)
    elif kind == "bool-score":
        _RUN.assign(score=[True, False, True, False]).to_parquet(rp)
    elif kind == "duplicates":
        pd.concat([_RUN, _RUN.head(2)]).to_parquet(rp)
    elif kind == "no-request-in-common":
        _RUN.assign(request_id=[7, 7, 8, 8]).to_parquet(rp)
    elif kind == "csv-named-parquet":
        _RUN.to_csv(rp, index=False)
    return rp, lp


FILE_CASES = ["zero-byte", "truncated", "zero-rows", "all-null-score", "all-null-ids", "text-score", "nan-score",
              "bool-score", "duplicates", "no-request-in-common", "csv-named-parquet"]


@pytest.mark.parametrize("kind", FILE_CASES)
def test_broken_files_get_the_same_outcome_on_the_streaming_engine(tmp_path, kind):
    paths = _files(tmp_path, kind)
    local = _outcome(_evaluate(paths, "polars"))
    assert_same_outcome(local, _outcome(_evaluate(paths, "streaming")), "streaming")
    if kind not in ("bool-score", "zero-rows", "no-request-in-common"):  # legal: booleans are 0/1; labels score 0
        assert local[0] == "error", kind
    else:
        assert local[0] == "ok", kind
        # ... with a CoverageWarning when the run lists no judged request
        assert bool(local[2]) == (kind != "bool-score"), (kind, local[2])
        assert kind == "bool-score" or local[1].counts["labels_only_scored_zero"] == 2


@pytest.mark.parametrize("kind", ["zero-rows", "all-null-score", "text-score", "nan-score", "duplicates",
                                  "no-request-in-common"])
def test_broken_files_get_the_same_outcome_on_spark(spark, tmp_path, kind):  # noqa: F811
    if not _java_available():
        pytest.skip("no Java runtime")
    paths = _files(tmp_path, kind)
    assert_same_outcome(_outcome(_evaluate(paths, "polars")), _outcome(_evaluate(paths, "spark")), "spark")
