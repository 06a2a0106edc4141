/* SPDX-License-Identifier: MIT */
/* The statement cache, in the manner of Fossil's db.c.

   Every statement of sbx-sql.def is prepared at most once per connection,
   on first use, with SQLITE_PREPARE_PERSISTENT, and kept until
   sbx_db_close(). The invariant: a statement is handed out by
   sbx_stmt_get() to one user at a time and comes back through
   sbx_stmt_put(), which resets it and clears its bindings, so that no
   forgotten statement keeps a read open and pins an old WAL snapshot, and
   no bound pointer outlives the caller's memory. The cache is a fixed
   array indexed by statement ID; there are a few dozen statements. */
#include <limits.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"

struct sbx_stmt_def {
	const char *name;
	const char *sql;
	int nparams;
};

static const struct sbx_stmt_def sbx_stmt_defs[SBX_STMT_COUNT] = {
#define SBX_SQL(id, nparams, text) { #id, text, nparams },
#include "sbx-sql.def"
#include "sbx-submit-sql.def"
#undef SBX_SQL
};

const char *sbx_stmt_name(enum sbx_stmt_id id)
{
	return sbx_stmt_defs[id].name;
}

const char *sbx_stmt_sql(enum sbx_stmt_id id)
{
	return sbx_stmt_defs[id].sql;
}

int sbx_stmt_param_count(enum sbx_stmt_id id)
{
	return sbx_stmt_defs[id].nparams;
}

int sbx_stmt_get(struct sbx_db *db, enum sbx_stmt_id id,
		 sqlite3_stmt **stmt_r)
{
	int rc;

	*stmt_r = NULL;
	if ((unsigned int)id >= SBX_STMT_COUNT) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
				     "statement %d: no such statement",
				     (int)id);
	}
	if (db->stmt_in_use[id]) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
			"statement %s: already in use (nested iteration?)",
			sbx_stmt_defs[id].name);
	}
	if (db->stmts[id] == NULL) {
		rc = sqlite3_prepare_v3(db->sqlite, sbx_stmt_defs[id].sql, -1,
					SQLITE_PREPARE_PERSISTENT,
					&db->stmts[id], NULL);
		if (rc != SQLITE_OK) {
			db->stmts[id] = NULL;
			return sbx_error_sqlite(db, rc,
						"prepare statement %s",
						sbx_stmt_defs[id].name);
		}
	}
	db->stmt_in_use[id] = true;
	*stmt_r = db->stmts[id];
	return 0;
}

/* The ID of a cached statement, or SBX_STMT_COUNT. */
static enum sbx_stmt_id sbx_stmt_find(struct sbx_db *db, sqlite3_stmt *stmt)
{
	unsigned int i;

	for (i = 0; i < SBX_STMT_COUNT; i++) {
		if (db->stmts[i] == stmt)
			return (enum sbx_stmt_id)i;
	}
	return SBX_STMT_COUNT;
}

void sbx_stmt_put(struct sbx_db *db, sqlite3_stmt *stmt)
{
	enum sbx_stmt_id id;

	if (stmt == NULL)
		return;
	/* reset returns the last step's error, which was recorded then. */
	(void)sqlite3_reset(stmt);
	(void)sqlite3_clear_bindings(stmt);
	id = sbx_stmt_find(db, stmt);
	if (id != SBX_STMT_COUNT)
		db->stmt_in_use[id] = false;
}

void sbx_stmt_finalize_all(struct sbx_db *db)
{
	unsigned int i;

	for (i = 0; i < SBX_STMT_COUNT; i++) {
		(void)sqlite3_finalize(db->stmts[i]);
		db->stmts[i] = NULL;
		db->stmt_in_use[i] = false;
	}
}

static const char *sbx_stmt_label(struct sbx_db *db, sqlite3_stmt *stmt)
{
	enum sbx_stmt_id id = sbx_stmt_find(db, stmt);

	return id == SBX_STMT_COUNT ? "?" : sbx_stmt_defs[id].name;
}

static int sbx_bind_result(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
			   int rc)
{
	if (rc == SQLITE_OK)
		return 0;
	return sbx_error_sqlite(db, rc, "bind parameter %d of %s", idx,
				sbx_stmt_label(db, stmt));
}

int sbx_bind_int64(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		   int64_t value)
{
	return sbx_bind_result(db, stmt, idx,
			       sqlite3_bind_int64(stmt, idx, value));
}

int sbx_bind_null(struct sbx_db *db, sqlite3_stmt *stmt, int idx)
{
	return sbx_bind_result(db, stmt, idx, sqlite3_bind_null(stmt, idx));
}

int sbx_bind_text(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		  const char *text)
{
	if (text == NULL)
		return sbx_bind_null(db, stmt, idx);
	return sbx_bind_result(db, stmt, idx,
			       sqlite3_bind_text(stmt, idx, text, -1,
						 SQLITE_STATIC));
}

int sbx_bind_text_len(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		      const char *text, size_t len)
{
	if (text == NULL)
		return sbx_bind_null(db, stmt, idx);
	if (len > INT_MAX) {
		return sbx_error_set(db, SBX_ERR_LIMIT,
				     "bind parameter %d of %s: too long", idx,
				     sbx_stmt_label(db, stmt));
	}
	return sbx_bind_result(db, stmt, idx,
			       sqlite3_bind_text(stmt, idx, text, (int)len,
						 SQLITE_STATIC));
}

int sbx_bind_blob(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		  const void *data, size_t size)
{
	if (data == NULL)
		return sbx_bind_null(db, stmt, idx);
	return sbx_bind_result(db, stmt, idx,
			       sqlite3_bind_blob64(stmt, idx, data,
						   (sqlite3_uint64)size,
						   SQLITE_STATIC));
}

int sbx_stmt_step_row(struct sbx_db *db, sqlite3_stmt *stmt,
		      const char *fmt, ...)
{
	va_list args;
	int rc = sqlite3_step(stmt);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	va_start(args, fmt);
	(void)sbx_error_sqlitev(db, rc, fmt, args);
	va_end(args);
	return -1;
}

int sbx_stmt_exec(struct sbx_db *db, sqlite3_stmt *stmt,
		  const char *fmt, ...)
{
	va_list args;
	int rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		;
	if (rc == SQLITE_DONE)
		return 0;
	va_start(args, fmt);
	(void)sbx_error_sqlitev(db, rc, fmt, args);
	va_end(args);
	return -1;
}

uint32_t sbx_column_u32(sqlite3_stmt *stmt, int col)
{
	sqlite3_int64 value = sqlite3_column_int64(stmt, col);

	if (value < 0)
		return 0;
	if (value > (sqlite3_int64)UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)value;
}

uint64_t sbx_column_u64(sqlite3_stmt *stmt, int col)
{
	sqlite3_int64 value = sqlite3_column_int64(stmt, col);

	return value < 0 ? 0 : (uint64_t)value;
}

int sbx_stmt_iter_step(struct sbx_stmt_iter *iter, const char *what)
{
	int ret;

	if (iter->failed)
		return -1;
	if (iter->done)
		return 0;
	ret = sbx_stmt_step_row(iter->db, iter->stmt, "%s", what);
	if (ret < 0)
		iter->failed = true;
	else if (ret == 0)
		iter->done = true;
	return ret;
}

int sbx_stmt_iter_fail(struct sbx_stmt_iter *iter)
{
	iter->failed = true;
	return -1;
}

int sbx_stmt_iter_finish(struct sbx_stmt_iter *iter)
{
	sbx_stmt_put(iter->db, iter->stmt);
	iter->stmt = NULL;
	return iter->failed ? -1 : 0;
}
