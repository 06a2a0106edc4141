/* SPDX-License-Identifier: MIT */
/* Bringing a database to the schema of this code (sbx-migrations.def). */
#ifndef SBX_MIGRATE_H
#define SBX_MIGRATE_H

struct sbx_db;

/* The schema version this code writes: the last migration's number. */
int sbx_migrate_code_version(void);

/* Migrates the freshly opened db to sbx_migrate_code_version() and
   records the result in db->schema_version. A database that is current
   costs a few reads and no lock. Otherwise each missing migration runs in
   its own SBX_TX_WRITE transaction that re-reads user_version first, so
   that processes opening an old or brand-new file at once migrate it
   exactly once. Fails with SBX_ERR_CORRUPT for a schema newer than this
   code or a file of another application, SBX_ERR_BUSY if the lock is not
   had in time. Returns 0 or -1. */
int sbx_migrate(struct sbx_db *db);

#endif
