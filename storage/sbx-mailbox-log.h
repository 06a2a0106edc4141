/* SPDX-License-Identifier: MIT */
/* The mailbox change log: deletes, renames and (un)subscriptions, as
   Dovecot's dovecot.mailbox.log records them for dsync, so that two-way
   sync never brings a deleted or renamed folder back. */
#ifndef SBX_MAILBOX_LOG_H
#define SBX_MAILBOX_LOG_H

#include "sbx-common.h"

struct sbx_db;

struct sbx_mailbox_log_rec {
	uint8_t guid[SBX_GUID_SIZE];
	uint8_t type;		/* Dovecot's enum mailbox_log_record_type */
	int64_t stamp;		/* unix time */
};

/* Adds a record. The caller holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_log_add(struct sbx_db *db,
			const struct sbx_mailbox_log_rec *rec);

/* Iterates all records in the order they were added. The iterator holds
   a statement: do not return to an event loop before deinit. */
struct sbx_mailbox_log_iter;
int sbx_mailbox_log_iter_init(struct sbx_db *db,
			      struct sbx_mailbox_log_iter **iter_r);
/* 1 with *rec_r filled, 0 at the end, -1 error. */
int sbx_mailbox_log_iter_next(struct sbx_mailbox_log_iter *iter,
			      struct sbx_mailbox_log_rec *rec_r);
int sbx_mailbox_log_iter_deinit(struct sbx_mailbox_log_iter **iter);

#endif
