/* SPDX-License-Identifier: MIT */
#ifndef SQLBOX_EVENTS_H
#define SQLBOX_EVENTS_H

struct event;
struct sbx_db;

/* Turns what db's observer hears (transactions, lock waits, purges) into
   Dovecot events of the category "sqlbox", children of parent (the mail
   user's event), sent at debug level: logged only with debugging on, but
   seen by the stats service's metrics either way.

   Attaches are counted per handle: every list sharing db attaches, the
   first one's parent is used, and the last detach removes the observer.
   A handle observed by another module (doveadm's beside the storage's)
   is left alone. Detach before sbx_db_close(). */
void sqlbox_events_attach(struct sbx_db *db, struct event *parent);
void sqlbox_events_detach(struct sbx_db *db);

#endif
