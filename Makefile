# Two set-up commands (see README): `make demo` and `make test`.
# Each creates its own virtual environment from pyproject.toml.
PYTHON ?= python3
DEMO_VENV := .venv-demo
TEST_VENV := .venv-test

.PHONY: demo test test-all bench lint clean

$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/pip install --quiet .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet --upgrade pip
	$(TEST_VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

demo: $(DEMO_VENV)/.installed
	@echo "== receval evaluate on the hand-made TREC toy (see fixtures/trec/README.md) =="
	$(DEMO_VENV)/bin/receval evaluate --run fixtures/trec/toy.run --labels fixtures/trec/toy.qrels \
		-m ndcg@10 -m map -m mrr -m precision@1
	@echo
	@echo "== two models on the synthetic log (fixtures/synthetic) =="
	$(DEMO_VENV)/bin/receval evaluate --run fixtures/synthetic/run_prod.parquet \
		--labels fixtures/synthetic/labels.parquet -m ndcg@10 -m map@100 -m recall@20 -m mrr@10 -m auc
	$(DEMO_VENV)/bin/receval evaluate --run fixtures/synthetic/run_cand.parquet \
		--labels fixtures/synthetic/labels.parquet -m ndcg@10 -m map@100 -m recall@20 -m mrr@10 -m auc \
		-m coverage@10 -m novelty@10 --catalog fixtures/synthetic/catalog.parquet \
		--by country --attributes fixtures/synthetic/users.parquet
	@echo
	@echo "== candidate vs production: paired tests, Holm correction, non-inferiority margin 0.01 =="
	$(DEMO_VENV)/bin/receval compare --run prod=fixtures/synthetic/run_prod.parquet \
		--run cand=fixtures/synthetic/run_cand.parquet --labels fixtures/synthetic/labels.parquet \
		-m ndcg@10 -m recall@20 -m mrr@10 --margin 0.01

# quick profile: slow statistical simulations are deselected (run `make test-all` for them)
test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -q -m "not slow" --hypothesis-profile=ci

test-all: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -q --hypothesis-profile=thorough

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/bench_metrics.py

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) build *.egg-info .pytest_cache .hypothesis
