"""The `receval` command: outputs, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from receval.cli import main

ROOT = Path(__file__).resolve().parents[1]
TOY_RUN = str(ROOT / "fixtures/trec/toy.run")
TOY_QRELS = str(ROOT / "fixtures/trec/toy.qrels")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_output_has_mean_n_and_interval(capsys):
    code, out, err = run_cli(
        capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr", "-m", "ndcg@10", "--output", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["metrics"]) == {"mrr", "ndcg@10"}
    mrr = doc["metrics"]["mrr"]
    # q1 1/3, q2 1/2, q3 1, q4 1/2 (d9 above d10), q5 judged but not run: 0; q6 unjudged: ignored
    assert mrr["mean"] == pytest.approx((1 / 3 + 1 / 2 + 1 + 1 / 2 + 0) / 5, abs=1e-12)
    assert mrr["n"] == 5
    assert mrr["ci_low"] <= mrr["mean"] <= mrr["ci_high"]
    assert doc["counts"]["labels_only_scored_zero"] == 1
    assert doc["counts"]["run_only_ignored"] == 1


def test_canonical_names_in_json(capsys):
    code, out, _ = run_cli(
        capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "NDCG( gain = linear )@3", "--output", "json"
    )
    assert code == 0
    assert list(json.loads(out)["metrics"]) == ["ndcg@3"]


def test_table_and_csv_outputs(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "map")
    assert code == 0
    assert "| map |" in out and "5 requests evaluated" in out
    code, out, _ = run_cli(capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "map", "--output", "csv")
    assert code == 0
    assert out.splitlines()[0] == "metric,mean,ci_low,ci_high,n"


def test_missing_in_run_ignore_flag(capsys):
    code, out, _ = run_cli(
        capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr", "--output", "json",
        "--missing-in-run", "ignore",
    )
    assert code == 0
    assert json.loads(out)["metrics"]["mrr"]["n"] == 4


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["evaluate", "--run", "missing.parquet", "--labels", TOY_QRELS, "-m", "mrr"], "file not found"),
        (["evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "ndgc@10"], "Did you mean 'ndcg'"),
        (["evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "precision"], "needs a cutoff"),
        (["evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr", "--column", "nonsense"], "CANONICAL=YOURS"),
        (["evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS], "--metric"),
        (["evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr", "--output", "xml"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_without_traceback(capsys, argv, needle):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_bad_data_exits_2_and_names_the_column(tmp_path, capsys):
    run = tmp_path / "run.csv"
    run.write_text("request_id,item_id,score\nq1,a,0.5\nq1,b,\nq2,c,0.1\n")
    code, _, err = run_cli(capsys, "evaluate", "--run", str(run), "--labels", TOY_QRELS, "-m", "mrr")
    assert code == 2
    assert "score" in err and "null" in err and "1 row" in err


def test_internal_error_exits_3(monkeypatch, capsys):
    import receval.evaluation as ev

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(ev, "evaluate", boom)
    code, _, err = run_cli(capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr")
    assert code == 3
    assert "internal error" in err and "kaboom" in err


def test_version_and_help_from_a_real_process():
    out = subprocess.run([sys.executable, "-m", "receval", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("receval ")
    out = subprocess.run([sys.executable, "-m", "receval", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "evaluate" in out.stdout
    out = subprocess.run([sys.executable, "-m", "receval", "metrics"], capture_output=True, text=True)
    assert out.returncode == 0 and "ndcg" in out.stdout and "auc" in out.stdout


def test_per_request_output_file(tmp_path, capsys):
    dest = tmp_path / "per_request.csv"
    code, _, _ = run_cli(
        capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr", "--per-request", str(dest)
    )
    assert code == 0
    lines = dest.read_text().splitlines()
    assert lines[0] == "request_id,mrr"
    assert len(lines) == 1 + 5


def test_per_request_into_missing_directory_is_bad_input(tmp_path, capsys):
    dest = tmp_path / "no" / "such" / "dir" / "out.parquet"
    code, _, err = run_cli(
        capsys, "evaluate", "--run", TOY_RUN, "--labels", TOY_QRELS, "-m", "mrr", "--per-request", str(dest)
    )
    assert code == 2
    assert "cannot write" in err and "Traceback" not in err


def test_no_evaluable_request_is_an_error_not_a_nan(tmp_path, capsys):
    labels = tmp_path / "other.qrels"
    labels.write_text("zz 0 d1 1\n")
    code, out, err = run_cli(
        capsys, "evaluate", "--run", TOY_RUN, "--labels", str(labels), "-m", "mrr", "--missing-in-run", "ignore"
    )
    assert code == 2
    assert "at least one request must be evaluable" in err
    assert out == ""


def test_engine_flag_reaches_evaluate_and_compare(tmp_path, capsys, monkeypatch):
    # --engine streaming gives the in-memory numbers, and really runs the streaming engine
    from receval.data.readers import read_file
    from receval.engines import streaming

    run, qrels = tmp_path / "run.parquet", tmp_path / "qrels.parquet"
    read_file(TOY_RUN, kind="run").sort("request_id").write_parquet(run)
    read_file(TOY_QRELS, kind="labels").write_parquet(qrels)
    calls = []
    real = streaming.score_streaming
    monkeypatch.setattr(streaming, "score_streaming", lambda *a, **k: calls.append(1) or real(*a, **k))
    docs = {}
    for engine in ("polars", "streaming"):
        code, out, err = run_cli(capsys, "evaluate", "--run", str(run), "--labels", str(qrels), "-m", "mrr",
                                 "-m", "ndcg@3", "--output", "json", "--engine", engine)
        assert code == 0, err
        docs[engine] = json.loads(out)
    assert docs["streaming"]["metrics"] == docs["polars"]["metrics"] and len(calls) == 1
    for engine in ("polars", "streaming"):
        code, out, err = run_cli(capsys, "compare", "--run", f"a={run}", "--run", f"b={run}", "--labels", str(qrels),
                                 "-m", "mrr", "--output", "json", "--engine", engine)
        assert code == 0, err
        docs[engine] = json.loads(out)
    assert docs["streaming"] == docs["polars"] and len(calls) == 3
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", str(run), "--labels", str(qrels), "-m", "mrr", "--engine", "gpu"])
    assert exc.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err
