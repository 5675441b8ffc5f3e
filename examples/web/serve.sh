#!/usr/bin/env bash
# `make serve`: the narration page and its API on http://127.0.0.1:8000/ (Ctrl-C stops it).
#   examples/web/serve.sh [app.py options, e.g. --port 8080 --host 127.0.0.1 --pace 0.5]
#   make serve PORT=8080 HOST=127.0.0.1   (the same, through make)
# The tasks live in an SQLite file, target/web/tasks.db, unless $STORYFLOW_TASKS_STORE or --store
# names another store (make serve STORE=memory): statuses survive a restart, and
# --workers N (make serve WORKERS=2) processes share its one worker.
# Over a redis:// store (make serve STORE=redis://127.0.0.1:6379) it runs what a deployment over
# several machines runs: two API processes, each on its own port (PORT and PORT + 1), which
# register no handler, and two worker processes that speak the narrations, each with a machine
# identity of its own so that both speak at once (app.py --api-processes 2 --worker-processes 2,
# unless the options name another layout).
# The library must be built (`make build`; `make serve` does it first).
set -euo pipefail
cd "$(dirname "$0")/../.."

export STORYFLOW_TASKS_LIB=${STORYFLOW_TASKS_LIB:-$PWD/target/release/libstoryflow_tasks.so}
examples/web/venv.sh
export STORYFLOW_TASKS_STORE=${STORYFLOW_TASKS_STORE:-sqlite:$PWD/target/web/tasks.db}

store=$STORYFLOW_TASKS_STORE
layout_given=no
previous=
for argument in "$@"; do
  case "$previous:$argument" in
    --store:*) store=$argument ;;
    *:--store=*) store=${argument#--store=} ;;
  esac
  case "$argument" in
    --workers|--workers=*|--api-processes|--api-processes=*|--worker-process|--no-worker-process|--worker-processes|--worker-processes=*)
      layout_given=yes ;;
  esac
  previous=$argument
done
layout=()
if [ "${store#redis://}" != "$store" ] && [ "$layout_given" = no ]; then
  layout=(--api-processes 2 --worker-processes 2)
fi

echo "serve.sh: open the URL below in a browser, paste a story (examples/story.txt is one), press Narrate"
mkdir -p target/web
exec .venv/bin/python examples/web/app.py --pace 0.3 "${layout[@]}" "$@"
