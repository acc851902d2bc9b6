"""`import receval` and the CLI stay fast: heavy libraries load on first use."""

import subprocess
import sys

HEAVY = ["numpy", "pandas", "polars", "pyarrow", "pandera", "sklearn", "matplotlib", "fairlearn", "pyspark"]


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m for m in out.stdout.strip().split(",") if m}


def test_import_receval_loads_no_heavy_library():
    assert _loaded_after("import receval") == set()


def test_cli_parser_loads_no_heavy_library():
    assert _loaded_after("from receval.cli import build_parser; build_parser().parse_args(['metrics'])") == set()


def test_lazy_attributes_resolve():
    out = subprocess.run(
        [sys.executable, "-c", "import receval; print(receval.evaluate.__name__, receval.parse_metric('ndcg@10'))"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["evaluate", "ndcg@10"]


def test_import_time_under_300ms():
    # -X importtime reports microseconds cumulatively per module; the last line is receval itself
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import receval"], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stderr.splitlines() if ln.rstrip().endswith("| receval")][-1]
    cumulative_us = int(line.split("|")[1])
    assert cumulative_us < 300_000


def test_engine_modules_do_not_import_pyspark():
    # a Spark DataFrame is recognised by its class's module name; pyspark loads only when one is passed
    loaded = _loaded_after("import receval.engines.spark, receval.engines.streaming; receval.engines.is_spark_frame(1)")
    assert "pyspark" not in loaded


def test_import_receval_and_running_the_gate_cli_never_import_hypothesis():
    # receval.testing imports hypothesis (a test dependency): only tests may import it
    probe = "import sys, receval, receval.gate, receval.reporting, receval.cli; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    probe = "import sys, receval.testing; print('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "True"
