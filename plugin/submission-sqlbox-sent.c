/* SPDX-License-Identifier: MIT */
/* The server-side copy into Sent, made through lib-storage like any
   APPEND, so the quota, fts and notify plugins and sqlbox's own UID and
   MODSEQ allocation see it; sqlbox's save path then drops the client's
   own APPEND of the same Message-ID (sqlbox_sent_dedup_window). */

#include "lib.h"
#include "istream.h"
#include "istream-concat.h"
#include "mail-storage.h"
#include "mail-user.h"
#include "mail-namespace.h"
#include "submission-sqlbox-sent.h"

/* The configured \Sent special-use mailbox, else the one named fallback,
   created on first use (the fallback gets no dedup: only \Sent has it). */
static struct mailbox *
submission_sqlbox_sent_open(struct mail_user *user, const char *fallback,
			    const char **error_r)
{
	struct mailbox *box;
	enum mail_error error;

	box = mailbox_alloc_for_user(user, "\\Sent", MAILBOX_FLAG_SPECIAL_USE |
				     MAILBOX_FLAG_SAVEONLY);
	if (mailbox_open(box) == 0)
		return box;
	mailbox_free(&box);

	box = mailbox_alloc_for_user(user, fallback, MAILBOX_FLAG_SAVEONLY);
	if (mailbox_open(box) == 0)
		return box;
	(void)mailbox_get_last_error(box, &error);
	if (error == MAIL_ERROR_NOTFOUND) {
		if (mailbox_create(box, NULL, FALSE) < 0)
			(void)mailbox_get_last_error(box, &error);
		if ((error == MAIL_ERROR_NOTFOUND || error == MAIL_ERROR_EXISTS) &&
		    mailbox_open(box) == 0)
			return box;
	}
	*error_r = t_strdup_printf("open %s: %s", mailbox_get_vname(box),
				   mailbox_get_last_internal_error(box, NULL));
	mailbox_free(&box);
	return NULL;
}

int submission_sqlbox_sent_save(struct mail_user *user, const char *fallback,
				struct istream *input, const char *bcc,
				const char **error_r)
{
	struct mailbox *box;
	struct mailbox_transaction_context *t;
	struct mail_save_context *save;
	struct istream *inputs[3], *msg;
	ssize_t ret;
	int result = 0;

	box = submission_sqlbox_sent_open(user, fallback, error_r);
	if (box == NULL)
		return -1;
	if (bcc != NULL && *bcc != '\0') {
		const char *hdr = t_strdup_printf("Bcc: %s\r\n", bcc);

		inputs[0] = i_stream_create_from_data(hdr, strlen(hdr));
		inputs[1] = input;
		inputs[2] = NULL;
		msg = i_stream_create_concat(inputs);
		i_stream_unref(&inputs[0]);
	} else {
		msg = input;
		i_stream_ref(msg);
	}

	t = mailbox_transaction_begin(box, MAILBOX_TRANSACTION_FLAG_EXTERNAL,
				      "submission Sent copy");
	save = mailbox_save_alloc(t);
	mailbox_save_set_flags(save, MAIL_SEEN, NULL);
	if (mailbox_save_begin(&save, msg) < 0)
		result = -1;
	else {
		while ((ret = i_stream_read(msg)) > 0 || ret == -2) {
			if (mailbox_save_continue(save) < 0) {
				result = -1;
				break;
			}
		}
		if (result == 0 && msg->stream_errno != 0) {
			*error_r = t_strdup_printf("read(%s): %s",
						   i_stream_get_name(msg),
						   i_stream_get_error(msg));
			mailbox_save_cancel(&save);
			mailbox_transaction_rollback(&t);
			i_stream_unref(&msg);
			mailbox_free(&box);
			return -1;
		}
		if (result == 0 && mailbox_save_finish(&save) < 0)
			result = -1;
		else if (result < 0)
			mailbox_save_cancel(&save);
	}
	if (result == 0)
		result = mailbox_transaction_commit(&t);
	else
		mailbox_transaction_rollback(&t);
	if (result < 0) {
		*error_r = t_strdup_printf("save to %s: %s",
			mailbox_get_vname(box),
			mailbox_get_last_internal_error(box, NULL));
	}
	i_stream_unref(&msg);
	mailbox_free(&box);
	return result < 0 ? -1 : 0;
}
