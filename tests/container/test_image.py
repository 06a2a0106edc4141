# SPDX-License-Identifier: MIT
"""The runtime image of the Containerfile, run as an operator would
(PLUGIN.md, "Containers"): its own configuration, a mail volume, a config
volume with a passwd-file and a certificate, users from SQLBOX_USERS, the
standard ports moved by SQLBOX_PORT_BASE onto loopback.

Checked: IMAP (STARTTLS 143, implicit TLS 993) for users from both
sources, with the mounted certificate verified; LMTP (24) delivery read back over POP3 (STLS 110, implicit TLS 995);
submission (STARTTLS 587, implicit TLS 465) relaying to an SMTP sink; the
mail in SQLite on the volume, owned by vmail, kept across a restart; the
health check; Dovecot's log on stdout without errors; a bad SQLBOX_USERS
entry stops the start with a clear message. (Dovecot counts loopback
connections as secure, so `ssl = required` cannot be seen from here.)
"""

import imaplib
import json
import os
import poplib
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from containerutil import (SmtpSink, pick_port_base, podman, port_open,
                           run_options, setting)

VMAIL = 5000
USERS = {"alice": "alice-pw", "bob": "bob-pw"}      # SQLBOX_USERS
FILE_USER = ("carol", "carol-pw")                    # /etc/sqlbox/users


class Box:
    """The running container and what the tests need to reach it."""

    def __init__(self, image):
        self.image = image
        self.dir = Path(tempfile.mkdtemp(prefix="sbx-image-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.mail = self.dir / "mail"
        self.config = self.dir / "config"
        self.mail.mkdir()
        os.chown(self.mail, VMAIL, VMAIL)
        (self.config / "tls").mkdir(parents=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(self.config / "tls" / "key.pem"),
             "-out", str(self.config / "tls" / "cert.pem")],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(self.config / "tls" / "key.pem", 0o644)
        (self.config / "users").write_text(
            "%s:{PLAIN}%s::::::\n" % FILE_USER)
        self.sink = SmtpSink()
        self.base = pick_port_base()
        self.name = "sqlbox-image-%d-%d" % (os.getpid(), self.base)
        self.ctx = ssl.create_default_context(
            cafile=str(self.config / "tls" / "cert.pem"))
        self.passwords = dict(USERS)
        self.passwords[FILE_USER[0]] = FILE_USER[1]

    def port(self, standard):
        return self.base + standard

    def start(self):
        podman("run", "-d", "--name", self.name, *run_options(),
               "-v", "%s:/srv/mail" % self.mail,
               "-v", "%s:/etc/sqlbox:ro" % self.config,
               "-e", "SQLBOX_USERS=" + " ".join(
                   "%s:%s" % kv for kv in USERS.items()),
               "-e", "SQLBOX_PORT_BASE=%d" % self.base,
               "-e", "SQLBOX_LISTEN=127.0.0.1",
               "-e", "SQLBOX_HOSTNAME=localhost",
               "-e", "SQLBOX_RELAY_HOST=127.0.0.1",
               "-e", "SQLBOX_RELAY_PORT=%d" % self.sink.port,
               self.image)
        self.wait_healthy()

    def wait_healthy(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if podman("healthcheck", "run", self.name,
                      check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError("container never became healthy:\n" +
                             self.logs())

    def logs(self):
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def imap(self, user, implicit=False):
        if implicit:
            c = imaplib.IMAP4_SSL("127.0.0.1", self.port(993),
                                  ssl_context=self.ctx, timeout=60)
        else:
            c = imaplib.IMAP4("127.0.0.1", self.port(143), timeout=60)
            c.starttls(ssl_context=self.ctx)
        c.login(user, self.passwords[user])
        return c

    def close(self):
        podman("rm", "-f", "-t", "10", self.name, check=False)
        self.sink.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def box():
    b = Box(setting("SQLBOX_CONTAINER_IMAGE"))
    try:
        b.start()
        yield b
    finally:
        b.close()


MESSAGE = (b"From: alice@localhost\r\nTo: alice@localhost\r\n"
           b"Subject: %s\r\nMessage-ID: <%s@localhost>\r\n\r\n%s\r\n")


def test_healthcheck_is_configured_and_passes(box):
    image = json.loads(podman("image", "inspect", box.image).stdout)[0]
    assert image["Healthcheck"]["Test"] == [
        "CMD", "/usr/local/bin/sqlbox-healthcheck"], image["Healthcheck"]
    assert podman("healthcheck", "run", box.name,
                  check=False).returncode == 0


def test_imap_for_env_and_file_users_in_sqlite_on_the_volume(box):
    for user, implicit in (("alice", False), ("carol", True)):
        c = box.imap(user, implicit=implicit)
        msg = MESSAGE % (b"imap " + user.encode(), user.encode(), b"hello")
        typ, data = c.append("INBOX", None, None, msg)
        assert typ == "OK" and b"APPENDUID" in data[0], data
        typ, data = c.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == msg
        c.logout()
        db = box.mail / user / "sqlbox" / "mail.sqlite"
        assert db.is_file(), sorted(box.mail.rglob("*"))
        assert db.stat().st_uid == VMAIL
        rows = subprocess.run(
            ["setpriv", "--reuid=%d" % VMAIL, "--regid=%d" % VMAIL,
             "--clear-groups", "sqlite3", "-readonly", str(db),
             "SELECT name, messages FROM mailboxes WHERE name = 'INBOX'"],
            stdout=subprocess.PIPE, text=True, check=True).stdout
        assert rows == "INBOX|1\n"


def test_lmtp_delivery_read_over_pop3(box):
    msg = MESSAGE % (b"by lmtp", b"lmtp1", b"delivered")
    lmtp = smtplib.LMTP("127.0.0.1", box.port(24), timeout=60)
    refused = lmtp.sendmail("sender@example.org", ["bob"], msg)
    lmtp.quit()
    assert refused == {}
    p = poplib.POP3("127.0.0.1", box.port(110), timeout=60)
    p.stls(context=box.ctx)
    p.user("bob")
    p.pass_(USERS["bob"])
    count, size = p.stat()
    assert count == 1
    lines = p.retr(1)[1]
    assert b"Subject: by lmtp" in lines and b"delivered" in lines
    p.quit()
    p = poplib.POP3_SSL("127.0.0.1", box.port(995), context=box.ctx,
                        timeout=60)
    p.user("bob")
    p.pass_(USERS["bob"])
    assert p.stat() == (count, size)
    p.quit()


def test_submission_relays_to_the_mta(box):
    before = len(box.sink.messages)
    for implicit in (False, True):
        if implicit:
            s = smtplib.SMTP_SSL("127.0.0.1", box.port(465),
                                 context=box.ctx, timeout=60)
        else:
            s = smtplib.SMTP("127.0.0.1", box.port(587), timeout=60)
            s.starttls(context=box.ctx)
        s.login("alice", USERS["alice"])
        tag = b"implicit" if implicit else b"starttls"
        s.sendmail("alice@localhost", ["someone@example.org"],
                   MESSAGE % (b"submitted " + tag, tag, b"relayed"))
        s.quit()
    got = box.sink.wait_messages(before + 2)[before:]
    assert len(got) == 2, got
    for (mail_from, rcpts, data), tag in zip(got, (b"starttls",
                                                   b"implicit")):
        assert mail_from == "<alice@localhost>"
        assert rcpts == ["<someone@example.org>"]
        assert b"Subject: submitted " + tag in data


def test_log_on_stdout_without_errors(box):
    logs = box.logs()
    assert re.search(r"imap-login: Info: Login: user=<alice>", logs), logs
    assert re.search(r"lmtp\(bob\).*saved mail to INBOX", logs), logs
    bad = [line for line in logs.splitlines()
           if re.search(r": (Error|Panic|Fatal): ", line)]
    assert bad == [], logs


def test_mail_survives_a_restart(box):
    podman("restart", "-t", "20", box.name)
    box.wait_healthy()
    c = box.imap("alice")
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    c.logout()


def test_bad_users_entry_stops_the_start(box):
    p = podman("run", "--rm", *run_options(),
               "-e", "SQLBOX_USERS=alice:ok nopassword",
               "-e", "SQLBOX_PORT_BASE=%d" % box.base, box.image,
               check=False, timeout=120)
    assert p.returncode != 0
    assert "SQLBOX_USERS entry 'nopassword' is not user:password" in \
        p.stdout + p.stderr
