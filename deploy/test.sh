#!/usr/bin/env bash
# The test command (`npm test`): install what is missing, start the local stack, run every test
# tier, stop the stack again (also on failure or Ctrl-C), and exit with the tests' status.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install.sh

cleanup() { bash deploy/stack.sh down || true; }
trap cleanup EXIT
bash deploy/stack.sh up

status=0
bash deploy/run-tests.sh "${1:-all}" || status=$?
exit "$status"
