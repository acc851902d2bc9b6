"""Off-policy estimators as frozen dataclasses over per-unit sums.

Each estimator is a few per-row columns (e.g. ``[w*r, w]`` for SNIPS) summed
per unit (request) and a ``finish`` that maps column sums to the estimate. The
point estimate finishes the plain sums; a bootstrap replicate finishes the
resampled sums (units resampled, never rows), so every replicate re-applies the
whole estimator, normaliser included; the normal interval is the delta method
on the same function of means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from receval.counterfactual._data import LoggedFeedback
from receval.errors import UsageError
from receval.stats.bootstrap import bootstrap_replicates, percentile_interval

__all__ = [
    "OPEResult",
    "Estimator",
    "DM",
    "IPS",
    "ClippedIPS",
    "SNIPS",
    "DR",
    "SNDR",
    "SwitchDR",
    "DROS",
    "estimate_many",
]

ESS_WARN_SHARE = 0.10


def _json(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json(v) for v in x]
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


@dataclass(frozen=True)
class OPEResult:
    """One off-policy estimate with its interval, diagnostics and warnings."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    level: float
    n: int
    interval: str
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers become None)."""
        return _json(
            {
                "name": self.name,
                "value": self.value,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "level": self.level,
                "n": self.n,
                "interval": self.interval,
                "diagnostics": self.diagnostics,
                "warnings": list(self.warnings),
            }
        )


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b


@dataclass(frozen=True)
class Estimator:
    """Shared machinery: per-row columns, per-unit sums, intervals, diagnostics."""

    name: ClassVar[str] = "estimator"
    needs_model: ClassVar[bool] = False

    def _columns(self, d: LoggedFeedback) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self, sums: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _count_columns(self, d: LoggedFeedback) -> dict[str, np.ndarray]:
        """Per-row indicators whose share of rows is a diagnostic (e.g. ``share_clipped``).

        Defined per row like :meth:`_columns`, so every engine computes the
        same counts (summed per unit on Spark, then over units).
        """
        return {}

    @property
    def label(self) -> str:
        return self.name

    def estimate(
        self,
        data: LoggedFeedback,
        *,
        level: float = 0.95,
        n_boot: int = 1000,
        seed: int | None = 0,
        interval: str = "bootstrap",
        refit_boot: int = 0,
    ) -> OPEResult:
        """Point estimate, interval (``"bootstrap"`` or ``"normal"``) and diagnostics.

        ``refit_boot=N`` (model-based estimators, bootstrap interval, data built
        with a RewardModel): the interval comes from N multinomial resamples of
        requests, each refitting the cross-fitted reward model, instead of
        ``n_boot`` resamples with the model held fixed.
        """
        return estimate_many(
            [self],
            data,
            level=level,
            n_boot=n_boot,
            seed=seed,
            interval=interval,
            refit_boot=refit_boot,
        )[0]

    def point(self, data: LoggedFeedback) -> float:
        """Point estimate only."""
        self._check(data)
        if hasattr(data, "reduce_units"):  # per-unit sums computed where the rows are (e.g. on Spark)
            sums = data.reduce_units([self]).sums.sum(axis=0)[None, :]
        else:
            cols = self._columns(data)
            sums = np.array([[float(c.sum()) for c in cols]])
        return float(self._finish(sums)[0])

    def _check(self, d: LoggedFeedback) -> None:
        if self.needs_model and not d.has_reward_estimates:
            raise UsageError(
                f"{self.label} needs reward-model estimates: build the data with logged_feedback(..., "
                "target=..., reward_model=RewardModel()) or q_hat_column=..."
            )


def _shares(counts: dict[str, float], n_rows: int) -> dict[str, float]:
    """Diagnostics ``count / n_rows`` (NaN without rows)."""
    return {k: v / n_rows if n_rows else math.nan for k, v in counts.items()}


def _unit_sums(d: LoggedFeedback, cols: list[np.ndarray]) -> np.ndarray:
    # column-major: every consumer (totals, the bootstrap's distinct-column scan and its
    # transposed copy) reads whole columns, which are then contiguous
    one_row_per_unit = d.n_units == d.n_rows and np.array_equal(d.unit, np.arange(d.n_rows))
    S = np.empty((d.n_units, len(cols)), order="F")
    for j, c in enumerate(cols):
        S[:, j] = c if one_row_per_unit else np.bincount(d.unit, weights=c, minlength=d.n_units)
    return S


class _Shared:
    """A slice of a shared per-unit stats matrix (one matrix product for all estimators)."""

    def __init__(self, stats: np.ndarray, lo: int, hi: int, finish):
        self.stats = stats
        self._lo, self._hi, self._f = lo, hi, finish

    def finish(self, sums: np.ndarray) -> np.ndarray:
        return self._f(sums[:, self._lo : self._hi])


def _gradient(m: np.ndarray, finish) -> np.ndarray:
    """Gradient of finish at the column means m, by complex step (exact for rational finishes)."""
    k = len(m)
    grad = np.empty(k)
    for j in range(k):
        h = 1e-20 * abs(m[j]) if m[j] != 0 else 1e-20
        z = m.astype(np.complex128)
        z[j] += 1j * h
        with np.errstate(invalid="ignore", divide="ignore"):
            grad[j] = finish(z[None, :])[0].imag / h
    return grad


def _delta_ses(S: np.ndarray, spans, finishes) -> list[float]:
    """Delta-method standard errors of finish(column means) for every estimator, one pass over S."""
    n = S.shape[0]
    if n < 2:
        return [math.nan] * len(spans)
    m = S.sum(axis=0) / n
    G = np.zeros((S.shape[1], len(spans)))
    for e, ((lo, hi), f) in enumerate(zip(spans, finishes, strict=True)):
        G[lo:hi, e] = _gradient(m[lo:hi], f)
    ok = np.all(np.isfinite(G), axis=0)
    G[:, ~ok] = 0.0
    psi = S @ G - m @ G
    se = np.sqrt(np.einsum("ij,ij->j", psi, psi) / (n - 1) / n)
    return [float(v) if good else math.nan for v, good in zip(se, ok, strict=True)]


@dataclass(frozen=True)
class WeightSummary:
    """The numbers the weight diagnostics are made of (w = pi_e / pi_b over all rows).

    ``scale`` is max(w) when it is positive and finite, else 1; ``ws_sum``,
    ``ws_sq`` and ``ws_std`` (ddof=1) are of w / scale, so that weights near
    1e300 do not overflow. Locally they come from the per-row weights
    (:func:`_weight_summary`); on Spark from per-request partial sums
    combined on the driver (receval.engines.spark_ope), quantiles exact.
    """

    n_rows: int
    n_units: int
    total: float  # sum w
    top: float  # max w
    scale: float
    ws_sum: float
    ws_sq: float
    ws_std: float
    q50: float
    q90: float
    q99: float


def _weight_summary(w: np.ndarray, n_units: int) -> WeightSummary:
    n = len(w)
    top = float(w.max()) if n else 0.0
    scaled = top > 0 and math.isfinite(top)
    ws = w / top if scaled else w
    q50, q90, q99 = np.quantile(w, [0.5, 0.9, 0.99]) if n else (math.nan,) * 3
    return WeightSummary(
        n, n_units, float(w.sum()), top if n else math.nan, top if scaled else 1.0, float(ws.sum()),
        float((ws * ws).sum()), float(ws.std(ddof=1)) if n > 1 else math.nan, float(q50), float(q90), float(q99),
    )


def _weight_diagnostics(d: LoggedFeedback) -> tuple[dict[str, Any], list[str]]:
    return _diagnostics_from(_weight_summary(d.weight, d.n_units), d.support, d.warnings)


def _diagnostics_from(
    s: WeightSummary, support: dict[str, Any], data_warnings: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    n = s.n_rows
    # ESS = (sum w)^2 / sum w^2, on w / max(w) so that weights near 1e300 do not overflow
    ess = s.ws_sum ** 2 / s.ws_sq if s.ws_sq > 0 else 0.0
    mean_w = s.total / n if n else math.nan
    se_w = s.ws_std * s.scale / math.sqrt(n) if n > 1 else math.nan
    diag = {
        "n_rows": n,
        "n_units": s.n_units,
        "ess": ess,
        "ess_share": ess / n if n else math.nan,
        "max_weight": s.top if n else math.nan,
        "weight_q50": s.q50,
        "weight_q90": s.q90,
        "weight_q99": s.q99,
        "mean_weight": mean_w,
        "mean_weight_se": se_w,
        "unsupported_pairs": support.get("unsupported_pairs"),
        "unsupported_target_mass": support.get("unsupported_target_mass"),
        "context_unsupported_triples": support.get("context_unsupported_triples"),
        "context_unsupported_target_mass": support.get("context_unsupported_target_mass"),
    }
    warns = list(data_warnings)
    if n and ess / n < ESS_WARN_SHARE:
        warns.append(
            f"ESS is {ess / n:.1%} of rows: the estimate rests on about {ess:.0f} of {n} rows "
            f"(max weight {diag['max_weight']:.3g})"
        )
    if n > 1 and abs(mean_w - 1.0) > 4 * se_w + 1e-9:
        warns.append(
            f"mean importance weight is {mean_w:.3f} (expected 1 under common support, standard error "
            f"{se_w:.3f}): the target puts mass where the logging policy does not, or propensities are wrong"
        )
    return diag, warns


def _values_and_intervals(
    S: np.ndarray, spans: list, estimators: Sequence, n_units: int, *, interval: str, level: float,
    n_boot: int, seed: int | None, finishes: Sequence | None = None,
) -> tuple[list[float], np.ndarray, np.ndarray, str | None]:
    """Point values and intervals of estimators whose statistics are columns ``spans`` of ``S``.

    Bootstrap: every estimator is re-applied to the same resampled unit sums;
    normal: delta method. ``finishes`` overrides the estimators' ``_finish``
    (e.g. a finish that depends on the data's layout). Returns (values, low,
    high, bootstrap scheme or None).
    """
    fins = [e._finish for e in estimators] if finishes is None else list(finishes)
    total = S.sum(axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = [float(f(total[:, lo:hi])[0]) for f, (lo, hi) in zip(fins, spans, strict=True)]
    if interval == "bootstrap":
        shared = [_Shared(S, lo, hi, f) for f, (lo, hi) in zip(fins, spans, strict=True)]
        reps, method = bootstrap_replicates(shared, n_units, n_boot=n_boot, seed=seed)
        low, high = percentile_interval(reps, level)
        return values, low, high, method
    z = NormalDist().inv_cdf(0.5 + level / 2)
    ses = _delta_ses(S, spans, fins)
    low = np.array([v - z * s for v, s in zip(values, ses, strict=True)])
    high = np.array([v + z * s for v, s in zip(values, ses, strict=True)])
    return values, low, high, None


def estimate_many(
    estimators: list[Estimator],
    data: LoggedFeedback,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    interval: str = "bootstrap",
    refit_boot: int = 0,
) -> list[OPEResult]:
    """Estimate several estimators on the same data, sharing the bootstrap replicates.

    ``refit_boot=N > 0`` gives the model-based estimators (DM, DR family)
    intervals from N resamples that refit the reward model (see
    :meth:`Estimator.estimate`); the others keep the ordinary bootstrap.

    The per-unit columns of all estimators form one matrix, so a bootstrap
    costs one pass over the resampling weights whatever the number of
    estimators; each estimator's replicates equal those it would get alone
    with the same seed.
    """
    if interval not in ("bootstrap", "normal"):
        raise UsageError(f"interval must be 'bootstrap' or 'normal', got {interval!r}")
    if not 0 < level < 1:
        raise UsageError(f"level must lie in (0, 1), got {level}")
    for e in estimators:
        e._check(data)
    if hasattr(data, "reduce_units"):  # rows elsewhere (Spark): only per-unit sums come back
        red = data.reduce_units(estimators)
    else:
        red = _reduce_local(estimators, data)
    S, spans = red.sums, red.spans
    values, low, high, method = _values_and_intervals(
        S, spans, estimators, data.n_units, interval=interval, level=level, n_boot=n_boot, seed=seed
    )
    if interval == "bootstrap":
        how = f"bootstrap ({method}, {n_boot} resamples of units, reward model held fixed)"
    else:
        how = "normal (delta method)"
    refit_how = None
    model_based = [j for j, e in enumerate(estimators) if e.needs_model]
    if refit_boot and model_based:
        if interval != "bootstrap":
            raise UsageError("refit_boot needs interval='bootstrap'")
        if data.refit is None:
            raise UsageError(
                "refit_boot needs data built by logged_feedback(..., reward_model=RewardModel(...))"
            )
        reps = _refit_replicates(data, [estimators[j] for j in model_based], refit_boot, seed)
        rl, rh = percentile_interval(reps, level)
        for i, j in enumerate(model_based):
            low[j], high[j] = rl[i], rh[i]
        refit_how = f"bootstrap (multinomial, {refit_boot} resamples of units, reward model refitted on each)"
    base_diag, base_warns = _diagnostics_from(red.summary, data.support, data.warnings)
    out = []
    for j, e in enumerate(estimators):
        diag = dict(base_diag)
        diag.update(_shares(red.counts[j], red.summary.n_rows))
        if data.model is not None and e.needs_model:
            diag["reward_model"] = data.model
        warns = list(base_warns)
        lo_r, hi_r = data.reward_range
        if np.isfinite(values[j]) and not lo_r <= values[j] <= hi_r:
            warns.append(
                f"the estimate {values[j]:.4g} lies outside the reward range [{lo_r:g}, {hi_r:g}]"
            )
        if np.isfinite(values[j]) and not (np.isfinite(low[j]) and np.isfinite(high[j])):
            warns.append(
                f"the interval is undefined (n = {data.n_units} unit{'s' if data.n_units != 1 else ''}, "
                f"{'resampling' if how and 'bootstrap' in how else 'delta method'}): an interval needs at least "
                "two units with varying statistics; the bounds are published as None"
            )
        elif not np.isfinite(values[j]):
            warns.append(
                f"the estimate is undefined (n = {data.n_units}): its denominator is 0 or not finite, e.g. all "
                "importance weights are 0 (the target never picks a logged action)"
            )
        how_j = refit_how if (refit_how and e.needs_model) else how
        out.append(
            OPEResult(
                e.label,
                values[j],
                float(low[j]),
                float(high[j]),
                level,
                data.n_units,
                how_j,
                diag,
                warns,
            )
        )
    return out


@dataclass(frozen=True)
class UnitReduction:
    """What the statistics need from the rows, for a list of estimators.

    sums : (n_units, k) per-unit sums of every estimator's ``_columns``, units
        in canonical order (the order of ``LoggedFeedback.unit``)
    spans : (lo, hi) column range of each estimator in ``sums``
    summary : the weight diagnostics' numbers
    counts : per estimator, totals of its ``_count_columns``
    """

    sums: np.ndarray
    spans: list[tuple[int, int]]
    summary: WeightSummary
    counts: list[dict[str, float]]


def column_spans(estimators: Sequence[Estimator], d: LoggedFeedback) -> list[tuple[int, int]]:
    """Column range of each estimator in the stacked per-unit sums."""
    spans, k = [], 0
    for e in estimators:
        n = len(e._columns(d))
        spans.append((k, k + n))
        k += n
    return spans


def _reduce_local(estimators: Sequence[Estimator], data: LoggedFeedback) -> UnitReduction:
    cols: list[np.ndarray] = []
    spans = []
    for e in estimators:
        c = e._columns(data)
        spans.append((len(cols), len(cols) + len(c)))
        cols.extend(c)
    counts = [{k: float(np.sum(v)) for k, v in e._count_columns(data).items()} for e in estimators]
    return UnitReduction(_unit_sums(data, cols), spans, _weight_summary(data.weight, data.n_units), counts)


def _refit_replicates(
    data: LoggedFeedback, estimators: list[Estimator], n_boot: int, seed: int | None
) -> np.ndarray:
    """Replicates that refit the reward model on each multinomial resample of units."""
    rng = np.random.default_rng(seed)
    n = data.n_units
    out = np.full((n_boot, len(estimators)), np.nan)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        q_logged, q_target = data.refit(counts)
        d = replace(data, q_logged=q_logged, q_target=q_target)
        for j, e in enumerate(estimators):
            S = _unit_sums(d, e._columns(d))
            with np.errstate(invalid="ignore", divide="ignore"):
                out[b, j] = e._finish((counts @ S)[None, :])[0]
    return out


@dataclass(frozen=True)
class DM(Estimator):
    """Direct method: V = mean_i q_hat(x_i, pi_e).

    q_hat(x, pi_e) = sum_a pi_e(a|x) q_hat(x, a) at the row's position.
    Assumption: a correct reward model (no weights, so no support needed, but
    any model bias passes straight into the estimate).
    """

    name: ClassVar[str] = "dm"
    needs_model: ClassVar[bool] = True

    def _columns(self, d):
        return [d.q_target, np.ones(d.n_rows)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class IPS(Estimator):
    """Inverse propensity scoring: V = mean_i w_i r_i, w = pi_e(a|x) / pi_b(a|x).

    Unbiased under common support (pi_b(a|x) > 0 wherever pi_e(a|x) > 0) and
    correct logging propensities.
    """

    name: ClassVar[str] = "ips"

    def _columns(self, d):
        return [d.weight * d.reward, np.ones(d.n_rows)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class ClippedIPS(Estimator):
    """Clipped IPS: V = mean_i min(w_i, clip) r_i.

    Lower variance, biased downwards (for non-negative rewards) wherever
    w > clip; needs common support like IPS.
    """

    name: ClassVar[str] = "clipped_ips"
    clip: float = 10.0

    def __post_init__(self):
        if not self.clip > 0:
            raise UsageError(f"clip must be > 0, got {self.clip}")

    @property
    def label(self):
        return f"clipped_ips(clip={self.clip:g})"

    def _columns(self, d):
        return [np.minimum(d.weight, self.clip) * d.reward, np.ones(d.n_rows)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])

    def _count_columns(self, d):
        return {"share_clipped": d.weight > self.clip}


@dataclass(frozen=True)
class SNIPS(Estimator):
    """Self-normalised IPS: V = sum_i w_i r_i / sum_i w_i.

    Consistent (slightly biased) under common support; always within the
    reward range. The bootstrap resamples the normaliser too.
    """

    name: ClassVar[str] = "snips"

    def _columns(self, d):
        w = d.weight
        return [w * d.reward, w]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class DR(Estimator):
    """Doubly robust: V = mean_i [q_hat(x_i, pi_e) + w_i (r_i - q_hat(x_i, a_i))].

    Unbiased if either the propensities are correct (with common support) or
    the reward model is correct.
    """

    name: ClassVar[str] = "dr"
    needs_model: ClassVar[bool] = True

    def _columns(self, d):
        return [d.q_target + d.weight * (d.reward - d.q_logged), np.ones(d.n_rows)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class SNDR(Estimator):
    """Self-normalised DR: V = mean_i q_hat(x_i, pi_e) + sum_i w_i (r_i - q_hat(x_i, a_i)) / sum_i w_i.

    The DR correction is divided by the mean weight. Consistent under the DR
    assumptions.
    """

    name: ClassVar[str] = "sndr"
    needs_model: ClassVar[bool] = True

    def _columns(self, d):
        w = d.weight
        return [d.q_target, w * (d.reward - d.q_logged), w, np.ones(d.n_rows)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 3]) + _ratio(s[:, 1], s[:, 2])


@dataclass(frozen=True)
class SwitchDR(Estimator):
    """Switch-DR: V = mean_i [q_hat(x_i, pi_e) + 1{w_i <= threshold} w_i (r_i - q_hat(x_i, a_i))].

    Rows whose weight exceeds the threshold fall back to DM. Biased where the
    reward model is wrong on those rows; needs support elsewhere.
    """

    name: ClassVar[str] = "switch_dr"
    needs_model: ClassVar[bool] = True
    threshold: float = 10.0

    def __post_init__(self):
        if not self.threshold > 0:
            raise UsageError(f"threshold must be > 0, got {self.threshold}")

    @property
    def label(self):
        return f"switch_dr(threshold={self.threshold:g})"

    def _columns(self, d):
        w = d.weight
        return [
            d.q_target + np.where(w <= self.threshold, w, 0.0) * (d.reward - d.q_logged),
            np.ones(d.n_rows),
        ]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])

    def _count_columns(self, d):
        return {"share_switched_to_dm": d.weight > self.threshold}


@dataclass(frozen=True)
class DROS(Estimator):
    """DR with optimistic shrinkage: V = mean_i [q_hat(x_i, pi_e) + w~_i (r_i - q_hat(x_i, a_i))].

    w~ = lam w / (w^2 + lam) (Su et al. 2020); lam -> infinity gives DR,
    lam = 0 gives DM. Biased for finite lam; needs support and a good model.
    """

    name: ClassVar[str] = "dr_os"
    needs_model: ClassVar[bool] = True
    lam: float = 100.0

    def __post_init__(self):
        if not self.lam >= 0:
            raise UsageError(f"lam must be >= 0, got {self.lam}")

    @property
    def label(self):
        return f"dr_os(lam={self.lam:g})"

    def _columns(self, d):
        w = d.weight
        if math.isinf(self.lam):
            ws = w
        else:
            # lam w / (w^2 + lam) written as lam / (w + lam / w): no overflow for weights near 1e300
            ws = np.zeros_like(w)
            if self.lam > 0:
                pos = w > 0
                with np.errstate(over="ignore", divide="ignore"):
                    ws[pos] = self.lam / (w[pos] + self.lam / w[pos])
        return [d.q_target + ws * (d.reward - d.q_logged), np.ones(d.n_rows)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])
