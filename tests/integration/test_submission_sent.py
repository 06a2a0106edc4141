# SPDX-License-Identifier: MIT
"""The Sent copy without a configured \\Sent mailbox (the fallback name,
created on first use), and the Message-ID column the Sent dedup relies on,
as APPEND fills it."""

import pytest

from smtpsink import Sink
from submissionutil import SENDERS_CONF, addr, imap_sent, message, swaks
from harness import append, sqlbox_only

# the inbox namespace keeps its Sent mailbox, but without special-use
DOVECOT_OPTIONS = {"extra_conf": SENDERS_CONF + """
namespace inbox {
  mailbox Sent {
    special_use =
  }
}
plugin {
  submission_sqlbox_sent_mailbox = Sent Items
}
"""}


@pytest.fixture(scope="module")
def sink(dovecot):
    s = Sink(dovecot.port("relay"))
    s.start()
    yield s
    s.stop()


def test_without_sent_special_use_the_fallback_is_created(dovecot, sink):
    d = dovecot
    u = d.new_user()
    for n in range(2):
        code, out = swaks(d, u, addr(u),
                          data=message(u, addr(u), "<fb%d@x>" % n))
        assert code == 0, out
    sent = imap_sent(d, u, "Sent Items")
    assert len(sent) == 2 and all("\\Seen" in f for f, _ in sent)
    assert imap_sent(d, u, "Sent") == []


def test_message_id_column_filled_on_append(dovecot):
    d = dovecot
    sqlbox_only(d)
    u = d.new_user()
    c = d.imap(u)
    cases = [
        (b"Message-ID: <plain@example.test>\r\n", "<plain@example.test>"),
        (b"message-id:   <spaced@example.test>  \r\n",
         "<spaced@example.test>"),
        (b"Message-ID:\r\n <folded@example.test>\r\n",
         "<folded@example.test>"),
        (b"X-Other: 1\r\n", None),
    ]
    for hdr, _ in cases:
        append(c, "INBOX", b"From: a@example.test\r\n" + hdr +
               b"Subject: m\r\n\r\nbody\r\n")
    # a Message-ID in the body is not the header's
    append(c, "INBOX", b"Subject: b\r\n\r\nMessage-ID: <body@x>\r\n")
    rows = d.sql(u, "SELECT m.message_id FROM messages m JOIN mailboxes b"
                 " ON b.id = m.mailbox_id WHERE b.name = 'INBOX'"
                 " ORDER BY m.uid")
    assert [r[0] for r in rows] == [e for _, e in cases] + [None]
