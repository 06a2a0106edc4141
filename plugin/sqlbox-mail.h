/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_MAIL_H
#define SQLBOX_MAIL_H

struct mail *
sqlbox_mail_alloc(struct mailbox_transaction_context *t,
		  enum mail_fetch_field wanted_fields,
		  struct mailbox_header_lookup_ctx *wanted_headers);

#endif
