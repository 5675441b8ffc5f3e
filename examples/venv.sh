#!/usr/bin/env bash
# Makes (or reuses) the project's virtualenv, .venv ($VENV if set), with what the examples need:
# espeakng-loader from PyPI (libespeak-ng and its voice data, no root needed) and
# the storyflow_tasks Python package (bindings/python/install.sh), reinstalled only
# when its sources changed.
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

# The package is reinstalled only when what it is built from changed: pip rebuilding an
# unchanged package took most of a warm `make demo`. The stamp is a digest of those
# sources (the Rust crate, the Python package, its build files) and of the venv's Python;
# it is written once the install succeeded, so a failed install is tried again next time.
stamp=$VENV/.storyflow_tasks-sources.sha256
sources_digest() {
  {
    "$VENV/bin/python" -c 'import sys; print(sys.version)'
    find Cargo.toml Cargo.lock build.rs cbindgen.toml src include \
         bindings/python/setup.py bindings/python/pyproject.toml bindings/python/install.sh \
         bindings/python/storyflow_tasks \
         -type f ! -name '*.pyc' ! -name 'libstoryflow_tasks.*' -print0 2>/dev/null |
      LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
digest=$(sources_digest)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] &&
   "$VENV/bin/python" -I -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("storyflow_tasks") is None)' 2>/dev/null; then
  exit 0 # installed from these very sources
fi
echo "venv.sh: installing the storyflow_tasks package into $VENV (its sources changed)" >&2
rm -f "$stamp"
bash "$installer"
echo "$digest" >"$stamp"
