/* SPDX-License-Identifier: MIT */
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbx-mailbox.h"
#include "fuzz-common.h"

static char dir[PATH_MAX];
static struct sbx_db *db;
static int64_t inbox_id;

static int remove_entry(const char *path, const struct stat *st, int type,
			struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

static void fuzz_cleanup(void)
{
	sbx_db_close(&db);
	if (dir[0] != '\0')
		(void)nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void)
{
	if (dir[0] == '\0') {
		const char *tmp = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/sbx-fuzz-XXXXXX",
			 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
		if (mkdtemp(dir) == NULL)
			fuzz_fail("mkdtemp");
		atexit(fuzz_cleanup);
	}
	return dir;
}

struct sbx_db *fuzz_db(void)
{
	struct sbx_db_settings set = {
		.lock_timeout_msecs = 1000,
		.synchronous = SBX_SYNCHRONOUS_OFF,
	};
	struct sbx_mailbox_create create = { .name = "INBOX" };
	char path[PATH_MAX];

	if (db != NULL)
		return db;
	snprintf(path, sizeof(path), "%s/mail.sqlite", fuzz_dir());
	if (sbx_db_open(path, &set, &db) < 0)
		fuzz_fail("open the fuzzing database");
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0 ||
	    sbx_mailbox_create(db, &create, &inbox_id) < 0 ||
	    sbx_tx_commit(db) < 0)
		fuzz_fail("create INBOX");
	return db;
}

int64_t fuzz_inbox(void)
{
	(void)fuzz_db();
	return inbox_id;
}

char *fuzz_str(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		fuzz_fail("out of memory");
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

void fuzz_begin(void)
{
	if (sbx_tx_begin(fuzz_db(), SBX_TX_WRITE) < 0)
		fuzz_fail("begin");
}

void fuzz_rollback(void)
{
	sbx_tx_rollback(fuzz_db());
	if (sbx_tx_is_active(db))
		fuzz_fail("rollback left a transaction");
}

void fuzz_fail(const char *what)
{
	const char *msg = "";

	if (db != NULL)
		(void)sbx_db_last_error(db, &msg);
	fprintf(stderr, "fuzz: %s (last error: %s)\n", what, msg);
	abort();
}

void fuzz_expect_ok_or_refused(int ret, const char *what)
{
	const char *msg;

	if (ret >= 0)
		return;
	if (getenv("FUZZ_VERBOSE") != NULL) {
		(void)sbx_db_last_error(fuzz_db(), &msg);
		fprintf(stderr, "fuzz: %s refused: %s\n", what, msg);
	}
	switch (sbx_db_last_error(fuzz_db(), &msg)) {
	case SBX_ERR_INVALID:
	case SBX_ERR_EXISTS:
	case SBX_ERR_NOTFOUND:
	case SBX_ERR_LIMIT:
		return;
	default:
		fuzz_fail(what);
	}
}
