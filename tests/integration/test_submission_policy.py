# SPDX-License-Identifier: MIT
"""The submission hook's refusals: sender ownership (RFC 6409 6.1, 6.3),
the relay's own refusals passed through, TLS before AUTH, bad input and
an operator database that cannot be had."""

import fcntl
import os

import pytest

from smtpsink import Sink
from submissionutil import (SENDERS_CONF, addr, imap_sent, message,
                            policy_db, policy_sql, smtp, swaks)

DOVECOT_OPTIONS = {"extra_conf": SENDERS_CONF + """
submission_max_mail_size = 64k
plugin {
  submission_sqlbox_policy_lock_timeout = 1s
}
protocol submission {
  disable_plaintext_auth = yes
}
"""}


@pytest.fixture(scope="module")
def sink(dovecot):
    s = Sink(dovecot.port("relay"))
    s.start()
    yield s
    s.stop()


def audit_rules(d, user):
    return [r[0] for r in policy_sql(
        d, "SELECT rule FROM audit WHERE username = ? ORDER BY id", [user])]


def test_spoofed_envelope_sender_gets_553_at_mail(dovecot, sink):
    d = dovecot
    u = d.new_user()
    before = sink.count()
    code, out = swaks(d, u, addr(u), mail_from="ceo@example.test",
                      data=message(u, addr(u), "<spoof1@x>"))
    assert ("* 553 5.7.1 <ceo@example.test>: Sender address rejected: "
            "not owned by user %s" % u) in out, out
    assert sink.count() == before
    assert audit_rules(d, u) == ["sender_mismatch"]


def test_spoofed_from_header_gets_550_at_data(dovecot, sink):
    d = dovecot
    u = d.new_user()
    data = message(u, addr(u), "<spoof2@x>").replace(
        b"From: <%s>" % addr(u).encode(), b"From: CEO <ceo@example.test>")
    before = sink.count()
    code, out = swaks(d, u, addr(u), data=data)
    assert ("* 550 5.7.1 From: header address <ceo@example.test> not "
            "owned by user %s" % u) in out, out
    assert sink.count() == before
    assert imap_sent(d, u) == []
    # a Sender: that is not the user's is refused the same way
    data = message(u, addr(u), "<spoof3@x>",
                   extra_headers="Sender: <boss@example.test>\r\n")
    code, out = swaks(d, u, addr(u), data=data)
    assert "* 550 5.7.1 From: header address <boss@example.test>" in out


def test_aliases_detail_and_null_sender_pass(dovecot, sink):
    d = dovecot
    u = d.new_user()
    policy_sql(d, "INSERT INTO sender_identity(username, address)"
               " VALUES (?, ?), (?, ?)",
               [u, "alias@example.test", u, "@team.example.test"])
    for sender in ("Alias@Example.Test", "anyone@team.example.test",
                   "%s+lists@example.test" % u):
        data = message(u, addr(u), "<alias-%s@x>" % sender).replace(
            b"From: <%s>" % addr(u).encode(), b"From: <%s>" % sender.encode())
        code, out = swaks(d, u, addr(u), mail_from=sender, data=data)
        assert code == 0, out
    # MAIL FROM:<> (RFC 8098 MDNs) is allowed
    c = smtp(d, u)
    assert c.sendmail("<>", [addr(u)], message(u, addr(u), "<mdn@x>")) == {}
    c.quit()
    assert len(imap_sent(d, u)) == 4


def test_relay_refusal_reaches_the_client_without_sent_copy(dovecot, sink):
    d = dovecot
    u = d.new_user()
    before = sink.count()
    code, out = swaks(d, u, "relayreject@elsewhere.test",
                      data=message(u, "relayreject@elsewhere.test", "<r1@x>"))
    assert "550 5.1.1" in out and "Recipient address rejected" in out, out
    code, out = swaks(d, u, addr(u),
                      data=message(u, addr(u), "<r2@x>",
                                   body="SINK-REJECT-DATA\r\n"))
    assert "* 554 5.7.1 Message refused by the sink" in out, out
    assert sink.count() == before
    assert imap_sent(d, u) == []
    rows = policy_sql(d, "SELECT status_code, enhanced_code, rule, sent,"
                      " message_id FROM audit WHERE username = ?"
                      " ORDER BY id", [u])
    assert [554, "5.7.1", "relay", None, "<r2@x>"] in rows, rows
    # the refused messages gave their reservations back
    assert policy_sql(d, "SELECT SUM(messages), SUM(recipients)"
                      " FROM rate_bucket WHERE username = ?", [u]) == \
        [[0, 0]]


def test_plaintext_auth_refused_from_a_remote_address(dovecot, sink):
    d = dovecot
    u = d.new_user()
    # Dovecot counts a connection from its own address as secured, so the
    # client comes from 127.0.0.2
    code, out = swaks(d, u, addr(u), tls=None, local_interface="127.0.0.2",
                      data=message(u, addr(u), "<plain@x>"))
    assert code != 0
    assert "AUTH PLAIN" not in out or "535" in out or "538" in out, out
    assert "Host did not advertise authentication" in out, out
    # the same client with STARTTLS gets in
    code, out = swaks(d, u, addr(u), local_interface="127.0.0.2",
                      data=message(u, addr(u), "<tls@x>"))
    assert code == 0, out


def test_oversized_message_is_refused(dovecot, sink):
    d = dovecot
    u = d.new_user()
    big = message(u, addr(u), "<big@x>",
                  body="y" * 76 + "\r\n") + (b"y" * 76 + b"\r\n") * 1000
    before = sink.count()
    c = smtp(d, u)
    with pytest.raises(Exception) as e:
        c.sendmail(addr(u), [addr(u)], big)
    assert "552" in str(e.value)
    c.close()
    assert sink.count() == before
    assert imap_sent(d, u) == []


def test_malformed_and_8bit_headers(dovecot, sink):
    d = dovecot
    u = d.new_user()
    # no usable From: address
    bad = message(u, addr(u), "<bad@x>").replace(
        b"From: <%s>" % addr(u).encode(), b"From: not an address")
    code, out = swaks(d, u, addr(u), data=bad)
    assert "* 554 5.6.0 Message has no valid From: header" in out, out
    nofrom = b"To: <%s>\r\nSubject: none\r\n\r\nbody\r\n" % addr(u).encode()
    code, out = swaks(d, u, addr(u), data=nofrom)
    assert "* 554 5.6.0" in out, out
    # raw 8-bit in a header is passed on and saved as it came
    eight = message(u, addr(u), "<8bit@x>", subject="GRUSS").replace(
        b"GRUSS", b"Gr\xfc\xdfe")
    code, out = swaks(d, u, addr(u), data=eight)
    assert code == 0, out
    sent = imap_sent(d, u)
    assert len(sent) == 1 and b"Subject: Gr\xfc\xdfe" in sent[0][1]


@pytest.mark.allow_log(r"sqlbox: reserve a message: .*timed out",
                       r"sqlbox: write audit row: .*timed out",
                       r"submission policy database")
def test_locked_operator_database_gives_451(dovecot, sink):
    d = dovecot
    u = d.new_user()
    code, out = swaks(d, u, addr(u), data=message(u, addr(u), "<l0@x>"))
    assert code == 0, out
    lock = str(policy_db(d)) + ".lock"
    fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    before = sink.count()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, out = swaks(d, u, addr(u), data=message(u, addr(u), "<l1@x>"))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert ("* 451 4.3.0 Temporary policy failure, try again later"
            in out), out
    assert sink.count() == before
    code, out = swaks(d, u, addr(u), data=message(u, addr(u), "<l2@x>"))
    assert code == 0, out
