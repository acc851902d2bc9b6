"""receval: offline evaluation and responsible-AI audits for recommender systems.

The public entry points are imported lazily, so ``import receval`` stays fast
(numpy, polars, pandas and pandera load on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from receval._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from receval.comparison import ComparisonResult, compare
    from receval.data.contract import ColumnMapping
    from receval.errors import InputError, MetricNameError, ReceValError, UsageError
    from receval.evaluation import EvaluationResult, MetricSummary, evaluate
    from receval.metrics.registry import Metric, parse_metric

__all__ = [
    "__version__",
    "evaluate",
    "compare",
    "ComparisonResult",
    "EvaluationResult",
    "MetricSummary",
    "Metric",
    "parse_metric",
    "ColumnMapping",
    "ReceValError",
    "InputError",
    "MetricNameError",
    "UsageError",
]

_LAZY = {
    "evaluate": "receval.evaluation",
    "compare": "receval.comparison",
    "ComparisonResult": "receval.comparison",
    "EvaluationResult": "receval.evaluation",
    "MetricSummary": "receval.evaluation",
    "Metric": "receval.metrics.registry",
    "parse_metric": "receval.metrics.registry",
    "ColumnMapping": "receval.data.contract",
    "ReceValError": "receval.errors",
    "InputError": "receval.errors",
    "MetricNameError": "receval.errors",
    "UsageError": "receval.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'receval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
