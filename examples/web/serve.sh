#!/usr/bin/env bash
# `make serve`: the narration page and its API on http://127.0.0.1:8000/ (Ctrl-C stops it).
#   examples/web/serve.sh [app.py options, e.g. --port 8080 --host 127.0.0.1 --pace 0.5]
#   make serve PORT=8080 HOST=127.0.0.1   (the same, through make)
# The tasks live in an SQLite file, target/web/tasks.db, unless $STORYFLOW_TASKS_STORE or --store
# names another store (make serve STORE=memory): statuses survive a restart, and
# --workers N (make serve WORKERS=2) processes share its one worker.
# The library must be built (`make build`; `make serve` does it first).
set -euo pipefail
cd "$(dirname "$0")/../.."

export STORYFLOW_TASKS_LIB=${STORYFLOW_TASKS_LIB:-$PWD/target/release/libstoryflow_tasks.so}
examples/web/venv.sh
echo "serve.sh: open the URL below in a browser, paste a story (examples/story.txt is one), press Narrate"
export STORYFLOW_TASKS_STORE=${STORYFLOW_TASKS_STORE:-sqlite:$PWD/target/web/tasks.db}
mkdir -p target/web
exec .venv/bin/python examples/web/app.py --pace 0.3 "$@"
