/* SPDX-License-Identifier: MIT */
/* sbx-msg.c: UIDs, flags, tombstones, the change feed and the counters
   the triggers keep. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-admin.h"
#include "sbx-body.h"
#include "sbx-hash.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fixture.h"

TestSuite(msg, .init = fixture_db_setup, .fini = fixture_db_teardown);
TestSuite(keywords);

static struct sbx_mailbox get_mailbox(int64_t id)
{
	struct sbx_mailbox mb;

	cr_assert_eq(sbx_mailbox_lookup_id(fixture_db, id, &mb), 1, "%s",
		     fixture_error());
	return mb;
}

static enum sbx_error last_error(void)
{
	const char *msg;

	return sbx_db_last_error(fixture_db, &msg);
}

/* A minimal message for body_id with the given UID. */
static struct sbx_msg_new new_msg(uint32_t uid, int64_t body_id)
{
	struct sbx_msg_new msg = {
		.uid = uid, .body_id = body_id, .guid = "g", .modseq = 1,
		.received_date = 1, .save_date = 1,
	};

	return msg;
}

static int expunge(int64_t mailbox_id, uint32_t uid)
{
	uint64_t modseq;
	int ret;

	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, mailbox_id,
					      &modseq), 0);
	ret = sbx_msg_expunge(fixture_db, mailbox_id, uid, modseq);
	cr_assert_geq(ret, 0, "%s", fixture_error());
	fixture_commit();
	return ret;
}

static int update_flags(int64_t mailbox_id, uint32_t uid, uint32_t flags,
			const char *keywords)
{
	uint64_t modseq;
	int ret;

	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, mailbox_id,
					      &modseq), 0);
	ret = sbx_msg_update_flags(fixture_db, mailbox_id, uid, flags,
				   keywords, modseq);
	cr_assert_geq(ret, 0, "%s", fixture_error());
	fixture_commit();
	return ret;
}

Test(msg, uids_ascend_and_uidnext_follows)
{
	int64_t id = fixture_mailbox("INBOX");
	uint32_t uid, i;

	for (i = 1; i <= 5; i++) {
		uid = fixture_append_text(id, "body\r\n", 0);
		cr_assert_eq(uid, i);
		cr_assert_eq(get_mailbox(id).uidnext, i + 1);
	}
	fixture_check_invariants();
}

Test(msg, append_may_skip_uids_but_never_go_below_uidnext)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_msg_new msg;
	int64_t body;

	fixture_begin();
	body = fixture_body("x", 1, 1);
	msg = new_msg(10, body);
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), 0, "%s",
		     fixture_error());
	cr_assert_eq(get_mailbox(id).uidnext, 11);
	msg.uid = 5;
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	msg.uid = 10;
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	fixture_commit();
	fixture_check_invariants();
}

Test(msg, append_after_expunge_never_reuses_uid)
{
	int64_t id = fixture_mailbox("INBOX");
	uint32_t uid;

	fixture_append_text(id, "one\r\n", 0);
	uid = fixture_append_text(id, "two\r\n", 0);
	cr_assert_eq(expunge(id, uid), 1);
	cr_assert_eq(get_mailbox(id).uidnext, 3, "uidnext stays");
	cr_assert_eq(fixture_append_text(id, "three\r\n", 0), 3);
	fixture_check_invariants();
}

Test(msg, the_schema_refuses_a_uid_below_uidnext_from_plain_sql)
{
	int64_t id = fixture_mailbox("INBOX");
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);
	int rc;

	fixture_append_text(id, "one\r\n", 0);
	fixture_append_text(id, "two\r\n", 0);
	fixture_begin();
	rc = sqlite3_exec(raw, "INSERT INTO messages(mailbox_id, uid,"
			  " body_id, guid, modseq, received_date, save_date)"
			  " SELECT mailbox_id, 1, body_id, 'g', 1, 1, 1"
			  " FROM messages WHERE uid = 2", NULL, NULL, NULL);
	cr_assert_eq(rc, SQLITE_CONSTRAINT_TRIGGER, "%s",
		     sqlite3_errmsg(raw));
	sbx_tx_rollback(fixture_db);
}

Test(msg, expunge_leaves_a_tombstone_with_modseq_and_guid)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_expunge_iter *iter;
	struct sbx_msg msg;
	uint32_t uid, got;
	uint64_t modseq, got_modseq;

	fixture_append_text(id, "one\r\n", 0);
	uid = fixture_append_text(id, "two\r\n", 0);
	cr_assert_eq(expunge(id, uid), 1);
	cr_assert_eq(sbx_msg_lookup(fixture_db, id, uid, &msg), 0);
	modseq = get_mailbox(id).highestmodseq;
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged"
				     " WHERE uid = 2 AND guid = 'guid-1-2'"),
		     1);
	cr_assert_eq(fixture_sql_int("SELECT modseq FROM expunged"),
		     (int64_t)modseq);
	cr_assert_gt(fixture_sql_int("SELECT expunged_at FROM expunged"), 0);

	cr_assert_eq(sbx_expunge_iter_init(fixture_db, id, modseq - 1,
					   &iter), 0);
	cr_assert_eq(sbx_expunge_iter_next(iter, &got, &got_modseq), 1);
	cr_assert_eq(got, uid);
	cr_assert_eq(got_modseq, modseq);
	cr_assert_eq(sbx_expunge_iter_next(iter, &got, &got_modseq), 0);
	cr_assert_eq(sbx_expunge_iter_deinit(&iter), 0);
	cr_assert_eq(sbx_expunge_iter_init(fixture_db, id, modseq, &iter), 0);
	cr_assert_eq(sbx_expunge_iter_next(iter, &got, &got_modseq), 0,
		     "none later");
	cr_assert_eq(sbx_expunge_iter_deinit(&iter), 0);

	cr_assert_eq(expunge(id, uid), 0, "already gone");
	fixture_check_invariants();
}

Test(msg, lookup_returns_every_field)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_msg_new msg = {
		.uid = 7, .guid = "0123456789abcdef", .flags = SBX_FLAG_SEEN |
		SBX_FLAG_FLAGGED, .keywords = "$Junk  $Forwarded $Junk",
		.modseq = 42, .received_date = 1600000000, .received_tz = -300,
		.save_date = 1600000100, .pop3_uidl = "uidl'7",
		.pop3_order = 3, .from_envelope = "a@example.org",
		.message_id = "<id@example.org>",
	};
	struct sbx_msg got;

	fixture_begin();
	msg.body_id = fixture_body("hello\r\n", 7, 1);
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), 0, "%s",
		     fixture_error());
	fixture_commit();
	cr_assert_eq(sbx_msg_lookup(fixture_db, id, 7, &got), 1);
	cr_assert_eq(got.uid, 7);
	cr_assert_eq(got.body_id, msg.body_id);
	cr_assert_str_eq(got.guid, msg.guid);
	cr_assert_eq(got.flags, msg.flags);
	cr_assert_str_eq(got.keywords, "$Forwarded $Junk");
	cr_assert_eq(got.modseq, 42);
	cr_assert_eq(got.received_date, msg.received_date);
	cr_assert_eq(got.received_tz, -300);
	cr_assert_eq(got.save_date, msg.save_date);
	cr_assert_str_eq(got.pop3_uidl, "uidl'7");
	cr_assert_eq(got.pop3_order, 3);
	cr_assert_str_eq(got.from_envelope, msg.from_envelope);
	cr_assert_str_eq(got.message_id, msg.message_id);
	cr_assert_eq(got.physical_size, 7);
	cr_assert_eq(got.virtual_size, 7);
	cr_assert_eq(get_mailbox(id).highestmodseq, 42);
}

/* Only messages of the mailbox asked about count, and only orders other
   than 0 (none). */
Test(msg, has_pop3_order_looks_at_one_mailbox)
{
	int64_t inbox = fixture_mailbox("INBOX");
	int64_t other = fixture_mailbox("Other");

	fixture_append_text(inbox, "a\r\n", 0);
	fixture_append_text(other, "b\r\n", 0);
	cr_assert_eq(sbx_msg_has_pop3_order(fixture_db, inbox), 0);
	cr_assert_eq(sbx_msg_has_pop3_order(fixture_db, other), 0);
	fixture_sql_exec("UPDATE messages SET pop3_order = 2"
			 " WHERE mailbox_id = 2");
	cr_assert_eq(sbx_msg_has_pop3_order(fixture_db, inbox), 0);
	cr_assert_eq(sbx_msg_has_pop3_order(fixture_db, other), 1);
}

Test(msg, optional_fields_read_back_as_null)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_msg got;

	fixture_append_text(id, "x\r\n", 0);
	cr_assert_eq(sbx_msg_lookup(fixture_db, id, 1, &got), 1);
	cr_assert_str_eq(got.keywords, "");
	cr_assert_null(got.pop3_uidl);
	cr_assert_null(got.from_envelope);
	cr_assert_null(got.message_id);
	cr_assert_eq(sbx_msg_lookup(fixture_db, id, 2, &got), 0);
}

Test(msg, append_checks_mailbox_body_and_fields)
{
	int64_t id = fixture_mailbox("a/b");
	int64_t noselect = get_mailbox(id).id - 1;
	struct sbx_msg_new msg;

	cr_assert(get_mailbox(noselect).noselect, "'a' is the parent");
	fixture_begin();
	msg = new_msg(1, fixture_body("x", 1, 1));
	cr_assert_eq(sbx_msg_append(fixture_db, id + 50, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_NOTFOUND);
	cr_assert_eq(sbx_msg_append(fixture_db, noselect, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	msg.body_id += 50;
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID, "missing body");
	msg.body_id -= 50;
	msg.guid = "";
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID, "empty GUID");
	msg.guid = "g";
	msg.uid = 0;
	cr_assert_eq(sbx_msg_append(fixture_db, id, &msg), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID, "UID 0");
	sbx_tx_rollback(fixture_db);
}

Test(msg, update_flags_changes_flags_keywords_modseq_and_unseen)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_mailbox mb;
	struct sbx_msg got;

	fixture_append_text(id, "one\r\n", 0);
	fixture_append_text(id, "two\r\n", 0);
	cr_assert_eq(get_mailbox(id).unseen, 2);
	cr_assert_eq(update_flags(id, 1, SBX_FLAG_SEEN, "b a b"), 1);
	mb = get_mailbox(id);
	cr_assert_eq(mb.unseen, 1);
	cr_assert_eq(sbx_msg_lookup(fixture_db, id, 1, &got), 1);
	cr_assert_eq(got.flags, SBX_FLAG_SEEN);
	cr_assert_str_eq(got.keywords, "a b");
	cr_assert_eq(got.modseq, mb.highestmodseq);
	cr_assert_eq(update_flags(id, 1, 0, NULL), 1);
	cr_assert_eq(get_mailbox(id).unseen, 2);
	cr_assert_eq(update_flags(id, 9, 0, NULL), 0, "no such message");
	fixture_check_invariants();
}

Test(msg, raise_modseq_only_raises_and_lifts_highestmodseq)
{
	int64_t id = fixture_mailbox("INBOX");
	uint64_t before, target;
	struct sbx_msg got;

	fixture_append_text(id, "one\r\n", 0);
	cr_assert_eq(update_flags(id, 1, SBX_FLAG_SEEN, NULL), 1);
	before = get_mailbox(id).highestmodseq;
	target = before + 12345;

	fixture_begin();
	cr_assert_eq(sbx_msg_raise_modseq(fixture_db, id, 1, target), 1);
	cr_assert_eq(sbx_msg_raise_modseq(fixture_db, id, 1, before), 0,
		     "never lowers");
	cr_assert_eq(sbx_msg_raise_modseq(fixture_db, id, 7, target), 0,
		     "no such message");
	fixture_commit();
	cr_assert_eq(sbx_msg_lookup(fixture_db, id, 1, &got), 1);
	cr_assert_eq(got.modseq, target);
	cr_assert_eq(got.flags, SBX_FLAG_SEEN);
	cr_assert_eq(get_mailbox(id).highestmodseq, target);
	cr_assert_eq(sbx_msg_raise_modseq(fixture_db, id, 1, target + 1), -1,
		     "outside a write transaction");
	fixture_check_invariants();
}

Test(msg, iteration_since_a_modseq_returns_the_changes_in_uid_order)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_msg_iter *iter;
	struct sbx_msg_state msg;
	uint64_t cursor;
	uint32_t n = 0;
	int ret;

	fixture_append_text(id, "1\r\n", 0);
	fixture_append_text(id, "2\r\n", 0);
	fixture_append_text(id, "3\r\n", 0);
	cr_assert_eq(sbx_msg_iter_init(fixture_db, id, 0, &iter), 0);
	while ((ret = sbx_msg_iter_next(iter, &msg)) > 0)
		cr_assert_eq(msg.uid, ++n);
	cr_assert_eq(ret, 0);
	cr_assert_eq(sbx_msg_iter_deinit(&iter), 0);
	cr_assert_eq(n, 3);

	cursor = get_mailbox(id).highestmodseq;
	cr_assert_eq(update_flags(id, 2, SBX_FLAG_ANSWERED, "x"), 1);
	cr_assert_eq(sbx_msg_iter_init(fixture_db, id, cursor, &iter), 0);
	cr_assert_eq(sbx_msg_iter_next(iter, &msg), 1);
	cr_assert_eq(msg.uid, 2);
	cr_assert_str_eq(msg.keywords, "x");
	cr_assert_eq(msg.flags, SBX_FLAG_ANSWERED);
	cr_assert_eq(msg.modseq, get_mailbox(id).highestmodseq);
	cr_assert_eq(msg.virtual_size, 3);
	cr_assert_eq(msg.pop3_order, 0);
	cr_assert(!msg.has_pop3_uidl);
	cr_assert_eq(sbx_msg_iter_next(iter, &msg), 0);
	cr_assert_eq(sbx_msg_iter_deinit(&iter), 0);
}

Test(msg, nested_iteration_of_messages_is_an_internal_error)
{
	int64_t id = fixture_mailbox("INBOX");
	struct sbx_msg_iter *iter, *nested;

	cr_assert_eq(sbx_msg_iter_init(fixture_db, id, 0, &iter), 0);
	cr_assert_eq(sbx_msg_iter_init(fixture_db, id, 0, &nested), -1);
	cr_assert_eq(last_error(), SBX_ERR_INTERNAL);
	cr_assert_eq(sbx_msg_iter_deinit(&iter), 0);
}

Test(msg, counters_equal_the_rows_through_every_change)
{
	int64_t inbox = fixture_mailbox("INBOX");
	int64_t other = fixture_mailbox("Other/Sub");
	struct sbx_mailbox mb;
	uint32_t i;

	for (i = 0; i < 6; i++) {
		fixture_append_text(inbox, i % 2 ? "odd\r\n" : "even body\r\n",
				    i % 3 == 0 ? SBX_FLAG_SEEN : 0);
		fixture_append_text(other, "other\r\n", 0);
	}
	fixture_check_invariants();
	mb = get_mailbox(inbox);
	cr_assert_eq(mb.messages, 6);
	cr_assert_eq(mb.unseen, 4);
	cr_assert_eq(mb.psize, 3 * 5 + 3 * 11);
	cr_assert_eq(mb.vsize, mb.psize);

	cr_assert_eq(update_flags(inbox, 2, SBX_FLAG_SEEN, NULL), 1);
	cr_assert_eq(update_flags(inbox, 1, 0, NULL), 1);
	cr_assert_eq(expunge(inbox, 3), 1);
	cr_assert_eq(expunge(inbox, 4), 1);
	fixture_check_invariants();
	mb = get_mailbox(inbox);
	cr_assert_eq(mb.messages, 4);
	cr_assert_eq(mb.unseen, 3);

	fixture_begin();
	cr_assert_eq(sbx_mailbox_delete(fixture_db, "Other/Sub", NULL), 0);
	fixture_commit();
	fixture_check_invariants();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 4);
}

Test(msg, moving_a_row_by_plain_sql_moves_the_counters)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);

	fixture_append_text(a, "move me\r\n", 0);
	fixture_begin();
	cr_assert_eq(sqlite3_exec(raw, "UPDATE messages SET mailbox_id = 2,"
				  " uid = 5 WHERE mailbox_id = 1", NULL, NULL,
				  NULL), SQLITE_OK, "%s", sqlite3_errmsg(raw));
	fixture_commit();
	cr_assert_eq(get_mailbox(a).messages, 0);
	cr_assert_eq(get_mailbox(b).messages, 1);
	cr_assert_eq(get_mailbox(b).uidnext, 6);
	fixture_check_invariants();
}

/* Arrays, not pointers: Criterion runs each parameter in a new process,
   where a pointer into the parent's image is meaningless. */
struct normalize_case {
	char input[32];
	char expected[32];
};

ParameterizedTestParameters(keywords, normalize_sorts_and_dedupes)
{
	static struct normalize_case cases[] = {
		{ "", "" },
		{ "   ", "" },
		{ "a", "a" },
		{ "b a", "a b" },
		{ "  $Junk   $Forwarded  ", "$Forwarded $Junk" },
		{ "x x x", "x" },
		{ "b a b a c", "a b c" },
		{ "B a A b", "A B a b" },
	};

	return cr_make_param_array(struct normalize_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct normalize_case *c, keywords,
		  normalize_sorts_and_dedupes)
{
	char *got = sbx_keywords_normalize(c->input);

	cr_assert_not_null(got);
	cr_assert_str_eq(got, c->expected, "'%s'", c->input);
	free(got);
}

Test(keywords, normalize_accepts_null)
{
	char *got = sbx_keywords_normalize(NULL);

	cr_assert_str_eq(got, "");
	free(got);
}

/* The model of one mailbox for the random test. */
#define MODEL_MAX_UID 400

struct model_mailbox {
	const char *name;
	int64_t id;
	uint32_t uidnext;
	/* flags + 1 of each live UID, 0 if none */
	uint8_t flags[MODEL_MAX_UID];
};

static uint32_t model_rand(uint32_t *state)
{
	*state = *state * 1103515245U + 12345U;
	return *state >> 16;
}

static void model_check(const struct model_mailbox *mm, uint32_t seed)
{
	struct sbx_mailbox mb = get_mailbox(mm->id);
	uint32_t uid, messages = 0, unseen = 0;

	for (uid = 1; uid < MODEL_MAX_UID; uid++) {
		if (mm->flags[uid] == 0)
			continue;
		messages++;
		if (((mm->flags[uid] - 1) & SBX_FLAG_SEEN) == 0)
			unseen++;
	}
	cr_assert_eq(mb.messages, messages, "seed %u: %s messages", seed,
		     mm->name);
	cr_assert_eq(mb.unseen, unseen, "seed %u: %s unseen", seed, mm->name);
	cr_assert_eq(mb.uidnext, mm->uidnext, "seed %u: %s uidnext", seed,
		     mm->name);
}

/* Appends one of five bodies, deduplicated by hash as the plugin does. */
static void model_append(struct model_mailbox *mm, uint32_t *state)
{
	static const char *const texts[] = {
		"one\r\n", "two\r\n", "three\r\n", "four\r\n", "",
	};
	const char *text = texts[model_rand(state) % 5];
	uint32_t flags = model_rand(state) % 2 ? SBX_FLAG_SEEN : 0;
	uint8_t digest[SBX_SHA256_SIZE];
	struct sbx_hash *hash = sbx_hash_alloc();
	int64_t body;
	uint32_t uid;

	sbx_hash_update(hash, text, strlen(text));
	sbx_hash_final(hash, digest);
	sbx_hash_free(&hash);
	if (sbx_body_lookup_hash(fixture_db, digest, strlen(text),
				 &body) == 0)
		body = fixture_body(text, strlen(text), 1);
	uid = fixture_append(mm->id, body, flags);
	cr_assert_eq(uid, mm->uidnext);
	cr_assert_lt(uid, MODEL_MAX_UID);
	mm->flags[uid] = (uint8_t)(flags + 1);
	mm->uidnext = uid + 1;
}

/* A random live UID of mm, or 0. */
static uint32_t model_pick(const struct model_mailbox *mm, uint32_t *state)
{
	uint32_t start = model_rand(state) % MODEL_MAX_UID, i, uid;

	for (i = 0; i < MODEL_MAX_UID; i++) {
		uid = (start + i) % MODEL_MAX_UID;
		if (mm->flags[uid] != 0)
			return uid;
	}
	return 0;
}

static void model_step(struct model_mailbox *mm, uint32_t *state)
{
	uint32_t uid = model_pick(mm, state), op = model_rand(state) % 10;
	uint64_t modseq;

	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, mm->id, &modseq), 0);
	if (op < 5 || uid == 0) {
		model_append(mm, state);
	} else if (op < 8) {
		cr_assert_eq(sbx_msg_expunge(fixture_db, mm->id, uid, modseq),
			     1);
		mm->flags[uid] = 0;
	} else {
		uint32_t flags = (uint32_t)(mm->flags[uid] - 1) ^
			SBX_FLAG_SEEN;

		cr_assert_eq(sbx_msg_update_flags(fixture_db, mm->id, uid,
						  flags, "k", modseq), 1);
		mm->flags[uid] = (uint8_t)(flags + 1);
	}
}

Test(msg, random_operations_match_a_model)
{
	static struct model_mailbox model[3] = {
		{ .name = "A" }, { .name = "B" }, { .name = "C/D" },
	};
	static struct model_mailbox saved[3];
	uint32_t seed = 20240601, state = seed;
	int i, j, ops;

	for (i = 0; i < 3; i++) {
		model[i].id = fixture_mailbox(model[i].name);
		model[i].uidnext = 1;
	}
	for (i = 0; i < 120; i++) {
		memcpy(saved, model, sizeof(model));
		fixture_begin();
		ops = (int)(model_rand(&state) % 3) + 1;
		for (j = 0; j < ops; j++)
			model_step(&model[model_rand(&state) % 3], &state);
		if (model_rand(&state) % 8 == 0) {
			/* Throw the transaction away: nothing may change. */
			sbx_tx_rollback(fixture_db);
			memcpy(model, saved, sizeof(model));
		} else {
			fixture_commit();
		}
		for (j = 0; j < 3; j++)
			model_check(&model[j], seed);
	}
	fixture_check_invariants();
}

/* The counters against an operator's hand-written SQL: every statement
   runs on a connection of its own, as sqlite3 would run it, and
   afterwards the counters must equal a recount and each refcount the
   references to its body. */

/* Runs sql with foreign_keys on or off. Returns SQLite's result code
   and sets *trigger_rows_r, if not NULL, to the rows the triggers
   changed. */
static int operator_sql(const char *sql, bool foreign_keys,
			int64_t *trigger_rows_r)
{
	sqlite3 *conn;
	int rc;

	cr_assert_eq(sqlite3_open(fixture_path, &conn), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(conn, foreign_keys ?
				  "PRAGMA foreign_keys = ON" :
				  "PRAGMA foreign_keys = OFF", NULL, NULL,
				  NULL), SQLITE_OK);
	rc = sqlite3_exec(conn, sql, NULL, NULL, NULL);
	if (trigger_rows_r != NULL) {
		*trigger_rows_r = sqlite3_total_changes64(conn) -
			sqlite3_changes64(conn);
	}
	sqlite3_close(conn);
	return rc;
}

/* As doveadm sqlbox check counts them, then as
   fixture_check_invariants() does (which adds MODSEQs). */
static void assert_counters_exact(const char *after)
{
	unsigned int problems;

	cr_assert_eq(sbx_admin_check(fixture_db, 0, NULL, NULL, &problems),
		     0, "%s", fixture_error());
	cr_assert_eq(problems, 0, "after %s: %u problems", after, problems);
	fixture_check_invariants();
}

static int64_t refcount(int64_t body_id)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT refcount FROM bodies"
		 " WHERE id = %lld", (long long)body_id);
	return fixture_sql_int(sql);
}

/* Appends one message per text to mailbox_id, \Seen where seen[i]. */
static void append_texts(int64_t mailbox_id, const char *const *texts,
			 const bool *seen, unsigned int count)
{
	unsigned int i;

	for (i = 0; i < count; i++) {
		(void)fixture_append_text(mailbox_id, texts[i],
					  seen[i] ? SBX_FLAG_SEEN : 0);
	}
}

Test(msg, counters_follow_plain_sql_insert_and_delete)
{
	static const char *const texts[] = { "a\r\n", "bb\r\n", "ccc\r\n" };
	static const bool seen[] = { false, true, false };
	int64_t a = fixture_mailbox("a");
	struct sbx_mailbox mb;
	int64_t body2;

	append_texts(a, texts, seen, 3);
	body2 = fixture_sql_int("SELECT body_id FROM messages WHERE uid = 2");
	cr_assert_eq(operator_sql("INSERT INTO messages(mailbox_id, uid,"
				  " body_id, guid, flags, modseq,"
				  " received_date, save_date)"
				  " SELECT 1, 10, body_id, 'g', 0, 7000000,"
				  " 1, 1"
				  " FROM messages WHERE uid = 2", false, NULL),
		     SQLITE_OK);
	mb = get_mailbox(a);
	cr_assert_eq(mb.messages, 4);
	cr_assert_eq(mb.unseen, 3);
	cr_assert_eq(mb.vsize, 3 + 4 + 5 + 4);
	cr_assert_eq(mb.psize, mb.vsize);
	cr_assert_eq(mb.uidnext, 11);
	cr_assert_eq(mb.highestmodseq, 7000000);
	cr_assert_eq(refcount(body2), 2);
	assert_counters_exact("insert");

	cr_assert_eq(operator_sql("DELETE FROM messages WHERE uid IN (1, 10)",
				  false, NULL), SQLITE_OK);
	mb = get_mailbox(a);
	cr_assert_eq(mb.messages, 2);
	cr_assert_eq(mb.unseen, 1);
	cr_assert_eq(mb.vsize, 4 + 5);
	cr_assert_eq(mb.uidnext, 11);
	cr_assert_eq(refcount(body2), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 2,
		     "the body of UID 1 went with its last reference");
	assert_counters_exact("delete");
}

/* A STORE changes one row of mailboxes per message and reads no body;
   an UPDATE of keywords alone runs no trigger at all. */
Test(msg, counters_follow_flag_changes_both_ways)
{
	static const char *const texts[] = {
		"one\r\n", "two\r\n", "three\r\n", "four\r\n",
	};
	static const bool seen[] = { true, false, true, false };
	int64_t a = fixture_mailbox("a");
	struct sbx_mailbox before, mb;
	int64_t trigger_rows;

	append_texts(a, texts, seen, 4);
	before = get_mailbox(a);
	cr_assert_eq(before.unseen, 2);

	cr_assert_eq(operator_sql("UPDATE messages SET flags = flags | 8,"
				  " modseq = modseq + 1", false,
				  &trigger_rows), SQLITE_OK);
	cr_assert_eq(trigger_rows, 4, "one mailbox row per message");
	mb = get_mailbox(a);
	cr_assert_eq(mb.unseen, 0);
	cr_assert_eq(mb.messages, 4);
	cr_assert_eq(mb.vsize, before.vsize);
	cr_assert_eq(mb.psize, before.psize);
	cr_assert_eq(mb.highestmodseq, before.highestmodseq + 1);
	assert_counters_exact("\\Seen on all");

	cr_assert_eq(operator_sql("UPDATE messages SET flags = flags & ~8"
				  " WHERE uid % 2 = 0", false, NULL),
		     SQLITE_OK);
	cr_assert_eq(get_mailbox(a).unseen, 2);
	assert_counters_exact("\\Seen off on two");

	/* \Seen stays as it is: unseen too */
	cr_assert_eq(operator_sql("UPDATE messages SET flags = flags | 2",
				  false, NULL), SQLITE_OK);
	cr_assert_eq(get_mailbox(a).unseen, 2);
	cr_assert_eq(operator_sql("UPDATE messages SET flags = 0", false,
				  NULL), SQLITE_OK);
	cr_assert_eq(get_mailbox(a).unseen, 4);
	assert_counters_exact("\\Seen off on all");

	cr_assert_eq(operator_sql("UPDATE messages SET keywords = 'k'", false,
				  &trigger_rows), SQLITE_OK);
	cr_assert_eq(trigger_rows, 0, "keywords alone run no trigger");
}

/* The in-place trigger reads no body: a message whose body is gone (an
   operator's DELETE without foreign_keys) still takes a flag change,
   and only unseen moves. */
Test(msg, a_flag_change_reads_no_body)
{
	int64_t a = fixture_mailbox("a");
	struct sbx_mailbox before, mb;

	(void)fixture_append_text(a, "lost\r\n", 0);
	before = get_mailbox(a);
	fixture_sql_exec("DELETE FROM body_chunks; DELETE FROM bodies;");
	cr_assert_eq(operator_sql("UPDATE messages SET flags = 8,"
				  " modseq = modseq + 1", false, NULL),
		     SQLITE_OK);
	mb = get_mailbox(a);
	cr_assert_eq(mb.unseen, 0);
	cr_assert_eq(mb.vsize, before.vsize);
	cr_assert_eq(mb.messages, 1);
}

Test(msg, a_uid_change_lifts_uidnext)
{
	static const char *const texts[] = { "x\r\n", "y\r\n" };
	static const bool seen[] = { false, true };
	int64_t a = fixture_mailbox("a");

	append_texts(a, texts, seen, 2);
	cr_assert_eq(operator_sql("UPDATE messages SET uid = uid + 40", false,
				  NULL), SQLITE_OK);
	cr_assert_eq(get_mailbox(a).uidnext, 43);
	cr_assert_eq(get_mailbox(a).messages, 2);
	assert_counters_exact("UIDs raised");
}

/* One statement moves several rows to another mailbox and turns \Seen
   over on each: each row's old flags leave a, its new ones join b. */
Test(msg, counters_follow_a_multi_row_move_that_changes_flags)
{
	static const char *const texts[] = {
		"1\r\n", "22\r\n", "333\r\n", "4444\r\n", "55555\r\n",
		"666666\r\n",
	};
	static const bool seen[] = { true, false, false, true, false, true };
	static const char *const other[] = { "b\r\n" };
	static const bool other_seen[] = { false };
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_mailbox mb_a, mb_b;

	append_texts(a, texts, seen, 6);
	append_texts(b, other, other_seen, 1);
	/* UIDs 1-4 of a: seen, unseen, unseen, seen; sizes 3 to 6 */
	cr_assert_eq(operator_sql("UPDATE messages SET mailbox_id = 2,"
				  " uid = uid + 100,"
				  " flags = (flags | 8) - (flags & 8),"
				  " modseq = 90000000"
				  " WHERE mailbox_id = 1 AND uid <= 4", false,
				  NULL), SQLITE_OK);
	mb_a = get_mailbox(a);
	mb_b = get_mailbox(b);
	cr_assert_eq(mb_a.messages, 2);
	cr_assert_eq(mb_a.unseen, 1);
	cr_assert_eq(mb_a.vsize, 7 + 8);
	cr_assert_eq(mb_b.messages, 5);
	cr_assert_eq(mb_b.unseen, 1 + 2, "UIDs 1 and 4 turned unseen");
	cr_assert_eq(mb_b.vsize, 3 + 3 + 4 + 5 + 6);
	cr_assert_eq(mb_b.psize, mb_b.vsize);
	cr_assert_eq(mb_b.uidnext, 105);
	cr_assert_eq(mb_b.highestmodseq, 90000000);
	cr_assert_eq(fixture_sql_int("SELECT max(refcount) FROM bodies"), 1);
	assert_counters_exact("move with flags");
}

/* Stores text as a body, inside the caller's write transaction, whose
   virtual size is extra bytes above its physical one (as with bare LFs),
   so that a sum taking one size for the other shows. */
static int64_t body_with_virtual_extra(const char *text, int64_t extra)
{
	sqlite3 *raw = sbx_db_get_sqlite(fixture_db);
	int64_t id = fixture_body(text, strlen(text), 1);
	char sql[128];

	snprintf(sql, sizeof(sql), "UPDATE bodies SET virtual_size ="
		 " physical_size + %lld WHERE id = %lld", (long long)extra,
		 (long long)id);
	cr_assert_eq(sqlite3_exec(raw, sql, NULL, NULL, NULL), SQLITE_OK,
		     "%s", sqlite3_errmsg(raw));
	return id;
}

/* A message changes to another body and back, then moves to b with a
   new body: sizes follow the body, references follow the message, and
   a body loses its last reference only when no message uses it. x is
   7 bytes, y 15 (18 virtual). */
Test(msg, a_body_change_moves_sizes_and_references_and_back)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_mailbox mb;
	int64_t x, y;
	char sql[256];

	fixture_begin();
	x = body_with_virtual_extra("short\r\n", 0);
	(void)fixture_append(a, x, 0);
	(void)fixture_append(a, x, 0);
	y = body_with_virtual_extra("a longer body\r\n", 3);
	(void)fixture_append(a, y, SBX_FLAG_SEEN);
	fixture_commit();
	mb = get_mailbox(a);
	cr_assert_eq(mb.vsize, 7 + 7 + 18);
	cr_assert_eq(mb.psize, 7 + 7 + 15);

	snprintf(sql, sizeof(sql), "UPDATE messages SET body_id = %lld"
		 " WHERE uid = 1", (long long)y);
	cr_assert_eq(operator_sql(sql, true, NULL), SQLITE_OK);
	cr_assert_eq(refcount(x), 1);
	cr_assert_eq(refcount(y), 2);
	mb = get_mailbox(a);
	cr_assert_eq(mb.vsize, 7 + 18 + 18);
	cr_assert_eq(mb.psize, 7 + 15 + 15);
	assert_counters_exact("to the other body");

	snprintf(sql, sizeof(sql), "UPDATE messages SET body_id = %lld,"
		 " flags = 8 WHERE uid = 1", (long long)x);
	cr_assert_eq(operator_sql(sql, false, NULL), SQLITE_OK);
	cr_assert_eq(refcount(x), 2);
	cr_assert_eq(refcount(y), 1);
	mb = get_mailbox(a);
	cr_assert_eq(mb.vsize, 7 + 7 + 18);
	cr_assert_eq(mb.psize, 7 + 7 + 15);
	cr_assert_eq(mb.unseen, 1, "\\Seen came with it");
	assert_counters_exact("and back, \\Seen");

	snprintf(sql, sizeof(sql), "UPDATE messages SET body_id = %lld,"
		 " mailbox_id = 2 WHERE uid = 2", (long long)y);
	cr_assert_eq(operator_sql(sql, false, NULL), SQLITE_OK);
	cr_assert_eq(refcount(x), 1);
	cr_assert_eq(refcount(y), 2);
	mb = get_mailbox(a);
	cr_assert_eq(mb.vsize, 7 + 18);
	cr_assert_eq(mb.psize, 7 + 15);
	mb = get_mailbox(b);
	cr_assert_eq(mb.vsize, 18);
	cr_assert_eq(mb.psize, 15);
	cr_assert_eq(mb.unseen, 1);
	assert_counters_exact("to b with the other body");

	snprintf(sql, sizeof(sql), "UPDATE messages SET body_id = %lld"
		 " WHERE body_id = %lld", (long long)y, (long long)x);
	cr_assert_eq(operator_sql(sql, false, NULL), SQLITE_OK);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 1,
		     "x went with its last reference");
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"
				     " WHERE body_id <> (SELECT id FROM"
				     " bodies)"), 0);
	cr_assert_eq(refcount(y), 3);
	assert_counters_exact("all on one body");
}

/* Runs sql, which names a body that doesn't exist, with foreign_keys
   off and on: it fails both times and leaves mailboxes 1 and 2 as they
   were. */
static void assert_missing_body_refused(const char *sql)
{
	struct sbx_mailbox before[2], mb;
	unsigned int fk, i;
	int rc;

	for (i = 0; i < 2; i++)
		before[i] = get_mailbox(i + 1);
	for (fk = 0; fk < 2; fk++) {
		rc = operator_sql(sql, fk == 1, NULL);
		cr_assert_eq(rc, SQLITE_CONSTRAINT, "%s, foreign_keys %u: %d",
			     sql, fk, rc);
		for (i = 0; i < 2; i++) {
			mb = get_mailbox(i + 1);
			cr_assert(mb.messages == before[i].messages &&
				  mb.unseen == before[i].unseen &&
				  mb.vsize == before[i].vsize &&
				  mb.psize == before[i].psize &&
				  mb.uidnext == before[i].uidnext &&
				  mb.highestmodseq == before[i].highestmodseq,
				  "%s changed mailbox %u", sql, i + 1);
		}
		assert_counters_exact(sql);
	}
}

/* A body that doesn't exist makes vsize and psize NULL, so the
   statement fails and changes nothing, whether foreign_keys would have
   caught it or not. Under INSERT OR REPLACE (which replaces a NULL by
   the column's default) uidnext and highestmodseq still never go
   back. */
Test(msg, a_missing_body_fails_the_statement)
{
	int64_t a = fixture_mailbox("a");
	struct sbx_mailbox before, mb;

	(void)fixture_mailbox("b");
	(void)fixture_append_text(a, "kept\r\n", 0);
	assert_missing_body_refused("INSERT INTO messages(mailbox_id, uid,"
				    " body_id, guid, modseq, received_date,"
				    " save_date)"
				    " VALUES (1, 50, 9999, 'g', 1, 1, 1)");
	assert_missing_body_refused("UPDATE messages SET body_id = 9999");
	assert_missing_body_refused("UPDATE messages SET body_id = 9999,"
				    " mailbox_id = 2");

	before = get_mailbox(a);
	cr_assert_eq(operator_sql("INSERT OR REPLACE INTO messages(mailbox_id,"
				  " uid, body_id, guid, modseq,"
				  " received_date, save_date)"
				  " VALUES (1, 50, 9999, 'g', 1, 1, 1)", false,
				  NULL), SQLITE_OK);
	mb = get_mailbox(a);
	cr_assert_eq(mb.messages, before.messages + 1);
	cr_assert_eq(mb.uidnext, 51);
	cr_assert_eq(mb.highestmodseq, before.highestmodseq);
}

/* Setting a message's body to the one it has, alone or with a move,
   keeps the body: the reference is never dropped to zero on the way. */
Test(msg, a_row_moved_onto_its_own_body_keeps_it)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	int64_t body, chunks;

	(void)fixture_append_text(a, "only reference\r\n", 0);
	body = fixture_sql_int("SELECT body_id FROM messages");
	chunks = fixture_sql_int("SELECT count(*) FROM body_chunks");
	cr_assert_eq(refcount(body), 1);

	cr_assert_eq(operator_sql("UPDATE messages SET body_id = body_id",
				  true, NULL), SQLITE_OK);
	cr_assert_eq(refcount(body), 1);
	assert_counters_exact("the same body");

	cr_assert_eq(operator_sql("UPDATE messages SET mailbox_id = 2,"
				  " body_id = (SELECT id FROM bodies)", false,
				  NULL), SQLITE_OK);
	cr_assert_eq(refcount(body), 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"),
		     chunks);
	cr_assert_eq(get_mailbox(a).messages, 0);
	cr_assert_eq(get_mailbox(b).messages, 1);
	cr_assert_eq(get_mailbox(b).vsize, 16);
	assert_counters_exact("moved with the same body");
}

/* Random operator statements over three mailboxes sharing five bodies:
   inserts sharing a body, deletes, \Seen turned over, moves with flag
   and UID changes, body changes with flag changes, UID changes,
   keywords. A statement may
   fail (a UID taken); either way the counters stay exact. */
Test(msg, random_plain_sql_keeps_the_counters_exact)
{
	static const char *const texts[] = {
		"", "one\r\n", "two two\r\n", "three three three\r\n", "4\r\n",
	};
	uint32_t seed = 20250917, state = seed, op, m, n, r[4];
	int64_t box[3];
	char sql[512], label[640];
	unsigned int i, j, ok = 0;

	box[0] = fixture_mailbox("A");
	box[1] = fixture_mailbox("B");
	box[2] = fixture_mailbox("C/D");
	fixture_begin();
	for (i = 0; i < 5; i++) {
		(void)fixture_append(box[i % 3],
				     body_with_virtual_extra(texts[i], i),
				     i % 2 ? SBX_FLAG_SEEN : 0);
	}
	fixture_commit();
	for (i = 0; i < 150; i++) {
		op = model_rand(&state) % 8;
		m = model_rand(&state) % 3 + 1;
		n = model_rand(&state) % 3 + 1;
		for (j = 0; j < 4; j++)
			r[j] = model_rand(&state);
		switch (op) {
		case 0:
		case 1:
			snprintf(sql, sizeof(sql),
				 "INSERT INTO messages(mailbox_id, uid,"
				 " body_id, guid, flags, modseq, received_date,"
				 " save_date) SELECT %u, (SELECT uidnext FROM"
				 " mailboxes WHERE id = %u) + %u, body_id, 'r',"
				 " %u, %u, 1, 1 FROM messages ORDER BY uid"
				 " LIMIT 1 OFFSET %u", m, m, r[0] % 3,
				 r[1] % 2 ? 8 : 2, r[2] % 100000, r[3] % 4);
			break;
		case 2:
			snprintf(sql, sizeof(sql), "DELETE FROM messages WHERE"
				 " mailbox_id = %u AND uid %% %u = 0", m,
				 r[0] % 4 + 2);
			break;
		case 3:
			snprintf(sql, sizeof(sql), "UPDATE messages SET"
				 " flags = (flags | 8) - (flags & 8),"
				 " modseq = modseq + %u WHERE mailbox_id = %u"
				 " AND uid %% 2 = %u", r[0] % 70000, m,
				 r[1] % 2);
			break;
		case 4:
			snprintf(sql, sizeof(sql), "UPDATE messages SET"
				 " mailbox_id = %u, uid = uid + %u,"
				 " flags = (flags | 8) - (flags & 8)"
				 " WHERE mailbox_id = %u AND uid %% 3 = %u", n,
				 (r[0] % 5 + 1) * 1000, m, r[1] % 3);
			break;
		case 5:
			snprintf(sql, sizeof(sql), "UPDATE messages SET"
				 " body_id = (SELECT body_id FROM messages"
				 " ORDER BY uid LIMIT 1 OFFSET %u),"
				 " flags = (flags | 8) - (flags & 8)"
				 " WHERE mailbox_id = %u AND uid %% 2 = %u",
				 r[0] % 4, m, r[1] % 2);
			break;
		case 6:
			snprintf(sql, sizeof(sql), "UPDATE messages SET"
				 " uid = uid + %u WHERE mailbox_id = %u",
				 r[0] % 50 + 1, m);
			break;
		default:
			snprintf(sql, sizeof(sql), "UPDATE messages SET"
				 " keywords = 'k%u', mailbox_id = mailbox_id,"
				 " body_id = body_id WHERE mailbox_id = %u",
				 i, m);
			break;
		}
		if (operator_sql(sql, i % 2 == 0, NULL) == SQLITE_OK)
			ok++;
		snprintf(label, sizeof(label), "seed %u, step %u: %s", seed,
			 i, sql);
		assert_counters_exact(label);
	}
	cr_assert_gt(ok, 120, "seed %u: %u statements ran", seed, ok);
	cr_assert_gt(fixture_sql_int("SELECT count(*) FROM messages"), 0,
		     "seed %u: the mailboxes ran empty", seed);
}

Test(msg, pop3_uidl_is_set_and_cleared)
{
	int64_t box = fixture_mailbox("INBOX");
	uint32_t uid = fixture_append_text(box, "Subject: a\r\n\r\nx\r\n", 0);
	struct sbx_msg msg;

	fixture_begin();
	cr_assert_eq(sbx_msg_set_pop3_uidl(fixture_db, box, uid, "UIDL-1"), 1);
	cr_assert_eq(sbx_msg_set_pop3_uidl(fixture_db, box, uid + 5, "x"), 0);
	fixture_commit();
	cr_assert_eq(sbx_msg_lookup(fixture_db, box, uid, &msg), 1);
	cr_assert_str_eq(msg.pop3_uidl, "UIDL-1");
	fixture_begin();
	cr_assert_eq(sbx_msg_set_pop3_uidl(fixture_db, box, uid, NULL), 1);
	fixture_commit();
	cr_assert_eq(sbx_msg_lookup(fixture_db, box, uid, &msg), 1);
	cr_assert_null(msg.pop3_uidl);
}

/* COPY and MOVE batches (sbx_msg_copy(), sbx_msg_expunge_copied()). */

/* The batch row copying src_uid of src to uid. */
static struct sbx_msg_copy copy_row(int64_t src, uint32_t src_uid,
				    uint32_t uid, uint64_t modseq)
{
	struct sbx_msg_copy row = {
		.src_mailbox_id = src, .src_uid = src_uid, .uid = uid,
		.flags = SBX_FLAG_FLAGGED, .keywords = "$b $a $b",
		.save_date = 1800000000, .modseq = modseq,
	};

	return row;
}

/* Appends count messages to mailbox_id, each with its own body. */
static void append_many(int64_t mailbox_id, unsigned int count)
{
	char text[64];
	unsigned int i;

	for (i = 0; i < count; i++) {
		snprintf(text, sizeof(text), "body %u\r\n", i);
		fixture_append_text(mailbox_id, text,
				    i % 2 ? SBX_FLAG_SEEN : 0);
	}
}

Test(msg, copy_batch_shares_bodies_and_takes_the_batch_fields)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_msg_copy rows[3];
	struct sbx_msg src, got;
	uint64_t modseq;
	unsigned int i;

	append_many(a, 3);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, b, &modseq), 0);
	for (i = 0; i < 3; i++)
		rows[i] = copy_row(a, i + 1, 10 + 2 * i, modseq);
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 3), 1, "%s",
		     fixture_error());
	fixture_commit();

	for (i = 0; i < 3; i++) {
		cr_assert_eq(sbx_msg_lookup(fixture_db, a, i + 1, &src), 1);
		cr_assert_eq(sbx_msg_lookup(fixture_db, b, 10 + 2 * i, &got),
			     1);
		cr_assert_eq(got.body_id, src.body_id, "the body is shared");
		cr_assert_eq(got.received_date, 1700000000);
		cr_assert_eq(got.save_date, 1800000000);
		cr_assert_eq(got.flags, SBX_FLAG_FLAGGED);
		cr_assert_str_eq(got.keywords, "$a $b", "normalised");
		cr_assert_eq(got.modseq, modseq);
	}
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages m JOIN"
				     " messages s ON s.guid = m.guid AND"
				     " s.body_id = m.body_id WHERE"
				     " m.mailbox_id = 2 AND s.mailbox_id = 1"),
		     3, "GUID and body come from the source");
	cr_assert_eq(fixture_sql_int("SELECT min(refcount) FROM bodies"), 2);
	cr_assert_eq(get_mailbox(b).messages, 3);
	cr_assert_eq(get_mailbox(b).unseen, 3, "\\Seen is the batch's");
	cr_assert_eq(get_mailbox(b).uidnext, 15);
	cr_assert_eq(get_mailbox(b).highestmodseq, modseq);
	cr_assert_eq(get_mailbox(a).messages, 3, "the sources stay");
	fixture_check_invariants();
}

Test(msg, copy_batch_into_its_own_mailbox)
{
	int64_t a = fixture_mailbox("a");
	struct sbx_msg_copy rows[2];

	append_many(a, 2);
	fixture_begin();
	rows[0] = copy_row(a, 1, 3, 1);
	rows[1] = copy_row(a, 2, 4, 1);
	cr_assert_eq(sbx_msg_copy(fixture_db, a, rows, 2), 1, "%s",
		     fixture_error());
	fixture_commit();
	cr_assert_eq(get_mailbox(a).messages, 4);
	cr_assert_eq(fixture_sql_int("SELECT count(DISTINCT guid) FROM"
				     " messages"), 2);
	fixture_check_invariants();
}

Test(msg, copy_batch_with_a_source_gone_comes_up_short)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_msg_copy rows[3];
	unsigned int i;

	append_many(a, 3);
	cr_assert_eq(expunge(a, 2), 1);
	fixture_begin();
	for (i = 0; i < 3; i++)
		rows[i] = copy_row(a, i + 1, i + 1, 1);
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 3), 0);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(get_mailbox(b).messages, 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"
				     " WHERE mailbox_id = 2"), 0);
	fixture_check_invariants();
}

Test(msg, copy_batch_refuses_what_the_schema_would)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("x/b");
	int64_t noselect = b - 1;
	struct sbx_msg_copy rows[2];

	append_many(a, 2);
	append_many(b, 1);
	fixture_begin();
	rows[0] = copy_row(a, 1, 1, 1);
	rows[1] = copy_row(a, 2, 2, 1);
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 2), -1,
		     "UID below UIDNEXT");
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	rows[0].uid = 6;
	rows[1].uid = 5;
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 2), -1, "descending");
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	rows[1].uid = 6;
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 2), -1, "twice");
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	rows[1].uid = 7;
	cr_assert_eq(sbx_msg_copy(fixture_db, noselect, rows, 2), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID, "\\Noselect");
	cr_assert_eq(sbx_msg_copy(fixture_db, b + 50, rows, 2), -1);
	cr_assert_eq(last_error(), SBX_ERR_NOTFOUND);
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 0), 1, "nothing");
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, 2), -1);
	cr_assert_eq(last_error(), SBX_ERR_INTERNAL, "outside a transaction");
	fixture_check_invariants();
}

Test(msg, move_batch_leaves_tombstones_and_one_reference)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	/* more than a statement journal keeps in memory */
	enum { N = 1500 };
	struct sbx_msg_copy *rows = calloc(N, sizeof(*rows));
	uint64_t modseq_a, modseq_b;
	unsigned int i;

	cr_assert_not_null(rows);
	append_many(a, N);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, b, &modseq_b), 0);
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, a, &modseq_a), 0);
	for (i = 0; i < N; i++)
		rows[i] = copy_row(a, i + 1, i + 1, modseq_b);
	cr_assert_eq(sbx_msg_copy(fixture_db, b, rows, N), 1, "%s",
		     fixture_error());
	cr_assert_eq(sbx_msg_expunge_copied(fixture_db, a, rows, N, modseq_a),
		     1, "%s", fixture_error());
	fixture_commit();
	free(rows);

	cr_assert_eq(get_mailbox(a).messages, 0);
	cr_assert_eq(get_mailbox(a).vsize, 0);
	cr_assert_eq(get_mailbox(b).messages, N);
	cr_assert_eq(get_mailbox(b).unseen, N);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged WHERE"
				     " mailbox_id = 1 AND"
				     " guid LIKE 'guid-1-%'"), N);
	cr_assert_eq(fixture_sql_int("SELECT count(DISTINCT modseq) FROM"
				     " expunged"), 1);
	cr_assert_eq(fixture_sql_int("SELECT modseq FROM expunged LIMIT 1"),
		     (int64_t)modseq_a);
	cr_assert_eq(get_mailbox(a).highestmodseq, modseq_a);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), N);
	cr_assert_eq(fixture_sql_int("SELECT max(refcount) FROM bodies"), 1);
	fixture_check_invariants();
}

Test(msg, move_batch_with_a_source_gone_comes_up_short)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_msg_copy rows[2];

	append_many(a, 2);
	fixture_begin();
	rows[0] = copy_row(a, 1, 1, 1);
	rows[1] = copy_row(a, 2, 2, 1);
	cr_assert_eq(sbx_msg_expunge(fixture_db, a, 2, 1), 1);
	cr_assert_eq(sbx_msg_expunge_copied(fixture_db, a, rows, 2, 1), 0);
	sbx_tx_rollback(fixture_db);
	rows[1].src_mailbox_id = b;
	fixture_begin();
	cr_assert_eq(sbx_msg_expunge_copied(fixture_db, a, rows, 2, 1), -1,
		     "a row of another mailbox");
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(get_mailbox(a).messages, 2);
	fixture_check_invariants();
}

/* sbx_msg_move(): the rows change folder, ending as a copy and an
   expunge would leave them. */
Test(msg, move_takes_the_batch_fields_and_leaves_tombstones)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_msg_copy rows[3];
	struct sbx_msg src[3], got;
	uint64_t modseq_a, modseq_b;
	unsigned int i;

	append_many(a, 4);
	for (i = 0; i < 3; i++)
		cr_assert_eq(sbx_msg_lookup(fixture_db, a, i + 1, &src[i]), 1);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, b, &modseq_b), 0);
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, a, &modseq_a), 0);
	for (i = 0; i < 3; i++)
		rows[i] = copy_row(a, i + 1, 10 + 2 * i, modseq_b);
	cr_assert_eq(sbx_msg_move(fixture_db, b, rows, 3, modseq_a), 1, "%s",
		     fixture_error());
	fixture_commit();

	for (i = 0; i < 3; i++) {
		cr_assert_eq(sbx_msg_lookup(fixture_db, a, i + 1, &got), 0);
		cr_assert_eq(sbx_msg_lookup(fixture_db, b, 10 + 2 * i, &got),
			     1);
		cr_assert_eq(got.body_id, src[i].body_id);
		cr_assert_str_eq(got.guid, src[i].guid);
		cr_assert_eq(got.received_date, src[i].received_date);
		cr_assert_eq(got.save_date, 1800000000);
		cr_assert_eq(got.flags, SBX_FLAG_FLAGGED);
		cr_assert_str_eq(got.keywords, "$a $b", "normalised");
		cr_assert_eq(got.modseq, modseq_b);
	}
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged WHERE"
				     " mailbox_id = 1 AND modseq ="
				     " (SELECT highestmodseq FROM mailboxes"
				     " WHERE id = 1) AND guid IS NOT NULL"), 3);
	cr_assert_eq(get_mailbox(a).messages, 1);
	cr_assert_eq(get_mailbox(a).highestmodseq, modseq_a);
	cr_assert_eq(get_mailbox(b).messages, 3);
	cr_assert_eq(get_mailbox(b).unseen, 3, "\\Seen is the batch's");
	cr_assert_eq(get_mailbox(b).uidnext, 15);
	cr_assert_eq(get_mailbox(b).highestmodseq, modseq_b);
	cr_assert_eq(fixture_sql_int("SELECT sum(refcount) FROM bodies"), 4,
		     "one reference each, kept");
	fixture_check_invariants();
}

Test(msg, move_within_one_folder_gives_new_uids)
{
	int64_t a = fixture_mailbox("a");
	struct sbx_msg_copy rows[2];
	uint64_t modseq;

	append_many(a, 3);
	fixture_begin();
	cr_assert_eq(sbx_mailbox_modseq_alloc(fixture_db, a, &modseq), 0);
	rows[0] = copy_row(a, 1, 4, modseq);
	rows[1] = copy_row(a, 3, 5, modseq);
	cr_assert_eq(sbx_msg_move(fixture_db, a, rows, 2, modseq), 1, "%s",
		     fixture_error());
	fixture_commit();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 3);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"
				     " WHERE uid IN (2, 4, 5)"), 3);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged"
				     " WHERE uid IN (1, 3)"), 2);
	cr_assert_eq(get_mailbox(a).messages, 3);
	cr_assert_eq(get_mailbox(a).uidnext, 6);
	cr_assert_eq(get_mailbox(a).highestmodseq, modseq);
	fixture_check_invariants();
}

Test(msg, move_with_a_source_gone_or_mixed_comes_up_short)
{
	int64_t a = fixture_mailbox("a"), b = fixture_mailbox("b");
	struct sbx_msg_copy rows[2];

	append_many(a, 2);
	append_many(b, 1);
	cr_assert_eq(expunge(a, 2), 1);
	fixture_begin();
	rows[0] = copy_row(a, 1, 5, 1);
	rows[1] = copy_row(a, 2, 6, 1);
	cr_assert_eq(sbx_msg_move(fixture_db, b, rows, 2, 1), 0);
	sbx_tx_rollback(fixture_db);
	fixture_begin();
	rows[1] = copy_row(b, 1, 6, 1);
	cr_assert_eq(sbx_msg_move(fixture_db, b, rows, 2, 1), -1,
		     "two source folders");
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	cr_assert_eq(sbx_msg_move(fixture_db, b, rows, 1, 1), 1, "%s",
		     fixture_error());
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(get_mailbox(a).messages, 1);
	cr_assert_eq(get_mailbox(b).messages, 1);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM expunged WHERE"
				     " mailbox_id = 1"), 1);
	fixture_check_invariants();
}

Test(msg, uid_iteration_lists_a_range)
{
	int64_t a = fixture_mailbox("a");
	struct sbx_uid_iter *iter, *nested;
	uint32_t uid, expect[] = { 2, 4, 5 };
	unsigned int i;

	append_many(a, 6);
	cr_assert_eq(expunge(a, 3), 1);
	cr_assert_eq(sbx_uid_iter_init(fixture_db, a, 2, 5, &iter), 0);
	cr_assert_eq(sbx_uid_iter_init(fixture_db, a, 1, 1, &nested), -1);
	cr_assert_eq(last_error(), SBX_ERR_INTERNAL, "one at a time");
	for (i = 0; i < 3; i++) {
		cr_assert_eq(sbx_uid_iter_next(iter, &uid), 1);
		cr_assert_eq(uid, expect[i]);
	}
	cr_assert_eq(sbx_uid_iter_next(iter, &uid), 0);
	cr_assert_eq(sbx_uid_iter_next(iter, &uid), 0);
	cr_assert_eq(sbx_uid_iter_deinit(&iter), 0);
	cr_assert_null(iter);
	cr_assert_eq(sbx_uid_iter_init(fixture_db, a, 7, 100, &iter), 0);
	cr_assert_eq(sbx_uid_iter_next(iter, &uid), 0);
	cr_assert_eq(sbx_uid_iter_deinit(&iter), 0);
}
