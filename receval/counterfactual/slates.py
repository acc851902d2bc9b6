"""Off-policy estimators for slates (ranked lists of L slots), with per-slate intervals.

A logged slate i shows items a_i1..a_iL at slots 1..L and records slot rewards
r_i1..r_iL; the value of a policy is the expected slate reward
V = E[sum_l r_l]. Four estimators, each with a self-normalised form:

* :class:`StandardIPS` — whole-slate weight pi_e(s)/pi_b(s); any reward.
* :class:`IndependentIPS` — per-slot marginal weights; position-based /
  additive reward (E[r_l | s] depends only on the item at slot l).
* :class:`RewardInteractionIPS` (RIPS) — cumulative conditional weights over
  slots 1..l; cascade reward (E[r_l | s] depends only on a_1..a_l).
* :class:`PseudoInverse` (Swaminathan et al. 2017) — additive slate reward,
  here for a logging policy that fills the slots independently (see its doc).

Slates may have different lengths (``slate_feedback(..., varying_length=True)``
or ``from_arrays(..., length=...)``): the length must be exogenous — fixed by
the context (screen, number of candidates), the same under both policies — and
each estimator then works on the slots a slate has (see each docstring).

Build validated data with :func:`slate_feedback` (a long frame, one row per
shown slot) or :meth:`SlateFeedback.from_arrays`, then call ``estimate`` on an
estimator or :func:`estimate_slates` on several (one shared bootstrap). As in
the single-slot estimators, each estimator is a few per-slate columns summed
over slates and a ``finish`` mapping column sums to the estimate, so a
bootstrap replicate resamples slates (linear in n) and re-applies the whole
estimator, self-normaliser included; the normal interval is the delta method
on the same function of means. :func:`simulate_slates` generates slates with
an exactly known target value. With PySpark frames the same per-slate
columns are computed on Spark (:mod:`receval.engines.spark_slates`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from receval.counterfactual._data import _examples, _reward_checks, _to_pandas
from receval.counterfactual._estimators import (
    ESS_WARN_SHARE,
    OPEResult,
    _ratio,
    _values_and_intervals,
)
from receval.errors import InputError, UsageError, Violation

__all__ = [
    "SlateFeedback",
    "slate_feedback",
    "SlateEstimator",
    "StandardIPS",
    "SNStandardIPS",
    "IndependentIPS",
    "SNIndependentIPS",
    "RewardInteractionIPS",
    "SNRewardInteractionIPS",
    "PseudoInverse",
    "SNPseudoInverse",
    "estimate_slates",
    "SyntheticSlates",
    "simulate_slates",
]


# --------------------------------------------------------------------------- data


def _sid(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _prob_violation(name: str, x: np.ndarray, closed_zero: bool) -> Violation | None:
    ok = np.isfinite(x) & (x <= 1) & ((x >= 0) if closed_zero else (x > 0))
    bad = np.flatnonzero(~ok.ravel())
    if not len(bad):
        return None
    rule = "must lie in [0, 1]" if closed_zero else "must lie in (0, 1]"
    hint = (
        "" if closed_zero else "zero propensities break common support; drop or re-log those slates"
    )
    return Violation(name, rule, len(bad), _examples(x.ravel(), bad), hint)


@dataclass(frozen=True)
class SlateFeedback:
    """Validated logged slates as (n_slates, n_slots) arrays, slots in order 1..L.

    Attributes
    ----------
    reward : (n, L) slot rewards r_il
    propensity : (n, L) pi_b(a_il at slot l), the logging marginal
    target_prob : (n, L) pi_e(a_il at slot l), the target marginal
    propensity_cond, target_cond : (n, L) pi_b(a_il | a_i<l), pi_e(a_il | a_i<l), or None
    slate_propensity, target_slate_prob : (n,) pi_b(s_i), pi_e(s_i), or None
        (when None the whole-slate probabilities are the products of the conditionals)
    reward_range : (low, high) of one slot reward
    slate_ids : (n,) the slate ids of the rows (sorted by id when built from a frame), or None
    length : (n,) number of slots of each slate when slates differ in length, else None.
        Slots beyond a slate's length are padding: reward 0, every probability
        1 (so every weight 1), which leaves products and sums over the slate's
        own slots unchanged.
    """

    reward: np.ndarray
    propensity: np.ndarray
    target_prob: np.ndarray
    propensity_cond: np.ndarray | None = None
    target_cond: np.ndarray | None = None
    slate_propensity: np.ndarray | None = None
    target_slate_prob: np.ndarray | None = None
    reward_range: tuple[float, float] = (0.0, 1.0)
    slate_ids: np.ndarray | None = None
    length: np.ndarray | None = None

    @property
    def n_slates(self) -> int:
        return self.reward.shape[0]

    @property
    def n_slots(self) -> int:
        """L, the number of slots (the longest slate's when lengths vary)."""
        return self.reward.shape[1]

    @property
    def mask(self) -> np.ndarray:
        """(n, L) bool: slot l exists in slate i."""
        if self.length is None:
            return np.ones(self.reward.shape, dtype=bool)
        return np.arange(self.n_slots)[None, :] < self.length[:, None]

    @property
    def lengths(self) -> np.ndarray:
        """(n,) number of slots of each slate."""
        if self.length is None:
            return np.full(self.n_slates, self.n_slots, dtype=np.int64)
        return self.length

    @property
    def varying(self) -> bool:
        """Slates of varying length (as :class:`~receval.engines.spark_slates.SparkSlateFeedback`)."""
        return self.length is not None

    @property
    def n_rows(self) -> int:
        """Logged (slate, slot) rows: the sum of the lengths."""
        return int(self.lengths.sum())

    @property
    def min_slots(self) -> int | None:
        """The shortest slate's length (None without slates)."""
        return int(self.lengths.min()) if self.n_slates else None

    @classmethod
    def from_arrays(
        cls,
        reward,
        propensity,
        target_prob,
        *,
        propensity_cond=None,
        target_cond=None,
        slate_propensity=None,
        target_slate_prob=None,
        reward_range: tuple[float, float] | None = None,
        slate_ids=None,
        length=None,
    ) -> SlateFeedback:
        """Build from (n, L) arrays (and (n,) slate probabilities), validating every value.

        ``length`` (n,) gives each slate's number of slots (1..L) when they
        differ; entries beyond it are ignored (replaced by padding: reward 0,
        probabilities 1). Raises InputError listing each broken rule
        (propensities in (0, 1], target probabilities in [0, 1], finite rewards
        within ``reward_range``, lengths in 1..L).
        """

        def arr(x, ndim):
            if x is None:
                return None
            a = np.asarray(x, dtype=np.float64)
            if a.ndim != ndim:
                raise UsageError(f"expected a {ndim}-d array, got shape {a.shape}")
            return a

        r, p, t = arr(reward, 2), arr(propensity, 2), arr(target_prob, 2)
        pc, tc = arr(propensity_cond, 2), arr(target_cond, 2)
        ps, ts = arr(slate_propensity, 1), arr(target_slate_prob, 1)
        for name, a in (
            ("propensity", p),
            ("target_prob", t),
            ("propensity_cond", pc),
            ("target_cond", tc),
        ):
            if a is not None and a.shape != r.shape:
                raise UsageError(f"{name} has shape {a.shape}, reward has {r.shape}")
        for name, a in (("slate_propensity", ps), ("target_slate_prob", ts)):
            if a is not None and a.shape != (r.shape[0],):
                raise UsageError(f"{name} has shape {a.shape}, expected ({r.shape[0]},)")
        if (pc is None) != (tc is None):
            raise UsageError("give both propensity_cond and target_cond, or neither")
        if (ps is None) != (ts is None):
            raise UsageError("give both slate_propensity and target_slate_prob, or neither")
        lengths = None
        if length is not None:
            lengths = np.asarray(length)
            if lengths.shape != (r.shape[0],):
                raise UsageError(f"length has shape {lengths.shape}, expected ({r.shape[0]},)")
            ok = np.isfinite(lengths.astype(np.float64)) & (lengths >= 1) & (lengths <= r.shape[1])
            ok &= lengths.astype(np.float64) == np.round(lengths.astype(np.float64))
            bad = np.flatnonzero(~ok)
            if len(bad):
                raise InputError(
                    "logged slates",
                    [Violation("length", f"must be an integer in 1..{r.shape[1]} (the number of slots)",
                               len(bad), _examples(lengths, bad))],
                )
            lengths = lengths.astype(np.int64)
            if (lengths == r.shape[1]).all():
                lengths = None  # every slate is full: the fixed-length layout
            else:
                pad = np.arange(r.shape[1])[None, :] >= lengths[:, None]
                r = np.where(pad, 0.0, r)
                p, t = np.where(pad, 1.0, p), np.where(pad, 1.0, t)
                if pc is not None:
                    pc, tc = np.where(pad, 1.0, pc), np.where(pad, 1.0, tc)
        v: list[Violation | None] = [
            _prob_violation("propensity", p, False),
            _prob_violation("target probability", t, True),
        ]
        if pc is not None:
            v += [
                _prob_violation("conditional propensity", pc, False),
                _prob_violation("conditional target probability", tc, True),
            ]
        if ps is not None:
            v += [
                _prob_violation("slate propensity", ps, False),
                _prob_violation("slate target probability", ts, True),
            ]
        real = r.ravel() if lengths is None else r[np.arange(r.shape[1])[None, :] < lengths[:, None]]
        lo, hi = _reward_checks(real, reward_range, v, "declare the right reward_range (of one slot's reward)")
        v = [x for x in v if x is not None]
        if not v and pc is not None:
            # whole-slate and cascade weights are products over slots: with propensities near 1e-300 they
            # overflow float64, and every slate estimate would be inf or NaN
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                big = ~np.isfinite(np.cumprod(tc / pc, axis=1)).all(axis=1)
            if big.any():
                v.append(Violation(
                    "conditional propensity",
                    "the product over a slate's slots of target / logging conditional probabilities (its "
                    "importance weight) must be finite in float64", int(big.sum()),
                    tuple(f"slate {int(i)}" for i in np.flatnonzero(big)[:5]),
                    "propensities this small (e.g. 1e-300) cannot support an importance-weighted estimate; "
                    "drop those slates or check the logging probabilities"))
        if v:
            raise InputError("logged slates", v)
        return cls(
            r, p, t, pc, tc, ps, ts, (lo, hi), None if slate_ids is None else np.asarray(slate_ids), lengths
        )

    # --- weights -----------------------------------------------------------------

    def slot_weights(self) -> np.ndarray:
        """(n, L) w_il = pi_e(a_il at l) / pi_b(a_il at l)."""
        return self.target_prob / self.propensity

    def slate_weights(self) -> np.ndarray:
        """(n,) w_i = pi_e(s_i) / pi_b(s_i) (from slate probabilities, else products of conditionals)."""
        if self.slate_propensity is not None:
            return self.target_slate_prob / self.slate_propensity
        if self.propensity_cond is not None:
            return np.prod(self.target_cond / self.propensity_cond, axis=1)
        raise UsageError(
            "standard (whole-slate) IPS needs slate probabilities: give slate_propensity / target "
            "slate_probability, or the conditional propensities whose product is the slate probability"
        )

    def cascade_weights(self) -> np.ndarray:
        """(n, L) W_il = prod_{k<=l} pi_e(a_ik | a_i<k) / pi_b(a_ik | a_i<k)."""
        if self.propensity_cond is None:
            raise UsageError(
                "RIPS needs conditional probabilities pi(a_l | a_<l) (propensity_conditional and "
                "target_conditional); if both policies fill the slots independently, pass the marginals"
            )
        return np.cumprod(self.target_cond / self.propensity_cond, axis=1)

    def pi_weights(self) -> np.ndarray:
        """(n,) pseudo-inverse weights for independent-slot logging: sum_l w_il - (L_i - 1).

        Padding slots have weight 1, so the sum over all L slots minus (L - 1)
        equals the sum over a slate's own L_i slots minus (L_i - 1).
        """
        return self.slot_weights().sum(axis=1) - (self.n_slots - 1)


_LOG_COLS = {
    "propensity_conditional": "propensity_cond",
    "slate_propensity": "slate_propensity",
}
_TARGET_IN_LOG = {
    "target_probability": "target_prob",
    "target_conditional": "target_cond",
    "target_slate_probability": "target_slate_prob",
}
_TARGET_FRAME = {
    "probability": "target_prob",
    "conditional_probability": "target_cond",
    "slate_probability": "target_slate_prob",
}


def _grid(values: np.ndarray, cell_slate: np.ndarray, cell_slot: np.ndarray, n: int, L: int,
          fill: float = 1.0) -> np.ndarray:
    """(n, L) grid of one long column (cells given by slate code and 0-based slot), ``fill`` elsewhere."""
    g = np.full((n, L), fill)
    g[cell_slate, cell_slot] = values
    return g


def slate_feedback(
    log, target=None, *, reward_range: tuple[float, float] | None = None, varying_length: bool = False
) -> SlateFeedback:
    """Validate a long frame of logged slates and the target's probabilities of them.

    Parameters
    ----------
    log : pandas, polars or PySpark frame, one row per shown slot (with a
        PySpark frame as ``log`` or ``target`` the rows are validated and
        reduced on Spark and the result is a
        :class:`receval.engines.spark_slates.SparkSlateFeedback`, accepted by
        :func:`estimate_slates`; same rules, errors and numbers)
        Required: ``slate_id``, ``position`` (1..L, each once per slate; every
        slate has the same L unless ``varying_length``), ``reward`` (slot reward), ``propensity``
        (pi_b(a_l at l), the logging marginal, in (0, 1]). Optional:
        ``item_id``, ``propensity_conditional`` (pi_b(a_l | a_<l), needed by
        RIPS), ``slate_propensity`` (pi_b(s), constant within a slate; else the
        product of the conditionals). Without ``target`` the log carries the
        target's probabilities as ``target_probability``,
        ``target_conditional``, ``target_slate_probability``.
    target : frame ``slate_id, position, probability`` (the target marginal of
        the logged item at that slot), optional ``conditional_probability``,
        ``slate_probability``; one row per logged (slate, position).
    reward_range : (low, high) of one slot's reward; default the observed range.
    varying_length : accept slates of different lengths L_i (positions
        1..L_i each once). The length must be exogenous: fixed by the context
        and the same under the logging and the target policy. Off by default,
        so that a slate missing a row is reported rather than taken as short.

    Raises
    ------
    UsageError for missing columns; InputError listing every broken rule with
    counts and examples.
    """
    from receval.engines import is_spark_frame

    if is_spark_frame(log) or is_spark_frame(target):
        from receval.engines.spark_slates import spark_slate_feedback

        return spark_slate_feedback(  # type: ignore[return-value]
            log, target, reward_range=reward_range, varying_length=varying_length
        )
    log = _to_pandas(log)
    need = [c for c in ("slate_id", "position", "reward", "propensity") if c not in log.columns]
    if need:
        raise UsageError(f"log is missing required column(s) {need}; it has {list(log.columns)}")
    df = log.reset_index(drop=True)
    null_ids = np.flatnonzero(df["slate_id"].isna().to_numpy())
    if len(null_ids):
        raise InputError("logged slates", [Violation(
            "slate_id", "must not be null", len(null_ids), tuple(f"row {int(i)}" for i in null_ids[:5]),
            "drop or fill those rows explicitly")])
    if target is not None:
        target = _to_pandas(target)
        need = [c for c in ("slate_id", "position", "probability") if c not in target.columns]
        if need:
            raise UsageError(
                f"target is missing required column(s) {need}; it has {list(target.columns)}"
            )
        dup = target.duplicated(["slate_id", "position"])
        if dup.any():
            raise InputError(
                "target policy",
                [Violation("target", "must have one row per (slate_id, position)", int(dup.sum()))],
            )
        cols = ["slate_id", "position"] + [c for c in _TARGET_FRAME if c in target.columns]
        t = target[cols].rename(columns={k: "__t_" + k for k in _TARGET_FRAME})
        df = df.drop(columns=[c for c in _TARGET_IN_LOG if c in df.columns]).merge(
            t, on=["slate_id", "position"], how="left", indicator="__merge"
        )
        tcols = {"__t_" + k: v for k, v in _TARGET_FRAME.items() if "__t_" + k in df.columns}
        missing_rows = np.flatnonzero((df["__merge"] == "left_only").to_numpy())
    else:
        if "target_probability" not in df.columns:
            raise UsageError("give a target frame or a 'target_probability' column in the log")
        tcols = {k: v for k, v in _TARGET_IN_LOG.items() if k in df.columns}
        missing_rows = np.array([], dtype=np.int64)
    violations: list[Violation] = []
    if len(missing_rows):
        violations.append(
            Violation(
                "target",
                "must give a probability for every logged (slate_id, position)",
                len(missing_rows),
                tuple(
                    f"(slate {_sid(df['slate_id'].iat[i])!r}, position {_sid(df['position'].iat[i])!r})"
                    for i in missing_rows[:5]
                ),
            )
        )
    else:
        for src in tcols:
            vals = df[src].to_numpy(dtype=np.float64)
            bad = np.flatnonzero(np.isnan(vals))
            if len(bad):
                violations.append(
                    Violation(src, "must not be missing", len(bad), _examples(vals, bad))
                )
    # slate structure: positions 1..L_i once each; the same L everywhere unless varying_length
    pos = pd.to_numeric(df["position"], errors="coerce").to_numpy(dtype=np.float64)
    codes, uniq = pd.factorize(df["slate_id"], sort=True)
    order = np.lexsort((pos, codes))
    counts = np.bincount(codes, minlength=len(uniq))
    n_slates = len(uniq)
    L = int(np.bincount(counts).argmax()) if n_slates else 0
    bad_len = np.flatnonzero(counts != L)
    if len(bad_len) and not varying_length:
        violations.append(
            Violation(
                "slate_id",
                f"every slate must have the same number of slots (most have {L})",
                len(bad_len),
                tuple(f"slate {_sid(uniq[j])!r} has {counts[j]}" for j in bad_len[:5]),
                "pad or drop short slates, or pass varying_length=True (receval ope --varying-length) if slates really differ in length",
            )
        )
    else:
        if varying_length and n_slates:
            L = int(counts.max())
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_slates else np.zeros(0, dtype=np.int64)
        expect = (np.arange(len(pos)) - np.repeat(starts, counts) + 1).astype(np.float64)
        got = pos[order]
        bad = np.flatnonzero(got != expect)
        if len(bad):
            violations.append(
                Violation(
                    "position",
                    "must run 1..L_i once per slate" if varying_length else "must run 1..L once per slate",
                    len(bad),
                    _examples(pos, order[bad]),
                )
            )
    if violations:
        raise InputError("logged slates", violations)
    cell_slate = codes[order]
    cell_slot = pos[order].astype(np.int64) - 1
    length = counts if varying_length else None

    def grid(col: str, fill: float = 1.0) -> np.ndarray:
        return _grid(df[col].to_numpy(dtype=np.float64)[order], cell_slate, cell_slot, n_slates, L, fill)

    arrays: dict[str, Any] = {"propensity": grid("propensity")}
    for src, dst in list(_LOG_COLS.items()) + list(tcols.items()):
        if src in df.columns:
            arrays[dst] = grid(src)
    source = {v: k for k, v in list(_LOG_COLS.items()) + list(tcols.items())}
    exists = np.arange(L)[None, :] < counts[:, None] if n_slates else np.zeros((0, L), dtype=bool)
    for key in ("slate_propensity", "target_slate_prob"):
        if key in arrays:
            g = arrays[key]
            same = (g == g[:, :1]) | (np.isnan(g) & np.isnan(g[:, :1])) | ~exists
            bad = np.flatnonzero(~np.all(same, axis=1))
            if len(bad):
                raise InputError(
                    "logged slates",
                    [
                        Violation(
                            source[key].removeprefix("__t_"),
                            "must be constant within a slate",
                            len(bad),
                            tuple(f"slate {_sid(uniq[j])!r}" for j in bad[:5]),
                        )
                    ],
                )
            arrays[key] = g[:, 0]
    if "target_prob" not in arrays:
        raise UsageError("the target marginal probability is required")
    if ("propensity_cond" in arrays) != ("target_cond" in arrays):
        raise UsageError(
            "give both the logging and the target conditional probabilities, or neither"
        )
    if ("slate_propensity" in arrays) != ("target_slate_prob" in arrays):
        raise UsageError("give both the logging and the target slate probabilities, or neither")
    return SlateFeedback.from_arrays(
        grid("reward", 0.0),
        arrays["propensity"],
        arrays["target_prob"],
        propensity_cond=arrays.get("propensity_cond"),
        target_cond=arrays.get("target_cond"),
        slate_propensity=arrays.get("slate_propensity"),
        target_slate_prob=arrays.get("target_slate_prob"),
        reward_range=reward_range,
        slate_ids=np.asarray(uniq),
        length=length,
    )


# --------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class SlateEstimator:
    """Shared machinery: per-slate columns, sums, intervals, weight diagnostics."""

    name: ClassVar[str] = "slate_estimator"
    weight_kind: ClassVar[str] = ""  # "slate", "slot", "cascade" or "pi"

    @property
    def label(self) -> str:
        return self.name

    def _columns(self, d: SlateFeedback, w: np.ndarray) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _finish(self, s: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _finisher(self, d: SlateFeedback):
        """The finish for this data's column layout (the same for every layout but per-slot SN forms)."""
        return self._finish

    def estimate(
        self,
        data: SlateFeedback,
        *,
        level: float = 0.95,
        n_boot: int = 1000,
        seed: int | None = 0,
        interval: str = "bootstrap",
    ) -> OPEResult:
        """Point estimate, interval (``"bootstrap"`` over slates or ``"normal"``) and diagnostics."""
        return estimate_slates(
            [self], data, level=level, n_boot=n_boot, seed=seed, interval=interval
        )[0]

    def point(self, data: SlateFeedback) -> float:
        """Point estimate only."""
        if hasattr(data, "reduce_slates"):  # a SparkSlateFeedback: one reduction job
            S, _, _, _, data = data.reduce_slates([self])
            cols = [np.ascontiguousarray(c) for c in S.T]
        else:
            cols = self._columns(data, _weights(data, self.weight_kind))
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(self._finisher(data)(np.array([[float(c.sum()) for c in cols]]))[0])


def _weights(d: SlateFeedback, kind: str) -> np.ndarray:
    return {
        "slate": d.slate_weights,
        "slot": d.slot_weights,
        "cascade": d.cascade_weights,
        "pi": d.pi_weights,
    }[kind]()


def _slate_reward(d: SlateFeedback) -> np.ndarray:
    return d.reward.sum(axis=1)


@dataclass(frozen=True)
class StandardIPS(SlateEstimator):
    """Standard (whole-slate) IPS: V = mean_i w_i sum_l r_il, w_i = pi_e(s_i) / pi_b(s_i).

    Assumption: common support of whole slates (pi_b(s) > 0 wherever
    pi_e(s) > 0) and correct slate propensities; any reward structure. Unbiased
    but high-variance: slate weights are products over slots. Slates of varying
    length: pi(s) is the probability of the slate given its length (the
    product of the conditionals over its own slots), so the length must be
    exogenous; when a policy chooses the length, give slate probabilities that
    include that choice.
    """

    name: ClassVar[str] = "standard_ips"
    weight_kind: ClassVar[str] = "slate"

    def _columns(self, d, w):
        return [w * _slate_reward(d), np.ones(d.n_slates)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class SNStandardIPS(SlateEstimator):
    """Self-normalised standard IPS: V = sum_i w_i sum_l r_il / sum_i w_i.

    Same assumption as :class:`StandardIPS` (also for slates of varying
    length); consistent, slightly biased, always within the slate-reward range.
    """

    name: ClassVar[str] = "sn_standard_ips"
    weight_kind: ClassVar[str] = "slate"

    def _columns(self, d, w):
        return [w * _slate_reward(d), w]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class IndependentIPS(SlateEstimator):
    """Independent (position-based) IPS: V = mean_i sum_l r_il pi_e(a_il at l) / pi_b(a_il at l).

    Assumption: position-based / additive reward — E[r_l | x, s] depends only
    on the item at slot l — and common support of each (item, slot) pair.
    Biased when slots interact (e.g. a cascade). Slates of varying length: the
    sum runs over each slate's own slots, the marginals being those of a slate
    of that length (exogenous length).
    """

    name: ClassVar[str] = "independent_ips"
    weight_kind: ClassVar[str] = "slot"

    def _columns(self, d, w):
        return [(w * d.reward).sum(axis=1), np.ones(d.n_slates)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


def _per_slot_sn_columns(d: SlateFeedback, w: np.ndarray) -> list[np.ndarray]:
    if d.length is None:
        return list((w * d.reward).T) + list(w.T)
    m = d.mask.astype(np.float64)
    return list((w * d.reward * m).T) + list((w * m).T) + list(m.T) + [np.ones(d.n_slates)]


def _per_slot_sn_finish(s: np.ndarray) -> np.ndarray:
    L = s.shape[1] // 2
    return _ratio(s[:, :L], s[:, L:]).sum(axis=1)


def _per_slot_sn_finish_varying(s: np.ndarray) -> np.ndarray:
    # sum_l (n_l / n) * (sum_i w_il r_il / sum_i w_il), sums over the slates that have slot l;
    # a slot no resampled slate has contributes 0
    L = (s.shape[1] - 1) // 3
    num, den, n_l, n = s[:, :L], s[:, L : 2 * L], s[:, 2 * L : 3 * L], s[:, 3 * L :]
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(n_l.real > 0, n_l / n * _ratio(num, den), 0.0)
    return terms.sum(axis=1)


class _PerSlotSelfNormalised:
    """Columns and finish of the per-slot self-normalised forms (SN independent IPS, SN RIPS):
    each slot's weighted rewards over that slot's weights, then summed over the slots."""

    def _columns(self, d, w):
        return _per_slot_sn_columns(d, w)

    def _finish(self, s):
        return _per_slot_sn_finish(s)

    def _finisher(self, d):
        return _per_slot_sn_finish if d.length is None else _per_slot_sn_finish_varying


@dataclass(frozen=True)
class SNIndependentIPS(_PerSlotSelfNormalised, SlateEstimator):
    """Self-normalised independent IPS: V = sum_l [sum_i w_il r_il / sum_i w_il].

    Each slot's term is divided by that slot's mean weight. Same assumption as
    :class:`IndependentIPS`; within the slate-reward range. Slates of varying
    length: V = sum_l (n_l / n) [sum w_il r_il / sum w_il], sums over the n_l
    slates that have slot l (P(L >= l) is estimated by n_l / n and resampled
    with the slates).
    """

    name: ClassVar[str] = "sn_independent_ips"
    weight_kind: ClassVar[str] = "slot"


@dataclass(frozen=True)
class RewardInteractionIPS(SlateEstimator):
    """Reward-interaction IPS (RIPS, McInerney et al. 2020):
    V = mean_i sum_l r_il prod_{k<=l} pi_e(a_ik | a_i<k) / pi_b(a_ik | a_i<k).

    Assumption: cascade reward — E[r_l | x, s] depends only on a_1..a_l (the
    slots at and above l) — and common support of those prefixes. Slates of
    varying length: the sum runs over each slate's own slots; the cascade may
    stop at the slate's end (exogenous length), which changes no earlier slot.
    """

    name: ClassVar[str] = "rips"
    weight_kind: ClassVar[str] = "cascade"

    def _columns(self, d, w):
        return [(w * d.reward).sum(axis=1), np.ones(d.n_slates)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class SNRewardInteractionIPS(_PerSlotSelfNormalised, SlateEstimator):
    """Self-normalised RIPS: V = sum_l [sum_i W_il r_il / sum_i W_il], W_il the cumulative weight.

    Same assumption as :class:`RewardInteractionIPS`; within the slate-reward
    range. Slates of varying length: each slot's term is weighted by n_l / n
    and normalised over the slates that have slot l, as in
    :class:`SNIndependentIPS`.
    """

    name: ClassVar[str] = "sn_rips"
    weight_kind: ClassVar[str] = "cascade"


@dataclass(frozen=True)
class PseudoInverse(SlateEstimator):
    """Pseudo-inverse estimator (Swaminathan et al. 2017): V = mean_i r_i q_e(x_i)^T Gamma_b(x_i)^+ 1_{s_i}.

    r_i = sum_l r_il is the slate reward, 1_s the slot-item indicator vector,
    q_e(x) the target's slot-item marginals, Gamma_b(x) = E_{s~pi_b}[1_s 1_s^T].

    Supported: a logging policy that fills the slots independently (pi_b(s) =
    prod_l pi_b(a_l at l); uniform logging with replacement is a special case).
    Then Gamma_b has diagonal blocks diag(p_l) and off-diagonal blocks
    p_l p_k^T, and on the logged support the weight is exactly

        q_e^T Gamma_b^+ 1_s = sum_l pi_e(a_l at l) / pi_b(a_l at l) - (L - 1),

    so only the marginals of the logged items are needed (the target need not
    be independent across slots). Assumption: additive slate reward
    (E[r | x, s] = sum_l phi(x, l, a_l)), independent-slot logging, and support
    of every (item, slot) pair the target uses. Weights can be negative.
    Logging without replacement (e.g. uniform over rankings) is not supported.
    Slates of varying length: the identity holds per slate with its own L_i
    (sum over its slots minus (L_i - 1)), given an exogenous length.
    """

    name: ClassVar[str] = "pseudo_inverse"
    weight_kind: ClassVar[str] = "pi"

    def _columns(self, d, w):
        return [w * _slate_reward(d), np.ones(d.n_slates)]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


@dataclass(frozen=True)
class SNPseudoInverse(SlateEstimator):
    """Self-normalised pseudo-inverse: V = sum_i w_i r_i / sum_i w_i, w_i the PI weight.

    Same assumptions and support as :class:`PseudoInverse` (also for slates of
    varying length). The PI weights
    have mean 1 but can be negative, so unlike the other self-normalised
    forms this one is not guaranteed to stay within the reward range.
    """

    name: ClassVar[str] = "sn_pseudo_inverse"
    weight_kind: ClassVar[str] = "pi"

    def _columns(self, d, w):
        return [w * _slate_reward(d), w]

    def _finish(self, s):
        return _ratio(s[:, 0], s[:, 1])


def _weight_diagnostics(
    w: np.ndarray, kind: str, mask: np.ndarray | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Weight diagnostics; ``mask`` (n, L) keeps per-slot weights of the slots a slate has."""
    if w.ndim == 2 and mask is not None:
        flat = w[mask]
        n_l = mask.sum(axis=0)
        wm = np.where(mask, w, 0.0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # var: inf for weights ~1e300
            means = wm.sum(axis=0) / n_l
            var = (np.where(mask, (w - means) ** 2, 0.0)).sum(axis=0) / (n_l - 1)
            ses = np.sqrt(var / n_l)
        m = int(n_l.min()) if len(n_l) else 0
    else:
        flat = w.ravel()
        cols = w if w.ndim == 2 else w[:, None]
        m = cols.shape[0]
        means = cols.mean(axis=0) if m else np.full(cols.shape[1], math.nan)
        # on w / max(w): weights near 1e300 must not overflow the squares
        top_c = np.abs(cols).max(axis=0) if m else np.ones(cols.shape[1])
        top_c = np.where((top_c > 0) & np.isfinite(top_c), top_c, 1.0)
        ses = (cols / top_c).std(axis=0, ddof=1) * top_c / math.sqrt(m) if m > 1 \
            else np.full(cols.shape[1], math.nan)
    n = len(flat)
    s1 = float(flat.sum())
    top = float(np.abs(flat).max()) if n else 0.0
    fs = flat / top if top > 0 and math.isfinite(top) else flat
    s2 = float((fs * fs).sum())
    ess = float(fs.sum()) ** 2 / s2 if s2 > 0 else 0.0
    q50, q90, q99 = np.quantile(flat, [0.5, 0.9, 0.99]) if n else (math.nan,) * 3
    diag: dict[str, Any] = {
        "weights": {
            "slate": "whole-slate",
            "slot": "per-slot marginal",
            "cascade": "per-slot cumulative",
            "pi": "pseudo-inverse (per slate)",
        }[kind],
        "n_weights": n,
        "ess": ess,
        "ess_share": ess / n if n else math.nan,
        "max_weight": float(flat.max()) if n else math.nan,
        "min_weight": float(flat.min()) if n else math.nan,
        "weight_q50": float(q50),
        "weight_q90": float(q90),
        "weight_q99": float(q99),
        "mean_weight": s1 / n if n else math.nan,
    }
    if w.ndim == 2:
        diag["mean_weight_per_slot"] = [float(x) for x in means]
    warns = []
    if n and ess / n < ESS_WARN_SHARE:
        warns.append(
            f"ESS is {ess / n:.1%} of the {kind} weights: the estimate rests on about {ess:.0f} of {n} "
            f"(max weight {diag['max_weight']:.3g})"
        )
    off = [
        j for j in range(len(means))
        if m > 1 and np.isfinite(ses[j]) and abs(means[j] - 1.0) > 4 * ses[j] + 1e-9
    ]
    if off:
        where = "" if w.ndim == 1 else f" at slot(s) {[j + 1 for j in off]}"
        warns.append(
            f"mean importance weight{where} is {', '.join(f'{means[j]:.3f}' for j in off)} (expected 1 under "
            "common support): the target puts mass where the logging policy does not, or propensities are wrong"
        )
    return diag, warns


def _slate_columns(
    estimators: list[SlateEstimator], data: SlateFeedback
) -> tuple[np.ndarray, list[tuple[int, int]], dict[str, np.ndarray]]:
    """The per-slate columns of all estimators as one (n, k) matrix, their spans, and the weights by kind.

    Row i depends on slate i only, so it is the same computed on any set of
    slates holding slate i (the Spark engine runs it per chunk of slates).
    """
    weights: dict[str, np.ndarray] = {}
    cols: list[np.ndarray] = []
    spans = []
    for e in estimators:
        if e.weight_kind not in weights:
            weights[e.weight_kind] = _weights(data, e.weight_kind)
        c = e._columns(data, weights[e.weight_kind])
        spans.append((len(cols), len(cols) + len(c)))
        cols.extend(c)
    S = np.empty((data.n_slates, len(cols)))
    for j, c in enumerate(cols):
        S[:, j] = c
    return S, spans, weights


def _pi_mismatch(d: SlateFeedback) -> np.ndarray:
    """(n,) bool: the slate's logging conditionals differ from its marginals (no independent-slot logging)."""
    if d.propensity_cond is None:
        return np.zeros(d.n_slates, dtype=bool)
    return ~np.isclose(d.propensity_cond, d.propensity, rtol=1e-9, atol=1e-12).all(axis=1)


def estimate_slates(
    estimators: list[SlateEstimator],
    data: SlateFeedback,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    interval: str = "bootstrap",
) -> list[OPEResult]:
    """Estimate several slate estimators on the same slates, sharing the bootstrap replicates.

    ``interval="bootstrap"`` resamples slates (multinomial up to 2*10^7 draws,
    Poisson(1) weights beyond, see :mod:`receval.stats.bootstrap`): the
    per-slate columns of all estimators form one matrix, so the cost is linear
    in the number of slates and each replicate re-applies the whole estimator,
    self-normaliser included. ``interval="normal"`` is the delta method on the
    same function of means. ``n`` in the result counts slates; values are
    expected slate rewards (sums over slots).
    """
    if interval not in ("bootstrap", "normal"):
        raise UsageError(f"interval must be 'bootstrap' or 'normal', got {interval!r}")
    if not 0 < level < 1:
        raise UsageError(f"level must lie in (0, 1), got {level}")
    if hasattr(data, "reduce_slates"):  # a SparkSlateFeedback: per-slate rows from the Spark reduction
        S, spans, weights, pi_mismatch, data = data.reduce_slates(estimators)
    else:
        S, spans, weights = _slate_columns(estimators, data)
        pi_mismatch = bool(_pi_mismatch(data).any()) if any(e.weight_kind == "pi" for e in estimators) else False
    values, low, high, method = _values_and_intervals(
        S, spans, estimators, data.n_slates, interval=interval, level=level, n_boot=n_boot, seed=seed,
        finishes=[e._finisher(data) for e in estimators],
    )
    if interval == "bootstrap":
        how = f"bootstrap ({method}, {n_boot} resamples of slates)"
    else:
        how = "normal (delta method over slates)"
    mask = None if data.length is None else data.mask
    diags = {k: _weight_diagnostics(w, k, mask) for k, w in weights.items()}
    L = data.n_slots
    lens = data.lengths
    short = int(lens.min()) if len(lens) else L
    lo_r = min(short * data.reward_range[0], L * data.reward_range[0])
    hi_r = max(short * data.reward_range[1], L * data.reward_range[1])
    pi_warn = None
    if any(e.weight_kind == "pi" for e in estimators):
        if pi_mismatch:
            pi_warn = (
                "the logging conditionals pi_b(a_l | a_<l) differ from the marginals: the logging policy does not "
                "fill slots independently, so the pseudo-inverse weights used here are not valid"
            )
    out = []
    for j, e in enumerate(estimators):
        d, w = diags[e.weight_kind]
        diag = dict(d, n_slates=data.n_slates, n_slots=L)
        if data.length is not None:
            diag.update(min_slots=short, mean_slots=float(lens.mean()))
        warns = list(w)
        if e.weight_kind == "pi" and pi_warn:
            warns.append(pi_warn)
        if np.isfinite(values[j]) and not lo_r - 1e-12 <= values[j] <= hi_r + 1e-12:
            warns.append(
                f"the estimate {values[j]:.4g} lies outside the slate-reward range [{lo_r:g}, {hi_r:g}]"
            )
        if not (np.isfinite(values[j]) and np.isfinite(low[j]) and np.isfinite(high[j])):
            warns = list(warns) + [
                f"the {'estimate' if not np.isfinite(values[j]) else 'interval'} is undefined "
                f"(n = {data.n_slates} slate{'s' if data.n_slates != 1 else ''}): an interval needs at least two "
                "slates with varying statistics, a self-normalised estimate a non-zero sum of weights; "
                "undefined numbers are published as None"]
        out.append(
            OPEResult(
                e.label,
                values[j],
                float(low[j]),
                float(high[j]),
                level,
                data.n_slates,
                how,
                diag,
                warns,
            )
        )
    return out


# ---------------------------------------------------------------------- synthetic


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class SyntheticSlates:
    """Simulated slates with exactly known policy values.

    data : validated :class:`SlateFeedback` (conditionals = marginals, slate
        probabilities = products, since both policies fill slots independently)
    log : long frame (one row per slot) in the :func:`slate_feedback` format,
        or None when not requested
    true_value, logging_value : exact expected slate reward of the target /
        logging policy over the finite context population
    pi_b, pi_e : (n_contexts, L, n_items) per-slot item distributions
    q : (n_contexts, n_items, L) click probabilities
    context : (n_slates,) context of each slate
    """

    data: SlateFeedback
    log: pd.DataFrame | None
    true_value: float
    logging_value: float
    pi_b: np.ndarray
    pi_e: np.ndarray
    q: np.ndarray
    context: np.ndarray


def _value(pi: np.ndarray, q: np.ndarray, click_model: str, reach: np.ndarray) -> float:
    """Expected slate reward; ``reach[l]`` = P(the slate has slot l + 1), independent of the context."""
    m = np.einsum("xla,xal->xl", pi, q)  # expected click prob at each slot, per context
    if click_model == "additive":
        return float((m * reach).sum(axis=1).mean())
    # cascade with independent slots: E[r_l] = m_l prod_{k<l} (1 - m_k); a slate's end cuts no earlier slot
    above = np.cumprod(np.concatenate([np.ones((m.shape[0], 1)), 1 - m[:, :-1]], axis=1), axis=1)
    return float((m * above * reach).sum(axis=1).mean())


def simulate_slates(
    n_slates: int,
    *,
    n_items: int = 6,
    n_slots: int = 3,
    n_contexts: int = 10,
    click_model: str = "additive",
    logging_temperature: float = 1.0,
    target_temperature: float = 0.5,
    target_mix: float = 0.5,
    base_logit: float = -1.0,
    seed: int = 0,
    frame: bool = True,
    min_slots: int | None = None,
) -> SyntheticSlates:
    """Simulate ``n_slates`` slates of ``n_slots`` from per-slot independent softmax policies.

    Each slot draws its item independently (with replacement: an item may
    fill two slots) from softmax(scores[x, l] / temperature); the target's
    scores follow the true click logits with weight ``target_mix``. The click
    probability is q(x, a, l) = sigmoid(base_logit + alpha_x + beta_a - 0.4 (l - 1)).

    click_model : ``"additive"`` — slot l is clicked with probability
        q(x, a_l, l) independently (position-based; all four estimators are
        unbiased); ``"cascade"`` — the user scans top-down and stops at the
        first click, so E[r_l | s] = q(a_l) prod_{k<l} (1 - q(a_k)) (standard
        IPS and RIPS unbiased; independent IPS and PI biased).

    min_slots : slates of varying length: each slate's length is drawn
        uniformly from min_slots..n_slots, independently of the context and of
        both policies (an exogenous length); slots beyond it are not shown.
        The log and ``data`` then hold slates of varying length.

    The population is fixed by ``seed``; the sample also depends on ``n_slates``.
    """
    if click_model not in ("additive", "cascade"):
        raise UsageError(f"click_model must be 'additive' or 'cascade', got {click_model!r}")
    if min_slots is not None and not 1 <= min_slots <= n_slots:
        raise UsageError(f"min_slots must lie in 1..n_slots ({n_slots}), got {min_slots}")
    rng = np.random.default_rng(seed)
    alpha = rng.normal(0, 0.5, n_contexts) + base_logit
    beta = rng.normal(0, 0.8, n_items)
    gamma = -0.4 * np.arange(n_slots)
    q = 1.0 / (1.0 + np.exp(-(alpha[:, None, None] + beta[None, :, None] + gamma[None, None, :])))
    b_scores = rng.normal(0, 1, (n_contexts, n_slots, n_items))
    e_scores = target_mix * (alpha[:, None, None] + beta[None, None, :]) + (
        1 - target_mix
    ) * rng.normal(0, 1, (n_contexts, n_slots, n_items))
    pi_b = _softmax(b_scores / logging_temperature)
    pi_e = _softmax(e_scores / target_temperature)
    lo_len = n_slots if min_slots is None else min_slots
    # P(the slate has slot k + 1) for a length uniform on lo_len..n_slots
    reach = np.array([(n_slots - max(lo_len, k + 1) + 1) / (n_slots - lo_len + 1) for k in range(n_slots)])
    true_value = _value(pi_e, q, click_model, reach)
    logging_value = _value(pi_b, q, click_model, reach)

    drng = np.random.default_rng([seed, n_slates])
    x = drng.integers(0, n_contexts, n_slates)
    cdf = np.cumsum(pi_b, axis=2)  # (X, L, A)
    u = drng.random((n_slates, n_slots))
    item = np.empty((n_slates, n_slots), dtype=np.int64)
    for slot in range(n_slots):
        c = cdf[x, slot]  # (n, A)
        item[:, slot] = np.minimum((u[:, slot, None] > c).sum(axis=1), n_items - 1)
    slot_idx = np.arange(n_slots)[None, :]
    qa = q[x[:, None], item, slot_idx]
    clicks = drng.random((n_slates, n_slots)) < qa
    length = None
    if min_slots is not None:
        length = np.random.default_rng([seed, n_slates, 1]).integers(min_slots, n_slots + 1, n_slates)
        clicks &= np.arange(n_slots)[None, :] < length[:, None]
    if click_model == "cascade":
        first = np.cumsum(clicks, axis=1) == 1
        reward = (clicks & first).astype(np.float64)
    else:
        reward = clicks.astype(np.float64)
    pb = pi_b[x[:, None], slot_idx, item]
    pe = pi_e[x[:, None], slot_idx, item]
    if length is not None:  # slots beyond a slate's length are not part of it
        shown = np.arange(n_slots)[None, :] < length[:, None]
        pb, pe = np.where(shown, pb, 1.0), np.where(shown, pe, 1.0)
    data = SlateFeedback.from_arrays(
        reward,
        pb,
        pe,
        propensity_cond=pb,
        target_cond=pe,
        slate_propensity=pb.prod(axis=1),
        target_slate_prob=pe.prod(axis=1),
        reward_range=(0.0, 1.0),
        slate_ids=np.arange(n_slates),
        length=length,
    )
    log = None
    if frame:
        log = pd.DataFrame(
            {
                "slate_id": np.repeat(np.arange(n_slates), n_slots),
                "context": np.repeat(x, n_slots),
                "position": np.tile(np.arange(1, n_slots + 1), n_slates),
                "item_id": item.ravel(),
                "reward": reward.ravel(),
                "propensity": pb.ravel(),
                "propensity_conditional": pb.ravel(),
                "slate_propensity": np.repeat(data.slate_propensity, n_slots),
                "target_probability": pe.ravel(),
                "target_conditional": pe.ravel(),
                "target_slate_probability": np.repeat(data.target_slate_prob, n_slots),
            }
        )
        if length is not None:
            log = log[(np.arange(n_slots)[None, :] < length[:, None]).ravel()].reset_index(drop=True)
    return SyntheticSlates(data, log, true_value, logging_value, pi_b, pi_e, q, x)
