# SPDX-License-Identifier: MIT
"""Damaged and foreign database files (DESIGN.md 1.4: bad input gets a
clear error and loses nothing).

A user's mail.sqlite is replaced by something that is not a sqlbox
database of this version: random bytes, zeros, a truncated copy, a file
that is not SQLite at all, another program's SQLite database, a database
claiming a newer schema. Each time
Dovecot logs one error naming the file, the client gets a temporary
failure instead of a crash or a silently empty mailbox, the file's bytes
stay as they were, and `doveadm sqlbox check` says what is wrong. A stale
-shm left by a crashed process is no damage at all: SQLite rebuilds it
and every message is still there."""

import hashlib
import imaplib
import os
import re
import subprocess

import pytest

from harness import linked_doveadm_module, append, check, sqlbox_only

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


def refused(dovecot, user):
    """Logs in and SELECTs INBOX; returns the text of whichever was
    refused, or None if both worked. A user whose storage cannot be set up
    is told so the way Dovecot tells it for any backend: the session ends
    with BYE "Internal error occurred" (a temporary failure, RFC 3501
    7.1.5), as imaplib's abort."""
    c = dovecot.imap(login=False)
    try:
        c.login(user, dovecot.password(user))
        typ, data = c.select("INBOX")
    except imaplib.IMAP4.abort as e:
        return "BYE " + str(e)
    except imaplib.IMAP4.error as e:
        return "NO " + str(e)
    text = data[-1].decode(errors="replace") if data and data[-1] else ""
    c.logout()
    return None if typ == "OK" else "NO " + text


def temporary(answer):
    """A refusal that tells the client to try again later, never a
    permanent or silent one."""
    return answer is not None and (
        "UNAVAILABLE" in answer or "SERVERBUG" in answer or
        ("BYE" in answer and "Internal error occurred" in answer))


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
    answer = refused(dovecot, user)
    assert answer is not None, "a damaged %s database was used" % kind
    assert temporary(answer), answer
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
    log = dovecot.log_text(mark)
    errors = [line for line in log.splitlines() if ": Error: " in line]
    assert errors, "no error logged for a %s database" % kind
    assert any(str(dovecot.db_path(user)) in line for line in errors), \
        "the error does not name the file:\n" + "\n".join(errors)
    for line in log.splitlines():
        assert "Panic" not in line and "killed with signal" not in line, line


def test_newer_schema_is_refused_and_kept(dovecot, allow_log):
    user = dovecot.new_user()
    make_mailbox(dovecot, user)
    as_operator(dovecot, user, "PRAGMA user_version = 9999;")
    before = digest(dovecot, user)
    mark = dovecot.log_size()
    allow_log.append(re.escape(str(dovecot.db_path(user))))
    answer = refused(dovecot, user)
    assert temporary(answer), answer
    p = doveadm_check(dovecot, user)
    assert p.returncode != 0
    assert "newer" in p.stdout + p.stderr, p.stdout + p.stderr
    dovecot.close_clients()
    dovecot.wait_sessions_closed(mark)
    assert digest(dovecot, user) == before
    assert "newer than this sqlbox" in dovecot.log_text(mark)


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
