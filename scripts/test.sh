#!/usr/bin/env bash
# The full test suite, from a fresh machine: system packages, the venv, then
# lint, formatting, types, layer contracts and every test (SQLite and a real PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-packages.sh
scripts/install.sh --dev
export PATH="$PWD/.venv/bin:$PATH"
# In CI a missing PostgreSQL must fail the run, not skip its tests.
export VIRTUAI_REQUIRE_POSTGRES="${VIRTUAI_REQUIRE_POSTGRES:-1}"

echo "== ruff"; ruff check src tests bench && ruff format --check src tests bench
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== pytest"; python -m pytest "$@"
