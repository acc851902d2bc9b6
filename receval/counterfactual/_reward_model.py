"""Cross-fitted reward models q_hat(x, a) for DM and the doubly robust family."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from receval.errors import UsageError

__all__ = ["RewardModel"]


@dataclass(frozen=True)
class RewardModel:
    """A scikit-learn reward model, cross-fitted by request.

    Features: the context columns (strings/categories one-hot encoded,
    numbers passed through) plus one-hot ``item_id`` and ``position``. Binary
    rewards use a classifier's probability of 1, other rewards a regressor.

    Parameters
    ----------
    kind : ``"logistic"`` (LogisticRegression(C), Ridge for non-binary
        rewards) or ``"hgb"`` (HistGradientBoosting classifier / regressor)
    n_folds : K; requests are split into K folds and each fold is predicted
        by a model fitted on the others (K=1 fits and predicts on all rows)
    C : inverse regularisation strength of the logistic regression
    seed : seed of the fold assignment and of the model

    Notes
    -----
    A training fold whose rewards are all equal (e.g. no click at all, as in
    small OBD "men" samples) gets the constant model predicting that value
    instead of crashing.
    """

    kind: str = "logistic"
    n_folds: int = 2
    C: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "hgb"):
            raise UsageError(f"RewardModel kind must be 'logistic' or 'hgb', got {self.kind!r}")
        if self.n_folds < 1:
            raise UsageError(f"RewardModel n_folds must be >= 1, got {self.n_folds}")

    def _make(self, binary: bool, columns: list[str], categorical: list[str]):
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder

        numeric = [c for c in columns if c not in categorical]
        if self.kind == "logistic":
            enc = ColumnTransformer(
                [
                    ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                    ("num", "passthrough", numeric),
                ]
            )
            est = (
                LogisticRegression(C=self.C, max_iter=1000) if binary else Ridge(alpha=1.0 / self.C)
            )
        else:
            enc = ColumnTransformer(
                [
                    (
                        "cat",
                        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                        categorical,
                    ),
                    ("num", "passthrough", numeric),
                ]
            )
            cls = HistGradientBoostingClassifier if binary else HistGradientBoostingRegressor
            est = cls(random_state=self.seed)
        return make_pipeline(enc, est)

    def cross_fit(
        self, log, target, context_columns: list[str], sample_weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Cross-fitted predictions for the log rows and for the target rows.

        ``sample_weight`` (one per log row, e.g. bootstrap counts) weights the
        fits; rows of weight 0 are left out of training. The folds are always
        assigned by request, so a resampled request never predicts itself.
        Returns (q_hat of each log row, q_hat of each target row, description).
        """
        columns = list(context_columns) + ["item_id", "position"]
        missing = [c for c in context_columns if c not in log.columns]
        if missing:
            raise UsageError(f"context column(s) {missing} not in the log")
        ctx = log.groupby("request_id", sort=False)[list(context_columns)].first().reset_index()
        tx = target[["request_id", "item_id", "position"]].merge(ctx, on="request_id", how="left")
        X = log[columns].copy()
        Xt = tx[columns].copy()
        categorical = ["item_id", "position"] + [
            c for c in context_columns if not pd.api.types.is_numeric_dtype(log[c])
        ]
        for c in ("item_id", "position"):
            X[c] = X[c].astype(str)
            Xt[c] = Xt[c].astype(str)
        y = log["reward"].to_numpy(dtype=np.float64)
        binary = bool(np.isin(y, (0.0, 1.0)).all())
        requests = log["request_id"].unique()
        rng = np.random.default_rng(self.seed)
        fold_of = dict(zip(requests, rng.permutation(len(requests)) % self.n_folds, strict=True))
        fold = log["request_id"].map(fold_of).to_numpy()
        tfold = target["request_id"].map(fold_of).to_numpy()
        q = np.empty(len(log))
        qt = np.empty(len(target))
        constant_folds = 0
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        for k in range(self.n_folds):
            train = fold != k if self.n_folds > 1 else np.ones(len(log), bool)
            if sw is not None:
                train = train & (sw > 0)
            test, ttest = fold == k, tfold == k
            yk = y[train]
            if len(yk) == 0:
                raise UsageError("a reward-model training fold is empty; use fewer folds")
            if np.all(yk == yk[0]):
                constant_folds += 1
                q[test], qt[ttest] = yk[0], yk[0]
                continue
            model = self._make(binary, columns, categorical)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit_kw = {} if sw is None else {f"{model.steps[-1][0]}__sample_weight": sw[train]}
                model.fit(X[train], yk, **fit_kw)
            if binary:
                q[test] = model.predict_proba(X[test])[:, 1]
                qt[ttest] = model.predict_proba(Xt[ttest])[:, 1] if ttest.any() else qt[ttest]
            else:
                q[test] = model.predict(X[test])
                qt[ttest] = model.predict(Xt[ttest]) if ttest.any() else qt[ttest]
        info = {
            "kind": self.kind,
            "n_folds": self.n_folds,
            "C": self.C,
            "features": columns,
            "binary": binary,
            "constant_folds": constant_folds,
        }
        return q, qt, info
