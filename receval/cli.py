"""The ``receval`` command line.

Exit codes: 0 success, 1 a launch gate failed (``receval gate``) or a
report no longer matches its inputs (``receval verify``), 2 bad input, config
or usage (message on stderr, no traceback), 3 internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from receval._version import __version__

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: exit 2, short message
        self.print_usage(sys.stderr)
        print(f"receval: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


def _mapping(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical or not source:
            from receval.errors import UsageError

            raise UsageError(f"--column expects CANONICAL=YOURS, e.g. request_id=qid; got {pair!r}")
        out[canonical.strip()] = source.strip()
    return out


_OPE_ESTIMATORS = ("dm", "ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dros")
_SLATE_ESTIMATORS = (
    "standard_ips", "sn_standard_ips", "independent_ips", "sn_independent_ips", "rips", "sn_rips", "pi", "sn_pi",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="receval",
        description="Offline evaluation and responsible-AI audits for recommender systems.",
        epilog="Exit codes: 0 ok, 1 gate failed (gate, verify), 2 bad input, config or usage, 3 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"receval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ev = sub.add_parser(
        "evaluate",
        help="score a run against relevance labels",
        description="Score a run against relevance labels: per-metric mean, n and bootstrap interval.",
    )
    ev.add_argument("--run", required=True, help="run: Parquet, CSV, TSV, JSONL or TREC run file")
    ev.add_argument("--labels", help="labels: Parquet, CSV, TSV, JSONL or TREC qrels file "
                    "(omit when the run has its own label column, as logged impressions do)")
    ev.add_argument(
        "--metric", "-m", action="append", required=True, metavar="M",
        help="metric name, repeatable: ndcg@10, map@100, recall(min_label=2)@20, ...",
    )
    ev.add_argument("--format", default="auto", choices=["auto", "trec", "parquet", "csv", "tsv", "jsonl"])
    ev.add_argument("--output", default="table", choices=["json", "table", "csv"])
    ev.add_argument("--column", action="append", metavar="CANONICAL=YOURS", help="column mapping, repeatable")
    ev.add_argument("--missing-in-run", default="zero", choices=["zero", "ignore"],
                    help="judged requests absent from the run (default: score 0, like trec_eval -c)")
    ev.add_argument("--missing-in-labels", default="ignore", choices=["zero", "ignore"],
                    help="run requests without any label (default: ignore)")
    ev.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    ev.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ev.add_argument("--per-request", metavar="PATH", help="also write per-request values (.parquet or .csv)")
    ev.add_argument("--by", action="append", metavar="COLUMN", help="slice by a run or attributes column, repeatable")
    ev.add_argument("--attributes", metavar="PATH", help="table keyed by request_id or user_id with slice columns")
    ev.add_argument("--catalog", metavar="PATH", help="item catalog (item_id, popularity, category, ...) for beyond-accuracy metrics")
    ev.add_argument("--engine", default="auto", choices=["auto", "polars", "streaming", "spark"],
                    help="where the reduce step runs: auto (in memory), polars, streaming (Parquet larger than memory) or spark (paths read by Spark; docs/scale.md)")

    cp = sub.add_parser(
        "compare",
        help="compare candidate runs with a baseline (paired tests, corrections, non-inferiority)",
        description="Compare runs on the same requests: difference, paired bootstrap interval, p-value, "
        "corrected p-value, optional non-inferiority verdict and A/B sample size.",
    )
    cp.add_argument("--run", action="append", required=True, metavar="NAME=PATH",
                    help="a run, repeatable (at least two); the first is the baseline unless --baseline")
    cp.add_argument("--labels", required=True, help="labels shared by all runs")
    cp.add_argument("--metric", "-m", action="append", required=True, metavar="M", help="metric name, repeatable")
    cp.add_argument("--baseline", help="name of the baseline run (default: the first --run)")
    cp.add_argument("--test", default="paired_t", choices=["paired_t", "wilcoxon", "randomization"])
    cp.add_argument("--correction", default="holm", choices=["holm", "bonferroni", "bh", "none"])
    cp.add_argument("--alpha", type=float, default=0.05)
    cp.add_argument("--margin", type=float, help="non-inferiority margin (metric units, or a share with --relative-margin)")
    cp.add_argument("--relative-margin", action="store_true", help="the margin is a share of the baseline mean")
    cp.add_argument("--unit", default="request", choices=["request", "user"])
    cp.add_argument("--on-mismatch", default="error", choices=["error", "intersect"])
    cp.add_argument("--missing-in-run", default="zero", choices=["zero", "ignore"],
                    help="judged requests absent from a run (default: score 0, like trec_eval -c)")
    cp.add_argument("--missing-in-labels", default="ignore", choices=["zero", "ignore"],
                    help="run requests without any label (default: ignore)")
    cp.add_argument("--format", default="auto", choices=["auto", "trec", "parquet", "csv", "tsv", "jsonl"])
    cp.add_argument("--output", default="table", choices=["json", "table", "csv"])
    cp.add_argument("--column", action="append", metavar="CANONICAL=YOURS", help="column mapping, repeatable")
    cp.add_argument("--level", type=float, default=0.95)
    cp.add_argument("--n-boot", type=int, default=1000)
    cp.add_argument("--n-perm", type=int, default=10_000)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--engine", default="auto", choices=["auto", "polars", "streaming", "spark"],
                    help="where each run is scored: auto, polars, streaming or spark (see evaluate)")

    gt = sub.add_parser(
        "gate",
        help="launch gate: compute everything a config declares, decide its gates, write report and model card",
        description="Run the launch gate of a TOML config (docs/gate-config.md). Writes report.json, report.md, "
        "report.html, junit.xml and model_card.{md,html,json} to --out. Exit 0 all gates pass, 1 a gate "
        "failed, 2 invalid config or input (or a gate that cannot be decided), 3 internal error.",
    )
    gt.add_argument("--config", required=True, help="the gate config (TOML)")
    gt.add_argument("--out", required=True, help="directory for the report, JUnit file and model card")
    gt.add_argument("--quiet", action="store_true", help="no progress lines on stderr (they are shown only on a terminal)")

    au = sub.add_parser(
        "audit",
        help="run the [audits.*] of a config: disparity, exposure, popularity, safety, drift, data quality",
        description="Run the responsible-AI audits declared in a config file (same format as receval gate; "
        "[[gates]] are not needed and not decided). Exit 0 when every audit ran, 2 when one could not.",
    )
    au.add_argument("--config", required=True, help="TOML config with [inputs] and [audits.*] (docs/gate-config.md)")
    au.add_argument("--output", default="table", choices=["json", "table"])
    au.add_argument("--out", metavar="PATH", help="also write the JSON to PATH")

    vf = sub.add_parser(
        "verify",
        help="re-hash the inputs a report names; exit 1 when they changed",
        description="Check that report.json still describes its inputs: re-hashes the config and every input "
        "(paths relative to the config's directory). Exit 0 all match, 1 something changed or is missing.",
    )
    vf.add_argument("report", help="a report.json written by receval gate")
    vf.add_argument("--base", help="directory the report's input paths are relative to (default: next to the "
                    "report, else the current directory)")

    sub.add_parser("metrics", help="list the registered metrics", description="List the registered metrics.")

    op = sub.add_parser(
        "ope",
        help="off-policy estimates of a target policy from logged feedback",
        description="Off-policy evaluation: estimate a target policy's value from logged feedback "
        "(IPS, SNIPS, DR, ...) with intervals, diagnostics and warnings.",
    )
    op.add_argument("--logs", required=True, metavar="LOGS",
                    help="logged feedback (Parquet/CSV): request_id, item_id, position, reward (or click), propensity; "
                    "for slate estimators one row per shown slot: slate_id, position, reward, propensity, ...")
    op.add_argument("--target", metavar="TARGET",
                    help="target policy (Parquet/CSV): request_id, item_id, position, probability; for slate "
                    "estimators slate_id, position, probability[, conditional_probability, slate_probability] "
                    "(optional when the logs carry target_probability columns)")
    op.add_argument("--logging", metavar="LOGGING",
                    help="optional logging policy (Parquet/CSV): request_id, item_id, position, probability "
                    "over every candidate; enables the context-level support check")
    op.add_argument("--estimator", "-e", action="append", required=True, metavar="NAME",
                    help=f"repeatable: {', '.join(_OPE_ESTIMATORS)}; or slate estimators "
                    f"{', '.join(_SLATE_ESTIMATORS)} (not mixed with the others)")
    op.add_argument("--varying-length", action="store_true",
                    help="slate estimators: accept slates of different lengths (exogenous length)")
    op.add_argument("--reward-range", metavar="LOW,HIGH", help="declared reward range, e.g. 0,1 for clicks "
                    "(default: the observed min..max)")
    op.add_argument("--clip", type=float, default=10.0, help="clipped_ips weight cap (default 10)")
    op.add_argument("--switch-threshold", type=float, default=10.0, help="switch_dr weight threshold (default 10)")
    op.add_argument("--dros-lam", type=float, default=100.0, help="dros shrinkage lambda (default 100)")
    op.add_argument("--context", action="append", metavar="COLUMN",
                    help="context column of the logs for the reward model (dm and the dr family), repeatable")
    op.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    op.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    op.add_argument("--seed", type=int, default=0, help="bootstrap and reward-model seed (default 0)")
    op.add_argument("--interval", default="bootstrap", choices=["bootstrap", "normal"])
    op.add_argument("--column", action="append", metavar="CANONICAL=YOURS",
                    help="column mapping for both files, repeatable (e.g. reward=click)")
    op.add_argument("--q-hat-column", metavar="COLUMN",
                    help="dm and the dr family: precomputed reward estimates q_hat(x, a), a column of both the logs "
                    "and the target (instead of the cross-fitted reward model; required with --engine spark)")
    op.add_argument("--engine", default="auto", choices=["auto", "polars", "streaming", "spark"],
                    help="auto / polars: in memory; spark: the files are read and reduced by Spark (single-slot and slate estimators; docs/scale.md)")
    op.add_argument("--output", default="table", choices=["json", "table"])
    return parser


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from receval.evaluation import evaluate

    result = evaluate(
        args.run,
        args.labels,
        args.metric,
        columns=_mapping(args.column),
        format=args.format,
        missing_in_run=args.missing_in_run,
        missing_in_labels=args.missing_in_labels,
        level=args.level,
        n_boot=args.n_boot,
        seed=args.seed,
        by=args.by,
        attributes=args.attributes,
        catalog=args.catalog,
        engine=args.engine,
    )
    if args.per_request:
        from receval.errors import UsageError

        frame = result.per_request_polars()
        try:
            if args.per_request.endswith(".csv"):
                frame.write_csv(args.per_request)
            else:
                frame.write_parquet(args.per_request)
        except OSError as exc:
            raise UsageError(f"--per-request: cannot write {args.per_request}: {exc.strerror or exc}") from None
    if args.output == "json":
        print(json.dumps(result.to_dict(), indent=2, sort_keys=False, allow_nan=False))
    elif args.output == "csv":
        print(result.to_frame().to_csv(index=False), end="")
    else:
        print(result.to_markdown(), end="")
        c = result.counts
        notes = [f"{c['evaluated']} requests evaluated"]
        for key in ("labels_only_scored_zero", "labels_only_ignored", "run_only_ignored", "run_only_scored_zero"):
            if c.get(key):
                notes.append(f"{c[key]} {key.replace('_', ' ')}")
        if c.get("evaluated_without_relevant"):
            notes.append(f"{c['evaluated_without_relevant']} without any relevant item (scored 0)")
        print("\n" + "; ".join(notes) + ".")
        if result.slices is not None:
            print("\nBy slice:\n")
            from receval._markdown import table

            frame = result.per_slice_polars()
            print(table(frame.columns, list(frame.iter_rows())), end="")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from receval.comparison import compare
    from receval.errors import UsageError

    runs: dict[str, str] = {}
    for spec in args.run:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--run expects NAME=PATH, e.g. prod=runs/prod.parquet; got {spec!r}")
        if name in runs:
            raise UsageError(f"run name {name!r} given twice")
        runs[name] = path
    result = compare(
        runs, args.labels, args.metric, baseline=args.baseline, test=args.test, correction=args.correction,
        alpha=args.alpha, margin=args.margin, margin_type="relative" if args.relative_margin else "absolute",
        unit=args.unit, on_mismatch=args.on_mismatch, columns=_mapping(args.column), format=args.format,
        missing_in_run=args.missing_in_run, missing_in_labels=args.missing_in_labels,
        level=args.level, n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed, engine=args.engine,
    )
    if args.output == "json":
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    elif args.output == "csv":
        print(result.to_frame().to_csv(index=False), end="")
    else:
        print(result.to_markdown(), end="")
        s = result.settings
        print(f"\n{s['test']} test, {s['correction']} correction over {len(result.rows)} comparisons, alpha {s['alpha']}; "
              f"intervals: {s['interval']}.")
    return EXIT_OK


def _read_frame(path: str, what: str, mapping: dict[str, str]):
    from receval.data.readers import read_file

    frame = read_file(path, kind=what).to_pandas()
    rename = {src: canon for canon, src in mapping.items() if src in frame.columns and src != canon}
    return frame.rename(columns=rename)


def _print_ope(output: str, names: list[str], results, settings: dict, footer: str) -> None:
    """Off-policy estimates as JSON (estimates + settings) or a table followed by ``footer``."""
    if output == "json":
        from receval.counterfactual._estimators import _json

        doc = {"estimates": {n: r.to_dict() for n, r in zip(names, results, strict=True)}, "settings": _json(settings)}
        print(json.dumps(doc, indent=2, allow_nan=False))
        return
    from receval._markdown import table

    rows = []
    for r in results:
        ess = r.diagnostics.get("ess_share")
        rows.append([
            r.name, r.value, f"[{r.ci_low:.6f}, {r.ci_high:.6f}]", r.n,
            f"{100 * ess:.1f}" if ess is not None and ess == ess else "n/a",
            "; ".join(r.warnings) or "-",
        ])
    print(table(["estimator", "value", "CI", "n", "ESS%", "warnings"], rows, digits=6), end="")
    print(f"\n{footer}")


def _cmd_ope(args: argparse.Namespace) -> int:
    from receval.counterfactual import (
        DM,
        DR,
        DROS,
        IPS,
        SNDR,
        SNIPS,
        ClippedIPS,
        RewardModel,
        SwitchDR,
        estimate_many,
        logged_feedback,
    )
    from receval.errors import UsageError

    names = [n.strip().lower() for n in args.estimator]
    unknown = [n for n in names if n not in _OPE_ESTIMATORS + _SLATE_ESTIMATORS]
    if unknown:
        raise UsageError(
            f"unknown estimator(s) {unknown}; choose from {', '.join(_OPE_ESTIMATORS)} "
            f"or the slate estimators {', '.join(_SLATE_ESTIMATORS)}"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"estimator given twice: {sorted({n for n in names if names.count(n) > 1})}")
    slates = [n for n in names if n in _SLATE_ESTIMATORS]
    if slates and len(slates) != len(names):
        raise UsageError(
            f"slate estimators {slates} and single-slot estimators {[n for n in names if n not in slates]} "
            "read different logs: run them separately"
        )
    if args.varying_length and not slates:
        raise UsageError("--varying-length applies to the slate estimators only")
    reward_range = None
    if args.reward_range is not None:
        parts = args.reward_range.split(",")
        try:
            reward_range = (float(parts[0]), float(parts[1]))
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError):
            raise UsageError(f"--reward-range expects LOW,HIGH, e.g. 0,1; got {args.reward_range!r}") from None
    if slates:
        if args.engine == "streaming":
            raise UsageError("the slate estimators run in memory or on Spark: use --engine auto, polars or spark")
        if args.q_hat_column:
            raise UsageError("--q-hat-column does not apply to the slate estimators")
        return _cmd_ope_slates(args, names, reward_range)
    if args.target is None:
        raise UsageError("--target is required for the single-slot estimators")
    make = {
        "dm": DM, "ips": IPS, "clipped_ips": lambda: ClippedIPS(clip=args.clip), "snips": SNIPS, "dr": DR,
        "sndr": SNDR, "switch_dr": lambda: SwitchDR(threshold=args.switch_threshold),
        "dros": lambda: DROS(lam=args.dros_lam),
    }
    estimators = [make[n]() for n in names]
    log, target, logging_frame = _ope_frames(args, args.logs, args.target, args.logging)
    context = list(args.context or [])
    missing = [c for c in context if c not in log.columns]
    if missing:
        raise UsageError(f"--context column(s) {missing} not in the logs; they have {list(log.columns)}")
    needs_model = any(e.needs_model for e in estimators)
    if args.q_hat_column and args.context:
        raise UsageError("--context feeds the cross-fitted reward model; with --q-hat-column there is none")
    model = RewardModel(seed=args.seed) if needs_model and not args.q_hat_column else None
    data = logged_feedback(
        log, target, reward_range=reward_range, reward_model=model, context_columns=context if model else (),
        logging=logging_frame, q_hat_column=args.q_hat_column if needs_model else None, engine=args.engine,
    )
    results = estimate_many(
        estimators, data, level=args.level, n_boot=args.n_boot, seed=args.seed, interval=args.interval
    )
    settings = {
        "logs": args.logs, "target": args.target, "logging": args.logging, "estimators": names, "reward_range": list(data.reward_range),
        "level": args.level, "interval": args.interval, "n_boot": args.n_boot, "seed": args.seed,
        "clip": args.clip, "switch_threshold": args.switch_threshold, "dros_lam": args.dros_lam,
        "context": context, "reward_model": data.model, "n_rows": data.n_rows, "n_requests": data.n_units,
        "support": data.support, "engine": "spark" if args.engine == "spark" else "polars",
    }
    _print_ope(args.output, names, results, settings,
               f"{args.level:.0%} intervals: {results[0].interval}; {data.n_rows} rows, {data.n_units} requests.")
    return EXIT_OK


def _cmd_gate(args: argparse.Namespace) -> int:
    import time

    from receval.errors import ReceValError
    from receval.gate import load_config, run_gate, write_outputs
    from receval.gate.runner import error_report

    try:
        cfg = load_config(args.config)  # a config error stops here, before any data is read
    except ReceValError as exc:
        # CI still gets evidence: a report and a JUnit file saying why nothing ran
        write_outputs(error_report("config", str(exc), args.config if Path(args.config).is_file() else None), args.out)
        raise
    start = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(msg: str) -> None:
        # progress only on a terminal (CI logs get the verdict and the gate lines, not step chatter)
        if tty and not args.quiet:
            print(f"receval gate: {msg} ({time.monotonic() - start:.1f} s)", file=sys.stderr)

    # Fail closed on a run that never finishes (killed, out of memory, power cut): first replace whatever
    # an earlier run left in --out (perhaps a passing report) with an error report, overwritten on completion.
    try:
        write_outputs(error_report("interrupted", "the gate run started but did not finish (killed or "
                                   "interrupted); this placeholder is replaced when a run completes", args.config),
                      args.out, summary=False)
        run = run_gate(cfg, progress=progress)
        paths = write_outputs(run.report, args.out)
    except BaseException as exc:  # internal error or interrupt: leave an error report behind; exit 3 via main()
        where = "interrupted" if isinstance(exc, KeyboardInterrupt) else "internal"
        try:
            write_outputs(error_report(where, f"{type(exc).__name__}: {exc}", args.config), args.out, summary=False)
        except Exception:  # noqa: BLE001 - report.json is written first; the original error matters more
            pass
        raise
    s = run.report["summary"]
    print(f"verdict: {run.report['verdict'].upper()} ({s['passed']} passed, {s['failed']} failed, "
          f"{s['errors']} error(s) of {s['gates']} gates)")
    for g in run.report["gates"]:
        print(f"  [{g['status'].upper():5s}] {_safe(str(g['id']), oneline=True)}: {_safe(str(g['message']), oneline=True)}")
    for e in run.report["errors"]:
        print(_safe(f"  error in {e['where']}: {e['message']}"), file=sys.stderr)
    print(f"wrote {len(paths)} files to {args.out}: " + ", ".join(p.name for p in paths))
    return run.exit_code


def _print_audit_frame(frame) -> None:
    """Long format: one line per (group, quantity) with value and interval; counts once per group."""
    import polars as pl

    if not isinstance(frame, pl.DataFrame):
        frame = pl.from_pandas(frame)
    cols = frame.columns
    quantities = [c for c in cols if f"{c}_low" in cols and f"{c}_high" in cols]
    plain = [c for c in cols if c not in quantities and not c.endswith(("_low", "_high"))]
    for row in frame.iter_rows(named=True):
        head = ", ".join(f"{c}={row[c]}" for c in plain)
        print(f"   {head}")
        if row.get("suppressed"):
            continue
        for q in quantities:
            v, lo, hi = row[q], row[f"{q}_low"], row[f"{q}_high"]
            if v is None:
                continue
            ci = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else ""
            print(f"      {q:28s} {v:12.6g}  {ci}")


def _cmd_audit(args: argparse.Namespace) -> int:
    from receval.gate.config import load_config
    from receval.gate.runner import _audit_dict, _clean, report_json, run_audits

    cfg = load_config(args.config, require_gates=False)
    if not cfg.audits:
        from receval.errors import UsageError

        raise UsageError(f"{args.config} declares no [audits.<name>] table (docs/gate-config.md)")
    audits, errors = run_audits(cfg)
    doc = _clean({"audits": {k: (None if v is None else _audit_dict(v)) for k, v in audits.items()},
                  "errors": errors})
    text = report_json(doc)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if args.output == "json":
        print(text, end="")
    else:
        for name, res in audits.items():
            print(f"== {name}")
            if res is None:
                print("   (failed, see below)")
                continue
            frames = res.items() if isinstance(res, dict) else [("", res)]
            for sub_name, r in frames:
                if sub_name:
                    print(f"-- {sub_name}")
                _print_audit_frame(r.to_frame())
            print()
    for e in errors:
        print(f"receval: error in {e['where']}: {e['message']}", file=sys.stderr)
    return EXIT_INPUT if errors else EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from receval.gate import verify_report

    ok, lines = verify_report(args.report, args.base)
    for line in lines:
        print(line)
    print("report matches its inputs" if ok else "report does NOT match its inputs")
    return EXIT_OK if ok else EXIT_FAIL


def _ope_frames(args: argparse.Namespace, logs: str, target: str | None, logging: str | None):
    """The ``ope`` inputs (logs; target and logging policy when given, else None), renamed by
    ``--column``, as pandas frames or, under ``--engine spark``, Spark frames; a log with a ``click``
    column and no ``reward`` column takes the clicks as rewards."""
    mapping = _mapping(args.column)
    if args.engine == "spark":
        from receval.engines.spark_ope import read_spark_frame as read
    else:
        read = _read_frame
    frames = [read(path, what, mapping) if path else None
              for path, what in ((logs, "logs"), (target, "target"), (logging, "logging"))]
    log = frames[0]
    if "reward" not in log.columns and "click" in log.columns:
        log = log.withColumn("reward", log["click"]) if args.engine == "spark" else log.assign(reward=log["click"])
    return log, frames[1], frames[2]


def _cmd_ope_slates(args: argparse.Namespace, names: list[str], reward_range) -> int:
    from receval.counterfactual import slates as sl
    from receval.errors import UsageError

    make = {
        "standard_ips": sl.StandardIPS, "sn_standard_ips": sl.SNStandardIPS,
        "independent_ips": sl.IndependentIPS, "sn_independent_ips": sl.SNIndependentIPS,
        "rips": sl.RewardInteractionIPS, "sn_rips": sl.SNRewardInteractionIPS,
        "pi": sl.PseudoInverse, "sn_pi": sl.SNPseudoInverse,
    }
    ignored = [flag for flag, given in (("--context", args.context), ("--logging", args.logging)) if given]
    if ignored:
        raise UsageError(f"{', '.join(ignored)} do not apply to the slate estimators")
    log, target, _ = _ope_frames(args, args.logs, args.target, None)
    data = sl.slate_feedback(log, target, reward_range=reward_range, varying_length=args.varying_length)
    results = sl.estimate_slates(
        [make[n]() for n in names], data, level=args.level, n_boot=args.n_boot, seed=args.seed, interval=args.interval
    )
    n_rows, min_slots, varying = data.n_rows, data.min_slots, data.varying  # local or Spark feedback alike
    settings = {
        "logs": args.logs, "target": args.target, "estimators": names, "reward_range": list(data.reward_range),
        "level": args.level, "interval": args.interval, "n_boot": args.n_boot, "seed": args.seed,
        "n_rows": n_rows, "n_slates": data.n_slates, "n_slots": data.n_slots,
        "varying_length": varying, "min_slots": min_slots,
        "engine": "spark" if args.engine == "spark" else "polars",
    }
    shape = f"{min_slots}-{data.n_slots}" if varying else f"{data.n_slots}"
    _print_ope(args.output, names, results, settings,
               f"{args.level:.0%} intervals: {results[0].interval}; {settings['n_rows']} rows, "
               f"{data.n_slates} slates of {shape} slots; values are expected slate rewards.")
    return EXIT_OK


def _cmd_metrics() -> int:
    from receval.metrics.registry import REGISTRY

    for spec in REGISTRY.values():
        cut = {"none": "", "optional": "[@k]", "required": "@k"}[spec.cutoff]
        params = ", ".join(f"{k}={p.default if not isinstance(p.default, float) or not p.default.is_integer() else int(p.default)}" for k, p in spec.params.items())
        name = spec.name + (f"({params})" if params else "") + cut
        direction = "higher is better" if spec.greater_is_better else "lower is better"
        print(f"{name:40s} {direction:17s} {spec.description}")
    return EXIT_OK


def _safe(text: str, *, oneline: bool = False) -> str:
    """Text for a terminal or CI log: control characters from configs or data (ANSI escapes that could erase
    or fake lines, NUL, BEL) become U+FFFD; ``oneline`` also folds line breaks, so one gate is one line."""
    from receval.reporting._util import no_controls

    text = no_controls(text)
    return " ".join(text.split()) if oneline else text


@contextlib.contextmanager
def _warnings_to_stderr():
    """receval's own warnings (e.g. a run missing most judged requests) as ``receval: warning: ...`` lines on
    stderr, printed even when the command then fails; other warnings are shown as usual."""
    import warnings

    from receval.errors import ReceValWarning, keep_warnings

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always", ReceValWarning)
            try:
                yield
            finally:
                caught = list(rec)
    finally:
        for w in keep_warnings(caught, ReceValWarning):
            print(_safe(f"receval: warning: {w.message}", oneline=True), file=sys.stderr)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "evaluate":
        return _cmd_evaluate(args)
    if args.command == "compare":
        return _cmd_compare(args)
    if args.command == "metrics":
        return _cmd_metrics()
    if args.command == "ope":
        return _cmd_ope(args)
    if args.command == "gate":
        return _cmd_gate(args)
    if args.command == "audit":
        return _cmd_audit(args)
    if args.command == "verify":
        return _cmd_verify(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return EXIT_INTERNAL  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    from receval.errors import ReceValError

    try:
        with _warnings_to_stderr():
            return _dispatch(parser, args)
    except ReceValError as exc:
        print(_safe(f"receval: error: {exc}"), file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:  # pragma: no cover
        print("receval: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except BrokenPipeError:  # pragma: no cover - e.g. piped into head
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the one place that maps crashes to exit 3
        import traceback

        print(
            f"receval: internal error ({type(exc).__name__}: {exc}). This is a bug; please report it "
            "with the traceback below.",
            file=sys.stderr,
        )
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
