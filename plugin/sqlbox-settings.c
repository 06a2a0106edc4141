/* SPDX-License-Identifier: MIT */
/* The plugin { sqlbox_* } settings, read from the user's plugin settings
   through one table: a name, a kind and where the value goes. Defaults are
   the ones DESIGN.md and PLUGIN.md state; an unparsable value is an error
   that stops the user's storage from being created, never a silent
   fallback. */

#include "lib.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "sqlbox-settings.h"

#include <stddef.h>

const struct sqlbox_settings sqlbox_default_settings = {
	.lock_timeout_msecs = 30 * 1000,
	.max_message_size = 64 * 1024 * 1024,
	.max_keywords = 500,
	.sent_dedup_window_secs = 10 * 60,
	.tombstone_keep_secs = 90 * 24 * 3600,
};

enum sqlbox_setting_kind {
	SQLBOX_SETTING_TIME_MSECS,
	SQLBOX_SETTING_TIME_SECS,
	SQLBOX_SETTING_SIZE,
	SQLBOX_SETTING_UINT,
};

struct sqlbox_setting_def {
	const char *name;
	enum sqlbox_setting_kind kind;
	size_t offset;
};

#define DEF(name, kind, field) \
	{ name, SQLBOX_SETTING_##kind, offsetof(struct sqlbox_settings, field) }
static const struct sqlbox_setting_def sqlbox_setting_defs[] = {
	DEF("sqlbox_lock_timeout", TIME_MSECS, lock_timeout_msecs),
	DEF("sqlbox_max_message_size", SIZE, max_message_size),
	DEF("sqlbox_max_keywords", UINT, max_keywords),
	DEF("sqlbox_sent_dedup_window", TIME_SECS, sent_dedup_window_secs),
	DEF("sqlbox_tombstone_keep", TIME_SECS, tombstone_keep_secs),
};
#undef DEF

static int
sqlbox_setting_parse(const struct sqlbox_setting_def *def, const char *value,
		     struct sqlbox_settings *set, const char **error_r)
{
	void *dest = (unsigned char *)set + def->offset;
	unsigned int uint_value;
	uoff_t size;

	switch (def->kind) {
	case SQLBOX_SETTING_TIME_MSECS:
		return settings_get_time_msecs(value, (unsigned int *)dest,
					       error_r);
	case SQLBOX_SETTING_TIME_SECS:
		return settings_get_time(value, (unsigned int *)dest, error_r);
	case SQLBOX_SETTING_SIZE:
		if (settings_get_size(value, &size, error_r) < 0)
			return -1;
		*(uoff_t *)dest = size;
		return 0;
	case SQLBOX_SETTING_UINT:
		if (str_to_uint(value, &uint_value) < 0) {
			*error_r = "not a number";
			return -1;
		}
		*(unsigned int *)dest = uint_value;
		return 0;
	}
	i_unreached();
}

int sqlbox_settings_read(struct mail_user *user, struct sqlbox_settings *set_r,
			 const char **error_r)
{
	const char *value, *error;
	unsigned int i;

	*set_r = sqlbox_default_settings;
	for (i = 0; i < N_ELEMENTS(sqlbox_setting_defs); i++) {
		const struct sqlbox_setting_def *def = &sqlbox_setting_defs[i];

		value = mail_user_plugin_getenv(user, def->name);
		if (value == NULL || *value == '\0')
			continue;
		if (sqlbox_setting_parse(def, value, set_r, &error) < 0) {
			*error_r = t_strdup_printf("%s = %s: %s",
						   def->name, value, error);
			return -1;
		}
	}
	return 0;
}
