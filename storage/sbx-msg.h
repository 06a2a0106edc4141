/* SPDX-License-Identifier: MIT */
/* Messages: rows of the messages table, their change feed and tombstones. */
#ifndef SBX_MSG_H
#define SBX_MSG_H

#include "sbx-common.h"

struct sbx_db;

/* One message. Strings are borrowed until the next call on the handle or
   iterator. */
struct sbx_msg {
	uint32_t uid;
	int64_t body_id;
	const char *guid;
	uint32_t flags;		/* enum sbx_flags */
	const char *keywords;	/* sorted, space separated, "" if none */
	uint64_t modseq;
	int64_t received_date;	/* unix time */
	int32_t received_tz;	/* minutes east of UTC */
	int64_t save_date;	/* unix time */
	const char *pop3_uidl;	/* NULL if none */
	uint32_t pop3_order;	/* 0 if none */
	const char *from_envelope; /* NULL if none */
	const char *message_id;	/* NULL if none */
	uint64_t physical_size;	/* of the body */
	uint64_t virtual_size;	/* of the body, CRLF line endings */
};

/* A message to insert. uid must be >= the mailbox's uidnext (UIDs are
   never reused); uidnext becomes uid + 1. guid must be non-empty. */
struct sbx_msg_new {
	uint32_t uid;
	int64_t body_id;
	const char *guid;
	uint32_t flags;
	const char *keywords;	/* NULL or "" for none; normalised on insert */
	uint64_t modseq;
	int64_t received_date;
	int32_t received_tz;
	int64_t save_date;
	const char *pop3_uidl;
	uint32_t pop3_order;
	const char *from_envelope;
	const char *message_id;
};

/* Inserts a message; the body gains a reference and the mailbox's
   counters and uidnext follow. Keywords are stored normalised
   (sbx_keywords_normalize()); flag bits outside SBX_FLAGS_MASK (\Recent)
   are not stored. Fails with SBX_ERR_INVALID for a UID below
   uidnext or a missing body, SBX_ERR_NOTFOUND for a missing mailbox. The
   caller holds an SBX_TX_WRITE transaction. */
int sbx_msg_append(struct sbx_db *db, int64_t mailbox_id,
		   const struct sbx_msg_new *msg);

/* Looks up one message: 1 found, 0 not (expunged), -1 error. */
int sbx_msg_lookup(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
		   struct sbx_msg *msg_r);

/* The Sent-copy dedup: the UID of the newest message in mailbox_id whose
   Message-ID is message_id and that was saved at or after since (unix
   time). Returns 1 with *uid_r set, 0 if there is none, -1 on error. */
int sbx_msg_lookup_message_id(struct sbx_db *db, int64_t mailbox_id,
			      const char *message_id, int64_t since,
			      uint32_t *uid_r);

/* Whether a message of mailbox_id has a POP3 order: 1 yes, 0 no, -1
   error. */
int sbx_msg_has_pop3_order(struct sbx_db *db, int64_t mailbox_id);

/* What a sync reads of a message: its state in the folder, and what
   POP3 asks of every message. keywords is borrowed like sbx_msg's
   strings. */
struct sbx_msg_state {
	uint32_t uid;
	uint32_t flags;		/* enum sbx_flags */
	const char *keywords;	/* sorted, space separated, "" if none */
	uint64_t modseq;
	uint32_t pop3_order;	/* 0 if none */
	bool has_pop3_uidl;
	uint64_t virtual_size;
};

/* Iterates the state of the messages of a mailbox whose modseq >
   since_modseq (0: all of them) in UID order. The iterator holds a
   statement: do not return to an event loop before deinit. One message
   iterator per handle at a time: a nested sbx_msg_iter_init() fails with
   SBX_ERR_INTERNAL. */
struct sbx_msg_iter;
int sbx_msg_iter_init(struct sbx_db *db, int64_t mailbox_id,
		      uint64_t since_modseq, struct sbx_msg_iter **iter_r);
int sbx_msg_iter_next(struct sbx_msg_iter *iter,
		      struct sbx_msg_state *state_r);
int sbx_msg_iter_deinit(struct sbx_msg_iter **iter);

/* Replaces flags and keywords of one message and sets its modseq. Returns
   1 if updated, 0 if the message does not exist. Keywords are normalised
   and flag bits outside SBX_FLAGS_MASK dropped, as for sbx_msg_append(). The caller holds an
   SBX_TX_WRITE transaction. */
int sbx_msg_update_flags(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
			 uint32_t flags, const char *keywords,
			 uint64_t modseq);

/* Raises one message's modseq to at least modseq. Returns 1 if raised, 0
   if it was already as high or the message does not exist, -1 on error.
   The caller holds an SBX_TX_WRITE transaction. */
int sbx_msg_raise_modseq(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
			 uint64_t modseq);

/* Expunges one message: deletes its row, leaves a tombstone with modseq,
   drops the body's reference (the body is freed with its last one).
   Returns 1 if expunged, 0 if it was already gone. The caller holds an
   SBX_TX_WRITE transaction. */
int sbx_msg_expunge(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
		    uint64_t modseq);

/* Iterates the tombstones of a mailbox with modseq > since_modseq in UID
   order: 1 with *uid_r and *modseq_r set, 0 at the end, -1 error. One at a
   time per handle, like sbx_msg_iter. */
struct sbx_expunge_iter;
int sbx_expunge_iter_init(struct sbx_db *db, int64_t mailbox_id,
			  uint64_t since_modseq,
			  struct sbx_expunge_iter **iter_r);
int sbx_expunge_iter_next(struct sbx_expunge_iter *iter, uint32_t *uid_r,
			  uint64_t *modseq_r);
int sbx_expunge_iter_deinit(struct sbx_expunge_iter **iter);

/* Sets the POP3 UIDL of one message (NULL clears it). Returns 1 if set,
   0 if the message does not exist. The caller holds an SBX_TX_WRITE
   transaction. */
int sbx_msg_set_pop3_uidl(struct sbx_db *db, int64_t mailbox_id,
			  uint32_t uid, const char *uidl);

/* Sorts and de-duplicates a space separated keyword list into a malloc()ed
   string. Returns NULL only when out of memory. */
char *sbx_keywords_normalize(const char *keywords);

/* One message of a COPY or MOVE within the database (sbx_msg_copy()). */
struct sbx_msg_copy {
	int64_t src_mailbox_id;
	uint32_t src_uid;
	uint32_t uid;		/* in the destination */
	uint32_t flags;		/* bits outside SBX_FLAGS_MASK are dropped */
	const char *keywords;	/* NULL or "" for none; normalised on insert */
	int64_t save_date;
	uint64_t modseq;
};

/* Copies count messages into mailbox_id in one statement. Each new row
   takes the UID, flags, keywords, save date and MODSEQ of msgs[i] and the
   rest (body, GUID, received date, POP3 UIDL and order, envelope sender,
   Message-ID) from its source row; the body gains a reference, never a
   copy. msgs must be in strictly ascending uid order, the first at or
   above the mailbox's uidnext (SBX_ERR_INVALID otherwise). Returns 1 when
   every source row existed and was copied, 0 when some source row is gone
   (expunged meanwhile: the others are copied, and the caller rolls its
   transaction back), -1 on error. The caller holds an SBX_TX_WRITE
   transaction. */
int sbx_msg_copy(struct sbx_db *db, int64_t mailbox_id,
		 const struct sbx_msg_copy *msgs, size_t count);

/* A MOVE's second half: expunges the source rows of count copies, all from
   mailbox_id (msgs[i].src_mailbox_id), as sbx_msg_expunge() would: a
   tombstone at modseq, the body's reference dropped. Returns 1 when every
   one was expunged, 0 when some was gone already (the others are
   expunged: the caller rolls back), -1 on error. The caller holds an
   SBX_TX_WRITE transaction. */
int sbx_msg_expunge_copied(struct sbx_db *db, int64_t mailbox_id,
			   const struct sbx_msg_copy *msgs, size_t count,
			   uint64_t modseq);

/* A MOVE of count messages into mailbox_id, every one from the same
   source folder: each source row gets a tombstone there at src_modseq
   (as sbx_msg_expunge_copied() would write) and then becomes the new row
   itself, with msgs[i]'s UID, flags, keywords, save date and MODSEQ, as
   sbx_msg_copy() would have made it. One row changed instead of one
   inserted and one deleted: the triggers move the counters and keep the
   body's reference instead of adding one and dropping it. msgs must be
   in strictly ascending uid order, the first at or above the mailbox's
   uidnext (SBX_ERR_INVALID otherwise). Returns 1 when every source row
   existed and was moved, 0 when some source row is gone (the caller rolls
   back), -1 on error. The caller holds an SBX_TX_WRITE transaction. */
int sbx_msg_move(struct sbx_db *db, int64_t mailbox_id,
		 const struct sbx_msg_copy *msgs, size_t count,
		 uint64_t src_modseq);

/* Iterates the UIDs of mailbox_id's messages from uid_first to uid_last,
   ascending: 1 with *uid_r set, 0 at the end, -1 on error. The iterator
   holds a statement: do not return to an event loop before deinit. One
   at a time per handle, like sbx_msg_iter. */
struct sbx_uid_iter;
int sbx_uid_iter_init(struct sbx_db *db, int64_t mailbox_id,
		      uint32_t uid_first, uint32_t uid_last,
		      struct sbx_uid_iter **iter_r);
int sbx_uid_iter_next(struct sbx_uid_iter *iter, uint32_t *uid_r);
int sbx_uid_iter_deinit(struct sbx_uid_iter **iter);

#endif
