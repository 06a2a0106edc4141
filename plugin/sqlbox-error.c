/* SPDX-License-Identifier: MIT */
/* The one place an sbx_error becomes a Dovecot mail_error (STYLE §6).
   Errors a client can act on keep Dovecot's shared wording; everything
   else is logged as critical with storage/'s full message. A database
   that can't be opened is neither: it is a temporary failure of the
   user's mail, which the client should retry later. */

#include "lib.h"
#include "mail-storage-private.h"
#include "mailbox-list-private.h"
#include "sbx-db.h"
#include "sqlbox-error.h"

struct sqlbox_error_map {
	enum sbx_error sbx;
	enum mail_error mail;
	/* NULL: use storage/'s message; "": critical */
	const char *text;
};

static const struct sqlbox_error_map sqlbox_error_map[] = {
	{ SBX_ERR_NOTFOUND, MAIL_ERROR_NOTFOUND, NULL },
	{ SBX_ERR_EXISTS, MAIL_ERROR_EXISTS, "Mailbox already exists" },
	{ SBX_ERR_BUSY, MAIL_ERROR_INUSE, MAIL_ERRSTR_LOCK_TIMEOUT },
	{ SBX_ERR_NOQUOTA, MAIL_ERROR_NOQUOTA, MAIL_ERRSTR_NO_QUOTA },
	{ SBX_ERR_LIMIT, MAIL_ERROR_LIMIT, NULL },
	{ SBX_ERR_INVALID, MAIL_ERROR_PARAMS, NULL },
};

static const struct sqlbox_error_map *sqlbox_error_lookup(enum sbx_error error)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(sqlbox_error_map); i++) {
		if (sqlbox_error_map[i].sbx == error)
			return &sqlbox_error_map[i];
	}
	return NULL;
}

static const char *sqlbox_error_text(const struct sqlbox_error_map *map,
				     const char *msg)
{
	return map->text != NULL ? map->text : msg;
}

void sqlbox_set_box_error(struct mailbox *box, struct sbx_db *db)
{
	const struct sqlbox_error_map *map;
	enum sbx_error error;
	const char *msg;

	error = sbx_db_last_error(db, &msg);
	map = sqlbox_error_lookup(error);
	if (map == NULL)
		mailbox_set_critical(box, "sqlbox: %s", msg);
	else if (map->mail == MAIL_ERROR_NOTFOUND) {
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
				       T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
	} else {
		mail_storage_set_error(box->storage, map->mail,
				       sqlbox_error_text(map, msg));
	}
}

void sqlbox_set_storage_error(struct mail_storage *storage, struct sbx_db *db)
{
	const struct sqlbox_error_map *map;
	enum sbx_error error;
	const char *msg;

	error = sbx_db_last_error(db, &msg);
	map = sqlbox_error_lookup(error);
	if (map == NULL)
		mail_storage_set_critical(storage, "sqlbox: %s", msg);
	else
		mail_storage_set_error(storage, map->mail,
				       sqlbox_error_text(map, msg));
}

void sqlbox_set_list_error(struct mailbox_list *list, struct sbx_db *db)
{
	const struct sqlbox_error_map *map;
	enum sbx_error error;
	const char *msg;

	error = sbx_db_last_error(db, &msg);
	map = sqlbox_error_lookup(error);
	if (map == NULL)
		mailbox_list_set_critical(list, "sqlbox: %s", msg);
	else
		mailbox_list_set_error(list, map->mail,
				       sqlbox_error_text(map, msg));
}

#define SQLBOX_ERRSTR_UNAVAILABLE \
	"Mail storage temporarily unavailable, try again later"

void sqlbox_set_list_open_error(struct mailbox_list *list,
				enum sbx_error error)
{
	const char *service = list->ns->user->service;
	enum mail_error mail_error;

	if (error == SBX_ERR_BUSY) {
		/* a migration held the write lock too long */
		mailbox_list_set_error(list, MAIL_ERROR_INUSE,
				       MAIL_ERRSTR_LOCK_TIMEOUT);
		return;
	}
	/* The protocols don't agree on the temporary code: IMAP answers
	   MAIL_ERROR_UNAVAILABLE with NO [UNAVAILABLE] (RFC 5530: a
	   subsystem is down) and MAIL_ERROR_TEMP with [SERVERBUG], while
	   POP3 ([SYS/TEMP]), LDA and LMTP (tempfail, 451) treat only
	   MAIL_ERROR_TEMP as temporary. */
	mail_error = service != NULL && strcmp(service, "imap") == 0 ?
		MAIL_ERROR_UNAVAILABLE : MAIL_ERROR_TEMP;
	mailbox_list_set_error(list, mail_error, SQLBOX_ERRSTR_UNAVAILABLE);
}
