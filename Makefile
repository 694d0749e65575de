# cairn: plain GNU make + pkg-config. `make` builds build/cairn;
# `make SAN=address,undefined` builds a sanitizer tree in build/san/.
PKGS    := libnghttp2 openssl libprotobuf-c lmdb libuv yaml-0.1 raft
B       := build$(if $(SAN),/san)
PROTOS  := mvccpb/kv authpb/auth etcdserverpb/rpc v3lockpb/v3lock \
           v3electionpb/v3election grpc/health/v1/health
PB_C    := $(patsubst %,$(B)/proto/%.pb-c.c,$(PROTOS))
PB_H    := $(PB_C:.c=.h)

CFLAGS  ?= -O2
CFLAGS  += -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -Isrc -I$(B)/proto $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcrypt -lpthread
ifdef SAN
CFLAGS  += -O1 -fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SAN)
endif
ifdef WERROR
CFLAGS  += -Werror
endif

SRCS    := $(wildcard src/*/*.c)
LIBOBJS := $(patsubst %.c,$(B)/%.o,$(filter-out src/server/main.c,$(SRCS))) \
           $(PB_C:.c=.o)
TESTS   := $(patsubst tests/unit/%.c,$(B)/tests/%,$(wildcard tests/unit/test_*.c))

.PHONY: all deps run test tests-build unit integration bench clean format fuzz \
        install uninstall
all: deps $(B)/cairn

deps:
	@sh tools/deps.sh

$(B)/cairn: $(B)/src/server/main.o $(B)/libcairn.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/libcairn.a: $(LIBOBJS)
	@rm -f $@; ar rcs $@ $^

$(B)/proto/%.pb-c.c $(B)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(B)/proto; protoc-c -Iproto --c_out=$(B)/proto $<

$(B)/proto/%.pb-c.o: $(B)/proto/%.pb-c.c $(PB_H)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/src/%.o: src/%.c $(PB_H)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(B)/libcairn.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libcairn.a $(LDLIBS) -lcmocka

.SECONDARY:

# One member on 127.0.0.1:2379 with its data in ./default.etcd, like etcd.
run: all
	./$(B)/cairn --listen-client-urls http://127.0.0.1:2379 \
	    --advertise-client-urls http://127.0.0.1:2379

tests-build: $(B)/cairn $(TESTS)

unit: deps $(B)/cairn $(TESTS)
	@sh tests/run-unit.sh $(TESTS)

integration: deps $(B)/cairn
	@CAIRN_BIN=$(abspath $(B)/cairn) sh tests/run-integration.sh

# The whole suite: unit + integration on the release build, then both again
# under ASan+UBSan (build/san).
test: deps
	@sh tests/run-all.sh

bench: all
	$(MAKE) -C bench

format:
	clang-format -i $(SRCS) $(wildcard src/*/*.h) tests/unit/*.c

# `make install [PREFIX=/usr/local] [DESTDIR=]`: the binary, the man page
# and a systemd unit (Type=notify; its ExecStart points at BINDIR).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system

install: $(B)/cairn
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR)
	install -m 0755 $(B)/cairn $(DESTDIR)$(BINDIR)/cairn
	install -m 0644 docs/cairn.1 $(DESTDIR)$(MANDIR)/man1/cairn.1
	sed 's|@BINDIR@|$(BINDIR)|g' dist/cairn.service > $(DESTDIR)$(UNITDIR)/cairn.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/cairn.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cairn $(DESTDIR)$(MANDIR)/man1/cairn.1 \
	    $(DESTDIR)$(UNITDIR)/cairn.service

clean:
	rm -rf build

-include $(wildcard $(B)/src/*/*.d)

# libFuzzer targets (clang): Authenticate and token parsing (fuzz_auth),
# gateway request bodies (fuzz_gw_json). Builds the library with clang under
# ASan into build/fuzz, then runs each 10 s from its seed corpus. Not part of `make test`. FUZZ_TIME=<s> for longer runs.
FUZZ_B    := build/fuzz
FUZZ_TIME ?= 10
fuzz:
	env CFLAGS="-O1 -fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer" \
	    LDFLAGS="-fsanitize=address" $(MAKE) B=$(FUZZ_B) CC=clang $(FUZZ_B)/libcairn.a
	clang -O1 -g -fsanitize=fuzzer,address -Isrc -I$(FUZZ_B)/proto/etcdserverpb \
	    -I$(FUZZ_B)/proto $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
	    tests/fuzz/fuzz_auth.c $(FUZZ_B)/libcairn.a $(LDLIBS) -o $(FUZZ_B)/fuzz_auth
	clang -O1 -g -fsanitize=fuzzer,address -Isrc -I$(FUZZ_B)/proto/etcdserverpb \
	    -I$(FUZZ_B)/proto $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
	    tests/fuzz/fuzz_gw_json.c $(FUZZ_B)/libcairn.a $(LDLIBS) -o $(FUZZ_B)/fuzz_gw_json
	@mkdir -p $(FUZZ_B)/corpus $(FUZZ_B)/corpus_gw
	cp tests/fuzz/corpus/* $(FUZZ_B)/corpus/
	cp tests/fuzz/corpus_gw/* $(FUZZ_B)/corpus_gw/
	$(FUZZ_B)/fuzz_auth -max_total_time=$(FUZZ_TIME) -max_len=4096 $(FUZZ_B)/corpus
	$(FUZZ_B)/fuzz_gw_json -max_total_time=$(FUZZ_TIME) -max_len=4096 $(FUZZ_B)/corpus_gw
