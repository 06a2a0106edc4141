# SPDX-License-Identifier: MIT
"""A full disk (DESIGN.md 1.4): the user's home is a small tmpfs, mounted
in a mount namespace private to this test process (and so to the Dovecot
it starts). APPENDs fill it until one fails with a temporary error (IMAP
NO); on the disk then made exactly full, COPY fails with NO and LMTP
delivery with a 4xx; whatever was stored before stays intact and
readable. A flag change or an expunge that SQL refuses is
refused before the session's view shows it: the command answers NO and
the session goes on. Once space is freed everything works again, in the
same session."""

import ctypes
import errno
import os
import subprocess

import pytest

from harness import DovecotInstance, InstanceError, literal_plus
from invariants import check_database, compare_view, db_state, imap_view

CLONE_NEWNS = 0x00020000
DISK = "4m"
BLOCK = os.urandom(48 * 1024).hex().encode()   # 96 KiB, incompressible


def message(n):
    lines = [BLOCK[i:i + 76] for i in range(0, len(BLOCK), 76)]
    return (b"From: a@example.org\r\nSubject: fill %d\r\n\r\n" % n +
            b"\r\n".join(lines) + b"\r\n")


def private_mounts():
    """Puts this process into a mount namespace of its own (what `unshare
    -m` does), with no propagation back to the host."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        pytest.skip("unshare(CLONE_NEWNS): %s" % os.strerror(ctypes.get_errno()))
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


@pytest.fixture(scope="module")
def dovecot():
    if os.getuid() != 0:
        pytest.skip("needs root for a mount namespace and tmpfs")
    private_mounts()
    # on this machine even against a container: the small filesystem is
    # mounted in this process's namespace
    inst = DovecotInstance("sqlbox", user_pool=3, local=True)
    try:
        inst.start()
    except InstanceError as e:
        inst.close()
        pytest.fail("cannot start a sqlbox Dovecot: %s" % e, pytrace=False)
    home = inst.user_dir("user01")
    subprocess.run(["mount", "-t", "tmpfs", "-o",
                    "size=%s,mode=0700,uid=65534,gid=65534" % DISK,
                    "sbx-full", str(home)], check=True)
    yield inst
    inst.close_clients()
    if inst.running:
        inst.stop()
    subprocess.run(["umount", str(home)], check=False)
    inst.close()


def fill_up(path):
    """Writes path until the filesystem has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for size in (64 * 1024, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:60], st, text)
    return text, lines


@pytest.mark.allow_log(r"No space left on device|SQLITE_FULL|disk is full",
                       r"database or disk is full")
def test_full_disk_refuses_then_recovers(dovecot):
    user = "user01"
    # Something else on the disk that the operator can remove later.
    ballast = dovecot.user_dir(user) / "ballast"
    ballast.write_bytes(b"\0" * (2 * 1024 * 1024))
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Copies"')
    ok(raw, b'CREATE "Spare"')
    # a message waiting for EXPUNGE while the disk is full
    ok(raw, b'APPEND "Spare" (\\Deleted) ' +
       literal_plus(b"Subject: doomed\r\n\r\nx\r\n"))
    stored = 0
    answers = []
    for n in range(1, 200):
        st, text, _ = raw.command(b"APPEND INBOX " +
                                  literal_plus(message(n)))
        if st != "OK":
            answers.append((st, text))
            break
        stored += 1
    assert answers, "the disk never filled up"
    st, text = answers[0]
    # A temporary failure: NO with a code that says try again later.
    assert st == "NO", answers
    assert "[SERVERBUG]" in text or "[OVERQUOTA]" in text or \
        "[UNAVAILABLE]" in text, text
    assert stored >= 3, "the disk filled before anything was stored"

    ok(raw, b"SELECT INBOX")

    # Nothing stored before is damaged.
    _, lines = ok(raw, b"FETCH 1:* (BODY.PEEK[])")
    bodies = [x for x in lines if b" FETCH " in x]
    assert len(bodies) == stored
    for n, line in enumerate(bodies, 1):
        assert message(n) in line, n
    st_db = db_state(dovecot, user)
    assert check_database(st_db) == []
    assert len(st_db.folder("INBOX")) == stored
    assert len(st_db.folder("Copies")) == 0

    # The failed writes above leave room in the WAL that a small change
    # could still use. So the disk is made exactly full: with the
    # ballast's room the operator checkpoints the WAL into the database
    # (it is empty afterwards), and a filler file takes every byte left.
    # Any write transaction now needs a new page for the WAL.
    ballast.unlink()
    out = dovecot.sql_by_hand(user, "PRAGMA wal_checkpoint(TRUNCATE);")
    assert out.splitlines()[-1] == "0|0|0", out     # not busy, WAL empty
    filler = dovecot.user_dir(user) / "filler"
    fill_up(filler)

    # COPY needs no body copy (DESIGN.md 5) but new rows; a delivery
    # needs a body: both are refused, LMTP with a 4xx the MTA retries.
    st, text, _ = raw.command(b'COPY 1:* "Copies"')
    assert st == "NO", (st, text)
    result = dovecot.lmtp_deliver(user, message(999))
    assert 400 <= result[user][0] < 500, result
    assert len(db_state(dovecot, user).folder("Copies")) == 0

    # Now even a flag change or an expunge is refused. SQL commits before
    # the index does, so the session's view never shows the change: the
    # command answers NO (a temporary error) and the session goes on with
    # SQL's state, as after a lock timeout (test_changes_refused.py).
    before = db_state(dovecot, user)
    for command in (b"STORE 1 +FLAGS.SILENT (\\Deleted)",
                    b"STORE 1:2 +FLAGS ($Work \\Flagged)",
                    b"STORE 1:* +FLAGS.SILENT (\\Seen)",
                    b"UID STORE 1 FLAGS (\\Answered)"):
        st, text, lines = raw.command(command)
        assert (st, lines) == ("NO", []), (command, st, text, lines)
        assert text.startswith("[SERVERBUG] Internal error occurred."), text
        ok(raw, b"NOOP")
    # A change that changes nothing writes nothing.
    ok(raw, b"STORE 2 -FLAGS.SILENT (\\Seen)")
    assert compare_view(imap_view(raw), before, "INBOX") == []
    ok(raw, b'SELECT "Spare"')
    spare = len(before.folder("Spare"))
    st, text, lines = raw.command(b"EXPUNGE")
    assert (st, lines) == ("NO", []), (st, text, lines)
    assert text.startswith("[SERVERBUG] Internal error occurred."), text
    _, lines = ok(raw, b"NOOP")
    assert not any(b"EXPUNGE" in x for x in lines), lines
    assert compare_view(imap_view(raw), before, "Spare") == []
    after = db_state(dovecot, user)
    assert after.messages == before.messages
    assert after.mailboxes == before.mailboxes
    assert check_database(after) == []

    # The operator frees space; the same session's changes now work.
    filler.unlink()
    _, lines = ok(raw, b"EXPUNGE")
    assert [x for x in lines if b"EXPUNGE" in x] == [b"* 1 EXPUNGE\r\n"], \
        lines
    assert len(db_state(dovecot, user).folder("Spare")) == spare - 1
    ok(raw, b"SELECT INBOX")
    _, lines = ok(raw, b"STORE 1:2 +FLAGS ($Work \\Flagged)")
    # (\Recent, if the SELECT on the full disk could not claim the
    # messages and this one did, is the session's own)
    assert [x.replace(b"\\Recent ", b"") for x in lines
            if b" FETCH " in x] == [
        b"* %d FETCH (FLAGS (\\Flagged $Work))\r\n" % n for n in (1, 2)], lines
    ok(raw, b"STORE 1:%d +FLAGS.SILENT (\\Deleted)" % (stored // 2))
    assert compare_view(imap_view(raw), db_state(dovecot, user),
                        "INBOX") == []
    ok(raw, b"EXPUNGE")
    st, text, _ = raw.command(b"APPEND INBOX " + literal_plus(message(500)))
    assert st == "OK", text
    ok(raw, b'COPY 1:2 "Copies"')
    assert dovecot.lmtp_deliver(user, message(501))[user][0] == 250
    st_db = db_state(dovecot, user)
    assert check_database(st_db) == []
    assert len(st_db.folder("Copies")) == 2
