# SPDX-License-Identifier: MIT
"""doveadm sqlbox check, purge, backup, restore and stats (DESIGN.md 7).

doveadm loads its plugins only from its compiled-in module directory, so
the module is linked there for the duration of this module (root only, as
in CI; `make install` puts it there for operators). Faults are planted the
way an operator's hand-written SQL would make them: holding the user's
lock file, as PLUGIN.md says."""

import os
import subprocess
import threading

import pytest

import corpus
from harness import linked_doveadm_module, append, check, mbox

EX_DATAERR = 65


@pytest.fixture(scope="module", autouse=True)
def doveadm_module(dovecot):
    if not dovecot.is_sqlbox:
        pytest.skip("sqlbox-only (backend %s)" % dovecot.backend)
    with linked_doveadm_module():
        yield


def sqlbox(dovecot, user, *args, check=True):
    p = subprocess.run(["doveadm", "-c", str(dovecot.conf), "sqlbox"] +
                       list(args[:1]) + ["-u", user] + list(args[1:]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    if check:
        assert p.returncode == 0, (args, p.returncode, p.stderr)
    return p


def fields(p):
    return dict(kv.split("=", 1) for kv in p.stdout.split())


def fill(dovecot, user, folder, count, size):
    c = dovecot.imap(user)
    if folder != "INBOX":
        check(c.create(mbox(folder)), "CREATE")
    for i in range(count):
        body = (b"%d " % i) + b"x" * size
        append(c, folder, b"Subject: m%d\r\nMessage-ID: <%d@t>\r\n\r\n%s\r\n"
               % (i, i, body))
    c.logout()


def test_clean_database_passes(dovecot, user):
    fill(dovecot, user, "INBOX", 5, 100)
    sqlbox(dovecot, user, "check")
    sqlbox(dovecot, user, "check", "-f")


PLANTED = [
    ("a counter off",
     "UPDATE mailboxes SET messages = messages + 5 WHERE name = 'INBOX'"),
    ("an orphan body",
     "INSERT INTO bodies(refcount, physical_size, virtual_size, created) "
     "VALUES (1, 0, 0, 0)"),
    ("a refcount off",
     "UPDATE bodies SET refcount = refcount + 3 WHERE id = "
     "(SELECT min(body_id) FROM messages)"),
    ("a row above UIDNEXT",
     "UPDATE mailboxes SET uidnext = 2 WHERE name = 'INBOX'"),
]


@pytest.mark.parametrize("what,sql", PLANTED, ids=[p[0] for p in PLANTED])
def test_check_finds_and_repairs(dovecot, user, what, sql):
    fill(dovecot, user, "INBOX", 5, 100)
    dovecot.operator_sql(user, sql)
    p = sqlbox(dovecot, user, "check", check=False)
    assert p.returncode == EX_DATAERR, (what, p.returncode, p.stdout)
    assert p.stdout.strip(), what
    sqlbox(dovecot, user, "check", "-r")
    sqlbox(dovecot, user, "check")
    # nothing readable changed: the five messages are all there
    c = dovecot.imap(user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == 5
    typ, data = c.uid("SEARCH", "ALL")
    assert data[0].split() == [b"1", b"2", b"3", b"4", b"5"]


def test_purge_after_expunging_half_gives_space_back(dovecot, user):
    fill(dovecot, user, "INBOX", 400, 8000)
    c = dovecot.imap(user)
    check(c.select("INBOX"), "SELECT")
    check(c.store("1:200", "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
    check(c.expunge(), "EXPUNGE")
    c.logout()
    # tombstones are kept for sqlbox_tombstone_keep (90 days): purge frees
    # the bodies' pages; the file shrinks by the incremental vacuum
    res = fields(sqlbox(dovecot, user, "purge"))
    before, after = int(res["bytes_before"]), int(res["bytes_after"])
    assert after <= before * 0.6, res
    assert int(res["bytes_reclaimed"]) == before - after
    sqlbox(dovecot, user, "check", "-f")
    st = fields(sqlbox(dovecot, user, "stats"))
    assert st["messages"] == "200"
    assert int(st["last_purge"]) > 0
    assert int(st["wal_bytes"]) == 0, st


def test_backup_while_clients_write_and_restore(dovecot, user):
    fill(dovecot, user, "INBOX", 20, 200)
    acked = []
    stop = threading.Event()
    errors = []

    def writer(n):
        try:
            c = dovecot.imap(user)
            check(c.select("INBOX"), "SELECT")
            i = 0
            while not stop.is_set() and i < 200:
                typ, data = c.append(
                    "INBOX", None, None,
                    b"Subject: w%d-%d\r\n\r\nbody\r\n" % (n, i))
                assert typ == "OK", data
                acked.append((n, i))
                c.store("1", "FLAGS.SILENT", "(\\Seen)" if i % 2 else "()")
                i += 1
            c.logout()
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 20:
        pass
    before_backup = list(acked)
    dest = os.path.join(str(dovecot.user_dir(user)), "backup.sqlite")
    sqlbox(dovecot, user, "backup", dest)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    os.chown(dest, 65534, 65534)

    # the copy opens, passes check, and holds everything acknowledged
    # before the backup started
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                        "--clear-groups", "sqlite3", "-readonly", dest,
                        "PRAGMA integrity_check; SELECT count(*) FROM "
                        "messages; SELECT count(*) FROM mailboxes m WHERE "
                        "messages != (SELECT count(*) FROM messages x "
                        "WHERE x.mailbox_id = m.id)"],
                       stdout=subprocess.PIPE, text=True, check=True)
    ok, count, bad = p.stdout.split()
    assert ok == "ok" and bad == "0"
    assert int(count) >= 20 + len(before_backup)

    # restore: refused without -f over existing mail, then done with -f
    p = sqlbox(dovecot, user, "restore", dest, check=False)
    assert p.returncode != 0 and "without -f" in p.stderr
    sqlbox(dovecot, user, "restore", "-f", dest)
    sqlbox(dovecot, user, "check")
    st = fields(sqlbox(dovecot, user, "stats"))
    assert int(st["messages"]) == int(count)


def test_wal_stays_bounded_under_delivery(dovecot, user):
    """The automatic checkpoint (inside each commit, under the lock) and
    journal_size_limit keep the WAL small although checkpoint-on-close is
    off (DESIGN.md 4)."""
    n = 5000 if os.environ.get("SQLBOX_SLOW") == "1" else 1500
    largest = 0
    msg = corpus.by_name("plain-medium")
    for i in range(n):
        res = dovecot.lmtp_deliver(user, msg)
        assert res[user][0] == 250, res
        if i % 100 == 99:
            wal = str(dovecot.db_path(user)) + "-wal"
            largest = max(largest, os.path.getsize(wal))
    # 256 pages of 4 KiB between checkpoints, plus the last transaction;
    # a larger file is cut back to 1 MiB when the WAL restarts
    assert largest < 3 * 1024 * 1024, largest


def test_large_transaction_leaves_no_large_wal(dovecot, user):
    """A restarted WAL keeps its frames until the next commit writes over
    them, and every process that opens the database meanwhile reads them
    all (recovery). So the checkpoint after a transaction larger than
    4 MiB truncates the WAL: one 6 MB delivery leaves none behind."""
    body = b"x" * 76 + b"\r\n"
    msg = (b"From: a@example.org\r\nSubject: large\r\n\r\n" +
           body * (6 * 1024 * 1024 // len(body)))
    res = dovecot.lmtp_deliver(user, msg)
    assert res[user][0] == 250, res
    wal = str(dovecot.db_path(user)) + "-wal"
    assert os.path.getsize(wal) < 1024 * 1024, os.path.getsize(wal)
