# SPDX-License-Identifier: MIT
"""STATUS and LIST-STATUS come from SQL's counters (DESIGN.md 3).

A folder that isn't selected is never opened to answer STATUS (MESSAGES,
UIDNEXT, UIDVALIDITY, UNSEEN) and STATUS=SIZE (RFC 8438): opening it would
import all of its messages into an index. Dovecot logs "Mailbox opened" at
debug level for every open, so the log proves it; SELECT of the same folder
is the positive control that shows the check can see an open."""

import re
import time

import corpus
from harness import append, check, mbox, sqlbox_only, status

DOVECOT_OPTIONS = {"debug": True}


def opened_lines(inst, since, name):
    text = inst.log_text(since)
    pattern = re.compile(r"Mailbox %s: Mailbox opened" % re.escape(name))
    return [line for line in text.splitlines() if pattern.search(line)]


def settle(inst):
    """Waits until the log stops growing: log lines travel through
    Dovecot's log process, so the lines of the sessions that filled the
    folder may still be on their way."""
    deadline = time.time() + 10
    size = inst.log_size()
    while time.time() < deadline:
        time.sleep(0.5)
        if inst.log_size() == size:
            return
        size = inst.log_size()


def test_status_does_not_open_the_folder(dovecot, user):
    sqlbox_only(dovecot)
    c = dovecot.imap(user)
    check(c.create(mbox("Counted")), "CREATE")
    msgs = [corpus.by_name(n) for n in ("plain-short", "nested", "bare-lf")]
    append(c, "Counted", msgs[0], "(\\Seen)")
    append(c, "Counted", msgs[1])
    append(c, "Counted", msgs[2])
    c.logout()
    settle(dovecot)

    mark = dovecot.log_size()
    c = dovecot.imap(user)
    st = status(c, "Counted", "MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE")
    assert st["MESSAGES"] == 3
    assert st["UIDNEXT"] == 4
    assert st["UNSEEN"] == 2
    assert st["SIZE"] == sum(len(corpus.expected(m)) for m in msgs)
    assert st["UIDVALIDITY"] > 0
    # RFC 5819 LIST-STATUS
    typ, data = c._simple_command("LIST", '""', '"Counted"', "RETURN",
                                  "(STATUS (MESSAGES UNSEEN))")
    assert typ == "OK", data
    listed = [d for d in c.untagged_responses.get("STATUS", [])]
    assert any(b"MESSAGES 3" in d and b"UNSEEN 2" in d for d in listed), \
        listed
    settle(dovecot)
    assert opened_lines(dovecot, mark, "Counted") == []

    # positive control: SELECT does open it, and the log shows that
    check(c.select(mbox("Counted")), "SELECT")
    settle(dovecot)
    assert opened_lines(dovecot, mark, "Counted") != []
    c.logout()
