"""Benchmark: slate off-policy estimators on 1M slates of 3 slots.

Simulates 1M slates (``simulate_slates``: 10 items, 3 slots, per-slot
independent softmax logging and target policies, additive clicks), then times

* validating the (n, 3) arrays (``SlateFeedback.from_arrays``),
* validating the long frame (3M rows) with ``slate_feedback``,
* all 8 slate estimators (standard IPS, independent IPS, RIPS, pseudo-inverse
  and their self-normalised forms): point estimates only,
* the same with normal (delta-method) intervals,
* the same with 1,000-resample bootstrap intervals over slates (one shared
  pass; Poisson(1) weights at this size),

and prints wall times, tracemalloc peaks (from a separate traced run) and the
process's peak RSS. Target: under 30 s and 2 GiB for everything. Reference
(/work/shared/REFERENCES.md): OBP takes 68 s (standard IPS), 15 s (RIPS),
0.6 s (IIPS) per point estimate at this size, and its slate bootstrap is
O(n^2) (~12 min per estimator at 1M).

    python benchmarks/bench_slates.py                  # 1M slates
    python benchmarks/bench_slates.py --slates 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc

from receval.counterfactual import (
    IndependentIPS,
    PseudoInverse,
    RewardInteractionIPS,
    SlateFeedback,
    SNIndependentIPS,
    SNPseudoInverse,
    SNRewardInteractionIPS,
    SNStandardIPS,
    StandardIPS,
    estimate_slates,
    simulate_slates,
    slate_feedback,
)

ESTIMATORS = [
    StandardIPS(),
    SNStandardIPS(),
    IndependentIPS(),
    SNIndependentIPS(),
    RewardInteractionIPS(),
    SNRewardInteractionIPS(),
    PseudoInverse(),
    SNPseudoInverse(),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slates", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    args = ap.parse_args()

    t0 = time.perf_counter()
    sim = simulate_slates(args.slates, n_items=10, n_slots=3, seed=0)
    print(
        f"simulate {args.slates:,} slates of 3 (+ {3 * args.slates:,}-row frame): {time.perf_counter() - t0:.2f} s"
    )
    d0 = sim.data

    steps = {
        "validate arrays (from_arrays)": lambda: SlateFeedback.from_arrays(
            d0.reward,
            d0.propensity,
            d0.target_prob,
            propensity_cond=d0.propensity_cond,
            target_cond=d0.target_cond,
            slate_propensity=d0.slate_propensity,
            target_slate_prob=d0.target_slate_prob,
            reward_range=(0, 1),
        ),
        "validate long frame (slate_feedback)": lambda: slate_feedback(
            sim.log, reward_range=(0, 1)
        ),
        "8 point estimates": lambda: [e.point(d0) for e in ESTIMATORS],
        "8 estimates + normal intervals": lambda: estimate_slates(
            ESTIMATORS, d0, interval="normal"
        ),
        f"8 estimates + {args.n_boot:,}-resample bootstrap": lambda: estimate_slates(
            ESTIMATORS, d0, n_boot=args.n_boot, seed=0
        ),
    }
    print(f"\n{'step':<44} {'seconds':>9} {'peak MiB':>9}")
    results = {}
    total = 0.0
    for name, fn in steps.items():
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        results[name] = out
        peak = float("nan")
        if not args.no_trace:
            tracemalloc.start()
            fn()
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        med = statistics.median(times)
        total += med
        print(f"{name:<44} {med:>9.2f} {peak:>9.0f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'total (median per step)':<44} {total:>9.2f}")
    print(f"process peak RSS: {rss:.0f} MiB")

    print(f"\ntrue value {sim.true_value:.4f} (logging {sim.logging_value:.4f})")
    boot = results[f"8 estimates + {args.n_boot:,}-resample bootstrap"]
    normal = results["8 estimates + normal intervals"]
    print(
        f"{'estimator':<22} {'value':>8} {'bootstrap 95%':>20} {'normal 95%':>20} {'ESS share':>9}"
    )
    for b, n in zip(boot, normal, strict=True):
        print(
            f"{b.name:<22} {b.value:>8.4f} [{b.ci_low:.4f}, {b.ci_high:.4f}] "
            f"[{n.ci_low:.4f}, {n.ci_high:.4f}] {b.diagnostics['ess_share']:>9.3f}"
        )


if __name__ == "__main__":
    main()
