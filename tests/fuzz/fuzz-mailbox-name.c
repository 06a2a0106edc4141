/* SPDX-License-Identifier: MIT */
/* Mailbox names as a client sends them (after Dovecot's decoding): any
   bytes up to a NUL, with '/' tricks, overlong UTF-8 and the like. The
   input is split at its first newline into a name and a new name. Create,
   look up, subscribe, rename and delete must each succeed or refuse
   cleanly; a name that was created must be found byte for byte. */
#include <stdlib.h>
#include <string.h>

#include "sbx-mailbox.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sbx_db *db = fuzz_db();
	struct sbx_mailbox_create create = { 0 };
	struct sbx_mailbox mb;
	const uint8_t *nl = memchr(data, '\n', size);
	size_t len = nl != NULL ? (size_t)(nl - data) : size;
	char *name = fuzz_str(data, len);
	char *newname = fuzz_str(nl != NULL ? nl + 1 : data,
				 nl != NULL ? size - len - 1 : 0);
	bool kept;
	int64_t id;
	int ret;

	fuzz_begin();
	create.name = name;
	ret = sbx_mailbox_create(db, &create, &id);
	fuzz_expect_ok_or_refused(ret, "create");
	if (ret == 0) {
		if (sbx_mailbox_lookup(db, name, &mb) != 1 ||
		    strcmp(mb.name, name) != 0 || mb.id != id)
			fuzz_fail("a created mailbox is not found as created");
	}
	if (sbx_mailbox_has_children(db, name) < 0)
		fuzz_fail("has_children");
	fuzz_expect_ok_or_refused(sbx_subscription_set(db, name, true),
				  "subscribe");
	if (ret == 0 && newname[0] != '\0') {
		int rret = sbx_mailbox_rename(db, name, newname, true);

		fuzz_expect_ok_or_refused(rret, "rename");
		if (rret == 0 && sbx_mailbox_lookup(db, newname, &mb) != 1)
			fuzz_fail("a renamed mailbox is not found");
		if (rret == 0)
			fuzz_expect_ok_or_refused(
				sbx_mailbox_delete(db, newname, &kept),
				"delete renamed");
	} else if (ret == 0) {
		fuzz_expect_ok_or_refused(sbx_mailbox_delete(db, name, &kept),
					  "delete");
	}
	fuzz_rollback();
	free(name);
	free(newname);
	return 0;
}
