"""Metric names: parsing, canonical spelling and the registry.

A metric is named by a string such as ``ndcg@10``, ``recall(min_label=2)@20`` or
``ndcg(gain=exponential)``. :func:`parse_metric` turns it into a small, hashable
:class:`Metric` whose ``str()`` is canonical (parameters sorted, defaults
dropped), so ``parse_metric(str(m)) == m`` always holds and two spellings of the
same metric compare equal.

The registry stores, per metric family, its parameters (type, default, allowed
values), whether it takes a cutoff ``@k``, its direction (higher is better?) and
a one-line description. Adding a metric family means one :func:`register` call
plus its kernel in :mod:`receval.metrics.ranking`.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from receval.errors import MetricNameError

__all__ = ["Metric", "MetricSpec", "Param", "parse_metric", "parse_metrics", "register", "REGISTRY"]


@dataclass(frozen=True)
class Param:
    """One parameter of a metric family."""

    type: type
    default: Any
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    doc: str = ""

    def coerce(self, family: str, name: str, raw: Any) -> Any:
        value: Any = raw
        if isinstance(raw, str):
            text = raw.strip()
            try:
                if self.type is int:
                    value = int(text)
                elif self.type is float:
                    value = float(text)
                    if not math.isfinite(value):
                        raise MetricNameError(f"{family}: parameter {name!r} must be a finite number, got {raw!r}")
                    if value.is_integer():
                        value = float(int(value))
                else:
                    value = text
            except ValueError:
                raise MetricNameError(
                    f"{family}: parameter {name!r} must be a {self.type.__name__}, got {raw!r}"
                ) from None
        elif self.type is float and isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
            if not math.isfinite(value):
                raise MetricNameError(f"{family}: parameter {name!r} must be a finite number, got {raw!r}")
        elif not isinstance(raw, self.type) or isinstance(raw, bool):
            raise MetricNameError(
                f"{family}: parameter {name!r} must be a {self.type.__name__}, got {raw!r}"
            )
        if self.choices is not None and value not in self.choices:
            raise MetricNameError(
                f"{family}: parameter {name!r} must be one of {', '.join(map(str, self.choices))}; got {raw!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise MetricNameError(
                f"{family}: parameter {name!r} must be >= {self.minimum:g}; got {raw!r}"
            )
        if self.maximum is not None and value > self.maximum:
            raise MetricNameError(f"{family}: parameter {name!r} must be <= {self.maximum:g}; got {raw!r}")
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            raise MetricNameError(
                f"{family}: parameter {name!r} must be > {self.exclusive_minimum:g}; got {raw!r}"
                + (" (items without a label have grade 0, so a threshold <= 0 would make them relevant)" if name == "min_label" else "")
            )
        return value


@dataclass(frozen=True)
class MetricSpec:
    """Registry entry of a metric family."""

    name: str
    greater_is_better: bool
    cutoff: Literal["none", "optional", "required"]
    params: dict[str, Param] = field(default_factory=dict)
    kind: str = "ranking"
    description: str = ""
    aliases: tuple[str, ...] = ()


REGISTRY: dict[str, MetricSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add a metric family to the registry (names and aliases must be new)."""
    for key in (spec.name, *spec.aliases):
        if key in REGISTRY or key in _ALIASES:
            raise ValueError(f"metric name {key!r} is already registered")
    REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


@functools.total_ordering
@dataclass(frozen=True)
class Metric:
    """A parsed metric: family name, cutoff and non-default parameters.

    Hashable and ordered, so it can key dicts and be sorted. Build one with
    :func:`parse_metric`; ``str(metric)`` is the canonical name.
    """

    name: str
    k: int | None = None
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> MetricSpec:
        return REGISTRY[self.name]

    @property
    def greater_is_better(self) -> bool:
        return self.spec.greater_is_better

    def param(self, key: str) -> Any:
        """Value of a parameter, the default when not given."""
        for name, value in self.params:
            if name == key:
                return value
        return self.spec.params[key].default

    def _sort_key(self) -> tuple:
        # uncut before any cutoff; parameter values compared as text
        return (self.name, -1 if self.k is None else self.k, tuple((k, str(v)) for k, v in self.params))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Metric):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def __str__(self) -> str:
        text = self.name
        if self.params:
            text += "(" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params) + ")"
        if self.k is not None:
            text += f"@{self.k}"
        return text

    def __repr__(self) -> str:
        return f"Metric({str(self)!r})"


_NAME_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\((?P<params>[^()]*)\))?\s*(?:@\s*(?P<k>[^@\s]+))?\s*$"
)


def _did_you_mean(name: str) -> str:
    known = sorted(set(REGISTRY) | set(_ALIASES))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Known metrics: {', '.join(sorted(REGISTRY))}."


def parse_metric(text: str | Metric) -> Metric:
    """Parse a metric name such as ``"ndcg(gain=exponential)@10"``.

    Raises
    ------
    MetricNameError
        Unknown family (with a "did you mean"), unknown or invalid parameter,
        a cutoff where none is allowed or missing where one is required.

    Examples
    --------
    >>> str(parse_metric("NDCG@10"))
    'ndcg@10'
    >>> str(parse_metric("recall( min_label = 2 )@20"))
    'recall(min_label=2)@20'
    >>> parse_metric("ndcg(gain=linear)@5") == parse_metric("ndcg@5")
    True
    """
    if isinstance(text, Metric):
        return text
    if not isinstance(text, str):
        raise MetricNameError(f"a metric name must be a string, got {type(text).__name__}")
    match = _NAME_RE.match(text)
    if not match:
        raise MetricNameError(
            f"cannot parse metric name {text!r}; expected NAME, NAME@K or NAME(param=value,...)@K, e.g. 'ndcg@10'"
        )
    raw_name = match["name"].lower()
    name = _ALIASES.get(raw_name, raw_name)
    if name not in REGISTRY:
        raise MetricNameError(f"unknown metric {raw_name!r} in {text!r}.{_did_you_mean(raw_name)}")
    spec = REGISTRY[name]

    k: int | None = None
    if match["k"] is not None:
        if spec.cutoff == "none":
            raise MetricNameError(f"{name} takes no cutoff, got {text!r}; write {name!r}")
        try:
            k = int(match["k"])
        except ValueError:
            raise MetricNameError(f"cutoff in {text!r} must be a positive integer") from None
        if k < 1:
            raise MetricNameError(f"cutoff in {text!r} must be a positive integer (>= 1), got {k}")
    elif spec.cutoff == "required":
        raise MetricNameError(f"{name} needs a cutoff, e.g. '{name}@10'; got {text!r}")

    params: dict[str, Any] = {}
    if match["params"] is not None and match["params"].strip():
        for part in match["params"].split(","):
            if "=" not in part:
                raise MetricNameError(f"parameter {part.strip()!r} in {text!r} must be written key=value")
            key, _, value = part.partition("=")
            key = key.strip().lower()
            if key not in spec.params:
                allowed = ", ".join(spec.params) or "none"
                close = difflib.get_close_matches(key, list(spec.params), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise MetricNameError(
                    f"{name} has no parameter {key!r} (parameters: {allowed}).{hint}"
                )
            if key in params:
                raise MetricNameError(f"parameter {key!r} given twice in {text!r}")
            params[key] = spec.params[key].coerce(name, key, value)
    return _make(spec, k, params)


def _make(spec: MetricSpec, k: int | None, params: dict[str, Any]) -> Metric:
    kept = tuple(
        sorted((key, value) for key, value in params.items() if value != spec.params[key].default)
    )
    return Metric(spec.name, k, kept)


def parse_metrics(names: Iterable[str | Metric] | str) -> list[Metric]:
    """Parse several metric names, dropping exact repeats but keeping order."""
    if isinstance(names, str | Metric):
        names = [names]
    out: list[Metric] = []
    for name in names:
        metric = parse_metric(name)
        if metric not in out:
            out.append(metric)
    if not out:
        raise MetricNameError("no metric given; name at least one, e.g. 'ndcg@10'")
    return out


_MIN_LABEL = Param(
    float,
    1.0,
    exclusive_minimum=0.0,
    doc="grade at or above which an item counts as relevant (trec_eval -l)",
)

register(
    MetricSpec(
        "ndcg",
        True,
        "optional",
        {"gain": Param(str, "linear", choices=("linear", "exponential"), doc="gain of a grade g: g, or 2^g - 1")},
        description="normalised discounted cumulative gain (trec_eval ndcg / ndcg_cut)",
    )
)
register(
    MetricSpec(
        "map",
        True,
        "optional",
        {"min_label": _MIN_LABEL},
        description="average precision, divided by all relevant items R (trec_eval map / map_cut)",
        aliases=("ap",),
    )
)
register(
    MetricSpec(
        "mrr",
        True,
        "optional",
        {"min_label": _MIN_LABEL},
        description="reciprocal rank of the first relevant item (trec_eval recip_rank)",
        aliases=("rr", "recip_rank"),
    )
)
register(
    MetricSpec(
        "precision",
        True,
        "required",
        {"min_label": _MIN_LABEL},
        description="share of the top k that is relevant, divided by k (trec_eval P)",
        aliases=("p",),
    )
)
register(
    MetricSpec(
        "recall",
        True,
        "optional",
        {"min_label": _MIN_LABEL},
        description="share of all relevant items found in the top k (trec_eval recall)",
    )
)
register(
    MetricSpec(
        "hit",
        True,
        "optional",
        {"min_label": _MIN_LABEL},
        description="1 if any relevant item is in the top k, else 0 (hit rate)",
        aliases=("hit_rate", "success"),
    )
)
register(
    MetricSpec(
        "r_precision",
        True,
        "none",
        {"min_label": _MIN_LABEL},
        description="precision at rank R, R the number of relevant items (trec_eval Rprec)",
        aliases=("rprec",),
    )
)
register(
    MetricSpec(
        "auc",
        True,
        "none",
        {
            "min_label": _MIN_LABEL,
            "ties": Param(str, "average", choices=("average", "order"), doc="tied scores count 1/2 (average) or follow the tie-broken order"),
        },
        description="per-request ROC AUC of the scores, relevant vs non-relevant ranked items",
    )
)
from receval.metrics import beyond as _beyond  # noqa: E402,F401  (registers beyond-accuracy metrics)
from receval.metrics import calibration as _calibration  # noqa: E402,F401  (registers calibration metrics)
