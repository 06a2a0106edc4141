/* SPDX-License-Identifier: MIT */
/* Numbered schema migrations through PRAGMA user_version.

   The invariant: user_version names exactly the migrations applied,
   because each migration commits together with its own user_version bump
   (the text in sbx-migrations.def ends with it) in one BEGIN IMMEDIATE
   transaction under the lock file. Two processes that open an old or
   brand-new database at once both end up current, and every migration
   runs once: the second one re-reads user_version inside its write
   transaction and finds the work done. A database newer than this code
   is refused, never "repaired". Migrations run at open time only, once
   per process and database, so they favour clarity over speed. */
#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-migrate.h"

/* "SBOX": PRAGMA application_id of a sqlbox database. */
#define SBX_APPLICATION_ID INT64_C(0x53424F58)
/* "SBXP": the submission operator database. */
#define SBX_POLICY_APPLICATION_ID INT64_C(0x53425850)

struct sbx_migration {
	int version;
	const char *sql;
};

static const struct sbx_migration sbx_migrations[] = {
#define SBX_MIGRATION(version, sql) { version, sql },
#include "sbx-migrations.def"
#undef SBX_MIGRATION
};

static const struct sbx_migration sbx_policy_migrations[] = {
#define SBX_MIGRATION(version, sql) { version, sql },
#include "sbx-submit-migrations.def"
#undef SBX_MIGRATION
};

/* One kind of database: its migrations and its application_id. */
struct sbx_schema {
	const struct sbx_migration *migrations;
	int count;
	int64_t application_id;
};

static const struct sbx_schema sbx_schemas[] = {
	[SBX_DB_KIND_MAIL] = {
		sbx_migrations,
		(int)(sizeof(sbx_migrations) / sizeof(sbx_migrations[0])),
		SBX_APPLICATION_ID,
	},
	[SBX_DB_KIND_POLICY] = {
		sbx_policy_migrations,
		(int)(sizeof(sbx_policy_migrations) /
		      sizeof(sbx_policy_migrations[0])),
		SBX_POLICY_APPLICATION_ID,
	},
};

static const struct sbx_schema *sbx_migrate_schema(struct sbx_db *db)
{
	return &sbx_schemas[db->kind == SBX_DB_KIND_POLICY ?
			    SBX_DB_KIND_POLICY : SBX_DB_KIND_MAIL];
}

static int sbx_schema_version(const struct sbx_schema *schema)
{
	return schema->migrations[schema->count - 1].version;
}

int sbx_migrate_code_version(void)
{
	return sbx_schema_version(&sbx_schemas[SBX_DB_KIND_MAIL]);
}

static int sbx_migrate_refuse_newer(struct sbx_db *db, int version)
{
	return sbx_error_set(db, SBX_ERR_CORRUPT,
		"open database '%s': database schema version %d is newer "
		"than this sqlbox supports (%d)", db->path, version,
		sbx_schema_version(sbx_migrate_schema(db)));
}

/* An unmarked file is ours only while it is empty (new): a SQLite
   database of some other program has tables but, like most, no
   application_id, and migrating would add ours to it. */
static int sbx_migrate_check_unmarked(struct sbx_db *db)
{
	sqlite3_stmt *stmt;
	int64_t objects = 0, id = 0;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_DB_SCHEMA_OBJECTS, &stmt) < 0)
		return -1;
	ret = sbx_stmt_step_row(db, stmt, "read the schema of '%s'",
				db->path);
	if (ret > 0)
		objects = sqlite3_column_int64(stmt, 0);
	sbx_stmt_put(db, stmt);
	if (ret < 0)
		return -1;
	/* Another process may have migrated the new file meanwhile: its
	   tables and its mark were committed together. */
	if (objects > 0 && sbx_db_read_application_id(db, &id) < 0)
		return -1;
	if (objects > 0 && id != sbx_migrate_schema(db)->application_id) {
		return sbx_error_set(db, SBX_ERR_CORRUPT,
				     "open database '%s': not a sqlbox "
				     "database (it has %lld schema objects "
				     "of another program)", db->path,
				     (long long)objects);
	}
	return 0;
}

/* A file that another application marked as its own is not ours to
   change. 0 is a file no one marked (a new one). */
static int sbx_migrate_check_application_id(struct sbx_db *db)
{
	int64_t id;

	if (sbx_db_read_application_id(db, &id) < 0)
		return -1;
	if (id == 0)
		return sbx_migrate_check_unmarked(db);
	if (id == sbx_migrate_schema(db)->application_id)
		return 0;
	return sbx_error_set(db, SBX_ERR_CORRUPT,
			     "open database '%s': not a sqlbox database "
			     "(application_id 0x%08llx)", db->path,
			     (unsigned long long)id);
}

/* Runs the entries of one migration, first to last. */
static int sbx_migrate_exec(struct sbx_db *db,
			    const struct sbx_migration *first,
			    const struct sbx_migration *last)
{
	const struct sbx_migration *m;
	char *errmsg = NULL;
	int rc;

	for (m = first; m < last; m++) {
		rc = sqlite3_exec(db->sqlite, m->sql, NULL, NULL, &errmsg);
		sqlite3_free(errmsg);
		if (rc != SQLITE_OK) {
			return sbx_error_sqlite(db, rc,
				"migrate database '%s' to schema version %d",
				db->path, m->version);
		}
	}
	return 0;
}

/* Runs the migration first..last (same version) unless another process
   did it first. */
static int sbx_migrate_one(struct sbx_db *db,
			   const struct sbx_migration *first,
			   const struct sbx_migration *last)
{
	int version;

	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		return -1;
	if (sbx_db_read_user_version(db, &version) < 0)
		goto out_rollback;
	if (version > sbx_schema_version(sbx_migrate_schema(db))) {
		(void)sbx_migrate_refuse_newer(db, version);
		goto out_rollback;
	}
	if (version >= first->version) {
		/* Another process migrated while we waited for the lock. */
		sbx_tx_rollback(db);
		return 0;
	}
	if (sbx_migrate_exec(db, first, last) < 0)
		goto out_rollback;
	if (sbx_db_read_user_version(db, &version) < 0)
		goto out_rollback;
	if (version != first->version) {
		(void)sbx_error_set(db, SBX_ERR_INTERNAL,
			"migrate database '%s' to schema version %d: "
			"the migration left user_version %d", db->path,
			first->version, version);
		goto out_rollback;
	}
	return sbx_tx_commit(db);
out_rollback:
	sbx_tx_rollback(db);
	return -1;
}

int sbx_migrate(struct sbx_db *db)
{
	const struct sbx_schema *schema = sbx_migrate_schema(db);
	const struct sbx_migration *migrations = schema->migrations;
	const int code_version = sbx_schema_version(schema);
	int version, i, end;

	if (sbx_db_read_user_version(db, &version) < 0)
		return -1;
	if (version > code_version)
		return sbx_migrate_refuse_newer(db, version);
	if (sbx_migrate_check_application_id(db) < 0)
		return -1;
	if (sbx_db_prepare_file(db) < 0)
		return -1;
	for (i = 0; i < schema->count; i = end) {
		end = i + 1;
		while (end < schema->count &&
		       migrations[end].version == migrations[i].version)
			end++;
		if (migrations[i].version <= version)
			continue;
		if (sbx_migrate_one(db, &migrations[i], &migrations[end]) < 0)
			return -1;
	}
	if (sbx_db_read_user_version(db, &db->schema_version) < 0)
		return -1;
	if (db->schema_version > code_version)
		return sbx_migrate_refuse_newer(db, db->schema_version);
	return 0;
}
