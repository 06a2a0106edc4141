/* SPDX-License-Identifier: MIT */
/* doveadm sqlbox check|purge|backup|restore|stats: looking after users'
   databases with doveadm, for one user (-u) or all (-A).

   Each command opens the user's mail.sqlite with a connection of its own
   (the storage module of the same process keeps its own, idle while the
   command runs) and follows the same lock discipline as every writer. */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mail-user.h"
#include "mailbox-list-private.h"
#include "doveadm-mail.h"
#include "doveadm-print.h"
#include "sbx-admin.h"
#include "sbx-body.h"
#include "sbx-db.h"
#include "sbx-mailbox.h"
#include "sqlbox-events.h"
#include "sqlbox-settings.h"
#include "sqlbox-plugin.h"

#include <sysexits.h>
#include <time.h>
#include <unistd.h>

extern SQLBOX_PLUGIN_EXPORT const char *doveadm_sqlbox_plugin_version;
SQLBOX_PLUGIN_EXPORT void doveadm_sqlbox_plugin_init(struct module *module);
SQLBOX_PLUGIN_EXPORT void doveadm_sqlbox_plugin_deinit(void);

const char *doveadm_sqlbox_plugin_version = DOVECOT_ABI_VERSION;

struct sqlbox_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool repair, full, force;
	const char *path;	/* backup destination, restore source */
};

#define SQLBOX_CMD(c) (container_of(c, struct sqlbox_cmd_context, ctx))

/* The path of the user's database, or NULL (with the failure recorded)
   when the user's INBOX isn't on sqlbox. */
static const char *
sqlbox_cmd_db_path(struct doveadm_mail_cmd_context *ctx, struct mail_user *user)
{
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);

	if (ns == NULL || strcmp(ns->storage->name, "sqlbox") != 0) {
		i_error("User %s: mail is not stored in sqlbox",
			user->username);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_NOTPOSSIBLE);
		return NULL;
	}
	return t_strconcat(ns->list->set.root_dir, "/mail.sqlite", NULL);
}

static struct sbx_db *
sqlbox_cmd_open(struct doveadm_mail_cmd_context *ctx, struct mail_user *user)
{
	struct sqlbox_settings set;
	struct sbx_db_settings db_set;
	struct sbx_db *db;
	const char *path, *error, *msg;

	path = sqlbox_cmd_db_path(ctx, user);
	if (path == NULL)
		return NULL;
	if (sqlbox_settings_read(user, &set, &error) < 0) {
		i_error("User %s: %s", user->username, error);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_PARAMS);
		return NULL;
	}
	i_zero(&db_set);
	db_set.lock_timeout_msecs = set.lock_timeout_msecs;
	if (sbx_db_open(path, &db_set, &db) < 0) {
		if (db == NULL)
			i_fatal_status(FATAL_OUTOFMEM, "sqlbox: out of memory");
		(void)sbx_db_last_error(db, &msg);
		i_error("User %s: %s", user->username, msg);
		sbx_db_close(&db);
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
		return NULL;
	}
	return db;
}

static int sqlbox_cmd_failed(struct doveadm_mail_cmd_context *ctx,
			     struct mail_user *user, struct sbx_db **db,
			     const char *what)
{
	const char *msg;
	enum sbx_error error = sbx_db_last_error(*db, &msg);

	i_error("User %s: %s: %s", user->username, what, msg);
	doveadm_mail_failed_error(ctx, error == SBX_ERR_BUSY ?
				  MAIL_ERROR_INUSE : error == SBX_ERR_EXISTS ?
				  MAIL_ERROR_EXISTS : MAIL_ERROR_TEMP);
	sbx_db_close(db);
	return -1;
}

static void sqlbox_check_report(void *context ATTR_UNUSED,
				const char *problem)
{
	doveadm_print(problem);
}

static int cmd_sqlbox_check_run(struct doveadm_mail_cmd_context *_ctx,
				struct mail_user *user)
{
	struct sqlbox_cmd_context *ctx = SQLBOX_CMD(_ctx);
	enum sbx_check_flags flags = 0;
	unsigned int problems;
	struct sbx_db *db;

	db = sqlbox_cmd_open(_ctx, user);
	if (db == NULL)
		return -1;
	if (ctx->full)
		flags |= SBX_CHECK_FULL;
	if (ctx->repair)
		flags |= SBX_CHECK_REPAIR;
	if (sbx_admin_check(db, flags, sqlbox_check_report, NULL,
			    &problems) < 0)
		return sqlbox_cmd_failed(_ctx, user, &db, "check");
	if (ctx->repair && problems > 0) {
		/* what is left after the repair */
		if (sbx_admin_check(db, flags & ENUM_NEGATE(SBX_CHECK_REPAIR),
				    NULL, NULL, &problems) < 0)
			return sqlbox_cmd_failed(_ctx, user, &db, "check");
	}
	sbx_db_close(&db);
	if (problems > 0) {
		/* EX_DATAERR: the database has problems (left) */
		_ctx->exit_code = EX_DATAERR;
		return -1;
	}
	return 0;
}

static int cmd_sqlbox_purge_run(struct doveadm_mail_cmd_context *_ctx,
				struct mail_user *user)
{
	struct sqlbox_settings set;
	struct sbx_purge_result res;
	struct sbx_db *db;
	const char *error;
	int ret;

	if (sqlbox_settings_read(user, &set, &error) < 0) {
		i_error("User %s: %s", user->username, error);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_PARAMS);
		return -1;
	}
	db = sqlbox_cmd_open(_ctx, user);
	if (db == NULL)
		return -1;
	/* sqlbox_purge_finished and the purge's transactions, for metrics
	   (the storage module's observer, when it shares the handle) */
	sqlbox_events_attach(db, user->event);
	ret = sbx_admin_purge(db, (int64_t)(time(NULL) -
					    set.tombstone_keep_secs),
			      (int64_t)time(NULL) -
			      SBX_BODY_UNREFERENCED_GRACE_SECS, &res);
	sqlbox_events_detach(db);
	if (ret < 0)
		return sqlbox_cmd_failed(_ctx, user, &db, "purge");
	sbx_db_close(&db);
	doveadm_print_num(res.bodies_freed);
	doveadm_print_num(res.tombstones_pruned);
	doveadm_print_num(res.bytes_before);
	doveadm_print_num(res.bytes_after);
	doveadm_print_num(res.bytes_before > res.bytes_after ?
			  res.bytes_before - res.bytes_after : 0);
	return 0;
}

/* backup and restore paths may name the user: %u */
static const char *sqlbox_cmd_user_path(const char *path,
					struct mail_user *user)
{
	string_t *str = t_str_new(128);
	const char *p;

	for (p = path; *p != '\0'; p++) {
		if (p[0] == '%' && p[1] == 'u') {
			str_append(str, user->username);
			p++;
		} else {
			str_append_c(str, *p);
		}
	}
	return str_c(str);
}

static int cmd_sqlbox_backup_run(struct doveadm_mail_cmd_context *_ctx,
				 struct mail_user *user)
{
	struct sqlbox_cmd_context *ctx = SQLBOX_CMD(_ctx);
	struct sbx_db *db;

	db = sqlbox_cmd_open(_ctx, user);
	if (db == NULL)
		return -1;
	if (sbx_admin_backup(db, sqlbox_cmd_user_path(ctx->path, user)) < 0)
		return sqlbox_cmd_failed(_ctx, user, &db, "backup");
	sbx_db_close(&db);
	return 0;
}

/* Restoring over mail a user may be reading is only done on request
   (-f): stop the user's sessions first (doveadm kick). */
static int cmd_sqlbox_restore_run(struct doveadm_mail_cmd_context *_ctx,
				  struct mail_user *user)
{
	struct sqlbox_cmd_context *ctx = SQLBOX_CMD(_ctx);
	const char *src = sqlbox_cmd_user_path(ctx->path, user);
	struct sbx_stats stats;
	struct sbx_db *db;

	if (access(src, R_OK) < 0) {
		i_error("User %s: restore: can't read %s: %m",
			user->username, src);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTFOUND);
		return -1;
	}
	db = sqlbox_cmd_open(_ctx, user);
	if (db == NULL)
		return -1;
	if (sbx_admin_stats(db, &stats) < 0)
		return sqlbox_cmd_failed(_ctx, user, &db, "restore");
	if (stats.messages > 0 && !ctx->force) {
		i_error("User %s: restore: the database holds %"PRIu64
			" messages; not overwriting them without -f",
			user->username, stats.messages);
		sbx_db_close(&db);
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_EXISTS);
		return -1;
	}
	if (sbx_admin_restore(db, src) < 0)
		return sqlbox_cmd_failed(_ctx, user, &db, "restore");
	sbx_db_close(&db);
	return 0;
}

static int cmd_sqlbox_stats_run(struct doveadm_mail_cmd_context *_ctx,
				struct mail_user *user)
{
	struct sbx_stats st;
	struct sbx_db *db;

	db = sqlbox_cmd_open(_ctx, user);
	if (db == NULL)
		return -1;
	if (sbx_admin_stats(db, &st) < 0)
		return sqlbox_cmd_failed(_ctx, user, &db, "stats");
	sbx_db_close(&db);
	doveadm_print_num(st.mailboxes);
	doveadm_print_num(st.messages);
	doveadm_print_num(st.message_bytes);
	doveadm_print_num(st.bodies);
	doveadm_print_num(st.bodies_shared);
	doveadm_print_num(st.body_bytes);
	doveadm_print_num(st.tombstones);
	doveadm_print_num(st.file_bytes);
	doveadm_print_num(st.free_bytes);
	doveadm_print_num(st.wal_bytes);
	doveadm_print_num(st.schema_version);
	doveadm_print_num(st.last_purge);
	return 0;
}

static bool sqlbox_cmd_parse_arg(struct doveadm_mail_cmd_context *_ctx, int c)
{
	struct sqlbox_cmd_context *ctx = SQLBOX_CMD(_ctx);

	switch (c) {
	case 'r':
		ctx->repair = TRUE;
		return TRUE;
	case 'f':
		/* check: full integrity check; restore: force */
		ctx->full = ctx->force = TRUE;
		return TRUE;
	default:
		return FALSE;
	}
}

static void sqlbox_cmd_init_path(struct doveadm_mail_cmd_context *_ctx,
				 const char *const args[])
{
	struct sqlbox_cmd_context *ctx = SQLBOX_CMD(_ctx);

	if (args[0] == NULL || args[1] != NULL)
		doveadm_mail_help_name(_ctx->cmd->name);
	ctx->path = p_strdup(_ctx->pool, args[0]);
}

static void cmd_sqlbox_check_init(struct doveadm_mail_cmd_context *ctx,
				  const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header("problem", "problem",
			     DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE);
	(void)ctx;
}

static void cmd_sqlbox_purge_init(struct doveadm_mail_cmd_context *ctx,
				  const char *const args[] ATTR_UNUSED)
{
	doveadm_print_header_simple("bodies_freed");
	doveadm_print_header_simple("tombstones_pruned");
	doveadm_print_header_simple("bytes_before");
	doveadm_print_header_simple("bytes_after");
	doveadm_print_header_simple("bytes_reclaimed");
	(void)ctx;
}

static void cmd_sqlbox_stats_init(struct doveadm_mail_cmd_context *ctx,
				  const char *const args[] ATTR_UNUSED)
{
	static const char *const names[] = {
		"mailboxes", "messages", "message_bytes", "bodies",
		"bodies_shared", "body_bytes", "tombstones", "file_bytes",
		"free_bytes", "wal_bytes", "schema_version", "last_purge",
	};
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(names); i++)
		doveadm_print_header_simple(names[i]);
	(void)ctx;
}

static struct doveadm_mail_cmd_context *
sqlbox_cmd_alloc(int (*run)(struct doveadm_mail_cmd_context *,
			    struct mail_user *),
		 void (*init)(struct doveadm_mail_cmd_context *,
			      const char *const []),
		 const char *getopt_args, const char *print_type)
{
	struct sqlbox_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct sqlbox_cmd_context);
	ctx->ctx.getopt_args = getopt_args;
	ctx->ctx.v.parse_arg = sqlbox_cmd_parse_arg;
	ctx->ctx.v.init = init;
	ctx->ctx.v.run = run;
	doveadm_print_init(print_type);
	return &ctx->ctx;
}

static struct doveadm_mail_cmd_context *cmd_sqlbox_check_alloc(void)
{
	return sqlbox_cmd_alloc(cmd_sqlbox_check_run, cmd_sqlbox_check_init,
				"rf", DOVEADM_PRINT_TYPE_FLOW);
}

static struct doveadm_mail_cmd_context *cmd_sqlbox_purge_alloc(void)
{
	return sqlbox_cmd_alloc(cmd_sqlbox_purge_run, cmd_sqlbox_purge_init,
				"", DOVEADM_PRINT_TYPE_FLOW);
}

static struct doveadm_mail_cmd_context *cmd_sqlbox_backup_alloc(void)
{
	return sqlbox_cmd_alloc(cmd_sqlbox_backup_run, sqlbox_cmd_init_path,
				"", DOVEADM_PRINT_TYPE_FLOW);
}

static struct doveadm_mail_cmd_context *cmd_sqlbox_restore_alloc(void)
{
	return sqlbox_cmd_alloc(cmd_sqlbox_restore_run, sqlbox_cmd_init_path,
				"f", DOVEADM_PRINT_TYPE_FLOW);
}

static struct doveadm_mail_cmd_context *cmd_sqlbox_stats_alloc(void)
{
	return sqlbox_cmd_alloc(cmd_sqlbox_stats_run, cmd_sqlbox_stats_init,
				"", DOVEADM_PRINT_TYPE_FLOW);
}

static struct doveadm_cmd_ver2 sqlbox_commands[] = {
	{
		.name = "sqlbox check",
		.mail_cmd = cmd_sqlbox_check_alloc,
		.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "[-r] [-f]",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('r', "repair", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAM('f', "full", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "sqlbox purge",
		.mail_cmd = cmd_sqlbox_purge_alloc,
		.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "sqlbox backup",
		.mail_cmd = cmd_sqlbox_backup_alloc,
		.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "<destination file>",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('\0', "destination", CMD_PARAM_STR,
		  CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "sqlbox restore",
		.mail_cmd = cmd_sqlbox_restore_alloc,
		.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "[-f] <source file>",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('f', "force", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAM('\0', "source", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
	},
	{
		.name = "sqlbox stats",
		.mail_cmd = cmd_sqlbox_stats_alloc,
		.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
	},
};

void doveadm_sqlbox_plugin_init(struct module *module ATTR_UNUSED)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(sqlbox_commands); i++)
		doveadm_cmd_register_ver2(&sqlbox_commands[i]);
}

void doveadm_sqlbox_plugin_deinit(void)
{
	sbx_db_close_parked();
}
