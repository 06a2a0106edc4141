# SPDX-License-Identifier: MIT
"""Helpers for the submission tests: a swaks runner, a raw SMTP client
(for pipelining and exact replies) and the operator database."""

import json
import os
import re
import smtplib
import subprocess

DOMAIN = "example.test"

SENDERS_CONF = """
plugin {
  submission_sqlbox_senders = %u@example.test
}
"""


def addr(user):
    return "%s@%s" % (user, DOMAIN)


def message(user, to, msgid, subject="test", body="hello\r\n",
            extra_headers=""):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: %s\r\n"
            "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n%s\r\n%s"
            % (addr(user), to, subject, msgid, extra_headers,
               body)).encode()


def swaks(d, user, to, data=None, port="submission", tls="starttls",
          mail_from=None, local_interface=None, auth=True, extra=()):
    """Runs swaks against the instance; returns (exit code, transcript)."""
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(d.port(port)),
           "--from", mail_from if mail_from is not None else addr(user),
           "--to", to, "--timeout", "60", "--helo", "client.example.test"]
    if tls == "starttls":
        cmd += ["--tls"]
    elif tls == "implicit":
        cmd += ["--tls-on-connect"]
    if tls:
        cmd += ["--tls-verify", "--tls-ca-path", str(d.cafile),
                "--tls-sni", "localhost"]
    if auth:
        cmd += ["--auth", "PLAIN", "--auth-user", user,
                "--auth-password", d.password(user)]
    if local_interface:
        cmd += ["--local-interface", local_interface]
    if data is not None:
        cmd += ["--data", "-"]
    cmd += list(extra)
    p = subprocess.run(cmd, input=data if data is not None else b"",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    return p.returncode, p.stdout.decode(errors="replace")


def smtp(d, user, port="submission"):
    """An smtplib client, after STARTTLS and AUTH."""
    c = smtplib.SMTP("127.0.0.1", d.port(port), timeout=60)
    c.ehlo("client.example.test")
    c.starttls(context=d.ssl_context())
    c.ehlo("client.example.test")
    c.login(user, d.password(user))
    return c


class RawSmtp:
    """Lines over a TLS socket after AUTH: for pipelined commands."""

    def __init__(self, d, user):
        self.c = smtp(d, user)
        self.sock = self.c.sock
        self.file = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("connection closed")
            lines.append(line.decode(errors="replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def close(self):
        try:
            self.send(b"QUIT\r\n")
            self.reply()
        except Exception:
            pass
        self.file.close()
        self.c.close()


def policy_db(d):
    return d.dir / "policy" / "submission.sqlite"


_POLICY_CHILD = (
    "import json, sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], timeout=30)\n"
    "q, p = json.loads(sys.stdin.read())\n"
    "rows = [list(r) for r in db.execute(q, p)]\n"
    "db.commit()\n"
    "print(json.dumps(rows))\n")


def policy_sql(d, query, params=()):
    """One statement on the operator database as the mail user (a root
    process would leave root-owned -wal/-shm files behind)."""
    kw = {}
    if os.getuid() == 0:
        kw = {"user": 65534, "group": 65534, "extra_groups": []}
    p = subprocess.run(["/usr/bin/python3", "-c", _POLICY_CHILD,
                        str(policy_db(d))],
                       input=json.dumps([query, list(params)]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60, **kw)
    if p.returncode != 0:
        raise RuntimeError("policy sql %r: %s" % (query, p.stderr))
    return json.loads(p.stdout)


def imap_sent(d, user, mailbox="Sent"):
    """[(flags, header bytes)] of every message in mailbox over IMAP."""
    c = d.imap(user)
    typ, exists = c.select('"%s"' % mailbox, readonly=True)
    assert typ == "OK", mailbox
    out = []
    if exists[0] != b"0":
        typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER])")
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1)
                out.append((flags.decode(), item[1]))
    c.logout()
    d._clients.remove(c)
    return out
