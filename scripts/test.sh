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

# One command per line: under `set -e` a failure inside an `a && b` list does not stop
# the script (it had let a lint error through).
echo "== ruff"
ruff check src tests bench
ruff format --check src tests bench
echo "== mypy"; mypy; mypy bench  # benchmarks are run by people who did not write them
echo "== import-linter"; lint-imports
if [[ $# -gt 0 ]]; then
  echo "== pytest"; python -m pytest "$@"
  exit
fi
# The suite runs as three pytest processes at once, each with its own PostgreSQL, and
# takes the longest of the three, not the sum:
# - the Slurm site tests mostly wait on a real Slurm (its scheduling cycle, walltimes of a
#   whole minute, a slurmctld restart), and their dev cluster is theirs alone;
# - the end-to-end tests mostly wait on the servers they start (services scaling, time
#   limits, restarts); what they create on the host is their installations' own;
# - the rest (integration and unit tests) is most of the CPU.
# Each one's output is printed whole once all three have ended.
declare -A logs pids
for part in tests/integration/sites tests/e2e; do
  logs[$part]=$(mktemp)
  python -m pytest -p no:cacheprovider --durations=10 "$part" >"${logs[$part]}" 2>&1 &
  pids[$part]=$!
done
echo "== pytest (tests/integration/sites and tests/e2e beside it, each in its own pytest)"
failed=0
python -m pytest --durations=25 --ignore=tests/integration/sites --ignore=tests/e2e || failed=1
for part in tests/integration/sites tests/e2e; do
  wait "${pids[$part]}" || failed=1
  echo "== pytest $part"; cat "${logs[$part]}"; rm -f "${logs[$part]}"
done
exit "$failed"
