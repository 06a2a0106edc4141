/* SPDX-License-Identifier: MIT */
/* The unit tests' fixture.

   Criterion runs every test in its own process, in parallel: each test
   gets a directory of its own from mkdtemp() and a freshly opened (so
   freshly migrated) file database in it, and the teardown removes both.
   The helpers assert as they go, so a test reads as the behaviour it
   checks. */
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-body.h"
#include "sbx-hash.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fixture.h"

char fixture_dir[PATH_MAX];
char fixture_path[PATH_MAX];
struct sbx_db *fixture_db;

struct sbx_db_settings fixture_settings(void)
{
	struct sbx_db_settings set = {
		.lock_timeout_msecs = FIXTURE_LOCK_TIMEOUT_MSECS,
		.synchronous = SBX_SYNCHRONOUS_NORMAL,
	};

	return set;
}

const char *fixture_file(const char *name)
{
	static char path[PATH_MAX];
	int len = snprintf(path, sizeof(path), "%s/%s", fixture_dir, name);

	cr_assert(len > 0 && (size_t)len < sizeof(path), "path too long");
	return path;
}

const char *fixture_error(void)
{
	const char *msg;

	(void)sbx_db_last_error(fixture_db, &msg);
	return msg;
}

void fixture_db_setup(void)
{
	struct sbx_db_settings set = fixture_settings();
	const char *tmp = getenv("TMPDIR");
	int len;

	snprintf(fixture_dir, sizeof(fixture_dir), "%s/sbx-unit-XXXXXX",
		 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	cr_assert_not_null(mkdtemp(fixture_dir), "mkdtemp");
	len = snprintf(fixture_path, sizeof(fixture_path), "%s/mail.sqlite",
		       fixture_dir);
	cr_assert(len > 0 && (size_t)len < sizeof(fixture_path));
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0,
		     "open %s: %s", fixture_path, fixture_error());
}

static int fixture_remove(const char *path, const struct stat *st, int type,
			  struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

void fixture_db_teardown(void)
{
	sbx_db_close(&fixture_db);
	if (fixture_dir[0] != '\0')
		(void)nftw(fixture_dir, fixture_remove, 16,
			   FTW_DEPTH | FTW_PHYS);
}

void fixture_begin(void)
{
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_WRITE), 0,
		     "begin: %s", fixture_error());
}

void fixture_commit(void)
{
	cr_assert_eq(sbx_tx_commit(fixture_db), 0, "commit: %s",
		     fixture_error());
}

int64_t fixture_mailbox(const char *name)
{
	struct sbx_mailbox_create set = { .name = name };
	int64_t id;

	fixture_begin();
	cr_assert_eq(sbx_mailbox_create(fixture_db, &set, &id), 0,
		     "create %s: %s", name, fixture_error());
	fixture_commit();
	return id;
}

int64_t fixture_body(const void *data, size_t size, int want_hash)
{
	struct sbx_body_writer *writer;
	struct sbx_hash *hash;
	uint8_t digest[SBX_SHA256_SIZE];
	int64_t id;

	hash = sbx_hash_alloc();
	cr_assert_not_null(hash);
	sbx_hash_update(hash, data, size);
	sbx_hash_final(hash, digest);
	sbx_hash_free(&hash);
	cr_assert_eq(sbx_body_writer_open(fixture_db,
					  want_hash ? digest : NULL, size,
					  size, &writer), 0,
		     "writer open: %s", fixture_error());
	cr_assert_eq(sbx_body_writer_write(writer, data, size), 0,
		     "writer write: %s", fixture_error());
	cr_assert_eq(sbx_body_writer_close(&writer, &id), 0,
		     "writer close: %s", fixture_error());
	return id;
}

uint32_t fixture_append(int64_t mailbox_id, int64_t body_id, uint32_t flags)
{
	struct sbx_mailbox mb;
	struct sbx_msg_new msg;
	uint64_t modseq;
	char guid[64];

	cr_assert_eq(sbx_mailbox_lookup_id(fixture_db, mailbox_id, &mb), 1,
		     "lookup mailbox: %s", fixture_error());
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, mailbox_id,
					      &modseq), 0,
		     "modseq: %s", fixture_error());
	snprintf(guid, sizeof(guid), "guid-%lld-%u", (long long)mailbox_id,
		 mb.uidnext);
	memset(&msg, 0, sizeof(msg));
	msg.uid = mb.uidnext;
	msg.body_id = body_id;
	msg.guid = guid;
	msg.flags = flags;
	msg.modseq = modseq;
	msg.received_date = 1700000000;
	msg.save_date = 1700000001;
	cr_assert_eq(sbx_msg_append(fixture_db, mailbox_id, &msg), 0,
		     "append: %s", fixture_error());
	return msg.uid;
}

uint32_t fixture_append_text(int64_t mailbox_id, const char *text,
			     uint32_t flags)
{
	int64_t body_id;
	uint32_t uid;

	fixture_begin();
	body_id = fixture_body(text, strlen(text), 1);
	uid = fixture_append(mailbox_id, body_id, flags);
	fixture_commit();
	return uid;
}

pid_t fixture_fork(void)
{
	struct sbx_db_settings set = fixture_settings();
	pid_t pid;

	sbx_db_close(&fixture_db);
	pid = fork();
	cr_assert_neq(pid, -1, "fork");
	if (pid == 0)
		return 0;
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0,
		     "reopen %s: %s", fixture_path, fixture_error());
	return pid;
}

int64_t fixture_sql_int(const char *sql)
{
	sqlite3 *conn;
	sqlite3_stmt *stmt;
	int64_t value = 0;
	int rc;

	cr_assert_eq(sqlite3_open_v2(fixture_path, &conn,
				     SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	rc = sqlite3_prepare_v2(conn, sql, -1, &stmt, NULL);
	cr_assert_eq(rc, SQLITE_OK, "prepare %s: %s", sql,
		     sqlite3_errmsg(conn));
	rc = sqlite3_step(stmt);
	cr_assert(rc == SQLITE_ROW || rc == SQLITE_DONE, "step %s: %s", sql,
		  sqlite3_errmsg(conn));
	if (rc == SQLITE_ROW)
		value = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(conn);
	return value;
}

void fixture_sql_exec(const char *sql)
{
	sqlite3 *conn;

	cr_assert_eq(sqlite3_open(fixture_path, &conn), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK,
		     "%s: %s", sql, sqlite3_errmsg(conn));
	sqlite3_close(conn);
}

void fixture_check_invariants(void)
{
	cr_assert_eq(fixture_sql_int(
		"SELECT count(*) FROM mailboxes AS mb WHERE"
		" messages != (SELECT count(*) FROM messages"
		"  WHERE mailbox_id = mb.id)"
		" OR unseen != (SELECT count(*) FROM messages"
		"  WHERE mailbox_id = mb.id AND (flags & 8) = 0)"
		" OR vsize != (SELECT coalesce(sum(b.virtual_size), 0)"
		"  FROM messages AS m JOIN bodies AS b ON b.id = m.body_id"
		"  WHERE m.mailbox_id = mb.id)"
		" OR psize != (SELECT coalesce(sum(b.physical_size), 0)"
		"  FROM messages AS m JOIN bodies AS b ON b.id = m.body_id"
		"  WHERE m.mailbox_id = mb.id)"), 0,
		"mailbox counters equal the rows");
	cr_assert_eq(fixture_sql_int(
		"SELECT count(*) FROM bodies AS b WHERE refcount !="
		" (SELECT count(*) FROM messages WHERE body_id = b.id)"), 0,
		"refcounts equal the references");
	cr_assert_eq(fixture_sql_int(
		"SELECT count(*) FROM body_chunks WHERE body_id NOT IN"
		" (SELECT id FROM bodies)"), 0, "no chunk without its body");
	cr_assert_eq(fixture_sql_int(
		"SELECT count(*) FROM messages AS m JOIN mailboxes AS mb"
		" ON mb.id = m.mailbox_id WHERE m.uid >= mb.uidnext"), 0,
		"every UID below uidnext");
	cr_assert_eq(fixture_sql_int(
		"SELECT count(*) FROM messages AS m JOIN mailboxes AS mb"
		" ON mb.id = m.mailbox_id WHERE m.modseq > mb.highestmodseq"),
		0, "every modseq at most highestmodseq");
}
