"""Benchmark the scale-out engines: Spark (local mode) vs polars, and the out-of-core scaling curve.

Data: Q requests x 100 items (about 1% tied scores, 5 graded relevant items
per request; ``bench_metrics.generate``), written to Parquet chunk by chunk
(never held whole in memory) in a temporary directory, and deleted afterwards.
Every measurement runs in a fresh child process, so its peak RSS is its own;
metrics: ndcg@10, map@100, recall@100, mrr@10 with 1,000 bootstrap replicates,
end to end from the Parquet files.

    # Spark local[2] vs the polars engines on 10M rows (prints the ratio)
    python benchmarks/bench_spark.py spark --rows 10000000
    # the polars scaling curve: in-memory and streaming engine, time and peak RSS
    python benchmarks/bench_spark.py scaling --rows 1000000 10000000 100000000
    # the same with requests scattered in the file (the streaming engine partitions to disk)
    python benchmarks/bench_spark.py scaling --layout scattered --rows 1000000 10000000 100000000

    # off-policy estimators: 1M rounds, 5 candidates each (IPS, SNIPS, DR with a q_hat column), Spark vs in memory
    python benchmarks/bench_spark.py ope --rows 1000000 --candidates 5

Spark needs ``pip install 'receval[spark]'`` and Java 17. For Spark the peak
RSS is given per process kind: the Python driver, the JVM, and the largest
Python worker (each its own high-water mark, VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

METRICS = ["ndcg@10", "map@100", "recall@100", "mrr@10"]
ITEMS = 100
CHUNK_REQUESTS = 20_000  # 2M rows generated and written at a time


def write_data(rows: int, directory: str, seed: int = 0, layout: str = "grouped") -> tuple[str, str]:
    """run.parquet and labels.parquet with ``rows`` run rows, written chunk by chunk.

    ``layout="grouped"``: the rows of a request are adjacent (requests in id
    order), as in logs written request by request; ``"scattered"``: rows are
    shuffled within each written chunk of 2M rows, so requests are not grouped.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench_metrics import generate

    q_total = rows // ITEMS
    run_path, lab_path = os.path.join(directory, "run.parquet"), os.path.join(directory, "labels.parquet")
    run_w = lab_w = None
    for i, start in enumerate(range(0, q_total, CHUNK_REQUESTS)):
        q = min(CHUNK_REQUESTS, q_total - start)
        run, labels = generate(q, ITEMS, seed + i, "int")
        run["request_id"] += start
        labels["request_id"] += start
        if layout == "scattered":
            run = run.sample(frac=1.0, random_state=seed + i, ignore_index=True)
        rt, lt = pa.Table.from_pandas(run, preserve_index=False), pa.Table.from_pandas(labels, preserve_index=False)
        if run_w is None:
            run_w, lab_w = pq.ParquetWriter(run_path, rt.schema), pq.ParquetWriter(lab_path, lt.schema)
        run_w.write_table(rt, row_group_size=1 << 20)
        lab_w.write_table(lt)
    run_w.close()
    lab_w.close()
    return run_path, lab_path


def write_ope_data(rounds: int, candidates: int, directory: str, seed: int = 0) -> tuple[str, str]:
    """log.parquet (one row per round) and target.parquet (the target's distribution over each round's candidates)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_items, n_contexts = 80, 100
    logits = rng.normal(-3.0, 0.7, (n_contexts, n_items))
    q = 1 / (1 + np.exp(-logits))
    x = rng.integers(0, n_contexts, rounds)
    cand = (x[:, None] * 7 + np.arange(candidates)[None, :] * 11) % n_items  # (rounds, C), distinct items
    lq = logits[x[:, None], cand]
    pi_b = np.exp(rng.normal(0, 1, (rounds, candidates)))
    pi_b /= pi_b.sum(1, keepdims=True)
    pi_e = np.exp(lq / 0.7)
    pi_e /= pi_e.sum(1, keepdims=True)
    q_hat = np.clip(q[x[:, None], cand] + rng.normal(0, 0.005, (rounds, candidates)), 1e-4, 1)
    pick = (rng.random(rounds)[:, None] > np.cumsum(pi_b, 1)).sum(1).clip(0, candidates - 1)
    rows = np.arange(rounds)
    reward = (rng.random(rounds) < q[x, cand[rows, pick]]).astype(np.float64)
    log = pa.table({"request_id": rows, "item_id": cand[rows, pick], "reward": reward,
                    "propensity": pi_b[rows, pick], "q_hat": q_hat[rows, pick]})
    target = pa.table({"request_id": np.repeat(rows, candidates), "item_id": cand.ravel(),
                       "probability": pi_e.ravel(), "q_hat": q_hat.ravel()})
    log_path, target_path = os.path.join(directory, "log.parquet"), os.path.join(directory, "target.parquet")
    pq.write_table(log, log_path, row_group_size=1 << 20)
    pq.write_table(target, target_path, row_group_size=1 << 20)
    return log_path, target_path


def ope(args, engine: str) -> tuple[list[float], dict, int]:
    from receval.counterfactual import DR, IPS, SNIPS, estimate_many, logged_feedback

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        data = logged_feedback(args.run, args.labels, q_hat_column="q_hat", reward_range=(0, 1), engine=engine)
        res = estimate_many([IPS(), SNIPS(), DR()], data, n_boot=1000, seed=0)
        times.append(time.perf_counter() - t0)
    summary = {r.name: [r.value, r.ci_low, r.ci_high, r.diagnostics["ess"], r.diagnostics["weight_q99"]] for r in res}
    return times, summary, data.n_units


def _vmhwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = []
        try:
            for task in os.listdir(f"/proc/{p}/task"):  # children started by any thread
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids += [int(x) for x in fh.read().split()]
        except OSError:
            pass
        out += kids
        todo += kids
    return out


def child(args) -> None:
    import receval

    out: dict = {"engine": args.engine, "rows": args.rows}
    if args.engine == "spark":
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        t0 = time.perf_counter()
        spark = (
            SparkSession.builder.master("local[2]")
            .config("spark.sql.shuffle.partitions", str(args.partitions))
            .config("spark.driver.memory", args.driver_memory)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        out["session_s"] = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat if not args.ope else 0):
            t0 = time.perf_counter()
            res = receval.evaluate(args.run, args.labels, METRICS, engine="spark")
            times.append(time.perf_counter() - t0)
        if args.ope:
            times, summary, n = ope(args, "spark")
        jvm = spark.sparkContext._gateway.proc.pid
        procs = _descendants(jvm)
        out["jvm_peak_rss_mb"] = max([_vmhwm_mb(jvm)] + [_vmhwm_mb(p) for p in procs if _is_java(p)])
        out["python_worker_peak_rss_mb"] = max([_vmhwm_mb(p) for p in procs if not _is_java(p)] + [0.0])
        spark.stop()
    elif args.ope:
        times, summary, n = ope(args, args.engine)
    else:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = receval.evaluate(args.run, args.labels, METRICS, engine=args.engine)
            times.append(time.perf_counter() - t0)
    out["times_s"] = times
    out["best_s"] = min(times)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.ope:
        out["summary"], out["n"] = summary, n
    else:
        out["summary"] = {m: [s.mean, s.ci_low, s.ci_high] for m, s in res.summary.items()}
        out["n"] = res.counts["evaluated"]
    print(json.dumps(out))


def _is_java(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "java"
    except OSError:
        return False


def measure(engine: str, run: str, labels: str, rows: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, "--run", run, "--labels", labels, "--rows", str(rows),
           "--repeat", str(args.repeat), "--partitions", str(args.partitions), "--driver-memory", args.driver_memory]
    cmd += ["--ope"] if args.mode == "ope" else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return {"engine": engine, "rows": rows, "error": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['engine']:>9}  {r['rows']:>12,}  failed (exit {r['error']})"
    text = f"{r['engine']:>9}  {r['rows']:>12,}  best {r['best_s']:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in r['times_s'])})  peak RSS {r['peak_rss_mb']:7.0f} MB"
    if r["engine"] == "spark":
        text += (f" (driver); JVM {r['jvm_peak_rss_mb']:.0f} MB, largest Python worker "
                 f"{r['python_worker_peak_rss_mb']:.0f} MB; session start {r['session_s']:.1f} s")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", choices=["spark", "scaling", "ope"], default="spark")
    p.add_argument("--candidates", type=int, default=5, help="ope: candidates per round in the target")
    p.add_argument("--ope", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=float, nargs="+", default=None)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--engines", nargs="+", default=None, help="scaling: engines to time (polars, streaming)")
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--layout", choices=["grouped", "scattered"], default="grouped",
                   help="rows of a request adjacent in the file (default) or shuffled")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--labels", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.engine, args.rows = args.child, int(args.rows[0])
        child(args)
        return
    if args.mode == "ope":
        return main_ope(args)
    sizes = [int(r) for r in (args.rows or ([10_000_000] if args.mode == "spark" else [1_000_000, 10_000_000, 100_000_000]))]
    engines = ["polars", "streaming", "spark"] if args.mode == "spark" else (args.engines or ["polars", "streaming"])
    print(f"{os.cpu_count()} cores; metrics {', '.join(METRICS)}; 1,000 bootstrap replicates; best of {args.repeat}")
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="receval-bench-", dir=args.tmpdir) as tmp:
            t0 = time.perf_counter()
            run, labels = write_data(rows, tmp, layout=args.layout)
            size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e6
            print(f"-- {rows:,} run rows ({args.layout}): Parquet {size:,.0f} MB, written in {time.perf_counter() - t0:.1f} s")
            results = {}
            for engine in engines:
                results[engine] = r = measure(engine, run, labels, rows, args)
                print(_line(r), flush=True)
            ok = [r for r in results.values() if "error" not in r]
            if len(ok) > 1:
                ref = ok[0]["summary"]
                same = all(r["summary"] == ref for r in ok[1:])
                print(f"   same means and intervals on every engine: {same}")
            if "spark" in results and "polars" in results and "error" not in results["spark"] and "error" not in results["polars"]:
                for base in ("polars", "streaming"):
                    if base in results and "error" not in results[base]:
                        print(f"   ratio spark / {base}: {results['spark']['best_s'] / results[base]['best_s']:.1f}x")


def main_ope(args) -> None:
    rounds = int((args.rows or [1_000_000])[0])
    print(f"{os.cpu_count()} cores; IPS, SNIPS, DR (q_hat column), 1,000 bootstrap replicates, end to end from "
          f"Parquet (validation included); best of {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="receval-bench-", dir=args.tmpdir) as tmp:
        log, target = write_ope_data(rounds, args.candidates, tmp)
        print(f"-- {rounds:,} rounds, target {rounds * args.candidates:,} rows ({args.candidates} candidates per round)")
        results = {}
        for engine in ("polars", "spark"):
            results[engine] = r = measure(engine, log, target, rounds, args)
            print(_line(r), flush=True)
        if all("error" not in r for r in results.values()):
            a, b = results["polars"]["summary"], results["spark"]["summary"]
            diff = max(abs(x - y) for k in a for x, y in zip(a[k], b[k], strict=True))
            print(f"   largest difference in values, intervals, ESS and q99 weight: {diff:.2e}")
            print(f"   ratio spark / polars: {results['spark']['best_s'] / results['polars']['best_s']:.1f}x")


if __name__ == "__main__":
    main()
