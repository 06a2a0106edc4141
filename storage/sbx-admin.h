/* SPDX-License-Identifier: MIT */
/* Looking after a user's database: check (and repair), purge, online
   backup and restore, statistics. These are operator tasks (doveadm
   sqlbox ...), run rarely, never in a mail session's path. */
#ifndef SBX_ADMIN_H
#define SBX_ADMIN_H

#include "sbx-common.h"

struct sbx_db;

/* Called once per problem found, with a sentence saying what is wrong
   and, when repairing, what was done about it. */
typedef void sbx_admin_report_func(void *context, const char *problem);

enum sbx_check_flags {
	/* PRAGMA integrity_check instead of quick_check */
	SBX_CHECK_FULL = 0x01,
	/* repair what can be repaired without losing mail */
	SBX_CHECK_REPAIR = 0x02,
};

/* Checks the file (quick_check or integrity_check) and the invariants:
   counters equal rows, refcounts equal references, no orphan bodies
   (those younger than SBX_BODY_UNREFERENCED_GRACE_SECS may be a save's
   in progress: not reported) or chunks, bodies as long as their chunks,
   messages with their body, UIDs and tombstones below uidnext, no UID
   both a message and a tombstone.
   With SBX_CHECK_REPAIR the repairable ones are fixed in one write
   transaction. Sets *problems_r to the number found; returns 0, or -1 if
   the check itself failed. */
int sbx_admin_check(struct sbx_db *db, enum sbx_check_flags flags,
		    sbx_admin_report_func *report, void *context,
		    unsigned int *problems_r);

struct sbx_purge_result {
	uint64_t bodies_freed;
	uint64_t tombstones_pruned;
	uint64_t bytes_before;	/* database file + WAL */
	uint64_t bytes_after;
};

/* Frees the bodies no message uses that were written before body_cutoff
   (unix time; SBX_BODY_UNREFERENCED_GRACE_SECS ago spares those of saves
   still in progress), prunes tombstones expunged before tombstone_cutoff,
   returns free pages to the filesystem (incremental vacuum) and
   checkpoints the WAL back to zero, all under the write lock. Records the
   time in meta 'last_purge'. */
int sbx_admin_purge(struct sbx_db *db, int64_t tombstone_cutoff,
		    int64_t body_cutoff, struct sbx_purge_result *result_r);

/* Writes a consistent copy of the database to dest_path, which must not
   exist, while others keep reading and writing (VACUUM INTO). */
int sbx_admin_backup(struct sbx_db *db, const char *dest_path);

/* Replaces the database's content with the database at src_path, under
   the write lock, with SQLite's backup API (readers of the old content
   see the new one at their next transaction). */
int sbx_admin_restore(struct sbx_db *db, const char *src_path);

struct sbx_stats {
	uint64_t mailboxes;		/* selectable ones */
	uint64_t messages;
	uint64_t message_bytes;		/* sum of the messages' sizes */
	uint64_t bodies;
	uint64_t bodies_shared;		/* referenced more than once */
	uint64_t body_bytes;		/* sum of the stored bodies' sizes */
	uint64_t tombstones;
	uint64_t file_bytes;		/* pages in use and free */
	uint64_t free_bytes;		/* free pages */
	uint64_t wal_bytes;
	int schema_version;
	int64_t last_purge;		/* unix time, 0 if never */
};

int sbx_admin_stats(struct sbx_db *db, struct sbx_stats *stats_r);

#endif
