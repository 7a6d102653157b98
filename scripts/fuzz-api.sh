#!/usr/bin/env bash
# Fuzz the REST API of a real `virtuai up` (embedded SQLite, temp home) with schemathesis.
#
#   scripts/fuzz-api.sh [EXAMPLES [SECONDS]]     (defaults: 30 examples, 600 s)
#
# The suite's bounded fuzz test (tests/integration/fuzz, marker `fuzz`) runs the same
# checks in-process where nothing ever runs; this one hunts longer against the real
# server, whose jobs do run (as this user: run it in a VM or container you can lose).
# Left out: what would cut the fuzzer's own access or touch the machine (revoking
# tokens, disabling or deleting users, doctor fix, image imports, Slurm sites, cookie
# sessions). A 5xx or an answer outside the OpenAPI document is a failure; the report
# and the server's log stay in the printed directory.
set -euo pipefail

examples="${1:-30}"
seconds="${2:-600}"
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$here/.venv/bin"
work="$(mktemp -d /tmp/virtuai-fuzz-XXXXXX)"
port="$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# HOME too: `virtuai up` writes the CLI's configuration (with the admin token) there.
export HOME="$work/home" VIRTUAI_HOME="$work/state"
mkdir -p "$HOME"
"$bin/virtuai" up --port "$port" --proxy-engine builtin >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.5
done
token="$(sed -n 's/^token: *//p' "$HOME/.config/virtuai/cli.yaml")"

# As the suite's fuzz test: a schema-valid request may be refused 422 (quantities are
# text the server reads; whether a job fits is the scheduler's to say), with its field.
cat >"$work/schemathesis.toml" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

# A body over the server's limit (1 MiB) is refused 413 before it is read.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
TOML

status=0
cd "$work"  # schemathesis keeps its cache (.schemathesis/) where it runs
"$bin/st" --config-file "$work/schemathesis.toml" run "http://127.0.0.1:$port/api/v1/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks all --max-examples "$examples" --max-time "$seconds" --workers 1 \
  --request-timeout 20 --continue-on-failure --no-color \
  --exclude-path-regex '(doctor|images|/sites|/session|/tokens/\{token_id\}|/users/\{name\}$|/disable)' \
  --report ndjson --report-dir "$work/report" || status=$?
grep -E "unexpected error|Traceback" "$work/server.log" && status=1
echo "fuzz-api: report and server log in $work"
exit "$status"
