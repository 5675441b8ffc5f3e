#!/usr/bin/env bash
# `make test-examples`: runs the Python demo (examples/narrate.py) and the C example
# (examples/c/narrate.c) on a two-chapter text and checks the audio they make,
# with pytest. The C example is built by examples/c/build.sh, which installs
# Debian's libespeak-ng-dev and libcjson-dev when root (else its tests are skipped,
# saying why). The library must be built first (`make build`).
#   examples/run_tests.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}

export STORYFLOW_TASKS_LIB=${STORYFLOW_TASKS_LIB:-$PWD/target/release/libstoryflow_tasks.so}
if [ ! -f "$STORYFLOW_TASKS_LIB" ]; then
  echo "run_tests.sh: $STORYFLOW_TASKS_LIB is missing: run 'make build' first" >&2
  exit 1
fi
examples/venv.sh --with-pytest
exec "$VENV"/bin/pytest -p no:cacheprovider -q -rs examples/tests "$@"
