#!/usr/bin/env bash
# Builds the C example, examples/c/narrate.c, into target/c-examples/narrate.
#
# It links the storyflow-tasks library (`make build` first) and Debian's
# libespeak-ng-dev and libcjson-dev, which it installs with apt-get when run as
# root. Without them and without root it says what is missing and exits 77
# (the usual "skipped" code), so a caller can tell "cannot build here" apart
# from a build error (any other non-zero code).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
CC=${CC:-cc}
lib_dir=$root/target/release
out_dir=$root/target/c-examples

if [ ! -f "$lib_dir/libstoryflow_tasks.so" ]; then
  echo "build.sh: $lib_dir/libstoryflow_tasks.so is missing: run 'make build' first" >&2
  exit 1
fi

headers_present() {
  printf '#include <espeak-ng/espeak_ng.h>\n#include <cjson/cJSON.h>\nint main(void){return 0;}\n' |
    "$CC" -x c - -o /dev/null -lespeak-ng -lcjson >/dev/null 2>&1
}

if ! headers_present; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "build.sh: installing libespeak-ng-dev and libcjson-dev with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libespeak-ng-dev libcjson-dev >/dev/null
  fi
  if ! headers_present; then
    echo "build.sh: the C example needs Debian's libespeak-ng-dev and libcjson-dev" \
         "(run as root to have them installed, or: sudo apt-get install libespeak-ng-dev libcjson-dev)" >&2
    exit 77
  fi
fi

mkdir -p "$out_dir"
"$CC" -std=c11 -O2 -g -Wall -Wextra -Werror -I"$root/include" \
  examples/c/narrate.c -o "$out_dir/narrate" \
  -L"$lib_dir" -lstoryflow_tasks -lespeak-ng -lcjson -Wl,-rpath,"$lib_dir"
echo "$out_dir/narrate"
