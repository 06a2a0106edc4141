/* SPDX-License-Identifier: MIT */
/* Folders (the mailboxes table) and subscriptions.

   The invariants kept here: every parent of a mailbox name exists, as a
   \Noselect row if nothing else; a UIDVALIDITY is never handed out twice
   in a database (meta.next_uidvalidity only grows), so a deleted and
   recreated mailbox is always seen as new; a subtree moves in one
   statement and only after checking that no target name exists, so a
   rename either happens completely or not at all. Names are UTF-8 with
   '/' between components and compare as bytes; checking their charset
   and length is Dovecot's job. The counters of a row are the triggers'
   business (sbx-migrations.def), never written here except to zero them
   on delete. Folder operations are rare next to message operations: a
   few statements each. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-mailbox.h"

struct sbx_mailbox_iter {
	struct sbx_db *db;
	sqlite3_stmt *stmt;
	bool failed;
	bool done;
};

struct sbx_subscription_iter {
	struct sbx_db *db;
	sqlite3_stmt *stmt;
	bool failed;
	bool done;
};

/* Fills mb_r from a row of SBX_SQL_MAILBOX_COLUMNS; the name points into
   the statement. Returns 0, or -1 if SQLite ran out of memory. */
static int sbx_mailbox_from_row(struct sbx_db *db, sqlite3_stmt *stmt,
				struct sbx_mailbox *mb_r)
{
	const void *guid;

	memset(mb_r, 0, sizeof(*mb_r));
	mb_r->id = sqlite3_column_int64(stmt, 0);
	mb_r->name = (const char *)sqlite3_column_text(stmt, 1);
	if (mb_r->name == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "read mailbox: out of memory");
	}
	guid = sqlite3_column_blob(stmt, 2);
	if (guid != NULL && sqlite3_column_bytes(stmt, 2) == SBX_GUID_SIZE)
		memcpy(mb_r->guid, guid, SBX_GUID_SIZE);
	mb_r->noselect = sqlite3_column_int64(stmt, 3) != 0;
	mb_r->uidvalidity = sbx_column_u32(stmt, 4);
	mb_r->uidnext = sbx_column_u32(stmt, 5);
	mb_r->first_recent_uid = sbx_column_u32(stmt, 6);
	mb_r->highestmodseq = sbx_column_u64(stmt, 7);
	mb_r->messages = sbx_column_u32(stmt, 8);
	mb_r->unseen = sbx_column_u32(stmt, 9);
	mb_r->vsize = sbx_column_u64(stmt, 10);
	mb_r->psize = sbx_column_u64(stmt, 11);
	mb_r->created = sqlite3_column_int64(stmt, 12);
	mb_r->pruned_modseq = sbx_column_u64(stmt, 13);
	return 0;
}

/* Finishes a lookup whose step returned ret: fills mb_r, copies the name
   into the handle and puts the statement back. */
static int sbx_mailbox_lookup_finish(struct sbx_db *db, sqlite3_stmt *stmt,
				     int ret, struct sbx_mailbox *mb_r)
{
	const char **const strs[] = { &mb_r->name };

	if (ret > 0) {
		if (sbx_mailbox_from_row(db, stmt, mb_r) < 0 ||
		    sbx_db_keep_strings(db, strs, 1) < 0)
			ret = -1;
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_mailbox_lookup(struct sbx_db *db, const char *name,
		       struct sbx_mailbox *mb_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_BY_NAME, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, name) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up mailbox '%s'", name);
	return sbx_mailbox_lookup_finish(db, stmt, ret, mb_r);
}

int sbx_mailbox_lookup_id(struct sbx_db *db, int64_t id,
			  struct sbx_mailbox *mb_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_BY_ID, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up mailbox %lld",
					(long long)id);
	return sbx_mailbox_lookup_finish(db, stmt, ret, mb_r);
}

int sbx_mailbox_lookup_guid(struct sbx_db *db,
			    const uint8_t guid[SBX_GUID_SIZE],
			    struct sbx_mailbox *mb_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_BY_GUID, &stmt) < 0)
		return -1;
	if (sbx_bind_blob(db, stmt, 1, guid, SBX_GUID_SIZE) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up mailbox by GUID");
	return sbx_mailbox_lookup_finish(db, stmt, ret, mb_r);
}

/* A name is valid for us unless it is empty or has an empty component
   ("/a", "a/", "a//b"). */
static bool sbx_mailbox_name_is_valid(const char *name)
{
	size_t i, len;

	if (name == NULL || name[0] == '\0')
		return false;
	len = strlen(name);
	if (name[0] == SBX_HIERARCHY_SEP || name[len - 1] == SBX_HIERARCHY_SEP)
		return false;
	for (i = 1; i < len; i++) {
		if (name[i] == SBX_HIERARCHY_SEP &&
		    name[i - 1] == SBX_HIERARCHY_SEP)
			return false;
	}
	return true;
}

/* Whether name is parent/... */
static bool sbx_mailbox_name_is_inside(const char *name, const char *parent)
{
	size_t len = strlen(parent);

	return strncmp(name, parent, len) == 0 &&
		name[len] == SBX_HIERARCHY_SEP;
}

/* The id and \Noselect of the first len bytes of name: 1 found, 0 not,
   -1 error. */
static int sbx_mailbox_state(struct sbx_db *db, const char *name, size_t len,
			     int64_t *id_r, bool *noselect_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_STATE_BY_NAME, &stmt) < 0)
		return -1;
	if (sbx_bind_text_len(db, stmt, 1, name, len) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up mailbox '%.*s'",
					(int)len, name);
	if (ret > 0) {
		*id_r = sqlite3_column_int64(stmt, 0);
		*noselect_r = sqlite3_column_int64(stmt, 1) != 0;
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

/* A fresh UIDVALIDITY: max(now, meta.next_uidvalidity). */
static int sbx_uidvalidity_alloc(struct sbx_db *db, uint32_t *uidvalidity_r)
{
	sqlite3_stmt *stmt;
	int64_t value = 0;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_META_UIDVALIDITY_ALLOC, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, (int64_t)time(NULL)) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "allocate UIDVALIDITY");
	if (ret > 0) {
		value = sqlite3_column_int64(stmt, 0);
		ret = sbx_stmt_exec(db, stmt, "allocate UIDVALIDITY") < 0 ?
			-1 : 1;
	}
	sbx_stmt_put(db, stmt);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		return sbx_error_set(db, SBX_ERR_CORRUPT,
			"allocate UIDVALIDITY: meta row 'next_uidvalidity' "
			"is missing");
	}
	if (value <= 0 || value > (int64_t)UINT32_MAX) {
		return sbx_error_set(db, SBX_ERR_LIMIT,
			"allocate UIDVALIDITY: %lld is out of range",
			(long long)value);
	}
	*uidvalidity_r = (uint32_t)value;
	return 0;
}

/* A UIDVALIDITY the caller chose: later allocations stay above it. */
static int sbx_uidvalidity_reserve(struct sbx_db *db, uint32_t uidvalidity)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_META_UIDVALIDITY_RESERVE, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, uidvalidity) < 0)
		ret = -1;
	else
		ret = sbx_stmt_exec(db, stmt, "reserve UIDVALIDITY %u",
				    uidvalidity);
	sbx_stmt_put(db, stmt);
	return ret;
}

/* The given UIDVALIDITY (reserved), or a fresh one. */
static int sbx_uidvalidity_get(struct sbx_db *db, uint32_t wanted,
			       uint32_t *uidvalidity_r)
{
	if (wanted == 0)
		return sbx_uidvalidity_alloc(db, uidvalidity_r);
	*uidvalidity_r = wanted;
	return sbx_uidvalidity_reserve(db, wanted);
}

/* Inserts the row for the first len bytes of name. */
static int sbx_mailbox_insert(struct sbx_db *db, const char *name, size_t len,
			      const struct sbx_mailbox_create *set,
			      int64_t *id_r)
{
	sqlite3_stmt *stmt;
	uint32_t uidvalidity;
	int ret = -1;

	if (sbx_uidvalidity_get(db, set->uidvalidity, &uidvalidity) < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_INSERT, &stmt) < 0)
		return -1;
	if (sbx_bind_text_len(db, stmt, 1, name, len) == 0 &&
	    sbx_bind_blob(db, stmt, 2, set->has_guid ? set->guid : NULL,
			  SBX_GUID_SIZE) == 0 &&
	    sbx_bind_int64(db, stmt, 3, set->noselect ? 1 : 0) == 0 &&
	    sbx_bind_int64(db, stmt, 4, uidvalidity) == 0 &&
	    sbx_bind_int64(db, stmt, 5, set->min_uidnext) == 0 &&
	    sbx_bind_int64(db, stmt, 6, (int64_t)set->min_highestmodseq) == 0 &&
	    sbx_bind_int64(db, stmt, 7, (int64_t)time(NULL)) == 0) {
		ret = sbx_stmt_exec(db, stmt, "create mailbox '%.*s'",
				    (int)len, name);
	}
	sbx_stmt_put(db, stmt);
	if (ret == 0 && id_r != NULL)
		*id_r = sqlite3_last_insert_rowid(db->sqlite);
	return ret;
}

/* Creates the first len bytes of name as a \Noselect row unless that
   name exists. */
static int sbx_mailbox_ensure(struct sbx_db *db, const char *name, size_t len)
{
	struct sbx_mailbox_create set;
	int64_t id;
	bool noselect;
	int ret;

	ret = sbx_mailbox_state(db, name, len, &id, &noselect);
	if (ret != 0)
		return ret < 0 ? -1 : 0;
	memset(&set, 0, sizeof(set));
	set.noselect = true;
	return sbx_mailbox_insert(db, name, len, &set, NULL);
}

/* Every missing parent of name becomes a \Noselect row, outermost
   first. */
static int sbx_mailbox_create_parents(struct sbx_db *db, const char *name)
{
	const char *p;

	for (p = strchr(name, SBX_HIERARCHY_SEP); p != NULL;
	     p = strchr(p + 1, SBX_HIERARCHY_SEP)) {
		if (sbx_mailbox_ensure(db, name, (size_t)(p - name)) < 0)
			return -1;
	}
	return 0;
}

/* A \Noselect row becomes a mailbox with a fresh (or the given)
   UIDVALIDITY. */
static int sbx_mailbox_make_selectable(struct sbx_db *db, int64_t id,
				       const struct sbx_mailbox_create *set)
{
	sqlite3_stmt *stmt;
	uint32_t uidvalidity;
	int ret = -1;

	if (sbx_uidvalidity_get(db, set->uidvalidity, &uidvalidity) < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_MAKE_SELECTABLE, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) == 0 &&
	    sbx_bind_blob(db, stmt, 2, set->has_guid ? set->guid : NULL,
			  SBX_GUID_SIZE) == 0 &&
	    sbx_bind_int64(db, stmt, 3, uidvalidity) == 0 &&
	    sbx_bind_int64(db, stmt, 4, set->min_uidnext) == 0 &&
	    sbx_bind_int64(db, stmt, 5, (int64_t)set->min_highestmodseq) == 0) {
		ret = sbx_stmt_exec(db, stmt, "create mailbox '%s'",
				    set->name);
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_mailbox_create(struct sbx_db *db,
		       const struct sbx_mailbox_create *set, int64_t *id_r)
{
	int64_t id;
	bool noselect;
	int ret;

	if (sbx_db_require_write(db, "create mailbox") < 0)
		return -1;
	if (!sbx_mailbox_name_is_valid(set->name)) {
		return sbx_error_set(db, SBX_ERR_INVALID,
				     "create mailbox '%s': invalid name",
				     set->name == NULL ? "" : set->name);
	}
	ret = sbx_mailbox_state(db, set->name, strlen(set->name), &id,
				&noselect);
	if (ret < 0)
		return -1;
	if (ret > 0) {
		if (!noselect || set->noselect) {
			return sbx_error_set(db, SBX_ERR_EXISTS,
					     "create mailbox '%s': it exists",
					     set->name);
		}
		if (sbx_mailbox_make_selectable(db, id, set) < 0)
			return -1;
		if (id_r != NULL)
			*id_r = id;
		return 0;
	}
	if (sbx_mailbox_create_parents(db, set->name) < 0)
		return -1;
	return sbx_mailbox_insert(db, set->name, strlen(set->name), set, id_r);
}

int sbx_mailbox_update(struct sbx_db *db, int64_t id,
		       const struct sbx_mailbox_update *update)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_db_require_write(db, "update mailbox") < 0)
		return -1;
	if (update->uidvalidity != 0 &&
	    sbx_uidvalidity_reserve(db, update->uidvalidity) < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_UPDATE, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) == 0 &&
	    sbx_bind_blob(db, stmt, 2, update->has_guid ? update->guid : NULL,
			  SBX_GUID_SIZE) == 0 &&
	    (update->uidvalidity == 0 ? sbx_bind_null(db, stmt, 3) :
	     sbx_bind_int64(db, stmt, 3, update->uidvalidity)) == 0 &&
	    sbx_bind_int64(db, stmt, 4, update->min_uidnext) == 0 &&
	    sbx_bind_int64(db, stmt, 5,
			   (int64_t)update->min_highestmodseq) == 0 &&
	    sbx_bind_int64(db, stmt, 6, update->min_first_recent_uid) == 0) {
		ret = sbx_stmt_exec(db, stmt, "update mailbox %lld",
				    (long long)id);
	}
	sbx_stmt_put(db, stmt);
	if (ret == 0 && sqlite3_changes(db->sqlite) == 0) {
		return sbx_error_set(db, SBX_ERR_NOTFOUND,
				     "update mailbox %lld: no such mailbox",
				     (long long)id);
	}
	return ret;
}

int sbx_mailbox_has_children(struct sbx_db *db, const char *name)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_HAS_CHILDREN, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, name) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt,
					"look for children of mailbox '%s'",
					name);
	sbx_stmt_put(db, stmt);
	return ret;
}

/* Runs statement sid with ?1 = the id of mailbox name. */
static int sbx_mailbox_exec_id(struct sbx_db *db, enum sbx_stmt_id sid,
			       int64_t id, const char *what, const char *name)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) < 0)
		ret = -1;
	else
		ret = sbx_stmt_exec(db, stmt, "%s '%s'", what, name);
	sbx_stmt_put(db, stmt);
	return ret;
}

/* Deletes what belongs to mailbox id; the message rows one by one, so
   that the triggers fix counters and bodies' references. */
static int sbx_mailbox_empty(struct sbx_db *db, int64_t id, const char *name)
{
	if (sbx_mailbox_exec_id(db, SBX_STMT_MAILBOX_DELETE_MESSAGES, id,
				"delete the messages of mailbox", name) < 0 ||
	    sbx_mailbox_exec_id(db, SBX_STMT_MAILBOX_DELETE_EXPUNGED, id,
				"delete the tombstones of mailbox", name) < 0 ||
	    sbx_mailbox_exec_id(db, SBX_STMT_MAILBOX_DELETE_ATTRIBUTES, id,
				"delete the attributes of mailbox", name) < 0)
		return -1;
	return 0;
}

int sbx_mailbox_delete(struct sbx_db *db, const char *name,
		       bool *kept_noselect_r)
{
	int64_t id;
	bool noselect;
	int ret, has_children;

	if (kept_noselect_r != NULL)
		*kept_noselect_r = false;
	if (sbx_db_require_write(db, "delete mailbox") < 0)
		return -1;
	ret = sbx_mailbox_state(db, name, strlen(name), &id, &noselect);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_NOTFOUND,
			"delete mailbox '%s': no such mailbox", name);
	}
	has_children = sbx_mailbox_has_children(db, name);
	if (has_children < 0)
		return -1;
	if (noselect && has_children > 0) {
		return sbx_error_set(db, SBX_ERR_EXISTS,
			"delete mailbox '%s': a \\Noselect mailbox with "
			"children", name);
	}
	if (sbx_mailbox_empty(db, id, name) < 0)
		return -1;
	if (has_children == 0) {
		return sbx_mailbox_exec_id(db, SBX_STMT_MAILBOX_DELETE, id,
					   "delete mailbox", name);
	}
	if (sbx_mailbox_exec_id(db, SBX_STMT_MAILBOX_MAKE_NOSELECT, id,
				"delete mailbox", name) < 0)
		return -1;
	if (kept_noselect_r != NULL)
		*kept_noselect_r = true;
	return 0;
}

/* EXISTS if any name of the renamed subtree of oldname exists. */
static int sbx_mailbox_rename_check_subtree(struct sbx_db *db,
					    const char *oldname,
					    const char *newname)
{
	sqlite3_stmt *stmt;
	const char *taken;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_RENAME_CONFLICT, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, oldname) < 0 ||
	    sbx_bind_text(db, stmt, 2, newname) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt,
					"rename mailbox '%s' to '%s'",
					oldname, newname);
	if (ret > 0) {
		taken = (const char *)sqlite3_column_text(stmt, 0);
		(void)sbx_error_set(db, SBX_ERR_EXISTS,
			"rename mailbox '%s' to '%s': '%s' exists", oldname,
			newname, taken == NULL ? "" : taken);
		ret = -1;
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

/* Refuses a rename before anything changes: a bad target name, a subtree
   moved into itself, a missing source, any target name that exists (so
   no row can collide with another midway). Sets *id_r to the source's
   id. */
static int sbx_mailbox_rename_check(struct sbx_db *db, const char *oldname,
				    const char *newname, bool children,
				    int64_t *id_r)
{
	int64_t new_id;
	bool noselect;
	int ret;

	if (!sbx_mailbox_name_is_valid(newname)) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"rename mailbox '%s' to '%s': invalid name", oldname,
			newname == NULL ? "" : newname);
	}
	if (children && sbx_mailbox_name_is_inside(newname, oldname)) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"rename mailbox '%s' to '%s': the target is inside "
			"the source", oldname, newname);
	}
	ret = sbx_mailbox_state(db, oldname, strlen(oldname), id_r,
				&noselect);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_NOTFOUND,
			"rename mailbox '%s': no such mailbox", oldname);
	}
	if (children)
		return sbx_mailbox_rename_check_subtree(db, oldname, newname);
	ret = sbx_mailbox_state(db, newname, strlen(newname), &new_id,
				&noselect);
	if (ret != 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_EXISTS,
			"rename mailbox '%s' to '%s': '%s' exists", oldname,
			newname, newname);
	}
	return 0;
}

/* Runs a rename statement: ?1 is the old name or the id, ?2 the new
   name. */
static int sbx_mailbox_rename_exec(struct sbx_db *db, bool children,
				   int64_t id, const char *oldname,
				   const char *newname)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, children ? SBX_STMT_MAILBOX_RENAME_SUBTREE :
			 SBX_STMT_MAILBOX_RENAME_ONE, &stmt) < 0)
		return -1;
	if ((children ? sbx_bind_text(db, stmt, 1, oldname) :
	     sbx_bind_int64(db, stmt, 1, id)) == 0 &&
	    sbx_bind_text(db, stmt, 2, newname) == 0) {
		ret = sbx_stmt_exec(db, stmt, "rename mailbox '%s' to '%s'",
				    oldname, newname);
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_mailbox_rename(struct sbx_db *db, const char *oldname,
		       const char *newname, bool children)
{
	int64_t id;
	int has_children;

	if (sbx_db_require_write(db, "rename mailbox") < 0)
		return -1;
	if (sbx_mailbox_rename_check(db, oldname, newname, children, &id) < 0)
		return -1;
	has_children = sbx_mailbox_has_children(db, oldname);
	if (has_children < 0)
		return -1;
	if (sbx_mailbox_rename_exec(db, children, id, oldname, newname) < 0)
		return -1;
	/* The children left behind keep a parent. */
	if (!children && has_children > 0 &&
	    sbx_mailbox_ensure(db, oldname, strlen(oldname)) < 0)
		return -1;
	return sbx_mailbox_create_parents(db, newname);
}

int sbx_mailbox_modseq_salt(struct sbx_db *db, int64_t *salt_r)
{
	sqlite3_stmt *stmt;
	const unsigned char *guid;
	int ret;

	if (db->modseq_salt_known) {
		*salt_r = db->modseq_salt;
		return 0;
	}
	if (sbx_stmt_get(db, SBX_STMT_META_DB_GUID, &stmt) < 0)
		return -1;
	ret = sbx_stmt_step_row(db, stmt, "read db_guid");
	if (ret > 0) {
		guid = sqlite3_column_blob(stmt, 0);
		if (guid == NULL || sqlite3_column_bytes(stmt, 0) < 2) {
			ret = sbx_error_set(db, SBX_ERR_CORRUPT,
					    "meta.db_guid is not a GUID");
		} else {
			db->modseq_salt = ((uint32_t)guid[0] << 8 | guid[1]) %
				(uint32_t)(SBX_MODSEQ_STEP / 2);
			db->modseq_salt_known = true;
		}
	} else if (ret == 0) {
		ret = sbx_error_set(db, SBX_ERR_CORRUPT, "meta.db_guid is missing");
	}
	sbx_stmt_put(db, stmt);
	if (ret < 0)
		return -1;
	*salt_r = db->modseq_salt;
	return 0;
}

int sbx_mailbox_modseq_alloc(struct sbx_db *db, int64_t id,
			     uint64_t *modseq_r)
{
	sqlite3_stmt *stmt;
	uint64_t modseq = 0;
	int64_t salt;
	int ret;

	if (sbx_db_require_write(db, "allocate modseq") < 0)
		return -1;
	if (sbx_db_modseq_get(db, id, modseq_r) > 0)
		return 0;
	if (sbx_mailbox_modseq_salt(db, &salt) < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_MODSEQ_ALLOC, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) < 0 ||
	    sbx_bind_int64(db, stmt, 2, (int64_t)SBX_MODSEQ_STEP) < 0 ||
	    sbx_bind_int64(db, stmt, 3, salt) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt,
					"allocate modseq in mailbox %lld",
					(long long)id);
	if (ret > 0) {
		modseq = sbx_column_u64(stmt, 0);
		ret = sbx_stmt_exec(db, stmt, "allocate modseq in mailbox %lld",
				    (long long)id) < 0 ? -1 : 1;
	}
	sbx_stmt_put(db, stmt);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_NOTFOUND,
			"allocate modseq in mailbox %lld: no such mailbox",
			(long long)id);
	}
	if (sbx_db_modseq_set(db, id, modseq) < 0)
		return -1;
	*modseq_r = modseq;
	return 0;
}

int sbx_mailbox_recent_claim(struct sbx_db *db, int64_t id, uint32_t *old_r)
{
	struct sbx_mailbox mb;
	int ret;

	if (sbx_db_require_write(db, "claim \\Recent") < 0)
		return -1;
	ret = sbx_mailbox_lookup_id(db, id, &mb);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_NOTFOUND,
			"claim \\Recent in mailbox %lld: no such mailbox",
			(long long)id);
	}
	if (sbx_mailbox_exec_id(db, SBX_STMT_MAILBOX_RECENT_CLAIM, id,
				"claim \\Recent in mailbox", mb.name) < 0)
		return -1;
	*old_r = mb.first_recent_uid;
	return 0;
}

int sbx_mailbox_iter_init(struct sbx_db *db, struct sbx_mailbox_iter **iter_r)
{
	struct sbx_mailbox_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "list mailboxes: out of memory");
	}
	iter->db = db;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_ITER, &iter->stmt) < 0) {
		free(iter);
		return -1;
	}
	*iter_r = iter;
	return 0;
}

int sbx_mailbox_iter_next(struct sbx_mailbox_iter *iter,
			  struct sbx_mailbox *mb_r)
{
	int ret;

	if (iter->failed)
		return -1;
	if (iter->done)
		return 0;
	ret = sbx_stmt_step_row(iter->db, iter->stmt, "list mailboxes");
	if (ret > 0 && sbx_mailbox_from_row(iter->db, iter->stmt, mb_r) < 0)
		ret = -1;
	if (ret < 0)
		iter->failed = true;
	else if (ret == 0)
		iter->done = true;
	return ret;
}

int sbx_mailbox_iter_deinit(struct sbx_mailbox_iter **_iter)
{
	struct sbx_mailbox_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = iter->failed ? -1 : 0;
	sbx_stmt_put(iter->db, iter->stmt);
	free(iter);
	return ret;
}

/* The statement of a subscription change: runs in the caller's write
   transaction. */
static int sbx_subscription_exec(struct sbx_db *db, const char *name,
				 bool subscribed)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, subscribed ? SBX_STMT_SUBSCRIPTION_INSERT :
			 SBX_STMT_SUBSCRIPTION_DELETE, &stmt) < 0)
		return -1;
	if (sbx_bind_text(db, stmt, 1, name) < 0)
		ret = -1;
	else
		ret = sbx_stmt_exec(db, stmt, "%s '%s'", subscribed ?
				    "subscribe to" : "unsubscribe from", name);
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_subscription_set(struct sbx_db *db, const char *name, bool subscribed)
{
	bool own_tx = !sbx_tx_is_active(db);

	if (name == NULL || name[0] == '\0') {
		return sbx_error_set(db, SBX_ERR_INVALID,
				     "subscribe: empty name");
	}
	if (!own_tx && sbx_db_require_write(db, "subscribe") < 0)
		return -1;
	if (own_tx && sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		return -1;
	if (sbx_subscription_exec(db, name, subscribed) < 0)
		goto out_rollback;
	return own_tx ? sbx_tx_commit(db) : 0;
out_rollback:
	if (own_tx)
		sbx_tx_rollback(db);
	return -1;
}

int sbx_subscription_iter_init(struct sbx_db *db,
			       struct sbx_subscription_iter **iter_r)
{
	struct sbx_subscription_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "list subscriptions: out of memory");
	}
	iter->db = db;
	if (sbx_stmt_get(db, SBX_STMT_SUBSCRIPTION_ITER, &iter->stmt) < 0) {
		free(iter);
		return -1;
	}
	*iter_r = iter;
	return 0;
}

int sbx_subscription_iter_next(struct sbx_subscription_iter *iter,
			       const char **name_r)
{
	int ret;

	if (iter->failed)
		return -1;
	if (iter->done)
		return 0;
	ret = sbx_stmt_step_row(iter->db, iter->stmt, "list subscriptions");
	if (ret > 0) {
		*name_r = (const char *)sqlite3_column_text(iter->stmt, 0);
		if (*name_r == NULL) {
			ret = sbx_error_set(iter->db, SBX_ERR_NOMEM,
				"list subscriptions: out of memory");
		}
	}
	if (ret < 0)
		iter->failed = true;
	else if (ret == 0)
		iter->done = true;
	return ret;
}

int sbx_subscription_iter_deinit(struct sbx_subscription_iter **_iter)
{
	struct sbx_subscription_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = iter->failed ? -1 : 0;
	sbx_stmt_put(iter->db, iter->stmt);
	free(iter);
	return ret;
}

int sbx_mailbox_recount(struct sbx_db *db, int64_t id)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_db_require_write(db, "recount mailbox") < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MAILBOX_RECOUNT, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, id) == 0)
		ret = sbx_stmt_exec(db, stmt, "recount mailbox %lld",
				    (long long)id);
	sbx_stmt_put(db, stmt);
	return ret;
}
