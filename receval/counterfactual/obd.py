"""Reader for the Open Bandit Dataset (OBD) CSV format, and a BTS target policy.

OBD (Saito et al., NeurIPS 2021 Datasets and Benchmarks; ZOZO, Inc., CC BY 4.0)
logs one shown item per row: ``timestamp, item_id, position (1-3), click,
propensity_score, user_feature_0..3, user-item_affinity_0..N``. Each row is
treated as its own request (round).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from receval.errors import UsageError

__all__ = ["read_obd", "empirical_target", "USER_FEATURES"]

USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


def read_obd(path: str | Path) -> pd.DataFrame:
    """Read one OBD CSV (e.g. ``random/all/all.csv``) as logged feedback.

    Returns a frame with the receval columns ``request_id`` (row number),
    ``item_id``, ``position``, ``reward`` (= click), ``propensity`` (=
    propensity_score), the original ``click`` and ``propensity_score``, the
    four user features (strings) and the affinity columns.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"OBD file not found: {path}")
    df = pd.read_csv(path, index_col=0)
    need = ["item_id", "position", "click", "propensity_score", *USER_FEATURES]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UsageError(f"{path} is not in the OBD format: missing column(s) {missing}")
    df = df.reset_index(drop=True)
    df.insert(0, "request_id", np.arange(len(df)))
    df["reward"] = df["click"].astype(np.float64)
    df["propensity"] = df["propensity_score"].astype(np.float64)
    for c in USER_FEATURES:
        df[c] = df[c].astype(str)
    return df


def empirical_target(policy_log: pd.DataFrame, eval_log: pd.DataFrame) -> pd.DataFrame:
    """Target frame: the empirical per-(item, position) distribution of ``policy_log``.

    pi_e(item | position) = (rows of ``policy_log`` showing item at position) /
    (rows at position), applied to every (request, position) of ``eval_log``.
    For OBD's Bernoulli Thompson Sampling, which ignores the user context, this
    is its action distribution averaged over the logging period.
    """
    counts = policy_log.groupby(["position", "item_id"]).size().rename("n").reset_index()
    counts["probability"] = counts["n"] / counts.groupby("position")["n"].transform("sum")
    keys = eval_log[["request_id", "position"]].drop_duplicates()
    return keys.merge(counts[["position", "item_id", "probability"]], on="position", how="inner")[
        ["request_id", "item_id", "position", "probability"]
    ]
