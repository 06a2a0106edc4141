# SPDX-License-Identifier: MIT
"""A full disk (DESIGN.md 1.4): the user's home is a small tmpfs, mounted
in a mount namespace private to this test process (and so to the Dovecot
it starts). APPEND, COPY and LMTP delivery fill it until they fail with a
temporary error (IMAP NO, LMTP 4xx); whatever was stored before stays
intact and readable; once space is freed everything works again."""

import ctypes
import os
import subprocess

import pytest

from harness import DovecotInstance, InstanceError, check, literal_plus
from invariants import check_database, db_state

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


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:60], st, text)
    return text, lines


@pytest.mark.allow_log(r"No space left on device|SQLITE_FULL|disk is full",
                       r"database or disk is full",
                       r"in-memory index\) reset, view is now inconsistent")
def test_full_disk_refuses_then_recovers(dovecot):
    user = "user01"
    # Something else on the disk that the operator can remove later.
    ballast = dovecot.user_dir(user) / "ballast"
    ballast.write_bytes(b"\0" * (2 * 1024 * 1024))
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Copies"')
    ok(raw, b'CREATE "Spare"')
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
    # COPY needs no body copy (DESIGN.md 5) but new rows: fill the last
    # pages with small appends to Spare first, then copy.
    for n in range(300):
        st, _, _ = raw.command(b'APPEND "Spare" ' + literal_plus(
            b"Subject: s\r\n\r\n" + b"x" * 2000 + b"\r\n"))
        if st != "OK":
            break
    st, text, _ = raw.command(b'COPY 1:* "Copies"')
    assert st == "NO", (st, text)
    result = dovecot.lmtp_deliver(user, message(999))
    assert 400 <= result[user][0] < 500, result

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

    # While the disk is full even a flag change, which needs room in the
    # WAL for a moment, is refused, and SQL keeps what it had. The
    # session's in-memory index already showed the change, so Dovecot
    # resets it at the next command and ends that session; the client
    # logs in again and sees SQL's state.
    st, text, _ = raw.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert st == "NO", text
    assert len(db_state(dovecot, user).folder("INBOX")) == stored
    assert db_state(dovecot, user).folder("INBOX")[1]["flags"] & 4 == 0
    raw.close()

    # The operator frees space; then the user can too.
    ballast.unlink()
    raw = dovecot.raw_imap(user)
    ok(raw, b"SELECT INBOX")
    ok(raw, b"STORE 1:%d +FLAGS.SILENT (\\Deleted)" % (stored // 2))
    ok(raw, b"EXPUNGE")
    ok(raw, b'SELECT "Spare"')
    ok(raw, b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"EXPUNGE")
    ok(raw, b"SELECT INBOX")
    st, text, _ = raw.command(b"APPEND INBOX " + literal_plus(message(500)))
    assert st == "OK", text
    ok(raw, b'COPY 1:2 "Copies"')
    assert dovecot.lmtp_deliver(user, message(501))[user][0] == 250
    st_db = db_state(dovecot, user)
    assert check_database(st_db) == []
    assert len(st_db.folder("Copies")) == 2
