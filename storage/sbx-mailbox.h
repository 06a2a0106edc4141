/* SPDX-License-Identifier: MIT */
/* Folders (the mailboxes table) and subscriptions. */
#ifndef SBX_MAILBOX_H
#define SBX_MAILBOX_H

#include "sbx-common.h"

struct sbx_db;

/* One row of mailboxes. Strings are borrowed from the handle until the next
   call on it. Counters are kept by triggers in the same transaction as the
   change, so they always equal the rows. */
struct sbx_mailbox {
	int64_t id;
	const char *name;	/* UTF-8, '/' separated */
	uint8_t guid[SBX_GUID_SIZE];
	bool noselect;		/* a \Noselect parent: no messages */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t first_recent_uid;
	uint64_t highestmodseq;
	uint32_t messages;
	uint32_t unseen;
	uint64_t vsize;		/* sum of the messages' virtual sizes */
	uint64_t psize;		/* sum of the messages' physical sizes */
	int64_t created;	/* unix time */
	/* the highest modseq of a deleted tombstone: expunges at or below
	   it may be unknown */
	uint64_t pruned_modseq;
};

/* What to create. Zero values mean "choose": a random GUID, a fresh
   UIDVALIDITY (always different from every earlier one in this database),
   UIDNEXT 1. dsync passes the values it wants kept. */
struct sbx_mailbox_create {
	const char *name;
	bool noselect;
	bool has_guid;
	uint8_t guid[SBX_GUID_SIZE];
	uint32_t uidvalidity;
	uint32_t min_uidnext;
	uint64_t min_highestmodseq;
};

/* Changes to an existing mailbox (dsync's mailbox_update); zero fields are
   left alone. uidvalidity and guid replace; min_* only raise. */
struct sbx_mailbox_update {
	bool has_guid;
	uint8_t guid[SBX_GUID_SIZE];
	uint32_t uidvalidity;
	uint32_t min_uidnext;
	uint64_t min_highestmodseq;
	uint32_t min_first_recent_uid;
};

/* Looks a mailbox up by exact name, id or GUID: 1 found, 0 not, -1 error. */
int sbx_mailbox_lookup(struct sbx_db *db, const char *name,
		       struct sbx_mailbox *mb_r);
int sbx_mailbox_lookup_id(struct sbx_db *db, int64_t id,
			  struct sbx_mailbox *mb_r);
int sbx_mailbox_lookup_guid(struct sbx_db *db,
			    const uint8_t guid[SBX_GUID_SIZE],
			    struct sbx_mailbox *mb_r);

/* Creates a mailbox and any missing parents (as \Noselect rows). A
   \Noselect row of the same name becomes selectable when set->noselect is
   false (it gets a fresh UIDVALIDITY unless one is given). Fails with
   SBX_ERR_EXISTS when the name exists otherwise, SBX_ERR_INVALID for an
   empty name or one with an empty component. Sets *id_r (may be NULL).
   The caller holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_create(struct sbx_db *db,
		       const struct sbx_mailbox_create *set, int64_t *id_r);

/* Applies a mailbox_update. The caller holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_update(struct sbx_db *db, int64_t id,
		       const struct sbx_mailbox_update *update);

/* Deletes a mailbox and its messages (bodies lose a reference each). If it
   has children it stays as a \Noselect row and *kept_noselect_r is set.
   Deleting a \Noselect row that has children fails with SBX_ERR_EXISTS;
   a missing name fails with SBX_ERR_NOTFOUND. The kept \Noselect row gets
   a new GUID (the old one names the deleted mailbox) and, once created
   again, a fresh UIDVALIDITY. kept_noselect_r may be NULL. The caller
   holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_delete(struct sbx_db *db, const char *name,
		       bool *kept_noselect_r);

/* Renames a mailbox. With children=true the whole subtree (old, old/...)
   moves; with children=false only the row itself (IMAP's INBOX rename).
   Missing parents of the new name are created as \Noselect rows. GUIDs,
   UIDVALIDITY and messages stay. Fails with SBX_ERR_NOTFOUND if old does
   not exist, SBX_ERR_EXISTS if new or any new child name exists. Renamed
   names are subscribed as before: subscriptions are not touched (as
   Dovecot's own backends). The caller holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_rename(struct sbx_db *db, const char *oldname,
		       const char *newname, bool children);

/* 1 if any mailbox name starts with name + '/', 0 if none, -1 error. */
int sbx_mailbox_has_children(struct sbx_db *db, const char *name);

/* Allocates the MODSEQ for the caller's write transaction on this mailbox:
   the smallest value at least half of SBX_MODSEQ_STEP above highestmodseq
   that is congruent to the database's salt (sbx_mailbox_modseq_salt())
   modulo the step, stored as the new highestmodseq. Calling it again in
   the same transaction returns the same value. The caller holds an
   SBX_TX_WRITE transaction. */
int sbx_mailbox_modseq_alloc(struct sbx_db *db, int64_t id,
			     uint64_t *modseq_r);
/* The database's MODSEQ salt, below SBX_MODSEQ_STEP / 2. */
int sbx_mailbox_modseq_salt(struct sbx_db *db, int64_t *salt_r);

/* Recomputes the counters (messages, unseen, vsize, psize) of a mailbox
   from its rows. The caller holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_recount(struct sbx_db *db, int64_t id);

/* Claims \Recent: sets first_recent_uid to uidnext and returns the old
   value in *old_r. The caller holds an SBX_TX_WRITE transaction. */
int sbx_mailbox_recent_claim(struct sbx_db *db, int64_t id, uint32_t *old_r);

/* Iterates all mailboxes in name order. The iterator holds a statement: do
   not return to an event loop before deinit. One mailbox iterator per
   handle at a time: a nested sbx_mailbox_iter_init() fails with
   SBX_ERR_INTERNAL. */
struct sbx_mailbox_iter;
int sbx_mailbox_iter_init(struct sbx_db *db, struct sbx_mailbox_iter **iter_r);
int sbx_mailbox_iter_next(struct sbx_mailbox_iter *iter,
			  struct sbx_mailbox *mb_r);
/* Returns -1 if the iteration failed. Accepts *iter == NULL. */
int sbx_mailbox_iter_deinit(struct sbx_mailbox_iter **iter);

/* Subscriptions are names, independent of whether the mailbox exists
   (RFC 3501 6.3.6). Setting an existing one, or clearing a missing one, is
   not an error. Each call runs its own write transaction unless the caller
   holds one (which must then be SBX_TX_WRITE). The subscription iterator
   holds a statement like sbx_mailbox_iter, one at a time per handle. */
int sbx_subscription_set(struct sbx_db *db, const char *name, bool subscribed);
struct sbx_subscription_iter;
int sbx_subscription_iter_init(struct sbx_db *db,
			       struct sbx_subscription_iter **iter_r);
/* 1 with a borrowed name, 0 at the end, -1 error. */
int sbx_subscription_iter_next(struct sbx_subscription_iter *iter,
			       const char **name_r);
int sbx_subscription_iter_deinit(struct sbx_subscription_iter **iter);

#endif
