# SPDX-License-Identifier: MIT
# make asan: libsbx, the plugins and the unit tests built with ASan and
# UBSan into build/asan, then the unit and integration suites with Dovecot
# loading the instrumented plugins. Dovecot's binaries are not instrumented:
# the ASan runtime is preloaded into Dovecot's processes through wrappers
# for dovecot, doveadm and dovecot-lda put first in PATH (build/asan/bin;
# the master passes it on through import_environment, see
# tests/sanitizers/asan.conf.in), never into the test driver; every
# report goes to a log folder, and scripts/sanitizer-reports.py fails the
# run on any sanitizer error and on any leak whose stack passes through
# sqlbox. tests/sanitizers/lsan.supp hides leaks of Dovecot's own.
# test_install.py is left out: it installs this build with make, which is
# a matter of packaging, not of memory. Leaks
# never change a process's exit status (exitcode=0): the logs decide. A
# process that cannot be stopped for the leak check (Dovecot's login
# processes are not dumpable) logs a fatal LeakSanitizer error, ignored.
# The run has a mount namespace of its own in which Dovecot's doveadm
# module directory is a private copy: the tests link the instrumented
# doveadm module there, and no other doveadm on the machine may see it.
# GDB=1 keeps Dovecot from unloading the plugins at exit, so that leak
# stacks still name their frames.
# PYTEST_ARGS narrows the integration run, e.g.
#   make asan PYTEST_ARGS='tests/integration/test_quota.py'

ASAN_BUILD ?= build/asan
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
ASAN_RUNTIME := $(shell $(CC) -print-file-name=libasan.so)
ASAN_LOGS = $(abspath $(ASAN_BUILD))/asan-integration
ASAN_ENV = PATH=$(abspath $(ASAN_BUILD))/bin:$$PATH \
	SQLBOX_LDA=$(abspath $(ASAN_BUILD))/bin/dovecot-lda \
	ASAN_OPTIONS=log_path=$(ASAN_LOGS)/asan:detect_leaks=1:exitcode=0:abort_on_error=0:fast_unwind_on_malloc=0 \
	LSAN_OPTIONS=suppressions=$(abspath tests/sanitizers/lsan.supp):print_suppressions=0 \
	UBSAN_OPTIONS=log_path=$(ASAN_LOGS)/ubsan:print_stacktrace=1:halt_on_error=1 \
	GDB=1 TOOL_CONF=$(abspath $(ASAN_BUILD))/asan.conf

.PHONY: asan asan-build asan-unit asan-integration

asan: asan-unit asan-integration

asan-build:
	$(MAKE) BUILD=$(ASAN_BUILD) OPT=-O1 SANITIZE="$(ASAN_FLAGS)" all

asan-unit: asan-build
	$(MAKE) BUILD=$(ASAN_BUILD) OPT=-O1 SANITIZE="$(ASAN_FLAGS)" unit

# The log folder is written by every user Dovecot runs as (root, dovecot,
# dovenull, the mail user): sticky and world-writable, like /tmp.
asan-integration: asan-build
	@test -f $(ASAN_RUNTIME) || { echo "no $(ASAN_RUNTIME)"; exit 1; }
	@rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS) && chmod 1777 $(ASAN_LOGS)
	sed 's|@ASAN_RUNTIME@|$(ASAN_RUNTIME)|' tests/sanitizers/asan.conf.in \
		>$(ASAN_BUILD)/asan.conf
	@mkdir -p $(ASAN_BUILD)/bin
	@for p in /usr/sbin/dovecot /usr/bin/doveadm /usr/lib/dovecot/dovecot-lda; do \
		printf '#!/bin/sh\nLD_PRELOAD=%s exec %s "$$@"\n' \
			$(ASAN_RUNTIME) $$p >$(ASAN_BUILD)/bin/$${p##*/}; \
		chmod 0755 $(ASAN_BUILD)/bin/$${p##*/}; done
	$(ASAN_ENV) SQLBOX_BUILD=$(abspath $(ASAN_BUILD)) \
		unshare -m tests/sanitizers/private-doveadm-modules.sh \
		$(dovecot_moduledir)/doveadm $(abspath $(ASAN_BUILD))/doveadm-modules \
		$(PYTHON) -m pytest -ra -p no:cacheprovider \
		$(or $(PYTEST_ARGS),tests/integration \
		     --ignore=tests/integration/test_install.py) ; \
		rc=$$?; $(PYTHON) scripts/sanitizer-reports.py asan $(ASAN_LOGS) \
		&& exit $$rc
