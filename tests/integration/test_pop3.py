# SPDX-License-Identifier: MIT
"""POP3 (RFC 1939) on sqlbox, through Dovecot's own pop3 server.

What the storage owes POP3 (research note 6.4, DESIGN.md 1.5 "stable UIDL,
exact sizes"):
- STAT and LIST sizes are the exact octets RETR sends once the
  byte-stuffing is undone, CRLF counted (RFC 1939 5, 7 and 10), taken from
  SQL columns; RETR gives what IMAP BODY.PEEK[] gives.
- UIDL is Dovecot's default pop3_uidl_format %08Xu%08Xv of the IMAP UID and
  UIDVALIDITY, as Dovecot's own backends give it, unless the message has a
  stored messages.pop3_uidl; it survives a restart, the loss of every file
  but the database, and expunges of other messages (RFC 1939 7: "The
  unique-id of a message ... persists across sessions").
- DELE takes effect at QUIT only (RFC 1939 6, UPDATE state), through the
  same expunge path as IMAP (tombstone, row gone, body freed when no longer
  referenced); RSET and a lost connection expunge nothing.
- The session's message list is fixed at login (RFC 1939 4: the server
  "acquires an exclusive-access lock on the maildrop"; Dovecot takes no
  lock but keeps the view of the login, and answers "-ERR Message N
  expunged." for what IMAP expunged since); IMAP and POP3 at once lose
  nothing.
- Bad input is refused the way Dovecot's maildir refuses it (the `oracle`
  instance), and changes nothing in the database.

Connections: implicit TLS on the 995 role and STLS on the 110 role (RFC
2595 4), with a context that trusts exactly the instance's certificate.
"""

import hashlib
import poplib
import re
import threading

import pytest

import corpus
from harness import check, sqlbox_only
from pop3util import (BUMP_MODSEQ, INBOX_ID, INBOX_MODSEQ, append_exact,
                      as_retrieved, connect, db_state, imap_flags, imap_view,
                      session, sql_write, top_of, uidl_for, unstuff,
                      wipe_all_but_database)

# A failed password costs 2 s by default (auth_failure_delay); nothing
# here depends on the delay.
DOVECOT_OPTIONS = {"extra_conf": "auth_failure_delay = 0\n"}

TLS_MODES = ["implicit", "stls"]
MESSAGES = corpus.messages()

# RFC 2449 6: what Dovecot 2.3's pop3-login announces before
# authentication (STLS, RFC 2595 4, only before TLS) and pop3 after it.
CAPA_LOGIN = {"CAPA": [], "TOP": [], "UIDL": [], "RESP-CODES": [],
              "PIPELINING": [], "AUTH-RESP-CODE": [], "USER": [],
              "SASL": ["PLAIN", "LOGIN"]}
CAPA_SESSION = {"CAPA": [], "TOP": [], "UIDL": [], "RESP-CODES": [],
                "PIPELINING": [], "AUTH-RESP-CODE": []}


def stuff(message):
    """RFC 1939 3: a line that starts with '.' gets one more '.'."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l
                        for l in lines)


def msg(n):
    """A small distinct message whose body has dot-leading lines."""
    return ("From: pop3@example.org\r\nTo: user@example.org\r\n"
            "Subject: pop3 test %d\r\nMessage-ID: <pop3-%d@sqlbox.test>\r\n"
            "\r\nmessage %d\r\n.dot line %d\r\n..two\r\n.\r\nend\r\n"
            % (n, n, n, n)).encode()


@pytest.fixture(scope="module")
def loaded(dovecot, oracle):
    """The whole corpus in the INBOX of one user on each instance, with its
    exact bytes (dot lines, bare LF, no final newline, ~1 MB, ...)."""
    users = {}
    for inst in (dovecot, oracle):
        user = inst.new_user()
        append_exact(inst, user, [data for _, data in MESSAGES])
        users[inst.backend] = user
    return users


# -- login, capabilities ------------------------------------------------------

class TestLogin:
    @pytest.mark.parametrize("tls", TLS_MODES)
    def test_poplib_capa_user_pass_stat_noop(self, dovecot, user, tls):
        append_exact(dovecot, user, [msg(1), msg(2)])
        ctx = dovecot.ssl_context()
        if tls == "implicit":
            p = poplib.POP3_SSL("127.0.0.1", dovecot.port("pop3s"),
                                context=ctx, timeout=60)
        else:
            p = poplib.POP3("127.0.0.1", dovecot.port("pop3"), timeout=60)
            # RFC 2595 4: STLS is offered before TLS only.
            assert p.capa() == dict(CAPA_LOGIN, STLS=[])
            assert p.stls(context=ctx).startswith(b"+OK")
        try:
            assert p.getwelcome().startswith(b"+OK")
            assert p.capa() == CAPA_LOGIN
            assert p.user(user).startswith(b"+OK")
            assert p.pass_(dovecot.password(user)) == b"+OK Logged in."
            # RFC 2449 5: the capabilities may change after login.
            assert p.capa() == CAPA_SESSION
            _, uv = imap_view(dovecot, user)
            assert p.stat() == (2, sum(len(b) for _, b in uv))
            assert p.noop() == b"+OK"                       # RFC 1939 5
            assert p.quit() == b"+OK Logging out."
        finally:
            p.close()

    @pytest.mark.parametrize("tls", TLS_MODES)
    def test_auth_plain(self, dovecot, user, tls):
        # RFC 5034 4 (SASL for POP3), with the initial response on the
        # command line and after an empty "+ " challenge (RFC 4616).
        append_exact(dovecot, user, [msg(1)])
        for initial in (True, False):
            p = connect(dovecot, tls)
            status = p.auth_plain(user, dovecot.password(user), initial)
            assert status == b"+OK Logged in.", (initial, status)
            assert p.stat()[0] == 1
            assert p.quit() == b"+OK Logging out."

    def test_capabilities_match_maildir(self, dovecot, oracle, user):
        theirs = oracle.new_user()
        for inst, u in ((dovecot, user), (oracle, theirs)):
            p = connect(inst, None)
            before = p.capa()
            p.stls(inst.ssl_context())
            after_tls = p.capa()
            p.login(u, inst.password(u))
            session_capa = p.capa()
            p.quit()
            if inst is dovecot:
                got = (before, after_tls, session_capa)
            else:
                want = (before, after_tls, session_capa)
        assert got == want
        assert got == (dict(CAPA_LOGIN, STLS=[]), CAPA_LOGIN, CAPA_SESSION)


# -- sizes, RETR, TOP, UIDL ---------------------------------------------------

class TestRetrieve:
    @pytest.mark.parametrize("tls", TLS_MODES)
    def test_sizes_and_retr_are_the_imap_bytes(self, dovecot, loaded, tls):
        # RFC 1939 5 (STAT, LIST and RETR "+OK n octets"), 10 (sizes count
        # CRLF line ends), 3 (byte-stuffing): for every corpus message the
        # size equals the unstuffed RETR bytes, which equal BODY.PEEK[].
        user = loaded[dovecot.backend]
        uidvalidity, view = imap_view(dovecot, user)
        assert len(view) == len(MESSAGES)
        p = session(dovecot, user, tls)
        assert p.stat() == (len(view), sum(len(b) for _, b in view))
        sizes = p.list()
        assert sizes == {n: len(b) for n, (_, b) in enumerate(view, 1)}
        for n, (uid, body) in enumerate(view, 1):
            status = p.cmd("RETR %d" % n)
            assert status == b"+OK %d octets" % len(body), (n, status)
            wire = p.read_multi()
            want = as_retrieved(body)
            assert unstuff(wire) == want, MESSAGES[n - 1][0]
            assert wire == stuff(want), MESSAGES[n - 1][0]
        assert p.quit() == b"+OK Logging out."
        big = [b for _, b in view if len(b) > 1000000]
        assert big, "the corpus lost its ~1 MB message"

    def test_poplib_retr_of_dots_bare_lf_no_newline_and_1mb(self, dovecot,
                                                             loaded):
        # The same through poplib, over STLS.
        user = loaded[dovecot.backend]
        _, view = imap_view(dovecot, user)
        names = [n for n, _ in MESSAGES]
        p = poplib.POP3("127.0.0.1", dovecot.port("pop3"), timeout=60)
        try:
            p.stls(context=dovecot.ssl_context())
            p.user(user)
            p.pass_(dovecot.password(user))
            for name in ("dot-lines", "bare-lf", "mixed-eol",
                         "no-final-newline", "attach-1m",
                         "headers-only-noblank"):
                n = names.index(name) + 1
                body = view[n - 1][1]
                status, lines, octets = p.retr(n)
                assert status == b"+OK %d octets" % len(body), name
                assert b"\r\n".join(lines) + b"\r\n" == as_retrieved(body), \
                    name
            p.quit()
        finally:
            p.close()

    def test_sizes_are_the_sql_columns(self, dovecot, loaded):
        sqlbox_only(dovecot)
        user = loaded[dovecot.backend]
        rows = dovecot.sql(
            user, "SELECT m.uid, b.physical_size, b.virtual_size "
                  "FROM messages m JOIN bodies b ON b.id = m.body_id "
                  "WHERE m.mailbox_id = " + INBOX_ID + " ORDER BY m.uid")
        p = session(dovecot, user)
        sizes = p.list()
        uidl = p.uidl()
        p.quit()
        _, view = imap_view(dovecot, user, bodies=False)
        uids = [u for u, _ in view]
        assert [r[0] for r in rows] == uids
        for n, (uid, psize, vsize) in enumerate(rows, 1):
            assert psize == vsize == sizes[n], (uid, psize, vsize, sizes[n])
            assert uidl[n].startswith("%08x" % uid)

    def test_top_is_header_blank_line_and_first_lines(self, dovecot, loaded):
        # RFC 1939 7 TOP msg n: the header, the blank line separating it
        # from the body, then n lines of the body (all of it if shorter).
        user = loaded[dovecot.backend]
        _, view = imap_view(dovecot, user)
        p = session(dovecot, user)
        checked = 0
        for n, (uid, body) in enumerate(view, 1):
            if b"\r\n\r\n" not in body or not body.endswith(b"\r\n"):
                continue            # compared with maildir below
            for lines in (0, 1, 3, 10 ** 9):
                status, wire = p.multi("TOP %d %d" % (n, lines))
                assert status == b"+OK", (n, status)
                assert unstuff(wire) == top_of(body, lines), (
                    MESSAGES[n - 1][0], lines)
                checked += 1
            status, wire = p.multi("TOP %d 999999999" % n)
            assert unstuff(wire) == body
        p.quit()
        assert checked > 150

    def test_answers_match_maildir(self, dovecot, oracle, loaded):
        # The same messages appended the same way: LIST, STAT, RETR and
        # TOP go over the wire byte for byte as Dovecot's maildir sends
        # them (headers-only messages and a missing final newline
        # included); UIDL differs only in the UIDVALIDITY half.
        wires = {}
        for inst in (dovecot, oracle):
            user = loaded[inst.backend]
            uidvalidity, _ = imap_view(inst, user, bodies=False)
            p = session(inst, user)
            out = [p.cmd("STAT"), p.multi("LIST")]
            status, uidl = p.multi("UIDL")
            out.append((status, uidl.replace(b"%08x" % uidvalidity,
                                              b"<uidvalidity>")))
            for n in range(1, len(MESSAGES) + 1):
                out.append(p.multi("RETR %d" % n))
                for lines in (0, 2, 40):
                    out.append(p.multi("TOP %d %d" % (n, lines)))
                out.append(p.cmd("LIST %d" % n))
            p.quit()
            wires[inst.backend] = out
        got, want = wires[dovecot.backend], wires[oracle.backend]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a == b

    def test_uidl_is_uid_and_uidvalidity(self, dovecot, oracle, loaded):
        # %08Xu%08Xv of the IMAP UID and UIDVALIDITY, exactly as maildir
        # derives it; RFC 1939 7: 1 to 70 characters 0x21-0x7E.
        for inst in (dovecot, oracle):
            user = loaded[inst.backend]
            uidvalidity, view = imap_view(inst, user, bodies=False)
            p = session(inst, user)
            uidl = p.uidl()
            want = {n: uidl_for(uid, uidvalidity)
                    for n, (uid, _) in enumerate(view, 1)}
            assert uidl == want, inst.backend
            for n in (1, len(view)):
                assert p.cmd("UIDL %d" % n) == \
                    b"+OK %d %s" % (n, want[n].encode())
            p.quit()
            for u in uidl.values():
                assert re.fullmatch(r"[\x21-\x7e]{1,70}", u)
            assert len(set(uidl.values())) == len(uidl)

    def test_retr_sets_seen_at_quit_top_does_not(self, dovecot, oracle,
                                                 user):
        # Dovecot (pop3_no_flag_updates = no) sets \Seen on messages RETR
        # sent in full, at QUIT; TOP leaves flags alone.
        results = {}
        for inst in (dovecot, oracle):
            u = user if inst is dovecot else inst.new_user()
            append_exact(inst, u, [msg(1), msg(2), msg(3)])
            p = session(inst, u)
            assert p.multi("TOP 1 5")[0] == b"+OK"
            assert p.retr(2)[0].startswith(b"+OK")
            assert p.quit() == b"+OK Logging out."
            results[inst.backend] = imap_flags(inst, u)
        assert results[dovecot.backend] == results[oracle.backend]
        assert results[dovecot.backend] == {1: set(), 2: {"\\Seen"},
                                            3: set()}
        if dovecot.is_sqlbox:
            rows = dovecot.sql(user, "SELECT uid, flags & 8 FROM messages "
                                     "ORDER BY uid")
            assert rows == [[1, 0], [2, 8], [3, 0]]


# -- UIDL stability -----------------------------------------------------------

class TestUidlStability:
    def test_stable_across_restart_wipe_and_other_expunges(self, dovecot,
                                                           user):
        for n in range(1, 9):
            r = dovecot.lmtp_deliver(user, msg(n))
            assert r[user][0] == 250, r
        uidvalidity, view = imap_view(dovecot, user, bodies=False)
        want = {n: uidl_for(uid, uidvalidity)
                for n, (uid, _) in enumerate(view, 1)}
        assert [uid for uid, _ in view] == list(range(1, 9))

        def uidls():
            p = session(dovecot, user, "stls")
            got = p.uidl()
            p.quit()
            return got

        assert uidls() == want
        dovecot.restart()
        assert uidls() == want, "after a restart"
        if dovecot.is_sqlbox:
            # DESIGN.md 1.2: every file but the database deleted.
            dovecot.stop()
            home = str(dovecot.user_dir(user))
            deleted = wipe_all_but_database(home)
            dovecot.start()
            assert uidls() == want, ("after deleting", deleted)
        # IMAP expunges of other messages renumber POP3 messages (RFC
        # 1939 7: numbers are per session) but keep every UIDL.
        c = dovecot.imap(user)
        check(c.select("INBOX"), "SELECT")
        check(c.uid("STORE", "2,5,8", "+FLAGS", "(\\Deleted)"), "STORE")
        check(c.expunge(), "EXPUNGE")
        c.logout()
        kept = [want[n] for n in (1, 3, 4, 6, 7)]
        assert uidls() == dict(enumerate(kept, 1))
        # new mail gets new UIDs (RFC 3501 2.3.1.1), so new UIDLs
        r = dovecot.lmtp_deliver(user, msg(9))
        assert r[user][0] == 250
        assert uidls() == dict(enumerate(kept + [uidl_for(9, uidvalidity)],
                                         1))

    def test_stored_pop3_uidl_and_order_are_used(self, dovecot, user):
        # A stored UIDL (messages.pop3_uidl, e.g. migrated from another
        # server) wins over the format (MAIL_FETCH_UIDL_BACKEND), and
        # messages.pop3_order orders POP3's list (MAIL_SORT_POP3_ORDER;
        # unordered messages last), changed by hand per PLUGIN.md.
        sqlbox_only(dovecot)
        bodies = [msg(n) for n in range(1, 5)]
        append_exact(dovecot, user, bodies)
        uidvalidity, _ = imap_view(dovecot, user, bodies=False)
        sql_write(dovecot, user, "BEGIN IMMEDIATE;\n" + BUMP_MODSEQ + """
            UPDATE messages SET pop3_uidl = 'migrated-' || uid,
                   pop3_order = CASE uid WHEN 1 THEN 3 WHEN 2 THEN 1
                                         WHEN 3 THEN 2 ELSE 0 END,
                   modseq = %s
             WHERE mailbox_id = %s AND uid IN (1, 2, 3);
            COMMIT;""" % (INBOX_MODSEQ, INBOX_ID))
        order = [2, 3, 1, 4]                        # by pop3_order, 0 last
        p = session(dovecot, user)
        assert p.uidl() == {1: "migrated-2", 2: "migrated-3",
                            3: "migrated-1", 4: uidl_for(4, uidvalidity)}
        assert p.list() == {n: len(bodies[uid - 1])
                            for n, uid in enumerate(order, 1)}
        for n, uid in enumerate(order, 1):
            status, got = p.retr(n)
            assert got == bodies[uid - 1], (n, uid)
        assert p.cmd("DELE 1") == b"+OK Marked to be deleted."
        assert p.quit() == b"+OK Logging out, messages deleted."
        # POP3 message 1 was UID 2
        assert dovecot.sql(user, "SELECT uid FROM expunged") == [[2]]
        assert [u for u, _ in imap_view(dovecot, user, bodies=False)[1]] \
            == [1, 3, 4]

    def test_order_is_read_from_sql_at_each_login(self, dovecot, user):
        # A folder without POP3 orders lists in UID order; one order set
        # by hand (nothing else changed, no MODSEQ) puts its message
        # first at the next login, and clearing it restores UID order.
        sqlbox_only(dovecot)
        append_exact(dovecot, user, [msg(n) for n in range(1, 5)])
        uidvalidity, _ = imap_view(dovecot, user, bodies=False)

        def listed():
            p = session(dovecot, user)
            uidls = p.uidl()
            p.quit()
            return [uidls[n] for n in sorted(uidls)]

        def uidls_of(uids):
            return [uidl_for(uid, uidvalidity) for uid in uids]

        assert listed() == uidls_of([1, 2, 3, 4])
        sql_write(dovecot, user, "UPDATE messages SET pop3_order = 1"
                  " WHERE mailbox_id = %s AND uid = 3;" % INBOX_ID)
        assert listed() == uidls_of([3, 1, 2, 4])
        sql_write(dovecot, user, "UPDATE messages SET pop3_order = 0;")
        assert listed() == uidls_of([1, 2, 3, 4])


# -- DELE, RSET, QUIT, lost connections ---------------------------------------

class TestDelete:
    def test_dele_then_quit_expunges(self, dovecot, user):
        # RFC 1939 6: the UPDATE state removes the messages marked
        # deleted. Message 2 has the same bytes as message 1 (one shared
        # body, DESIGN.md 5), message 3 a body of its own.
        shared, own = msg(1), msg(3)
        append_exact(dovecot, user, [shared, shared, own, msg(4)])
        if dovecot.is_sqlbox:
            rows = dovecot.sql(user, "SELECT uid, body_id FROM messages "
                                     "ORDER BY uid")
            body = {uid: b for uid, b in rows}
            assert body[1] == body[2] != body[3], rows
            assert dovecot.sql(user, "SELECT count(*) FROM body_chunks "
                                     "WHERE body_id = ?", [body[3]]) != [[0]]
            modseq = dovecot.sql(user, "SELECT highestmodseq FROM "
                                       "mailboxes WHERE name = 'INBOX'")[0][0]
        p = session(dovecot, user)
        assert p.cmd("DELE 1") == b"+OK Marked to be deleted."
        assert p.cmd("DELE 3") == b"+OK Marked to be deleted."
        assert p.stat() == (2, len(shared) + len(msg(4)))
        assert p.quit() == b"+OK Logging out, messages deleted."
        _, view = imap_view(dovecot, user)
        assert view == [(2, shared), (4, msg(4))]
        p = session(dovecot, user)
        assert p.stat() == (2, len(shared) + len(msg(4)))
        p.quit()
        if not dovecot.is_sqlbox:
            return
        tomb = dovecot.sql(user, "SELECT uid, modseq FROM expunged "
                                 "ORDER BY uid")
        assert [t[0] for t in tomb] == [1, 3]
        assert all(t[1] > modseq for t in tomb), (tomb, modseq)
        assert dovecot.sql(user, "SELECT uid FROM messages ORDER BY uid") \
            == [[2], [4]]
        # the shared body stays (message 2 uses it), the other is freed
        assert dovecot.sql(user, "SELECT refcount FROM bodies WHERE id = ?",
                           [body[1]]) == [[1]]
        assert dovecot.sql(user, "SELECT count(*) FROM bodies WHERE id = ?",
                           [body[3]]) == [[0]]
        assert dovecot.sql(user, "SELECT count(*) FROM body_chunks "
                                 "WHERE body_id = ?", [body[3]]) == [[0]]
        assert dovecot.sql(user, "SELECT messages, psize FROM mailboxes "
                                 "WHERE name = 'INBOX'") == \
            [[2, len(shared) + len(msg(4))]]

    def test_deleted_messages_are_gone_until_rset(self, dovecot, user):
        append_exact(dovecot, user, [msg(1), msg(2), msg(3)])
        p = session(dovecot, user)          # the first login may claim
        p.quit()                            # \Recent; start after it
        before = db_state(dovecot, user)
        p = session(dovecot, user)
        assert p.cmd("DELE 2") == b"+OK Marked to be deleted."
        # RFC 1939 5: a message marked deleted may not be referred to
        for cmd in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"):
            assert p.cmd(cmd) == b"-ERR Message is deleted.", cmd
        assert p.stat() == (2, len(msg(1)) + len(msg(3)))
        assert sorted(p.list()) == [1, 3]
        assert sorted(p.uidl()) == [1, 3]
        assert p.cmd("NOOP") == b"+OK"
        assert p.cmd("RSET") == b"+OK"                     # RFC 1939 5
        assert p.stat() == (3, len(msg(1)) + len(msg(2)) + len(msg(3)))
        assert p.multi("TOP 2 0")[0] == b"+OK"
        assert p.quit() == b"+OK Logging out."
        assert db_state(dovecot, user) == before
        assert [u for u, _ in imap_view(dovecot, user, bodies=False)[1]] \
            == [1, 2, 3]

    def test_dele_then_lost_connection_expunges_nothing(self, dovecot,
                                                        oracle, user):
        # RFC 1939 6: without QUIT the session never reaches UPDATE. The
        # RETR makes Dovecot write \Seen at disconnect anyway (the same on
        # maildir); the DELEs must not be applied.
        flags = {}
        for inst in (dovecot, oracle):
            u = user if inst is dovecot else inst.new_user()
            append_exact(inst, u, [msg(1), msg(2), msg(3)])
            mark = inst.log_size()
            p = session(inst, u)
            assert p.retr(1)[0].startswith(b"+OK")
            assert p.cmd("DELE 1").startswith(b"+OK")
            assert p.cmd("DELE 2").startswith(b"+OK")
            p.drop()
            assert inst.wait_sessions_closed(mark, timeout=30)
            assert [x for x, _ in imap_view(inst, u, bodies=False)[1]] \
                == [1, 2, 3], inst.backend
            p = session(inst, u)
            assert p.stat()[0] == 3
            p.quit()
            flags[inst.backend] = imap_flags(inst, u)
        assert flags[dovecot.backend] == flags[oracle.backend]
        if dovecot.is_sqlbox:
            assert dovecot.sql(user, "SELECT count(*) FROM expunged") == [[0]]
            assert dovecot.sql(user, "SELECT count(*) FROM messages") == [[3]]


# -- IMAP and POP3 at once ----------------------------------------------------

def normalise_uidvalidity(line, uidvalidity):
    return line.replace(b"%08x" % uidvalidity, b"<uidvalidity>")


class TestImapAndPop3:
    def test_session_keeps_its_login_view_like_maildir(self, dovecot,
                                                       oracle, user):
        # While a POP3 session is open, IMAP appends one message and
        # expunges messages 2 and 4. The POP3 session keeps its list;
        # what it answers for the expunged ones must be what maildir
        # answers ("-ERR Message N expunged."), and its DELE of another
        # message still works.
        transcripts = {}
        bodies = [msg(n) for n in range(1, 7)]
        for inst in (dovecot, oracle):
            u = user if inst is dovecot else inst.new_user()
            append_exact(inst, u, bodies)
            uidvalidity, _ = imap_view(inst, u, bodies=False)
            p = session(inst, u)
            t = [p.cmd("STAT"), p.multi("LIST"), p.multi("UIDL")]
            c = inst.imap(u)
            append_exact(inst, u, [msg(7)])
            check(c.select("INBOX"), "SELECT")
            check(c.uid("STORE", "2,4", "+FLAGS", "(\\Deleted)"), "STORE")
            check(c.expunge(), "EXPUNGE")
            t += [p.cmd("STAT"), p.multi("LIST"), p.multi("UIDL")]
            for cmd in ("RETR 1", "RETR 2", "RETR 2", "TOP 4 0", "LIST 2",
                        "UIDL 2", "RETR 3", "RETR 6", "DELE 2", "DELE 5"):
                t.append(p.multi(cmd) if cmd.split()[0] in ("RETR", "TOP")
                         else p.cmd(cmd))
            t.append(p.quit())
            p = session(inst, u)
            t += [p.cmd("STAT"), p.multi("UIDL")]
            p.quit()
            transcripts[inst.backend] = [
                tuple(normalise_uidvalidity(x, uidvalidity)
                      if isinstance(x, bytes) else x for x in item)
                if isinstance(item, tuple) else
                normalise_uidvalidity(item, uidvalidity) for item in t]
        got = transcripts[dovecot.backend]
        want = transcripts[oracle.backend]
        for i, (a, b) in enumerate(zip(got, want)):
            assert a == b, (i, a, b)
        assert len(got) == len(want)
        # and the things that are not just "like maildir":
        assert got[3] == got[0] == b"+OK 6 %d" % sum(len(b) for b in bodies)
        assert got[4] == got[1]
        assert got[6][0] == b"+OK %d octets" % len(bodies[0])
        assert unstuff(got[6][1]) == bodies[0]
        assert got[7] == (b"-ERR Message 2 expunged.", None)
        assert got[-2] == b"+OK 4 %d" % sum(
            len(b) for b in (bodies[0], bodies[2], bodies[5], msg(7)))

    def test_concurrent_imap_changes_lose_nothing(self, dovecot, user):
        # An IMAP client appends and expunges its own messages while POP3
        # sessions list, retrieve and delete theirs: each POP3 session,
        # right after its LIST, lets the IMAP thread make one change (an
        # APPEND, every other time also an EXPUNGE), which then runs while
        # the session retrieves. Every RETR gives the exact bytes of a
        # known message, with the LIST size, or "-ERR Message N expunged."
        # for one IMAP expunged; each session keeps its login list; at the
        # end exactly the expected messages are left (nothing lost, nothing
        # resurrected), the counters agree, and the log is clean.
        steps = 30
        pop_owned = [msg(1000 + n) for n in range(steps // 3)]
        imap_initial = [msg(2000 + n) for n in range(steps // 2)]
        known = {hashlib.sha256(b).digest(): b
                 for b in pop_owned + imap_initial}
        append_exact(dovecot, user, pop_owned + imap_initial)
        _, view = imap_view(dovecot, user, bodies=False)
        uid_of = {b: uid for (uid, _), b in zip(view, pop_owned +
                                                 imap_initial)}
        imap_expunged, imap_added, errors = set(), [], []
        go = threading.Semaphore(0)

        def imap_worker():
            try:
                c = dovecot.imap(user)
                check(c.select("INBOX"), "SELECT")
                victims = [uid_of[b] for b in imap_initial]
                for i in range(steps):
                    if not go.acquire(timeout=120):
                        raise RuntimeError("no POP3 session came")
                    body = msg(3000 + i)
                    known[hashlib.sha256(body).digest()] = body
                    typ, data = c.append("INBOX", None, None, body)
                    assert typ == "OK", data
                    m = re.search(rb"APPENDUID \d+ (\d+)", data[-1])
                    imap_added.append((int(m.group(1)), body))
                    if i % 2 == 0:
                        victim = victims.pop(0)
                        imap_expunged.add(victim)
                        check(c.uid("STORE", str(victim), "+FLAGS",
                                    "(\\Deleted)"), "STORE")
                        check(c.expunge(), "EXPUNGE")
                c.logout()
            except Exception as e:            # reported by the main thread
                errors.append(repr(e))

        worker = threading.Thread(target=imap_worker)
        worker.start()
        deleted_by_pop = set()
        retrieved = expunged_answers = 0
        try:
            for i in range(steps):
                p = session(dovecot, user, TLS_MODES[i % 2])
                stat = p.stat()
                sizes = p.list()
                go.release()                 # the IMAP change starts now
                assert len(sizes) == stat[0]
                assert sum(sizes.values()) == stat[1]
                dele = {}
                for n, size in sizes.items():
                    status, got = p.retr(n)
                    if got is None:
                        assert status == b"-ERR Message %d expunged." % n, \
                            status
                        expunged_answers += 1
                        continue
                    retrieved += 1
                    assert status == b"+OK %d octets" % size
                    assert len(got) == size
                    assert hashlib.sha256(got).digest() in known, got[:200]
                    if got in pop_owned and got not in deleted_by_pop and \
                            not dele and i % 3 == 0:
                        assert p.cmd("DELE %d" % n) == \
                            b"+OK Marked to be deleted."
                        deleted_by_pop.add(got)
                        dele[n] = size
                # the list is still the one of the login
                assert p.stat() == (stat[0] - len(dele),
                                    stat[1] - sum(dele.values()))
                assert p.list() == {n: s for n, s in sizes.items()
                                    if n not in dele}
                assert p.quit() == (b"+OK Logging out, messages deleted."
                                    if dele else b"+OK Logging out.")
        finally:
            for _ in range(steps):
                go.release()                 # never leave the thread hanging
            worker.join(120)
        assert not worker.is_alive()
        assert errors == []
        left = sorted(b for _, b in imap_view(dovecot, user)[1])
        want = sorted((set(pop_owned) - deleted_by_pop) |
                      {b for b in imap_initial
                       if uid_of[b] not in imap_expunged} |
                      {b for uid, b in imap_added})
        assert left == want
        assert len(deleted_by_pop) == steps // 3
        assert len(imap_expunged) == steps // 2
        assert retrieved > steps * 10, (retrieved, expunged_answers)
        if dovecot.is_sqlbox:
            st = dovecot.sql(user, "SELECT messages, psize FROM mailboxes "
                                   "WHERE name = 'INBOX'")[0]
            assert st == [len(want), sum(len(b) for b in want)]
            assert dovecot.sql(user, "SELECT count(*) FROM expunged")[0][0] \
                == len(imap_expunged) + len(deleted_by_pop)


# -- bad input ----------------------------------------------------------------

def first_login(inst, user):
    """One session so that whatever a first login does (\\Recent) is done
    before a "nothing changes" snapshot."""
    p = session(inst, user)
    p.quit()


def run_both(dovecot, oracle, user, fn):
    """fn(inst, user) -> transcript on both instances (same messages);
    returns (sqlbox's, maildir's). Nothing may change while fn runs: not
    the database, nor, on maildir, the messages and flags."""
    theirs = oracle.new_user()
    out = {}
    for inst, u in ((dovecot, user), (oracle, theirs)):
        append_exact(inst, u, [msg(1), msg(2), msg(3)])
        first_login(inst, u)
        before = db_state(inst, u)
        mark = inst.log_size()
        out[inst.backend] = fn(inst, u)
        assert inst.wait_sessions_closed(mark, timeout=30)
        assert db_state(inst, u) == before, "%s changed" % inst.backend
        p = session(inst, u)
        assert p.stat()[0] == 3
        p.quit()
    return out[dovecot.backend], out[oracle.backend]


PRE_LOGIN = ["STAT", "LIST", "LIST 1", "RETR 1", "TOP 1 0", "DELE 1", "UIDL",
             "RSET", "NOOP", "LAST", "PASS secret", "APOP user digest", "",
             "AUTH XYZ", "QUIT"]

BAD_NUMBERS = ["RETR", "RETR 0", "RETR -1", "RETR 4", "RETR abc", "RETR 1x",
               "RETR 1 2", "RETR 4294967296", "RETR 99999999999999999999",
               "RETR 0x1", "TOP 1", "TOP 0 1", "TOP 4 1", "TOP 1 -1",
               "TOP 1 x", "TOP 1 1 1", "TOP -1 1", "LIST 0", "LIST 4",
               "LIST -2", "LIST x", "LIST 1 ", "UIDL 0", "UIDL 4",
               "UIDL abc", "DELE 0", "DELE 4", "DELE -1", "DELE x", "DELE",
               "USER x", "PASS x", "STLS", "AUTH PLAIN", "APOP a b", "XYZZY",
               "LAST"]


class TestBadInput:
    def test_commands_before_login(self, dovecot, oracle, user):
        # RFC 1939 4: in the AUTHORIZATION state only USER/PASS, APOP,
        # AUTH (RFC 5034), CAPA, STLS and QUIT are valid. Dovecot's login
        # process disconnects after 3 bad commands, so each command gets
        # a connection of its own. (No failed authentication here: see
        # TestWrongPassword.)
        def fn(inst, u):
            out = []
            for line in PRE_LOGIN:
                p = connect(inst, "stls")
                out.append((line, p.cmd(line)))
                p.close()
            return out
        got, want = run_both(dovecot, oracle, user, fn)
        assert got == want
        for line, status in got:
            if line != "QUIT":
                assert status.startswith(b"-ERR"), (line, status)

    def test_bad_message_numbers_and_arguments(self, dovecot, oracle, user):
        # RFC 1939 5 and 7: a message number must be an existing one, not
        # deleted; message numbers start at 1 (RFC 1939 3). Dovecot
        # disconnects after 20 bad commands in a row: NOOP between.
        def fn(inst, u):
            p = session(inst, u, "stls")
            out = []
            for i, line in enumerate(BAD_NUMBERS):
                out.append((line, p.cmd(line)))
                if i % 10 == 9:
                    out.append(("NOOP", p.cmd("NOOP")))
            out.append(("STAT", p.cmd("STAT")))
            out.append(("QUIT", p.quit()))
            return out
        got, want = run_both(dovecot, oracle, user, fn)
        assert got == want
        for line, status in got:
            if line not in ("NOOP", "STAT", "QUIT"):
                assert status.startswith(b"-ERR"), (line, status)
        assert ("STAT", b"+OK 3 %d" % sum(len(msg(n)) for n in (1, 2, 3))) \
            in got
        assert got[-1] == ("QUIT", b"+OK Logging out.")

    def test_too_many_bad_commands_disconnects(self, dovecot, oracle, user):
        def fn(inst, u):
            p = session(inst, u)
            out = [p.cmd("RETR 0") for _ in range(21)]
            out.append(p.readline())
            out.append(p.at_eof())
            return out
        got, want = run_both(dovecot, oracle, user, fn)
        assert got == want
        assert got[:21] == [b"-ERR There's no message 0."] * 21
        assert got[21:] == [b"-ERR Too many bad commands.", True]

    def test_overlong_lines(self, dovecot, oracle, user):
        # RFC 1939 3: arguments of up to 40 characters; RFC 2449 4: a
        # command line of up to 255 octets. Dovecot reads up to 1 KiB
        # before login and 2 KiB after, refuses longer lines and
        # disconnects.
        def fn(inst, u):
            out = []
            # at most one TLS record per line: a longer line would leave
            # unread bytes behind at the server's close, and the RST that
            # then follows could destroy its last answer before we read it
            for length in (200, 1000, 3000, 10000):
                p = connect(inst, "stls")
                out.append(("pre", length, p.cmd("USER " + "u" * length)))
                out.append(p.at_eof() if out[-1][2].startswith(b"-ERR")
                           else p.quit())
            for length in (250, 1900, 2100, 10000):
                p = session(inst, u)
                out.append(("post", length,
                            p.cmd("NOOP " + "x" * length)))
                if out[-1][2].startswith(b"-ERR"):
                    out.append(p.at_eof())
                else:
                    out.append((p.cmd("RETR 1 " + "1" * length), p.quit()))
            return out
        got, want = run_both(dovecot, oracle, user, fn)
        assert got == want
        assert ("pre", 3000, b"-ERR Input buffer full, aborting") in got
        assert ("post", 2100, b"-ERR Input line too long.") in got
        assert ("post", 250, b"+OK") in got


# -- last: a failed login -----------------------------------------------------

class TestWrongPassword:
    """Last in this module: a failed login makes Dovecot's auth delay
    further logins from the same address (anvil's auth penalty, up to 15 s,
    forgotten after 29 s), which would slow every test after it. Nothing
    here logs in successfully afterwards."""

    def test_wrong_password_gives_no_session(self, dovecot, user):
        # RFC 1939 7 (PASS), RFC 2449 8 / RFC 3206 4 ([AUTH]).
        append_exact(dovecot, user, [msg(1)])
        first_login(dovecot, user)
        before = db_state(dovecot, user)
        mark = dovecot.log_size()
        p = connect(dovecot, "implicit")
        assert p.cmd("USER " + user) == b"+OK"
        assert p.cmd("PASS wrong-" + dovecot.password(user)) == \
            b"-ERR [AUTH] Authentication failed."
        # still in the AUTHORIZATION state: no session was created
        assert p.cmd("STAT") == b"-ERR Unknown command."
        assert p.cmd("RETR 1") == b"-ERR Unknown command."
        assert p.quit() == b"+OK Logging out"
        assert dovecot.wait_sessions_closed(mark, timeout=30)
        assert db_state(dovecot, user) == before
        assert "pop3-login: Info: Login: user=<%s>" % user not in \
            dovecot.log_text(mark)
