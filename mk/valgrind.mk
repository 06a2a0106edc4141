# SPDX-License-Identifier: MIT
# make valgrind-check: integration tests with every imap process of the
# instances run under valgrind (memcheck), using the normal build. Fails on
# an invalid read or write, a use of uninitialised memory and a definitely
# lost block in sqlbox frames (scripts/sanitizer-reports.py);
# tests/sanitizers/valgrind.supp holds Dovecot's own reports.
# VALGRIND_TESTS picks the tests (a subset by default: valgrind is slow).

VALGRIND_LOGS = $(abspath $(BUILD))/valgrind
VALGRIND_TESTS ?= tests/integration/test_append_fetch.py \
	tests/integration/test_status_sql.py \
	tests/integration/test_changes_refused.py

.PHONY: valgrind-check

valgrind-check: $(PLUGINS)
	@command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }
	@rm -rf $(VALGRIND_LOGS) && mkdir -p $(VALGRIND_LOGS) && chmod 1777 $(VALGRIND_LOGS)
	sed -e 's|@SUPP@|$(abspath tests/sanitizers/valgrind.supp)|' \
		-e 's|@LOGS@|$(VALGRIND_LOGS)|' \
		tests/sanitizers/valgrind-imap.sh.in >$(BUILD)/valgrind-imap.sh
	chmod 0755 $(BUILD)/valgrind-imap.sh
	sed 's|@WRAPPER@|$(abspath $(BUILD))/valgrind-imap.sh|' \
		tests/sanitizers/valgrind.conf.in >$(BUILD)/valgrind.conf
	TOOL_CONF=$(abspath $(BUILD))/valgrind.conf \
		SQLBOX_BUILD=$(abspath $(BUILD)) \
		$(PYTHON) -m pytest -ra -p no:cacheprovider \
		$(VALGRIND_TESTS) $(PYTEST_ARGS) ; \
		rc=$$?; $(PYTHON) scripts/sanitizer-reports.py valgrind \
		$(VALGRIND_LOGS) && exit $$rc
