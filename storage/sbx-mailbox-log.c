/* SPDX-License-Identifier: MIT */
/* The mailbox change log table: one row per record, in insertion order
   (the rowid). Records are added in the same transaction as the change
   they describe, so the table never claims a change that didn't happen.
   Workload: a few rows per folder operation; read whole, rarely. */

#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-mailbox-log.h"

struct sbx_mailbox_log_iter {
	struct sbx_db *db;
	sqlite3_stmt *stmt;
	bool failed;
	bool done;
};

int sbx_mailbox_log_add(struct sbx_db *db,
			const struct sbx_mailbox_log_rec *rec)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_db_require_write(db, "add mailbox log record") < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_LOG_ADD, &stmt) < 0)
		return -1;
	if (sbx_bind_blob(db, stmt, 1, rec->guid, SBX_GUID_SIZE) == 0 &&
	    sbx_bind_int64(db, stmt, 2, rec->type) == 0 &&
	    sbx_bind_int64(db, stmt, 3, rec->stamp) == 0)
		ret = sbx_stmt_exec(db, stmt, "add mailbox log record");
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_mailbox_log_iter_init(struct sbx_db *db,
			      struct sbx_mailbox_log_iter **iter_r)
{
	struct sbx_mailbox_log_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "read mailbox log: out of memory");
	}
	iter->db = db;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_LOG_ITER, &iter->stmt) < 0) {
		free(iter);
		return -1;
	}
	*iter_r = iter;
	return 0;
}

int sbx_mailbox_log_iter_next(struct sbx_mailbox_log_iter *iter,
			      struct sbx_mailbox_log_rec *rec_r)
{
	const void *guid;
	int ret;

	if (iter->failed)
		return -1;
	if (iter->done)
		return 0;
	ret = sbx_stmt_step_row(iter->db, iter->stmt, "read mailbox log");
	if (ret == 0) {
		iter->done = true;
		return 0;
	}
	if (ret < 0) {
		iter->failed = true;
		return -1;
	}
	guid = sqlite3_column_blob(iter->stmt, 0);
	if (guid == NULL || sqlite3_column_bytes(iter->stmt, 0) != SBX_GUID_SIZE) {
		iter->failed = true;
		return sbx_error_set(iter->db, SBX_ERR_CORRUPT,
			"read mailbox log: a record's guid is not %d bytes",
			SBX_GUID_SIZE);
	}
	memcpy(rec_r->guid, guid, SBX_GUID_SIZE);
	rec_r->type = (uint8_t)sqlite3_column_int(iter->stmt, 1);
	rec_r->stamp = sqlite3_column_int64(iter->stmt, 2);
	return 1;
}

int sbx_mailbox_log_iter_deinit(struct sbx_mailbox_log_iter **_iter)
{
	struct sbx_mailbox_log_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = iter->failed ? -1 : 0;
	sbx_stmt_put(iter->db, iter->stmt);
	free(iter);
	return ret;
}
