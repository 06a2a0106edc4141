/* SPDX-License-Identifier: MIT */
/* Message bodies through save and read-back: the first input byte picks
   the write piece size and whether the rest is repeated past a chunk
   boundary (SBX_BODY_CHUNK_SIZE), the second the read piece size and
   whether the body is hashed (deduplicated); the rest is the body. It is
   written in pieces, attached to a message and must read back byte for
   byte, ending exactly at its size; a hashed body is found by its hash. */
#include <stdlib.h>
#include <string.h>

#include "sbx-body.h"
#include "sbx-hash.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t save(const uint8_t *body, size_t size, size_t piece,
		    const uint8_t *digest)
{
	struct sbx_db *db = fuzz_db();
	struct sbx_body_writer *writer;
	int64_t body_id;
	size_t off;

	if (sbx_body_writer_open(db, digest, size, size,
				 &writer) < 0)
		fuzz_fail("writer open");
	for (off = 0; off < size; off += piece) {
		size_t n = size - off < piece ? size - off : piece;

		if (sbx_body_writer_write(writer, body + off, n) < 0)
			fuzz_fail("writer write");
	}
	if (sbx_body_writer_close(&writer, &body_id) < 0)
		fuzz_fail("writer close");
	return body_id;
}

static void read_back(int64_t body_id, const uint8_t *body, size_t size,
		      size_t piece)
{
	uint8_t *buf = malloc(piece);
	uint64_t off = 0;
	size_t got;

	if (buf == NULL)
		fuzz_fail("out of memory");
	for (;;) {
		if (sbx_body_read(fuzz_db(), body_id, off, buf, piece,
				  &got) != 1)
			fuzz_fail("read");
		if (got == 0)
			break;
		if (got > piece || off + got > size ||
		    memcmp(buf, body + off, got) != 0)
			fuzz_fail("a body reads back different");
		off += got;
	}
	if (off != size)
		fuzz_fail("a body reads back short");
	/* Past the end: nothing, not an error. */
	if (sbx_body_read(fuzz_db(), body_id, size + 1, buf, piece,
			  &got) != 1 || got != 0)
		fuzz_fail("read past the end");
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sbx_db *db = fuzz_db();
	struct sbx_msg_new msg = { 0 };
	struct sbx_mailbox mb;
	uint8_t digest[SBX_SHA256_SIZE];
	size_t write_piece, read_piece, body_size;
	struct sbx_hash *hash;
	uint8_t *body;
	bool hashed;
	int64_t body_id, found_id;

	if (size < 2)
		return 0;
	hashed = (data[1] & 1) != 0;
	read_piece = (size_t)(data[1] >> 1) + 1;
	write_piece = (size_t)(data[0] & 0x7f) + 1;
	body_size = size - 2;
	if ((data[0] & 0x80) != 0 && size > 2) {
		/* Pieces of a few KiB to 512 KiB across the boundary. */
		body_size = SBX_BODY_CHUNK_SIZE + size - 2;
		read_piece *= 4099;
		write_piece *= 4099;
	}
	body = malloc(body_size + 1);
	if (body == NULL)
		fuzz_fail("out of memory");
	for (size_t off = 0; off < body_size; off += size - 2) {
		size_t n = body_size - off < size - 2 ? body_size - off
						      : size - 2;

		memcpy(body + off, data + 2, n);
	}
	hash = sbx_hash_alloc();
	if (hash == NULL)
		fuzz_fail("hash");
	sbx_hash_update(hash, body, body_size);
	sbx_hash_final(hash, digest);
	sbx_hash_free(&hash);

	fuzz_begin();
	body_id = save(body, body_size, write_piece, hashed ? digest : NULL);
	if (sbx_mailbox_lookup_id(db, fuzz_inbox(), &mb) != 1 ||
	    sbx_mailbox_modseq_alloc(db, fuzz_inbox(), &msg.modseq) < 0)
		fuzz_fail("mailbox");
	msg.uid = mb.uidnext;
	msg.body_id = body_id;
	msg.guid = "fuzz-guid";
	if (sbx_msg_append(db, fuzz_inbox(), &msg) < 0)
		fuzz_fail("append");
	read_back(body_id, body, body_size, read_piece);
	if (hashed && (sbx_body_lookup_hash(db, digest, body_size,
					    &found_id) != 1 ||
		       found_id != body_id))
		fuzz_fail("a hashed body is not found by its hash");
	fuzz_rollback();
	free(body);
	return 0;
}
