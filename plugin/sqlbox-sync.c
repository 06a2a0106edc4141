/* SPDX-License-Identifier: MIT */
/* Syncing a mailbox's in-memory index with SQL, the source of truth.

   One sync is one index sync session inside one SQL transaction:
     push: the flag, keyword and expunge changes this process committed to
           the index (the index's sync records) are written to SQL under
           one new MODSEQ; expunges leave tombstones. A mailbox
           transaction's own changes reach SQL before the index commits
           them (sqlbox_sync_write_changes()), so their records only take
           SQL's MODSEQ;
     pull: rows whose modseq is above the mailbox's cursor, and tombstones
           above it, are applied through the index sync transaction, which
           is external, so they never come back as sync records.
   A sync without local changes only reads (a WAL snapshot: it never waits
   for writers); one with changes takes the write lock first, before the
   index lock (lock order: mail.sqlite.lock, BEGIN IMMEDIATE, index).
   The first sync of a fresh index imports every row. If SQL's UIDVALIDITY
   differs from the index's, the index is reset and imported again, as
   maildir does when its uidlist changes. */

#include "lib.h"
#include "array.h"
#include "seq-range-array.h"
#include "mail-index-modseq.h"
#include "mail-index-private.h"
#include "mail-index-transaction-private.h"
#include "mail-transaction-log-private.h"
#include "mailbox-recent-flags.h"
#include "index-sync-private.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "sqlbox-error.h"
#include "sqlbox-rows.h"
#include "sqlbox-storage.h"
#include "sqlbox-sync.h"

/* A message or tombstone of a folder being imported whole, for the
   import's second step (sqlbox_sync_import_modseqs()). */
struct sqlbox_import_rec {
	uint64_t modseq;
	uint32_t uid;
	bool expunged;
};
ARRAY_DEFINE_TYPE(sqlbox_import_rec, struct sqlbox_import_rec);

struct sqlbox_sync_context {
	struct sqlbox_mailbox *mbox;
	struct sbx_db *db;
	enum sqlbox_sync_flags flags;
	/* changes SQL already has (sqlbox_sync_after_write()), or NULL */
	const struct sqlbox_sync_written *written;

	struct mail_index_sync_ctx *index_sync_ctx;
	struct mail_index_view *sync_view;
	struct mail_index_transaction *trans;

	/* the next UID the sync transaction may append */
	uint32_t next_uid;
	/* the MODSEQ of this sync's push, 0 until the first change */
	uint64_t push_modseq;
	/* UIDs the push expunged: the pull must not expunge them twice */
	ARRAY_TYPE(seq_range) pushed_expunges;
	/* the import of a whole folder: every message and tombstone, and
	   SQL's highest MODSEQ and highest deleted tombstone's */
	ARRAY_TYPE(sqlbox_import_rec) import_recs;
	uint64_t import_highest, import_pruned;

	bool write_tx:1;
	bool reset:1;
	/* the pull imported every row into an empty index; its MODSEQs
	   follow in sqlbox_sync_import_modseqs() */
	bool imported_all:1;
	/* SQL has messages nobody claimed as \Recent yet */
	bool want_recent_claim:1;
};

/* Keyword lists are stored sorted and space separated. */
static int sqlbox_keyword_cmp(const char *const *a, const char *const *b)
{
	return strcmp(*a, *b);
}

static const char *sqlbox_keywords_join(ARRAY_TYPE(const_string) *names)
{
	array_sort(names, sqlbox_keyword_cmp);
	array_append_zero(names);
	return t_strarray_join(array_front(names), " ");
}

/* Adds or removes one keyword of a stored keyword list. */
static const char *
sqlbox_keywords_change(const char *keywords, const char *name, bool add)
{
	const char *const *old = t_strsplit_spaces(keywords, " ");
	ARRAY_TYPE(const_string) names;
	bool found = FALSE;

	t_array_init(&names, 8);
	for (; *old != NULL; old++) {
		if (strcmp(*old, name) == 0) {
			found = TRUE;
			if (!add)
				continue;
		}
		array_push_back(&names, old);
	}
	if (add && !found)
		array_push_back(&names, &name);
	return sqlbox_keywords_join(&names);
}

/* The index's keywords of a message, as stored in SQL. */
static const char *
sqlbox_sync_index_keywords(struct sqlbox_sync_context *ctx, uint32_t seq)
{
	const ARRAY_TYPE(keywords) *all =
		mail_index_get_keywords(ctx->mbox->box.index);
	ARRAY_TYPE(keyword_indexes) idx;
	ARRAY_TYPE(const_string) names;
	unsigned int kw_idx;

	t_array_init(&idx, 8);
	t_array_init(&names, 8);
	mail_index_lookup_keywords(ctx->sync_view, seq, &idx);
	array_foreach_elem(&idx, kw_idx) {
		const char *name = array_idx_elem(all, kw_idx);

		array_push_back(&names, &name);
	}
	return sqlbox_keywords_join(&names);
}

static int sqlbox_sync_get_push_modseq(struct sqlbox_sync_context *ctx)
{
	if (ctx->push_modseq != 0)
		return 0;
	return sbx_mailbox_modseq_alloc(ctx->db, ctx->mbox->mailbox_id,
					&ctx->push_modseq);
}

/* The index counted a change of this message: SQL gets the push's MODSEQ
   even when another process already made the same change, so both agree
   on the message's MODSEQ. */
static int
sqlbox_sync_push_flags(struct sqlbox_sync_context *ctx,
		       const struct mail_index_sync_rec *rec, uint32_t seq,
		       uint32_t uid)
{
	const ARRAY_TYPE(keywords) *all =
		mail_index_get_keywords(ctx->mbox->box.index);
	struct sbx_msg msg;
	const char *keywords, *name;
	uint32_t flags;
	int ret;

	ret = sbx_msg_lookup(ctx->db, ctx->mbox->mailbox_id, uid, &msg);
	if (ret <= 0)
		return ret;	/* expunged meanwhile: nothing to change */
	flags = msg.flags;
	keywords = t_strdup(msg.keywords);

	switch (rec->type) {
	case MAIL_INDEX_SYNC_TYPE_FLAGS:
		flags = (flags | rec->add_flags) & ~(uint32_t)rec->remove_flags;
		flags &= SBX_FLAGS_MASK;
		break;
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_REMOVE:
		name = array_idx_elem(all, rec->keyword_idx);
		keywords = sqlbox_keywords_change(keywords, name,
			rec->type == MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD);
		break;
	case MAIL_INDEX_SYNC_TYPE_EXPUNGE:
		i_unreached();
	}
	if (sqlbox_sync_get_push_modseq(ctx) < 0)
		return -1;
	ret = sbx_msg_update_flags(ctx->db, ctx->mbox->mailbox_id, uid, flags,
				   keywords, ctx->push_modseq);
	if (ret < 0)
		return -1;
	mail_index_update_modseq(ctx->trans, seq, ctx->push_modseq);
	return 0;
}

/* The sync record only reports an expunge request: the sync transaction
   carries out the expunge (as sdbox does). */
static void
sqlbox_sync_expunge_index(struct sqlbox_sync_context *ctx, uint32_t seq,
			  uint32_t uid)
{
	struct mailbox *box = &ctx->mbox->box;

	mail_index_expunge(ctx->trans, seq);
	seq_range_array_add(&ctx->pushed_expunges, uid);
	if (box->opened) {
		/* plugins (quota) read the mail's sizes while it is still
		   in the view, like sdbox does */
		box->tmp_sync_view = ctx->sync_view;
		mailbox_sync_notify(box, uid, MAILBOX_SYNC_TYPE_EXPUNGE);
		box->tmp_sync_view = NULL;
	}
}

static int
sqlbox_sync_push_expunge(struct sqlbox_sync_context *ctx, uint32_t seq,
			 uint32_t uid)
{
	if (mail_index_transaction_is_expunged(ctx->trans, seq))
		return 0;
	if (sqlbox_sync_get_push_modseq(ctx) < 0)
		return -1;
	if (sbx_msg_expunge(ctx->db, ctx->mbox->mailbox_id, uid,
			    ctx->push_modseq) < 0)
		return -1;
	sqlbox_sync_expunge_index(ctx, seq, uid);
	return 0;
}

/* Is uid's change already in SQL (sqlbox_sync_write_changes())? */
static bool sqlbox_sync_was_written(struct sqlbox_sync_context *ctx,
				    uint32_t uid)
{
	/* an expunge of a row already gone is written too, with nothing
	   (and modseq 0 when nothing else was) */
	return ctx->written != NULL &&
		seq_range_exists(&ctx->written->uids, uid);
}

/* A sync record of a change SQL already has: the index only takes its
   MODSEQ, or carries out the expunge. */
static void
sqlbox_sync_push_written(struct sqlbox_sync_context *ctx,
			 const struct mail_index_sync_rec *rec, uint32_t seq,
			 uint32_t uid)
{
	if (rec->type != MAIL_INDEX_SYNC_TYPE_EXPUNGE)
		mail_index_update_modseq(ctx->trans, seq, ctx->written->modseq);
	else if (!mail_index_transaction_is_expunged(ctx->trans, seq))
		sqlbox_sync_expunge_index(ctx, seq, uid);
}

/* Writes the index's sync records to SQL. Returns 1 if there were any
   to write, 0 if none, -1 on error. With only a read transaction the
   first record to write returns 1 at once: the caller restarts with the
   write lock. Records of changes SQL already has need no write. */
static int sqlbox_sync_push(struct sqlbox_sync_context *ctx)
{
	struct mail_index_sync_rec rec;
	uint32_t seq, seq1, seq2, uid;
	bool have_expunges = FALSE;
	int ret = 0;

	while (mail_index_sync_next(ctx->index_sync_ctx, &rec)) {
		if (!mail_index_lookup_seq_range(ctx->sync_view, rec.uid1,
						 rec.uid2, &seq1, &seq2))
			continue;
		if (rec.type == MAIL_INDEX_SYNC_TYPE_EXPUNGE)
			have_expunges = TRUE;
		for (seq = seq1; seq <= seq2; seq++) {
			int r;

			mail_index_lookup_uid(ctx->sync_view, seq, &uid);
			if (sqlbox_sync_was_written(ctx, uid)) {
				sqlbox_sync_push_written(ctx, &rec, seq, uid);
				continue;
			}
			if (!ctx->write_tx)
				return 1;
			ret = 1;
			T_BEGIN {
				if (rec.type == MAIL_INDEX_SYNC_TYPE_EXPUNGE) {
					r = sqlbox_sync_push_expunge(ctx, seq,
								     uid);
				} else {
					r = sqlbox_sync_push_flags(ctx, &rec,
								   seq, uid);
				}
			} T_END;
			if (r < 0)
				return -1;
		}
	}
	if (have_expunges && ctx->mbox->box.opened)
		mailbox_sync_notify(&ctx->mbox->box, 0, 0);
	return ret;
}

static void
sqlbox_sync_set_keywords(struct sqlbox_sync_context *ctx, uint32_t seq,
			 const char *keywords)
{
	struct mail_keywords *kw;

	kw = mail_index_keywords_create(ctx->mbox->box.index,
					t_strsplit_spaces(keywords, " "));
	mail_index_update_keywords(ctx->trans, seq, MODIFY_REPLACE, kw);
	mail_index_keywords_unref(&kw);
}

/* Appends a row's record with its flags and keywords; returns its
   sequence. */
static uint32_t sqlbox_sync_append_row(struct sqlbox_sync_context *ctx,
				       const struct sbx_msg_state *msg)
{
	uint32_t seq;

	mail_index_append(ctx->trans, msg->uid, &seq);
	mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
				(enum mail_flags)msg->flags);
	if (*msg->keywords != '\0')
		sqlbox_sync_set_keywords(ctx, seq, msg->keywords);
	sqlbox_rows_summary_set(ctx->mbox, msg);
	ctx->next_uid = msg->uid + 1;
	return seq;
}

/* Appends a new message: the MODSEQ update is logged after the append
   (lib-index's export order) and raises the index's count to SQL's. */
static void sqlbox_sync_append(struct sqlbox_sync_context *ctx,
			       const struct sbx_msg_state *msg)
{
	uint32_t seq = sqlbox_sync_append_row(ctx, msg);

	mail_index_update_modseq(ctx->trans, seq, msg->modseq);
}

/* Makes an existing index record's flags and keywords equal to SQL's. */
static void sqlbox_sync_update(struct sqlbox_sync_context *ctx, uint32_t seq,
			       const struct sbx_msg_state *msg)
{
	const struct mail_index_record *rec;
	enum mail_flags flags;

	sqlbox_rows_summary_set(ctx->mbox, msg);
	rec = mail_index_lookup(ctx->sync_view, seq);
	flags = rec->flags & ENUM_NEGATE(MAIL_RECENT);
	if (flags != (enum mail_flags)msg->flags) {
		mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
					(enum mail_flags)msg->flags);
	}
	if (strcmp(sqlbox_sync_index_keywords(ctx, seq), msg->keywords) != 0)
		sqlbox_sync_set_keywords(ctx, seq, msg->keywords);
	/* the index's own counting stays below SQL's next value (its
	   MODSEQs are allocated at least half a step apart), so raising
	   the record makes it equal SQL's */
	if (mail_index_modseq_lookup(ctx->sync_view, seq) < msg->modseq)
		mail_index_update_modseq(ctx->trans, seq, msg->modseq);
}

/* Applies one changed row: a new message is appended, a known one
   updated, one this index no longer has (expunged here) skipped. */
static void sqlbox_sync_pull_row(struct sqlbox_sync_context *ctx,
				 const struct sbx_msg_state *msg)
{
	uint32_t seq;

	if (msg->uid >= ctx->next_uid)
		sqlbox_sync_append(ctx, msg);
	else if (!ctx->reset &&
		 mail_index_lookup_seq(ctx->sync_view, msg->uid, &seq))
		sqlbox_sync_update(ctx, seq, msg);
}

static int sqlbox_sync_pull_delta(struct sqlbox_sync_context *ctx,
				  uint64_t since_modseq)
{
	struct sbx_msg_iter *iter;
	struct sbx_expunge_iter *eiter;
	struct sbx_msg_state msg;
	uint64_t modseq;
	uint32_t uid, seq;
	int ret;

	if (sbx_msg_iter_init(ctx->db, ctx->mbox->mailbox_id, since_modseq,
			      &iter) < 0)
		return -1;
	while ((ret = sbx_msg_iter_next(iter, &msg)) > 0) T_BEGIN {
		sqlbox_sync_pull_row(ctx, &msg);
	} T_END;
	if (sbx_msg_iter_deinit(&iter) < 0 || ret < 0)
		return -1;

	if (sbx_expunge_iter_init(ctx->db, ctx->mbox->mailbox_id, since_modseq,
				  &eiter) < 0)
		return -1;
	while ((ret = sbx_expunge_iter_next(eiter, &uid, &modseq)) > 0) {
		if (seq_range_exists(&ctx->pushed_expunges, uid))
			continue;
		if (mail_index_lookup_seq(ctx->sync_view, uid, &seq) &&
		    !mail_index_transaction_is_expunged(ctx->trans, seq))
			mail_index_expunge(ctx->trans, seq);
	}
	if (sbx_expunge_iter_deinit(&eiter) < 0 || ret < 0)
		return -1;
	return 0;
}

/* Starts a new transaction log at the index's highest MODSEQ when the
   sync commits (once everything is synced): asked for the changes since
   an earlier MODSEQ, Dovecot then answers "too old" and falls back to
   reporting every UID that no longer exists (QRESYNC) or to a full
   compare (dsync). */
static void sqlbox_sync_want_log_rotate(struct mailbox *box)
{
	struct mail_transaction_log_file *head = box->index->log->head;

	if (head->need_rotate == NULL)
		head->need_rotate = i_strdup("sqlbox: older expunges are gone");
}

/* A merge-join of every SQL row with every index record, for an index
   that already has messages (force-resync). Returns 1 when done, 0 when
   the index holds a UID below its next_uid that it lacks (it can't be
   appended: the caller resets the index), -1 on error. */
static int sqlbox_sync_pull_full(struct sqlbox_sync_context *ctx)
{
	struct sbx_msg_iter *iter;
	struct sbx_msg_state msg;
	uint32_t seq = 1, count, uid = 0;
	int ret, result = 1;

	count = mail_index_view_get_messages_count(ctx->sync_view);
	sqlbox_rows_summary_clear(ctx->mbox);
	if (sbx_msg_iter_init(ctx->db, ctx->mbox->mailbox_id, 0, &iter) < 0)
		return -1;
	while (result > 0 && (ret = sbx_msg_iter_next(iter, &msg)) > 0) T_BEGIN {
		for (; seq <= count; seq++) {
			mail_index_lookup_uid(ctx->sync_view, seq, &uid);
			if (uid >= msg.uid)
				break;
			mail_index_expunge(ctx->trans, seq);
		}
		if (seq <= count && uid == msg.uid)
			sqlbox_sync_update(ctx, seq++, &msg);
		else if (msg.uid >= ctx->next_uid)
			sqlbox_sync_append(ctx, &msg);
		else
			result = 0;
	} T_END;
	if (sbx_msg_iter_deinit(&iter) < 0 || ret < 0)
		return -1;
	for (; result > 0 && seq <= count; seq++)
		mail_index_expunge(ctx->trans, seq);
	return result;
}

/* Importing a whole folder is two steps. This first one, in the pull's
   sync transaction, appends every message with its flags and keywords,
   and every tombstone's UID too, all in UID order, with no MODSEQs: they
   are logged at the index's own low count. The second step
   (sqlbox_sync_import_modseqs()) replays SQL's MODSEQs into the log. */
static void sqlbox_sync_import_placeholder(struct sqlbox_sync_context *ctx,
					   uint32_t uid)
{
	uint32_t seq;

	mail_index_append(ctx->trans, uid, &seq);
	ctx->next_uid = uid + 1;
}

static int sqlbox_sync_import_all(struct sqlbox_sync_context *ctx,
				  const struct sbx_mailbox *row)
{
	struct sbx_expunge_iter *eiter;
	struct sbx_msg_iter *iter;
	struct sqlbox_import_rec *rec;
	struct sbx_msg_state msg;
	unsigned int next, count;
	uint64_t modseq;
	uint32_t uid;
	int ret;

	if (array_is_created(&ctx->import_recs))
		array_clear(&ctx->import_recs);
	else
		i_array_init(&ctx->import_recs, 256);
	ctx->imported_all = TRUE;
	ctx->import_highest = row->highestmodseq;
	sqlbox_rows_summary_clear(ctx->mbox);
	ctx->import_pruned = row->pruned_modseq;

	if (sbx_expunge_iter_init(ctx->db, ctx->mbox->mailbox_id, 0,
				  &eiter) < 0)
		return -1;
	while ((ret = sbx_expunge_iter_next(eiter, &uid, &modseq)) > 0) {
		rec = array_append_space(&ctx->import_recs);
		rec->uid = uid;
		rec->modseq = modseq;
		rec->expunged = TRUE;
	}
	if (sbx_expunge_iter_deinit(&eiter) < 0 || ret < 0)
		return -1;

	/* the tombstones are first in import_recs, in UID order: merge
	   them with the rows by index (appending rows may move them) */
	next = 0;
	count = array_count(&ctx->import_recs);
	if (sbx_msg_iter_init(ctx->db, ctx->mbox->mailbox_id, 0, &iter) < 0)
		return -1;
	while ((ret = sbx_msg_iter_next(iter, &msg)) > 0) T_BEGIN {
		for (; next < count; next++) {
			rec = array_idx_modifiable(&ctx->import_recs, next);
			if (rec->uid > msg.uid)
				break;
			if (rec->uid == msg.uid) {
				/* a message with a tombstone (doveadm
				   sqlbox check reports it): it exists */
				rec->uid = 0;
			} else {
				sqlbox_sync_import_placeholder(ctx, rec->uid);
			}
		}
		(void)sqlbox_sync_append_row(ctx, &msg);
		rec = array_append_space(&ctx->import_recs);
		rec->uid = msg.uid;
		rec->modseq = msg.modseq;
	} T_END;
	if (sbx_msg_iter_deinit(&iter) < 0 || ret < 0)
		return -1;
	for (; next < count; next++) {
		rec = array_idx_modifiable(&ctx->import_recs, next);
		sqlbox_sync_import_placeholder(ctx, rec->uid);
	}
	return 0;
}

static int sqlbox_import_rec_cmp(const struct sqlbox_import_rec *a,
				 const struct sqlbox_import_rec *b)
{
	if (a->modseq != b->modseq)
		return a->modseq < b->modseq ? -1 : 1;
	return a->uid < b->uid ? -1 : (a->uid > b->uid ? 1 : 0);
}

/* One index transaction of the second step: raises the index's highest
   MODSEQ (recs NULL; with rotate, a new log starts there), or expunges the
   tombstones' UIDs or raises the messages' MODSEQs to SQL's among recs. */
static int
sqlbox_sync_import_step(struct sqlbox_mailbox *mbox,
			const struct sqlbox_import_rec *recs, unsigned int count,
			bool expunged, uint64_t highest, bool rotate)
{
	struct mail_index_sync_ctx *sync_ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	struct mail_index_sync_rec sync_rec;
	unsigned int i;
	uint32_t seq;

	if (mail_index_sync_begin(mbox->box.index, &sync_ctx, &view,
				  &trans, 0) < 0)
		return -1;
	/* nothing of this process is waiting: a rotation needs the
	   sync to have seen every record */
	while (mail_index_sync_next(sync_ctx, &sync_rec)) ;
	if (rotate)
		sqlbox_sync_want_log_rotate(&mbox->box);
	if (recs == NULL)
		mail_index_update_highest_modseq(trans, highest);
	for (i = 0; recs != NULL && i < count; i++) {
		if (recs[i].uid == 0 || recs[i].expunged != expunged ||
		    !mail_index_lookup_seq(view, recs[i].uid, &seq))
			continue;
		if (expunged)
			mail_index_expunge(trans, seq);
		else
			mail_index_update_modseq(trans, seq, recs[i].modseq);
	}
	return mail_index_sync_commit(&sync_ctx);
}

/* One chunk of the second step. Dovecot finds "the log after MODSEQ m"
   as the position after the record that brought its count to m or above
   (get_modseq_next_offset), assuming each record adds one. So each record
   written here is preceded by one that raises the count to just below
   the record's own highest MODSEQ: the record then counts as changed
   since any m below that MODSEQ, and as older than any m at or above it.
   The tombstones' expunge record and the messages' MODSEQ update record
   go in the order of their highest MODSEQs. */
static int
sqlbox_sync_import_chunk(struct sqlbox_mailbox *mbox,
			 const struct sqlbox_import_rec *recs,
			 unsigned int count)
{
	uint64_t highest[2] = { 0, 0 };	/* messages, tombstones */
	unsigned int i, k, kind;

	for (i = 0; i < count; i++) {
		if (recs[i].uid != 0)
			highest[recs[i].expunged ? 1 : 0] = recs[i].modseq;
	}
	for (k = 0; k < 2; k++) {
		/* the lower one first */
		kind = (highest[0] <= highest[1]) == (k == 0) ? 0 : 1;
		if (highest[kind] == 0)
			continue;
		if (sqlbox_sync_import_step(mbox, NULL, 0, FALSE,
					    highest[kind] - 1, FALSE) < 0 ||
		    sqlbox_sync_import_step(mbox, recs, count, kind == 1,
					    0, FALSE) < 0)
			return -1;
	}
	return 0;
}

/* The second step of an import. The index's transaction log must answer
   "what changed and what was expunged since MODSEQ m" for any m a client
   or dsync may hold, as the log of an index kept on disk would. Replaying
   every SQL MODSEQ as its own transactions would cost a few transactions
   per change ever made; instead the messages and tombstones, sorted by
   MODSEQ, go in chunks of whole MODSEQs whose number doubles from the
   newest (1, 2, 4, ...): asked for the changes since a recent MODSEQ, the
   log answers exactly or with little more, and an import costs about
   4 * log2(n) small transactions. An answer may name more messages than
   changed (RFC 7162 and dsync allow that), never fewer. */
static int sqlbox_sync_import_modseqs(struct sqlbox_sync_context *ctx)
{
	ARRAY(unsigned int) starts;
	const struct sqlbox_import_rec *recs;
	unsigned int count, start, next, groups, wanted, i;
	int ret = 0;

	/* expunges at or below the highest deleted tombstone may be
	   unknown: the log starts there, and asking for the changes since
	   anything earlier is "too old" */
	if (ctx->import_pruned > 0 &&
	    sqlbox_sync_import_step(ctx->mbox, NULL, 0, FALSE,
				    ctx->import_pruned, TRUE) < 0)
		return -1;
	recs = array_get(&ctx->import_recs, &count);
	/* usually sorted already: MODSEQs grow with UIDs in a folder that
	   only received mail, and without tombstones */
	for (i = 1; i < count; i++) {
		if (sqlbox_import_rec_cmp(&recs[i - 1], &recs[i]) > 0) {
			array_sort(&ctx->import_recs, sqlbox_import_rec_cmp);
			recs = array_get(&ctx->import_recs, &count);
			break;
		}
	}
	t_array_init(&starts, 32);
	/* chunk starts, newest first: 1, 2, 4, ... distinct MODSEQs */
	for (start = count, wanted = 1; start > 0; wanted *= 2) {
		for (groups = 0; start > 0 && groups < wanted; groups++) {
			start--;
			while (start > 0 &&
			       recs[start - 1].modseq == recs[start].modseq)
				start--;
		}
		array_push_back(&starts, &start);
	}
	for (i = array_count(&starts); i > 0 && ret == 0; i--) {
		start = *array_idx(&starts, i - 1);
		next = i > 1 ? *array_idx(&starts, i - 2) : count;
		ret = sqlbox_sync_import_chunk(ctx->mbox, recs + start,
					       next - start);
	}
	/* attributes and dsync may have raised SQL's highest above every
	   message and tombstone */
	if (ret == 0)
		ret = sqlbox_sync_import_step(ctx->mbox, NULL, 0, FALSE,
					      ctx->import_highest, FALSE);
	return ret;
}

static void sqlbox_sync_update_header(struct sqlbox_sync_context *ctx,
				      const struct mail_index_header *hdr,
				      const struct sbx_mailbox *row)
{
	uint32_t next_uid = row->uidnext;
	uint32_t first_recent_uid = row->first_recent_uid;

	if (next_uid > ctx->next_uid) {
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, next_uid),
			&next_uid, sizeof(next_uid), FALSE);
	}
	/* messages nobody claimed are \Recent to a read-only session
	   (as with maildir); it only ever grows */
	if (first_recent_uid > hdr->first_recent_uid || ctx->reset) {
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, first_recent_uid),
			&first_recent_uid, sizeof(first_recent_uid), FALSE);
	}
	if ((ctx->mbox->box.flags & MAILBOX_FLAG_DROP_RECENT) != 0 &&
	    row->first_recent_uid < row->uidnext)
		ctx->want_recent_claim = TRUE;
}

/* Reads the mailbox's row and imports what changed. Returns 1 when done,
   0 when the index must be reset first, -1 on error. */
static int sqlbox_sync_pull(struct sqlbox_sync_context *ctx)
{
	struct sqlbox_mailbox *mbox = ctx->mbox;
	const struct mail_index_header *hdr;
	struct sbx_mailbox row;
	uint32_t uid_validity;
	int ret;

	ret = sbx_mailbox_lookup_id(ctx->db, mbox->mailbox_id, &row);
	if (ret < 0)
		return -1;
	if (ret == 0 || strcmp(row.name, mbox->box.name) != 0) {
		/* deleted, or renamed away (RENAME INBOX moves INBOX's row to
		   the new name): as with maildir, the selected mailbox is gone */
		mailbox_set_deleted(&mbox->box);
		return -1;
	}
	hdr = mail_index_get_header(ctx->sync_view);
	if (hdr->uid_validity != 0 && hdr->uid_validity != row.uidvalidity &&
	    !ctx->reset)
		return 0;
	if (hdr->uid_validity != row.uidvalidity || ctx->reset) {
		uid_validity = row.uidvalidity;
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, uid_validity),
			&uid_validity, sizeof(uid_validity), TRUE);
	}
	mbox->uidvalidity = row.uidvalidity;
	ctx->next_uid = ctx->reset ? 1 : hdr->next_uid;

	if (mbox->saveonly && !ctx->reset) {
		/* saving needs only UIDVALIDITY and UIDNEXT */
		sqlbox_sync_update_header(ctx, hdr, &row);
		if (mail_index_modseq_get_highest(ctx->sync_view) <
		    row.highestmodseq) {
			mail_index_update_highest_modseq(ctx->trans,
							 row.highestmodseq);
		}
		mbox->pulled_modseq = row.highestmodseq;
		return 1;
	}

	if (ctx->reset || (mbox->pulled_modseq == 0 &&
			   mail_index_view_get_messages_count(ctx->sync_view) == 0)) {
		/* an empty index: import every row */
		if (sqlbox_sync_import_all(ctx, &row) < 0)
			return -1;
	} else if (mbox->pulled_modseq == 0 ||
		   (ctx->flags & SQLBOX_SYNC_FLAG_FULL) != 0) {
		ret = sqlbox_sync_pull_full(ctx);
		if (ret <= 0)
			return ret;
	} else if (row.highestmodseq != mbox->pulled_modseq) {
		if (sqlbox_sync_pull_delta(ctx, mbox->pulled_modseq) < 0)
			return -1;
	}
	sqlbox_sync_update_header(ctx, hdr, &row);
	/* expunges are logged after MODSEQ updates (lib-index's export
	   order), so they land above SQL's highest: a client asking for
	   VANISHED since any earlier value finds them. (An import sets
	   the highest in its second step.) */
	if (!ctx->imported_all &&
	    mail_index_modseq_get_highest(ctx->sync_view) < row.highestmodseq)
		mail_index_update_highest_modseq(ctx->trans, row.highestmodseq);
	mbox->pulled_modseq = row.highestmodseq;
	return 1;
}

static void sqlbox_sync_tx_rollback(struct sqlbox_sync_context *ctx)
{
	if ((ctx->flags & SQLBOX_SYNC_FLAG_IN_WRITE_TX) == 0)
		sbx_tx_rollback(ctx->db);
}

/* One attempt. Returns 1 done, 0 retry (with the write lock or a reset:
   see ctx), -1 error. */
static int sqlbox_sync_try(struct sqlbox_sync_context *ctx)
{
	struct mailbox *box = &ctx->mbox->box;
	uint64_t old_cursor = ctx->mbox->pulled_modseq;
	enum mail_index_sync_flags sync_flags;
	int ret;

	if ((ctx->flags & SQLBOX_SYNC_FLAG_IN_WRITE_TX) == 0 &&
	    sbx_tx_begin(ctx->db, ctx->write_tx ? SBX_TX_WRITE_LAZY :
			 SBX_TX_READ) < 0) {
		sqlbox_set_box_error(box, ctx->db);
		return -1;
	}
	sync_flags = index_storage_get_sync_flags(box) |
		MAIL_INDEX_SYNC_FLAG_AVOID_FLAG_UPDATES;
	/* like mail_index_sync_begin(), and keeps the mailbox's vsize
	   header right across expunges */
	if (index_storage_expunged_sync_begin(box, &ctx->index_sync_ctx,
					      &ctx->sync_view, &ctx->trans,
					      sync_flags) < 0) {
		sqlbox_sync_tx_rollback(ctx);
		return -1;
	}
	if (ctx->reset)
		mail_index_reset(ctx->trans);

	ret = sqlbox_sync_push(ctx);
	if (ret > 0 && !ctx->write_tx) {
		/* local changes: start again holding the write lock */
		mail_index_sync_rollback(&ctx->index_sync_ctx);
		index_storage_expunging_deinit(box);
		sqlbox_sync_tx_rollback(ctx);
		ctx->write_tx = TRUE;
		return 0;
	}
	if (ret >= 0)
		ret = sqlbox_sync_pull(ctx);
	if (ret <= 0) {
		mail_index_sync_rollback(&ctx->index_sync_ctx);
		index_storage_expunging_deinit(box);
		sqlbox_sync_tx_rollback(ctx);
		ctx->mbox->pulled_modseq = old_cursor;
		if (ret == 0) {
			ctx->reset = TRUE;
			return 0;
		}
		if (!box->mailbox_deleted)
			sqlbox_set_box_error(box, ctx->db);
		if (ctx->push_modseq != 0) {
			/* the index already shows changes SQL doesn't have */
			ctx->mbox->need_full_import = TRUE;
		}
		return -1;
	}

	if ((ctx->flags & SQLBOX_SYNC_FLAG_IN_WRITE_TX) == 0 &&
	    sbx_tx_commit(ctx->db) < 0) {
		sqlbox_set_box_error(box, ctx->db);
		mail_index_sync_rollback(&ctx->index_sync_ctx);
		index_storage_expunging_deinit(box);
		ctx->mbox->pulled_modseq = old_cursor;
		if (ctx->push_modseq != 0)
			ctx->mbox->need_full_import = TRUE;
		return -1;
	}
	ret = mail_index_sync_commit(&ctx->index_sync_ctx);
	index_storage_expunging_deinit(box);
	if (ret == 0 && ctx->reset) {
		/* a reset drops the index's extensions, MODSEQ tracking
		   included, but not the flag saying it is enabled */
		box->index->modseqs_enabled = FALSE;
		mail_index_modseq_enable(box->index);
	}
	if (ret == 0 && ctx->imported_all) T_BEGIN {
		ret = sqlbox_sync_import_modseqs(ctx);
	} T_END;
	if (ret < 0) {
		/* SQL has it all; the next sync imports it again */
		mailbox_set_index_error(box);
		ctx->mbox->pulled_modseq = 0;
		ctx->mbox->need_full_import = TRUE;
		return -1;
	}
	return 1;
}

/* A folder holds at most sqlbox_max_keywords keyword names; at the limit
   new ones are refused and PERMANENTFLAGS drops \*. */
static void sqlbox_sync_update_keyword_limit(struct sqlbox_mailbox *mbox)
{
	const struct sqlbox_settings *set = sqlbox_mailbox_get_settings(mbox);
	unsigned int count;

	count = array_count(mail_index_get_keywords(mbox->box.index));
	mbox->box.disallow_new_keywords =
		set->max_keywords != 0 && count >= set->max_keywords;
}

/* \Recent (DESIGN §3): a read-write session claims the messages nobody
   claimed yet by moving SQL's first_recent_uid to uidnext. It never waits
   for the write lock: if another process holds it, this session simply
   gets no \Recent (IMAP4rev2 dropped the flag). */
static void sqlbox_sync_claim_recent(struct sqlbox_mailbox *mbox)
{
	struct mailbox *box = &mbox->box;
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct mail_index_view *view;
	struct sbx_mailbox row;
	uint32_t old_uid, seq1, seq2;
	const char *msg;

	if (sbx_tx_begin_nowait(db) < 0)
		goto skip;
	if (sbx_mailbox_lookup_id(db, mbox->mailbox_id, &row) <= 0 ||
	    sbx_mailbox_recent_claim(db, mbox->mailbox_id, &old_uid) < 0) {
		sbx_tx_rollback(db);
		goto skip;
	}
	if (sbx_tx_commit(db) < 0)
		goto skip;
	if (old_uid >= row.uidnext)
		return;
	view = mail_index_view_open(box->index);
	if (mail_index_lookup_seq_range(view, old_uid, row.uidnext - 1,
					&seq1, &seq2))
		mailbox_recent_flags_set_seqs(box, view, seq1, seq2);
	mail_index_view_close(&view);
	return;
skip:
	(void)sbx_db_last_error(db, &msg);
	e_debug(box->event, "sqlbox: \\Recent not claimed: %s", msg);
}

static int sqlbox_sync_run(struct sqlbox_mailbox *mbox,
			   enum sqlbox_sync_flags flags,
			   const struct sqlbox_sync_written *written)
{
	struct sqlbox_sync_context ctx;
	unsigned int attempts = 0;
	int ret;

	i_zero(&ctx);
	ctx.mbox = mbox;
	ctx.db = sqlbox_mailbox_get_db(mbox);
	ctx.flags = flags;
	ctx.written = written;
	ctx.write_tx = (flags & SQLBOX_SYNC_FLAG_IN_WRITE_TX) != 0;
	if (mbox->need_full_import) {
		ctx.reset = TRUE;
		mbox->need_full_import = FALSE;
	}
	i_array_init(&ctx.pushed_expunges, 8);
	do {
		array_clear(&ctx.pushed_expunges);
		ctx.push_modseq = 0;
		ctx.imported_all = FALSE;
		ret = sqlbox_sync_try(&ctx);
	} while (ret == 0 && ++attempts < 3);
	array_free(&ctx.pushed_expunges);
	if (array_is_created(&ctx.import_recs))
		array_free(&ctx.import_recs);
	if (ret > 0)
		sqlbox_sync_update_keyword_limit(mbox);
	/* not inside a commit: the next sync claims them */
	if (ret > 0 && ctx.want_recent_claim && written == NULL &&
	    (flags & SQLBOX_SYNC_FLAG_IN_WRITE_TX) == 0)
		sqlbox_sync_claim_recent(mbox);
	if (ret == 0) {
		mailbox_set_critical(&mbox->box,
			"sqlbox: sync did not settle after %u attempts",
			attempts);
		return -1;
	}
	return ret < 0 ? -1 : 0;
}

int sqlbox_sync(struct sqlbox_mailbox *mbox, enum sqlbox_sync_flags flags)
{
	return sqlbox_sync_run(mbox, flags, NULL);
}

int sqlbox_sync_after_write(struct sqlbox_mailbox *mbox,
			    const struct sqlbox_sync_written *written)
{
	return sqlbox_sync_run(mbox, 0, written);
}

/* The keywords of a stored list after itrans's changes of seq. */
static const char *
sqlbox_sync_write_keywords(struct sqlbox_mailbox *mbox,
			   struct mail_index_transaction *itrans, uint32_t seq,
			   const char *keywords)
{
	const ARRAY_TYPE(keywords) *all =
		mail_index_get_keywords(mbox->box.index);
	const struct mail_index_transaction_keyword_update *u;
	unsigned int idx, count;

	if (!array_is_created(&itrans->keyword_updates))
		return keywords;
	u = array_get(&itrans->keyword_updates, &count);
	for (idx = 0; idx < count; idx++) {
		if (array_is_created(&u[idx].remove_seq) &&
		    seq_range_exists(&u[idx].remove_seq, seq)) {
			keywords = sqlbox_keywords_change(keywords,
				array_idx_elem(all, idx), FALSE);
		}
		if (array_is_created(&u[idx].add_seq) &&
		    seq_range_exists(&u[idx].add_seq, seq)) {
			keywords = sqlbox_keywords_change(keywords,
				array_idx_elem(all, idx), TRUE);
		}
	}
	return keywords;
}

/* Writes one message's flag and keyword changes (u: its flag update, or
   NULL). A message already expunged in SQL is left alone. */
static int
sqlbox_sync_write_message(struct sqlbox_mailbox *mbox,
			  struct mail_index_transaction *itrans,
			  const struct mail_index_flag_update *u, uint32_t seq,
			  struct sqlbox_sync_written *written)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sbx_msg msg;
	const char *keywords;
	uint32_t uid, flags;
	int ret;

	mail_index_lookup_uid(itrans->view, seq, &uid);
	seq_range_array_add(&written->uids, uid);
	ret = sbx_msg_lookup(db, mbox->mailbox_id, uid, &msg);
	if (ret <= 0)
		return ret;
	flags = msg.flags;
	keywords = t_strdup(msg.keywords);
	if (u != NULL) {
		flags = (flags | u->add_flags) & ~(uint32_t)u->remove_flags;
		flags &= SBX_FLAGS_MASK;
	}
	keywords = sqlbox_sync_write_keywords(mbox, itrans, seq, keywords);
	return sbx_msg_update_flags(db, mbox->mailbox_id, uid, flags, keywords,
				    written->modseq) < 0 ? -1 : 0;
}

/* Every sequence whose flags or keywords itrans changes. */
static void
sqlbox_sync_changed_seqs(struct mail_index_transaction *itrans,
			 ARRAY_TYPE(seq_range) *seqs)
{
	const struct mail_index_flag_update *u;
	const struct mail_index_transaction_keyword_update *ku;

	if (array_is_created(&itrans->updates)) {
		array_foreach(&itrans->updates, u)
			seq_range_array_add_range(seqs, u->uid1, u->uid2);
	}
	if (array_is_created(&itrans->keyword_updates)) {
		array_foreach(&itrans->keyword_updates, ku) {
			if (array_is_created(&ku->add_seq))
				seq_range_array_merge(seqs, &ku->add_seq);
			if (array_is_created(&ku->remove_seq))
				seq_range_array_merge(seqs, &ku->remove_seq);
		}
	}
}

/* Of uids, the ones SQL still has, into *rows_r (a data stack array): a
   MOVE expunged its sources with their copies, and another session may
   have expunged some. One query per range of UIDs. Returns 0 or -1. */
static int sqlbox_sync_rows_left(struct sqlbox_mailbox *mbox,
				 const ARRAY_TYPE(seq_range) *uids,
				 ARRAY_TYPE(seq_range) *rows_r)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	const struct seq_range *range;
	struct sbx_uid_iter *iter;
	uint32_t uid;
	int ret = 0;

	t_array_init(rows_r, 32);
	array_foreach(uids, range) {
		if (sbx_uid_iter_init(db, mbox->mailbox_id, range->seq1,
				      range->seq2, &iter) < 0)
			return -1;
		while ((ret = sbx_uid_iter_next(iter, &uid)) > 0)
			seq_range_array_add(rows_r, uid);
		if (sbx_uid_iter_deinit(&iter) < 0 || ret < 0)
			return -1;
	}
	return 0;
}

static int
sqlbox_sync_write_changes_to(struct sqlbox_mailbox *mbox,
			     struct mail_index_transaction *itrans,
			     struct sqlbox_sync_written *written)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	const struct mail_transaction_expunge_guid *e;
	const struct mail_index_flag_update *updates = NULL;
	ARRAY_TYPE(seq_range) seqs, expunged, expunge_uids, rows;
	struct seq_range_iter iter;
	unsigned int n = 0, i = 0, count = 0;
	uint32_t seq, uid;
	int ret = 0;

	/* what the commit will do: flag updates that change nothing are
	   dropped (they get no MODSEQ), UNCHANGEDSINCE conflicts cancelled */
	mail_index_transaction_finish_so_far(itrans);
	t_array_init(&seqs, 32);
	t_array_init(&expunged, 32);
	sqlbox_sync_changed_seqs(itrans, &seqs);
	if (array_is_created(&itrans->expunges)) {
		array_foreach(&itrans->expunges, e)
			seq_range_array_add(&expunged, e->uid);
	}
	if (array_count(&seqs) == 0 && array_count(&expunged) == 0)
		return 0;
	/* before export, an expunge's "uid" is still a sequence */
	t_array_init(&expunge_uids, 32);
	seq_range_array_iter_init(&iter, &expunged);
	while (seq_range_array_iter_nth(&iter, n++, &seq)) {
		mail_index_lookup_uid(itrans->view, seq, &uid);
		seq_range_array_add(&written->uids, uid);
		seq_range_array_add(&expunge_uids, uid);
	}
	if (sqlbox_sync_rows_left(mbox, &expunge_uids, &rows) < 0)
		return -1;
	/* expunges of rows already gone (a MOVE's sources went with their
	   copies) change nothing: without flag changes nothing is written,
	   and no MODSEQ or fsync is spent */
	if (array_count(&seqs) == 0 && array_count(&rows) == 0)
		return 0;
	if (sbx_mailbox_modseq_alloc(db, mbox->mailbox_id,
				     &written->modseq) < 0)
		return -1;
	n = 0;
	seq_range_array_iter_init(&iter, &rows);
	while (seq_range_array_iter_nth(&iter, n++, &uid)) {
		if (sbx_msg_expunge(db, mbox->mailbox_id, uid,
				    written->modseq) < 0)
			return -1;
	}
	/* flag updates are sorted and never overlap (lib-index merges
	   them), as are the sequences: one walk pairs them */
	if (array_is_created(&itrans->updates))
		updates = array_get(&itrans->updates, &count);
	seq_range_array_iter_init(&iter, &seqs);
	n = 0;
	while (ret == 0 && seq_range_array_iter_nth(&iter, n++, &seq)) {
		const struct mail_index_flag_update *u = NULL;

		while (i < count && updates[i].uid2 < seq)
			i++;
		if (i < count && updates[i].uid1 <= seq)
			u = &updates[i];
		if (seq_range_exists(&expunged, seq))
			continue;
		T_BEGIN {
			ret = sqlbox_sync_write_message(mbox, itrans, u, seq,
							written);
		} T_END;
	}
	return ret;
}

int sqlbox_sync_write_changes(struct sqlbox_mailbox *mbox,
			      struct mail_index_transaction *itrans,
			      struct sqlbox_sync_written *written)
{
	int ret;

	T_BEGIN {
		ret = sqlbox_sync_write_changes_to(mbox, itrans, written);
	} T_END;
	if (ret < 0)
		sqlbox_set_box_error(&mbox->box, sqlbox_mailbox_get_db(mbox));
	return ret;
}

/* force-resync: counters are kept by triggers, but a database edited by
   hand may have wrong ones; recount them from the rows. */
static int sqlbox_sync_recount(struct sqlbox_mailbox *mbox)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);

	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sbx_mailbox_recount(db, mbox->mailbox_id) < 0) {
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

struct mailbox_sync_context *
sqlbox_mailbox_sync_init(struct mailbox *box, enum mailbox_sync_flags flags)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	enum sqlbox_sync_flags sync_flags = 0;
	bool failed = FALSE, want_sync;

	if (!box->opened && mailbox_open(box) < 0)
		failed = TRUE;
	want_sync = !failed && index_mailbox_want_full_sync(box, flags);
	if (!failed && mbox->saveonly &&
	    ((flags & MAILBOX_SYNC_FLAG_FORCE_RESYNC) != 0 || want_sync)) {
		/* a save-only mailbox asked for its messages: import them
		   all (saving again later keeps them current) */
		mbox->saveonly = FALSE;
		mbox->need_full_import = TRUE;
	}
	if ((flags & MAILBOX_SYNC_FLAG_FORCE_RESYNC) != 0) {
		sync_flags |= SQLBOX_SYNC_FLAG_FULL;
		if (!failed && sqlbox_sync_recount(mbox) < 0)
			failed = TRUE;
	}
	if (!failed && (sync_flags != 0 || mbox->need_full_import ||
			want_sync)) {
		if (sqlbox_sync(mbox, sync_flags) < 0)
			failed = TRUE;
	}
	return index_mailbox_sync_init(box, flags, failed);
}
