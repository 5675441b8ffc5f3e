#!/bin/sh
# The C header as the sources generate it (build.rs writes it into cargo's OUT_DIR).
#   tests/run_header.sh --check   fails, with a diff, when include/storyflow_tasks.h differs
#   tests/run_header.sh --write   copies it to include/storyflow_tasks.h (`make header`)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
CHECKED_IN="$ROOT/include/storyflow_tasks.h"

case "${1:-}" in
  --check|--write) ;;
  *) echo "usage: $0 --check|--write" >&2; exit 2 ;;
esac

# The build prints where this package's build script put its output, fresh or not.
out_dir=$(cd "$ROOT" && "$CARGO" build --release --locked --message-format=json-render-diagnostics \
  | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "build-script-executed" and "#storyflow-tasks@" in message["package_id"]:
        print(message["out_dir"])
')
generated="$out_dir/storyflow_tasks.h"
[ -n "$out_dir" ] && [ -s "$generated" ] || { echo "the build generated no header (looked for $generated)" >&2; exit 1; }

if [ "$1" = --write ]; then
  cp "$generated" "$CHECKED_IN"
  echo "header: include/storyflow_tasks.h regenerated"
elif ! diff -u "$CHECKED_IN" "$generated"; then
  echo "include/storyflow_tasks.h is stale: the sources generate the header above; run 'make header' and commit it" >&2
  exit 1
fi
