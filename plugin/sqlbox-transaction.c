/* SPDX-License-Identifier: MIT */
/* Mailbox transactions: Dovecot's index transaction plus what must reach
   SQL when it commits.

   Flag, keyword and expunge changes and attribute changes are written to
   SQL before the commit returns, in one SQL transaction that commits
   before the index does: a lock that can't be had within
   sqlbox_lock_timeout (NO [INUSE]), a full disk or an I/O error fails the
   command and changes nothing, neither in SQL nor in the session's view.
   A transaction that saves takes the lock in commit_pre instead
   (sqlbox-save.c); its other changes, if any, follow in a transaction of
   their own. */

#include "lib.h"
#include "array.h"
#include "seq-range-array.h"
#include "mail-index-modseq.h"
#include "mail-index-transaction-private.h"
#include "index-storage.h"
#include "sbx-attr.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "sqlbox-error.h"
#include "sqlbox-storage.h"
#include "sqlbox-sync.h"
#include "sqlbox-transaction.h"

struct mailbox_transaction_context *
sqlbox_transaction_begin(struct mailbox *box,
			 enum mailbox_transaction_flags flags,
			 const char *reason)
{
	struct sqlbox_transaction_context *st;

	st = i_new(struct sqlbox_transaction_context, 1);
	index_transaction_init(&st->t, box, flags, reason);
	return &st->t;
}

/* Does an index transaction change flags or keywords, or expunge? */
static bool sqlbox_itrans_has_changes(struct mail_index_transaction *itrans)
{
	return array_is_created(&itrans->updates) ||
		array_is_created(&itrans->keyword_updates) ||
		array_is_created(&itrans->expunges) ||
		array_is_created(&itrans->modseq_updates);
}

/* Does a committed transaction leave changes the index must push to SQL?
   Expunge requests are reported as "other" changes (only external
   expunges count as CHANGE_EXPUNGE), so those are looked for directly. */
static bool
sqlbox_transaction_needs_push(struct mailbox *box,
			      enum mail_index_transaction_change changes)
{
	if ((changes & (MAIL_INDEX_TRANSACTION_CHANGE_FLAGS |
			MAIL_INDEX_TRANSACTION_CHANGE_KEYWORDS |
			MAIL_INDEX_TRANSACTION_CHANGE_EXPUNGE)) != 0)
		return TRUE;
	return (changes & MAIL_INDEX_TRANSACTION_CHANGE_OTHERS) != 0 &&
		mail_index_sync_have_any_expunges(box->index);
}

/* Writes attribute changes inside the caller's write transaction. They
   raise the mailbox's HIGHESTMODSEQ, as Dovecot's own backends do: dsync
   skips a folder whose HIGHESTMODSEQ and counters are unchanged. */
static int
sqlbox_transaction_apply_attrs(struct sbx_db *db, int64_t mailbox_id,
			       const struct sqlbox_attr_change *changes,
			       unsigned int count)
{
	uint64_t modseq;
	unsigned int i;

	if (count > 0 && sbx_mailbox_modseq_alloc(db, mailbox_id, &modseq) < 0)
		return -1;

	for (i = 0; i < count; i++) {
		const struct sqlbox_attr_change *c = &changes[i];
		size_t size = c->value == NULL ? 0 : strlen(c->value);

		if (sbx_attr_set(db, mailbox_id, c->type, c->key, c->value,
				 size, (int64_t)c->last_change) < 0)
			return -1;
	}
	return 0;
}

/* Attribute changes of a saving transaction, after its commit. */
static int
sqlbox_transaction_attrs_alone(struct sqlbox_mailbox *mbox,
			       const struct sqlbox_attr_change *changes,
			       unsigned int count)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);

	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sqlbox_transaction_apply_attrs(db, mbox->mailbox_id, changes,
					   count) < 0) {
		sbx_tx_rollback(db);
		goto fail;
	}
	if (sbx_tx_commit(db) < 0)
		goto fail;
	return 0;
fail:
	sqlbox_set_box_error(&mbox->box, db);
	return -1;
}

/* STORE UNCHANGEDSINCE: lib-index compares the transaction's limit with
   its view, which knows other processes' changes only as of the last
   sync, and skips the comparison when the view's highest MODSEQ equals
   the limit. Under the write lock, SQL is pulled first and every message
   the transaction changes is compared with its current MODSEQ; those
   changed since are dropped from the transaction and reported as
   conflicts (MODIFIED), as lib-index would. */
static int
sqlbox_transaction_check_unchanged(struct mailbox_transaction_context *t)
{
	struct mail_index_transaction *itrans = t->itrans;
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(t->box);
	uint32_t seq, count;
	bool flags, keywords;

	if (sqlbox_sync(mbox, SQLBOX_SYNC_FLAG_IN_WRITE_TX) < 0)
		return -1;
	if (itrans->min_flagupdate_seq == 0 || itrans->conflict_seqs == NULL)
		return 0;
	count = mail_index_view_get_messages_count(itrans->view);
	for (seq = itrans->min_flagupdate_seq;
	     seq <= itrans->max_flagupdate_seq && seq <= count; seq++) {
		if (mail_index_modseq_lookup(itrans->view, seq) <=
		    itrans->max_modseq)
			continue;
		flags = mail_index_cancel_flag_updates(itrans, seq);
		keywords = mail_index_cancel_keyword_updates(itrans, seq);
		if (flags || keywords) {
			seq_range_array_add_with_init(itrans->conflict_seqs,
						      16, seq);
		}
	}
	return 0;
}

/* dsync raises a message's MODSEQ to its other copy's (mail_update_modseq):
   SQL is raised too, so every process sees the same value. */
static int
sqlbox_transaction_apply_modseqs(struct mailbox_transaction_context *t)
{
	struct mail_index_transaction *itrans = t->itrans;
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(t->box);
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	const struct mail_transaction_modseq_update *u;
	uint32_t count, uid;

	if (!array_is_created(&itrans->modseq_updates))
		return 0;
	count = mail_index_view_get_messages_count(itrans->view);
	array_foreach(&itrans->modseq_updates, u) {
		/* uid is still a sequence here; 0 is the highest MODSEQ */
		if (u->uid == 0 || u->uid > count)
			continue;
		mail_index_lookup_uid(itrans->view, u->uid, &uid);
		if (sbx_msg_raise_modseq(db, mbox->mailbox_id, uid,
					 ((uint64_t)u->modseq_high32 << 32) |
					 u->modseq_low32) < 0)
			return -1;
	}
	return 0;
}

/* SQL commits first, the index after it: a lock timeout, a full disk or
   an I/O error fails the command while neither SQL nor the session's view
   has anything of it. The sync that follows only gives the index's
   records SQL's MODSEQ; it writes nothing. */
static int
sqlbox_transaction_commit_locked(struct mailbox_transaction_context *t,
				 struct mail_transaction_commit_changes *changes_r,
				 const struct sqlbox_attr_change *attrs,
				 unsigned int attr_count)
{
	struct mailbox *box = t->box;
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sqlbox_sync_written written;
	int ret = -1;

	i_zero(&written);
	i_array_init(&written.uids, 32);
	/* flags, keywords, expunges, attributes: no new mail, so the commit
	   need not wait for the disk (mail_fsync = optimized) */
	if (sbx_tx_begin(db, SBX_TX_WRITE_LAZY) < 0) {
		sqlbox_set_box_error(box, db);
		index_transaction_rollback(t);
		goto out;
	}
	if (sqlbox_transaction_apply_attrs(db, mbox->mailbox_id, attrs,
					   attr_count) < 0) {
		sqlbox_set_box_error(box, db);
		goto out_rollback;
	}
	if (t->itrans->max_modseq != 0 &&
	    sqlbox_transaction_check_unchanged(t) < 0)
		goto out_rollback;
	if (sqlbox_transaction_apply_modseqs(t) < 0) {
		sqlbox_set_box_error(box, db);
		goto out_rollback;
	}
	if (sqlbox_sync_write_changes(mbox, t->itrans, &written) < 0)
		goto out_rollback;
	if (sbx_tx_commit(db) < 0) {
		sqlbox_set_box_error(box, db);
		index_transaction_rollback(t);
		goto out;
	}
	/* SQL has it all: if the index fails now, the next sync pulls it */
	if (index_transaction_commit(t, changes_r) < 0)
		goto out;
	ret = sqlbox_sync_after_write(mbox, &written);
	goto out;
out_rollback:
	sbx_tx_rollback(db);
	index_transaction_rollback(t);
out:
	array_free(&written.uids);
	return ret;
}

int sqlbox_transaction_commit(struct mailbox_transaction_context *t,
			      struct mail_transaction_commit_changes *changes_r)
{
	struct sqlbox_transaction_context *st = SQLBOX_TRANSACTION(t);
	struct mailbox *box = t->box;
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	/* t is freed by the commit: keep what comes after it */
	pool_t attr_pool = st->attr_pool;
	const struct sqlbox_attr_change *attrs = NULL;
	unsigned int attr_count = 0;
	bool saving = t->save_ctx != NULL;
	int ret;

	if (attr_pool != NULL)
		attrs = array_get(&st->attr_changes, &attr_count);

	if (!saving && (attr_count > 0 || sqlbox_itrans_has_changes(t->itrans)))
		ret = sqlbox_transaction_commit_locked(t, changes_r, attrs,
						       attr_count);
	else {
		ret = index_transaction_commit(t, changes_r);
		if (ret == 0 && attr_count > 0)
			ret = sqlbox_transaction_attrs_alone(mbox, attrs,
							     attr_count);
		if (ret == 0 &&
		    sqlbox_transaction_needs_push(box, changes_r->changes_mask))
			ret = sqlbox_sync(mbox, 0);
	}
	pool_unref(&attr_pool);
	return ret;
}

void sqlbox_transaction_rollback(struct mailbox_transaction_context *t)
{
	struct sqlbox_transaction_context *st = SQLBOX_TRANSACTION(t);
	pool_t attr_pool = st->attr_pool;

	index_transaction_rollback(t);
	pool_unref(&attr_pool);
}
