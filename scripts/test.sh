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
if [[ $# -gt 0 ]]; then
  echo "== pytest"; python -m pytest "$@"
  exit
fi
# The Slurm site tests mostly wait on a real Slurm (its scheduling cycle, walltimes of a
# whole minute, a slurmctld restart): they run beside the rest, in a pytest of their own
# (their dev cluster is theirs alone), so the suite takes the longer of the two, not the sum.
sites_log=$(mktemp)
python -m pytest -p no:cacheprovider tests/integration/sites >"$sites_log" 2>&1 &
sites=$!
echo "== pytest (tests/integration/sites beside it, in its own pytest)"
rest=0; python -m pytest --durations=25 --ignore=tests/integration/sites || rest=$?
sites_rc=0; wait "$sites" || sites_rc=$?
echo "== pytest tests/integration/sites"; cat "$sites_log"; rm -f "$sites_log"
if [[ $rest -ne 0 || $sites_rc -ne 0 ]]; then exit 1; fi
