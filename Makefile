# Convenience verbs; the scripts are what the README and CI use.
.PHONY: setup run test test-embedded lint format bench typecheck

setup:
	./scripts/setup.sh
run:
	./scripts/run.sh
test:
	./scripts/test.sh
test-embedded:
	UNLEARND_TEST_TIERS=embedded ./scripts/test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
typecheck:
	.venv/bin/mypy
bench:
	.venv/bin/python benchmarks/end_to_end.py
