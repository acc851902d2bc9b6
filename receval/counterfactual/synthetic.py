"""Synthetic logged bandit feedback with a known logging policy, target policy and true value.

Contexts come from a finite population of ``n_contexts`` user types (drawn
uniformly), so the target policy's value over that population is computed
exactly: V = (1/L) sum_l mean_x sum_a pi_e(a|x,l) q(x,a,l), the mean reward per
logged row when every request shows L positions.

The click probability is additive on the logit scale,
q(x, a, l) = sigmoid(alpha_x + beta_a + gamma_l), so a logistic regression on
one-hot (context, item, position) is a correctly specified reward model.
Logging and target policies are softmaxes over item scores with their own
temperatures, one draw per position (per-position marginals; an item may
appear at two positions of one request).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SyntheticBandit", "simulate"]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class SyntheticBandit:
    """A simulated log and target policy.

    log : request_id, context, item_id, position, reward, propensity,
        target_probability, q_true (the true click probability of the logged action)
    target : request_id, item_id, position, probability, q_true
    true_value : exact value of the target policy (mean reward per row)
    logging_value : exact value of the logging policy
    logging : request_id, item_id, position, probability: the logging policy's
        full distribution (for ``logged_feedback(..., logging=...)``)
    """

    log: pd.DataFrame
    target: pd.DataFrame
    true_value: float
    logging_value: float
    logging: pd.DataFrame | None = None


def simulate(
    n_requests: int,
    *,
    n_items: int = 10,
    n_positions: int = 1,
    n_contexts: int = 20,
    logging_temperature: float = 1.0,
    target_temperature: float = 0.3,
    target_mix: float = 0.5,
    base_logit: float = -1.0,
    seed: int = 0,
) -> SyntheticBandit:
    """Simulate ``n_requests`` requests with ``n_positions`` shown items each.

    Parameters
    ----------
    logging_temperature : temperature of the logging softmax over random scores
        (larger = closer to uniform, smaller weights)
    target_temperature : temperature of the target softmax
    target_mix : how much the target's scores follow the true reward logits
        (1 = fully, 0 = random scores of its own)
    base_logit : shifts every click logit (lower = rarer clicks)
    """
    rng = np.random.default_rng(seed)
    # the population (fixed by the seed, independent of n_requests)
    alpha = rng.normal(0, 0.5, n_contexts) + base_logit
    beta = rng.normal(0, 0.8, n_items)
    gamma = -0.4 * np.arange(n_positions)
    logit = alpha[:, None, None] + beta[None, :, None] + gamma[None, None, :]  # (X, A, L)
    q = 1.0 / (1.0 + np.exp(-logit))
    b_scores = rng.normal(0, 1, (n_contexts, n_items))
    e_scores = target_mix * (alpha[:, None] + beta[None, :]) + (1 - target_mix) * rng.normal(
        0, 1, (n_contexts, n_items)
    )
    pi_b = _softmax(b_scores / logging_temperature)  # (X, A), the same at every position
    pi_e = _softmax(e_scores / target_temperature)
    true_value = float(np.einsum("xa,xal->", pi_e, q) / (n_contexts * n_positions))
    logging_value = float(np.einsum("xa,xal->", pi_b, q) / (n_contexts * n_positions))
    # the sample
    data_rng = np.random.default_rng([seed, n_requests])
    ctx = data_rng.integers(0, n_contexts, n_requests)
    rows = np.repeat(np.arange(n_requests), n_positions)
    pos = np.tile(np.arange(n_positions), n_requests)
    x = ctx[rows]
    cdf = np.cumsum(pi_b[x], axis=1)
    u = data_rng.random(len(rows))[:, None]
    item = np.minimum((u > cdf).sum(axis=1), n_items - 1)
    qa = q[x, item, pos]
    reward = (data_rng.random(len(rows)) < qa).astype(np.float64)
    log = pd.DataFrame(
        {
            "request_id": rows,
            "context": x.astype(str),
            "item_id": item,
            "position": pos + 1,
            "reward": reward,
            "propensity": pi_b[x, item],
            "target_probability": pi_e[x, item],
            "q_true": qa,
        }
    )
    t_req = np.repeat(np.arange(n_requests), n_positions * n_items)
    t_pos = np.tile(np.repeat(np.arange(n_positions), n_items), n_requests)
    t_item = np.tile(np.arange(n_items), n_requests * n_positions)
    tx = ctx[t_req]
    target = pd.DataFrame(
        {
            "request_id": t_req,
            "item_id": t_item,
            "position": t_pos + 1,
            "probability": pi_e[tx, t_item],
            "q_true": q[tx, t_item, t_pos],
        }
    )
    logging = pd.DataFrame(
        {"request_id": t_req, "item_id": t_item, "position": t_pos + 1, "probability": pi_b[tx, t_item]}
    )
    return SyntheticBandit(log, target, true_value, logging_value, logging)
