# SPDX-License-Identifier: MIT
"""An operator's sqlite3 holding a write transaction for a while, taken
the documented way (PLUGIN.md, changing mail with SQL: `flock
mail.sqlite.lock sqlite3 ...`, then BEGIN IMMEDIATE): while it holds,
IMAP reads keep answering, every write answers NO [INUSE] once
sqlbox_lock_timeout has passed, LMTP answers 451; when it lets go,
everything works again and nothing was lost or half-done.

The hold lasts about 5 seconds; SQLBOX_SLOW=1 (make check-slow) makes it
60 seconds, with lock timeouts over and over."""

import os
import subprocess
import tempfile
import time


from harness import literal_plus, sqlbox_only
from invariants import check_database, db_state

SLOW = os.environ.get("SQLBOX_SLOW") == "1"
HOLD_SECONDS = 60 if SLOW else 5
DOVECOT_OPTIONS = {"extra_conf": "plugin {\n"
                                 "  sqlbox_lock_timeout = 1s\n"
                                 "}\n"}
MSG = b"From: a@example.org\r\nSubject: storm %d\r\n\r\nbody %d\r\n"


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:60], st, text)
    return text, lines


class Operator:
    """PLUGIN.md's sqlite3 session, as the mail user, inside BEGIN
    IMMEDIATE until release(). `.system touch` marks the moment the
    transaction is open (sqlite3's stdout is buffered on a pipe)."""

    def __init__(self, dovecot, user):
        fd, self.mark = tempfile.mkstemp(prefix="sbx-storm-")
        os.close(fd)
        os.unlink(self.mark)
        cmd = dovecot.sql_by_hand_argv(user)
        if os.getuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534",
                   "--clear-groups"] + cmd
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        self.p.stdin.write("BEGIN IMMEDIATE;\n"
                           "UPDATE mailboxes SET name = name WHERE 0;\n"
                           ".system touch %s\n" % self.mark)
        self.p.stdin.flush()
        deadline = time.time() + 60
        while not os.path.exists(self.mark):
            assert self.p.poll() is None, self.p.stderr.read()
            assert time.time() < deadline, "sqlite3 never got the lock"
            time.sleep(0.05)

    def release(self):
        self.p.stdin.write("ROLLBACK;\n.quit\n")
        self.p.stdin.close()
        assert self.p.wait(timeout=60) == 0, self.p.stderr.read()
        os.unlink(self.mark)


def test_reads_work_and_writes_wait_out_an_operator(dovecot, user):
    sqlbox_only(dovecot)
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Other"')
    for n in range(1, 4):
        ok(raw, b"APPEND INBOX " + literal_plus(MSG % (n, n)))
    ok(raw, b"SELECT INBOX")
    before = db_state(dovecot, user)

    op = Operator(dovecot, user)
    refused = reads = 0
    try:
        end = time.time() + HOLD_SECONDS
        while time.time() < end or refused == 0:
            reader = dovecot.raw_imap(user, tls="implicit")
            _, lines = ok(reader, b"EXAMINE INBOX")
            assert b"* 3 EXISTS\r\n" in lines, lines
            _, lines = ok(reader, b"FETCH 1:* (FLAGS BODY.PEEK[])")
            assert len([x for x in lines if b" FETCH " in x]) == 3
            ok(reader, b'STATUS "Other" (MESSAGES)')
            reader.close()
            reads += 1
            for command in (b"STORE 1 +FLAGS (\\Flagged)",
                            b"APPEND INBOX " + literal_plus(MSG % (9, 9)),
                            b'CREATE "New"'):
                st, text, _ = raw.command(command)
                assert (st, text[:7]) == ("NO", "[INUSE]"), (command, st,
                                                            text)
                refused += 1
        result = dovecot.lmtp_deliver(user, MSG % (8, 8))
        assert result[user][0] == 451, result
        assert dovecot.write_lock_is_held(user)
    finally:
        op.release()

    assert reads > 0 and refused > 0
    after = db_state(dovecot, user)
    assert after.folder("INBOX") == before.folder("INBOX")
    # The lock is gone: the same writes work.
    ok(raw, b"STORE 1 +FLAGS (\\Flagged)")
    text, _ = ok(raw, b"APPEND INBOX " + literal_plus(MSG % (9, 9)))
    assert "[APPENDUID" in text
    ok(raw, b'CREATE "New"')
    assert dovecot.lmtp_deliver(user, MSG % (8, 8))[user][0] == 250
    _, lines = ok(raw, b"NOOP")
    assert b"* 5 EXISTS\r\n" in lines, lines
    st = db_state(dovecot, user)
    assert check_database(st) == []
    assert len(st.folder("INBOX")) == 5
