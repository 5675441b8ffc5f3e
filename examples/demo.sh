#!/usr/bin/env bash
# `make demo`: narrates examples/story.txt with espeak-ng, a storyflow-tasks task
# per chapter and a WAV file per sentence under out/, and a voice preview at a higher
# priority while the second chapter is spoken, which it gives way to between two sentences.
#   examples/demo.sh [narrate.py options, e.g. --pace 0.5 or --store sqlite:out/tasks.db] [STORY]
# The library must be built (`make build`; `make demo` does it first).
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
started=$(date +%s%N)

export STORYFLOW_TASKS_LIB=${STORYFLOW_TASKS_LIB:-$PWD/target/release/libstoryflow_tasks.so}
if [ ! -f "$STORYFLOW_TASKS_LIB" ]; then
  echo "demo.sh: $STORYFLOW_TASKS_LIB is missing: run 'make demo' (it builds it first)" >&2
  exit 1
fi
examples/venv.sh

# Chapters left by an earlier run would mix with this one's; but a durable store
# (--store sqlite:...) remembers them, and this run takes them up where they stopped.
store=memory
previous=
for argument in "$@"; do
  case "$previous:$argument" in
    --store:*) store=$argument ;;
    *:--store=*) store=${argument#--store=} ;;
  esac
  previous=$argument
done
if [ "$store" = memory ]; then
  rm -rf out/[0-9][0-9]-*/ out/preview-*/
fi
status=0
"$VENV"/bin/python examples/narrate.py --out out "$@" || status=$?

elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
printf '\ndemo.sh: done in %d.%03d s, setup included. Listen with any player, e.g.:\n' \
  $((elapsed / 1000)) $((elapsed % 1000))
first=$(ls out/[0-9][0-9]-*/*.wav 2>/dev/null | head -n 1 || true)
if [ -n "$first" ]; then
  echo "  aplay $first"
  echo "  aplay out/[0-9]*/*.wav   (the whole story, in order)"
fi
preview=$(ls out/preview-*/*.wav 2>/dev/null | head -n 1 || true)
if [ -n "$preview" ]; then
  echo "  aplay $preview   (the voice preview)"
fi
exit $status
