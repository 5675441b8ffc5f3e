# storyflow-tasks: `make demo` and `make test` are the two commands a newcomer needs.
# Every dependency is installed from here (or the scripts it calls), never by hand.

CARGO     ?= cargo
RUSTC     ?= rustc
STRIP     ?= strip
CC        ?= cc
CXX       ?= c++
PYTHON    ?= python3
PREFIX    ?= /usr/local
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR     := $(firstword $(subst ., ,$(VERSION)))
RELEASE   := target/release
LIB       := $(RELEASE)/libstoryflow_tasks.so
NATIVE_LIBS := $(RELEASE)/native-static-libs.txt
VENV      := .venv
CWARN     := -Wall -Wextra -Werror
CTEST_DIR := target/ctest
VALGRIND  := valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no -q

export STORYFLOW_TASKS_LIB := $(abspath $(LIB))


.PHONY: build-testing test-readme test-stress test-fuzz test-redis
.PHONY: all build deps venv python-package demo test bench install uninstall clean header lint-rust \
        test-rust test-header test-symbols test-c test-valgrind test-asan test-install \
        test-python lint-python test-node test-examples test-stress test-fuzz stress fuzz serve test-web

all: build

## build: the release library (.so with its SONAME link, .a) and the list of
## system libraries the .a needs (target/release/native-static-libs.txt, for `make install`)
build: $(NATIVE_LIBS)
	$(CARGO) build --release --locked
	ln -sf libstoryflow_tasks.so $(RELEASE)/libstoryflow_tasks.so.$(MAJOR)

# The system libraries a program linking libstoryflow_tasks.a needs too (for the
# .pc and CMake files `make install` writes). They are std's own, since every
# dependency is pure Rust: rustc prints them for an empty static library, which
# takes a fraction of a second, where asking cargo for this crate's would rebuild
# it. test-install links the static library with this list, so a dependency that
# brought a native library of its own would fail there. Written here, at build
# time, because `sudo make install` must not need cargo or rustc.
$(NATIVE_LIBS): Cargo.lock
	@mkdir -p $(RELEASE)/native-libs-probe
	$(RUSTC) --crate-type staticlib --crate-name native_libs_probe --print native-static-libs \
	    -o $(RELEASE)/native-libs-probe/libnative_libs_probe.a - </dev/null 2>&1 \
	  | sed -n 's/.*native-static-libs: //p' | head -n1 > $@.tmp
	@test -s $@.tmp || { echo "rustc printed no native-static-libs"; rm -f $@.tmp; exit 1; }
	@mv $@.tmp $@

## deps: system packages the tests use (apt-get when root; otherwise says what is missing);
## tmux is the 80-column terminal the demo's screen test runs it in, libcjson-dev parses the
## edge-case table for tests/c/test_edge_cases.c, redis-server is the server the Redis store's
## tests start (make test-redis)
deps:
	@missing=""; for tool in valgrind pkg-config cmake tmux redis-server; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -f /usr/include/cjson/cJSON.h ] || missing="$$missing libcjson-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 $$missing >/dev/null; \
	  else echo "missing:$$missing (install them, or run as root for apt-get)"; exit 1; fi; \
	fi

## venv: the project's virtualenv with the Python test and lint tools from PyPI
# The linters are pinned so that a new release never fails a clean tree.
PYTHON_TOOLS := pytest ruff==0.17.5 mypy==2.4.1 auditwheel==6.8.2
venv: $(VENV)/.python-tools
$(VENV)/.python-tools: Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(PYTHON_TOOLS)
	echo $(PYTHON_TOOLS) > $@

## test: everything, as CI runs it from a clean clone
test: deps lint-rust build test-rust test-redis test-header test-symbols test-c test-valgrind test-asan test-install test-readme test-stress test-fuzz test-python test-node test-examples test-web
	@echo "make test: all suites passed"

## lint-rust: rustfmt (the crate and the fuzz crate, rustfmt.toml) and clippy with every warning an error,
## with and without the `testing` feature's hooks (the Redis tests by name: --all-targets leaves
## out a target marked test = false)
lint-rust:
	$(CARGO) fmt --check
	cd fuzz && $(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --features testing -- -D warnings
	$(CARGO) clippy --locked --test redis_store -- -D warnings
	$(CARGO) clippy --locked --test redis_store --features testing -- -D warnings

# The fault tests (tests/faults) load the release library, so it is built first.
test-rust: build
	$(CARGO) test --locked

## test-redis: the Redis store against real redis-server processes that the tests start and stop
## on free ports of 127.0.0.1 (AOF on), with worker processes, SIGKILLs and a server crash
## (not in test-rust: Cargo.toml marks the target test = false, so it needs the server from deps)
test-redis: deps
	$(CARGO) test --locked --test redis_store

## header: regenerates include/storyflow_tasks.h from the doc comments and signatures in src/ffi
## (builds never write it; build.rs generates it into cargo's OUT_DIR)
header:
	CARGO=$(CARGO) PYTHON=$(PYTHON) tests/run_header.sh --write

## test-header: the checked-in header is what the sources generate, and compiles as C99 and C++11
test-header: build
	CARGO=$(CARGO) PYTHON=$(PYTHON) tests/run_header.sh --check
	echo '#include "storyflow_tasks.h"' | $(CC) -std=c99 $(CWARN) -pedantic -Iinclude -x c -c - -o /dev/null
	echo '#include "storyflow_tasks.h"' | $(CXX) -std=c++11 $(CWARN) -pedantic -Iinclude -x c++ -c - -o /dev/null
	mkdir -p $(CTEST_DIR)
	$(CXX) -std=c++11 $(CWARN) -pedantic -Iinclude tests/c/header_cxx.cpp -L$(RELEASE) -lstoryflow_tasks -Wl,-rpath,$(abspath $(RELEASE)) -o $(CTEST_DIR)/header_cxx
	$(CTEST_DIR)/header_cxx

## the shared object exports only sft_ symbols and carries its SONAME and no-unload flag
test-symbols: build
	@extra=$$(nm -D --defined-only $(LIB) | awk '{print $$3}' | grep -v '^sft_' || true); \
	if [ -n "$$extra" ]; then echo "symbols exported beyond sft_: $$extra"; exit 1; fi
	@readelf -d $(LIB) | grep -q 'SONAME.*libstoryflow_tasks.so.$(MAJOR)' || { echo "no SONAME"; exit 1; }
	@readelf -d $(LIB) | grep -q 'NODELETE' || { echo "not linked -z nodelete"; exit 1; }
	@echo "symbols: $$(nm -D --defined-only $(LIB) | grep -c ' T sft_') sft_ functions exported, nothing else; SONAME and NODELETE set"

C_TESTS := $(patsubst tests/c/%.c,%,$(wildcard tests/c/test_*.c))
CTEST_FLAGS := -std=c11 $(CWARN) -g -Iinclude
CTEST_LIBS := -L$(RELEASE) -lstoryflow_tasks -lcjson -lpthread -lm -Wl,-rpath,$(abspath $(RELEASE))

$(CTEST_DIR)/%: tests/c/%.c tests/c/check.h include/storyflow_tasks.h $(LIB)
	@mkdir -p $(CTEST_DIR)
	$(CC) $(CTEST_FLAGS) $< $(CTEST_LIBS) -o $@

$(CTEST_DIR)/%-asan: tests/c/%.c tests/c/check.h include/storyflow_tasks.h $(LIB)
	@mkdir -p $(CTEST_DIR)
	$(CC) $(CTEST_FLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all $< $(CTEST_LIBS) -o $@

# The panic test links a copy built with the `testing` feature, whose hooks panic on purpose.
TESTING_RELEASE := target/testing/release
build-testing:
	$(CARGO) build --release --locked --features testing --target-dir target/testing
	ln -sf libstoryflow_tasks.so $(TESTING_RELEASE)/libstoryflow_tasks.so.$(MAJOR)

$(CTEST_DIR)/panics: tests/c/panics.c tests/c/check.h build-testing
	$(CC) $(CTEST_FLAGS) -DSFT_TESTING $< -L$(TESTING_RELEASE) -lstoryflow_tasks -lpthread -Wl,-rpath,$(abspath $(TESTING_RELEASE)) -o $@

$(CTEST_DIR)/panics-asan: tests/c/panics.c tests/c/check.h build-testing
	$(CC) $(CTEST_FLAGS) -DSFT_TESTING -fsanitize=address,undefined -fno-omit-frame-pointer $< -L$(TESTING_RELEASE) -lstoryflow_tasks -lpthread -Wl,-rpath,$(abspath $(TESTING_RELEASE)) -o $@

$(CTEST_DIR)/unload_dlopen: tests/c/unload_dlopen.c
	@mkdir -p $(CTEST_DIR)
	$(CC) -std=c11 $(CWARN) -g $< -ldl -o $@

test-c: build deps $(addprefix $(CTEST_DIR)/,$(C_TESTS)) $(CTEST_DIR)/unload_dlopen $(CTEST_DIR)/panics
	@for t in $(C_TESTS) unload_dlopen panics; do $(CTEST_DIR)/$$t || exit 1; done

# A forked child reports through a pipe and ends by SIGKILL (tests/c/test_fork.c):
# what the parent's threads owned looks lost there, so its output is silenced;
# the parent, which owns every task, is checked in full.
test-valgrind: build deps $(addprefix $(CTEST_DIR)/,$(C_TESTS)) $(CTEST_DIR)/unload_dlopen $(CTEST_DIR)/panics
	@for t in $(C_TESTS) unload_dlopen panics; do $(VALGRIND) --child-silent-after-fork=yes $(CTEST_DIR)/$$t || { echo "valgrind: $$t failed"; exit 1; }; done

test-asan: build deps $(addsuffix -asan,$(addprefix $(CTEST_DIR)/,$(C_TESTS) panics))
	@for t in $(C_TESTS) panics; do ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 $(CTEST_DIR)/$$t-asan || { echo "asan: $$t failed"; exit 1; }; done

## test-readme: the README's quick-starts are the files the tests build and run
test-readme:
	@check() { awk -v heading="$$1" -v fence="$$2" '$$0 == heading {inside=1} inside && $$0 == fence {code=1; next} code && /^```$$/{exit} code' README.md \
	    | diff -u "$$3" - >/dev/null || { echo "README.md: the code under '$$1' differs from $$3"; exit 1; }; }; \
	check '## C quick-start' '```c' bindings/c/quickstart.c && \
	check '## Node quick-start' '```js' bindings/node/examples/quickstart.js
	@echo "readme: the C and Node quick-starts match their tested files; bindings/python/tests/test_readme.py runs the Python one"

## python-package: the Python binding installed in the venv; pip runs cargo and carries the library inside the wheel
python-package: venv
	VENV=$(VENV) PYTHON=$(PYTHON) bindings/python/install.sh

## lint-python: ruff (lint and format) and mypy --strict on the Python binding; settings in its pyproject.toml
lint-python: venv
	cd bindings/python && ../../$(VENV)/bin/ruff check . && ../../$(VENV)/bin/ruff format --check .
	cd bindings/python && ../../$(VENV)/bin/mypy --strict storyflow_tasks

## test-python: the lint, then the Python suite against the installed package and the library inside it
test-python: lint-python python-package
	env -u STORYFLOW_TASKS_LIB $(VENV)/bin/pytest -q -p no:cacheprovider bindings/python/tests

## serve: the narration page and its API on http://127.0.0.1:8000/ (examples/web): make serve PORT=8080 HOST=127.0.0.1
## over an SQLite task store, target/web/tasks.db (STORE=memory, STORE=sqlite:PATH, or $$STORYFLOW_TASKS_STORE);
## WORKERS=2 serves from two processes sharing that store's one worker; STORE=redis://127.0.0.1:6379 runs two
## API processes (PORT and PORT+1, no handler) and two worker processes, each its own machine identity
# HOST only from the command line: tcsh exports HOST as the machine's name.
serve: build
	examples/web/serve.sh $(if $(PORT),--port '$(PORT)') $(if $(filter command line,$(origin HOST)),--host '$(HOST)') \
	  $(if $(STORE),--store '$(STORE)') $(if $(WORKERS),--workers '$(WORKERS)')

## test-web: the web example's API tests (httpx) and browser tests (Debian's Chromium + playwright-core):
## one process, then make serve's layout over a redis-server the test starts (two API, two worker processes)
test-web: build
	examples/web/run_tests.sh

## demo: narrate examples/story.txt with espeak-ng; WAV files under out/; a voice preview at a higher
## priority jumps the second chapter between two sentences (STORE=sqlite:out/tasks.db: a killed run is taken up
## by the next one)
demo: build
	examples/demo.sh $(if $(STORE),--store '$(STORE)')

## test-examples: the Python demo and the C example narrate a two-chapter text; pytest checks the audio
test-examples: build deps
	examples/run_tests.sh

## stress: the 60-second soak: 8 threads, a task mix, every task and user data accounted for
stress: build
	tests/run_stress.sh

## fuzz: every libFuzzer target for 60 s (FUZZ_SECONDS to change), on stable via RUSTC_BOOTSTRAP=1
fuzz:
	tests/run_fuzz.sh

## test-stress, test-fuzz: the short versions that make test runs
test-stress: build
	tests/run_stress.sh --short

test-fuzz:
	tests/run_fuzz.sh --short

## bench: every benchmark, each beside what it is compared with (the original StoryFlow tasks.py
## design, a bare channel, a one-lock HashMap)
## -> target/bench/results.json and BENCHMARKS.md (figures are reported, never asserted)
bench:
	benches/run.sh

## lint-node: eslint over the Node binding (run_tests.sh runs it too, so test-node lints)
.PHONY: lint-node
lint-node:
	cd bindings/node && npm_config_nodedir=/usr npm ci --no-audit --no-fund --loglevel=error && npm run --silent lint

## test-node: the Node binding (npm ci inside), eslint, every test file once per FFI engine (koffi, ffi-napi)
test-node: build
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "test-node needs node and npm (Node 20)"; exit 1; }
	bindings/node/run_tests.sh

## install: header, shared library with its SONAME links, static library, pkg-config and CMake
## files, from what `make build` built: it calls no cargo, so `sudo make install` works with
## cargo only on the user's PATH. The installed libraries carry no debug info (the build keeps
## it, for profiling: debug = 1 in Cargo.toml).
install:
	@for built in $(LIB) $(RELEASE)/libstoryflow_tasks.a $(NATIVE_LIBS); do \
	  [ -f "$$built" ] || { echo "make install: $$built is missing: run 'make build' first (as yourself; install needs no cargo)"; exit 1; }; \
	done
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/storyflow_tasks.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libstoryflow_tasks.so.$(VERSION)
	$(STRIP) --strip-unneeded $(DESTDIR)$(PREFIX)/lib/libstoryflow_tasks.so.$(VERSION)
	ln -sf libstoryflow_tasks.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libstoryflow_tasks.so.$(MAJOR)
	ln -sf libstoryflow_tasks.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libstoryflow_tasks.so
	install -m 644 $(RELEASE)/libstoryflow_tasks.a $(DESTDIR)$(PREFIX)/lib/
	$(STRIP) --strip-debug $(DESTDIR)$(PREFIX)/lib/libstoryflow_tasks.a
	install -d $(DESTDIR)$(PREFIX)/lib/cmake/storyflow_tasks
	native_libs="$$(cat $(NATIVE_LIBS))"; \
	cmake_libs="$$(echo $$native_libs | sed -e 's/-l//g' -e 's/ /;/g')"; \
	for template in bindings/c/storyflow_tasks.pc.in:pkgconfig/storyflow_tasks.pc \
	                bindings/c/cmake/storyflow_tasksConfig.cmake.in:cmake/storyflow_tasks/storyflow_tasksConfig.cmake \
	                bindings/c/cmake/storyflow_tasksConfigVersion.cmake.in:cmake/storyflow_tasks/storyflow_tasksConfigVersion.cmake; do \
	  sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@MAJOR@|$(MAJOR)|' \
	      -e "s|@NATIVE_STATIC_LIBS@|$$native_libs|" -e "s|@NATIVE_STATIC_LIBS_CMAKE@|$$cmake_libs|" \
	      $${template%%:*} > $(DESTDIR)$(PREFIX)/lib/$${template#*:}; \
	done

## uninstall: removes what `make install` put under PREFIX
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/storyflow_tasks.h $(DESTDIR)$(PREFIX)/lib/libstoryflow_tasks.* \
	      $(DESTDIR)$(PREFIX)/lib/pkgconfig/storyflow_tasks.pc
	rm -rf $(DESTDIR)$(PREFIX)/lib/cmake/storyflow_tasks

## a program built only from the installed copy, through pkg-config, shared and static
## (installed by a make whose PATH has no cargo, as sudo's has not), and the installed .so stripped
INSTALL_TEST := $(abspath target/install-test)
INSTALLED_SO := $(INSTALL_TEST)/lib/libstoryflow_tasks.so.$(VERSION)
test-install: deps build
	rm -rf $(INSTALL_TEST)
	@$(MAKE) -s --no-print-directory install PREFIX=$(INSTALL_TEST) RELEASE=$(INSTALL_TEST)/nothing-built 2>&1 \
	  | grep -q "run 'make build' first" || { echo "install without a build did not say to run 'make build' first"; exit 1; }
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin $(MAKE) -s install PREFIX=$(INSTALL_TEST) CARGO=/no/cargo/on/this/path RUSTC=/no/rustc/on/this/path
	@if readelf -S $(INSTALLED_SO) | grep -q '\.debug_'; then echo "$(INSTALLED_SO) still carries debug info"; exit 1; fi
	@if readelf -S $(INSTALL_TEST)/lib/libstoryflow_tasks.a | grep -q '\.debug_info'; then echo "the installed libstoryflow_tasks.a still carries debug info"; exit 1; fi
	@readelf -d $(INSTALLED_SO) | grep -q 'SONAME.*libstoryflow_tasks.so.$(MAJOR)' || { echo "the installed .so lost its SONAME"; exit 1; }
	PKG_CONFIG_PATH=$(INSTALL_TEST)/lib/pkgconfig; export PKG_CONFIG_PATH; \
	$(CC) -std=c99 $(CWARN) -pedantic bindings/c/quickstart.c $$(pkg-config --cflags --libs storyflow_tasks) \
	      -Wl,-rpath,$(INSTALL_TEST)/lib -o $(INSTALL_TEST)/quickstart && \
	$(CC) -std=c99 $(CWARN) -pedantic bindings/c/quickstart.c $$(pkg-config --cflags storyflow_tasks) \
	      $(INSTALL_TEST)/lib/libstoryflow_tasks.a $$(pkg-config --libs-only-other --static storyflow_tasks) \
	      $$(pkg-config --static --libs-only-l storyflow_tasks | sed 's/-lstoryflow_tasks//') -o $(INSTALL_TEST)/quickstart-static
	env -u STORYFLOW_TASKS_LIB $(INSTALL_TEST)/quickstart | grep -q '"status":"COMPLETED"'
	env -u STORYFLOW_TASKS_LIB $(INSTALL_TEST)/quickstart-static | grep -q '"completed_segments":\[{"segment_id":"chapter-1-1"'
	@ldd $(INSTALL_TEST)/quickstart | grep -q '$(INSTALL_TEST)/lib/libstoryflow_tasks.so.$(MAJOR)'
	cmake -S bindings/c/cmake-consumer -B $(INSTALL_TEST)/cmake-build -DCMAKE_PREFIX_PATH=$(INSTALL_TEST) -DCMAKE_C_FLAGS="$(CWARN)" >/dev/null
	cmake --build $(INSTALL_TEST)/cmake-build >/dev/null
	env -u STORYFLOW_TASKS_LIB $(INSTALL_TEST)/cmake-build/quickstart | grep -q '"status":"COMPLETED"'
	env -u STORYFLOW_TASKS_LIB $(INSTALL_TEST)/cmake-build/quickstart_static | grep -q '"status":"COMPLETED"'
	@echo "install: quickstart built against $(INSTALL_TEST) with pkg-config and with CMake's find_package, shared and static, and ran;" \
	      "installed without cargo on PATH; the installed .so is stripped ($$(stat -c %s $(INSTALLED_SO)) bytes, built $$(stat -c %s $(LIB)))"


clean:
	$(CARGO) clean
	rm -rf $(VENV) out
