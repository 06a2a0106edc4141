/* SPDX-License-Identifier: MIT */
/* METADATA attributes: the input's first byte picks the type; the rest is split at the first NUL into a
   key and a value of any bytes. What is set is read back byte for byte,
   and the key is listed under its own prefix. */
#include <stdlib.h>
#include <string.h>

#include "sbx-attr.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sbx_db *db = fuzz_db();
	enum sbx_attr_type type;
	int64_t mailbox_id;
	const uint8_t *nul;
	const void *value;
	size_t key_len, value_size, got_size;
	struct sbx_attr_iter *iter;
	const char *listed;
	char *key;
	bool found = false;
	int ret;

	if (size == 0)
		return 0;
	type = (data[0] & 1) != 0 ? SBX_ATTR_SHARED : SBX_ATTR_PRIVATE;
	mailbox_id = fuzz_inbox();
	data++;
	size--;
	nul = memchr(data, '\0', size);
	key_len = nul != NULL ? (size_t)(nul - data) : size;
	key = fuzz_str(data, key_len);
	value = nul != NULL ? nul + 1 : (const void *)"";
	value_size = nul != NULL ? size - key_len - 1 : 0;

	fuzz_begin();
	ret = sbx_attr_set(db, mailbox_id, type, key, value, value_size, 1);
	fuzz_expect_ok_or_refused(ret, "set");
	if (ret == 0) {
		const void *got;

		if (sbx_attr_get(db, mailbox_id, type, key, &got, &got_size,
				 NULL) != 1 || got_size != value_size ||
		    (value_size > 0 && memcmp(got, value, value_size) != 0))
			fuzz_fail("an attribute does not read back as set");
		if (sbx_attr_iter_init(db, mailbox_id, type, key, &iter) < 0)
			fuzz_fail("iter init");
		while ((ret = sbx_attr_iter_next(iter, &listed)) > 0) {
			if (strcmp(listed, key) == 0)
				found = true;
		}
		if (sbx_attr_iter_deinit(&iter) < 0 || ret < 0)
			fuzz_fail("iter");
		if (!found)
			fuzz_fail("a set attribute is not listed");
		if (sbx_attr_set(db, mailbox_id, type, key, NULL, 0, 2) < 0)
			fuzz_fail("unset");
	}
	fuzz_rollback();
	free(key);
	return 0;
}
