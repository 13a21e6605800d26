#!/usr/bin/env bash
# Install what the tests need and run every test. From a fresh clone:
#
#   bash scripts/test.sh
#
# 1. pip install -e '.[test]'        Squall plus pytest, mypy, ruff, cent, centrifuge-python
# 2. npm ci in tests/e2e/js          centrifuge-js, ws and playwright-core (locked versions)
# 3. Debian's chromium, if /usr/bin/chromium is missing (headless browser for the demo page)
# 4. ruff check, ruff format --check, mypy (config in pyproject.toml), pytest over tests/
#
# Installs stop at the first failure. The checks all run; the script exits non-zero if any
# failed, and treats "pytest collected no tests" (exit code 5) as a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
CHROMIUM="${SQUALL_CHROMIUM:-/usr/bin/chromium}"

step() { printf '\n==> %s\n' "$*"; }

step "pip install -e '.[test]'"
"$PYTHON" -m pip install --disable-pip-version-check --quiet -e '.[test]'

step "npm ci (tests/e2e/js)"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "node and npm are required (Node 20 or newer) for the end-to-end tests" >&2
    exit 1
fi
(cd tests/e2e/js && npm ci --no-audit --no-fund --loglevel=error)

if [ -x "$CHROMIUM" ]; then
    step "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
    step "apt-get install chromium"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "$CHROMIUM is missing and installing it needs root (apt-get install chromium)" >&2
            exit 1
        fi
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
export SQUALL_CHROMIUM="$CHROMIUM"

failed=()
check() {
    step "$*"
    local rc=0
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        failed+=("$* (exit $rc)")
    fi
}

check "$PYTHON" -m ruff check .
check "$PYTHON" -m ruff format --check .
check "$PYTHON" -m mypy

step "pytest"
rc=0
PYTHONASYNCIODEBUG=1 "$PYTHON" -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    failed+=("pytest collected no tests")
elif [ "$rc" -ne 0 ]; then
    failed+=("pytest (exit $rc)")
fi

echo
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED:"
    printf '  - %s\n' "${failed[@]}"
    exit 1
fi
echo "All checks passed."
