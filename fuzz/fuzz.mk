# fuzz/fuzz.mk - fuzzing rules; the top-level Makefile does `include fuzz/fuzz.mk`.
#
#   make fuzz-build    libFuzzer targets in build/fuzz/<target> (clang)
#   make fuzz          each target for $(FUZZ_SECONDS) s (default 60), one at a
#                      time, on a copy of its corpus in build/fuzz/corpus/<target>;
#                      fails if a target finds a crash (artifacts in
#                      build/fuzz/artifacts/<target>/)
#   make fuzz-smoke    the same for 10 s each (CI)
#   make fuzz-replay   replays fuzz/regressions/<target>/* and fuzz/corpus/<target>/*
#                      through a plain gcc + ASan/UBSan build (no libFuzzer runtime)
#   make fuzz-afl      AFL++ builds in build/fuzz/afl/<target> (skipped without
#                      afl-clang-fast); make fuzz-afl-run AFL_TARGET=fuzz_frame runs one
#   make fuzz-seeds    regenerates fuzz/corpus/ with fuzz/make_seeds.py
#
# FUZZ_EXTRA=-DFZ_ALLOW_KNOWN_BUGS (which rebuilds the targets) lets fuzz_conn run
# past reported, not yet fixed bugs; FUZZ_OPTS adds libFuzzer flags.
#
# Each target is one translation unit: fuzz/fuzz_<x>.c does #include "../src/ws.c".

FUZZ_TARGETS  = fuzz_request fuzz_response fuzz_frame fuzz_utf8 fuzz_close fuzz_conn
# permessage-deflate's target needs zlib (WS_ZLIB, from the Makefile).
ifeq ($(WS_ZLIB),1)
FUZZ_TARGETS += fuzz_deflate
endif
# Per-target flags and libraries.
FUZZ_LIBS_fuzz_deflate = -DWS_ENABLE_ZLIB=1 -lz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_RSS_MB  ?= 2048
FUZZ_OPTS    ?=
FUZZ_EXTRA   ?=
FUZZ_DIR      = build/fuzz
FUZZ_WARN     = -std=c99 -Wall -Wextra -Wpedantic -Werror
FUZZ_CFLAGS   = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -g -O1 $(FUZZ_WARN) -Iinclude $(FUZZ_EXTRA)
FUZZ_DEPS     = fuzz/fuzz_common.h src/ws.c include/ws.h
REPLAY_CC    ?= gcc
REPLAY_CFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer -g -O1 $(FUZZ_WARN) -Iinclude
AFL_CC       ?= afl-clang-fast
AFL_TARGET   ?= fuzz_frame

# Longest input per target: a frame header with some payload, a request
# head up to the default 8 KiB limit, a close payload just past 125.
FUZZ_MAXLEN_fuzz_request  = 9000
FUZZ_MAXLEN_fuzz_response = 9000
FUZZ_MAXLEN_fuzz_frame    = 512
FUZZ_MAXLEN_fuzz_utf8     = 1024
FUZZ_MAXLEN_fuzz_close    = 256
FUZZ_MAXLEN_fuzz_conn     = 8192
FUZZ_MAXLEN_fuzz_deflate  = 4096

.PHONY: fuzz fuzz-build fuzz-smoke fuzz-replay fuzz-afl fuzz-afl-run fuzz-seeds

# The fuzzers' own configuration stamp (see CONFIG_STAMP in the Makefile):
# a change of compiler or flags (FUZZ_EXTRA included) rebuilds them.
FUZZ_STAMP = $(FUZZ_DIR)/config.stamp
FUZZ_VARS  = FUZZ_CC FUZZ_CFLAGS REPLAY_CC REPLAY_CFLAGS
$(FUZZ_STAMP): $(call stamp_force,$(FUZZ_STAMP),$(FUZZ_VARS))
	@$(call stamp_write,$@,$(FUZZ_VARS))

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_DEPS) $(FUZZ_STAMP)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< -o $@ $(FUZZ_LIBS_fuzz_$*)

# fuzz_run,<target>,<seconds>: fresh corpus copy, run, fail on a finding.
define fuzz_run
	@echo "== $(1): $(2) s" ; \
	rm -rf $(FUZZ_DIR)/corpus/$(1) && mkdir -p $(FUZZ_DIR)/corpus/$(1) $(FUZZ_DIR)/artifacts/$(1) && \
	cp fuzz/corpus/$(1)/* $(FUZZ_DIR)/corpus/$(1)/ 2>/dev/null; \
	if [ -d fuzz/regressions/$(1) ]; then cp fuzz/regressions/$(1)/* $(FUZZ_DIR)/corpus/$(1)/ 2>/dev/null; fi; \
	$(FUZZ_DIR)/$(1) -max_total_time=$(2) -dict=fuzz/ws.dict \
	  -max_len=$(FUZZ_MAXLEN_$(1)) -rss_limit_mb=$(FUZZ_RSS_MB) -timeout=25 \
	  -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$(1)/ $(FUZZ_OPTS) \
	  $(FUZZ_DIR)/corpus/$(1) > $(FUZZ_DIR)/$(1).log 2>&1; \
	st=$$?; grep -E '^#[0-9]+[[:space:]]+DONE|^stat::' $(FUZZ_DIR)/$(1).log | sed 's/^/   /'; \
	if [ $$st -ne 0 ]; then echo "$(1): FINDING (exit $$st), see $(FUZZ_DIR)/$(1).log and $(FUZZ_DIR)/artifacts/$(1)/"; \
	  grep -E 'ERROR|invariant failed|SUMMARY' $(FUZZ_DIR)/$(1).log | head -5; exit 1; fi

endef

fuzz: fuzz-build
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),$(FUZZ_SECONDS)))

fuzz-smoke: fuzz-build
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),10))

# Replay: every regression and seed, under plain gcc with ASan/UBSan.
$(FUZZ_DIR)/replay/fuzz_%: fuzz/fuzz_%.c fuzz/driver_main.c $(FUZZ_DEPS) $(FUZZ_STAMP)
	@mkdir -p $(FUZZ_DIR)/replay
	$(REPLAY_CC) $(REPLAY_CFLAGS) $< fuzz/driver_main.c -o $@ $(FUZZ_LIBS_fuzz_$*)

fuzz-replay: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/replay/%)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  files=$$(find fuzz/regressions/$$t fuzz/corpus/$$t -type f 2>/dev/null | sort); \
	  if [ -z "$$files" ]; then echo "fuzz-replay: $$t: no inputs"; continue; fi; \
	  printf 'fuzz-replay: %s: ' $$t; $(FUZZ_DIR)/replay/$$t $$files; \
	done

# AFL++ variant: the same targets with the stdin driver (persistent mode).
fuzz-afl:
	@if ! command -v $(AFL_CC) >/dev/null 2>&1; then \
	  echo "fuzz-afl: $(AFL_CC) not found; skipped (apt-get install afl++)"; exit 0; fi; \
	mkdir -p $(FUZZ_DIR)/afl && set -e && for t in $(FUZZ_TARGETS); do \
	  echo "  AFL $$t"; \
	  AFL_USE_ASAN=1 AFL_USE_UBSAN=1 AFL_QUIET=1 $(AFL_CC) -g -O1 $(FUZZ_WARN) -Iinclude \
	    fuzz/$$t.c fuzz/driver_main.c -o $(FUZZ_DIR)/afl/$$t $$( [ $$t = fuzz_deflate ] && echo "$(FUZZ_LIBS_fuzz_deflate)"); \
	done

fuzz-afl-run: fuzz-afl
	@if ! command -v afl-fuzz >/dev/null 2>&1; then echo "fuzz-afl-run: afl-fuzz not found; skipped"; exit 0; fi; \
	rm -rf $(FUZZ_DIR)/afl-out/$(AFL_TARGET); mkdir -p $(FUZZ_DIR)/afl-out; \
	AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
	  afl-fuzz -V $(FUZZ_SECONDS) -i fuzz/corpus/$(AFL_TARGET) -o $(FUZZ_DIR)/afl-out/$(AFL_TARGET) \
	  -x fuzz/ws.dict -m none -- $(FUZZ_DIR)/afl/$(AFL_TARGET); \
	n=$$(ls $(FUZZ_DIR)/afl-out/$(AFL_TARGET)/default/crashes 2>/dev/null | grep -vc README || true); \
	if [ "$$n" != "0" ]; then echo "fuzz-afl-run: $$n crash(es) in $(FUZZ_DIR)/afl-out/$(AFL_TARGET)/default/crashes"; exit 1; fi

fuzz-seeds:
	python3 fuzz/make_seeds.py
