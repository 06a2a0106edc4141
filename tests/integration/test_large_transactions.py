# SPDX-License-Identifier: MIT
"""Transactions that save many mails: doveadm import of a large folder and
a MULTIAPPEND of many literals.

Their bodies are written ahead of the commit in batches of 4 MiB, each in
a short transaction of its own (plugin/sqlbox-save.c), so what one
transaction holds (memory, spool files) stays bounded however many mails
it saves. Such a body has no reference until the commit: a transaction
rolled back deletes the bodies it wrote, and purge spares those of a save
still in progress. A batch that can't be written (the database locked)
fails no save: the commit stores those mails. Found measuring `doveadm import`: a transaction held
every spooled mail until its commit, 296 MB for a 355 MB folder, and one
open spool file per mail over 128 KB ("Too many open files" with a low
descriptor limit)."""

import os
import resource
import subprocess
import sys
import time

import pytest

import dsyncutil as du
from harness import literal_plus, memory_is_measurable, sqlbox_only
from invariants import check_database, db_state

DOVECOT_OPTIONS = {"extra_conf": """
plugin {
  sqlbox_max_message_size = 3M
  sqlbox_lock_timeout = 1s
}
"""}


def message(n, size):
    """A distinct message of about size bytes (no two share a body)."""
    head = (b"From: a@example.org\r\nSubject: large %d\r\n"
            b"Message-ID: <large-%d@sqlbox.test>\r\n\r\n" % (n, n))
    line = b"%08d " % n + b"y" * 68 + b"\r\n"
    return head + line * (size // len(line))


def write_maildir(path, messages):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    for i, raw in enumerate(messages):
        name = os.path.join(path, "cur", "%d.M%dP1.sqlbox:2,S" % (i, i))
        with open(name, "wb") as f:
            f.write(raw.replace(b"\r\n", b"\n"))
    os.system("chown -R %d:%d %s" % (65534, 65534, path)
              if os.getuid() == 0 else "true")


# Runs argv[2:] with at most argv[1] descriptors and prints its peak RSS
# (KB). A child of its own: a forked child's peak counts the memory of the
# process it was forked from (here pytest's), exec or not.
_LIMITED = (
    "import os, resource, sys\n"
    "n = int(sys.argv[1])\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
    "    fd = os.open(os.devnull, os.O_WRONLY)\n"
    "    os.dup2(fd, 1)\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, ru = os.wait4(pid, 0)\n"
    "print(ru.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_limited(cmd, nofile):
    """Runs cmd with at most nofile descriptors; returns (returncode,
    stderr, its peak RSS in MB)."""
    p = subprocess.run([sys.executable, "-c", _LIMITED, str(nofile)] + cmd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=600)
    return (p.returncode, p.stderr.decode(errors="replace"),
            int(p.stdout) / 1024)


def test_import_holds_a_bounded_share_of_a_large_folder(dovecot, user):
    """70 MB in one import transaction: 250 mails of 150 KB (spooled to
    files) and 600 of 50 KB (spooled in memory). With 96 descriptors and
    no batches the files alone would exceed the limit; with batches the
    import's peak memory stays well below the folder's size."""
    sqlbox_only(dovecot)
    mails = [message(i, 150 * 1024) for i in range(250)] + \
        [message(250 + i, 50 * 1024) for i in range(600)]
    total = sum(len(m) for m in mails)
    src = dovecot.user_dir(user) / "big"
    write_maildir(str(src), mails)
    cmd = ["doveadm", "-c", str(dovecot.conf), "import", "-u", user, "-s",
           du.maildir_location(src), "Imported", "ALL"]
    code, err, rss = run_limited(cmd, 96)
    assert code == 0, err
    assert "Too many open files" not in err, err
    if memory_is_measurable():
        assert rss < total / 1e6 * 0.8, \
            "peak RSS %.0f MB for a %.0f MB import" % (rss, total / 1e6)

    rows = dovecot.sql(user, "SELECT count(*), sum(y.physical_size) "
                             "FROM messages m JOIN bodies y "
                             "ON y.id = m.body_id JOIN mailboxes b "
                             "ON b.id = m.mailbox_id "
                             "WHERE b.name = 'Imported/INBOX'")
    assert rows == [[len(mails), total]]
    st = db_state(dovecot, user)
    assert check_database(st) == []
    # every mail there, each with its own bytes
    got = dovecot.sql(user, "SELECT y.physical_size, "
                            "CAST(substr(c.data, 1, 80) AS TEXT) "
                            "FROM messages m "
                            "JOIN bodies y ON y.id = m.body_id "
                            "JOIN body_chunks c ON c.body_id = m.body_id "
                            "AND c.seq = 0")
    assert sorted(tuple(r) for r in got) == \
        sorted((len(m), m[:80].decode()) for m in mails)


def test_import_of_duplicates_shares_their_bodies(dovecot, user):
    """Bodies written ahead of the commit are not yet shared; the commit
    shares one identical body (stored before, or earlier in the same
    transaction) and deletes the copy it wrote."""
    sqlbox_only(dovecot)
    one = [message(i, 100 * 1024) for i in range(60)]
    src = dovecot.user_dir(user) / "dups"
    write_maildir(str(src), one + one)
    loc = du.maildir_location(src)
    du.run(dovecot, "import", "-u", user, "-s", loc, "A", "ALL")
    du.run(dovecot, "import", "-u", user, "-s", loc, "B", "ALL")
    rows = dovecot.sql(user, "SELECT count(*), sum(refcount) FROM bodies")
    assert rows == [[60, 240]]
    assert check_database(db_state(dovecot, user)) == []


def test_multiappend_rolled_back_deletes_the_bodies_it_wrote(dovecot,
                                                            user):
    """A MULTIAPPEND whose last literal is refused (over
    sqlbox_max_message_size) stores nothing, after its first mails'
    bodies were written ahead of the commit."""
    sqlbox_only(dovecot)
    raw = dovecot.raw_imap(user)
    mails = [message(i, 2 * 1024 * 1024) for i in range(4)]
    too_large = message(99, 4 * 1024 * 1024)
    st, text, _ = raw.command(b"APPEND INBOX " + b" ".join(
        literal_plus(m) for m in mails + [too_large]))
    assert st == "NO", text
    assert "LIMIT" in text, text
    raw.close()
    assert dovecot.sql(user, "SELECT count(*) FROM messages") == [[0]]
    assert dovecot.sql(user, "SELECT count(*) FROM bodies") == [[0]]
    assert dovecot.sql(user, "SELECT count(*) FROM body_chunks") == [[0]]
    assert dovecot.sql(user, "SELECT count(*) FROM body_parsed") == [[0]]
    # the same MULTIAPPEND without the refused one keeps all four
    raw = dovecot.raw_imap(user)
    st, text, _ = raw.command(b"APPEND INBOX " + b" ".join(
        literal_plus(m) for m in mails))
    assert st == "OK", text
    raw.close()
    assert dovecot.sql(user, "SELECT count(*), sum(refcount) "
                             "FROM bodies") == [[4, 4]]
    assert check_database(db_state(dovecot, user)) == []


def test_a_batch_that_finds_the_database_locked_waits_for_the_commit(
        dovecot, user):
    """An operator holds the write lock past sqlbox_lock_timeout while a
    MULTIAPPEND passes 4 MiB: writing the batch fails, which fails no save.
    The spools are kept, a warning says why, and the commit stores every
    mail once the lock is free. Synchronizing literals order it: the
    server asks for the next literal only after the previous mail's
    save_finish, batch attempt included."""
    sqlbox_only(dovecot)
    raw = dovecot.raw_imap(user)
    st, text, _ = raw.command(b"APPEND INBOX " + literal_plus(message(0, 100)))
    assert st == "OK", text     # the lock file exists from here on
    mails = [message(i, 1536 * 1024) for i in range(1, 4)] + \
        [message(4, 100)]
    since = dovecot.log_size()
    tag = raw.next_tag()

    def wait_continuation():
        line = raw.read_response()
        assert line.startswith(b"+"), line

    with dovecot.hold_write_lock(user):
        raw.send(tag + b" APPEND INBOX {%d}\r\n" % len(mails[0]))
        for i in range(3):
            wait_continuation()
            raw.send(mails[i] + b" {%d}\r\n" % len(mails[i + 1]))
        wait_continuation()     # the batch gave up on the lock
        # the log process writes the warning a moment later
        deadline = time.monotonic() + 10
        while "ahead of the commit failed" not in \
                dovecot.log_text(since):
            assert time.monotonic() < deadline, dovecot.log_text(since)
            time.sleep(0.05)
    raw.send(mails[3] + b"\r\n")
    while True:
        line = raw.read_response()
        if line.startswith(tag + b" "):
            break
    assert line.startswith(tag + b" OK"), line
    raw.close()
    assert dovecot.sql(user, "SELECT count(*), sum(refcount) "
                             "FROM bodies") == [[5, 5]]
    got = dovecot.sql(user, "SELECT y.physical_size FROM messages m "
                            "JOIN bodies y ON y.id = m.body_id "
                            "ORDER BY m.uid")
    assert [r[0] for r in got] == [len(message(0, 100))] + \
        [len(m) for m in mails]
    assert check_database(db_state(dovecot, user)) == []
