/* SPDX-License-Identifier: MIT */
/* Mailbox attributes (IMAP METADATA, server metadata, dsync) in the
   user's database instead of a dict.

   A set is kept with the transaction and written in its commit's SQL
   transaction (sqlbox-transaction.c), so a rolled-back SETMETADATA changes
   nothing; it is also recorded in the index transaction
   (mail_index_attribute_set), which is how dsync notices attribute
   changes. Listing copies the keys out at once, so no statement stays
   open while the caller works through them. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "mail-storage-private.h"
#include "mailbox-attribute-private.h"
#include "sbx-attr.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sqlbox-error.h"
#include "sqlbox-storage.h"
#include "sqlbox-transaction.h"
#include "sqlbox-attribute.h"

struct sqlbox_attribute_iter {
	struct mailbox_attribute_iter iter;
	pool_t pool;
	ARRAY_TYPE(const_string) keys;
	unsigned int idx;
	bool failed;
};

static enum sbx_attr_type
sqlbox_attribute_type(enum mail_attribute_type type_flags)
{
	return (type_flags & MAIL_ATTRIBUTE_TYPE_MASK) ==
		MAIL_ATTRIBUTE_TYPE_PRIVATE ? SBX_ATTR_PRIVATE : SBX_ATTR_SHARED;
}

/* Lib-storage leaves FLAG_VALIDATED set only for keys that aren't its
   own internal attributes while IMAP METADATA is disabled: those can't
   be used (as with the dict backend). */
static int sqlbox_attribute_check(struct mailbox *box,
				  enum mail_attribute_type type_flags)
{
	if ((type_flags & MAIL_ATTRIBUTE_TYPE_FLAG_VALIDATED) == 0)
		return 0;
	mail_storage_set_error(box->storage, MAIL_ERROR_NOTPOSSIBLE,
			       "Generic mailbox attributes not enabled");
	return -1;
}

/* The mailbox's id, looking it up when the mailbox isn't open. */
static int sqlbox_attribute_mailbox_id(struct mailbox *box, int64_t *id_r)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_mailbox row;
	struct sbx_db *db;
	int ret;

	if (box->opened) {
		*id_r = mbox->mailbox_id;
		return 0;
	}
	if (sqlbox_mailbox_open_db(mbox, &db) < 0)
		return -1;
	ret = sbx_mailbox_lookup(db, box->name, &row);
	if (ret == 0 && mailbox_is_autocreated(box)) {
		if (mailbox_open(box) < 0)
			return -1;
		*id_r = mbox->mailbox_id;
		return 0;
	}
	if (ret < 0) {
		sqlbox_set_box_error(box, db);
		return -1;
	}
	if (ret == 0 || row.noselect) {
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				       T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
		return -1;
	}
	*id_r = row.id;
	return 0;
}

int sqlbox_attribute_set(struct mailbox_transaction_context *t,
			 enum mail_attribute_type type_flags, const char *key,
			 const struct mail_attribute_value *value)
{
	struct sqlbox_transaction_context *st = SQLBOX_TRANSACTION(t);
	enum sbx_attr_type type = sqlbox_attribute_type(type_flags);
	bool pvt = type == SBX_ATTR_PRIVATE;
	time_t ts = value->last_change != 0 ? value->last_change : ioloop_time;
	struct sqlbox_attr_change *change;
	const char *value_str;

	if (sqlbox_attribute_check(t->box, type_flags) < 0)
		return -1;
	if (mailbox_attribute_value_to_string(t->box->storage, value,
					      &value_str) < 0)
		return -1;

	if (st->attr_pool == NULL) {
		st->attr_pool = pool_alloconly_create("sqlbox attributes", 512);
		p_array_init(&st->attr_changes, st->attr_pool, 8);
	}
	change = array_append_space(&st->attr_changes);
	change->type = type;
	change->key = p_strdup(st->attr_pool, key);
	change->value = p_strdup(st->attr_pool, value_str);
	change->last_change = ts;

	if (value_str != NULL) {
		mail_index_attribute_set(t->itrans, pvt, key, ts,
					 strlen(value_str));
	} else {
		mail_index_attribute_unset(t->itrans, pvt, key, ts);
	}
	return 0;
}

int sqlbox_attribute_get(struct mailbox *box,
			 enum mail_attribute_type type_flags, const char *key,
			 struct mail_attribute_value *value_r)
{
	struct sbx_db *db;
	const void *value;
	size_t size;
	int64_t id, last_change;
	int ret;

	i_zero(value_r);
	if (sqlbox_attribute_check(box, type_flags) < 0)
		return -1;
	if (*key == '\0') {
		/* GETMETADATA of /shared or /private itself (with DEPTH)
		   looks up the root: no entry is ever stored there */
		return 0;
	}
	if (sqlbox_attribute_mailbox_id(box, &id) < 0)
		return -1;
	db = sqlbox_mailbox_get_db(SQLBOX_MAILBOX(box));
	ret = sbx_attr_get(db, id, sqlbox_attribute_type(type_flags), key,
			   &value, &size, &last_change);
	if (ret < 0) {
		sqlbox_set_box_error(box, db);
		return -1;
	}
	if (ret > 0) {
		value_r->value = t_strndup(value, size);
		value_r->last_change = (time_t)last_change;
	}
	return ret;
}

struct mailbox_attribute_iter *
sqlbox_attribute_iter_init(struct mailbox *box,
			   enum mail_attribute_type type_flags,
			   const char *prefix)
{
	struct sqlbox_attribute_iter *iter;
	struct sbx_attr_iter *siter;
	size_t prefix_len = strlen(prefix);
	struct sbx_db *db;
	const char *key;
	int64_t id;
	pool_t pool;
	int ret;

	pool = pool_alloconly_create("sqlbox attribute iter", 512);
	iter = p_new(pool, struct sqlbox_attribute_iter, 1);
	iter->iter.box = box;
	iter->pool = pool;
	p_array_init(&iter->keys, pool, 16);

	if ((type_flags & MAIL_ATTRIBUTE_TYPE_FLAG_VALIDATED) != 0) {
		/* only lib-storage's internal attributes: none of ours */
		return &iter->iter;
	}
	if (sqlbox_attribute_mailbox_id(box, &id) < 0) {
		iter->failed = TRUE;
		return &iter->iter;
	}
	db = sqlbox_mailbox_get_db(SQLBOX_MAILBOX(box));
	if (sbx_attr_iter_init(db, id, sqlbox_attribute_type(type_flags),
			       prefix, &siter) < 0) {
		sqlbox_set_box_error(box, db);
		iter->failed = TRUE;
		return &iter->iter;
	}
	while ((ret = sbx_attr_iter_next(siter, &key)) > 0) {
		/* keys are returned relative to the prefix, like the
		   dict backend does */
		key = p_strdup(pool, key + prefix_len);
		array_push_back(&iter->keys, &key);
	}
	if (sbx_attr_iter_deinit(&siter) < 0 || ret < 0) {
		sqlbox_set_box_error(box, db);
		iter->failed = TRUE;
	}
	return &iter->iter;
}

const char *sqlbox_attribute_iter_next(struct mailbox_attribute_iter *_iter)
{
	struct sqlbox_attribute_iter *iter =
		container_of(_iter, struct sqlbox_attribute_iter, iter);

	if (iter->failed || iter->idx >= array_count(&iter->keys))
		return NULL;
	return array_idx_elem(&iter->keys, iter->idx++);
}

int sqlbox_attribute_iter_deinit(struct mailbox_attribute_iter *_iter)
{
	struct sqlbox_attribute_iter *iter =
		container_of(_iter, struct sqlbox_attribute_iter, iter);
	int ret = iter->failed ? -1 : 0;

	pool_unref(&iter->pool);
	return ret;
}
