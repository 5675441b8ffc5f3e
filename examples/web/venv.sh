#!/usr/bin/env bash
# Makes (or reuses) the project's .venv with what the web example needs: what the
# demo needs (examples/venv.sh: espeakng-loader and the storyflow_tasks package),
# then FastAPI, uvicorn (with uvloop, its fast event loop; the app uses h11 as its
# HTTP parser, for its header size limit) and httpx from PyPI. The library must be built (`make build`).
#   examples/web/venv.sh [--with-pytest]
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv

library=${STORYFLOW_TASKS_LIB:-$PWD/target/release/libstoryflow_tasks.so}
if [ ! -f "$library" ]; then
  echo "examples/web: $library is missing: run 'make build' first ('make serve' and 'make test-web' do)" >&2
  exit 1
fi

examples/venv.sh "$@"
wanted=()
"$VENV/bin/python" -c 'import fastapi' 2>/dev/null || wanted+=('fastapi>=0.110,<1')
"$VENV/bin/python" -c 'import uvicorn' 2>/dev/null || wanted+=('uvicorn>=0.30,<1')
"$VENV/bin/python" -c 'import uvloop' 2>/dev/null || wanted+=('uvloop>=0.19,<1')
"$VENV/bin/python" -c 'import httpx' 2>/dev/null || wanted+=('httpx>=0.27,<1')
if [ ${#wanted[@]} -gt 0 ]; then
  echo "web/venv.sh: installing ${wanted[*]} into $VENV" >&2
  "$VENV/bin/pip" install -q "${wanted[@]}"
fi
