/* SPDX-License-Identifier: MIT */
/* COPY and MOVE within one user's database.

   A copy shares its source's body: copying inserts rows, never bytes.
   mailbox_copy() only appends the new mail's index record (its flags and
   keywords are the save data's) and remembers the source; nothing reads
   SQL per message. In commit_pre, under the write lock, the copies go in
   as one INSERT ... SELECT from their source rows (sbx_msg_copy()), and a
   MOVE then expunges its sources in the same SQL transaction, one
   statement per source folder, under that folder's MODSEQ of the
   transaction: a message is never in both folders, nor in neither. A
   batch of moves alone from one folder (IMAP's MOVE) costs less: its
   tombstones, then one UPDATE that gives the source rows their new
   folder, UID, flags and MODSEQ (sbx_msg_move()), so the triggers move
   the counters instead of adding a body reference and dropping it. A
   source expunged by another session since the command looked at it
   makes the insert (or update) come up short: the whole transaction is
   rolled back and the command fails with EXPUNGED, keeping nothing.

   The invariant: rows go into SQL in ascending UID order (a trigger
   refuses a UID below uidnext), so in a transaction that also saves,
   sqlbox-save.c inserts the copies below each saved mail's UID before
   it. The workload: IMAP COPY and MOVE of up to a whole folder (imap
   moves in batches of 1,000), Sieve fileinto and lazy_expunge a message
   at a time. Anything that is not a copy within the database (another
   user's database, another storage, a save carrying its own GUID, as
   dsync's do) is saved from the stream by mail_storage_copy(). */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "str.h"
#include "mail-copy.h"
#include "mail-index-transaction-private.h"
#include "index-mail.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "sqlbox-error.h"
#include "sqlbox-istream.h"
#include "sqlbox-storage.h"
#include "sqlbox-save.h"
#include "sqlbox-copy.h"

struct sqlbox_copy_mail {
	/* the new mail's index record; its UID once commit_pre assigned
	   them (row.uid) */
	uint32_t seq;
	bool moving;
	/* the source's body and sizes, looked up only when something reads
	   the new mail before the commit */
	bool looked_up;
	int64_t body_id;
	uoff_t size, virtual_size;
	/* what SQL gets: the source, the UID, flags, keywords, save date and
	   MODSEQ (the transaction's, or a higher one a caller asked for) */
	struct sbx_msg_copy row;
	uint64_t min_modseq;
};

struct sqlbox_copy_context {
	pool_t pool;
	ARRAY(struct sqlbox_copy_mail) mails;
	/* commit_pre read the UIDs; the mails are in seq order unless a
	   caller's own UIDs made them sort differently */
	bool uids_assigned;
	bool in_seq_order;
	/* commit_pre: the mails before this one are in SQL */
	unsigned int next;
};

static struct sqlbox_copy_context *sqlbox_copy_context_alloc(void)
{
	struct sqlbox_copy_context *cctx;
	pool_t pool;

	pool = pool_alloconly_create("sqlbox copy", 4096);
	cctx = p_new(pool, struct sqlbox_copy_context, 1);
	cctx->pool = pool;
	p_array_init(&cctx->mails, pool, 64);
	cctx->in_seq_order = TRUE;
	return cctx;
}

void sqlbox_copy_context_free(struct sqlbox_copy_context **_cctx)
{
	struct sqlbox_copy_context *cctx = *_cctx;

	if (cctx == NULL)
		return;
	*_cctx = NULL;
	pool_unref(&cctx->pool);
}

/* The keywords of a mail_keywords as SQL stores them (sbx_msg_copy()
   normalises them). */
static const char *sqlbox_copy_keywords(struct mailbox *box,
					const struct mail_keywords *keywords)
{
	const ARRAY_TYPE(keywords) *all = mail_index_get_keywords(box->index);
	string_t *str;
	unsigned int i;

	if (keywords == NULL || keywords->count == 0)
		return "";
	str = t_str_new(64);
	for (i = 0; i < keywords->count; i++) {
		if (i > 0)
			str_append_c(str, ' ');
		str_append(str, array_idx_elem(all, keywords->idx[i]));
	}
	return str_c(str);
}

/* Is this copy one within the user's database? Anything else is saved
   from the stream: another database or storage, a virtual mailbox's
   backend elsewhere, a save with its own GUID (dsync keeps GUIDs exact by
   saving), or a destination that refuses shared copies. */
static bool sqlbox_copy_is_local(struct mail_save_context *ctx,
				 struct mail *backend)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(ctx->transaction->box);

	return backend->box->storage->v.alloc == sqlbox_storage.v.alloc &&
		sqlbox_mailbox_get_db(SQLBOX_MAILBOX(backend->box)) ==
		sqlbox_mailbox_get_db(mbox) &&
		ctx->data.guid == NULL && !mbox->box.disable_reflink_copy_to;
}

int sqlbox_copy(struct mail_save_context *ctx, struct mail *mail)
{
	struct mailbox *box = ctx->transaction->box;
	struct mail_save_data *mdata = &ctx->data;
	struct sqlbox_copy_context **cctxp, *cctx;
	struct sqlbox_copy_mail *cmail;
	struct mail *backend;

	if (mail_get_backend_mail(mail, &backend) < 0)
		return -1;
	if (!sqlbox_copy_is_local(ctx, backend))
		return mail_storage_copy(ctx, mail);

	cctxp = sqlbox_save_get_copies(ctx);
	if (*cctxp == NULL)
		*cctxp = sqlbox_copy_context_alloc();
	cctx = *cctxp;
	cmail = array_append_space(&cctx->mails);
	mail_index_append(ctx->transaction->itrans, mdata->uid, &cmail->seq);
	mail_index_update_flags(ctx->transaction->itrans, cmail->seq,
				MODIFY_REPLACE,
				mdata->flags & ENUM_NEGATE(MAIL_RECENT));
	if (mdata->keywords != NULL) {
		mail_index_update_keywords(ctx->transaction->itrans, cmail->seq,
					   MODIFY_REPLACE, mdata->keywords);
	}
	cmail->moving = ctx->moving;
	cmail->min_modseq = mdata->min_modseq;
	cmail->row.src_mailbox_id = SQLBOX_MAILBOX(backend->box)->mailbox_id;
	cmail->row.src_uid = backend->uid;
	cmail->row.flags = mdata->flags & SBX_FLAGS_MASK;
	cmail->row.keywords = p_strdup(cctx->pool,
		sqlbox_copy_keywords(box, mdata->keywords));
	cmail->row.save_date = mdata->save_date != (time_t)-1 ?
		mdata->save_date : ioloop_time;

	/* a mailbox opened only to save (a COPY or MOVE target) throws its
	   index away before anything reads it: nothing to cache there */
	if (!SQLBOX_MAILBOX(box)->saveonly)
		index_copy_cache_fields(ctx, mail, cmail->seq);
	if (ctx->dest_mail != NULL)
		mail_set_seq_saving(ctx->dest_mail, cmail->seq);
	index_save_context_free(ctx);
	return 0;
}

static int sqlbox_copy_mail_uid_cmp(const struct sqlbox_copy_mail *a,
				    const struct sqlbox_copy_mail *b)
{
	return a->row.uid < b->row.uid ? -1 :
		(a->row.uid > b->row.uid ? 1 : 0);
}

/* The UIDs mail_index_append_finish_uids() gave the records, in SQL's
   order. They ascend with seq unless a caller asked for UIDs of its own. */
static void sqlbox_copy_assign_uids(struct sqlbox_copy_context *cctx,
				    struct mail_index_transaction *trans)
{
	struct sqlbox_copy_mail *cmail;
	uint32_t prev_uid = 0;
	bool sorted = TRUE;

	array_foreach_modifiable(&cctx->mails, cmail) {
		cmail->row.uid =
			mail_index_transaction_lookup(trans, cmail->seq)->uid;
		i_assert(cmail->row.uid != 0);
		if (cmail->row.uid < prev_uid)
			sorted = FALSE;
		prev_uid = cmail->row.uid;
	}
	if (!sorted) {
		array_sort(&cctx->mails, sqlbox_copy_mail_uid_cmp);
		cctx->in_seq_order = FALSE;
	}
	cctx->uids_assigned = TRUE;
}

/* Expunges the sources of the moves among cmails[0..count-1], one
   statement per source folder. Returns 1, 0 if a source is gone, -1. */
static int sqlbox_copy_expunge_sources(struct sbx_db *db,
				       const struct sqlbox_copy_mail *cmails,
				       unsigned int count)
{
	struct sbx_msg_copy *rows;
	unsigned int i, j, n;
	uint64_t modseq;
	int64_t src_id;
	bool *done;
	int ret = 1;

	rows = i_new(struct sbx_msg_copy, count);
	done = i_new(bool, count);
	for (i = 0; i < count && ret > 0; i++) {
		if (!cmails[i].moving || done[i])
			continue;
		src_id = cmails[i].row.src_mailbox_id;
		for (j = i, n = 0; j < count; j++) {
			if (cmails[j].moving && !done[j] &&
			    cmails[j].row.src_mailbox_id == src_id) {
				rows[n++] = cmails[j].row;
				done[j] = TRUE;
			}
		}
		/* the folder's MODSEQ of this transaction: the same value
		   when the source is the destination */
		if (sbx_mailbox_modseq_alloc(db, src_id, &modseq) < 0)
			ret = -1;
		else {
			ret = sbx_msg_expunge_copied(db, src_id, rows, n,
						     modseq);
		}
	}
	i_free(rows);
	i_free(done);
	return ret;
}

int sqlbox_copy_insert(struct sqlbox_copy_context *cctx,
		       struct sqlbox_mailbox *mbox,
		       struct mail_index_transaction *trans,
		       uint32_t uid_limit, uint64_t modseq,
		       uint64_t *highest_modseq)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sqlbox_copy_mail *cmails;
	struct sbx_msg_copy *rows;
	unsigned int i, start, end, count;
	uint64_t src_modseq;
	bool moving = FALSE, move_only;
	int ret;

	if (cctx == NULL)
		return 1;
	if (!cctx->uids_assigned)
		sqlbox_copy_assign_uids(cctx, trans);
	cmails = array_get_modifiable(&cctx->mails, &count);
	start = cctx->next;
	for (end = start; end < count; end++) {
		if (cmails[end].row.uid >= uid_limit)
			break;
	}
	if (start == end)
		return 1;

	rows = i_new(struct sbx_msg_copy, end - start);
	move_only = TRUE;
	for (i = start; i < end; i++) {
		cmails[i].row.modseq = I_MAX(modseq, cmails[i].min_modseq);
		rows[i - start] = cmails[i].row;
		moving = moving || cmails[i].moving;
		move_only = move_only && cmails[i].moving &&
			cmails[i].row.src_mailbox_id ==
			cmails[start].row.src_mailbox_id;
	}
	if (move_only) {
		/* IMAP's MOVE: the rows change folder instead of being
		   copied and expunged, under the source's MODSEQ of this
		   transaction (the same value when it is the destination) */
		if (sbx_mailbox_modseq_alloc(db,
				cmails[start].row.src_mailbox_id,
				&src_modseq) < 0)
			ret = -1;
		else {
			ret = sbx_msg_move(db, mbox->mailbox_id, rows,
					   end - start, src_modseq);
		}
	} else {
		ret = sbx_msg_copy(db, mbox->mailbox_id, rows, end - start);
		if (ret > 0 && moving)
			ret = sqlbox_copy_expunge_sources(db, cmails + start,
							  end - start);
	}
	i_free(rows);
	if (ret <= 0)
		return ret;
	for (i = start; i < end; i++) {
		/* the record's MODSEQ is SQL's: exported after the append,
		   the update raises the index's own count to it */
		mail_index_update_modseq(trans, cmails[i].seq,
					 cmails[i].row.modseq);
		*highest_modseq = I_MAX(*highest_modseq, cmails[i].row.modseq);
	}
	cctx->next = end;
	return 1;
}

static int sqlbox_copy_mail_seq_cmp(const uint32_t *seq,
				    const struct sqlbox_copy_mail *cmail)
{
	return *seq < cmail->seq ? -1 : (*seq > cmail->seq ? 1 : 0);
}

/* The copy with index record seq, its source looked up in SQL on first
   use. NULL if seq is no copy, or its source is gone. */
static struct sqlbox_copy_mail *
sqlbox_copy_find(struct sqlbox_copy_context *cctx,
		 struct sqlbox_mailbox *mbox, uint32_t seq)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sqlbox_copy_mail *cmail = NULL, *c;
	struct sbx_msg msg;
	int ret;

	if (cctx == NULL)
		return NULL;
	if (cctx->in_seq_order) {
		/* quota asks for every copy's size: no quadratic search */
		cmail = array_bsearch(&cctx->mails, &seq,
						 sqlbox_copy_mail_seq_cmp);
	} else {
		array_foreach_modifiable(&cctx->mails, c) {
			if (c->seq == seq) {
				cmail = c;
				break;
			}
		}
	}
	if (cmail == NULL || cmail->looked_up)
		return cmail;
	ret = sbx_msg_lookup(db, cmail->row.src_mailbox_id, cmail->row.src_uid,
			     &msg);
	if (ret <= 0) {
		/* gone: the commit fails with EXPUNGED */
		if (ret < 0)
			sqlbox_set_box_error(&mbox->box, db);
		return NULL;
	}
	cmail->looked_up = TRUE;
	cmail->body_id = msg.body_id;
	cmail->size = msg.physical_size;
	cmail->virtual_size = msg.virtual_size;
	return cmail;
}

struct istream *sqlbox_copy_get_stream(struct sqlbox_copy_context *cctx,
				       struct sqlbox_mailbox *mbox,
				       uint32_t seq)
{
	const struct sqlbox_copy_mail *cmail;

	cmail = sqlbox_copy_find(cctx, mbox, seq);
	if (cmail == NULL)
		return NULL;
	return i_stream_create_sqlbox_body(sqlbox_mailbox_get_db(mbox),
					   cmail->body_id, cmail->size);
}

bool sqlbox_copy_get_size(struct sqlbox_copy_context *cctx,
			  struct sqlbox_mailbox *mbox, uint32_t seq,
			  uoff_t *size_r)
{
	const struct sqlbox_copy_mail *cmail;

	cmail = sqlbox_copy_find(cctx, mbox, seq);
	if (cmail == NULL)
		return FALSE;
	*size_r = cmail->virtual_size;
	return TRUE;
}
