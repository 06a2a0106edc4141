# SPDX-License-Identifier: MIT
"""Who owns a user's mail files: the mail directory is 0700 and the
database, its -wal and -shm and the lock file are 0600, all owned by the
mail user; a database owned by anyone else is refused, never opened."""

import hashlib
import os
import re
import stat

import pytest

from harness import append, sqlbox_only


@pytest.fixture(autouse=True)
def _sqlbox_only(dovecot):
    sqlbox_only(dovecot)
    if os.getuid() != 0:
        pytest.skip("needs root: mail runs as another uid only then")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_mail_files_are_private_to_the_mail_user(dovecot, user):
    c = dovecot.imap(user)
    append(c, "INBOX", b"Subject: x\r\n\r\nx\r\n")
    db = dovecot.db_path(user)
    st = os.stat(db.parent)
    assert mode(db.parent) == 0o700, oct(mode(db.parent))
    assert st.st_uid == 65534
    # Checked while the session is open: -wal and -shm exist.
    for name in ("mail.sqlite", "mail.sqlite-wal", "mail.sqlite-shm",
                 "mail.sqlite.lock"):
        path = db.parent / name
        assert path.exists(), name
        assert os.stat(path).st_uid == 65534, name
        assert mode(path) == 0o600, "%s is %o" % (name, mode(path))


def test_database_of_another_user_is_refused(dovecot, user, allow_log):
    c = dovecot.imap(user)
    append(c, "INBOX", b"Subject: x\r\n\r\nx\r\n")
    c.logout()
    dovecot.close_clients()
    dovecot.wait_sessions_closed()
    db = dovecot.db_path(user)
    # Readable and writable by the mail user, yet not its own: only the
    # owner check stands in the way.
    os.chown(db, 0, 0)
    os.chmod(db, 0o666)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    mark = dovecot.log_size()
    allow_log.append(re.escape(str(db)))

    # The login works; what needs the database gets a temporary NO.
    c = dovecot.imap(user)
    typ, data = c.select("INBOX")
    assert typ == "NO" and data[-1].startswith(
        b"[UNAVAILABLE] Mail storage temporarily unavailable, try again "
        b"later"), (typ, data)
    dovecot.close_clients()
    dovecot.wait_sessions_closed(mark)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert os.stat(db).st_uid == 0
    log = dovecot.log_text(mark)
    assert re.search(r"Error: .*%s.*owned by uid 0" % re.escape(str(db)),
                     log), log
