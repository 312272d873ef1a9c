#!/usr/bin/env bash
# npm run demo [-- --json] [-- --log FILE ...]: the whole pipeline on one machine.
#   1. deploy/install.sh (apt packages, npm ci, Kafka jars; idempotent)
#   2. deploy/stack.sh up (Kafka + Redis), timed
#   3. services/demo/main.ts: pipeline processes, a fleet of simulated hosts, the report
# Stack ownership is kept simple: if Kafka was not running before, this script started it and
# stops it at the end (stack.sh down); a stack that was already up is left running.
# Progress goes to stderr and every process logs under .stack/demo/<run>/, so with --json stdout
# holds only the JSON document. Exit status: the demo's (0 = honest hosts attested, tampered alerted).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

bash deploy/install.sh >&2

# Capture first, then match: `status | grep -q` under pipefail can fail on SIGPIPE and would make
# a running stack look stopped (and then be stopped at the end).
started_stack=0
stack_status=$(bash deploy/stack.sh status 2>&1 || true)
case "$stack_status" in
  *'kafka: running'*) ;;
  *) started_stack=1 ;;
esac
t0=$(date +%s%3N)
bash deploy/stack.sh up >&2
t1=$(date +%s%3N)
if [ "$started_stack" = 1 ]; then
  export IMASTREAM_DEMO_STACK_MS=$((t1 - t0))
  trap 'bash deploy/stack.sh down >&2 || true' EXIT
fi

status=0
node --import tsx services/demo/main.ts "$@" || status=$?
exit "$status"
