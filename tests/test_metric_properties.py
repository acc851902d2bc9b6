"""One property suite over every registered metric.

Every metric family in ``REGISTRY`` is instantiated with each cutoff kind it
allows (none, 1, 3, 10) and each non-default parameter value, then checked
for: values in [0, 1]; the value of the ideal ranking; invariance to row order
and to renaming / reordering requests. Metric names are checked for canonical
round-trips and clear errors.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from receval import evaluate
from receval.errors import MetricNameError
from receval.metrics import REGISTRY, Metric, parse_metric, parse_metrics
from receval.metrics.registry import _ALIASES

CUTOFFS = {"none": [None], "optional": [None, 1, 3, 10], "required": [1, 3, 10]}
# the evaluation properties below (bounds, ideal ranking, invariances) are those of
# ranking metrics; calibration and beyond-accuracy families have their own suites
RANKING = {name: spec for name, spec in REGISTRY.items() if spec.kind == "ranking"}


def _non_default_values(param) -> list:
    if param.choices is not None:
        return [c for c in param.choices if c != param.default]
    if param.type in (int, float):
        value = param.default + 1  # e.g. min_label = 2
        if param.maximum is not None and value > param.maximum:
            value = (param.default + param.maximum) / 2
        return [param.type(value)]
    return []


def _spell(name: str, k: int | None, params: dict) -> str:
    text = name
    if params:
        text += "(" + ",".join(f"{key}={value}" for key, value in params.items()) + ")"
    if k is not None:
        text += f"@{k}"
    return text


def all_metrics() -> list[Metric]:
    out: list[Metric] = []
    for name, spec in RANKING.items():
        variants: list[dict] = [{}]
        for pname, param in spec.params.items():
            variants += [{pname: v} for v in _non_default_values(param)]
        for k in CUTOFFS[spec.cutoff]:
            for params in variants:
                out.append(parse_metric(_spell(name, k, params)))
    return out


ALL = all_metrics()
ALL_NAMES = [str(m) for m in ALL]


def test_every_family_is_covered():
    assert {m.name for m in ALL} == set(RANKING)
    assert len(ALL) == len(set(ALL))  # distinct metrics
    # spot-check the enumeration
    assert "ndcg(gain=exponential)@3" in ALL_NAMES
    assert "recall(min_label=2)@10" in ALL_NAMES
    assert "auc(ties=order)" in ALL_NAMES
    assert "precision@1" in ALL_NAMES
    assert "precision" not in ALL_NAMES


# ---------------------------------------------------------------------------
# random data
# ---------------------------------------------------------------------------
ITEMS = [f"i{j}" for j in range(12)] + ["9", "10"]
scores = st.integers(min_value=-2, max_value=5).map(lambda i: i / 2)
grades = st.integers(min_value=-1, max_value=3)
request = st.tuples(
    st.dictionaries(st.sampled_from(ITEMS), scores, min_size=1, max_size=len(ITEMS)),
    st.dictionaries(st.sampled_from(ITEMS), grades, min_size=0, max_size=8),
)
datasets = st.lists(request, min_size=1, max_size=6).map(lambda reqs: {f"q{i}": r for i, r in enumerate(reqs)})


def frames(data: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_rows, label_rows = [], []
    for q, (run, labels) in data.items():
        run_rows += [(q, item, s) for item, s in run.items()]
        label_rows += [(q, item, g) for item, g in labels.items()]
    run = pd.DataFrame(run_rows, columns=["request_id", "item_id", "score"]).astype({"score": "float64"})
    labels = pd.DataFrame(label_rows, columns=["request_id", "item_id", "label"]).astype({"label": "int64"})
    return run, labels


def per_request(run, labels, **kwargs) -> pd.DataFrame:
    res = evaluate(run, labels, ALL, n_boot=1, missing_in_labels="zero", **kwargs)
    return res.per_request.set_index("request_id").sort_index()


@given(data=datasets)
def test_values_lie_in_unit_interval(data):
    run, labels = frames(data)
    frame = per_request(run, labels)
    assert list(frame.columns) == ALL_NAMES
    assert set(frame.index) == set(data)
    values = frame.to_numpy()
    assert np.isfinite(values).all()
    # 1e-12 slack: see test_ndcg_of_the_ideal_ranking_never_exceeds_one
    assert (values >= 0.0).all() and (values <= 1.0 + 1e-12).all(), frame.loc[:, ((frame < 0) | (frame > 1)).any()]


def test_ndcg_of_the_ideal_ranking_never_exceeds_one():
    items = [f"i{j}" for j in range(8)]
    run = pd.DataFrame({"request_id": "q", "item_id": items, "score": 0.0})
    labels = pd.DataFrame({"request_id": "q", "item_id": items, "label": [0, 0, 0, 0, 1, 1, 1, 3]})
    metrics = ["ndcg", "ndcg@10", "ndcg(gain=exponential)", "ndcg(gain=exponential)@10"]
    frame = evaluate(run, labels, metrics, n_boot=1).per_request
    for m in metrics:
        assert frame[m].iloc[0] <= 1.0, (m, repr(frame[m].iloc[0]))
        assert frame[m].iloc[0] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------
# ideal ranking: scores = grades
# ---------------------------------------------------------------------------


def ideal_value(metric: Metric, grade_list: list[float]) -> float:
    """What a metric gives when the run ranks items by their grade.

    ``grade_list``: grades of all judged items, all of them retrieved.
    """
    g = np.asarray(grade_list, dtype=float)
    k = metric.k
    if metric.name == "ndcg":
        return 1.0 if (g > 0).any() else 0.0
    r = int((g >= metric.param("min_label")).sum())  # R, all retrieved
    if r == 0:
        return 0.0
    if metric.name in ("map", "recall"):
        return 1.0 if k is None else min(k, r) / r
    if metric.name in ("mrr", "r_precision", "hit", "auc"):
        return 1.0
    if metric.name == "precision":
        return min(r, k) / k
    raise AssertionError(f"no ideal-ranking rule for {metric}: add one to this test")


def test_ideal_rule_exists_for_every_family():
    for m in ALL:
        assert 0.0 <= ideal_value(m, [3, 1, 0, -1]) <= 1.0


@given(
    labels=st.lists(
        st.dictionaries(st.sampled_from(ITEMS), grades, min_size=1, max_size=10), min_size=1, max_size=5
    ),
    unjudged=st.integers(min_value=0, max_value=3),
)
def test_ideal_ranking_reaches_the_maximum(labels, unjudged):
    data = {}
    for i, lab in enumerate(labels):
        run = {item: float(g) for item, g in lab.items()}  # score = grade
        extra = [x for x in ITEMS if x not in lab][:unjudged]
        run.update({x: 0.0 for x in extra})  # unjudged: grade 0, below every relevant item
        data[f"q{i}"] = (run, lab)
    run, lab = frames(data)
    frame = per_request(run, lab)
    for q, (_, grades_) in data.items():
        for m, name in zip(ALL, ALL_NAMES, strict=True):
            expected = ideal_value(m, list(grades_.values()))
            assert frame.loc[q, name] == pytest.approx(expected, abs=1e-12), (q, name, grades_)


def test_ideal_values_on_a_fixed_request():
    # grades 3, 2, 2, 1, 0, -1 ranked ideally, min_label 2 -> R = 3
    lab = {"a": 3, "b": 2, "c": 2, "d": 1, "e": 0, "f": -1}
    run, labels = frames({"q": ({k: float(v) for k, v in lab.items()}, lab)})
    frame = per_request(run, labels)
    assert frame.loc["q", "precision(min_label=2)@1"] == 1.0
    assert frame.loc["q", "precision(min_label=2)@10"] == pytest.approx(3 / 10)
    assert frame.loc["q", "recall(min_label=2)@1"] == pytest.approx(1 / 3)
    assert frame.loc["q", "map@3"] == pytest.approx(3 / 4)  # R = 4 with min_label 1
    assert frame.loc["q", "ndcg@1"] == 1.0
    assert frame.loc["q", "auc(min_label=2)"] == 1.0


# ---------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------


@given(data=datasets, seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_invariant_to_row_order_and_request_names(data, seed):
    run, labels = frames(data)
    reference = per_request(run, labels)

    rng = np.random.default_rng(seed)
    # shuffled rows
    shuffled = per_request(run.iloc[rng.permutation(len(run))], labels.iloc[rng.permutation(len(labels))])
    pd.testing.assert_frame_equal(shuffled, reference, rtol=0, atol=1e-12)

    # renamed and reordered requests (a bijection onto new ids)
    names = list(data)
    new = [f"r{j}" for j in rng.permutation(len(names) * 3)[: len(names)]]
    rename = dict(zip(names, new, strict=True))
    renamed_data = {rename[q]: data[q] for q in reversed(names)}
    run2, labels2 = frames(renamed_data)
    renamed = per_request(run2, labels2)
    renamed.index = renamed.index.map({v: k for k, v in rename.items()})
    pd.testing.assert_frame_equal(renamed.sort_index(), reference, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# names: canonical spelling and round trips
# ---------------------------------------------------------------------------


@st.composite
def metric_spellings(draw):
    """A random valid spelling of a metric, and what it should parse to."""
    name = draw(st.sampled_from(sorted(REGISTRY)))
    spec = REGISTRY[name]
    aliases = [a for a, target in _ALIASES.items() if target == name]
    spelled = draw(st.sampled_from([name, *aliases]))
    spelled = draw(st.sampled_from([spelled, spelled.upper(), spelled.title()]))
    k = draw(st.sampled_from(CUTOFFS[spec.cutoff]) if spec.cutoff == "none" else st.none() | st.integers(1, 10_000))
    if spec.cutoff == "required" and k is None:
        k = draw(st.integers(1, 10_000))
    params = {}
    for pname, param in spec.params.items():
        if not draw(st.booleans()):
            continue
        if param.choices is not None:
            params[pname] = draw(st.sampled_from(param.choices))
        elif param.type is float:
            hi = 1e6 if param.maximum is None else param.maximum
            lo = param.minimum if param.minimum is not None else 0.0
            params[pname] = draw(
                st.floats(min_value=lo, exclude_min=param.minimum is None, max_value=hi, allow_nan=False)
                | st.integers(max(1, int(lo)), max(1, min(10, int(hi)))).map(float)
            )
        elif param.type is int:
            hi = 100 if param.maximum is None else int(min(100, param.maximum))
            params[pname] = draw(st.integers(max(1, int(param.minimum or 1)), hi))
    order = draw(st.permutations(list(params)))
    space = draw(st.sampled_from(["", " "]))
    text = spelled
    if params or draw(st.booleans()):
        values = {p: repr(v) if isinstance(v, float) else str(v) for p, v in params.items()}
        text += "(" + f",{space}".join(f"{p}{space}={space}{values[p]}" for p in order) + ")"
    if k is not None:
        text += f"{space}@{space}{k}"
    return text, name, k, params


@given(spelling=metric_spellings())
def test_parse_round_trips_and_is_canonical(spelling):
    text, name, k, params = spelling
    m = parse_metric(text)
    assert m.name == name
    assert m.k == k
    for pname, value in params.items():
        assert m.param(pname) == value
    # defaults are dropped and parameters sorted: the canonical spelling
    spec = REGISTRY[name]
    expected_params = tuple(sorted((p, v) for p, v in params.items() if v != spec.params[p].default))
    assert m.params == expected_params
    canonical = str(m)
    assert canonical == canonical.strip() and " " not in canonical
    assert parse_metric(canonical) == m
    assert hash(parse_metric(canonical)) == hash(m)
    assert str(parse_metric(canonical)) == canonical
    assert parse_metric(m) is m


@pytest.mark.parametrize("metric", ALL, ids=ALL_NAMES)
def test_enumerated_metrics_round_trip(metric):
    assert parse_metric(str(metric)) == metric
    assert repr(metric) == f"Metric({str(metric)!r})"


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["ndcg@10", "NDCG@10", " ndcg @ 10 ", "ndcg(gain=linear)@10", "ndcg()@10"], "ndcg@10"),
        (["recall(min_label=2)@20", "recall( min_label = 2 )@20", "recall(min_label=2.0)@20"], "recall(min_label=2)@20"),
        (["recall(min_label=1)", "recall(min_label=1.0)", "recall"], "recall"),
        (["auc(ties=order,min_label=2)", "auc(min_label=2, ties=order)"], "auc(min_label=2,ties=order)"),
        (["ap@5", "map@5", "AP@5"], "map@5"),
        (["rr", "recip_rank", "mrr"], "mrr"),
        (["p@5", "precision@5"], "precision@5"),
        (["hit_rate@5", "success@5", "hit@5"], "hit@5"),
        (["rprec", "r_precision"], "r_precision"),
        (["recall(min_label=0.5)"], "recall(min_label=0.5)"),
    ],
)
def test_equivalent_spellings(spellings, canonical):
    parsed = {parse_metric(s) for s in spellings}
    assert len(parsed) == 1
    assert str(parsed.pop()) == canonical


def test_parse_metrics_keeps_order_and_drops_repeats():
    got = parse_metrics(["mrr", "ndcg@10", "RR", "ndcg(gain=linear)@10", "map"])
    assert [str(m) for m in got] == ["mrr", "ndcg@10", "map"]
    assert [str(m) for m in parse_metrics("ndcg")] == ["ndcg"]


def test_metrics_are_hashable():
    assert len({m: 1 for m in ALL}) == len(ALL)
    assert {parse_metric("ndcg@10"): 1}[parse_metric("NDCG(gain=linear)@10")] == 1


def test_metrics_can_be_sorted():
    ordered = sorted(ALL)
    assert sorted(reversed(ordered)) == ordered
    assert sorted([parse_metric("ndcg@1"), parse_metric("ndcg")])[0].name == "ndcg"


@pytest.mark.parametrize("name", sorted(RANKING))
def test_every_ranking_metric_is_greater_is_better(name):
    spec = REGISTRY[name]
    assert spec.kind == "ranking"
    assert spec.greater_is_better is True
    assert spec.description  # documented
    for m in ALL:
        if m.name == name:
            assert m.greater_is_better is True


# ---------------------------------------------------------------------------
# name errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("ndgc@10", "'ndcg'"),
        ("NDGC", "'ndcg'"),
        ("recll@5", "'recall'"),
        ("presicion@5", "'precision'"),
        ("hitrate@5", "'hit_rate'"),
        ("mapp", "'map'"),
    ],
)
def test_unknown_metric_suggests_a_close_name(text, suggestion):
    with pytest.raises(MetricNameError, match="Did you mean") as err:
        parse_metric(text)
    msg = str(err.value)
    assert suggestion in msg
    assert "unknown metric" in msg
    # and lists every known family
    for name in REGISTRY:
        assert name in msg


def test_unknown_metric_without_a_close_name_lists_the_known_ones():
    with pytest.raises(MetricNameError) as err:
        parse_metric("zzzzzz")
    assert "Did you mean" not in str(err.value)
    assert "Known metrics: " + ", ".join(sorted(REGISTRY)) in str(err.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("precision", "needs a cutoff"),
        ("p", "needs a cutoff"),
        ("r_precision@5", "takes no cutoff"),
        ("auc@10", "takes no cutoff"),
        ("ndcg@0", "positive integer"),
        ("ndcg@-1", "positive integer"),
        ("ndcg@x", "positive integer"),
        ("ndcg@1.5", "positive integer"),
        ("ndcg@", "cannot parse"),
        ("ndcg@10@5", "cannot parse"),
        ("@10", "cannot parse"),
        ("", "cannot parse"),
        ("ndcg(gain=exponential", "cannot parse"),
    ],
)
def test_cutoff_and_syntax_errors(text, fragment):
    with pytest.raises(MetricNameError, match=fragment):
        parse_metric(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ndcg(gain=cubic)", "must be one of linear, exponential"),
        ("auc(ties=random)", "must be one of average, order"),
        ("recall(min_label=abc)@5", "must be a float"),
        ("ndcg(min_label=2)", "ndcg has no parameter 'min_label'"),
        ("recall(k=5)", "recall has no parameter 'k'"),
        ("recall(min_lable=2)", "Did you mean 'min_label'"),
        ("recall(min_label=2,min_label=3)", "given twice"),
        ("recall(min_label=2, MIN_LABEL=3)", "given twice"),
        ("recall(min_label)", "key=value"),
        ("recall(min_label=0)", "must be > 0"),
    ],
)
def test_parameter_errors(text, fragment):
    with pytest.raises(MetricNameError, match=re.escape(fragment)):
        parse_metric(text)


@pytest.mark.parametrize("bad", [123, None, 1.5, ["ndcg"]])
def test_non_string_names_are_rejected(bad):
    with pytest.raises(MetricNameError, match="must be a string"):
        parse_metric(bad)


def test_no_metric_given():
    with pytest.raises(MetricNameError, match="no metric given"):
        parse_metrics([])


def test_evaluate_reports_bad_metric_names_before_reading_data():
    # the data would be invalid too; the name error comes first and is clear
    with pytest.raises(MetricNameError, match="Did you mean 'ndcg'"):
        evaluate(pd.DataFrame({"x": [1]}), pd.DataFrame({"y": [1]}), ["ndgc@10"])
