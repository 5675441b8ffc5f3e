#!/usr/bin/env bash
# Installs the storyflow_tasks package into the repository's .venv (made if
# missing). pip builds the Rust library with cargo and puts it inside the wheel.
# `make python-package` runs this; so do the examples' venv scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q ./bindings/python
