/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_SYNC_H
#define SQLBOX_SYNC_H

#include "seq-range-array.h"

struct mail_index_transaction;
struct sqlbox_mailbox;

enum sqlbox_sync_flags {
	/* Compare every message instead of only those changed since the
	   last sync (force-resync). */
	SQLBOX_SYNC_FLAG_FULL = 0x01,
	/* The caller already holds an SBX_TX_WRITE transaction and commits
	   it itself (saving: the pull must happen under the same lock that
	   allocates the new UIDs). */
	SQLBOX_SYNC_FLAG_IN_WRITE_TX = 0x02,
};

/* Brings the mailbox's index in step with SQL: writes this process's
   flag, keyword and expunge changes to SQL (push), then imports what
   changed in SQL since the last sync (pull). Works before the mailbox is
   opened (the first import) and after. Returns 0, or -1 with the error set
   on the mailbox. */
int sqlbox_sync(struct sqlbox_mailbox *mbox, enum sqlbox_sync_flags flags);

/* The flag, keyword and expunge changes of one index transaction that
   sqlbox_sync_write_changes() wrote to SQL before the index had them. */
struct sqlbox_sync_written {
	/* the MODSEQ they were written with; 0 if nothing needed writing
	   (expunges of rows already gone) */
	uint64_t modseq;
	/* the UIDs they touched (the caller initialises the array) */
	ARRAY_TYPE(seq_range) uids;
};

/* Writes the flag, keyword and expunge changes of itrans, which the index
   has not committed yet, to SQL under one new MODSEQ, inside the caller's
   SBX_TX_WRITE transaction: SQL's flags and keywords plus the transaction's
   additions, minus its removals, as a sync would push them. So a full disk
   or an I/O error fails the caller's SQL commit while the index, and so
   the session's view, has nothing of it yet. Returns 0, or -1 with the
   error set on the mailbox. */
int sqlbox_sync_write_changes(struct sqlbox_mailbox *mbox,
			      struct mail_index_transaction *itrans,
			      struct sqlbox_sync_written *written);
/* sqlbox_sync() after the index committed changes that SQL already has
   (sqlbox_sync_write_changes()): their sync records only take the MODSEQ
   they were written with; nothing is written again. */
int sqlbox_sync_after_write(struct sqlbox_mailbox *mbox,
			    const struct sqlbox_sync_written *written);

struct mailbox_sync_context *
sqlbox_mailbox_sync_init(struct mailbox *box, enum mailbox_sync_flags flags);

#endif
