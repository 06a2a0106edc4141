/* SPDX-License-Identifier: MIT */
/* Mailbox attributes: the key/value entries of IMAP METADATA (RFC 5464),
   Dovecot's server metadata and what dsync copies, per mailbox. */
#ifndef SBX_ATTR_H
#define SBX_ATTR_H

#include "sbx-common.h"

struct sbx_db;

enum sbx_attr_type {
	SBX_ATTR_PRIVATE = 0,
	SBX_ATTR_SHARED = 1,
};

/* Looks up an attribute: 1 found (*value_r borrowed until the next call
   on db, *size_r its length; last_change_r may be NULL), 0 not found, -1
   error. */
int sbx_attr_get(struct sbx_db *db, int64_t mailbox_id,
		 enum sbx_attr_type type, const char *key,
		 const void **value_r, size_t *size_r,
		 int64_t *last_change_r);

/* Sets an attribute (value != NULL) or removes it (value == NULL;
   removing a missing one is not an error). The caller holds an
   SBX_TX_WRITE transaction. */
int sbx_attr_set(struct sbx_db *db, int64_t mailbox_id,
		 enum sbx_attr_type type, const char *key,
		 const void *value, size_t size, int64_t last_change);

/* Iterates the keys of one type that start with prefix, in key order.
   The iterator holds a statement: do not return to an event loop before
   deinit. */
struct sbx_attr_iter;
int sbx_attr_iter_init(struct sbx_db *db, int64_t mailbox_id,
		       enum sbx_attr_type type, const char *prefix,
		       struct sbx_attr_iter **iter_r);
/* 1 with a borrowed key, 0 at the end, -1 error. */
int sbx_attr_iter_next(struct sbx_attr_iter *iter, const char **key_r);
/* Returns -1 if the iteration failed. Accepts *iter == NULL. */
int sbx_attr_iter_deinit(struct sbx_attr_iter **iter);

#endif
