/* SPDX-License-Identifier: MIT */
/* Shared by the libFuzzer targets of tests/fuzz: one database per fuzzing
   process, opened on first use in a directory of its own and removed at
   exit. Every input runs inside a write transaction that is rolled back,
   so each one starts from the same state and the file stays small. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "sbx-db.h"

/* The process's database (created with one mailbox, "INBOX"); aborts if
   it cannot be opened. */
struct sbx_db *fuzz_db(void);
/* The id of "INBOX" in fuzz_db(). */
int64_t fuzz_inbox(void);
/* The process's scratch directory. */
const char *fuzz_dir(void);
/* A malloc()ed NUL-terminated copy of data (up to its first NUL). */
char *fuzz_str(const uint8_t *data, size_t size);
/* Begins the input's write transaction; rolls it back. */
void fuzz_begin(void);
void fuzz_rollback(void);
/* Reports a broken property and aborts, so libFuzzer keeps the input. */
void fuzz_fail(const char *what) __attribute__((noreturn));
/* Fails unless the call's result is one of the expected outcomes: 0, or
   -1 with a cause that is bad input rather than a bug (INVALID, EXISTS,
   NOTFOUND, LIMIT). FUZZ_VERBOSE=1 in the environment prints each
   refusal. */
void fuzz_expect_ok_or_refused(int ret, const char *what);

#endif
