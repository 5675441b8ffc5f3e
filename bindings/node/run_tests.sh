#!/usr/bin/env bash
# The Node binding's tests: installs the npm dependencies (npm ci), lints
# (eslint), then runs every test file once per FFI engine (koffi, then
# ffi-napi). Builds nothing: it expects `make build` done (the Makefile's
# test-node target runs it first).
# Exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")"

# node-gyp builds ffi-napi against the installed headers (/usr/include/node)
# instead of downloading them: nothing outside the npm registry is fetched.
export npm_config_nodedir="${npm_config_nodedir:-/usr}"

library="${STORYFLOW_TASKS_LIB:-../../target/release/libstoryflow_tasks.so}"
if [ ! -f "$library" ]; then
  echo "run_tests.sh: $library not found: run \`make build\` in the repository first" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error

echo "== storyflow-tasks Node lint (eslint)"
npm run --silent lint

failed=0
for engine in koffi ffi-napi; do
  echo "== storyflow-tasks Node tests, engine: $engine"
  # One file at a time: the npm pack test briefly puts a library copy in the package.
  if ! STORYFLOW_TASKS_ENGINE="$engine" node --test --test-concurrency=1 test/*.test.js; then
    echo "== engine $engine: FAILED" >&2
    failed=1
  fi
done
exit "$failed"
