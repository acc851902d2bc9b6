"""Cross-check receval's off-policy estimators against Open Bandit Pipeline (OBP), and time OBP.

OBP is a test oracle only (none of its code is in receval). It needs its own
environment: obp 0.5.7 declares Python < 3.11 and pins nothing newer than
pandas 2 / numpy 2.2, so on Python 3.11 it is installed without its metadata
checks (see docs/counterfactual.md, "Cross-check against OBP")::

    python3 -m venv /work/obp-env
    /work/obp-env/bin/pip install "pandas<3" "numpy<2.3" scikit-learn scipy matplotlib \\
        seaborn tqdm pyyaml "torch==2.13.0"
    /work/obp-env/bin/pip install --no-deps --ignore-requires-python obp==0.5.7
    /work/obp-env/bin/pip install -e . pytest hypothesis

Then, from the repository root::

    /work/obp-env/bin/python benchmarks/obp_crosscheck.py          # tests + agreement table
    /work/obp-env/bin/python benchmarks/obp_crosscheck.py --time   # + OBP timing, 1M rounds

1. runs ``pytest -q tests/test_vs_obp.py`` (the same tests are skipped where obp
   is absent, e.g. in CI);
2. prints receval's and OBP's point estimates side by side with their relative
   difference, for the OBD sample (random log, BTS empirical target; q_hat
   cross-fitted by receval or a fixed array) and a 3-position synthetic bandit;
3. with ``--time``: on the data of ``benchmarks/bench_ope.py`` (1M rounds, 80
   items, precomputed q_hat) times OBP's IPW + SNIPW + DR, each
   ``estimate_policy_value`` plus ``estimate_interval(n_bootstrap_samples=100)``
   -- the denominator of the issue's speed target -- and, in the same process,
   receval's ``estimate_many([IPS(), SNIPS(), DR()], n_boot=100 / 1000)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def run_tests() -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_vs_obp.py"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def agreement() -> float:
    t = _load(ROOT / "tests" / "test_vs_obp.py", "test_vs_obp")
    worst = 0.0
    frames = t.load_obd()
    cases = [(f"OBD random -> BTS, q_hat {k}", lambda k=k: t.obd_case(k, frames)) for k in t.OBD_KINDS]
    cases += [(f"synthetic, 3 positions, q_hat {k}", lambda k=k: t.synthetic_case(k)) for k in t.SYNTHETIC_KINDS]
    for title, build in cases:
        data, inp = build()
        print(f"\n{title}: {data.n_rows} rows, {data.n_units} requests")
        print(f"  {'estimator':28s} {'receval':>22s} {'OBP':>22s} {'rel. diff':>10s}")
        case_worst = 0.0
        for label, point, value, theirs in t.compare_values(data, inp):
            rel = max(abs(point - theirs), abs(value - theirs)) / abs(theirs)
            case_worst = max(case_worst, rel)
            print(f"  {label:28s} {point:22.17g} {theirs:22.17g} {rel:10.1e}")
        print(f"  max relative difference: {case_worst:.1e}")
        worst = max(worst, case_worst)
    return worst


def _median_time(fn, repeat: int):
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def timing(rounds: int, items: int, repeat: int, seed: int) -> None:
    from obp.ope import (
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
    )

    from receval.counterfactual import DR, IPS, SNIPS, LoggedFeedback, estimate_many

    bench = _load(ROOT / "benchmarks" / "bench_ope.py", "bench_ope")
    print(f"\nload average before: {os.getloadavg()}")
    g = bench.generate(rounds, items, 100, seed)
    x = g["context"]
    inp = {
        "reward": g["reward"],
        "action": g["action"].astype(np.int64),
        "pscore": g["propensity"],
        "position": np.zeros(rounds, dtype=np.int64),
        "action_dist": g["pi_e"][x][:, :, None],
    }
    q_hat = g["q_hat"][x][:, :, None]
    print(f"{rounds:,} rounds x {items} items; OBP arrays {2 * inp['action_dist'].nbytes / 2**20:.0f} MiB")
    obp_est = [
        ("IPW", InverseProbabilityWeighting(), False),
        ("SNIPW", SelfNormalizedInverseProbabilityWeighting(), False),
        ("DR", DoublyRobust(), True),
    ]
    rows = []
    values = {}
    total_w = total_c = 0.0
    for name, est, needs_q in obp_est:
        kw = dict(inp, estimated_rewards_by_reg_model=q_hat) if needs_q else inp
        pw, pc, v = _median_time(lambda est=est, kw=kw: est.estimate_policy_value(**kw), repeat)
        iw, ic, ci = _median_time(
            lambda est=est, kw=kw: est.estimate_interval(**kw, n_bootstrap_samples=100, random_state=seed),
            repeat,
        )
        values[name] = v
        rows.append((name, pw, pc, iw, ic, ci))
        total_w += pw + iw
        total_c += pc + ic
    print(f"\nOBP 0.5.7 (median of {repeat}):")
    print(f"  {'estimator':8s} {'point s':>8s} {'interval(100) s':>16s} {'CPU s':>8s}  95% CI")
    for name, pw, pc, iw, ic, ci in rows:
        lo, hi = [ci[k] for k in ci if "lower" in k][0], [ci[k] for k in ci if "upper" in k][0]
        print(f"  {name:8s} {pw:8.3f} {iw:16.3f} {pc + ic:8.3f}  [{lo:.5f}, {hi:.5f}]")
    print(f"  IPW + SNIPW + DR, points + 100-resample intervals: {total_w:.2f} s wall, {total_c:.2f} s CPU")

    d = LoggedFeedback.from_arrays(
        g["reward"], g["propensity"], g["target_prob"],
        q_logged=g["q_logged"], q_target=g["q_target"], reward_range=(0, 1),
    )
    ests = [IPS(), SNIPS(), DR()]
    for e, (name, _, _, _, _, _) in zip(ests, rows, strict=True):
        rel = abs(e.point(d) - values[name]) / abs(values[name])
        print(f"  point estimate {name}: receval vs OBP relative difference {rel:.1e}")
    cold_w, cold_c, _ = _median_time(lambda: estimate_many(ests, d, n_boot=1000), 1)
    r100 = _median_time(lambda: estimate_many(ests, d, n_boot=100), max(repeat, 3))
    r1000 = _median_time(lambda: estimate_many(ests, d, n_boot=1000), max(repeat, 3))
    print("\nreceval, same process and data (warm medians):")
    print(f"  IPS + SNIPS + DR, 100 resamples:   {r100[0]:.3f} s wall, {r100[1]:.3f} s CPU "
          f"= {r100[0] / total_w:.3f}x of OBP's 100-resample time")
    print(f"  IPS + SNIPS + DR, 1,000 resamples: {r1000[0]:.3f} s wall, {r1000[1]:.3f} s CPU "
          f"= {r1000[0] / total_w:.3f}x of OBP's 100-resample time "
          f"(issue target <= 0.1x: {'met' if r1000[0] / total_w <= 0.1 else 'NOT met'})")
    print(f"  (first 1,000-resample call in the process: {cold_w:.3f} s wall, {cold_c:.3f} s CPU; "
          f"{r1000[2][0].interval})")
    for res, (name, *_rest) in zip(r1000[2], rows, strict=True):
        rel = abs(res.value - values[name]) / abs(values[name])
        print(f"  estimate_many value {name}: receval vs OBP relative difference {rel:.1e}")
    print(f"load average after: {os.getloadavg()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", action="store_true", help="also time OBP's 100-resample intervals at --rounds")
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=1, help="timing repeats (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest run")
    args = ap.parse_args()
    try:
        import obp
    except Exception as exc:  # noqa: BLE001
        print(f"obp is not importable here ({exc}); see this file's docstring for the environment")
        return 2
    print(f"obp {obp.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    rc = 0 if args.no_tests else run_tests()
    worst = agreement()
    print(f"\nworst relative difference over all cases: {worst:.1e}")
    if args.time:
        timing(args.rounds, args.items, args.repeat, args.seed)
    return rc or (1 if worst > 1e-12 else 0)


if __name__ == "__main__":
    sys.exit(main())
