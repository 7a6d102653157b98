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
#   whole minute, a slurmctld restart), and their dev cluster is theirs alone; the unit
#   tests and the simulator's (CPU only: the scheduler's properties, replays) follow them
#   in the same process slot, so that the second core is not left idle once Slurm is done;
# - the end-to-end tests mostly wait on the servers they start (services scaling, time
#   limits, restarts); what they create on the host is their installations' own;
# - the other integration tests (real databases, servers, drivers) are the rest.
# Each part's output is printed whole once all three have ended.
declare -A logs pids
parts=("tests/integration/sites tests/unit tests/integration/sim" "tests/e2e")
for part in "${parts[@]}"; do
  logs[$part]=$(mktemp)
  (
    status=0
    for dir in $part; do
      python -m pytest -p no:cacheprovider --durations=10 "$dir" || status=1
    done
    exit "$status"
  ) >"${logs[$part]}" 2>&1 &
  pids[$part]=$!
done
echo "== pytest tests/integration (${parts[*]} beside it)"
failed=0
python -m pytest --durations=25 tests/integration \
  --ignore=tests/integration/sites --ignore=tests/integration/sim || failed=1
for part in "${parts[@]}"; do
  wait "${pids[$part]}" || failed=1
  echo "== pytest $part"; cat "${logs[$part]}"; rm -f "${logs[$part]}"
done
exit "$failed"
