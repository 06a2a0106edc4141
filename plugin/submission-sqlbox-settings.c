/* SPDX-License-Identifier: MIT */
/* The plugin { submission_sqlbox_* } settings, one table of name, kind and
   field, in the manner of sqlbox-settings.c. Userdb fields of the same
   names override them per user (mail_user_plugin_getenv() reads both). An
   unparsable value is an error that refuses the session, never a silent
   fallback to the default. */

#include "lib.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "submission-sqlbox-settings.h"

#include <stddef.h>

static const struct submission_sqlbox_settings submission_sqlbox_defaults = {
	.save_sent = TRUE,
	.sent_mailbox = "Sent",
	.sent_add_bcc = TRUE,
	.sender_check = TRUE,
	.from_check = SUBMISSION_SQLBOX_FROM_CHECK_REJECT,
	.senders = "",
	.msgs_per_hour = 100,
	.rcpts_per_day = 1000,
	.max_rcpt_per_msg = 100,
	.policy_db = "/var/lib/dovecot/sqlbox-submission.db",
	.policy_lock_timeout_msecs = 5 * 1000,
	.fail_open = FALSE,
	.audit_keep_secs = 180 * 24 * 3600,
};

enum submission_sqlbox_setting_kind {
	SETTING_BOOL,
	SETTING_STR,
	SETTING_UINT,
	SETTING_TIME_SECS,
	SETTING_TIME_MSECS,
	SETTING_FROM_CHECK,
};

struct submission_sqlbox_setting_def {
	const char *name;
	enum submission_sqlbox_setting_kind kind;
	size_t offset;
};

#define DEF(name, kind, field) \
	{ "submission_sqlbox_" name, SETTING_##kind, \
	  offsetof(struct submission_sqlbox_settings, field) }
static const struct submission_sqlbox_setting_def setting_defs[] = {
	DEF("save_sent", BOOL, save_sent),
	DEF("sent_mailbox", STR, sent_mailbox),
	DEF("sent_add_bcc", BOOL, sent_add_bcc),
	DEF("sender_check", BOOL, sender_check),
	DEF("from_check", FROM_CHECK, from_check),
	DEF("senders", STR, senders),
	DEF("msgs_per_hour", UINT, msgs_per_hour),
	DEF("rcpts_per_day", UINT, rcpts_per_day),
	DEF("max_rcpt_per_msg", UINT, max_rcpt_per_msg),
	DEF("policy_db", STR, policy_db),
	DEF("policy_lock_timeout", TIME_MSECS, policy_lock_timeout_msecs),
	DEF("fail_open", BOOL, fail_open),
	DEF("audit_keep", TIME_SECS, audit_keep_secs),
};
#undef DEF

static int
submission_sqlbox_setting_parse(const struct submission_sqlbox_setting_def *def,
				const char *value,
				struct submission_sqlbox_settings *set,
				const char **error_r)
{
	void *dest = (unsigned char *)set + def->offset;
	unsigned int uint_value;

	switch (def->kind) {
	case SETTING_BOOL:
		if (strcasecmp(value, "yes") == 0 ||
		    strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0)
			*(bool *)dest = TRUE;
		else if (strcasecmp(value, "no") == 0 ||
			 strcasecmp(value, "false") == 0 ||
			 strcmp(value, "0") == 0)
			*(bool *)dest = FALSE;
		else {
			*error_r = "must be yes or no";
			return -1;
		}
		return 0;
	case SETTING_STR:
		*(const char **)dest = value;
		return 0;
	case SETTING_UINT:
		if (str_to_uint(value, &uint_value) < 0) {
			*error_r = "not a number";
			return -1;
		}
		*(unsigned int *)dest = uint_value;
		return 0;
	case SETTING_TIME_SECS:
		return settings_get_time(value, (unsigned int *)dest, error_r);
	case SETTING_TIME_MSECS:
		return settings_get_time_msecs(value, (unsigned int *)dest,
					       error_r);
	case SETTING_FROM_CHECK:
		if (strcmp(value, "reject") == 0)
			set->from_check = SUBMISSION_SQLBOX_FROM_CHECK_REJECT;
		else if (strcmp(value, "off") == 0)
			set->from_check = SUBMISSION_SQLBOX_FROM_CHECK_OFF;
		else {
			*error_r = "must be reject or off";
			return -1;
		}
		return 0;
	}
	i_unreached();
}

int submission_sqlbox_settings_read(struct mail_user *user,
				    struct submission_sqlbox_settings *set_r,
				    const char **error_r)
{
	const char *value, *error;
	unsigned int i;

	*set_r = submission_sqlbox_defaults;
	for (i = 0; i < N_ELEMENTS(setting_defs); i++) {
		const struct submission_sqlbox_setting_def *def =
			&setting_defs[i];

		value = mail_user_plugin_getenv(user, def->name);
		if (value == NULL)
			continue;
		/* an empty string is a value for the strings (no senders,
		   no policy database), the default for the rest */
		if (*value == '\0' && def->kind != SETTING_STR)
			continue;
		if (submission_sqlbox_setting_parse(def, value, set_r,
						    &error) < 0) {
			*error_r = t_strdup_printf("%s = %s: %s", def->name,
						   value, error);
			return -1;
		}
	}
	if (set_r->sent_mailbox[0] == '\0')
		set_r->sent_mailbox = submission_sqlbox_defaults.sent_mailbox;
	return 0;
}
