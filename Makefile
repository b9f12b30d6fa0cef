# permafrost -- build, test and check targets (GNU make).
#
# Every target sets up what it needs on a fresh machine: it assumes only a
# Python >= 3.9 ($(PYTHON)) and a C compiler ($(CC)); everything else comes
# from PyPI into a virtual environment made here (.venv, .venv-san,
# build/venvs/<version>).  `make help` lists the targets.
#
# Rebuilds are cheap: the package is reinstalled into a venv only when a file
# under src/, include/ or python/permafrost/ (or the build files) is newer
# than that venv's stamp, and it is built with --no-build-isolation against
# the setuptools installed once in the venv, so a rebuild needs no network.

SHELL := bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
# Stamps and objects made through pattern rules are kept, never deleted as
# intermediates.
.SECONDARY:

PYTHON ?= python3
VENV ?= .venv
SAN_VENV ?= .venv-san
PIP_FLAGS ?= -q
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

VENV_PY = $(VENV)/bin/python
SAN_PY = $(SAN_VENV)/bin/python

# Everything the installed package is built from.
PKG_SOURCES := $(wildcard src/*.c src/*.h include/*.h \
	python/permafrost/*.c python/permafrost/*.h python/permafrost/*.py \
	python/permafrost/*.pyi python/permafrost/py.typed \
	setup.py pyproject.toml MANIFEST.in)

# --------------------------------------------------------------- venvs

# A venv with the build tools, so that later installs can skip isolation.
%/.stamp-venv:
	rm -rf $*
	$(PYTHON) -m venv $*
	$*/bin/python -m pip install $(PIP_FLAGS) --upgrade pip "setuptools>=61" wheel
	touch $@

# The package with one extra ("none" = no extra), built with -Werror.
# Installing `.[x]` also installs the package itself, so the plain stamp is
# refreshed too: `make test` followed by `make demo` builds once.
$(VENV)/.stamp-pkg-%: $(VENV)/.stamp-venv $(PKG_SOURCES)
	PERMAFROST_WERROR=1 $(VENV_PY) -m pip install $(PIP_FLAGS) \
		--no-build-isolation '.$(if $(filter-out none,$*),[$*])'
	touch $@ $(VENV)/.stamp-pkg-none

# The sanitizer build: ASan + UBSan, in a venv of its own.  No -Werror here:
# gcc's sanitizer instrumentation brings false-positive warnings of its own.
$(SAN_VENV)/.stamp-pkg-test: $(SAN_VENV)/.stamp-venv $(PKG_SOURCES)
	CC="$(CC)" PERMAFROST_SANITIZE=1 $(SAN_PY) -m pip install $(PIP_FLAGS) \
		--no-build-isolation '.[test]'
	touch $@

# --------------------------------------------------------------- Python

.PHONY: help install demo test pytest pytest-fast pysan pythons bench bench-peers bench-build bench-stress bench-objects bench-ordered fuzz-python

help:
	@echo "make demo      build into .venv and run bench/demo.py (DEMO_ARGS=...)"
	@echo "make test      the whole test suite: C unit tests + pytest (PYTEST_ARGS=...)"
	@echo "make ctest     C unit tests (tests/c) with -Werror"
	@echo "make csan      C unit tests under AddressSanitizer + UBSan"
	@echo "make cvalgrind C unit tests under valgrind memcheck"
	@echo "make pysan     fast pytest subset against an ASan + UBSan build (.venv-san)"
	@echo "make wine      C unit tests cross-built with mingw-w64, run under wine"
	@echo "make fuzz-replay  the fuzz corpus (fuzz/corpus) replayed under ASan + UBSan"
	@echo "make fuzz      each libFuzzer target for FUZZ_SECONDS (clang; FUZZ_ARGS=...)"
	@echo "make fuzz-python  the Python layer: atheris if installed, else corpus mutations"
	@echo "make fuzz-coverage  line coverage of the reader code reached by the corpus (gcov)"
	@echo "make pythons   fast pytest subset on every CPython >= 3.9 in ~/.pyenv (PYTHONS=...)"
	@echo "make bench     benchmarks (BENCH_ARGS=...)"
	@echo "make bench-peers  permafrost against LMDB, SQLite, marisa-trie, dbm... (PEERS_ARGS=...)"
	@echo "make bench-build  the streaming Builder at scale, the 20 GB projection (BUILD_ARGS=...)"
	@echo "make bench-stress processes x threads reading one image, every answer checked (STRESS_ARGS=...)"
	@echo "make bench-objects a Python trie and a numpy array frozen, vs objects and pickled copies (OBJECTS_ARGS=...)"
	@echo "make bench-ordered the ordered key index vs marisa-trie and a Python trie (ORDERED_ARGS=...)"
	@echo "make install   just build and install into .venv"
	@echo "make clean     remove build outputs, venvs and caches"

install: $(VENV)/.stamp-pkg-none

demo: $(VENV)/.stamp-pkg-none
	$(VENV_PY) bench/demo.py $(DEMO_ARGS)

bench: $(VENV)/.stamp-pkg-bench
	$(VENV_PY) bench/run.py $(BENCH_ARGS)

# permafrost against LMDB, SQLite, marisa-trie, dbm, pickle copies, fork
# copy-on-write, UltraDict, pyarrow IPC, Ray and a Manager dict: latency,
# attach, memory and throughput against the number of workers, prefix
# queries, a nested hash tree, and PNG charts next to the table
# (bench/peers.py; PEERS_ARGS=--quick, --size N, --workers N, --repeat N,
# --seconds S, --tree-size N, --only NAMES).
PEERS_ARGS ?=
# The heavier contenders are installed one by one, each where it can be:
# one without a wheel for this Python or platform is skipped (the table
# names it and why), not the whole benchmark.
PEERS_OPTIONAL ?= pyarrow UltraDict ray
bench-peers: $(VENV)/.stamp-pkg-bench
	@for p in $(PEERS_OPTIONAL); do \
		$(VENV_PY) -m pip install $(PIP_FLAGS) "$$p" || \
			echo "bench-peers: $$p did not install: its contender is skipped"; \
	done
	$(VENV_PY) bench/peers.py $(PEERS_ARGS)

# The Python layer under fuzzed images: coverage-guided with atheris when it
# is installed in the venv, else seeded mutations of the corpus.
fuzz-python: $(VENV)/.stamp-pkg-test
	@if $(VENV_PY) -c "import atheris" 2>/dev/null; then \
		mkdir -p $(FUZZ_DIR)/corpus-python; \
		cp -n fuzz/corpus/read/* $(FUZZ_DIR)/corpus-python/ 2>/dev/null || true; \
		$(VENV_PY) fuzz/fuzz_python.py -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 $(FUZZ_ARGS) $(FUZZ_DIR)/corpus-python; \
	else \
		$(VENV_PY) fuzz/fuzz_python.py --mutate 5000; \
	fi

bench-build: $(VENV)/.stamp-pkg-bench
	$(VENV_PY) bench/build.py $(BUILD_ARGS)

bench-stress: $(VENV)/.stamp-pkg-bench
	$(VENV_PY) bench/stress.py $(STRESS_ARGS)

# Objects and arrays (issue 6): a pure-Python trie of user class instances
# and a numpy array, frozen, against the same as Python objects and pickled
# copies (bench/objects.py; OBJECTS_ARGS=--quick, --words N, --array-mb M).
# numpy comes with the test extra, which the bench extra does not have.
OBJECTS_ARGS ?=
bench-objects: $(VENV)/.stamp-pkg-test
	$(VENV_PY) bench/objects.py $(OBJECTS_ARGS)

# The ordered key index (issue 5): freeze(ordered=True) against marisa-trie
# (RecordTrie, mmap) and a pure-Python dict-of-dicts trie on 2M words and
# phrases: build, size and index overhead, lookups, prefix enumeration,
# longest-prefix scans, PSS of workers (bench/ordered.py; ORDERED_ARGS=--quick,
# --size N, --repeat N, --workers N).
ORDERED_ARGS ?=
bench-ordered: $(VENV)/.stamp-pkg-bench
	$(VENV_PY) bench/ordered.py $(ORDERED_ARGS)

# THE test command: C unit tests, then the whole pytest suite.
test: $(VENV)/.stamp-pkg-test
	$(MAKE) --no-print-directory ctest
	$(VENV_PY) -m pytest -q tests $(PYTEST_ARGS)

# pytest alone, and the fast subset (used by `make pythons`).
pytest: $(VENV)/.stamp-pkg-test
	$(VENV_PY) -m pytest -q tests $(PYTEST_ARGS)

pytest-fast: $(VENV)/.stamp-pkg-test
	$(VENV_PY) -m pytest -q -m "not slow" tests $(PYTEST_ARGS)

# The sanitizer runtimes must be loaded before the interpreter starts: the
# interpreter itself is not instrumented.  CPython leaks by design at exit,
# hence detect_leaks=0; PYTHONMALLOC=malloc sends object memory through ASan
# so that overflows and use-after-free on Python objects are caught too.
# pytest runs with -s: a report written to file descriptor 2 by a dying
# process would be lost with pytest's capture (and gcc's combined ASan+UBSan
# runtime ignores UBSan's log_path).  The output is kept in build/pysan.log
# and a report found there fails the run even if pytest passed (a pool
# worker that died of it, say).
# With clang, set ASAN_LIB/UBSAN_LIB to its libclang_rt runtimes.
ASAN_LIB ?= $(shell $(CC) -print-file-name=libasan.so)
UBSAN_LIB ?= $(shell $(CC) -print-file-name=libubsan.so)
SAN_LOG := build/pysan.log
SAN_REPORT := ERROR: AddressSanitizer|: runtime error: |SUMMARY: (Address|UndefinedBehavior)Sanitizer

pysan: $(SAN_VENV)/.stamp-pkg-test
	@for lib in "$(ASAN_LIB)" "$(UBSAN_LIB)"; do \
		if [ ! -f "$$lib" ]; then \
			echo "pysan: sanitizer runtime '$$lib' not found (set ASAN_LIB / UBSAN_LIB)" >&2; \
			exit 1; \
		fi; \
	done
	@mkdir -p $(dir $(SAN_LOG))
	@set -o pipefail; rc=0; \
	LD_PRELOAD="$(ASAN_LIB) $(UBSAN_LIB)" \
	ASAN_OPTIONS=detect_leaks=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	PYTHONMALLOC=malloc \
	HYPOTHESIS_PROFILE=sanitize \
		$(SAN_PY) -m pytest -x -q -s -p no:cacheprovider -m "not slow" tests $(PYTEST_ARGS) \
		2>&1 | tee $(SAN_LOG) || rc=$$?; \
	if grep -qE '$(SAN_REPORT)' $(SAN_LOG); then \
		echo "pysan: sanitizer report(s) in the output (kept in $(SAN_LOG))" >&2; exit 1; \
	fi; \
	exit $$rc

# Every CPython >= 3.9 found (pyenv installs by default; or PYTHONS="paths"),
# each in its own venv build/venvs/<version>, running the fast subset.
# PYTHONS_EXCLUDE="3.11.7 ..." skips those versions (CI skips the python3
# that `make test` already ran).
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHONS_EXCLUDE ?=
PYTHONS ?= $(shell ls -d $(PYENV_ROOT)/versions/*/bin/python3 2>/dev/null | sort -V)
# Prints e.g. 3.12.1 (3.13.0t when free-threaded), or nothing when the
# interpreter is not a CPython >= 3.9.
VERSION_PROBE := import sys, sysconfig; \
	ok = sys.implementation.name == "cpython" and sys.version_info >= (3, 9); \
	ft = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""; \
	print("%d.%d.%d%s" % (sys.version_info[:3] + (ft,)) if ok else "")

pythons:
	@tested=""; failed=""; \
	for py in $(PYTHONS); do \
		ver=$$("$$py" -c '$(VERSION_PROBE)' 2>/dev/null) || ver=""; \
		if [ -z "$$ver" ]; then echo "pythons: skipping $$py (not CPython >= 3.9)"; continue; fi; \
		case " $(PYTHONS_EXCLUDE) " in *" $$ver "*) echo "pythons: skipping $$py ($$ver excluded)"; continue;; esac; \
		echo "=============== pythons: CPython $$ver ($$py)"; \
		if $(MAKE) --no-print-directory PYTHON="$$py" VENV="build/venvs/$$ver" pytest-fast; then \
			tested="$$tested $$ver"; \
		else \
			failed="$$failed $$ver"; \
		fi; \
	done; \
	if [ -z "$$tested$$failed" ]; then \
		echo "pythons: no CPython >= 3.9 to test under $(PYENV_ROOT)/versions; nothing to do (set PYTHONS=...)"; \
		exit 0; \
	fi; \
	echo "pythons: passed:$${tested:- none}"; \
	if [ -n "$$failed" ]; then echo "pythons: FAILED:$$failed" >&2; exit 1; fi

# --------------------------------------------------------------- C tests
#
# Each tests/c/test_*.c is linked with every src/*.c (and any other .c in
# tests/c, a shared test helper) into one program per test; a program passes
# when it exits 0.  Three builds of the same tests, each in its own folder:
#   build/c     native, -Werror            (make ctest)
#   build/csan  native, ASan + UBSan       (make csan)
#   build/win   mingw-w64, run under wine  (make wine)

SRC_C := $(sort $(wildcard src/*.c))
CTEST_SRC := $(sort $(wildcard tests/c/test_*.c))
CTEST_SUPPORT := $(filter-out $(CTEST_SRC),$(sort $(wildcard tests/c/*.c)))

PF_CPPFLAGS := -Iinclude -Isrc
CTEST_CFLAGS ?= -std=c11 -Wall -Wextra -Werror -O1 -g
# shm_open: in libc since glibc 2.34, in librt before (an empty stub after).
# -pthread: verify's threads (src/os.c); in libc since glibc 2.34.
CTEST_LDLIBS ?= -lm -pthread $(if $(filter Linux,$(shell uname -s)),-lrt)
SAN_FLAGS ?= -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CTEST_TIMEOUT ?= 600
# A hung test program fails instead of hanging the run (coreutils timeout).
RUN_LIMIT = $(if $(shell command -v timeout 2>/dev/null),timeout $(CTEST_TIMEOUT))

MINGW_CC ?= x86_64-w64-mingw32-gcc
WIN_CFLAGS ?= -std=c11 -Wall -Wextra -Werror -O1 -g
WIN_LDFLAGS ?= -static
WIN_LDLIBS ?= -lbcrypt -lm
WINE ?= $(firstword $(shell command -v wine64 wine 2>/dev/null) $(wildcard /usr/lib/wine/wine64))
WINE_PREFIX := $(CURDIR)/build/wine-prefix
# No debug chatter, and no offer to install Mono/Gecko into the fresh prefix.
WINE_ENV = WINEPREFIX="$(WINE_PREFIX)" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="

# $(call c_build,NAME,DIR,CC,CFLAGS,LDFLAGS,LDLIBS,EXE_SUFFIX)
define c_build
$(1)_OBJS := $$(patsubst %.c,$(2)/obj/%.o,$$(SRC_C) $$(CTEST_SUPPORT))
$(1)_TOBJS := $$(patsubst %.c,$(2)/obj/%.o,$$(CTEST_SRC))
$(1)_BINS := $$(patsubst tests/c/%.c,$(2)/%$(7),$$(CTEST_SRC))

$$($(1)_OBJS) $$($(1)_TOBJS): $(2)/obj/%.o: %.c
	@mkdir -p $$(@D)
	$(3) $(4) $$(PF_CPPFLAGS) -MMD -MP -c $$< -o $$@

$$($(1)_BINS): $(2)/%$(7): $(2)/obj/tests/c/%.o $$($(1)_OBJS)
	$(3) $(4) $(5) $$^ -o $$@ $(6)

-include $$(patsubst %.o,%.d,$$($(1)_OBJS) $$($(1)_TOBJS))
endef

$(eval $(call c_build,NATIVE,build/c,$(CC),$(CTEST_CFLAGS),,$(CTEST_LDLIBS),))
$(eval $(call c_build,SAN,build/csan,$(CC),$(CTEST_CFLAGS) $(SAN_FLAGS),,$(CTEST_LDLIBS),))
$(eval $(call c_build,WIN,build/win,$(MINGW_CC),$(WIN_CFLAGS),$(WIN_LDFLAGS),$(WIN_LDLIBS),.exe))

# $(call run_c_tests,LABEL,PROGRAMS,COMMAND PREFIX): runs them all, then
# fails if any failed (so one run reports every failing program).
define run_c_tests
	@progs="$(2)"; \
	if [ -z "$$progs" ]; then echo "$(1): no tests/c/test_*.c found" >&2; exit 1; fi; \
	passed=0; failed=""; \
	for t in $$progs; do \
		echo "--- $(1): $$t"; \
		if $(3) $$t; then \
			passed=$$((passed + 1)); \
		else \
			rc=$$?; echo "--- $(1): FAIL $$t (exit status $$rc)" >&2; failed="$$failed $$t"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "$(1): FAILED:$$failed" >&2; exit 1; fi; \
	echo "$(1): all $$passed C test programs passed"
endef

.PHONY: ctest csan cvalgrind wine

ctest: $(NATIVE_BINS)
	$(call run_c_tests,ctest,$(NATIVE_BINS),$(RUN_LIMIT))

# The native C tests under valgrind's memcheck: uninitialised reads and
# leaks that ASan does not see. Any error or definite leak fails.
VALGRIND ?= valgrind
cvalgrind: $(NATIVE_BINS)
	@command -v $(VALGRIND) >/dev/null 2>&1 || { echo "cvalgrind: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
	$(call run_c_tests,cvalgrind,$(NATIVE_BINS),$(VALGRIND) -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)

csan: $(SAN_BINS)
	$(call run_c_tests,csan,$(SAN_BINS),ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:check_initialization_order=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $(RUN_LIMIT))

# The prefix is made once (a few seconds), inside build/ so that the run
# touches nothing outside the tree.
$(WINE_PREFIX)/.stamp:
	@if [ -z "$(WINE)" ]; then echo "wine: no wine64 or wine found (apt-get install wine64 wine)" >&2; exit 1; fi
	rm -rf $(WINE_PREFIX)
	mkdir -p $(WINE_PREFIX)
	$(WINE_ENV) $(WINE) wineboot --init
	touch $@

wine: $(WIN_BINS) $(WINE_PREFIX)/.stamp
	$(call run_c_tests,wine,$(WIN_BINS),$(WINE_ENV) $(RUN_LIMIT) $(WINE))

# --------------------------------------------------------------- fuzzing
#
# fuzz/fuzz_<target>.c are libFuzzer targets (see fuzz/README.md).
#   make fuzz-replay   each target's committed corpus, fuzz/corpus/<target>/,
#                      run through fuzz/replay.c (no libFuzzer) under ASan +
#                      UBSan with $(CC): part of CI
#   make fuzz          each target under libFuzzer (clang) for FUZZ_SECONDS,
#                      on a working copy of its corpus in build/fuzz/; new
#                      inputs stay there, crashes go to build/fuzz/crashes/

FUZZ_TARGETS := read roundtrip
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_ARGS ?=
FUZZ_DIR := build/fuzz
FUZZ_DEPS := $(SRC_C) $(wildcard src/*.h include/*.h fuzz/*.h tests/c/*.h)
FUZZ_CPPFLAGS := $(PF_CPPFLAGS) -Itests/c
REPLAY_CFLAGS ?= -std=c11 -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
LIBFUZZER_CFLAGS ?= -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_MAX_LEN ?= 4096

$(FUZZ_DIR)/replay-%: fuzz/replay.c fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(CC) $(REPLAY_CFLAGS) $(FUZZ_CPPFLAGS) fuzz/replay.c fuzz/fuzz_$*.c $(SRC_C) -o $@ -lm -pthread

$(FUZZ_DIR)/fuzz-%: fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(@D)
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "fuzz: $(FUZZ_CC) not found (apt-get install clang)" >&2; exit 1; }
	$(FUZZ_CC) $(LIBFUZZER_CFLAGS) $(FUZZ_CPPFLAGS) fuzz/fuzz_$*.c $(SRC_C) -o $@ -lm -pthread

# make fuzz-coverage: the line coverage of the reader code (src/read.c,
# image.c, verify.c, hash.c) that replaying the committed corpora reaches,
# with gcc's gcov: builds each source apart, so that gcov names them.
COV_DIR := $(FUZZ_DIR)/coverage
COV_SRC := read image verify hash
COV_CFLAGS := -std=c11 -O0 -g --coverage

fuzz-coverage: $(FUZZ_DEPS) fuzz/replay.c $(patsubst %,fuzz/fuzz_%.c,$(FUZZ_TARGETS))
	@rm -rf $(COV_DIR) && mkdir -p $(COV_DIR)
	@set -e; for f in $(SRC_C); do \
		$(CC) $(COV_CFLAGS) $(FUZZ_CPPFLAGS) -c $$f -o $(COV_DIR)/$$(basename $$f .c).o; \
	done; \
	for t in $(FUZZ_TARGETS); do \
		$(CC) $(COV_CFLAGS) $(FUZZ_CPPFLAGS) fuzz/replay.c fuzz/fuzz_$$t.c \
			$(COV_DIR)/*.o -o $(COV_DIR)/replay-$$t -lm -pthread; \
		$(COV_DIR)/replay-$$t -q fuzz/corpus/$$t; \
	done; \
	cd $(COV_DIR) && for f in $(COV_SRC); do \
		printf '%-14s' "src/$$f.c"; \
		gcov -n -o . ../../../src/$$f.c 2>/dev/null | \
			awk '/^File .*src\/'"$$f"'\.c/ {hit=1; next} hit && /^Lines executed/ {print; exit}'; \
	done

.PHONY: fuzz fuzz-replay fuzz-coverage

fuzz-replay: $(patsubst %,$(FUZZ_DIR)/replay-%,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "--- fuzz-replay: $$t"; \
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			$(FUZZ_DIR)/replay-$$t -q fuzz/corpus/$$t; \
	done

fuzz: $(patsubst %,$(FUZZ_DIR)/fuzz-%,$(FUZZ_TARGETS))
	@set -e; mkdir -p $(FUZZ_DIR)/crashes; for t in $(FUZZ_TARGETS); do \
		echo "=============== fuzz: $$t for $(FUZZ_SECONDS) s"; \
		mkdir -p $(FUZZ_DIR)/corpus-$$t; \
		cp -n fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus-$$t/ 2>/dev/null || true; \
		$(FUZZ_DIR)/fuzz-$$t -max_total_time=$(FUZZ_SECONDS) \
			-max_len=$(FUZZ_MAX_LEN) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/crashes/$$t- $(FUZZ_ARGS) \
			$(FUZZ_DIR)/corpus-$$t; \
	done

# --------------------------------------------------------------- cleaning

.PHONY: clean
clean:
	rm -rf build dist $(VENV) $(SAN_VENV) .pytest_cache .hypothesis
	rm -rf python/*.egg-info *.egg-info
	rm -f python/permafrost/*.so python/permafrost/*.pyd
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
