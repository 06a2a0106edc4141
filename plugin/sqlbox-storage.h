/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_STORAGE_H
#define SQLBOX_STORAGE_H

#include "index-storage.h"
#include "mailbox-list-private.h"
#include "sqlbox-settings.h"

#define SQLBOX_STORAGE_NAME "sqlbox"
#define SQLBOX_DB_FILE_NAME "mail.sqlite"

struct sbx_db;

/* The mailbox list owns the user's database connection: the list is
   created before the storage and lives as long as the namespace. A
   database that could not be opened in the list's init() is tried again
   when it is needed (sqlbox_list_open_db()). */
struct sqlbox_mailbox_list {
	struct mailbox_list list;
	/* NULL while the file can't be opened */
	struct sbx_db *db;
	const char *db_path;
	/* why the last open failed, as logged (logged once per cause) */
	const char *db_open_error;
	struct sqlbox_settings set;
};

/* Everything a storage needs is its namespace's list's: the database
   belongs to the mailbox list (sqlbox_mailbox_get_db()). */
struct sqlbox_storage {
	struct mail_storage storage;
};

struct sqlbox_mailbox {
	struct mailbox box;

	/* The mailbox's row, as of the last open or sync. */
	int64_t mailbox_id;
	uint32_t uidvalidity;
	guid_128_t guid;

	/* The highest MODSEQ of SQL already imported into the index; 0
	   means nothing imported yet (the next sync is a full import). */
	uint64_t pulled_modseq;
	/* message rows read ahead for FETCH, SEARCH and POP3 (sqlbox-rows.c) */
	struct sqlbox_rows *rows;
	/* A push failed after the index already had the changes: the next
	   sync resets the index and imports everything again. */
	bool need_full_import:1;
	/* Opened only to save (APPEND, COPY and MOVE targets, LMTP, LDA,
	   doveadm save): the index holds no earlier messages, only SQL's
	   UIDVALIDITY and UIDNEXT and what this mailbox saved; counters come
	   from SQL. A sync that needs the messages imports them all. */
	bool saveonly:1;
};

#define SQLBOX_LIST(l) (container_of(l, struct sqlbox_mailbox_list, list))
#define SQLBOX_STORAGE(s) (container_of(s, struct sqlbox_storage, storage))
#define SQLBOX_MAILBOX(b) (container_of(b, struct sqlbox_mailbox, box))

extern struct mail_storage sqlbox_storage;
extern struct mailbox_list sqlbox_mailbox_list;
extern struct mail_vfuncs sqlbox_mail_vfuncs;

/* Opens the list's database unless it is open. Returns 0 and sets *db_r,
   or -1 with a temporary error set on the list (the file is damaged,
   foreign, newer or unreadable: logged, left untouched). */
int sqlbox_list_open_db(struct mailbox_list *list, struct sbx_db **db_r);
/* The same for a mailbox that may not be open yet: the error is set on
   the mailbox's storage. */
int sqlbox_mailbox_open_db(struct sqlbox_mailbox *mbox, struct sbx_db **db_r);

/* The database of the mailbox's namespace. Only for a mailbox that is
   open (opening it opened the database) or after sqlbox_mailbox_open_db(). */
static inline struct sbx_db *sqlbox_mailbox_get_db(struct sqlbox_mailbox *mbox)
{
	return SQLBOX_LIST(mbox->box.list)->db;
}

static inline const struct sqlbox_settings *
sqlbox_mailbox_get_settings(struct sqlbox_mailbox *mbox)
{
	return &SQLBOX_LIST(mbox->box.list)->set;
}

#endif
