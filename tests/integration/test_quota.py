# SPDX-License-Identifier: MIT
"""Dovecot's quota plugin with the `count` backend over sqlbox
(DESIGN.md 1.5; quota `count` is answered from the mailboxes table's
counters, DESIGN.md 3).

quota_vsizes = yes: usage is the sum of the messages' virtual sizes, i.e.
SUM(mailboxes.vsize) and SUM(mailboxes.messages). A user is filled to the
limit through APPEND (refused with NO [OVERQUOTA], RFC 9208 4.3) and LMTP
(refused with Dovecot's configured reply, 552 5.2.2 and
quota_exceeded_message, RFC 3463 X.2.2 mailbox full); a refused message
leaves no row, body or chunk behind; GETQUOTAROOT (RFC 2087/9208) and
`doveadm quota get` agree with the SQL sums at every step; COPY over the
limit is refused and copies nothing; MOVE is not counted twice.

quota_grace = 0: with Dovecot's default (10%) the last message of a save
whose size isn't known up front (LMTP's) may go over the limit by that
much, on maildir too; without grace the limit is exact.

Quota is loaded per protocol (see test_doveadm.py for why).
"""

import re

import pytest

import dsyncutil as du
from harness import check, sqlbox_only

LIMIT_KIB = 64
LIMIT_MSGS = 60
QUOTA_CONF = """
protocol imap {
  mail_plugins = $mail_plugins quota imap_quota
}
protocol doveadm {
  mail_plugins = $mail_plugins quota
}
protocol lmtp {
  mail_plugins = $mail_plugins quota
}
plugin {
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = *:storage=%dk:messages=%d
  quota_exceeded_message = Mailbox full, sorry
  # no grace (10 per cent by default) for the last message: exact limit
  quota_grace = 0
}
""" % (LIMIT_KIB, LIMIT_MSGS)
DOVECOT_OPTIONS = {"extra_conf": QUOTA_CONF}


@pytest.fixture(autouse=True)
def _sqlbox(dovecot):
    sqlbox_only(dovecot)


def message(tag, size):
    """A message of exactly `size` octets, CRLF line ends."""
    head = ("From: quota@example.org\r\nSubject: %s\r\n"
            "Message-ID: <%s@quota.test>\r\n\r\n" % (tag, tag)).encode()
    body = b""
    while len(head) + len(body) < size - 2:
        body += (b"q" * 70 + b"\r\n")
    data = (head + body)[:size - 2] + b"\r\n"
    assert len(data) == size
    return data


def sql_state(dovecot, user):
    """What a refused message must not change."""
    q = ("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM "
         "bodies), (SELECT count(*) FROM body_chunks), (SELECT "
         "coalesce(sum(vsize), 0) FROM mailboxes), (SELECT "
         "coalesce(sum(messages), 0) FROM mailboxes)")
    return tuple(dovecot.sql(user, q)[0])


def sql_usage(dovecot, user):
    """(bytes, messages) as quota count must see them."""
    _, _, _, vsize, msgs = sql_state(dovecot, user)
    return vsize, msgs


def imap_quota(c):
    """{resource: (usage, limit)} of GETQUOTAROOT INBOX (RFC 9208 4.2)."""
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK", data
    text = b" ".join(x for part in data for x in part
                     if isinstance(x, bytes)).decode()
    m = re.search(r'"User quota" \(([^)]*)\)', text)
    assert m, text
    items = m.group(1).split()
    return {items[i]: (int(items[i + 1]), int(items[i + 2]))
            for i in range(0, len(items), 3)}


def doveadm_quota(dovecot, user):
    out = du.doveadm(dovecot, "-f", "tab", "quota", "get", "-u", user)
    lines = out.splitlines()
    head = lines[0].split("\t")
    res = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split("\t")))
        res[row["Type"]] = int(row["Value"])
    return res


def check_usage(dovecot, user, c):
    """GETQUOTAROOT and doveadm equal the SQL sums (KiB rounded up, as
    Dovecot's quota_get_resource() does); returns the bytes used."""
    vsize, msgs = sql_usage(dovecot, user)
    kib = (vsize + 1023) // 1024
    assert imap_quota(c) == {"STORAGE": (kib, LIMIT_KIB),
                             "MESSAGE": (msgs, LIMIT_MSGS)}
    assert doveadm_quota(dovecot, user) == {"STORAGE": kib, "MESSAGE": msgs}
    # and the SQL counters are the messages' own sizes
    rows = dovecot.sql(user, "SELECT coalesce(sum(y.virtual_size), 0), "
                             "count(*) FROM messages m JOIN bodies y "
                             "ON y.id = m.body_id")
    assert rows == [[vsize, msgs]]
    return vsize


def sessions(dovecot, user):
    """A raw and an imaplib session. imap-login answers LOGIN before the
    imap process has opened the user's storage (and so created the
    database): a first command makes sure it is there."""
    r = dovecot.raw_imap(user)
    st, text, _ = r.command(b"NOOP")
    assert st == "OK", text
    return r, dovecot.imap(user)


def append_raw(r, box, data):
    return r.command(b"APPEND " + box + b" {%d+}\r\n" % len(data) + data)


def test_append_until_full(dovecot, user):
    r, c = sessions(dovecot, user)
    size = 5000
    stored = 0
    while True:
        before = sql_state(dovecot, user)
        st, text, _ = append_raw(r, b"INBOX", message("a%d" % stored, size))
        if st != "OK":
            break
        stored += 1
        assert stored < 100, "never refused"
    assert st == "NO" and text.startswith("[OVERQUOTA]"), text
    assert "Mailbox full, sorry" in text
    # nothing of the refused message was kept
    assert sql_state(dovecot, user) == before
    used = check_usage(dovecot, user, c)
    assert used == stored * size
    assert used <= LIMIT_KIB * 1024 < used + size     # refused exactly
    # a smaller one still fits where there is room
    room = LIMIT_KIB * 1024 - used
    assert room > 200, room
    st, text, _ = append_raw(r, b"INBOX", message("fits", room))
    assert st == "OK", text
    assert check_usage(dovecot, user, c) == LIMIT_KIB * 1024
    before = sql_state(dovecot, user)
    st, text, _ = append_raw(r, b"INBOX", message("one more", 200))
    assert st == "NO" and "[OVERQUOTA]" in text, text
    assert sql_state(dovecot, user) == before
    # an expunge gives the room back
    check(c.select("INBOX"), "SELECT")
    check(c.store("1:2", "+FLAGS", "(\\Deleted)"), "STORE")
    check(c.expunge(), "EXPUNGE")
    st, text, _ = append_raw(r, b"INBOX", message("after expunge", size))
    assert st == "OK", text
    check_usage(dovecot, user, c)


def test_message_count_limit(dovecot, user):
    r, c = sessions(dovecot, user)
    n = 0
    while True:
        before = sql_state(dovecot, user)
        st, text, _ = append_raw(r, b"INBOX", message("m%d" % n, 300))
        if st != "OK":
            break
        n += 1
        assert n <= LIMIT_MSGS
    assert n == LIMIT_MSGS
    assert st == "NO" and "[OVERQUOTA]" in text, text
    assert sql_state(dovecot, user) == before
    check_usage(dovecot, user, c)


def test_lmtp_until_full(dovecot, user):
    _, c = sessions(dovecot, user)
    size = 10000
    n = 0
    while True:
        before = sql_state(dovecot, user)
        reply = dovecot.lmtp_deliver(user, message("l%d" % n, size))[user]
        if reply[0] != 250:
            break
        n += 1
        assert n < 100, "never refused"
    # Dovecot's answer for a full mailbox: permanent 552 5.2.2 with
    # quota_exceeded_message (quota_full_tempfail = no, the default)
    assert reply[0] == 552, reply
    assert reply[1].startswith("5.2.2 "), reply
    assert "Mailbox full, sorry" in reply[1], reply
    assert sql_state(dovecot, user) == before
    used = check_usage(dovecot, user, c)
    # LMTP adds Return-Path:, Delivered-To: and Received: to each
    assert n * size < used <= LIMIT_KIB * 1024 < used + size
    # refused by size, not because the user is marked full
    room = LIMIT_KIB * 1024 - used
    overhead = (used - n * size) // n
    assert room > overhead + 1000, (room, overhead)
    reply = dovecot.lmtp_deliver(user, message("small", 1000))[user]
    assert reply[0] == 250, reply
    assert check_usage(dovecot, user, c) > used


def fill_to(dovecot, user, r, box, total, size=4000):
    n = 0
    while (n + 1) * size <= total:
        st, text, _ = append_raw(r, box, message("%s-%d" % (box.decode(), n),
                                                 size))
        assert st == "OK", text
        n += 1
    return n


def test_copy_over_the_limit_refused(dovecot, user):
    r, c = sessions(dovecot, user)
    check(c.create("Other"), "CREATE")
    n = fill_to(dovecot, user, r, b"INBOX", LIMIT_KIB * 1024 * 6 // 10)
    used = check_usage(dovecot, user, c)
    before = sql_state(dovecot, user)
    st, text, _ = r.command(b"SELECT INBOX")
    assert st == "OK"
    st, text, _ = r.command(b"COPY 1:* Other")
    assert st == "NO" and "[OVERQUOTA]" in text, text
    assert sql_state(dovecot, user) == before
    assert dovecot.sql(user, "SELECT messages FROM mailboxes "
                             "WHERE name = 'Other'") == [[0]]
    assert check_usage(dovecot, user, c) == used
    # what fits is copied, and counted once more
    st, text, _ = r.command(b"COPY 1:3 Other")
    assert st == "OK" and "[COPYUID" in text, text
    assert check_usage(dovecot, user, c) == used + 3 * 4000
    assert n >= 3


def test_move_not_double_counted(dovecot, user):
    r, c = sessions(dovecot, user)
    check(c.create("Archive/Moved"), "CREATE")
    # so full that a copy of everything could never fit
    n = fill_to(dovecot, user, r, b"INBOX", LIMIT_KIB * 1024 * 9 // 10)
    used = check_usage(dovecot, user, c)
    st, text, _ = r.command(b"SELECT INBOX")
    assert st == "OK"
    st, text, _ = r.command(b"MOVE 1:* Archive/Moved")
    assert st == "OK", text
    assert check_usage(dovecot, user, c) == used
    rows = dict(dovecot.sql(user, "SELECT name, messages FROM mailboxes"))
    assert rows["INBOX"] == 0 and rows["Archive/Moved"] == n
    # and back again, one by one (UID MOVE, RFC 6851)
    st, text, _ = r.command(b"SELECT Archive/Moved")
    assert st == "OK"
    for uid in range(1, n + 1):
        st, text, _ = r.command(b"UID MOVE %d INBOX" % uid)
        assert st == "OK", text
    assert check_usage(dovecot, user, c) == used
    # still full: a new message that doesn't fit is refused
    st, text, _ = append_raw(r, b"INBOX", message("too much",
                                                  LIMIT_KIB * 1024 // 5))
    assert st == "NO" and "[OVERQUOTA]" in text, text
