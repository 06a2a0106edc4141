# SPDX-License-Identifier: MIT
"""sqlbox's Dovecot events, counted by the stats service's `metric`
blocks PLUGIN.md gives (Dovecot 2.3's `filter =` syntax) and read back with `doveadm stats
dump`, as an operator's metrics and the stats exporter would see them.

Each write an IMAP session makes (APPEND, STORE) is one SQL write
transaction: sqlbox_transaction_finished with transaction=write
result=commit. A lock held by someone else until the lock timeout gives a
sqlbox_lock_waited with result=timeout and a transaction that never began.
`doveadm sqlbox purge` sends sqlbox_purge_finished.

The events reach the stats service over its socket after the command
answered, so the counts are polled until they arrive (with a bound); no
test depends on how long anything takes."""

import re
import time

import pytest

from harness import linked_doveadm_module, REPO, append, check, sqlbox_only

# The metric blocks PLUGIN.md gives operators, exactly as written there.
METRIC_BLOCKS = re.findall(r"^```\n(metric sqlbox_transactions .*?)^```",
                           (REPO / "PLUGIN.md").read_text(), re.M | re.S)
assert len(METRIC_BLOCKS) == 1, "PLUGIN.md's metric example is missing"
METRICS_CONF = METRIC_BLOCKS[0] + """
plugin {
  # the lock test waits this long for a lock it never gets
  sqlbox_lock_timeout = 1s
}
"""
DOVECOT_OPTIONS = {"extra_conf": METRICS_CONF}



@pytest.fixture(autouse=True)
def _sqlbox(dovecot):
    sqlbox_only(dovecot)


def stats(dovecot):
    """{(metric, field): (count, sum)} from `doveadm stats dump`."""
    out = dovecot.doveadm("stats", "dump")
    lines = out.splitlines()
    assert lines and lines[0].startswith("metric_name\tfield\tcount\tsum"), \
        out
    result = {}
    for line in lines[1:]:
        cols = line.split("\t")
        result[(cols[0], cols[1])] = (int(cols[2]), int(cols[3]))
    return result


def count(snapshot, metric, field="duration"):
    return snapshot.get((metric, field), (0, 0))[0]


def total(snapshot, metric, field):
    return snapshot.get((metric, field), (0, 0))[1]


def wait_for(dovecot, predicate, timeout=30.0):
    """Polls the stats until predicate(snapshot) holds; returns the last
    snapshot either way."""
    deadline = time.monotonic() + timeout
    while True:
        snap = stats(dovecot)
        if predicate(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.1)


def test_metric_filters_are_accepted(dovecot):
    snap = stats(dovecot)
    for metric in ("sqlbox_transactions", "sqlbox_written",
                   "sqlbox_lock_waits", "sqlbox_purges"):
        assert (metric, "duration") in snap, snap


def test_every_write_transaction_is_counted(dovecot, user):
    c = dovecot.imap(user)
    check(c.select("INBOX"), "SELECT")
    c.logout()
    before = stats(dovecot)
    body = b"x" * 76 + b"\r\n"
    message = b"Subject: counted\r\n\r\n" + body * 400     # 32 000 bytes
    appends, stores = 3, 4
    c = dovecot.imap(user)
    for _ in range(appends):
        append(c, "INBOX", message)
    check(c.select("INBOX"), "SELECT")
    for i in range(stores):
        check(c.store("1:*", "+FLAGS" if i % 2 == 0 else "-FLAGS",
                      "(\\Flagged)"), "STORE")
    c.logout()
    writes = appends + stores

    def enough(snap):
        return (count(snap, "sqlbox_transactions_write_commit") >=
                count(before, "sqlbox_transactions_write_commit") + writes)

    after = wait_for(dovecot, enough)
    assert enough(after), (before, after)
    assert (count(after, "sqlbox_written") -
            count(before, "sqlbox_written")) >= writes
    # the appended bodies were written, in whole pages
    written = (total(after, "sqlbox_written", "bytes_written") -
               total(before, "sqlbox_written", "bytes_written"))
    assert written >= appends * len(message), written
    assert (total(after, "sqlbox_written", "pages_written") -
            total(before, "sqlbox_written", "pages_written")) > 0
    # every transaction ended: none failed to begin or rolled back here
    assert (count(after, "sqlbox_transactions_write_rollback") ==
            count(before, "sqlbox_transactions_write_rollback"))
    assert (count(after, "sqlbox_transactions_write_begin_failed") ==
            count(before, "sqlbox_transactions_write_begin_failed"))
    # SELECT and FETCH read through read transactions
    assert count(after, "sqlbox_transactions_read_commit") > \
        count(before, "sqlbox_transactions_read_commit")


def test_lock_timeout_is_counted(dovecot, user):
    c = dovecot.imap(user)
    check(c.select("INBOX"), "SELECT")        # the lock file exists now
    before = stats(dovecot)
    with dovecot.hold_write_lock(user):
        typ, data = c.append("INBOX", None, None,
                             b"Subject: refused\r\n\r\nlater\r\n")
    assert typ == "NO" and b"[INUSE]" in data[0], (typ, data)
    c.logout()

    def seen(snap):
        return (count(snap, "sqlbox_lock_waits_timeout") >
                count(before, "sqlbox_lock_waits_timeout") and
                count(snap, "sqlbox_transactions_write_begin_failed") >
                count(before, "sqlbox_transactions_write_begin_failed"))

    after = wait_for(dovecot, seen)
    assert seen(after), (before, after)
    assert dovecot.sql(user, "SELECT count(*) FROM messages")[0][0] == 0


@pytest.fixture
def doveadm_module(dovecot):
    with linked_doveadm_module():
        yield


def test_purge_is_counted(dovecot, user, doveadm_module):
    c = dovecot.imap(user)
    for i in range(3):
        append(c, "INBOX", b"Subject: gone %d\r\n\r\n%s\r\n" % (i, b"y" * i))
    check(c.select("INBOX"), "SELECT")
    check(c.store("1:*", "+FLAGS", "(\\Deleted)"), "STORE")
    check(c.expunge(), "EXPUNGE")
    c.logout()
    before = stats(dovecot)
    out = dovecot.doveadm("sqlbox", "purge", "-u", user)
    printed = dict(kv.split("=", 1) for kv in out.split())

    def seen(snap):
        return count(snap, "sqlbox_purges") > count(before, "sqlbox_purges")

    after = wait_for(dovecot, seen)
    assert seen(after), (before, after)
    assert count(after, "sqlbox_purges") == count(before, "sqlbox_purges") + 1
    assert (total(after, "sqlbox_purges", "bytes_reclaimed") -
            total(before, "sqlbox_purges", "bytes_reclaimed") ==
            int(printed["bytes_reclaimed"]))
    assert (total(after, "sqlbox_purges", "bodies_freed") -
            total(before, "sqlbox_purges", "bodies_freed") ==
            int(printed["bodies_freed"]))
