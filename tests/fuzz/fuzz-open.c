/* SPDX-License-Identifier: MIT */
/* Opening and migrating a damaged or foreign file: the input is written
   as mail.sqlite (the corpus starts from real databases of every schema
   version) and opened. Opening either works, and then the integrity check
   and a read of every mailbox run without crashing, or fails with a
   cause: never a crash, never a hang. */
#include <fcntl.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sbx-admin.h"
#include "sbx-mailbox.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void unlink_all(const char *path)
{
	static const char *const suffixes[] = { "", "-wal", "-shm",
						"-journal", ".lock" };
	char p[PATH_MAX];
	size_t i;

	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
		(void)unlink(p);
	}
}


/* FUZZ_VERBOSE=1 says what became of each input. */
static bool verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sbx_db_settings set = { .lock_timeout_msecs = 200 };
	struct sbx_mailbox_iter *iter;
	struct sbx_mailbox mb;
	struct sbx_db *db = NULL;
	unsigned int problems;
	char path[PATH_MAX];
	int fd, ret;

	snprintf(path, sizeof(path), "%s/open.sqlite", fuzz_dir());
	unlink_all(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
		fuzz_fail("write the input file");
	ret = sbx_db_open(path, &set, &db);
	if (verbose) {
		const char *msg = "";

		if (ret < 0 && db != NULL)
			(void)sbx_db_last_error(db, &msg);
		fprintf(stderr, "fuzz-open: %s %s\n",
			ret == 0 ? "opened" : "refused", msg);
	}
	if (ret == 0) {
		(void)sbx_admin_check(db, SBX_CHECK_FULL, NULL, NULL,
				      &problems);
		if (sbx_mailbox_iter_init(db, &iter) == 0) {
			while ((ret = sbx_mailbox_iter_next(iter, &mb)) > 0)
				;
			(void)sbx_mailbox_iter_deinit(&iter);
		}
	}
	sbx_db_close(&db);
	unlink_all(path);
	return 0;
}
