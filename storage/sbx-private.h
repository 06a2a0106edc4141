/* SPDX-License-Identifier: MIT */
/* The database handle and the helpers shared inside storage/.

   Nothing outside storage/ includes this header, except the unit tests,
   which look inside the handle on purpose. A process holds one struct
   sbx_db per database file (the registry in sbx-db.c); every mailbox and
   storage of the process shares it, and with it the one SQLite connection,
   the statement cache and the write lock. */
#ifndef SBX_PRIVATE_H
#define SBX_PRIVATE_H

#include <sys/types.h>

#include <sqlite3.h>

#include "sbx-common.h"
#include "sbx-db.h"
#include "sbx-stmt.h"

/* The default of sbx_db_settings.lock_timeout_msecs. */
#define SBX_DB_DEFAULT_LOCK_TIMEOUT_MSECS 30000U
/* Room for one formatted error message. */
#define SBX_DB_ERROR_MSG_SIZE 1024

/* One MODSEQ handed out in the current write transaction. */
struct sbx_modseq_entry {
	int64_t mailbox_id;
	uint64_t modseq;
};

struct sbx_db {
	/* The per-process registry of open databases (sbx-db.c). */
	struct sbx_db *next;
	unsigned int refcount;
	/* The process that opened the handle: a fork()ed child never reuses
	   its parent's connection. */
	pid_t pid;

	sqlite3 *sqlite;
	char *path;
	char *lock_path;
	int lock_fd;
	bool lock_held;
	unsigned int lock_timeout_msecs;
	enum sbx_synchronous synchronous;
	enum sbx_db_kind kind;
	int schema_version;

	/* Transaction state. is_committing is true only while
	   sbx_tx_commit() (or a migration step of sbx-db.c) runs COMMIT: the
	   commit hook refuses every other commit. */
	bool tx_active;
	bool tx_write;
	/* synchronous is NORMAL for an SBX_TX_WRITE_LAZY transaction */
	bool sync_lazy;
	bool is_committing;
	/* frames in the WAL after the last commit (the WAL hook) */
	int wal_frames;
	/* PRAGMA page_size, read at open */
	uint64_t page_size;

	/* The observer (sbx_db_set_observer()) and what the current
	   transaction has measured for it. */
	sbx_db_observer_func *observer;
	void *observer_context;
	int64_t tx_start_usecs;
	uint64_t tx_lock_wait_usecs;
	int tx_pages_at_begin;

	/* Below SBX_MODSEQ_STEP / 2, from the database's db_guid; 0 until
	   read (sbx_mailbox_modseq_salt()). */
	uint32_t modseq_salt;
	bool modseq_salt_known;
	/* MODSEQs allocated in the current write transaction. */
	struct sbx_modseq_entry *modseqs;
	size_t modseq_count;
	size_t modseq_alloc;

	/* The statement cache (sbx-stmt.c). */
	sqlite3_stmt *stmts[SBX_STMT_COUNT];
	bool stmt_in_use[SBX_STMT_COUNT];

	/* Strings returned by lookups live here until the next call. */
	char *scratch;
	size_t scratch_size;

	/* The last failure (sbx-error.c). */
	enum sbx_error error;
	char error_msg[SBX_DB_ERROR_MSG_SIZE];
};

/* The SQLite connection of db, for the unit tests and a future command
   line tool. Writing through it outside sbx_tx_begin() and
   sbx_tx_commit() is refused by the commit hook. */
sqlite3 *sbx_db_get_sqlite(struct sbx_db *db);

/* Fails with SBX_ERR_INTERNAL ("<what>: needs a write transaction")
   unless an SBX_TX_WRITE transaction is active. Returns 0 or -1. */
int sbx_db_require_write(struct sbx_db *db, const char *what);

struct sbx_msg;
/* Fills msg_r from a row of SBX_SQL_MSG_COLUMNS (its first columns);
   strings point into the statement. Returns 0 or -1. */
int sbx_msg_from_row(struct sbx_db *db, sqlite3_stmt *stmt,
		     struct sbx_msg *msg_r);

/* Copies the count strings that strs[] point to into db's scratch buffer
   and points them there (NULL stays NULL), so that they outlive the reset
   of the statement they came from. Valid until the next call that uses
   the scratch buffer. Returns 0, or -1 (SBX_ERR_NOMEM). */
int sbx_db_keep_strings(struct sbx_db *db, const char **const strs[],
			size_t count);

/* Copies size bytes into db's scratch buffer, NUL-terminated after them,
   and points *copy_r there: valid until the next call that uses the
   scratch buffer. Returns 0, or -1 (SBX_ERR_NOMEM). */
int sbx_db_keep_blob(struct sbx_db *db, const void *data, size_t size,
		     const void **copy_r);

/* The write lock: flock(LOCK_EX) on "<path>.lock", waiting up to the lock
   timeout in short growing sleeps. Fails with SBX_ERR_BUSY on timeout.
   Never nested: taking it while held is SBX_ERR_INTERNAL. sbx_db_lock()
   stores the deadline it used in *deadline_msecs_r (CLOCK_MONOTONIC), so
   that BEGIN IMMEDIATE can wait only for what is left (may be NULL). */
int sbx_db_lock(struct sbx_db *db, int64_t *deadline_msecs_r);
/* The same with an explicit timeout; 0 tries once. */
int sbx_db_lock_timeout(struct sbx_db *db, unsigned int timeout_msecs,
			int64_t *deadline_msecs_r);
void sbx_db_unlock(struct sbx_db *db);

/* Milliseconds and microseconds on CLOCK_MONOTONIC. */
int64_t sbx_db_now_msecs(void);
int64_t sbx_db_now_usecs(void);

/* Tells the observer, if there is one, about event. */
void sbx_db_notify(struct sbx_db *db, const struct sbx_db_event *event);

/* For sbx-migrate.c: the schema state SQLite reports. Each returns 0 or
   -1. */
int sbx_db_read_user_version(struct sbx_db *db, int *version_r);
int sbx_db_read_application_id(struct sbx_db *db, int64_t *id_r);
/* Prepares a database file for migrations, holding the write lock: a
   brand-new (empty) file gets auto_vacuum = INCREMENTAL before anything
   else is written, and every file is switched to WAL. */
int sbx_db_prepare_file(struct sbx_db *db);
/* MODSEQ allocated for mailbox_id in this write transaction: 1 and
   *modseq_r set, or 0. */
int sbx_db_modseq_get(struct sbx_db *db, int64_t mailbox_id,
		      uint64_t *modseq_r);
/* Remembers it until the transaction ends. Returns 0 or -1 (NOMEM). */
int sbx_db_modseq_set(struct sbx_db *db, int64_t mailbox_id, uint64_t modseq);

/* Registers sbx-msg.c's table-valued function sbx_msg_copies on a new
   connection (sbx_db_open()). Returns 0 or -1. */
int sbx_msg_register_functions(struct sbx_db *db);

#endif
