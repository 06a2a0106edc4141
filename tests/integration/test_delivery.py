# SPDX-License-Identifier: MIT
"""Delivery into sqlbox: LMTP (RFC 2033) and dovecot-lda.

- Many messages to two users over LMTP, in single- and multi-recipient
  transactions, several transactions per connection, over the inet and
  the unix listener: each user's database holds exactly that user's copies,
  byte for byte what was sent after the trace fields LMTP prepends,
  counted with SQL and with IMAP.
- A client in IDLE on INBOX is told about a delivery (the inotify watch on
  mail.sqlite-wal; the periodic check is set to an hour).
- sqlbox_max_message_size: the sqlbox_lmtp module answers 552 5.3.4 for
  each recipient whose limit the message exceeds (RFC 2033 4.2, RFC 3463
  5.3.4) and stores nothing for it; the other recipients are unaffected.
- sqlbox_lock_timeout: a delivery that cannot get the user's write lock
  fails with a temporary 4xx (LDA: exit 75) and stores nothing; once the
  lock is free the retry is stored.
- dovecot-lda -m: into an existing nested folder; into INBOX when the
  folder does not exist (dovecot-lda(1): "If the mailbox doesn't exist, it
  will not be created (unless the lda_mailbox_autocreate setting is set to
  yes). If a message couldn't be saved to the mailbox for any reason, it's
  delivered to INBOX instead."); with lda_mailbox_autocreate = yes the
  folder is created; over the limit nothing is stored anywhere.
"""

import hashlib
import re

import pytest

import deliveryutil as du
from harness import backend_under_test, mutf7_encode, quote

if backend_under_test() != "sqlbox":
    pytest.skip("sqlbox limits, lock and SQL layout", allow_module_level=True)

LIMIT = 3 * 1024 * 1024
DOVECOT_OPTIONS = {
    "extra_conf": "plugin {\n"
                  "  sqlbox_max_message_size = %d\n"
                  "  sqlbox_lock_timeout = 1s\n"
                  "}\n" % LIMIT,
    # Only the change notification can wake IDLE within the test.
    "idle_check_interval": "3600 secs",
}

N_MESSAGES = 600 if du.SLOW else 200
SENDER = "sender@example.org"


def inbox_bodies(inst, user, mailbox=b"INBOX"):
    """[(uid, BODY[])] of a folder, in UID order."""
    raw = inst.raw_imap(user)
    du.select(raw, mailbox, examine=True)
    got = du.fetch_all(raw, b"(UID BODY.PEEK[])")
    raw.close()
    return [(uid, got[uid]["BODY[]"]) for uid in sorted(got)]


def sql_inbox(inst, user, name="INBOX"):
    """[(uid, body sha256 hex, physical_size)] of a folder from SQL."""
    return [tuple(r) for r in inst.sql(
        user, "SELECT m.uid, b.sha256, b.physical_size FROM messages m "
        "JOIN mailboxes x ON x.id = m.mailbox_id "
        "JOIN bodies b ON b.id = m.body_id WHERE x.name = ? ORDER BY m.uid",
        [name])]


def sql_totals(inst, user):
    """(messages rows, bodies rows, body_chunks rows) of a database."""
    return tuple(inst.sql(
        user, "SELECT (SELECT count(*) FROM messages), "
        "(SELECT count(*) FROM bodies), "
        "(SELECT count(*) FROM body_chunks)")[0])


def login_once(inst, user):
    """Creates the user's database (first login) so that its lock file
    exists."""
    raw = inst.raw_imap(user)
    du.select(raw)
    raw.close()


def big_message(size, tag="big"):
    head = ("From: Big Sender <big@example.org>\r\nTo: you@example.net\r\n"
            "Subject: %s message\r\nMessage-ID: <%s-%d@sqlbox.test>\r\n\r\n"
            % (tag, tag, size)).encode()
    line = b"y" * 998 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return head + body[:size - len(head) - 2] + b"\r\n"


class TestLmtp:
    def test_many_messages_two_users(self, dovecot):
        # RFC 2033 4.2: after DATA, one reply per accepted RCPT, in RCPT
        # order. A refused RCPT (no such user) does not disturb the rest.
        a, b = dovecot.new_user(), dovecot.new_user()
        msgs = du.generate(N_MESSAGES, seed=2033, max_size=300000)
        for name, data in msgs:
            assert len(data) < LIMIT - 10000, (name, len(data))
        want = {a: [], b: []}          # [(sent bytes, single recipient?)]
        plan = []
        for i, (name, data) in enumerate(msgs):
            kind = i % 5
            if kind == 0:
                rcpts = [a]
            elif kind == 1:
                rcpts = [b]
            elif kind == 2:
                rcpts = [a, b]
            elif kind == 3:
                rcpts = [b, "nosuchuser", a]
            else:
                rcpts = [b, a]
            plan.append((rcpts, data))
        # Transactions in batches on one connection, inet and unix.
        batch = 20
        for start in range(0, len(plan), batch):
            with du.Lmtp(dovecot, unix=(start // batch) % 2 == 1) as l:
                for rcpts, data in plan[start:start + batch]:
                    replies = l.send_mail(SENDER, rcpts, data)
                    for r in rcpts:
                        if r == "nosuchuser":
                            assert replies[r][0] == 550, replies
                            assert replies[r][1].startswith("5.1.1 "), \
                                replies
                            continue
                        code, text = replies[r]
                        assert code == 250 and text.startswith(
                            "2.0.0 <%s> " % r), (r, replies,
                                                 l.transcript[-8:])
                        local = [x for x in rcpts if x != "nosuchuser"]
                        want[r].append((data, len(local) == 1))
        assert len(want[a]) + len(want[b]) == sum(
            len([r for r in rc if r != "nosuchuser"]) for rc, _ in plan)

        for user in (a, b):
            expect = want[user]
            # SQL: the rows, the counter, and nothing of the other user.
            counts = du.folder_counts(dovecot, user)
            assert counts["INBOX"] == (len(expect), len(expect)), counts
            assert sum(n for n, _ in counts.values()) == len(expect), counts
            # IMAP: every copy, in delivery order (UIDs ascend).
            got = inbox_bodies(dovecot, user)
            assert [u for u, _ in got] == list(range(1, len(expect) + 1))
            for (uid, body), (sent, single) in zip(got, expect):
                du.check_delivered(body, sent, user, SENDER, single=single)
            # The bytes in SQL are the bytes IMAP serves.
            rows = sql_inbox(dovecot, user)
            assert [r[0] for r in rows] == [u for u, _ in got]
            for (uid, sha, size), (_, body) in zip(rows, got):
                assert sha == hashlib.sha256(body).hexdigest(), uid
                assert size == len(body), uid
        # Two databases, one per user.
        assert dovecot.db_path(a) != dovecot.db_path(b)
        assert dovecot.db_path(a).exists() and dovecot.db_path(b).exists()

    def test_idle_is_told_about_a_delivery(self, dovecot):
        # RFC 2177: new mail is announced with an untagged EXISTS while
        # the client idles; only the watch on the database can do that
        # here (mailbox_idle_check_interval = 1 hour).
        user = dovecot.new_user()
        du.lmtp_deliver(dovecot, [user], du.generate(1, seed=1)[0][1])
        idler = du.Idler(dovecot, user)
        assert idler.exists == 1
        msg = du.generate(3, seed=77)
        r = du.lmtp_deliver(dovecot, [user], msg[0][1])
        assert r[user][0] == 250, r
        m = idler.wait_for(rb"\* (\d+) EXISTS", 15)
        assert m and int(m.group(1)) == 2, idler.seen
        # A second delivery in the same IDLE, over the unix socket with
        # another recipient, and one by dovecot-lda.
        other = dovecot.new_user()
        r = du.lmtp_deliver(dovecot, [other, user], msg[1][1], unix=True)
        assert r[user][0] == 250, r
        m = idler.wait_for(rb"\* (\d+) EXISTS", 15)
        assert m and int(m.group(1)) == 3, idler.seen
        assert du.lda(dovecot, user, msg[2][1])[0] == 0
        m = idler.wait_for(rb"\* (\d+) EXISTS", 15)
        assert m and int(m.group(1)) == 4, idler.seen
        assert idler.done() == "OK", idler.seen

    def test_over_limit_single_recipient(self, dovecot):
        # sqlbox_lmtp: 552 5.3.4 (permanent) before anything is stored;
        # the session goes on and the next message is accepted.
        user = dovecot.new_user()
        login_once(dovecot, user)
        before = sql_totals(dovecot, user)
        big = big_message(LIMIT + 200000)
        ok = du.generate(1, seed=5)[0][1]
        with du.Lmtp(dovecot) as l:
            r = l.send_mail(SENDER, [user], big)
            assert r[user][0] == 552, r
            assert r[user][1].startswith("5.3.4 "), r
            r = l.send_mail(SENDER, [user], ok)
            assert r[user][0] == 250, r
        assert sql_totals(dovecot, user)[0] == before[0] + 1
        got = inbox_bodies(dovecot, user)
        assert len(got) == 1
        du.check_delivered(got[0][1], ok, user, SENDER)
        assert re.search(r"sqlbox: refusing a \d+ byte message for %s: "
                         r"larger than %d" % (user, LIMIT),
                         dovecot.log_text())

    def test_over_limit_multi_recipient(self, dovecot):
        # Every recipient over its limit gets its own 552; nothing is
        # stored in any of the databases.
        users = [dovecot.new_user() for _ in range(3)]
        for u in users:
            login_once(dovecot, u)
        before = [sql_totals(dovecot, u) for u in users]
        r = du.lmtp_deliver(dovecot, users + ["nosuchuser"],
                            big_message(LIMIT + 1000000))
        for u in users:
            assert r[u][0] == 552 and r[u][1].startswith("5.3.4 <%s> " % u), r
        assert r["nosuchuser"][0] == 550, r
        assert [sql_totals(dovecot, u) for u in users] == before

    def test_over_limit_for_one_recipient_only(self, dovecot):
        # A per-user limit (userdb extra field): in one transaction the
        # recipient with the larger limit gets 250 and the message, the
        # other 552 and nothing.
        roomy, tight = dovecot.new_user(), dovecot.new_user()
        du.set_userdb_fields(dovecot, roomy,
                          {"sqlbox_max_message_size": "20M"})
        for u in (roomy, tight):
            login_once(dovecot, u)
        tight_before = sql_totals(dovecot, tight)
        big = big_message(LIMIT + 500000, "mixed")
        for order in ([tight, roomy], [roomy, tight]):
            r = du.lmtp_deliver(dovecot, order, big)
            assert r[roomy][0] == 250, r
            assert r[tight][0] == 552 and r[tight][1].startswith("5.3.4"), r
        assert sql_totals(dovecot, tight) == tight_before
        got = inbox_bodies(dovecot, roomy)
        assert len(got) == 2
        for _, body in got:
            du.check_delivered(body, big, roomy, SENDER, single=False)

    def test_lock_timeout_is_temporary_and_stores_nothing(self, dovecot):
        # DESIGN.md 4: a lock that cannot be had in time is a temporary
        # failure, never a half-stored message. The other recipient of
        # the same transaction is delivered.
        user, other = dovecot.new_user(), dovecot.new_user()
        msgs = du.generate(3, seed=451)
        r = du.lmtp_deliver(dovecot, [user], msgs[0][1])
        assert r[user][0] == 250, r
        before = sql_totals(dovecot, user)
        with du.hold_write_lock(dovecot, user):
            r = du.lmtp_deliver(dovecot, [user, other], msgs[1][1])
            assert 400 <= r[user][0] < 500, r
            assert r[user][1].startswith("4."), r
            assert r[other][0] == 250, r
            r = du.lmtp_deliver(dovecot, [user], msgs[2][1])
            assert 400 <= r[user][0] < 500, r
            # LDA: EX_TEMPFAIL, so the MTA keeps the message.
            status, err = du.lda(dovecot, user, msgs[2][1])
            assert status == du.EX_TEMPFAIL, (status, err)
            assert sql_totals(dovecot, user) == before
        assert sql_totals(dovecot, user) == before
        # The retry after the lock is released is stored, once.
        r = du.lmtp_deliver(dovecot, [user], msgs[1][1])
        assert r[user][0] == 250, r
        assert du.lda(dovecot, user, msgs[2][1])[0] == 0
        got = inbox_bodies(dovecot, user)
        assert len(got) == 3
        du.check_delivered(got[0][1], msgs[0][1], user, SENDER)
        du.check_delivered(got[1][1], msgs[1][1], user, SENDER)
        assert got[2][1] == du.crlf(msgs[2][1])
        assert du.folder_counts(dovecot, user)["INBOX"] == (3, 3)
        other_got = inbox_bodies(dovecot, other)
        assert len(other_got) == 1
        du.check_delivered(other_got[0][1], msgs[1][1], other, SENDER,
                           single=False)


class TestLda:
    def test_into_existing_nested_folder(self, dovecot, user):
        raw = dovecot.raw_imap(user)
        for name in ("Folder", "Folder/Sub", "Über", "Über/Straße"):
            st, text, _ = raw.command(b"CREATE " + quote(mutf7_encode(name)))
            assert st == "OK", (name, text)
        raw.close()
        msgs = du.generate(3, seed=1991)
        status, err = du.lda(dovecot, user, msgs[0][1], "Folder/Sub")
        assert status == 0, err
        # -m takes the UTF-8 name.
        status, err = du.lda(dovecot, user, msgs[1][1], "Über/Straße")
        assert status == 0, err
        counts = du.folder_counts(dovecot, user)
        assert counts["Folder/Sub"] == (1, 1), counts
        assert counts["Über/Straße"] == (1, 1), counts
        # INBOX gets its row when first opened.
        assert counts.get("INBOX", (0, 0)) == (0, 0), counts
        assert counts["Folder"] == (0, 0), counts
        # dovecot-lda 2.3 prepends nothing: the message is stored as given
        # (CRLF).
        assert inbox_bodies(dovecot, user, b'"Folder/Sub"') == [
            (1, du.crlf(msgs[0][1]))]
        assert inbox_bodies(dovecot, user, quote(mutf7_encode(
            "Über/Straße")))[0][1] == du.crlf(msgs[1][1])
        # The same bytes delivered again: a second message sharing the
        # body (DESIGN.md 5: identical bodies of a user are stored once).
        status, err = du.lda(dovecot, user, msgs[0][1], "Folder/Sub")
        assert status == 0, err
        rows = dovecot.sql(user, "SELECT m.uid, m.body_id, b.refcount "
                           "FROM messages m JOIN bodies b ON b.id = "
                           "m.body_id JOIN mailboxes x ON x.id = "
                           "m.mailbox_id WHERE x.name = 'Folder/Sub' "
                           "ORDER BY m.uid")
        assert [r[0] for r in rows] == [1, 2], rows
        assert rows[0][1] == rows[1][1] and rows[0][2] == 2, rows

    def test_missing_folder_goes_to_inbox(self, dovecot, user):
        msg = du.generate(2, seed=1992)
        status, err = du.lda(dovecot, user, msg[0][1], "Nope/Missing")
        assert status == 0, err
        counts = du.folder_counts(dovecot, user)
        assert counts["INBOX"] == (1, 1), counts
        assert not any(n.startswith("Nope") for n in counts), counts
        raw = dovecot.raw_imap(user)
        st, _, lines = raw.command(b'LIST "" "Nope*"')
        assert st == "OK" and lines == [], lines
        raw.close()
        assert inbox_bodies(dovecot, user)[0][1] == du.crlf(msg[0][1])
        assert re.search(r"lda\(%s\).*save failed to open mailbox "
                         r"Nope/Missing: Mailbox doesn't exist" % user,
                         dovecot.log_text())
        # lda_mailbox_autocreate = yes creates it (and its parent).
        status, err = du.lda(dovecot, user, msg[1][1], "Nope/Missing",
                             options=["lda_mailbox_autocreate=yes"])
        assert status == 0, err
        counts = du.folder_counts(dovecot, user)
        assert counts["Nope/Missing"] == (1, 1), counts
        assert counts["INBOX"] == (1, 1), counts

    def test_over_limit_stores_nothing(self, dovecot, user):
        # The save fails in the folder and again in INBOX (the fallback);
        # dovecot-lda answers EX_TEMPFAIL for every error but a full quota
        # (src/lda/main.c), and nothing is stored.
        raw = dovecot.raw_imap(user)
        assert raw.command(b"CREATE Folder/Sub")[0] == "OK"
        raw.close()
        before = sql_totals(dovecot, user)
        status, err = du.lda(dovecot, user, big_message(LIMIT + 4096),
                             "Folder/Sub")
        assert status == du.EX_TEMPFAIL, (status, err)
        assert sql_totals(dovecot, user) == before
        log = dovecot.log_text()
        assert re.search(r"lda\(%s\).*save failed to Folder/Sub: Message is "
                         r"larger than %d bytes" % (user, LIMIT), log)
        assert re.search(r"lda\(%s\).*save failed to INBOX: Message is "
                         r"larger than %d bytes" % (user, LIMIT), log)
        # At the limit exactly it is stored.
        exact = big_message(LIMIT)
        assert len(exact) == LIMIT
        status, err = du.lda(dovecot, user, exact, "Folder/Sub")
        assert status == 0, err
        assert du.folder_counts(dovecot, user)["Folder/Sub"] == (1, 1)
