#!/usr/bin/env bash
# `make test-web`: the web example's tests.
#   1. the API over real HTTP (pytest + httpx; examples/web/tests), the app in its own process;
#   2. the page in Debian's Chromium, headless, driven by playwright-core (examples/web/e2e):
#      narrate.e2e.mjs (one process; saves target/web/screenshot.png and target/web/cancelled.png),
#      then topology.e2e.mjs (make serve's layout over a redis-server it starts: two API
#      processes, two worker processes).
# It installs what it needs: FastAPI, uvicorn, httpx and pytest into .venv; playwright-core
# from npm (no browser download); Debian's chromium (and redis-server) with apt-get when root.
# Without root and no /usr/bin/chromium, or without node/npm, the browser tests are skipped,
# and without redis-server the topology test, saying why.
# The library must be built first (`make build`).
#   examples/web/run_tests.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/../.."

export STORYFLOW_TASKS_LIB=${STORYFLOW_TASKS_LIB:-$PWD/target/release/libstoryflow_tasks.so}
examples/web/venv.sh --with-pytest

status=0
echo "== web API tests (pytest + httpx against the running app)"
.venv/bin/pytest -p no:cacheprovider -q -rs examples/web/tests "$@" || status=1

echo "== web browser test (Chromium headless + playwright-core)"
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "run_tests.sh: installing Debian's chromium with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
    chromium fonts-liberation fonts-dejavu-core >/dev/null
fi
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "run_tests.sh: installing Debian's redis-server with apt-get (for the topology test)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
    redis-server >/dev/null
fi
missing=""
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ]; then
    missing="$missing $CHROMIUM (apt-get did not install Debian's chromium there)"
  else
    missing="$missing $CHROMIUM (Debian package chromium: run this as root to have it installed, or apt-get install chromium)"
  fi
fi
command -v node >/dev/null || missing="$missing node"
command -v npm >/dev/null || missing="$missing npm"
if [ -n "$missing" ]; then
  echo "SKIPPED: the browser test needs:$missing"
  exit $status
fi
if [ ! -f examples/web/node_modules/playwright-core/package.json ] \
   || [ examples/web/package-lock.json -nt examples/web/node_modules/.package-lock.json ]; then
  (cd examples/web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
CHROMIUM_PATH=$CHROMIUM PYTHON=$PWD/.venv/bin/python node examples/web/e2e/narrate.e2e.mjs || status=1
echo "== web topology test (make serve over redis://: two API processes, two worker processes; Chromium headless)"
CHROMIUM_PATH=$CHROMIUM REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server) \
  node examples/web/e2e/topology.e2e.mjs || status=1
exit $status
