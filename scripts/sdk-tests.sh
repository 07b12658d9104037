#!/usr/bin/env bash
# Black-box tests of Warden through the official OpenAI SDKs (Python and Node).
#
# Needs the `warden` and `standin` binaries already built (cargo build); their
# directory is $WARDEN_BIN_DIR (default: target/debug, relative to the repo root).
# Installs the pinned SDKs into .venv (Python) and tests/sdk/node/node_modules
# (Node), runs both suites even if the first fails, and exits non-zero if
# either failed.
#
# Usage: scripts/sdk-tests.sh [python|node|all]   (default: all)
# Env:   WARDEN_BIN_DIR   directory holding warden and standin
#        PYTHON           interpreter used to create .venv (default: python3.11, else python3)
#        WARDEN_SDK_KEEP_TMP=1  keep the processes' logs and config after the run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WHICH="${1:-all}"
case "$WHICH" in
  python | node | all) ;;
  *)
    echo "usage: $0 [python|node|all]" >&2
    exit 2
    ;;
esac

export WARDEN_BIN_DIR="${WARDEN_BIN_DIR:-target/debug}"
case "$WARDEN_BIN_DIR" in
  /*) ;;
  *) WARDEN_BIN_DIR="$ROOT/$WARDEN_BIN_DIR" ;;
esac

for bin in warden standin; do
  if [[ ! -x "$WARDEN_BIN_DIR/$bin" ]]; then
    echo "sdk-tests: $WARDEN_BIN_DIR/$bin not found or not executable; build it first (cargo build)" >&2
    exit 2
  fi
done

# The SDKs must never reach a real OpenAI from here, and must not pick up a
# developer's own settings.
unset OPENAI_API_KEY OPENAI_BASE_URL OPENAI_ORG_ID OPENAI_PROJECT_ID OPENAI_ADMIN_KEY || true
export NO_PROXY="${NO_PROXY:+$NO_PROXY,}127.0.0.1,localhost"
export no_proxy="$NO_PROXY"

py_status=skipped
node_status=skipped

# Both functions run in an `if` (so that one suite failing does not stop the
# other); `set -e` does not apply there, hence the explicit `|| return`.
run_python() {
  local py="${PYTHON:-}"
  if [[ -z "$py" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
  fi
  if [[ ! -x .venv/bin/python ]]; then
    echo "sdk-tests: creating .venv with $py"
    "$py" -m venv .venv || return
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    -r tests/sdk/python/requirements.txt || return
  echo "sdk-tests: python suite (openai $(.venv/bin/python -c 'import openai; print(openai.__version__)'))"
  .venv/bin/python -m pytest -q tests/sdk/python
}

run_node() {
  (
    cd tests/sdk/node || exit
    if [[ -f package-lock.json ]]; then
      npm ci --no-audit --no-fund || exit
    else
      npm install --no-audit --no-fund || exit
    fi
    echo "sdk-tests: node suite (openai $(node -p 'require("./node_modules/openai/package.json").version'), node $(node --version))"
    node --test --test-concurrency=1
  )
}

if [[ "$WHICH" == python || "$WHICH" == all ]]; then
  if run_python; then py_status=passed; else py_status="FAILED ($?)"; fi
fi
if [[ "$WHICH" == node || "$WHICH" == all ]]; then
  if run_node; then node_status=passed; else node_status="FAILED ($?)"; fi
fi

echo "sdk-tests: python suite: $py_status; node suite: $node_status"
[[ "$py_status" != FAILED* && "$node_status" != FAILED* ]]
