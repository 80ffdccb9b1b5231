# tests/interop/interop.mk - the interoperability matrix (docs/interop.md).
# Included by the top-level Makefile; uses its BUILD, CC, WARN, CFLAGS,
# CPPFLAGS and LDLIBS, and its CONFIG_STAMP (what they were).
#
#   make interop                   install missing peers (install.sh), build
#                                  the test programs, run the matrix
#   make interop INTEROP_INSTALL=0 the same without installing anything
#   make interop-build             only build the test programs
#
# tests/interop/run.js prints one line per case, a table per row and
# "interop: N passed, M failed" last.

INTEROP_BUILD = $(BUILD)/interop
INTEROP_INSTALL ?= 1
INTEROP_ARGS ?=

.PHONY: interop interop-build interop-install

$(INTEROP_BUILD)/ws_peer: tests/interop/ws_peer.c $(BUILD)/libws.a include/ws.h $(CONFIG_STAMP)
	@mkdir -p $(INTEROP_BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(BUILD)/libws.a -o $@ $(LDLIBS)

$(INTEROP_BUILD)/ws_client: tests/interop/ws_client.c $(BUILD)/libws.a include/ws.h $(CONFIG_STAMP)
	@mkdir -p $(INTEROP_BUILD)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(BUILD)/libws.a -o $@ $(LDLIBS)

interop-install:
	@if [ "$(INTEROP_INSTALL)" != 0 ]; then sh tests/interop/install.sh; fi

# lws_peer is our program on Debian's libwebsockets: built when the library
# is there (install.sh puts it there); run.js reports it missing otherwise.
# Built in a recipe, not a rule, so that it comes after interop-install.
define INTEROP_LWS
if pkg-config --exists libwebsockets 2>/dev/null; then \
  echo "$(CC) tests/interop/lws_peer.c -o $(INTEROP_BUILD)/lws_peer (libwebsockets $$(pkg-config --modversion libwebsockets))"; \
  $(CC) $(WARN) $(CFLAGS) -D_POSIX_C_SOURCE=200809L $$(pkg-config --cflags libwebsockets) tests/interop/lws_peer.c \
    -o $(INTEROP_BUILD)/lws_peer $$(pkg-config --libs libwebsockets) || exit 1; \
else \
  rm -f $(INTEROP_BUILD)/lws_peer; \
  echo "interop: libwebsockets-dev is not installed: $(INTEROP_BUILD)/lws_peer not built"; \
fi
endef

interop-build: all $(INTEROP_BUILD)/ws_peer $(INTEROP_BUILD)/ws_client
	@$(INTEROP_LWS)

interop: interop-install all $(INTEROP_BUILD)/ws_peer $(INTEROP_BUILD)/ws_client
	@$(INTEROP_LWS)
	@node tests/interop/run.js --build $(BUILD) $(INTEROP_ARGS)
