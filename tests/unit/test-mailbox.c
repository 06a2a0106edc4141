/* SPDX-License-Identifier: MIT */
/* sbx-mailbox.c: folders, their hierarchy, UIDVALIDITY, MODSEQ
   allocation and subscriptions. */
#include <string.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fixture.h"

TestSuite(mailbox, .init = fixture_db_setup, .fini = fixture_db_teardown);
TestSuite(subscription, .init = fixture_db_setup,
	  .fini = fixture_db_teardown);

/* The mailbox called name, which must exist. */
static struct sbx_mailbox get_mailbox(const char *name)
{
	struct sbx_mailbox mb;

	cr_assert_eq(sbx_mailbox_lookup(fixture_db, name, &mb), 1,
		     "lookup %s: %s", name, fixture_error());
	return mb;
}

static int mailbox_exists(const char *name)
{
	struct sbx_mailbox mb;
	int ret = sbx_mailbox_lookup(fixture_db, name, &mb);

	cr_assert_geq(ret, 0, "%s", fixture_error());
	return ret;
}

/* create() in a transaction of its own; returns its result. */
static int try_create(const struct sbx_mailbox_create *set, int64_t *id_r)
{
	int ret;

	fixture_begin();
	ret = sbx_mailbox_create(fixture_db, set, id_r);
	if (ret == 0)
		fixture_commit();
	else
		sbx_tx_rollback(fixture_db);
	return ret;
}

static int try_rename(const char *oldname, const char *newname, bool children)
{
	int ret;

	fixture_begin();
	ret = sbx_mailbox_rename(fixture_db, oldname, newname, children);
	if (ret == 0)
		fixture_commit();
	else
		sbx_tx_rollback(fixture_db);
	return ret;
}

static int try_delete(const char *name, bool *kept_r)
{
	int ret;

	fixture_begin();
	ret = sbx_mailbox_delete(fixture_db, name, kept_r);
	if (ret == 0)
		fixture_commit();
	else
		sbx_tx_rollback(fixture_db);
	return ret;
}

static enum sbx_error last_error(void)
{
	const char *msg;

	return sbx_db_last_error(fixture_db, &msg);
}

Test(mailbox, created_mailbox_is_found_by_name_id_and_guid)
{
	struct sbx_mailbox mb, by_id, by_guid;
	int64_t id = fixture_mailbox("INBOX");

	mb = get_mailbox("INBOX");
	cr_assert_eq(mb.id, id);
	cr_assert_str_eq(mb.name, "INBOX");
	cr_assert(!mb.noselect);
	cr_assert_gt(mb.uidvalidity, 0);
	cr_assert_eq(mb.uidnext, 1);
	cr_assert_eq(mb.messages, 0);
	cr_assert_gt(mb.created, 0);
	cr_assert_eq(sbx_mailbox_lookup_id(fixture_db, id, &by_id), 1);
	cr_assert_str_eq(by_id.name, "INBOX");
	cr_assert_eq(sbx_mailbox_lookup_guid(fixture_db, mb.guid, &by_guid),
		     1);
	cr_assert_eq(by_guid.id, id);
	cr_assert_eq(sbx_mailbox_lookup(fixture_db, "inbox", &mb), 0,
		     "names are exact");
	cr_assert_eq(sbx_mailbox_lookup_id(fixture_db, id + 100, &mb), 0);
}

Test(mailbox, missing_parents_are_created_as_noselect)
{
	struct sbx_mailbox a, ab, abc;

	fixture_mailbox("a/b/c");
	a = get_mailbox("a");
	ab = get_mailbox("a/b");
	abc = get_mailbox("a/b/c");
	cr_assert(a.noselect && ab.noselect && !abc.noselect);
	cr_assert_gt(a.uidvalidity, 0);
	cr_assert_neq(a.uidvalidity, ab.uidvalidity);
	cr_assert(memcmp(a.guid, ab.guid, sizeof(a.guid)) != 0);
	cr_assert_eq(sbx_mailbox_has_children(fixture_db, "a"), 1);
	cr_assert_eq(sbx_mailbox_has_children(fixture_db, "a/b/c"), 0);
}

Test(mailbox, noselect_row_becomes_selectable_with_fresh_uidvalidity)
{
	struct sbx_mailbox_create set = { .name = "a" };
	struct sbx_mailbox before, after;
	int64_t id;

	fixture_mailbox("a/b");
	before = get_mailbox("a");
	cr_assert(before.noselect);
	cr_assert_eq(try_create(&set, &id), 0, "%s", fixture_error());
	after = get_mailbox("a");
	cr_assert_eq(id, before.id);
	cr_assert(!after.noselect);
	cr_assert_neq(after.uidvalidity, before.uidvalidity);
	cr_assert_gt(after.uidvalidity, get_mailbox("a/b").uidvalidity);
}

Test(mailbox, creating_an_existing_name_fails_with_exists)
{
	struct sbx_mailbox_create set = { .name = "INBOX" };
	struct sbx_mailbox_create noselect = { .name = "a", .noselect = true };

	fixture_mailbox("INBOX");
	fixture_mailbox("a/b");
	cr_assert_eq(try_create(&set, NULL), -1);
	cr_assert_eq(last_error(), SBX_ERR_EXISTS);
	cr_assert_eq(try_create(&noselect, NULL), -1,
		     "a \\Noselect name exists as \\Noselect");
	cr_assert_eq(last_error(), SBX_ERR_EXISTS);
}

Test(mailbox, empty_names_and_empty_components_are_invalid)
{
	static const char *const names[] = {
		"", "/", "/a", "a/", "a//b", "a/b/",
	};
	struct sbx_mailbox_create set = { .name = NULL };
	size_t i;

	cr_assert_eq(try_create(&set, NULL), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		set.name = names[i];
		cr_assert_eq(try_create(&set, NULL), -1, "'%s'", names[i]);
		cr_assert_eq(last_error(), SBX_ERR_INVALID, "'%s'", names[i]);
	}
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"), 0);
}

Test(mailbox, uidvalidity_differs_after_delete_and_recreate_in_same_second)
{
	uint32_t seen[5];
	int i, j;

	for (i = 0; i < 5; i++) {
		fixture_mailbox("Trash");
		seen[i] = get_mailbox("Trash").uidvalidity;
		cr_assert_eq(try_delete("Trash", NULL), 0, "%s",
			     fixture_error());
		for (j = 0; j < i; j++)
			cr_assert_neq(seen[i], seen[j]);
	}
}

Test(mailbox, given_uidvalidity_guid_and_minimums_are_kept)
{
	struct sbx_mailbox_create set = {
		.name = "Synced", .has_guid = true, .uidvalidity = 4000000000U,
		.min_uidnext = 77, .min_highestmodseq = 5000,
	};
	struct sbx_mailbox mb;

	memset(set.guid, 0xab, sizeof(set.guid));
	cr_assert_eq(try_create(&set, NULL), 0, "%s", fixture_error());
	mb = get_mailbox("Synced");
	cr_assert_eq(mb.uidvalidity, 4000000000U);
	cr_assert_arr_eq(mb.guid, set.guid, sizeof(set.guid));
	cr_assert_eq(mb.uidnext, 77);
	cr_assert_eq(mb.highestmodseq, 5000);
	/* Later allocations stay above a chosen value. */
	fixture_mailbox("Next");
	cr_assert_gt(get_mailbox("Next").uidvalidity, 4000000000U);
}

Test(mailbox, update_replaces_ids_and_only_raises_counters)
{
	struct sbx_mailbox_update update = {
		.uidvalidity = 1234, .min_uidnext = 50,
		.min_highestmodseq = 10, .min_first_recent_uid = 3,
	};
	struct sbx_mailbox mb;
	int64_t id = fixture_mailbox("INBOX");

	update.has_guid = true;
	memset(update.guid, 7, sizeof(update.guid));
	fixture_begin();
	cr_assert_eq(sbx_mailbox_update(fixture_db, id, &update), 0, "%s",
		     fixture_error());
	update.has_guid = false;
	update.uidvalidity = 0;
	update.min_uidnext = 5;
	cr_assert_eq(sbx_mailbox_update(fixture_db, id, &update), 0);
	cr_assert_eq(sbx_mailbox_update(fixture_db, id + 1, &update), -1);
	cr_assert_eq(last_error(), SBX_ERR_NOTFOUND);
	fixture_commit();
	mb = get_mailbox("INBOX");
	cr_assert_eq(mb.uidvalidity, 1234);
	cr_assert_arr_eq(mb.guid, update.guid, sizeof(update.guid));
	cr_assert_eq(mb.uidnext, 50, "min_uidnext only raises");
	cr_assert_eq(mb.first_recent_uid, 3);
}

Test(mailbox, rename_moves_the_whole_subtree)
{
	struct sbx_mailbox before, after;

	fixture_mailbox("a/x/y");
	before = get_mailbox("a/x");
	fixture_mailbox("a");
	fixture_mailbox("ab");
	fixture_mailbox("a0");
	cr_assert_eq(try_rename("a", "b", true), 0, "%s", fixture_error());
	cr_assert_eq(mailbox_exists("a"), 0);
	cr_assert_eq(mailbox_exists("a/x"), 0);
	cr_assert_eq(mailbox_exists("b"), 1);
	cr_assert_eq(mailbox_exists("b/x/y"), 1);
	after = get_mailbox("b/x");
	cr_assert_eq(after.id, before.id);
	cr_assert_eq(after.uidvalidity, before.uidvalidity);
	cr_assert_arr_eq(after.guid, before.guid, sizeof(before.guid));
	cr_assert_eq(mailbox_exists("ab"), 1, "a sibling stays");
	cr_assert_eq(mailbox_exists("a0"), 1, "'a0' sorts after 'a/'");
}

Test(mailbox, rename_to_a_name_starting_with_the_old_one)
{
	fixture_mailbox("a/x");
	fixture_mailbox("a/x/deep");
	fixture_mailbox("a/y");
	cr_assert_eq(try_rename("a", "a2", true), 0, "%s", fixture_error());
	cr_assert_eq(mailbox_exists("a2"), 1);
	cr_assert_eq(mailbox_exists("a2/x"), 1);
	cr_assert_eq(mailbox_exists("a2/x/deep"), 1);
	cr_assert_eq(mailbox_exists("a2/y"), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"), 4);
	/* and back, into a shorter name */
	cr_assert_eq(try_rename("a2", "a", true), 0, "%s", fixture_error());
	cr_assert_eq(mailbox_exists("a/x/deep"), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"), 4);
}

Test(mailbox, rename_onto_an_existing_name_fails_and_changes_nothing)
{
	const char *msg;

	fixture_mailbox("a/x");
	fixture_mailbox("b");
	cr_assert_eq(try_rename("a", "b", true), -1);
	cr_assert_eq(sbx_db_last_error(fixture_db, &msg), SBX_ERR_EXISTS);
	cr_assert(strstr(msg, "'b' exists") != NULL, "%s", msg);
	cr_assert_eq(try_rename("a/x", "b", false), -1);
	cr_assert_eq(last_error(), SBX_ERR_EXISTS);
	cr_assert_eq(try_rename("b", "b", true), -1);
	cr_assert_eq(last_error(), SBX_ERR_EXISTS);
	cr_assert_eq(mailbox_exists("a"), 1);
	cr_assert_eq(mailbox_exists("a/x"), 1);
	cr_assert_eq(mailbox_exists("b/x"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"), 3);
}

Test(mailbox, rename_checks_names)
{
	fixture_mailbox("a");
	cr_assert_eq(try_rename("missing", "b", true), -1);
	cr_assert_eq(last_error(), SBX_ERR_NOTFOUND);
	cr_assert_eq(try_rename("a", "a/b", true), -1, "into itself");
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	cr_assert_eq(try_rename("a", "b//c", true), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
}

Test(mailbox, rename_without_children_moves_only_the_row)
{
	struct sbx_mailbox inbox, old, left;

	fixture_mailbox("INBOX");
	inbox = get_mailbox("INBOX");
	fixture_mailbox("INBOX/sub");
	cr_assert_eq(try_rename("INBOX", "Old/INBOX", false), 0, "%s",
		     fixture_error());
	old = get_mailbox("Old/INBOX");
	cr_assert_eq(old.id, inbox.id);
	cr_assert_eq(old.uidvalidity, inbox.uidvalidity);
	cr_assert(get_mailbox("Old").noselect, "missing parent created");
	cr_assert_eq(mailbox_exists("INBOX/sub"), 1, "children stay");
	left = get_mailbox("INBOX");
	cr_assert(left.noselect, "the children keep a parent");
	cr_assert_neq(left.id, inbox.id);
}

Test(mailbox, rename_without_children_into_its_own_name_space)
{
	fixture_mailbox("a");
	cr_assert_eq(try_rename("a", "a/b", false), 0, "%s", fixture_error());
	cr_assert(get_mailbox("a").noselect);
	cr_assert(!get_mailbox("a/b").noselect);
}

Test(mailbox, delete_removes_the_row_and_its_messages)
{
	int64_t id = fixture_mailbox("Junk");
	bool kept = true;

	fixture_append_text(id, "spam 1\r\n", 0);
	fixture_append_text(id, "spam 2\r\n", SBX_FLAG_SEEN);
	cr_assert_eq(try_delete("Junk", &kept), 0, "%s", fixture_error());
	cr_assert(!kept);
	cr_assert_eq(mailbox_exists("Junk"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"), 0);
	cr_assert_eq(try_delete("Junk", &kept), -1);
	cr_assert_eq(last_error(), SBX_ERR_NOTFOUND);
}

Test(mailbox, delete_with_children_keeps_a_noselect_row)
{
	int64_t id = fixture_mailbox("a");
	struct sbx_mailbox before, after;
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);
	bool kept = false;

	cr_assert_eq(id, 1, "the raw SQL below uses id 1");
	fixture_mailbox("a/b");
	fixture_append_text(id, "one\r\n", 0);
	fixture_begin();
	cr_assert_eq(sqlite3_exec(raw, "INSERT INTO expunged VALUES"
				  " (1, 99, 1, 'g', 0);"
				  "INSERT INTO attributes VALUES"
				  " (1, 0, 'k', x'00', 0)",
				  NULL, NULL, NULL), SQLITE_OK);
	fixture_commit();
	before = get_mailbox("a");
	cr_assert_eq(try_delete("a", &kept), 0, "%s", fixture_error());
	cr_assert(kept);
	after = get_mailbox("a");
	cr_assert(after.noselect);
	cr_assert_eq(after.messages, 0);
	cr_assert_eq(after.unseen, 0);
	cr_assert_eq(after.vsize, 0);
	cr_assert(memcmp(after.guid, before.guid, sizeof(after.guid)) != 0,
		  "the deleted mailbox's GUID is not reused");
	cr_assert_eq(mailbox_exists("a/b"), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM attributes"), 0);
	fixture_check_invariants();
}

Test(mailbox, deleting_noselect_with_children_fails_without_children_works)
{
	bool kept;

	fixture_mailbox("a/b");
	cr_assert_eq(try_delete("a", &kept), -1);
	cr_assert_eq(last_error(), SBX_ERR_EXISTS);
	cr_assert_eq(try_delete("a/b", &kept), 0);
	cr_assert_eq(try_delete("a", &kept), 0, "%s", fixture_error());
	cr_assert(!kept);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"), 0);
}

Test(mailbox, names_with_quotes_wildcards_and_non_ascii_round_trip)
{
	static const char *const names[] = {
		"it's", "say \"hi\"", "100%", "a_b", "..", "x/../y",
		"x'); DROP TABLE messages; --", "back\\slash",
		/* "Übersicht/日本語" */
		"\303\234bersicht/\346\227\245\346\234\254\350\252\236",
		"tab\there", "*", "a%",
	};
	struct sbx_mailbox_iter *iter;
	struct sbx_mailbox mb;
	size_t i, found = 0;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		fixture_mailbox(names[i]);
		cr_assert_str_eq(get_mailbox(names[i]).name, names[i]);
	}
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM sqlite_schema"
				     " WHERE name = 'messages'"), 1);
	cr_assert_eq(sbx_mailbox_has_children(fixture_db, "a%"), 0);
	cr_assert_eq(sbx_mailbox_has_children(fixture_db, "x"), 1);
	cr_assert_eq(sbx_mailbox_iter_init(fixture_db, &iter), 0);
	while (sbx_mailbox_iter_next(iter, &mb) > 0) {
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			if (strcmp(mb.name, names[i]) == 0)
				found++;
		}
	}
	cr_assert_eq(sbx_mailbox_iter_deinit(&iter), 0);
	cr_assert_eq(found, sizeof(names) / sizeof(names[0]));
}

Test(mailbox, iteration_is_in_name_order)
{
	static const char *const expected[] = { "A", "B", "B/c", "a" };
	struct sbx_mailbox_iter *iter;
	struct sbx_mailbox mb;
	size_t n = 0;
	int ret;

	fixture_mailbox("a");
	fixture_mailbox("B/c");
	fixture_mailbox("A");
	cr_assert_eq(sbx_mailbox_iter_init(fixture_db, &iter), 0);
	while ((ret = sbx_mailbox_iter_next(iter, &mb)) > 0) {
		cr_assert_lt(n, 4);
		cr_assert_str_eq(mb.name, expected[n]);
		n++;
	}
	cr_assert_eq(ret, 0);
	cr_assert_eq(sbx_mailbox_iter_next(iter, &mb), 0, "stays at end");
	cr_assert_eq(sbx_mailbox_iter_deinit(&iter), 0);
	cr_assert_null(iter);
	cr_assert_eq(n, 4);
	cr_assert_eq(sbx_mailbox_iter_deinit(&iter), 0, "accepts NULL");
}

static uint64_t modseq_salt(void)
{
	int64_t salt;

	cr_assert_eq(sbx_mailbox_modseq_salt(fixture_db, &salt), 0);
	cr_assert_geq(salt, 0);
	cr_assert_lt(salt, (int64_t)(SBX_MODSEQ_STEP / 2));
	return (uint64_t)salt;
}

Test(mailbox, modseq_alloc_steps_and_is_stable_within_a_transaction)
{
	int64_t id = fixture_mailbox("INBOX");
	uint64_t first, again, second, salt = modseq_salt();

	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id, &first), 0);
	cr_assert_eq(first, SBX_MODSEQ_STEP + salt, "from highestmodseq 1");
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id, &again), 0);
	cr_assert_eq(again, first);
	fixture_commit();
	cr_assert_eq(get_mailbox("INBOX").highestmodseq, first);

	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id, &second), 0);
	cr_assert_eq(second, 2 * SBX_MODSEQ_STEP + salt);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(get_mailbox("INBOX").highestmodseq, first,
		     "a rolled back allocation is forgotten");

	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id, &second), 0);
	cr_assert_eq(second, 2 * SBX_MODSEQ_STEP + salt);
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id + 9, &again), -1);
	cr_assert_eq(last_error(), SBX_ERR_NOTFOUND);
	fixture_commit();
}

/* dsync may raise highestmodseq to any value: the next allocation still
   leaves at least half a step of room above it, and keeps the salt. */
Test(mailbox, modseq_alloc_leaves_half_a_step_above_any_value)
{
	uint64_t salt = modseq_salt();
	const uint64_t from[] = {
		SBX_MODSEQ_STEP + 1, 2 * SBX_MODSEQ_STEP - 1,
		3 * SBX_MODSEQ_STEP + SBX_MODSEQ_STEP / 2,
		5 * SBX_MODSEQ_STEP + salt, 7 * SBX_MODSEQ_STEP + salt + 1,
	};
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_mailbox_update set;
	uint64_t modseq;
	unsigned int i;

	for (i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
		memset(&set, 0, sizeof(set));
		set.min_highestmodseq = from[i];
		fixture_begin();
		cr_assert_eq(sbx_mailbox_update(fixture_db, id, &set), 0);
		fixture_commit();
		fixture_begin();
		cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id, &modseq),
			     0);
		fixture_commit();
		cr_assert_eq(modseq % SBX_MODSEQ_STEP, salt);
		cr_assert_geq(modseq - from[i], SBX_MODSEQ_STEP / 2,
			      "from %llu got %llu",
			      (unsigned long long)from[i],
			      (unsigned long long)modseq);
		cr_assert_leq(modseq - from[i], 3 * SBX_MODSEQ_STEP / 2);
	}
}

/* Two databases (two dsync sides) brought to the same HIGHESTMODSEQ
   count on from it differently: the salt comes from each one's random
   db_guid. */
Test(mailbox, modseq_salt_comes_from_the_database_identity)
{
	int64_t id = fixture_mailbox("INBOX");
	uint64_t modseq;

	fixture_sql_exec("UPDATE meta SET value ="
			 " x'9234000000000000000000000000000f'"
			 " WHERE key = 'db_guid'");
	cr_assert_eq(modseq_salt(), 0x9234 % (SBX_MODSEQ_STEP / 2));
	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, id, &modseq), 0);
	fixture_commit();
	cr_assert_eq(modseq, SBX_MODSEQ_STEP + 0x1234);
}

Test(mailbox, modseq_alloc_is_per_mailbox)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	uint64_t ma, mb, salt = modseq_salt();
	struct sbx_mailbox_update update = {
		.min_highestmodseq = 3 * SBX_MODSEQ_STEP + salt,
	};

	fixture_begin();
	cr_assert_eq(sbx_mailbox_update(fixture_db, b, &update), 0);
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, a, &ma), 0);
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, b, &mb), 0);
	fixture_commit();
	cr_assert_eq(ma, SBX_MODSEQ_STEP + salt);
	cr_assert_eq(mb, 4 * SBX_MODSEQ_STEP + salt);
}

Test(mailbox, recent_claim_returns_the_old_first_recent_uid)
{
	int64_t id = fixture_mailbox("INBOX");
	uint32_t old;

	fixture_append_text(id, "a\r\n", 0);
	fixture_append_text(id, "b\r\n", 0);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_recent_claim(fixture_db, id, &old), 0);
	cr_assert_eq(old, 1);
	cr_assert_eq(sbx_mailbox_recent_claim(fixture_db, id, &old), 0);
	cr_assert_eq(old, 3);
	fixture_commit();
	cr_assert_eq(get_mailbox("INBOX").first_recent_uid, 3);
}

Test(subscription, set_unset_and_iterate)
{
	struct sbx_subscription_iter *iter;
	const char *name;
	int ret, n = 0;

	cr_assert_eq(sbx_subscription_set(fixture_db, "b", true), 0);
	cr_assert_eq(sbx_subscription_set(fixture_db, "a'quote", true), 0);
	cr_assert_eq(sbx_subscription_set(fixture_db, "b", true), 0,
		     "subscribing twice is no error");
	cr_assert_eq(sbx_subscription_set(fixture_db, "gone", false), 0,
		     "unsubscribing a missing name is no error");
	cr_assert_eq(sbx_subscription_iter_init(fixture_db, &iter), 0);
	while ((ret = sbx_subscription_iter_next(iter, &name)) > 0) {
		cr_assert_str_eq(name, n == 0 ? "a'quote" : "b");
		n++;
	}
	cr_assert_eq(ret, 0);
	cr_assert_eq(sbx_subscription_iter_deinit(&iter), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(sbx_subscription_set(fixture_db, "b", false), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM subscriptions"), 1);
}

Test(subscription, uses_the_callers_write_transaction)
{
	fixture_begin();
	cr_assert_eq(sbx_subscription_set(fixture_db, "x", true), 0);
	cr_assert(sbx_tx_is_active(fixture_db), "still the caller's");
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM subscriptions"), 0);

	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_READ), 0);
	cr_assert_eq(sbx_subscription_set(fixture_db, "x", true), -1);
	cr_assert_eq(last_error(), SBX_ERR_INTERNAL);
	cr_assert_eq(sbx_tx_commit(fixture_db), 0);
}

Test(subscription, names_need_no_mailbox)
{
	cr_assert_eq(sbx_subscription_set(fixture_db, "Nowhere/x", true), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM mailboxes"), 0);
}

Test(mailbox, recount_repairs_counters_edited_by_hand)
{
	int64_t box = fixture_mailbox("INBOX");
	sqlite3 *raw;

	(void)fixture_append_text(box, "Subject: a\r\n\r\nx\r\n", 0);
	(void)fixture_append_text(box, "Subject: b\r\n\r\ny\r\n", SBX_FLAG_SEEN);
	cr_assert_eq(sqlite3_open(fixture_path, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "UPDATE mailboxes SET messages = 7,"
				  " unseen = 0, vsize = 1, psize = 2",
				  NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_recount(fixture_db, box), 0, "%s",
		     fixture_error());
	fixture_commit();
	fixture_check_invariants();
	cr_assert_eq(fixture_sql_int("SELECT messages FROM mailboxes"), 2);
	cr_assert_eq(fixture_sql_int("SELECT unseen FROM mailboxes"), 1);
}
