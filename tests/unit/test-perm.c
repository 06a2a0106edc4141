/* SPDX-License-Identifier: MIT */
/* Who may open a database (its owner, and only a sqlbox database), and
   the modes of the files a new one gets. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-db.h"
#include "fixture.h"

TestSuite(perm, .init = fixture_db_setup, .fini = fixture_db_teardown);

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return st.st_mode & 07777;
}

Test(perm, new_database_and_lock_file_are_private_whatever_the_umask)
{
	struct sbx_db_settings set = fixture_settings();
	char path[4096], lock[4200];
	struct sbx_db *db;
	mode_t old = umask(022);

	snprintf(path, sizeof(path), "%s", fixture_file("new.sqlite"));
	snprintf(lock, sizeof(lock), "%s.lock", path);
	cr_assert_eq(sbx_db_open(path, &set, &db), 0);
	umask(old);
	cr_assert_eq(mode_of(path), 0600, "%o", mode_of(path));
	cr_assert_eq(mode_of(lock), 0600, "%o", mode_of(lock));
	sbx_db_close(&db);
}

Test(perm, database_of_another_user_is_refused_untouched)
{
	struct sbx_db_settings set = fixture_settings();
	struct sbx_db *db;
	struct stat before, after;
	const char *msg;

	if (geteuid() != 0)
		cr_skip_test("needs root to give the file to another user");
	sbx_db_close(&fixture_db);
	cr_assert_eq(chown(fixture_path, 65534, 65534), 0);
	cr_assert_eq(stat(fixture_path, &before), 0);
	cr_assert_eq(sbx_db_open(fixture_path, &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_PERM, "%s", msg);
	cr_assert(strstr(msg, fixture_path) != NULL, "%s", msg);
	cr_assert(strstr(msg, "owned by uid 65534") != NULL, "%s", msg);
	sbx_db_close(&db);
	cr_assert_eq(stat(fixture_path, &after), 0);
	cr_assert_eq(after.st_size, before.st_size);
	cr_assert_eq(after.st_mtime, before.st_mtime);
}

Test(perm, database_of_another_program_is_refused_untouched)
{
	struct sbx_db_settings set = fixture_settings();
	const char *path = fixture_file("other.sqlite");
	struct stat before, after;
	struct sbx_db *db;
	sqlite3 *other;
	const char *msg;

	cr_assert_eq(sqlite3_open(path, &other), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(other, "CREATE TABLE notes(t TEXT);"
				  "INSERT INTO notes VALUES('mine');",
				  NULL, NULL, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_close(other), SQLITE_OK);
	cr_assert_eq(stat(path, &before), 0);
	cr_assert_eq(sbx_db_open(path, &set, &db), -1);
	cr_assert_eq(sbx_db_last_error(db, &msg), SBX_ERR_CORRUPT, "%s", msg);
	cr_assert(strstr(msg, "not a sqlbox database") != NULL, "%s", msg);
	sbx_db_close(&db);
	cr_assert_eq(stat(path, &after), 0);
	cr_assert_eq(after.st_size, before.st_size);
	cr_assert_eq(after.st_mtime, before.st_mtime);
}
