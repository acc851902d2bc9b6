"""Counterfactual (off-policy) evaluation of single-slot / per-position policies.

Build validated data with :func:`logged_feedback` (optionally with a
cross-fitted :class:`RewardModel`), then call ``estimate`` on any estimator
(:class:`DM`, :class:`IPS`, :class:`ClippedIPS`, :class:`SNIPS`, :class:`DR`,
:class:`SNDR`, :class:`SwitchDR`, :class:`DROS`) or :func:`estimate_many`.
``logged_feedback`` also takes PySpark DataFrames (validated and reduced on
Spark; docs/counterfactual.md "On Spark").
"""

from receval.counterfactual._data import LoggedFeedback, logged_feedback
from receval.counterfactual._estimators import (
    DM,
    DR,
    DROS,
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    Estimator,
    OPEResult,
    SwitchDR,
    estimate_many,
)
from receval.counterfactual._reward_model import RewardModel
from receval.counterfactual.policies import TargetPolicy, deterministic_topk, softmax_policy
from receval.counterfactual.slates import (
    IndependentIPS,
    PseudoInverse,
    RewardInteractionIPS,
    SlateEstimator,
    SlateFeedback,
    SNIndependentIPS,
    SNPseudoInverse,
    SNRewardInteractionIPS,
    SNStandardIPS,
    StandardIPS,
    SyntheticSlates,
    estimate_slates,
    simulate_slates,
    slate_feedback,
)

__all__ = [
    "LoggedFeedback",
    "logged_feedback",
    "RewardModel",
    "Estimator",
    "OPEResult",
    "DM",
    "IPS",
    "ClippedIPS",
    "SNIPS",
    "DR",
    "SNDR",
    "SwitchDR",
    "DROS",
    "estimate_many",
    "TargetPolicy",
    "deterministic_topk",
    "softmax_policy",
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
