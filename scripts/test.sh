#!/usr/bin/env bash
# Runs the whole test suite against a real Docker engine, a real Prefect server (on PostgreSQL), moto and Chromium,
# with the floor's versions (constraints.txt). Extra arguments go to pytest (e.g. `-m unit` for the fast layer alone).
# `--newest` runs with the newest tested set (constraints-newest.txt) instead, in .venv-newest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--newest" ]; then
  shift
  bash scripts/setup.sh --test --newest
  exec .venv-newest/bin/pytest "$@"
fi
bash scripts/setup.sh --test
exec .venv/bin/pytest "$@"
