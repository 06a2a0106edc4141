/* SPDX-License-Identifier: MIT */
/* sbx-body.c: chunked bodies, deduplication by hash, reference counts
   and reading any range back. */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "sbx-private.h"
#include "sbx-body.h"
#include "sbx-hash.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fixture.h"

TestSuite(body, .init = fixture_db_setup, .fini = fixture_db_teardown);

static enum sbx_error last_error(void)
{
	const char *msg;

	return sbx_db_last_error(fixture_db, &msg);
}

static void sha256_of(const void *data, size_t size,
		      uint8_t digest[SBX_SHA256_SIZE])
{
	struct sbx_hash *hash = sbx_hash_alloc();

	cr_assert_not_null(hash);
	sbx_hash_update(hash, data, size);
	sbx_hash_final(hash, digest);
	sbx_hash_free(&hash);
}

/* Deterministic bytes that differ at every offset of a chunk. */
static unsigned char *make_data(size_t size, unsigned int seed)
{
	unsigned char *data = malloc(size);
	size_t i;

	cr_assert_not_null(data);
	for (i = 0; i < size; i++) {
		seed = seed * 1103515245U + 12345U;
		data[i] = (unsigned char)(seed >> 16);
	}
	return data;
}

static struct sbx_body get_body(int64_t id)
{
	struct sbx_body body;

	cr_assert_eq(sbx_body_lookup(fixture_db, id, &body), 1, "body %lld",
		     (long long)id);
	return body;
}

Test(body, identical_body_is_found_by_its_hash_and_size)
{
	const char *text = "Subject: same\r\n\r\nsame\r\n";
	uint8_t digest[SBX_SHA256_SIZE];
	struct sbx_body body;
	int64_t id, found, inbox;

	sha256_of(text, strlen(text), digest);
	cr_assert_eq(sbx_body_lookup_hash(fixture_db, digest, strlen(text),
					  &found), 0);
	fixture_begin();
	id = fixture_body(text, strlen(text), 1);
	fixture_commit();
	cr_assert_eq(sbx_body_lookup_hash(fixture_db, digest, strlen(text),
					  &found), 0,
		     "a body no message uses is a save's, not yet shared");
	body = get_body(id);
	cr_assert(body.has_sha256);
	cr_assert_arr_eq(body.sha256, digest, sizeof(digest));
	cr_assert_eq(body.physical_size, strlen(text));
	cr_assert_eq(body.refcount, 0);

	inbox = fixture_mailbox("INBOX");
	fixture_begin();
	(void)fixture_append(inbox, id, 0);
	fixture_commit();
	cr_assert_eq(sbx_body_lookup_hash(fixture_db, digest, strlen(text),
					  &found), 1);
	cr_assert_eq(found, id);
	cr_assert_eq(sbx_body_lookup_hash(fixture_db, digest,
					  strlen(text) + 1, &found), 0,
		     "the size is part of the identity");
}

Test(body, unused_body_is_deleted_and_a_used_one_kept)
{
	int64_t unused, used, inbox;

	inbox = fixture_mailbox("INBOX");
	fixture_begin();
	unused = fixture_body("Subject: a\r\n\r\na\r\n", 17, 1);
	used = fixture_body("Subject: b\r\n\r\nb\r\n", 17, 1);
	(void)fixture_append(inbox, used, 0);
	cr_assert_eq(sbx_body_set_parsed(fixture_db, unused, "x\n", 2,
					 NULL, NULL), 0, "%s",
		     fixture_error());
	cr_assert_eq(sbx_body_delete_unused(fixture_db, unused), 1, "%s",
		     fixture_error());
	cr_assert_eq(sbx_body_delete_unused(fixture_db, used), 0,
		     "a message uses it");
	cr_assert_eq(sbx_body_delete_unused(fixture_db, unused), 0,
		     "gone already");
	fixture_commit();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"
				     " WHERE body_id NOT IN"
				     " (SELECT id FROM bodies)"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_parsed"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 1);
	cr_assert_eq(sbx_body_delete_unused(fixture_db, used), -1,
		     "outside a write transaction");
	fixture_check_invariants();
}

Test(body, body_without_hash_is_never_found_by_hash)
{
	uint8_t digest[SBX_SHA256_SIZE];
	int64_t id, found;

	sha256_of("secret", 6, digest);
	fixture_begin();
	id = fixture_body("secret", 6, 0);
	fixture_commit();
	cr_assert(!get_body(id).has_sha256);
	cr_assert_eq(sbx_body_lookup_hash(fixture_db, digest, 6, &found), 0);
}

Test(body, refcounts_equal_references_and_last_one_frees_the_body)
{
	int64_t inbox = fixture_mailbox("INBOX");
	int64_t sent = fixture_mailbox("Sent");
	const char *text = "Subject: shared\r\n\r\nshared\r\n";
	struct sbx_body unused;
	uint32_t u1, u2, u3;
	int64_t body;
	char buf[8];
	size_t n;

	fixture_begin();
	body = fixture_body(text, strlen(text), 1);
	u1 = fixture_append(inbox, body, 0);
	u2 = fixture_append(inbox, body, 0);
	u3 = fixture_append(sent, body, SBX_FLAG_SEEN);
	fixture_commit();
	cr_assert_eq(get_body(body).refcount, 3);
	fixture_check_invariants();

	fixture_begin();
	cr_assert_eq(sbx_msg_expunge(fixture_db, inbox, u1, 1 << 20), 1);
	cr_assert_eq(sbx_msg_expunge(fixture_db, inbox, u2, 1 << 20), 1);
	fixture_commit();
	cr_assert_eq(get_body(body).refcount, 1);
	fixture_check_invariants();

	fixture_begin();
	cr_assert_eq(sbx_msg_expunge(fixture_db, sent, u3, 1 << 20), 1);
	fixture_commit();
	cr_assert_eq(sbx_body_lookup(fixture_db, body, &unused), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"), 0);
	cr_assert_eq(sbx_body_read(fixture_db, body, 0, buf, sizeof(buf), &n),
		     0, "a freed body reads as missing");
	fixture_check_invariants();
}

Test(body, multi_chunk_body_reads_back_identical_at_any_offset)
{
	const size_t size = 3 * SBX_BODY_CHUNK_SIZE + SBX_BODY_CHUNK_SIZE / 2;
	static const uint64_t offsets[] = {
		0, 1, SBX_BODY_CHUNK_SIZE - 1, SBX_BODY_CHUNK_SIZE,
		SBX_BODY_CHUNK_SIZE + 17, 2 * SBX_BODY_CHUNK_SIZE - 3,
		3 * SBX_BODY_CHUNK_SIZE + 5,
	};
	static const size_t lengths[] = {
		1, 100, SBX_BODY_CHUNK_SIZE, 2 * SBX_BODY_CHUNK_SIZE + 3,
		4 * SBX_BODY_CHUNK_SIZE,
	};
	unsigned char *data = make_data(size, 1), *buf;
	size_t i, j, n, want;
	int64_t id;

	fixture_begin();
	id = fixture_body(data, size, 1);
	fixture_commit();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"), 4);
	cr_assert_eq(fixture_sql_int("SELECT max(seq) FROM body_chunks"), 3);
	cr_assert_eq(fixture_sql_int("SELECT sum(length(data))"
				     " FROM body_chunks"), (int64_t)size);

	buf = malloc(4 * SBX_BODY_CHUNK_SIZE);
	cr_assert_not_null(buf);
	for (i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		for (j = 0; j < sizeof(lengths) / sizeof(lengths[0]); j++) {
			want = size - offsets[i] < lengths[j] ?
				size - offsets[i] : lengths[j];
			cr_assert_eq(sbx_body_read(fixture_db, id, offsets[i],
						   buf, lengths[j], &n), 1);
			cr_assert_eq(n, want, "offset %zu length %zu",
				     (size_t)offsets[i], lengths[j]);
			cr_assert(memcmp(buf, data + offsets[i], n) == 0,
				  "offset %zu length %zu",
				  (size_t)offsets[i], lengths[j]);
		}
	}
	cr_assert_eq(sbx_body_read(fixture_db, id, size, buf, 10, &n), 1);
	cr_assert_eq(n, 0, "end of body");
	cr_assert_eq(sbx_body_read(fixture_db, id, size + 99, buf, 10, &n), 1);
	cr_assert_eq(n, 0, "past the end");
	free(buf);
	free(data);
}

Test(body, writes_of_any_size_store_the_same_chunks)
{
	const size_t size = 2 * SBX_BODY_CHUNK_SIZE + 1000;
	unsigned char *data = make_data(size, 7), *buf;
	struct sbx_body_writer *writer;
	size_t pos = 0, step = 1, n, total = 0;
	int64_t id;

	fixture_begin();
	cr_assert_eq(sbx_body_writer_open(fixture_db, NULL, size, size + 10,
					  &writer), 0);
	while (pos < size) {
		n = size - pos < step ? size - pos : step;
		cr_assert_eq(sbx_body_writer_write(writer, data + pos, n), 0,
			     "%s", fixture_error());
		pos += n;
		step = step * 7 + 3;
	}
	cr_assert_eq(sbx_body_writer_close(&writer, &id), 0, "%s",
		     fixture_error());
	cr_assert_null(writer);
	fixture_commit();
	cr_assert_eq(get_body(id).virtual_size, size + 10);
	buf = malloc(size);
	cr_assert_not_null(buf);
	/* Read it back in odd pieces, as an istream would. */
	while (total < size) {
		cr_assert_eq(sbx_body_read(fixture_db, id, total, buf + total,
					   4099, &n), 1);
		cr_assert_gt(n, 0);
		total += n;
	}
	cr_assert(memcmp(buf, data, size) == 0);
	free(buf);
	free(data);
}

Test(body, zero_length_body_has_no_chunks)
{
	char buf[4];
	size_t n = 99;
	int64_t id;

	fixture_begin();
	id = fixture_body("", 0, 1);
	fixture_commit();
	cr_assert_eq(get_body(id).physical_size, 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"), 0);
	cr_assert_eq(sbx_body_read(fixture_db, id, 0, buf, sizeof(buf), &n),
		     1);
	cr_assert_eq(n, 0);
}

Test(body, writer_refuses_bytes_beyond_or_short_of_the_size)
{
	struct sbx_body_writer *writer;
	int64_t id;

	fixture_begin();
	cr_assert_eq(sbx_body_writer_open(fixture_db, NULL, 4, 4, &writer),
		     0);
	cr_assert_eq(sbx_body_writer_write(writer, "12345", 5), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);
	cr_assert_eq(sbx_body_writer_close(&writer, &id), -1);
	cr_assert_null(writer);

	cr_assert_eq(sbx_body_writer_open(fixture_db, NULL, 4, 4, &writer),
		     0);
	cr_assert_eq(sbx_body_writer_write(writer, "123", 3), 0);
	cr_assert_eq(sbx_body_writer_close(&writer, &id), -1);
	cr_assert_eq(last_error(), SBX_ERR_INVALID);

	cr_assert_eq(sbx_body_writer_open(fixture_db, NULL, 4, 4, &writer),
		     0);
	sbx_body_writer_abort(&writer);
	cr_assert_null(writer);
	sbx_body_writer_abort(&writer);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 0);
}

Test(body, writer_needs_a_write_transaction)
{
	struct sbx_body_writer *writer;

	cr_assert_eq(sbx_body_writer_open(fixture_db, NULL, 1, 1, &writer),
		     -1);
	cr_assert_null(writer);
	cr_assert_eq(last_error(), SBX_ERR_INTERNAL);
}

Test(body, reading_a_missing_body_returns_zero)
{
	char buf[4];
	size_t n = 99;

	cr_assert_eq(sbx_body_read(fixture_db, 12345, 0, buf, sizeof(buf),
				   &n), 0);
	cr_assert_eq(n, 0);
}

Test(body, rolled_back_body_leaves_nothing)
{
	unsigned char *data = make_data(SBX_BODY_CHUNK_SIZE * 2, 3);

	fixture_begin();
	fixture_body(data, SBX_BODY_CHUNK_SIZE * 2, 1);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM bodies"), 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_chunks"), 0);
	free(data);
}

Test(body, parsed_fields_read_back_and_go_with_the_body)
{
	int64_t inbox = fixture_mailbox("INBOX");
	const char *text = "Subject: parsed\r\n\r\nparsed\r\n";
	const char *hdr = "Subject: parsed\r\n";
	const char *bs = "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 8 1)";
	const char *env = "NIL \"parsed\" NIL NIL NIL NIL NIL NIL NIL NIL";
	const void *data;
	size_t size;
	uint32_t uid;
	int64_t body;

	fixture_begin();
	body = fixture_body(text, strlen(text), 1);
	uid = fixture_append(inbox, body, 0);
	cr_assert_eq(sbx_body_set_parsed(fixture_db, body, hdr, strlen(hdr),
					 bs, env), 0, "%s", fixture_error());
	/* a second save sharing the body keeps the first row */
	cr_assert_eq(sbx_body_set_parsed(fixture_db, body, "X", 1, NULL,
					 NULL), 0);
	fixture_commit();

	cr_assert_eq(sbx_body_get_parsed(fixture_db, body,
					 SBX_BODY_PARSED_FIELD_HEADERS,
					 &data, &size), 1);
	cr_assert_eq(size, strlen(hdr));
	cr_assert_str_eq(data, hdr);
	cr_assert_eq(sbx_body_get_parsed(fixture_db, body,
					 SBX_BODY_PARSED_FIELD_BODYSTRUCTURE,
					 &data, &size), 1);
	cr_assert_str_eq(data, bs);
	cr_assert_eq(sbx_body_get_parsed(fixture_db, body,
					 SBX_BODY_PARSED_FIELD_ENVELOPE,
					 &data, &size), 1);
	cr_assert_str_eq(data, env);

	fixture_begin();
	cr_assert_eq(sbx_msg_expunge(fixture_db, inbox, uid, 1 << 20), 1);
	fixture_commit();
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM body_parsed"), 0,
		     "freeing the body frees its parsed fields");
	cr_assert_eq(sbx_body_get_parsed(fixture_db, body,
					 SBX_BODY_PARSED_FIELD_HEADERS,
					 &data, &size), 0);
}

/* NULL is "not kept" (readers parse), a zero-length value "none of the
   fields is there" (readers parse nothing). */
Test(body, parsed_fields_tell_empty_from_not_kept)
{
	const char *text = "x\r\n";
	const void *data;
	size_t size = 99;
	int64_t body;

	fixture_begin();
	body = fixture_body(text, strlen(text), 1);
	cr_assert_eq(sbx_body_set_parsed(fixture_db, body, "", 0, NULL, NULL),
		     0);
	fixture_commit();
	cr_assert_eq(sbx_body_get_parsed(fixture_db, body,
					 SBX_BODY_PARSED_FIELD_HEADERS,
					 &data, &size), 1);
	cr_assert_eq(size, 0);
	cr_assert_str_eq(data, "");
	cr_assert_eq(sbx_body_get_parsed(fixture_db, body,
					 SBX_BODY_PARSED_FIELD_BODYSTRUCTURE,
					 &data, &size), 0);
	cr_assert_eq(sbx_body_get_parsed(fixture_db, body + 1,
					 SBX_BODY_PARSED_FIELD_HEADERS,
					 &data, &size), 0, "no row");
}

Test(body, parsed_fields_need_a_write_transaction)
{
	cr_assert_eq(sbx_body_set_parsed(fixture_db, 1, "", 0, NULL, NULL),
		     -1);
	cr_assert_eq(last_error(), SBX_ERR_INTERNAL);
}
