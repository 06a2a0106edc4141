# SPDX-License-Identifier: MIT
"""IDLE (RFC 2177) is woken by the change notification, not by polling.

The instance's mailbox_idle_check_interval is an hour, far beyond every
wait here, so an untagged response during IDLE proves that sqlbox's watch
on mail.sqlite-wal and mail.sqlite (DESIGN.md 3) fired. Changes come from
every writer there is: another IMAP session (another process), an LMTP
delivery, doveadm, and an operator's SQL following PLUGIN.md. Python
3.11's imaplib has no IDLE, so the session speaks it over a raw socket; a
reader thread collects what the server sends while the test waits, with a
bounded wait (WAIT seconds) that is never a timing assertion.

Without IDLE, the same changes reach a session at its next NOOP (RFC 3501
6.1.2, 7.4.1, 7.4.2)."""

import queue
import re
import socket
import threading
import time

from harness import literal_plus, sqlbox_only
from invariants import fetch_lines
from test_sql_by_hand import EXPUNGE_UID_2, documented_example

DOVECOT_OPTIONS = {"idle_check_interval": "3600 secs"}
WAIT = 10
MSG = (b"From: a@example.org\r\nSubject: idle %d\r\n"
       b"Message-ID: <idle-%d@sqlbox.test>\r\n\r\nbody %d\r\n")


def msg(n):
    return MSG % (n, n, n)


class Idler:
    """A selected RawImap session in IDLE; a thread reads what the server
    sends, so the test can wait for a line with a deadline."""

    def __init__(self, raw):
        self.raw = raw
        self.lines = queue.Queue()
        self.tag = raw.next_tag()
        raw.send(self.tag + b" IDLE\r\n")
        early = []
        while True:
            line = raw.read_response()
            if line.startswith(b"+"):
                break
            assert not line.startswith(self.tag), line
            early.append(line)
        for line in early:
            self.lines.put(line)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # Until DONE is answered the thread owns the input: closing the
        # session (the harness does at the end of a test) drops it.
        self.plain_close = raw.close
        raw.close = self.close

    def close(self):
        self.abort()
        self.plain_close()

    def _read(self):
        try:
            while True:
                line = self.raw.read_response()
                self.lines.put(line)
                if line.startswith(self.tag + b" "):
                    return
        except Exception as e:          # the test sees it as a line
            self.lines.put(("error", repr(e)))

    def wait_for(self, pattern, timeout=WAIT):
        """Collects lines until one matches the regex (bytes); returns all
        collected. Fails, showing them, when none came in time."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
            if line is not None:
                got.append(line)
                if isinstance(line, bytes) and re.search(pattern, line):
                    return got
            elif left <= 0:
                self.abort()
                raise AssertionError("no %r within %d s during IDLE; got %r"
                                     % (pattern, timeout, got))

    def abort(self):
        """Drops the connection (the reader thread owns its input, so the
        session can't be logged out normally)."""
        try:
            self.raw.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(WAIT)

    def done(self):
        """Ends IDLE; returns the lines up to and including the tagged
        OK (RFC 2177 3: DONE)."""
        self.raw.send(b"DONE\r\n")
        got = self.wait_for(rb"^" + re.escape(self.tag) + rb" ")
        self.thread.join(WAIT)
        self.raw.close = self.plain_close
        assert got[-1].startswith(self.tag + b" OK"), got
        return got


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:60], st, text)
    return text, lines


def flags_in(lines, seq):
    """The flags of the last FETCH of seq among lines (without
    \\Recent)."""
    found = fetch_lines([x for x in lines if isinstance(x, bytes)])
    return {f.decode() for f in found[seq]["FLAGS"]} - {"\\Recent"}


def idle_in(inst, user, n=3, folder=b"INBOX"):
    """n messages in INBOX; a session that SELECTed it, in IDLE."""
    raw = inst.raw_imap(user)
    for i in range(1, n + 1):
        ok(raw, b"APPEND " + folder + b" " + literal_plus(msg(i)))
    ok(raw, b"SELECT " + folder)
    return raw, Idler(raw)


def test_idle_sees_another_sessions_append_store_expunge(dovecot, user):
    raw, idle = idle_in(dovecot, user)
    other = dovecot.raw_imap(user, tls="implicit")
    ok(other, b"APPEND INBOX " + literal_plus(msg(4)))
    idle.wait_for(rb"^\* 4 EXISTS\r\n")
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 2 +FLAGS (\\Flagged IdleKw)")
    got = idle.wait_for(rb"^\* 2 FETCH ")
    assert flags_in(got, 2) == {"\\Flagged", "IdleKw"}, got
    ok(other, b"UID STORE 2 -FLAGS (IdleKw)")
    got = idle.wait_for(rb"^\* 2 FETCH ")
    assert flags_in(got, 2) == {"\\Flagged"}, got
    ok(other, b"UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"EXPUNGE")
    idle.wait_for(rb"^\* 1 EXPUNGE\r\n")
    idle.done()
    _, lines = ok(raw, b"UID SEARCH ALL")
    assert lines == [b"* SEARCH 2 3 4\r\n"], lines


def test_idle_sees_a_move_into_and_out_of_the_folder(dovecot, user):
    raw, idle = idle_in(dovecot, user)
    other = dovecot.raw_imap(user)
    ok(other, b'CREATE "Elsewhere"')
    ok(other, b"SELECT INBOX")
    ok(other, b'UID MOVE 3 "Elsewhere"')
    idle.wait_for(rb"^\* 3 EXPUNGE\r\n")
    ok(other, b'SELECT "Elsewhere"')
    ok(other, b"MOVE 1 INBOX")
    idle.wait_for(rb"^\* 3 EXISTS\r\n")
    idle.done()
    _, lines = ok(raw, b"UID SEARCH ALL")
    assert lines == [b"* SEARCH 1 2 4\r\n"], lines


def test_idle_sees_lmtp_delivery(dovecot, user):
    raw, idle = idle_in(dovecot, user)
    result = dovecot.lmtp_deliver(user, msg(10))
    assert result[user][0] == 250, result
    idle.wait_for(rb"^\* 4 EXISTS\r\n")
    idle.done()
    _, lines = ok(raw, b"FETCH 4 BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
    assert b"<idle-10@sqlbox.test>" in lines[0], lines


def test_idle_sees_doveadm_changes(dovecot, user):
    raw, idle = idle_in(dovecot, user)
    dovecot.doveadm("flags", "add", "-u", user, "\\Seen DoveKw",
                    "mailbox", "INBOX", "uid", "2")
    got = idle.wait_for(rb"^\* 2 FETCH ")
    assert flags_in(got, 2) == {"\\Seen", "DoveKw"}, got
    dovecot.doveadm("save", "-u", user, "-m", "INBOX", input=msg(11))
    idle.wait_for(rb"^\* 4 EXISTS\r\n")
    dovecot.doveadm("expunge", "-u", user, "mailbox", "INBOX", "uid", "1")
    idle.wait_for(rb"^\* 1 EXPUNGE\r\n")
    idle.done()
    _, lines = ok(raw, b"UID FETCH 1:* (UID FLAGS)")
    assert [x.split(b" FETCH ")[1] for x in lines] == [
        b"(UID 2 FLAGS (\\Seen \\Recent DoveKw))\r\n",
        b"(UID 3 FLAGS (\\Recent))\r\n",
        b"(UID 4 FLAGS (\\Recent))\r\n"], lines


def test_idle_sees_sql_by_hand(dovecot, user):
    """PLUGIN.md's example (UID 3 of INBOX \\Seen) and an expunge by rule
    4, each run through the documented flock + sqlite3 command."""
    sqlbox_only(dovecot)
    raw, idle = idle_in(dovecot, user)
    dovecot.sql_by_hand(user, documented_example())
    got = idle.wait_for(rb"^\* 3 FETCH ")
    assert flags_in(got, 3) == {"\\Seen"}, got
    dovecot.sql_by_hand(user, EXPUNGE_UID_2)
    idle.wait_for(rb"^\* 2 EXPUNGE\r\n")
    idle.done()
    _, lines = ok(raw, b"UID SEARCH ALL")
    assert lines == [b"* SEARCH 1 3\r\n"], lines


def test_idle_in_another_folder_is_not_told_about_inbox(dovecot, user):
    """A change to INBOX wakes every watcher of the database (one file),
    but a session idling in another folder must not be told anything."""
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Quiet"')
    ok(raw, b'APPEND "Quiet" ' + literal_plus(msg(1)))
    ok(raw, b'SELECT "Quiet"')
    idle = Idler(raw)
    watcher = dovecot.raw_imap(user)
    ok(watcher, b"SELECT INBOX")
    inbox = Idler(watcher)
    assert dovecot.lmtp_deliver(user, msg(12))[user][0] == 250
    # The INBOX session's wake-up shows the notification went out ...
    inbox.wait_for(rb"^\* 1 EXISTS\r\n")
    inbox.done()
    # ... and by then the Quiet session had its chance too.
    time.sleep(1)
    got = idle.done()
    assert [x for x in got if not x.startswith(idle.tag)] == [], got


def test_noop_sees_other_sessions_changes_without_idle(dovecot, user):
    raw = dovecot.raw_imap(user)
    for i in range(1, 4):
        ok(raw, b"APPEND INBOX " + literal_plus(msg(i)))
    ok(raw, b"SELECT INBOX")
    other = dovecot.raw_imap(user)
    ok(other, b"SELECT INBOX")
    ok(other, b"APPEND INBOX (\\Seen) " + literal_plus(msg(4)))
    ok(other, b"UID STORE 1 +FLAGS (\\Answered NoopKw)")
    ok(other, b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"UID EXPUNGE 2")
    _, lines = ok(raw, b"NOOP")
    assert b"* 2 EXPUNGE\r\n" in lines, lines
    assert b"* 4 EXISTS\r\n" in lines or b"* 3 EXISTS\r\n" in lines, lines
    assert flags_in(lines, 1) == {"\\Answered", "NoopKw"}, lines
    _, lines = ok(raw, b"UID FETCH 1:* (UID FLAGS)")
    got = {item["UID"]: {f.decode() for f in item["FLAGS"]} - {"\\Recent"}
           for item in fetch_lines(lines).values()}
    assert got == {1: {"\\Answered", "NoopKw"}, 3: set(), 4: {"\\Seen"}}
