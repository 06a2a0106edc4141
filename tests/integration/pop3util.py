# SPDX-License-Identifier: MIT
"""Helpers for the POP3 tests (test_pop3*.py).

- Pop3: a socket-level POP3 client that keeps the exact bytes of every
  answer (poplib drops line ends and undoes the dot-stuffing, so it cannot
  show what went over the wire), over implicit TLS (995 role), STLS (110
  role, RFC 2595 4) or plaintext.
- unstuff(): RFC 1939 3 byte-stuffing undone.
- The IMAP view of a mailbox (UIDVALIDITY, UIDs, BODY.PEEK[]) to compare
  POP3 answers with, and the UIDL Dovecot derives from it.
- sql_write(): a change to a user's database by hand, the way PLUGIN.md
  tells operators to (as the mail uid, under the lock file, with checkpoint
  on close off).
- Running fetchmail/getmail as an unprivileged user in a scratch directory.
"""

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile

from harness import InstanceError, check, join_imaplib, parse_imap

DB_FILES = ("mail.sqlite", "mail.sqlite-wal", "mail.sqlite-shm")


class Pop3Error(Exception):
    pass


class Pop3:
    """A POP3 session on a raw socket. Every answer is returned as bytes;
    status lines without their CRLF, multi-line bodies exactly as sent
    (still dot-stuffed, without the terminating ".CRLF")."""

    def __init__(self, sock):
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.readline()

    # -- transport ----------------------------------------------------------

    def readline(self):
        """One line without its CRLF; EOFError when the server closed."""
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed by server")
        if not line.endswith(b"\r\n"):
            raise Pop3Error("line without CRLF: %r" % line[-80:])
        return line[:-2]

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def at_eof(self):
        """True when the server has closed the connection (a read gives
        nothing)."""
        try:
            return self.file.read(1) == b""
        except (ConnectionError, OSError):
            return True

    # -- commands -----------------------------------------------------------

    def cmd(self, line):
        """Sends one command line and returns the status line."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.readline()

    def read_multi(self):
        """The rest of a multi-line answer (RFC 1939 3): the bytes up to
        the terminating CRLF.CRLF, still dot-stuffed, each line with its
        CRLF."""
        out = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("connection closed inside a multi-line "
                               "answer")
            if line == b".\r\n":
                return b"".join(out)
            out.append(line)

    def multi(self, line):
        """A command with a multi-line answer: (status line, body bytes as
        sent) or (status line, None) when the status is not +OK."""
        status = self.cmd(line)
        if not status.startswith(b"+OK"):
            return status, None
        return status, self.read_multi()

    def stls(self, ctx):
        """RFC 2595 4: STLS, then the TLS handshake on the same socket."""
        status = self.cmd(b"STLS")
        if not status.startswith(b"+OK"):
            raise Pop3Error("STLS: %r" % status)
        self.file.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def login(self, user, password):
        """USER/PASS (RFC 1939 7); raises unless both answer +OK."""
        for line in ("USER " + user, "PASS " + password):
            status = self.cmd(line)
            if not status.startswith(b"+OK"):
                raise Pop3Error("%s: %r" % (line.split()[0], status))
        return status

    def auth_plain(self, user, password, initial=True):
        """AUTH PLAIN (RFC 5034 4, RFC 4616) with the initial response on
        the command line, or after the server's "+ " continuation."""
        token = base64.b64encode(b"\0" + user.encode() + b"\0" +
                                 password.encode())
        if initial:
            return self.cmd(b"AUTH PLAIN " + token)
        status = self.cmd(b"AUTH PLAIN")
        if not status.startswith(b"+ ") and status != b"+":
            return status
        return self.cmd(token)

    def capa(self):
        """RFC 2449 5: CAPA as {NAME: [arguments]}."""
        status, body = self.multi(b"CAPA")
        if body is None:
            raise Pop3Error("CAPA: %r" % status)
        out = {}
        for line in body.split(b"\r\n"):
            if line:
                words = line.decode().split()
                out[words[0].upper()] = words[1:]
        return out

    def stat(self):
        status = self.cmd(b"STAT")
        m = re.match(rb"\+OK (\d+) (\d+)$", status)
        if not m:
            raise Pop3Error("STAT: %r" % status)
        return int(m.group(1)), int(m.group(2))

    def list(self):
        """LIST as {msgnum: size}."""
        status, body = self.multi(b"LIST")
        if body is None:
            raise Pop3Error("LIST: %r" % status)
        return {int(a): int(b) for a, b in
                (line.split() for line in body.split(b"\r\n") if line)}

    def uidl(self):
        """UIDL as {msgnum: uidl str}."""
        status, body = self.multi(b"UIDL")
        if body is None:
            raise Pop3Error("UIDL: %r" % status)
        return {int(a): b.decode() for a, b in
                (line.split() for line in body.split(b"\r\n") if line)}

    def retr(self, msgnum):
        """RETR n -> (status line, message bytes after dot-unstuffing) or
        (status line, None) on -ERR."""
        status, body = self.multi(b"RETR %d" % msgnum)
        return status, (None if body is None else unstuff(body))

    def quit(self):
        status = self.cmd(b"QUIT")
        self.close()
        return status

    def drop(self):
        """Closes the connection without QUIT (and, on TLS, without a
        close_notify): what a client that crashes or loses its network
        does."""
        try:
            self.file.close()
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def connect(inst, tls="implicit", timeout=60):
    """A Pop3 on the instance: tls 'implicit' (995 role), 'stls' (110 role,
    upgraded with STLS before anything else) or None (plaintext on the 110
    role)."""
    if tls == "implicit":
        sock = socket.create_connection(("127.0.0.1", inst.port("pop3s")),
                                        timeout=timeout)
        sock = inst.ssl_context().wrap_socket(sock,
                                              server_hostname="127.0.0.1")
        p = Pop3(sock)
    elif tls in ("stls", None):
        sock = socket.create_connection(("127.0.0.1", inst.port("pop3")),
                                        timeout=timeout)
        p = Pop3(sock)
        if tls == "stls":
            p.stls(inst.ssl_context())
    else:
        raise ValueError("tls=%r" % (tls,))
    if not p.greeting.startswith(b"+OK"):
        raise Pop3Error("greeting: %r" % p.greeting)
    inst._clients.append(_Closer(p))
    return p


def session(inst, user, tls="implicit"):
    """A Pop3 logged in as user (USER/PASS)."""
    p = connect(inst, tls)
    p.login(user, inst.password(user))
    return p


class _Closer:
    """Lets DovecotInstance.close_clients() close a Pop3 it does not know:
    it calls logout() on anything that is not a RawImap."""

    state = None

    def __init__(self, p):
        self.p = p

    def logout(self):
        self.p.close()

    def shutdown(self):
        self.p.close()


def unstuff(body):
    """RFC 1939 3: a line of a multi-line answer that starts with '.' had
    one '.' prepended; remove it. body is as read (lines with CRLF)."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


def as_retrieved(message):
    """The bytes a RETR of a stored message must give after unstuffing: the
    message, plus the CRLF that the server adds before the terminating
    line when the message does not end with one (RFC 1939 3: the
    termination octet is on a line of its own)."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def top_of(message, lines):
    """RFC 1939 7 TOP msg n: the header, the blank line after it, and the
    first n lines of the body. The message must have a blank line and end
    with CRLF."""
    head, sep, body = message.partition(b"\r\n\r\n")
    assert sep, "message without a header/body separator"
    body_lines = body.split(b"\r\n")[:-1]
    kept = b"".join(l + b"\r\n" for l in body_lines[:lines])
    return head + b"\r\n\r\n" + kept


def uidl_for(uid, uidvalidity):
    """Dovecot's default pop3_uidl_format %08Xu%08Xv: the UID and the
    UIDVALIDITY as 8 hex digits each. Dovecot's %X modifier writes
    lower-case hex, which is what its own backends answer."""
    return "%08x%08x" % (uid, uidvalidity)


# -- the IMAP view ------------------------------------------------------------

def imap_view(inst, user, mailbox="INBOX", bodies=True):
    """(UIDVALIDITY, [(uid, BODY.PEEK[] bytes or None)]) of a mailbox, in
    UID order, read over IMAP (EXAMINE, so nothing changes)."""
    c = inst.imap(user)
    typ, data = c.select(mailbox, readonly=True)
    if typ != "OK":
        raise InstanceError("EXAMINE %s: %r" % (mailbox, data))
    uidvalidity = int(c.untagged_responses["UIDVALIDITY"][0])
    count = int(data[0])
    out = []
    if count:
        items = "(UID BODY.PEEK[])" if bodies else "(UID)"
        data = check(c.uid("FETCH", "1:*", items), "FETCH")
        for line in join_imaplib(data):
            vals = parse_imap(line)
            d = vals[1]
            kv = {d[i].decode().upper(): d[i + 1]
                  for i in range(0, len(d), 2)}
            out.append((kv["UID"], kv.get("BODY[]")))
    c.logout()
    inst._clients.remove(c)
    out.sort()
    return uidvalidity, out


def imap_flags(inst, user):
    """{uid: set of flags} of INBOX, \\Recent left out."""
    c = inst.imap(user)
    check(c.select("INBOX", readonly=True), "EXAMINE")
    data = check(c.uid("FETCH", "1:*", "(UID FLAGS)"), "FETCH")
    out = {}
    for line in join_imaplib(data):
        if line is None or not line.strip():
            continue
        d = parse_imap(line)[1]
        kv = {d[i].decode().upper(): d[i + 1] for i in range(0, len(d), 2)}
        out[kv["UID"]] = {f.decode() for f in kv["FLAGS"]} - {"\\Recent"}
    c.logout()
    inst._clients.remove(c)
    return out


def append_exact(inst, user, messages, mailbox=b"INBOX"):
    """APPENDs each message with its exact bytes (LITERAL+, RFC 7888; bare
    LFs kept, unlike imaplib). Returns the UIDs."""
    raw = inst.raw_imap(user)
    uids = []
    for data in messages:
        st, text, _ = raw.command(b"APPEND " + mailbox + b" {%d+}\r\n"
                                  % len(data) + data)
        if st != "OK":
            raise InstanceError("APPEND: %s %s" % (st, text))
        m = re.search(r"\[APPENDUID \d+ (\d+)\]", text)
        uids.append(int(m.group(1)))
    raw.close()
    inst._clients.remove(raw)
    return uids


# -- delivery -----------------------------------------------------------------

def lmtp_deliver_many(inst, rcpts, messages, mail_from="sender@example.org"):
    """Delivers each message to every recipient over one LMTP connection
    (RFC 2033: one transaction per message, a reply per recipient after
    DATA); fails unless every reply is 250."""
    import smtplib
    lmtp = smtplib.LMTP("127.0.0.1", inst.port("lmtp"), timeout=60)
    try:
        lmtp.ehlo()
        for message in messages:
            # LMTP carries CRLF lines (RFC 5321 2.3.8); smtplib dot-stuffs
            message = re.sub(rb"(?<!\r)\n", b"\r\n", message)
            code, text = lmtp.mail(mail_from)
            if code != 250:
                raise InstanceError("LMTP MAIL: %d %r" % (code, text))
            for r in rcpts:
                code, text = lmtp.rcpt(r)
                if code != 250:
                    raise InstanceError("LMTP RCPT %s: %d %r" % (r, code,
                                                                 text))
            replies = [lmtp.data(message)]
            replies += [lmtp.getreply() for _ in rcpts[1:]]
            for r, (code, text) in zip(rcpts, replies):
                if code != 250:
                    raise InstanceError("LMTP DATA for %s: %d %r" % (
                        r, code, text))
        lmtp.quit()
    finally:
        lmtp.close()


# -- the database -------------------------------------------------------------

def mail_ids():
    """uid, gid the mail (and the clients) run as."""
    if os.getuid() == 0:
        return 65534, 65534
    return os.getuid(), os.getgid()


def as_mail_user(cmd):
    """cmd prefixed to run as the mail uid when we are root."""
    if os.getuid() != 0:
        return list(cmd)
    uid, gid = mail_ids()
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
            "--clear-groups"] + list(cmd)


def sql_write(inst, user, script, timeout=120):
    """Runs an SQL script on the user's database the way PLUGIN.md tells
    operators to: as the mail uid, holding mail.sqlite.lock (flock), with
    checkpoint-on-close off. The script brings its own BEGIN IMMEDIATE /
    COMMIT. Returns sqlite3's output."""
    db = inst.db_path(user)
    lock = str(db) + ".lock"
    cmd = as_mail_user(["flock", "-w", "60", lock, "sqlite3", "-bail",
                        "-cmd", ".dbconfig no_ckpt_on_close on", str(db)])
    p = subprocess.run(cmd, input=script, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0 or p.stderr.strip():
        raise InstanceError("sqlite3 script failed (%d): %s\n%s" % (
            p.returncode, p.stderr, script[:2000]))
    return p.stdout


BUMP_MODSEQ = ("UPDATE mailboxes SET highestmodseq = "
               "(highestmodseq / 65536 + 1) * 65536 WHERE name = 'INBOX';\n")
INBOX_ID = "(SELECT id FROM mailboxes WHERE name = 'INBOX')"
INBOX_MODSEQ = "(SELECT highestmodseq FROM mailboxes WHERE name = 'INBOX')"


def db_state(inst, user):
    """What POP3 could change, for "nothing changed" checks: every table
    of the database but meta, as dumped; on another backend (the suite's
    self-check) the IMAP view of INBOX with its flags."""
    if not inst.is_sqlbox:
        return imap_view(inst, user), imap_flags(inst, user)
    dump = inst.sql_dump(user)
    dump.pop("meta", None)
    return dump


def wipe_all_but_database(home):
    """Deletes everything under home except sqlbox/mail.sqlite{,-wal,-shm}
    (Dovecot must be stopped). Returns the paths deleted."""
    keep = {os.path.join(home, "sqlbox", f) for f in DB_FILES}
    deleted = []
    for dirpath, dirnames, filenames in os.walk(home, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path not in keep:
                os.unlink(path)
                deleted.append(path)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if path == os.path.join(home, "sqlbox"):
                continue
            if os.path.islink(path):
                os.unlink(path)
            else:
                shutil.rmtree(path)
            deleted.append(path + "/")
    return deleted


# -- external clients ---------------------------------------------------------

class ClientDir:
    """A scratch directory for fetchmail/getmail, owned by the uid they run
    as (not root: fetchmail warns about root and getmail refuses to
    deliver to a maildir as root)."""

    def __init__(self, prefix="sbx-pop3c-"):
        self.path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(self.path, 0o755)
        self.uid, self.gid = mail_ids()
        self._own(self.path)

    def _own(self, path):
        if os.getuid() == 0:
            os.chown(path, self.uid, self.gid)

    def mkdir(self, *parts):
        path = os.path.join(self.path, *parts)
        os.makedirs(path, exist_ok=True)
        cur = self.path
        for part in os.path.relpath(path, self.path).split(os.sep):
            cur = os.path.join(cur, part)
            self._own(cur)
        return path

    def write(self, name, text, mode=0o600):
        path = os.path.join(self.path, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        self._own(path)
        return path

    def run(self, cmd, timeout=120, env=None):
        """Runs cmd as the client uid with HOME here; returns the
        CompletedProcess (text)."""
        e = {"PATH": "/usr/bin:/bin", "HOME": self.path, "LC_ALL": "C",
             "FETCHMAILHOME": self.path}
        e.update(env or {})
        return subprocess.run(as_mail_user(cmd), env=e, cwd=self.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)

    def files(self, *parts):
        """{name: bytes} of the regular files in a subdirectory."""
        d = os.path.join(self.path, *parts)
        out = {}
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
        return out

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)
