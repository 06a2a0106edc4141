/* SPDX-License-Identifier: MIT */
/* sbx-migrate.c and sbx-migrations.def: creating, refusing and not
   repeating migrations, also when processes race. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fixture.h"

TestSuite(migrate, .init = fixture_db_setup, .fini = fixture_db_teardown);

static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *conn;

	cr_assert_eq(sqlite3_open(path, &conn), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK,
		     "%s: %s", sql, sqlite3_errmsg(conn));
	sqlite3_close(conn);
}

/* sbx-migrations.def itself, for the triggers version 5 replaced: a
   released migration never changes, so its text is version 4's. */
static const struct {
	int version;
	const char *sql;
} migrations[] = {
#define SBX_MIGRATION(version, sql) { version, sql },
#include "sbx-migrations.def"
#undef SBX_MIGRATION
};

/* Undoes version 5 on the closed file at path: drops its triggers and
   runs again the entries of version 1 that created the ones it
   replaced. */
static void raw_undo_version_5(const char *path)
{
	static const char prefix[] = "CREATE TRIGGER messages_after_";
	unsigned int i, created = 0;

	raw_exec(path, "DROP TRIGGER messages_after_insert;"
		 "DROP TRIGGER messages_after_delete;"
		 "DROP TRIGGER messages_after_update;"
		 "DROP TRIGGER messages_after_update_in_place;");
	for (i = 0; i < sizeof(migrations) / sizeof(migrations[0]); i++) {
		if (migrations[i].version != 1 ||
		    strncmp(migrations[i].sql, prefix,
			    sizeof(prefix) - 1) != 0)
			continue;
		raw_exec(path, migrations[i].sql);
		created++;
	}
	cr_assert_eq(created, 3, "insert, delete and update triggers");
}

/* Closes the fixture database, undoes version 5 and then, with sql
   (which sets user_version), the versions after the one sql names, and
   opens it again: the open migrates it to the current version. */
static void reopen_downgraded(const char *sql)
{
	struct sbx_db_settings set = fixture_settings();

	sbx_db_close(&fixture_db);
	raw_undo_version_5(fixture_path);
	raw_exec(fixture_path, sql);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0, "%s",
		     fixture_error());
	cr_assert_eq(sbx_db_get_schema_version(fixture_db), 5);
}

Test(migrate, code_version_is_the_last_migration)
{
	cr_assert_eq(sbx_db_code_schema_version(), 5);
}

/* A version 1 database (made here by undoing version 2) is migrated at
   open, keeping its data; the new trigger then keeps pruned_modseq. */
Test(migrate, a_version_1_database_is_upgraded)
{
	int64_t id = fixture_mailbox("INBOX");

	reopen_downgraded("DROP INDEX messages_pop3_order;"
			  "DROP TRIGGER bodies_after_delete;"
			  "DROP TABLE body_parsed;"
			  "DROP TRIGGER expunged_after_delete;"
			  "ALTER TABLE mailboxes DROP COLUMN pruned_modseq;"
			  "PRAGMA user_version = 1;");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"
				     " WHERE name = 'INBOX'"), 1);
	raw_exec(fixture_path,
		 "INSERT INTO expunged(mailbox_id, uid, modseq, guid,"
		 " expunged_at) VALUES (1, 1, 70000, 'g', 1);"
		 "DELETE FROM expunged;");
	cr_assert_eq(fixture_sql_int("SELECT pruned_modseq FROM mailboxes"),
		     70000, "mailbox %lld", (long long)id);
}

/* A version 2 database gains body_parsed; its bodies have no row there
   (readers parse them), and the trigger frees a row with its body. */
Test(migrate, a_version_2_database_gains_parsed_fields)
{
	int64_t inbox = fixture_mailbox("INBOX");

	(void)fixture_append_text(inbox, "Subject: old\r\n\r\nold\r\n", 0);
	reopen_downgraded("DROP INDEX messages_pop3_order;"
			  "DROP TRIGGER bodies_after_delete;"
			  "DROP TABLE body_parsed;"
			  "PRAGMA user_version = 2;");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_parsed"), 0);
	raw_exec(fixture_path,
		 "INSERT INTO body_parsed(body_id, headers)"
		 " SELECT id, x'' FROM bodies;"
		 "DELETE FROM messages;");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_parsed"), 0);
}

/* A version 3 database gains the index of POP3 orders, holding the
   messages that already have one. */
Test(migrate, a_version_3_database_gains_the_pop3_order_index)
{
	int64_t inbox = fixture_mailbox("INBOX");

	(void)fixture_append_text(inbox, "Subject: a\r\n\r\na\r\n", 0);
	(void)fixture_append_text(inbox, "Subject: b\r\n\r\nb\r\n", 0);
	reopen_downgraded("DROP INDEX messages_pop3_order;"
			  "UPDATE messages SET pop3_order = 7 WHERE uid = 2;"
			  "PRAGMA user_version = 3;");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"
				     " INDEXED BY messages_pop3_order"
				     " WHERE mailbox_id = 1 AND pop3_order <> 0"),
		     1);
	cr_assert_eq(sbx_msg_has_pop3_order(fixture_db, inbox), 1);
}

/* A version 4 database gets the triggers of version 5 in place of
   version 1's, its counters as they were, and the new triggers keep
   them from then on. */
Test(migrate, a_version_4_database_gets_the_cheaper_triggers)
{
	int64_t inbox = fixture_mailbox("INBOX");

	(void)fixture_mailbox("Other");
	(void)fixture_append_text(inbox, "Subject: a\r\n\r\na\r\n", 0);
	(void)fixture_append_text(inbox, "Subject: b\r\n\r\nbb\r\n",
				  SBX_FLAG_SEEN);
	(void)fixture_append_text(inbox, "Subject: c\r\n\r\nccc\r\n", 0);
	reopen_downgraded("PRAGMA user_version = 4;");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM sqlite_schema"
				     " WHERE name ="
				     " 'messages_after_update_in_place'"), 1);
	cr_assert_gt(fixture_sql_int("SELECT instr(sql, '(vsize, psize)')"
				     " FROM sqlite_schema WHERE name ="
				     " 'messages_after_insert'"), 0,
		     "version 5's insert trigger");
	cr_assert_eq(fixture_sql_int("SELECT messages FROM mailboxes"
				     " WHERE name = 'INBOX'"), 3);
	cr_assert_eq(fixture_sql_int("SELECT unseen FROM mailboxes"
				     " WHERE name = 'INBOX'"), 2);
	fixture_check_invariants();

	raw_exec(fixture_path,
		 "UPDATE messages SET flags = flags | 8, modseq = modseq + 1;"
		 "UPDATE messages SET mailbox_id = 2, uid = 7 WHERE uid = 1;"
		 "DELETE FROM messages WHERE uid = 2;");
	cr_assert_eq(fixture_sql_int("SELECT messages FROM mailboxes"
				     " WHERE name = 'INBOX'"), 1);
	cr_assert_eq(fixture_sql_int("SELECT uidnext FROM mailboxes"
				     " WHERE name = 'Other'"), 8);
	cr_assert_eq(fixture_sql_int("SELECT sum(unseen) FROM mailboxes"), 0);
	fixture_check_invariants();
}

Test(migrate, newer_schema_version_is_refused_as_corrupt)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;
	const char *msg;

	sbx_db_close(&fixture_db);
	raw_exec(fixture_path, "PRAGMA user_version = 99");
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_CORRUPT);
	cr_assert(strstr(msg, "database schema version 99 is newer than "
			 "this sqlbox supports (5)") != NULL, "%s", msg);
	sbx_db_close(&db);
	/* A refused handle is not kept: a later open tries again. */
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), -1);
	sbx_db_close(&db);
}

Test(migrate, another_applications_database_is_refused)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;
	const char *msg;

	raw_exec(fixture_file("other.sqlite"),
		 "PRAGMA application_id = 42; CREATE TABLE t(x)");
	cr_assert_eq(sbx_db_open(fixture_file("other.sqlite"), &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_CORRUPT);
	cr_assert(strstr(msg, "not a sqlbox database") != NULL, "%s", msg);
	sbx_db_close(&db);
}

Test(migrate, reopening_keeps_data_and_does_not_migrate_again)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_mailbox mb;
	int64_t created;
	int lock_fd;

	fixture_mailbox("INBOX");
	raw_exec(fixture_path, "UPDATE meta SET value = 12345"
		 " WHERE key = 'created'");
	created = fixture_sql_int("SELECT value FROM meta"
				  " WHERE key = 'created'");
	sbx_db_close(&fixture_db);

	/* A current database opens without the write lock. */
	lock_fd = open(fixture_file("mail.sqlite.lock"), O_RDWR);
	cr_assert_geq(lock_fd, 0);
	cr_assert_eq(flock(lock_fd, LOCK_EX), 0);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0, "%s",
		     fixture_error());
	close(lock_fd);

	cr_assert_eq(sbx_mailbox_lookup(fixture_db, "INBOX", &mb), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM meta"), 3);
	cr_assert_eq(fixture_sql_int("SELECT value FROM meta"
				     " WHERE key = 'created'"), created);
	cr_assert_eq(sbx_db_get_schema_version(fixture_db),
		     sbx_db_code_schema_version());
}

Test(migrate, db_guid_survives_reopening)
{
	struct sbx_db_settings set = fixture_settings();
	sqlite3 *conn;
	sqlite3_stmt *stmt;
	unsigned char before[16], after[16];
	int pass;

	for (pass = 0; pass < 2; pass++) {
		cr_assert_eq(sqlite3_open(fixture_path, &conn), SQLITE_OK);
		cr_assert_eq(sqlite3_prepare_v2(conn, "SELECT value FROM meta"
						" WHERE key = 'db_guid'", -1,
						&stmt, NULL), SQLITE_OK);
		cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
		cr_assert_eq(sqlite3_column_bytes(stmt, 0), 16);
		memcpy(pass == 0 ? before : after,
		       sqlite3_column_blob(stmt, 0), 16);
		sqlite3_finalize(stmt);
		sqlite3_close(conn);
		sbx_db_close(&fixture_db);
		cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0);
	}
	cr_assert_arr_eq(before, after, 16);
}

Test(migrate, new_database_needs_the_lock_to_migrate)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;
	const char *msg;
	int lock_fd;

	lock_fd = open(fixture_file("new.sqlite.lock"),
		       O_RDWR | O_CREAT, 0600);
	cr_assert_geq(lock_fd, 0);
	cr_assert_eq(flock(lock_fd, LOCK_EX), 0);
	cr_assert_eq(sbx_db_open(fixture_file("new.sqlite"), &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_BUSY, "%s", msg);
	sbx_db_close(&db);
	close(lock_fd);
	cr_assert_eq(sbx_db_open(fixture_file("new.sqlite"), &set, &db), 0);
	sbx_db_close(&db);
}

#define RACERS 5

Test(migrate, processes_opening_a_new_database_at_once_migrate_it_once)
{
	char path[4096];
	int go[2], status, i;
	pid_t pids[RACERS];
	sqlite3 *conn;
	sqlite3_stmt *stmt;

	snprintf(path, sizeof(path), "%s", fixture_file("race.sqlite"));
	cr_assert_eq(pipe(go), 0);
	for (i = 0; i < RACERS; i++) {
		pids[i] = fixture_fork();
		if (pids[i] == 0) {
			struct sbx_db_settings set = {
				.lock_timeout_msecs = 20000,
			};
			struct sbx_db *db;
			char c;

			close(go[1]);
			/* All start when the pipe closes. */
			if (read(go[0], &c, 1) != 0)
				_exit(3);
			if (sbx_db_open(path, &set, &db) < 0)
				_exit(1);
			if (sbx_db_get_schema_version(db) !=
			    sbx_db_code_schema_version())
				_exit(2);
			sbx_db_close(&db);
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]);
	for (i = 0; i < RACERS; i++) {
		cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "racer %d: status %d", i, status);
	}
	cr_assert_eq(sqlite3_open(path, &conn), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(conn,
		"SELECT (SELECT count(*) FROM sqlite_schema"
		"  WHERE name = 'mailboxes'),"
		" (SELECT count(*) FROM meta),"
		" (SELECT user_version FROM pragma_user_version),"
		" (SELECT auto_vacuum FROM pragma_auto_vacuum),"
		" (SELECT journal_mode FROM pragma_journal_mode)",
		-1, &stmt, NULL), SQLITE_OK, "%s", sqlite3_errmsg(conn));
	cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
	cr_assert_eq(sqlite3_column_int(stmt, 0), 1, "one mailboxes table");
	cr_assert_eq(sqlite3_column_int(stmt, 1), 3, "meta filled once");
	cr_assert_eq(sqlite3_column_int(stmt, 2), sbx_db_code_schema_version(),
		     "user_version");
	cr_assert_eq(sqlite3_column_int(stmt, 3), 2, "auto_vacuum");
	cr_assert_str_eq((const char *)sqlite3_column_text(stmt, 4), "wal");
	sqlite3_finalize(stmt);
	sqlite3_close(conn);
}

/* The file's schema (every object's type, name and SQL) in one string,
   user_version and application_id, read by a connection of its own. */
struct schema_state {
	char objects[32768];
	int64_t user_version;
	int64_t application_id;
};

static int64_t raw_int(sqlite3 *conn, const char *sql)
{
	sqlite3_stmt *stmt;
	int64_t value = -1;

	cr_assert_eq(sqlite3_prepare_v2(conn, sql, -1, &stmt, NULL),
		     SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(conn));
	if (sqlite3_step(stmt) == SQLITE_ROW)
		value = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return value;
}

static void read_schema(const char *path, struct schema_state *state_r)
{
	sqlite3 *conn;
	sqlite3_stmt *stmt;
	size_t len = 0;

	memset(state_r, 0, sizeof(*state_r));
	cr_assert_eq(sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY, NULL),
		     SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(conn, "SELECT type || ' ' || name ||"
					" ' ' || coalesce(sql, '') FROM"
					" sqlite_schema ORDER BY name", -1,
					&stmt, NULL), SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW) {
		len += (size_t)snprintf(state_r->objects + len,
					sizeof(state_r->objects) - len, "%s\n",
					sqlite3_column_text(stmt, 0));
		cr_assert_lt(len, sizeof(state_r->objects));
	}
	sqlite3_finalize(stmt);
	state_r->user_version = raw_int(conn, "PRAGMA user_version");
	state_r->application_id = raw_int(conn, "PRAGMA application_id");
	sqlite3_close(conn);
}

/* The first migration creates many objects before mailbox_log: a file
   marked as sqlbox's that already has a table of that name (a botched
   earlier attempt) makes it fail half-way. Everything it did before is
   undone, the file keeps what it had, the error says what failed, and
   nothing is left locked. */
Test(migrate, failed_migration_leaves_the_old_schema_intact)
{
	struct sbx_db_settings set = fixture_settings();
	struct schema_state before, after;
	const char *path = fixture_file("old.sqlite");
	struct sbx_db *db;
	const char *msg;
	int attempt;

	/* marked as sqlbox's (an unmarked file with tables is refused
	   before any migration as another program's) */
	raw_exec(path, "PRAGMA application_id = 1396854616;"
		 "CREATE TABLE mailbox_log(note TEXT);"
		 "INSERT INTO mailbox_log VALUES ('kept')");
	read_schema(path, &before);
	cr_assert_eq(before.user_version, 0);

	for (attempt = 0; attempt < 2; attempt++) {
		cr_assert_eq(sbx_db_open(path, &set, &db), -1);
		cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_INTERNAL,
			     "%s", msg);
		cr_assert(strstr(msg, "migrate database '") != NULL &&
			  strstr(msg, "to schema version 1: table mailbox_log "
				 "already exists (SQLITE_ERROR)") != NULL,
			  "%s", msg);
		sbx_db_close(&db);

		read_schema(path, &after);
		cr_assert_str_eq(after.objects, before.objects);
		cr_assert_eq(after.user_version, 0);
		cr_assert_eq(after.application_id, before.application_id);
	}
	{
		sqlite3 *conn;

		cr_assert_eq(sqlite3_open(path, &conn), SQLITE_OK);
		cr_assert_eq(raw_int(conn, "SELECT count(*) FROM mailbox_log"
				     " WHERE note = 'kept'"), 1);
		sqlite3_close(conn);
	}

	/* Once the conflict is gone, the same file migrates. */
	raw_exec(path, "DROP TABLE mailbox_log");
	cr_assert_eq(sbx_db_open(path, &set, &db), 0, "%s",
		     (sbx_db_last_error(db, &msg), msg));
	cr_assert_eq(sbx_db_get_schema_version(db),
		     sbx_db_code_schema_version());
	sbx_db_close(&db);
	read_schema(path, &after);
	cr_assert_eq(after.user_version, sbx_db_code_schema_version());
	cr_assert(strstr(after.objects, "table mailbox_log ") != NULL);
}

/* The same for a later migration: a version 1 file whose mailboxes table
   already has the column version 2 adds stays a working version 1 file
   with its data, and opening it says why. */
Test(migrate, failed_upgrade_leaves_version_1_intact)
{
	struct sbx_db_settings set = fixture_settings();
	struct schema_state before, after;
	struct sbx_db *db;
	const char *msg;

	fixture_mailbox("Kept");
	sbx_db_close(&fixture_db);
	raw_undo_version_5(fixture_path);
	raw_exec(fixture_path,
		 "DROP INDEX messages_pop3_order;"
		 "DROP TRIGGER bodies_after_delete;"
		 "DROP TABLE body_parsed;"
		 "DROP TRIGGER expunged_after_delete;"
		 "PRAGMA user_version = 1;");
	read_schema(fixture_path, &before);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_INTERNAL, "%s", msg);
	cr_assert(strstr(msg, "to schema version 2: duplicate column name: "
			 "pruned_modseq") != NULL, "%s", msg);
	sbx_db_close(&db);
	read_schema(fixture_path, &after);
	cr_assert_str_eq(after.objects, before.objects);
	cr_assert_eq(after.user_version, 1);
	{
		sqlite3 *conn;

		cr_assert_eq(sqlite3_open(fixture_path, &conn), SQLITE_OK);
		cr_assert_eq(raw_int(conn, "SELECT count(*) FROM mailboxes"
				     " WHERE name = 'Kept'"), 1);
		sqlite3_close(conn);
	}
}
