# SPDX-License-Identifier: MIT
# make bench: sqlbox against Dovecot's maildir and sdbox, side by side in one
# run (tests/bench/bench.py). Prints medians and ratios to sdbox and writes
# JSON lines to build/bench/; never fails on numbers.
#   make bench                 the full run (about 8 minutes on 2 cores)
#   make bench-quick           a tenth of the counts (under 3 minutes)
#   make bench ARGS='--backends sqlbox,maildir,sdbox,mdbox --reps 5'
#   make bench ARGS='--backends sqlbox,sdbox --phases copy,pop3'

.PHONY: bench bench-quick

bench: $(PLUGINS)
	SQLBOX_BUILD=$(abspath $(BUILD)) $(PYTHON) tests/bench/bench.py $(ARGS)

bench-quick: $(PLUGINS)
	SQLBOX_BUILD=$(abspath $(BUILD)) $(PYTHON) tests/bench/bench.py \
		--quick $(ARGS)
