/* SPDX-License-Identifier: MIT */
/* SQLite result codes and errno values to enum sbx_error, and the message
   kept in the handle.

   This file is the one place where a SQLite code becomes an sbx_error:
   plugin/sqlbox-error.c maps those onto Dovecot's mail_error, so adding a
   case here is the whole change for a new kind of failure. Messages say
   what failed first, the subject in quotes, then SQLite's own words and
   the code's name, e.g. "insert message into 'INBOX': UNIQUE constraint
   failed: messages.uid (SQLITE_CONSTRAINT_UNIQUE)". A message that does
   not fit the buffer is truncated, never overflowed. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"

struct sbx_code_name {
	int code;
	const char *name;
};

#define SBX_CODE(code) { code, #code }
static const struct sbx_code_name sbx_code_names[] = {
	SBX_CODE(SQLITE_OK),
	SBX_CODE(SQLITE_ERROR),
	SBX_CODE(SQLITE_INTERNAL),
	SBX_CODE(SQLITE_PERM),
	SBX_CODE(SQLITE_ABORT),
	SBX_CODE(SQLITE_BUSY),
	SBX_CODE(SQLITE_LOCKED),
	SBX_CODE(SQLITE_NOMEM),
	SBX_CODE(SQLITE_READONLY),
	SBX_CODE(SQLITE_INTERRUPT),
	SBX_CODE(SQLITE_IOERR),
	SBX_CODE(SQLITE_CORRUPT),
	SBX_CODE(SQLITE_NOTFOUND),
	SBX_CODE(SQLITE_FULL),
	SBX_CODE(SQLITE_CANTOPEN),
	SBX_CODE(SQLITE_PROTOCOL),
	SBX_CODE(SQLITE_EMPTY),
	SBX_CODE(SQLITE_SCHEMA),
	SBX_CODE(SQLITE_TOOBIG),
	SBX_CODE(SQLITE_CONSTRAINT),
	SBX_CODE(SQLITE_MISMATCH),
	SBX_CODE(SQLITE_MISUSE),
	SBX_CODE(SQLITE_NOLFS),
	SBX_CODE(SQLITE_AUTH),
	SBX_CODE(SQLITE_FORMAT),
	SBX_CODE(SQLITE_RANGE),
	SBX_CODE(SQLITE_NOTADB),
	SBX_CODE(SQLITE_NOTICE),
	SBX_CODE(SQLITE_WARNING),
	SBX_CODE(SQLITE_ROW),
	SBX_CODE(SQLITE_DONE),
	SBX_CODE(SQLITE_ERROR_MISSING_COLLSEQ),
	SBX_CODE(SQLITE_ERROR_RETRY),
	SBX_CODE(SQLITE_ERROR_SNAPSHOT),
	SBX_CODE(SQLITE_IOERR_READ),
	SBX_CODE(SQLITE_IOERR_SHORT_READ),
	SBX_CODE(SQLITE_IOERR_WRITE),
	SBX_CODE(SQLITE_IOERR_FSYNC),
	SBX_CODE(SQLITE_IOERR_DIR_FSYNC),
	SBX_CODE(SQLITE_IOERR_TRUNCATE),
	SBX_CODE(SQLITE_IOERR_FSTAT),
	SBX_CODE(SQLITE_IOERR_UNLOCK),
	SBX_CODE(SQLITE_IOERR_RDLOCK),
	SBX_CODE(SQLITE_IOERR_DELETE),
	SBX_CODE(SQLITE_IOERR_NOMEM),
	SBX_CODE(SQLITE_IOERR_ACCESS),
	SBX_CODE(SQLITE_IOERR_CHECKRESERVEDLOCK),
	SBX_CODE(SQLITE_IOERR_LOCK),
	SBX_CODE(SQLITE_IOERR_CLOSE),
	SBX_CODE(SQLITE_IOERR_SHMOPEN),
	SBX_CODE(SQLITE_IOERR_SHMSIZE),
	SBX_CODE(SQLITE_IOERR_SHMLOCK),
	SBX_CODE(SQLITE_IOERR_SHMMAP),
	SBX_CODE(SQLITE_IOERR_SEEK),
	SBX_CODE(SQLITE_IOERR_DELETE_NOENT),
	SBX_CODE(SQLITE_IOERR_MMAP),
	SBX_CODE(SQLITE_IOERR_GETTEMPPATH),
	SBX_CODE(SQLITE_IOERR_DATA),
	SBX_CODE(SQLITE_IOERR_CORRUPTFS),
	SBX_CODE(SQLITE_LOCKED_SHAREDCACHE),
	SBX_CODE(SQLITE_BUSY_RECOVERY),
	SBX_CODE(SQLITE_BUSY_SNAPSHOT),
	SBX_CODE(SQLITE_BUSY_TIMEOUT),
	SBX_CODE(SQLITE_CANTOPEN_NOTEMPDIR),
	SBX_CODE(SQLITE_CANTOPEN_ISDIR),
	SBX_CODE(SQLITE_CANTOPEN_FULLPATH),
	SBX_CODE(SQLITE_CANTOPEN_DIRTYWAL),
	SBX_CODE(SQLITE_CANTOPEN_SYMLINK),
	SBX_CODE(SQLITE_CORRUPT_SEQUENCE),
	SBX_CODE(SQLITE_CORRUPT_INDEX),
	SBX_CODE(SQLITE_READONLY_RECOVERY),
	SBX_CODE(SQLITE_READONLY_CANTLOCK),
	SBX_CODE(SQLITE_READONLY_ROLLBACK),
	SBX_CODE(SQLITE_READONLY_DBMOVED),
	SBX_CODE(SQLITE_READONLY_CANTINIT),
	SBX_CODE(SQLITE_READONLY_DIRECTORY),
	SBX_CODE(SQLITE_ABORT_ROLLBACK),
	SBX_CODE(SQLITE_CONSTRAINT_CHECK),
	SBX_CODE(SQLITE_CONSTRAINT_COMMITHOOK),
	SBX_CODE(SQLITE_CONSTRAINT_FOREIGNKEY),
	SBX_CODE(SQLITE_CONSTRAINT_FUNCTION),
	SBX_CODE(SQLITE_CONSTRAINT_NOTNULL),
	SBX_CODE(SQLITE_CONSTRAINT_PRIMARYKEY),
	SBX_CODE(SQLITE_CONSTRAINT_TRIGGER),
	SBX_CODE(SQLITE_CONSTRAINT_UNIQUE),
	SBX_CODE(SQLITE_CONSTRAINT_ROWID),
	SBX_CODE(SQLITE_CONSTRAINT_DATATYPE),
};
#undef SBX_CODE

#define SBX_N_ELEMENTS(arr) (sizeof(arr) / sizeof((arr)[0]))

static const char *sbx_code_lookup(int rc)
{
	size_t i;

	for (i = 0; i < SBX_N_ELEMENTS(sbx_code_names); i++) {
		if (sbx_code_names[i].code == rc)
			return sbx_code_names[i].name;
	}
	return NULL;
}

const char *sbx_error_code_name(int rc)
{
	const char *name = sbx_code_lookup(rc);

	if (name == NULL)
		name = sbx_code_lookup(rc & 0xff);
	return name != NULL ? name : "SQLITE_UNKNOWN";
}

static enum sbx_error sbx_error_from_ioerr(int rc, int sys_errno)
{
	if (rc == SQLITE_IOERR_NOMEM)
		return SBX_ERR_NOMEM;
	/* SQLite reports a short write() as SQLITE_FULL only for ENOSPC;
	   EDQUOT arrives as SQLITE_IOERR_WRITE with the errno kept. */
	if (sys_errno == EDQUOT)
		return SBX_ERR_NOQUOTA;
	if (sys_errno == ENOSPC)
		return SBX_ERR_NOSPACE;
	return SBX_ERR_IO;
}

static enum sbx_error sbx_error_from_constraint(int rc)
{
	if (rc == SQLITE_CONSTRAINT_UNIQUE ||
	    rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return SBX_ERR_EXISTS;
	return SBX_ERR_INTERNAL;
}

enum sbx_error sbx_error_from_sqlite(int rc, int sys_errno)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return SBX_ERR_NONE;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return SBX_ERR_BUSY;
	case SQLITE_FULL:
		return sys_errno == EDQUOT ? SBX_ERR_NOQUOTA : SBX_ERR_NOSPACE;
	case SQLITE_TOOBIG:
		return SBX_ERR_LIMIT;
	case SQLITE_CANTOPEN:
		return sbx_error_from_errno(sys_errno) == SBX_ERR_PERM ?
			SBX_ERR_PERM : SBX_ERR_IO;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return SBX_ERR_PERM;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return SBX_ERR_CORRUPT;
	case SQLITE_IOERR:
		return sbx_error_from_ioerr(rc, sys_errno);
	case SQLITE_NOMEM:
		return SBX_ERR_NOMEM;
	case SQLITE_CONSTRAINT:
		return sbx_error_from_constraint(rc);
	default:
		/* ERROR, MISUSE, RANGE, SCHEMA, ...: our bug. */
		return SBX_ERR_INTERNAL;
	}
}

enum sbx_error sbx_error_from_errno(int err)
{
	switch (err) {
	case EACCES:
	case EPERM:
	case EROFS:
		return SBX_ERR_PERM;
	case ENOSPC:
		return SBX_ERR_NOSPACE;
	case EDQUOT:
		return SBX_ERR_NOQUOTA;
	case ENOMEM:
		return SBX_ERR_NOMEM;
	default:
		return SBX_ERR_IO;
	}
}

static size_t sbx_error_vformat(struct sbx_db *db, const char *fmt,
				va_list args) SBX_PRINTF(2, 0);
static size_t sbx_error_vformat(struct sbx_db *db, const char *fmt,
				va_list args)
{
	int len = vsnprintf(db->error_msg, sizeof(db->error_msg), fmt, args);

	if (len < 0) {
		db->error_msg[0] = '\0';
		return 0;
	}
	if ((size_t)len >= sizeof(db->error_msg))
		return sizeof(db->error_msg) - 1;
	return (size_t)len;
}

/* Appends to the message, truncating. */
static void sbx_error_append(struct sbx_db *db, size_t pos,
			     const char *fmt, ...) SBX_PRINTF(3, 4);
static void sbx_error_append(struct sbx_db *db, size_t pos,
			     const char *fmt, ...)
{
	va_list args;

	if (pos >= sizeof(db->error_msg) - 1)
		return;
	va_start(args, fmt);
	(void)vsnprintf(db->error_msg + pos, sizeof(db->error_msg) - pos,
			fmt, args);
	va_end(args);
}

int sbx_error_set(struct sbx_db *db, enum sbx_error error,
		  const char *fmt, ...)
{
	va_list args;

	db->error = error;
	va_start(args, fmt);
	(void)sbx_error_vformat(db, fmt, args);
	va_end(args);
	return -1;
}

/* SQLite's words for rc: the connection's message when it belongs to rc,
   else the generic text of the code. */
static const char *sbx_error_sqlite_words(struct sbx_db *db, int rc)
{
	if (db->sqlite != NULL && sqlite3_extended_errcode(db->sqlite) == rc)
		return sqlite3_errmsg(db->sqlite);
	return sqlite3_errstr(rc);
}

int sbx_error_sqlite(struct sbx_db *db, int rc, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	(void)sbx_error_sqlitev(db, rc, fmt, args);
	va_end(args);
	return -1;
}

int sbx_error_sqlitev(struct sbx_db *db, int rc, const char *fmt,
		      va_list args)
{
	size_t pos;
	int sys_errno;

	sys_errno = db->sqlite == NULL ? 0 : sqlite3_system_errno(db->sqlite);
	db->error = sbx_error_from_sqlite(rc, sys_errno);
	if (db->error == SBX_ERR_NONE) {
		/* A code that is no failure where one was expected. */
		db->error = SBX_ERR_INTERNAL;
	}
	pos = sbx_error_vformat(db, fmt, args);
	if ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN) {
		sbx_error_append(db, pos, ": %s (%s): %s",
				 sbx_error_sqlite_words(db, rc),
				 sbx_error_code_name(rc),
				 sys_errno != 0 ? strerror(sys_errno) :
				 "no system error");
	} else {
		sbx_error_append(db, pos, ": %s (%s)",
				 sbx_error_sqlite_words(db, rc),
				 sbx_error_code_name(rc));
	}
	return -1;
}

int sbx_error_errno(struct sbx_db *db, int err, const char *fmt, ...)
{
	va_list args;
	size_t pos;

	db->error = sbx_error_from_errno(err);
	va_start(args, fmt);
	pos = sbx_error_vformat(db, fmt, args);
	va_end(args);
	sbx_error_append(db, pos, ": %s", strerror(err));
	return -1;
}
