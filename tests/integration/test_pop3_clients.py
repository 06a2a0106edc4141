# SPDX-License-Identifier: MIT
"""Real POP3 clients against sqlbox: fetchmail and getmail6 (Debian's
`fetchmail` and `getmail6`, installed by scripts/install-deps.sh).

- fetchmail (keep, then fetch-and-delete) and getmail (keep, then delete)
  download 300 messages delivered over LMTP; every downloaded message is
  the message as stored, i.e. what IMAP BODY.PEEK[] returns for it
  (LMTP's Return-Path/Delivered-To/Received included), and the body that
  was delivered is in it. fetchmail (with `invisible`, `no rewrite`,
  `no stripcr`) hands its MDA the exact bytes; getmail writes its Maildir
  with LF line ends, the local convention, so its files are compared
  with the CRs put back.
- "Leave mail on server" (RFC 1939 7, UIDL: "a client ... may leave
  mail on the server" and keep the unique-ids it has seen): with UIDL
  tracking (fetchmail's .fetchids, getmail's oldmail
  file) each message is fetched exactly once over 10 runs with new
  deliveries in between, an IMAP expunge of old messages (which renumbers
  the POP3 messages) and a Dovecot restart after the loss of every file
  but the database (which must keep the UIDLs).

The clients run as an unprivileged user (fetchmail warns about root,
getmail refuses to deliver as root), over loopback only, trusting exactly
the instance's certificate (its name is "localhost"; fetchmail does not
match IP addresses, so the certificate name is given to it).
"""

import base64
import os
import pwd
import random
import re

import pytest

import corpus
from harness import check
from pop3util import (ClientDir, imap_view, lmtp_deliver_many, mail_ids,
                      session, wipe_all_but_database)

COUNT = 300


def _body(rng, i):
    """A body with what POP3 must carry through: dot-leading lines
    (byte-stuffing, RFC 1939 3), a line that is just ".", long lines,
    8-bit text and base64 attachments of various sizes."""
    lines = ["Message %d of the client test." % i, ""]
    if i % 3 == 0:
        lines += [".leading dot", "..two dots", ".", ". and a space"]
    if i % 7 == 0:
        lines.append("L" * (900 + i))
    if i % 5 == 0:
        lines.append("8-bit: Grüße, naïve café, 東京 %d" % i)
    lines += ["line %d: %s" % (n, "x" * rng.randrange(0, 70))
              for n in range(rng.randrange(1, 40))]
    if i % 11 == 0:
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(
            2000, 60000)))
        enc = base64.b64encode(blob).decode()
        lines += ["--b%d" % i, "Content-Type: application/octet-stream",
                  "Content-Transfer-Encoding: base64", ""]
        lines += [enc[k:k + 76] for k in range(0, len(enc), 76)]
        lines += ["--b%d--" % i]
    return "\r\n".join(lines) + "\r\n"


def make_messages(tag, count, first=0):
    """count deterministic messages, Message-ID <tag-i@sqlbox.test>."""
    rng = random.Random("%s-%d" % (tag, first))
    out = []
    for i in range(first, first + count):
        head = ("From: Sender %d <sender%d@example.org>\r\n"
                "To: pop3 client <client@example.net>\r\n"
                "Subject: %s message %d\r\n"
                "Date: Mon, 02 Jan 2023 09:%02d:00 +0000\r\n"
                "Message-ID: <%s-%d@sqlbox.test>\r\n" % (
                    i, i, tag, i, i % 60, tag, i))
        if i % 11 == 0:
            head += ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                     "boundary=\"b%d\"\r\n" % i)
        out.append((head + "\r\n" + _body(rng, i)).encode("utf-8"))
    return out


def corpus_part():
    """Corpus messages for the client test: every shape with a body that
    ends with a line end (getmail re-serialises a message without a
    header/body separator or final newline; that is getmail's business)."""
    out = []
    for name, data in corpus.messages():
        data = corpus.expected(data)
        if b"\r\n\r\n" in data and data.endswith(b"\r\n"):
            out.append(data)
    return out


def deliver(inst, users, messages):
    lmtp_deliver_many(inst, users, messages)


def message_id(data):
    m = re.search(rb"^Message-ID: (<[^>]+>)", data, re.M | re.I)
    return m.group(1).decode() if m else None


def client_user():
    return pwd.getpwuid(mail_ids()[0]).pw_name


# -- fetchmail ----------------------------------------------------------------

def fetchmail_rc(inst, user, out_dir, keep, tls):
    """A fetchmailrc: POP3 with UIDL tracking, TLS trusting the instance's
    certificate, no header rewriting, no Received line of its own, CRs
    kept, each message written by the MDA to a file of its own."""
    if tls == "implicit":
        port, tls_opts = inst.port("pop3s"), "ssl"
    else:                       # STLS on the 110 role (RFC 2595 4)
        port, tls_opts = inst.port("pop3"), "sslproto tls1.2+"
    return (
        "set no syslog\n"
        "set invisible\n"
        "poll 127.0.0.1 service %d protocol pop3 uidl timeout 60\n"
        "  user \"%s\" there with password \"%s\" is \"%s\" here\n"
        "  %s sslcertck sslcertfile \"%s\" sslcommonname \"localhost\"\n"
        "  %s no rewrite no stripcr no mimedecode\n"
        "  mda \"f=$(mktemp %s/m.XXXXXXXXXX) && cat > $f\"\n" % (
            port, user, inst.password(user), client_user(), tls_opts,
            inst.cafile, "keep" if keep else "no keep fetchall", out_dir))


def run_fetchmail(inst, cdir, user, out, keep=True, tls="implicit",
                  rcname="fetchmailrc"):
    """One fetchmail poll; returns its output. fetchmail exits 0 when it
    delivered mail and 1 when there was none."""
    rc = cdir.write(rcname, fetchmail_rc(inst, user, out, keep, tls))
    p = cdir.run(["fetchmail", "-f", rc, "-i",
                  os.path.join(cdir.path, "fetchids"),
                  "--pidfile", os.path.join(cdir.path, "fetchmail.pid"),
                  "--nodetach", "-v"], timeout=300)
    text = p.stdout + p.stderr
    assert p.returncode in (0, 1), "fetchmail exit %d:\n%s" % (
        p.returncode, text[-5000:])
    return text


# -- getmail ------------------------------------------------------------------

def getmail_rc(inst, user, maildir, delete, read_all):
    return (
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        "port = %d\n"
        "username = %s\n"
        "password = %s\n"
        "ca_certs = %s\n"
        "ssl_cert_hostname = localhost\n"
        "timeout = 60\n\n"
        "[destination]\n"
        "type = Maildir\n"
        "path = %s/\n\n"
        "[options]\n"
        "verbose = 1\n"
        "read_all = %s\n"
        "delete = %s\n"
        "delivered_to = false\n"
        "received = false\n" % (
            inst.port("pop3s"), user, inst.password(user), inst.cafile,
            maildir, read_all, delete))


# getmail6 6.18.11 reaps its delivery child through a SIGCHLD handler
# that notifies a Condition the parent may not be waiting on yet: when the
# child exits first, the wake-up is lost and getmail gives up after 60 s
# with "waiting child pid N timed out" (upstream getmail6 issues #52, #226,
# #245). That happens here whenever the machine is busy. The wrapper runs
# the unchanged /usr/bin/getmail with the reaping done by a plain blocking
# waitpid(); retrieval and Maildir delivery are getmail's own.
GETMAIL_WRAPPER = """\
import os
import runpy
import sys

from getmailcore import baseclasses
from getmailcore.exceptions import getmailOperationError


def prepare_child(self):
    pass


def wait_for_child(self, childpid):
    pid, status = os.waitpid(childpid, 0)
    if not os.WIFEXITED(status):
        raise getmailOperationError("child %d ended with status %d"
                                    % (pid, status))
    return os.WEXITSTATUS(status)


baseclasses.ForkingBase._prepare_child = prepare_child
baseclasses.ForkingBase._wait_for_child = wait_for_child
sys.argv = ["getmail"] + sys.argv[1:]
runpy.run_path("/usr/bin/getmail", run_name="__main__")
"""


def run_getmail(inst, cdir, user, maildir, delete=False, read_all=True):
    gdir = cdir.mkdir("getmail")
    rc = cdir.write("getmail/getmailrc",
                    getmail_rc(inst, user, maildir, delete, read_all))
    wrapper = cdir.write("getmail-wrapper.py", GETMAIL_WRAPPER, 0o644)
    p = cdir.run(["/usr/bin/python3", wrapper, "--getmaildir", gdir,
                  "--rcfile", rc], timeout=300)
    text = p.stdout + p.stderr
    assert p.returncode == 0, "getmail exit %d:\n%s\n--- stderr ---\n%s" % (
        p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return text


def make_maildir(cdir, name):
    for sub in ("cur", "new", "tmp"):
        cdir.mkdir(name, sub)
    return os.path.join(cdir.path, name)


def from_maildir(data):
    """getmail's Maildir files use LF line ends: put the CRs back."""
    assert b"\r" not in data
    return data.replace(b"\n", b"\r\n")


# -- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="module")
def mailboxes(dovecot):
    """Two users, one per client, with 300 messages each delivered by
    LMTP. fetchmail's get every corpus shape that has a body and then
    generated ones; getmail's only the generated ones: getmail parses
    each message with Python's email package and writes it out again,
    which normalises header spacing ("Subject:x" becomes "Subject: x")
    and closes unterminated MIME parts, so corpus oddities would measure
    getmail, not the server."""
    fetch_user, get_user = dovecot.new_user(), dovecot.new_user()
    generated = make_messages("clients", COUNT)
    extra = corpus_part()
    fetch_messages = extra + generated[:COUNT - len(extra)]
    deliver(dovecot, [fetch_user, get_user], generated[:COUNT - len(extra)])
    deliver(dovecot, [fetch_user], extra)
    deliver(dovecot, [get_user], generated[COUNT - len(extra):])
    return {"fetchmail": (fetch_user, fetch_messages),
            "getmail": (get_user, generated)}


@pytest.fixture
def cdir():
    d = ClientDir()
    yield d
    d.close()


TRACE = re.compile(rb"(?:(?:Return-Path|Delivered-To|Received):[^\r]*\r\n"
                   rb"(?:[ \t][^\r]*\r\n)*)*")


def check_downloads(files, view, delivered):
    """The downloaded files are exactly the stored messages (IMAP
    BODY.PEEK[]), each once; and the stored messages are exactly the
    delivered ones with LMTP's trace header fields (RFC 5321 4.4) in
    front."""
    stored = sorted(b for _, b in view)
    assert len(files) == len(stored)
    assert sorted(files) == stored
    assert sorted(s[TRACE.match(s).end():] for s in stored) == \
        sorted(delivered)


class TestFetchmail:
    def test_keep_then_fetch_and_delete(self, dovecot, mailboxes, cdir):
        user, delivered = mailboxes["fetchmail"]
        _, view = imap_view(dovecot, user)
        assert len(view) == COUNT
        out = cdir.mkdir("keep")
        log = run_fetchmail(dovecot, cdir, user, out, keep=True)
        files = list(cdir.files("keep").values())
        assert len(files) == COUNT, log[-3000:]
        check_downloads(files, view, delivered)
        # keep: everything is still there, unchanged
        again = imap_view(dovecot, user)
        assert [b for _, b in again[1]] == [b for _, b in view]
        # fetch everything again and delete it (RFC 1939 DELE + QUIT)
        out = cdir.mkdir("delete")
        log = run_fetchmail(dovecot, cdir, user, out, keep=False,
                            rcname="fetchmailrc-delete")
        files = list(cdir.files("delete").values())
        assert len(files) == COUNT, log[-3000:]
        check_downloads(files, view, delivered)
        assert imap_view(dovecot, user)[1] == []
        p = session(dovecot, user)
        assert p.stat() == (0, 0)
        p.quit()
        if dovecot.is_sqlbox:
            assert dovecot.sql(user, "SELECT messages, psize FROM "
                                     "mailboxes WHERE name = 'INBOX'") == \
                [[0, 0]]
            assert dovecot.sql(user, "SELECT count(*) FROM expunged") == \
                [[COUNT]]
            # every body was used by this user's messages only: all freed
            assert dovecot.sql(user, "SELECT count(*) FROM bodies") == [[0]]
            assert dovecot.sql(user, "SELECT count(*) FROM body_chunks") \
                == [[0]]


class TestGetmail:
    def test_keep_then_delete(self, dovecot, mailboxes, cdir):
        user, delivered = mailboxes["getmail"]
        _, view = imap_view(dovecot, user)
        assert len(view) == COUNT
        maildir = make_maildir(cdir, "Maildir")
        log = run_getmail(dovecot, cdir, user, maildir, delete=False)
        files = [from_maildir(b) for b in
                 cdir.files("Maildir", "new").values()]
        assert len(files) == COUNT, log[-3000:]
        check_downloads(files, view, delivered)
        again = imap_view(dovecot, user)
        assert [b for _, b in again[1]] == [b for _, b in view]
        maildir = make_maildir(cdir, "Maildir2")
        log = run_getmail(dovecot, cdir, user, maildir, delete=True)
        files = [from_maildir(b) for b in
                 cdir.files("Maildir2", "new").values()]
        assert len(files) == COUNT, log[-3000:]
        check_downloads(files, view, delivered)
        assert imap_view(dovecot, user)[1] == []
        if dovecot.is_sqlbox:
            assert dovecot.sql(user, "SELECT count(*) FROM messages") == \
                [[0]]
            assert dovecot.sql(user, "SELECT count(*) FROM expunged") == \
                [[COUNT]]


# -- leave mail on server -----------------------------------------------------

RUNS = 10


def leave_on_server(dovecot, user, fetch):
    """Runs fetch() (one client poll; returns the messages it delivered
    locally, as stored bytes) RUNS times with new LMTP deliveries before
    each run, an IMAP expunge of already fetched messages before run 4 and
    a restart after deleting every file but the database before run 7.
    Each message must come exactly once, byte for byte as stored."""
    stored = {}                           # Message-ID -> stored bytes
    fetched = {}                          # Message-ID -> times fetched
    sent = 0
    rng = random.Random(1939)
    for run in range(1, RUNS + 1):
        new = make_messages("keep", rng.randrange(1, 8), first=sent)
        sent += len(new)
        deliver(dovecot, [user], new)
        _, view = imap_view(dovecot, user)
        for _, body in view:
            stored.setdefault(message_id(body), body)
        if run == 4:
            # RFC 1939 7: message numbers change, UIDLs do not
            c = dovecot.imap(user)
            check(c.select("INBOX"), "SELECT")
            check(c.store("1:3", "+FLAGS", "(\\Deleted)"), "STORE")
            check(c.expunge(), "EXPUNGE")
            c.logout()
        if run == 7:
            dovecot.stop()
            if dovecot.is_sqlbox:
                wipe_all_but_database(str(dovecot.user_dir(user)))
            dovecot.start()
        got = fetch(run)
        for data in got:
            mid = message_id(data)
            assert mid in stored, data[:300]
            assert data == stored[mid], mid
            fetched[mid] = fetched.get(mid, 0) + 1
        assert len(got) == len(new), (run, len(got), len(new))
    assert fetched == {mid: 1 for mid in stored}
    assert len(stored) == sent
    # and the server kept everything (but what IMAP expunged)
    _, view = imap_view(dovecot, user)
    assert len(view) == sent - 3


class TestLeaveMailOnServer:
    def test_fetchmail_uidl_over_stls(self, dovecot, user, cdir):
        out = cdir.mkdir("out")
        seen = set()
        logs = []

        def fetch(run):
            log = run_fetchmail(dovecot, cdir, user, out, keep=True,
                                tls="stls")
            logs.append(log)
            assert "POP3> STLS" in log, log[-3000:]
            files = cdir.files("out")
            new = [files[n] for n in sorted(files) if n not in seen]
            seen.update(files)
            return new

        leave_on_server(dovecot, user, fetch)
        # fetchmail really used UIDL to decide
        assert all("POP3> UIDL" in log for log in logs)

    def test_getmail_oldmail(self, dovecot, user, cdir):
        maildir = make_maildir(cdir, "Maildir")
        seen = set()

        def fetch(run):
            run_getmail(dovecot, cdir, user, maildir, delete=False,
                        read_all=False)
            files = cdir.files("Maildir", "new")
            new = [from_maildir(files[n]) for n in sorted(files)
                   if n not in seen]
            seen.update(files)
            return new

        leave_on_server(dovecot, user, fetch)
        oldmail = [n for n in os.listdir(os.path.join(cdir.path, "getmail"))
                   if n.startswith("oldmail-")]
        assert oldmail
