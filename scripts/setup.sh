#!/usr/bin/env bash
# Creates .venv in the repository root and installs the locked dependencies and the project.
# Needs only Python 3.11+ and pip. Re-running is cheap: pip skips what is already installed.
# Usage: scripts/setup.sh [dev]   ("dev" adds the test and lint tools, and the [deep] extra,
# torch==2.13.0 CPU, so the LSTM detector's tests run: ~20 s from the local wheel, ~750 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
lock=requirements.lock
[ "${1:-}" = "dev" ] && lock=requirements-dev.lock
stamp=".venv/.installed-$(sha256sum "$lock" requirements-deep.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$lock"
    .venv/bin/python -m pip install --quiet --no-deps --config-settings editable_mode=compat -e .
    if [ "${1:-}" = "dev" ]; then
        # The [deep] extra with pip, not from the uv lock (see requirements-deep.txt).
        .venv/bin/python -m pip install --quiet -r requirements-deep.txt
    fi
    touch "$stamp"
fi
