#!/usr/bin/env bash
# Runs the test files of one tier with node's test runner (Node 20's --test takes no globs, so
# the files are listed here). Tiers: unit (no services), integration (real Kafka, Redis, swtpm),
# all. The stack must already be up for integration tests: deploy/test.sh does that.
set -euo pipefail
cd "$(dirname "$0")/.."

tier=${1:-all}
case "$tier" in
  unit) files=$(find test -name '*.test.ts' -not -path 'test/integration/*' | sort) ;;
  integration) files=$(find test/integration -name '*.test.ts' 2>/dev/null | sort) ;;
  all) files=$(find test -name '*.test.ts' | sort) ;;
  *) echo "usage: $0 unit|integration|all" >&2; exit 2 ;;
esac

if [ -z "$files" ]; then
  echo "run-tests: no test files for tier '$tier'" >&2
  exit 1
fi

# One file at a time: integration tests share one broker on 2 cores. A test that hangs fails after
# 10 minutes instead of using up CI's time.
# shellcheck disable=SC2086
exec node --import tsx --test --test-reporter=spec --test-concurrency=1 --test-timeout=600000 $files
