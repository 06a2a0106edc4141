/* SPDX-License-Identifier: MIT */
/* The submission operator database: rate reservations, sender identities
   and the audit log. Open it with sbx_db_open() and settings whose kind is
   SBX_DB_KIND_POLICY; every write here runs in its own SBX_TX_WRITE
   transaction (the lock file, then BEGIN IMMEDIATE), so the caller holds
   none. */
#ifndef SBX_SUBMIT_H
#define SBX_SUBMIT_H

#include "sbx-common.h"

struct sbx_db;

/* Minutes: a rate bucket is unix time / 60. */
#define SBX_SUBMIT_HOUR_BUCKETS 60
#define SBX_SUBMIT_DAY_BUCKETS 1440

/* Checks and reserves in one write transaction: if fewer than limit
   messages (recipients) are counted for username in the hour (24 hours)
   ending with bucket, reservations included, one more is counted in
   bucket. limit 0 means no limit (the reservation is still counted).
   Returns 1 when reserved, 0 when the limit is reached (nothing written),
   -1 on error (SBX_ERR_BUSY when the database stays locked). *count_r
   (may be NULL) is the count before this reservation. */
int sbx_submit_reserve_message(struct sbx_db *db, const char *username,
			       int64_t bucket, unsigned int limit,
			       unsigned int *count_r);
int sbx_submit_reserve_recipient(struct sbx_db *db, const char *username,
				 int64_t bucket, unsigned int limit,
				 unsigned int *count_r);
/* Gives back what a transaction reserved in bucket and did not use, and
   adds bytes relayed (0 for none). Returns 0 or -1. */
int sbx_submit_release(struct sbx_db *db, const char *username,
		       int64_t bucket, unsigned int messages,
		       unsigned int recipients, uint64_t bytes);

/* Whether the sender_identity table lets username send as address
   ('local@domain', compared without case) or any address of its domain.
   Returns 1, 0, or -1 on error. */
int sbx_submit_sender_lookup(struct sbx_db *db, const char *username,
			     const char *address);

/* One audit row. Strings may be NULL. */
struct sbx_submit_audit {
	int64_t ts_msecs;	/* unix time in milliseconds */
	const char *username;
	const char *session_id;
	const char *remote_ip;
	bool tls;
	const char *envelope_from;
	const char *recipients;	/* comma separated */
	unsigned int rcpt_count;
	int64_t size;		/* -1: no message */
	const char *message_id;
	unsigned int status_code;
	const char *enhanced_code;
	const char *reply;
	const char *rule;
	const char *sent;	/* the Sent copy: saved, failed, off */
};

/* Appends an audit row and drops the rows older than prune_before_msecs
   (0 keeps them all), in one write transaction. Returns 0 or -1. */
int sbx_submit_audit_add(struct sbx_db *db, const struct sbx_submit_audit *a,
			 int64_t prune_before_msecs);

#endif
