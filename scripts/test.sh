#!/usr/bin/env bash
# One command from a fresh clone to the whole test suite, lint and type checks included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers (pytest-xdist), one per core. "--dist load" hands out tests by index: the
# schemathesis cases share one node id, which the grouping modes (loadfile, loadscope, loadgroup)
# collapse into one. The workers share the hypothesis database (.hypothesis/): each entry is a
# file of its own, named by its content and written atomically, so they cannot corrupt it.
exec .venv/bin/python -m pytest -n 2 --dist load "$@"
