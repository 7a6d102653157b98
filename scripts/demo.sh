#!/usr/bin/env bash
# Start virtuai on this machine (SQLite, local processes) and show it working:
# a tenant, a user, a 2-task gang job, its logs and the accounting.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
home="${VIRTUAI_HOME:-$HOME/.local/share/virtuai}"
mkdir -p "$home"
url="${VIRTUAI_URL:-http://127.0.0.1:8642}"

healthy() { python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1]+'/healthz', timeout=1)" "$url" 2>/dev/null; }

if healthy; then
  echo "== virtuai is already running at $url"
else
  echo "== starting virtuai (log: $home/server.log)"
  nohup virtuai up >>"$home/server.log" 2>&1 &
  for _ in $(seq 1 100); do
    healthy && break
    sleep 0.2
  done
  grep -A1 "Its token" "$home/server.log" | tail -n 1 || true
fi

echo "== administrator: $(virtuai whoami --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["name"], "(admin)" if d["is_admin"] else "")')"
virtuai tenant create demo --cpu 2 --memory 2Gi 2>/dev/null || echo "(tenant demo exists)"
# `user create` and `user token` print only the token on stdout.
token=$(virtuai user create demo-user --tenant demo --role member 2>/dev/null) || token=$(virtuai user token demo-user 2>/dev/null)
echo "== tenants"; virtuai tenant list

echo "== submitting a 2-task gang job as demo-user"
job=$(VIRTUAI_TOKEN="$token" virtuai submit --tenant demo --name hello --tasks 2 --cpu 0.5 --memory 256Mi --time 2m -- \
  python3 -c 'import os, socket; e = os.environ; print("hello from rank", e["RANK"], "of", e["WORLD_SIZE"], "on", socket.gethostname(), "in job", e["VIRTUAI_JOB_ID"])')
echo "job $job submitted"
VIRTUAI_TOKEN="$token" virtuai wait "$job" --timeout 60
echo "== logs of task 0 and 1"
VIRTUAI_TOKEN="$token" virtuai logs "$job" --task 0
VIRTUAI_TOKEN="$token" virtuai logs "$job" --task 1
echo "== job"; VIRTUAI_TOKEN="$token" virtuai job "$job"
echo "== jobs"; virtuai jobs
echo "== usage"; virtuai usage
echo
echo "virtuai is running at $url (state in $home)."
echo "Try: virtuai submit -- echo hi ; virtuai jobs ; virtuai --help"
echo "Stop it with: kill \$(cat $home/server.lock)   (running jobs survive and are taken back at the next 'virtuai up')"
