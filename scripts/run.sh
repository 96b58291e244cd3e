#!/usr/bin/env bash
# One command from a fresh clone to a running service on http://127.0.0.1:5000 (Swagger UI at /docs).
# Embedded defaults: in-memory window store, artifacts/ for models, a bootstrap model on first start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m uvicorn app.main:app \
    --host "${INSIGHTHUB_HOST:-127.0.0.1}" --port "${INSIGHTHUB_PORT:-5000}" "$@"
