/* SPDX-License-Identifier: MIT */
/* Keyword lists (STORE +FLAGS, APPEND flags): normalising is idempotent,
   sorted and free of duplicates, and a message stored with the list reads
   it back normalised. */
#include <stdlib.h>
#include <string.h>

#include "sbx-body.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_normal(const char *norm)
{
	const char *prev = NULL, *p = norm;
	size_t prev_len = 0;

	if (norm[0] == ' ')
		fuzz_fail("normalised keywords start with a space");
	while (*p != '\0') {
		size_t len = strcspn(p, " ");

		if (len == 0)
			fuzz_fail("an empty keyword in a normalised list");
		if (prev != NULL) {
			size_t n = len < prev_len ? len : prev_len;
			int cmp = memcmp(prev, p, n);

			if (cmp > 0 || (cmp == 0 && prev_len >= len))
				fuzz_fail("normalised keywords not sorted "
					  "or not unique");
		}
		prev = p;
		prev_len = len;
		p += len;
		if (*p == ' ')
			p++;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sbx_db *db = fuzz_db();
	char *input = fuzz_str(data, size);
	char *norm = sbx_keywords_normalize(input);
	char *again;
	struct sbx_body_writer *writer;
	struct sbx_msg_new msg = { 0 };
	struct sbx_msg got;
	struct sbx_mailbox mb;
	uint64_t modseq;
	int64_t body_id;
	int ret;

	if (norm == NULL)
		fuzz_fail("normalize");
	check_normal(norm);
	again = sbx_keywords_normalize(norm);
	if (again == NULL || strcmp(again, norm) != 0)
		fuzz_fail("normalising twice changes the list");

	fuzz_begin();
	if (sbx_mailbox_lookup_id(db, fuzz_inbox(), &mb) != 1 ||
	    sbx_mailbox_modseq_alloc(db, fuzz_inbox(), &modseq) < 0 ||
	    sbx_body_writer_open(db, NULL, 3, 3, &writer) < 0 ||
	    sbx_body_writer_write(writer, "x\r\n", 3) < 0 ||
	    sbx_body_writer_close(&writer, &body_id) < 0)
		fuzz_fail("set up a message");
	msg.uid = mb.uidnext;
	msg.body_id = body_id;
	msg.guid = "fuzz-guid";
	msg.keywords = input;
	msg.modseq = modseq;
	ret = sbx_msg_append(db, fuzz_inbox(), &msg);
	fuzz_expect_ok_or_refused(ret, "append with keywords");
	if (ret == 0) {
		if (sbx_msg_lookup(db, fuzz_inbox(), msg.uid, &got) != 1 ||
		    strcmp(got.keywords, norm) != 0)
			fuzz_fail("stored keywords differ from the normalised "
				  "list");
		ret = sbx_msg_update_flags(db, fuzz_inbox(), msg.uid,
					   SBX_FLAG_SEEN, input, modseq);
		fuzz_expect_ok_or_refused(ret, "update keywords");
	}
	fuzz_rollback();
	free(input);
	free(norm);
	free(again);
	return 0;
}
