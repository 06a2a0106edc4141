/* SPDX-License-Identifier: MIT */
/* Message rows read ahead. A FETCH 1:* asked each mail for its row in its
   own statement, and each statement outside a transaction is a read
   transaction of its own in SQLite (locks on the WAL index, a look at the
   WAL): most of a FETCH's time. Rows are read instead in UID ranges, and
   the range doubles while lookups follow it, up to
   SQLBOX_ROWS_MAX_BATCH.

   The rows read answer for their UID range, [first, last]: a UID in it
   without a row has no message. New messages always get UIDs above every
   existing one, so a range never misses a message saved after it was
   read; a message expunged meanwhile is still answered from the row, and
   reading its body then finds it gone, as it would have anyway. Rows are
   dropped when the mailbox pulls anything from SQL (its pull cursor
   moves). Each batch has its own pool, which mails keep referenced while
   they point into it. */

#include "lib.h"
#include "array.h"
#include "bsearch-insert-pos.h"
#include "sbx-db.h"
#include "sbx-msg.h"
#include "sbx-read.h"
#include "sqlbox-storage.h"
#include "sqlbox-rows.h"

#define SQLBOX_ROWS_MAX_BATCH 512

struct sqlbox_rows {
	pool_t pool;
	ARRAY(struct sqlbox_row) rows;
	/* the UIDs the rows answer for; none when last < first */
	uint32_t first, last;
	/* the mailbox's pull cursor when they were read */
	uint64_t pulled_modseq;
	/* the size of the next batch */
	uint32_t batch;
	/* the rows hold the parsed fields; the next batches read them */
	bool with_parsed;

	/* by UID; see struct sqlbox_row_summary */
	ARRAY(struct sqlbox_row_summary) summaries;
	/* the index of the last one looked up */
	unsigned int summary_hint;
};

static void sqlbox_rows_clear(struct sqlbox_rows *rows)
{
	pool_unref(&rows->pool);
	rows->first = 1;
	rows->last = 0;
}

static const char *sqlbox_rows_strdup(pool_t pool, const char *str)
{
	return str == NULL ? NULL : p_strdup(pool, str);
}

static void sqlbox_rows_add(struct sqlbox_rows *rows, const struct sbx_msg *msg,
			    const struct sbx_msg_parsed *parsed)
{
	struct sqlbox_row *row = array_append_space(&rows->rows);

	row->uid = msg->uid;
	row->body_id = msg->body_id;
	row->size = msg->physical_size;
	row->virtual_size = msg->virtual_size;
	row->received_date = (time_t)msg->received_date;
	row->save_date = (time_t)msg->save_date;
	row->guid = p_strdup(rows->pool, msg->guid);
	row->pop3_uidl = sqlbox_rows_strdup(rows->pool, msg->pop3_uidl);
	row->from_envelope = sqlbox_rows_strdup(rows->pool,
						msg->from_envelope);
	row->pop3_order = msg->pop3_order;
	row->have_parsed = rows->with_parsed;
	if (parsed->headers != NULL) {
		/* NUL-terminated, so even an empty value has a buffer */
		unsigned char *headers =
			p_malloc(rows->pool, parsed->headers_size + 1);

		memcpy(headers, parsed->headers, parsed->headers_size);
		row->headers = headers;
		row->headers_size = parsed->headers_size;
	}
	row->bodystructure = sqlbox_rows_strdup(rows->pool,
						parsed->bodystructure);
	row->envelope = sqlbox_rows_strdup(rows->pool, parsed->envelope);
}

/* Reads the rows of UIDs from uid on, batch of them at most. */
static int sqlbox_rows_read(struct sqlbox_mailbox *mbox,
			    struct sqlbox_rows *rows, uint32_t uid)
{
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sbx_read_iter *iter;
	struct sbx_msg_parsed parsed;
	struct sbx_msg msg;
	int ret;

	sqlbox_rows_clear(rows);
	rows->pool = pool_alloconly_create("sqlbox rows",
					   rows->batch * 256 + 1024);
	p_array_init(&rows->rows, rows->pool, rows->batch);
	if (sbx_read_iter_init(db, mbox->mailbox_id, uid, rows->batch,
			       rows->with_parsed, &iter) < 0)
		return -1;
	while ((ret = sbx_read_iter_next(iter, &msg, &parsed)) > 0)
		sqlbox_rows_add(rows, &msg, &parsed);
	if (sbx_read_iter_deinit(&iter) < 0 || ret < 0) {
		sqlbox_rows_clear(rows);
		return -1;
	}
	rows->first = uid;
	if (array_count(&rows->rows) == 0)
		rows->last = uid;
	else {
		const struct sqlbox_row *last = array_back(&rows->rows);

		rows->last = last->uid;
	}
	rows->pulled_modseq = mbox->pulled_modseq;
	return 0;
}

static int sqlbox_row_cmp(const uint32_t *uid, const struct sqlbox_row *row)
{
	return *uid < row->uid ? -1 : (*uid > row->uid ? 1 : 0);
}

static struct sqlbox_rows *sqlbox_rows_get(struct sqlbox_mailbox *mbox)
{
	struct sqlbox_rows *rows = mbox->rows;

	if (rows == NULL) {
		rows = mbox->rows = i_new(struct sqlbox_rows, 1);
		rows->first = 1;
		rows->batch = 1;
	}
	return rows;
}

int sqlbox_rows_lookup(struct sqlbox_mailbox *mbox, uint32_t uid,
		       bool with_parsed, const struct sqlbox_row **row_r,
		       pool_t *pool_r)
{
	struct sqlbox_rows *rows = sqlbox_rows_get(mbox);
	const struct sqlbox_row *row;

	if (rows->pool != NULL && rows->pulled_modseq != mbox->pulled_modseq) {
		sqlbox_rows_clear(rows);
		rows->with_parsed = FALSE;
	}
	if (with_parsed && !rows->with_parsed && rows->pool != NULL &&
	    uid >= rows->first && uid <= rows->last &&
	    array_count(&rows->rows) > 0) {
		/* the same rows again, with the parsed fields */
		rows->with_parsed = TRUE;
		rows->batch = array_count(&rows->rows);
		if (sqlbox_rows_read(mbox, rows, rows->first) < 0)
			return -1;
	}
	rows->with_parsed = rows->with_parsed || with_parsed;
	if (rows->pool == NULL || uid < rows->first || uid > rows->last) {
		/* going on where the last batch ended: read further ahead */
		if (rows->pool != NULL && uid > rows->last &&
		    uid - rows->last <= rows->batch)
			rows->batch = I_MIN(rows->batch * 2,
					    SQLBOX_ROWS_MAX_BATCH);
		else
			rows->batch = 1;
		if (sqlbox_rows_read(mbox, rows, uid) < 0)
			return -1;
	}
	row = array_bsearch(&rows->rows, &uid, sqlbox_row_cmp);
	if (row == NULL)
		return 0;
	pool_ref(rows->pool);
	*pool_r = rows->pool;
	*row_r = row;
	return 1;
}

static int sqlbox_row_summary_cmp(const uint32_t *uid,
				  const struct sqlbox_row_summary *summary)
{
	return *uid < summary->uid ? -1 : (*uid > summary->uid ? 1 : 0);
}

void sqlbox_rows_summary_clear(struct sqlbox_mailbox *mbox)
{
	if (mbox->rows != NULL && array_is_created(&mbox->rows->summaries))
		array_clear(&mbox->rows->summaries);
}

void sqlbox_rows_summary_set(struct sqlbox_mailbox *mbox,
			     const struct sbx_msg_state *msg)
{
	struct sqlbox_rows *rows = sqlbox_rows_get(mbox);
	const struct sqlbox_row_summary *last;
	struct sqlbox_row_summary *summary;
	unsigned int idx;

	if (!array_is_created(&rows->summaries))
		i_array_init(&rows->summaries, 256);
	/* syncs read rows in UID order, and new messages come last */
	last = array_count(&rows->summaries) == 0 ? NULL :
		array_back(&rows->summaries);
	if (last == NULL || last->uid < msg->uid)
		summary = array_append_space(&rows->summaries);
	else if (array_bsearch_insert_pos(&rows->summaries, &msg->uid,
					  sqlbox_row_summary_cmp, &idx))
		summary = array_idx_modifiable(&rows->summaries, idx);
	else
		summary = array_insert_space(&rows->summaries, idx);
	summary->uid = msg->uid;
	summary->pop3_order = msg->pop3_order;
	summary->virtual_size = msg->virtual_size;
	summary->has_pop3_uidl = msg->has_pop3_uidl ? 1 : 0;
}

static struct sqlbox_row_summary *
sqlbox_rows_summary_find(struct sqlbox_mailbox *mbox, uint32_t uid)
{
	struct sqlbox_rows *rows = mbox->rows;
	struct sqlbox_row_summary *summaries;
	unsigned int idx, count;

	if (rows == NULL || !array_is_created(&rows->summaries))
		return NULL;
	/* lookups mostly go up one message at a time */
	summaries = array_get_modifiable(&rows->summaries, &count);
	idx = rows->summary_hint;
	if (idx < count && summaries[idx].uid == uid)
		return &summaries[idx];
	if (++idx < count && summaries[idx].uid == uid) {
		rows->summary_hint = idx;
		return &summaries[idx];
	}
	if (!array_bsearch_insert_pos(&rows->summaries, &uid,
				      sqlbox_row_summary_cmp, &idx))
		return NULL;
	rows->summary_hint = idx;
	return &summaries[idx];
}

void sqlbox_rows_summary_set_uidl(struct sqlbox_mailbox *mbox, uint32_t uid,
				  bool has_pop3_uidl)
{
	struct sqlbox_row_summary *summary =
		sqlbox_rows_summary_find(mbox, uid);

	if (summary != NULL)
		summary->has_pop3_uidl = has_pop3_uidl ? 1 : 0;
}

const struct sqlbox_row_summary *
sqlbox_rows_summary(struct sqlbox_mailbox *mbox, uint32_t uid)
{
	return sqlbox_rows_summary_find(mbox, uid);
}

void sqlbox_rows_forget(struct sqlbox_mailbox *mbox)
{
	if (mbox->rows != NULL && mbox->rows->pool != NULL)
		sqlbox_rows_clear(mbox->rows);
}

void sqlbox_rows_free(struct sqlbox_rows **_rows)
{
	struct sqlbox_rows *rows = *_rows;

	if (rows == NULL)
		return;
	*_rows = NULL;
	if (rows->pool != NULL)
		pool_unref(&rows->pool);
	if (array_is_created(&rows->summaries))
		array_free(&rows->summaries);
	i_free(rows);
}
