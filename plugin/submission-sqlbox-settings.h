/* SPDX-License-Identifier: MIT */
#ifndef SUBMISSION_SQLBOX_SETTINGS_H
#define SUBMISSION_SQLBOX_SETTINGS_H

struct mail_user;

enum submission_sqlbox_from_check {
	SUBMISSION_SQLBOX_FROM_CHECK_REJECT = 0,
	SUBMISSION_SQLBOX_FROM_CHECK_OFF,
};

/* plugin { submission_sqlbox_* } settings; userdb fields of the same
   names override them per user. PLUGIN.md documents each one. */
struct submission_sqlbox_settings {
	bool save_sent;
	const char *sent_mailbox;
	bool sent_add_bcc;
	bool sender_check;
	enum submission_sqlbox_from_check from_check;
	const char *senders;
	unsigned int msgs_per_hour;
	unsigned int rcpts_per_day;
	unsigned int max_rcpt_per_msg;
	const char *policy_db;
	unsigned int policy_lock_timeout_msecs;
	bool fail_open;
	unsigned int audit_keep_secs;
};

/* Reads the user's settings over the defaults. Returns 0, or -1 with
   *error_r naming the setting and what is wrong with its value. */
int submission_sqlbox_settings_read(struct mail_user *user,
				    struct submission_sqlbox_settings *set_r,
				    const char **error_r);

#endif
