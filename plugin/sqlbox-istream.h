/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_ISTREAM_H
#define SQLBOX_ISTREAM_H

struct sbx_db;
struct sbx_hash;

/* A seekable stream over a stored body. It reads one chunk at a time with
   a short statement and keeps nothing open between reads, so it never
   pins a WAL snapshot across an event loop return. A body freed meanwhile
   (the message was expunged elsewhere) fails the read with ESTALE. */
struct istream *i_stream_create_sqlbox_body(struct sbx_db *db,
					    int64_t body_id, uoff_t size);

/* Passes input through and feeds each byte, once and in order, to hash.
   Seeking backwards before the end was hashed is an error. */
struct istream *i_stream_create_sqlbox_hash(struct istream *input,
					    struct sbx_hash *hash);

#endif
