/* SPDX-License-Identifier: MIT */
/* Types shared by every part of the sqlbox storage library (libsbx).

   libsbx keeps one user's mail in one SQLite database: folders, messages,
   bodies, flags and counters. It knows nothing about Dovecot; plugin/ maps
   its results onto lib-storage. Every function returns 0 on success and -1
   on failure (lookups: 1 found, 0 not found, -1 error); the cause of a
   failure is kept in the handle and read with sbx_db_last_error(). */
#ifndef SBX_COMMON_H
#define SBX_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Causes of failure. plugin/sqlbox-error.c maps each onto a Dovecot
   mail_error; storage/sbx-error.c is the one place SQLite codes become
   these. */
enum sbx_error {
	SBX_ERR_NONE = 0,
	SBX_ERR_NOTFOUND,	/* a required row does not exist */
	SBX_ERR_EXISTS,		/* a unique name or key is taken */
	SBX_ERR_BUSY,		/* the write lock was not had in time */
	SBX_ERR_NOQUOTA,	/* the filesystem said EDQUOT */
	SBX_ERR_NOSPACE,	/* the disk or max_page_count is full */
	SBX_ERR_LIMIT,		/* a size or count limit of ours */
	SBX_ERR_INVALID,	/* bad input from the caller */
	SBX_ERR_PERM,		/* permission denied, read-only file */
	SBX_ERR_CORRUPT,	/* damaged file or a schema newer than us */
	SBX_ERR_IO,		/* I/O error */
	SBX_ERR_NOMEM,		/* out of memory */
	SBX_ERR_INTERNAL,	/* misuse or a bug: should be impossible */
};

/* Mailbox GUIDs are 16 raw bytes, as Dovecot's guid_128_t. */
#define SBX_GUID_SIZE 16
/* SHA-256 digest size. */
#define SBX_SHA256_SIZE 32

/* Message flag bits, the same values as Dovecot's enum mail_flags.
   \Recent is never stored. */
enum sbx_flags {
	SBX_FLAG_ANSWERED = 0x01,
	SBX_FLAG_FLAGGED = 0x02,
	SBX_FLAG_DELETED = 0x04,
	SBX_FLAG_SEEN = 0x08,
	SBX_FLAG_DRAFT = 0x10,
};
#define SBX_FLAGS_MASK 0x1f

/* The name of INBOX as stored; the separator of stored names. */
#define SBX_INBOX_NAME "INBOX"
#define SBX_HIERARCHY_SEP '/'

/* MODSEQs are allocated per write transaction in steps of this size, so an
   in-memory index can count its own changes between two steps. */
#define SBX_MODSEQ_STEP (UINT64_C(1) << 16)

#endif
