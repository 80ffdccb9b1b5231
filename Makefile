# ws - build, test and check. Plain make. src/ws.c is generated from the
# parts in src/ws/ and committed, so users (and a build from a clean clone)
# need no generation step; make regenerates it when a part changes.
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=c99 -Wall -Wextra -Wpedantic -Werror
CPPFLAGS = -Iinclude
LDLIBS   = -pthread
PREFIX  ?= /usr/local
BUILD    = build
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

EXAMPLES = echo_server echo_client chat wsc
ifeq ($(shell uname -s),Linux)
EXAMPLES += existing_server
endif
TESTS    = test_codec test_codec_nosimd test_codec_small test_conn test_conn_ndebug test_conn_small \
           test_fixed test_misuse test_dns test_loop test_loop_poll test_chat
ARM_CC  ?= arm-none-eabi-gcc
RV_CC   ?= riscv64-unknown-elf-gcc

# Every output depends on the configuration that made it: a stamp file
# holds the values of the variables that made it (CONFIG_STAMP: compilers,
# flags, the detected TLS; fuzz.mk and bench.mk have their own), and is
# rewritten only when they change. So make WS_TLS=1 after a build without
# TLS rebuilds the library and everything built with it, and an unchanged
# configuration rebuilds nothing (make -q says so).
CONFIG_STAMP = $(BUILD)/config.stamp
CONFIG_VARS  = CC AR CFLAGS WARN CPPFLAGS LDLIBS SAN WS_TLS WS_ZLIB
# $(call stamp_lines,VARS): one 'VAR=value' per variable, quoted for sh.
stamp_lines = $(foreach v,$(1),'$(v)=$(subst ','\'',$($(v)))')
# $(call stamp_force,FILE,VARS): FORCE when FILE is missing or holds other
# values (then its rule rewrites it and all that depends on it is rebuilt),
# else nothing. Nothing is written while make reads this file, so make -n
# and make -q change nothing.
stamp_force = $(if $(shell printf '%s\n' $(call stamp_lines,$(2)) | cmp -s - $(1) 2>/dev/null || echo x),FORCE)
# $(call stamp_write,FILE,VARS): a recipe line that writes the stamp.
stamp_write = mkdir -p $(dir $(1)) && printf '%s\n' $(call stamp_lines,$(2)) > $(1)

# TLS (wss://) over mbedTLS: on when its headers are installed (Debian:
# apt-get install libmbedtls-dev), or forced with WS_TLS=1 / WS_TLS=0.
MBEDTLS_H ?= /usr/include/mbedtls/ssl.h
ifeq ($(WS_TLS),)
WS_TLS := $(shell test -f $(MBEDTLS_H) && echo 1 || echo 0)
else ifeq ($(WS_TLS),1)
ifeq ($(wildcard $(MBEDTLS_H)),)
$(error WS_TLS=1 but mbedTLS is not installed ($(MBEDTLS_H)): apt-get install libmbedtls-dev)
endif
endif
ifeq ($(WS_TLS),1)
TLS_CPPFLAGS = -DWS_ENABLE_MBEDTLS=1
CPPFLAGS += $(TLS_CPPFLAGS)
LDLIBS   += -lmbedtls -lmbedx509 -lmbedcrypto
$(info TLS: on (mbedTLS; wss:// and ws_loop_listen_tls))
else ifeq ($(wildcard $(MBEDTLS_H)),)
$(info TLS: off (mbedTLS not found; apt-get install libmbedtls-dev, or make WS_TLS=1))
else
$(info TLS: off (WS_TLS=0; mbedTLS is installed))
endif
TESTS   += test_tls

# Bridge: redis. The Redis Pub/Sub bridge (include/ws_redis.h and
# src/ws_redis.c, an add-on a user vendors beside ws.h and ws.c) over
# hiredis: built with `all`, and its test in TESTS, when hiredis's headers
# are installed (Debian: apt-get install libhiredis-dev; the test starts
# redis-server, apt-get install redis-server). The object is compiled
# alone against include/: the bridge uses the public API only.
HIREDIS_H ?= /usr/include/hiredis/async.h
ifneq ($(wildcard $(HIREDIS_H)),)
REDIS_LIBS = -lhiredis
TESTS += test_redis
all: $(BUILD)/ws_redis.o
$(BUILD)/ws_redis.o: src/ws_redis.c include/ws_redis.h include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -c src/ws_redis.c -o $@
$(BUILD)/test_redis: tests/test_redis.c tests/t.h src/ws.c src/ws_redis.c include/ws.h include/ws_redis.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS) $(REDIS_LIBS)
$(BUILD)/asan/test_redis: tests/test_redis.c tests/t.h src/ws.c src/ws_redis.c include/ws.h include/ws_redis.h $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) $< -o $@ $(LDLIBS) $(REDIS_LIBS)
$(info Bridge redis: on (hiredis; build/ws_redis.o, test_redis))
else
$(info Bridge redis: off (hiredis not found; apt-get install libhiredis-dev))
endif

# permessage-deflate over zlib: on when its header is installed (Debian:
# apt-get install zlib1g-dev), or forced with WS_ZLIB=1 / WS_ZLIB=0. Off,
# the library declines every offer (and the firmware builds never have it).
ZLIB_H ?= /usr/include/zlib.h
ifeq ($(WS_ZLIB),)
WS_ZLIB := $(shell test -f $(ZLIB_H) && echo 1 || echo 0)
else ifeq ($(WS_ZLIB),1)
ifeq ($(wildcard $(ZLIB_H)),)
$(error WS_ZLIB=1 but zlib is not installed ($(ZLIB_H)): apt-get install zlib1g-dev)
endif
endif
ifeq ($(WS_ZLIB),1)
ZLIB_CPPFLAGS = -DWS_ENABLE_ZLIB=1
CPPFLAGS += $(ZLIB_CPPFLAGS)
LDLIBS   += -lz
$(info deflate: on (zlib; permessage-deflate))
else
$(info deflate: off (make WS_ZLIB=0, or zlib not found: apt-get install zlib1g-dev))
endif

.PHONY: all test test-plain test-asan test-valgrind test-conformance check \
        check-api check-configs check-layers check-amalgamation amalgamate \
        size cross install clean run FORCE

# The parts of src/ws.c, in layer order; each uses only those before it.
WS_PARTS = $(addprefix src/ws/,config.h private.h util.c sha1_base64_utf8.c \
             codec.c handshake.c deflate.c conn.c tls.c loop_win.c loop.c loop_epoll.c \
             loop_kqueue.c loop_poll.c)

all: $(BUILD)/libws.a $(BUILD)/libws.so $(EXAMPLES:%=$(BUILD)/%)

$(BUILD):
	@mkdir -p $(BUILD)

$(CONFIG_STAMP): $(call stamp_force,$(CONFIG_STAMP),$(CONFIG_VARS))
	@$(call stamp_write,$@,$(CONFIG_VARS))
FORCE:

# The amalgamation: what users vendor, what every build and test compiles.
# It does not depend on the configuration: flags never change it.
src/ws.c: $(WS_PARTS) src/amalgamate.sh
	sh src/amalgamate.sh $(WS_PARTS) > $@.tmp && mv $@.tmp $@

amalgamate:
	sh src/amalgamate.sh $(WS_PARTS) > src/ws.c.tmp && mv src/ws.c.tmp src/ws.c

# CI runs this first, on the committed file: it must equal a fresh join.
check-amalgamation: | $(BUILD)
	@sh src/amalgamate.sh $(WS_PARTS) > $(BUILD)/ws.c.fresh
	@cmp -s $(BUILD)/ws.c.fresh src/ws.c || { \
	  echo "check-amalgamation: src/ws.c differs from its parts (src/ws/): run make amalgamate and commit it"; \
	  diff -u src/ws.c $(BUILD)/ws.c.fresh | head -20; exit 1; }
	@echo "check-amalgamation: ok (src/ws.c is the join of $(words $(WS_PARTS)) parts)"

$(BUILD)/ws.o: src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -c src/ws.c -o $@

$(BUILD)/ws.pic.o: src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -fPIC -c src/ws.c -o $@

$(BUILD)/libws.a: $(BUILD)/ws.o $(CONFIG_STAMP)
	$(AR) rcs $@ $<

$(BUILD)/libws.so: $(BUILD)/ws.pic.o $(CONFIG_STAMP)
	$(CC) -shared -o $@ $< $(LDLIBS)

$(BUILD)/%: examples/%.c $(BUILD)/libws.a $(CONFIG_STAMP)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(BUILD)/libws.a -o $@ $(LDLIBS)

# The chat demo carries the broker bridges it can (--redis, --nats).
CHAT_REDIS = $(wildcard $(HIREDIS_H))
CHAT_SRCS  = src/ws_nats.c $(if $(CHAT_REDIS),src/ws_redis.c)
CHAT_FLAGS = -DWS_CHAT_NATS=1 $(if $(CHAT_REDIS),-DWS_CHAT_REDIS=1)
CHAT_LIBS  = $(if $(CHAT_REDIS),-lhiredis)
$(BUILD)/chat: examples/chat.c $(CHAT_SRCS) $(BUILD)/libws.a $(CONFIG_STAMP)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $(CHAT_FLAGS) $< $(CHAT_SRCS) $(BUILD)/libws.a -o $@ $(LDLIBS) $(CHAT_LIBS)

# The conformance subjects, besides build/echo_server and build/echo_client:
# the same on the poll backend, and the core-only versions over their own
# poll() loop. Each directory holds an echo_server and an echo_client.
VARIANTS = $(BUILD)/poll/echo_server $(BUILD)/poll/echo_client \
           $(BUILD)/core/echo_server $(BUILD)/core/echo_client \
           $(BUILD)/small/echo_server $(BUILD)/small/echo_client

$(BUILD)/poll/%: examples/%.c src/ws.c include/ws.h $(CONFIG_STAMP)
	@mkdir -p $(BUILD)/poll
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DWS_LOOP_POLL $< src/ws.c -o $@ $(LDLIBS)

$(BUILD)/core/%: examples/core_%.c $(BUILD)/libws.a $(CONFIG_STAMP)
	@mkdir -p $(BUILD)/core
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(BUILD)/libws.a -o $@ $(LDLIBS)

# The core examples on the small configuration (WS_SMALL=1, what -Os
# picks for firmware: byte-at-a-time masking and UTF-8), built for this
# host so that the conformance suites check it too.
$(BUILD)/small/%: examples/core_%.c src/ws.c include/ws.h $(CONFIG_STAMP)
	@mkdir -p $(BUILD)/small
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DWS_SMALL=1 $< src/ws.c -o $@ $(LDLIBS)

# The firmware example, built as firmware builds the core (no OS, no
# malloc, no loop, client only, fixed buffers), running here over a socket.
FW_DEFS = -DWS_NO_OS -DWS_NO_MALLOC -DWS_NO_LOOP -DWS_NO_SERVER -DWS_FIXED_BUFFERS=1
$(BUILD)/firmware_client: examples/firmware_client.c src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -Iinclude $(FW_DEFS) $< src/ws.c -o $@

# Tests include src/ws.c to reach its statics.
$(BUILD)/test_%: tests/test_%.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

# The loop tests again on the poll backend (the default is epoll on Linux).
$(BUILD)/test_loop_poll: tests/test_loop.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DWS_LOOP_POLL $< -o $@ $(LDLIBS)

# The connection's lifecycle tests again with -DNDEBUG (WS_ASSERT compiled
# out): misuse the asserts catch must still be safe there.
$(BUILD)/test_conn_ndebug: tests/test_conn.c tests/t.h src/ws.c include/ws.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DNDEBUG $< -o $@ $(LDLIBS)

$(BUILD)/asan/test_conn_ndebug: tests/test_conn.c tests/t.h src/ws.c include/ws.h | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) -DNDEBUG $< -o $@ $(LDLIBS)

# The codec tests again on the small configuration (WS_SMALL=1).
$(BUILD)/test_codec_small: tests/test_codec.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DWS_SMALL=1 $< -o $@ $(LDLIBS)

$(BUILD)/asan/test_codec_small: tests/test_codec.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) -DWS_SMALL=1 $< -o $@ $(LDLIBS)

# The connection's tests again on the small configuration: its checks of
# zero-copy paths (writev, input fed in place) are skipped there.
$(BUILD)/test_conn_small: tests/test_conn.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DWS_SMALL=1 $< -o $@ $(LDLIBS)

$(BUILD)/asan/test_conn_small: tests/test_conn.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) -DWS_SMALL=1 $< -o $@ $(LDLIBS)

# The codec tests again without the SIMD paths (UTF-8): the plain C code.
$(BUILD)/test_codec_nosimd: tests/test_codec.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -DWS_NO_SIMD $< -o $@ $(LDLIBS)

$(BUILD)/asan/test_codec_nosimd: tests/test_codec.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) -DWS_NO_SIMD $< -o $@ $(LDLIBS)

$(BUILD)/asan/test_loop_poll: tests/test_loop.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) -DWS_LOOP_POLL $< -o $@ $(LDLIBS)

$(BUILD)/asan/test_%: tests/test_%.c tests/t.h src/ws.c include/ws.h $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) $< -o $@ $(LDLIBS)

# Bridge: nats
# The NATS bridge (include/ws_nats.h, src/ws_nats.c) speaks the NATS text
# protocol itself and needs libc only, so it is always built and tested
# (test_nats starts /usr/bin/nats-server itself; without it the test says
# "skipped"). Where the official C client is installed (Debian
# libnats-dev), test_nats also runs build/nats_official, a tiny peer over
# that client, as an independent check of the wire format.
NATS_H ?= /usr/include/nats/nats.h
TESTS += test_nats
all: $(BUILD)/ws_nats.o
NATS_DEPS = src/ws_nats.c include/ws_nats.h
$(BUILD)/ws_nats.o: $(NATS_DEPS) include/ws.h $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) -c src/ws_nats.c -o $@
ifneq ($(wildcard $(NATS_H)),)
NATS_TEST_DEPS  = $(BUILD)/nats_official
NATS_TEST_FLAGS = -DWS_NATS_OFFICIAL='"$(abspath $(BUILD))/nats_official"'
$(BUILD)/nats_official: tests/nats_official.c $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $< -o $@ -lnats
else
$(info NATS: official C client not found: test_nats runs without its cross-check (apt-get install libnats-dev))
endif
# Whether the test has the cross-check is part of its configuration.
NATS_STAMP = $(BUILD)/nats.stamp
$(NATS_STAMP): $(call stamp_force,$(NATS_STAMP),NATS_TEST_FLAGS)
	@$(call stamp_write,$@,NATS_TEST_FLAGS)
$(BUILD)/test_nats: tests/test_nats.c tests/t.h src/ws.c include/ws.h $(NATS_DEPS) $(NATS_TEST_DEPS) $(NATS_STAMP) $(CONFIG_STAMP) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $(NATS_TEST_FLAGS) $< -o $@ $(LDLIBS)
$(BUILD)/asan/test_nats: tests/test_nats.c tests/t.h src/ws.c include/ws.h $(NATS_DEPS) $(NATS_TEST_DEPS) $(NATS_STAMP) $(CONFIG_STAMP) | $(BUILD)
	@mkdir -p $(BUILD)/asan
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) $(NATS_TEST_FLAGS) $< -o $@ $(LDLIBS)

# make test: every test with the default build, then under ASan+UBSan, then
# under valgrind where installed, then the protocol conformance suite
# against the examples (over TLS too when TLS is on). tests/run.sh prints
# the grand total last.
test: all $(VARIANTS) $(BUILD)/firmware_client $(TESTS:%=$(BUILD)/%) $(TESTS:%=$(BUILD)/asan/%)
	@WS_TLS=$(WS_TLS) WS_ZLIB=$(WS_ZLIB) CC="$(CC)" sh tests/run.sh $(BUILD) "$(TESTS)"

test-conformance: all $(VARIANTS)
	@WS_TLS=$(WS_TLS) sh tests/run.sh $(BUILD) "" conformance-only

check: check-amalgamation test check-api check-configs check-layers

# Every global symbol ws.o defines starts with ws_.
check-api: $(BUILD)/ws.o
	@bad=$$(nm -g --defined-only $(BUILD)/ws.o | awk '{print $$3}' | grep -v '^ws_' || true); \
	if [ -n "$$bad" ]; then echo "check-api: symbols without the ws_ prefix:"; echo "$$bad"; exit 1; fi; \
	echo "check-api: ok ($$(nm -g --defined-only $(BUILD)/ws.o | wc -l) symbols, all ws_)"

# The TLS part and the loop with each backend compile alone against ws.h
# and name no core internals (tests/check_layers.sh says how).
check-layers: | $(BUILD)
	@CC="$(CC)" sh tests/check_layers.sh $(BUILD) "$(TLS_CPPFLAGS)" $(WS_PARTS)

# Warning-free with gcc and clang in several configurations, and ws.h as C++.
check-configs: | $(BUILD)
	@set -e; for cc in gcc clang; do \
	  for defs in "" "-DWS_NO_MALLOC" "-DWS_NO_LOOP" "-DWS_NO_OS -DWS_NO_MALLOC" "-DWS_SMALL=1" "-Os -DWS_NO_OS -DWS_NO_MALLOC -DWS_NO_LOOP" "-Os -DWS_NO_OS -DWS_NO_MALLOC -DWS_NO_LOOP -DWS_FIXED_BUFFERS=1" "-DWS_NO_CLIENT" "-DWS_NO_SERVER" "-O2" "-O0 -DNDEBUG" $(if $(filter 1,$(WS_ZLIB)),"-DWS_ENABLE_ZLIB=1" "-DWS_ENABLE_ZLIB=1 -DWS_NO_SERVER" "-DWS_ENABLE_ZLIB=1 -DWS_NO_CLIENT" "-DWS_ENABLE_ZLIB=1 -DWS_NO_MALLOC"); do \
	    echo "  $$cc $$defs"; \
	    $$cc -std=c99 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wconversion -Wno-sign-conversion $$defs -Iinclude -c src/ws.c -o $(BUILD)/cfg.o; \
	  done; \
	  echo '#include "ws.h"' > $(BUILD)/cxx.cc; echo 'int main() { ws_conn c; return (int)sizeof c > 0 ? 0 : 1; }' >> $(BUILD)/cxx.cc; \
	  cxx=$$( [ $$cc = gcc ] && echo g++ || echo clang++ ); \
	  echo "  $$cxx ws.h as C++"; \
	  $$cxx -std=c++11 -Wall -Wextra -Wpedantic -Werror -Iinclude -c $(BUILD)/cxx.cc -o $(BUILD)/cxx.o; \
	done; echo "check-configs: ok"

# Footprint of the core for a Cortex-M4 and for RISC-V (rv32imc), as
# firmware builds it: no OS, no malloc, no loop. tests/size.sh prints the
# figures and fails on a configuration over its .text budget, on any .data
# or .bss, on a stack frame over 512 B, and on C library symbols beyond
# memcpy, memmove, memset, memcmp and strlen; the budgets, and the gap to
# the goals (8 KiB full core, 6 KiB firmware client), are in it.
size: | $(BUILD)
	@ARM_CC=$(ARM_CC) RV_CC=$(RV_CC) sh tests/size.sh $(BUILD)
	@if command -v $(ARM_CC) >/dev/null 2>&1; then \
	printf '#include "ws.h"\nchar ws_sizeof_conn[sizeof(ws_conn)];\nchar ws_sizeof_config[sizeof(ws_config)];\nchar ws_buffer_overhead[WS_BUFFER_OVERHEAD];\n' > $(BUILD)/sz.c && \
	$(ARM_CC) -mcpu=cortex-m4 -mthumb -Iinclude -c $(BUILD)/sz.c -o $(BUILD)/sz.o && \
	arm-none-eabi-nm -S $(BUILD)/sz.o | while read a n t name; do \
	  case $$name in ws_sizeof_*) name="sizeof(ws_$${name#ws_sizeof_})";; *) name=WS_BUFFER_OVERHEAD;; esac; \
	  echo "$$name on Cortex-M4: $$((0x$$n)) bytes"; done; fi
	@# The same on this machine (the figures README.md and docs/ quote for 64-bit).
	@printf '#include <stdio.h>\n#include "ws.h"\nint main(void) {\n  printf("on this host (%%u-bit): sizeof(ws_conn) %%u, sizeof(ws_config) %%u, WS_BUFFER_OVERHEAD %%u, sizeof(ws_loop_conn) %%u, sizeof(ws_loop) %%u bytes\\n", (unsigned)(8 * sizeof(void *)), (unsigned)sizeof(ws_conn), (unsigned)sizeof(ws_config), (unsigned)WS_BUFFER_OVERHEAD, (unsigned)sizeof(ws_loop_conn), (unsigned)sizeof(ws_loop));\n  return 0;\n}\n' > $(BUILD)/sz_host.c && \
	$(CC) $(WARN) $(CPPFLAGS) $(BUILD)/sz_host.c -o $(BUILD)/sz_host && $(BUILD)/sz_host

# The core's tests on other machines, under emulation: s390x (big-endian)
# and i686 (32-bit, with and without SSE2) under qemu-user, Windows
# (mingw-w64) under wine. tests/cross.sh says how; docs/portability.md.
cross: $(BUILD)/wsc $(BUILD)/echo_server $(BUILD)/test_chat $(BUILD)/slow_drain | $(BUILD)
	@sh tests/cross.sh $(BUILD)

# make cross's client that drains an echo slowly, sending nothing more.
$(BUILD)/slow_drain: tests/slow_drain.c $(BUILD)/libws.a $(CONFIG_STAMP)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(BUILD)/libws.a -o $@ $(LDLIBS)

# The pkg-config file for PREFIX, which has a stamp of its own: only ws.pc
# depends on it. Libs.private is what a static link with libws.a needs
# besides it (pkg-config --static): -pthread, mbedTLS in a TLS build, zlib
# with deflate.
PREFIX_STAMP = $(BUILD)/prefix.stamp
$(PREFIX_STAMP): $(call stamp_force,$(PREFIX_STAMP),PREFIX)
	@$(call stamp_write,$@,PREFIX)

$(BUILD)/ws.pc: include/ws.h Makefile $(CONFIG_STAMP) $(PREFIX_STAMP) | $(BUILD)
	@printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: ws\nDescription: Embeddable WebSocket (RFC 6455) library\nVersion: %s\nLibs: -L$${libdir} -lws\nLibs.private: %s\nCflags: -I$${includedir}\n' \
	  "$(PREFIX)" "$$(sed -n 's/^#define WS_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)/\2/p' include/ws.h | paste -sd.)" "$(LDLIBS)" > $(BUILD)/ws.pc

install: all $(BUILD)/ws.pc
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/ws.h $(DESTDIR)$(PREFIX)/include/ws.h
	install -m 644 $(BUILD)/libws.a $(DESTDIR)$(PREFIX)/lib/libws.a
	install -m 755 $(BUILD)/libws.so $(DESTDIR)$(PREFIX)/lib/libws.so
	install -m 644 $(BUILD)/ws.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/ws.pc

# The chat demo: open the printed URL in two browser tabs.
run: $(BUILD)/chat
	$(BUILD)/chat -p 8080

# Scale: `make scale` holds SCALE_CONNS (1,000,000) connections over
# SCALE_PROCS ws server processes on one port, with broadcasts carried
# across them by Redis and by NATS (SCALE_BROKER=redis|nats|both|local);
# `make scale-smoke` does the same with 2,000 in a few seconds. A
# benchmark, not a test: tests/scale/run.sh, tests/scale/README. The
# bridges are built into the server when their sources are present; the
# server is built without TLS, which it does not use (mbedTLS's shared
# libraries would add 400 kB of RSS to each of its processes).
SCALE_DIR     = $(BUILD)/scale
SCALE_REDIS  := $(if $(and $(wildcard src/ws_redis.c),$(wildcard $(or $(HIREDIS_H),/usr/include/hiredis/async.h))),redis)
SCALE_NATS   := $(if $(wildcard src/ws_nats.c),nats)
SCALE_SRCS    = $(if $(SCALE_REDIS),src/ws_redis.c) $(if $(SCALE_NATS),src/ws_nats.c)
SCALE_DEFS    = $(if $(SCALE_REDIS),-DWS_SCALE_REDIS=1) $(if $(SCALE_NATS),-DWS_SCALE_NATS=1)
SCALE_LIBS    = $(if $(SCALE_REDIS),-lhiredis)

.PHONY: scale scale-smoke

scale: $(SCALE_DIR)/scale_server $(SCALE_DIR)/holdgen
	@BUILD=$(BUILD) SCALE_BRIDGES="$(SCALE_REDIS) $(SCALE_NATS)" bash tests/scale/run.sh

scale-smoke: $(SCALE_DIR)/scale_server $(SCALE_DIR)/holdgen
	@BUILD=$(BUILD) SCALE_BRIDGES="$(SCALE_REDIS) $(SCALE_NATS)" bash tests/scale/run.sh --smoke

$(SCALE_DIR)/scale_server: tests/scale/scale_server.c tests/scale/scale_common.h $(SCALE_SRCS) \
                           $(wildcard include/ws_redis.h include/ws_nats.h) src/ws.c include/ws.h $(CONFIG_STAMP)
	@mkdir -p $(SCALE_DIR)
	$(CC) $(WARN) $(CFLAGS) -Iinclude $(SCALE_DEFS) tests/scale/scale_server.c $(SCALE_SRCS) \
	  src/ws.c -o $@ $(SCALE_LIBS) -pthread

$(SCALE_DIR)/holdgen: tests/scale/holdgen.c tests/scale/scale_common.h tests/bench/bench_common.h $(CONFIG_STAMP)
	@mkdir -p $(SCALE_DIR)
	$(CC) $(WARN) $(CFLAGS) tests/scale/holdgen.c -o $@


# Attacks: `make attack` runs tests/attack/run.sh against build/echo_server
# with its defaults: for each attack (slow readers, unfinished 16 MiB
# messages, ping flood, slow handshakes, fragment flood, all mixed), 5,000
# hostile connections over 127.0.0.x beside 100 honest echo clients, one
# table row each (peak RSS against the memory budget, how the hostile
# connections ended, the honest clients' latency). `make attack-smoke`
# runs every row small (CI). A benchmark, not a timed test: it fails when
# the server died or an honest client was closed (and, in the full run,
# when the peak RSS passed the budget plus the measured overhead).
# tests/attack/README.
ATTACK_DIR = $(BUILD)/attack

.PHONY: attack attack-smoke

attack: $(ATTACK_DIR)/attackgen $(BUILD)/echo_server
	@BUILD=$(BUILD) bash tests/attack/run.sh

attack-smoke: $(ATTACK_DIR)/attackgen $(BUILD)/echo_server
	@BUILD=$(BUILD) bash tests/attack/run.sh --smoke

$(ATTACK_DIR)/attackgen: tests/attack/attackgen.c tests/bench/bench_common.h $(CONFIG_STAMP)
	@mkdir -p $(ATTACK_DIR)
	$(CC) $(WARN) $(CFLAGS) tests/attack/attackgen.c -o $@


clean:
	rm -rf $(BUILD)

include tests/bench/bench.mk

include fuzz/fuzz.mk
include tests/interop/interop.mk
