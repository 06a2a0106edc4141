/* SPDX-License-Identifier: MIT */
/* Mailbox attributes in the attributes table: one row per (mailbox,
   type, key) with its value and the time it last changed, which dsync
   compares. Rows go with their mailbox when it is deleted
   (sbx_mailbox_delete) and stay with it across renames (the id is kept).
   Workload: a handful of keys per mailbox, read by key or listed by
   prefix. */

#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-attr.h"

struct sbx_attr_iter {
	struct sbx_db *db;
	sqlite3_stmt *stmt;
	char *prefix;
	size_t prefix_len;
	bool failed;
	bool done;
};

static int sbx_attr_check(struct sbx_db *db, enum sbx_attr_type type,
			  const char *key, const char *what)
{
	if (type != SBX_ATTR_PRIVATE && type != SBX_ATTR_SHARED) {
		return sbx_error_set(db, SBX_ERR_INVALID,
				     "%s: unknown attribute type %d", what,
				     (int)type);
	}
	if (key == NULL || key[0] == '\0') {
		return sbx_error_set(db, SBX_ERR_INVALID, "%s: empty key",
				     what);
	}
	return 0;
}

int sbx_attr_get(struct sbx_db *db, int64_t mailbox_id,
		 enum sbx_attr_type type, const char *key,
		 const void **value_r, size_t *size_r,
		 int64_t *last_change_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_attr_check(db, type, key, "get attribute") < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_ATTR_GET, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, stmt, 2, (int64_t)type) < 0 ||
	    sbx_bind_text(db, stmt, 3, key) < 0) {
		sbx_stmt_put(db, stmt);
		return -1;
	}
	ret = sbx_stmt_step_row(db, stmt, "get attribute '%s'", key);
	if (ret > 0) {
		const void *value = sqlite3_column_blob(stmt, 0);
		int size = sqlite3_column_bytes(stmt, 0);

		/* the value must outlive the statement's reset */
		if (sbx_db_keep_blob(db, value, (size_t)size, value_r) < 0)
			ret = -1;
		*size_r = (size_t)size;
		if (last_change_r != NULL)
			*last_change_r = sqlite3_column_int64(stmt, 1);
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_attr_set(struct sbx_db *db, int64_t mailbox_id,
		 enum sbx_attr_type type, const char *key,
		 const void *value, size_t size, int64_t last_change)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_attr_check(db, type, key, "set attribute") < 0 ||
	    sbx_db_require_write(db, "set attribute") < 0)
		return -1;
	if (sbx_stmt_get(db, value != NULL ? SBX_STMT_ATTR_SET :
			 SBX_STMT_ATTR_DELETE, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, stmt, 2, (int64_t)type) < 0 ||
	    sbx_bind_text(db, stmt, 3, key) < 0)
		goto out;
	if (value != NULL &&
	    (sbx_bind_blob(db, stmt, 4, size == 0 ? "" : value, size) < 0 ||
	     sbx_bind_int64(db, stmt, 5, last_change) < 0))
		goto out;
	ret = sbx_stmt_exec(db, stmt, "%s attribute '%s'",
			    value != NULL ? "set" : "unset", key);
out:
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_attr_iter_init(struct sbx_db *db, int64_t mailbox_id,
		       enum sbx_attr_type type, const char *prefix,
		       struct sbx_attr_iter **iter_r)
{
	struct sbx_attr_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL || (iter->prefix = strdup(prefix)) == NULL) {
		free(iter);
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "list attributes: out of memory");
	}
	iter->db = db;
	iter->prefix_len = strlen(prefix);
	if (sbx_stmt_get(db, SBX_STMT_ATTR_ITER, &iter->stmt) < 0)
		goto fail;
	if (sbx_bind_int64(db, iter->stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, iter->stmt, 2, (int64_t)type) < 0) {
		sbx_stmt_put(db, iter->stmt);
		goto fail;
	}
	*iter_r = iter;
	return 0;
fail:
	free(iter->prefix);
	free(iter);
	return -1;
}

int sbx_attr_iter_next(struct sbx_attr_iter *iter, const char **key_r)
{
	const char *key;
	int ret;

	if (iter->failed)
		return -1;
	while (!iter->done) {
		ret = sbx_stmt_step_row(iter->db, iter->stmt,
					"list attributes");
		if (ret < 0) {
			iter->failed = true;
			return -1;
		}
		if (ret == 0) {
			iter->done = true;
			break;
		}
		key = (const char *)sqlite3_column_text(iter->stmt, 0);
		if (key == NULL) {
			iter->failed = true;
			return sbx_error_set(iter->db, SBX_ERR_NOMEM,
				"list attributes: out of memory");
		}
		if (strncmp(key, iter->prefix, iter->prefix_len) == 0) {
			*key_r = key;
			return 1;
		}
	}
	return 0;
}

int sbx_attr_iter_deinit(struct sbx_attr_iter **_iter)
{
	struct sbx_attr_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = iter->failed ? -1 : 0;
	sbx_stmt_put(iter->db, iter->stmt);
	free(iter->prefix);
	free(iter);
	return ret;
}
