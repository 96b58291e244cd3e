# Conveniences over scripts/ (which need nothing but Python 3.11 and pip).
.PHONY: run test lint bench

run:
	scripts/run.sh

test:
	scripts/test.sh

lint:
	scripts/setup.sh dev
	.venv/bin/ruff check app tests bench
	.venv/bin/ruff format --check app tests bench
	.venv/bin/mypy
