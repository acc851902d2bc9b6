"""Hypothesis strategies of hostile inputs for receval (and for code built on it).

Every strategy draws a :class:`Hostile` case: the input itself (``value``),
and ``broken`` — ``None`` when the input is legal (however nasty), else the
name of the one data-contract rule it breaks, with the ``column`` and a
``fragment`` of the message the resulting :class:`receval.errors.ReceValError`
must contain. A test can therefore assert the right outcome both ways::

    from hypothesis import given
    from receval.testing import run_and_labels, check_outcome
    import receval

    @given(run_and_labels())
    def test_evaluate(case):
        check_outcome(case, lambda: receval.evaluate(*case.value, ["ndcg@10"], n_boot=10))

The nasty-but-legal cases drawn include NaN-free ties everywhere, ``±inf`` and
``-0.0`` scores, empty frames, single-row requests, requests with no relevant
item, all-negative labels, huge (int64 extremes) and unicode ids, ids that
look like numbers (``"007"``), categorical columns, extra columns, pandas /
polars / pyarrow frames, propensities of ``1e-300``, timestamps out of order
and attribute tables with nulls. The broken cases: missing columns, null ids,
NaN scores and labels, infinite labels, float ids, ids mixing numbers and text,
text scores, duplicate (request, item) rows, propensities of 0, > 1 or NaN,
target distributions that do not sum to 1, and gate configs with typos, wrong
types, unknown gate types and unknown input names. :func:`compare_inputs` draws
several runs (identical, re-scored, over disjoint request sets, one of them
broken, or a single run); :func:`section_gate_configs` draws gate configs with
``[audits.*]`` and ``[counterfactual]`` sections whose keys, values, inputs or
gates are broken.

This module imports hypothesis (a test dependency) at import time;
``import receval`` never imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st

__all__ = [
    "Hostile",
    "HOSTILE_STRINGS",
    "ids",
    "scores",
    "runs",
    "labels",
    "run_and_labels",
    "compare_inputs",
    "logged_feedback_frames",
    "slate_frames",
    "catalogs",
    "attribute_tables",
    "drift_frames",
    "toml_string",
    "gate_configs",
    "section_gate_configs",
    "SECTION_INPUTS",
    "SECTION_RULES",
    "frame_backend",
    "check_outcome",
    "assert_published_numbers_explained",
    "RUN_RULES",
    "LABEL_RULES",
    "LOG_RULES",
    "SLATE_RULES",
    "CONFIG_RULES",
    "COMPARE_RULES",
]


@dataclass(frozen=True)
class Hostile:
    """One drawn input: legal when ``broken`` is None, else breaking the rule ``broken``.

    Attributes
    ----------
    value : the input (a frame, a tuple of frames, a TOML text, ...)
    broken : None for a legal input, else the rule broken (a key of the ``*_RULES`` tables)
    column : the column (or config key) the error must name
    fragment : text the error message must contain
    """

    value: Any
    broken: str | None = None
    column: str | None = None
    fragment: str | None = None

    @property
    def valid(self) -> bool:
        return self.broken is None

    def __repr__(self) -> str:  # hypothesis prints this for a falsifying example
        return f"Hostile(broken={self.broken!r}, column={self.column!r}, value={self.value!r})"


#: strings that break HTML, Markdown, XML, terminals or naive CSV/TOML quoting
HOSTILE_STRINGS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)",
    "[x](javascript:alert(1))",
    "| a | b |",
    "# heading *em* _u_ `code`",
    "&amp; &lt;",
    "]]> <!-- -->",
    "\x1b[31mred\x1b[0m",
    "\x00nul\x07bell\x08",
    "line\nbreak\r\n",
    "\u202eevil\u202c",
    "$x^{2}$",
    "{{7*7}} ${7*7}",
    "",
    " ",
    "é",
    "😀",
    "007",
    "7",
)

# --------------------------------------------------------------------------- ids and scores

_INT_IDS = st.one_of(
    st.integers(0, 6),
    st.sampled_from([2**63 - 1, -(2**63), -1, 7, 10**18]),
)
_TEXT_IDS = st.one_of(
    st.sampled_from(["007", "7", "a", "b", "é", "e\u0301", "<script>", "😀", "", " ", "x" * 300, "NaN", "null",
                     "None", "1e3", "-0", "\t"]),
    st.text(max_size=4),
)


def ids(kind: str | None = None) -> st.SearchStrategy[Any]:
    """Id values of one kind: ``"int"`` (incl. int64 extremes), ``"str"`` (unicode, numeric-looking, empty,
    huge), or either (``None``)."""
    if kind == "int":
        return _INT_IDS
    if kind == "str":
        return _TEXT_IDS
    return _INT_IDS | _TEXT_IDS


def scores(*, ties: bool | None = None, infinite: bool = True) -> st.SearchStrategy[float]:
    """Legal scores: ties from a small pool, ``-0.0``, ``±inf`` (when ``infinite``), extremes, subnormals."""
    pool = [0.0, -0.0, 1.0, 0.5, -1.0, 1e308, -1e308, 5e-324]
    if infinite:
        pool += [math.inf, -math.inf]
    tied = st.sampled_from(pool)
    if ties:
        return tied
    return tied | st.floats(allow_nan=False, allow_infinity=infinite)


def frame_backend(df: pd.DataFrame, backend: str) -> Any:
    """``df`` as ``"pandas"``, ``"polars"``, ``"lazy"`` (polars LazyFrame) or ``"arrow"`` (pyarrow Table)."""
    if backend == "pandas":
        return df
    import polars as pl

    if backend in ("polars", "lazy"):
        f = pl.from_pandas(df)
        return f.lazy() if backend == "lazy" else f
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def _id_column(values: list[Any], kind: str, categorical: bool) -> pd.Series:
    if kind == "int":
        s = pd.Series(values, dtype="int64")
    else:
        s = pd.Series(values, dtype=object)
    return s.astype("category") if categorical and kind == "str" else s


@st.composite
def _pool(draw, kind: str | None = None) -> tuple[str, list[Any], list[Any]]:
    """An id kind and pools of distinct request ids and item ids."""
    kind = kind or draw(st.sampled_from(["int", "str"]))
    reqs = draw(st.lists(ids(kind), min_size=1, max_size=5, unique=True))
    items = draw(st.lists(ids(kind), min_size=1, max_size=6, unique=True))
    return kind, reqs, items


# --------------------------------------------------------------------------- runs and labels

#: rule -> (column, message fragment)
RUN_RULES: dict[str, tuple[str, str]] = {
    "missing_column": ("score", "required column is missing"),
    "null_id": ("request_id", "must not be null"),
    "nan_score": ("score", "must not be null or NaN"),
    "float_id": ("item_id", "must hold integers or text"),
    "mixed_id": ("item_id", "must hold one type"),
    "text_score": ("score", "must be numeric"),
    "duplicate_pair": ("request_id, item_id", "each item may appear once per request"),
}
LABEL_RULES: dict[str, tuple[str, str]] = {
    "missing_column": ("label", "required column is missing"),
    "null_id": ("item_id", "must not be null"),
    "nan_label": ("label", "must not be null or NaN"),
    "inf_label": ("label", "must be finite"),
    "float_id": ("request_id", "must hold integers or text"),
    "duplicate_pair": ("request_id, item_id", "must be judged once"),
}


def _break_run(df: pd.DataFrame, rule: str, rng: np.random.Generator) -> pd.DataFrame:
    df = df.copy()
    if df.empty:
        df = pd.DataFrame({"request_id": pd.Series([1], dtype="int64"), "item_id": pd.Series([1], dtype="int64"),
                           "score": [0.0]})
    i = int(rng.integers(len(df)))
    if rule == "missing_column":
        return df.drop(columns=["score"])
    if rule == "null_id":
        col = df["request_id"].astype(object)
        col.iloc[i] = None
        df["request_id"] = col
    elif rule == "nan_score":
        df.loc[df.index[i], "score"] = np.nan
    elif rule == "float_id":
        df["item_id"] = np.arange(len(df), dtype=np.float64) + 0.5
    elif rule == "mixed_id":
        df["item_id"] = [f"t{j}" if j % 2 else j for j in range(len(df))] if len(df) > 1 else ["t"]
        if len(df) == 1:
            df = pd.concat([df, df.assign(item_id=[5])], ignore_index=True)
            df["item_id"] = pd.Series(["t", 5], dtype=object)
    elif rule == "text_score":
        df["score"] = [f"s{j}" for j in range(len(df))]
    elif rule == "duplicate_pair":
        df = pd.concat([df, df.iloc[[i]]], ignore_index=True)
    return df


def _break_labels(df: pd.DataFrame, rule: str, rng: np.random.Generator) -> pd.DataFrame:
    df = df.copy()
    if df.empty:
        df = pd.DataFrame({"request_id": pd.Series([1], dtype="int64"), "item_id": pd.Series([1], dtype="int64"),
                           "label": [1.0]})
    i = int(rng.integers(len(df)))
    if rule == "missing_column":
        return df.drop(columns=["label"])
    if rule == "null_id":
        col = df["item_id"].astype(object)
        col.iloc[i] = None
        df["item_id"] = col
    elif rule == "nan_label":
        df["label"] = df["label"].astype(float)
        df.loc[df.index[i], "label"] = np.nan
    elif rule == "inf_label":
        df["label"] = df["label"].astype(float)
        df.loc[df.index[i], "label"] = np.inf
    elif rule == "float_id":
        df["request_id"] = np.arange(len(df), dtype=np.float64) + 0.25
    elif rule == "duplicate_pair":
        df = pd.concat([df, df.iloc[[i]]], ignore_index=True)
    return df


@st.composite
def _run_frame(draw, kind: str, reqs: list[Any], items: list[Any], *, empty_ok: bool = True,
               infinite: bool = True) -> pd.DataFrame:
    rows = []
    score = scores(ties=draw(st.booleans()), infinite=infinite)
    for r in reqs:
        shown = draw(st.lists(st.sampled_from(items), min_size=0 if empty_ok else 1, max_size=len(items), unique=True))
        rows += [(r, it, draw(score)) for it in shown]
    if not rows and not empty_ok:
        rows = [(reqs[0], items[0], 0.0)]
    categorical = draw(st.booleans())
    df = pd.DataFrame({
        "request_id": _id_column([r for r, _, _ in rows], kind, categorical),
        "item_id": _id_column([i for _, i, _ in rows], kind, categorical),
        "score": pd.Series([s for _, _, s in rows], dtype="float64"),
    })
    if draw(st.booleans()):  # extra columns are ignored
        df["extra <b>"] = [draw(st.sampled_from(HOSTILE_STRINGS)) for _ in range(len(df))]
    if draw(st.booleans()):
        df = df.sample(frac=1.0, random_state=draw(st.integers(0, 9))).reset_index(drop=True)
    return df


@st.composite
def _label_frame(draw, kind: str, reqs: list[Any], items: list[Any], *, empty_ok: bool = True) -> pd.DataFrame:
    grades = draw(st.sampled_from([
        st.integers(-2, 3).map(float),   # graded, with judged-not-relevant negatives
        st.sampled_from([-1.0, 0.0]),    # no relevant item anywhere
        st.just(-1.0),                   # all negative
        st.booleans().map(float),        # binary
    ]))
    rows = []
    for r in reqs:
        judged = draw(st.lists(st.sampled_from(items), min_size=0, max_size=len(items), unique=True))
        rows += [(r, it, draw(grades)) for it in judged]
    if not rows and not empty_ok:
        rows = [(reqs[0], items[0], 1.0)]
    df = pd.DataFrame({
        "request_id": _id_column([r for r, _, _ in rows], kind, False),
        "item_id": _id_column([i for _, i, _ in rows], kind, False),
        "label": pd.Series([g for _, _, g in rows], dtype="float64"),
    })
    if draw(st.booleans()) and len(df):
        df["label"] = df["label"].astype("int64")
    return df


def runs(*, broken: bool | None = None, backend: bool = True) -> st.SearchStrategy[Hostile]:
    """A run frame (request_id, item_id, score): legal (``broken=False``), breaking one of
    :data:`RUN_RULES` (``True``) or either (``None``)."""
    return run_and_labels(broken=broken, backend=backend, which="run").map(
        lambda c: Hostile(c.value[0], c.broken, c.column, c.fragment))


def labels(*, broken: bool | None = None, backend: bool = True) -> st.SearchStrategy[Hostile]:
    """A labels frame (request_id, item_id, label), legal or breaking one of :data:`LABEL_RULES`."""
    return run_and_labels(broken=broken, backend=backend, which="labels").map(
        lambda c: Hostile(c.value[1], c.broken, c.column, c.fragment))


@st.composite
def run_and_labels(draw, *, broken: bool | None = None, backend: bool = True, which: str | None = None,
                   nonempty: bool = False) -> Hostile:
    """A (run, labels) pair over shared id pools; at most one rule broken, in the run or the labels.

    ``broken.column`` names the column; ``fragment`` is in the error message; a broken run is
    reported before the labels (docs/data-contract.md).
    """
    kind, reqs, items = draw(_pool())
    run = draw(_run_frame(kind, reqs, items, empty_ok=not nonempty))
    lab = draw(_label_frame(kind, reqs, items, empty_ok=not nonempty))
    is_broken = draw(st.booleans()) if broken is None else broken
    rule = column = fragment = None
    if is_broken:
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        side = which or draw(st.sampled_from(["run", "labels"]))
        if side == "run":
            rule = draw(st.sampled_from(sorted(RUN_RULES)))
            run = _break_run(run, rule, rng)
            column, fragment = RUN_RULES[rule]
        else:
            rule = draw(st.sampled_from(sorted(LABEL_RULES)))
            lab = _break_labels(lab, rule, rng)
            column, fragment = LABEL_RULES[rule]
        rule = f"{side}:{rule}"
    if backend and not (rule and ("mixed_id" in rule)):  # mixed object columns exist in pandas only
        be = draw(st.sampled_from(["pandas", "polars", "lazy", "arrow"]))
        try:
            run, lab = frame_backend(run, be), frame_backend(lab, be)
        except Exception:  # noqa: BLE001 - a frame the backend cannot hold stays pandas
            pass
    return Hostile((run, lab), rule, column, fragment)


#: rules of :func:`compare_inputs` beyond a broken run (:data:`RUN_RULES`)
COMPARE_RULES: dict[str, tuple[str, str]] = {
    "single_run": ("runs", "at least two"),
}


@st.composite
def compare_inputs(draw, *, broken: bool | None = None, backend: bool = True) -> Hostile:
    """``(runs, labels)`` for :func:`receval.compare`: 2-4 runs (names from :data:`HOSTILE_STRINGS`) over
    shared id pools.

    Each run after the first is drawn fresh, copied (identical runs), re-scored (same rows, tied and
    ``±inf`` scores) or over request ids the labels do not know (disjoint request sets). Broken cases:
    one run (any, not only the first) breaks one of :data:`RUN_RULES` (``broken`` = ``"run:<rule>"``),
    or only one run is given (``"single_run"``). Whether the runs list the same judged requests is a
    property of the data, not a broken rule: a test computes it (``on_mismatch="error"`` refuses it).
    """
    kind, reqs, items = draw(_pool())
    lab = draw(_label_frame(kind, reqs, items))
    first = draw(_run_frame(kind, reqs, items))
    frames = [first]
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["fresh", "identical", "rescored", "disjoint"]))
        if how == "identical":
            frames.append(first.copy())
        elif how == "rescored":
            other = first[["request_id", "item_id"]].copy()
            other["score"] = pd.Series(draw(st.lists(scores(ties=True), min_size=len(other), max_size=len(other))),
                                       dtype="float64")
            frames.append(other)
        elif how == "disjoint":
            unknown = [10_000 + i for i in range(len(reqs))] if kind == "int" else [f"zz{i}" for i in range(len(reqs))]
            frames.append(draw(_run_frame(kind, unknown, items)))
        else:
            frames.append(draw(_run_frame(kind, reqs, items)))
    names = draw(st.lists(st.sampled_from([h for h in HOSTILE_STRINGS if h.strip()]) | st.sampled_from(
        ["prod", "cand", "b"]), min_size=len(frames), max_size=len(frames), unique=True))
    is_broken = draw(st.booleans()) if broken is None else broken
    rule = column = fragment = None
    if is_broken:
        rule = draw(st.sampled_from(sorted(RUN_RULES) + ["single_run"]))
        if rule == "single_run":
            frames, names = frames[:1], names[:1]
            column, fragment = COMPARE_RULES[rule]
        else:
            j = draw(st.integers(0, len(frames) - 1))
            frames[j] = _break_run(frames[j], rule, np.random.default_rng(draw(st.integers(0, 2**16))))
            column, fragment = RUN_RULES[rule]
            rule = f"run:{rule}"
    if backend and not (rule and "mixed_id" in rule):
        be = draw(st.sampled_from(["pandas", "polars", "arrow"]))
        try:
            frames, lab = [frame_backend(f, be) for f in frames], frame_backend(lab, be)
        except Exception:  # noqa: BLE001 - a frame the backend cannot hold stays pandas
            pass
    return Hostile((dict(zip(names, frames, strict=True)), lab), rule, column, fragment)


# --------------------------------------------------------------------------- logged feedback, target policies

LOG_RULES: dict[str, tuple[str, str]] = {
    "propensity_zero": ("propensity", "propensity"),
    "propensity_above_one": ("propensity", "propensity"),
    "propensity_nan": ("propensity", "propensity"),
    "reward_nan": ("reward", "reward"),
    "reward_out_of_range": ("reward", "reward"),
    "position_zero": ("position", "must be >= 1"),
    "target_not_normalised": ("target probability", "must sum to 1"),
    "target_negative": ("target probability", "must lie in [0, 1]"),
    "target_missing_context": ("target", "must give a distribution for every logged"),
    "missing_column": ("propensity", "propensity"),
    "text_reward": ("reward", "reward"),
    "null_request": ("request_id", "request_id"),
}


@st.composite
def logged_feedback_frames(draw, *, broken: bool | None = None) -> Hostile:
    """``(log, target)`` for :func:`receval.counterfactual.logged_feedback` with ``reward_range=(0, 1)``.

    The log has request_id, item_id, position, reward, propensity, a context column ``x`` and ``q_hat``
    (precomputed reward estimates, also on every target row). Legal nasty cases: propensities of 1 and
    1e-300, rewards all 0 or all 1, target mass on never-logged items, one request, ties of ids.
    """
    kind, reqs, items = draw(_pool())
    n_pos = draw(st.integers(1, 2))
    prop = st.sampled_from([1.0, 0.5, 1e-300, 1e-3, 0.999999]) | st.floats(1e-6, 1.0)
    reward = draw(st.sampled_from([st.just(0.0), st.just(1.0), st.sampled_from([0.0, 1.0]), st.floats(0, 1)]))
    log_rows, tgt_rows = [], []
    for r in reqs:
        for pos in range(1, n_pos + 1):
            if draw(st.booleans()) or not log_rows:
                it = draw(st.sampled_from(items))
                log_rows.append((r, it, pos, draw(reward), draw(prop), draw(st.floats(-3, 3)), draw(st.floats(0, 1))))
            # target: a distribution over a subset of items
            support = draw(st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique=True))
            w = np.array([draw(st.sampled_from([0.0, 1.0, 2.0, 1e-9])) for _ in support])
            if w.sum() == 0:
                w[0] = 1.0
            w = w / w.sum()
            tgt_rows += [(r, it, pos, float(p), draw(st.floats(0, 1))) for it, p in zip(support, w, strict=True)]
    log = pd.DataFrame(log_rows, columns=["request_id", "item_id", "position", "reward", "propensity", "x", "q_hat"])
    tgt = pd.DataFrame(tgt_rows, columns=["request_id", "item_id", "position", "probability", "q_hat"])
    for df in (log, tgt):
        for c in ("request_id", "item_id"):
            df[c] = _id_column(list(df[c]), kind, False)
    is_broken = draw(st.booleans()) if broken is None else broken
    rule = column = fragment = None
    if is_broken:
        rule = draw(st.sampled_from(sorted(LOG_RULES)))
        column, fragment = LOG_RULES[rule]
        i = draw(st.integers(0, len(log) - 1))
        log, tgt = log.copy(), tgt.copy()
        if rule == "propensity_zero":
            log.loc[i, "propensity"] = 0.0
        elif rule == "propensity_above_one":
            log.loc[i, "propensity"] = 1.5
        elif rule == "propensity_nan":
            log.loc[i, "propensity"] = np.nan
        elif rule == "reward_nan":
            log.loc[i, "reward"] = np.nan
        elif rule == "reward_out_of_range":
            log.loc[i, "reward"] = 2.0
        elif rule == "position_zero":
            log.loc[i, "position"] = 0
        elif rule == "target_not_normalised":
            tgt.loc[draw(st.integers(0, len(tgt) - 1)), "probability"] += 0.5
        elif rule == "target_negative":
            tgt.loc[draw(st.integers(0, len(tgt) - 1)), "probability"] = -0.5
        elif rule == "target_missing_context":
            r0, p0 = log.loc[i, "request_id"], log.loc[i, "position"]
            tgt = tgt[~((tgt["request_id"] == r0) & (tgt["position"] == p0))].reset_index(drop=True)
        elif rule == "missing_column":
            log = log.drop(columns=["propensity"])
        elif rule == "text_reward":
            log["reward"] = log["reward"].map(lambda v: f"r{v}")
        elif rule == "null_request":
            col = log["request_id"].astype(object)
            col.iloc[i] = None
            log["request_id"] = col
    return Hostile((log, tgt), rule, column, fragment)


SLATE_RULES: dict[str, tuple[str, str]] = {
    "propensity_zero": ("propensity", "propensity"),
    "propensity_above_one": ("propensity", "propensity"),
    "reward_nan": ("reward", "reward"),
    "duplicate_position": ("slate_id, position", "slot"),
    "missing_column": ("reward", "reward"),
    "target_above_one": ("probability", "probab"),
    "weight_overflow": ("conditional propensity", "must be finite in float64"),
}


@st.composite
def slate_frames(draw, *, broken: bool | None = None) -> Hostile:
    """``(log, target)`` for :func:`receval.counterfactual.slate_feedback` (fixed slate length, rewards in [0, 1])."""
    kind, slates, items = draw(_pool())
    L = draw(st.integers(1, 3))
    prop = st.sampled_from([1.0, 0.5, 1e-300, 1e-3]) | st.floats(1e-6, 1.0)
    rows, trows = [], []
    for s in slates:
        for pos in range(1, L + 1):
            pc = draw(prop)
            rows.append((s, pos, draw(st.sampled_from(items)), draw(st.sampled_from([0.0, 1.0]) | st.floats(0, 1)),
                         draw(prop), pc))
            trows.append((s, pos, draw(st.floats(0, 1)), draw(st.floats(0, 1))))
    log = pd.DataFrame(rows, columns=["slate_id", "position", "item_id", "reward", "propensity",
                                      "propensity_conditional"])
    tgt = pd.DataFrame(trows, columns=["slate_id", "position", "probability", "conditional_probability"])
    for df in (log, tgt):
        df["slate_id"] = _id_column(list(df["slate_id"]), kind, False)
    log["item_id"] = _id_column(list(log["item_id"]), kind, False)
    is_broken = draw(st.booleans()) if broken is None else broken
    rule = column = fragment = None
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ratio = (tgt["conditional_probability"].to_numpy() / log["propensity_conditional"].to_numpy()).reshape(-1, L)
        overflow = not np.isfinite(np.cumprod(ratio, axis=1)).all()
    if overflow and not is_broken:  # legal rows, but a slate weight (a product over slots) overflows float64
        rule = "weight_overflow"
        column, fragment = SLATE_RULES[rule]
    elif is_broken:
        rule = draw(st.sampled_from(sorted(set(SLATE_RULES) - {"weight_overflow"})))
        column, fragment = SLATE_RULES[rule]
        i = draw(st.integers(0, len(log) - 1))
        log, tgt = log.copy(), tgt.copy()
        if rule == "propensity_zero":
            log.loc[i, "propensity"] = 0.0
        elif rule == "propensity_above_one":
            log.loc[i, "propensity"] = 2.0
        elif rule == "reward_nan":
            log.loc[i, "reward"] = np.nan
        elif rule == "duplicate_position":
            log = pd.concat([log, log.iloc[[i]]], ignore_index=True)
        elif rule == "missing_column":
            log = log.drop(columns=["reward"])
        elif rule == "target_above_one":
            tgt.loc[i, "probability"] = 1.5
    return Hostile((log, tgt), rule, column, fragment)


# --------------------------------------------------------------------------- catalogs and attribute tables


@st.composite
def catalogs(draw, items: list[Any], *, kind: str | None = None) -> pd.DataFrame:
    """An item table over ``items`` (each once): ``popularity`` (counts, ties, zeros), ``category`` and
    ``provider`` (text with hostile strings and nulls), ``flagged`` (bool). Legal for every audit."""
    n = len(items)
    pop = draw(st.lists(st.sampled_from([0, 1, 1, 5, 10**9]) | st.integers(0, 50), min_size=n, max_size=n))
    names = st.sampled_from(["A", "B", HOSTILE_STRINGS[0], "é", "7"])
    cat = draw(st.lists(names | st.none(), min_size=n, max_size=n))
    prov = draw(st.lists(names | st.none(), min_size=n, max_size=n))
    flagged = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    df = pd.DataFrame({
        "item_id": _id_column(list(items), kind or _kind_of(items), False),
        "popularity": pd.Series(pop, dtype="int64"),
        "category": pd.Series(cat, dtype=object),
        "provider": pd.Series(prov, dtype=object),
        "flagged": pd.Series(flagged, dtype=bool),
    })
    if draw(st.booleans()):
        df["provider"] = df["provider"].astype("category")
    return df


@st.composite
def attribute_tables(draw, units: list[Any], *, key: str = "user_id", kind: str | None = None,
                     min_rows: int = 0) -> pd.DataFrame:
    """One row per unit (``key``): ``gender`` (text with nulls and hostile names), ``age`` (categorical),
    ``country`` (unicode). Units may be missing from the table (left out at random)."""
    keep = draw(st.lists(st.sampled_from(units), min_size=min(min_rows, len(units)), max_size=len(units),
                         unique=True)) if units else []
    n = len(keep)
    gender = draw(st.lists(st.sampled_from(["f", "m", HOSTILE_STRINGS[0]]) | st.none(), min_size=n, max_size=n))
    age = draw(st.lists(st.sampled_from(["<25", "25-50", "50+"]), min_size=n, max_size=n))
    country = draw(st.lists(st.sampled_from(["DE", "FR", "日本", "", "<i>x</i>"]), min_size=n, max_size=n))
    return pd.DataFrame({
        key: _id_column(keep, kind or _kind_of(units), False),
        "gender": pd.Series(gender, dtype=object),
        "age": pd.Categorical(age),
        "country": pd.Series(country, dtype=object),
    })


def _kind_of(values: list[Any]) -> str:
    return "int" if values and all(isinstance(v, int | np.integer) for v in values) else "str"


@st.composite
def drift_frames(draw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two frames with a numeric ``score`` (ties, ±inf-free, maybe constant), a categorical ``country``
    with nulls, and an out-of-order ``timestamp``."""
    def frame(n: int) -> pd.DataFrame:
        base = draw(st.sampled_from([0.0, 1.0, 1e300]))
        vals = draw(st.lists(st.sampled_from([base, 0.5, -0.0]) | st.floats(-1e6, 1e6), min_size=n, max_size=n))
        ts = draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n))
        return pd.DataFrame({
            "score": pd.Series(vals, dtype="float64"),
            "country": pd.Series(draw(st.lists(st.sampled_from(["DE", "<b>", "é"]) | st.none(), min_size=n,
                                               max_size=n)), dtype=object),
            "timestamp": pd.to_datetime(pd.Series(ts, dtype="int64"), unit="ms"),
        })

    return frame(draw(st.integers(1, 30))), frame(draw(st.integers(1, 30)))


# --------------------------------------------------------------------------- gate configs

CONFIG_RULES: dict[str, tuple[str, str]] = {
    "typo_key": ("gates[0]", "did you mean"),
    "wrong_type": ("gates[0].threshold", "must be a number"),
    "unknown_gate_type": ("gates[0].type", "unsupported gate type"),
    "unknown_input": ("evaluation.candidate", "names no input"),
    "missing_metric": ("gates[0]", "needs the key 'metric'"),
    "bad_op": ("gates[0].op", "op"),
    "bad_level": ("settings.level", "level"),
    "duplicate_id": ("gates[1].id", "id"),
    "invalid_toml": ("TOML", "invalid TOML"),
    "typo_section": ("evaluaton", "did you mean 'evaluation'"),
}

def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (control characters and DEL escaped, other code points kept)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_GATE_METRICS = ["ndcg@10", "mrr", "recall@20", "precision@1", "map", "auc"]


@st.composite
def gate_configs(draw, inputs: Mapping[str, str], *, broken: bool | None = None,
                 model_names: st.SearchStrategy[str] | None = None) -> Hostile:
    """A ``receval gate`` TOML config over ``inputs`` = {"cand": path, "labels": path, optional "prod": path}.

    Legal configs draw metric, sample-size and (with ``prod``) change and non-inferiority gates with any
    threshold, bound and op, hostile model names and gate ids; broken ones break one of
    :data:`CONFIG_RULES` (the error names the key and the line).
    """
    name = draw(model_names if model_names is not None else st.sampled_from([h for h in HOSTILE_STRINGS if h]))
    lines = ["[model]", f"name = {toml_string(name)}", "", "[settings]",
             f"n_boot = {draw(st.sampled_from([1, 2, 20]))}",
             f"min_group_size = {draw(st.sampled_from([1, 20]))}", "", "[inputs]"]
    for k, v in inputs.items():
        lines.append(f"{k} = {toml_string(str(v))}")
    metrics = draw(st.lists(st.sampled_from(_GATE_METRICS), min_size=1, max_size=3, unique=True))
    lines += ["", "[evaluation]", 'candidate = "cand"', 'labels = "labels"', f"metrics = {json.dumps(metrics)}"]
    if "prod" in inputs:
        lines.append('baseline = "prod"')
    gates = []
    for j in range(draw(st.integers(1, 3))):
        gtype = draw(st.sampled_from(["metric", "sample_size"] + (["change", "non_inferiority"] if "prod" in inputs
                                                                  else [])))
        g = ["", "[[gates]]", f"id = {toml_string(draw(st.sampled_from(HOSTILE_STRINGS[:4])) + str(j))}",
             f'type = "{gtype}"']
        if gtype == "metric":
            g += [f'metric = "{draw(st.sampled_from(metrics))}"',
                  f"threshold = {draw(st.sampled_from([0.0, 0.3, 1.0, -1.0, 1e300]))}",
                  f'bound = "{draw(st.sampled_from(["value", "ci_low", "ci_high"]))}"',
                  f'op = "{draw(st.sampled_from([">=", "<=", ">", "<"]))}"']
        elif gtype == "sample_size":
            g += [f"min_n = {draw(st.integers(0, 5))}"]
        elif gtype == "change":
            g += [f'metric = "{draw(st.sampled_from(metrics))}"',
                  f"min_change = {draw(st.sampled_from([0.0, -1.0, 0.01]))}",
                  f"significant = {draw(st.sampled_from(['true', 'false']))}"]
        else:
            g += [f'metric = "{draw(st.sampled_from(metrics))}"', f"margin = {draw(st.sampled_from([0.0, 0.01, 1.0]))}"]
        gates.append(g)
    is_broken = draw(st.booleans()) if broken is None else broken
    rule = column = fragment = None
    if is_broken:
        rule = draw(st.sampled_from(sorted(CONFIG_RULES)))
        column, fragment = CONFIG_RULES[rule]
        g0 = gates[0]
        if rule == "typo_key":
            gates[0] = g0[:3] + ['type = "metric"', f'metric = "{metrics[0]}"', "threshhold = 0.3"]
        elif rule == "wrong_type":
            gates[0] = g0[:3] + ['type = "metric"', f'metric = "{metrics[0]}"', 'threshold = "high"']
        elif rule == "unknown_gate_type":
            gates[0] = g0[:3] + ['type = "latency<script>"']
        elif rule == "unknown_input":
            lines = [ln.replace('candidate = "cand"', 'candidate = "nope"') for ln in lines]
        elif rule == "missing_metric":
            gates[0] = g0[:3] + ['type = "metric"', "threshold = 0.5"]
        elif rule == "bad_op":
            gates[0] = g0[:3] + ['type = "metric"', f'metric = "{metrics[0]}"', "threshold = 0.5", 'op = "=>"']
        elif rule == "bad_level":
            lines.insert(lines.index("[settings]") + 1, "level = 1.5")
        elif rule == "duplicate_id":
            gates.append(["", "[[gates]]", g0[2], 'type = "sample_size"', "min_n = 1"])
            column = f"gates[{len(gates) - 1}].id"
        elif rule == "invalid_toml":
            lines.insert(0, "[model")
        elif rule == "typo_section":
            lines += ["", "[evaluaton]", "x = 1"]
    text = "\n".join(lines + [ln for g in gates for ln in g]) + "\n"
    return Hostile(text, rule, column, fragment)


# --------------------------------------------------------------------------- gate configs with audit and counterfactual sections

#: inputs :func:`section_gate_configs` expects (name -> what the file holds)
SECTION_INPUTS: dict[str, str] = {
    "cand": "run: request_id, item_id, score, user_id, prediction",
    "prod": "run, same columns",
    "labels": "request_id, item_id, label",
    "users": "user_id, country, age_band",
    "catalog": "item_id, provider, popularity, flagged, category",
    "history": "user_id, item_id",
    "logs": "request_id, item_id, position, reward (0/1), propensity, user_feature_0",
    "target": "request_id, item_id, position, probability",
    "cand_nan": "cand with a NaN score",
    "catalog_bad": "catalog with a null flag and a negative popularity",
    "logs_bad": "logs with a propensity of 0",
}

#: rule -> (key or column the error must name, message fragment); ``*`` is filled in per drawn case
SECTION_RULES: dict[str, tuple[str, str]] = {
    "audit_typo_key": ("audits.*", "did you mean"),
    "unknown_audit": ("audits.fairnes", "unknown key"),
    "audit_unknown_input": ("audits.*", "names no input"),
    "audit_missing_required": ("audits.*", "missing required key"),
    "audit_bad_k": ("audits.*.k", "positive integer"),
    "audit_wrong_type": ("audits.*", "*"),
    "audit_bad_value": ("audits.*", "*"),
    "audit_missing_column": ("nope_col", "nope_col"),
    "audit_broken_input": ("*", "*"),
    "cf_unknown_estimator": ("counterfactual.estimators", "unknown estimator"),
    "cf_bad_reward_range": ("counterfactual.reward_range", "low < high"),
    "cf_target_and_policy_log": ("counterfactual", "exactly one of"),
    "cf_unknown_input": ("counterfactual.logs", "names no input"),
    "cf_wrong_type": ("counterfactual.clip", "must be a number"),
    "cf_broken_logs": ("propensity", "propensity"),
    "cf_reward_out_of_range": ("reward", "reward"),
    "gate_without_section": ("*", "*"),
    "gate_unknown_group": ("nope_group", "nope_group"),
    "gate_unknown_quantity": ("nope_q", "nope_q"),
}

# per audit: (key, wrongly typed value), (key, value of the right type the audit refuses)
_WRONG_TYPE = {
    "exposure": [("group_column", 5), ("browsing", 7), ("patience", "high")],
    "popularity": [("tail_quantile", "high"), ("exclude_history", "no"), ("popularity", 3)],
    "miscalibration": [("alpha", "x"), ("position_weight", 3), ("category", ["category"])],
    "safety": [("flag_column", ["flagged"]), ("negative_label", "neg")],
    "drift": [("bins", "ten"), ("columns", 5), ("bins", 2.5)],
    "disparity": [("sensitive", 3), ("tolerance", "wide"), ("intersections", "yes"), ("unit", 5), ("metrics", 7)],
    "data_quality": [("inputs", 5), ("kinds", "run")],
}
_BAD_VALUE = {
    "exposure": [("browsing", "nope"), ("patience", 5.0), ("target", "nope")],
    "popularity": [("tail_quantile", 2.0)],
    "miscalibration": [("alpha", -1.0), ("position_weight", "nope")],
    "safety": [("negative_label", float("nan"))],
    "drift": [("bins", 0), ("bins", -3)],
    "disparity": [("unit", "nope"), ("missing", "nope"), ("tolerance", [1.5, 0.5]), ("metrics", ["nope@10"])],
    "data_quality": [("inputs", ["cand", "cand"])],
}
_MISSING_COLUMN = {"exposure": "group_column", "popularity": "popularity", "miscalibration": "category",
                   "safety": "flag_column", "drift": "columns", "disparity": "sensitive"}
_REQUIRED = {"exposure": ("run", "groups", "group_column"), "popularity": ("run", "catalog"),
             "safety": ("run", "flags"), "drift": ("baseline", "current", "columns"),
             "disparity": ("run", "attributes", "sensitive"), "data_quality": ("inputs",),
             "miscalibration": ("run", "history", "catalog")}
# an audit's gate (legal: decided, pass or fail); the input that breaks each audit (drift counts NaN as
# missing, legally: its broken input is one without the column)
_AUDIT_GATES = {
    "exposure": {"type": "exposure", "quantity": "share_ratio", "within": [0.0, 1e9]},
    "popularity": {"type": "popularity", "quantity": "arp", "op": ">=", "threshold": 0.0},
    "safety": {"type": "safety", "quantity": "slot_share", "op": "<=", "threshold": 1.0},
    "miscalibration": {"type": "miscalibration", "quantity": "miscalibration", "op": "<=", "threshold": 1e9},
    "drift": {"type": "drift", "column": "prediction", "max_psi": 1e9},
    "data_quality": {"type": "data_quality", "max_errors": 0},
    "disparity": {"type": "fairness", "metric": "ndcg@10", "attribute": "country", "ratio": [0.0, 1e9]},
}
_BROKEN_INPUT = {"exposure": ("run", "cand_nan", "score"), "popularity": ("catalog", "catalog_bad", "popularity"),
                 "safety": ("flags", "catalog_bad", "flagged"), "miscalibration": ("run", "cand_nan", "score"),
                 "drift": ("current", "logs", "prediction"), "disparity": ("run", "cand_nan", "score"),
                 "data_quality": ("inputs", "cand_nan", "score")}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_string(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _toml_table(header: str, table: Mapping[str, Any]) -> list[str]:
    return ["", header] + [f"{toml_string(k) if not k.replace('_', '').isalnum() else k} = {_toml_value(v)}"
                           for k, v in table.items()]


@st.composite
def section_gate_configs(draw, inputs: Mapping[str, str], *, broken: bool | None = None) -> Hostile:
    """A ``receval gate`` TOML config with ``[audits.*]`` and ``[counterfactual]`` sections and their gates.

    ``inputs``: every name of :data:`SECTION_INPUTS` -> path. Legal configs draw a subset of the seven audits
    (with optional keys such as ``k``, ``browsing``, user groups, histories), maybe a counterfactual
    section (target table, IPS-family and, with a reward model, DM/DR estimators) and a gate per section
    that can be decided. Broken ones break one of :data:`SECTION_RULES`: a config error (typo, wrong
    type, unknown input, missing key, bad k / estimator / reward range) or a run-time one (a value the
    audit refuses, a column that does not exist, a broken input file, a gate on a section that is not
    configured or a group that does not exist). ``column`` / ``fragment`` say what the error (a
    ConfigError, or the report's errors and gate messages) must contain.
    """
    audits: dict[str, dict[str, Any]] = {}
    chosen = draw(st.lists(st.sampled_from(sorted(_REQUIRED)), min_size=1, max_size=4, unique=True))
    ks = st.sampled_from([1, 3, 10])
    for name in chosen:
        if name == "exposure":
            a = {"run": "cand", "groups": "catalog", "group_column": "provider"}
            if draw(st.booleans()):
                a["k"] = draw(ks)
            if draw(st.booleans()):
                a["browsing"] = draw(st.sampled_from(["log", "rbp", "cascade"]))
        elif name == "popularity":
            a = {"run": "cand", "catalog": "catalog", "k": draw(ks)}
            if draw(st.booleans()):
                a.update(user_groups="users", group_column="country")
            if draw(st.booleans()):
                a["history"] = "history"
            if draw(st.booleans()):
                a["tail_quantile"] = draw(st.sampled_from([0.5, 0.8, 1.0]))
        elif name == "miscalibration":
            a = {"run": "cand", "history": "history", "catalog": "catalog", "category": "category", "k": draw(ks)}
            if draw(st.booleans()):
                a["position_weight"] = draw(st.sampled_from(["uniform", "log"]))
        elif name == "safety":
            a = {"run": "cand", "flags": "catalog", "flag_column": "flagged", "k": draw(ks)}
            if draw(st.booleans()):
                a.update(user_groups="users", group_column="age_band")
        elif name == "drift":
            a = {"baseline": "prod", "current": "cand",
                 "columns": draw(st.sampled_from([["prediction"], ["score", "prediction"]]))}
            if draw(st.booleans()):
                a["bins"] = draw(st.integers(1, 12))
        elif name == "disparity":
            a = {"run": "cand", "labels": "labels", "metrics": ["ndcg@10"], "attributes": "users",
                 "sensitive": draw(st.sampled_from([["country"], ["country", "age_band"]]))}
            if draw(st.booleans()):
                a["intersections"] = draw(st.booleans())
        else:
            a = {"inputs": draw(st.lists(st.sampled_from(["cand", "prod", "labels"]), min_size=1, max_size=3,
                                         unique=True))}
        audits[name] = a
    gates: list[dict[str, Any]] = [{"id": "floor", "type": "metric", "metric": "ndcg@10", "threshold": 0.0}]
    gates += [dict(_AUDIT_GATES[n], id=f"g-{n}") for n in chosen]
    cf = None
    if draw(st.booleans()):
        model = draw(st.sampled_from(["none", "logistic"]))
        ests = ["ips", "snips", "clipped_ips"] + (["dm", "dr", "sndr"] if model != "none" else [])
        cf = {"logs": "logs", "target": "target",
              "estimators": draw(st.lists(st.sampled_from(ests), min_size=1, max_size=3, unique=True)),
              "reward_range": [0, 1], "reward_model": model}
        if model != "none":
            cf["context_columns"] = ["user_feature_0"]
        gates.append({"id": "g-ope", "type": "ope", "estimator": cf["estimators"][0], "op": ">=", "threshold": -1.0})
        gates.append({"id": "g-ope-diag", "type": "ope_diagnostics", "estimator": cf["estimators"][0],
                      "min_ess_share": 0.0})

    is_broken = draw(st.booleans()) if broken is None else broken
    rule = column = fragment = None
    if is_broken:
        rules = [r for r in SECTION_RULES if not r.startswith("cf_") or cf is not None]
        rule = draw(st.sampled_from(rules))
        column, fragment = SECTION_RULES[rule]
        name = draw(st.sampled_from(chosen))
        a = audits[name]
        if rule == "audit_typo_key":
            key = draw(st.sampled_from([k for k in a if len(k) > 2]))
            a[key[:-1] + key[-1] * 2] = a.pop(key)
            column = f"audits.{name}"
        elif rule == "unknown_audit":
            audits["fairnes"] = {"run": "cand"}
        elif rule == "audit_unknown_input":
            key = draw(st.sampled_from([k for k in a if k in ("run", "groups", "catalog", "flags", "labels",
                                                                 "user_groups", "baseline", "current",
                                                                 "attributes", "history")] or ["run"]))
            a[key] = "nope"
            column = f"audits.{name}.{key}"
        elif rule == "audit_missing_required":
            key = draw(st.sampled_from(_REQUIRED[name]))
            del a[key]
            column = f"audits.{name}"
        elif rule == "audit_bad_k":
            if name in ("drift", "data_quality", "disparity"):  # audits without k: break a safety audit's
                audits.setdefault("safety", {"run": "cand", "flags": "catalog", "flag_column": "flagged"})
                name, a = "safety", audits["safety"]
            a["k"] = draw(st.sampled_from([0, -1, "3", 2.5, True]))
            column = f"audits.{name}.k"
        elif rule in ("audit_wrong_type", "audit_bad_value"):
            key, value = draw(st.sampled_from((_WRONG_TYPE if rule == "audit_wrong_type" else _BAD_VALUE)[name]))
            a[key] = value
            column, fragment = f"audits.{name}", key
        elif rule == "audit_missing_column":
            if name == "data_quality":
                name = draw(st.sampled_from([n for n in chosen if n != "data_quality"] or ["drift"]))
                audits.setdefault("drift", {"baseline": "prod", "current": "cand", "columns": ["prediction"]})
                a = audits[name]
            key = _MISSING_COLUMN[name]
            a[key] = ["nope_col"] if key in ("columns", "sensitive") else "nope_col"
            if name == "drift":
                gates = [g for g in gates if g["type"] != "drift"]
        elif rule == "audit_broken_input":
            key, bad, column = _BROKEN_INPUT[name]
            a[key] = [bad] if key == "inputs" else bad
            fragment = column
        elif rule == "cf_unknown_estimator":
            cf["estimators"] = cf["estimators"] + ["ipss"]
        elif rule == "cf_bad_reward_range":
            cf["reward_range"] = draw(st.sampled_from([[1, 0], [0], [0, "1"], [0.5, 0.5]]))
        elif rule == "cf_target_and_policy_log":
            if draw(st.booleans()):
                cf["policy_log"] = "logs"
            else:
                del cf["target"]
        elif rule == "cf_unknown_input":
            cf["logs"] = "nope"
        elif rule == "cf_wrong_type":
            cf["clip"] = draw(st.sampled_from(["ten", [1], True]))
        elif rule == "cf_broken_logs":
            cf["logs"] = "logs_bad"
        elif rule == "cf_reward_out_of_range":
            cf["reward_range"] = [0, 0.5]
        elif rule == "gate_without_section":
            del audits[name]
            column = fragment = name
        elif rule == "gate_unknown_group":
            g = next(g for g in gates if g.get("id") == f"g-{name}")
            if g["type"] in ("exposure", "popularity", "safety", "miscalibration"):
                g["group"] = "nope_group"
            elif g["type"] == "drift":
                g["column"] = "nope_group"
            elif g["type"] == "fairness":
                g["attribute"] = "nope_group"
            else:
                g["input"] = "nope_group"
        elif rule == "gate_unknown_quantity":
            g = next(g for g in gates if g.get("id") == f"g-{name}")
            if g["type"] in ("exposure", "popularity", "safety", "miscalibration"):
                g["quantity"] = "nope_q"
            elif g["type"] == "drift":
                g["column"] = "nope_q"
            elif g["type"] == "fairness":
                g["metric"] = "nope_q@10"
            else:
                g["input"] = "nope_q"
        rule = f"{rule}:{name}"
    lines = ["[model]", f"name = {toml_string(draw(st.sampled_from(HOSTILE_STRINGS[:4])))}", "", "[settings]",
             f"n_boot = {draw(st.sampled_from([1, 5]))}", f"min_group_size = {draw(st.sampled_from([1, 2]))}"]
    lines += _toml_table("[inputs]", {k: str(v) for k, v in inputs.items()})
    lines += _toml_table("[evaluation]", {"candidate": "cand", "labels": "labels", "metrics": ["ndcg@10"]})
    if cf is not None:
        lines += _toml_table("[counterfactual]", cf)
    for n, a in audits.items():
        lines += _toml_table(f"[audits.{n}]", a)
    for g in gates:
        lines += _toml_table("[[gates]]", g)
    return Hostile("\n".join(lines) + "\n", rule, column, fragment)


# --------------------------------------------------------------------------- assertions


def check_outcome(case: Hostile, call: Callable[[], Any], *, strict_rule: bool | str = True,
                  allow: tuple[str, ...] = ()) -> Any:
    """Run ``call`` and check the outcome against ``case``.

    A legal case must return (the result is returned); a broken case must raise a
    :class:`receval.errors.ReceValError` — and, with ``strict_rule``, one whose message contains
    ``case.fragment`` (and ``case.column``). Any other exception propagates, so the test fails.
    With ``strict_rule="column"`` only the column must be named (for functions with their own
    wording). A legal case that raises ReceValError also fails, unless ``strict_rule`` is False (then a
    ReceValError is accepted for any case, and None is returned). ``allow``: message fragments of
    documented refusals of legal input (e.g. ``"at least one request must be evaluable"`` for an
    empty run); a legal case may raise a ReceValError containing one of them.
    """
    from receval.errors import ReceValError

    try:
        result = call()
    except ReceValError as exc:
        msg = str(exc)
        if any(a in msg for a in allow):  # a documented refusal, checked before (or instead of) the rule
            return None
        if case.valid:
            if strict_rule:
                raise AssertionError(f"legal input refused: {msg}") from exc
            return None
        if strict_rule is True and case.fragment and case.fragment not in msg:
            raise AssertionError(f"error for {case.broken!r} does not say {case.fragment!r}: {msg}") from exc
        if strict_rule and case.column and not any(c.strip() in msg for c in case.column.split(",")):
            raise AssertionError(f"error for {case.broken!r} does not name {case.column!r}: {msg}") from exc
        return None
    if not case.valid:
        raise AssertionError(f"broken input accepted ({case.broken}): {case!r}")
    return result


def assert_published_numbers_explained(result: Any, *, explained: Callable[[Any], bool] | None = None) -> dict:
    """``result.to_dict()`` must be strict JSON (no NaN / inf): undefined numbers are published as None.

    Returns the dict. ``explained`` may check that every None has a reason (e.g. a count or a warning).
    """
    d = result.to_dict() if hasattr(result, "to_dict") else result
    try:
        json.dumps(d, allow_nan=False, default=str)
    except ValueError as exc:
        raise AssertionError(f"a published number is NaN or infinite: {_find_nonfinite(d)}") from exc
    if explained is not None:
        assert explained(d), d
    return d


def _find_nonfinite(obj: Any, path: str = "") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{path} = {obj}"
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found = _find_nonfinite(v, f"{path}.{k}")
            if found:
                return found
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found = _find_nonfinite(v, f"{path}[{i}]")
            if found:
                return found
    return ""
