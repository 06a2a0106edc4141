/* SPDX-License-Identifier: MIT */
/* Reading a body out of SQL as a seekable istream.

   The stream keeps a window of the body and serves reads and seeks from
   it; a read outside it fetches a new window at that offset. A first
   window is small (SQLBOX_ISTREAM_FIRST_WINDOW): most reads of a message
   want its header only (ENVELOPE, header SEARCH, sorting), and
   sbx_body_read() then reads only the pages that hold it. Reading on
   doubles the window, up to one stored chunk (SBX_BODY_CHUNK_SIZE), so
   memory per open mail stays one chunk whatever the message size, and a
   50 MB attachment streams through without ever being held whole. */

#include "lib.h"
#include "buffer.h"
#include "istream-private.h"
#include "sbx-body.h"
#include "sbx-db.h"
#include "sqlbox-istream.h"

#define SQLBOX_ISTREAM_FIRST_WINDOW (16 * 1024)

struct sqlbox_body_istream {
	struct istream_private istream;
	struct sbx_db *db;
	int64_t body_id;
	uoff_t size;

	buffer_t *chunk;
	uoff_t chunk_offset;	/* offset of the window's first byte */
	size_t window;		/* the size of the next window */
	bool have_chunk;
};

static int sqlbox_body_istream_fill(struct sqlbox_body_istream *bstream,
				    uoff_t offset)
{
	uoff_t start = offset;
	size_t got, window;
	void *data;
	const char *msg;
	int ret;

	if (bstream->have_chunk &&
	    offset == bstream->chunk_offset + bstream->chunk->used) {
		/* reading on: a larger window */
		bstream->window = I_MIN(bstream->window * 2,
					SBX_BODY_CHUNK_SIZE);
	} else {
		bstream->window = SQLBOX_ISTREAM_FIRST_WINDOW;
	}
	/* a window never crosses a stored chunk's end: whole chunks are
	   read with one blob read each */
	window = I_MIN(bstream->window,
		       SBX_BODY_CHUNK_SIZE - start % SBX_BODY_CHUNK_SIZE);
	if (window > bstream->size - start)
		window = (size_t)(bstream->size - start);

	buffer_set_used_size(bstream->chunk, 0);
	data = buffer_append_space_unsafe(bstream->chunk, window);
	ret = sbx_body_read(bstream->db, bstream->body_id, start, data,
			    window, &got);
	if (ret <= 0) {
		bstream->have_chunk = FALSE;
		if (ret == 0) {
			io_stream_set_error(&bstream->istream.iostream,
				"sqlbox: body %"PRId64" no longer exists",
				bstream->body_id);
			bstream->istream.istream.stream_errno = ESTALE;
		} else {
			(void)sbx_db_last_error(bstream->db, &msg);
			io_stream_set_error(&bstream->istream.iostream,
					    "sqlbox: %s", msg);
			bstream->istream.istream.stream_errno = EIO;
		}
		return -1;
	}
	buffer_set_used_size(bstream->chunk, got);
	bstream->chunk_offset = start;
	bstream->have_chunk = TRUE;
	return 0;
}

static ssize_t i_stream_sqlbox_body_read(struct istream_private *stream)
{
	struct sqlbox_body_istream *bstream =
		container_of(stream, struct sqlbox_body_istream, istream);
	uoff_t offset = stream->istream.v_offset + (stream->pos - stream->skip);
	size_t avail, in_chunk;

	if (offset >= bstream->size) {
		stream->istream.eof = TRUE;
		return -1;
	}
	if (!bstream->have_chunk || offset < bstream->chunk_offset ||
	    offset >= bstream->chunk_offset + bstream->chunk->used) {
		if (sqlbox_body_istream_fill(bstream, offset) < 0)
			return -1;
		if (offset >= bstream->chunk_offset + bstream->chunk->used) {
			io_stream_set_error(&stream->iostream,
				"sqlbox: body %"PRId64" is shorter than its "
				"size %"PRIuUOFF_T, bstream->body_id,
				bstream->size);
			stream->istream.stream_errno = EIO;
			return -1;
		}
	}
	if (!i_stream_try_alloc(stream, 1, &avail))
		return -2;
	in_chunk = bstream->chunk->used - (offset - bstream->chunk_offset);
	avail = I_MIN(avail, in_chunk);
	memcpy(stream->w_buffer + stream->pos,
	       CONST_PTR_OFFSET(bstream->chunk->data,
				offset - bstream->chunk_offset), avail);
	stream->pos += avail;
	return (ssize_t)avail;
}

static void i_stream_sqlbox_body_seek(struct istream_private *stream,
				      uoff_t v_offset, bool mark ATTR_UNUSED)
{
	stream->istream.v_offset = v_offset;
	stream->skip = stream->pos = 0;
	stream->istream.eof = FALSE;
}

static int i_stream_sqlbox_body_stat(struct istream_private *stream,
				     bool exact ATTR_UNUSED)
{
	struct sqlbox_body_istream *bstream =
		container_of(stream, struct sqlbox_body_istream, istream);

	stream->statbuf.st_size = bstream->size;
	return 0;
}

static void i_stream_sqlbox_body_destroy(struct iostream_private *stream)
{
	struct sqlbox_body_istream *bstream =
		container_of(stream, struct sqlbox_body_istream,
			     istream.iostream);

	buffer_free(&bstream->chunk);
	/* this replaces the default destroy, which frees the read buffer */
	i_stream_free_buffer(&bstream->istream);
}

struct istream *i_stream_create_sqlbox_body(struct sbx_db *db,
					    int64_t body_id, uoff_t size)
{
	struct sqlbox_body_istream *bstream;

	bstream = i_new(struct sqlbox_body_istream, 1);
	bstream->db = db;
	bstream->body_id = body_id;
	bstream->size = size;
	bstream->chunk = buffer_create_dynamic(default_pool,
		I_MIN(size, SQLBOX_ISTREAM_FIRST_WINDOW));

	bstream->istream.iostream.destroy = i_stream_sqlbox_body_destroy;
	bstream->istream.read = i_stream_sqlbox_body_read;
	bstream->istream.seek = i_stream_sqlbox_body_seek;
	bstream->istream.stat = i_stream_sqlbox_body_stat;
	bstream->istream.max_buffer_size = IO_BLOCK_SIZE;
	bstream->istream.istream.seekable = TRUE;
	bstream->istream.istream.blocking = TRUE;
	bstream->istream.cached_stream_size = size;
	return i_stream_create(&bstream->istream, NULL, -1, 0);
}
