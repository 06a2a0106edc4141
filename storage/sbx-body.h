/* SPDX-License-Identifier: MIT */
/* Message bodies: stored once per user, shared by reference count.

   A body is a row of bodies (sizes, SHA-256, refcount) and its content in
   body_chunks, SBX_BODY_CHUNK_SIZE bytes a row, so that reading any offset
   of a large body costs one indexed lookup and no process ever holds a
   whole large body in memory. Bodies are immutable once written. */
#ifndef SBX_BODY_H
#define SBX_BODY_H

#include "sbx-common.h"

struct sbx_db;

#define SBX_BODY_CHUNK_SIZE (256 * 1024)

struct sbx_body {
	int64_t id;
	uint64_t physical_size;
	uint64_t virtual_size;
	uint32_t refcount;
	bool has_sha256;
	uint8_t sha256[SBX_SHA256_SIZE];
};

/* A body no message uses yet: one a save wrote ahead of its commit (a
   large transaction's bodies are written in batches as they come, so
   that its memory stays bounded) or one left by a process that died
   before committing. Purge and check leave those younger than this
   alone; other writers never share them. */
#define SBX_BODY_UNREFERENCED_GRACE_SECS (24 * 60 * 60)

/* Looks for a stored body with this hash and physical size that a message
   uses: 1 found (and *body_id_r set), 0 not, -1 error. */
int sbx_body_lookup_hash(struct sbx_db *db,
			 const uint8_t sha256[SBX_SHA256_SIZE],
			 uint64_t physical_size, int64_t *body_id_r);
/* 1 found, 0 not (freed), -1 error. */
int sbx_body_lookup(struct sbx_db *db, int64_t body_id,
		    struct sbx_body *body_r);

/* Writes a new body in pieces: open, write in order, close. sha256 may be
   NULL (no dedup: mail_crypt). The body starts with no references; the
   caller inserts the messages that use it in the same transaction. The
   caller holds an SBX_TX_WRITE transaction throughout. close fails with
   SBX_ERR_INVALID if the bytes written differ from physical_size. */
struct sbx_body_writer;
int sbx_body_writer_open(struct sbx_db *db, const uint8_t *sha256,
			 uint64_t physical_size, uint64_t virtual_size,
			 struct sbx_body_writer **writer_r);
int sbx_body_writer_write(struct sbx_body_writer *writer, const void *data,
			  size_t size);
int sbx_body_writer_close(struct sbx_body_writer **writer,
			  int64_t *body_id_r);
/* Frees a writer without finishing; the caller rolls the transaction back. */
void sbx_body_writer_abort(struct sbx_body_writer **writer);

/* Deletes body_id with its chunks and parsed fields if no message uses it
   (a save's body written ahead of a commit that won't come). The caller
   holds an SBX_TX_WRITE transaction. Returns 1 deleted, 0 not (in use, or
   gone), -1 error. */
int sbx_body_delete_unused(struct sbx_db *db, int64_t body_id);

/* Reads up to size bytes at offset into buf; *read_r is 0 at the end of
   the body. Returns 1, or 0 if the body does not exist (it was freed), or
   -1 on error. Runs outside any transaction as one short statement. */
int sbx_body_read(struct sbx_db *db, int64_t body_id, uint64_t offset,
		  void *buf, size_t size, size_t *read_r);

/* Parsed fields kept with a body (schema version 3), so that reading a
   message's ENVELOPE, BODYSTRUCTURE or common header fields doesn't parse
   its content. SBX_BODY_PARSED_HEADERS is the header set, lowercase: the
   envelope's fields and those mail clients fetch for their message
   lists. Changing it takes a migration that clears the column. */
#define SBX_BODY_PARSED_HEADERS \
	"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", \
	"in-reply-to", "message-id", "references", "content-type", \
	"priority", "x-priority", "importance", "newsgroups", "list-id"

enum sbx_body_parsed_field {
	/* the lines of the set's fields, raw, in order, LF-ended */
	SBX_BODY_PARSED_FIELD_HEADERS,
	/* the IMAP BODYSTRUCTURE, extended */
	SBX_BODY_PARSED_FIELD_BODYSTRUCTURE,
	/* the IMAP ENVELOPE */
	SBX_BODY_PARSED_FIELD_ENVELOPE,
};

/* Keeps the parsed fields of body_id; any may be NULL (not kept), and
   zero-length headers mean none of the set's fields is there. A body
   that has them already keeps its own. The caller holds an SBX_TX_WRITE
   transaction. Returns 0 or -1. */
int sbx_body_set_parsed(struct sbx_db *db, int64_t body_id,
			const void *headers, size_t headers_size,
			const char *bodystructure, const char *envelope);
/* Looks up one parsed field of body_id: 1 with *data_r (NUL-terminated
   after *size_r bytes; borrowed until the next call on the handle), 0 if
   it wasn't kept, -1 on error. */
int sbx_body_get_parsed(struct sbx_db *db, int64_t body_id,
			enum sbx_body_parsed_field field,
			const void **data_r, size_t *size_r);

#endif
