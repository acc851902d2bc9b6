"""Run a gate configuration: compute the configured results, decide every gate, build the report.

The flow is strictly one way: config -> inputs (read once, fingerprinted) ->
results (evaluation, comparison, counterfactual, audits; each section
computed independently so one failure does not hide the others) -> gates
(pure functions of the results) -> ``report`` (a JSON-safe dict, the single
source of every artefact, docs/report-schema.md).

Fail closed: a gate whose section could not be computed, whose metric is
absent or whose value is undefined gets status ``error``; any error makes the
verdict ``error`` (exit 2), never ``pass``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from receval.errors import CoverageWarning, ReceValError, keep_warnings
from receval.gate.config import GateConfig, InputSpec

__all__ = ["run_gate", "GateRun", "OPE_ESTIMATORS", "REPORT_SCHEMA_VERSION"]

REPORT_SCHEMA_VERSION = 1

OPE_ESTIMATORS = ("dm", "ips", "clipped_ips", "snips", "dr", "sndr", "switch_dr", "dros")

_ALL = "(all)"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(x: Any) -> Any:
    """JSON-safe, deterministic: numpy values to Python, non-finite floats to None (the evaluation's rule)."""
    from receval.evaluation import _json_safe

    return _json_safe(x)


class SectionError(ReceValError):
    """A results section could not be computed; gates that need it error out."""


@dataclass
class GateRun:
    """Everything a run produced: the report dict and the exit status."""

    report: dict[str, Any]
    exit_code: int
    frames: dict[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- inputs


class _Inputs:
    """Reads each input once, on first use; records read errors by input name."""

    def __init__(self, cfg: GateConfig):
        self.cfg = cfg
        self._cache: dict[str, Any] = {}

    def spec(self, name: str) -> InputSpec:
        return self.cfg.inputs[name]

    def frame(self, name: str):
        """A polars DataFrame with canonical column names (the input's ``columns`` mapping applied)."""
        if name in self._cache:
            return self._cache[name]
        import polars as pl

        from receval.data.readers import read_file

        spec = self.spec(name)
        if not spec.path.exists():
            raise SectionError(f"input {name!r}: file not found: {spec.rel_path}")
        if spec.format == "obd":
            from receval.counterfactual.obd import read_obd

            frame = pl.from_pandas(read_obd(spec.path))
        else:
            frame = read_file(spec.path, format=spec.format)
        if spec.columns:
            missing = [src for src in spec.columns.values() if src not in frame.columns]
            if missing:
                raise SectionError(
                    f"input {name!r}: column(s) {', '.join(map(repr, missing))} named in [inputs.{name}].columns "
                    f"are not in {spec.rel_path} (columns: {', '.join(frame.columns[:20])})"
                )
            frame = frame.rename({src: canon for canon, src in spec.columns.items()})
        self._cache[name] = frame
        return frame

    def pandas(self, name: str):
        return self.frame(name).to_pandas()

    def audit_run(self, name: str):
        """The run ``name`` for the exposure and popularity audits: checked and ranked once
        (``receval.audits.prepare``, at the largest k they ask for) when both read it; the same
        results as the frame itself. The frame when only one reads it, or when preparing fails
        (each audit then reports its own error)."""
        key = ("prepared", name)
        if key in self._cache:
            return self._cache[key]
        ks = [spec.get("k") if audit == "exposure" else spec.get("k", 10)
              for audit, spec in self.cfg.audits.items()
              if audit in ("exposure", "popularity") and spec.get("run") == name]
        run = self.frame(name)
        if len(ks) > 1 and all(k is None or (isinstance(k, int) and not isinstance(k, bool)) for k in ks):
            from receval.audits import prepare

            try:
                run = prepare(run, k=None if any(k is None for k in ks) else max(ks))
            except ReceValError:
                pass
        self._cache[key] = run
        return run


# --------------------------------------------------------------------------- sections


def _evaluation(cfg: GateConfig, inp: _Inputs, st: dict[str, Any]) -> dict[str, Any]:
    import receval
    from receval.metrics.registry import parse_metric

    ev = cfg.evaluation
    assert ev is not None
    metrics = [str(parse_metric(m)) for m in ev["metrics"]]
    curve_metrics = {fam: [str(parse_metric(f"{fam}@{k}")) for k in ks] for fam, ks in ev["curves"].items()}
    # metrics referenced by gates are computed too, so a gate never silently has nothing to read
    for g in cfg.gates:
        m = g.params.get("metric")
        if g.type in ("metric", "change", "non_inferiority") and m and m not in metrics:
            metrics.append(m)
    extra = [m for ms in curve_metrics.values() for m in ms if m not in metrics]
    labels = inp.frame(ev["labels"]) if ev["labels"] else None
    attrs = inp.frame(ev["attributes"]) if ev["attributes"] else None
    catalog = inp.frame(ev["catalog"]) if ev["catalog"] else None
    out: dict[str, Any] = {}
    runs = [ev["candidate"]] + ([ev["baseline"]] if ev["baseline"] else [])
    objects = {}
    for name in runs:
        with warnings.catch_warnings(record=True) as caught:  # a CoverageWarning goes into the report
            warnings.simplefilter("always", CoverageWarning)
            res = receval.evaluate(
                inp.frame(name), labels, metrics + extra, by=ev["by"] or None, attributes=attrs, catalog=catalog,
                level=st["level"], n_boot=st["n_boot"], seed=st["seed"],
            )
        notes = [str(w.message).replace("run: ", f"{name}: ", 1) for w in keep_warnings(caught, CoverageWarning)]
        c = res.counts
        if labels is not None and c.get("evaluated", 0) == c.get("labels_only_scored_zero", 0):
            # fail closed: every request would score 0 from the labels alone, so the numbers say nothing about
            # the run (typically ids that do not match, e.g. 'q7' vs 7, or an empty run)
            raise SectionError(
                f"evaluation: no request of the run {name!r} is in the labels ({c.get('run_requests', 0)} run "
                f"requests, {c.get('label_requests', 0)} judged requests, none in common); its metrics would all "
                "be 0 from the labels-only requests. Check that run and labels use the same request ids "
                "(text 'q7' is not 7) and the same column mapping")
        d = res.to_dict()
        if notes:
            d["warnings"] = notes
        for m in extra:  # curve-only metrics live under "curves", not in the headline table
            d["metrics"].pop(m, None)
        if d.get("slices"):
            # slices follow the audits' privacy rule: a slice smaller than min_group_size keeps its n, not its values
            mgs = st["min_group_size"]
            d["slices"] = [
                {**row, "suppressed": True, "mean": None, "ci_low": None, "ci_high": None}
                if (row.get("n") or 0) < mgs else {**row, "suppressed": False}
                for row in d["slices"] if row.get("metric") not in extra
            ]
        d["curves"] = {
            fam: [
                {"k": k, "mean": res[m].mean, "ci_low": res[m].ci_low, "ci_high": res[m].ci_high, "n": res[m].n}
                for k, m in zip(ev["curves"][fam], ms, strict=True)
            ]
            for fam, ms in curve_metrics.items()
        }
        rel = _reliability(res)
        if rel is not None and ev["reliability"]:
            d["reliability"] = rel
        out[name] = d
        objects[name] = res
    return {"dict": out, "objects": objects, "metrics": metrics}


def _reliability(res) -> list[dict[str, Any]] | None:
    for name, det in sorted(res.details.items()):
        if name.startswith("ece") and isinstance(det, dict):
            for key in ("reliability", "table"):
                if key in det:
                    return det[key]
    return None


def _comparison(cfg: GateConfig, inp: _Inputs, st: dict[str, Any], metrics: list[str]) -> Any:
    import receval

    ev = cfg.evaluation
    assert ev is not None and ev["baseline"]
    labels = inp.frame(ev["labels"]) if ev["labels"] else None
    catalog = inp.frame(ev["catalog"]) if ev["catalog"] else None
    margins = {g.params["metric"]: float(g.params["margin"]) for g in cfg.gates if g.type == "non_inferiority"
               and not g.params.get("relative")}
    with warnings.catch_warnings():  # the evaluation section already records each run's CoverageWarning
        warnings.simplefilter("ignore", CoverageWarning)
        return receval.compare(
            {ev["baseline"]: inp.frame(ev["baseline"]), ev["candidate"]: inp.frame(ev["candidate"])},
            labels, metrics, baseline=ev["baseline"], correction=st["correction"], alpha=st["alpha"],
            margin=margins or None, catalog=catalog, level=st["level"], n_boot=st["n_boot"], seed=st["seed"],
        )


def _estimator(name: str, clip: float):
    from receval.counterfactual import _estimators as E

    return {
        "dm": E.DM(), "ips": E.IPS(), "clipped_ips": E.ClippedIPS(clip=clip), "snips": E.SNIPS(), "dr": E.DR(),
        "sndr": E.SNDR(), "switch_dr": E.SwitchDR(), "dros": E.DROS(),
    }[name]


def _counterfactual(cfg: GateConfig, inp: _Inputs, st: dict[str, Any]) -> dict[str, Any]:
    from receval.counterfactual import RewardModel, estimate_many, logged_feedback
    from receval.counterfactual.lift import Lift

    cf = cfg.counterfactual
    assert cf is not None
    log = inp.pandas(cf["logs"])
    if cf["target"]:
        target = inp.pandas(cf["target"])
    else:
        from receval.counterfactual.obd import empirical_target

        target = empirical_target(inp.pandas(cf["policy_log"]), log)
    model = None
    if cf["reward_model"] != "none":
        ctx = cf["context_columns"] or [c for c in ("user_feature_0", "user_feature_1", "user_feature_2",
                                                    "user_feature_3") if c in log.columns]
        model = RewardModel(kind=cf["reward_model"], seed=st["seed"]) if ctx else None
        context = tuple(ctx)
    else:
        context = ()
    data = logged_feedback(log, target, reward_range=cf["reward_range"], reward_model=model,
                           context_columns=context if model is not None else ())
    names = list(cf["estimators"])
    ests = [_estimator(n, cf["clip"]) for n in names]
    # lifts for the gates that ask for them, in the same bootstrap pass
    lift_for = sorted({g.params["estimator"] for g in cfg.gates if g.type == "ope" and g.params.get("lift")})
    lifts = [Lift(_estimator(n, cf["clip"])) for n in lift_for]
    results = estimate_many(ests + lifts, data, level=st["level"], n_boot=st["n_boot"], seed=st["seed"])
    by_name = {n: r for n, r in zip(names, results[: len(names)], strict=True)}
    lift_by = {n: r for n, r in zip(lift_for, results[len(names):], strict=True)}
    logged_value = float(np.mean(data.reward)) if data.n_rows else math.nan
    d = {
        "estimates": [r.to_dict() for r in results[: len(names)]],
        "lifts": [r.to_dict() for r in lift_by.values()],
        "data": {"rows": int(data.n_rows), "requests": int(data.n_units), "logged_policy_value": logged_value},
    }
    return {"dict": d, "by_name": by_name, "lifts": lift_by}


def _audit(name: str, spec: dict[str, Any], inp: _Inputs, st: dict[str, Any]):
    common = {"n_boot": st["n_boot"], "level": st["level"], "seed": st["seed"], "min_group_size": st["min_group_size"]}

    def f(key: str):
        return inp.frame(spec[key]) if spec.get(key) else None

    if name == "exposure":
        from receval.audits.exposure import exposure_audit

        kw = {k: spec[k] for k in ("k", "browsing", "patience", "target") if k in spec}
        return exposure_audit(inp.audit_run(spec["run"]), f("groups"), group_column=spec["group_column"], labels=f("labels"), **kw,
                              **common)
    if name == "popularity":
        from receval.audits.popularity import popularity_bias_audit

        kw = {k: spec[k] for k in ("k", "popularity", "tail_quantile", "group_column", "exclude_history")
              if k in spec}
        return popularity_bias_audit(inp.audit_run(spec["run"]), f("catalog"), labels=f("labels"), user_groups=f("user_groups"),
                                     history=f("history"), **kw, **common)
    if name == "miscalibration":
        from receval.audits.miscalibration import miscalibration_audit

        kw = {k: spec[k] for k in ("k", "category", "alpha", "position_weight", "group_column") if k in spec}
        return miscalibration_audit(f("run"), f("history"), f("catalog"), user_groups=f("user_groups"), **kw,
                                    **common)
    if name == "safety":
        from receval.audits.safety import safety_audit

        kw = {k: spec[k] for k in ("k", "flag_column", "negative_label", "group_column") if k in spec}
        return safety_audit(f("run"), f("flags"), labels=f("labels"), user_groups=f("user_groups"), **kw, **common)
    if name == "drift":
        from receval.audits.drift import drift_audit

        cols = spec["columns"] if isinstance(spec["columns"], list) else [spec["columns"]]
        return drift_audit(f("baseline"), f("current"), cols, bins=int(spec.get("bins", 10)))
    if name == "disparity":
        try:
            from receval.audits.disparity import disparity_audit
        except ImportError:  # fail closed: a capability that is not there is an error, never a pass
            raise SectionError("audit 'disparity' is not supported by this receval version") from None
        kw = {k: spec[k] for k in ("intersections", "unit", "missing") if k in spec}
        if "tolerance" in spec:
            kw["tolerance"] = tuple(spec["tolerance"])
        metrics = spec.get("metrics", ["ndcg@10"])
        return disparity_audit(f("run"), f("labels"), metrics, attributes=f("attributes"),
                               sensitive=spec["sensitive"], **kw, **common)
    if name == "data_quality":
        from receval.audits.quality import data_quality

        kinds = _input_kinds(inp.cfg)
        kinds.update(spec.get("kinds", {}))
        out = {}
        for n in spec["inputs"]:
            spec_n = inp.spec(n)
            if not spec_n.path.exists():
                raise SectionError(f"input {n!r}: file not found: {spec_n.rel_path}")
            out[n] = data_quality(inp.frame(n), kind=kinds.get(n, "run"), name=n)
        return out
    raise SectionError(f"audit {name!r} is not supported")  # pragma: no cover - config rejects it first


def run_audits(cfg: GateConfig) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Only the ``[audits.*]`` of a config: name -> audit result (or None when it failed), and the errors."""
    inp = _Inputs(cfg)
    out: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for name, spec in cfg.audits.items():
        try:
            out[name] = _audit(name, spec, inp, cfg.settings)
        except ReceValError as e:
            out[name] = None
            errors.append({"where": f"audits.{name}", "message": str(e)})
    return out, errors


def _input_kinds(cfg: GateConfig) -> dict[str, str]:
    """Frame kind of each input from the role the config gives it (labels, logged impressions, else a run)."""
    kinds: dict[str, str] = {}
    if cfg.evaluation and cfg.evaluation.get("labels"):
        kinds[cfg.evaluation["labels"]] = "labels"
    if cfg.counterfactual:
        kinds[cfg.counterfactual["logs"]] = "impressions"
    return kinds


def _audit_dict(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _audit_dict(v) for k, v in obj.items()}
    return obj.to_dict()


# --------------------------------------------------------------------------- provenance


def _sha256(path: Path) -> tuple[str, int]:
    import hashlib

    h = hashlib.sha256()
    if path.is_dir():  # a Parquet dataset directory: hash of (relative name, content) pairs in name order
        size = 0
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            digest, n = _sha256(p)
            size += n
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + digest.encode() + b"\n")
        return h.hexdigest(), size
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def fingerprint_inputs(cfg: GateConfig) -> list[dict[str, Any]]:
    out = []
    for name in sorted(cfg.inputs):
        spec = cfg.inputs[name]
        if spec.path.exists():
            digest, size = _sha256(spec.path)
        else:
            digest, size = None, None
        out.append({"name": name, "path": spec.rel_path, "sha256": digest, "bytes": size})
    return out


def _versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    from receval._version import __version__

    out = {"receval": __version__, "python": platform.python_version()}
    for dist in ("numpy", "polars", "pandas", "pyarrow", "scipy", "scikit-learn", "fairlearn", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit(where: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


# --------------------------------------------------------------------------- the run


def run_gate(cfg: GateConfig, *, progress=None) -> GateRun:
    """Compute everything ``cfg`` asks for and decide its gates (no files written; see :func:`write_outputs`)."""
    from receval.gate.checks import decide_gates

    say = progress or (lambda msg: None)
    st = cfg.settings
    inp = _Inputs(cfg)
    errors: list[dict[str, str]] = []
    sections: dict[str, Any] = {}
    results: dict[str, Any] = {}

    def attempt(where: str, fn):
        say(f"computing {where}")
        try:
            return fn()
        except ReceValError as e:  # bad input or unsupported capability: recorded, gates needing it error out
            errors.append({"where": where, "message": str(e)})
            sections[where] = e
            return None

    if cfg.evaluation is not None:
        ev = attempt("evaluation", lambda: _evaluation(cfg, inp, st))
        if ev is not None:
            sections["evaluation"] = ev
            results["evaluation"] = ev["dict"]
            if cfg.evaluation["baseline"]:
                cmp = attempt("comparison", lambda: _comparison(cfg, inp, st, ev["metrics"]))
                if cmp is not None:
                    sections["comparison"] = cmp
                    results["comparison"] = cmp.to_dict()
    if cfg.counterfactual is not None:
        cf = attempt("counterfactual", lambda: _counterfactual(cfg, inp, st))
        if cf is not None:
            sections["counterfactual"] = cf
            results["counterfactual"] = cf["dict"]
    for name, spec in cfg.audits.items():
        a = attempt(f"audits.{name}", lambda name=name, spec=spec: _audit(name, spec, inp, st))
        if a is not None:
            sections[f"audits.{name}"] = a
            results.setdefault("audits", {})[name] = _audit_dict(a)

    say("deciding gates")
    gates = decide_gates(cfg, sections, inp)
    n_pass = sum(g["status"] == "pass" for g in gates)
    n_fail = sum(g["status"] == "fail" for g in gates)
    n_err = sum(g["status"] == "error" for g in gates)
    verdict = "error" if (n_err or errors) else ("fail" if n_fail else "pass")
    say("fingerprinting inputs")
    report = {
        "schema": "receval.report",
        "schema_version": REPORT_SCHEMA_VERSION,
        "verdict": verdict,
        "summary": {"gates": len(gates), "passed": n_pass, "failed": n_fail, "errors": n_err},
        "model": {**cfg.model, "run": cfg.evaluation["candidate"] if cfg.evaluation else None},
        "card": cfg.card,
        "gates": gates,
        "results": results,
        "settings": {k: st[k] for k in ("level", "n_boot", "seed", "correction", "alpha", "min_group_size")},
        "provenance": {
            "config": {"path": cfg.path.name, "sha256": _bytes_sha256(cfg.text)},
            "inputs": fingerprint_inputs(cfg),
            "versions": _versions(),
            "git_commit": _git_commit(cfg.path.parent),
        },
        "errors": errors,
    }
    report = _clean(report)
    code = {"pass": 0, "fail": 1, "error": 2}[verdict]
    return GateRun(report=report, exit_code=code)


def error_report(where: str, message: str, config_path: str | Path | None = None) -> dict[str, Any]:
    """A report for a run that could not start or finish (bad config, internal error): verdict ``error``."""
    cfg = None
    if config_path is not None:
        p = Path(config_path)
        try:
            cfg = {"path": p.name, "sha256": _bytes_sha256(p.read_bytes())}
        except OSError:
            cfg = {"path": p.name, "sha256": None}
    return _clean({
        "schema": "receval.report",
        "schema_version": REPORT_SCHEMA_VERSION,
        "verdict": "error",
        "summary": {"gates": 0, "passed": 0, "failed": 0, "errors": 0},
        "model": {"name": "(config not loaded)"},
        "card": {},
        "gates": [],
        "results": {},
        "settings": {},
        "provenance": {"config": cfg, "inputs": [], "versions": _versions(), "git_commit": None},
        "errors": [{"where": where, "message": message}],
    })


def _bytes_sha256(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def report_json(report: dict[str, Any]) -> str:
    """The canonical text of ``report.json``: sorted keys, 2-space indent, no NaN, trailing newline."""
    import json

    from receval._text import escape_invisible

    # bidirectional controls and invisible characters as \uXXXX escapes: same value, no hidden reordering
    return escape_invisible(json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)) + "\n"
