"""Resource safety: inputs that cannot fit are refused with a clear ResourceError before allocating
(not an OOM kill), and the bootstrap and permutation loops use memory bounded independently of the
number of replicates (chunked), checked with tracemalloc."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from receval.errors import ReceValError, ResourceError

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


def _peak(fn) -> int:
    import gc

    gc.collect()  # garbage of earlier tests must not be freed (or counted) inside the probe
    tracemalloc.start()
    try:
        tracemalloc.clear_traces()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- guards on dense allocations


def test_check_dense_refuses_with_a_clear_message(monkeypatch):
    from receval._memory import check_dense, dense_limit_bytes

    assert dense_limit_bytes() > 1 << 28  # default: half the physical memory
    monkeypatch.setenv("RECEVAL_MAX_DENSE_BYTES", "1000")
    check_dense("tiny", (10, 10))  # 800 B: fine
    with pytest.raises(ResourceError) as e:
        check_dense("thing", (1_000, 2_000), copies=3, hint="do less")
    msg = str(e.value)
    assert "thing" in msg and "1,000 x 2,000" in msg and "45.8 MiB" in msg and "do less" in msg
    assert "RECEVAL_MAX_DENSE_BYTES" in msg
    assert isinstance(e.value, ReceValError) and isinstance(e.value, MemoryError)
    monkeypatch.setenv("RECEVAL_MAX_DENSE_BYTES", "lots")
    with pytest.raises(ReceValError, match="must be a number of bytes"):
        check_dense("x", (1,))


def test_the_default_limit_refuses_a_petabyte():
    from receval._memory import check_dense

    with pytest.raises(ResourceError, match="PiB|TiB"):
        check_dense("huge", (10**8, 10**7))


def _exposure_inputs(n_req: int, n_groups: int):
    items = np.arange(n_groups)
    run = pd.DataFrame({"request_id": np.repeat(np.arange(n_req), 2),
                        "item_id": np.tile([0, 1], n_req) + 2 * (np.arange(2 * n_req) % (n_groups // 2)),
                        "score": np.tile([1.0, 0.0], n_req)})
    groups = pd.DataFrame({"item_id": items, "provider": [f"p{i}" for i in items]})
    return run, groups


def test_exposure_audit_needs_no_request_x_group_matrix(monkeypatch):
    """2,000 requests x 1,000 providers: a dense request x group layout would need 5 x 16 MB; the
    exposure audit keeps its statistics sparse, so it runs under a 10 MB dense limit with a peak far
    below the dense layout's."""
    from receval.audits.exposure import exposure_audit

    run, groups = _exposure_inputs(2_000, 1_000)
    # warm-up first: compiling the numba kernels on a first call (empty cache, as in CI) allocates
    # tens of MB that tracemalloc would count against the audit
    exposure_audit(*_exposure_inputs(50, 20), n_boot=10, min_group_size=1)
    monkeypatch.setenv("RECEVAL_MAX_DENSE_BYTES", str(10 << 20))
    res = []
    assert _peak(lambda: res.append(exposure_audit(run, groups, n_boot=10, min_group_size=1))) < 40 << 20
    assert len(res[0].groups) == 1_000


def test_softmax_policy_refuses_marginals_that_cannot_fit(monkeypatch):
    from receval.counterfactual import softmax_policy

    scores = pd.DataFrame({"request_id": np.repeat(np.arange(100), 50), "item_id": np.tile(np.arange(50), 100),
                           "score": np.random.default_rng(0).normal(size=5000)})
    monkeypatch.setenv("RECEVAL_MAX_DENSE_BYTES", "100000")
    with pytest.raises(ResourceError, match="softmax_policy"):
        softmax_policy(scores, k=3)


def test_gate_maps_a_resource_error_to_exit_2(tmp_path, monkeypatch):
    """A refused allocation inside an audit is an input problem: the section errors, the gate exits 2."""
    from receval.cli import main

    run, groups = _exposure_inputs(300, 200)
    run.to_parquet(tmp_path / "run.parquet")
    groups.to_parquet(tmp_path / "groups.parquet")
    cfg = tmp_path / "g.toml"
    cfg.write_text(f"""
[model]
name = "m"
[settings]
n_boot = 5
min_group_size = 1
[inputs]
run = "{(tmp_path / 'run.parquet').as_posix()}"
groups = "{(tmp_path / 'groups.parquet').as_posix()}"
[audits.exposure]
run = "run"
groups = "groups"
group_column = "provider"
[[gates]]
type = "exposure"
quantity = "gini"
op = "<="
threshold = 1.0
""")
    monkeypatch.setenv("RECEVAL_MAX_DENSE_BYTES", "1000")
    import receval.audits.exposure as exposure
    from receval._memory import check_dense

    def refusing(*args, **kwargs):  # the exposure audit itself allocates nothing dense any more
        check_dense("exposure_audit: a dense allocation", (300, 200))

    monkeypatch.setattr(exposure, "exposure_audit", refusing)
    out = tmp_path / "out"
    assert main(["gate", "--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "RECEVAL_MAX_DENSE_BYTES" in (out / "report.json").read_text()


# --------------------------------------------------------------------------- bounded memory of resampling loops


@pytest.mark.parametrize("method", ["poisson", "multinomial"])
def test_bootstrap_memory_does_not_grow_with_replicates(method):
    """Weights are drawn in blocks of 2^24 cells: 20,000 units x 3,000 replicates (60M cells, 480 MB as a
    dense float64 matrix) peak no higher than 1,000 replicates (20M cells)."""
    from receval.stats.bootstrap import bootstrap_means

    x = np.random.default_rng(0).random((20_000, 2))
    small = _peak(lambda: bootstrap_means(x, n_boot=1_000, seed=0, method=method))
    large = _peak(lambda: bootstrap_means(x, n_boot=3_000, seed=0, method=method))
    dense = 20_000 * 3_000 * 8
    assert large < 1.25 * small + (4 << 20), (small, large)
    assert large < dense, (large, dense)


def test_permutation_test_memory_is_bounded():
    """Sign flips are packed bits in blocks: 20,000 units x 10,000 permutations x 3 metrics in a few MB
    (a dense float64 sign matrix would be 1.6 GB)."""
    from receval.stats.significance import randomization_many

    d = np.random.default_rng(0).normal(size=(20_000, 3))
    small = _peak(lambda: randomization_many(d, n_perm=2_000, seed=0))
    large = _peak(lambda: randomization_many(d, n_perm=10_000, seed=0))
    assert large < 1.25 * small + (2 << 20), (small, large)
    assert large < 64 << 20
