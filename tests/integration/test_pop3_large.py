# SPDX-License-Identifier: MIT
"""A POP3 login to a mailbox of 50,000 messages reads no message body
(research note 6.4: Dovecot's pop3 asks every message's size at login;
DESIGN.md 5: sizes come from SQL columns).

The mailbox is made cheaply, by hand, following PLUGIN.md's rules: four
messages are APPENDed over IMAP, then one transaction (under the lock
file, MODSEQ raised) inserts 50,000 more rows pointing at those four
bodies; the triggers keep the counters and the reference counts. Then
every row of body_chunks is deleted, so no body can be read any more, and
every file of the user but the database is deleted with Dovecot stopped,
so that nothing Dovecot may have cached about the four bodies survives.
"""

import re

import pytest

import corpus
from harness import sqlbox_only
from pop3util import (BUMP_MODSEQ, INBOX_ID, INBOX_MODSEQ, append_exact,
                      imap_view, session, sql_write, uidl_for,
                      wipe_all_but_database)

EXTRA = 50000
SEEDS = ["plain-short", "dot-lines", "bare-lf", "alternative"]

# What a read of a body without chunks logs (plugin/sqlbox-istream.c,
# through Dovecot's index-mail read error), and, looser, any error a
# storage may log about such a body.
BODY_READ_ERROR = (r"Error: Mailbox INBOX: UID=\d+: read\(sqlbox body \d+\) "
                   r"failed: sqlbox: ")
UNREADABLE_BODY_ERROR = r"Error: Mailbox INBOX: UID=\d+: .*sqlbox.*body \d+"


@pytest.fixture(scope="module")
def big(dovecot):
    """(user, uidvalidity, {uid: size}) of a user with 50,004 messages whose
    bodies have no content left."""
    sqlbox_only(dovecot)
    user = dovecot.new_user()
    seeds = [corpus.by_name(n) for n in SEEDS]
    append_exact(dovecot, user, seeds)
    uidvalidity, view = imap_view(dovecot, user)
    seed_size = {uid: len(body) for uid, body in view}
    # PLUGIN.md: one BEGIN IMMEDIATE transaction under the lock, the
    # folder's MODSEQ raised and given to the new rows, UIDs from uidnext
    # up; the counters are the triggers' business.
    sql_write(dovecot, user, """
        BEGIN IMMEDIATE;
        %(bump)s
        WITH RECURSIVE n(i) AS (
            SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %(extra)d)
        INSERT INTO messages(mailbox_id, uid, body_id, guid, flags,
                             keywords, modseq, received_date, received_tz,
                             save_date, pop3_uidl, pop3_order)
        SELECT %(box)s, 4 + i,
               (SELECT body_id FROM messages
                 WHERE mailbox_id = %(box)s AND uid = 1 + i %% 4),
               lower(hex(randomblob(16))), 0, '', %(modseq)s,
               1700000000 + i, 0, 1700000000 + i, NULL, 0
          FROM n;
        COMMIT;
        BEGIN IMMEDIATE;
        DELETE FROM body_chunks;
        COMMIT;
        """ % {"bump": BUMP_MODSEQ, "extra": EXTRA, "box": INBOX_ID,
               "modseq": INBOX_MODSEQ})
    # UID 4 + i uses the body of UID 1 + i % 4
    sizes = {uid: seed_size[uid if uid <= 4 else 1 + (uid - 4) % 4]
             for uid in range(1, 4 + EXTRA + 1)}
    assert dovecot.sql(user, "SELECT messages, psize, vsize, uidnext "
                             "FROM mailboxes WHERE name = 'INBOX'") == \
        [[len(sizes), sum(sizes.values()), sum(sizes.values()),
          len(sizes) + 1]]
    assert dovecot.sql(user, "SELECT count(*) FROM body_chunks") == [[0]]
    dovecot.stop()
    wipe_all_but_database(str(dovecot.user_dir(user)))
    dovecot.start()
    return user, uidvalidity, sizes


def test_login_stat_list_uidl_read_no_body(dovecot, big):
    """What proves that no body is read: every body has lost its content
    (body_chunks is empty), so reading any of them fails, and Dovecot
    does notice such a failure where it matters here: a size it has to
    compute by reading the message (index-mail's fallback when a storage
    gives none) fails with the read, and that fails the login with -ERR
    and an Error line ("Couldn't init INBOX: ... read(sqlbox body N)
    failed", seen with a plugin built to take the size that way). No
    cached size can stand in: the index files were deleted with Dovecot
    stopped, and sqlbox keeps its index in memory per process. So a login
    that succeeds, with every size exact, UIDLs for all, and a clean log,
    read no body. test_a_body_read_is_noticed is the control that reading
    one of these bodies does fail visibly."""
    user, uidvalidity, sizes = big
    p = session(dovecot, user)
    assert p.stat() == (len(sizes), sum(sizes.values()))
    listed = p.list()
    assert listed == {n: sizes[n] for n in sizes}
    uidl = p.uidl()
    assert len(uidl) == len(sizes)
    for n in (1, 2, 3, 4, 5, 25000, len(sizes)):
        assert uidl[n] == uidl_for(n, uidvalidity)
    assert len(set(uidl.values())) == len(sizes)
    assert p.cmd("LIST %d" % len(sizes)) == \
        b"+OK %d %d" % (len(sizes), sizes[len(sizes)])
    assert p.cmd("NOOP") == b"+OK"
    assert p.quit() == b"+OK Logging out."


@pytest.mark.allow_log(BODY_READ_ERROR)
def test_a_body_read_is_noticed(dovecot, big):
    """The control: IMAP FETCH BODY[] of one of these messages does read
    the body, and that fails with an Error line and the connection closed
    (Dovecot's imap disconnects on a read error)."""
    user, uidvalidity, sizes = big
    mark = dovecot.log_size()
    raw = dovecot.raw_imap(user)
    st, text, _ = raw.command(b"EXAMINE INBOX")
    assert st == "OK", text
    st, text, lines = raw.command(b"FETCH 4 (RFC822.SIZE)")
    assert st == "OK" and lines == [b"* 4 FETCH (RFC822.SIZE %d)\r\n"
                                    % sizes[4]], (st, text, lines)
    with pytest.raises((EOFError, OSError)):
        raw.command(b"FETCH 30000 (BODY.PEEK[])")
    dovecot.wait_sessions_closed(mark)
    assert re.search(BODY_READ_ERROR, dovecot.log_text(mark))


@pytest.mark.allow_log(UNREADABLE_BODY_ERROR)
def test_retr_of_an_unreadable_body_fails(dovecot, big):
    """RETR and TOP of a message whose body cannot be read must not
    answer +OK (RFC 1939 5 RETR, 7 TOP: after "+OK" the server sends the
    message), and the failure must be logged.

    A storage must fail when the mail is opened, as Dovecot's own
    backends do (a vanished maildir file gives "-ERR Message N
    expunged."): Dovecot 2.3's pop3 does not check the stream's error
    after a failed read and would end the message as if it were empty."""
    user, uidvalidity, sizes = big
    mark = dovecot.log_size()
    p = session(dovecot, user)
    status, body = p.retr(8)
    top_status = p.cmd("TOP 12 0")
    if top_status.startswith(b"+OK"):
        p.read_multi()
    p.quit()
    dovecot.wait_sessions_closed(mark)
    log = dovecot.log_text(mark)
    assert status.startswith(b"-ERR"), (
        "RETR of an unreadable body answered %r with %r; log:\n%s"
        % (status, body, log))
    assert top_status.startswith(b"-ERR"), top_status
    assert re.search(UNREADABLE_BODY_ERROR, log), log
