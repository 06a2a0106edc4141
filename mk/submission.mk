# SPDX-License-Identifier: MIT
# The submission hook, lib95_submission_sqlbox_plugin.so: loaded only by
# Dovecot's submission binary (protocol submission { mail_plugins }).

SUBMISSION_PLUGIN_SRCS := $(wildcard plugin/submission-sqlbox-*.c)
SUBMISSION_PLUGIN_OBJS := $(SUBMISSION_PLUGIN_SRCS:%.c=$(BUILD)/%.o)
SUBMISSION_PLUGIN_SO = $(BUILD)/lib95_submission_sqlbox_plugin.so

PLUGINS += $(SUBMISSION_PLUGIN_SO)

all: $(SUBMISSION_PLUGIN_SO)

# Undefined submission symbols resolve against the submission binary,
# which exports them (-export-dynamic).
$(SUBMISSION_PLUGIN_SO): $(SUBMISSION_PLUGIN_OBJS) $(LIBSBX)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(SANITIZE) -o $@ $(SUBMISSION_PLUGIN_OBJS) \
		$(LIBSBX) $(SQLITE_LIBS) $(CRYPTO_LIBS)

install: install-submission
uninstall: uninstall-submission
.PHONY: install-submission uninstall-submission

install-submission: $(SUBMISSION_PLUGIN_SO)
	install -d $(DESTDIR)$(dovecot_moduledir)
	install -m 0644 $(SUBMISSION_PLUGIN_SO) $(DESTDIR)$(dovecot_moduledir)/

uninstall-submission:
	rm -f $(DESTDIR)$(dovecot_moduledir)/lib95_submission_sqlbox_plugin.so

-include $(SUBMISSION_PLUGIN_OBJS:.o=.d)

# the test targets' prerequisites were expanded before this file was read
integration check-slow: $(SUBMISSION_PLUGIN_SO)
