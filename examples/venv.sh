#!/usr/bin/env bash
# Makes (or reuses) the project's virtualenv, .venv ($VENV if set), with what the examples need:
# espeakng-loader from PyPI (libespeak-ng and its voice data, no root needed) and
# the storyflow_tasks Python package (bindings/python/install.sh, which skips an
# up-to-date install).
#   examples/venv.sh [--with-pytest]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
export VENV # bindings/python/install.sh installs into the same one
ESPEAKNG_LOADER='espeakng-loader>=0.2.4,<0.3'

if [ ! -x "$VENV/bin/python" ]; then
  echo "venv.sh: making the virtualenv $VENV with $PYTHON" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
wanted=()
"$VENV/bin/python" -c 'import espeakng_loader' 2>/dev/null || wanted+=("$ESPEAKNG_LOADER")
if [ "${1:-}" = --with-pytest ]; then
  "$VENV/bin/python" -c 'import pytest' 2>/dev/null || wanted+=(pytest)
fi
if [ ${#wanted[@]} -gt 0 ]; then
  echo "venv.sh: installing ${wanted[*]} into $VENV" >&2
  "$VENV/bin/pip" install -q "${wanted[@]}"
fi

installer=bindings/python/install.sh
if [ ! -f "$installer" ]; then
  echo "venv.sh: $installer is missing: the Python package storyflow_tasks cannot be installed" >&2
  exit 1
fi

# install.sh rebuilds and reinstalls the package only when its sources changed.
bash "$installer"
