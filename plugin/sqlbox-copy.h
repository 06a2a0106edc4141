/* SPDX-License-Identifier: MIT */
/* COPY and MOVE within one user's database: what sqlbox-save.c's commit
   asks of the copies of its transaction. */
#ifndef SQLBOX_COPY_H
#define SQLBOX_COPY_H

struct sqlbox_mailbox;
struct sqlbox_copy_context;

/* The copy vfunc is sqlbox_copy(), declared in sqlbox-save.h. */

/* Frees the copies of a save context (NULL: none). */
void sqlbox_copy_context_free(struct sqlbox_copy_context **cctx);

/* commit_pre, in the write transaction: inserts the copies whose UID is
   below uid_limit and not inserted yet ((uint32_t)-1: all that are left),
   at modseq, and expunges the sources of the moves among them. The UIDs
   are the index transaction's, after mail_index_append_finish_uids().
   Rows go into SQL in ascending UID order (the trigger refuses any
   other), so a transaction that also saves calls this before inserting
   each saved mail. Raises *highest_modseq to the MODSEQs it wrote.
   Returns 1, 0 when a source is gone (the transaction must be rolled
   back: the command fails with EXPUNGED), -1 with the error in the
   database handle. */
int sqlbox_copy_insert(struct sqlbox_copy_context *cctx,
		       struct sqlbox_mailbox *mbox,
		       struct mail_index_transaction *trans,
		       uint32_t uid_limit, uint64_t modseq,
		       uint64_t *highest_modseq);

/* The stream and size of a copy being saved (sequence seq), for reading
   it back before the commit (quota, Sieve); looked up on first use.
   NULL / FALSE when seq is not a copy or its source is gone. */
struct istream *sqlbox_copy_get_stream(struct sqlbox_copy_context *cctx,
				       struct sqlbox_mailbox *mbox,
				       uint32_t seq);
bool sqlbox_copy_get_size(struct sqlbox_copy_context *cctx,
			  struct sqlbox_mailbox *mbox, uint32_t seq,
			  uoff_t *size_r);

#endif
