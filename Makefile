# SPDX-License-Identifier: MIT
# sqlbox: SQLite mail storage for Dovecot 2.3. Plain GNU make; `make help`.

BUILD ?= build/default
DOVECOT_CONFIG ?= /usr/lib/dovecot/dovecot-config
PYTHON ?= /usr/bin/python3
PYTEST_ARGS ?=

# dovecot-config is shell syntax: read it through the shell, never include it.
dc = $(shell . $(DOVECOT_CONFIG) 2>/dev/null && echo "$$$(1)")
LIBDOVECOT_INCLUDE := $(call dc,LIBDOVECOT_INCLUDE)
dovecot_moduledir := $(call dc,dovecot_moduledir)
dovecot_pkglibdir := $(call dc,dovecot_pkglibdir)

ifeq ($(V),1)
Q =
else
Q = @
endif

ifeq ($(WERROR),0)
WERRFLAG =
else
WERRFLAG = -Werror
endif

OPT ?= -O2
SANITIZE ?=
COMMON_CFLAGS = -g $(OPT) -fPIC -fvisibility=hidden $(SANITIZE) \
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wmissing-declarations -Wold-style-definition -Wformat=2 \
	-Wwrite-strings -Wvla -Wcast-align -Wundef -Wpointer-arith \
	-Wbad-function-cast -Wimplicit-fallthrough -Wnull-dereference \
	$(WERRFLAG) -MMD -MP

SQLITE_CFLAGS := $(shell pkg-config --cflags sqlite3 2>/dev/null)
SQLITE_LIBS := $(shell pkg-config --libs sqlite3 2>/dev/null || echo -lsqlite3)
CRYPTO_CFLAGS := $(shell pkg-config --cflags libcrypto 2>/dev/null)
CRYPTO_LIBS := $(shell pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)
CRITERION_CFLAGS := $(shell pkg-config --cflags criterion 2>/dev/null)
CRITERION_LIBS := $(shell pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

# storage/ is strict C11 (with POSIX and BSD's flock through _DEFAULT_SOURCE).
STORAGE_CFLAGS = $(COMMON_CFLAGS) -std=c11 -D_DEFAULT_SOURCE -Wpedantic \
	-Wdeclaration-after-statement -Wredundant-decls -Wconversion \
	-Wsign-conversion $(SQLITE_CFLAGS) $(CRYPTO_CFLAGS)
# plugin/ needs gnu11 and HAVE_CONFIG_H for Dovecot's headers.
# Dovecot's istream.h and ostream.h have old-style declarations, and its
# container_of() casts through char *, which clang's -Wcast-align flags.
PLUGIN_CFLAGS = $(COMMON_CFLAGS) -Wno-strict-prototypes -Wno-cast-align \
	-std=gnu11 -DHAVE_CONFIG_H \
	$(LIBDOVECOT_INCLUDE) -Istorage
TEST_CFLAGS = $(COMMON_CFLAGS) -std=gnu11 -D_GNU_SOURCE $(CRITERION_CFLAGS) \
	$(SQLITE_CFLAGS) -Istorage -Itests/unit
PLUGIN_TEST_CFLAGS = $(PLUGIN_CFLAGS) $(CRITERION_CFLAGS) -Iplugin

STORAGE_SRCS := $(wildcard storage/*.c)
STORAGE_OBJS := $(STORAGE_SRCS:%.c=$(BUILD)/%.o)
PLUGIN_SRCS := $(filter-out plugin/submission-% plugin/sqlbox-lmtp-%,\
	$(wildcard plugin/sqlbox-*.c))
PLUGIN_OBJS := $(PLUGIN_SRCS:%.c=$(BUILD)/%.o)
LMTP_PLUGIN_OBJS := $(BUILD)/plugin/sqlbox-lmtp-plugin.o \
	$(BUILD)/plugin/sqlbox-settings.o
DOVEADM_PLUGIN_OBJS := $(BUILD)/plugin/doveadm-sqlbox-plugin.o \
	$(BUILD)/plugin/sqlbox-settings.o $(BUILD)/plugin/sqlbox-events.o
UNIT_SRCS := $(wildcard tests/unit/*.c)
UNIT_OBJS := $(UNIT_SRCS:%.c=$(BUILD)/%.o)

LIBSBX = $(BUILD)/libsbx.a
PLUGIN_SO = $(BUILD)/lib20_sqlbox_plugin.so
LMTP_PLUGIN_SO = $(BUILD)/lib21_sqlbox_lmtp_plugin.so
DOVEADM_PLUGIN_SO = $(BUILD)/lib10_doveadm_sqlbox_plugin.so
PLUGINS = $(PLUGIN_SO) $(LMTP_PLUGIN_SO) $(DOVEADM_PLUGIN_SO)
UNIT_BIN = $(BUILD)/test-unit

.PHONY: all help unit integration check check-slow install uninstall clean \
	run stop format lint
.DEFAULT_GOAL := all

all: $(LIBSBX) $(PLUGINS) $(UNIT_BIN)

help:
	@echo "make            build libsbx.a, the plugin and the unit tests in $(BUILD)"
	@echo "make check      unit and integration tests (what CI runs)"
	@echo "make check-slow the same with long soak and crash runs"
	@echo "make unit       unit tests (FILTER='suite/test' narrows them)"
	@echo "make integration  a real Dovecot with the plugin, driven by real clients"
	@echo "make bench      sqlbox against maildir and sdbox (bench-quick: short)"
	@echo "make run        build and start the demo Dovecot on loopback"
	@echo "make stop       stop the demo Dovecot"
	@echo "make install    install the plugin into $(dovecot_moduledir)"
	@echo "make uninstall  remove what make install installed"
	@echo "make deb        build dovecot-sqlbox_*.deb (checked by lintian)"
	@echo "make container-check  the tests against Dovecot in a podman container"
	@echo "make clean      remove build/"
	@echo "V=1 shows commands; WERROR=0 keeps warnings as warnings"

$(BUILD)/storage/%.o: storage/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(STORAGE_CFLAGS) -c -o $@ $<

$(BUILD)/plugin/%.o: plugin/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(PLUGIN_CFLAGS) -c -o $@ $<

$(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(TEST_CFLAGS) -c -o $@ $<

$(LIBSBX): $(STORAGE_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# Nothing from Dovecot is linked: the host process provides it.
$(PLUGIN_SO): $(PLUGIN_OBJS) $(LIBSBX)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(SANITIZE) -o $@ $(PLUGIN_OBJS) $(LIBSBX) \
		$(SQLITE_LIBS) $(CRYPTO_LIBS)

$(LMTP_PLUGIN_SO): $(LMTP_PLUGIN_OBJS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(SANITIZE) -o $@ $(LMTP_PLUGIN_OBJS)

$(DOVEADM_PLUGIN_SO): $(DOVEADM_PLUGIN_OBJS) $(LIBSBX)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(SANITIZE) -o $@ $(DOVEADM_PLUGIN_OBJS) $(LIBSBX) \
		$(SQLITE_LIBS) $(CRYPTO_LIBS)

$(UNIT_BIN): $(UNIT_OBJS) $(LIBSBX)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(SANITIZE) -o $@ $(UNIT_OBJS) $(LIBSBX) $(CRITERION_LIBS) \
		$(SQLITE_LIBS) $(CRYPTO_LIBS)

# Criterion does not fail on LeakSanitizer reports: collect them in a log
# folder and fail when one appears.
unit: $(UNIT_BIN)
	@rm -rf $(BUILD)/asan-unit && mkdir -p $(BUILD)/asan-unit
	ASAN_OPTIONS=log_path=$(abspath $(BUILD))/asan-unit/asan \
		$(UNIT_BIN) $(if $(FILTER),--filter '$(FILTER)') -j2
	@if ls $(BUILD)/asan-unit/asan.* >/dev/null 2>&1; then \
		cat $(BUILD)/asan-unit/asan.*; echo "sanitizer reports"; exit 1; fi

integration: $(PLUGINS)
	SQLBOX_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -ra tests/integration $(PYTEST_ARGS)

check: unit integration

# The long versions of the soak and crash tests (SQLBOX_SLOW=1 scales them).
check-slow: $(PLUGINS)
	SQLBOX_SLOW=1 SQLBOX_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -ra tests/integration $(PYTEST_ARGS)

run: $(PLUGINS)
	scripts/demo.sh start

stop:
	scripts/demo.sh stop

# Installs the modules and the commented snippet. An existing snippet is
# kept (it may hold the operator's settings); uninstall removes it only when
# it is still the one shipped. Directories made under a DESTDIR go again.
SNIPPET_DIR ?= /etc/dovecot/conf.d
INSTALLED = $(dovecot_moduledir)/lib20_sqlbox_plugin.so \
	$(dovecot_moduledir)/lib21_sqlbox_lmtp_plugin.so \
	$(dovecot_moduledir)/doveadm/lib10_doveadm_sqlbox_plugin.so

install: $(PLUGINS)
	@test -n "$(dovecot_moduledir)" || \
		{ echo "no dovecot_moduledir in $(DOVECOT_CONFIG): install dovecot-dev"; exit 1; }
	install -d $(DESTDIR)$(dovecot_moduledir) $(DESTDIR)$(dovecot_moduledir)/doveadm
	install -m 0644 $(PLUGIN_SO) $(LMTP_PLUGIN_SO) $(DESTDIR)$(dovecot_moduledir)/
	install -m 0644 $(DOVEADM_PLUGIN_SO) $(DESTDIR)$(dovecot_moduledir)/doveadm/
	install -d $(DESTDIR)$(SNIPPET_DIR)
	@if [ -e $(DESTDIR)$(SNIPPET_DIR)/90-sqlbox.conf ]; then \
		echo "keeping $(DESTDIR)$(SNIPPET_DIR)/90-sqlbox.conf"; \
	else \
		echo "install -m 0644 packaging/90-sqlbox.conf $(DESTDIR)$(SNIPPET_DIR)/"; \
		install -m 0644 packaging/90-sqlbox.conf $(DESTDIR)$(SNIPPET_DIR)/; \
	fi

uninstall:
	@test -n "$(dovecot_moduledir)" || \
		{ echo "no dovecot_moduledir in $(DOVECOT_CONFIG)"; exit 1; }
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	@conf=$(DESTDIR)$(SNIPPET_DIR)/90-sqlbox.conf; \
	if [ -e $$conf ] && ! cmp -s $$conf packaging/90-sqlbox.conf; then \
		echo "keeping $$conf: it was changed"; \
	else \
		echo "rm -f $$conf"; rm -f $$conf; \
	fi
	@if [ -n "$(DESTDIR)" ]; then \
		for d in $(SNIPPET_DIR) $(dovecot_moduledir)/doveadm; do \
			while [ "$$d" != / ] && [ -d "$(DESTDIR)$$d" ] && \
				rmdir "$(DESTDIR)$$d" 2>/dev/null; do d=$$(dirname $$d); done; \
		done; \
	fi

format:
	clang-format -i storage/*.[ch] plugin/*.[ch] tests/unit/*.[ch]

clean:
	rm -rf build

-include $(STORAGE_OBJS:.o=.d) $(PLUGIN_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) \
	$(LMTP_PLUGIN_OBJS:.o=.d) $(DOVEADM_PLUGIN_OBJS:.o=.d)

# Larger tool targets (benchmarks, packaging, sanitizers, fuzzing) live in
# mk/*.mk, one file per concern.
-include $(wildcard mk/*.mk)
