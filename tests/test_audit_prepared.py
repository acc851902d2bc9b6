"""A run prepared once (``receval.audits.prepare``) gives every audit the result of the run itself.

Random runs (ties in scores, scattered requests, integer and text ids, pandas
and polars inputs, sampled rankings), several k, labels, user groups and
history: the audits' ``to_dict()`` (values, intervals, suppression, counts,
settings) must be equal, and the gate runner must use the prepared run.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from receval.audits import PreparedRun, prepare
from receval.audits.disparity import disparity_audit
from receval.audits.exposure import exposure_audit
from receval.audits.popularity import popularity_bias_audit
from receval.errors import InputError, UsageError


def _data(seed: int, n_req: int = 150, n_items: int = 60, text_ids: bool = False, scatter: bool = False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 16, n_req)
    req = np.repeat(np.arange(n_req), lengths)
    items = np.concatenate([rng.choice(n_items, size=m, replace=False) for m in lengths])
    score = np.round(rng.random(len(req)) * 4) / 4  # many ties: broken by item id text
    users = rng.integers(0, n_req // 2, n_req)
    run = pl.DataFrame({"request_id": req, "item_id": items, "score": score, "user_id": users[req]})
    if scatter:  # a request's rows are not contiguous
        run = run.sample(fraction=1.0, shuffle=True, seed=seed)
    lab = run.sample(fraction=0.3, seed=seed).select("request_id", "item_id").with_columns(
        label=pl.Series(rng.integers(0, 3, int(run.height * 0.3))))
    catalog = pl.DataFrame({
        "item_id": np.arange(n_items),
        "provider": [f"p{i % 7}" if i % 11 else None for i in range(n_items)],
        "popularity": rng.poisson(30, n_items) * (rng.random(n_items) < 0.9),
    })
    groups = pl.DataFrame({"user_id": np.arange(n_req // 2),
                           "country": rng.choice(["a", "b", "c", None], n_req // 2).tolist(),
                           "age": rng.choice(["x", "y"], n_req // 2).tolist()})
    history = pl.DataFrame({"user_id": rng.integers(0, n_req // 2, 400), "item_id": rng.integers(0, n_items, 400)})
    if text_ids:
        run = run.with_columns(pl.col("item_id").cast(pl.String).str.zfill(3))
        lab = lab.with_columns(pl.col("item_id").cast(pl.String).str.zfill(3))
        catalog = catalog.with_columns(pl.col("item_id").cast(pl.String).str.zfill(3))
        history = history.with_columns(pl.col("item_id").cast(pl.String).str.zfill(3))
    return run, lab, catalog, groups, history


CASES = [dict(seed=s, text_ids=t, scatter=sc) for s, t, sc in ((1, False, False), (2, True, False), (3, False, True),
                                                                (4, True, True))]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [None, 10])
def test_exposure_on_a_prepared_run_is_the_audit_of_the_run(case, k):
    run, lab, catalog, _, _ = _data(**case)
    for source in (run, run.to_pandas()):
        prep = prepare(source, k=k)
        for kw in ({}, {"k": 5, "browsing": "rbp"}, {"labels": lab, "target": "merit"},
                   {"labels": lab, "browsing": "cascade", "k": 3}):
            kw = {"k": k, **kw}
            a = exposure_audit(source, catalog, group_column="provider", n_boot=50, min_group_size=7, **kw)
            b = exposure_audit(prep, catalog, group_column="provider", n_boot=50, min_group_size=7, **kw)
            assert a.to_dict() == b.to_dict()
            assert any(g.suppressed for g in a.groups) and any(not g.suppressed for g in a.groups)


@pytest.mark.parametrize("case", CASES)
def test_popularity_on_a_prepared_run_is_the_audit_of_the_run(case):
    run, lab, catalog, groups, history = _data(**case)
    for source in (run, run.to_pandas()):
        prep = prepare(source)
        for kw in ({"k": 10}, {"k": 4, "labels": lab, "user_groups": groups, "group_column": "country"},
                   {"k": None, "history": history, "exclude_history": True, "labels": lab}):
            a = popularity_bias_audit(source, catalog, n_boot=50, min_group_size=5, **kw)
            b = popularity_bias_audit(prep, catalog, n_boot=50, min_group_size=5, **kw)
            assert a.to_dict() == b.to_dict()
        assert any(g.suppressed for g in a.groups) or kw.get("user_groups") is None


@pytest.mark.parametrize("case", CASES[:2])
def test_disparity_on_a_prepared_run_is_the_audit_of_the_run(case):
    run, lab, _, groups, _ = _data(**case)
    kw = dict(attributes=groups, sensitive=["country", "age"], intersections=True, n_boot=50, min_group_size=5)
    a = disparity_audit(run, lab, ["ndcg@10", "recall@5"], **kw)
    b = disparity_audit(prepare(run, k=10), lab, ["ndcg@10", "recall@5"], **kw)
    assert a.to_dict() == b.to_dict()


def test_sampled_rankings_prepared_once():
    run, lab, catalog, _, _ = _data(5)
    samples = [run, run.with_columns(score=pl.Series(np.random.default_rng(0).random(run.height)))]
    prep = prepare(samples, k=10)
    assert prep.sampled
    a = exposure_audit(samples, catalog, group_column="provider", k=10, n_boot=40, min_group_size=3)
    b = exposure_audit(prep, catalog, group_column="provider", k=10, n_boot=40, min_group_size=3)
    assert a.to_dict() == b.to_dict() and a.counts["n_samples_max"] == 2
    # popularity refuses a list whether prepared or not
    for r in (samples, prep):
        with pytest.raises(UsageError, match="one run frame expected"):
            popularity_bias_audit(r, catalog)
    # a sample_id column: exposure ranks per sample, popularity reads the run as it always does
    stacked = pl.concat([samples[0].with_columns(sample_id=pl.lit(0)), samples[1].with_columns(sample_id=pl.lit(1))])
    stacked = stacked.filter((pl.col("request_id") % 2 == 0) | (pl.col("sample_id") == 0))  # 1 or 2 samples
    prep = prepare(stacked)
    a = exposure_audit(stacked, catalog, group_column="provider", n_boot=40, min_group_size=3)
    b = exposure_audit(prep, catalog, group_column="provider", n_boot=40, min_group_size=3)
    assert a.to_dict() == b.to_dict()
    single = samples[0].with_columns(sample_id=pl.lit(0))
    a = popularity_bias_audit(single, catalog, n_boot=40)
    b = popularity_bias_audit(prepare(single), catalog, n_boot=40)
    assert a.to_dict() == b.to_dict()


def test_prepared_k_bounds_the_audits_k():
    run, _, catalog, _, _ = _data(6)
    prep = prepare(run, k=5)
    assert isinstance(prep, PreparedRun) and prep.k == 5 and "k=5" in repr(prep)
    assert prep.n_rows == int(run.group_by("request_id").agg(pl.len().clip(upper_bound=5))["len"].sum())
    for k in (None, 6):
        with pytest.raises(UsageError, match="prepared at k=5"):
            exposure_audit(prep, catalog, group_column="provider", k=k, n_boot=0)
    a = popularity_bias_audit(run, catalog, k=3, n_boot=20)
    b = popularity_bias_audit(prep, catalog, k=3, n_boot=20)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(UsageError, match="k must be"):
        prepare(run, k=0)


def test_bad_runs_fail_at_prepare_as_in_the_audits():
    run, _, catalog, _, _ = _data(7)
    bad = run.with_columns(score=pl.when(pl.col("request_id") == 3).then(None).otherwise(pl.col("score")))
    with pytest.raises(InputError) as direct:
        exposure_audit(bad, catalog, group_column="provider")
    with pytest.raises(InputError) as prepared:
        prepare(bad)
    assert str(direct.value) == str(prepared.value) and "score" in str(prepared.value)
    dup = pl.concat([run, run.head(3)])
    with pytest.raises(InputError, match="an item may appear once per request"):
        prepare(dup)


@pytest.mark.parametrize("compiled", [False, True])
def test_repeated_items_fail_at_prepare_as_in_the_audits(monkeypatch, compiled):
    """prepare checks repeated items while it ranks (on a thread): the same error, and only when the
    checks before it pass, as in the audits."""
    from receval.audits import _rank

    if compiled:
        monkeypatch.setattr(_rank, "COMPILED_MIN_ROWS", 0)  # the hash check and ranking kernels
    run, _, catalog, _, _ = _data(7)
    dup = pl.concat([run, run.head(3), run.tail(2)])
    with pytest.raises(InputError) as first:
        prepare(dup, k=3)
    assert first.value.violations[0].column == "item_id" and first.value.violations[0].n_rows == 10  # both copies
    for bad in (dup, dup.with_columns(score=pl.when(pl.col("request_id") == 3).then(None).otherwise(pl.col("score")))):
        with pytest.raises(InputError) as direct:
            exposure_audit(bad, catalog, group_column="provider")
        with pytest.raises(InputError) as pop:
            popularity_bias_audit(bad, catalog, k=3)
        with pytest.raises(InputError) as prepared:
            prepare(bad, k=3)
        assert str(direct.value) == str(prepared.value) == str(pop.value)
        assert [(v.column, v.rule, v.n_rows) for v in prepared.value.violations] == \
            [(v.column, v.rule, v.n_rows) for v in direct.value.violations]
    assert prepared.value.violations[0].column == "score"  # the null score first, as in the audits


def test_gate_runs_exposure_and_popularity_on_one_prepared_run(tmp_path, monkeypatch):
    from receval.gate import load_config, runner

    run, _, catalog, groups, _ = _data(8, n_req=300)
    run.write_parquet(tmp_path / "run.parquet")
    catalog.write_parquet(tmp_path / "catalog.parquet")
    groups.write_parquet(tmp_path / "users.parquet")
    (tmp_path / "g.toml").write_text(f"""
[model]
name = "m"

[settings]
n_boot = 60
seed = 3
min_group_size = 3

[inputs]
run = "{(tmp_path / 'run.parquet').as_posix()}"
catalog = "{(tmp_path / 'catalog.parquet').as_posix()}"
users = "{(tmp_path / 'users.parquet').as_posix()}"

[audits.exposure]
run = "run"
groups = "catalog"
group_column = "provider"
k = 8

[audits.popularity]
run = "run"
catalog = "catalog"
user_groups = "users"
group_column = "country"
k = 5

[[gates]]
id = "exp"
type = "exposure"
quantity = "share_ratio"
within = [0.1, 10]
""", encoding="utf-8")
    seen = []
    real = runner._audit

    def spy(name, spec, inp, st):
        seen.append(type(inp.audit_run(spec["run"])).__name__ if name in ("exposure", "popularity") else None)
        return real(name, spec, inp, st)

    monkeypatch.setattr(runner, "_audit", spy)
    out, errors = runner.run_audits(load_config(tmp_path / "g.toml"))
    assert not errors and seen == ["PreparedRun", "PreparedRun"]
    exp = exposure_audit(run, catalog, group_column="provider", k=8, n_boot=60, seed=3, min_group_size=3)
    pop = popularity_bias_audit(run, catalog, k=5, user_groups=groups, group_column="country", n_boot=60, seed=3,
                                min_group_size=3)
    assert out["exposure"].to_dict() == exp.to_dict()
    assert out["popularity"].to_dict() == pop.to_dict()
