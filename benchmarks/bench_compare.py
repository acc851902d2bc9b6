"""Benchmark: comparing two runs vs evaluating one, same data, same process.

Generates a baseline run (Q requests x L items, as bench_metrics.py) and a
candidate whose scores are the baseline's plus noise, then times

* ``receval.evaluate`` of the baseline: 6 metrics, 1,000 bootstrap replicates;
* ``receval.compare`` of the two runs: the same 6 metrics, 1,000 paired
  bootstrap replicates and a 10,000-permutation randomization test;

and prints the medians and the ratio compare / evaluate (the issue's target
is <= 3x).

    python benchmarks/bench_compare.py --queries 100000      # 10M rows per run
    python benchmarks/bench_compare.py --bootstrap poisson-fused   # the compiled kernel
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_metrics import generate  # noqa: E402

METRICS = ["ndcg@10", "map@100", "recall@100", "mrr@10", "precision@10", "hit@5"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-perm", type=int, default=10_000)
    p.add_argument("--test", default="randomization")
    p.add_argument("--bootstrap", default="auto", choices=["auto", "multinomial", "poisson", "poisson-fused"],
                   help="bootstrap scheme of both calls (default auto)")
    args = p.parse_args()

    import receval

    base, labels = generate(args.queries, args.items, 0, "int")
    cand = base.copy()
    rng = np.random.default_rng(1)
    cand["score"] = (cand["score"] + rng.normal(scale=0.05, size=len(cand))).astype(np.float32).astype(np.float64)
    print(f"# {args.queries:,} requests x {args.items} items = {len(base):,} rows per run; {len(METRICS)} metrics")

    t0 = time.perf_counter()
    receval.evaluate(base.head(1000), labels, METRICS, bootstrap=args.bootstrap)  # warm imports (and the kernel)
    print(f"warm-up call (imports; loads the compiled kernel with --bootstrap poisson-fused): {time.perf_counter() - t0:.2f} s")
    t_eval, t_cmp = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ev = receval.evaluate(base, labels, METRICS, n_boot=1000, bootstrap=args.bootstrap)
        t_eval.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = receval.compare({"base": base, "cand": cand}, labels, METRICS, test=args.test, n_boot=1000, n_perm=args.n_perm,
                              bootstrap=args.bootstrap)
        t_cmp.append(time.perf_counter() - t0)
    e, c = statistics.median(t_eval), statistics.median(t_cmp)
    print(f"bootstrap scheme: {ev.settings['bootstrap']}")
    print(f"evaluate one run : median {e:.3f} s  {[round(t, 2) for t in t_eval]}")
    print(f"compare two runs : median {c:.3f} s  {[round(t, 2) for t in t_cmp]}  ({args.test}, {args.n_perm} permutations)")
    print(f"ratio compare / evaluate: {c / e:.2f}x (target <= 3x)")
    print(res.to_markdown())


if __name__ == "__main__":
    main()
