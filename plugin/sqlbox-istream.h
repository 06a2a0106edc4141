/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_ISTREAM_H
#define SQLBOX_ISTREAM_H

struct sbx_db;

/* A seekable stream over a stored body. It reads one chunk at a time with
   a short statement and keeps nothing open between reads, so it never
   pins a WAL snapshot across an event loop return. A body freed meanwhile
   (the message was expunged elsewhere) fails the read with ESTALE. */
struct istream *i_stream_create_sqlbox_body(struct sbx_db *db,
					    int64_t body_id, uoff_t size);

#endif
