/* SPDX-License-Identifier: MIT */
/* sbx-submit.c and the operator database's schema: reservations that
   never overshoot, releases, sender identities, the audit log; and the
   Sent dedup lookup of sbx-msg.c. */
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-stmt.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "sbx-submit.h"
#include "fixture.h"

static struct sbx_db *policy;

static void policy_setup(void)
{
	struct sbx_db_settings set = fixture_settings();

	fixture_db_setup();
	set.kind = SBX_DB_KIND_POLICY;
	cr_assert_eq(sbx_db_open(fixture_file("policy.sqlite"), &set,
				 &policy), 0);
}

static void policy_teardown(void)
{
	sbx_db_close(&policy);
	fixture_db_teardown();
}

static const char *policy_error(void)
{
	const char *msg;

	(void)sbx_db_last_error(policy, &msg);
	return msg;
}

TestSuite(submit, .init = policy_setup, .fini = policy_teardown);

Test(submit, every_policy_statement_prepares_with_its_parameter_count)
{
	sqlite3_stmt *stmt;
	unsigned int i;

	for (i = SBX_STMT_POLICY_FIRST; i < SBX_STMT_COUNT; i++) {
		enum sbx_stmt_id id = (enum sbx_stmt_id)i;

		cr_assert_eq(sbx_stmt_get(policy, id, &stmt), 0, "%s: %s",
			     sbx_stmt_name(id), policy_error());
		cr_assert_eq(sqlite3_bind_parameter_count(stmt),
			     sbx_stmt_param_count(id), "%s", sbx_stmt_name(id));
		sbx_stmt_put(policy, stmt);
	}
}

Test(submit, the_policy_schema_is_not_a_mail_database)
{
	struct sbx_db *db;
	const char *msg;

	/* a mail database refuses the file: another application_id */
	cr_assert_eq(sbx_db_open(fixture_file("policy.sqlite"), NULL, &db),
		     0, "same path: the open handle is shared");
	sbx_db_close(&db);
	sbx_db_close(&policy);
	cr_assert_eq(sbx_db_open(fixture_file("policy.sqlite"), NULL, &db),
		     -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_CORRUPT, "%s", msg);
	sbx_db_close(&db);
}

Test(submit, message_reservations_stop_at_the_hourly_limit)
{
	unsigned int count;
	int64_t b = 1000000;

	cr_assert_eq(sbx_submit_reserve_message(policy, "u", b, 2, &count), 1);
	cr_assert_eq(count, 0);
	cr_assert_eq(sbx_submit_reserve_message(policy, "u", b + 30, 2,
						&count), 1);
	cr_assert_eq(sbx_submit_reserve_message(policy, "u", b + 59, 2,
						&count), 0, "limit reached");
	cr_assert_eq(count, 2);
	/* another user has a limit of their own */
	cr_assert_eq(sbx_submit_reserve_message(policy, "v", b + 59, 2, NULL),
		     1);
	/* the first reservation leaves the hour */
	cr_assert_eq(sbx_submit_reserve_message(policy, "u", b + 60, 2,
						&count), 1);
	cr_assert_eq(count, 1);
}

Test(submit, a_released_reservation_can_be_used_again)
{
	unsigned int count;
	int64_t b = 2000000;

	cr_assert_eq(sbx_submit_reserve_recipient(policy, "u", b, 2, NULL), 1);
	cr_assert_eq(sbx_submit_reserve_recipient(policy, "u", b, 2, NULL), 1);
	cr_assert_eq(sbx_submit_reserve_recipient(policy, "u", b, 2, NULL), 0);
	cr_assert_eq(sbx_submit_release(policy, "u", b, 0, 1, 0), 0);
	cr_assert_eq(sbx_submit_reserve_recipient(policy, "u", b, 2, NULL), 1);
	/* never below zero, whatever is released */
	cr_assert_eq(sbx_submit_release(policy, "u", b, 5, 5, 100), 0,
		     "%s", policy_error());
	cr_assert_eq(sbx_submit_reserve_recipient(policy, "u", b, 2, &count),
		     1);
	cr_assert_eq(count, 0);
}

Test(submit, a_locked_database_is_busy_not_a_pass)
{
	char lock[1100];
	const char *msg;
	int fd;

	snprintf(lock, sizeof(lock), "%s.lock", fixture_file("policy.sqlite"));
	fd = open(lock, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(flock(fd, LOCK_EX), 0);
	cr_assert_eq(sbx_submit_reserve_message(policy, "u", 1, 10, NULL), -1);
	cr_assert_eq(sbx_db_last_error(policy, &msg), SBX_ERR_BUSY, "%s", msg);
	(void)close(fd);
	cr_assert_eq(sbx_submit_reserve_message(policy, "u", 1, 10, NULL), 1);
}

Test(submit, sender_identities_match_address_or_domain_without_case)
{
	sqlite3 *raw = sbx_db_get_sqlite(policy);

	cr_assert_eq(sbx_tx_begin(policy, SBX_TX_WRITE), 0);
	cr_assert_eq(sqlite3_exec(raw, "INSERT INTO sender_identity VALUES"
				  " ('u', 'Alias@Example.Test'),"
				  " ('u', '@team.example.test')",
				  NULL, NULL, NULL), SQLITE_OK);
	cr_assert_eq(sbx_tx_commit(policy), 0);
	cr_assert_eq(sbx_submit_sender_lookup(policy, "u",
					      "alias@example.test"), 1);
	cr_assert_eq(sbx_submit_sender_lookup(policy, "u",
					      "x@TEAM.example.test"), 1);
	cr_assert_eq(sbx_submit_sender_lookup(policy, "u",
					      "x@example.test"), 0);
	cr_assert_eq(sbx_submit_sender_lookup(policy, "v",
					      "alias@example.test"), 0);
}

Test(submit, audit_rows_are_written_and_pruned_by_age)
{
	struct sbx_submit_audit a = {
		.ts_msecs = 1000, .username = "u", .tls = true,
		.envelope_from = "u@example.test", .recipients = "a@b,c@d",
		.rcpt_count = 2, .size = 10, .message_id = "<m@x>",
		.status_code = 250, .enhanced_code = "2.0.0", .rule = "ok",
		.sent = "saved",
	};

	cr_assert_eq(sbx_submit_audit_add(policy, &a, 0), 0, "%s",
		     policy_error());
	a.ts_msecs = 5000;
	a.size = -1;
	cr_assert_eq(sbx_submit_audit_add(policy, &a, 2000), 0);
	sbx_db_close(&policy);
	/* fixture_sql_int reads the mail database: open the policy one */
	{
		sqlite3 *conn;
		sqlite3_stmt *stmt;

		cr_assert_eq(sqlite3_open_v2(fixture_file("policy.sqlite"),
					     &conn, SQLITE_OPEN_READONLY,
					     NULL), SQLITE_OK);
		cr_assert_eq(sqlite3_prepare_v2(conn,
			"SELECT count(*), min(ts_ms), max(size IS NULL)"
			" FROM audit", -1, &stmt, NULL), SQLITE_OK);
		cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
		cr_assert_eq(sqlite3_column_int(stmt, 0), 1, "pruned");
		cr_assert_eq(sqlite3_column_int(stmt, 1), 5000);
		cr_assert_eq(sqlite3_column_int(stmt, 2), 1);
		sqlite3_finalize(stmt);
		sqlite3_close(conn);
	}
}

TestSuite(dedup, .init = fixture_db_setup, .fini = fixture_db_teardown);

Test(dedup, message_id_lookup_honours_mailbox_and_window)
{
	int64_t sent = fixture_mailbox("Sent"), inbox = fixture_mailbox("INBOX");
	struct sbx_msg_new msg = {
		.guid = "g", .modseq = 1, .received_date = 1, .save_date = 1000,
		.message_id = "<a@x>",
	};
	uint32_t uid = 0;

	fixture_begin();
	msg.body_id = fixture_body("x", 1, 1);
	msg.uid = 1;
	cr_assert_eq(sbx_msg_append(fixture_db, sent, &msg), 0, "%s",
		     fixture_error());
	msg.uid = 1;
	msg.save_date = 2000;
	cr_assert_eq(sbx_msg_append(fixture_db, inbox, &msg), 0);
	fixture_commit();

	cr_assert_eq(sbx_msg_lookup_message_id(fixture_db, sent, "<a@x>", 900,
					       &uid), 1);
	cr_assert_eq(uid, 1);
	cr_assert_eq(sbx_msg_lookup_message_id(fixture_db, sent, "<a@x>",
					       1001, &uid), 0, "too old");
	cr_assert_eq(sbx_msg_lookup_message_id(fixture_db, sent, "<b@x>", 0,
					       &uid), 0);
}
