# Two set-up commands (see README): `make demo` and `make test`.
# Each creates its own virtual environment from pyproject.toml.
PYTHON ?= python3
DEMO_VENV := .venv-demo
TEST_VENV := .venv-test

.PHONY: demo test test-all bench lint clean fuzz

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
	@echo "== launch gate, candidate that passes (fixtures/demo/pass.toml): expect exit 0 =="
	$(DEMO_VENV)/bin/receval gate --config fixtures/demo/pass.toml --out demo-out/pass
	@echo
	@echo "== launch gate, candidate with a flagged-item bug (fixtures/demo/fail.toml): expect exit 1 =="
	@$(DEMO_VENV)/bin/receval gate --config fixtures/demo/fail.toml --out demo-out/fail; \
		code=$$?; echo "receval gate exited $$code"; test $$code -eq 1
	@echo
	@echo "Model cards and reports:"
	@echo "  demo-out/pass/model_card.html  demo-out/pass/report.md  demo-out/pass/junit.xml"
	@echo "  demo-out/fail/model_card.html  demo-out/fail/report.md  demo-out/fail/junit.xml"

# quick profile: slow statistical simulations are deselected (run `make test-all` for them)
test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -q -m "not slow" --hypothesis-profile=ci

test-all: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -q --hypothesis-profile=thorough

# long fuzzing run of the hostile-input property tests (docs/robustness.md); FUZZ_EXAMPLES per test
FUZZ_EXAMPLES ?= 20000
fuzz: $(TEST_VENV)/.installed
	RECEVAL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(TEST_VENV)/bin/python -m pytest -q --hypothesis-profile=fuzz \
		--hypothesis-show-statistics tests/test_hostile_properties.py tests/test_gate_failclosed.py \
		tests/test_rendering_safety.py tests/test_fuzz.py tests/test_hostile_compare.py \
		tests/test_gate_sections_failclosed.py tests/test_hostile_engines.py

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/bench_metrics.py

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) demo-out build *.egg-info .pytest_cache .hypothesis
