# SPDX-License-Identifier: MIT
"""The submission hook end to end: a real Dovecot submission service with
submission_sqlbox, a recording relay (smtpsink.Sink), swaks and smtplib
as clients, IMAP and SQL to look at the result (DESIGN.md section 6,
PLUGIN.md "Submission")."""

import pytest

from smtpsink import Sink
from submissionutil import (SENDERS_CONF, addr, imap_sent, message,
                            policy_sql, swaks)

DOVECOT_OPTIONS = {"extra_conf": SENDERS_CONF}


@pytest.fixture(scope="module")
def sink(dovecot):
    s = Sink(dovecot.port("relay"))
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize("tls,port", [("starttls", "submission"),
                                      ("implicit", "submissions")])
def test_relayed_unchanged_and_saved_once_to_sent(dovecot, sink, tls, port):
    d = dovecot
    u, other = d.new_user(), d.new_user()
    msgid = "<%s-%s@example.test>" % (u, tls)
    data = message(u, addr(other), msgid, subject="over " + tls)
    before = sink.count()
    code, out = swaks(d, u, "%s,hidden@elsewhere.test" % addr(other),
                      data=data, port=port, tls=tls)
    assert code == 0, out
    assert "<~  250 2.0.0" in out, out
    assert sink.count() == before + 1
    got = sink.messages[-1]
    assert got["mail_from"] == addr(u)
    assert got["rcpt_tos"] == [addr(other), "hidden@elsewhere.test"]
    # the relay gets the client's bytes after Dovecot's own trace header
    # (swaks ends the data with one more CRLF of its own)
    assert got["data"].startswith(b"Received: ")
    assert got["data"].endswith(data + b"\r\n"), got["data"]

    sent = imap_sent(d, u)
    assert len(sent) == 1
    flags, header = sent[0]
    assert "\\Seen" in flags
    assert b"Received:" not in header
    assert b"Bcc: hidden@elsewhere.test\r\n" in header
    assert msgid.encode() in header

    # the client's own copy of the same message: no second copy, and
    # APPENDUID names the server's
    c = d.imap(u)
    typ, resp = c.append("Sent", "(\\Seen)", None, data)
    assert typ == "OK"
    typ, uids = c.select("Sent", readonly=True)
    assert uids == [b"1"]
    assert b"APPENDUID" in resp[0] and resp[0].split()[2] == b"1]", resp
    assert len(imap_sent(d, u)) == 1
    rows = d.sql(u, "SELECT m.message_id FROM messages m JOIN mailboxes b"
                 " ON b.id = m.mailbox_id WHERE b.name = 'Sent'")
    assert rows == [[msgid]]
    audit = policy_sql(d, "SELECT username, tls, envelope_from, recipients,"
                       " rcpt_count, size, message_id, status_code, rule,"
                       " sent FROM audit WHERE username = ?", [u])
    assert audit == [[u, 1, addr(u), "%s,hidden@elsewhere.test" % addr(other),
                      2, len(data) + 2, msgid, 250, "ok", "saved"]]
