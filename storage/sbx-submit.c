/* SPDX-License-Identifier: MIT */
/* The submission operator database (sbx-submit-migrations.def).

   Rate limits hold across processes because the check and the
   reservation are one write transaction: one SMTP connection is one
   process, and two of them checking before either counted would both
   pass. A reservation is the count; what a transaction does not use is
   given back by sbx_submit_release(), and a killed process only leaves
   its reservation until the window passes (the error is on the strict
   side). The workload: a few short transactions per message, from many
   short-lived processes. */
#include <string.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-submit.h"

static int sbx_submit_sum(struct sbx_db *db, enum sbx_stmt_id id,
			  const char *username, int64_t bucket,
			  unsigned int *sum_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, id, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, username) < 0 ||
	    sbx_bind_int64(db, stmt, 2, bucket) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "count the rate of '%s'",
					username);
	if (ret > 0)
		*sum_r = sbx_column_u32(stmt, 0);
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : 0;
}

static int sbx_submit_add(struct sbx_db *db, const char *username,
			  int64_t bucket, unsigned int messages,
			  unsigned int recipients)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_POLICY_RATE_ADD, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, username) == 0 &&
	    sbx_bind_int64(db, stmt, 2, bucket) == 0 &&
	    sbx_bind_int64(db, stmt, 3, messages) == 0 &&
	    sbx_bind_int64(db, stmt, 4, recipients) == 0)
		ret = sbx_stmt_exec(db, stmt, "reserve for '%s'", username);
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_submit_prune(struct sbx_db *db, const char *username,
			    int64_t bucket)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_POLICY_RATE_PRUNE, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, username) == 0 &&
	    sbx_bind_int64(db, stmt, 2, bucket - SBX_SUBMIT_DAY_BUCKETS) == 0)
		ret = sbx_stmt_exec(db, stmt, "prune the rate of '%s'",
				    username);
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_submit_reserve(struct sbx_db *db, enum sbx_stmt_id sum_id,
			      const char *username, int64_t bucket,
			      unsigned int limit, bool is_message,
			      unsigned int *count_r)
{
	unsigned int count = 0;

	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		return -1;
	if (sbx_submit_sum(db, sum_id, username, bucket, &count) < 0)
		goto out_rollback;
	if (count_r != NULL)
		*count_r = count;
	if (limit != 0 && count >= limit) {
		sbx_tx_rollback(db);
		return 0;
	}
	/* a new transaction's message is the time to forget old buckets */
	if (is_message && sbx_submit_prune(db, username, bucket) < 0)
		goto out_rollback;
	if (sbx_submit_add(db, username, bucket, is_message ? 1 : 0,
			   is_message ? 0 : 1) < 0)
		goto out_rollback;
	return sbx_tx_commit(db) < 0 ? -1 : 1;
out_rollback:
	sbx_tx_rollback(db);
	return -1;
}

int sbx_submit_reserve_message(struct sbx_db *db, const char *username,
			       int64_t bucket, unsigned int limit,
			       unsigned int *count_r)
{
	return sbx_submit_reserve(db, SBX_STMT_POLICY_RATE_SUM_MESSAGES,
				  username, bucket, limit, true, count_r);
}

int sbx_submit_reserve_recipient(struct sbx_db *db, const char *username,
				 int64_t bucket, unsigned int limit,
				 unsigned int *count_r)
{
	return sbx_submit_reserve(db, SBX_STMT_POLICY_RATE_SUM_RECIPIENTS,
				  username, bucket, limit, false, count_r);
}

static int sbx_submit_update(struct sbx_db *db, const char *username,
			     int64_t bucket, unsigned int messages,
			     unsigned int recipients, uint64_t bytes)
{
	sqlite3_stmt *stmt;
	int ret = 0;

	if (messages > 0 || recipients > 0) {
		if (sbx_stmt_get(db, SBX_STMT_POLICY_RATE_RELEASE, &stmt) < 0)
			return -1;
		if (sbx_bind_text(db, stmt, 1, username) < 0 ||
		    sbx_bind_int64(db, stmt, 2, bucket) < 0 ||
		    sbx_bind_int64(db, stmt, 3, messages) < 0 ||
		    sbx_bind_int64(db, stmt, 4, recipients) < 0)
			ret = -1;
		else
			ret = sbx_stmt_exec(db, stmt, "release for '%s'",
					    username);
		sbx_stmt_put(db, stmt);
	}
	if (ret == 0 && bytes > 0) {
		if (sbx_stmt_get(db, SBX_STMT_POLICY_RATE_ADD_BYTES,
				 &stmt) < 0)
			return -1;
		if (sbx_bind_text(db, stmt, 1, username) < 0 ||
		    sbx_bind_int64(db, stmt, 2, bucket) < 0 ||
		    sbx_bind_int64(db, stmt, 3, (int64_t)bytes) < 0)
			ret = -1;
		else
			ret = sbx_stmt_exec(db, stmt, "count bytes for '%s'",
					    username);
		sbx_stmt_put(db, stmt);
	}
	return ret;
}

int sbx_submit_release(struct sbx_db *db, const char *username,
		       int64_t bucket, unsigned int messages,
		       unsigned int recipients, uint64_t bytes)
{
	if (messages == 0 && recipients == 0 && bytes == 0)
		return 0;
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		return -1;
	if (sbx_submit_update(db, username, bucket, messages, recipients,
			      bytes) < 0) {
		sbx_tx_rollback(db);
		return -1;
	}
	return sbx_tx_commit(db);
}

int sbx_submit_sender_lookup(struct sbx_db *db, const char *username,
			     const char *address)
{
	const char *domain = strrchr(address, '@');
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_POLICY_SENDER_OWNED, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, username) < 0 ||
	    sbx_bind_text(db, stmt, 2, address) < 0 ||
	    sbx_bind_text(db, stmt, 3, domain) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up sender '%s' of "
					"'%s'", address, username);
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_submit_audit_insert(struct sbx_db *db,
				   const struct sbx_submit_audit *a)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_POLICY_AUDIT_INSERT, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, a->ts_msecs) == 0 &&
	    sbx_bind_text(db, stmt, 2, a->username) == 0 &&
	    sbx_bind_text(db, stmt, 3, a->session_id) == 0 &&
	    sbx_bind_text(db, stmt, 4, a->remote_ip) == 0 &&
	    sbx_bind_int64(db, stmt, 5, a->tls ? 1 : 0) == 0 &&
	    sbx_bind_text(db, stmt, 6, a->envelope_from) == 0 &&
	    sbx_bind_text(db, stmt, 7, a->recipients) == 0 &&
	    sbx_bind_int64(db, stmt, 8, a->rcpt_count) == 0 &&
	    (a->size < 0 ? sbx_bind_null(db, stmt, 9) :
	     sbx_bind_int64(db, stmt, 9, a->size)) == 0 &&
	    sbx_bind_text(db, stmt, 10, a->message_id) == 0 &&
	    sbx_bind_int64(db, stmt, 11, a->status_code) == 0 &&
	    sbx_bind_text(db, stmt, 12, a->enhanced_code) == 0 &&
	    sbx_bind_text(db, stmt, 13, a->reply) == 0 &&
	    sbx_bind_text(db, stmt, 14, a->rule) == 0 &&
	    sbx_bind_text(db, stmt, 15, a->sent) == 0)
		ret = sbx_stmt_exec(db, stmt, "write audit row of '%s'",
				    a->username);
	sbx_stmt_put(db, stmt);
	return ret;
}

static int sbx_submit_audit_prune(struct sbx_db *db, int64_t before_msecs)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_POLICY_AUDIT_PRUNE, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, before_msecs) == 0)
		ret = sbx_stmt_exec(db, stmt, "prune the audit log");
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_submit_audit_add(struct sbx_db *db, const struct sbx_submit_audit *a,
			 int64_t prune_before_msecs)
{
	if (a->username == NULL || a->rule == NULL) {
		return sbx_error_set(db, SBX_ERR_INVALID,
				     "write audit row: no user or rule");
	}
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		return -1;
	if (sbx_submit_audit_insert(db, a) < 0)
		goto out_rollback;
	if (prune_before_msecs > 0 &&
	    sbx_submit_audit_prune(db, prune_before_msecs) < 0)
		goto out_rollback;
	return sbx_tx_commit(db);
out_rollback:
	sbx_tx_rollback(db);
	return -1;
}
