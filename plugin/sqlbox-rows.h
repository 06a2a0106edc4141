/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_ROWS_H
#define SQLBOX_ROWS_H

struct sbx_msg_state;
struct sqlbox_mailbox;
struct sqlbox_rows;

/* A message's row as a mail reads it: what doesn't change while the
   message exists (its body, sizes, dates, GUID) and the parsed fields its
   body keeps. POP3's UIDL may change; the rows are read again whenever
   the mailbox has pulled anything from SQL. */
struct sqlbox_row {
	uint32_t uid;
	int64_t body_id;
	/* the bytes stored, and the message's size (they differ under zlib
	   or mail_crypt) */
	uoff_t size, virtual_size;
	time_t received_date, save_date;
	const char *guid, *pop3_uidl, *from_envelope;
	uint32_t pop3_order;
	/* whether the parsed fields below were read */
	bool have_parsed;
	/* NULL if the save kept none */
	const unsigned char *headers;
	size_t headers_size;
	const char *bodystructure, *envelope;
};

/* Looks up message uid of the mailbox, with its parsed fields if
   with_parsed (else they may be missing: NULL). Rows are read in batches
   that grow while lookups go up UID by UID (FETCH 1:*, SEARCH, POP3 LIST)
   and stay single for scattered ones; once a lookup wants the parsed
   fields, the batches read them until the rows are dropped. Returns 1 with *row_r set and *pool_r
   referenced (the row lives until the caller's pool_unref()), 0 if SQL
   has no such message, -1 with the error in the database handle. */
int sqlbox_rows_lookup(struct sqlbox_mailbox *mbox, uint32_t uid,
		       bool with_parsed, const struct sqlbox_row **row_r,
		       pool_t *pool_r);
/* What a sync saw of a message, kept for as long as the mailbox is open:
   what POP3 reads of every message at login (LIST's size, its order,
   whether UIDL has a stored value) and IMAP's RFC822.SIZE, answered
   without a statement. An import fills it for every message and a pull
   for each row it brings; a message this process saved has none until a
   pull brings its row again (lookups then read the row). Like Dovecot's
   cache, it answers for messages already expunged in SQL until the index
   drops them. */
struct sqlbox_row_summary {
	uint32_t uid;
	uint32_t pop3_order;
	uint64_t virtual_size:63;
	uint64_t has_pop3_uidl:1;
};

/* Forgets every summary (an import starts again). */
void sqlbox_rows_summary_clear(struct sqlbox_mailbox *mbox);
/* Records or replaces the summary of a message row the sync read. */
void sqlbox_rows_summary_set(struct sqlbox_mailbox *mbox,
			     const struct sbx_msg_state *msg);
/* A changed POP3 UIDL (this process stored it). */
void sqlbox_rows_summary_set_uidl(struct sqlbox_mailbox *mbox, uint32_t uid,
				  bool has_pop3_uidl);
/* The summary of message uid, or NULL if no sync recorded one. */
const struct sqlbox_row_summary *
sqlbox_rows_summary(struct sqlbox_mailbox *mbox, uint32_t uid);

/* Forgets the rows read (a write by this process that changes one). */
void sqlbox_rows_forget(struct sqlbox_mailbox *mbox);
void sqlbox_rows_free(struct sqlbox_rows **rows);

#endif
