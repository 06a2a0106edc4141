# SPDX-License-Identifier: MIT
"""Damaged and foreign database files (DESIGN.md 1.4: bad input gets a
clear error and loses nothing).

A user's mail.sqlite is replaced by something that is not a sqlbox
database of this version: random bytes, zeros, a truncated copy, a file
that is not SQLite at all, another program's SQLite database, a database
claiming a newer schema. Each time Dovecot logs one error naming the file,
the file's bytes stay as they were, `doveadm sqlbox check` says what is
wrong, and the user gets a temporary failure that clients understand
instead of a crash or a silently empty mailbox: the IMAP login works and
every command that needs the database answers NO [UNAVAILABLE] (RFC 5530
3: a subsystem is down; try again later), POP3 answers -ERR [SYS/TEMP]
(RFC 3206 4) and LMTP 451 (RFC 2033 4.2, RFC 5321 4.2.1: the MTA
retries). A stale -shm left by a crashed process is no damage at all:
SQLite rebuilds it and every message is still there."""

import hashlib
import os
import re
import subprocess

import pytest

from harness import (Literal, linked_doveadm_module, append, check, quote,
                     sqlbox_only)
from pop3util import connect as pop3_connect

MESSAGE = b"From: a@example.org\r\nSubject: keep me\r\n\r\nprecious\r\n"

@pytest.fixture(scope="module", autouse=True)
def doveadm_module(dovecot):
    sqlbox_only(dovecot)
    with linked_doveadm_module():
        yield


def digest(dovecot, user):
    """sha256 of the database file (SQLite may add an empty -wal and a
    -shm beside it; the file itself must not change)."""
    return hashlib.sha256(dovecot.db_path(user).read_bytes()).hexdigest()


def as_operator(dovecot, user, sql):
    """sqlite3 as the mail user under the lock file (PLUGIN.md)."""
    path = str(dovecot.db_path(user))
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                    "--clear-groups", "flock", path + ".lock", "sqlite3",
                    path, sql], check=True, timeout=60,
                   stdout=subprocess.DEVNULL)


def make_mailbox(dovecot, user):
    """A real database with one message, closed cleanly and checkpointed,
    so that the main file holds everything."""
    c = dovecot.imap(user)
    append(c, "INBOX", MESSAGE)
    c.logout()
    dovecot.close_clients()
    dovecot.wait_sessions_closed()
    as_operator(dovecot, user, "PRAGMA wal_checkpoint(TRUNCATE);")


def replace_db(dovecot, user, data):
    path = dovecot.db_path(user)
    for suffix in ("-wal", "-shm"):
        try:
            os.unlink(str(path) + suffix)
        except FileNotFoundError:
            pass
    path.write_bytes(data)
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o600)


def doveadm_check(dovecot, user):
    return subprocess.run(["doveadm", "-c", str(dovecot.conf), "sqlbox",
                           "check", "-u", user], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


UNAVAILABLE = "[UNAVAILABLE] Mail storage temporarily unavailable, " \
    "try again later"
POP3_TEMP = b"-ERR [SYS/TEMP] Mail storage temporarily unavailable, " \
    b"try again later"

# Commands that need the database, and one that doesn't.
IMAP_COMMANDS = [
    (b"LIST", b'LIST "" "*"'),
    (b"LSUB", b'LSUB "" "*"'),
    (b"STATUS", b"STATUS INBOX (MESSAGES UIDNEXT)"),
    (b"SELECT", b"SELECT INBOX"),
    (b"EXAMINE", b"EXAMINE INBOX"),
    (b"CREATE", b"CREATE Archive"),
    (b"SUBSCRIBE", b"SUBSCRIBE INBOX"),
    (b"RENAME", b"RENAME Archive Old"),
    (b"DELETE", b"DELETE Archive"),
    (b"GETMETADATA", b'GETMETADATA INBOX /private/comment'),
]


def untimed(text):
    """A tagged answer's text without Dovecot's timing suffix."""
    return re.sub(r" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)\.?$",
                  "", text)


def imap_transcript(dovecot, user):
    """LOGIN, every command of IMAP_COMMANDS, an APPEND, NOOP and LOGOUT
    on one connection: [(command, status, text without timing)]."""
    r = dovecot.raw_imap(login=False)
    out = []
    status, text, _ = r.command(b"LOGIN " + quote(user) + b" " +
                                quote(dovecot.password(user)))
    out.append((b"LOGIN", status, text.split("] ")[-1]))
    for name, line in IMAP_COMMANDS:
        status, text, _ = r.command(line)
        out.append((name, status, untimed(text)))
    status, text, _ = r.command(b"APPEND INBOX", b" ", Literal(MESSAGE))
    out.append((b"APPEND", status, untimed(text)))
    for name in (b"NOOP", b"LOGOUT"):
        status, text, _ = r.command(name)
        out.append((name, status, untimed(text)))
    return out


def check_imap_refused(dovecot, user):
    """The login works; every command that needs the database answers the
    same temporary NO, naming nothing internal; the session goes on."""
    expected = [(b"LOGIN", "OK", "Logged in")]
    expected += [(name, "NO", UNAVAILABLE) for name, _ in IMAP_COMMANDS]
    expected += [(b"APPEND", "NO", UNAVAILABLE),
                 (b"NOOP", "OK", "NOOP completed"),
                 (b"LOGOUT", "OK", "Logout completed")]
    assert imap_transcript(dovecot, user) == expected


def check_pop3_refused(dovecot, user):
    """Dovecot's POP3 opens INBOX right after +OK to PASS (RFC 1939 7:
    the TRANSACTION state); the open fails with [SYS/TEMP] (RFC 3206 4:
    try again later) and the server closes the connection."""
    p = pop3_connect(dovecot)
    assert p.login(user, dovecot.password(user)) == b"+OK Logged in."
    assert p.cmd(b"STAT") == POP3_TEMP
    assert p.at_eof()


def check_lmtp_refused(dovecot, user):
    """A delivery is refused for now, not for good: the MTA keeps it."""
    code, text = dovecot.lmtp_deliver(user, MESSAGE)[user]
    assert (code, text) == (
        451, "4.2.0 <%s> Mail storage temporarily unavailable, "
        "try again later" % user)


def check_refused_everywhere(dovecot, user, mark):
    check_imap_refused(dovecot, user)
    check_pop3_refused(dovecot, user)
    check_lmtp_refused(dovecot, user)
    dovecot.close_clients()
    dovecot.wait_sessions_closed(mark)
    # One error naming the file per session (IMAP, POP3, LMTP), however
    # many commands failed; nothing else about it.
    path = str(dovecot.db_path(user))
    log = dovecot.log_text(mark)
    naming = [line for line in log.splitlines()
              if ": Error: " in line and path in line]
    assert len(naming) == 3, "\n".join(naming) or log
    for proto in ("imap", "pop3", "lmtp"):
        assert sum(1 for line in naming
                   if line.split(" ", 2)[2].startswith(proto + "(")) == 1, \
            "\n".join(naming)
    for line in log.splitlines():
        assert "Panic" not in line and "killed with signal" not in line, line
        assert "BYE" not in line, line
    return naming


def random_bytes(n):
    return hashlib.shake_256(b"sqlbox corruption").digest(n)


def real_db(dovecot, user):
    return dovecot.db_path(user).read_bytes()


def foreign_sqlite(db):
    """A SQLite database of some other program (no application_id, like
    most): a valid file, but not ours to add tables to."""
    import sqlite3
    other = sqlite3.connect(":memory:")
    other.executescript("CREATE TABLE notes(t TEXT);"
                        "INSERT INTO notes VALUES ('not mail');")
    data = other.serialize()
    other.close()
    return data


DAMAGE = {
    "foreign_sqlite": foreign_sqlite,
    "random": lambda db: random_bytes(len(db)),
    "zeroed": lambda db: b"\0" * len(db),
    "not_sqlite": lambda db: b"From: someone\r\n\r\nthis is an mbox\r\n" * 50,
    "truncated": lambda db: db[:len(db) // 3],
    "header_only": lambda db: db[:100],
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_file_is_refused_and_kept(dovecot, kind, allow_log):
    user = dovecot.new_user()
    make_mailbox(dovecot, user)
    db = real_db(dovecot, user)
    replace_db(dovecot, user, DAMAGE[kind](db))
    before = digest(dovecot, user)
    mark = dovecot.log_size()

    allow_log.append(re.escape(str(dovecot.db_path(user))))
    allow_log.append(r"pop3\(%s\).*: Error: Couldn't open INBOX: Mail "
                     r"storage temporarily unavailable" % user)
    check_refused_everywhere(dovecot, user, mark)
    # The server is still there for others.
    other = dovecot.new_user()
    c = dovecot.imap(other)
    check(c.select("INBOX"), "SELECT for another user")

    p = doveadm_check(dovecot, user)
    assert p.returncode != 0, "check found nothing wrong in a %s file" % kind
    assert "mail.sqlite" in p.stdout + p.stderr, p.stdout + p.stderr

    dovecot.close_clients()
    dovecot.wait_sessions_closed(mark)
    assert digest(dovecot, user) == before, "the damaged file was changed"


def test_newer_schema_is_refused_and_kept(dovecot, allow_log):
    user = dovecot.new_user()
    make_mailbox(dovecot, user)
    as_operator(dovecot, user, "PRAGMA user_version = 9999;")
    before = digest(dovecot, user)
    mark = dovecot.log_size()
    allow_log.append(re.escape(str(dovecot.db_path(user))))
    allow_log.append(r"pop3\(%s\).*: Error: Couldn't open INBOX: Mail "
                     r"storage temporarily unavailable" % user)
    naming = check_refused_everywhere(dovecot, user, mark)
    assert all("newer than this sqlbox" in line for line in naming), naming
    p = doveadm_check(dovecot, user)
    assert p.returncode != 0
    assert "newer" in p.stdout + p.stderr, p.stdout + p.stderr
    dovecot.close_clients()
    dovecot.wait_sessions_closed(mark)
    assert digest(dovecot, user) == before


def test_repaired_file_is_used_in_the_same_session(dovecot, allow_log):
    """A database that could not be opened is tried again by the next
    command that needs it: once the operator puts the file back, the
    session that got NO [UNAVAILABLE] works without logging in again, and
    nothing is lost."""
    user = dovecot.new_user()
    make_mailbox(dovecot, user)
    good = real_db(dovecot, user)
    replace_db(dovecot, user, random_bytes(len(good)))
    allow_log.append(re.escape(str(dovecot.db_path(user))))
    r = dovecot.raw_imap(user)
    status, text, _ = r.command(b"SELECT INBOX")
    assert (status, untimed(text)) == ("NO", UNAVAILABLE)
    replace_db(dovecot, user, good)
    status, text, untagged = r.command(b"SELECT INBOX")
    assert status == "OK", text
    assert b"* 1 EXISTS" in [line.rstrip() for line in untagged], untagged
    status, text, untagged = r.command(b"FETCH 1 BODY.PEEK[]")
    assert status == "OK", text
    assert MESSAGE in b"".join(untagged), untagged


def test_stale_shm_is_rebuilt(dovecot):
    """A -shm left by a killed process is SQLite's to rebuild: nothing is
    lost and nothing is refused."""
    user = dovecot.new_user()
    make_mailbox(dovecot, user)
    shm = str(dovecot.db_path(user)) + "-shm"
    with open(shm, "wb") as f:
        f.write(random_bytes(32768))
    os.chown(shm, 65534, 65534)
    c = dovecot.imap(user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == 1, (typ, data)
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == MESSAGE
    p = doveadm_check(dovecot, user)
    assert p.returncode == 0, p.stdout + p.stderr
