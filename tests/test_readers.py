"""Readers: every supported frame type and file format gives identical results."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from receval import evaluate
from receval.data import read_file, read_trec_qrels, read_trec_run, to_polars

METRICS = ["ndcg@3", "ndcg", "map", "mrr", "precision@2", "recall@3", "hit@1", "r_precision", "auc"]

# Scores are exact in decimal text, so text formats round-trip them exactly;
# ties (q1: b/c, q3: all) make the id tie-break part of the comparison.
RUN = pd.DataFrame(
    [
        ("q1", "a", 0.75), ("q1", "b", 0.5), ("q1", "c", 0.5), ("q1", "d10", 0.25), ("q1", "d9", 0.25),
        ("q2", "a", 1.5), ("q2", "e", -0.5), ("q2", "f", 2.0),
        ("q3", "x", 1.0), ("q3", "y", 1.0), ("q3", "z", 1.0),
        ("q4", "a", 1.0),  # unjudged request: ignored
    ],
    columns=["request_id", "item_id", "score"],
)  # fmt: skip
LABELS = pd.DataFrame(
    [
        ("q1", "c", 2), ("q1", "d10", 1), ("q1", "zz", 1),
        ("q2", "e", 3), ("q2", "f", -1),
        ("q3", "x", 1), ("q3", "z", 0),
        ("q5", "a", 1),  # judged, not retrieved: 0
    ],
    columns=["request_id", "item_id", "label"],
)  # fmt: skip


def result_of(run, labels, **kwargs):
    res = evaluate(run, labels, METRICS, n_boot=200, seed=5, **kwargs)
    frame = res.per_request.sort_values("request_id", ignore_index=True)
    return frame, res.to_dict()


@pytest.fixture(scope="module")
def expected():
    frame, d = result_of(RUN, LABELS)
    # sanity: the reference itself is right on a few hand-checked values
    by_id = frame.set_index("request_id")
    assert by_id.loc["q1", "mrr"] == pytest.approx(1 / 2)  # a, c(2) ...
    assert by_id.loc["q2", "mrr"] == pytest.approx(1 / 3)  # f(-1), a, e(3)
    assert by_id.loc["q3", "mrr"] == pytest.approx(1 / 3)  # z, y, x on the tie
    assert (by_id.loc["q5"] == 0).all()
    assert "q4" not in by_id.index
    return frame, d


def write_trec_run(path: Path, run: pd.DataFrame, ranks=None) -> Path:
    ranks = ranks if ranks is not None else range(1, len(run) + 1)
    lines = [f"{q} Q0 {i} {r} {s!r} tag" for (q, i, s), r in zip(run.itertuples(index=False), ranks, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_trec_qrels(path: Path, labels: pd.DataFrame) -> Path:
    path.write_text("".join(f"{q} 0 {i} {g}\n" for q, i, g in labels.itertuples(index=False)))
    return path


def _assert_same(got, expected):
    frame, d = got
    pd.testing.assert_frame_equal(frame, expected[0])
    assert d == expected[1]


# ---------------------------------------------------------------------------
# in-memory frames
# ---------------------------------------------------------------------------
FRAME_MAKERS = {
    "pandas": lambda df: df,
    "polars": lambda df: pl.from_pandas(df),
    "polars-lazy": lambda df: pl.from_pandas(df).lazy(),
    "pyarrow-table": lambda df: pa.Table.from_pandas(df, preserve_index=False),
    "pyarrow-batch": lambda df: pa.RecordBatch.from_pandas(df, preserve_index=False),
    "pandas-categorical-ids": lambda df: df.astype({"request_id": "category", "item_id": "category"}),
    "pandas-arrow-strings": lambda df: df.astype({"request_id": "string[pyarrow]", "item_id": "string[pyarrow]"}),
}


@pytest.mark.parametrize("kind", list(FRAME_MAKERS))
def test_frames_give_identical_results(kind, expected):
    make = FRAME_MAKERS[kind]
    _assert_same(result_of(make(RUN), make(LABELS)), expected)


def test_mixed_frame_types(expected):
    _assert_same(result_of(pl.from_pandas(RUN).lazy(), pa.Table.from_pandas(LABELS, preserve_index=False)), expected)


def test_pandas_index_is_ignored(expected):
    run = RUN.set_index(pd.Index(range(100, 100 + len(RUN))))
    _assert_same(result_of(run, LABELS), expected)


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def _write(tmp_path: Path, fmt: str):
    if fmt == "parquet":
        RUN.to_parquet(tmp_path / "run.parquet")
        LABELS.to_parquet(tmp_path / "labels.parquet")
        return tmp_path / "run.parquet", tmp_path / "labels.parquet"
    if fmt == "pq":
        pq.write_table(pa.Table.from_pandas(RUN, preserve_index=False), tmp_path / "run.pq")
        pq.write_table(pa.Table.from_pandas(LABELS, preserve_index=False), tmp_path / "labels.pq")
        return tmp_path / "run.pq", tmp_path / "labels.pq"
    if fmt == "parquet-dir":
        (tmp_path / "run").mkdir()
        RUN.iloc[:5].to_parquet(tmp_path / "run" / "part-0.parquet")
        RUN.iloc[5:].to_parquet(tmp_path / "run" / "part-1.parquet")
        LABELS.to_parquet(tmp_path / "labels.parquet")
        return tmp_path / "run", tmp_path / "labels.parquet"
    if fmt == "csv":
        RUN.to_csv(tmp_path / "run.csv", index=False)
        LABELS.to_csv(tmp_path / "labels.csv", index=False)
        return tmp_path / "run.csv", tmp_path / "labels.csv"
    if fmt == "csv.gz":
        with gzip.open(tmp_path / "run.csv.gz", "wt") as fh:
            RUN.to_csv(fh, index=False)
        LABELS.to_csv(tmp_path / "labels.csv", index=False)
        return tmp_path / "run.csv.gz", tmp_path / "labels.csv"
    if fmt == "tsv":
        RUN.to_csv(tmp_path / "run.tsv", index=False, sep="\t")
        LABELS.to_csv(tmp_path / "labels.tsv", index=False, sep="\t")
        return tmp_path / "run.tsv", tmp_path / "labels.tsv"
    if fmt == "jsonl":
        RUN.to_json(tmp_path / "run.jsonl", orient="records", lines=True)
        LABELS.to_json(tmp_path / "labels.jsonl", orient="records", lines=True)
        return tmp_path / "run.jsonl", tmp_path / "labels.jsonl"
    if fmt == "ndjson":
        RUN.to_json(tmp_path / "run.ndjson", orient="records", lines=True)
        LABELS.to_json(tmp_path / "labels.ndjson", orient="records", lines=True)
        return tmp_path / "run.ndjson", tmp_path / "labels.ndjson"
    if fmt == "trec":
        return write_trec_run(tmp_path / "sys.run", RUN), write_trec_qrels(tmp_path / "test.qrels", LABELS)
    if fmt == "trec-ext":
        return write_trec_run(tmp_path / "sys.trec", RUN), write_trec_qrels(tmp_path / "test.trec", LABELS)
    if fmt == "trec-sniffed":  # no known extension: 6 / 4 whitespace-separated fields
        return write_trec_run(tmp_path / "sys.txt", RUN), write_trec_qrels(tmp_path / "qrels.txt", LABELS)
    raise AssertionError(fmt)


FILE_FORMATS = [
    "parquet", "pq", "parquet-dir", "csv", "csv.gz", "tsv", "jsonl", "ndjson", "trec", "trec-ext", "trec-sniffed",
]  # fmt: skip


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_files_give_identical_results(tmp_path, fmt, expected):
    run_path, labels_path = _write(tmp_path, fmt)
    _assert_same(result_of(run_path, labels_path), expected)
    _assert_same(result_of(str(run_path), str(labels_path)), expected)  # str paths too


def test_files_and_frames_mix(tmp_path, expected):
    run_path, _ = _write(tmp_path, "trec")
    _assert_same(result_of(run_path, LABELS), expected)
    _, labels_path = _write(tmp_path, "parquet")
    _assert_same(result_of(RUN, labels_path), expected)


def test_explicit_format_overrides_the_extension(tmp_path, expected):
    run_path = tmp_path / "run.data"
    RUN.to_csv(run_path, index=False)
    _assert_same(result_of(run_path, LABELS, format="csv"), expected)
    trec_path = write_trec_run(tmp_path / "run.weird", RUN)
    _assert_same(result_of(trec_path, LABELS, format="trec"), expected)


def test_trec_rank_column_is_ignored(tmp_path, expected):
    # ranks contradicting the scores (reversed, repeated): trec_eval ignores them
    ranks = [len(RUN) - i for i in range(len(RUN))]
    _assert_same(result_of(write_trec_run(tmp_path / "rev.run", RUN, ranks), LABELS), expected)
    _assert_same(result_of(write_trec_run(tmp_path / "same.run", RUN, [1] * len(RUN)), LABELS), expected)


def test_trec_whitespace_variants(tmp_path, expected):
    lines = [f"  {q}\tQ0   {i} 1\t{s!r}  tag  " for q, i, s in RUN.itertuples(index=False)]
    path = tmp_path / "ws.run"
    path.write_text("\n\n".join(lines) + "\n\n")
    _assert_same(result_of(path, LABELS), expected)


def test_integer_ids_in_parquet_match_text_ids_in_trec(tmp_path):
    # ids 9 and 10 tie: as text "9" > "10", whatever the storage type
    run = pd.DataFrame({"request_id": [1, 1, 1, 2], "item_id": [10, 9, 100, 9], "score": [0.5, 0.5, 0.5, 1.0]})
    labels = pd.DataFrame({"request_id": [1, 2], "item_id": [10, 9], "label": [1, 1]})
    run.to_parquet(tmp_path / "run.parquet")
    from_parquet = evaluate(tmp_path / "run.parquet", labels, ["mrr"], n_boot=10).per_request
    trec = write_trec_run(tmp_path / "run.run", run.astype(str).astype({"score": float}))
    from_trec = evaluate(trec, labels.astype({"request_id": str, "item_id": str}), ["mrr"], n_boot=10).per_request
    assert from_parquet["request_id"].tolist() == [1, 2]
    assert from_trec["request_id"].tolist() == ["1", "2"]
    assert from_parquet["mrr"].tolist() == from_trec["mrr"].tolist() == [pytest.approx(1 / 3), 1.0]


# ---------------------------------------------------------------------------
# the readers themselves
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "columns"),
    [
        ("a.run", "run", ["request_id", "item_id", "score", "rank", "tag"]),
        ("a.trec", "run", ["request_id", "item_id", "score", "rank", "tag"]),
        ("a.qrels", "labels", ["request_id", "item_id", "label"]),
        ("a.trec", "labels", ["request_id", "item_id", "label"]),
        ("a.txt", "run", ["request_id", "item_id", "score", "rank", "tag"]),
        ("a.RUN", "run", ["request_id", "item_id", "score", "rank", "tag"]),  # case-insensitive
    ],
)
def test_trec_detection_by_extension(tmp_path, name, kind, columns):
    path = tmp_path / name
    if kind == "run":
        write_trec_run(path, RUN)
    else:
        write_trec_qrels(path, LABELS)
    frame = read_file(path, kind=kind)
    assert frame.columns == columns
    assert frame.height == (len(RUN) if kind == "run" else len(LABELS))
    assert frame["request_id"].dtype == pl.String and frame["item_id"].dtype == pl.String


@pytest.mark.parametrize(
    ("name", "writer"),
    [
        ("a.parquet", lambda df, p: df.to_parquet(p)),
        ("a.pq", lambda df, p: df.to_parquet(p)),
        ("a.csv", lambda df, p: df.to_csv(p, index=False)),
        ("a.tsv", lambda df, p: df.to_csv(p, index=False, sep="\t")),
        ("a.jsonl", lambda df, p: df.to_json(p, orient="records", lines=True)),
        ("a.ndjson", lambda df, p: df.to_json(p, orient="records", lines=True)),
    ],
)
def test_tabular_detection_by_extension(tmp_path, name, writer):
    path = tmp_path / name
    writer(RUN, path)
    frame = read_file(path)
    assert frame.columns == ["request_id", "item_id", "score"]
    assert frame["score"].to_list() == RUN["score"].tolist()
    assert frame["item_id"].to_list() == RUN["item_id"].tolist()


def test_trec_readers_parse_types(tmp_path):
    run = read_trec_run(write_trec_run(tmp_path / "r.run", RUN))
    assert run["score"].dtype == pl.Float64
    assert run["score"].to_list() == RUN["score"].tolist()
    assert run["rank"].to_list() == [str(i) for i in range(1, len(RUN) + 1)]
    qrels = read_trec_qrels(write_trec_qrels(tmp_path / "q.qrels", LABELS))
    assert qrels["label"].dtype == pl.Float64
    assert qrels["label"].to_list() == [float(g) for g in LABELS["label"]]


def test_trec_ids_stay_text(tmp_path):
    path = tmp_path / "ids.run"
    path.write_text("007 Q0 0042 1 1.0 t\n7 Q0 42 2 0.5 t\n")
    frame = read_trec_run(path)
    assert frame["request_id"].to_list() == ["007", "7"]  # not merged into one numeric id
    assert frame["item_id"].to_list() == ["0042", "42"]


def test_to_polars_passes_polars_frames_through():
    frame = pl.from_pandas(RUN)
    assert to_polars(frame) is frame
    assert to_polars(frame.lazy()).equals(frame)
