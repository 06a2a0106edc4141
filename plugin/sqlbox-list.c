/* SPDX-License-Identifier: MIT */
/* The sqlbox mailbox list: folder names, \Noselect parents and
   subscriptions, all read from and written to the user's database.

   The list owns the database connection of its namespace: it is opened in
   init(), after Dovecot dropped privileges, and closed in deinit(). A file
   that can't be opened (damaged, foreign, newer, not the user's) doesn't
   fail init(), which would end the login: every operation that needs the
   database tries to open it again (sqlbox_list_open_db()) and fails with
   a temporary error until it is repaired. Every
   folder operation is one SQL transaction, so a RENAME or DELETE of a
   subtree is all or nothing. No path is ever given for a mailbox: that
   keeps each mailbox's index in memory, private to the process, a cache of
   what SQL says. */

#include "lib.h"
#include "array.h"
#include "mkdir-parents.h"
#include "hostpid.h"
#include "ioloop.h"
#include "imap-match.h"
#include "mailbox-tree.h"
#include "mailbox-list-subscriptions.h"
#include "mail-storage-private.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sbx-mailbox-log.h"
#include "mailbox-log.h"
#include "sqlbox-error.h"
#include "sqlbox-events.h"
#include "sqlbox-storage.h"

struct sqlbox_list_iterate_context {
	struct mailbox_list_iterate_context ctx;
	struct mailbox_tree_context *tree;
	struct mailbox_tree_iterate_context *iter;
	struct mailbox_info info;
};

static struct mailbox_list *sqlbox_list_alloc(void)
{
	struct sqlbox_mailbox_list *list;
	pool_t pool;

	pool = pool_alloconly_create("sqlbox list", 2048);
	list = p_new(pool, struct sqlbox_mailbox_list, 1);
	list->list = sqlbox_mailbox_list;
	list->list.pool = pool;
	return &list->list;
}

/* Mirrors a record of dovecot.mailbox.log into SQL, inside the caller's
   write transaction, with the time Dovecot gives the file's record. */
static int sqlbox_list_log_change(struct mailbox_list *list,
				  enum mailbox_log_record_type type,
				  const guid_128_t guid)
{
	struct sbx_mailbox_log_rec rec;

	i_zero(&rec);
	memcpy(rec.guid, guid, sizeof(rec.guid));
	rec.type = (uint8_t)type;
	rec.stamp = list->changelog_timestamp != (time_t)-1 ?
		list->changelog_timestamp : ioloop_time;
	return sbx_mailbox_log_add(SQLBOX_LIST(list)->db, &rec);
}

/* The change log of a name (renames, subscriptions, \Noselect deletes)
   carries a hash of the name, as Dovecot's own records do. */
static int sqlbox_list_log_name(struct mailbox_list *list,
				enum mailbox_log_record_type type,
				const char *name)
{
	guid_128_t guid;

	mailbox_name_get_sha128(mailbox_list_get_vname(list, name), guid);
	return sqlbox_list_log_change(list, type, guid);
}

/* dsync reads dovecot.mailbox.log to tell deleted and renamed folders
   from new ones; the file is only a copy of the mailbox_log table, and
   is written again from it when it is missing. */
static void sqlbox_list_restore_changelog(struct sqlbox_mailbox_list *list)
{
	const char *path = t_strconcat(list->list.set.root_dir, "/",
				       MAILBOX_LOG_FILE_NAME, NULL);
	struct sbx_mailbox_log_iter *iter;
	struct sbx_mailbox_log_rec srec;
	struct mailbox_log_record rec;
	struct mailbox_log *log = NULL;
	struct stat st;
	const char *msg;
	int ret;

	if (stat(path, &st) == 0 || errno != ENOENT)
		return;
	if (sbx_mailbox_log_iter_init(list->db, &iter) < 0)
		goto fail;
	while ((ret = sbx_mailbox_log_iter_next(iter, &srec)) > 0) {
		if (log == NULL) {
			log = mailbox_log_alloc(list->list.ns->user->event,
						path);
			/* private, like the database next to it */
			mailbox_log_set_permissions(log, 0600, (gid_t)-1,
						    "sqlbox");
		}
		i_zero(&rec);
		rec.type = srec.type;
		memcpy(rec.mailbox_guid, srec.guid, sizeof(rec.mailbox_guid));
		mailbox_log_record_set_timestamp(&rec, (time_t)srec.stamp);
		if (mailbox_log_append(log, &rec) < 0)
			break;
	}
	if (log != NULL)
		mailbox_log_free(&log);
	if (sbx_mailbox_log_iter_deinit(&iter) < 0 || ret < 0)
		goto fail;
	return;
fail:
	(void)sbx_db_last_error(list->db, &msg);
	e_error(list->list.ns->user->event,
		"sqlbox: restoring %s failed: %s", path, msg);
}

/* Logs why the database can't be opened: once per list and cause, so a
   client retrying its commands doesn't flood the log. */
static void sqlbox_list_log_open_error(struct sqlbox_mailbox_list *list,
				       const char *msg)
{
	struct event *event = list->list.ns->user->event;

	if (list->db_open_error != NULL &&
	    strcmp(list->db_open_error, msg) == 0) {
		e_debug(event, "sqlbox: %s", msg);
		return;
	}
	list->db_open_error = p_strdup(list->list.pool, msg);
	e_error(event, "sqlbox: %s (file left untouched; the user's "
		"commands fail temporarily until it is repaired)", msg);
}

int sqlbox_list_open_db(struct mailbox_list *_list, struct sbx_db **db_r)
{
	struct sqlbox_mailbox_list *list = SQLBOX_LIST(_list);
	struct sbx_db_settings db_set;
	struct sbx_db *db;
	enum sbx_error error;
	const char *msg;

	if (list->db != NULL) {
		*db_r = list->db;
		return 0;
	}
	i_zero(&db_set);
	db_set.lock_timeout_msecs = list->set.lock_timeout_msecs;
	/* optimized: new mail is synced, other changes commit lazily */
	switch (_list->mail_set->parsed_fsync_mode) {
	case FSYNC_MODE_NEVER:
		db_set.synchronous = SBX_SYNCHRONOUS_OFF;
		break;
	case FSYNC_MODE_ALWAYS:
		db_set.synchronous = SBX_SYNCHRONOUS_EXTRA;
		break;
	default:
		db_set.synchronous = SBX_SYNCHRONOUS_FULL;
		break;
	}
	if (sbx_db_open(list->db_path, &db_set, &db) < 0) {
		error = sbx_db_last_error(db, &msg);
		sqlbox_list_log_open_error(list, msg);
		sqlbox_set_list_open_error(_list, error);
		sbx_db_close(&db);
		return -1;
	}
	list->db = db;
	list->db_open_error = NULL;
	sqlbox_events_attach(list->db, _list->ns->user->event);
	sqlbox_list_restore_changelog(list);
	*db_r = list->db;
	return 0;
}

static int sqlbox_list_init(struct mailbox_list *_list, const char **error_r)
{
	struct sqlbox_mailbox_list *list = SQLBOX_LIST(_list);
	const char *root = _list->set.root_dir, *error;
	struct sbx_db *db;

	if (root == NULL || *root == '\0') {
		*error_r = "sqlbox: mail_location needs a directory "
			"(e.g. sqlbox:~/sqlbox)";
		return -1;
	}
	if (sqlbox_settings_read(_list->ns->user, &list->set, &error) < 0) {
		*error_r = t_strconcat("sqlbox: ", error, NULL);
		return -1;
	}
	if (mkdir_parents(root, 0700) < 0 && errno != EEXIST) {
		*error_r = t_strdup_printf("sqlbox: mkdir(%s) failed: %m",
					   root);
		return -1;
	}
	list->db_path = p_strconcat(_list->pool, root, "/",
				    SQLBOX_DB_FILE_NAME, NULL);
	/* a failure is logged, and tried again when the database is needed */
	(void)sqlbox_list_open_db(_list, &db);
	return 0;
}

static void sqlbox_list_deinit(struct mailbox_list *_list)
{
	struct sqlbox_mailbox_list *list = SQLBOX_LIST(_list);

	if (list->db != NULL)
		sqlbox_events_detach(list->db);
	sbx_db_close(&list->db);
	pool_unref(&_list->pool);
}

static char sqlbox_list_get_hierarchy_sep(struct mailbox_list *list ATTR_UNUSED)
{
	return SBX_HIERARCHY_SEP;
}

/* Only the root has paths: dovecot.mailbox.log and temporary files live
   there. A mailbox has none, which keeps its index in memory (an in-memory
   index is found again by its mailbox path, so a shared path would make
   every mailbox share one index). */
static int
sqlbox_list_get_path(struct mailbox_list *list, const char *name,
		     enum mailbox_list_path_type type, const char **path_r)
{
	if (name != NULL)
		return 0;
	switch (type) {
	case MAILBOX_LIST_PATH_TYPE_DIR:
	case MAILBOX_LIST_PATH_TYPE_MAILBOX:
	case MAILBOX_LIST_PATH_TYPE_CONTROL:
	case MAILBOX_LIST_PATH_TYPE_INDEX:
	case MAILBOX_LIST_PATH_TYPE_LIST_INDEX:
	case MAILBOX_LIST_PATH_TYPE_INDEX_CACHE:
		*path_r = list->set.root_dir;
		return 1;
	default:
		break;
	}
	return 0;
}

static const char *
sqlbox_list_get_temp_prefix(struct mailbox_list *list ATTR_UNUSED,
			    bool global)
{
	return global ? ".temp." :
		t_strdup_printf(".temp.%s.%s.", my_hostname, my_pid);
}

static void
sqlbox_list_fill_tree(struct sqlbox_list_iterate_context *ctx)
{
	struct sqlbox_mailbox_list *list = SQLBOX_LIST(ctx->ctx.list);
	struct mailbox_list_iter_update_context update_ctx;
	struct sbx_mailbox_iter *iter;
	struct sbx_mailbox mb;
	struct mailbox_node *node;
	struct sbx_db *db;
	const char *vname;
	int ret;

	if (sqlbox_list_open_db(&list->list, &db) < 0) {
		ctx->ctx.failed = TRUE;
		return;
	}
	i_zero(&update_ctx);
	update_ctx.iter_ctx = &ctx->ctx;
	update_ctx.tree_ctx = ctx->tree;
	update_ctx.glob = ctx->ctx.glob;
	update_ctx.match_parents = TRUE;

	if (sbx_mailbox_iter_init(db, &iter) < 0) {
		sqlbox_set_list_error(&list->list, db);
		ctx->ctx.failed = TRUE;
		return;
	}
	while ((ret = sbx_mailbox_iter_next(iter, &mb)) > 0) T_BEGIN {
		vname = mailbox_list_get_vname(&list->list, mb.name);
		update_ctx.leaf_flags = mb.noselect ? MAILBOX_NOSELECT : 0;
		mailbox_list_iter_update(&update_ctx, vname);
		/* a stored row is never \NonExistent, even when a child
		   was seen first and created its node */
		node = mailbox_tree_lookup(ctx->tree, vname);
		if (node != NULL)
			node->flags &= ENUM_NEGATE(MAILBOX_NONEXISTENT);
	} T_END;
	if (sbx_mailbox_iter_deinit(&iter) < 0 || ret < 0) {
		sqlbox_set_list_error(&list->list, db);
		ctx->ctx.failed = TRUE;
	}
}

static struct mailbox_list_iterate_context *
sqlbox_list_iter_init(struct mailbox_list *list, const char *const *patterns,
		      enum mailbox_list_iter_flags flags)
{
	struct sqlbox_list_iterate_context *ctx;
	char sep = mail_namespace_get_sep(list->ns);
	pool_t pool;

	if ((flags & MAILBOX_LIST_ITER_SELECT_SUBSCRIBED) != 0)
		return mailbox_list_subscriptions_iter_init(list, patterns,
							    flags);

	pool = pool_alloconly_create("sqlbox list iter", 1024);
	ctx = p_new(pool, struct sqlbox_list_iterate_context, 1);
	ctx->ctx.pool = pool;
	ctx->ctx.list = list;
	ctx->ctx.flags = flags;
	ctx->ctx.glob = imap_match_init_multiple(pool, patterns, TRUE, sep);
	array_create(&ctx->ctx.module_contexts, pool, sizeof(void *), 5);
	ctx->info.ns = list->ns;

	ctx->tree = mailbox_tree_init(sep);
	mailbox_tree_set_parents_nonexistent(ctx->tree);
	sqlbox_list_fill_tree(ctx);
	ctx->iter = mailbox_tree_iterate_init(ctx->tree, NULL, MAILBOX_MATCHED);
	return &ctx->ctx;
}

static const struct mailbox_info *
sqlbox_list_iter_next(struct mailbox_list_iterate_context *_ctx)
{
	struct sqlbox_list_iterate_context *ctx =
		container_of(_ctx, struct sqlbox_list_iterate_context, ctx);
	struct mailbox_node *node;
	const char *vname;

	if ((_ctx->flags & MAILBOX_LIST_ITER_SELECT_SUBSCRIBED) != 0)
		return mailbox_list_subscriptions_iter_next(_ctx);
	if (_ctx->failed)
		return NULL;

	node = mailbox_tree_iterate_next(ctx->iter, &vname);
	if (node == NULL)
		return mailbox_list_iter_default_next(_ctx);

	ctx->info.vname = vname;
	ctx->info.flags = node->flags;
	if ((_ctx->flags & MAILBOX_LIST_ITER_RETURN_SUBSCRIBED) != 0) {
		mailbox_list_set_subscription_flags(_ctx->list, vname,
						    &ctx->info.flags);
	}
	return &ctx->info;
}

static int sqlbox_list_iter_deinit(struct mailbox_list_iterate_context *_ctx)
{
	struct sqlbox_list_iterate_context *ctx =
		container_of(_ctx, struct sqlbox_list_iterate_context, ctx);
	int ret = _ctx->failed ? -1 : 0;

	if ((_ctx->flags & MAILBOX_LIST_ITER_SELECT_SUBSCRIBED) != 0)
		return mailbox_list_subscriptions_iter_deinit(_ctx);

	mailbox_tree_iterate_deinit(&ctx->iter);
	mailbox_tree_deinit(&ctx->tree);
	pool_unref(&_ctx->pool);
	return ret;
}

static int
sqlbox_list_subscriptions_refresh(struct mailbox_list *src_list,
				  struct mailbox_list *dest_list)
{
	struct sbx_subscription_iter *iter;
	struct mailbox_node *node;
	const char *name, *vname;
	struct sbx_db *db;
	bool created;
	int ret;

	if (sqlbox_list_open_db(src_list, &db) < 0) {
		if (src_list != dest_list) {
			enum mail_error error;
			const char *str =
				mailbox_list_get_last_error(src_list, &error);

			mailbox_list_set_error(dest_list, error, str);
		}
		return -1;
	}
	if (dest_list->subscriptions != NULL)
		mailbox_tree_deinit(&dest_list->subscriptions);
	dest_list->subscriptions =
		mailbox_tree_init(mail_namespace_get_sep(src_list->ns));

	if (sbx_subscription_iter_init(db, &iter) < 0) {
		sqlbox_set_list_error(dest_list, db);
		return -1;
	}
	while ((ret = sbx_subscription_iter_next(iter, &name)) > 0) T_BEGIN {
		vname = mailbox_list_get_vname(dest_list, name);
		node = mailbox_tree_get(dest_list->subscriptions, vname,
					&created);
		node->flags = MAILBOX_SUBSCRIBED;
	} T_END;
	if (sbx_subscription_iter_deinit(&iter) < 0 || ret < 0) {
		sqlbox_set_list_error(dest_list, db);
		return -1;
	}
	return 0;
}

static int sqlbox_list_set_subscribed(struct mailbox_list *_list,
				      const char *name, bool set)
{
	struct sbx_db *db;

	if (sqlbox_list_open_db(_list, &db) < 0)
		return -1;
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sbx_subscription_set(db, name, set) < 0 ||
	    sqlbox_list_log_name(_list, set ? MAILBOX_LOG_RECORD_SUBSCRIBE :
				 MAILBOX_LOG_RECORD_UNSUBSCRIBE, name) < 0) {
		sbx_tx_rollback(db);
		goto fail;
	}
	if (sbx_tx_commit(db) < 0)
		goto fail;
	return 0;
fail:
	sqlbox_set_list_error(_list, db);
	return -1;
}

/* Deletes a folder and its messages in one transaction. A folder with
   children stays as a \Noselect parent (as with Dovecot's directory
   layouts); a \Noselect folder with children can't be deleted
   (RFC 3501 6.3.4). */
static int sqlbox_list_delete(struct mailbox_list *_list, const char *name,
			      bool *kept_noselect_r)
{
	struct sbx_mailbox row;
	guid_128_t guid;
	bool was_noselect = TRUE;
	struct sbx_db *db;
	const char *msg;
	int ret;

	if (sqlbox_list_open_db(_list, &db) < 0)
		return -1;
	guid_128_empty(guid);
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	ret = sbx_mailbox_lookup(db, name, &row);
	if (ret > 0) {
		memcpy(guid, row.guid, sizeof(guid));
		was_noselect = row.noselect;
	}
	if (ret < 0 || sbx_mailbox_delete(db, name, kept_noselect_r) < 0)
		goto fail_rollback;
	if ((!was_noselect ?
	     sqlbox_list_log_change(_list, MAILBOX_LOG_RECORD_DELETE_MAILBOX,
				    guid) :
	     sqlbox_list_log_name(_list, MAILBOX_LOG_RECORD_DELETE_DIR,
				  name)) < 0)
		goto fail_rollback;
	if (sbx_tx_commit(db) < 0)
		goto fail;
	return 0;
fail_rollback:
	sbx_tx_rollback(db);
fail:
	switch (sbx_db_last_error(db, &msg)) {
	case SBX_ERR_NOTFOUND:
		mailbox_list_set_error(_list, MAIL_ERROR_NOTFOUND,
			T_MAIL_ERR_MAILBOX_NOT_FOUND(
				mailbox_list_get_vname(_list, name)));
		break;
	case SBX_ERR_EXISTS:
		mailbox_list_set_error(_list, MAIL_ERROR_EXISTS,
			"Mailbox has children, delete them first");
		break;
	default:
		sqlbox_set_list_error(_list, db);
		break;
	}
	return -1;
}

static int sqlbox_list_delete_mailbox(struct mailbox_list *list,
				      const char *name)
{
	bool kept_noselect;

	return sqlbox_list_delete(list, name, &kept_noselect);
}

static int sqlbox_list_delete_dir(struct mailbox_list *list, const char *name)
{
	bool kept_noselect;

	return sqlbox_list_delete(list, name, &kept_noselect);
}

static int sqlbox_list_delete_symlink(struct mailbox_list *list,
				      const char *name ATTR_UNUSED)
{
	mailbox_list_set_error(list, MAIL_ERROR_NOTPOSSIBLE,
			       "sqlbox has no symlinked mailboxes");
	return -1;
}

/* Renames a folder and its whole subtree in one transaction. RFC 3501
   6.3.5: renaming INBOX moves its messages to the new name and leaves an
   empty INBOX; INBOX's children stay where they are. */
static int
sqlbox_list_rename_mailbox(struct mailbox_list *oldlist, const char *oldname,
			   struct mailbox_list *newlist, const char *newname)
{
	struct sbx_mailbox_create inbox;
	bool is_inbox = strcmp(oldname, SBX_INBOX_NAME) == 0;
	struct sbx_db *db;
	const char *msg;

	if (oldlist != newlist) {
		mailbox_list_set_error(oldlist, MAIL_ERROR_NOTPOSSIBLE,
			"Can't rename mailboxes across namespaces");
		return -1;
	}
	if (sqlbox_list_open_db(oldlist, &db) < 0)
		return -1;
	if (sbx_tx_begin(db, SBX_TX_WRITE) < 0)
		goto fail;
	if (sbx_mailbox_rename(db, oldname, newname, !is_inbox) < 0 ||
	    sqlbox_list_log_name(oldlist, MAILBOX_LOG_RECORD_RENAME,
				 newname) < 0)
		goto fail_rollback;
	if (is_inbox) {
		i_zero(&inbox);
		inbox.name = SBX_INBOX_NAME;
		if (sbx_mailbox_create(db, &inbox, NULL) < 0)
			goto fail_rollback;
	}
	if (sbx_tx_commit(db) < 0)
		goto fail;
	return 0;
fail_rollback:
	sbx_tx_rollback(db);
fail:
	switch (sbx_db_last_error(db, &msg)) {
	case SBX_ERR_NOTFOUND:
		mailbox_list_set_error(oldlist, MAIL_ERROR_NOTFOUND,
			T_MAIL_ERR_MAILBOX_NOT_FOUND(
				mailbox_list_get_vname(oldlist, oldname)));
		break;
	case SBX_ERR_EXISTS:
		mailbox_list_set_error(oldlist, MAIL_ERROR_EXISTS,
				       "Target mailbox already exists");
		break;
	default:
		sqlbox_set_list_error(oldlist, db);
		break;
	}
	return -1;
}

struct mailbox_list sqlbox_mailbox_list = {
	.name = SQLBOX_STORAGE_NAME,
	.props = MAILBOX_LIST_PROP_NO_LIST_INDEX |
		MAILBOX_LIST_PROP_NO_MAILDIR_NAME |
		MAILBOX_LIST_PROP_NO_ALT_DIR |
		MAILBOX_LIST_PROP_NO_INTERNAL_NAMES,
	.mailbox_name_max_length = MAILBOX_LIST_NAME_MAX_LENGTH,

	.v = {
		.alloc = sqlbox_list_alloc,
		.init = sqlbox_list_init,
		.deinit = sqlbox_list_deinit,
		.get_hierarchy_sep = sqlbox_list_get_hierarchy_sep,
		.get_vname = mailbox_list_default_get_vname,
		.get_storage_name = mailbox_list_default_get_storage_name,
		.get_path = sqlbox_list_get_path,
		.get_temp_prefix = sqlbox_list_get_temp_prefix,
		.iter_init = sqlbox_list_iter_init,
		.iter_next = sqlbox_list_iter_next,
		.iter_deinit = sqlbox_list_iter_deinit,
		.subscriptions_refresh = sqlbox_list_subscriptions_refresh,
		.set_subscribed = sqlbox_list_set_subscribed,
		.delete_mailbox = sqlbox_list_delete_mailbox,
		.delete_dir = sqlbox_list_delete_dir,
		.delete_symlink = sqlbox_list_delete_symlink,
		.rename_mailbox = sqlbox_list_rename_mailbox,
	},
};
