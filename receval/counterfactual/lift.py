"""Off-policy lift: the target policy's estimated value minus the logging policy's own.

``Lift(SNIPS())`` estimates V(pi_e) - V(pi_b) on the same logs, where V(pi_b)
is the on-policy mean reward of the log (rewards per row, averaged over rows,
the same unit as the single-slot estimators). Both terms are functions of the
same per-request sums, so the bootstrap resamples them together: the lift's
interval is paired, typically much narrower than the difference of two
separate intervals (the estimator's and the log's noise are correlated).
``relative=True`` gives V(pi_e) / V(pi_b) - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from receval.counterfactual._estimators import Estimator, _ratio
from receval.errors import UsageError

__all__ = ["Lift"]


@dataclass(frozen=True)
class Lift(Estimator):
    """V_hat(pi_e) - mean logged reward (or the ratio minus 1 with ``relative``).

    Same assumptions as ``base``; the logging policy's value needs none (it is
    observed).
    """

    name: ClassVar[str] = "lift"
    base: Estimator | None = None
    relative: bool = False

    def __post_init__(self):
        if not isinstance(self.base, Estimator) or isinstance(self.base, Lift):
            raise UsageError("Lift(base): base must be an estimator such as IPS() or SNIPS()")

    @property
    def needs_model(self) -> bool:  # type: ignore[override]
        return self.base.needs_model

    @property
    def label(self) -> str:
        return f"{'relative_' if self.relative else ''}lift({self.base.label})"

    def _columns(self, d):
        return [*self.base._columns(d), d.reward, np.ones(d.n_rows)]

    def _finish(self, s):
        m = s.shape[1] - 2
        v = self.base._finish(s[:, :m])
        logged = _ratio(s[:, m], s[:, m + 1])
        return _ratio(v, logged) - 1.0 if self.relative else v - logged

    def _count_columns(self, d):
        return self.base._count_columns(d)
