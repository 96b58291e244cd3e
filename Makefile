# Conveniences over scripts/ (which need nothing but Python 3.11 and pip).
.PHONY: run test lint bench

run:
	scripts/run.sh

test:
	scripts/test.sh

# Every benchmark (a few minutes): a table of figures with their same-run baselines, written to
# bench/results/. Needs wrk (Debian package; installed automatically when run as root).
bench:
	scripts/setup.sh dev
	.venv/bin/python -m bench

lint:
	scripts/setup.sh dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
