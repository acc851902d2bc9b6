"""Benchmark: receval vs pytrec_eval vs ranx on the same generated run.

Generates a run of Q requests x L items (about 1% of items share their score
with another item of the same request; about 5 graded relevant items per
request), then, in one benchmark run, times each tool in its own fresh child
process (so peak memory is the tool's own):

* receval end-to-end from a pandas DataFrame (validation, ranking, metrics,
  bootstrap intervals) and from a polars DataFrame;
* pytrec_eval: building its dicts from the DataFrame + evaluator construction
  + evaluation;
* ranx: Qrels/Run construction from the DataFrame + evaluation (numba JIT is
  warmed on a tiny input first and reported separately).

Prints per tool the median wall time over ``--repeat`` runs, the peak RSS of
the child process and the RSS added over the generated data, the ratios
receval / reference, and checks that the metric means agree.

    python benchmarks/bench_metrics.py --queries 100000          # 10M rows
    python benchmarks/bench_metrics.py --queries 1000000 --tools receval-pandas --repeat 1   # 100M rows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

METRICS = ["ndcg@10", "map@100", "recall@100", "mrr@10"]
PYTREC = {"ndcg@10": "ndcg_cut_10", "map@100": "map_cut_100", "recall@100": "recall_100", "mrr": "recip_rank"}
TOOLS = ["receval-pandas", "receval-polars", "pytrec_eval", "ranx"]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def generate(q: int, length: int, seed: int, id_type: str):
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = q * length
    request = np.repeat(np.arange(q, dtype=np.int64), length)
    item = rng.integers(0, 1_000_000, size=n, dtype=np.int64)
    # make items unique within each request: add the column offset on a grid
    item = (item // length) * length + np.tile(np.arange(length), q)
    # float32-representable scores: pytrec_eval (trec_eval 9.0.8) keeps 32-bit
    # scores, so any finer difference would be a tie for it but not for us
    score = rng.random(n, dtype=np.float32).astype(np.float64)
    # ~1% of rows copy the score of their neighbour in the same request: exact ties
    tie = np.flatnonzero(rng.random(n) < 0.01)
    tie = tie[(tie % length) != 0]
    score[tie] = score[tie - 1]
    # 5 graded relevant items per request, chosen among its listed items
    pick = rng.integers(0, length, size=(q, 5))
    rows = (np.arange(q)[:, None] * length + pick).ravel()
    labels = pd.DataFrame(
        {"request_id": request[rows], "item_id": item[rows], "label": rng.integers(1, 4, size=len(rows))}
    ).drop_duplicates(["request_id", "item_id"], ignore_index=True)
    run = pd.DataFrame({"request_id": request, "item_id": item, "score": score})
    if id_type == "str":
        run["request_id"] = "q" + run["request_id"].astype(str)
        run["item_id"] = "d" + run["item_id"].astype(str)
        labels["request_id"] = "q" + labels["request_id"].astype(str)
        labels["item_id"] = "d" + labels["item_id"].astype(str)
    return run, labels


def tool_receval(run, labels, polars: bool):
    import receval

    if polars:
        import polars as pl

        run, labels = pl.from_pandas(run), pl.from_pandas(labels)

    def once():
        res = receval.evaluate(run, labels, METRICS)
        return {m: res.summary[m].mean for m in METRICS}

    def check():
        res = receval.evaluate(run, labels, ["ndcg@10", "map@100", "recall@100", "mrr"], n_boot=1)
        return {m: s.mean for m, s in res.summary.items()}

    return once, check


def _pytrec_dicts(run, labels):
    def build(frame, value):
        q = frame["request_id"].astype(str).tolist()
        d = frame["item_id"].astype(str).tolist()
        v = frame[value].tolist()
        rid = frame["request_id"].to_numpy()
        cuts = np.concatenate([[0], np.flatnonzero(rid[1:] != rid[:-1]) + 1, [len(rid)]])
        out = {}
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            out[q[a]] = dict(zip(d[a:b], v[a:b], strict=True))
        return out

    labels = labels.sort_values("request_id", kind="stable")
    return build(run, "score"), build(labels, "label")


def tool_pytrec(run, labels):
    import pytrec_eval

    measures = {"ndcg_cut.10", "map_cut.100", "recall.100", "recip_rank"}

    def evaluate():
        r, q = _pytrec_dicts(run, labels)
        ev = pytrec_eval.RelevanceEvaluator(q, measures)
        return ev.evaluate(r)

    def once():
        per = evaluate()
        return {k: statistics.fmean(v[k] for v in per.values()) for k in ("ndcg_cut_10", "map_cut_100", "recall_100")}

    def check():
        per = evaluate()
        return {m: statistics.fmean(v[k] for v in per.values()) for m, k in PYTREC.items()}

    return once, check


def tool_ranx(run, labels):
    from ranx import Qrels, Run, evaluate

    def to_str(frame):
        frame = frame.copy()
        frame["request_id"] = frame["request_id"].astype(str).astype(object)
        frame["item_id"] = frame["item_id"].astype(str).astype(object)
        return frame

    # warm numba's JIT on a tiny input (reported separately, not timed below)
    t0 = time.perf_counter()
    tiny_run, tiny_lab = to_str(run.head(200)), to_str(labels[labels["request_id"].isin(run.head(200)["request_id"])])
    evaluate(
        Qrels.from_df(tiny_lab, q_id_col="request_id", doc_id_col="item_id", score_col="label"),
        Run.from_df(tiny_run, q_id_col="request_id", doc_id_col="item_id", score_col="score"),
        METRICS,
    )
    jit = time.perf_counter() - t0

    def once():
        r, q = to_str(run), to_str(labels)
        qrels = Qrels.from_df(q, q_id_col="request_id", doc_id_col="item_id", score_col="label")
        rr = Run.from_df(r, q_id_col="request_id", doc_id_col="item_id", score_col="score")
        return dict(evaluate(qrels, rr, METRICS))

    return once, None, jit


def child(args) -> None:
    run, labels = generate(args.queries, args.items, args.seed, args.id_type)
    base = rss_mb()
    jit = None
    if args.child == "receval-pandas":
        once, check = tool_receval(run, labels, polars=False)
    elif args.child == "receval-polars":
        once, check = tool_receval(run, labels, polars=True)
        base = rss_mb()
    elif args.child == "pytrec_eval":
        once, check = tool_pytrec(run, labels)
    else:
        once, check, jit = tool_ranx(run, labels)
    times, means = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        means = once()
        times.append(time.perf_counter() - t0)
    peak = rss_mb()
    agree = check() if (check is not None and args.check) else None
    print(
        json.dumps(
            {
                "tool": args.child,
                "median_s": statistics.median(times),
                "times": times,
                "peak_rss_mb": peak,
                "data_rss_mb": base,
                "means": means,
                "check_means": agree,
                "jit_s": jit,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--id-type", choices=["int", "str"], default="int")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--no-check", dest="check", action="store_false")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    rows = args.queries * args.items
    print(f"# {args.queries:,} requests x {args.items} items = {rows:,} rows, ids {args.id_type}, repeat {args.repeat}")
    results = {}
    for tool in [t.strip() for t in args.tools.split(",") if t.strip()]:
        cmd = [sys.executable, __file__, "--child", tool, "--queries", str(args.queries), "--items", str(args.items),
               "--repeat", str(args.repeat), "--seed", str(args.seed), "--id-type", args.id_type]
        if not args.check:
            cmd.append("--no-check")
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            print(f"{tool}: FAILED\n{out.stderr[-2000:]}")
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results[tool] = res
        jit = f", JIT warm-up {res['jit_s']:.1f} s (not timed)" if res.get("jit_s") else ""
        print(
            f"{tool:16s} median {res['median_s']:7.3f} s   peak RSS {res['peak_rss_mb']:7.0f} MB"
            f"   (+{res['peak_rss_mb'] - res['data_rss_mb']:.0f} MB over the data){jit}"
        )

    print("\n# ratios (time; peak RSS)")
    for mine in ("receval-pandas", "receval-polars"):
        for ref in ("pytrec_eval", "ranx"):
            if mine in results and ref in results:
                a, b = results[mine], results[ref]
                print(
                    f"{mine} / {ref}: time {a['median_s'] / b['median_s']:.3f}x, "
                    f"peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x, "
                    f"RSS over data {(a['peak_rss_mb'] - a['data_rss_mb']) / max(b['peak_rss_mb'] - b['data_rss_mb'], 1):.2f}x"
                )

    print("\n# agreement of means")
    if "receval-pandas" in results and "pytrec_eval" in results and args.check:
        mine, ref = results["receval-pandas"]["check_means"], results["pytrec_eval"]["check_means"]
        for m in PYTREC:
            d = abs(mine[m] - ref[m])
            print(f"receval {m} = {mine[m]:.12f}  pytrec_eval = {ref[m]:.12f}  |diff| = {d:.2e}  {'OK' if d <= 1e-9 else 'MISMATCH'}")
    if "receval-pandas" in results and "ranx" in results:
        mine, ref = results["receval-pandas"]["means"], results["ranx"]["means"]
        for m in METRICS:
            d = abs(mine[m] - ref[m])
            print(f"receval {m} = {mine[m]:.6f}  ranx = {ref[m]:.6f}  |diff| = {d:.2e} (ranx breaks ties unstably)")


if __name__ == "__main__":
    main()
