/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_ROWS_H
#define SQLBOX_ROWS_H

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
/* Forgets the rows read (a write by this process that changes one). */
void sqlbox_rows_forget(struct sqlbox_mailbox *mbox);
void sqlbox_rows_free(struct sqlbox_rows **rows);

#endif
