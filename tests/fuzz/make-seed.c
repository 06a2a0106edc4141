/* SPDX-License-Identifier: MIT */
/* Writes a small but complete database for the fuzz-open corpus: folders,
   a subscription, messages with keywords and a deduplicated body, an
   expunged message, attributes. Usage: make-seed PATH */
#include <stdio.h>
#include <string.h>

#include "sbx-attr.h"
#include "sbx-body.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"

static int add_message(struct sbx_db *db, int64_t box, const char *text,
		       const char *keywords)
{
	struct sbx_body_writer *writer;
	struct sbx_msg_new msg = { 0 };
	struct sbx_mailbox mb;
	size_t len = strlen(text);

	if (sbx_mailbox_lookup_id(db, box, &mb) != 1 ||
	    sbx_mailbox_modseq_alloc(db, box, &msg.modseq) < 0 ||
	    sbx_body_writer_open(db, NULL, len, len, &writer) < 0 ||
	    sbx_body_writer_write(writer, text, len) < 0 ||
	    sbx_body_writer_close(&writer, &msg.body_id) < 0)
		return -1;
	msg.uid = mb.uidnext;
	msg.guid = "seed-guid";
	msg.flags = SBX_FLAG_SEEN;
	msg.keywords = keywords;
	msg.received_date = 1700000000;
	msg.save_date = 1700000000;
	msg.message_id = "<seed@example.org>";
	return sbx_msg_append(db, box, &msg);
}

int main(int argc, char **argv)
{
	struct sbx_mailbox_create inbox = { .name = "INBOX" };
	struct sbx_mailbox_create child = { .name = "Archive/2024" };
	struct sbx_db *db = NULL;
	const char *msg;
	int64_t inbox_id, child_id;

	if (argc != 2) {
		fprintf(stderr, "usage: make-seed PATH\n");
		return 2;
	}
	if (sbx_db_open(argv[1], NULL, &db) < 0 ||
	    sbx_tx_begin(db, SBX_TX_WRITE) < 0 ||
	    sbx_mailbox_create(db, &inbox, &inbox_id) < 0 ||
	    sbx_mailbox_create(db, &child, &child_id) < 0 ||
	    sbx_subscription_set(db, "Archive/2024", true) < 0 ||
	    add_message(db, inbox_id, "Subject: a\r\n\r\nbody\r\n",
			"$Junk work") < 0 ||
	    add_message(db, inbox_id, "Subject: b\r\n\r\nbody 2\r\n", "") < 0 ||
	    add_message(db, child_id, "Subject: c\r\n\r\nold\r\n", "x") < 0 ||
	    sbx_msg_expunge(db, inbox_id, 2, 1 << 20) < 0 ||
	    sbx_attr_set(db, inbox_id, SBX_ATTR_PRIVATE, "vendor/seed", "v", 1,
			 1700000000) < 0 ||
	    sbx_attr_set(db, inbox_id, SBX_ATTR_SHARED, "comment", "c", 1,
			 1700000000) < 0 ||
	    sbx_tx_commit(db) < 0) {
		(void)sbx_db_last_error(db, &msg);
		fprintf(stderr, "make-seed: %s\n", db != NULL ? msg : "no memory");
		sbx_db_close(&db);
		return 1;
	}
	sbx_db_close(&db);
	return 0;
}
