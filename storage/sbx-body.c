/* SPDX-License-Identifier: MIT */
/* Message bodies: writing them in chunks, finding them by hash, reading
   any range of them.

   A body is a bodies row (sizes, optional SHA-256, refcount) and its
   content in body_chunks rows of SBX_BODY_CHUNK_SIZE bytes, seq 0, 1, 2,
   ...; only the last chunk may be shorter, and a zero-length body has no
   chunk. The invariants: a finished body's chunks add up to exactly its
   physical_size (the writer refuses anything else), bodies never change
   once written, and the refcount equals the messages using the body (the
   triggers of sbx-migrations.def; the last reference going frees the
   body and its chunks in the same transaction). Memory stays bounded by
   one chunk per writer and by the caller's buffer per read, whatever the
   size of the message. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-body.h"

struct sbx_body_writer {
	struct sbx_db *db;
	int64_t body_id;
	int64_t next_seq;
	uint64_t physical_size;
	uint64_t written;
	/* The chunk being filled: min(SBX_BODY_CHUNK_SIZE, physical_size)
	   bytes, so a small body costs a small buffer. */
	unsigned char *buf;
	size_t buf_size;
	size_t used;
	bool failed;
};

int sbx_body_lookup_hash(struct sbx_db *db,
			 const uint8_t sha256[SBX_SHA256_SIZE],
			 uint64_t physical_size, int64_t *body_id_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_BODY_LOOKUP_HASH, &stmt) < 0)
		return -1;
	if (sbx_bind_blob(db, stmt, 1, sha256, SBX_SHA256_SIZE) < 0 ||
	    sbx_bind_int64(db, stmt, 2, (int64_t)physical_size) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up body by hash");
	if (ret > 0)
		*body_id_r = sqlite3_column_int64(stmt, 0);
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_body_lookup(struct sbx_db *db, int64_t body_id,
		    struct sbx_body *body_r)
{
	sqlite3_stmt *stmt;
	const void *sha256;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_BODY_LOOKUP, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, body_id) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up body %lld",
					(long long)body_id);
	if (ret > 0) {
		memset(body_r, 0, sizeof(*body_r));
		body_r->id = sqlite3_column_int64(stmt, 0);
		body_r->physical_size = sbx_column_u64(stmt, 1);
		body_r->virtual_size = sbx_column_u64(stmt, 2);
		body_r->refcount = sbx_column_u32(stmt, 3);
		sha256 = sqlite3_column_blob(stmt, 4);
		if (sha256 != NULL &&
		    sqlite3_column_bytes(stmt, 4) == SBX_SHA256_SIZE) {
			memcpy(body_r->sha256, sha256, SBX_SHA256_SIZE);
			body_r->has_sha256 = true;
		}
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_body_insert(struct sbx_db *db, const uint8_t *sha256,
			   uint64_t physical_size, uint64_t virtual_size,
			   int64_t *body_id_r)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_BODY_INSERT, &stmt) < 0)
		return -1;
	if (sbx_bind_blob(db, stmt, 1, sha256, SBX_SHA256_SIZE) == 0 &&
	    sbx_bind_int64(db, stmt, 2, (int64_t)physical_size) == 0 &&
	    sbx_bind_int64(db, stmt, 3, (int64_t)virtual_size) == 0 &&
	    sbx_bind_int64(db, stmt, 4, (int64_t)time(NULL)) == 0)
		ret = sbx_stmt_exec(db, stmt, "store body");
	sbx_stmt_put(db, stmt);
	if (ret == 0)
		*body_id_r = sqlite3_last_insert_rowid(db->sqlite);
	return ret;
}

int sbx_body_writer_open(struct sbx_db *db, const uint8_t *sha256,
			 uint64_t physical_size, uint64_t virtual_size,
			 struct sbx_body_writer **writer_r)
{
	struct sbx_body_writer *writer;

	*writer_r = NULL;
	if (sbx_db_require_write(db, "store body") < 0)
		return -1;
	if (physical_size > INT64_MAX || virtual_size > INT64_MAX) {
		return sbx_error_set(db, SBX_ERR_LIMIT,
				     "store body: size out of range");
	}
	writer = calloc(1, sizeof(*writer));
	if (writer == NULL)
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "store body: out of memory");
	writer->db = db;
	writer->physical_size = physical_size;
	writer->buf_size = physical_size < SBX_BODY_CHUNK_SIZE ?
		(size_t)physical_size : SBX_BODY_CHUNK_SIZE;
	/* malloc(0) may return NULL: keep one byte for an empty body. */
	writer->buf = malloc(writer->buf_size > 0 ? writer->buf_size : 1);
	if (writer->buf == NULL) {
		free(writer);
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "store body: out of memory");
	}
	if (sbx_body_insert(db, sha256, physical_size, virtual_size,
			    &writer->body_id) < 0) {
		free(writer->buf);
		free(writer);
		return -1;
	}
	*writer_r = writer;
	return 0;
}

/* Inserts the next chunk. */
static int sbx_body_writer_insert(struct sbx_body_writer *writer,
				  const void *data, size_t size)
{
	struct sbx_db *db = writer->db;
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_BODY_CHUNK_INSERT, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, writer->body_id) == 0 &&
	    sbx_bind_int64(db, stmt, 2, writer->next_seq) == 0 &&
	    sbx_bind_blob(db, stmt, 3, data, size) == 0) {
		ret = sbx_stmt_exec(db, stmt, "store chunk %lld of body %lld",
				    (long long)writer->next_seq,
				    (long long)writer->body_id);
	}
	sbx_stmt_put(db, stmt);
	if (ret == 0)
		writer->next_seq++;
	return ret;
}

/* Takes what fits of data into the buffer and stores the buffer once it
   holds a whole chunk. Returns the bytes consumed, or -1. */
static ssize_t sbx_body_writer_fill(struct sbx_body_writer *writer,
				    const unsigned char *data, size_t size)
{
	size_t n;

	if (writer->used == 0 && size >= SBX_BODY_CHUNK_SIZE) {
		/* A whole chunk from the caller's memory: no copy. */
		if (sbx_body_writer_insert(writer, data,
					   SBX_BODY_CHUNK_SIZE) < 0)
			return -1;
		return SBX_BODY_CHUNK_SIZE;
	}
	n = writer->buf_size - writer->used;
	if (n > size)
		n = size;
	memcpy(writer->buf + writer->used, data, n);
	writer->used += n;
	if (writer->used == SBX_BODY_CHUNK_SIZE) {
		if (sbx_body_writer_insert(writer, writer->buf,
					   writer->used) < 0)
			return -1;
		writer->used = 0;
	}
	return (ssize_t)n;
}

int sbx_body_writer_write(struct sbx_body_writer *writer, const void *data,
			  size_t size)
{
	const unsigned char *p = data;
	ssize_t n;

	if (writer->failed)
		return -1;
	if (size > writer->physical_size - writer->written) {
		writer->failed = true;
		return sbx_error_set(writer->db, SBX_ERR_INVALID,
			"store body %lld: more than its size of %llu bytes",
			(long long)writer->body_id,
			(unsigned long long)writer->physical_size);
	}
	writer->written += size;
	while (size > 0) {
		n = sbx_body_writer_fill(writer, p, size);
		if (n < 0) {
			writer->failed = true;
			return -1;
		}
		p += n;
		size -= (size_t)n;
	}
	return 0;
}

static void sbx_body_writer_free(struct sbx_body_writer *writer)
{
	free(writer->buf);
	free(writer);
}

int sbx_body_writer_close(struct sbx_body_writer **_writer,
			  int64_t *body_id_r)
{
	struct sbx_body_writer *writer = *_writer;
	int ret = -1;

	if (writer == NULL)
		return -1;
	*_writer = NULL;
	if (writer->failed) {
		/* The cause was recorded when it failed. */
	} else if (writer->written != writer->physical_size) {
		(void)sbx_error_set(writer->db, SBX_ERR_INVALID,
			"store body %lld: %llu bytes written, its size is "
			"%llu", (long long)writer->body_id,
			(unsigned long long)writer->written,
			(unsigned long long)writer->physical_size);
	} else if (writer->used > 0 &&
		   sbx_body_writer_insert(writer, writer->buf,
					  writer->used) < 0) {
		/* recorded */
	} else {
		*body_id_r = writer->body_id;
		ret = 0;
	}
	sbx_body_writer_free(writer);
	return ret;
}

void sbx_body_writer_abort(struct sbx_body_writer **_writer)
{
	struct sbx_body_writer *writer = *_writer;

	if (writer == NULL)
		return;
	*_writer = NULL;
	sbx_body_writer_free(writer);
}

/* Runs statement sid with ?1 = body_id; returns the rows it changed, or
   -1. */
static int sbx_body_exec_id(struct sbx_db *db, enum sbx_stmt_id sid,
			    int64_t body_id)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, body_id) == 0)
		ret = sbx_stmt_exec(db, stmt, "delete unused body %lld",
				    (long long)body_id);
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : sqlite3_changes(db->sqlite);
}

int sbx_body_delete_unused(struct sbx_db *db, int64_t body_id)
{
	int ret;

	if (sbx_db_require_write(db, "delete unused body") < 0)
		return -1;
	/* the chunks first: the row says whether the body is in use */
	if (sbx_body_exec_id(db, SBX_STMT_BODY_DELETE_UNUSED_CHUNKS,
			     body_id) < 0)
		return -1;
	ret = sbx_body_exec_id(db, SBX_STMT_BODY_DELETE_UNUSED, body_id);
	return ret < 0 ? -1 : (ret > 0 ? 1 : 0);
}

/* Copies the part of one chunk (a row of BODY_READ) that continues the
   read at offset + *copied: from the row when its content came with it
   (a chunk wanted whole), else with incremental blob I/O, which reads
   only the pages that hold it (a message's header costs its first pages,
   not the whole chunk). Returns 0, or -1 (a chunk missing, a failed
   read). */
static int sbx_body_read_chunk(struct sbx_db *db, int64_t body_id,
			       sqlite3_stmt *stmt, uint64_t offset,
			       unsigned char *buf, size_t want, size_t *copied)
{
	int64_t seq = sqlite3_column_int64(stmt, 1);
	uint64_t start = (uint64_t)seq * SBX_BODY_CHUNK_SIZE;
	uint64_t pos = offset + *copied;
	size_t len = (size_t)sqlite3_column_int64(stmt, 3);
	const unsigned char *data;
	sqlite3_blob *blob;
	size_t skip, n;
	int rc;

	if (start > pos) {
		return sbx_error_set(db, SBX_ERR_CORRUPT,
			"read body %lld: a chunk before %lld is missing",
			(long long)body_id, (long long)seq);
	}
	if (start + len <= pos)
		return 0;
	skip = (size_t)(pos - start);
	n = len - skip;
	if (n > want - *copied)
		n = want - *copied;
	if (sqlite3_column_type(stmt, 4) != SQLITE_NULL) {
		data = sqlite3_column_blob(stmt, 4);
		if (data == NULL ||
		    (size_t)sqlite3_column_bytes(stmt, 4) != len) {
			return sbx_error_set(db, SBX_ERR_NOMEM,
					     "read body %lld: out of memory",
					     (long long)body_id);
		}
		memcpy(buf + *copied, data + skip, n);
		*copied += n;
		return 0;
	}
	rc = sqlite3_blob_open(db->sqlite, "main", "body_chunks", "data",
			       sqlite3_column_int64(stmt, 2), 0, &blob);
	if (rc == SQLITE_OK)
		rc = sqlite3_blob_read(blob, buf + *copied, (int)n, (int)skip);
	if (rc != SQLITE_OK) {
		(void)sbx_error_sqlite(db, rc, "read body %lld chunk %lld",
					    (long long)body_id,
					    (long long)seq);
		(void)sqlite3_blob_close(blob);
		return -1;
	}
	(void)sqlite3_blob_close(blob);
	*copied += n;
	return 0;
}

/* Binds a read of size bytes at offset: chunks first to last. */
static int sbx_body_read_bind(struct sbx_db *db, sqlite3_stmt *stmt,
			      int64_t body_id, uint64_t offset, size_t size)
{
	uint64_t first = offset / SBX_BODY_CHUNK_SIZE;
	uint64_t last = first;

	if (size > 0) {
		last = size - 1 > UINT64_MAX - offset ? UINT64_MAX :
			(offset + size - 1);
		last /= SBX_BODY_CHUNK_SIZE;
	}
	/* a read from a chunk's start takes the chunks it wants whole with
	   the row; one from inside a chunk wants part of it */
	if (sbx_bind_int64(db, stmt, 1, body_id) < 0 ||
	    sbx_bind_int64(db, stmt, 2, (int64_t)first) < 0 ||
	    sbx_bind_int64(db, stmt, 3, (int64_t)last) < 0 ||
	    sbx_bind_int64(db, stmt, 4, offset % SBX_BODY_CHUNK_SIZE == 0 ?
			   (int64_t)size : -1) < 0)
		return -1;
	return 0;
}

/* Steps through the rows of BODY_READ. Returns 1, 0 (no body) or -1. */
static int sbx_body_read_rows(struct sbx_db *db, sqlite3_stmt *stmt,
			      int64_t body_id, uint64_t offset,
			      unsigned char *buf, size_t size, size_t *read_r)
{
	uint64_t physical_size;
	size_t want;
	int ret;

	ret = sbx_stmt_step_row(db, stmt, "read body %lld",
				(long long)body_id);
	if (ret <= 0)
		return ret;
	physical_size = sbx_column_u64(stmt, 0);
	if (offset >= physical_size || size == 0)
		return 1;
	want = physical_size - offset < size ?
		(size_t)(physical_size - offset) : size;
	do {
		if (sqlite3_column_type(stmt, 1) == SQLITE_NULL)
			continue;
		if (sbx_body_read_chunk(db, body_id, stmt, offset, buf, want,
					read_r) < 0)
			return -1;
	} while (*read_r < want &&
		 (ret = sbx_stmt_step_row(db, stmt, "read body %lld",
					  (long long)body_id)) > 0);
	if (ret < 0)
		return -1;
	if (*read_r < want) {
		return sbx_error_set(db, SBX_ERR_CORRUPT,
			"read body %lld: chunks end before its size of %llu",
			(long long)body_id,
			(unsigned long long)physical_size);
	}
	return 1;
}

int sbx_body_read(struct sbx_db *db, int64_t body_id, uint64_t offset,
		  void *buf, size_t size, size_t *read_r)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	*read_r = 0;
	if (sbx_stmt_get(db, SBX_STMT_BODY_READ, &stmt) < 0)
		return -1;
	if (sbx_body_read_bind(db, stmt, body_id, offset, size) == 0) {
		ret = sbx_body_read_rows(db, stmt, body_id, offset, buf, size,
					 read_r);
	}
	sbx_stmt_put(db, stmt);
	if (ret < 0)
		*read_r = 0;
	return ret;
}

int sbx_body_set_parsed(struct sbx_db *db, int64_t body_id,
			const void *headers, size_t headers_size,
			const char *bodystructure, const char *envelope)
{
	/* a zero-length blob needs a non-NULL pointer to stay one */
	static const char empty[1];
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_db_require_write(db, "keep parsed fields") < 0)
		return -1;
	if (headers != NULL && headers_size == 0)
		headers = empty;
	if (sbx_stmt_get(db, SBX_STMT_BODY_PARSED_SET, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, body_id) < 0 ||
	    sbx_bind_blob(db, stmt, 2, headers, headers_size) < 0 ||
	    sbx_bind_blob(db, stmt, 3, bodystructure,
			  bodystructure == NULL ? 0 : strlen(bodystructure)) < 0 ||
	    sbx_bind_blob(db, stmt, 4, envelope,
			  envelope == NULL ? 0 : strlen(envelope)) < 0)
		ret = -1;
	else
		ret = sbx_stmt_exec(db, stmt, "keep parsed fields of body %lld",
				    (long long)body_id);
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_body_get_parsed(struct sbx_db *db, int64_t body_id,
			enum sbx_body_parsed_field field,
			const void **data_r, size_t *size_r)
{
	sqlite3_stmt *stmt;
	int col = (int)field;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_BODY_PARSED_GET, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, body_id) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up parsed fields of "
					"body %lld", (long long)body_id);
	if (ret > 0 && sqlite3_column_type(stmt, col) == SQLITE_NULL)
		ret = 0;
	if (ret > 0) {
		/* blob before bytes, as SQLite asks; the blob is NULL for a
		   zero-length value, and keep_blob still gives a buffer */
		const void *data = sqlite3_column_blob(stmt, col);

		*size_r = (size_t)sqlite3_column_bytes(stmt, col);
		if (sbx_db_keep_blob(db, data, *size_r, data_r) < 0)
			ret = -1;
	}
	sbx_stmt_put(db, stmt);
	return ret;
}
