/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_ERROR_H
#define SQLBOX_ERROR_H

#include "sbx-common.h"

struct sbx_db;

/* Moves the last storage/ error of db onto a Dovecot object: a client-
   visible mail_error where the cause is the client's or temporary, else a
   critical error carrying the full message (the client sees only
   "Internal error"). */
void sqlbox_set_box_error(struct mailbox *box, struct sbx_db *db);
void sqlbox_set_storage_error(struct mail_storage *storage, struct sbx_db *db);
void sqlbox_set_list_error(struct mailbox_list *list, struct sbx_db *db);
/* The database could not be opened for the cause error: a temporary
   failure the client retries, worded without anything internal (the
   caller logs the cause). */
void sqlbox_set_list_open_error(struct mailbox_list *list,
				enum sbx_error error);

#endif
