/* SPDX-License-Identifier: MIT */
/* Opening a user's database, transactions and the last error. */
#ifndef SBX_DB_H
#define SBX_DB_H

#include "sbx-common.h"

struct sbx_db;

/* PRAGMA synchronous for commits. */
enum sbx_synchronous {
	SBX_SYNCHRONOUS_FULL = 0,	/* default: an accepted mail is on disk */
	SBX_SYNCHRONOUS_NORMAL,
	SBX_SYNCHRONOUS_OFF,		/* mail_fsync = never */
	/* mail_fsync = always: every commit syncs (SBX_TX_WRITE_LAZY too),
	   and so does the directory of a new WAL */
	SBX_SYNCHRONOUS_EXTRA,
};

/* Which schema a database file holds. */
enum sbx_db_kind {
	SBX_DB_KIND_MAIL = 0,	/* a user's mail.sqlite */
	SBX_DB_KIND_POLICY,	/* the submission operator database */
};

struct sbx_db_settings {
	/* How long a write waits for mail.sqlite.lock and SQLite's own lock
	   before failing with SBX_ERR_BUSY. 0 means the default (30 s). */
	unsigned int lock_timeout_msecs;
	enum sbx_synchronous synchronous;
	/* the schema sbx_db_open() migrates the file to */
	enum sbx_db_kind kind;
};

enum sbx_tx_kind {
	SBX_TX_READ,	/* BEGIN: one consistent snapshot, never waits */
	SBX_TX_WRITE,	/* flock(mail.sqlite.lock), then BEGIN IMMEDIATE */
	/* SBX_TX_WRITE for a change that brings no new mail (flags,
	   expunges, COPY and MOVE), as Dovecot's mail_fsync = optimized
	   syncs only new mail: under synchronous FULL it commits as NORMAL.
	   It is on disk with the next durable commit or checkpoint; a crash
	   before that may undo it, whole, never half of it. */
	SBX_TX_WRITE_LAZY,
};

/* Opens (creating it and its directory's lock file if needed) the database
   at path, migrates it to the current schema and returns a handle in *db_r.
   A process opens each file once: opening the same path again returns the
   same handle with its reference count raised. Returns 0, or -1 with the
   cause readable through sbx_db_last_error(*db_r); in both cases the caller
   owns a reference and releases it with sbx_db_close(). Only if memory
   runs out is *db_r NULL. set may be NULL for the defaults; a second open
   of the same path keeps the first open's settings. A fork()ed child
   never shares its parent's handle: it opens its own. */
int sbx_db_open(const char *path, const struct sbx_db_settings *set,
		struct sbx_db **db_r);
/* Drops one reference. After the last one the handle is kept open (one
   per process: "parked") and the next sbx_db_open() of the same file with
   the same settings reuses it; a handle whose last operation failed is
   closed at once. Accepts *db == NULL; sets *db to NULL. */
void sbx_db_close(struct sbx_db **db);
/* sbx_db_close() keeps the last handle closed without errors open, to be
   opened again cheaply; this closes it (at process or plugin end). */
void sbx_db_close_parked(void);

/* The cause of the last failure and a message owned by db, valid until the
   next call on db. */
enum sbx_error sbx_db_last_error(struct sbx_db *db, const char **msg_r);
/* The database file's path, as given to sbx_db_open(). */
const char *sbx_db_get_path(struct sbx_db *db);
/* The schema version of the open database. */
int sbx_db_get_schema_version(struct sbx_db *db);
/* The schema version this library writes. */
int sbx_db_code_schema_version(void);

/* Starts a transaction. SBX_TX_WRITE waits up to the lock timeout for the
   lock file and then for BEGIN IMMEDIATE, failing with SBX_ERR_BUSY.
   Transactions do not nest: beginning one while one is active is
   SBX_ERR_INTERNAL. */
int sbx_tx_begin(struct sbx_db *db, enum sbx_tx_kind kind);
/* Starts an SBX_TX_WRITE transaction without waiting: fails at once with
   SBX_ERR_BUSY when another process holds the write lock. For work that
   may simply be skipped (claiming \Recent). */
int sbx_tx_begin_nowait(struct sbx_db *db);
/* Commits; on failure the transaction is rolled back and -1 returned. */
int sbx_tx_commit(struct sbx_db *db);
/* Rolls back if a transaction is active; keeps the first error. */
void sbx_tx_rollback(struct sbx_db *db);
bool sbx_tx_is_active(struct sbx_db *db);
bool sbx_tx_is_write(struct sbx_db *db);

/* What an observer hears about (sbx_db_set_observer()). */
enum sbx_db_event_kind {
	/* A transaction is about to begin, before any wait for a lock. */
	SBX_DB_EVENT_TX_BEGIN,
	/* The write lock was busy: the wait ended, with the lock or with
	   SBX_ERR_BUSY. Not sent when the lock was free at once. */
	SBX_DB_EVENT_LOCK_WAITED,
	/* A transaction ended, or failed to begin (after TX_BEGIN). */
	SBX_DB_EVENT_TX_FINISHED,
	/* sbx_admin_purge() finished its work. */
	SBX_DB_EVENT_PURGE_FINISHED,
};

enum sbx_tx_result {
	SBX_TX_RESULT_COMMIT,
	SBX_TX_RESULT_ROLLBACK,		/* also a COMMIT that failed */
	SBX_TX_RESULT_BEGIN_FAILED,	/* no lock, or BEGIN failed */
};

struct sbx_db_event {
	enum sbx_db_event_kind kind;
	/* TX_*: a write transaction; LOCK_WAITED: always true */
	bool is_write;
	/* TX_FINISHED */
	enum sbx_tx_result result;
	/* TX_FINISHED other than a commit, and a LOCK_WAITED that timed
	   out: the cause (SBX_ERR_BUSY for a lock timeout) */
	enum sbx_error error;
	/* TX_FINISHED: from TX_BEGIN to the end, lock waits included;
	   LOCK_WAITED: the wait, the lock file's and SQLite's own */
	uint64_t duration_usecs;
	/* TX_FINISHED of a write: the part spent waiting for the locks */
	uint64_t lock_wait_usecs;
	/* TX_FINISHED of a committed write: database pages the transaction
	   wrote (WAL frames) and their size in bytes */
	uint64_t pages_written;
	uint64_t bytes_written;
	/* PURGE_FINISHED: what sbx_admin_purge() returns, and the bytes the
	   file and its WAL shrank by */
	uint64_t bodies_freed;
	uint64_t tombstones_pruned;
	uint64_t bytes_reclaimed;
};

/* Called synchronously with each event. It must not call into db. */
typedef void sbx_db_observer_func(void *context,
				  const struct sbx_db_event *event);

/* Sets db's one observer (func NULL removes it). Every user of a shared
   handle (sbx_db_open() of the same path) shares it too; see
   sbx_db_get_observer(). */
void sbx_db_set_observer(struct sbx_db *db, sbx_db_observer_func *func,
			 void *context);
/* The observer set now: *func_r is NULL when there is none. */
void sbx_db_get_observer(struct sbx_db *db, sbx_db_observer_func **func_r,
			 void **context_r);

/* SQLite's PRAGMA data_version: changes when another connection committed
   since the last call. Cheap change detection. */
int sbx_db_get_data_version(struct sbx_db *db, uint32_t *version_r);

#endif
