/* SPDX-License-Identifier: MIT */
/* Opening a user's database, the write lock and transactions.

   A process holds one handle per database file, shared through a
   per-process registry by every mailbox and storage that opens the same
   path (Dovecot may open one user's storage twice in a process). The
   write lock is flock(2) on "<path>.lock", taken with a timed wait around
   every write transaction and never nested; SQLite's own BEGIN IMMEDIATE
   comes second (lock order: lock file, then SQLite). WAL auto-checkpoints
   run inside COMMIT, so under the lock too, and checkpoint-on-close is
   off: with writers and checkpoints serialised, the WAL-reset race of
   SQLite before 3.51.3 cannot happen (DESIGN.md section 4). A commit hook
   refuses every commit that does not come from sbx_tx_commit(), so no
   write escapes a locked transaction. The workload: one Dovecot process
   per session, single-threaded, a few processes per user at once. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-migrate.h"
#include "sbx-stmt.h"
#include "sbx-db.h"

/* The lock wait sleeps 1, 2, 4, ... ms, at most this long at a time. */
#define SBX_LOCK_MAX_SLEEP_MSECS 50

/* Open handles of this process. Not thread-safe: neither is Dovecot. */
static struct sbx_db *sbx_db_registry = NULL;

/* The last handle closed, kept open: a process that opens one user's
   database again and again (an LMTP or doveadm process delivering to the
   same user, a POP3 client polling) keeps SQLite's parsed schema, its
   prepared statements and its page cache instead of building them anew
   each time. It is used again only for the same file (device and inode)
   in the same process, with the same settings, and closed when another
   handle is parked or by sbx_db_close_parked(). */
static struct sbx_db *sbx_db_parked = NULL;
static dev_t sbx_db_parked_dev;
static ino_t sbx_db_parked_ino;

static void sbx_db_free(struct sbx_db *db);

static struct sbx_db *sbx_db_registry_find(const char *path)
{
	struct sbx_db *db;
	pid_t pid = getpid();

	for (db = sbx_db_registry; db != NULL; db = db->next) {
		if (db->pid == pid && strcmp(db->path, path) == 0)
			return db;
	}
	return NULL;
}

static void sbx_db_registry_remove(struct sbx_db *db)
{
	struct sbx_db **p;

	for (p = &sbx_db_registry; *p != NULL; p = &(*p)->next) {
		if (*p == db) {
			*p = db->next;
			break;
		}
	}
	db->next = NULL;
}

int64_t sbx_db_now_msecs(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sbx_db_now_usecs(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t sbx_usecs_since(int64_t start_usecs)
{
	int64_t now = sbx_db_now_usecs();

	return now > start_usecs ? (uint64_t)(now - start_usecs) : 0;
}

void sbx_db_set_observer(struct sbx_db *db, sbx_db_observer_func *func,
			 void *context)
{
	db->observer = func;
	db->observer_context = func == NULL ? NULL : context;
}

void sbx_db_get_observer(struct sbx_db *db, sbx_db_observer_func **func_r,
			 void **context_r)
{
	*func_r = db->observer;
	*context_r = db->observer_context;
}

void sbx_db_notify(struct sbx_db *db, const struct sbx_db_event *event)
{
	if (db->observer != NULL)
		db->observer(db->observer_context, event);
}

/* The lock wait is over (got is false: it timed out). */
static void sbx_db_notify_lock_waited(struct sbx_db *db, int64_t start_usecs,
				      bool got)
{
	struct sbx_db_event event;
	uint64_t waited = sbx_usecs_since(start_usecs);

	db->tx_lock_wait_usecs += waited;
	if (db->observer == NULL)
		return;
	memset(&event, 0, sizeof(event));
	event.kind = SBX_DB_EVENT_LOCK_WAITED;
	event.is_write = true;
	event.error = got ? SBX_ERR_NONE : SBX_ERR_BUSY;
	event.duration_usecs = waited;
	sbx_db_notify(db, &event);
}

/* Pages this connection has written so far (WAL frames included). */
static int sbx_db_pages_written(struct sbx_db *db)
{
	int cur = 0, high = 0;

	(void)sqlite3_db_status(db->sqlite, SQLITE_DBSTATUS_CACHE_WRITE,
				&cur, &high, 0);
	return cur;
}

static void sbx_db_notify_tx_begin(struct sbx_db *db, bool is_write)
{
	struct sbx_db_event event;

	db->tx_start_usecs = sbx_db_now_usecs();
	db->tx_lock_wait_usecs = 0;
	db->tx_pages_at_begin = sbx_db_pages_written(db);
	if (db->observer == NULL)
		return;
	memset(&event, 0, sizeof(event));
	event.kind = SBX_DB_EVENT_TX_BEGIN;
	event.is_write = is_write;
	sbx_db_notify(db, &event);
}

static void sbx_db_notify_tx_finished(struct sbx_db *db, bool is_write,
				      enum sbx_tx_result result)
{
	struct sbx_db_event event;
	int pages;

	if (db->observer == NULL)
		return;
	memset(&event, 0, sizeof(event));
	event.kind = SBX_DB_EVENT_TX_FINISHED;
	event.is_write = is_write;
	event.result = result;
	if (result != SBX_TX_RESULT_COMMIT)
		event.error = db->error;
	event.duration_usecs = sbx_usecs_since(db->tx_start_usecs);
	event.lock_wait_usecs = db->tx_lock_wait_usecs;
	if (is_write && result == SBX_TX_RESULT_COMMIT) {
		pages = sbx_db_pages_written(db) - db->tx_pages_at_begin;
		if (pages > 0) {
			event.pages_written = (uint64_t)pages;
			event.bytes_written = (uint64_t)pages * db->page_size;
		}
	}
	sbx_db_notify(db, &event);
}

static void sbx_sleep_msecs(int64_t msecs)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(msecs / 1000);
	ts.tv_nsec = (long)(msecs % 1000) * 1000000L;
	/* An interrupted sleep is only a shorter one: the loop re-checks. */
	(void)nanosleep(&ts, NULL);
}

int sbx_db_lock(struct sbx_db *db, int64_t *deadline_msecs_r)
{
	return sbx_db_lock_timeout(db, db->lock_timeout_msecs,
				   deadline_msecs_r);
}

int sbx_db_lock_timeout(struct sbx_db *db, unsigned int timeout_msecs,
			int64_t *deadline_msecs_r)
{
	int64_t deadline, now, delay = 1, wait_start = 0;
	bool waited = false;

	if (db->lock_held) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
				     "lock '%s': already held (nested lock)",
				     db->lock_path);
	}
	deadline = sbx_db_now_msecs() + timeout_msecs;
	for (;;) {
		if (flock(db->lock_fd, LOCK_EX | LOCK_NB) == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			return sbx_error_errno(db, errno, "lock '%s'",
					       db->lock_path);
		}
		now = sbx_db_now_msecs();
		if (now >= deadline) {
			(void)sbx_error_set(db, SBX_ERR_BUSY,
				"lock '%s': timed out after %u ms",
				db->lock_path, timeout_msecs);
			/* a try without a timeout is not a wait */
			if (timeout_msecs > 0)
				sbx_db_notify_lock_waited(db, wait_start,
							  false);
			return -1;
		}
		if (!waited) {
			waited = true;
			wait_start = sbx_db_now_usecs();
		}
		sbx_sleep_msecs(delay < deadline - now ? delay :
				deadline - now);
		delay = delay * 2 < SBX_LOCK_MAX_SLEEP_MSECS ? delay * 2 :
			SBX_LOCK_MAX_SLEEP_MSECS;
	}
	db->lock_held = true;
	if (waited)
		sbx_db_notify_lock_waited(db, wait_start, true);
	if (deadline_msecs_r != NULL)
		*deadline_msecs_r = deadline;
	return 0;
}

void sbx_db_unlock(struct sbx_db *db)
{
	if (!db->lock_held)
		return;
	(void)flock(db->lock_fd, LOCK_UN);
	db->lock_held = false;
}

/* SQLite's automatic checkpoint can't keep the WAL small here: the
   progress of a checkpoint lives in the -shm file, and when the last
   connection closes without a checkpoint (as ours must, DESIGN §4) the
   next one to open recovers the WAL and starts counting from zero again,
   so a WAL written by short-lived processes (LMTP deliveries) is never
   restarted and grows without bound. So the hook only counts frames, and
   the commit that passes SBX_WAL_CHECKPOINT_FRAMES checkpoints and
   restarts the WAL itself, still under the lock file. Restarted, not
   truncated: the next commits write over blocks the file has, and their
   syncs don't also commit a growing file's size. But a restarted WAL
   keeps its frames until the next commit writes over them, and every
   process that opens the database meanwhile reads them all again (its
   recovery): a WAL a large transaction (an import, a large message)
   grew past SBX_WAL_TRUNCATE_FRAMES is truncated instead. */
#define SBX_WAL_CHECKPOINT_FRAMES 256
#define SBX_WAL_TRUNCATE_FRAMES 1024
/* How long that checkpoint waits for readers to leave old snapshots: it
   is skipped (and retried at the next commit) rather than make writers
   wait. */
#define SBX_WAL_CHECKPOINT_WAIT_MSECS 100

static int sbx_db_wal_hook(void *context, sqlite3 *sqlite, const char *name,
			   int frames)
{
	struct sbx_db *db = context;

	(void)sqlite;
	(void)name;
	db->wal_frames = frames;
	return SQLITE_OK;
}

static void sbx_db_checkpoint_if_big(struct sbx_db *db)
{
	int log_frames, done_frames, rc;

	if (db->wal_frames < SBX_WAL_CHECKPOINT_FRAMES)
		return;
	(void)sqlite3_busy_timeout(db->sqlite, SBX_WAL_CHECKPOINT_WAIT_MSECS);
	rc = sqlite3_wal_checkpoint_v2(db->sqlite, "main",
				       db->wal_frames > SBX_WAL_TRUNCATE_FRAMES ?
				       SQLITE_CHECKPOINT_TRUNCATE :
				       SQLITE_CHECKPOINT_RESTART,
				       &log_frames, &done_frames);
	(void)sqlite3_busy_timeout(db->sqlite, (int)db->lock_timeout_msecs);
	if (rc == SQLITE_OK)
		db->wal_frames = 0;
	/* SQLITE_BUSY: a reader is still on an old snapshot; next time */
}

/* Refuses (non-zero: SQLite turns the COMMIT into a rollback) every
   commit but those sbx_tx_commit() and sbx_db_prepare_file() make. */
static int sbx_db_commit_hook(void *context)
{
	struct sbx_db *db = context;

	return db->is_committing ? 0 : 1;
}

static struct sbx_db *sbx_db_alloc(const char *path,
				   const struct sbx_db_settings *set)
{
	struct sbx_db *db;
	size_t len = strlen(path);

	db = calloc(1, sizeof(*db));
	if (db == NULL)
		return NULL;
	db->path = malloc(len + 1);
	db->lock_path = malloc(len + sizeof(".lock"));
	if (db->path == NULL || db->lock_path == NULL) {
		free(db->path);
		free(db->lock_path);
		free(db);
		return NULL;
	}
	memcpy(db->path, path, len + 1);
	memcpy(db->lock_path, path, len);
	memcpy(db->lock_path + len, ".lock", sizeof(".lock"));
	db->refcount = 1;
	db->pid = getpid();
	db->lock_fd = -1;
	db->lock_timeout_msecs = SBX_DB_DEFAULT_LOCK_TIMEOUT_MSECS;
	db->synchronous = SBX_SYNCHRONOUS_FULL;
	if (set != NULL) {
		if (set->lock_timeout_msecs != 0)
			db->lock_timeout_msecs = set->lock_timeout_msecs;
		/* SQLite's busy timeout is an int. */
		if (db->lock_timeout_msecs > INT_MAX)
			db->lock_timeout_msecs = INT_MAX;
		db->synchronous = set->synchronous;
		db->kind = set->kind;
	}
	return db;
}

static int sbx_db_exec_pragma(struct sbx_db *db, const char *sql)
{
	int rc = sqlite3_exec(db->sqlite, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK) {
		return sbx_error_sqlite(db, rc, "open database '%s': %s",
					db->path, sql);
	}
	return 0;
}

static const char *sbx_db_synchronous_pragma(enum sbx_synchronous sync)
{
	switch (sync) {
	case SBX_SYNCHRONOUS_NORMAL:
		return "PRAGMA synchronous = NORMAL";
	case SBX_SYNCHRONOUS_OFF:
		return "PRAGMA synchronous = OFF";
	case SBX_SYNCHRONOUS_EXTRA:
		return "PRAGMA synchronous = EXTRA";
	case SBX_SYNCHRONOUS_FULL:
	default:
		return "PRAGMA synchronous = FULL";
	}
}

static int sbx_db_config(struct sbx_db *db, int op, const char *what)
{
	int rc = sqlite3_db_config(db->sqlite, op, 1, (int *)NULL);

	if (rc != SQLITE_OK) {
		return sbx_error_sqlite(db, rc, "open database '%s': %s",
					db->path, what);
	}
	return 0;
}

/* The connection's settings: the one place for them. */
static int sbx_db_configure(struct sbx_db *db)
{
	/* No schema trick, writable_schema or shadow-table write can
	   corrupt the file through this connection. */
	if (sbx_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, "DEFENSIVE") < 0)
		return -1;
	/* A checkpoint only ever runs under the lock file (in COMMIT),
	   never unlocked at close: the WAL-reset race needs one. */
	if (sbx_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
			  "NO_CKPT_ON_CLOSE") < 0)
		return -1;
	/* PRAGMA busy_timeout: SQLite's own locks wait as long as ours. */
	(void)sqlite3_busy_timeout(db->sqlite, (int)db->lock_timeout_msecs);
	/* The schema's REFERENCES are enforced for our writes. */
	if (sbx_db_exec_pragma(db, "PRAGMA foreign_keys = ON") < 0)
		return -1;
	/* Statement journals stay in memory. A statement that fires
	   triggers (a message insert updates its mailbox and its body) or
	   checks foreign keys keeps the pages it changes in one, and a
	   temporary file made that a file write per page: 15 MB of them
	   for 2,000 imported messages. They last one statement each. */
	if (sbx_db_exec_pragma(db, "PRAGMA temp_store = MEMORY") < 0)
		return -1;
	/* Triggers and views of the file may not call risky functions. */
	if (sbx_db_exec_pragma(db, "PRAGMA trusted_schema = OFF") < 0)
		return -1;
	/* When a checkpoint has restarted the WAL, the next commit cuts the
	   file back to 1 MiB, so one 50 MB message doesn't leave a 50 MB WAL
	   behind for good. */
	if (sbx_db_exec_pragma(db, "PRAGMA journal_size_limit = 1048576") < 0)
		return -1;
	/* FULL: an accepted mail is on disk (Dovecot's mail_fsync). */
	if (sbx_db_exec_pragma(db,
			sbx_db_synchronous_pragma(db->synchronous)) < 0)
		return -1;
	/* COPY and MOVE batches, bound as a C array (sbx-msg.c) */
	if (sbx_msg_register_functions(db) < 0)
		return -1;
	sqlite3_commit_hook(db->sqlite, sbx_db_commit_hook, db);
	/* replaces the automatic checkpoint: see sbx_db_wal_hook() */
	sqlite3_wal_hook(db->sqlite, sbx_db_wal_hook, db);
	return 0;
}

/* Creates the file 0600 if it is missing (SQLite would make it 0644 less
   the umask; its -wal and -shm copy the file's mode) and refuses a file
   that is not a regular file or belongs to another user: never open
   someone else's mail. */
static int sbx_db_check_file(struct sbx_db *db)
{
	struct stat st;
	int fd;

	fd = open(db->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		/* SQLite's own open fails the same way and says so. */
		return 0;
	}
	if (fstat(fd, &st) < 0) {
		int err = errno;

		(void)close(fd);
		return sbx_error_errno(db, err, "stat database '%s'",
				       db->path);
	}
	(void)close(fd);
	if (!S_ISREG(st.st_mode)) {
		return sbx_error_set(db, SBX_ERR_CORRUPT, "open database "
				     "'%s': not a regular file", db->path);
	}
	if (st.st_uid != geteuid()) {
		return sbx_error_set(db, SBX_ERR_PERM, "open database '%s': "
				     "owned by uid %lu, not by this user "
				     "(uid %lu): refused", db->path,
				     (unsigned long)st.st_uid,
				     (unsigned long)geteuid());
	}
	return 0;
}

static int sbx_db_open_files(struct sbx_db *db)
{
	const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
		SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
	int rc;

	if (sbx_db_check_file(db) < 0)
		return -1;
	rc = sqlite3_open_v2(db->path, &db->sqlite, flags, NULL);
	if (rc != SQLITE_OK) {
		if (db->sqlite == NULL) {
			return sbx_error_set(db, SBX_ERR_NOMEM,
				"open database '%s': out of memory", db->path);
		}
		return sbx_error_sqlite(db, rc, "open database '%s'",
					db->path);
	}
	db->lock_fd = open(db->lock_path,
			   O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (db->lock_fd < 0) {
		return sbx_error_errno(db, errno, "open lock file '%s'",
				       db->lock_path);
	}
	return sbx_db_configure(db);
}

static int sbx_db_read_int64(struct sbx_db *db, enum sbx_stmt_id id,
			     int64_t *value_r);

/* The page size turns pages written into bytes for the observer. */
static int sbx_db_read_page_size(struct sbx_db *db)
{
	int64_t value;

	if (sbx_db_read_int64(db, SBX_STMT_DB_PAGE_SIZE, &value) < 0)
		return -1;
	db->page_size = value > 0 ? (uint64_t)value : 0;
	return 0;
}

void sbx_db_close_parked(void)
{
	struct sbx_db *db = sbx_db_parked;

	sbx_db_parked = NULL;
	/* a fork()ed child never touches its parent's connection */
	if (db != NULL && db->pid == getpid())
		sbx_db_free(db);
}

/* The parked handle, if it is this path's file with these settings; NULL
   otherwise (then it is closed). */
static struct sbx_db *sbx_db_unpark(const char *path,
				    const struct sbx_db_settings *set)
{
	struct sbx_db *db = sbx_db_parked;
	struct stat st;

	if (db == NULL)
		return NULL;
	if (db->pid != getpid()) {
		sbx_db_parked = NULL;
		return NULL;
	}
	if (strcmp(db->path, path) != 0 || set == NULL ||
	    db->synchronous != set->synchronous || db->kind != set->kind ||
	    db->lock_timeout_msecs != (set->lock_timeout_msecs == 0 ?
		SBX_DB_DEFAULT_LOCK_TIMEOUT_MSECS :
		(set->lock_timeout_msecs > INT_MAX ? INT_MAX :
		 set->lock_timeout_msecs)) ||
	    stat(path, &st) < 0 || st.st_dev != sbx_db_parked_dev ||
	    st.st_ino != sbx_db_parked_ino) {
		sbx_db_close_parked();
		return NULL;
	}
	sbx_db_parked = NULL;
	db->refcount = 1;
	db->error = SBX_ERR_NONE;
	return db;
}

/* Keeps a handle whose last reference went; FALSE if it can't be kept. */
static bool sbx_db_park(struct sbx_db *db)
{
	struct stat st;

	if (db->sqlite == NULL || db->pid != getpid() ||
	    stat(db->path, &st) < 0)
		return false;
	sbx_db_close_parked();
	sbx_db_parked = db;
	sbx_db_parked_dev = st.st_dev;
	sbx_db_parked_ino = st.st_ino;
	return true;
}

int sbx_db_open(const char *path, const struct sbx_db_settings *set,
		struct sbx_db **db_r)
{
	struct sbx_db *db;

	db = sbx_db_registry_find(path);
	if (db != NULL) {
		db->refcount++;
		*db_r = db;
		return 0;
	}
	db = sbx_db_unpark(path, set);
	if (db != NULL) {
		/* the file may have changed hands or been changed meanwhile:
		   check it as a new open would, after reading the schema
		   (which reloads SQLite's copy if another program changed
		   it) */
		int64_t objects;

		*db_r = db;
		if (sbx_db_check_file(db) < 0 ||
		    sbx_db_read_int64(db, SBX_STMT_DB_SCHEMA_OBJECTS,
				      &objects) < 0 ||
		    sbx_migrate(db) < 0)
			return -1;
		db->next = sbx_db_registry;
		sbx_db_registry = db;
		return 0;
	}
	*db_r = db = sbx_db_alloc(path, set);
	if (db == NULL)
		return -1;
	if (path[0] == '\0') {
		return sbx_error_set(db, SBX_ERR_INVALID,
				     "open database: empty path");
	}
	if (sbx_db_open_files(db) < 0 || sbx_migrate(db) < 0 ||
	    sbx_db_read_page_size(db) < 0)
		return -1;
	db->next = sbx_db_registry;
	sbx_db_registry = db;
	return 0;
}

void sbx_db_close(struct sbx_db **_db)
{
	struct sbx_db *db = *_db;

	if (db == NULL)
		return;
	*_db = NULL;
	if (--db->refcount > 0)
		return;
	sbx_tx_rollback(db);
	sbx_db_registry_remove(db);
	if (db->error == SBX_ERR_NONE && db->observer == NULL &&
	    sbx_db_park(db))
		return;
	sbx_db_free(db);
}

static void sbx_db_free(struct sbx_db *db)
{
	sbx_stmt_finalize_all(db);
	(void)sqlite3_close(db->sqlite);
	if (db->lock_fd >= 0)
		(void)close(db->lock_fd);
	free(db->modseqs);
	free(db->scratch);
	free(db->path);
	free(db->lock_path);
	free(db);
}

enum sbx_error sbx_db_last_error(struct sbx_db *db, const char **msg_r)
{
	if (db == NULL) {
		/* sbx_db_open() ran out of memory before it had a handle. */
		*msg_r = "out of memory";
		return SBX_ERR_NOMEM;
	}
	*msg_r = db->error_msg;
	return db->error;
}

const char *sbx_db_get_path(struct sbx_db *db)
{
	return db->path;
}

int sbx_db_get_schema_version(struct sbx_db *db)
{
	return db->schema_version;
}

int sbx_db_code_schema_version(void)
{
	return sbx_migrate_code_version();
}

sqlite3 *sbx_db_get_sqlite(struct sbx_db *db)
{
	return db->sqlite;
}

/* Runs one cached transaction-control statement. */
static int sbx_db_tx_exec(struct sbx_db *db, enum sbx_stmt_id id,
			  const char *what)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, id, &stmt) < 0)
		return -1;
	ret = sbx_stmt_exec(db, stmt, "%s on '%s'", what, db->path);
	sbx_stmt_put(db, stmt);
	return ret;
}

/* BEGIN IMMEDIATE waits in SQLite's busy handler only for what is left
   of the lock timeout after the lock file, then the full timeout is
   restored for everything else. */
static int sbx_db_begin_immediate(struct sbx_db *db, int64_t deadline)
{
	int64_t left = deadline - sbx_db_now_msecs();
	int64_t start = sbx_db_now_usecs();
	int ret;

	if (left < 1)
		left = 1;
	(void)sqlite3_busy_timeout(db->sqlite, (int)left);
	ret = sbx_db_tx_exec(db, SBX_STMT_TX_BEGIN_IMMEDIATE,
			     "begin write transaction");
	(void)sqlite3_busy_timeout(db->sqlite, (int)db->lock_timeout_msecs);
	/* SQLite's lock is the second one: waiting for it is a lock wait
	   too (it is only busy for a writer that skipped the lock file) */
	db->tx_lock_wait_usecs += sbx_usecs_since(start);
	return ret;
}

/* A write transaction may fill a larger page cache than SQLite's default
   (2 MB), which reads keep. When a transaction dirties more pages than
   the cache holds, SQLite spills the least recently used ones to the WAL;
   a B-tree page spilled and changed again is rewritten in place, and then
   the commit reads back and checksums every frame after it. An import of
   thousands of messages did that for nearly its whole WAL, and journalled
   every insert to a temporary file besides. The memory is taken only as
   pages are dirtied, and given back when the transaction ends.

   Runs one of those connection settings (a PRAGMA of sbx-sql.def),
   keeping the error recorded before. Returns 0, or -1 if it failed. */
static int sbx_db_set_pragma(struct sbx_db *db, enum sbx_stmt_id id)
{
	enum sbx_error error = db->error;
	char msg[SBX_DB_ERROR_MSG_SIZE];
	sqlite3_stmt *stmt;
	int ret = -1;

	memcpy(msg, db->error_msg, sizeof(msg));
	if (sbx_stmt_get(db, id, &stmt) == 0) {
		ret = sbx_stmt_exec(db, stmt, "set a connection setting");
		sbx_stmt_put(db, stmt);
	}
	db->error = error;
	memcpy(db->error_msg, msg, sizeof(msg));
	return ret;
}

/* Commits sync as the settings say, unless an SBX_TX_WRITE_LAZY
   transaction asks for less: NORMAL is set before its BEGIN and FULL
   again after its end. A durable write whose FULL can't be set back
   fails rather than commit unsynced. */
static int sbx_db_set_sync(struct sbx_db *db, bool lazy)
{
	if (db->synchronous != SBX_SYNCHRONOUS_FULL || db->sync_lazy == lazy)
		return 0;
	if (sbx_db_set_pragma(db, lazy ? SBX_STMT_DB_SYNC_NORMAL :
			      SBX_STMT_DB_SYNC_FULL) < 0) {
		if (lazy)
			return 0;	/* only a hint: FULL stays */
		return sbx_error_set(db, SBX_ERR_IO, "begin transaction on "
				     "'%s': can't set synchronous FULL",
				     db->path);
	}
	db->sync_lazy = lazy;
	return 0;
}

static int sbx_tx_begin_write(struct sbx_db *db, unsigned int timeout_msecs)
{
	int64_t deadline;

	if (sbx_db_lock_timeout(db, timeout_msecs, &deadline) < 0)
		return -1;
	if (sbx_db_begin_immediate(db, deadline) < 0) {
		sbx_db_unlock(db);
		return -1;
	}
	(void)sbx_db_set_pragma(db, SBX_STMT_DB_CACHE_WRITE);
	return 0;
}

int sbx_tx_begin_nowait(struct sbx_db *db)
{
	if (db->tx_active) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
			"begin transaction on '%s': one is active already",
			db->path);
	}
	sbx_db_notify_tx_begin(db, true);
	if (sbx_tx_begin_write(db, 0) < 0) {
		sbx_db_notify_tx_finished(db, true,
					  SBX_TX_RESULT_BEGIN_FAILED);
		return -1;
	}
	db->tx_active = true;
	db->tx_write = true;
	db->modseq_count = 0;
	return 0;
}

int sbx_tx_begin(struct sbx_db *db, enum sbx_tx_kind kind)
{
	if (db->tx_active) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
			"begin transaction on '%s': one is active already",
			db->path);
	}
	sbx_db_notify_tx_begin(db, kind != SBX_TX_READ);
	if (kind == SBX_TX_READ) {
		if (sbx_db_tx_exec(db, SBX_STMT_TX_BEGIN,
				   "begin read transaction") < 0)
			goto out_failed;
	} else {
		if (sbx_db_set_sync(db, kind == SBX_TX_WRITE_LAZY) < 0 ||
		    sbx_tx_begin_write(db, db->lock_timeout_msecs) < 0)
			goto out_failed;
	}
	db->tx_active = true;
	db->tx_write = kind != SBX_TX_READ;
	db->modseq_count = 0;
	return 0;
out_failed:
	sbx_db_notify_tx_finished(db, kind != SBX_TX_READ,
				  SBX_TX_RESULT_BEGIN_FAILED);
	return -1;
}

/* Forgets the transaction, releases the lock file and tells the
   observer. */
static void sbx_tx_end(struct sbx_db *db, enum sbx_tx_result result)
{
	bool is_write = db->tx_write;

	db->tx_active = false;
	db->tx_write = false;
	db->modseq_count = 0;
	if (is_write) {
		(void)sbx_db_set_pragma(db, SBX_STMT_DB_CACHE_DEFAULT);
		/* tried again before the next durable write if it fails */
		(void)sbx_db_set_sync(db, false);
	}
	sbx_db_unlock(db);
	sbx_db_notify_tx_finished(db, is_write, result);
}

int sbx_tx_commit(struct sbx_db *db)
{
	int ret;

	if (!db->tx_active) {
		return sbx_error_set(db, SBX_ERR_INTERNAL,
			"commit transaction on '%s': none is active",
			db->path);
	}
	if (sqlite3_get_autocommit(db->sqlite) != 0) {
		/* SQLite rolled back by itself after an error (FULL, IOERR,
		   NOMEM): the caller missed a failure. */
		(void)sbx_error_set(db, SBX_ERR_INTERNAL,
			"commit transaction on '%s': SQLite rolled it back "
			"after an earlier error", db->path);
		sbx_tx_end(db, SBX_TX_RESULT_ROLLBACK);
		return -1;
	}
	db->is_committing = true;
	ret = sbx_db_tx_exec(db, SBX_STMT_TX_COMMIT, "commit transaction");
	db->is_committing = false;
	if (ret < 0) {
		sbx_tx_rollback(db);
		return -1;
	}
	if (db->tx_write)
		sbx_db_checkpoint_if_big(db);
	sbx_tx_end(db, SBX_TX_RESULT_COMMIT);
	return 0;
}

void sbx_tx_rollback(struct sbx_db *db)
{
	enum sbx_error error;
	char msg[SBX_DB_ERROR_MSG_SIZE];

	if (!db->tx_active)
		return;
	if (sqlite3_get_autocommit(db->sqlite) == 0) {
		/* Keep the first error: the one that made us roll back. */
		error = db->error;
		memcpy(msg, db->error_msg, sizeof(msg));
		(void)sbx_db_tx_exec(db, SBX_STMT_TX_ROLLBACK,
				     "roll back transaction");
		db->error = error;
		memcpy(db->error_msg, msg, sizeof(msg));
	}
	sbx_tx_end(db, SBX_TX_RESULT_ROLLBACK);
}

bool sbx_tx_is_active(struct sbx_db *db)
{
	return db->tx_active;
}

bool sbx_tx_is_write(struct sbx_db *db)
{
	return db->tx_active && db->tx_write;
}

int sbx_db_require_write(struct sbx_db *db, const char *what)
{
	if (db->tx_active && db->tx_write)
		return 0;
	return sbx_error_set(db, SBX_ERR_INTERNAL,
			     "%s: needs a write transaction", what);
}

/* Reads the single integer a statement returns. */
static int sbx_db_read_int64(struct sbx_db *db, enum sbx_stmt_id id,
			     int64_t *value_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, id, &stmt) < 0)
		return -1;
	ret = sbx_stmt_step_row(db, stmt, "read %s of '%s'",
				sbx_stmt_name(id), db->path);
	if (ret > 0)
		*value_r = sqlite3_column_int64(stmt, 0);
	else if (ret == 0)
		*value_r = 0;
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : 0;
}

int sbx_db_get_data_version(struct sbx_db *db, uint32_t *version_r)
{
	int64_t value;

	if (sbx_db_read_int64(db, SBX_STMT_DB_DATA_VERSION, &value) < 0)
		return -1;
	*version_r = (uint32_t)value;
	return 0;
}

int sbx_db_read_user_version(struct sbx_db *db, int *version_r)
{
	int64_t value;

	if (sbx_db_read_int64(db, SBX_STMT_DB_USER_VERSION, &value) < 0)
		return -1;
	*version_r = (int)value;
	return 0;
}

int sbx_db_read_application_id(struct sbx_db *db, int64_t *id_r)
{
	int64_t value;

	if (sbx_db_read_int64(db, SBX_STMT_DB_APPLICATION_ID, &value) < 0)
		return -1;
	/* SQLite reports the header's 32 bits as a signed integer. */
	*id_r = (int64_t)(uint32_t)value;
	return 0;
}

static int sbx_db_is_wal(struct sbx_db *db, bool *is_wal_r)
{
	sqlite3_stmt *stmt;
	const unsigned char *mode;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_DB_JOURNAL_MODE, &stmt) < 0)
		return -1;
	ret = sbx_stmt_step_row(db, stmt, "read journal_mode of '%s'",
				db->path);
	if (ret > 0) {
		mode = sqlite3_column_text(stmt, 0);
		*is_wal_r = mode != NULL &&
			strcmp((const char *)mode, "wal") == 0;
	}
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : 0;
}

/* Switches the file to WAL; SQLite answers with the mode in effect. */
static int sbx_db_set_wal(struct sbx_db *db)
{
	sqlite3_stmt *stmt;
	const unsigned char *mode;
	bool is_wal = false;
	int rc;

	/* Concurrent readers and one writer (DESIGN.md section 4). */
	rc = sqlite3_prepare_v2(db->sqlite, "PRAGMA journal_mode = WAL", -1,
				&stmt, NULL);
	if (rc != SQLITE_OK) {
		return sbx_error_sqlite(db, rc, "open database '%s': "
					"set journal_mode", db->path);
	}
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		mode = sqlite3_column_text(stmt, 0);
		is_wal = mode != NULL &&
			strcmp((const char *)mode, "wal") == 0;
	} else {
		(void)sbx_error_sqlite(db, rc, "open database '%s': "
				       "set journal_mode", db->path);
	}
	(void)sqlite3_finalize(stmt);
	if (rc != SQLITE_ROW)
		return -1;
	if (!is_wal) {
		return sbx_error_set(db, SBX_ERR_IO, "open database '%s': "
				     "WAL mode was refused", db->path);
	}
	return 0;
}

static int sbx_db_prepare_file_locked(struct sbx_db *db)
{
	int64_t pages;

	if (sbx_db_read_int64(db, SBX_STMT_DB_PAGE_COUNT, &pages) < 0)
		return -1;
	if (pages == 0) {
		/* Only a file without pages can get auto_vacuum, and
		   without it free pages can never be returned without a
		   full VACUUM. Before WAL: switching writes page 1. */
		if (sbx_db_exec_pragma(db,
				"PRAGMA auto_vacuum = INCREMENTAL") < 0)
			return -1;
	}
	return sbx_db_set_wal(db);
}

int sbx_db_prepare_file(struct sbx_db *db)
{
	bool is_wal = false;
	int ret;

	if (sbx_db_is_wal(db, &is_wal) < 0)
		return -1;
	if (is_wal)
		return 0;
	if (sbx_db_lock(db, NULL) < 0)
		return -1;
	/* These write the header outside any sbx transaction: let the
	   commit hook pass them. */
	db->is_committing = true;
	ret = sbx_db_prepare_file_locked(db);
	db->is_committing = false;
	sbx_db_unlock(db);
	return ret;
}

static int sbx_db_scratch_reserve(struct sbx_db *db, size_t size)
{
	size_t len;
	char *scratch;

	if (size <= db->scratch_size)
		return 0;
	len = size < 256 ? 256 : size;
	scratch = realloc(db->scratch, len);
	if (scratch == NULL)
		return sbx_error_set(db, SBX_ERR_NOMEM, "copy: out of memory");
	db->scratch = scratch;
	db->scratch_size = len;
	return 0;
}

int sbx_db_keep_blob(struct sbx_db *db, const void *data, size_t size,
		     const void **copy_r)
{
	if (sbx_db_scratch_reserve(db, size + 1) < 0)
		return -1;
	if (size > 0)
		memcpy(db->scratch, data, size);
	db->scratch[size] = '\0';
	*copy_r = db->scratch;
	return 0;
}

int sbx_db_keep_strings(struct sbx_db *db, const char **const strs[],
			size_t count)
{
	size_t i, len, total = 0, pos = 0;

	for (i = 0; i < count; i++) {
		if (*strs[i] != NULL)
			total += strlen(*strs[i]) + 1;
	}
	if (sbx_db_scratch_reserve(db, total) < 0)
		return -1;
	for (i = 0; i < count; i++) {
		if (*strs[i] == NULL)
			continue;
		len = strlen(*strs[i]) + 1;
		memcpy(db->scratch + pos, *strs[i], len);
		*strs[i] = db->scratch + pos;
		pos += len;
	}
	return 0;
}

int sbx_db_modseq_get(struct sbx_db *db, int64_t mailbox_id,
		      uint64_t *modseq_r)
{
	size_t i;

	for (i = 0; i < db->modseq_count; i++) {
		if (db->modseqs[i].mailbox_id == mailbox_id) {
			*modseq_r = db->modseqs[i].modseq;
			return 1;
		}
	}
	return 0;
}

int sbx_db_modseq_set(struct sbx_db *db, int64_t mailbox_id, uint64_t modseq)
{
	struct sbx_modseq_entry *entries;
	size_t alloc;

	if (db->modseq_count == db->modseq_alloc) {
		alloc = db->modseq_alloc == 0 ? 8 : db->modseq_alloc * 2;
		entries = realloc(db->modseqs, alloc * sizeof(*entries));
		if (entries == NULL) {
			return sbx_error_set(db, SBX_ERR_NOMEM,
					     "allocate modseq: out of memory");
		}
		db->modseqs = entries;
		db->modseq_alloc = alloc;
	}
	db->modseqs[db->modseq_count].mailbox_id = mailbox_id;
	db->modseqs[db->modseq_count].modseq = modseq;
	db->modseq_count++;
	return 0;
}
