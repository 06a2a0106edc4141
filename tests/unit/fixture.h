/* SPDX-License-Identifier: MIT */
/* The unit tests' fixture: a fresh directory and a freshly migrated file
   database per test, and helpers that assert as they go. */
#ifndef FIXTURE_H
#define FIXTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx-db.h"

/* Short, so that the tests that make the lock busy finish quickly. */
#define FIXTURE_LOCK_TIMEOUT_MSECS 200

extern char fixture_dir[];
extern char fixture_path[];
extern struct sbx_db *fixture_db;

/* .init and .fini of every suite that works on a database. */
void fixture_db_setup(void);
void fixture_db_teardown(void);

/* The settings the fixture opens with. */
struct sbx_db_settings fixture_settings(void);
/* "<fixture_dir>/<name>" in a static buffer. */
const char *fixture_file(const char *name);
/* The message of the fixture database's last error. */
const char *fixture_error(void);

/* Transactions on the fixture database; they assert success. */
void fixture_begin(void);
void fixture_commit(void);

/* Creates a mailbox in its own write transaction; returns its id. */
int64_t fixture_mailbox(const char *name);
/* Stores a body (hashed unless want_hash is false) inside the caller's
   write transaction; returns its id. */
int64_t fixture_body(const void *data, size_t size, int want_hash);
/* Appends a message with the next UID and this write transaction's
   MODSEQ inside the caller's write transaction; returns its UID. */
uint32_t fixture_append(int64_t mailbox_id, int64_t body_id, uint32_t flags);
/* Stores a body and appends a message using it, in one transaction of
   its own. */
uint32_t fixture_append_text(int64_t mailbox_id, const char *text,
			     uint32_t flags);

/* fork() without carrying a SQLite connection across it (SQLite forbids
   that): closes the fixture database, forks, and reopens it in the
   parent; in the child fixture_db is NULL. Returns fork()'s value. The
   child must leave with _exit() and must not assert. */
pid_t fixture_fork(void);

/* The first column of the first row of sql, run on a connection of its
   own (so it sees what was committed); 0 without a row. */
int64_t fixture_sql_int(const char *sql);
/* Runs sql on a writable connection of its own, as an operator's sqlite3
   would (outside the library's transactions). */
void fixture_sql_exec(const char *sql);
/* Asserts the invariants doveadm sqlbox check would check: counters
   equal the rows, refcounts equal the references, no chunk without its
   body, no UID at or above uidnext. */
void fixture_check_invariants(void);

#endif
