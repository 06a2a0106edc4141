/* SPDX-License-Identifier: MIT */
/* Operator tasks (storage/sbx-admin.c): check and repair, purge, backup,
   restore, stats. Faults are planted with a raw connection, as an
   operator's hand-written SQL would. */

#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"
#include "sbx-admin.h"
#include "sbx-body.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"

TestSuite(admin, .init = fixture_db_setup, .fini = fixture_db_teardown);

static void raw_exec(const char *sql)
{
	sqlite3 *raw;
	char *err = NULL;

	cr_assert_eq(sqlite3_open(fixture_path, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, sql, NULL, NULL, &err), SQLITE_OK,
		     "%s: %s", sql, err);
	sqlite3_close(raw);
}

static void count_report(void *context, const char *problem)
{
	unsigned int *n = context;

	(void)problem;
	(*n)++;
}

static unsigned int check(enum sbx_check_flags flags)
{
	unsigned int problems, reported = 0;

	cr_assert_eq(sbx_admin_check(fixture_db, flags, count_report,
				     &reported, &problems), 0, "%s",
		     fixture_error());
	cr_assert_eq(reported, problems);
	return problems;
}

static int64_t populate(void)
{
	int64_t box = fixture_mailbox("INBOX");

	(void)fixture_append_text(box, "Subject: a\r\n\r\nx\r\n", 0);
	(void)fixture_append_text(box, "Subject: b\r\n\r\ny\r\n", SBX_FLAG_SEEN);
	(void)fixture_append_text(box, "Subject: c\r\n\r\nz\r\n", 0);
	return box;
}

Test(admin, clean_database_passes_both_checks)
{
	(void)populate();
	cr_assert_eq(check(0), 0);
	cr_assert_eq(check(SBX_CHECK_FULL), 0);
}

Test(admin, each_planted_fault_is_found_and_repaired)
{
	static const char *const faults[] = {
		/* a counter off */
		"UPDATE mailboxes SET messages = 99 WHERE name = 'INBOX'",
		/* an orphan body */
		"INSERT INTO bodies(refcount, physical_size, virtual_size, "
		"created) VALUES (1, 0, 0, 0)",
		/* a refcount off */
		"UPDATE bodies SET refcount = refcount + 2 WHERE id = "
		"(SELECT min(body_id) FROM messages)",
		/* a row above UIDNEXT */
		"UPDATE mailboxes SET uidnext = 2 WHERE name = 'INBOX'",
		/* chunks without their body */
		"INSERT INTO body_chunks(body_id, seq, data) VALUES "
		"(999999, 0, x'00')",
		/* parsed fields without their body */
		"INSERT INTO body_parsed(body_id, headers) VALUES "
		"(999999, x'')",
		/* a UID both a message and a tombstone */
		"INSERT INTO expunged(mailbox_id, uid, modseq, guid, "
		"expunged_at) SELECT mailbox_id, uid, 1, guid, 0 "
		"FROM messages WHERE uid = 1",
	};
	unsigned int i;

	(void)populate();
	for (i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		raw_exec(faults[i]);
		cr_assert_geq(check(0), 1, "fault %u not found: %s", i,
			      faults[i]);
		cr_assert_geq(check(SBX_CHECK_REPAIR), 1);
		cr_assert_eq(check(0), 0, "fault %u not repaired: %s", i,
			     faults[i]);
		fixture_check_invariants();
	}
	/* no mail was lost by any repair */
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 3);
}

Test(admin, missing_body_is_reported_never_deleted)
{
	(void)populate();
	raw_exec("PRAGMA foreign_keys = OFF; DROP TRIGGER IF EXISTS "
		 "bodies_free_unused; DELETE FROM body_chunks WHERE body_id = "
		 "(SELECT min(body_id) FROM messages); DELETE FROM bodies "
		 "WHERE id = (SELECT min(body_id) FROM messages)");
	cr_assert_geq(check(SBX_CHECK_REPAIR), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 3);
	cr_assert_geq(check(0), 1);
}

Test(admin, purge_after_expunging_half_gives_space_back)
{
	int64_t box = fixture_mailbox("INBOX");
	char text[20000];
	struct sbx_purge_result res;
	uint64_t modseq;
	uint32_t uid;
	int i;

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	for (i = 0; i < 200; i++) {
		/* distinct bodies, so nothing is shared */
		memcpy(text, &i, sizeof(i));
		text[0] = (char)('a' + i % 26);
		text[1] = (char)('a' + i / 26);
		(void)fixture_append_text(box, text, 0);
	}
	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, box, &modseq), 0);
	for (uid = 1; uid <= 100; uid++)
		cr_assert_eq(sbx_msg_expunge(fixture_db, box, uid, modseq), 1);
	fixture_commit();

	cr_assert_eq(sbx_admin_purge(fixture_db, (int64_t)time(NULL) + 1,
				     (int64_t)time(NULL) + 1,
				     &res), 0, "%s", fixture_error());
	cr_assert_eq(res.tombstones_pruned, 100);
	cr_assert_lt(res.bytes_after, res.bytes_before * 6 / 10,
		     "before %llu after %llu",
		     (unsigned long long)res.bytes_before,
		     (unsigned long long)res.bytes_after);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 100);
	cr_assert_eq(check(SBX_CHECK_FULL), 0);
}

Test(admin, unreferenced_bodies_are_spared_while_young)
{
	struct sbx_purge_result res;
	int64_t young, old;
	time_t now = time(NULL);

	(void)populate();
	/* two bodies no message uses: one a save may still be committing,
	   one left long ago by a process that died */
	fixture_begin();
	young = fixture_body("Subject: y\r\n\r\ny\r\n", 17, 1);
	old = fixture_body("Subject: o\r\n\r\no\r\n", 17, 1);
	fixture_commit();
	raw_exec("UPDATE bodies SET created = 0 WHERE id = "
		 "(SELECT max(id) FROM bodies)");
	cr_assert_eq(fixture_sql_int("SELECT max(id) FROM bodies"), old);

	cr_assert_eq(check(0), 1, "only the old one is an orphan");
	cr_assert_eq(sbx_admin_purge(fixture_db, (int64_t)now + 1,
				     (int64_t)now -
				     SBX_BODY_UNREFERENCED_GRACE_SECS, &res),
		     0, "%s", fixture_error());
	cr_assert_eq(res.bodies_freed, 1);
	cr_assert_eq(fixture_sql_int("SELECT max(id) FROM bodies"), young,
		     "the old one is freed, the young one kept");
	cr_assert_eq(check(0), 0);
	/* a later purge (here: a cutoff past its time) frees it too */
	cr_assert_eq(sbx_admin_purge(fixture_db, (int64_t)now + 1,
				     (int64_t)now + 1, &res), 0, "%s",
		     fixture_error());
	cr_assert_eq(res.bodies_freed, 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 3);
	cr_assert_eq(check(SBX_CHECK_FULL), 0);
}

Test(admin, backup_is_a_consistent_copy_and_restore_brings_it_back)
{
	struct sbx_db *copy = NULL;
	struct sbx_stats st;
	char dest[4200];

	(void)populate();
	snprintf(dest, sizeof(dest), "%s", fixture_file("backup.sqlite"));
	cr_assert_eq(sbx_admin_backup(fixture_db, dest), 0, "%s",
		     fixture_error());
	/* refusing to overwrite */
	cr_assert_eq(sbx_admin_backup(fixture_db, dest), -1);

	cr_assert_eq(sbx_db_open(dest, NULL, &copy), 0);
	cr_assert_eq(sbx_admin_stats(copy, &st), 0);
	cr_assert_eq(st.messages, 3);
	sbx_db_close(&copy);

	raw_exec("DELETE FROM messages");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 0);
	cr_assert_eq(sbx_admin_restore(fixture_db, dest), 0, "%s",
		     fixture_error());
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 3);
	cr_assert_eq(check(SBX_CHECK_FULL), 0);
}

Test(admin, stats_count_messages_and_shared_bodies)
{
	int64_t box = populate(), body;
	struct sbx_stats st;

	/* a copy: a second message on the same body */
	fixture_begin();
	body = fixture_body("Subject: d\r\n\r\nw\r\n", 17, 1);
	(void)fixture_append(box, body, 0);
	(void)fixture_append(box, body, 0);
	fixture_commit();
	cr_assert_eq(sbx_admin_stats(fixture_db, &st), 0);
	cr_assert_eq(st.mailboxes, 1);
	cr_assert_eq(st.messages, 5);
	cr_assert_eq(st.bodies, 4);
	cr_assert_eq(st.bodies_shared, 1);
	cr_assert_eq(st.schema_version, sbx_db_code_schema_version());
	cr_assert_gt(st.file_bytes, 0);
}
