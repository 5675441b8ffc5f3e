# storyflow-tasks: `make demo` and `make test` are the two commands a newcomer needs.
# Every dependency is installed from here (or the scripts it calls), never by hand.

CARGO     ?= cargo
CC        ?= cc
CXX       ?= c++
PYTHON    ?= python3
PREFIX    ?= /usr/local
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR     := $(firstword $(subst ., ,$(VERSION)))
RELEASE   := target/release
LIB       := $(RELEASE)/libstoryflow_tasks.so
VENV      := .venv
CWARN     := -Wall -Wextra -Werror
CTEST_DIR := target/ctest
VALGRIND  := valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no -q

export STORYFLOW_TASKS_LIB := $(abspath $(LIB))

.PHONY: all build deps venv python-package demo test bench install uninstall clean \
        test-rust test-header test-symbols test-c test-valgrind test-asan test-install \
        test-python test-node test-examples test-stress test-fuzz stress fuzz serve test-web

all: build

## build: the release library (.so with its SONAME link, .a) and the header
build:
	$(CARGO) build --release --locked
	ln -sf libstoryflow_tasks.so $(RELEASE)/libstoryflow_tasks.so.$(MAJOR)

## deps: system packages the tests use (apt-get when root; otherwise says what is missing)
deps:
	@missing=""; for tool in valgrind pkg-config; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (install them, or run as root for apt-get)"; exit 1; fi; \
	fi

## venv: the project's virtualenv with pytest
venv: $(VENV)/bin/pytest
$(VENV)/bin/pytest:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q pytest

