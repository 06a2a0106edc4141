/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_SYNC_H
#define SQLBOX_SYNC_H

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

struct mailbox_sync_context *
sqlbox_mailbox_sync_init(struct mailbox *box, enum mailbox_sync_flags flags);

#endif
