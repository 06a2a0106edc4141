/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_SETTINGS_H
#define SQLBOX_SETTINGS_H

struct mail_user;

/* plugin { sqlbox_* } settings. PLUGIN.md documents each one. */
struct sqlbox_settings {
	unsigned int lock_timeout_msecs;
	uoff_t max_message_size;
	unsigned int max_keywords;
	unsigned int sent_dedup_window_secs;
	unsigned int tombstone_keep_secs;
};

extern const struct sqlbox_settings sqlbox_default_settings;

/* Reads the user's settings over the defaults. Returns 0, or -1 with
   *error_r naming the setting and what is wrong with its value. */
int sqlbox_settings_read(struct mail_user *user, struct sqlbox_settings *set_r,
			 const char **error_r);

#endif
