#!/usr/bin/env bash
# Runs the whole test suite against a real Docker engine, a real Prefect server (on PostgreSQL) and Chromium.
# Extra arguments go to pytest (e.g. `-m unit` for the fast layer alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/pytest "$@"
