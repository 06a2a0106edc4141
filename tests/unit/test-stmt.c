/* SPDX-License-Identifier: MIT */
/* sbx-stmt.c and sbx-sql.def: every statement prepares, the cache hands
   each one to one user at a time, and putting it back ends its read. */
#include <string.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-stmt.h"
#include "sbx-mailbox.h"
#include "fixture.h"

TestSuite(stmt, .init = fixture_db_setup, .fini = fixture_db_teardown);

Test(stmt, every_statement_prepares_with_its_declared_parameter_count)
{
	sqlite3_stmt *stmt;
	unsigned int i;

	for (i = 0; i < SBX_STMT_POLICY_FIRST; i++) {
		enum sbx_stmt_id id = (enum sbx_stmt_id)i;

		cr_assert_eq(sbx_stmt_get(fixture_db, id, &stmt), 0,
			     "%s: %s", sbx_stmt_name(id), fixture_error());
		cr_assert_eq(sqlite3_bind_parameter_count(stmt),
			     sbx_stmt_param_count(id), "%s declares %d",
			     sbx_stmt_name(id), sbx_stmt_param_count(id));
		cr_assert_str_eq(sqlite3_sql(stmt), sbx_stmt_sql(id));
		sbx_stmt_put(fixture_db, stmt);
	}
}

Test(stmt, the_same_statement_is_prepared_once)
{
	sqlite3_stmt *first, *second;

	cr_assert_eq(sbx_stmt_get(fixture_db, SBX_STMT_MAILBOX_BY_NAME,
				  &first), 0);
	sbx_stmt_put(fixture_db, first);
	cr_assert_eq(sbx_stmt_get(fixture_db, SBX_STMT_MAILBOX_BY_NAME,
				  &second), 0);
	cr_assert_eq(first, second);
	sbx_stmt_put(fixture_db, second);
}

Test(stmt, a_statement_in_use_is_not_handed_out_twice)
{
	struct sbx_mailbox_iter *iter, *nested;
	sqlite3_stmt *stmt;
	const char *msg;

	cr_assert_eq(sbx_mailbox_iter_init(fixture_db, &iter), 0);
	cr_assert_eq(sbx_mailbox_iter_init(fixture_db, &nested), -1,
		     "nested iteration of the same kind");
	cr_assert_null(nested);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_INTERNAL);
	cr_assert(strstr(msg, "MAILBOX_ITER") != NULL, "%s", msg);
	/* Other statements are free meanwhile. */
	cr_assert_eq(sbx_stmt_get(fixture_db, SBX_STMT_MAILBOX_BY_NAME,
				  &stmt), 0);
	sbx_stmt_put(fixture_db, stmt);
	cr_assert_eq(sbx_mailbox_iter_deinit(&iter), 0);
	cr_assert_eq(sbx_mailbox_iter_init(fixture_db, &iter), 0);
	cr_assert_eq(sbx_mailbox_iter_deinit(&iter), 0);
}

Test(stmt, put_ends_the_read_and_clears_bindings)
{
	sqlite3_stmt *stmt;

	fixture_mailbox("INBOX");
	cr_assert_eq(sbx_stmt_get(fixture_db, SBX_STMT_MAILBOX_BY_NAME,
				  &stmt), 0);
	cr_assert_eq(sbx_bind_text(fixture_db, stmt, 1, "INBOX"), 0);
	cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
	cr_assert(sqlite3_stmt_busy(stmt));
	sbx_stmt_put(fixture_db, stmt);
	cr_assert(!sqlite3_stmt_busy(stmt));
	cr_assert_eq(sbx_stmt_get(fixture_db, SBX_STMT_MAILBOX_BY_NAME,
				  &stmt), 0);
	cr_assert_eq(sqlite3_step(stmt), SQLITE_DONE, "name is NULL again");
	sbx_stmt_put(fixture_db, stmt);
}

Test(stmt, no_statement_is_left_running_after_a_lookup)
{
	struct sbx_mailbox mb;
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);
	sqlite3_stmt *stmt = NULL;

	fixture_mailbox("INBOX");
	cr_assert_eq(sbx_mailbox_lookup(fixture_db, "INBOX", &mb), 1);
	cr_assert_str_eq(mb.name, "INBOX");
	while ((stmt = sqlite3_next_stmt(raw, stmt)) != NULL)
		cr_assert(!sqlite3_stmt_busy(stmt), "%s", sqlite3_sql(stmt));
}
