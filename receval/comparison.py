"""``receval.compare``: paired comparison of runs against a baseline.

For every (candidate, metric) pair: the difference and relative difference of
the means, a paired bootstrap interval of both (units resampled jointly in the
two runs), a p-value from the chosen paired test, an effect size, p-values
corrected across all pairs, an optional non-inferiority verdict decided by the
one-sided interval bound, and the A/B sample size needed to confirm the
observed difference online. See docs/comparison.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from receval.data.contract import ColumnMapping
from receval.data.readers import FileFormat
from receval.errors import InputError, UsageError, Violation
from receval.metrics.registry import Metric, parse_metrics

__all__ = ["compare", "ComparisonResult", "ComparisonRow"]


@dataclass(frozen=True)
class ComparisonRow:
    """One (candidate, metric) comparison. ``diff`` = candidate - baseline."""

    candidate: str
    baseline: str
    metric: str
    greater_is_better: bool
    scope: str
    n: int
    baseline_mean: float
    candidate_mean: float
    diff: float
    ci_low: float
    ci_high: float
    rel_diff: float
    rel_ci_low: float
    rel_ci_high: float
    test: str
    p_value: float
    p_adjusted: float
    significant: bool | None
    effect_size: float
    margin: float | None = None
    margin_type: str | None = None
    ni_bound: float | None = None
    non_inferior: bool | None = None
    ab_units_per_arm: float | None = None
    sd_baseline: float | None = None
    sd_candidate: float | None = None
    note: str = ""


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.floating | np.integer):
        return _clean(x.item())
    return x


@dataclass
class ComparisonResult:
    """What :func:`compare` returns: one row per (candidate, metric)."""

    rows: list[ComparisonRow]
    settings: dict[str, Any]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, str]) -> ComparisonRow:
        from receval.metrics.registry import parse_metric

        candidate, metric = key
        name = str(parse_metric(metric))
        for row in self.rows:
            if row.candidate == candidate and row.metric == name:
                return row
        raise KeyError(key)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        return {
            "comparisons": [{k: _clean(v) for k, v in asdict(r).items()} for r in self.rows],
            "settings": self.settings,
            "counts": self.counts,
        }

    def to_markdown(self, digits: int = 4) -> str:
        # run names are user text: escaped, on one line, without control or bidirectional characters
        from receval._markdown import cell

        level = int(round(self.settings["level"] * 100))
        head = (
            f"| candidate | metric | baseline | candidate | diff | {level}% CI | rel. diff | p | p adj. ({self.settings['correction']}) | non-inferior |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
        )
        lines = []

        def f(x: float | None, d: int = digits) -> str:
            return "n/a" if x is None or not math.isfinite(x) else f"{x:.{d}f}"

        def pv(x: float) -> str:
            return "n/a" if not math.isfinite(x) else (f"{x:.2e}" if x < 1e-3 else f"{x:.4f}")

        for r in self.rows:
            ni = "n/a" if r.non_inferior is None else ("yes" if r.non_inferior else "NO")
            lines.append(
                f"| {cell(r.candidate)} | {r.metric} | {f(r.baseline_mean)} | {f(r.candidate_mean)} | {f(r.diff)} | "
                f"[{f(r.ci_low)}, {f(r.ci_high)}] | {f(r.rel_diff * 100 if math.isfinite(r.rel_diff) else math.nan, 2)}% | "
                f"{pv(r.p_value)} | {pv(r.p_adjusted)} | {ni} |"
            )
        return head + "\n".join(lines) + "\n"


class _Pair:
    """Bootstrap statistics of a paired comparison (shared unit weights)."""

    def __init__(self, base: Any, cand: Any, relative: bool, stats: Any = None):
        import scipy.sparse as sp

        self.base, self.cand, self.relative = base, cand, relative
        self.recentre = base.recentre  # differences of non-smooth statistics are recentred too
        self.wb = base.stats.shape[1]
        if stats is not None:  # shared with the twin (difference / ratio) object
            self.stats = stats
        elif isinstance(base.stats, np.ndarray) and isinstance(cand.stats, np.ndarray):
            self.stats = np.hstack([base.stats, cand.stats])
        else:
            self.stats = sp.hstack([sp.csr_matrix(base.stats), sp.csr_matrix(cand.stats)]).tocsr()

    def finish(self, sums: np.ndarray) -> np.ndarray:
        b = self.base.finish(sums[:, : self.wb])
        c = self.cand.finish(sums[:, self.wb :])
        return c / b - 1.0 if self.relative else c - b


def _by_user(ms: Any, groups: np.ndarray, n_groups: int) -> Any:
    """Per-user statistics: per-request means averaged per user; sums pooled per user."""
    import scipy.sparse as sp

    from receval.metrics.base import MetricStats, mean_stats

    if ms.per_unit is not None:
        totals = np.bincount(groups, weights=ms.per_unit, minlength=n_groups)
        counts = np.bincount(groups, minlength=n_groups)
        return mean_stats(totals / counts)
    g = sp.csr_matrix((np.ones(len(groups)), (groups, np.arange(len(groups)))), shape=(n_groups, len(groups)))
    stats = g @ ms.stats
    if isinstance(ms.stats, np.ndarray):
        stats = np.asarray(stats)
    return MetricStats(stats, ms.finish, per_unit=None, scope=ms.scope, recentre=ms.recentre)


def _margin_for(margin: float | Mapping[str, float] | None, metric: Metric) -> float | None:
    if margin is None:
        return None
    if isinstance(margin, Mapping):
        from receval.metrics.registry import parse_metric

        for key, value in margin.items():
            if parse_metric(key) == metric:
                return float(value)
        return None
    return float(margin)


def compare(
    runs: Mapping[str, Any],
    labels: Any = None,
    metrics: Iterable[str | Metric] | str = ("ndcg@10",),
    *,
    baseline: str | None = None,
    test: Literal["paired_t", "wilcoxon", "randomization"] = "paired_t",
    correction: Literal["holm", "bonferroni", "bh", "none"] = "holm",
    alpha: float = 0.05,
    margin: float | Mapping[str, float] | None = None,
    margin_type: Literal["absolute", "relative"] = "absolute",
    unit: Literal["request", "user"] = "request",
    on_mismatch: Literal["error", "intersect"] = "error",
    power: float = 0.8,
    columns: Mapping[str, str] | ColumnMapping | None = None,
    label_columns: Mapping[str, str] | ColumnMapping | None = None,
    catalog: Any = None,
    catalog_columns: Mapping[str, str] | None = None,
    format: FileFormat = "auto",
    missing_in_run: Literal["zero", "ignore"] = "zero",
    missing_in_labels: Literal["zero", "ignore"] = "ignore",
    level: float = 0.95,
    n_boot: int = 1000,
    n_perm: int = 10_000,
    seed: int | None = 0,
    bootstrap: Literal["auto", "multinomial", "poisson", "poisson-fused"] = "auto",
    engine: Literal["auto", "polars", "streaming", "spark"] = "auto",
) -> ComparisonResult:
    """Compare candidate runs with a baseline run on the same requests.

    Parameters
    ----------
    runs : name -> run (frame or path), at least two.
    labels : relevance labels shared by all runs (see :func:`receval.evaluate`).
    metrics : metric names.
    baseline : name of the baseline run (default: the first).
    test : paired test for per-request metrics: ``paired_t`` (default),
        ``wilcoxon`` or ``randomization`` (sign flips, ``n_perm`` permutations,
        p = (b+1)/(m+1)). Population-level metrics (coverage, gini, ECE, ...)
        get intervals but no p-value.
    correction : across all (candidate, metric) p-values: ``holm`` (default),
        ``bonferroni``, ``bh`` or ``none``.
    alpha : significance level of tests and of the non-inferiority decision.
    margin : non-inferiority margin (a number, or metric name -> number).
        Absolute in metric units, or a share of the baseline mean with
        ``margin_type="relative"``. The candidate is non-inferior when the
        one-sided (1 - alpha) bootstrap bound of the difference lies beyond
        -margin (for metrics where higher is better; +margin otherwise).
    unit : ``"request"`` (default) or ``"user"``: per-user means, resampled by
        user (needs ``user_id`` in the runs); use it when the online test
        randomises users.
    on_mismatch : runs that do not cover the same evaluated requests raise an
        error (default) or are compared on the common requests
        (``"intersect"``, counted in ``counts``).
    power : power of the A/B sample-size estimate (``ab_units_per_arm`` is the
        number of units per arm needed to detect the observed difference at
        ``alpha``).
    level, n_boot, seed, bootstrap : the two-sided percentile bootstrap interval.
    engine : where each run is scored (see :func:`receval.evaluate`); with
        ``"auto"`` a run given as a PySpark DataFrame is scored on Spark. Only
        the per-request vectors reach the paired statistics, so they are the
        same code on every engine.

    Returns
    -------
    ComparisonResult
    """
    from receval.evaluation import _check_options, score
    from receval.stats.bootstrap import bootstrap_replicates
    from receval.stats.corrections import CORRECTIONS, adjust_pvalues
    from receval.stats.power import sample_size
    from receval.stats.significance import TESTS, paired_test, randomization_many

    if not isinstance(runs, Mapping) or len(runs) < 2:
        raise UsageError("runs must map at least two names to runs, e.g. {'prod': prod_df, 'cand': cand_df}")
    names = [str(k) for k in runs]
    if len(set(names)) != len(names):
        raise UsageError("run names must be unique")
    baseline = names[0] if baseline is None else baseline
    if baseline not in runs:
        raise UsageError(f"baseline {baseline!r} is not one of the runs {names}")
    if test not in TESTS:
        raise UsageError(f"test must be one of {', '.join(TESTS)}; got {test!r}")
    if correction not in CORRECTIONS:
        raise UsageError(f"correction must be one of {', '.join(CORRECTIONS)}; got {correction!r}")
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must lie in (0, 1), got {alpha!r}")
    if margin_type not in ("absolute", "relative"):
        raise UsageError(f"margin_type must be 'absolute' or 'relative', got {margin_type!r}")
    if unit not in ("request", "user"):
        raise UsageError(f"unit must be 'request' or 'user', got {unit!r}")
    if on_mismatch not in ("error", "intersect"):
        raise UsageError(f"on_mismatch must be 'error' or 'intersect', got {on_mismatch!r}")
    if not (isinstance(n_perm, int) and n_perm >= 1):
        raise UsageError(f"n_perm must be a positive integer, got {n_perm!r}")
    _check_options(level, n_boot, missing_in_run, missing_in_labels)
    parsed = parse_metrics(metrics)
    if margin is not None:
        values = margin.values() if isinstance(margin, Mapping) else [margin]
        if any(not isinstance(v, int | float) or v < 0 or not math.isfinite(v) for v in values):
            raise UsageError(f"non-inferiority margins must be finite numbers >= 0, got {margin!r}")

    import polars as pl

    scored = {
        name: score(
            run, labels, parsed, columns=columns, label_columns=label_columns, catalog=catalog,
            catalog_columns=catalog_columns, format=format, missing_in_run=missing_in_run,
            missing_in_labels=missing_in_labels, name=name, engine=engine,
        )
        for name, run in runs.items()
    }
    from receval.evaluation import _warn_missing_in_run

    for name, sc in scored.items():
        _warn_missing_in_run(sc.counts, name)
    base = scored[baseline]
    rows: list[ComparisonRow] = []
    counts: dict[str, dict[str, int]] = {}
    for cand_name in names:
        if cand_name == baseline:
            continue
        cand = scored[cand_name]
        left = pl.DataFrame({"request_id": base.request_ids, "__b": np.arange(len(base.request_ids))})
        right = pl.DataFrame({"request_id": cand.request_ids, "__c": np.arange(len(cand.request_ids))})
        if left.schema["request_id"] != right.schema["request_id"]:
            left = left.with_columns(pl.col("request_id").cast(pl.String))
            right = right.with_columns(pl.col("request_id").cast(pl.String))
        joined = left.join(right, on="request_id", how="inner", maintain_order="left")
        only_b = len(left) - joined.height
        only_c = len(right) - joined.height
        counts[cand_name] = {"paired_requests": joined.height, "only_in_baseline": only_b, "only_in_candidate": only_c}
        if (only_b or only_c) and on_mismatch == "error":
            ex_b = left.join(right, on="request_id", how="anti")["request_id"].head(3).to_list()
            ex_c = right.join(left, on="request_id", how="anti")["request_id"].head(3).to_list()
            raise InputError(
                f"{baseline} vs {cand_name}",
                [Violation("request_id", "both runs must be evaluated on the same requests",
                           only_b + only_c,
                           (f"{only_b} only in {baseline} (e.g. {ex_b})", f"{only_c} only in {cand_name} (e.g. {ex_c})"),
                           "pass on_mismatch='intersect' to compare on the common requests (counted in the result)")],
            )
        if joined.height == 0:
            raise InputError(f"{baseline} vs {cand_name}", [Violation("request_id", "the runs share no evaluated request", 0)])
        ib, ic = joined["__b"].to_numpy(), joined["__c"].to_numpy()
        # a judged request listed by one run but absent from the other is scored 0 there
        # (missing_in_run="zero"): that is a coverage difference, not a ranking one
        in_b, in_c = base.unit_in_run[ib], cand.unit_in_run[ic]
        lost_c, lost_b = int((in_b & ~in_c).sum()), int((in_c & ~in_b).sum())
        counts[cand_name]["missing_from_candidate_run"] = lost_c
        counts[cand_name]["missing_from_baseline_run"] = lost_b
        if lost_c or lost_b:
            if on_mismatch == "error":
                ids = joined["request_id"]
                ex_c = ids.filter(pl.Series(in_b & ~in_c)).head(3).to_list()
                ex_b = ids.filter(pl.Series(in_c & ~in_b)).head(3).to_list()
                raise InputError(
                    f"{baseline} vs {cand_name}",
                    [Violation("request_id", "both runs must list the same judged requests", lost_c + lost_b,
                               (f"{lost_c} in {baseline} but missing from {cand_name} (e.g. {ex_c})",
                                f"{lost_b} in {cand_name} but missing from {baseline} (e.g. {ex_b})"),
                               f"they would be scored 0 under missing_in_run={missing_in_run!r}; pass "
                               "on_mismatch='intersect' to compare on the requests both runs list (counted)")],
                )
            both = (in_b == in_c)
            ib, ic = ib[both], ic[both]
            counts[cand_name]["paired_requests"] = len(ib)
            if len(ib) == 0:  # nothing left to pair: no number (not even a p-value of 1) describes the runs
                raise InputError(
                    f"{baseline} vs {cand_name}",
                    [Violation("request_id", "the runs share no judged request that both list (on_mismatch='intersect')",
                               lost_c + lost_b,
                               (f"{lost_c} listed only by {baseline}", f"{lost_b} listed only by {cand_name}"),
                               "check that both runs use the same request ids (and column mapping)")],
                )

        pairs_b = {m: base.stats[m].take(ib) for m in parsed}
        pairs_c = {m: cand.stats[m].take(ic) for m in parsed}
        n_units = len(ib)
        if unit == "user":
            if base.unit_user is None or cand.unit_user is None:
                raise UsageError("unit='user' needs a user_id column in every run")
            users = base.unit_user.gather(ib)
            if users.null_count():
                raise InputError(
                    baseline, [Violation("user_id", "every compared request needs a user (judged requests missing from the run have none)",
                                         users.null_count(), (), "use unit='request' or missing_in_run='ignore'")],
                )
            # the user of a request is a fact about the request: runs that disagree cannot both be right, and
            # resampling by the baseline's users alone would hide it (ids compared as text, like request ids)
            cand_users = cand.unit_user.gather(ic)
            listed = base.unit_in_run[ib] & cand.unit_in_run[ic]
            differ = listed & (users.cast(pl.String) != cand_users.cast(pl.String)).fill_null(True).to_numpy()
            if differ.any():
                where = np.flatnonzero(differ)[:3]
                req = base.request_ids.gather(ib[where]).to_list()
                raise InputError(
                    f"{baseline} vs {cand_name}",
                    [Violation("user_id", "both runs must give each request the same user", int(differ.sum()),
                               tuple(f"request {r!r}: {users[int(i)]!r} in {baseline}, {cand_users[int(i)]!r} in "
                                     f"{cand_name}" for r, i in zip(req, where, strict=True)),
                               "take user_id from one source (e.g. the request log) for every run")],
                )
            codes = users.cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()
            _, groups = np.unique(codes, return_inverse=True)
            n_units = int(groups.max()) + 1
            pairs_b = {m: _by_user(v, groups, n_units) for m, v in pairs_b.items()}
            pairs_c = {m: _by_user(v, groups, n_units) for m, v in pairs_c.items()}
            counts[cand_name]["paired_users"] = n_units

        stats_list = []
        for m in parsed:
            diff_stats = _Pair(pairs_b[m], pairs_c[m], relative=False)
            stats_list.append(diff_stats)
            stats_list.append(_Pair(pairs_b[m], pairs_c[m], relative=True, stats=diff_stats.stats))
        reps, method = bootstrap_replicates(stats_list, n_units, n_boot=n_boot, seed=seed, method=bootstrap)  # type: ignore[arg-type]

        per_request = [m for m in parsed if pairs_b[m].per_unit is not None]
        diffs = {m: pairs_c[m].per_unit - pairs_b[m].per_unit for m in per_request}
        if test == "randomization" and per_request:
            p_rand = randomization_many(np.column_stack([diffs[m] for m in per_request]), n_perm=n_perm, seed=seed)
            p_of = dict(zip(per_request, p_rand, strict=True))
        for j, m in enumerate(parsed):
            b_ms, c_ms = pairs_b[m], pairs_c[m]
            mean_b, mean_c = b_ms.value(), c_ms.value()
            diff = mean_c - mean_b
            rel = diff / mean_b if mean_b != 0 else math.nan
            d_reps = reps[:, 2 * j]
            r_reps = reps[:, 2 * j + 1]
            # undefined replicates (a Poisson replicate with no weight; a relative
            # difference over a zero baseline) are left out
            d_reps, r_reps = d_reps[np.isfinite(d_reps)], r_reps[np.isfinite(r_reps)]
            if not math.isfinite(rel):
                r_reps = r_reps[:0]
            a2 = (1 - level) / 2
            lo, hi = (np.quantile(d_reps, [a2, 1 - a2]) if len(d_reps) else (math.nan, math.nan))
            rlo, rhi = (np.quantile(r_reps, [a2, 1 - a2]) if len(r_reps) else (math.nan, math.nan))
            note = ""
            if m in diffs:
                d = diffs[m]
                if test == "randomization":
                    res = paired_test(d, "paired_t")  # for the effect size and degenerate notes
                    p = float(p_of[m]) if not np.all(d == 0) else 1.0
                    eff = res.effect_size
                    note = f"{n_perm} sign-flip permutations"
                else:
                    res = paired_test(d, test)
                    p, eff, note = res.p_value, res.effect_size, res.note
                sd_b, sd_c = float(b_ms.per_unit.std(ddof=1)) if n_units > 1 else math.nan, float(c_ms.per_unit.std(ddof=1)) if n_units > 1 else math.nan
                n_ab = sample_size(sd_b, sd_c, abs(diff), alpha=alpha, power=power) if n_units > 1 else math.nan
            else:
                p, eff, n_ab = math.nan, math.nan, None
                sd_b = sd_c = None
                note = "population-level metric: interval only, no test"
            mg = _margin_for(margin, m)
            ni = bound = None
            if mg is not None:
                # one-sided (1 - alpha) bound in the direction that would show harm
                use = r_reps if margin_type == "relative" else d_reps
                if len(use) == 0:
                    ni, bound = False, math.nan
                elif m.greater_is_better:
                    bound = float(np.quantile(use, alpha))
                    ni = bound > -mg
                else:
                    bound = float(np.quantile(use, 1 - alpha))
                    ni = bound < mg
            rows.append(
                ComparisonRow(
                    candidate=cand_name, baseline=baseline, metric=str(m), greater_is_better=m.greater_is_better,
                    scope=b_ms.scope, n=n_units, baseline_mean=mean_b, candidate_mean=mean_c, diff=diff,
                    ci_low=float(lo), ci_high=float(hi), rel_diff=rel, rel_ci_low=float(rlo), rel_ci_high=float(rhi),
                    test=test if m in diffs else "none", p_value=float(p), p_adjusted=math.nan, significant=None,
                    effect_size=float(eff), margin=mg, margin_type=margin_type if mg is not None else None,
                    ni_bound=bound, non_inferior=ni, ab_units_per_arm=n_ab, sd_baseline=sd_b, sd_candidate=sd_c,
                    note=note,
                )
            )
    adjusted = adjust_pvalues([r.p_value for r in rows], correction)
    rows = [
        ComparisonRow(**{**asdict(r), "p_adjusted": float(a), "significant": None if math.isnan(a) else bool(a < alpha)})
        for r, a in zip(rows, adjusted, strict=True)
    ]
    settings = {
        "baseline": baseline, "test": test, "correction": correction, "alpha": alpha, "level": level,
        "n_boot": n_boot, "n_perm": n_perm if test == "randomization" else None, "seed": seed,
        "bootstrap": method if rows else bootstrap, "interval": "paired percentile bootstrap over " + unit + "s",
        "unit": unit, "margin_type": margin_type, "power": power, "on_mismatch": on_mismatch,
        "missing_in_run": missing_in_run, "missing_in_labels": missing_in_labels,
    }
    return ComparisonResult(rows, settings, counts)
