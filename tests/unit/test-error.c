/* SPDX-License-Identifier: MIT */
/* sbx-error.c: SQLite codes and errno values to enum sbx_error, and the
   messages, with failures injected for real. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-body.h"
#include "sbx-mailbox.h"
#include "fixture.h"

TestSuite(error, .init = fixture_db_setup, .fini = fixture_db_teardown);

struct mapping {
	int rc;
	int sys_errno;
	enum sbx_error expected;
};

ParameterizedTestParameters(error, sqlite_code_maps_to_sbx_error)
{
	static struct mapping mappings[] = {
		{ SQLITE_OK, 0, SBX_ERR_NONE },
		{ SQLITE_DONE, 0, SBX_ERR_NONE },
		{ SQLITE_BUSY, 0, SBX_ERR_BUSY },
		{ SQLITE_BUSY_SNAPSHOT, 0, SBX_ERR_BUSY },
		{ SQLITE_LOCKED, 0, SBX_ERR_BUSY },
		{ SQLITE_FULL, EDQUOT, SBX_ERR_NOQUOTA },
		{ SQLITE_FULL, 0, SBX_ERR_NOSPACE },
		{ SQLITE_FULL, ENOSPC, SBX_ERR_NOSPACE },
		{ SQLITE_IOERR_WRITE, EDQUOT, SBX_ERR_NOQUOTA },
		{ SQLITE_TOOBIG, 0, SBX_ERR_LIMIT },
		{ SQLITE_CANTOPEN, EACCES, SBX_ERR_PERM },
		{ SQLITE_CANTOPEN, ENOENT, SBX_ERR_IO },
		{ SQLITE_READONLY, 0, SBX_ERR_PERM },
		{ SQLITE_READONLY_DBMOVED, 0, SBX_ERR_PERM },
		{ SQLITE_PERM, 0, SBX_ERR_PERM },
		{ SQLITE_CORRUPT, 0, SBX_ERR_CORRUPT },
		{ SQLITE_CORRUPT_INDEX, 0, SBX_ERR_CORRUPT },
		{ SQLITE_NOTADB, 0, SBX_ERR_CORRUPT },
		{ SQLITE_IOERR, EIO, SBX_ERR_IO },
		{ SQLITE_IOERR_FSYNC, EIO, SBX_ERR_IO },
		{ SQLITE_NOMEM, 0, SBX_ERR_NOMEM },
		{ SQLITE_CONSTRAINT_UNIQUE, 0, SBX_ERR_EXISTS },
		{ SQLITE_CONSTRAINT_PRIMARYKEY, 0, SBX_ERR_EXISTS },
		{ SQLITE_CONSTRAINT_CHECK, 0, SBX_ERR_INTERNAL },
		{ SQLITE_CONSTRAINT_TRIGGER, 0, SBX_ERR_INTERNAL },
		{ SQLITE_CONSTRAINT_COMMITHOOK, 0, SBX_ERR_INTERNAL },
		{ SQLITE_ERROR, 0, SBX_ERR_INTERNAL },
		{ SQLITE_MISUSE, 0, SBX_ERR_INTERNAL },
		{ SQLITE_RANGE, 0, SBX_ERR_INTERNAL },
	};

	return cr_make_param_array(struct mapping, mappings,
				   sizeof(mappings) / sizeof(mappings[0]));
}

ParameterizedTest(struct mapping *m, error, sqlite_code_maps_to_sbx_error)
{
	cr_assert_eq(sbx_error_from_sqlite(m->rc, m->sys_errno), m->expected,
		     "%s with errno %d", sbx_error_code_name(m->rc),
		     m->sys_errno);
}

Test(error, code_names_are_the_macro_names)
{
	cr_assert_str_eq(sbx_error_code_name(SQLITE_CONSTRAINT_UNIQUE),
			 "SQLITE_CONSTRAINT_UNIQUE");
	cr_assert_str_eq(sbx_error_code_name(SQLITE_BUSY), "SQLITE_BUSY");
	/* An unknown extended code falls back to its primary code. */
	cr_assert_str_eq(sbx_error_code_name(SQLITE_IOERR | (99 << 8)),
			 "SQLITE_IOERR");
}

Test(error, unique_violation_says_what_failed_and_the_code)
{
	struct sbx_mailbox_create set = { .name = "a", .has_guid = true };
	const char *msg;

	memset(set.guid, 0x42, sizeof(set.guid));
	fixture_begin();
	cr_assert_eq(sbx_mailbox_create(fixture_db, &set, NULL), 0);
	set.name = "b";
	cr_assert_eq(sbx_mailbox_create(fixture_db, &set, NULL), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_EXISTS);
	cr_assert_str_eq(msg, "create mailbox 'b': UNIQUE constraint failed: "
			 "mailboxes.guid (SQLITE_CONSTRAINT_UNIQUE)");
	sbx_tx_rollback(fixture_db);
}

Test(error, max_page_count_full_maps_to_nospace)
{
	static char data[4 * SBX_BODY_CHUNK_SIZE];
	struct sbx_body_writer *writer;
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);
	const char *msg;
	int64_t id;

	/* Connection-local: the file may not grow past what it has. */
	cr_assert_eq(sqlite3_exec(raw, "PRAGMA max_page_count = 1", NULL,
				  NULL, NULL), SQLITE_OK);
	fixture_begin();
	cr_assert_eq(sbx_body_writer_open(fixture_db, NULL, sizeof(data),
					  sizeof(data), &writer), 0);
	cr_assert_eq(sbx_body_writer_write(writer, data, sizeof(data)), -1);
	cr_assert_eq(sbx_body_writer_close(&writer, &id), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_NOSPACE,
		     "%s", msg);
	cr_assert(strstr(msg, "SQLITE_FULL") != NULL, "%s", msg);
	sbx_tx_rollback(fixture_db);
	cr_assert(!sbx_tx_is_active(fixture_db));
}

Test(error, overwritten_header_maps_to_corrupt)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;
	sqlite3 *conn;
	const char *msg;
	int fd;

	sbx_db_close(&fixture_db);
	/* Move everything from the WAL into the file first: page 1 in the
	   WAL would hide the damage. */
	cr_assert_eq(sqlite3_open(fixture_path, &conn), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(conn, "PRAGMA wal_checkpoint(TRUNCATE)",
				  NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(conn);
	fd = open(fixture_path, O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "this is no db!!!", 16, 0), 16);
	close(fd);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_CORRUPT, "%s", msg);
	cr_assert(strstr(msg, "SQLITE_NOTADB") != NULL, "%s", msg);
	sbx_db_close(&db);
}

Test(error, errno_maps_to_sbx_error)
{
	cr_assert_eq(sbx_error_from_errno(EACCES), SBX_ERR_PERM);
	cr_assert_eq(sbx_error_from_errno(EROFS), SBX_ERR_PERM);
	cr_assert_eq(sbx_error_from_errno(EDQUOT), SBX_ERR_NOQUOTA);
	cr_assert_eq(sbx_error_from_errno(ENOSPC), SBX_ERR_NOSPACE);
	cr_assert_eq(sbx_error_from_errno(ENOMEM), SBX_ERR_NOMEM);
	cr_assert_eq(sbx_error_from_errno(EIO), SBX_ERR_IO);
}

Test(error, last_error_of_a_null_handle_is_nomem)
{
	const char *msg;

	cr_assert_eq(sbx_db_last_error(NULL, &msg), SBX_ERR_NOMEM);
	cr_assert_str_eq(msg, "out of memory");
}
