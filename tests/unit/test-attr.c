/* SPDX-License-Identifier: MIT */
/* Mailbox attributes (storage/sbx-attr.c). */

#include <criterion/criterion.h>
#include <stdbool.h>
#include <string.h>

#include "fixture.h"
#include "sbx-attr.h"
#include "sbx-mailbox.h"

TestSuite(attr, .init = fixture_db_setup, .fini = fixture_db_teardown);

static void set_attr(int64_t mailbox_id, enum sbx_attr_type type,
		     const char *key, const char *value, int64_t when)
{
	fixture_begin();
	cr_assert_eq(sbx_attr_set(fixture_db, mailbox_id, type, key, value,
				  value == NULL ? 0 : strlen(value), when), 0,
		     "%s", fixture_error());
	fixture_commit();
}

Test(attr, set_get_replace_and_unset)
{
	int64_t box = fixture_mailbox("INBOX");
	const void *value;
	size_t size;
	int64_t when;

	set_attr(box, SBX_ATTR_PRIVATE, "comment", "first", 100);
	set_attr(box, SBX_ATTR_PRIVATE, "comment", "second", 200);
	cr_assert_eq(sbx_attr_get(fixture_db, box, SBX_ATTR_PRIVATE, "comment",
				  &value, &size, &when), 1);
	cr_assert_eq(size, 6);
	cr_assert(memcmp(value, "second", 6) == 0);
	cr_assert_eq(when, 200);
	/* types are separate name spaces */
	cr_assert_eq(sbx_attr_get(fixture_db, box, SBX_ATTR_SHARED, "comment",
				  &value, &size, NULL), 0);

	set_attr(box, SBX_ATTR_PRIVATE, "comment", NULL, 300);
	cr_assert_eq(sbx_attr_get(fixture_db, box, SBX_ATTR_PRIVATE, "comment",
				  &value, &size, NULL), 0);
	/* unsetting a missing key is not an error */
	set_attr(box, SBX_ATTR_PRIVATE, "comment", NULL, 300);
}

Test(attr, empty_value_is_kept_and_differs_from_missing)
{
	int64_t box = fixture_mailbox("INBOX");
	const void *value;
	size_t size = 99;

	set_attr(box, SBX_ATTR_SHARED, "empty", "", 1);
	cr_assert_eq(sbx_attr_get(fixture_db, box, SBX_ATTR_SHARED, "empty",
				  &value, &size, NULL), 1);
	cr_assert_eq(size, 0);
}

Test(attr, set_needs_a_write_transaction_and_a_key)
{
	int64_t box = fixture_mailbox("INBOX");
	const char *msg;

	cr_assert_eq(sbx_attr_set(fixture_db, box, SBX_ATTR_PRIVATE, "k", "v",
				  1, 1), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_INTERNAL);
	fixture_begin();
	cr_assert_eq(sbx_attr_set(fixture_db, box, SBX_ATTR_PRIVATE, "", "v",
				  1, 1), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_INVALID);
	fixture_commit();
}

Test(attr, iteration_filters_by_prefix_in_key_order)
{
	int64_t box = fixture_mailbox("INBOX"), other = fixture_mailbox("Other");
	static const char *const expected[] = {
		"vendor/a", "vendor/b/c", "vendor/z",
	};
	struct sbx_attr_iter *iter;
	const char *key;
	unsigned int n = 0;
	int ret;

	set_attr(box, SBX_ATTR_PRIVATE, "vendor/z", "1", 1);
	set_attr(box, SBX_ATTR_PRIVATE, "vendor/a", "1", 1);
	set_attr(box, SBX_ATTR_PRIVATE, "comment", "1", 1);
	set_attr(box, SBX_ATTR_PRIVATE, "vendor/b/c", "1", 1);
	set_attr(box, SBX_ATTR_SHARED, "vendor/shared", "1", 1);
	set_attr(other, SBX_ATTR_PRIVATE, "vendor/other", "1", 1);

	cr_assert_eq(sbx_attr_iter_init(fixture_db, box, SBX_ATTR_PRIVATE,
					"vendor/", &iter), 0);
	while ((ret = sbx_attr_iter_next(iter, &key)) > 0) {
		cr_assert_lt(n, 3, "unexpected key %s", key);
		cr_assert_str_eq(key, expected[n]);
		n++;
	}
	cr_assert_eq(ret, 0);
	cr_assert_eq(sbx_attr_iter_deinit(&iter), 0);
	cr_assert_eq(n, 3);
	cr_assert_null(iter);
}

Test(attr, deleted_mailbox_takes_its_attributes_renamed_keeps_them)
{
	int64_t box = fixture_mailbox("Old");
	const void *value;
	size_t size;

	set_attr(box, SBX_ATTR_PRIVATE, "comment", "kept", 1);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_rename(fixture_db, "Old", "New", true), 0);
	fixture_commit();
	cr_assert_eq(sbx_attr_get(fixture_db, box, SBX_ATTR_PRIVATE, "comment",
				  &value, &size, NULL), 1);

	fixture_begin();
	cr_assert_eq(sbx_mailbox_delete(fixture_db, "New", NULL), 0);
	fixture_commit();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM attributes"), 0);
}

Test(attr, names_with_quotes_are_just_keys)
{
	int64_t box = fixture_mailbox("INBOX");
	const char *key = "x'); DROP TABLE attributes; --";
	const void *value;
	size_t size;

	set_attr(box, SBX_ATTR_SHARED, key, "v", 1);
	cr_assert_eq(sbx_attr_get(fixture_db, box, SBX_ATTR_SHARED, key,
				  &value, &size, NULL), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM attributes"), 1);
}
