# SPDX-License-Identifier: MIT
# libFuzzer targets for libsbx's entry points that take outside data
# (tests/fuzz/fuzz-*.c), built with clang, ASan and UBSan into build/fuzz.
#   make fuzz         every target for FUZZ_RUNS executions
#   make fuzz-short   FUZZ_SHORT_RUNS executions each plus the regression
#                     inputs of tests/fuzz/regressions: part of make check
# Seeds come from tests/fuzz/corpus/<target>/ (and, for fuzz-open, real
# databases written by tests/fuzz/make-seed.c); new inputs go to
# build/fuzz/corpus/<target>/, crashes to build/fuzz/crashes/. A crash
# found is fixed and its input kept in tests/fuzz/regressions/<target>/.

FUZZ_BUILD = build/fuzz
FUZZ_CC = clang
FUZZ_SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
FUZZ_TARGETS = fuzz-mailbox-name fuzz-keywords fuzz-attr fuzz-body fuzz-open
FUZZ_BINS = $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
FUZZ_LIBSBX = $(FUZZ_BUILD)/libsbx.a
FUZZ_CFLAGS = -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror \
	-Istorage -Itests/fuzz $(SQLITE_CFLAGS) $(CRYPTO_CFLAGS)
FUZZ_RUNS ?= 200000
FUZZ_SHORT_RUNS ?= 2000
# Per-target input size limits: databases need room.
FUZZ_MAX_LEN_fuzz-open = 262144
FUZZ_MAX_LEN_fuzz-body = 65536
FUZZ_OPTS = -rss_limit_mb=2048 -timeout=30 -print_final_stats=1

.PHONY: fuzz fuzz-short fuzz-build fuzz-bins fuzz-seeds

# libsbx again, instrumented for coverage and the sanitizers (a make of its
# own, with BUILD=build/fuzz), then the targets.
fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT=-O1 \
		SANITIZE="-fsanitize=fuzzer-no-link $(FUZZ_SANITIZE)" \
		$(FUZZ_BUILD)/libsbx.a
	@$(MAKE) --no-print-directory fuzz-bins

fuzz-bins: $(FUZZ_BINS)

$(FUZZ_BUILD)/fuzz-%: tests/fuzz/fuzz-%.c tests/fuzz/fuzz-common.c \
		tests/fuzz/fuzz-common.h $(FUZZ_LIBSBX)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SANITIZE) \
		-o $@ $< tests/fuzz/fuzz-common.c $(FUZZ_LIBSBX) \
		$(SQLITE_LIBS) $(CRYPTO_LIBS)

$(FUZZ_BUILD)/make-seed: tests/fuzz/make-seed.c $(FUZZ_LIBSBX)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SANITIZE) -o $@ $< \
		$(FUZZ_LIBSBX) $(SQLITE_LIBS) $(CRYPTO_LIBS)

# Real databases for fuzz-open: the current schema, the same file claiming
# a schema newer than this code knows, and another program's database.
fuzz-seeds: $(FUZZ_BUILD)/make-seed
	@rm -rf $(FUZZ_BUILD)/seed && mkdir -p $(FUZZ_BUILD)/seed \
		$(FUZZ_BUILD)/corpus/fuzz-open
	$(Q)$(FUZZ_BUILD)/make-seed $(FUZZ_BUILD)/seed/current.sqlite
	$(Q)sqlite3 $(FUZZ_BUILD)/seed/current.sqlite \
		'PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;' >/dev/null
	$(Q)cp $(FUZZ_BUILD)/seed/current.sqlite $(FUZZ_BUILD)/seed/newer.sqlite
	$(Q)sqlite3 $(FUZZ_BUILD)/seed/newer.sqlite 'PRAGMA user_version=9999;'
	$(Q)sqlite3 $(FUZZ_BUILD)/seed/foreign.sqlite \
		"CREATE TABLE notes(t TEXT); INSERT INTO notes VALUES ('x');"
	$(Q)cp $(FUZZ_BUILD)/seed/foreign.sqlite \
		$(FUZZ_BUILD)/corpus/fuzz-open/seed-foreign.sqlite
	$(Q)cp $(FUZZ_BUILD)/seed/current.sqlite \
		$(FUZZ_BUILD)/corpus/fuzz-open/seed-current.sqlite
	$(Q)cp $(FUZZ_BUILD)/seed/newer.sqlite \
		$(FUZZ_BUILD)/corpus/fuzz-open/seed-newer.sqlite

# $(1): target, $(2): executions.
define fuzz_run
	@mkdir -p $(FUZZ_BUILD)/corpus/$(1) $(FUZZ_BUILD)/crashes tests/fuzz/corpus/$(1)
	@if ls tests/fuzz/regressions/$(1)/* >/dev/null 2>&1; then \
		echo "  REGRESS $(1)"; \
		$(FUZZ_BUILD)/$(1) $(FUZZ_OPTS) tests/fuzz/regressions/$(1)/* \
			>$(FUZZ_BUILD)/$(1).regress.log 2>&1 || { \
			tail -n 40 $(FUZZ_BUILD)/$(1).regress.log; exit 1; }; fi
	@echo "  FUZZ    $(1) $(2) runs"
	@$(FUZZ_BUILD)/$(1) $(FUZZ_OPTS) -runs=$(2) \
		$(if $(FUZZ_MAX_LEN_$(1)),-max_len=$(FUZZ_MAX_LEN_$(1))) \
		-artifact_prefix=$(FUZZ_BUILD)/crashes/$(1)- \
		$(FUZZ_BUILD)/corpus/$(1) tests/fuzz/corpus/$(1) \
		>$(FUZZ_BUILD)/$(1).log 2>&1 || { \
		tail -n 60 $(FUZZ_BUILD)/$(1).log; exit 1; }
	@grep -E '^stat::number_of_executed_units' $(FUZZ_BUILD)/$(1).log \
		| sed 's/^/          /'

endef

fuzz: fuzz-build fuzz-seeds
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),$(FUZZ_RUNS)))

fuzz-short: fuzz-build fuzz-seeds
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),$(FUZZ_SHORT_RUNS)))

check: fuzz-short
