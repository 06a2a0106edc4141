# SPDX-License-Identifier: MIT
"""Helpers for the delivery and real-client tests (test_delivery,
test_sieve, test_mbsync, test_oracle_corpus, test_big_mail).

- Lmtp: an LMTP client on a raw socket that reads one reply per accepted
  recipient after DATA (RFC 2033 4.2), which smtplib.LMTP does not.
- split_trace(): the trace fields LMTP prepends (Return-Path,
  Delivered-To, Received) apart from the message as sent.
- lda(): runs dovecot-lda against an instance's configuration.
- hold_write_lock(): holds flock(2) on a user's mail.sqlite.lock, the lock
  every sqlbox writer takes first (DESIGN.md 4).
- Idler: IMAP IDLE (RFC 2177) on a raw socket.
- SQL readers: folder counts and a body's bytes read back from its chunks,
  as the mail user.
- generate(): a seeded generator of varied RFC 5322 messages (MIME trees,
  charsets, transfer encodings, threads, odd headers, 8-bit, sizes), the
  same bytes on every run and machine.
"""

import base64
import contextlib
import fcntl
import os
import quopri
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time

# SQLBOX_LDA: a wrapper instead (make asan preloads the ASan runtime).
LDA = os.environ.get("SQLBOX_LDA", "/usr/lib/dovecot/dovecot-lda")
EX_TEMPFAIL = 75

SLOW = os.environ.get("SQLBOX_SLOW") == "1"


def mail_ids():
    """uid and gid that own mail in an instance (scripts/dovecot-instance.sh:
    nobody as root, else the caller)."""
    if os.getuid() == 0:
        return 65534, 65534
    return os.getuid(), os.getgid()


def crlf(data):
    """Every LF not preceded by CR becomes CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


DOVECOT_MODULES = "/usr/lib/dovecot/modules"


class PluginDir:
    """A mail_plugin_dir holding the sqlbox build's plugins and some of
    Dovecot's own (e.g. Pigeonhole's lib90_sieve_plugin.so), as symlinks:
    the instance points mail_plugin_dir at the build, where Dovecot's
    plugins are not. Traversable by the mail user (plugins are loaded
    after the switch to it). remove() deletes it."""

    def __init__(self, build, dovecot_plugins):
        self.path = tempfile.mkdtemp(prefix="sbx-plugins-", dir="/tmp")
        os.chmod(self.path, 0o755)
        for f in os.listdir(str(build)):
            if f.startswith("lib") and f.endswith(".so"):
                os.symlink(os.path.join(str(build), f),
                           os.path.join(self.path, f))
        for name in dovecot_plugins:
            src = os.path.join(DOVECOT_MODULES, name)
            if not os.path.exists(src):
                raise FileNotFoundError(
                    "%s is missing: install the Debian package that has it"
                    % src)
            os.symlink(src, os.path.join(self.path, name))

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


# -- LMTP ---------------------------------------------------------------------

class LmtpError(Exception):
    pass


class Lmtp:
    """An LMTP session (RFC 2033) on the instance's inet listener, or on
    its unix socket with unix=True.

        with Lmtp(inst) as l:
            replies = l.send_mail("a@b", ["user01", "user02"], data)
            # {"user01": (250, "2.0.0 <user01> ... Saved"), ...}
    """

    def __init__(self, inst, unix=False, timeout=120):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(inst.dir / "run" / "lmtp"))
        else:
            self.sock = socket.create_connection(
                ("127.0.0.1", inst.port("lmtp")), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.transcript = []
        code, text = self.reply()
        if code != 220:
            raise LmtpError("greeting: %d %s" % (code, text))
        code, text = self.command(b"LHLO test.example")
        if code != 250:
            raise LmtpError("LHLO: %d %s" % (code, text))
        self.capabilities = text.split("\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reply(self):
        """One (possibly multi-line, RFC 5321 4.2.1) reply: (code, text),
        the lines' texts joined by newlines."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("LMTP connection closed; so far: %r"
                               % self.transcript)
            self.transcript.append(b"S: " + line)
            m = re.match(rb"(\d{3})([ -])(.*?)\r?\n$", line, re.S)
            if not m:
                raise LmtpError("bad reply line %r" % line)
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return int(m.group(1)), "\n".join(lines)

    def command(self, line):
        self.transcript.append(b"C: " + line)
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send_mail(self, mail_from, rcpts, message):
        """One transaction: MAIL, RCPT for each recipient, DATA. Returns
        {rcpt: (code, text)}: RCPT's reply where it was refused, else the
        reply DATA gave for that recipient, in RCPT order (RFC 2033 4.2).
        The message goes out with CRLF line ends and dot-stuffed."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        code, text = self.command(b"MAIL FROM:<" + mail_from.encode() +
                                  b">")
        if code != 250:
            raise LmtpError("MAIL FROM: %d %s" % (code, text))
        result = {}
        accepted = []
        for r in rcpts:
            code, text = self.command(b"RCPT TO:<" + r.encode() + b">")
            if code in (250, 251):
                accepted.append(r)
            else:
                result[r] = (code, text)
        if not accepted:
            self.command(b"RSET")
            return result
        code, text = self.command(b"DATA")
        if code != 354:
            raise LmtpError("DATA: %d %s" % (code, text))
        data = crlf(message)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        # RFC 5321 4.5.2: a line starting with '.' gets one more.
        data = re.sub(rb"(?m)^\.", b"..", data)
        self.transcript.append(b"C: <%d bytes>" % len(data))
        self.sock.sendall(data + b".\r\n")
        for r in accepted:
            result[r] = self.reply()
        return result

    def close(self):
        try:
            self.command(b"QUIT")
        except Exception:
            pass
        try:
            self.file.close()
            self.sock.close()
        except Exception:
            pass


def lmtp_deliver(inst, rcpts, message, mail_from="sender@example.org",
                 unix=False):
    """One message over a fresh LMTP connection; see Lmtp.send_mail."""
    with Lmtp(inst, unix=unix) as l:
        return l.send_mail(mail_from, rcpts, message)


TRACE_LINE = re.compile(
    rb"(Return-Path|Delivered-To|Received):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def split_trace(delivered):
    """Splits a delivered message into (trace headers as {name: [values]},
    the rest): the leading Return-Path, Delivered-To and Received fields
    that LMTP/LDA prepend (RFC 5321 4.4)."""
    pos = 0
    fields = {}
    while True:
        m = TRACE_LINE.match(delivered, pos)
        if not m:
            break
        fields.setdefault(m.group(1).decode().lower(), []).append(
            delivered[m.start():m.end()])
        pos = m.end()
    return fields, delivered[pos:]


def check_delivered(delivered, sent, rcpt, sender="sender@example.org",
                    single=True):
    """Asserts that a copy delivered over LMTP is the sent message (CRLF)
    after the trace fields Dovecot 2.3's LMTP prepends: one Return-Path
    (the envelope sender), one Received (with LMTP), and, when the
    transaction had this one local recipient, one Delivered-To naming it
    (with several recipients the copies share one saved mail, so no
    per-recipient field is added)."""
    fields, rest = split_trace(delivered)
    want = crlf(sent)
    if not want.endswith(b"\r\n"):
        want += b"\r\n"
    assert rest == want, "delivered body differs for %s (%d vs %d bytes)" % (
        rcpt, len(rest), len(want))
    assert [v.strip() for v in fields.get("return-path", [])] == [
        b"Return-Path: <" + sender.encode() + b">"], fields
    received = fields.get("received", [])
    assert len(received) == 1 and b" with LMTP" in received[0], fields
    if single:
        assert [v.strip() for v in fields.get("delivered-to", [])] == [
            b"Delivered-To: " + rcpt.encode()], fields
    else:
        assert "delivered-to" not in fields, fields


# -- LDA -------------------------------------------------------------------

def lda(inst, user, message, mailbox=None, sender="sender@example.org",
        options=(), timeout=120):
    """Runs dovecot-lda (as root it switches to the userdb uid itself)
    with the instance's configuration; options are -o setting=value
    overrides. Returns (exit status, stderr)."""
    cmd = [LDA, "-c", str(inst.conf), "-d", user, "-f", sender]
    if mailbox is not None:
        cmd += ["-m", mailbox]
    for o in options:
        cmd += ["-o", o]
    p = subprocess.run(cmd, input=message, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def set_userdb_fields(inst, user, fields):
    """Puts userdb extra fields (e.g. a per-user plugin setting) on the
    user's passwd-file line and waits until auth re-reads the file (at
    most once a second, db-passwd-file.c)."""
    path = inst.dir / "passwd"
    text = path.read_text()
    line = re.search(r"^%s:.*$" % re.escape(user), text, re.M).group(0)
    parts = line.split(":")
    assert len(parts) == 8, line
    parts[7] = " ".join("userdb_%s=%s" % kv for kv in fields.items())
    new = text.replace(line, ":".join(parts))
    tmp = path.with_name("passwd.tmp-test")
    tmp.write_text(new)
    st = path.stat()
    os.chown(str(tmp), st.st_uid, st.st_gid)
    os.chmod(str(tmp), st.st_mode & 0o777)
    os.replace(str(tmp), str(path))
    time.sleep(1.2)


# -- the write lock ----------------------------------------------------------

def lock_path(inst, user):
    return inst.db_path(user).parent / "mail.sqlite.lock"


@contextlib.contextmanager
def hold_write_lock(inst, user):
    """Holds the user's write lock (flock(2) on mail.sqlite.lock, as
    sqlbox's writers and an operator's sqlite3 session do) for the body of
    the with statement. The database must exist (log the user in once)."""
    path = lock_path(inst, user)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- IDLE --------------------------------------------------------------------

class Idler:
    """A RawImap session in IDLE (RFC 2177) on one mailbox."""

    def __init__(self, inst, user, mailbox=b"INBOX"):
        self.raw = inst.raw_imap(user)
        st, text, lines = self.raw.command(b"SELECT " + mailbox)
        if st != "OK":
            raise AssertionError("SELECT: %s %s" % (st, text))
        self.select_lines = lines
        self.exists = None
        for line in lines:
            m = re.match(rb"\* (\d+) EXISTS", line)
            if m:
                self.exists = int(m.group(1))
        self.tag = self.raw.next_tag()
        self.raw.send(self.tag + b" IDLE\r\n")
        line = self.raw.readline()
        if not line.startswith(b"+"):
            raise AssertionError("IDLE not accepted: %r" % line)
        self.seen = []

    def wait_for(self, pattern, timeout):
        """Reads untagged responses until one matches the regex (bytes);
        returns the match, or None when timeout seconds pass first (the
        session is unusable after that)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.raw.sock.settimeout(left)
            try:
                line = self.raw.readline()
            except (socket.timeout, TimeoutError):
                return None
            self.seen.append(line)
            m = re.match(pattern, line)
            if m:
                return m

    def done(self):
        """Ends IDLE; returns the tagged status."""
        self.raw.sock.settimeout(60)
        self.raw.send(b"DONE\r\n")
        while True:
            line = self.raw.readline()
            self.seen.append(line)
            if line.startswith(self.tag + b" "):
                return line[len(self.tag) + 1:].split(b" ")[0].decode()


# -- SQL ---------------------------------------------------------------------

def folder_counts(inst, user):
    """{folder name: (rows in messages, the messages counter)} from SQL."""
    rows = inst.sql(user, "SELECT b.name, b.messages, "
                    "(SELECT count(*) FROM messages m "
                    " WHERE m.mailbox_id = b.id) FROM mailboxes b")
    return {name: (n_rows, counter) for name, counter, n_rows in rows}


_BODY_CHILD = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True,"
    " timeout=30)\n"
    "out = sys.stdout.buffer\n"
    "for (data,) in db.execute('SELECT data FROM body_chunks"
    " WHERE body_id = ? ORDER BY seq', (int(sys.argv[2]),)):\n"
    "    out.write(data)\n")


def body_bytes(inst, user, body_id):
    """A body's bytes as its chunks give them, in seq order (read as the
    mail user, without a lock: DESIGN.md 1.3)."""
    uid, gid = mail_ids()
    kw = {}
    if os.getuid() == 0:
        kw = {"user": uid, "group": gid, "extra_groups": []}
    p = subprocess.run(["/usr/bin/python3", "-c", _BODY_CHILD,
                        str(inst.db_path(user)), str(body_id)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120, **kw)
    if p.returncode != 0:
        raise AssertionError("reading body %d: %s" % (
            body_id, p.stderr.decode(errors="replace")))
    return p.stdout


# -- IMAP bits ----------------------------------------------------------------

def parse_imap_items(data):
    """The parenthesised item list of one FETCH response (after
    "* n FETCH ") -> {ITEM (upper case): value}."""
    from harness import parse_imap
    vals = parse_imap(data)[0]
    return {vals[i].decode().upper(): vals[i + 1]
            for i in range(0, len(vals), 2)}


def fetch_all(raw, items, uids=b"1:*"):
    """UID FETCH over a range on a RawImap: {uid: {ITEM: value}}."""
    st, text, lines = raw.command(b"UID FETCH " + uids + b" " + items)
    if st != "OK":
        raise AssertionError("UID FETCH %r: %s %s" % (items, st, text))
    out = {}
    for line in lines:
        m = re.match(rb"\* \d+ FETCH ", line)
        if not m:
            continue
        d = parse_imap_items(line[m.end():])
        out[d["UID"]] = d
    return out


def fetch_all_bodies(inst, user, mailbox=b"INBOX"):
    """[BODY[]] of a folder in UID order, over a fresh session."""
    raw = inst.raw_imap(user)
    select(raw, mailbox, examine=True)
    got = fetch_all(raw, b"(UID BODY.PEEK[])")
    raw.close()
    return [got[uid]["BODY[]"] for uid in sorted(got)]


def select(raw, mailbox=b"INBOX", examine=False):
    st, text, lines = raw.command((b"EXAMINE " if examine else b"SELECT ")
                                  + mailbox)
    if st != "OK":
        raise AssertionError("SELECT %r: %s %s" % (mailbox, st, text))
    for line in lines:
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no EXISTS in %r" % lines)


# -- the message generator ---------------------------------------------------

VOCAB = ("mail store index folder sqlite dovecot message header body part "
         "boundary quota sieve thread subject reply forward archive draft "
         "junk trash sent inbox flag keyword uid modseq lorem ipsum dolor "
         "sit amet consectetur adipiscing elit invoice meeting agenda "
         "release notes patch review build test harness delivery").split()

# (charset, sample text that charset can encode)
CHARSETS = [
    ("us-ascii", "Plain ASCII text, nothing special here."),
    ("utf-8", "Grüße aus Köln, naïve café, Ελληνικά, Кириллица, 東京, 🙂."),
    ("iso-8859-1", "Café crème, déjà vu, Ångström, señor, Größe."),
    ("iso-8859-15", "Le prix est 10 € pour l'œuvre, Šárka."),
    ("windows-1252", "“Smart quotes” – en dash — em dash … ellipsis ™."),
    ("koi8-r", "Съешь же ещё этих мягких французских булок."),
    ("shift_jis", "日本語のテキストです。メールの本文。"),
    ("iso-2022-jp", "こんにちは、世界。会議は明日です。"),
    ("gb2312", "你好，世界。这是一封测试邮件。"),
    ("big5", "這是一封測試郵件，謝謝。"),
    ("iso-8859-7", "Καλημέρα κόσμε, δοκιμή."),
]

FROMS = [
    "Alice Example <alice@example.org>",
    "\"Doe, John\" <john.doe@example.com>",
    "=?UTF-8?B?SsO8cmdlbiBHcm/Dnw==?= <juergen@example.de>",
    "bob@example.net (Bob the Builder)",
    "Zoë Ærøskøbing <zoe@example.dk>",
    "<bare-angle@example.com>",
    "\"Quoted \\\"Name\\\"\" <q@example.com>",
    "=?iso-8859-1?q?Fran=E7ois_P=E9rez?= <fp@example.fr>",
    "list-bounces+x=example.org@lists.example.net",
    "山田太郎 <yamada@example.jp>",
]

TOS = [
    "Bob <bob@example.net>",
    "undisclosed-recipients:;",
    "Team: anna@example.com, \"Ben B.\" <ben@example.com>;",
    "carol@example.com, dave@example.com,\r\n  erin@example.com",
    "=?UTF-8?Q?J=C3=BCrgen?= <j@example.de>",
    "sqlbox-users@lists.example.net",
]

SUBJECTS = [
    "Weekly report", "Re: Weekly report", "Fwd: Invoice 4711",
    "[sqlbox] Release notes", "=?UTF-8?B?w5xiZXIgZGllIEJyw7xja2U=?=",
    "=?UTF-8?Q?Caf=C3=A9_cr=C3=A8me?= and more", "Grüße (raw 8-bit)",
    "", "   spaced   subject  ", "RE: re: Fwd: [list] nested prefixes",
    "A very long subject " + "that goes on " * 12,
    "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", "Meeting agenda",
    "=?utf-8?q?broken_encoded_word?", "Patch 0001/0042",
]

DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
ZONES = ["+0000", "-0800", "+0530", "+1400", "-1100", "+0200", "GMT", "EST",
         "-0000", "+0545"]


def _words(rng, n):
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def _lines(rng, n, width=72):
    return "\r\n".join(_words(rng, 13)[:width] for _ in range(n))


def _b64_lines(data, width=76):
    enc = base64.b64encode(data)
    return b"\r\n".join(enc[i:i + width] for i in range(0, len(enc), width))


def _date(rng):
    y = rng.choice([1994, 2003, 2019, 2021, 2022, 2023, 2024])
    mo = rng.randrange(12)
    d = rng.randrange(1, 29)
    if rng.random() < 0.05:
        return rng.choice(["not a date at all", "Sun, 6 Nov 94 08:49:37 GMT",
                           "32 Foo 2023 25:61:61 +9999"])
    s = "%d %s %d %02d:%02d:%02d %s" % (
        d, MONTHS[mo], y, rng.randrange(24), rng.randrange(60),
        rng.randrange(60), rng.choice(ZONES))
    if rng.random() < 0.8:
        s = rng.choice(DAYS) + ", " + s
    return s


def _text_leaf(rng, size):
    """A text/plain or text/html part: (headers, body) as bytes, with a
    charset and transfer encoding drawn at random."""
    charset, sample = rng.choice(CHARSETS)
    subtype = "html" if rng.random() < 0.25 else "plain"
    lines = max(1, size // 70)
    text = sample + "\r\n" + _lines(rng, lines) + "\r\n"
    if subtype == "html":
        text = ("<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") +
                "</p></body></html>\r\n")
    raw = text.encode(charset, errors="replace")
    if charset == "iso-2022-jp":
        cte = "7bit"
    elif charset == "us-ascii":
        cte = rng.choice(["7bit", None, "quoted-printable"])
    else:
        cte = rng.choice(["8bit", "quoted-printable", "base64"])
    if cte == "quoted-printable":
        body = quopri.encodestring(raw.replace(b"\r\n", b"\n"))
        body = body.replace(b"\n", b"\r\n")
    elif cte == "base64":
        body = _b64_lines(raw) + b"\r\n"
    else:
        body = raw
    params = "; charset=%s" % (charset if rng.random() < 0.7 else
                               '"%s"' % charset.upper())
    if subtype == "plain" and rng.random() < 0.2:
        params += "; format=flowed"
    hdr = "Content-Type: text/%s%s\r\n" % (subtype, params)
    if cte is not None:
        hdr += "Content-Transfer-Encoding: %s\r\n" % cte
    if rng.random() < 0.1:
        hdr += "Content-Language: de\r\n"
    return hdr.encode(), body


def _binary_leaf(rng, size):
    kind = rng.choice([("image", "png", "picture.png"),
                       ("application", "pdf", "report.pdf"),
                       ("application", "octet-stream", "blob.bin"),
                       ("application", "zip", "archive.zip"),
                       ("audio", "ogg", "sound.ogg")])
    blob = rng.randbytes(size)
    name = kind[2]
    hdr = "Content-Type: %s/%s; name=\"%s\"\r\n" % (kind[0], kind[1], name)
    hdr += "Content-Transfer-Encoding: base64\r\n"
    r = rng.random()
    if r < 0.5:
        hdr += "Content-Disposition: attachment; filename=\"%s\"\r\n" % name
    elif r < 0.65:
        # RFC 2231 continuations and charset.
        hdr += ("Content-Disposition: attachment;\r\n"
                " filename*0*=UTF-8''%%C3%%BCber%%20;\r\n"
                " filename*1=\"%s\"\r\n" % name)
    elif r < 0.75:
        hdr += "Content-Disposition: inline\r\n"
        hdr += "Content-ID: <part%d@sqlbox.test>\r\n" % rng.randrange(10**6)
    if rng.random() < 0.1:
        hdr += "Content-Description: =?UTF-8?Q?Anh=C3=A4ngsel?=\r\n"
    if rng.random() < 0.05:
        hdr += "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
    return hdr.encode(), _b64_lines(blob) + b"\r\n"


def _other_leaf(rng, size, depth):
    r = rng.random()
    if r < 0.3 and depth < 3:
        # message/rfc822: a whole generated message inside.
        inner = _message(rng, depth + 1, size, None, None)
        return b"Content-Type: message/rfc822\r\n", inner
    if r < 0.5:
        return (b"Content-Type: text/calendar; method=REQUEST; "
                b"charset=utf-8\r\n",
                b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
                b"SUMMARY:Meeting\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    if r < 0.65:
        return (b"Content-Type: message/delivery-status\r\n",
                b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
                b"Final-Recipient: rfc822; nobody@example.org\r\n"
                b"Action: failed\r\nStatus: 5.1.1\r\n")
    if r < 0.8:
        return (b"Content-Type: application/x-unknown-type\r\n"
                b"Content-Transfer-Encoding: x-uuencode\r\n",
                b"begin 644 a.txt\r\n#86)C\r\n`\r\nend\r\n")
    return (b"Content-Type: text/x-diff; charset=us-ascii\r\n",
            b"--- a/file\r\n+++ b/file\r\n@@ -1 +1 @@\r\n-old\r\n+new\r\n")


def _part(rng, depth, size):
    """A MIME entity (headers, body) with a random tree below it."""
    r = rng.random()
    if depth < 3 and r < 0.35:
        sub = rng.choice(["mixed", "mixed", "alternative", "related",
                          "digest", "parallel", "signed", "report"])
        boundary = "=_b%d_%s" % (depth, "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?")
            for _ in range(rng.randrange(8, 40))))
        if boundary.endswith(" "):
            boundary += "x"
        n = rng.randrange(1, 5)
        children = [_part(rng, depth + 1, size // n) for _ in range(n)]
        if sub == "digest":
            children = [(b"", _message(rng, depth + 1, size // n, None,
                                       None)) for _ in range(n)]
        params = '; boundary="%s"' % boundary
        if sub == "related":
            params += '; type="text/html"'
        if sub == "signed":
            params += ('; protocol="application/pgp-signature"; '
                       'micalg=pgp-sha256')
        if sub == "report":
            params += "; report-type=delivery-status"
        hdr = ("Content-Type: multipart/%s%s\r\n" % (sub, params)).encode()
        body = b""
        if rng.random() < 0.3:
            body += b"This is a multi-part message in MIME format.\r\n"
        for h, b in children:
            body += b"--" + boundary.encode() + b"\r\n" + h + b"\r\n" + b
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
        if rng.random() < 0.95:
            body += b"--" + boundary.encode() + b"--\r\n"
        if rng.random() < 0.2:
            body += b"An epilogue after the last boundary.\r\n"
        return hdr, body
    if r < 0.7:
        return _text_leaf(rng, size)
    if r < 0.9:
        return _binary_leaf(rng, max(64, size))
    return _other_leaf(rng, size, depth)


def _message(rng, depth, size, msgid, refs):
    """A complete message: header fields (some odd) and a MIME body."""
    h = []
    h.append("From: %s" % rng.choice(FROMS))
    if rng.random() < 0.95:
        h.append("To: %s" % rng.choice(TOS))
    if rng.random() < 0.3:
        h.append("Cc: %s" % rng.choice(TOS))
    subj = rng.choice(SUBJECTS)
    h.append("Subject:%s%s" % ("" if rng.random() < 0.05 else " ", subj))
    if rng.random() < 0.97:
        h.append("Date: %s" % _date(rng))
    if msgid:
        h.append("Message-ID: %s" % msgid)
    if refs:
        h.append("In-Reply-To: %s" % refs[-1])
        if rng.random() < 0.8:
            h.append("References: " + "\r\n ".join(refs[-6:]))
    r = rng.random()
    if r < 0.05:
        h.append("X-Long-Header: " + "x" * rng.randrange(1000, 3000))
    elif r < 0.1:
        h.append("X-Empty:")
        h.append("X-Spaces:   ")
    elif r < 0.15:
        h.append("Subject: a second Subject field")
    elif r < 0.2:
        h.append("X-Folded: first\r\n\tsecond\r\n    third")
    elif r < 0.25:
        h.append("X-8bit-Raw: Ünïcödé wïthout encoding")
    elif r < 0.3:
        h.append("Received: from relay%d.example.net (relay [192.0.2.%d])"
                 "\r\n\tby mx.example.org with ESMTPS id %x;\r\n\t%s" % (
                     rng.randrange(9), rng.randrange(255),
                     rng.randrange(16**8), _date(rng)))
    elif r < 0.33:
        h.append("X-Weird :  a space before the colon")
    elif r < 0.36:
        h.append("reply-to: lower-case@example.org")
    if rng.random() < 0.1:
        h.append("X-Priority: %d" % rng.randrange(1, 6))
    if rng.random() < 0.15:
        h.append("List-Id: sqlbox users <users.sqlbox.example.net>")
    part_h, body = _part(rng, depth, size)
    if rng.random() < 0.9 or part_h.startswith(b"Content-Type: multipart"):
        h.append("MIME-Version: 1.0")
    if rng.random() < 0.03 and not part_h.startswith(
            b"Content-Type: multipart"):
        part_h = b""            # no Content-Type at all: text/plain default
    head = "\r\n".join(h).encode("utf-8") + b"\r\n" + part_h
    return head + b"\r\n" + body


def generate(n, seed=20240, max_size=None):
    """[(name, bytes)] of n generated messages (CRLF, each ending with a
    line end), deterministic for a seed. Sizes: mostly a few KB, some
    tens to hundreds of KB and, unless max_size is lower, about 1 in 60
    near 1 MB. Every 4th message replies to an earlier one (threads)."""
    rng = random.Random(seed)
    out = []
    ids = []
    for i in range(n):
        r = rng.random()
        if r < 0.6:
            size = rng.randrange(100, 4000)
        elif r < 0.9:
            size = rng.randrange(4000, 60000)
        elif r < 0.983:
            size = rng.randrange(60000, 300000)
        else:
            size = rng.randrange(600000, 1000000)
        if max_size:
            size = min(size, max_size)
        msgid = "<gen-%d-%d@sqlbox.test>" % (seed, i)
        refs = None
        if ids and i % 4 == 3:
            parent = rng.randrange(len(ids))
            refs = ids[max(0, parent - 3):parent + 1]
        data = _message(rng, 0, size, msgid, refs)
        if rng.random() < 0.03:
            data = data.replace(b"\r\n", b"\n")          # bare LF
        if not data.endswith(b"\n"):
            data += b"\r\n"
        ids.append(msgid)
        out.append(("gen-%03d" % i, data))
    return out
