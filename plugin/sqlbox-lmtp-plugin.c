/* SPDX-License-Identifier: MIT */
/* The sqlbox_lmtp module: LMTP's side of sqlbox_max_message_size.

   Dovecot 2.3's LMTP has no message size limit of its own and reports any
   failed save as a temporary 451, which makes an MTA retry an oversized
   message for days. Loaded into lmtp (protocol lmtp { mail_plugins =
   $mail_plugins sqlbox_lmtp }), this module refuses such a message for
   each sqlbox recipient whose limit it exceeds with a permanent
   552 5.3.4 (RFC 3463: message too big for system), before anything is
   stored; other recipients of the same transaction are unaffected. */

#include "lmtp-common.h"
#include "module-context.h"
#include "mail-storage-private.h"
#include "mail-namespace.h"
#include "mail-user.h"
#include "lmtp-recipient.h"
#include "sqlbox-settings.h"
#include "sqlbox-plugin.h"

#define SQLBOX_LMTP_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, sqlbox_lmtp_module)

struct sqlbox_lmtp_client {
	union lmtp_module_context module_ctx;
};

extern SQLBOX_PLUGIN_EXPORT const char *sqlbox_lmtp_plugin_version;
extern SQLBOX_PLUGIN_EXPORT const char sqlbox_lmtp_plugin_binary_dependency[];
SQLBOX_PLUGIN_EXPORT void sqlbox_lmtp_plugin_init(struct module *module);
SQLBOX_PLUGIN_EXPORT void sqlbox_lmtp_plugin_deinit(void);

const char *sqlbox_lmtp_plugin_version = DOVECOT_ABI_VERSION;
/* an array: the loader reads the symbol's address as the string */
const char sqlbox_lmtp_plugin_binary_dependency[] = "lmtp";

static MODULE_CONTEXT_DEFINE_INIT(sqlbox_lmtp_module, &lmtp_module_register);
static lmtp_client_created_func_t *next_hook_client_created;

/* The recipient's limit, or 0 when it has none or isn't on sqlbox. */
static uoff_t sqlbox_lmtp_get_limit(struct mail_user *user)
{
	struct mail_namespace *ns = mail_namespace_find_inbox(user->namespaces);
	struct sqlbox_settings set;
	const char *error;

	if (ns == NULL || strcmp(ns->storage->name, "sqlbox") != 0)
		return 0;
	if (sqlbox_settings_read(user, &set, &error) < 0) {
		/* the storage refuses to start with it: say so there */
		return 0;
	}
	return set.max_message_size;
}

static int
sqlbox_lmtp_local_deliver(struct client *client, struct lmtp_recipient *lrcpt,
			  struct smtp_server_cmd_ctx *cmd,
			  struct smtp_server_transaction *trans,
			  struct lmtp_local_deliver_context *lldctx)
{
	struct sqlbox_lmtp_client *sclient = SQLBOX_LMTP_CONTEXT(client);
	uoff_t limit, size;

	limit = sqlbox_lmtp_get_limit(lldctx->rcpt_user);
	if (limit != 0 && mail_get_physical_size(lldctx->src_mail, &size) == 0 &&
	    size > limit) {
		e_info(client->event, "sqlbox: refusing a %"PRIuUOFF_T
		       " byte message for %s: larger than %"PRIuUOFF_T,
		       size, lldctx->rcpt_user->username, limit);
		smtp_server_recipient_reply(lrcpt->rcpt, 552, "5.3.4",
			"Message too big for this mailbox "
			"(limit %"PRIuUOFF_T" bytes)", limit);
		return -1;
	}
	return sclient->module_ctx.super.local_deliver(client, lrcpt, cmd,
						       trans, lldctx);
}

static void sqlbox_lmtp_client_created(struct client **_client)
{
	struct client *client = *_client;
	struct sqlbox_lmtp_client *sclient;

	sclient = p_new(client->pool, struct sqlbox_lmtp_client, 1);
	sclient->module_ctx.super = client->v;
	client->v.local_deliver = sqlbox_lmtp_local_deliver;
	MODULE_CONTEXT_SET(client, sqlbox_lmtp_module, sclient);

	if (next_hook_client_created != NULL)
		next_hook_client_created(_client);
}

void sqlbox_lmtp_plugin_init(struct module *module ATTR_UNUSED)
{
	next_hook_client_created =
		lmtp_client_created_hook_set(sqlbox_lmtp_client_created);
}

void sqlbox_lmtp_plugin_deinit(void)
{
	lmtp_client_created_hook_set(next_hook_client_created);
}
