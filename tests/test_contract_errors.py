"""Error tables: bad input gives one clear error naming column, rule, rows, examples.

Every case checks the exception type, the structured violations
(``InputError.violations``: column, rule, n_rows, examples, hint) and that the
message a user reads carries the same facts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from receval import evaluate
from receval.errors import InputError, MetricNameError, ReceValError, UsageError, Violation


def run_frame(**overrides) -> pd.DataFrame:
    data = {
        "request_id": ["q1", "q1", "q1", "q2"],
        "item_id": ["a", "b", "c", "a"],
        "score": [0.9, 0.5, 0.1, 0.3],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def label_frame(**overrides) -> pd.DataFrame:
    data = {"request_id": ["q1", "q2"], "item_id": ["b", "a"], "label": [1, 2]}
    data.update(overrides)
    return pd.DataFrame(data)


def assert_violation(v: Violation, column: str, rule: str, n_rows: int, examples: tuple[str, ...] = ()):
    assert column == v.column, v
    assert rule in v.rule, v
    assert v.n_rows == n_rows, v
    for ex in examples:
        assert any(ex in e for e in v.examples), (ex, v.examples)


def assert_message(err: Exception, *fragments: str):
    msg = str(err)
    for f in fragments:
        assert f in msg, (f, msg)


# (id, run, labels, frame, [(column, rule fragment, n_rows, example fragments)], message fragments)
CASES = [
    pytest.param(
        run_frame(request_id=["q1", None, "q1", "q2"]),
        label_frame(),
        "run",
        [("request_id", "must not be null", 1, ("row 1",))],
        ["run: 1 data contract violation", "request_id: must not be null", "1 row violates this", "row 1"],
        id="null-request-id",
    ),
    pytest.param(
        run_frame(score=[0.9, np.nan, 0.1, np.nan]),
        label_frame(),
        "run",
        [("score", "must not be null or NaN", 2, ("row 1", "row 3"))],
        ["score: must not be null or NaN", "2 rows violate this", "row 1", "row 3", "Hint:"],
        id="nan-score-pandas",
    ),
    pytest.param(
        pl.DataFrame({"request_id": ["q1", "q1"], "item_id": ["a", "b"], "score": [1.0, float("nan")]}),
        label_frame(),
        "run",
        [("score", "must not be null or NaN", 1, ("row 1: NaN",))],
        ["score: must not be null or NaN", "1 row violates this", "row 1: NaN"],
        id="nan-score-polars",
    ),
    pytest.param(
        run_frame(),
        label_frame(label=[1, None]),
        "labels",
        [("label", "must not be null", 1, ("row 1",))],
        ["labels: 1 data contract violation", "label: must not be null", "row 1"],
        id="null-label",
    ),
    pytest.param(
        run_frame(),
        label_frame(label=[np.inf, 1.0]),
        "labels",
        [("label", "must be finite", 1, ("row 0: inf",))],
        ["label: must be finite", "1 row violates this", "row 0: inf"],
        id="infinite-label",
    ),
    pytest.param(
        run_frame(score=["high", "low", "low", "mid"]),
        label_frame(),
        "run",
        [("score", "must be numeric", 4, ("'high'", "'low'"))],
        ["score: must be numeric, found dtype String", "4 rows violate this", "'high'", "convert the column to numbers"],
        id="string-scores",
    ),
    pytest.param(
        run_frame(item_id=[1.5, 2.0, 3.0, 1.5]),
        label_frame(item_id=[2.0, 1.5]),
        "run",
        [("item_id", "must hold integers or text", 4, ("1.5",))],
        ["item_id: must hold integers or text, found dtype Float64", "4 rows violate this", "1.5", "cast ids to int or str"],
        id="float-item-ids",
    ),
    pytest.param(
        run_frame(request_id=["q1", "q1", "q1", "q1"], item_id=["a", "b", "a", "c"]),
        label_frame(),
        "run",
        [("request_id, item_id", "each item may appear once per request", 1, ("row 2", "'a'"))],
        ["each item may appear once per request", "1 row violates this", "row 2: ('q1', 'a')", "drop duplicate"],
        id="duplicate-run-pair",
    ),
    pytest.param(
        # scattered rows: the example row must be the row number in the user's frame
        run_frame(request_id=["q1", "q2", "q1", "q1"], item_id=["a", "x", "b", "a"]),
        label_frame(),
        "run",
        [("request_id, item_id", "each item may appear once per request", 1, ("row 3",))],
        ["row 3: ('q1', 'a')"],
        id="duplicate-run-pair-scattered",
    ),
    pytest.param(
        run_frame(),
        label_frame(request_id=["q1", "q2", "q1"], item_id=["b", "a", "b"], label=[1, 2, 0]),
        "labels",
        [("request_id, item_id", "judged once", 1, ("row 2",))],
        ["labels: 1 data contract violation", "each (request, item) pair must be judged once", "1 row violates this", "row 2: ('q1', 'b')"],
        id="duplicate-judgement",
    ),
    pytest.param(
        run_frame(item_id=["a", 2, "c", "a"]),
        label_frame(),
        "run",
        [("item_id", "must hold one type", 1, ("2",))],
        ["item_id: must hold one type; found str (3), int (1)", "1 row violates this", "cast the column to str"],
        id="mixed-object-column",
    ),
    pytest.param(
        run_frame(score=[0.9, np.nan, 0.1, 0.3], item_id=["a", "b", None, "a"]),
        label_frame(),
        "run",
        [
            ("item_id", "must not be null", 1, ("row 2",)),
            ("score", "must not be null or NaN", 1, ("row 1",)),
        ],
        ["run: 2 data contract violations", "item_id: must not be null", "score: must not be null"],
        id="several-violations-at-once",
    ),
    pytest.param(
        pl.DataFrame({"request_id": [1, 2], "item_id": [True, False], "score": [1.0, 2.0]}),
        label_frame(),
        "run",
        [("item_id", "must hold integers or text", 2, ())],
        ["item_id: must hold integers or text, found dtype Boolean"],
        id="boolean-item-ids",
    ),
]


@pytest.mark.parametrize(("run", "labels", "frame", "violations", "fragments"), CASES)
def test_input_errors(run, labels, frame, violations, fragments):
    with pytest.raises(InputError) as info:
        evaluate(run, labels, ["ndcg@10"])
    err = info.value
    assert err.frame == frame
    assert len(err.violations) == len(violations), err.violations
    got = sorted(err.violations, key=lambda v: v.column)
    for v, (column, rule, n_rows, examples) in zip(got, sorted(violations), strict=True):
        assert_violation(v, column, rule, n_rows, examples)
    assert_message(err, *fragments)
    # a ReceValError and a ValueError: one except clause catches every input problem
    assert isinstance(err, ReceValError) and isinstance(err, ValueError)
    for v in err.violations:
        d = v.to_dict()
        assert d["column"] == v.column and d["n_rows"] == v.n_rows and d["examples"] == list(v.examples)


def test_duplicate_count_covers_every_request():
    run = pd.DataFrame(
        [("q1", "a", 1.0), ("q2", "x", 1.0), ("q1", "a", 2.0), ("q2", "x", 3.0), ("q2", "y", 1.0), ("q2", "x", 0.0)],
        columns=["request_id", "item_id", "score"],
    )
    with pytest.raises(InputError) as info:
        evaluate(run, label_frame(), ["ndcg"])
    # requests of different lengths (2 and 4 rows) are scored in different
    # buckets: the count must still cover all of them
    (v,) = info.value.violations
    assert v.rule == "each item may appear once per request"
    assert v.n_rows == 3  # rows 2, 3 and 5 repeat an earlier (request, item) pair
    assert v.examples == ("row 2: ('q1', 'a')", "row 3: ('q2', 'x')", "row 5: ('q2', 'x')")


# ---------------------------------------------------------------------------
# missing columns and the column mapping
# ---------------------------------------------------------------------------


def test_missing_required_column_hints_at_the_mapping():
    with pytest.raises(InputError) as info:
        evaluate(run_frame().rename(columns={"score": "prediction_value"}), label_frame(), ["ndcg"])
    (v,) = info.value.violations
    assert_violation(v, "score", "required column is missing", 4)
    assert "columns={'score': " in v.hint
    assert_message(info.value, "run:", "score: required column is missing", "Hint:", "columns=")


def test_missing_column_hint_lists_the_users_columns():
    with pytest.raises(InputError) as info:
        evaluate(run_frame().rename(columns={"score": "prediction_value"}), label_frame(), ["ndcg"])
    (v,) = info.value.violations
    assert "prediction_value" in v.hint  # what the user has, so they can map it


def test_missing_column_with_a_near_match_suggests_it():
    with pytest.raises(InputError) as info:
        evaluate(run_frame().rename(columns={"request_id": "Request_ID"}), label_frame(), ["ndcg"])
    (v,) = info.value.violations
    assert v.column == "request_id"
    assert "columns={'request_id': 'Request_ID'}" in v.hint


def test_all_missing_columns_are_listed_together():
    with pytest.raises(InputError) as info:
        evaluate(pd.DataFrame({"qid": ["q"], "doc": ["a"], "s": [1.0]}), label_frame(), ["ndcg"])
    assert sorted(v.column for v in info.value.violations) == ["item_id", "request_id", "score"]


def test_missing_label_column():
    with pytest.raises(InputError) as info:
        evaluate(run_frame(), label_frame().rename(columns={"label": "relevance"}), ["ndcg"])
    assert info.value.frame == "labels"
    (v,) = info.value.violations
    assert v.column == "label"
    assert v.rule == "required column is missing"
    assert "columns={'label': " in v.hint


MAPPING = {"request_id": "qid", "item_id": "docno", "score": "sim", "label": "rel"}


def _mapped(run: pd.DataFrame, labels: pd.DataFrame):
    return run.rename(columns={"request_id": "qid", "item_id": "docno", "score": "sim"}), labels.rename(
        columns={"request_id": "qid", "item_id": "docno", "label": "rel"}
    )


def test_column_mapping_gives_the_same_result():
    expected = evaluate(run_frame(), label_frame(), ["ndcg@10", "mrr"]).per_request
    run, labels = _mapped(run_frame(), label_frame())
    got = evaluate(run, labels, ["ndcg@10", "mrr"], columns=MAPPING).per_request
    pd.testing.assert_frame_equal(got, expected)
    # separate mappings for the two frames
    got2 = evaluate(
        run,
        label_frame().rename(columns={"label": "grade"}),
        ["ndcg@10", "mrr"],
        columns={"request_id": "qid", "item_id": "docno", "score": "sim"},
        label_columns={"label": "grade"},
    ).per_request
    pd.testing.assert_frame_equal(got2, expected)
    # extra, unrelated columns are fine
    got3 = evaluate(run.assign(extra=["x"] * 4), labels.assign(note="n"), ["ndcg@10", "mrr"], columns=MAPPING)
    pd.testing.assert_frame_equal(got3.per_request, expected)


@pytest.mark.parametrize(
    ("run", "labels", "fragments"),
    [
        pytest.param(
            run_frame(score=[0.9, np.nan, 0.1, 0.3]),
            label_frame(),
            ["score (your column 'sim'): must not be null or NaN", "row 1"],
            id="nan",
        ),
        pytest.param(
            run_frame(score=["x"] * 4), label_frame(), ["score (your column 'sim'): must be numeric"], id="type"
        ),
        pytest.param(
            run_frame(item_id=["a", "a", "b", "a"]),
            label_frame(),
            ["request_id (your column 'qid'), item_id (your column 'docno'): each item may appear once", "row 1"],
            id="duplicate",
        ),
        pytest.param(
            run_frame(), label_frame(label=[None, 1]), ["label (your column 'rel'): must not be null"], id="label"
        ),
    ],
)
def test_errors_name_the_users_column(run, labels, fragments):
    run, labels = _mapped(run, labels)
    with pytest.raises(InputError) as info:
        evaluate(run, labels, ["ndcg"], columns=MAPPING)
    assert_message(info.value, *fragments)


def test_missing_mapped_column_names_the_users_column():
    run, labels = _mapped(run_frame(), label_frame())
    with pytest.raises(InputError) as info:
        evaluate(run.drop(columns="sim"), labels, ["ndcg"], columns=MAPPING)
    (v,) = info.value.violations
    assert v.column == "score (your column 'sim')"
    assert v.rule == "required column is missing"


@pytest.mark.parametrize(
    ("columns", "fragment"),
    [
        ({"query": "qid"}, "unknown canonical column(s) ['query']"),
        ({"request_id": "x", "item_id": "x"}, "more than once"),
        (["request_id"], "columns must map canonical names"),
    ],
)
def test_bad_column_mapping_is_a_usage_error(columns, fragment):
    with pytest.raises(UsageError) as info:
        evaluate(run_frame(), label_frame(), ["ndcg"], columns=columns)
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------
# usage errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"missing_in_run": "drop"}, "missing_in_run must be 'zero' or 'ignore', got 'drop'"),
        ({"missing_in_labels": 0}, "missing_in_labels must be 'zero' or 'ignore'"),
        ({"level": 1.5}, "level must lie in (0, 1)"),
        ({"level": 0}, "level must lie in (0, 1)"),
        ({"n_boot": 0}, "n_boot must be a positive integer"),
        ({"n_boot": 2.5}, "n_boot must be a positive integer"),
    ],
)
def test_bad_options_are_usage_errors(kwargs, fragment):
    with pytest.raises(UsageError) as info:
        evaluate(run_frame(), label_frame(), ["ndcg"], **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("bad", [[1, 2, 3], {"request_id": ["q"]}, 42, np.zeros((2, 3))])
def test_unsupported_input_type(bad):
    with pytest.raises(UsageError, match="expected a pandas/polars/pyarrow frame or a file path"):
        evaluate(bad, label_frame(), ["ndcg"])


def test_metric_name_errors_are_not_input_errors():
    with pytest.raises(MetricNameError):
        evaluate(run_frame(), label_frame(), ["ndcg@0"])


def test_duplicate_column_names_in_pandas():
    run = pd.DataFrame([["q", "a", 1.0, 2.0]], columns=["request_id", "item_id", "score", "score"])
    with pytest.raises(InputError) as info:
        evaluate(run, label_frame(), ["ndcg"])
    (v,) = info.value.violations
    assert "score" in v.column
    assert v.rule == "column names must be unique"


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def test_unknown_file(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(UsageError) as info:
        evaluate(path, label_frame(), ["ndcg"])
    assert "file not found" in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(UsageError, match="labels: file not found"):
        evaluate(run_frame(), tmp_path / "missing.qrels", ["ndcg"])


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("corrupt.parquet", b"this is not parquet", "as parquet"),
        ("broken.jsonl", b'{"request_id": "q1", "item_id": \n', "as jsonl"),
    ],
)
def test_unreadable_file(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        evaluate(path, label_frame(), ["ndcg"])
    msg = str(info.value)
    assert msg.startswith("run: cannot read")
    assert str(path) in msg and fragment in msg
    assert "\n" not in msg  # one line, no traceback from inside a library


def test_unknown_extension(tmp_path):
    path = tmp_path / "run.data"
    path.write_text("request_id,item_id,score\nq1,a,1.0\n")
    with pytest.raises(UsageError, match="cannot tell the format") as info:
        evaluate(path, label_frame(), ["ndcg"])
    assert "format='trec'" in str(info.value)


def test_bad_trec_run_line(tmp_path):
    path = tmp_path / "bad.run"
    path.write_text("q1 Q0 a 1 0.9 tag\nq1 Q0 b 2 0.5\nq1 Q0 c 3 0.1 tag\nq2 Q0 a 1 0.3 tag extra\n")
    with pytest.raises(InputError) as info:
        evaluate(path, label_frame(), ["ndcg"])
    (v,) = info.value.violations
    assert "exactly 6 whitespace-separated fields" in v.rule
    assert v.n_rows == 2
    assert v.examples[0].startswith("line 2:")
    assert v.examples[1].startswith("line 4:")
    assert_message(info.value, "TREC run file", str(path), "line 2: 'q1 Q0 b 2 0.5'", "2 rows violate this")


def test_bad_trec_qrels_line(tmp_path):
    path = tmp_path / "bad.qrels"
    path.write_text("q1 0 b 1\n\nq2 0 a\n")  # blank lines are skipped, numbering is the file's
    with pytest.raises(InputError) as info:
        evaluate(run_frame(), path, ["ndcg"])
    (v,) = info.value.violations
    assert "exactly 4 whitespace-separated fields" in v.rule
    assert v.n_rows == 1
    assert v.examples == ("line 3: 'q2 0 a'",)


def test_trec_non_numeric_score_and_label(tmp_path):
    run = tmp_path / "r.run"
    run.write_text("q1 Q0 a 1 0.9 t\nq1 Q0 b 2 high t\n")
    with pytest.raises(InputError) as info:
        evaluate(run, label_frame(), ["ndcg"])
    (v,) = info.value.violations
    assert (v.column, v.rule, v.n_rows, v.examples) == ("score", "must be a number", 1, ("'high'",))

    qrels = tmp_path / "q.qrels"
    qrels.write_text("q1 0 a yes\n")
    with pytest.raises(InputError) as info:
        evaluate(run_frame(), qrels, ["ndcg"])
    (v,) = info.value.violations
    assert (v.column, v.rule, v.n_rows, v.examples) == ("label", "must be a number", 1, ("'yes'",))


def test_error_message_layout():
    v = Violation("score", "must not be null or NaN", 2, ("row 1: None", "row 3: None"), "drop them")
    assert str(v) == "score: must not be null or NaN; 2 rows violate this, e.g. row 1: None, row 3: None. Hint: drop them"
    assert str(Violation("x", "r", 1)) == "x: r; 1 row violates this"
    err = InputError("run", [v, Violation("x", "r", 1)])
    assert str(err).splitlines() == [
        "run: 2 data contract violations",
        "  - " + str(v),
        "  - x: r; 1 row violates this",
    ]


def test_valid_edge_values_are_accepted():
    # +-inf scores sort first / last; negative and fractional labels are fine
    run = run_frame(score=[math.inf, 0.5, -math.inf, 0.3])
    labels = label_frame(label=[-1.5, 0.5])
    res = evaluate(run, labels, ["mrr", "ndcg"], n_boot=10)
    frame = res.per_request.set_index("request_id")
    # q2: a is relevant at grade 0.5 for nDCG (gain) but below min_label 1 for RR
    assert frame.loc["q2", "ndcg"] == 1.0
    assert frame.loc["q2", "mrr"] == 0.0
