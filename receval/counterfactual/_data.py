"""Logged bandit feedback, validated once and reduced to per-row arrays.

Every estimator works on the same few per-row arrays: the unit (request) of
each row, the reward, the logging propensity pi_b of the logged action, the
target probability pi_e of the logged action and, for the model-based
estimators, the reward model's prediction for the logged action q_hat(x, a) and
its expectation under the target policy q_hat(x, pi_e) at the row's position.
With positions the action is the pair (item, position) and pi_e, pi_b are the
per-position marginals.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from receval.errors import InputError, UsageError, Violation

__all__ = ["LoggedFeedback", "logged_feedback"]


def _examples(values: np.ndarray, rows: np.ndarray, k: int = 5) -> tuple[str, ...]:
    return tuple(f"row {int(r)} ({values[r].item()!r})" for r in rows[:k])


def _reward_checks(
    reward: np.ndarray, reward_range: Any, violations: list, hint: str
) -> tuple[float, float]:
    """Append reward violations (non-finite, outside the declared range); return the range.

    Without ``reward_range`` the range is the observed one, so nothing is out of range.
    """
    finite = np.isfinite(reward)
    bad = np.flatnonzero(~finite)
    if len(bad):
        violations.append(Violation("reward", "must be finite", len(bad), _examples(reward, bad)))
    if reward_range is None:
        if not finite.any():
            return 0.0, 0.0
        return float(reward[finite].min()), float(reward[finite].max())
    lo, hi = float(reward_range[0]), float(reward_range[1])
    if not lo <= hi:
        raise UsageError(f"reward_range must be (low, high) with low <= high, got {reward_range}")
    bad = np.flatnonzero(finite & ((reward < lo) | (reward > hi)))
    if len(bad):
        violations.append(
            Violation("reward", f"must lie in the declared reward_range [{lo:g}, {hi:g}]", len(bad),
                      _examples(reward, bad), hint)
        )
    return lo, hi


def _check_arrays(
    reward, propensity, target_prob, reward_range, frame="logged feedback"
) -> tuple[float, float]:
    violations: list[Violation] = []
    bad = np.flatnonzero(~(np.isfinite(propensity) & (propensity > 0) & (propensity <= 1)))
    if len(bad):
        violations.append(
            Violation(
                "propensity",
                "must lie in (0, 1]",
                len(bad),
                _examples(propensity, bad),
                "zero propensities break the positivity assumption; drop or re-log those rows",
            )
        )
    bad = np.flatnonzero(~(np.isfinite(target_prob) & (target_prob >= 0) & (target_prob <= 1)))
    if len(bad):
        violations.append(
            Violation(
                "target probability", "must lie in [0, 1]", len(bad), _examples(target_prob, bad)
            )
        )
    lo, hi = _reward_checks(reward, reward_range, violations, "declare the right reward_range, e.g. reward_range=(0, 1) for clicks")
    if violations:
        raise InputError(frame, violations)
    return lo, hi


def _column_checks(frame, name: str, ids: tuple[str, ...], numeric: tuple[str, ...]) -> list[Violation]:
    """Type rules of the columns the estimators read: ids integer or text and never null, numbers numeric.

    Run before any merge or comparison, so that a text reward or a null request id is an InputError
    naming the column, not a pandas error from inside a join.
    """
    import pandas as pd

    out: list[Violation] = []
    for c in ids:
        if c not in frame.columns:
            continue
        col = frame[c]
        nulls = np.flatnonzero(col.isna().to_numpy())
        if len(nulls):
            out.append(Violation(c, "must not be null", len(nulls), tuple(f"row {int(r)}" for r in nulls[:5]),
                                 "drop or fill those rows explicitly; receval never guesses missing values"))
        if pd.api.types.is_float_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            out.append(Violation(c, f"must hold integers or text, found dtype {col.dtype}", len(col),
                                 tuple(repr(v) for v in col.head(3).tolist()),
                                 "cast ids to int or str; float ids lose precision and '7.0' != '7'"))
        elif col.dtype == object:
            kinds = {type(v).__name__ for v in col.dropna().tolist()}
            if len(kinds) > 1:
                out.append(Violation(c, f"must hold one type; found {', '.join(sorted(kinds))}", len(col),
                                     hint="ids that mix numbers and text ('007' vs 7) are ambiguous; cast to str"))
    for c in numeric:
        if c not in frame.columns:
            continue
        col = frame[c]
        if not (pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)):
            out.append(Violation(c, f"must be numeric, found dtype {col.dtype}", len(col),
                                 tuple(repr(v) for v in col.head(3).tolist()),
                                 "convert the column to numbers first"))
    return out


def _harmonise_ids(frames: list, columns: tuple[str, ...] = ("request_id", "item_id")) -> list:
    """Give each id column one dtype across ``frames`` (text when they differ, as receval.evaluate does)."""
    import pandas as pd

    present = [f for f in frames if f is not None]
    for c in columns:
        have = [f for f in present if c in f.columns]
        cats = [f for f in have if isinstance(f[c].dtype, pd.CategoricalDtype)]
        for f in cats:
            f[c] = f[c].astype(object)
        kinds = {pd.api.types.is_integer_dtype(f[c].dtype) for f in have}
        if len(kinds) > 1:
            for f in have:
                f[c] = f[c].astype(str)
    return frames


@dataclass(frozen=True)
class LoggedFeedback:
    """Validated logged feedback as per-row arrays (build with :func:`logged_feedback`).

    Attributes
    ----------
    unit : (n_rows,) int, resampling unit (request) index of each row, 0..n_units-1
    n_units : number of units
    reward, propensity, target_prob : (n_rows,) float; r, pi_b(a|x), pi_e(a|x)
    q_logged : (n_rows,) q_hat(x, a) of the logged action, or None
    q_target : (n_rows,) q_hat(x, pi_e) = sum_a pi_e(a|x) q_hat(x, a) at the row's position, or None
    reward_range : (low, high) the rewards were checked against
    support : diagnostics about target mass outside the logged support
    warnings : data-level warnings in words
    model : description of the reward model, if any
    refit : for data built with a RewardModel, a function mapping per-unit
        bootstrap counts (n_units,) to refitted (q_logged, q_target); used by
        ``estimate(..., refit_boot=N)``
    """

    unit: np.ndarray
    n_units: int
    reward: np.ndarray
    propensity: np.ndarray
    target_prob: np.ndarray
    q_logged: np.ndarray | None = None
    q_target: np.ndarray | None = None
    reward_range: tuple[float, float] = (0.0, 1.0)
    support: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    model: dict[str, Any] | None = None
    refit: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def n_rows(self) -> int:
        return len(self.reward)

    @property
    def has_reward_estimates(self) -> bool:
        """True when q_hat (``q_logged`` and ``q_target``) is available for DM and the DR family."""
        return self.q_logged is not None and self.q_target is not None

    @property
    def weight(self) -> np.ndarray:
        """Importance weights w = pi_e(a|x) / pi_b(a|x)."""
        return self.target_prob / self.propensity

    @classmethod
    def from_arrays(
        cls,
        reward,
        propensity,
        target_prob,
        *,
        unit=None,
        q_logged=None,
        q_target=None,
        reward_range: tuple[float, float] | None = None,
    ) -> LoggedFeedback:
        """Build from per-row arrays, validating propensities, target probabilities and rewards.

        ``unit`` defaults to one unit per row; otherwise any integer labels
        (they are renumbered 0..n_units-1).
        """
        r = np.asarray(reward, dtype=np.float64)
        p = np.asarray(propensity, dtype=np.float64)
        t = np.asarray(target_prob, dtype=np.float64)
        if not (len(r) == len(p) == len(t)):
            raise UsageError(
                f"reward, propensity and target_prob must have equal lengths, got {len(r)}, {len(p)}, {len(t)}"
            )
        lo, hi = _check_arrays(r, p, t, reward_range)
        if unit is None:
            u, n_units = np.arange(len(r)), len(r)
        else:
            uniq, u = np.unique(np.asarray(unit), return_inverse=True)
            n_units = len(uniq)
        if (q_logged is None) != (q_target is None):
            raise UsageError("give both q_logged and q_target, or neither")
        ql = None if q_logged is None else np.asarray(q_logged, dtype=np.float64)
        qt = None if q_target is None else np.asarray(q_target, dtype=np.float64)
        for name, q in (("q_logged", ql), ("q_target", qt)):
            if q is not None and len(q) != len(r):
                raise UsageError(f"{name} must have one value per row ({len(r)}), got {len(q)}")
            bad = np.flatnonzero(~np.isfinite(q)) if q is not None else ()
            if len(bad):
                raise InputError("logged feedback", [Violation(name, "must be finite (a reward estimate)", len(bad),
                                                               _examples(q, bad))])
        return cls(u, n_units, r, p, t, ql, qt, (lo, hi))


def _to_pandas(frame, kind: str = "logs"):
    if frame is None:
        return None
    if isinstance(frame, str | os.PathLike):  # a file read in memory (engine="polars")
        from receval.data.readers import read_file

        return read_file(frame, kind=kind).to_pandas()
    if hasattr(frame, "to_pandas"):
        return frame.to_pandas()
    return frame.copy()


def logged_feedback(
    log,
    target=None,
    *,
    reward_range: tuple[float, float] | None = None,
    reward_model=None,
    q_hat_column: str | None = None,
    context_columns: tuple[str, ...] | list[str] = (),
    tol: float = 1e-6,
    logging=None,
    engine: str = "auto",
    format: str = "auto",
) -> LoggedFeedback:
    """Validate logged feedback and a target policy, and reduce them to per-row arrays.

    Parameters
    ----------
    log : pandas or polars frame, one row per shown (item, position)
        Columns ``item_id``, ``reward``, ``propensity`` (pi_b of the shown
        item at its position, in (0, 1]); optional ``request_id`` (the
        resampling unit; default one per row), ``position`` (>= 1, default 1),
        ``target_probability`` (pi_e of the logged action, used when no
        ``target`` frame is given) and context feature columns.
    target : frame ``request_id, item_id, position, probability``, optional
        The full target distribution over candidate items per (request,
        position); each must sum to 1 within ``tol``. Required for DM and DR.
    reward_range : (low, high); rewards outside raise InputError. Default: the
        observed min..max (nothing is rejected). Use (0, 1) for clicks.
    reward_model : :class:`receval.counterfactual.RewardModel`, optional
        Cross-fitted once on the log (K folds by request); its predictions feed
        DM and the DR family.
    q_hat_column : name of a column present in both ``log`` and ``target``
        holding precomputed reward estimates q_hat(x, a) (alternative to
        ``reward_model``, e.g. a model fitted elsewhere or the true mean reward
        in a simulation).
    context_columns : columns of ``log`` describing the request context
        (features of the reward model; constant within a request).
    logging : frame ``request_id, item_id, position, probability``, optional
        The logging policy's full distribution over candidate items per
        (request, position), when it is known (e.g. a softmax logger's
        probabilities for every candidate). Validated like ``target``; the
        logged items must have positive logging probability equal to their
        ``propensity`` (within ``tol``). Enables the context-level support
        check: target mass on (request, item, position) triples the logger
        could never show (probability 0 or absent) is counted in ``support``
        and warned about. Needs ``target``.
    engine : ``"auto"`` (default: Spark when ``log`` or ``target`` is a PySpark
        DataFrame, else in memory), ``"polars"`` (in memory) or ``"spark"``
        (frames, or paths read by Spark with ``format``). On Spark the rules
        and errors are the same, the rows stay on Spark and the result is a
        :class:`receval.engines.spark_ope.SparkFeedback` holding only counts
        and diagnostics; ``estimate_many`` / ``Estimator.estimate`` then run one
        Spark job returning per-request sums (docs/scale.md). Not on Spark:
        ``reward_model`` (use ``q_hat_column``) and ``logging``.
    format : file format of paths read by Spark (``auto``, ``parquet``, ``csv``,
        ``tsv``, ``jsonl``).

    Raises
    ------
    InputError listing every violated rule with counts and examples.
    """
    from receval.engines import resolve_engine

    engine = resolve_engine(engine, log, target, logging)
    if engine == "spark":
        from receval.engines.spark_ope import spark_logged_feedback

        return spark_logged_feedback(  # type: ignore[return-value]
            log, target, reward_range=reward_range, reward_model=reward_model, q_hat_column=q_hat_column,
            context_columns=context_columns, tol=tol, logging=logging, format=format,
        )
    if engine == "streaming":
        raise UsageError("the off-policy estimators run in memory or on Spark: use engine='polars' or 'spark'")
    log = _to_pandas(log)
    target = _to_pandas(target, "target")
    missing = [c for c in ("item_id", "reward", "propensity") if c not in log.columns]
    if missing:
        raise UsageError(f"log is missing required column(s) {missing}; it has {list(log.columns)}")
    log = log.reset_index(drop=True)
    if "request_id" not in log.columns:
        log["request_id"] = np.arange(len(log))
    if "position" not in log.columns:
        log["position"] = 1
    numeric = ("reward", "propensity", "position", "target_probability") + ((q_hat_column,) if q_hat_column else ())
    bad_types = _column_checks(log, "log", ("request_id", "item_id"), numeric)
    if bad_types:
        raise InputError("log", bad_types)
    if target is not None:
        target = target.reset_index(drop=True)
        bad_types = _column_checks(target, "target", ("request_id", "item_id"),
                                   ("probability", "position") + ((q_hat_column,) if q_hat_column else ()))
        if bad_types:
            raise InputError("target", bad_types)
    if q_hat_column is not None:  # a NaN estimate would pass through DM / DR as a NaN value
        for name, frame in (("log", log), ("target", target)):
            if frame is None or q_hat_column not in frame.columns:
                continue
            q = frame[q_hat_column].to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(~np.isfinite(q))
            if len(bad):
                raise InputError(name, [Violation(q_hat_column, "must be finite (a reward estimate)", len(bad),
                                                  _examples(q, bad),
                                                  "fill or drop the rows without an estimate explicitly")])
    if logging is not None:
        logging = _to_pandas(logging, "logging").reset_index(drop=True)
        bad_types = _column_checks(logging, "logging", ("request_id", "item_id"), ("probability", "position"))
        if bad_types:
            raise InputError("logging", bad_types)
    _harmonise_ids([log, target, logging])
    if reward_model is not None and q_hat_column is not None:
        raise UsageError("give reward_model or q_hat_column, not both")
    violations: list[Violation] = []
    bad = np.flatnonzero(~(log["position"].to_numpy() >= 1))
    if len(bad):
        violations.append(
            Violation(
                "position", "must be >= 1", len(bad), _examples(log["position"].to_numpy(), bad)
            )
        )
    support: dict[str, Any] = {}
    warns: list[str] = []
    keys = ["request_id", "position"]
    if target is None:
        if logging is not None:
            raise UsageError(
                "the context-level support check (logging=...) needs the target frame: "
                "pass target=... with the full target distribution"
            )
        if "target_probability" not in log.columns:
            raise UsageError("give a target frame or a 'target_probability' column in the log")
        if reward_model is not None or q_hat_column is not None:
            raise UsageError("DM and DR need the full target distribution: pass the target frame")
        target_prob = log["target_probability"].to_numpy(dtype=np.float64)
        if violations:
            raise InputError("log", violations)
    else:
        missing = [c for c in ("request_id", "item_id", "probability") if c not in target.columns]
        if missing:
            raise UsageError(
                f"target is missing required column(s) {missing}; it has {list(target.columns)}"
            )
        target = target.reset_index(drop=True)
        if "position" not in target.columns:
            target["position"] = 1
        prob = target["probability"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~(np.isfinite(prob) & (prob >= 0) & (prob <= 1)))
        if len(bad):
            violations.append(
                Violation(
                    "target probability", "must lie in [0, 1]", len(bad), _examples(prob, bad)
                )
            )
        sums = target.groupby(keys, sort=False)["probability"].sum()
        off = sums[(sums - 1.0).abs() > tol]
        if len(off):
            ex = tuple(
                f"(request {k[0]!r}, position {k[1]!r}) sums to {v:.6g}"
                for k, v in list(off.items())[:5]
            )
            violations.append(
                Violation(
                    "target probability",
                    f"must sum to 1 within {tol:g} per (request, position)",
                    len(off),
                    ex,
                    "normalise the target distribution per request and position",
                )
            )
        if target.duplicated(["request_id", "item_id", "position"]).any():
            n = int(target.duplicated(["request_id", "item_id", "position"]).sum())
            violations.append(
                Violation("target", "must have one row per (request, item, position)", n)
            )
        logged_keys = log[keys].drop_duplicates()
        covered = logged_keys.merge(sums.reset_index()[keys], on=keys, how="left", indicator=True)
        n_uncovered = int((covered["_merge"] == "left_only").sum())
        if n_uncovered:
            ex = covered.loc[covered["_merge"] == "left_only", keys].head(5)
            violations.append(
                Violation(
                    "target",
                    "must give a distribution for every logged (request, position)",
                    n_uncovered,
                    tuple(
                        f"(request {a!r}, position {b!r})" for a, b in ex.itertuples(index=False)
                    ),
                )
            )
        if logging is not None:
            context_support, context_warning = _context_support(log, target, logging, tol, violations)
        if violations:
            raise InputError("logged feedback / target policy", violations)
        merged = log[["request_id", "item_id", "position"]].merge(
            target[["request_id", "item_id", "position", "probability"]],
            on=["request_id", "item_id", "position"],
            how="left",
        )
        target_prob = merged["probability"].fillna(0.0).to_numpy(dtype=np.float64)
        # support: target mass on (item, position) pairs that the log never shows
        pairs = log[["item_id", "position"]].drop_duplicates()
        t_pairs = target.loc[target["probability"] > 0, ["item_id", "position", "probability"]]
        chk = t_pairs.merge(pairs, on=["item_id", "position"], how="left", indicator=True)
        outside = chk["_merge"] == "left_only"
        n_dist = len(sums)
        mass = float(chk.loc[outside, "probability"].sum() / n_dist) if n_dist else 0.0
        n_pairs = int(chk.loc[outside, ["item_id", "position"]].drop_duplicates().shape[0])
        support = {"unsupported_pairs": n_pairs, "unsupported_target_mass": mass}
        if n_pairs:
            warns.append(
                f"the target policy puts {mass:.1%} of its mass on {n_pairs} (item, position) pairs never logged: "
                "IPS-type estimates miss that mass (common support fails)"
            )
        if logging is not None:
            support.update(context_support)
            if context_warning:
                warns.append(context_warning)
    reward = log["reward"].to_numpy(dtype=np.float64)
    propensity = log["propensity"].to_numpy(dtype=np.float64)
    q_logged = q_target = None
    model_info = None
    if reward_model is not None or q_hat_column is not None:
        if q_hat_column is not None:
            q_logged = log[q_hat_column].to_numpy(dtype=np.float64)
            q_tgt_rows = target[q_hat_column].to_numpy(dtype=np.float64)
            model_info = {"kind": "column", "column": q_hat_column}
        else:
            q_logged, q_tgt_rows, model_info = reward_model.cross_fit(
                log, target, list(context_columns)
            )
        q_target = _q_target(log, target, q_tgt_rows)
    refit = None
    if reward_model is not None:
        ctx_cols = list(context_columns)

        def refit(unit_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ql, qt_rows, _ = reward_model.cross_fit(
                log, target, ctx_cols, sample_weight=unit_counts[data.unit]
            )
            return ql, _q_target(log, target, qt_rows)

    data = LoggedFeedback.from_arrays(
        reward,
        propensity,
        target_prob,
        unit=log["request_id"].to_numpy(),
        q_logged=q_logged,
        q_target=q_target,
        reward_range=reward_range,
    )
    return LoggedFeedback(
        data.unit,
        data.n_units,
        data.reward,
        data.propensity,
        data.target_prob,
        data.q_logged,
        data.q_target,
        data.reward_range,
        support,
        tuple(warns),
        model_info,
        refit,
    )


def _context_support(log, target, logging, tol: float, violations: list) -> tuple[dict[str, Any], str | None]:
    """Validate the logging distribution; measure target mass the logger could never show.

    Appends contract violations to ``violations``; returns the support
    diagnostics and a warning in words (None when every target triple is
    supported). Only the (request, position) contexts present in the log
    count: they are the ones the estimates average over.
    """
    keys = ["request_id", "position"]
    triple = ["request_id", "item_id", "position"]
    logging = _to_pandas(logging)
    missing = [c for c in ("request_id", "item_id", "probability") if c not in logging.columns]
    if missing:
        raise UsageError(f"logging is missing required column(s) {missing}; it has {list(logging.columns)}")
    logging = logging.reset_index(drop=True)
    if "position" not in logging.columns:
        logging["position"] = 1
    lp = logging["probability"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(lp) & (lp >= 0) & (lp <= 1)))
    if len(bad):
        violations.append(Violation("logging probability", "must lie in [0, 1]", len(bad), _examples(lp, bad)))
    sums = logging.groupby(keys, sort=False)["probability"].sum()
    off = sums[(sums - 1.0).abs() > tol]
    if len(off):
        ex = tuple(f"(request {k[0]!r}, position {k[1]!r}) sums to {v:.6g}" for k, v in list(off.items())[:5])
        violations.append(
            Violation("logging probability", f"must sum to 1 within {tol:g} per (request, position)", len(off), ex,
                      "give the logging policy's full distribution over the candidates of each request and position")
        )
    dup = logging.duplicated(triple)
    if dup.any():
        violations.append(Violation("logging", "must have one row per (request, item, position)", int(dup.sum())))
    logged_keys = log[keys].drop_duplicates()
    covered = logged_keys.merge(sums.reset_index()[keys], on=keys, how="left", indicator=True)
    uncovered = covered["_merge"] == "left_only"
    if uncovered.any():
        ex = covered.loc[uncovered, keys].head(5)
        violations.append(
            Violation("logging", "must give a distribution for every logged (request, position)", int(uncovered.sum()),
                      tuple(f"(request {a!r}, position {b!r})" for a, b in ex.itertuples(index=False)))
        )
    lookup = logging.loc[~dup, triple + ["probability"]].rename(columns={"probability": "_lp"})
    # the logged rows: the logger must have been able to show them, with the logged propensity
    rows = log[triple + ["propensity"]].merge(lookup, on=triple, how="left")
    row_lp = rows["_lp"].to_numpy(dtype=np.float64)
    prop = rows["propensity"].to_numpy(dtype=np.float64)
    # rows of (request, position)s without a logging distribution are reported above
    known = log[keys].merge(sums.reset_index()[keys].assign(_c=True), on=keys, how="left")["_c"].notna().to_numpy()
    bad = np.flatnonzero(known & ~(row_lp > 0))
    if len(bad):
        violations.append(
            Violation("logging probability",
                      "must be positive for every logged (request, item, position): the logger showed it",
                      len(bad), tuple(f"row {int(r)} (request {rows['request_id'][r]!r}, item {rows['item_id'][r]!r})"
                                      for r in bad[:5]),
                      "the logging frame does not describe the policy that produced the log")
        )
    bad = np.flatnonzero((row_lp > 0) & (np.abs(row_lp - prop) > tol))
    if len(bad):
        violations.append(
            Violation("propensity", f"must equal the logging frame's probability within {tol:g}", len(bad),
                      tuple(f"row {int(r)} ({prop[r]!r} vs {row_lp[r]!r})" for r in bad[:5]),
                      "use one source for the logging probabilities")
        )
    # target mass on triples the logger never could show, per logged context
    t = target.loc[target["probability"] > 0, triple + ["probability"]]
    t = t.merge(logged_keys, on=keys, how="inner").merge(lookup, on=triple, how="left")
    outside = ~(t["_lp"].to_numpy(dtype=np.float64) > 0)  # absent (NaN) or 0
    per_context = t.loc[outside].groupby(keys, sort=False)["probability"].sum()
    n_contexts = len(logged_keys)
    mass = float(per_context.sum() / n_contexts) if n_contexts else 0.0
    support = {
        "context_unsupported_triples": int(outside.sum()),
        "context_unsupported_contexts": int((per_context > 0).sum()),
        "context_unsupported_target_mass": mass,
        "context_max_unsupported_target_mass": float(per_context.max()) if len(per_context) else 0.0,
    }
    warning = None
    if support["context_unsupported_triples"]:
        warning = (
            f"the target policy puts {mass:.1%} of its mass (averaged over the {n_contexts} logged (request, position) "
            f"contexts; up to {support['context_max_unsupported_target_mass']:.1%} in one) on "
            f"{support['context_unsupported_triples']} (request, item, position) triples the logging policy could never "
            f"show (logging probability 0 or absent), in {support['context_unsupported_contexts']} contexts: "
            "IPS-type estimates miss the reward of that mass (biased towards 0 for non-negative rewards), "
            "DM and DR extrapolate the reward model there"
        )
    return support, warning


def _q_target(log, target, q_tgt_rows: np.ndarray) -> np.ndarray:
    """q_hat(x, pi_e) at each log row: sum over the target rows of its (request, position)."""
    keys = ["request_id", "position"]
    pq = target[keys].copy()
    pq["pq"] = target["probability"].to_numpy(dtype=np.float64) * q_tgt_rows
    agg = pq.groupby(keys, sort=False)["pq"].sum().reset_index()
    return log[keys].merge(agg, on=keys, how="left")["pq"].to_numpy(dtype=np.float64)
