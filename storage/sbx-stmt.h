/* SPDX-License-Identifier: MIT */
/* The statement cache: every statement of sbx-sql.def, prepared once per
   connection, and the binding helpers. */
#ifndef SBX_STMT_H
#define SBX_STMT_H

#include <sqlite3.h>

#include "sbx-common.h"

struct sbx_db;

#ifndef SBX_PRINTF
#  ifdef __GNUC__
#    define SBX_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#  else
#    define SBX_PRINTF(fmt, args)
#  endif
#endif

enum sbx_stmt_id {
#define SBX_SQL(id, nparams, text) SBX_STMT_##id,
#include "sbx-sql.def"
#include "sbx-submit-sql.def"
#undef SBX_SQL
	SBX_STMT_COUNT
};
/* The statements of the submission operator database come last; the ones
   before work on a mail database. */
#define SBX_STMT_POLICY_FIRST SBX_STMT_POLICY_RATE_SUM_MESSAGES

/* The ID without its prefix ("MSG_INSERT"), the SQL text and the number of
   parameters sbx-sql.def declares for id. */
const char *sbx_stmt_name(enum sbx_stmt_id id);
const char *sbx_stmt_sql(enum sbx_stmt_id id);
int sbx_stmt_param_count(enum sbx_stmt_id id);

/* Returns the prepared statement id in *stmt_r, preparing it on first use
   (SQLITE_PREPARE_PERSISTENT) and marking it in use. Returns 0, or -1 if
   it does not prepare or is in use already (SBX_ERR_INTERNAL: a nested
   iteration of the same kind, or a missing sbx_stmt_put()). */
int sbx_stmt_get(struct sbx_db *db, enum sbx_stmt_id id,
		 sqlite3_stmt **stmt_r);
/* Resets stmt and clears its bindings, ending any read it holds, and
   marks it free. Call it on every path after sbx_stmt_get(). Accepts
   NULL. */
void sbx_stmt_put(struct sbx_db *db, sqlite3_stmt *stmt);
/* Finalizes every cached statement (sbx_db_close()). */
void sbx_stmt_finalize_all(struct sbx_db *db);

/* Binding parameter idx of stmt. Text and blobs are bound SQLITE_STATIC:
   the caller's memory must live until sbx_stmt_put(), which every
   function does before it returns. A NULL text or blob binds SQL NULL.
   Each returns 0, or -1 with the cause recorded. */
int sbx_bind_int64(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		   int64_t value);
int sbx_bind_null(struct sbx_db *db, sqlite3_stmt *stmt, int idx);
int sbx_bind_text(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		  const char *text);
int sbx_bind_text_len(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		      const char *text, size_t len);
int sbx_bind_blob(struct sbx_db *db, sqlite3_stmt *stmt, int idx,
		  const void *data, size_t size);

/* Steps a statement for its first (usually only) row. Returns 1 with the
   row at hand, 0 if there is none, -1 with the cause recorded as
   "<fmt...>: <SQLite's words>". */
int sbx_stmt_step_row(struct sbx_db *db, sqlite3_stmt *stmt,
		      const char *fmt, ...) SBX_PRINTF(3, 4);
/* Runs a statement to completion, ignoring any rows. Returns 0, or -1 with
   the cause recorded as "<fmt...>: <SQLite's words>". */
int sbx_stmt_exec(struct sbx_db *db, sqlite3_stmt *stmt,
		  const char *fmt, ...) SBX_PRINTF(3, 4);

/* A statement read row by row (the storage's iterators): the caller gets
   it, binds it and fills db and stmt; step and finish keep the state. */
struct sbx_stmt_iter {
	struct sbx_db *db;
	sqlite3_stmt *stmt;
	bool failed;
	bool done;
};
/* 1 with the next row at hand, 0 at the end (and after it), -1 with the
   cause recorded as "<what>: ..." (and -1 after it). */
int sbx_stmt_iter_step(struct sbx_stmt_iter *iter, const char *what);
/* Marks the iteration failed (a row that didn't decode); returns -1. */
int sbx_stmt_iter_fail(struct sbx_stmt_iter *iter);
/* Puts the statement back. Returns 0, or -1 if the iteration failed. */
int sbx_stmt_iter_finish(struct sbx_stmt_iter *iter);

/* Column helpers that convert to our types; out-of-range values clamp
   (the CHECK constraints keep them in range). */
uint32_t sbx_column_u32(sqlite3_stmt *stmt, int col);
uint64_t sbx_column_u64(sqlite3_stmt *stmt, int col);

#endif
