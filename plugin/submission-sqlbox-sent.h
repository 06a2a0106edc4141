/* SPDX-License-Identifier: MIT */
#ifndef SUBMISSION_SQLBOX_SENT_H
#define SUBMISSION_SQLBOX_SENT_H

struct mail_user;
struct istream;

/* Saves input (the client's message bytes) into the user's \Sent
   special-use mailbox, or else the mailbox named fallback (created when
   missing), flagged \Seen; a non-empty bcc becomes a Bcc: header in front
   of the message. Returns 0, or -1 with *error_r. */
int submission_sqlbox_sent_save(struct mail_user *user, const char *fallback,
				struct istream *input, const char *bcc,
				const char **error_r);

#endif
