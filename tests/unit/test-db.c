/* SPDX-License-Identifier: MIT */
/* sbx-db.c: opening, the connection's settings, the write lock,
   transactions and the commit hook. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fixture.h"

TestSuite(db, .init = fixture_db_setup, .fini = fixture_db_teardown);

Test(db, schema_has_every_table_index_and_trigger)
{
	static const char *const names[] = {
		"meta", "mailboxes", "bodies", "body_chunks", "messages",
		"expunged", "subscriptions", "attributes", "mailbox_log",
		"bodies_sha256", "messages_modseq", "messages_body",
		"messages_message_id", "expunged_modseq",
		"messages_before_insert", "messages_after_insert",
		"messages_after_delete", "messages_after_update",
		"messages_after_update_in_place",
		"bodies_free", "body_parsed", "bodies_after_delete",
	};
	char sql[256];
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_schema"
			 " WHERE name = '%s'", names[i]);
		cr_assert_eq(fixture_sql_int(sql), 1, "%s exists once",
			     names[i]);
	}
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM meta"), 3);
	cr_assert_eq(fixture_sql_int("SELECT length(value) FROM meta"
				     " WHERE key = 'db_guid'"), 16);
}

Test(db, new_database_has_incremental_auto_vacuum)
{
	cr_assert_eq(fixture_sql_int("PRAGMA auto_vacuum"), 2);
}

Test(db, journal_mode_is_wal)
{
	sqlite3_stmt *stmt;

	cr_assert_eq(sqlite3_prepare_v2(sbx_db_get_sqlite(fixture_db),
					"PRAGMA journal_mode", -1, &stmt,
					NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(stmt, 0), "wal");
	sqlite3_finalize(stmt);
}

Test(db, application_id_and_user_version_are_set)
{
	cr_assert_eq(fixture_sql_int("PRAGMA application_id"), 0x53424F58);
	cr_assert_eq(fixture_sql_int("PRAGMA user_version"),
		     sbx_db_code_schema_version());
	cr_assert_eq(sbx_db_get_schema_version(fixture_db),
		     sbx_db_code_schema_version());
}

Test(db, connection_enforces_foreign_keys)
{
	sqlite3_stmt *stmt;

	cr_assert_eq(sqlite3_prepare_v2(sbx_db_get_sqlite(fixture_db),
					"PRAGMA foreign_keys", -1, &stmt,
					NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(stmt, 0), 1);
	sqlite3_finalize(stmt);
}

Test(db, lock_file_is_created_private_next_to_database)
{
	struct stat st;

	cr_assert_eq(stat(fixture_file("mail.sqlite.lock"), &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_str_eq(sbx_db_get_path(fixture_db), fixture_path);
}

Test(db, opening_same_path_again_returns_same_handle)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db2;

	cr_assert_eq(sbx_db_open(fixture_path, &set, &db2), 0);
	cr_assert_eq(db2, fixture_db);
	sbx_db_close(&db2);
	cr_assert_null(db2);
	/* The fixture's reference still works. */
	cr_assert_eq(sbx_mailbox_has_children(fixture_db, "x"), 0);
}

Test(db, commit_outside_sbx_tx_commit_is_rejected)
{
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);
	int rc;

	rc = sqlite3_exec(raw, "INSERT INTO subscriptions VALUES ('a')",
			  NULL, NULL, NULL);
	cr_assert_eq(rc, SQLITE_CONSTRAINT_COMMITHOOK, "autocommit: %d", rc);
	rc = sqlite3_exec(raw, "BEGIN IMMEDIATE;"
			  " INSERT INTO subscriptions VALUES ('b'); COMMIT",
			  NULL, NULL, NULL);
	cr_assert_eq(rc, SQLITE_CONSTRAINT_COMMITHOOK, "COMMIT: %d", rc);
	cr_assert_eq(sqlite3_get_autocommit(raw), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM subscriptions"),
		     0);
	/* The handle still works the sanctioned way. */
	cr_assert_eq(sbx_subscription_set(fixture_db, "c", true), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM subscriptions"),
		     1);
}

Test(db, write_outside_a_transaction_is_refused)
{
	struct sbx_mailbox_create set = { .name = "x" };
	const char *msg;

	cr_assert_eq(sbx_mailbox_create(fixture_db, &set, NULL), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_INTERNAL);
	cr_assert(strstr(msg, "write transaction") != NULL, "%s", msg);
	fixture_begin();
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_READ), -1,
		     "transactions do not nest");
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_INTERNAL);
	cr_assert(sbx_tx_is_write(fixture_db));
	fixture_commit();
	cr_assert(!sbx_tx_is_active(fixture_db));
	cr_assert_eq(sbx_tx_commit(fixture_db), -1, "nothing to commit");
}

Test(db, read_transaction_sees_one_snapshot)
{
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_READ), 0);
	cr_assert(sbx_tx_is_active(fixture_db));
	cr_assert(!sbx_tx_is_write(fixture_db));
	cr_assert_eq(sbx_mailbox_has_children(fixture_db, "a"), 0);
	cr_assert_eq(sbx_mailbox_create(fixture_db,
			&(struct sbx_mailbox_create){ .name = "a/b" }, NULL),
		     -1, "no writes in a read transaction");
	cr_assert_eq(sbx_tx_commit(fixture_db), 0);
}

Test(db, rollback_keeps_the_first_error)
{
	struct sbx_mailbox_create set = { .name = "a//b" };
	const char *msg;

	fixture_begin();
	cr_assert_eq(sbx_mailbox_create(fixture_db, &set, NULL), -1);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_INVALID);
	cr_assert(strstr(msg, "a//b") != NULL, "%s", msg);
	sbx_tx_rollback(fixture_db);	/* none active: nothing happens */
}

Test(db, write_is_busy_while_another_connection_holds_begin_immediate)
{
	sqlite3 *other;
	struct sbx_mailbox mb;
	const char *msg;

	fixture_mailbox("INBOX");
	cr_assert_eq(sqlite3_open(fixture_path, &other), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL,
				  NULL), SQLITE_OK);

	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_WRITE), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_BUSY,
		     "%s", msg);
	cr_assert(!sbx_tx_is_active(fixture_db));
	/* Readers never wait for a writer. */
	cr_assert_eq(sbx_mailbox_lookup(fixture_db, "INBOX", &mb), 1);
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_READ), 0);
	cr_assert_eq(sbx_mailbox_lookup(fixture_db, "INBOX", &mb), 1);
	cr_assert_eq(sbx_tx_commit(fixture_db), 0);

	cr_assert_eq(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(other);
	fixture_begin();	/* the lock file was released on failure */
	fixture_commit();
}

/* A child that holds the write lock of its own handle until told. */
static pid_t spawn_lock_holder(int *ready_fd_r, int *release_fd_r)
{
	int ready[2], release[2];
	pid_t pid;

	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(release), 0);
	pid = fixture_fork();
	if (pid == 0) {
		struct sbx_db_settings set = fixture_settings();
		struct sbx_db *db;
		char c = 0;

		if (sbx_db_open(fixture_path, &set, &db) < 0 ||
		    sbx_tx_begin(db, SBX_TX_WRITE) < 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1 ||
		    read(release[0], &c, 1) != 1)
			_exit(2);
		sbx_tx_rollback(db);
		sbx_db_close(&db);
		_exit(0);
	}
	close(ready[1]);
	close(release[0]);
	*ready_fd_r = ready[0];
	*release_fd_r = release[1];
	return pid;
}

Test(db, write_is_busy_while_a_forked_writer_holds_the_lock)
{
	int ready_fd, release_fd, status;
	struct sbx_mailbox mb;
	const char *msg;
	char c;
	pid_t pid;

	fixture_mailbox("INBOX");
	pid = spawn_lock_holder(&ready_fd, &release_fd);
	cr_assert_eq(read(ready_fd, &c, 1), 1, "child holds the lock");

	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_WRITE), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_BUSY);
	cr_assert(strstr(msg, "mail.sqlite.lock") != NULL, "%s", msg);
	cr_assert_eq(sbx_mailbox_lookup(fixture_db, "INBOX", &mb), 1,
		     "reads still work");

	cr_assert_eq(write(release_fd, "x", 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(ready_fd);
	close(release_fd);
	fixture_begin();
	fixture_commit();
}

Test(db, writer_killed_inside_a_transaction_leaves_database_consistent)
{
	int64_t inbox = fixture_mailbox("INBOX");
	int status;
	pid_t pid;

	fixture_append_text(inbox, "Subject: kept\r\n\r\nkept\r\n", 0);
	pid = fixture_fork();
	if (pid == 0) {
		struct sbx_db_settings set = fixture_settings();
		struct sbx_db *db;
		struct sbx_mailbox_create mbset = { .name = "Lost" };

		if (sbx_db_open(fixture_path, &set, &db) < 0 ||
		    sbx_tx_begin(db, SBX_TX_WRITE) < 0 ||
		    sbx_mailbox_create(db, &mbset, NULL) < 0 ||
		    sbx_msg_expunge(db, inbox, 1, 1 << 20) != 1)
			_exit(1);
		/* Dies with the transaction open and the lock held. */
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	fixture_begin();	/* the dead child's lock is gone */
	fixture_commit();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"
				     " WHERE name = 'Lost'"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM"
				     " pragma_integrity_check"
				     " WHERE integrity_check = 'ok'"), 1);
	fixture_check_invariants();
}

Test(db, data_version_changes_after_another_connection_commits)
{
	uint32_t before, after;
	sqlite3 *other;

	cr_assert_eq(sbx_db_get_data_version(fixture_db, &before), 0);
	cr_assert_eq(sbx_db_get_data_version(fixture_db, &after), 0);
	cr_assert_eq(before, after, "no commit, no change");
	cr_assert_eq(sqlite3_open(fixture_path, &other), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(other, "INSERT INTO subscriptions"
				  " VALUES ('x')", NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(other);
	cr_assert_eq(sbx_db_get_data_version(fixture_db, &after), 0);
	cr_assert_neq(before, after);
}

Test(db, missing_directory_fails_to_open_with_io_error)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;
	const char *msg;

	cr_assert_eq(sbx_db_open(fixture_file("missing/mail.sqlite"), &set,
				 &db), -1);
	cr_assert_not_null(db);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_IO, "%s", msg);
	cr_assert(strstr(msg, "SQLITE_CANTOPEN") != NULL, "%s", msg);
	cr_assert(strstr(msg, "missing/mail.sqlite") != NULL, "%s", msg);
	sbx_db_close(&db);
}

Test(db, closing_leaves_the_checkpoint_to_the_next_locked_commit)
{
	struct stat st;

	fixture_mailbox("INBOX");
	sbx_db_close(&fixture_db);
	/* NO_CKPT_ON_CLOSE: the WAL is neither checkpointed nor removed by
	   an unlocked close. */
	cr_assert_eq(stat(fixture_file("mail.sqlite-wal"), &st), 0);
	cr_assert_gt(st.st_size, 0);
}

Test(db, close_accepts_null)
{
	struct sbx_db *db = NULL;

	sbx_db_close(&db);
	cr_assert_null(db);
}

/* The last handle closed is kept and reused for the same file and
   settings; a replaced file or other settings get a new connection (one
   that has made no change yet: addresses may be reused). */
Test(db, a_closed_handle_is_reused_for_the_same_file_only)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;

	fixture_mailbox("INBOX");
	cr_assert_gt(sqlite3_total_changes64(sbx_db_get_sqlite(fixture_db)),
		     0);
	sbx_db_close(&fixture_db);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0);
	cr_assert_gt(sqlite3_total_changes64(sbx_db_get_sqlite(fixture_db)),
		     0, "parked and reused");

	set.lock_timeout_msecs = FIXTURE_LOCK_TIMEOUT_MSECS + 1;
	sbx_db_close(&fixture_db);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), 0);
	cr_assert_eq(sqlite3_total_changes64(sbx_db_get_sqlite(db)), 0,
		     "other settings: a new connection");
	sbx_db_close(&db);

	/* a new file at the same path (a restore by copy, a new user) */
	cr_assert_eq(rename(fixture_path, fixture_file("old.sqlite")), 0);
	set = fixture_settings();
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0, "%s",
		     fixture_error());
	{
		struct sbx_mailbox mb;

		cr_assert_eq(sbx_mailbox_lookup(fixture_db, "INBOX", &mb), 0,
			     "another file: the new, empty one");
	}
	sbx_db_close_parked();
}

/* PRAGMA cache_size of the fixture's connection, in KiB (negative). */
static int64_t cache_size(void)
{
	sqlite3_stmt *stmt;
	int64_t value;

	cr_assert_eq(sqlite3_prepare_v2(sbx_db_get_sqlite(fixture_db),
					"PRAGMA cache_size", -1, &stmt, NULL),
		     SQLITE_OK);
	cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
	value = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return value;
}

Test(db, a_write_transaction_may_fill_a_larger_page_cache)
{
	cr_assert_eq(cache_size(), -2000, "SQLite's default");
	fixture_begin();
	cr_assert_eq(cache_size(), -32768);
	fixture_commit();
	cr_assert_eq(cache_size(), -2000, "back after the commit");
	fixture_begin();
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(cache_size(), -2000, "back after a rollback");
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_READ), 0);
	cr_assert_eq(cache_size(), -2000, "reads keep the default");
	sbx_tx_rollback(fixture_db);
}

static int handle_synchronous(struct sbx_db *db)
{
	sqlite3_stmt *stmt;
	int value;

	cr_assert_eq(sqlite3_prepare_v2(db->sqlite, "PRAGMA synchronous", -1,
					&stmt, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
	value = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	return value;
}

/* A write that brings no mail commits as NORMAL under FULL; every other
   write, and the handle afterwards, is FULL again. */
Test(db, lazy_writes_commit_as_normal_and_full_comes_back)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;

	set.synchronous = SBX_SYNCHRONOUS_FULL;
	sbx_db_close(&fixture_db);
	sbx_db_close_parked();
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), 0);
	cr_assert_eq(handle_synchronous(db), 2);
	cr_assert_eq(sbx_tx_begin(db, SBX_TX_WRITE_LAZY), 0);
	cr_assert_eq(handle_synchronous(db), 1);
	cr_assert_eq(sbx_tx_commit(db), 0);
	cr_assert_eq(handle_synchronous(db), 2);
	cr_assert_eq(sbx_tx_begin(db, SBX_TX_WRITE_LAZY), 0);
	sbx_tx_rollback(db);
	cr_assert_eq(handle_synchronous(db), 2);
	cr_assert_eq(sbx_tx_begin(db, SBX_TX_WRITE), 0);
	cr_assert_eq(handle_synchronous(db), 2);
	cr_assert_eq(sbx_tx_commit(db), 0);
	sbx_db_close(&db);
}
