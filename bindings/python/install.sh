#!/usr/bin/env bash
# Installs the storyflow_tasks package into the repository's .venv (made if missing).
# pip builds the wheel into target/python-wheel/ (setup.py runs cargo and puts the
# stripped library inside it), then installs that wheel. When the package in the venv
# was built from the sources as they are now, nothing is rebuilt or reinstalled.
# `make python-package` runs this; so do the examples' venv scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WHEELS=target/python-wheel
STAMP=$VENV/.storyflow-tasks-sources

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

# Everything the wheel is made of: the crate and the Python package (not the tests).
fingerprint=$(find Cargo.toml Cargo.lock build.rs cbindgen.toml src include LICENSE-MIT LICENSE-APACHE \
    bindings/python/setup.py bindings/python/pyproject.toml bindings/python/README.md bindings/python/storyflow_tasks \
    -type f ! -name '*.pyc' ! -name '*.so' -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
installed=$(compgen -G "$VENV/lib/python*/site-packages/storyflow_tasks/libstoryflow_tasks.so" || true)
if [ -n "$installed" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ]; then
  exit 0 # up to date
fi

echo "install.sh: building the storyflow_tasks wheel (cargo builds the library first: a minute or so the first time)" >&2
rm -rf "$WHEELS"
"$VENV/bin/pip" wheel -q --no-deps --wheel-dir "$WHEELS" ./bindings/python
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$WHEELS"/storyflow_tasks-*.whl
echo "$fingerprint" > "$STAMP"
echo "install.sh: installed $(basename "$WHEELS"/storyflow_tasks-*.whl) into $VENV" >&2
