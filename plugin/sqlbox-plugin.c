/* SPDX-License-Identifier: MIT */
/* Module registration: the sqlbox mailbox-list and storage classes.
   Dovecot may init a module more than once in a process (e.g. doveadm
   loading mail_plugins for several users); registration is counted so
   classes are registered once and removed with the last deinit. */

#include "lib.h"
#include "mail-storage-private.h"
#include "sbx-db.h"
#include "sqlbox-storage.h"
#include "sqlbox-plugin.h"

const char *sqlbox_plugin_version = DOVECOT_ABI_VERSION;

static unsigned int sqlbox_plugin_refcount = 0;

void sqlbox_plugin_init(struct module *module ATTR_UNUSED)
{
	if (sqlbox_plugin_refcount++ > 0)
		return;
	/* the list class first: a storage is created on top of its list */
	mailbox_list_register(&sqlbox_mailbox_list);
	mail_storage_class_register(&sqlbox_storage);
}

void sqlbox_plugin_deinit(void)
{
	i_assert(sqlbox_plugin_refcount > 0);
	if (--sqlbox_plugin_refcount > 0)
		return;
	mail_storage_class_unregister(&sqlbox_storage);
	mailbox_list_unregister(&sqlbox_mailbox_list);
	sbx_db_close_parked();
}
