"""The gate configuration file (TOML, read with the standard library's ``tomllib``).

One file declares the inputs, what to compute (evaluation, comparison,
counterfactual estimates, audits), the gates and the model card's
human-written sections. Every key is checked here, before any data is read,
so a typo fails in milliseconds with the key's dotted path and its line
("gates[2].threshold (line 41): must be a number, got 'high'"). The full
reference is docs/gate-config.md.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from receval.errors import UsageError

__all__ = ["ConfigError", "GateConfig", "load_config", "GATE_TYPES"]


class ConfigError(UsageError):
    """An invalid gate configuration: names the key, its line and the rule."""


#: gate type -> keys it accepts besides ``id``, ``type``, ``description``
GATE_TYPES: dict[str, frozenset[str]] = {
    "metric": frozenset({"run", "metric", "bound", "op", "threshold"}),
    "change": frozenset({"metric", "min_change", "relative", "bound", "significant"}),
    "non_inferiority": frozenset({"metric", "margin", "relative"}),
    "sample_size": frozenset({"of", "min_n", "run"}),
    "ope": frozenset({"estimator", "lift", "bound", "op", "threshold"}),
    "ope_diagnostics": frozenset({"estimator", "min_ess_share", "max_weight", "max_unsupported_mass"}),
    "fairness": frozenset({"metric", "attribute", "ratio", "max_difference"}),
    "exposure": frozenset({"quantity", "group", "bound", "op", "threshold", "within"}),
    "popularity": frozenset({"quantity", "group", "bound", "op", "threshold"}),
    "safety": frozenset({"quantity", "group", "bound", "op", "threshold"}),
    "miscalibration": frozenset({"quantity", "group", "bound", "op", "threshold"}),
    "drift": frozenset({"column", "max_psi", "max_ks"}),
    "data_quality": frozenset({"input", "max_missing_rate", "max_duplicates", "max_errors"}),
}

_OPS = (">=", "<=", ">", "<")
_BOUNDS = ("value", "ci_low", "ci_high")
_CARD_KEYS = (
    "intended_use", "intended_users", "out_of_scope_use", "factors", "training_data", "evaluation_data",
    "limitations", "ethical_considerations", "caveats_and_recommendations",
)
_MODEL_KEYS = ("name", "version", "type", "description", "owners", "license", "references", "citation")
_SETTINGS = {"level": 0.95, "n_boot": 1000, "seed": 0, "correction": "holm", "alpha": 0.05, "min_group_size": 20}
_INPUT_KEYS = ("path", "format", "columns")
_FORMATS = ("auto", "parquet", "csv", "tsv", "jsonl", "trec", "obd")
_SECTIONS = ("model", "card", "settings", "inputs", "evaluation", "counterfactual", "audits", "gates")
_EVAL_KEYS = ("candidate", "baseline", "labels", "metrics", "by", "attributes", "catalog", "curves", "reliability")
_CF_KEYS = ("logs", "target", "policy_log", "estimators", "reward_range", "reward_model", "clip", "context_columns")
_AUDITS: dict[str, tuple[str, ...]] = {
    "exposure": ("run", "groups", "group_column", "target", "browsing", "patience", "k", "labels",
                 "reference_group"),
    "popularity": ("run", "catalog", "popularity", "tail_quantile", "k", "labels", "user_groups", "group_column",
                   "history", "exclude_history"),
    "miscalibration": ("run", "history", "catalog", "category", "k", "alpha", "position_weight", "user_groups",
                       "group_column"),
    "safety": ("run", "flags", "flag_column", "k", "labels", "negative_label", "user_groups", "group_column"),
    "drift": ("baseline", "current", "columns", "bins"),
    "disparity": ("run", "labels", "metrics", "attributes", "sensitive", "intersections", "unit", "missing",
                  "tolerance"),
    "data_quality": ("inputs", "kinds"),
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    path: Path  # absolute
    rel_path: str  # as written, relative to the config file
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GateSpec:
    id: str
    type: str
    params: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class GateConfig:
    path: Path
    text: bytes
    model: dict[str, Any]
    card: dict[str, str]
    settings: dict[str, Any]
    inputs: dict[str, InputSpec]
    evaluation: dict[str, Any] | None
    counterfactual: dict[str, Any] | None
    audits: dict[str, dict[str, Any]]
    gates: list[GateSpec]


# --------------------------------------------------------------------------- locating keys


def _line_of(lines: list[str], path: tuple[Any, ...]) -> int | None:
    """Best-effort 1-based line of a dotted key path (tomllib keeps no positions)."""
    if not path:
        return None
    # find the table that holds the key: [a.b] or the n-th [[gates]]
    start, end = 0, len(lines)
    head = path[0]
    rest = path[1:]
    if head == "gates" and rest and isinstance(rest[0], int):
        hits = [i for i, line in enumerate(lines) if re.match(r"^\s*\[\[\s*gates\s*\]\]", line)]
        if rest[0] < len(hits):
            start = hits[rest[0]]
            end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
            rest = rest[1:]
            if not rest:
                return start + 1
        else:
            return None
    else:
        # longest [a.b.c] header matching a prefix of the path
        for depth in range(len(path), 0, -1):
            name = r"\s*\.\s*".join(re.escape(str(p)) for p in path[:depth])
            pat = re.compile(rf"^\s*\[\s*{name}\s*\]\s*(#.*)?$")
            hit = next((i for i, line in enumerate(lines) if pat.match(line)), None)
            if hit is not None:
                start = hit
                end = next((i for i in range(hit + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
                rest = path[depth:]
                if not rest:
                    return hit + 1
                break
    if not rest:
        return None
    key = str(rest[0])
    pat = re.compile(rf"^\s*(\"{re.escape(key)}\"|{re.escape(key)})\s*[=.]")
    for i in range(start, end):
        if pat.match(lines[i]):
            return i + 1
    return start + 1 if start or end != len(lines) else None


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _Checker:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def fail(self, key: tuple[Any, ...], rule: str) -> ConfigError:
        line = _line_of(self.lines, key)
        where = f" (line {line})" if line else ""
        return ConfigError(f"{self.path.name}: {_dotted(key)}{where}: {rule}")

    def table(self, value: Any, key: tuple[Any, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__} {value!r}")
        return value

    def known(self, table: dict[str, Any], allowed: tuple[str, ...] | frozenset[str], key: tuple[Any, ...]) -> None:
        for k in table:
            if k not in allowed:
                import difflib

                close = difflib.get_close_matches(k, list(allowed), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(sorted(allowed))}"
                raise self.fail((*key, k), f"unknown key{hint}")

    def string(self, table: dict[str, Any], k: str, key: tuple[Any, ...], *, required: bool = False,
               choices: tuple[str, ...] | None = None, default: str | None = None) -> str | None:
        if k not in table:
            if required:
                raise self.fail(key, f"missing required key {k!r}")
            return default
        v = table[k]
        if not isinstance(v, str) or not v:
            raise self.fail((*key, k), f"must be a non-empty string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.fail((*key, k), f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def number(self, table: dict[str, Any], k: str, key: tuple[Any, ...], *, required: bool = False,
               default: float | None = None, lo: float | None = None, hi: float | None = None) -> float | None:
        if k not in table:
            if required:
                raise self.fail(key, f"missing required key {k!r}")
            return default
        v = table[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise self.fail((*key, k), f"must be a number, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail((*key, k), f"must lie in [{lo}, {hi}], got {v!r}")
        return float(v)

    def boolean(self, table: dict[str, Any], k: str, key: tuple[Any, ...], default: bool) -> bool:
        v = table.get(k, default)
        if not isinstance(v, bool):
            raise self.fail((*key, k), f"must be true or false, got {v!r}")
        return v

    def strings(self, table: dict[str, Any], k: str, key: tuple[Any, ...], *, required: bool = False) -> list[str]:
        if k not in table:
            if required:
                raise self.fail(key, f"missing required key {k!r}")
            return []
        v = table[k]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise self.fail((*key, k), f"must be a non-empty list of strings, got {v!r}")
        return list(v)

    def input_ref(self, table: dict[str, Any], k: str, key: tuple[Any, ...], inputs: dict[str, InputSpec],
                  *, required: bool = False) -> str | None:
        name = self.string(table, k, key, required=required)
        if name is not None and name not in inputs:
            raise self.fail((*key, k), f"names no input: {name!r} is not a key of [inputs] "
                            f"(declared: {', '.join(sorted(inputs)) or 'none'})")
        return name


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, *, require_gates: bool = True) -> GateConfig:
    """Read and check a gate configuration; raises :class:`ConfigError` naming the key and line.

    ``require_gates=False`` accepts a file without ``[[gates]]`` (``receval audit``
    runs only the audits of a config).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path.name}: not UTF-8 text (byte {e.start})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path.name}: invalid TOML: {e}") from None
    c = _Checker(path, text)
    c.known(doc, _SECTIONS, ())
    base = path.resolve().parent

    model = c.table(doc.get("model", {}), ("model",))
    c.known(model, _MODEL_KEYS, ("model",))
    c.string(model, "name", ("model",), required=True)
    for k in ("version", "type", "description", "license", "citation"):
        c.string(model, k, ("model",))
    owners = model.get("owners", [])
    if not isinstance(owners, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in owners):
        raise c.fail(("model", "owners"), 'must be a list of tables like { name = "Team", contact = "a@b.c" }')
    for i, o in enumerate(owners):
        c.known(o, ("name", "contact"), ("model", "owners", i))
    if "references" in model:
        c.strings(model, "references", ("model",))

    card = c.table(doc.get("card", {}), ("card",))
    c.known(card, _CARD_KEYS, ("card",))
    for k in card:
        c.string(card, k, ("card",))

    settings_t = c.table(doc.get("settings", {}), ("settings",))
    c.known(settings_t, tuple(_SETTINGS), ("settings",))
    settings = dict(_SETTINGS)
    settings["level"] = c.number(settings_t, "level", ("settings",), default=0.95, lo=0.5, hi=0.999)
    n_boot = c.number(settings_t, "n_boot", ("settings",), default=1000, lo=1, hi=100_000)
    settings["n_boot"] = int(n_boot)
    seed = c.number(settings_t, "seed", ("settings",), default=0, lo=0)
    settings["seed"] = int(seed)
    settings["correction"] = c.string(settings_t, "correction", ("settings",), default="holm",
                                      choices=("holm", "bonferroni", "none"))
    settings["alpha"] = c.number(settings_t, "alpha", ("settings",), default=0.05, lo=1e-6, hi=0.5)
    settings["min_group_size"] = int(c.number(settings_t, "min_group_size", ("settings",), default=20, lo=1))
    for k in ("n_boot", "seed", "min_group_size"):
        if k in settings_t and not isinstance(settings_t[k], int):
            raise c.fail(("settings", k), f"must be an integer, got {settings_t[k]!r}")

    inputs: dict[str, InputSpec] = {}
    for name, spec in c.table(doc.get("inputs", {}), ("inputs",)).items():
        key = ("inputs", name)
        if isinstance(spec, str):
            spec = {"path": spec}
        spec = c.table(spec, key)
        c.known(spec, _INPUT_KEYS, key)
        rel = c.string(spec, "path", key, required=True)
        fmt = c.string(spec, "format", key, default="auto", choices=_FORMATS)
        cols = c.table(spec.get("columns", {}), (*key, "columns"))
        for ck, cv in cols.items():
            if not isinstance(cv, str):
                raise c.fail((*key, "columns", ck), f"must be the source column name (a string), got {cv!r}")
        inputs[name] = InputSpec(name, (base / rel).resolve(), rel, fmt, dict(cols))

    evaluation = None
    if "evaluation" in doc:
        ev = c.table(doc["evaluation"], ("evaluation",))
        c.known(ev, _EVAL_KEYS, ("evaluation",))
        k = ("evaluation",)
        evaluation = {
            "candidate": c.input_ref(ev, "candidate", k, inputs, required=True),
            "baseline": c.input_ref(ev, "baseline", k, inputs),
            "labels": c.input_ref(ev, "labels", k, inputs),
            "metrics": c.strings(ev, "metrics", k, required=True),
            "by": c.strings(ev, "by", k),
            "attributes": c.input_ref(ev, "attributes", k, inputs),
            "catalog": c.input_ref(ev, "catalog", k, inputs),
            "curves": {},
            "reliability": c.boolean(ev, "reliability", k, True),
        }
        from receval.errors import MetricNameError
        from receval.metrics.registry import parse_metric

        for i, m in enumerate(evaluation["metrics"]):
            try:
                parse_metric(m)
            except MetricNameError as e:
                raise c.fail(("evaluation", "metrics", i), str(e)) from None
        curves = c.table(ev.get("curves", {}), ("evaluation", "curves"))
        for fam, ks in curves.items():
            if not isinstance(ks, list) or not ks or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in ks):
                raise c.fail(("evaluation", "curves", fam), f"must be a list of positive integer cutoffs, got {ks!r}")
            try:
                parse_metric(f"{fam}@{ks[0]}")
            except MetricNameError as e:
                raise c.fail(("evaluation", "curves", fam), str(e)) from None
            evaluation["curves"][fam] = sorted(set(ks))

    counterfactual = None
    if "counterfactual" in doc:
        cf = c.table(doc["counterfactual"], ("counterfactual",))
        c.known(cf, _CF_KEYS, ("counterfactual",))
        k = ("counterfactual",)
        counterfactual = {
            "logs": c.input_ref(cf, "logs", k, inputs, required=True),
            "target": c.input_ref(cf, "target", k, inputs),
            "policy_log": c.input_ref(cf, "policy_log", k, inputs),
            "estimators": c.strings(cf, "estimators", k, required=True),
            "reward_model": c.string(cf, "reward_model", k, default="logistic", choices=("logistic", "hgb", "none")),
            "clip": c.number(cf, "clip", k, default=10.0, lo=1e-12),
            "context_columns": c.strings(cf, "context_columns", k),
            "reward_range": None,
        }
        if (counterfactual["target"] is None) == (counterfactual["policy_log"] is None):
            raise c.fail(k, "give exactly one of 'target' (a target-policy table) or 'policy_log' "
                         "(the target policy's own log, turned into its empirical (item, position) distribution)")
        from receval.gate.runner import OPE_ESTIMATORS

        for i, e in enumerate(counterfactual["estimators"]):
            if e not in OPE_ESTIMATORS:
                raise c.fail(("counterfactual", "estimators", i), f"unknown estimator {e!r}; known: {', '.join(OPE_ESTIMATORS)}")
        if "reward_range" in cf:
            rr = cf["reward_range"]
            if not (isinstance(rr, list) and len(rr) == 2 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in rr) and rr[0] < rr[1]):
                raise c.fail(("counterfactual", "reward_range"), f"must be [low, high] with low < high, got {rr!r}")
            counterfactual["reward_range"] = (float(rr[0]), float(rr[1]))

    audits: dict[str, dict[str, Any]] = {}
    au = c.table(doc.get("audits", {}), ("audits",))
    c.known(au, tuple(_AUDITS), ("audits",))
    for name, spec in au.items():
        key = ("audits", name)
        spec = c.table(spec, key)
        c.known(spec, _AUDITS[name], key)
        for ref in ("run", "groups", "catalog", "flags", "labels", "user_groups", "baseline", "current", "attributes",
                    "history"):
            if ref in spec:
                c.input_ref(spec, ref, key, inputs)
        if "inputs" in spec:
            listed = c.strings(spec, "inputs", key)
            for i, n in enumerate(listed):
                if n not in inputs:
                    raise c.fail((*key, "inputs", i), f"names no input: {n!r}")
                if n in listed[:i]:  # most likely a typo for another input, which would then go unchecked
                    raise c.fail((*key, "inputs", i), f"lists the input {n!r} twice")
        if name == "data_quality" and "kinds" in spec:
            kinds = c.table(spec["kinds"], (*key, "kinds"))
            for n, kd in kinds.items():
                if n not in inputs:
                    raise c.fail((*key, "kinds", n), f"names no input: {n!r}")
                if kd not in ("run", "labels", "impressions"):
                    raise c.fail((*key, "kinds", n), f"must be 'run', 'labels' or 'impressions', got {kd!r}")
        for pos in ("k", "bins"):
            if pos in spec and not (isinstance(spec[pos], int) and not isinstance(spec[pos], bool) and spec[pos] > 0):
                raise c.fail((*key, pos), f"must be a positive integer, got {spec[pos]!r}")
        _check_audit_types(c, spec, key)
        audits[name] = dict(spec)
    for name, required in (("exposure", ("run", "groups", "group_column")), ("popularity", ("run", "catalog")),
                           ("safety", ("run", "flags")), ("drift", ("baseline", "current", "columns")),
                           ("disparity", ("run", "attributes", "sensitive")), ("data_quality", ("inputs",)),
                           ("miscalibration", ("run", "history", "catalog"))):
        if name in audits:
            for r in required:
                if r not in audits[name]:
                    raise c.fail(("audits", name), f"missing required key {r!r}")

    gates: list[GateSpec] = []
    raw_gates = doc.get("gates", [])
    if not isinstance(raw_gates, list):
        raise c.fail(("gates",), "must be an array of tables: write each gate as [[gates]]")
    seen: set[str] = set()
    for i, g in enumerate(raw_gates):
        key = ("gates", i)
        g = c.table(g, key)
        gtype = c.string(g, "type", key, required=True)
        if gtype not in GATE_TYPES:
            # an unknown type is a config error (exit 2), never a pass
            import difflib

            close = difflib.get_close_matches(gtype, list(GATE_TYPES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise c.fail((*key, "type"), f"unsupported gate type {gtype!r}{hint} (supported: {', '.join(GATE_TYPES)})")
        gid = c.string(g, "id", key, default=f"{gtype}-{i + 1}")
        if gid in seen:
            raise c.fail((*key, "id"), f"duplicate gate id {gid!r}")
        seen.add(gid)
        desc = c.string(g, "description", key, default="") or ""
        params = {k: v for k, v in g.items() if k not in ("id", "type", "description")}
        c.known(params, GATE_TYPES[gtype], key)
        _check_gate(c, gtype, params, key)
        gates.append(GateSpec(gid, gtype, params, desc))
    if not gates and require_gates:
        raise c.fail(("gates",), "declares no gate: a launch gate needs at least one [[gates]] table")

    return GateConfig(path=path.resolve(), text=raw, model=dict(model), card=dict(card), settings=settings,
                      inputs=inputs, evaluation=evaluation, counterfactual=counterfactual, audits=audits, gates=gates)


# the type of every other audit key: checked here so a wrong type is a config error with its line, not an
# exception deep in an audit (values of the right type are checked by the audit itself: a section error)
_AUDIT_STRINGS = ("group_column", "browsing", "reference_group", "popularity", "category", "position_weight",
                  "flag_column", "unit", "missing")
_AUDIT_NUMBERS = ("patience", "tail_quantile", "alpha", "negative_label")
_AUDIT_BOOLS = ("exclude_history", "intersections")
_AUDIT_STRING_LISTS = ("columns", "metrics", "sensitive")


def _check_audit_types(c: _Checker, spec: dict[str, Any], key: tuple[Any, ...]) -> None:
    for k in _AUDIT_STRINGS:
        c.string(spec, k, key)
    for k in _AUDIT_NUMBERS:
        c.number(spec, k, key)
    for k in _AUDIT_BOOLS:
        if k in spec:
            c.boolean(spec, k, key, default=False)
    for k in _AUDIT_STRING_LISTS:
        c.strings(spec, k, key)
    if "tolerance" in spec:
        t = spec["tolerance"]
        if not (isinstance(t, list) and len(t) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) and x == x for x in t)):
            raise c.fail((*key, "tolerance"), f"must be [low, high] (two numbers), got {t!r}")
    if "target" in spec:
        t = spec["target"]
        if isinstance(t, dict):
            for g in t:
                c.number(t, g, (*key, "target"), lo=0.0)
        elif not (isinstance(t, str) and t):
            raise c.fail((*key, "target"), f"must be a non-empty string or a table of group shares, got {t!r}")


def _check_gate(c: _Checker, gtype: str, p: dict[str, Any], key: tuple[Any, ...]) -> None:
    from receval.errors import MetricNameError
    from receval.metrics.registry import parse_metric

    if "metric" in p:
        c.string(p, "metric", key)
        try:
            p["metric"] = str(parse_metric(p["metric"]))
        except MetricNameError as e:
            raise c.fail((*key, "metric"), str(e)) from None
    if "op" in p:
        c.string(p, "op", key, choices=_OPS)
    if "bound" in p:
        c.string(p, "bound", key, choices=_BOUNDS)
    for num in ("threshold", "min_change", "margin", "min_ess_share", "max_weight", "max_unsupported_mass",
                "max_difference", "max_psi", "max_ks", "max_missing_rate", "max_duplicates", "max_errors", "min_n"):
        if num in p:
            c.number(p, num, key)
    for flag in ("relative", "significant", "lift"):
        if flag in p:
            c.boolean(p, flag, key, False)
    for pair in ("ratio", "within"):
        if pair in p:
            v = p[pair]
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v) and v[0] <= v[1]):
                raise c.fail((*key, pair), f"must be [low, high] with low <= high, got {v!r}")
    need = {
        "metric": ("metric", "threshold"),
        "change": ("metric",),
        "non_inferiority": ("metric", "margin"),
        "sample_size": ("min_n",),
        "ope": ("estimator",),
        "ope_diagnostics": ("estimator",),
        "fairness": ("metric", "attribute"),
        "exposure": ("quantity",),
        "popularity": ("quantity",),
        "safety": ("quantity",),
        "miscalibration": ("quantity",),
        "drift": ("column",),
        "data_quality": (),
    }[gtype]
    for r in need:
        if r not in p:
            raise c.fail(key, f"a {gtype!r} gate needs the key {r!r}")
    if gtype == "non_inferiority" and p["margin"] < 0:
        raise c.fail((*key, "margin"), f"must be >= 0, got {p['margin']!r}")
    if gtype == "fairness" and "ratio" not in p and "max_difference" not in p:
        p["ratio"] = [0.8, 1.25]  # the Aequitas convention
    if gtype == "exposure" and "threshold" not in p and "within" not in p:
        raise c.fail(key, "an 'exposure' gate needs 'threshold' (with 'op') or 'within'")
    if gtype in ("popularity", "safety", "miscalibration") and "threshold" not in p:
        raise c.fail(key, f"a {gtype!r} gate needs the key 'threshold'")
    if gtype == "drift" and "max_psi" not in p and "max_ks" not in p:
        raise c.fail(key, "a 'drift' gate needs 'max_psi' or 'max_ks'")
    if gtype == "ope" and not p.get("lift") and "threshold" not in p:
        raise c.fail(key, "an 'ope' gate needs 'threshold', or lift = true (lower bound of the lift above 0)")
    if gtype == "sample_size":
        c.string(p, "of", key, choices=("requests", "users", "ope_rounds"))
    if gtype == "ope_diagnostics" and not ({"min_ess_share", "max_weight", "max_unsupported_mass"} & set(p)):
        raise c.fail(key, "an 'ope_diagnostics' gate needs min_ess_share, max_weight or max_unsupported_mass")
