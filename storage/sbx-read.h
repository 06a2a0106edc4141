/* SPDX-License-Identifier: MIT */
/* Reading messages in UID order in batches, each with the parsed fields
   its body keeps: one statement serves a run of FETCH, SEARCH or POP3
   lookups instead of two statements per message. */
#ifndef SBX_READ_H
#define SBX_READ_H

#include "sbx-common.h"

struct sbx_db;
struct sbx_msg;

/* The parsed fields of a message's body (sbx_body_set_parsed()). */
struct sbx_msg_parsed {
	/* the header lines; NULL if not kept (zero-length if kept empty) */
	const void *headers;
	size_t headers_size;
	/* NULL if not kept */
	const char *bodystructure;
	const char *envelope;
};

/* Iterates up to limit messages of mailbox_id whose UID is at least
   first_uid, in UID order, with their parsed fields if with_parsed (else
   those are NULL). Strings and the parsed fields point into the
   statement until the next call. The iterator holds a statement: do not
   return to an event loop before deinit. One at a time per handle. */
struct sbx_read_iter;
int sbx_read_iter_init(struct sbx_db *db, int64_t mailbox_id,
		       uint32_t first_uid, uint32_t limit, bool with_parsed,
		       struct sbx_read_iter **iter_r);
/* 1 with the next message, 0 at the end, -1 on error. */
int sbx_read_iter_next(struct sbx_read_iter *iter, struct sbx_msg *msg_r,
		       struct sbx_msg_parsed *parsed_r);
/* Returns 0, or -1 if the iteration failed. */
int sbx_read_iter_deinit(struct sbx_read_iter **iter);

#endif
