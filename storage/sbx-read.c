/* SPDX-License-Identifier: MIT */
/* Batched message reads (sbx-read.h). */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-msg.h"
#include "sbx-read.h"

/* The parsed columns follow SBX_SQL_MSG_COLUMNS' 15. */
#define SBX_READ_COL_HEADERS 15
#define SBX_READ_COL_BODYSTRUCTURE 16
#define SBX_READ_COL_ENVELOPE 17

struct sbx_read_iter {
	struct sbx_stmt_iter it;
};

int sbx_read_iter_init(struct sbx_db *db, int64_t mailbox_id,
		       uint32_t first_uid, uint32_t limit, bool with_parsed,
		       struct sbx_read_iter **iter_r)
{
	struct sbx_read_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "read messages: out of memory");
	}
	iter->it.db = db;
	if (sbx_stmt_get(db, with_parsed ? SBX_STMT_MSG_READ_BATCH_PARSED :
			 SBX_STMT_MSG_READ_BATCH, &iter->it.stmt) < 0) {
		free(iter);
		return -1;
	}
	if (sbx_bind_int64(db, iter->it.stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, iter->it.stmt, 2, first_uid) < 0 ||
	    sbx_bind_int64(db, iter->it.stmt, 3, limit) < 0) {
		sbx_stmt_put(db, iter->it.stmt);
		free(iter);
		return -1;
	}
	*iter_r = iter;
	return 0;
}

int sbx_read_iter_next(struct sbx_read_iter *iter, struct sbx_msg *msg_r,
		       struct sbx_msg_parsed *parsed_r)
{
	static const char empty[1];
	sqlite3_stmt *stmt = iter->it.stmt;
	int ret;

	ret = sbx_stmt_iter_step(&iter->it, "read messages");
	if (ret <= 0)
		return ret;
	if (sbx_msg_from_row(iter->it.db, stmt, msg_r) < 0)
		return sbx_stmt_iter_fail(&iter->it);
	memset(parsed_r, 0, sizeof(*parsed_r));
	if (sqlite3_column_type(stmt, SBX_READ_COL_HEADERS) != SQLITE_NULL) {
		/* blob before bytes; a zero-length blob is NULL */
		parsed_r->headers = sqlite3_column_blob(stmt,
							SBX_READ_COL_HEADERS);
		parsed_r->headers_size = (size_t)sqlite3_column_bytes(stmt,
			SBX_READ_COL_HEADERS);
		if (parsed_r->headers == NULL && parsed_r->headers_size > 0) {
			(void)sbx_error_set(iter->it.db, SBX_ERR_NOMEM,
					    "read messages: out of memory");
			return sbx_stmt_iter_fail(&iter->it);
		}
		if (parsed_r->headers == NULL)
			parsed_r->headers = empty;
	}
	parsed_r->bodystructure = (const char *)sqlite3_column_text(stmt,
		SBX_READ_COL_BODYSTRUCTURE);
	parsed_r->envelope = (const char *)sqlite3_column_text(stmt,
		SBX_READ_COL_ENVELOPE);
	return 1;
}

int sbx_read_iter_deinit(struct sbx_read_iter **_iter)
{
	struct sbx_read_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = sbx_stmt_iter_finish(&iter->it);
	free(iter);
	return ret;
}
