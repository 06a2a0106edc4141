# SPDX-License-Identifier: MIT
"""CONDSTORE and QRESYNC (RFC 7162) with MODSEQs stored in SQLite.

MODSEQs must be the same in every process and must never go down, and a
client resynchronising with QRESYNC must learn every change made since its
HIGHESTMODSEQ: by another session, by LMTP, by SQL written as PLUGIN.md
shows, across restarts and after `doveadm force-resync`. VANISHED (EARLIER)
may name more UIDs than were expunged (UIDs of the client's range that no
longer exist), never fewer, and never a UID that still exists; the FETCH
list holds every message changed since, and no unchanged one.
"""

import re

import pytest

from harness import sqlbox_only

MSG = (b"From: a@example.org\r\nTo: b@example.org\r\n"
       b"Subject: condstore %d\r\nMessage-ID: <cs-%d@example.org>\r\n\r\n"
       b"body %d\r\n")


def ok(raw, *parts):
    status, text, untagged = raw.command(*parts)
    assert status == "OK", (parts, status, text, untagged)
    return text, untagged


def fill(inst, user, n):
    c = inst.imap(user)
    for i in range(1, n + 1):
        assert c.append("INBOX", None, None, MSG % (i, i, i))[0] == "OK"
    c.logout()


def qresync_session(inst, user):
    raw = inst.raw_imap(user)
    ok(raw, b"ENABLE QRESYNC")
    return raw


def select_info(untagged):
    info = {}
    for line in untagged:
        m = re.match(rb"\* OK \[(UIDVALIDITY|HIGHESTMODSEQ|UIDNEXT) (\d+)\]",
                     line)
        if m:
            info[m.group(1).decode()] = int(m.group(2))
        assert b"NOMODSEQ" not in line, line
    return info


def uid_set(text):
    out = set()
    for part in text.split(","):
        a, _, b = part.partition(":")
        out.update(range(int(a), int(b or a) + 1))
    return out


def parse_fetches(untagged):
    """{uid: (flags, modseq)} of the FETCH responses."""
    got = {}
    for line in untagged:
        m = re.match(rb"\* \d+ FETCH \((.*)\)\r\n$", line)
        if not m:
            continue
        body = m.group(1)
        uid = int(re.search(rb"UID (\d+)", body).group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", body)
        modseq = re.search(rb"MODSEQ \((\d+)\)", body)
        got[uid] = (
            frozenset(flags.group(1).decode().split()) - {"\\Recent"}
            if flags else None,
            int(modseq.group(1)) if modseq else None)
    return got


def parse_vanished(untagged):
    out = set()
    for line in untagged:
        m = re.match(rb"\* VANISHED (\(EARLIER\) )?([0-9:,]+)\r\n$", line)
        if m:
            out |= uid_set(m.group(2).decode())
    return out


def server_state(inst, user):
    """{uid: (flags, modseq)} from a fresh session."""
    raw = qresync_session(inst, user)
    ok(raw, b"EXAMINE INBOX")
    _, untagged = ok(raw, b"UID FETCH 1:* (FLAGS MODSEQ)")
    raw.close()
    return parse_fetches(untagged)


def highestmodseq(inst, user):
    raw = qresync_session(inst, user)
    _, untagged = ok(raw, b"EXAMINE INBOX")
    raw.close()
    return select_info(untagged)["HIGHESTMODSEQ"]


def check_resync(inst, user, uidvalidity, before, since, known=None):
    """SELECT (QRESYNC) from `since` in a new session, checked against the
    state `before` the client had and the server's state now."""
    now = server_state(inst, user)
    raw = qresync_session(inst, user)
    args = b"%d %d" % (uidvalidity, since)
    if known:
        args += b" " + known.encode()
    _, untagged = ok(raw, b"SELECT INBOX (QRESYNC (" + args + b"))")
    raw.close()
    vanished = parse_vanished(untagged)
    fetched = parse_fetches(untagged)
    expunged = set(before) - set(now)
    changed = {uid for uid, st in now.items()
               if uid not in before or st[0] != before[uid][0]}
    if known:
        # only the client's known UIDs are reported (RFC 7162 3.2.5)
        expunged &= uid_set(known)
        changed &= uid_set(known)
    unchanged = {uid for uid, st in now.items() if st[1] <= since}
    assert expunged <= vanished, ("expunges missed", expunged - vanished)
    assert not vanished & set(now), "VANISHED names existing UIDs"
    assert changed <= set(fetched), ("changes missed",
                                     changed - set(fetched))
    assert not unchanged & set(fetched), "unchanged messages sent again"
    for uid, st in fetched.items():
        assert st == now[uid], (uid, st, now[uid])
    return vanished, fetched


def test_select_reports_highestmodseq_and_fetch_modseq_is_the_same_everywhere(
        dovecot, user):
    sqlbox_only(dovecot)
    fill(dovecot, user, 5)
    a = qresync_session(dovecot, user)
    b = qresync_session(dovecot, user)
    _, ua = ok(a, b"SELECT INBOX")
    _, ub = ok(b, b"SELECT INBOX")
    ia, ib = select_info(ua), select_info(ub)
    assert ia["HIGHESTMODSEQ"] == ib["HIGHESTMODSEQ"] > 1
    ok(b, b"UID STORE 2 +FLAGS (\\Flagged)")
    ok(a, b"NOOP")
    fa = parse_fetches(ok(a, b"UID FETCH 1:* (MODSEQ)")[1])
    fb = parse_fetches(ok(b, b"UID FETCH 1:* (MODSEQ)")[1])
    assert fa == fb
    sql = dict(dovecot.sql(user, "SELECT uid, modseq FROM messages"))
    assert {uid: m for uid, (_, m) in fa.items()} == sql
    assert fa[2][1] > ia["HIGHESTMODSEQ"]
    hms = dovecot.sql(user, "SELECT highestmodseq FROM mailboxes "
                      "WHERE name = 'INBOX'")[0][0]
    _, untagged = ok(a, b"STATUS INBOX (HIGHESTMODSEQ)")
    assert b"HIGHESTMODSEQ %d" % hms in b"".join(untagged)
    # SEARCH MODSEQ from the other process's value
    _, untagged = ok(a, b"UID SEARCH MODSEQ %d" % (ia["HIGHESTMODSEQ"] + 1))
    assert re.search(rb"\* SEARCH 2 \(MODSEQ \d+\)", b"".join(untagged))


def test_store_unchangedsince_fresh_and_stale(dovecot, user):
    """A fresh UNCHANGEDSINCE succeeds; a stale one fails with MODIFIED,
    also when the conflicting change came from another process a moment
    before and this session has not synced since."""
    sqlbox_only(dovecot)
    fill(dovecot, user, 3)
    a = qresync_session(dovecot, user)
    b = qresync_session(dovecot, user)
    ok(a, b"SELECT INBOX")
    ok(b, b"SELECT INBOX")
    modseqs = parse_fetches(ok(a, b"UID FETCH 1:* (MODSEQ)")[1])
    m1 = modseqs[1][1]
    # fresh: succeeds, with a new MODSEQ
    text, untagged = ok(a, b"UID STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)"
                        % m1)
    assert "MODIFIED" not in text
    new = parse_fetches(untagged)[1][1]
    assert new > m1
    # the other process changes message 2, then A tries with the old value
    m2 = modseqs[2][1]
    ok(b, b"UID STORE 2 +FLAGS (\\Answered)")
    text, untagged = ok(a, b"UID STORE 2 (UNCHANGEDSINCE %d) +FLAGS "
                        b"(\\Flagged)" % m2)
    assert re.match(r"\[MODIFIED 2\]", text), text
    flags = server_state(dovecot, user)[2][0]
    assert flags == {"\\Answered"}, "the refused change was applied"
    # stale from A's own change
    text, _ = ok(a, b"UID STORE 1 (UNCHANGEDSINCE %d) -FLAGS (\\Seen)" % m1)
    assert re.match(r"\[MODIFIED 1\]", text), text
    # and fresh again, with the value the conflict reported
    cur = parse_fetches(ok(a, b"UID FETCH 2 (MODSEQ)")[1])[2][1]
    text, _ = ok(a, b"UID STORE 2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)"
                 % cur)
    assert "MODIFIED" not in text
    assert server_state(dovecot, user)[2][0] == {"\\Answered", "\\Flagged"}


def changes_elsewhere(dovecot, user, first_new):
    """Changes by another IMAP session, by LMTP and by documented SQL."""
    other = dovecot.raw_imap(user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 2,5 +FLAGS (\\Seen)")
    ok(other, b"UID STORE 7 +FLAGS ($Label1)")
    ok(other, b"UID STORE 3,6 +FLAGS (\\Deleted)")
    ok(other, b"EXPUNGE")
    other.close()
    replies = dovecot.lmtp_deliver([user], MSG % (first_new, first_new,
                                                  first_new))
    assert replies[user][0] == 250, replies
    dovecot.sql_by_hand(user, """
BEGIN IMMEDIATE;
UPDATE mailboxes SET highestmodseq = highestmodseq + 65536
 WHERE name = 'INBOX';
UPDATE messages SET flags = flags | 4,
       modseq = (SELECT highestmodseq FROM mailboxes WHERE name = 'INBOX')
 WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = 'INBOX')
   AND uid = 8;
COMMIT;
""")


@pytest.mark.parametrize("then", ["same-server", "restart", "force-resync"])
def test_qresync_after_changes_elsewhere(dovecot, user, then):
    sqlbox_only(dovecot)
    fill(dovecot, user, 10)
    raw = qresync_session(dovecot, user)
    _, untagged = ok(raw, b"SELECT INBOX")
    info = select_info(untagged)
    before = parse_fetches(ok(raw, b"UID FETCH 1:* (FLAGS MODSEQ)")[1])
    raw.close()
    changes_elsewhere(dovecot, user, 11)
    if then == "restart":
        dovecot.restart()
    elif then == "force-resync":
        dovecot.doveadm("force-resync", "-u", user, "INBOX")
    after = highestmodseq(dovecot, user)
    assert after > info["HIGHESTMODSEQ"]
    vanished, fetched = check_resync(dovecot, user, info["UIDVALIDITY"],
                                     before, info["HIGHESTMODSEQ"])
    assert {3, 6} <= vanished
    assert {2, 5, 7, 8, 11} == set(fetched)
    assert fetched[8][0] == {"\\Deleted"}
    assert fetched[7][0] == {"$Label1"}
    # with known UIDs, and from the new value: nothing to report
    check_resync(dovecot, user, info["UIDVALIDITY"], before,
                 info["HIGHESTMODSEQ"], known="1:10")
    now = server_state(dovecot, user)
    vanished, fetched = check_resync(dovecot, user, info["UIDVALIDITY"], now,
                                     after)
    assert fetched == {} and vanished == set()


def test_highestmodseq_never_goes_down(dovecot, user):
    sqlbox_only(dovecot)
    fill(dovecot, user, 3)
    seen = [highestmodseq(dovecot, user)]
    raw = dovecot.raw_imap(user)
    ok(raw, b"SELECT INBOX")
    ok(raw, b"UID STORE 1:3 +FLAGS (\\Deleted)")
    ok(raw, b"EXPUNGE")
    raw.close()
    seen.append(highestmodseq(dovecot, user))
    dovecot.restart()
    seen.append(highestmodseq(dovecot, user))
    dovecot.doveadm("force-resync", "-u", user, "INBOX")
    seen.append(highestmodseq(dovecot, user))
    fill(dovecot, user, 1)
    seen.append(highestmodseq(dovecot, user))
    assert seen == sorted(seen), seen
    assert seen[1] > seen[0] and seen[-1] > seen[-2]


def test_uid_fetch_changedsince_vanished(dovecot, user):
    """In a selected session: FETCH (CHANGEDSINCE n VANISHED) after
    another process's changes, and VANISHED instead of EXPUNGE."""
    sqlbox_only(dovecot)
    fill(dovecot, user, 6)
    a = qresync_session(dovecot, user)
    _, untagged = ok(a, b"SELECT INBOX")
    h = select_info(untagged)["HIGHESTMODSEQ"]
    b = dovecot.raw_imap(user)
    ok(b, b"SELECT INBOX")
    ok(b, b"UID STORE 4 +FLAGS (\\Flagged)")
    ok(b, b"UID STORE 5 +FLAGS (\\Deleted)")
    ok(b, b"EXPUNGE")
    b.close()
    _, untagged = ok(a, b"NOOP")
    assert parse_vanished(untagged) == {5}
    assert not any(re.match(rb"\* \d+ EXPUNGE", ln) for ln in untagged)
    _, untagged = ok(a, b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)"
                     % h)
    assert set(parse_fetches(untagged)) == {4}
    assert parse_vanished(untagged) == {5}


class QresyncClient:
    """A client that keeps a local copy of INBOX (UID -> flags, body) and
    resynchronises it with QRESYNC (RFC 7162 3.2.5), as mobile and desktop
    clients do. `transcript` holds every command it sent."""

    def __init__(self, inst, user):
        self.inst, self.user = inst, user
        self.uidvalidity = None
        self.highestmodseq = None
        self.messages = {}
        self.transcript = []

    def cmd(self, raw, line):
        self.transcript.append(line)
        return ok(raw, line)

    def run(self):
        raw = self.inst.raw_imap(self.user)
        self.cmd(raw, b"ENABLE QRESYNC")
        if self.uidvalidity is None:
            _, untagged = self.cmd(raw, b"SELECT INBOX")
            info = select_info(untagged)
            _, untagged = self.cmd(raw, b"UID FETCH 1:* (FLAGS)")
            updates = parse_fetches(untagged)
        else:
            known = ",".join(str(u) for u in sorted(self.messages)) or "1"
            _, untagged = self.cmd(raw, b"SELECT INBOX (QRESYNC (%d %d %s))"
                                   % (self.uidvalidity, self.highestmodseq,
                                      known.encode()))
            info = select_info(untagged)
            assert info["UIDVALIDITY"] == self.uidvalidity
            for uid in parse_vanished(untagged):
                self.messages.pop(uid, None)
            updates = parse_fetches(untagged)
            # new mail above the known UIDs
            top = max(self.messages, default=0)
            _, untagged = self.cmd(raw, b"UID FETCH %d:* (FLAGS) "
                                   b"(CHANGEDSINCE %d)"
                                   % (top + 1, self.highestmodseq))
            updates.update({u: st for u, st in
                            parse_fetches(untagged).items() if u > top})
        new = sorted(u for u in updates if u not in self.messages)
        for uid, (flags, _) in updates.items():
            self.messages.setdefault(uid, [None, None])[0] = flags
        for uid in new:
            _, untagged = self.cmd(raw, b"UID FETCH %d BODY.PEEK[]" % uid)
            body = re.search(rb"BODY\[\] \{\d+\}\r\n(.*)\)\r\n$",
                             untagged[0], re.S).group(1)
            self.messages[uid][1] = body
        self.uidvalidity = info["UIDVALIDITY"]
        self.highestmodseq = info["HIGHESTMODSEQ"]
        raw.close()


def test_qresync_client_keeps_a_correct_copy_across_runs(dovecot, user):
    sqlbox_only(dovecot)
    fill(dovecot, user, 8)
    client = QresyncClient(dovecot, user)
    client.run()
    n = 100

    def truth():
        state = server_state(dovecot, user)
        raw = dovecot.raw_imap(user)
        ok(raw, b"EXAMINE INBOX")
        bodies = {}
        for uid in state:
            _, untagged = ok(raw, b"UID FETCH %d BODY.PEEK[]" % uid)
            bodies[uid] = re.search(rb"BODY\[\] \{\d+\}\r\n(.*)\)\r\n$",
                                    untagged[0], re.S).group(1)
        raw.close()
        return {uid: [state[uid][0], bodies[uid]] for uid in state}

    rounds = [
        lambda: ok(other, b"UID STORE 1:3 +FLAGS (\\Seen)"),
        lambda: (ok(other, b"UID STORE 2,4 +FLAGS (\\Deleted)"),
                 ok(other, b"EXPUNGE")),
        lambda: dovecot.lmtp_deliver([user], MSG % (n, n, n)),
        lambda: (ok(other, b"UID STORE 5 +FLAGS ($Work)"),
                 ok(other, b"UID STORE 1 -FLAGS (\\Seen)")),
        lambda: dovecot.restart(),
        lambda: dovecot.doveadm("force-resync", "-u", user, "INBOX"),
    ]
    for i, change in enumerate(rounds):
        other = dovecot.raw_imap(user)
        ok(other, b"SELECT INBOX")
        change()
        other.close()
        mark = len(client.transcript)
        client.run()
        assert client.messages == truth(), "round %d" % i
        sent = client.transcript[mark:]
        assert sent[0] == b"ENABLE QRESYNC"
        assert sent[1].startswith(b"SELECT INBOX (QRESYNC (")
        assert not any(re.match(rb"UID FETCH 1:\* ", c) for c in sent), sent
    bodies = [c for c in client.transcript if c.endswith(b"BODY.PEEK[]")]
    assert len(bodies) == 9, "each message's body fetched exactly once"


def test_vanished_since_a_recent_modseq_is_not_the_whole_history(dovecot,
                                                                  user):
    """A new session (a fresh import) answers VANISHED (EARLIER) since a
    recent MODSEQ with the recent expunge, not with every UID ever
    expunged: the imported log keeps SQL's MODSEQs."""
    sqlbox_only(dovecot)
    fill(dovecot, user, 100)
    other = dovecot.raw_imap(user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 1:40 +FLAGS (\\Deleted)")
    ok(other, b"EXPUNGE")
    other.close()
    raw = qresync_session(dovecot, user)
    _, untagged = ok(raw, b"SELECT INBOX")
    info = select_info(untagged)
    before = parse_fetches(ok(raw, b"UID FETCH 1:* (FLAGS MODSEQ)")[1])
    raw.close()
    other = dovecot.raw_imap(user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 90:100 +FLAGS (\\Seen)")
    ok(other, b"UID STORE 41 +FLAGS (\\Deleted)")
    ok(other, b"EXPUNGE")
    other.close()
    vanished, fetched = check_resync(dovecot, user, info["UIDVALIDITY"],
                                     before, info["HIGHESTMODSEQ"])
    assert vanished == {41}
    assert set(fetched) == set(range(90, 101))


def test_vanished_after_tombstones_are_pruned(dovecot, user):
    """Once tombstones are deleted (doveadm sqlbox purge, or by hand), a
    client whose MODSEQ is older than them is told so: VANISHED (EARLIER)
    then names every UID of its range that no longer exists, so the
    expunges whose tombstones are gone are not missed."""
    sqlbox_only(dovecot)
    fill(dovecot, user, 8)
    raw = qresync_session(dovecot, user)
    _, untagged = ok(raw, b"SELECT INBOX")
    info = select_info(untagged)
    before = parse_fetches(ok(raw, b"UID FETCH 1:* (FLAGS MODSEQ)")[1])
    raw.close()
    other = dovecot.raw_imap(user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 2,3 +FLAGS (\\Deleted)")
    ok(other, b"EXPUNGE")
    other.close()
    dovecot.sql_by_hand(user, "BEGIN IMMEDIATE; DELETE FROM expunged;"
                        " COMMIT;")
    assert dovecot.sql(user, "SELECT pruned_modseq FROM mailboxes"
                       " WHERE name = 'INBOX'")[0][0] > info["HIGHESTMODSEQ"]
    vanished, fetched = check_resync(dovecot, user, info["UIDVALIDITY"],
                                     before, info["HIGHESTMODSEQ"],
                                     known="1:8")
    assert {2, 3} <= vanished
    assert fetched == {}
