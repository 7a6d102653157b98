#!/usr/bin/env bash
# Install virtuai into ./.venv with pinned dependencies (constraints.txt).
# Usage: scripts/install.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "virtuai needs Python >= 3.11; found $(python3 --version)" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# Playwright (dev) drives the system chromium: never let anything fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${extras}"
# Byte-compile the package now, as a non-editable install does: with PYTHONDONTWRITEBYTECODE
# set, an editable install would otherwise compile every module at every `virtuai` call.
.venv/bin/python -m compileall -q src/virtuai
