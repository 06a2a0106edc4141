/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_SAVE_H
#define SQLBOX_SAVE_H

struct mail_save_context *
sqlbox_save_alloc(struct mailbox_transaction_context *t);
int sqlbox_save_begin(struct mail_save_context *ctx, struct istream *input);
int sqlbox_save_continue(struct mail_save_context *ctx);
int sqlbox_save_finish(struct mail_save_context *ctx);
void sqlbox_save_cancel(struct mail_save_context *ctx);
/* COPY and MOVE (sqlbox-copy.c) */
int sqlbox_copy(struct mail_save_context *ctx, struct mail *mail);
/* sqlbox-copy.c: where the save context keeps its copies */
struct sqlbox_copy_context **
sqlbox_save_get_copies(struct mail_save_context *ctx);

int sqlbox_transaction_save_commit_pre(struct mail_save_context *ctx);
void sqlbox_transaction_save_commit_post(struct mail_save_context *ctx,
	struct mail_index_transaction_commit_result *result);
void sqlbox_transaction_save_rollback(struct mail_save_context *ctx);

/* The stream of a mail being saved in transaction t (sequence seq), for
   reading it back before the commit (LDA, Sieve, quota). NULL if there is
   no such mail. The caller owns the returned reference. */
struct istream *
sqlbox_save_get_stream(struct mailbox_transaction_context *t, uint32_t seq);

/* The size of a mail being saved or copied in t (the message's, not the
   bytes stored), once it is known (after save_finish, or at once for a
   copy): quota asks for it before the commit. */
bool sqlbox_save_get_size(struct mailbox_transaction_context *t,
			  uint32_t seq, uoff_t *size_r);

#endif
