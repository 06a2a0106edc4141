# SPDX-License-Identifier: MIT
"""The demo's relay end to end (scripts/demo-relay.sh, README "Sending
mail"): a private Postfix on 127.0.0.1:RELAY_PORT, set up exactly as
scripts/demo.sh sets it up, behind this module's Dovecot. alice and bob
log in by name and send as alice@example.test and bob@example.test over
submission (587 STARTTLS, 465 implicit TLS); Postfix delivers the demo
domain back to Dovecot over LMTP, and bob reads the message over IMAP and
POP3 while alice has the copy in Sent. Every other domain is refused at
RCPT, so nothing is queued and nothing leaves the machine."""

import json
import os
import poplib
import re
import smtplib
import subprocess
import time
import uuid

import pytest

from harness import REPO
from submissionutil import imap_sent

RELAY = REPO / "scripts" / "demo-relay.sh"
DOMAIN = "example.test"
USERS = {"alice": "alice", "bob": "bob"}

DOVECOT_OPTIONS = {
    "extra_conf": subprocess.run(
        [str(RELAY), "dovecot-conf"], env=dict(os.environ, RELAY_DOMAIN=DOMAIN),
        check=True, stdout=subprocess.PIPE, text=True).stdout,
}

# How long a message may take from the relay's 250 to bob's INBOX on a
# busy machine: a bound for polling, not a speed check.
DELIVERY_WAIT = 30


def listeners(port=None, pid=None):
    """The TCP listeners `ss -ltnpH` shows as (address, port, text),
    optionally only those on port or of process pid."""
    out = subprocess.run(["ss", "-ltnpH"], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, p = fields[3].rpartition(":")
        if port is not None and int(p) != port:
            continue
        if pid is not None and ("pid=%d," % pid) not in line:
            continue
        found.append((address, int(p), line))
    return found


class Relay:
    """The demo relay in DIR, driven through scripts/demo-relay.sh."""

    def __init__(self, d, users):
        self.dir = d.dir / "postfix"
        self.etc = self.dir / "etc"
        self.log = self.dir / "log" / "postfix.log"
        self.port = d.port("relay")
        self.lmtp_port = d.port("lmtp")
        self.env = dict(os.environ, RELAY_PORT=str(self.port),
                        LMTP_PORT=str(self.lmtp_port), RELAY_DOMAIN=DOMAIN,
                        RELAY_USERS=" ".join(users))

    def script(self, cmd, check=True):
        p = subprocess.run([str(RELAY), cmd, str(self.dir)], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        if check:
            assert p.returncode == 0, "demo-relay.sh %s: %s" % (cmd, p.stdout)
        return p

    def master_pid(self):
        return int((self.dir / "spool" / "pid" / "master.pid")
                   .read_text().split()[0])

    def queue(self):
        """The queued messages (postqueue -j: one JSON object a line)."""
        out = subprocess.run(["postqueue", "-c", str(self.etc), "-j"],
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line]

    def wait_queue_empty(self):
        deadline = time.monotonic() + DELIVERY_WAIT
        while True:
            q = self.queue()
            if not q or time.monotonic() > deadline:
                return q
            time.sleep(0.2)

    def log_text(self):
        return self.log.read_text() if self.log.exists() else ""

    def postconf(self, name):
        return subprocess.run(["postconf", "-c", str(self.etc), "-h", name],
                              check=True, stdout=subprocess.PIPE,
                              text=True).stdout.strip()


@pytest.fixture(scope="module")
def relay(dovecot):
    if os.geteuid() != 0:
        pytest.fail("the demo relay (Postfix) runs only as root",
                    pytrace=False)
    for user, password in USERS.items():
        dovecot.add_user(user, password)
    smtp_before = {(a, p) for a, p, _ in listeners(port=25)}
    r = Relay(dovecot, USERS)
    r.smtp_before = smtp_before
    try:
        r.script("write")
        r.script("start")
        yield r
    finally:
        stopped = r.script("stop", check=False)
        if stopped.returncode != 0:
            print(stopped.stdout)
        print("--- postfix.log ---\n" + r.log_text())
    assert stopped.returncode == 0, stopped.stdout


def addr(user):
    return "%s@%s" % (user, DOMAIN)


def message(sender, to, msgid, subject):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: %s\r\n"
            "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\nHello %s\r\n"
            % (addr(sender), ", ".join(to), subject, msgid, subject)).encode()


def new_msgid():
    return "<%s@%s>" % (uuid.uuid4().hex, DOMAIN)


def submit(d, user, rcpts, data, tls):
    """Sends over submission, authenticated, after STARTTLS (587 role) or
    over implicit TLS (465 role). Returns sendmail()'s refused dict."""
    if tls == "starttls":
        s = smtplib.SMTP("127.0.0.1", d.port("submission"), timeout=60)
        s.starttls(context=d.ssl_context())
    else:
        s = smtplib.SMTP_SSL("127.0.0.1", d.port("submissions"), timeout=60,
                             context=d.ssl_context())
    try:
        s.login(user, USERS[user])
        return s.sendmail(addr(user), rcpts, data)
    finally:
        s.quit()


def wait_in_inbox(d, user, msgid):
    """Polls user's INBOX over IMAP until a message with msgid is there;
    returns its whole text (or None when it never comes)."""
    c = d.imap(user, tls="implicit")
    try:
        deadline = time.monotonic() + DELIVERY_WAIT
        while True:
            typ, _ = c.select("INBOX", readonly=True)
            assert typ == "OK"
            typ, data = c.search(None, "HEADER", "Message-ID", msgid)
            assert typ == "OK"
            if data[0]:
                typ, got = c.fetch(data[0].split()[-1], "(BODY.PEEK[])")
                assert typ == "OK"
                return got[0][1]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
    finally:
        c.logout()
        d._clients.remove(c)


def pop3_messages(d, user):
    """Every message of user's maildrop over POP3S (RFC 1939 RETR)."""
    p = poplib.POP3_SSL("127.0.0.1", d.port("pop3s"), timeout=60,
                        context=d.ssl_context())
    try:
        p.user(user)
        p.pass_(USERS[user])
        count, _ = p.stat()
        return [b"\r\n".join(p.retr(n)[1]) for n in range(1, count + 1)]
    finally:
        p.quit()


def sent_ids(d, user):
    ids = []
    for _, header in imap_sent(d, user):
        m = re.search(rb"(?im)^Message-ID: *(<[^>]*>)", header)
        ids.append(m.group(1).decode() if m else None)
    return ids


def test_listens_only_on_loopback_and_cannot_send_out(relay):
    pid = relay.master_pid()
    mine = listeners(pid=pid)
    assert [(a, p) for a, p, _ in mine] == [("127.0.0.1", relay.port)], mine
    # no port 25 listener came with it, the relay's or anyone's
    assert {(a, p) for a, p, _ in listeners(port=25)} == relay.smtp_before
    assert relay.postconf("inet_interfaces") == "loopback-only"
    assert relay.postconf("mynetworks") == "127.0.0.0/8"
    assert relay.postconf("default_transport").startswith("error:")
    assert relay.postconf("relay_transport").startswith("error:")
    assert relay.postconf("virtual_transport") == \
        "lmtp:inet:127.0.0.1:%d" % relay.lmtp_port
    # master.cf: one inet service, and no smtp client to send with
    services = subprocess.run(["postconf", "-c", str(relay.etc), "-M"],
                              check=True, stdout=subprocess.PIPE,
                              text=True).stdout.splitlines()
    inet = [s.split()[0] for s in services if s.split()[1] == "inet"]
    assert inet == ["127.0.0.1:%d" % relay.port]
    assert not [s for s in services if s.split()[0] in ("smtp", "relay")]


@pytest.mark.parametrize("tls,sender,rcpt", [("starttls", "alice", "bob"),
                                             ("implicit", "bob", "alice")])
def test_demo_user_to_demo_user(dovecot, relay, tls, sender, rcpt):
    d = dovecot
    msgid = new_msgid()
    data = message(sender, [addr(rcpt)], msgid, "over " + tls)
    assert submit(d, sender, [addr(rcpt)], data, tls) == {}

    got = wait_in_inbox(d, rcpt, msgid)
    assert got is not None, "not delivered:\n" + relay.log_text()
    # the client's message, with the trace headers of Postfix and Dovecot
    # in front
    assert got.endswith(data), got
    assert re.search(rb"(?m)^Received: from [^\r]*\r\n\s+by relay\.example\.test "
                     rb"\(Postfix\) with ESMTP", got), got
    assert relay.wait_queue_empty() == []
    assert re.search(r"to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
                     r"status=sent" % (re.escape(addr(rcpt)), relay.lmtp_port),
                     relay.log_text())

    # the same message over POP3
    assert [m for m in pop3_messages(d, rcpt) if msgid.encode() in m
            and m.endswith(data.rstrip(b"\r\n"))], "not seen over POP3"
    # and the sender's copy in Sent, which submission_sqlbox saves (not
    # loaded when the suite checks itself against maildir or sdbox)
    if d.loads_plugin:
        assert msgid in sent_ids(d, sender)


def test_outside_domain_refused_at_rcpt(dovecot, relay):
    d = dovecot
    # alone: the relay refuses the only recipient, so the message is
    # never accepted
    msgid = new_msgid()
    data = message("alice", ["someone@example.org"], msgid, "outside")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        submit(d, "alice", ["someone@example.org"], data, "starttls")
    code, text = e.value.recipients["someone@example.org"]
    assert code == 554 and b"5.7.1" in text and b"Relay access denied" in text
    assert msgid not in sent_ids(d, "alice")

    # with a demo user: bob gets it, the outsider is refused at RCPT
    msgid = new_msgid()
    rcpts = [addr("bob"), "someone@example.org"]
    data = message("alice", rcpts, msgid, "mixed")
    refused = submit(d, "alice", rcpts, data, "implicit")
    assert list(refused) == ["someone@example.org"]
    assert refused["someone@example.org"][0] == 554
    assert wait_in_inbox(d, "bob", msgid) is not None
    assert relay.wait_queue_empty() == []
    log = relay.log_text()
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 " \
        "<someone@example.org>: Relay access denied" in log
    # nothing was ever handed to a transport for the outside domain
    assert not re.search(r"to=<someone@example\.org>.*status=", log), log


def test_unknown_user_of_the_domain_refused(dovecot, relay):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        submit(dovecot, "bob", [addr("carol")],
               message("bob", [addr("carol")], new_msgid(), "carol"),
               "starttls")
    code, text = e.value.recipients[addr("carol")]
    assert code == 550 and b"5.1.1" in text, text
    assert relay.queue() == []


def test_relay_refuses_outside_domain_even_from_loopback(relay):
    # straight to Postfix, as a client in mynetworks: still no relaying
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=60)
    try:
        s.ehlo("client.example.test")
        code, _ = s.mail("x@example.org")
        assert code == 250
        code, text = s.rcpt("someone@example.org")
        assert code == 554 and b"Relay access denied" in text, text
    finally:
        s.quit()
    assert relay.queue() == []
