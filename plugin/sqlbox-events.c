/* SPDX-License-Identifier: MIT */
/* Dovecot events from libsbx's observer, for operators' metrics:

     sqlbox_transaction_finished  transaction, result, error,
                                  lock_wait_usecs, pages_written,
                                  bytes_written
     sqlbox_lock_waited           result, lock_wait_usecs
     sqlbox_purge_finished        bodies_freed, tombstones_pruned,
                                  bytes_reclaimed

   A transaction's event is created when the transaction begins and sent
   when it ends, so Dovecot's own "duration" of the event is the
   transaction's, lock waits included; a write's lock event is created at
   the same moment, so its duration is the wait. */

#include "lib.h"
#include "mail-storage-private.h"
#include "sbx-db.h"
#include "sqlbox-events.h"

struct sqlbox_events {
	unsigned int refcount;
	struct event *event;
	/* the transaction in progress, and its write lock's wait */
	struct event *tx_event;
	struct event *lock_event;
};

/* The storage class's category has the same name and parent: Dovecot
   shares one category between identical definitions. */
static struct event_category event_category_sqlbox = {
	.name = "sqlbox",
	.parent = &event_category_storage,
};

static const char *sqlbox_events_error_name(enum sbx_error error)
{
	switch (error) {
	case SBX_ERR_NONE:
		return "none";
	case SBX_ERR_NOTFOUND:
		return "notfound";
	case SBX_ERR_EXISTS:
		return "exists";
	case SBX_ERR_BUSY:
		return "busy";
	case SBX_ERR_NOQUOTA:
		return "noquota";
	case SBX_ERR_NOSPACE:
		return "nospace";
	case SBX_ERR_LIMIT:
		return "limit";
	case SBX_ERR_INVALID:
		return "invalid";
	case SBX_ERR_PERM:
		return "perm";
	case SBX_ERR_CORRUPT:
		return "corrupt";
	case SBX_ERR_IO:
		return "io";
	case SBX_ERR_NOMEM:
		return "nomem";
	case SBX_ERR_INTERNAL:
		break;
	}
	return "internal";
}

static const char *sqlbox_events_result_name(enum sbx_tx_result result)
{
	switch (result) {
	case SBX_TX_RESULT_COMMIT:
		return "commit";
	case SBX_TX_RESULT_ROLLBACK:
		return "rollback";
	case SBX_TX_RESULT_BEGIN_FAILED:
		break;
	}
	return "begin_failed";
}

static struct event *sqlbox_events_new(struct sqlbox_events *evs,
				       const char *name)
{
	struct event *event = event_create(evs->event);

	event_set_name(event, name);
	return event;
}

/* The event made in advance (*pending), or a new one. */
static struct event *sqlbox_events_take(struct sqlbox_events *evs,
					struct event **pending,
					const char *name)
{
	struct event *event = *pending;

	*pending = NULL;
	return event != NULL ? event : sqlbox_events_new(evs, name);
}

static void sqlbox_events_tx_begin(struct sqlbox_events *evs, bool is_write)
{
	event_unref(&evs->tx_event);
	event_unref(&evs->lock_event);
	evs->tx_event = sqlbox_events_new(evs, "sqlbox_transaction_finished");
	if (is_write)
		evs->lock_event = sqlbox_events_new(evs, "sqlbox_lock_waited");
}

static void sqlbox_events_lock_waited(struct sqlbox_events *evs,
				      const struct sbx_db_event *ev)
{
	struct event *event;
	const char *result = ev->error == SBX_ERR_NONE ? "acquired" : "timeout";

	event = sqlbox_events_take(evs, &evs->lock_event,
				   "sqlbox_lock_waited");
	event_add_str(event, "result", result);
	event_add_int(event, "lock_wait_usecs", (intmax_t)ev->duration_usecs);
	e_debug(event, "sqlbox: waited %llu ms for the write lock (%s)",
		(unsigned long long)(ev->duration_usecs / 1000), result);
	event_unref(&event);
}

static void sqlbox_events_tx_finished(struct sqlbox_events *evs,
				      const struct sbx_db_event *ev)
{
	struct event *event;
	const char *kind = ev->is_write ? "write" : "read";
	const char *result = sqlbox_events_result_name(ev->result);

	event = sqlbox_events_take(evs, &evs->tx_event,
				   "sqlbox_transaction_finished");
	event_unref(&evs->lock_event);
	event_add_str(event, "transaction", kind);
	event_add_str(event, "result", result);
	if (ev->result != SBX_TX_RESULT_COMMIT) {
		event_add_str(event, "error",
			      sqlbox_events_error_name(ev->error));
	}
	event_add_int(event, "lock_wait_usecs", (intmax_t)ev->lock_wait_usecs);
	event_add_int(event, "pages_written", (intmax_t)ev->pages_written);
	event_add_int(event, "bytes_written", (intmax_t)ev->bytes_written);
	e_debug(event, "sqlbox: %s transaction %s in %llu us "
		"(%llu bytes written)", kind, result,
		(unsigned long long)ev->duration_usecs,
		(unsigned long long)ev->bytes_written);
	event_unref(&event);
}

static void sqlbox_events_purge_finished(struct sqlbox_events *evs,
					 const struct sbx_db_event *ev)
{
	struct event *event;

	event = sqlbox_events_new(evs, "sqlbox_purge_finished");
	event_add_int(event, "bodies_freed", (intmax_t)ev->bodies_freed);
	event_add_int(event, "tombstones_pruned",
		      (intmax_t)ev->tombstones_pruned);
	event_add_int(event, "bytes_reclaimed", (intmax_t)ev->bytes_reclaimed);
	e_debug(event, "sqlbox: purge freed %llu bodies, pruned %llu "
		"tombstones, reclaimed %llu bytes",
		(unsigned long long)ev->bodies_freed,
		(unsigned long long)ev->tombstones_pruned,
		(unsigned long long)ev->bytes_reclaimed);
	event_unref(&event);
}

static void sqlbox_events_observe(void *context,
				  const struct sbx_db_event *ev)
{
	struct sqlbox_events *evs = context;

	switch (ev->kind) {
	case SBX_DB_EVENT_TX_BEGIN:
		sqlbox_events_tx_begin(evs, ev->is_write);
		break;
	case SBX_DB_EVENT_LOCK_WAITED:
		sqlbox_events_lock_waited(evs, ev);
		break;
	case SBX_DB_EVENT_TX_FINISHED:
		sqlbox_events_tx_finished(evs, ev);
		break;
	case SBX_DB_EVENT_PURGE_FINISHED:
		sqlbox_events_purge_finished(evs, ev);
		break;
	}
}

void sqlbox_events_attach(struct sbx_db *db, struct event *parent)
{
	sbx_db_observer_func *func;
	struct sqlbox_events *evs;
	void *context;

	sbx_db_get_observer(db, &func, &context);
	if (func == sqlbox_events_observe) {
		evs = context;
		evs->refcount++;
		return;
	}
	if (func != NULL)
		return;
	evs = i_new(struct sqlbox_events, 1);
	evs->refcount = 1;
	evs->event = event_create(parent);
	event_add_category(evs->event, &event_category_sqlbox);
	sbx_db_set_observer(db, sqlbox_events_observe, evs);
}

void sqlbox_events_detach(struct sbx_db *db)
{
	sbx_db_observer_func *func;
	struct sqlbox_events *evs;
	void *context;

	sbx_db_get_observer(db, &func, &context);
	if (func != sqlbox_events_observe)
		return;
	evs = context;
	i_assert(evs->refcount > 0);
	if (--evs->refcount > 0)
		return;
	sbx_db_set_observer(db, NULL, NULL);
	event_unref(&evs->tx_event);
	event_unref(&evs->lock_event);
	event_unref(&evs->event);
	i_free(evs);
}
