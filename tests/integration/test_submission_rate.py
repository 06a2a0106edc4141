# SPDX-License-Identifier: MIT
"""Rate limits of the submission hook: reserved at MAIL and RCPT in one
write transaction on the operator database, so truly concurrent
connections (one process each) and pipelined RCPTs cannot overshoot, and
given back when a transaction does not complete."""

import threading

import pytest

from smtpsink import Sink
from submissionutil import (SENDERS_CONF, RawSmtp, addr, message,
                            policy_sql, smtp)

DOVECOT_OPTIONS = {"extra_conf": SENDERS_CONF + """
plugin {
  submission_sqlbox_msgs_per_hour = 2
  submission_sqlbox_max_rcpt_per_msg = 3
  submission_sqlbox_rcpts_per_day = 5
}
"""}


@pytest.fixture(scope="module")
def sink(dovecot):
    s = Sink(dovecot.port("relay"))
    s.start()
    yield s
    s.stop()


def mail_reply(c, user):
    c.send(b"MAIL FROM:<%s>\r\n" % addr(user).encode())
    return c.reply()


def test_hourly_limit_holds_across_concurrent_connections(dovecot, sink):
    d = dovecot
    u = d.new_user()
    conns = [RawSmtp(d, u) for _ in range(4)]
    replies = [None] * len(conns)
    start = threading.Barrier(len(conns))

    def run(i):
        start.wait()
        replies[i] = mail_reply(conns[i], u)

    threads = [threading.Thread(target=run, args=(i,))
               for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(r[0] for r in replies)
    assert codes == [250, 250, 450, 450], replies
    for code, text in replies:
        if code == 450:
            assert text == ("450 4.7.1 Sending rate limit exceeded "
                            "(2 messages per hour), try again later")
    # the transactions that got in end without DATA: their reservations
    # come back and a new connection gets in
    for c in conns:
        c.close()
    c = RawSmtp(d, u)
    try:
        assert mail_reply(c, u)[0] == 250
        c.send(b"RSET\r\n")
        assert c.reply()[0] == 250
    finally:
        c.close()
    # two relayed messages use the hour up
    s = smtp(d, u)
    for n in range(2):
        s.sendmail(addr(u), [addr(u)], message(u, addr(u), "<h%d@x>" % n))
    code, text = s.mail(addr(u))
    assert code == 450 and b"4.7.1" in text
    s.close()
    assert policy_sql(d, "SELECT SUM(messages) FROM rate_bucket"
                      " WHERE username = ?", [u]) == [[2]]


def test_pipelined_rcpts_over_the_cap_get_452(dovecot, sink):
    d = dovecot
    u = d.new_user()
    c = RawSmtp(d, u)
    try:
        rcpts = ["r%d@elsewhere.test" % n for n in range(5)]
        c.send(b"MAIL FROM:<%s>\r\n" % addr(u).encode() +
               b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts))
        assert c.reply()[0] == 250
        replies = [c.reply() for _ in rcpts]
        assert [r[0] for r in replies] == [250, 250, 250, 452, 452]
        assert replies[3][1] == ("452 4.5.3 <r3@elsewhere.test> Too many "
                                 "recipients (limit 3)")
        c.send(b"RSET\r\n")
        assert c.reply()[0] == 250
        # released: the same recipients can be reserved again
        c.send(b"MAIL FROM:<%s>\r\n" % addr(u).encode() +
               b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts[:3]))
        assert [c.reply()[0] for _ in range(4)] == [250] * 4
    finally:
        c.close()
    assert policy_sql(d, "SELECT SUM(recipients) FROM rate_bucket"
                      " WHERE username = ?", [u]) == [[0]]
    # one audit row per transaction, also for those that never sent:
    # the first one says which limit refused recipients
    rows = policy_sql(d, "SELECT rule, status_code, enhanced_code,"
                      " rcpt_count, sent FROM audit WHERE username = ?"
                      " ORDER BY id", [u])
    assert rows == [["rcpt_limit", 452, "4.5.3", 3, None],
                    ["abandoned", 0, None, 3, None]], rows


def test_daily_recipient_limit_counts_relayed_recipients(dovecot, sink):
    d = dovecot
    u = d.new_user()
    # 3 recipients were relayed earlier today (another bucket)
    policy_sql(d, "INSERT INTO rate_bucket(username, bucket, recipients)"
               " VALUES (?, CAST(strftime('%s', 'now') AS INTEGER) / 60"
               " - 600, 3)", [u])
    c = RawSmtp(d, u)
    try:
        c.send(b"MAIL FROM:<%s>\r\n" % addr(u).encode())
        assert c.reply()[0] == 250
        got = []
        for n in range(3):
            c.send(b"RCPT TO:<d%d@elsewhere.test>\r\n" % n)
            got.append(c.reply())
        assert [g[0] for g in got] == [250, 250, 450], got
        assert got[2][1] == ("450 4.7.1 <d2@elsewhere.test> Daily recipient "
                             "limit reached (5 per 24h), try again later")
    finally:
        c.close()


def test_userdb_fields_override_the_settings_per_user(dovecot, sink):
    """Every submission_sqlbox_* setting can come from the userdb: here a
    user whose userdb gives a limit of one message per hour and an extra
    sender address, next to a user on the global settings."""
    d = dovecot
    u = d.new_user()
    d.add_user(u, fields={"submission_sqlbox_msgs_per_hour": "1",
                          "submission_sqlbox_senders":
                          "%n@example.net"})
    other = d.new_user()
    s = smtp(d, u)
    alias = "%s@example.net" % u
    # the userdb's list replaces the global one: only the alias is u's
    s.sendmail(alias, [addr(u)], message(u, alias, "<per-user-1@x>")
               .replace(addr(u).encode(), alias.encode(), 1))
    code, text = s.mail(alias)
    assert code == 450 and b"(1 messages per hour)" in text, (code, text)
    s.close()
    s = smtp(d, other)
    for n in range(2):
        s.sendmail(addr(other), [addr(other)],
                   message(other, addr(other), "<global-%d@x>" % n))
    code, text = s.mail("%s@example.net" % other)
    assert code == 553 and b"5.7.1" in text, (code, text)
    s.close()
