/* SPDX-License-Identifier: MIT */
/* Recording failures: SQLite result codes and errno values become
   enum sbx_error here and nowhere else. */
#ifndef SBX_ERROR_H
#define SBX_ERROR_H

#include <stdarg.h>

#include "sbx-private.h"

/* Maps an extended SQLite result code, and the OS errno SQLite saw
   (sqlite3_system_errno()), onto enum sbx_error. SQLITE_OK, SQLITE_ROW and
   SQLITE_DONE map to SBX_ERR_NONE. */
enum sbx_error sbx_error_from_sqlite(int rc, int sys_errno);

/* Maps an errno of our own system calls (the lock file) onto
   enum sbx_error. */
enum sbx_error sbx_error_from_errno(int err);

/* The name of an (extended) result code, "SQLITE_CONSTRAINT_UNIQUE";
   unknown extended codes fall back to their primary code's name. Never
   NULL. */
const char *sbx_error_code_name(int rc);

/* Records error with the message formatted from fmt. Returns -1, so that
   a failing path can end in "return sbx_error_set(...)". */
int sbx_error_set(struct sbx_db *db, enum sbx_error error,
		  const char *fmt, ...) SBX_PRINTF(3, 4);

/* Records the failure rc of db's connection as
   "<what>: <SQLite's message> (<code name>)"; I/O errors add
   strerror(sqlite3_system_errno()). Call it before resetting the statement
   that failed: the reset may replace SQLite's message. Returns -1. */
int sbx_error_sqlite(struct sbx_db *db, int rc, const char *fmt, ...)
	SBX_PRINTF(3, 4);

/* The same with a va_list. */
int sbx_error_sqlitev(struct sbx_db *db, int rc, const char *fmt,
		      va_list args) SBX_PRINTF(3, 0);

/* Records a failed system call: "<what>: strerror(err)". Returns -1. */
int sbx_error_errno(struct sbx_db *db, int err, const char *fmt, ...)
	SBX_PRINTF(3, 4);

#endif
