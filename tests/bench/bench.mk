# tests/bench/bench.mk - the benchmarks; included by the Makefile.
#   make bench         full run against ws and its peers: build/bench/report.md
#   make bench-smoke   each mode once, briefly (CI: fails only if a tool breaks)
#   make bench-tls     wss:// costs (tests/bench/tls_run.sh): build/bench/tls_report.md
#   make bench-deflate permessage-deflate's ratio and memory per setting
#                      (tests/bench/deflate_mem.c; docs/deflate.md)
#   make bench-tools   builds the load generator, the servers (ours, the
#                      peers' and the library-free floor_server) and the
#                      micro benchmarks into build/bench/
# The peers' servers are built when their libraries are installed
# (tests/bench/install.sh installs them and the Node peer).
BENCH_DIR    = $(BUILD)/bench
BENCH_CFLAGS = -std=c99 -O2 -g -Wall -Wextra -Wpedantic -Werror
BENCH_TOOLS  = $(BENCH_DIR)/loadgen $(BENCH_DIR)/micro $(BENCH_DIR)/ws_bcast_server
# Empty when libwebsockets is not installed.
LWS_FLAGS   := $(shell pkg-config --exists libwebsockets 2>/dev/null && \
                 pkg-config --cflags --libs libwebsockets)
ifneq ($(LWS_FLAGS),)
BENCH_TOOLS += $(BENCH_DIR)/lws_server
endif
ifneq ($(wildcard /usr/include/wslay/wslay.h),)
BENCH_TOOLS += $(BENCH_DIR)/wslay_server
endif
# permessage-deflate's costs per setting (run.sh adds them to the report).
ifeq ($(WS_ZLIB),1)
BENCH_TOOLS += $(BENCH_DIR)/deflate_mem
endif
# The floor: an echo server with no library (epoll, or io_uring with --uring).
ifeq ($(shell uname -s),Linux)
BENCH_TOOLS += $(BENCH_DIR)/floor_server
endif

.PHONY: bench bench-smoke bench-tools bench-tls bench-deflate

# The benchmarks' own configuration stamp (see CONFIG_STAMP in the
# Makefile); the programs built with libws depend on both.
BENCH_STAMP = $(BENCH_DIR)/config.stamp
BENCH_VARS  = CC BENCH_CFLAGS LWS_FLAGS
$(BENCH_STAMP): $(call stamp_force,$(BENCH_STAMP),$(BENCH_VARS))
	@$(call stamp_write,$@,$(BENCH_VARS))

bench-tools: $(BUILD)/echo_server $(BENCH_TOOLS)

bench: bench-tools
	@bash tests/bench/run.sh

bench-smoke: bench-tools
	@bash tests/bench/run.sh --smoke

# wss:// costs: idle memory per TLS connection, TLS handshakes/s against
# plain ones, code size of the TLS part: build/bench/tls_report.md.
bench-tls: $(BUILD)/echo_server $(BENCH_DIR)/tlsbench $(BENCH_DIR)/loadgen
	@bash tests/bench/tls_run.sh $(BENCH_TLS_ARGS)

# permessage-deflate's costs per setting, then compressed echo against
# Node's ws (tests/bench/deflate_run.sh): needs a build with zlib.
# BENCH_EXTRA="NAME=ECHO[,BROADCAST] ..." adds servers built elsewhere
# (docs/deflate.md builds uWebSockets that way).
bench-deflate: $(BENCH_DIR)/deflate_mem $(BENCH_DIR)/loadgen $(BUILD)/echo_server $(BENCH_DIR)/ws_bcast_server
	@$(BENCH_DIR)/deflate_mem
	@echo
	@bash tests/bench/deflate_run.sh $(BUILD)

$(BENCH_DIR)/deflate_mem: tests/bench/deflate_mem.c $(BUILD)/libws.a $(CONFIG_STAMP) $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $(CPPFLAGS) tests/bench/deflate_mem.c $(BUILD)/libws.a -o $@ $(LDLIBS)

# loadgen is libc only; with zlib it also speaks permessage-deflate (--deflate).
LOADGEN_ZLIB = $(if $(filter 1,$(WS_ZLIB)),-DLOADGEN_ZLIB -lz)
$(BENCH_DIR)/loadgen: tests/bench/loadgen.c tests/bench/bench_common.h $(BENCH_STAMP) $(CONFIG_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) tests/bench/loadgen.c -o $@ $(LOADGEN_ZLIB)

$(BENCH_DIR)/micro: tests/bench/micro.c tests/bench/bench_common.h $(BUILD)/libws.a $(CONFIG_STAMP) $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $(CPPFLAGS) tests/bench/micro.c $(BUILD)/libws.a -o $@ $(LDLIBS)

# TLS costs (make bench-tls; tests/bench/tls_run.sh): needs a TLS build.
$(BENCH_DIR)/tlsbench: tests/bench/tlsbench.c tests/bench/bench_common.h $(BUILD)/libws.a $(CONFIG_STAMP) $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $(CPPFLAGS) tests/bench/tlsbench.c $(BUILD)/libws.a -o $@ $(LDLIBS)

$(BENCH_DIR)/ws_bcast_server: tests/bench/ws_bcast_server.c $(BUILD)/libws.a $(CONFIG_STAMP) $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $(CPPFLAGS) tests/bench/ws_bcast_server.c $(BUILD)/libws.a -o $@ $(LDLIBS)

$(BENCH_DIR)/floor_server: tests/bench/floor_server.c tests/bench/bench_common.h $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) tests/bench/floor_server.c -o $@

# The peers: their headers are not ours to hold to -Wpedantic.
$(BENCH_DIR)/lws_server: tests/bench/lws_server.c $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) -std=gnu99 -O2 -g -Wall -Wextra -Werror tests/bench/lws_server.c -o $@ \
	  $(LWS_FLAGS)

$(BENCH_DIR)/wslay_server: tests/bench/wslay_server.c tests/bench/bench_common.h $(BENCH_STAMP)
	@mkdir -p $(BENCH_DIR)
	$(CC) -std=gnu99 -O2 -g -Wall -Wextra -Werror tests/bench/wslay_server.c -o $@ -lwslay
