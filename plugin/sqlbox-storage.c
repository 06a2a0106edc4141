/* SPDX-License-Identifier: MIT */
/* The sqlbox storage and mailbox classes.

   A mailbox is a row of the user's database. Opening one imports its
   messages into an in-memory index before any view of that index exists;
   from then on the generic index-* code serves FETCH, SEARCH, SORT and
   THREAD from that index and from our mail class. STATUS and the sizes of
   a mailbox that isn't open are answered from the counters SQL keeps, so
   LIST-STATUS never imports a folder. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "mail-index-modseq.h"
#include "mailbox-list-private.h"
#include "mail-storage-private.h"
#include "mailbox-watch.h"
#include "index-storage.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sbx-msg.h"
#include "sqlbox-error.h"
#include "sqlbox-mail.h"
#include "sqlbox-save.h"
#include "sqlbox-attribute.h"
#include "sqlbox-transaction.h"
#include "sqlbox-sync.h"
#include "sqlbox-rows.h"
#include "sqlbox-storage.h"

extern struct mailbox sqlbox_mailbox;

static struct event_category event_category_sqlbox = {
	.name = "sqlbox",
	.parent = &event_category_storage,
};

static struct mail_storage *sqlbox_storage_alloc(void)
{
	struct sqlbox_storage *storage;
	pool_t pool;

	pool = pool_alloconly_create("sqlbox storage", 512);
	storage = p_new(pool, struct sqlbox_storage, 1);
	storage->storage = sqlbox_storage;
	storage->storage.pool = pool;
	return &storage->storage;
}

static int sqlbox_storage_create(struct mail_storage *_storage ATTR_UNUSED,
				 struct mail_namespace *ns,
				 const char **error_r)
{
	if (strcmp(ns->list->name, SQLBOX_STORAGE_NAME) != 0) {
		*error_r = t_strdup_printf(
			"sqlbox: mail_location must not set LAYOUT=%s: "
			"sqlbox keeps its own folder list", ns->list->name);
		return -1;
	}
	return 0;
}

static void
sqlbox_storage_get_list_settings(const struct mail_namespace *ns ATTR_UNUSED,
				 struct mailbox_list_settings *set)
{
	if (set->layout == NULL)
		set->layout = SQLBOX_STORAGE_NAME;
	/* names are stored as UTF-8, never as modified UTF-7 */
	set->utf8 = TRUE;
}

static struct mailbox *
sqlbox_mailbox_alloc(struct mail_storage *storage, struct mailbox_list *list,
		     const char *vname, enum mailbox_flags flags)
{
	struct sqlbox_mailbox *mbox;
	pool_t pool;

	pool = pool_alloconly_create("sqlbox mailbox", 1024 * 3);
	mbox = p_new(pool, struct sqlbox_mailbox, 1);
	mbox->box = sqlbox_mailbox;
	mbox->box.pool = pool;
	mbox->box.storage = storage;
	mbox->box.list = list;
	mbox->box.mail_vfuncs = &sqlbox_mail_vfuncs;
	index_storage_mailbox_alloc(&mbox->box, vname, flags, MAIL_INDEX_PREFIX);
	return &mbox->box;
}

int sqlbox_mailbox_open_db(struct sqlbox_mailbox *mbox, struct sbx_db **db_r)
{
	if (sqlbox_list_open_db(mbox->box.list, db_r) < 0) {
		mail_storage_copy_list_error(mbox->box.storage, mbox->box.list);
		return -1;
	}
	return 0;
}

/* Looks the mailbox's row up by name: 1 found, 0 not, -1 error. */
static int sqlbox_mailbox_lookup(struct sqlbox_mailbox *mbox,
				 struct sbx_mailbox *row_r)
{
	struct sbx_db *db;
	int ret;

	if (sqlbox_mailbox_open_db(mbox, &db) < 0)
		return -1;
	ret = sbx_mailbox_lookup(db, mbox->box.name, row_r);
	if (ret < 0)
		sqlbox_set_box_error(&mbox->box, db);
	return ret;
}

static int
sqlbox_mailbox_exists(struct mailbox *box, bool auto_boxes,
		      enum mailbox_existence *existence_r)
{
	struct sbx_mailbox row;
	int ret;

	if (auto_boxes && mailbox_is_autocreated(box)) {
		*existence_r = MAILBOX_EXISTENCE_SELECT;
		return 0;
	}
	ret = sqlbox_mailbox_lookup(SQLBOX_MAILBOX(box), &row);
	if (ret < 0)
		return -1;
	*existence_r = ret == 0 ? MAILBOX_EXISTENCE_NONE :
		row.noselect ? MAILBOX_EXISTENCE_NOSELECT :
		MAILBOX_EXISTENCE_SELECT;
	return 0;
}

/* Imports the mailbox before index_storage_mailbox_open() creates
   box->view: a view opened on an empty in-memory index and synced after
   the import would see a reset and become inconsistent. */
static int sqlbox_mailbox_open(struct mailbox *box)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct index_mailbox_context *ibox = INDEX_STORAGE_CONTEXT(box);
	struct sbx_mailbox row;
	int ret;

	ret = sqlbox_mailbox_lookup(mbox, &row);
	if (ret < 0)
		return -1;
	if (ret == 0 || row.noselect) {
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				       T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
		return -1;
	}
	mbox->mailbox_id = row.id;
	mbox->uidvalidity = row.uidvalidity;
	memcpy(mbox->guid, row.guid, sizeof(mbox->guid));
	mbox->pulled_modseq = 0;
	mbox->need_full_import = FALSE;
	/* saving needs no import: opening stays cheap however large the
	   folder (each APPEND to an unselected folder and each delivery
	   opens it) */
	mbox->saveonly = (box->flags & MAILBOX_FLAG_SAVEONLY) != 0;

	if (index_storage_mailbox_alloc_index(box) < 0)
		return -1;
	if (mail_index_open_or_create(box->index, ibox->index_flags) < 0) {
		mailbox_set_index_error(box);
		return -1;
	}
	/* MODSEQs are SQL's and permanent: the import gives every record
	   its SQL value (sqlbox-sync.c) */
	mail_index_modseq_enable(box->index);
	if (sqlbox_sync(mbox, 0) < 0) {
		mail_index_close(box->index);
		return -1;
	}
	ret = index_storage_mailbox_open(box, FALSE);
	mail_index_close(box->index);
	return ret;
}

static void sqlbox_mailbox_close(struct mailbox *box)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);

	mbox->pulled_modseq = 0;
	sqlbox_rows_free(&mbox->rows);
	index_storage_mailbox_close(box);
}

static int
sqlbox_mailbox_create_box(struct mailbox *box,
			  const struct mailbox_update *update, bool directory)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_mailbox_create set;
	struct sbx_db *db;

	if (sqlbox_mailbox_open_db(mbox, &db) < 0)
		return -1;
	i_zero(&set);
	set.name = box->name;
	set.noselect = directory;
	if (update != NULL) {
		if (!guid_128_is_empty(update->mailbox_guid)) {
			set.has_guid = TRUE;
			memcpy(set.guid, update->mailbox_guid, sizeof(set.guid));
		}
		set.uidvalidity = update->uid_validity;
		set.min_uidnext = update->min_next_uid;
		set.min_highestmodseq = update->min_highest_modseq;
	}
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sbx_mailbox_create(db, &set, &mbox->mailbox_id) < 0) {
		sbx_tx_rollback(db);
		goto fail;
	}
	if (sbx_tx_commit(db) < 0)
		goto fail;
	return 0;
fail:
	sqlbox_set_box_error(box, db);
	return -1;
}

static int
sqlbox_mailbox_update_box(struct mailbox *box,
			  const struct mailbox_update *update)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_db *db = sqlbox_mailbox_get_db(mbox);
	struct sbx_mailbox_update set;

	if (!box->opened && mailbox_open(box) < 0)
		return -1;
	i_zero(&set);
	if (!guid_128_is_empty(update->mailbox_guid)) {
		set.has_guid = TRUE;
		memcpy(set.guid, update->mailbox_guid, sizeof(set.guid));
	}
	set.uidvalidity = update->uid_validity;
	set.min_uidnext = update->min_next_uid;
	set.min_highestmodseq = update->min_highest_modseq;
	set.min_first_recent_uid = update->min_first_recent_uid;

	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sbx_mailbox_update(db, mbox->mailbox_id, &set) < 0) {
		sbx_tx_rollback(db);
		goto fail;
	}
	if (sbx_tx_commit(db) < 0)
		goto fail;
	if (set.has_guid)
		memcpy(mbox->guid, set.guid, sizeof(mbox->guid));
	if (sqlbox_sync(mbox, 0) < 0)
		return -1;
	return index_storage_mailbox_update_common(box, update);
fail:
	sqlbox_set_box_error(box, db);
	return -1;
}

/* Deleting is one SQL transaction (messages, the row or its \Noselect
   remains), not Dovecot's expunge-then-delete, so no other process can
   add a message halfway through. */
static int sqlbox_mailbox_delete_box(struct mailbox *box)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_mailbox row;
	guid_128_t guid;
	int ret;

	ret = sqlbox_mailbox_lookup(mbox, &row);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		if (mailbox_is_autocreated(box)) {
			/* the client sees it as existing: not an error */
			return 0;
		}
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				       T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
		return -1;
	}
	if (box->opened)
		mailbox_close(box);
	if (box->list->v.delete_mailbox(box->list, box->name) < 0) {
		mail_storage_copy_list_error(box->storage, box->list);
		return -1;
	}
	if (!row.noselect) {
		memcpy(guid, row.guid, sizeof(guid));
		mailbox_list_add_change(box->list,
					MAILBOX_LOG_RECORD_DELETE_MAILBOX, guid);
	} else {
		mailbox_name_get_sha128(box->vname, guid);
		mailbox_list_add_change(box->list,
					MAILBOX_LOG_RECORD_DELETE_DIR, guid);
	}
	return 0;
}

#define SQLBOX_STATUS_SQL_ITEMS \
	(STATUS_MESSAGES | STATUS_UNSEEN | STATUS_UIDVALIDITY | \
	 STATUS_UIDNEXT | STATUS_HIGHESTMODSEQ)

/* The index is in memory, but its MODSEQs are SQL's: HIGHESTMODSEQ is
   SQL's as of the last sync, which never goes down, in any process. */
static int
sqlbox_mailbox_get_open_status(struct mailbox *box,
			       enum mailbox_status_items items,
			       struct mailbox_status *status_r)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_mailbox row;
	int ret;

	if (index_storage_get_status(box, items, status_r) < 0)
		return -1;
	if ((items & STATUS_HIGHESTMODSEQ) != 0 && box->opened) {
		status_r->nonpermanent_modseqs = FALSE;
		status_r->highest_modseq = I_MAX(mbox->pulled_modseq, 1);
	}
	if (box->opened && mbox->saveonly) {
		/* the index holds only this session's saves */
		ret = sqlbox_mailbox_lookup(mbox, &row);
		if (ret == 0) {
			mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
		}
		if (ret <= 0)
			return -1;
		status_r->messages = row.messages;
		status_r->unseen = row.unseen;
		status_r->uidnext = row.uidnext;
		status_r->highest_modseq = I_MAX(row.highestmodseq, 1);
		status_r->recent = 0;
		status_r->first_unseen_seq = 0;
	}
	return 0;
}

/* STATUS of a mailbox that isn't open comes from SQL's counters. */
static int
sqlbox_mailbox_get_status(struct mailbox *box, enum mailbox_status_items items,
			  struct mailbox_status *status_r)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_mailbox row;
	int ret;

	if (box->opened || items == 0 ||
	    (items & ENUM_NEGATE(SQLBOX_STATUS_SQL_ITEMS)) != 0)
		return sqlbox_mailbox_get_open_status(box, items, status_r);

	ret = sqlbox_mailbox_lookup(mbox, &row);
	if (ret < 0)
		return -1;
	if (ret == 0 || row.noselect) {
		/* autocreated mailboxes are created by opening them */
		return sqlbox_mailbox_get_open_status(box, items, status_r);
	}
	status_r->messages = row.messages;
	status_r->unseen = row.unseen;
	status_r->uidvalidity = row.uidvalidity;
	status_r->uidnext = row.uidnext;
	status_r->highest_modseq = I_MAX(row.highestmodseq, 1);
	return 0;
}

#define SQLBOX_METADATA_SQL_ITEMS \
	(MAILBOX_METADATA_GUID | MAILBOX_METADATA_VIRTUAL_SIZE | \
	 MAILBOX_METADATA_PHYSICAL_SIZE)

static int
sqlbox_mailbox_get_metadata(struct mailbox *box,
			    enum mailbox_metadata_items items,
			    struct mailbox_metadata *metadata_r)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(box);
	struct sbx_mailbox row;
	int ret;

	if ((items & SQLBOX_METADATA_SQL_ITEMS) != 0) {
		ret = sqlbox_mailbox_lookup(mbox, &row);
		if (ret == 0 && mailbox_is_autocreated(box)) {
			if (mailbox_open(box) < 0)
				return -1;
			ret = sqlbox_mailbox_lookup(mbox, &row);
		}
		if (ret < 0)
			return -1;
		if (ret == 0 || row.noselect) {
			mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
			return -1;
		}
		if ((items & MAILBOX_METADATA_GUID) != 0)
			memcpy(metadata_r->guid, row.guid,
			       sizeof(metadata_r->guid));
		if ((items & MAILBOX_METADATA_VIRTUAL_SIZE) != 0)
			metadata_r->virtual_size = row.vsize;
		if ((items & MAILBOX_METADATA_PHYSICAL_SIZE) != 0)
			metadata_r->physical_size = row.psize;
		items &= ENUM_NEGATE(SQLBOX_METADATA_SQL_ITEMS);
	}
	return index_mailbox_get_metadata(box, items, metadata_r);
}

/* IDLE: every commit of any process changes mail.sqlite-wal (a checkpoint
   changes mail.sqlite); a wake-up costs one cheap sync. */
static void sqlbox_notify_changes(struct mailbox *box)
{
	const char *db_path = SQLBOX_LIST(box->list)->db_path;

	if (box->notify_callback == NULL) {
		mailbox_watch_remove_all(box);
		return;
	}
	mailbox_watch_add(box, t_strconcat(db_path, "-wal", NULL));
	mailbox_watch_add(box, db_path);
}

struct mail_storage sqlbox_storage = {
	.name = SQLBOX_STORAGE_NAME,
	/* BINARY_DATA: a body may hold any bytes, so zlib and mail_crypt
	   compress and encrypt what is saved */
	.class_flags = MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUIDS |
		MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_SAVE_GUIDS |
		MAIL_STORAGE_CLASS_FLAG_BINARY_DATA,
	/* kept at save (sqlbox-parsed.c): preparing a mail for them opens
	   no body; a mail saved without them is parsed when asked */
	.nonbody_access_fields = MAIL_FETCH_IMAP_ENVELOPE |
		MAIL_FETCH_IMAP_BODY | MAIL_FETCH_IMAP_BODYSTRUCTURE,
	.event_category = &event_category_sqlbox,
	.v = {
		.alloc = sqlbox_storage_alloc,
		.create = sqlbox_storage_create,
		.destroy = index_storage_destroy,
		.get_list_settings = sqlbox_storage_get_list_settings,
		.mailbox_alloc = sqlbox_mailbox_alloc,
	},
};

/* POP3 asks every search for its messages in POP3 order, which makes
   index-sort read every message's order before the search returns the
   first one: a second pass over the mailbox, for LIST and again for
   UIDL. Messages without an order sort in sequence order, the search's
   own; so when none has one the sort is left out. When SQL can't say,
   the sort stays. */
static struct mail_search_context *
sqlbox_search_init(struct mailbox_transaction_context *t,
		   struct mail_search_args *args,
		   const enum mail_sort_type *sort_program,
		   enum mail_fetch_field wanted_fields,
		   struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct sqlbox_mailbox *mbox = SQLBOX_MAILBOX(t->box);

	if (sort_program != NULL && sort_program[0] == MAIL_SORT_POP3_ORDER &&
	    sort_program[1] == MAIL_SORT_END &&
	    sbx_msg_has_pop3_order(sqlbox_mailbox_get_db(mbox),
				   mbox->mailbox_id) == 0)
		sort_program = NULL;
	return index_storage_search_init(t, args, sort_program, wanted_fields,
					 wanted_headers);
}

struct mailbox sqlbox_mailbox = {
	.v = {
		.is_readonly = index_storage_is_readonly,
		.enable = index_storage_mailbox_enable,
		.exists = sqlbox_mailbox_exists,
		.open = sqlbox_mailbox_open,
		.close = sqlbox_mailbox_close,
		.free = index_storage_mailbox_free,
		.create_box = sqlbox_mailbox_create_box,
		.update_box = sqlbox_mailbox_update_box,
		.delete_box = sqlbox_mailbox_delete_box,
		.rename_box = index_storage_mailbox_rename,
		.get_status = sqlbox_mailbox_get_status,
		.get_metadata = sqlbox_mailbox_get_metadata,
		.set_subscribed = index_storage_set_subscribed,
		.attribute_set = sqlbox_attribute_set,
		.attribute_get = sqlbox_attribute_get,
		.attribute_iter_init = sqlbox_attribute_iter_init,
		.attribute_iter_next = sqlbox_attribute_iter_next,
		.attribute_iter_deinit = sqlbox_attribute_iter_deinit,
		.sync_init = sqlbox_mailbox_sync_init,
		.sync_next = index_mailbox_sync_next,
		.sync_deinit = index_mailbox_sync_deinit,
		.notify_changes = sqlbox_notify_changes,
		.transaction_begin = sqlbox_transaction_begin,
		.transaction_commit = sqlbox_transaction_commit,
		.transaction_rollback = sqlbox_transaction_rollback,
		.mail_alloc = sqlbox_mail_alloc,
		.search_init = sqlbox_search_init,
		.search_deinit = index_storage_search_deinit,
		.search_next_nonblock = index_storage_search_next_nonblock,
		.search_next_update_seq = index_storage_search_next_update_seq,
		.search_next_match_mail = index_storage_search_next_match_mail,
		.save_alloc = sqlbox_save_alloc,
		.save_begin = sqlbox_save_begin,
		.save_continue = sqlbox_save_continue,
		.save_finish = sqlbox_save_finish,
		.save_cancel = sqlbox_save_cancel,
		.copy = sqlbox_copy,
		.transaction_save_commit_pre = sqlbox_transaction_save_commit_pre,
		.transaction_save_commit_post = sqlbox_transaction_save_commit_post,
		.transaction_save_rollback = sqlbox_transaction_save_rollback,
		.is_inconsistent = index_storage_is_inconsistent,
	},
};
