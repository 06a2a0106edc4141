/* SPDX-License-Identifier: MIT */
/* sbx_db_set_observer(): what a transaction, a lock wait and a purge
   report, in what order. */
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sbx-private.h"
#include "sbx-admin.h"
#include "sbx-mailbox.h"
#include "fixture.h"

TestSuite(observer, .init = fixture_db_setup, .fini = fixture_db_teardown);

#define MAX_EVENTS 64

struct recorder {
	struct sbx_db_event events[MAX_EVENTS];
	unsigned int count;
};

static void record(void *context, const struct sbx_db_event *event)
{
	struct recorder *rec = context;

	cr_assert_lt(rec->count, MAX_EVENTS);
	rec->events[rec->count++] = *event;
}

static struct recorder *observe(void)
{
	static struct recorder rec;

	memset(&rec, 0, sizeof(rec));
	sbx_db_set_observer(fixture_db, record, &rec);
	return &rec;
}

/* The index of the first event of kind at or after from, or -1. */
static int find(const struct recorder *rec, unsigned int from,
		enum sbx_db_event_kind kind)
{
	unsigned int i;

	for (i = from; i < rec->count; i++) {
		if (rec->events[i].kind == kind)
			return (int)i;
	}
	return -1;
}

Test(observer, get_returns_what_was_set_and_null_removes_it)
{
	sbx_db_observer_func *func;
	void *context;
	int x;

	sbx_db_get_observer(fixture_db, &func, &context);
	cr_assert_null(func);
	sbx_db_set_observer(fixture_db, record, &x);
	sbx_db_get_observer(fixture_db, &func, &context);
	cr_assert_eq(func, record);
	cr_assert_eq(context, &x);
	sbx_db_set_observer(fixture_db, NULL, &x);
	sbx_db_get_observer(fixture_db, &func, &context);
	cr_assert_null(func);
	cr_assert_null(context);
	/* no observer: transactions work as before */
	fixture_begin();
	fixture_commit();
}

Test(observer, write_commit_reports_begin_then_finish_with_pages)
{
	struct recorder *rec;
	const struct sbx_db_event *ev;
	int64_t box = fixture_mailbox("INBOX");
	char text[20000];

	rec = observe();
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	(void)fixture_append_text(box, text, 0);

	cr_assert_eq(rec->count, 2);
	cr_assert_eq(rec->events[0].kind, SBX_DB_EVENT_TX_BEGIN);
	cr_assert(rec->events[0].is_write);
	ev = &rec->events[1];
	cr_assert_eq(ev->kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert(ev->is_write);
	cr_assert_eq(ev->result, SBX_TX_RESULT_COMMIT);
	cr_assert_eq(ev->error, SBX_ERR_NONE);
	/* 20 kB of body cannot fit in fewer than five 4 KiB pages */
	cr_assert_geq(ev->pages_written, 5, "%llu pages",
		      (unsigned long long)ev->pages_written);
	cr_assert_eq(ev->bytes_written, ev->pages_written *
		     (uint64_t)fixture_sql_int("PRAGMA page_size"));
	cr_assert_geq(ev->duration_usecs, ev->lock_wait_usecs);
}

Test(observer, read_transaction_writes_nothing)
{
	struct recorder *rec;

	rec = observe();
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_READ), 0);
	cr_assert_eq(sbx_tx_commit(fixture_db), 0);
	cr_assert_eq(rec->count, 2);
	cr_assert_eq(rec->events[0].kind, SBX_DB_EVENT_TX_BEGIN);
	cr_assert_not(rec->events[0].is_write);
	cr_assert_eq(rec->events[1].kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert_not(rec->events[1].is_write);
	cr_assert_eq(rec->events[1].result, SBX_TX_RESULT_COMMIT);
	cr_assert_eq(rec->events[1].pages_written, 0);
	cr_assert_eq(rec->events[1].bytes_written, 0);
}

Test(observer, rollback_reports_rollback_and_no_pages)
{
	struct recorder *rec;
	int64_t box = fixture_mailbox("INBOX");

	rec = observe();
	fixture_begin();
	(void)fixture_append(box, fixture_body("abc\r\n", 5, 1), 0);
	sbx_tx_rollback(fixture_db);
	cr_assert_eq(rec->count, 2);
	cr_assert_eq(rec->events[1].kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert(rec->events[1].is_write);
	cr_assert_eq(rec->events[1].result, SBX_TX_RESULT_ROLLBACK);
	cr_assert_eq(rec->events[1].pages_written, 0);
	cr_assert_eq(fixture_sql_int("SELECT count(*) FROM messages"), 0);
}

/* Another open file description holds the lock file: our flock fails. */
static int hold_lock_here(void)
{
	int fd = open(fixture_file("mail.sqlite.lock"), O_RDWR);

	cr_assert_geq(fd, 0);
	cr_assert_eq(flock(fd, LOCK_EX), 0);
	return fd;
}

Test(observer, lock_timeout_reports_the_wait_and_a_failed_begin)
{
	struct recorder *rec;
	const struct sbx_db_event *ev;
	int fd, i;

	fd = hold_lock_here();
	rec = observe();
	cr_assert_eq(sbx_tx_begin(fixture_db, SBX_TX_WRITE), -1);
	close(fd);

	cr_assert_eq(rec->count, 3);
	cr_assert_eq(rec->events[0].kind, SBX_DB_EVENT_TX_BEGIN);
	i = find(rec, 0, SBX_DB_EVENT_LOCK_WAITED);
	cr_assert_eq(i, 1);
	ev = &rec->events[i];
	cr_assert_eq(ev->error, SBX_ERR_BUSY);
	/* it slept at least once before giving up */
	cr_assert_gt(ev->duration_usecs, 0);
	ev = &rec->events[2];
	cr_assert_eq(ev->kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert_eq(ev->result, SBX_TX_RESULT_BEGIN_FAILED);
	cr_assert_eq(ev->error, SBX_ERR_BUSY);
	cr_assert_geq(ev->lock_wait_usecs, rec->events[1].duration_usecs);
	/* the failed begin left nothing behind */
	fixture_begin();
	fixture_commit();
}

Test(observer, nowait_try_is_not_a_lock_wait)
{
	struct recorder *rec;
	int fd;

	fd = hold_lock_here();
	rec = observe();
	cr_assert_eq(sbx_tx_begin_nowait(fixture_db), -1);
	close(fd);
	cr_assert_eq(rec->count, 2);
	cr_assert_eq(find(rec, 0, SBX_DB_EVENT_LOCK_WAITED), -1);
	cr_assert_eq(rec->events[1].kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert_eq(rec->events[1].result, SBX_TX_RESULT_BEGIN_FAILED);
	cr_assert_eq(rec->events[1].error, SBX_ERR_BUSY);
}

Test(observer, a_wait_that_gets_the_lock_is_reported_once)
{
	struct sbx_db_settings set = fixture_settings();
	struct recorder *rec;
	int ready[2], status, i;
	pid_t pid;
	char c;

	/* a timeout no busy machine reaches: the child lets go first */
	sbx_db_close(&fixture_db);
	set.lock_timeout_msecs = 120000;
	cr_assert_eq(sbx_db_open(fixture_path, &set, &fixture_db), 0);
	cr_assert_eq(pipe(ready), 0);
	pid = fixture_fork();
	if (pid == 0) {
		int fd = open(fixture_file("mail.sqlite.lock"), O_RDWR);
		struct timespec ts = { 0, 100 * 1000000L };

		if (fd < 0 || flock(fd, LOCK_EX) < 0 ||
		    write(ready[1], "r", 1) != 1)
			_exit(1);
		(void)nanosleep(&ts, NULL);
		_exit(0);	/* the lock goes with the process */
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "child holds the lock");
	close(ready[0]);
	rec = observe();
	fixture_begin();
	fixture_commit();
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	cr_assert_eq(rec->count, 3);
	i = find(rec, 0, SBX_DB_EVENT_LOCK_WAITED);
	cr_assert_eq(i, 1);
	cr_assert_eq(rec->events[i].error, SBX_ERR_NONE);
	cr_assert_gt(rec->events[i].duration_usecs, 0);
	cr_assert_eq(rec->events[2].kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert_eq(rec->events[2].result, SBX_TX_RESULT_COMMIT);
	cr_assert_geq(rec->events[2].lock_wait_usecs,
		      rec->events[i].duration_usecs);
	cr_assert_geq(rec->events[2].duration_usecs,
		      rec->events[2].lock_wait_usecs);
}

Test(observer, purge_reports_what_it_freed)
{
	struct sbx_purge_result res;
	struct recorder *rec;
	int i;

	fixture_begin();
	(void)fixture_body("orphan one\r\n", 12, 1);
	(void)fixture_body("orphan two\r\n", 12, 1);
	fixture_commit();

	rec = observe();
	cr_assert_eq(sbx_admin_purge(fixture_db, (int64_t)time(NULL) + 1,
				     (int64_t)time(NULL) + 1,
				     &res), 0, "%s", fixture_error());
	cr_assert_eq(res.bodies_freed, 2);
	i = find(rec, 0, SBX_DB_EVENT_PURGE_FINISHED);
	cr_assert_eq(i, (int)rec->count - 1, "purge is reported last");
	cr_assert_eq(rec->events[i].bodies_freed, 2);
	cr_assert_eq(rec->events[i].tombstones_pruned, res.tombstones_pruned);
	cr_assert_eq(rec->events[i].bytes_reclaimed,
		     res.bytes_before > res.bytes_after ?
		     res.bytes_before - res.bytes_after : 0);
	/* its write transaction was reported before it */
	cr_assert_geq(find(rec, 0, SBX_DB_EVENT_TX_FINISHED), 0);
}

Test(observer, close_with_an_open_transaction_reports_its_rollback)
{
	struct recorder *rec;

	rec = observe();
	fixture_begin();
	sbx_db_close(&fixture_db);
	cr_assert_eq(rec->count, 2);
	cr_assert_eq(rec->events[1].kind, SBX_DB_EVENT_TX_FINISHED);
	cr_assert_eq(rec->events[1].result, SBX_TX_RESULT_ROLLBACK);
}
