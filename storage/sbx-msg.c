/* SPDX-License-Identifier: MIT */
/* Messages: appending, looking up, changing flags, expunging, and the
   change feed (messages and tombstones after a MODSEQ).

   The invariant: a UID is never reused in a mailbox. An append below the
   mailbox's uidnext is refused (here with a clear error, and by a trigger
   against anyone else), uidnext follows every insert, and an expunge
   leaves a tombstone in expunged with the MODSEQ of the change, so a
   client that synchronised before the expunge learns about it
   (QRESYNC's VANISHED, the plugin's pull). Counters and body references
   are the triggers' business (sbx-migrations.def). Keywords are stored
   normalised: sorted, de-duplicated, single spaces. The workload: appends
   and flag changes a few at a time, change feeds of a few rows, a full
   listing of a large mailbox now and then. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "sbx-private.h"
#include "sbx-error.h"
#include "sbx-stmt.h"
#include "sbx-body.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"

struct sbx_msg_iter {
	struct sbx_stmt_iter it;
};

struct sbx_expunge_iter {
	struct sbx_stmt_iter it;
};

static int sbx_keyword_cmp(const void *p1, const void *p2)
{
	const char *const *k1 = p1, *const *k2 = p2;

	return strcmp(*k1, *k2);
}

/* Splits buf in place on spaces into words[]; returns their count. */
static size_t sbx_keywords_split(char *buf, char **words)
{
	size_t count = 0;
	char *p = buf;

	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		words[count++] = p;
		while (*p != ' ' && *p != '\0')
			p++;
		if (*p == '\0')
			break;
		*p++ = '\0';
	}
	return count;
}

char *sbx_keywords_normalize(const char *keywords)
{
	size_t len, count, i, pos = 0;
	char *buf, *out, **words;

	if (keywords == NULL)
		keywords = "";
	len = strlen(keywords);
	buf = malloc(len + 1);
	out = malloc(len + 1);
	/* At most one word per two bytes ("a b c"), plus one. */
	words = malloc((len / 2 + 1) * sizeof(*words));
	if (buf == NULL || out == NULL || words == NULL)
		goto out_free;
	memcpy(buf, keywords, len + 1);
	count = sbx_keywords_split(buf, words);
	qsort(words, count, sizeof(*words), sbx_keyword_cmp);
	for (i = 0; i < count; i++) {
		if (i > 0 && strcmp(words[i], words[i - 1]) == 0)
			continue;
		if (pos > 0)
			out[pos++] = ' ';
		len = strlen(words[i]);
		memcpy(out + pos, words[i], len);
		pos += len;
	}
	out[pos] = '\0';
	free(buf);
	free(words);
	return out;
out_free:
	free(buf);
	free(out);
	free(words);
	return NULL;
}

/* Normalised keywords into *keywords_r, or -1 (SBX_ERR_NOMEM). */
static int sbx_msg_keywords(struct sbx_db *db, const char *keywords,
			    char **keywords_r)
{
	*keywords_r = sbx_keywords_normalize(keywords);
	if (*keywords_r == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "normalise keywords: out of memory");
	}
	return 0;
}

int sbx_msg_from_row(struct sbx_db *db, sqlite3_stmt *stmt,
			    struct sbx_msg *msg_r)
{
	memset(msg_r, 0, sizeof(*msg_r));
	msg_r->uid = sbx_column_u32(stmt, 0);
	msg_r->body_id = sqlite3_column_int64(stmt, 1);
	msg_r->guid = (const char *)sqlite3_column_text(stmt, 2);
	msg_r->flags = sbx_column_u32(stmt, 3);
	msg_r->keywords = (const char *)sqlite3_column_text(stmt, 4);
	msg_r->modseq = sbx_column_u64(stmt, 5);
	msg_r->received_date = sqlite3_column_int64(stmt, 6);
	msg_r->received_tz = sqlite3_column_int(stmt, 7);
	msg_r->save_date = sqlite3_column_int64(stmt, 8);
	msg_r->pop3_uidl = (const char *)sqlite3_column_text(stmt, 9);
	msg_r->pop3_order = sbx_column_u32(stmt, 10);
	msg_r->from_envelope = (const char *)sqlite3_column_text(stmt, 11);
	msg_r->message_id = (const char *)sqlite3_column_text(stmt, 12);
	msg_r->physical_size = sbx_column_u64(stmt, 13);
	msg_r->virtual_size = sbx_column_u64(stmt, 14);
	if (msg_r->guid == NULL || msg_r->keywords == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "read message: out of memory");
	}
	return 0;
}

/* Refuses what the schema would refuse less clearly. */
static int sbx_msg_append_check(struct sbx_db *db, int64_t mailbox_id,
				const struct sbx_msg_new *msg,
				struct sbx_mailbox *mb_r)
{
	struct sbx_body body;
	int ret;

	if (msg->guid == NULL || msg->guid[0] == '\0' || msg->uid == 0) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"append message UID %u to mailbox %lld: invalid "
			"UID or GUID", msg->uid, (long long)mailbox_id);
	}
	ret = sbx_mailbox_lookup_id(db, mailbox_id, mb_r);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_NOTFOUND,
			"append message UID %u to mailbox %lld: no such "
			"mailbox", msg->uid, (long long)mailbox_id);
	}
	if (mb_r->noselect) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"append message UID %u to '%s': the mailbox is "
			"\\Noselect", msg->uid, mb_r->name);
	}
	if (msg->uid < mb_r->uidnext) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"append message UID %u to '%s': below UIDNEXT %u "
			"(UIDs are never reused)", msg->uid, mb_r->name,
			mb_r->uidnext);
	}
	ret = sbx_body_lookup(db, msg->body_id, &body);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_INVALID,
			"append message UID %u to '%s': no body %lld",
			msg->uid, mb_r->name, (long long)msg->body_id);
	}
	return 0;
}

static int sbx_msg_insert(struct sbx_db *db, int64_t mailbox_id,
			  const struct sbx_msg_new *msg, const char *keywords,
			  const char *mailbox_name)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_MSG_INSERT, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) == 0 &&
	    sbx_bind_int64(db, stmt, 2, msg->uid) == 0 &&
	    sbx_bind_int64(db, stmt, 3, msg->body_id) == 0 &&
	    sbx_bind_text(db, stmt, 4, msg->guid) == 0 &&
	    sbx_bind_int64(db, stmt, 5, msg->flags & SBX_FLAGS_MASK) == 0 &&
	    sbx_bind_text(db, stmt, 6, keywords) == 0 &&
	    sbx_bind_int64(db, stmt, 7, (int64_t)msg->modseq) == 0 &&
	    sbx_bind_int64(db, stmt, 8, msg->received_date) == 0 &&
	    sbx_bind_int64(db, stmt, 9, msg->received_tz) == 0 &&
	    sbx_bind_int64(db, stmt, 10, msg->save_date) == 0 &&
	    sbx_bind_text(db, stmt, 11, msg->pop3_uidl) == 0 &&
	    sbx_bind_int64(db, stmt, 12, msg->pop3_order) == 0 &&
	    sbx_bind_text(db, stmt, 13, msg->from_envelope) == 0 &&
	    sbx_bind_text(db, stmt, 14, msg->message_id) == 0) {
		ret = sbx_stmt_exec(db, stmt,
				    "append message UID %u to '%s'",
				    msg->uid, mailbox_name);
	}
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_msg_append(struct sbx_db *db, int64_t mailbox_id,
		   const struct sbx_msg_new *msg)
{
	struct sbx_mailbox mb;
	char *keywords;
	int ret;

	if (sbx_db_require_write(db, "append message") < 0)
		return -1;
	if (sbx_msg_append_check(db, mailbox_id, msg, &mb) < 0)
		return -1;
	if (sbx_msg_keywords(db, msg->keywords, &keywords) < 0)
		return -1;
	ret = sbx_msg_insert(db, mailbox_id, msg, keywords, mb.name);
	free(keywords);
	return ret;
}

int sbx_msg_lookup(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
		   struct sbx_msg *msg_r)
{
	const char **const strs[] = {
		&msg_r->guid, &msg_r->keywords, &msg_r->pop3_uidl,
		&msg_r->from_envelope, &msg_r->message_id,
	};
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MSG_LOOKUP, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, stmt, 2, uid) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up message UID %u in "
					"mailbox %lld", uid,
					(long long)mailbox_id);
	if (ret > 0 && (sbx_msg_from_row(db, stmt, msg_r) < 0 ||
			sbx_db_keep_strings(db, strs, 5) < 0))
		ret = -1;
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_msg_lookup_message_id(struct sbx_db *db, int64_t mailbox_id,
			      const char *message_id, int64_t since,
			      uint32_t *uid_r)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MSG_BY_MESSAGE_ID, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_text(db, stmt, 2, message_id) < 0 ||
	    sbx_bind_int64(db, stmt, 3, since) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look up Message-ID in "
					"mailbox %lld", (long long)mailbox_id);
	if (ret > 0)
		*uid_r = sbx_column_u32(stmt, 0);
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_msg_has_pop3_order(struct sbx_db *db, int64_t mailbox_id)
{
	sqlite3_stmt *stmt;
	int ret;

	if (sbx_stmt_get(db, SBX_STMT_MSG_HAS_POP3_ORDER, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) < 0)
		ret = -1;
	else
		ret = sbx_stmt_step_row(db, stmt, "look for a POP3 order in "
					"mailbox %lld", (long long)mailbox_id);
	sbx_stmt_put(db, stmt);
	return ret;
}

int sbx_msg_iter_init(struct sbx_db *db, int64_t mailbox_id,
		      uint64_t since_modseq, struct sbx_msg_iter **iter_r)
{
	struct sbx_msg_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "list messages: out of memory");
	}
	iter->it.db = db;
	if (sbx_stmt_get(db, since_modseq == 0 ? SBX_STMT_MSG_ITER :
			 SBX_STMT_MSG_ITER_SINCE, &iter->it.stmt) < 0)
		goto out_free;
	if (sbx_bind_int64(db, iter->it.stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, iter->it.stmt, 2, (int64_t)since_modseq) < 0)
		goto out_put;
	*iter_r = iter;
	return 0;
out_put:
	sbx_stmt_put(db, iter->it.stmt);
out_free:
	free(iter);
	return -1;
}

int sbx_msg_iter_next(struct sbx_msg_iter *iter,
		      struct sbx_msg_state *state_r)
{
	sqlite3_stmt *stmt = iter->it.stmt;
	int ret;

	ret = sbx_stmt_iter_step(&iter->it, "list messages");
	if (ret <= 0)
		return ret;
	state_r->uid = sbx_column_u32(stmt, 0);
	state_r->flags = sbx_column_u32(stmt, 1);
	state_r->keywords = (const char *)sqlite3_column_text(stmt, 2);
	state_r->modseq = sbx_column_u64(stmt, 3);
	state_r->pop3_order = sbx_column_u32(stmt, 4);
	state_r->has_pop3_uidl = sqlite3_column_int(stmt, 5) != 0;
	state_r->virtual_size = sbx_column_u64(stmt, 6);
	if (state_r->keywords == NULL) {
		(void)sbx_error_set(iter->it.db, SBX_ERR_NOMEM,
				    "list messages: out of memory");
		return sbx_stmt_iter_fail(&iter->it);
	}
	return 1;
}

int sbx_msg_iter_deinit(struct sbx_msg_iter **_iter)
{
	struct sbx_msg_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = sbx_stmt_iter_finish(&iter->it);
	free(iter);
	return ret;
}

static int sbx_msg_update_exec(struct sbx_db *db, int64_t mailbox_id,
			       uint32_t uid, uint32_t flags,
			       const char *keywords, uint64_t modseq)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, SBX_STMT_MSG_UPDATE_FLAGS, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) == 0 &&
	    sbx_bind_int64(db, stmt, 2, uid) == 0 &&
	    sbx_bind_int64(db, stmt, 3, flags) == 0 &&
	    sbx_bind_text(db, stmt, 4, keywords) == 0 &&
	    sbx_bind_int64(db, stmt, 5, (int64_t)modseq) == 0) {
		ret = sbx_stmt_exec(db, stmt, "update flags of message UID %u "
				    "in mailbox %lld", uid,
				    (long long)mailbox_id);
	}
	sbx_stmt_put(db, stmt);
	if (ret < 0)
		return -1;
	return sqlite3_changes(db->sqlite) > 0 ? 1 : 0;
}

int sbx_msg_update_flags(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
			 uint32_t flags, const char *keywords,
			 uint64_t modseq)
{
	char *normalised;
	int ret;

	if (sbx_db_require_write(db, "update flags") < 0)
		return -1;
	if (sbx_msg_keywords(db, keywords, &normalised) < 0)
		return -1;
	ret = sbx_msg_update_exec(db, mailbox_id, uid, flags & SBX_FLAGS_MASK,
				  normalised, modseq);
	free(normalised);
	return ret;
}

int sbx_msg_raise_modseq(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
			 uint64_t modseq)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_db_require_write(db, "raise modseq") < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MSG_RAISE_MODSEQ, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) == 0 &&
	    sbx_bind_int64(db, stmt, 2, uid) == 0 &&
	    sbx_bind_int64(db, stmt, 3, (int64_t)modseq) == 0) {
		ret = sbx_stmt_exec(db, stmt, "raise modseq of UID %u in "
				    "mailbox %lld", uid,
				    (long long)mailbox_id);
	}
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : sqlite3_changes(db->sqlite);
}

/* Runs statement sid with ?1 mailbox_id, ?2 uid (and for the tombstone
   ?3 modseq, ?4 now). Returns the number of rows it changed, or -1. */
static int sbx_msg_expunge_exec(struct sbx_db *db, enum sbx_stmt_id sid,
				int64_t mailbox_id, uint32_t uid,
				uint64_t modseq)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) == 0 &&
	    sbx_bind_int64(db, stmt, 2, uid) == 0 &&
	    (sid != SBX_STMT_MSG_TOMBSTONE ||
	     (sbx_bind_int64(db, stmt, 3, (int64_t)modseq) == 0 &&
	      sbx_bind_int64(db, stmt, 4, (int64_t)time(NULL)) == 0))) {
		ret = sbx_stmt_exec(db, stmt, "expunge message UID %u in "
				    "mailbox %lld", uid,
				    (long long)mailbox_id);
	}
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : sqlite3_changes(db->sqlite);
}

int sbx_msg_expunge(struct sbx_db *db, int64_t mailbox_id, uint32_t uid,
		    uint64_t modseq)
{
	int ret;

	if (sbx_db_require_write(db, "expunge message") < 0)
		return -1;
	/* The tombstone first: it copies the GUID from the row. */
	ret = sbx_msg_expunge_exec(db, SBX_STMT_MSG_TOMBSTONE, mailbox_id,
				   uid, modseq);
	if (ret <= 0)
		return ret;
	ret = sbx_msg_expunge_exec(db, SBX_STMT_MSG_DELETE, mailbox_id, uid,
				   modseq);
	return ret < 0 ? -1 : 1;
}

int sbx_expunge_iter_init(struct sbx_db *db, int64_t mailbox_id,
			  uint64_t since_modseq,
			  struct sbx_expunge_iter **iter_r)
{
	struct sbx_expunge_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "list expunges: out of memory");
	}
	iter->it.db = db;
	if (sbx_stmt_get(db, since_modseq == 0 ? SBX_STMT_EXPUNGE_ITER :
			 SBX_STMT_EXPUNGE_ITER_SINCE, &iter->it.stmt) < 0)
		goto out_free;
	if (sbx_bind_int64(db, iter->it.stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, iter->it.stmt, 2, (int64_t)since_modseq) < 0)
		goto out_put;
	*iter_r = iter;
	return 0;
out_put:
	sbx_stmt_put(db, iter->it.stmt);
out_free:
	free(iter);
	return -1;
}

int sbx_expunge_iter_next(struct sbx_expunge_iter *iter, uint32_t *uid_r,
			  uint64_t *modseq_r)
{
	int ret;

	ret = sbx_stmt_iter_step(&iter->it, "list expunges");
	if (ret > 0) {
		*uid_r = sbx_column_u32(iter->it.stmt, 0);
		*modseq_r = sbx_column_u64(iter->it.stmt, 1);
	}
	return ret;
}

int sbx_expunge_iter_deinit(struct sbx_expunge_iter **_iter)
{
	struct sbx_expunge_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = sbx_stmt_iter_finish(&iter->it);
	free(iter);
	return ret;
}

int sbx_msg_set_pop3_uidl(struct sbx_db *db, int64_t mailbox_id,
			  uint32_t uid, const char *uidl)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	if (sbx_db_require_write(db, "set POP3 UIDL") < 0)
		return -1;
	if (sbx_stmt_get(db, SBX_STMT_MSG_SET_POP3_UIDL, &stmt) < 0)
		return -1;
	if (sbx_bind_int64(db, stmt, 1, mailbox_id) == 0 &&
	    sbx_bind_int64(db, stmt, 2, uid) == 0 &&
	    sbx_bind_text(db, stmt, 3, uidl) == 0) {
		ret = sbx_stmt_exec(db, stmt, "set POP3 UIDL of UID %u in "
				    "mailbox %lld", uid, (long long)mailbox_id);
	}
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : (sqlite3_changes(db->sqlite) > 0 ? 1 : 0);
}

/* COPY and MOVE batches.

   A batch reaches SQL as the table-valued function sbx_msg_copies(?N):
   an eponymous virtual table over a C array of struct sbx_msg_copy that
   the statement binds as a pointer (sqlite3_bind_pointer(), as SQLite's
   carray extension does), so one INSERT ... SELECT copies a whole batch.
   One statement instead of one per message matters for more than the
   calls: in a write transaction every statement that fires triggers
   journals the pages it changes for a statement rollback, and per
   message that was a dozen page writes to a temporary file. The array
   belongs to the caller and lives until sbx_stmt_put(). */

#define SBX_MSG_COPIES_POINTER "sbx_msg_copy_batch"

/* The columns of SBX_SQL_MSG_COPIES_TABLE, in order. */
enum sbx_msg_copies_column {
	SBX_MSG_COPIES_SRC_MAILBOX_ID,
	SBX_MSG_COPIES_SRC_UID,
	SBX_MSG_COPIES_UID,
	SBX_MSG_COPIES_FLAGS,
	SBX_MSG_COPIES_KEYWORDS,
	SBX_MSG_COPIES_SAVE_DATE,
	SBX_MSG_COPIES_MODSEQ,
	SBX_MSG_COPIES_BATCH,
};

/* What the pointer bound to the batch column points to. */
struct sbx_msg_copy_batch {
	const struct sbx_msg_copy *msgs;
	size_t count;
};

struct sbx_msg_copies_cursor {
	sqlite3_vtab_cursor base;
	const struct sbx_msg_copy_batch *batch;
	size_t pos;
};

static int sbx_msg_copies_connect(sqlite3 *sqlite, void *aux, int argc,
				  const char *const *argv,
				  sqlite3_vtab **vtab_r, char **err_r)
{
	sqlite3_vtab *vtab;
	int rc;

	(void)aux;
	(void)argc;
	(void)argv;
	(void)err_r;
	rc = sqlite3_declare_vtab(sqlite, SBX_SQL_MSG_COPIES_TABLE);
	if (rc != SQLITE_OK)
		return rc;
	/* never from a trigger or view of the file: our statements only */
	(void)sqlite3_vtab_config(sqlite, SQLITE_VTAB_DIRECTONLY);
	vtab = sqlite3_malloc(sizeof(*vtab));
	if (vtab == NULL)
		return SQLITE_NOMEM;
	memset(vtab, 0, sizeof(*vtab));
	*vtab_r = vtab;
	return SQLITE_OK;
}

static int sbx_msg_copies_disconnect(sqlite3_vtab *vtab)
{
	sqlite3_free(vtab);
	return SQLITE_OK;
}

/* Usable only with the batch bound; rows come in the batch's order, which
   is ascending uid. */
static int sbx_msg_copies_best_index(sqlite3_vtab *vtab,
				     sqlite3_index_info *info)
{
	int i;

	(void)vtab;
	for (i = 0; i < info->nConstraint; i++) {
		const struct sqlite3_index_constraint *c =
			&info->aConstraint[i];

		if (c->iColumn == SBX_MSG_COPIES_BATCH &&
		    c->op == SQLITE_INDEX_CONSTRAINT_EQ && c->usable)
			break;
	}
	if (i == info->nConstraint)
		return SQLITE_CONSTRAINT;
	info->aConstraintUsage[i].argvIndex = 1;
	info->aConstraintUsage[i].omit = 1;
	info->idxNum = 1;
	info->estimatedCost = 1000;
	info->estimatedRows = 1000;
	if (info->nOrderBy == 1 &&
	    info->aOrderBy[0].iColumn == SBX_MSG_COPIES_UID &&
	    !info->aOrderBy[0].desc)
		info->orderByConsumed = 1;
	return SQLITE_OK;
}

static int sbx_msg_copies_open(sqlite3_vtab *vtab,
			       sqlite3_vtab_cursor **cursor_r)
{
	struct sbx_msg_copies_cursor *cursor;

	(void)vtab;
	cursor = sqlite3_malloc(sizeof(*cursor));
	if (cursor == NULL)
		return SQLITE_NOMEM;
	memset(cursor, 0, sizeof(*cursor));
	*cursor_r = &cursor->base;
	return SQLITE_OK;
}

static int sbx_msg_copies_close(sqlite3_vtab_cursor *cursor)
{
	sqlite3_free(cursor);
	return SQLITE_OK;
}

static int sbx_msg_copies_filter(sqlite3_vtab_cursor *base, int idx_num,
				 const char *idx_str, int argc,
				 sqlite3_value **argv)
{
	struct sbx_msg_copies_cursor *cursor =
		(struct sbx_msg_copies_cursor *)base;

	(void)idx_num;
	(void)idx_str;
	cursor->pos = 0;
	cursor->batch = argc < 1 ? NULL :
		sqlite3_value_pointer(argv[0], SBX_MSG_COPIES_POINTER);
	return SQLITE_OK;
}

static int sbx_msg_copies_next(sqlite3_vtab_cursor *base)
{
	((struct sbx_msg_copies_cursor *)base)->pos++;
	return SQLITE_OK;
}

static int sbx_msg_copies_eof(sqlite3_vtab_cursor *base)
{
	const struct sbx_msg_copies_cursor *cursor =
		(const struct sbx_msg_copies_cursor *)base;

	return cursor->batch == NULL || cursor->pos >= cursor->batch->count;
}

static int sbx_msg_copies_column(sqlite3_vtab_cursor *base,
				 sqlite3_context *ctx, int column)
{
	const struct sbx_msg_copies_cursor *cursor =
		(const struct sbx_msg_copies_cursor *)base;
	const struct sbx_msg_copy *msg = &cursor->batch->msgs[cursor->pos];
	char *keywords;

	switch ((enum sbx_msg_copies_column)column) {
	case SBX_MSG_COPIES_SRC_MAILBOX_ID:
		sqlite3_result_int64(ctx, msg->src_mailbox_id);
		break;
	case SBX_MSG_COPIES_SRC_UID:
		sqlite3_result_int64(ctx, msg->src_uid);
		break;
	case SBX_MSG_COPIES_UID:
		sqlite3_result_int64(ctx, msg->uid);
		break;
	case SBX_MSG_COPIES_FLAGS:
		sqlite3_result_int64(ctx, msg->flags & SBX_FLAGS_MASK);
		break;
	case SBX_MSG_COPIES_KEYWORDS:
		if (msg->keywords == NULL || msg->keywords[0] == '\0') {
			sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
			break;
		}
		keywords = sbx_keywords_normalize(msg->keywords);
		if (keywords == NULL) {
			sqlite3_result_error_nomem(ctx);
			break;
		}
		sqlite3_result_text(ctx, keywords, -1, free);
		break;
	case SBX_MSG_COPIES_SAVE_DATE:
		sqlite3_result_int64(ctx, msg->save_date);
		break;
	case SBX_MSG_COPIES_MODSEQ:
		sqlite3_result_int64(ctx, (sqlite3_int64)msg->modseq);
		break;
	case SBX_MSG_COPIES_BATCH:
		sqlite3_result_null(ctx);
		break;
	}
	return SQLITE_OK;
}

static int sbx_msg_copies_rowid(sqlite3_vtab_cursor *base,
				sqlite3_int64 *rowid_r)
{
	*rowid_r = (sqlite3_int64)((struct sbx_msg_copies_cursor *)base)->pos;
	return SQLITE_OK;
}

/* Eponymous only (no xCreate): it exists on every connection without a
   trace in the schema. */
static const sqlite3_module sbx_msg_copies_module = {
	.iVersion = 0,
	.xConnect = sbx_msg_copies_connect,
	.xBestIndex = sbx_msg_copies_best_index,
	.xDisconnect = sbx_msg_copies_disconnect,
	.xOpen = sbx_msg_copies_open,
	.xClose = sbx_msg_copies_close,
	.xFilter = sbx_msg_copies_filter,
	.xNext = sbx_msg_copies_next,
	.xEof = sbx_msg_copies_eof,
	.xColumn = sbx_msg_copies_column,
	.xRowid = sbx_msg_copies_rowid,
};

int sbx_msg_register_functions(struct sbx_db *db)
{
	int rc;

	rc = sqlite3_create_module_v2(db->sqlite, "sbx_msg_copies",
				      &sbx_msg_copies_module, NULL, NULL);
	if (rc != SQLITE_OK)
		return sbx_error_sqlite(db, rc, "register sbx_msg_copies");
	return 0;
}

/* Refuses a batch the statement would refuse less clearly, or not at
   all: UIDs not ascending or below uidnext, a \Noselect or missing
   mailbox. */
static int sbx_msg_copy_check(struct sbx_db *db, int64_t mailbox_id,
			      const struct sbx_msg_copy *msgs, size_t count)
{
	struct sbx_mailbox mb;
	size_t i;
	int ret;

	ret = sbx_mailbox_lookup_id(db, mailbox_id, &mb);
	if (ret <= 0) {
		return ret < 0 ? -1 : sbx_error_set(db, SBX_ERR_NOTFOUND,
			"copy messages to mailbox %lld: no such mailbox",
			(long long)mailbox_id);
	}
	if (mb.noselect) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"copy messages to '%s': the mailbox is \\Noselect",
			mb.name);
	}
	if (count > (size_t)INT32_MAX) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"copy messages to '%s': %zu messages in one batch",
			mb.name, count);
	}
	for (i = 0; i < count; i++) {
		if (msgs[i].uid == 0 || msgs[i].src_uid == 0 ||
		    (i == 0 && msgs[i].uid < mb.uidnext) ||
		    (i > 0 && msgs[i].uid <= msgs[i - 1].uid)) {
			return sbx_error_set(db, SBX_ERR_INVALID,
				"copy message UID %u to '%s' as UID %u: UIDs "
				"must ascend from UIDNEXT %u", msgs[i].src_uid,
				mb.name, msgs[i].uid, mb.uidnext);
		}
	}
	return 0;
}

/* Runs statement sid with ?1 mailbox_id, ?2 the batch, and arg3: for the
   tombstones ?3 the MODSEQ (and ?4 now), for a move ?3 the source
   mailbox. Returns the rows it changed, or -1. */
static int sbx_msg_copies_exec(struct sbx_db *db, enum sbx_stmt_id sid,
			       int64_t mailbox_id,
			       const struct sbx_msg_copy_batch *batch,
			       int64_t arg3, const char *what)
{
	sqlite3_stmt *stmt;
	int ret = -1;
	int rc;

	if (sbx_stmt_get(db, sid, &stmt) < 0)
		return -1;
	rc = sqlite3_bind_pointer(stmt, 2, (void *)batch,
				  SBX_MSG_COPIES_POINTER, NULL);
	if (rc != SQLITE_OK) {
		(void)sbx_error_sqlite(db, rc, "%s: bind the batch", what);
	} else if (sbx_bind_int64(db, stmt, 1, mailbox_id) == 0 &&
		   (sbx_stmt_param_count(sid) < 3 ||
		    sbx_bind_int64(db, stmt, 3, arg3) == 0) &&
		   (sbx_stmt_param_count(sid) < 4 ||
		    sbx_bind_int64(db, stmt, 4, (int64_t)time(NULL)) == 0)) {
		ret = sbx_stmt_exec(db, stmt, "%s of mailbox %lld", what,
				    (long long)mailbox_id);
	}
	sbx_stmt_put(db, stmt);
	return ret < 0 ? -1 : sqlite3_changes(db->sqlite);
}

/* A MOVE's source side: the tombstones of the batch's rows in src_id at
   modseq (first: they copy the GUIDs from the rows), then statement sid
   with ?1 mailbox_id and arg3 on the same rows (MSG_DELETE_COPIED or
   MSG_MOVE). Returns 1 when both touched every row, 0 when some row was
   gone, -1 on error. */
static int sbx_msg_tombstone_then(struct sbx_db *db, int64_t src_id,
				  const struct sbx_msg_copy_batch *batch,
				  uint64_t modseq, enum sbx_stmt_id sid,
				  int64_t mailbox_id, int64_t arg3,
				  const char *what)
{
	int ret;

	ret = sbx_msg_copies_exec(db, SBX_STMT_MSG_TOMBSTONE_COPIED, src_id,
				  batch, (int64_t)modseq, what);
	if (ret < 0)
		return -1;
	if ((size_t)ret != batch->count)
		return 0;
	ret = sbx_msg_copies_exec(db, sid, mailbox_id, batch, arg3, what);
	if (ret < 0)
		return -1;
	return (size_t)ret == batch->count ? 1 : 0;
}

int sbx_msg_copy(struct sbx_db *db, int64_t mailbox_id,
		 const struct sbx_msg_copy *msgs, size_t count)
{
	struct sbx_msg_copy_batch batch = { .msgs = msgs, .count = count };
	int ret;

	if (sbx_db_require_write(db, "copy messages") < 0)
		return -1;
	if (count == 0)
		return 1;
	if (sbx_msg_copy_check(db, mailbox_id, msgs, count) < 0)
		return -1;
	ret = sbx_msg_copies_exec(db, SBX_STMT_MSG_COPY, mailbox_id, &batch,
				  0, "copy messages");
	if (ret < 0)
		return -1;
	return (size_t)ret == count ? 1 : 0;
}

int sbx_msg_expunge_copied(struct sbx_db *db, int64_t mailbox_id,
			   const struct sbx_msg_copy *msgs, size_t count,
			   uint64_t modseq)
{
	struct sbx_msg_copy_batch batch = { .msgs = msgs, .count = count };
	size_t i;

	if (sbx_db_require_write(db, "expunge copied messages") < 0)
		return -1;
	if (count > (size_t)INT32_MAX) {
		return sbx_error_set(db, SBX_ERR_INVALID,
			"expunge copied messages of mailbox %lld: %zu messages "
			"in one batch", (long long)mailbox_id, count);
	}
	for (i = 0; i < count; i++) {
		if (msgs[i].src_mailbox_id != mailbox_id) {
			return sbx_error_set(db, SBX_ERR_INVALID,
				"expunge copied messages of mailbox %lld: UID "
				"%u is in mailbox %lld", (long long)mailbox_id,
				msgs[i].src_uid,
				(long long)msgs[i].src_mailbox_id);
		}
	}
	if (count == 0)
		return 1;
	return sbx_msg_tombstone_then(db, mailbox_id, &batch, modseq,
				      SBX_STMT_MSG_DELETE_COPIED, mailbox_id,
				      0, "expunge copied messages");
}

int sbx_msg_move(struct sbx_db *db, int64_t mailbox_id,
		 const struct sbx_msg_copy *msgs, size_t count,
		 uint64_t src_modseq)
{
	struct sbx_msg_copy_batch batch = { .msgs = msgs, .count = count };
	size_t i;

	if (sbx_db_require_write(db, "move messages") < 0)
		return -1;
	if (count == 0)
		return 1;
	if (sbx_msg_copy_check(db, mailbox_id, msgs, count) < 0)
		return -1;
	for (i = 1; i < count; i++) {
		if (msgs[i].src_mailbox_id != msgs[0].src_mailbox_id) {
			return sbx_error_set(db, SBX_ERR_INVALID,
				"move messages to mailbox %lld: from more "
				"than one mailbox in one batch",
				(long long)mailbox_id);
		}
	}
	return sbx_msg_tombstone_then(db, msgs[0].src_mailbox_id, &batch,
				      src_modseq, SBX_STMT_MSG_MOVE,
				      mailbox_id, msgs[0].src_mailbox_id,
				      "move messages");
}

struct sbx_uid_iter {
	struct sbx_stmt_iter it;
};

int sbx_uid_iter_init(struct sbx_db *db, int64_t mailbox_id,
		      uint32_t uid_first, uint32_t uid_last,
		      struct sbx_uid_iter **iter_r)
{
	struct sbx_uid_iter *iter;

	*iter_r = NULL;
	iter = calloc(1, sizeof(*iter));
	if (iter == NULL) {
		return sbx_error_set(db, SBX_ERR_NOMEM,
				     "list UIDs: out of memory");
	}
	iter->it.db = db;
	if (sbx_stmt_get(db, SBX_STMT_MSG_UID_RANGE, &iter->it.stmt) < 0)
		goto out_free;
	if (sbx_bind_int64(db, iter->it.stmt, 1, mailbox_id) < 0 ||
	    sbx_bind_int64(db, iter->it.stmt, 2, uid_first) < 0 ||
	    sbx_bind_int64(db, iter->it.stmt, 3, uid_last) < 0)
		goto out_put;
	*iter_r = iter;
	return 0;
out_put:
	sbx_stmt_put(db, iter->it.stmt);
out_free:
	free(iter);
	return -1;
}

int sbx_uid_iter_next(struct sbx_uid_iter *iter, uint32_t *uid_r)
{
	int ret;

	ret = sbx_stmt_iter_step(&iter->it, "list UIDs");
	if (ret > 0)
		*uid_r = sbx_column_u32(iter->it.stmt, 0);
	return ret;
}

int sbx_uid_iter_deinit(struct sbx_uid_iter **_iter)
{
	struct sbx_uid_iter *iter = *_iter;
	int ret;

	if (iter == NULL)
		return 0;
	*_iter = NULL;
	ret = sbx_stmt_iter_finish(&iter->it);
	free(iter);
	return ret;
}
