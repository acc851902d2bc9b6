"""What every metric family hands to the statistics layer.

Each metric becomes per-unit *sufficient statistics*: a matrix with one row
per resampling unit (request) and a few columns, plus a function that turns
column sums into the metric's value. A mean of per-request values is the
statistics ``[value, 1]`` finished by ``sum0 / sum1``; Brier score is
``[sum of squared errors, rows]``; ECE is per-bin counts and sums; catalog
coverage is a request x item incidence matrix finished by "share of items with
a positive sum".

Because sums are all a unit contributes, one machinery serves every metric:
the point estimate finishes the plain column sums, a bootstrap replicate
finishes the weighted sums ``w @ stats`` (units resampled, never rows), a
slice finishes the sums over its units, and a distributed engine only has to
add partial sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import polars as pl

__all__ = ["MetricStats", "EvalContext", "mean_stats"]


@dataclass
class MetricStats:
    """Per-unit sufficient statistics of one metric.

    Attributes
    ----------
    stats : (n_units, s) float array or scipy.sparse matrix
    finish : maps column sums of shape (B, s) to B metric values
    per_unit : per-request values when the metric is a mean of them
        (``None`` for population-level metrics such as coverage or ECE)
    scope : ``"request"`` or ``"population"``
    extra : anything a renderer may want (e.g. a reliability table)
    recentre : the statistic is not a smooth function of means (distinct
        counts, Gini, absolute deviations as in ECE), so its bootstrap
        replicates are biased; they are recentred on the point estimate
    """

    stats: Any
    finish: Callable[[np.ndarray], np.ndarray]
    per_unit: np.ndarray | None = None
    scope: str = "request"
    extra: dict[str, Any] | None = None
    recentre: bool = False

    def take(self, units: np.ndarray) -> MetricStats:
        """These statistics restricted (and reordered) to the given units."""
        return MetricStats(
            self.stats[units],
            self.finish,
            per_unit=None if self.per_unit is None else self.per_unit[units],
            scope=self.scope,
            recentre=self.recentre,
        )

    def value(self, units: np.ndarray | None = None) -> float:
        """Point estimate over all units, or over the given unit indices."""
        if self.per_unit is not None:
            x = self.per_unit if units is None else self.per_unit[units]
            return float(x.mean()) if len(x) else float("nan")
        s = self.stats if units is None else self.stats[units]
        sums = np.asarray(s.sum(axis=0), dtype=np.float64).reshape(1, -1)
        return float(self.finish(sums)[0])


def _ratio(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def mean_stats(values: np.ndarray, defined: np.ndarray | None = None) -> MetricStats:
    """Statistics of a per-request mean; ``defined`` masks requests that count."""
    values = np.asarray(values, dtype=np.float64)
    if defined is None:
        stats = np.column_stack([values, np.ones_like(values)])
        return MetricStats(stats, _ratio, per_unit=values)
    w = defined.astype(np.float64)
    stats = np.column_stack([np.where(defined, values, 0.0), w])
    ms = MetricStats(stats, _ratio, per_unit=None)
    ms.extra = {"per_request": np.where(defined, values, np.nan)}
    return ms


@dataclass
class EvalContext:
    """Inputs a metric family may use, restricted to the evaluated requests.

    Units are the evaluated requests, indexed 0..n_units-1 in the order of
    ``request_ids``. Run rows are flat arrays; ``top_rows[u, r]`` is the row
    (index into the flat arrays) ranked ``r + 1`` for unit ``u`` (``-1`` past
    the end of its list), ranked by the trec_eval order.
    """

    n_units: int
    request_ids: pl.Series
    row_unit: np.ndarray  # (m,) unit of each run row
    row_item: pl.Series  # (m,) item id of each run row
    row_score: np.ndarray  # (m,)
    row_grade: np.ndarray | None  # (m,) matched label grade, 0 when unjudged
    row_prediction: np.ndarray | None  # (m,) predicted probability, when given
    top_rows: np.ndarray | None  # (n_units, k_max)
    catalog: pl.DataFrame | None  # item_id + attributes
    row_user: pl.Series | None = None  # (m,) user id of each run row, when given
