/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_TRANSACTION_H
#define SQLBOX_TRANSACTION_H

#include "sbx-attr.h"

/* An attribute change waiting for the transaction's commit. */
struct sqlbox_attr_change {
	enum sbx_attr_type type;
	const char *key;
	const char *value;	/* NULL: unset */
	time_t last_change;
};

struct sqlbox_transaction_context {
	/* first: index_transaction_free() i_free()s the whole struct */
	struct mailbox_transaction_context t;
	pool_t attr_pool;
	ARRAY(struct sqlbox_attr_change) attr_changes;
};

#define SQLBOX_TRANSACTION(t) \
	(container_of(t, struct sqlbox_transaction_context, t))

struct mailbox_transaction_context *
sqlbox_transaction_begin(struct mailbox *box,
			 enum mailbox_transaction_flags flags,
			 const char *reason);
int sqlbox_transaction_commit(struct mailbox_transaction_context *t,
			      struct mail_transaction_commit_changes *changes_r);
void sqlbox_transaction_rollback(struct mailbox_transaction_context *t);

#endif
