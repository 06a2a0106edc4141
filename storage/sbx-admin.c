/* SPDX-License-Identifier: MIT */
/* Operator tasks on a user's database: check and repair, purge, online
   backup and restore, statistics.

   The triggers keep counters and reference counts right for every write,
   ours or an operator's; check looks for what they can't prevent (a
   trigger dropped or bypassed, a damaged page) and repairs only what can
   be repaired without losing mail: counters, reference counts, orphans,
   uidnext, stray tombstones. A message without its body is reported,
   never deleted. Workload: a full scan per check, rare. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sqlite3.h>
#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-mailbox.h"
#include "sbx-body.h"
#include "sbx-admin.h"

/* Ids found by a check query, fixed after the query is done. */
struct sbx_id_list {
	int64_t *ids;
	int64_t *ids2;
	size_t count, size;
};

struct sbx_check_ctx {
	struct sbx_db *db;
	bool repair;
	sbx_admin_report_func *report;
	void *context;
	unsigned int problems;
	/* bodies no message uses are orphans when written before this */
	int64_t orphan_cutoff;
};

static int sbx_id_list_add(struct sbx_db *db, struct sbx_id_list *list,
			   int64_t id, int64_t id2)
{
	int64_t *ids, *ids2;
	size_t size;

	if (list->count == list->size) {
		size = list->size == 0 ? 16 : list->size * 2;
		ids = realloc(list->ids, size * sizeof(*ids));
		if (ids != NULL)
			list->ids = ids;
		ids2 = realloc(list->ids2, size * sizeof(*ids2));
		if (ids2 != NULL)
			list->ids2 = ids2;
		if (ids == NULL || ids2 == NULL) {
			return sbx_error_set(db, SBX_ERR_NOMEM,
					     "check: out of memory");
		}
		list->size = size;
	}
	list->ids[list->count] = id;
	list->ids2[list->count] = id2;
	list->count++;
	return 0;
}

static void sbx_id_list_free(struct sbx_id_list *list)
{
	free(list->ids);
	free(list->ids2);
}

static void SBX_PRINTF(2, 3)
sbx_check_problem(struct sbx_check_ctx *ctx, const char *fmt, ...)
{
	char buf[512];
	va_list args;

	va_start(args, fmt);
	(void)vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	ctx->problems++;
	if (ctx->report != NULL)
		ctx->report(ctx->context, buf);
}

/* Runs a statement that takes ?1 = id (and ?2 = id2 when it has two). */
static int sbx_admin_exec_id(struct sbx_db *db, enum sbx_stmt_id sid,
			     int64_t id, int64_t id2)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) == 0 &&
	    (sbx_stmt_param_count(sid) < 2 ||
	     sbx_bind_int64(db, stmt, 2, id2) == 0))
		ret = sbx_stmt_exec(db, stmt, "repair (%s)",
				    sbx_stmt_name(sid));
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_admin_file_check(struct sbx_check_ctx *ctx, bool full)
{
	sqlite3_stmt *stmt;
	const char *text;
	int ret;

	if (sbx_stmt_get(ctx->db, full ? SBX_STMT_ADMIN_INTEGRITY_CHECK :
			 SBX_STMT_ADMIN_QUICK_CHECK, &stmt) < 0)
		return -1;
	while ((ret = sbx_stmt_step_row(ctx->db, stmt, "check file")) > 0) {
		text = (const char *)sqlite3_column_text(stmt, 0);
		if (text != NULL && strcmp(text, "ok") != 0)
			sbx_check_problem(ctx, "file: %s", text);
	}
	sbx_stmt_put(ctx->db, stmt);
	return ret;
}

/* Runs a check query; each row is reported by describe() and, when
   repairing, its ids are kept for fix (a statement of one or two ids). */
static int
sbx_admin_check_query(struct sbx_check_ctx *ctx, enum sbx_stmt_id query,
		      void (*describe)(struct sbx_check_ctx *ctx,
				       sqlite3_stmt *stmt),
		      int id_col, int id2_col, enum sbx_stmt_id fix)
{
	struct sbx_id_list list;
	sqlite3_stmt *stmt;
	size_t i;
	int ret;

	memset(&list, 0, sizeof(list));
	if (sbx_stmt_get(ctx->db, query, &stmt) < 0)
		return -1;
	/* a query with a parameter takes the orphan cutoff */
	if (sbx_stmt_param_count(query) > 0 &&
	    sbx_bind_int64(ctx->db, stmt, 1, ctx->orphan_cutoff) < 0) {
		sbx_stmt_put(ctx->db, stmt);
		return -1;
	}
	while ((ret = sbx_stmt_step_row(ctx->db, stmt, "check (%s)",
					sbx_stmt_name(query))) > 0) {
		describe(ctx, stmt);
		if (ctx->repair && id_col >= 0 &&
		    sbx_id_list_add(ctx->db, &list,
				    sqlite3_column_int64(stmt, id_col),
				    id2_col < 0 ? 0 :
				    sqlite3_column_int64(stmt, id2_col)) < 0) {
			ret = -1;
			break;
		}
	}
	sbx_stmt_put(ctx->db, stmt);
	for (i = 0; ret == 0 && i < list.count; i++)
		ret = sbx_admin_exec_id(ctx->db, fix, list.ids[i],
					list.ids2[i]);
	sbx_id_list_free(&list);
	return ret;
}

static void sbx_describe_counters(struct sbx_check_ctx *ctx,
				  sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "mailbox '%s': counters differ from its "
			  "messages%s", sqlite3_column_text(stmt, 1),
			  ctx->repair ? " (recounted)" : "");
}

static void sbx_describe_refcount(struct sbx_check_ctx *ctx,
				  sqlite3_stmt *stmt)
{
	int64_t refs = sqlite3_column_int64(stmt, 2);

	if (refs == 0) {
		sbx_check_problem(ctx, "body %lld: no message uses it%s",
				  (long long)sqlite3_column_int64(stmt, 0),
				  ctx->repair ? " (freed)" : "");
	} else {
		sbx_check_problem(ctx, "body %lld: refcount %lld but %lld "
				  "references%s",
				  (long long)sqlite3_column_int64(stmt, 0),
				  (long long)sqlite3_column_int64(stmt, 1),
				  (long long)refs,
				  ctx->repair ? " (fixed)" : "");
	}
}

static void sbx_describe_chunk_orphan(struct sbx_check_ctx *ctx,
				      sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "chunks of body %lld: the body is gone%s",
			  (long long)sqlite3_column_int64(stmt, 0),
			  ctx->repair ? " (deleted)" : "");
}

static void sbx_describe_parsed_orphan(struct sbx_check_ctx *ctx,
				       sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "parsed fields of body %lld: the body is "
			  "gone%s", (long long)sqlite3_column_int64(stmt, 0),
			  ctx->repair ? " (deleted)" : "");
}

static void sbx_describe_body_size(struct sbx_check_ctx *ctx,
				   sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "body %lld: its chunks don't add up to its "
			  "size (not repairable)",
			  (long long)sqlite3_column_int64(stmt, 0));
}

static void sbx_describe_missing_body(struct sbx_check_ctx *ctx,
				      sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "mailbox '%s' UID %lld: its body is missing "
			  "(not repairable)", sqlite3_column_text(stmt, 0),
			  (long long)sqlite3_column_int64(stmt, 1));
}

static void sbx_describe_uidnext(struct sbx_check_ctx *ctx,
				 sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "mailbox '%s': a UID at or above uidnext%s",
			  sqlite3_column_text(stmt, 1),
			  ctx->repair ? " (uidnext raised)" : "");
}

static void sbx_describe_tombstoned(struct sbx_check_ctx *ctx,
				    sqlite3_stmt *stmt)
{
	sbx_check_problem(ctx, "mailbox '%s' UID %lld: both a message and a "
			  "tombstone%s", sqlite3_column_text(stmt, 1),
			  (long long)sqlite3_column_int64(stmt, 2),
			  ctx->repair ? " (tombstone removed)" : "");
}

static int sbx_admin_check_logic(struct sbx_check_ctx *ctx)
{
	/* order matters for repairs: stray tombstones and chunks first,
	   then reference counts (freeing orphans), then counters */
	if (sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_TOMBSTONED_MESSAGES,
				  sbx_describe_tombstoned, 0, 2,
				  SBX_STMT_ADMIN_DELETE_TOMBSTONE) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_CHUNK_ORPHANS,
				  sbx_describe_chunk_orphan, 0, -1,
				  SBX_STMT_ADMIN_DELETE_CHUNKS) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_PARSED_ORPHANS,
				  sbx_describe_parsed_orphan, 0, -1,
				  SBX_STMT_ADMIN_DELETE_PARSED) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_REFCOUNTS,
				  sbx_describe_refcount, 0, -1,
				  SBX_STMT_ADMIN_FIX_REFCOUNT) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_BODY_SIZES,
				  sbx_describe_body_size, -1, -1,
				  SBX_STMT_ADMIN_CHECK_BODY_SIZES) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_MISSING_BODIES,
				  sbx_describe_missing_body, -1, -1,
				  SBX_STMT_ADMIN_CHECK_MISSING_BODIES) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_UIDNEXT,
				  sbx_describe_uidnext, 0, -1,
				  SBX_STMT_ADMIN_FIX_UIDNEXT) < 0 ||
	    sbx_admin_check_query(ctx, SBX_STMT_ADMIN_CHECK_COUNTERS,
				  sbx_describe_counters, 0, -1,
				  SBX_STMT_MAILBOX_RECOUNT) < 0)
		return -1;
	return 0;
}

int sbx_admin_check(struct sbx_db *db, enum sbx_check_flags flags,
		    sbx_admin_report_func *report, void *context,
		    unsigned int *problems_r)
{
	struct sbx_check_ctx ctx;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	ctx.db = db;
	ctx.orphan_cutoff = (int64_t)time(NULL) -
		SBX_BODY_UNREFERENCED_GRACE_SECS;
	ctx.repair = (flags & SBX_CHECK_REPAIR) != 0;
	ctx.report = report;
	ctx.context = context;
	*problems_r = 0;

	if (sbx_admin_file_check(&ctx, (flags & SBX_CHECK_FULL) != 0) < 0)
		return -1;
	if (ctx.problems > 0) {
		/* a damaged file: don't trust, let alone change, its rows */
		*problems_r = ctx.problems;
		return 0;
	}
	if (sbx_tx_begin(db, ctx.repair ? SBX_TX_WRITE : SBX_TX_READ) < 0)
		return -1;
	ret = sbx_admin_check_logic(&ctx);
	if (ret < 0)
		sbx_tx_rollback(db);
	else
		ret = sbx_tx_commit(db);
	*problems_r = ctx.problems;
	return ret;
}

static int sbx_admin_read_int(struct sbx_db *db, enum sbx_stmt_id sid,
			      int64_t *value_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	ret = sbx_stmt_step_row(db, stmt, "read (%s)", sbx_stmt_name(sid));
	*value_r = ret > 0 ? sqlite3_column_int64(stmt, 0) : 0;
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : 0;
}

/* Runs a statement to completion (PRAGMAs that return rows too). */
static int sbx_admin_run(struct sbx_db *db, enum sbx_stmt_id sid)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	while ((ret = sbx_stmt_step_row(db, stmt, "run (%s)",
					sbx_stmt_name(sid))) > 0)
		;
	sbx_stmt_put(db, stmt);
	return ret;
}

static uint64_t sbx_admin_wal_bytes(struct sbx_db *db)
{
	char path[4096];
	struct stat st;

	if ((size_t)snprintf(path, sizeof(path), "%s-wal",
			     sbx_db_get_path(db)) >= sizeof(path) ||
	    stat(path, &st) < 0)
		return 0;
	return (uint64_t)st.st_size;
}

static int sbx_admin_file_bytes(struct sbx_db *db, uint64_t *bytes_r)
{
	int64_t pages, page_size;

	if (sbx_admin_read_int(db, SBX_STMT_ADMIN_PAGE_COUNT, &pages) < 0 ||
	    sbx_admin_read_int(db, SBX_STMT_ADMIN_PAGE_SIZE, &page_size) < 0)
		return -1;
	*bytes_r = (uint64_t)(pages * page_size) + sbx_admin_wal_bytes(db);
	return 0;
}

static int sbx_admin_set_meta_int(struct sbx_db *db, const char *key,
				  int64_t value)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_ADMIN_META_SET, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, key) == 0 &&
	    sbx_bind_int64(db, stmt, 2, value) == 0)
		ret = sbx_stmt_exec(db, stmt, "set meta '%s'", key);
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_admin_purge_rows(struct sbx_db *db, int64_t cutoff,
				int64_t body_cutoff,
				struct sbx_purge_result *result)
{
	struct sbx_id_list list;
	sqlite3_stmt *stmt;
	size_t i;
	int ret;

	memset(&list, 0, sizeof(list));
	if (sbx_stmt_get(db, SBX_STMT_ADMIN_ORPHAN_BODIES, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, body_cutoff) < 0) {
		sbx_stmt_put(db, stmt);
		return -1;
	}
	while ((ret = sbx_stmt_step_row(db, stmt, "find orphan bodies")) > 0) {
		if (sbx_id_list_add(db, &list, sqlite3_column_int64(stmt, 0),
				    0) < 0) {
			ret = -1;
			break;
		}
	}
	sbx_stmt_put(db, stmt);
	for (i = 0; ret == 0 && i < list.count; i++) {
		if (sbx_admin_exec_id(db, SBX_STMT_ADMIN_DELETE_CHUNKS,
				      list.ids[i], 0) < 0 ||
		    sbx_admin_exec_id(db, SBX_STMT_ADMIN_DELETE_BODY,
				      list.ids[i], 0) < 0)
			ret = -1;
	}
	result->bodies_freed = list.count;
	sbx_id_list_free(&list);
	if (ret < 0)
		return -1;

	if (sbx_admin_exec_id(db, SBX_STMT_ADMIN_PRUNE_TOMBSTONES, cutoff,
			      0) < 0)
		return -1;
	result->tombstones_pruned = (uint64_t)sqlite3_changes(db->sqlite);
	return sbx_admin_set_meta_int(db, "last_purge", (int64_t)time(NULL));
}

int sbx_admin_purge(struct sbx_db *db, int64_t tombstone_cutoff,
		    int64_t body_cutoff, struct sbx_purge_result *result_r)
{
	struct sbx_db_event event;

	memset(result_r, 0, sizeof(*result_r));
	if (sbx_admin_file_bytes(db, &result_r->bytes_before) < 0)
		return -1;
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		return -1;
	if (sbx_admin_purge_rows(db, tombstone_cutoff, body_cutoff,
				 result_r) < 0 ||
	    sbx_admin_run(db, SBX_STMT_ADMIN_INCREMENTAL_VACUUM) < 0) {
		sbx_tx_rollback(db);
		return -1;
	}
	if (sbx_tx_commit(db) < 0)
		return -1;
	/* the checkpoint runs under the lock file, like every other one */
	if (sbx_db_lock(db, NULL) < 0)
		return -1;
	if (sbx_admin_run(db, SBX_STMT_ADMIN_CHECKPOINT) < 0) {
		sbx_db_unlock(db);
		return -1;
	}
	sbx_db_unlock(db);
	if (sbx_admin_file_bytes(db, &result_r->bytes_after) < 0)
		return -1;
	memset(&event, 0, sizeof(event));
	event.kind = SBX_DB_EVENT_PURGE_FINISHED;
	event.bodies_freed = result_r->bodies_freed;
	event.tombstones_pruned = result_r->tombstones_pruned;
	if (result_r->bytes_before > result_r->bytes_after) {
		event.bytes_reclaimed = result_r->bytes_before -
			result_r->bytes_after;
	}
	sbx_db_notify(db, &event);
	return 0;
}

int sbx_admin_backup(struct sbx_db *db, const char *dest_path)
{
	struct stat st;
	sqlite3_stmt *stmt;
	int ret = -1;

	if (stat(dest_path, &st) == 0) {
		return sbx_error_set(db, SBX_ERR_EXISTS,
				     "backup to '%s': the file exists",
				     dest_path);
	}
	if (sbx_tx_is_active(db)) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
				     "backup: a transaction is active");
	}
	if (sbx_stmt_get(db, SBX_STMT_ADMIN_VACUUM_INTO, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, dest_path) == 0)
		ret = sbx_stmt_exec(db, stmt, "backup to '%s'", dest_path);
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_admin_restore(struct sbx_db *db, const char *src_path)
{
	sqlite3 *src = NULL;
	sqlite3_backup *backup;
	int rc, ret = -1;

	rc = sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY |
			     SQLITE_OPEN_EXRESCODE, NULL);
	if (rc != SQLITE_OK) {
		(void)sbx_error_sqlite(db, rc, "restore from '%s'", src_path);
		sqlite3_close(src);
		return -1;
	}
	if (sbx_db_lock(db, NULL) < 0) {
		sqlite3_close(src);
		return -1;
	}
	backup = sqlite3_backup_init(db->sqlite, "main", src, "main");
	if (backup == NULL) {
		(void)sbx_error_sqlite(db, sqlite3_errcode(db->sqlite),
				       "restore from '%s'", src_path);
		goto out;
	}
	/* the commit the backup makes is ours */
	db->is_committing = true;
	rc = sqlite3_backup_step(backup, -1);
	db->is_committing = false;
	(void)sqlite3_backup_finish(backup);
	if (rc != SQLITE_DONE)
		(void)sbx_error_sqlite(db, rc, "restore from '%s'", src_path);
	else
		ret = 0;
out:
	sbx_db_unlock(db);
	sqlite3_close(src);
	return ret;
}

int sbx_admin_stats(struct sbx_db *db, struct sbx_stats *stats_r)
{
	sqlite3_stmt *stmt;
	int64_t pages, free_pages, page_size;
	int ret;

	memset(stats_r, 0, sizeof(*stats_r));
	if (sbx_stmt_get(db, SBX_STMT_ADMIN_STATS, &stmt) < 0)
		return -1;
	ret = sbx_stmt_step_row(db, stmt, "stats");
	if (ret > 0) {
		stats_r->mailboxes = sbx_column_u64(stmt, 0);
		stats_r->messages = sbx_column_u64(stmt, 1);
		stats_r->message_bytes = sbx_column_u64(stmt, 2);
		stats_r->bodies = sbx_column_u64(stmt, 3);
		stats_r->bodies_shared = sbx_column_u64(stmt, 4);
		stats_r->body_bytes = sbx_column_u64(stmt, 5);
		stats_r->tombstones = sbx_column_u64(stmt, 6);
	}
	sbx_stmt_put(db, stmt);
	if (ret < 0)
		return -1;
	if (sbx_admin_read_int(db, SBX_STMT_ADMIN_PAGE_COUNT, &pages) < 0 ||
	    sbx_admin_read_int(db, SBX_STMT_ADMIN_FREELIST_COUNT,
			       &free_pages) < 0 ||
	    sbx_admin_read_int(db, SBX_STMT_ADMIN_PAGE_SIZE, &page_size) < 0)
		return -1;
	stats_r->file_bytes = (uint64_t)(pages * page_size);
	stats_r->free_bytes = (uint64_t)(free_pages * page_size);
	stats_r->wal_bytes = sbx_admin_wal_bytes(db);
	stats_r->schema_version = sbx_db_get_schema_version(db);

	if (sbx_stmt_get(db, SBX_STMT_ADMIN_META_GET, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, "last_purge") < 0) {
		sbx_stmt_put(db, stmt);
		return -1;
	}
	ret = sbx_stmt_step_row(db, stmt, "read last purge");
	if (ret > 0)
		stats_r->last_purge = sqlite3_column_int64(stmt, 0);
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : 0;
}
