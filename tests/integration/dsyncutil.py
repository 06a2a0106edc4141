# SPDX-License-Identifier: MIT
"""Helpers for the dsync, doveadm, METADATA and quota tests
(test_dsync.py, test_doveadm.py, test_metadata.py, test_quota.py).

- run()/doveadm(): doveadm on an instance's config, with an optional other
  mail_location for the user (`-o mail_location=...`, always an absolute
  path: doveadm expands `~` against root's HOME), returning bytes.
- fetch()/fetch_map(): `doveadm -f pager fetch` parsed losslessly. The JSON
  formatter replaces invalid UTF-8 with U+FFFD, which would hide a changed
  8-bit byte, so the message text is read from the pager format, whose
  streamed last field is raw bytes.
- mailbox_status(), mailbox_list(), metadata_get(): the other doveadm views.
- Corpus: a seeded generator of many small messages of varied shapes (plus
  every message of corpus.py), with flags, keywords and INTERNALDATEs, and
  imap_fill() to store them through IMAP MULTIAPPEND (RFC 3502) with
  LITERAL+ (RFC 7888), one command per folder batch.
- mail_dir(): a directory for another mail location, owned by the mail uid.
"""

import os
import random
import re
import subprocess
import time
from dataclasses import dataclass, field

import corpus
from harness import internaldate, literal_plus, mutf7_encode, quote, uid_set

EX_TEMPFAIL = 75
EX_DATAERR = 65
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
KEYWORDS = ("$Forwarded", "$MDNSent", "$Junk", "NonJunk", "$NotJunk",
            "$label1", "$label2", "Project-X", "todo", "Later",
            "$Important", "Kw_with_underscore")

# Fields compared between two stores. `text` (header and body) is a
# superset of `body`; it is streamed, so it must be the last field.
FETCH_FIELDS = ("mailbox uid guid flags date.received date.saved pop3.uidl "
                "size.virtual text")


def mail_ids():
    """(uid, gid) the instance's mail processes run as."""
    if os.getuid() == 0:
        return 65534, 65534
    return os.getuid(), os.getgid()


def mail_dir(path):
    """Creates path (and missing parents up to it) for a mail location,
    owned by the mail uid so Dovecot's mail processes can write there."""
    uid, gid = mail_ids()
    path = str(path)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)
    if os.getuid() == 0:
        os.chown(path, uid, gid)
    return path


def maildir_location(path):
    """A maildir location with the fs layout (nested names with '/', any
    character but '/' in a name, like sqlbox)."""
    return "maildir:%s:LAYOUT=fs" % path


def run(inst, *args, location=None, options=(), check=True, timeout=600,
        input=None):
    """doveadm -c <inst conf> [-o mail_location=location] [-o opt]... args.
    Returns the CompletedProcess (stdout/stderr as bytes); with check,
    raises AssertionError on a non-zero exit."""
    cmd = ["doveadm", "-c", str(inst.conf)]
    if location is not None:
        cmd += ["-o", "mail_location=" + location]
    for opt in options:
        cmd += ["-o", opt]
    cmd += [str(a) for a in args]
    p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (
            " ".join(cmd), p.returncode,
            p.stderr.decode(errors="replace")))
    return p


def doveadm(inst, *args, **kw):
    """run() returning stdout as str."""
    return run(inst, *args, **kw).stdout.decode("utf-8", errors="replace")


def dsync_server_cmd(inst, user, location=None, options=()):
    """The arguments that make `doveadm sync/backup` talk to this
    instance's user through a dsync-server child over a pipe, the way it
    talks to a remote host over ssh (the stream protocol).

    The child runs under `env -i`: doveadm exports its own parsed config to
    children (DOVECONF_ENV=1), and a child doveadm then ignores `-c` and
    runs with the parent's settings (here: "namespace configuration error:
    inbox=yes namespace missing"). A bare `doveadm` as the first word is
    worse: the sync ends at once with exit code 0 having done nothing."""
    cmd = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    # under make asan: the sanitizer runtime's wrappers come first in
    # PATH, and its reports go to the run's log folder
    if "ASAN_OPTIONS" in os.environ:
        cmd = ["env", "-i", "PATH=" + os.environ.get("PATH", "")] + [
            "%s=%s" % (k, os.environ[k]) for k in
            ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "GDB")
            if k in os.environ]
    cmd += ["doveadm", "-c", str(inst.conf)]
    if location is not None:
        cmd += ["-o", "mail_location=" + location]
    for opt in options:
        cmd += ["-o", opt]
    return cmd + ["dsync-server", "-u", user]


# -- doveadm views ------------------------------------------------------------

def crlf(data):
    """Bare LF -> CRLF (maildir stores LF, sqlbox CRLF)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def fetch(inst, user, fields=FETCH_FIELDS, query=("ALL",), location=None,
          options=()):
    """`doveadm -f pager fetch` -> [{field: str or bytes}]: every field
    but a streamed last one (hdr, body, text) as str; that one as the raw
    bytes."""
    names = fields.split()
    out = run(inst, "-f", "pager", "fetch", "-u", user, fields, *query,
              location=location, options=options).stdout
    if not out:
        return []
    streamed = names[-1] in ("hdr", "body", "text")
    records = []
    pos = 0
    first = b"%s: " % names[0].encode()
    while pos < len(out):
        rec = {}
        for name in names:
            if streamed and name == names[-1]:
                head = b"%s:\n" % name.encode()
                assert out.startswith(head, pos), out[pos:pos + 80]
                pos += len(head)
                nxt = out.find(b"\f\n" + first, pos)
                end = len(out) if nxt < 0 else nxt
                rec[name] = out[pos:end]
                pos = end
                break
            head = b"%s: " % name.encode()
            assert out.startswith(head, pos), (name, out[pos:pos + 80])
            eol = out.index(b"\n", pos)
            rec[name] = out[pos + len(head):eol].decode("utf-8")
            pos = eol + 1
        if not streamed and out.startswith(b"\n", pos) and \
                pos + 1 == len(out):
            pos += 1
        if out.startswith(b"\f\n", pos):
            pos += 2
        records.append(rec)
    return records


def normalise(rec, drop=()):
    """A fetched message made comparable across backends: \\Recent is a
    session property, not stored mail; text in CRLF; minus `drop`."""
    out = {}
    for k, v in rec.items():
        if k in drop:
            continue
        if k == "flags":
            v = tuple(sorted(f for f in v.split() if f != "\\Recent"))
        elif k in ("text", "body", "hdr"):
            v = crlf(v)
        out[k] = v
    return out


def fetch_map(inst, user, fields=FETCH_FIELDS, location=None, drop=(),
              query=("ALL",), options=()):
    """{(mailbox, uid): normalised message} of everything the user has."""
    out = {}
    for rec in fetch(inst, user, fields, query=query, location=location,
                     options=options):
        key = (rec["mailbox"], int(rec["uid"]))
        assert key not in out, "fetched twice: %r" % (key,)
        out[key] = normalise(rec, drop)
    return out


def diff_maps(a, b, limit=10):
    """A readable list of the differences between two fetch_map()s (or
    any two dicts of dicts), at most `limit` of them."""
    problems = []
    for key in sorted(set(a) | set(b), key=repr):
        if key not in a:
            problems.append("only in the second: %r" % (key,))
        elif key not in b:
            problems.append("only in the first: %r" % (key,))
        elif a[key] != b[key]:
            fields = [k for k in sorted(set(a[key]) | set(b[key]))
                      if a[key].get(k) != b[key].get(k)]
            problems.append("%r differs in %s: %s" % (key, fields, "; ".join(
                "%s %r != %r" % (f, _short(a[key].get(f)),
                                 _short(b[key].get(f))) for f in fields)))
        if len(problems) >= limit:
            problems.append("...")
            break
    return problems


def _short(v):
    if isinstance(v, bytes) and len(v) > 120:
        return v[:60] + b"..." + v[-40:]
    return v


def mailbox_status(inst, user, fields="guid uidvalidity uidnext messages",
                   location=None, options=()):
    """{mailbox name: {field: str}} of `doveadm mailbox status` for every
    selectable mailbox (doveadm picks the column order; the header row
    names them)."""
    out = run(inst, "-f", "tab", "mailbox", "status", "-u", user, fields,
              "*", location=location, options=options).stdout.decode("utf-8")
    lines = out.splitlines()
    head = lines[0].split("\t") if lines else []
    assert head and head[0] == "mailbox" and \
        sorted(head[1:]) == sorted(fields.split()), lines[:1]
    result = {}
    for line in lines[1:]:
        vals = line.split("\t")
        result[vals[0]] = dict(zip(head[1:], vals[1:]))
    return result


def mailbox_list(inst, user, subscribed=False, location=None, options=()):
    """The set of names `doveadm mailbox list` (-s: subscriptions) gives."""
    args = ["mailbox", "list", "-u", user]
    if subscribed:
        args.append("-s")
    out = run(inst, *args, location=location,
              options=options).stdout.decode("utf-8")
    return set(out.splitlines())


def metadata_get(inst, user, mailbox, key, location=None, options=(),
                 server=False):
    """`doveadm mailbox metadata get` -> the value as str ("" when there is
    none: doveadm prints nothing for a missing attribute and exits 0)."""
    args = ["-f", "flow", "mailbox", "metadata", "get", "-u", user]
    if server:
        args.append("-s")
    p = run(inst, *args, mailbox, key, location=location, options=options)
    text = p.stdout.decode("utf-8", errors="surrogateescape")
    return text[:-1] if text.endswith("\n") else text


# -- the generated corpus -----------------------------------------------------

@dataclass
class Msg:
    folder: str
    raw: bytes
    flags: list = field(default_factory=list)
    date: tuple = None          # internaldate() arguments

    def date_str(self):
        return internaldate(*self.date) if self.date else None


_SUBJECTS = ("Quarterly report", "Re: lunch?", "Fwd: invoice 2023-11",
             "Meeting notes", "Grüße aus Köln", "日本語の件名", "[list] digest",
             "Your order has shipped", "Re: Re: Re: thread", "Παράδειγμα",
             "Ping", "Build failed on main", "Urlaub")
_WORDS = ("mail store index folder sqlite dovecot message header body part "
          "quota sieve thread subject reply forward archive draft junk "
          "trash sent inbox flag keyword uid modseq naïve café Straße "
          "東京 données").split()


def _gen_message(rng, n):
    """One generated message; the shapes cycle through plain text, UTF-8
    8-bit, RFC 2047 subjects, multipart with a base64 attachment, bare LF
    line ends, header-only and long lines."""
    shape = n % 9
    subject = _SUBJECTS[rng.randrange(len(_SUBJECTS))]
    words = lambda k: " ".join(rng.choice(_WORDS) for _ in range(k))
    lines = "\n".join(words(rng.randrange(3, 14))
                      for _ in range(rng.randrange(1, 40)))
    hdr = ("From: Sender %d <sender%d@example.org>\n"
           "To: rcpt%d@example.net\n"
           "Date: %s, %02d %s %04d %02d:%02d:%02d %+05d\n"
           "Message-ID: <gen-%06d.%d@dsync.test>\n"
           % (n % 37, n % 37, n % 11,
              ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[n % 7],
              1 + n % 28, ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
                           "Aug", "Sep", "Oct", "Nov", "Dec")[n % 12],
              2000 + n % 24, n % 24, n % 60, (n * 7) % 60,
              (-1200 + 100 * (n % 27)) if n % 3 else 0, n,
              rng.randrange(10 ** 6)))
    if shape == 0:
        text = hdr + "Subject: %s %d\n\n%s\n" % (subject, n, lines)
    elif shape == 1:
        text = (hdr + "Subject: =?UTF-8?B?w5xiZXJ3ZWlzdW5n?= %d\n"
                "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: 8bit\n\n%s\nÄÖÜ ß € 😀\n"
                % (n, lines))
    elif shape == 2:
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(
            100, 12000)))
        import base64
        b64 = base64.b64encode(blob).decode()
        b64 = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
        text = (hdr + "Subject: %s (attachment) %d\nMIME-Version: 1.0\n"
                'Content-Type: multipart/mixed; boundary="b%d"\n\n'
                "--b%d\nContent-Type: text/plain\n\n%s\n"
                "--b%d\nContent-Type: application/octet-stream\n"
                "Content-Transfer-Encoding: base64\n\n%s\n--b%d--\n"
                % (subject, n, n, n, lines, n, b64, n))
    elif shape == 3:
        # stays with bare LF line ends: both stores must give CRLF back
        return (hdr + "Subject: bare LF %d\n\n%s\n" % (n, lines)).encode()
    elif shape == 4:
        text = hdr + "Subject: header only %d\n" % n
    elif shape == 5:
        text = hdr + "Subject: long %d\n\n%s\n%s\n" % (
            n, "x" * rng.randrange(999, 5000), lines)
    elif shape == 6:
        # raw Latin-1 8-bit body, not valid UTF-8
        return ((hdr + "Subject: latin1 %d\nContent-Type: text/plain; "
                 "charset=iso-8859-1\n\n" % n).replace("\n", "\r\n")
                .encode() + b"Caf\xe9 cr\xe8me br\xfbl\xe9e\r\n\xff\xfe\r\n")
    else:
        text = hdr + "Subject: %s %d\n\n%s\n.\n..dots\n" % (
            subject, n, lines)
    return text.replace("\n", "\r\n").encode("utf-8")


def generate(seed, total, folders, weights=None, with_corpus=True):
    """`total` messages spread over `folders` (first folder weighted by
    weights[0] etc.), each with random flags, keywords and an INTERNALDATE
    with a time zone; corpus.py's messages are mixed in once each. Same
    seed, same list."""
    rng = random.Random(seed)
    weights = weights or [1] * len(folders)
    extra = [raw for _, raw in corpus.messages()] if with_corpus else []
    msgs = []
    for n in range(total):
        folder = rng.choices(folders, weights)[0]
        if extra and n % (total // len(extra)) == 0:
            raw = extra.pop()
        else:
            raw = _gen_message(rng, n)
        flags = [f for f in SYSTEM_FLAGS if rng.random() < 0.3]
        flags += rng.sample(KEYWORDS, rng.choice((0, 0, 0, 1, 1, 2, 3)))
        date = (rng.randrange(1995, 2025), rng.randrange(1, 13),
                rng.randrange(1, 29), rng.randrange(24), rng.randrange(60),
                rng.randrange(60), rng.choice((0, 60, -300, 330, 600, -720)))
        msgs.append(Msg(folder, raw, flags, date))
    return msgs


def imap_fill(raw, msgs, batch=100):
    """Appends msgs over a logged-in RawImap with MULTIAPPEND, `batch`
    messages per command, in order (so UIDs follow the list per folder).
    Returns {folder: [uid, ...]} from APPENDUID (RFC 4315)."""
    by_folder = {}
    for m in msgs:
        by_folder.setdefault(m.folder, []).append(m)
    uids = {}
    for folder, items in by_folder.items():
        for i in range(0, len(items), batch):
            part = items[i:i + batch]
            cmd = b"APPEND " + quote(mutf7_encode(folder))
            for m in part:
                cmd += b" (" + " ".join(m.flags).encode() + b")"
                if m.date:
                    cmd += b" " + m.date_str().encode()
                cmd += b" " + literal_plus(m.raw)
            status, text, _ = raw.command(cmd)
            assert status == "OK", "APPEND to %s: %s %s" % (
                folder, status, text)
            m = re.search(r"\[APPENDUID \d+ ([0-9:,]+)\]", text)
            assert m, text
            uids.setdefault(folder, []).extend(uid_set(m.group(1)))
    return uids


def uid_expunge(raw, folder, uids):
    """UID EXPUNGE (RFC 4315) of exactly these UIDs in a folder."""
    if not uids:
        return
    status, text, _ = raw.command(b"SELECT " + quote(mutf7_encode(folder)))
    assert status == "OK", text
    seq = ",".join(str(u) for u in uids).encode()
    status, text, _ = raw.command(b"UID STORE " + seq +
                                  b" +FLAGS.SILENT (\\Deleted)")
    assert status == "OK", text
    status, text, _ = raw.command(b"UID EXPUNGE " + seq)
    assert status == "OK", text
    status, text, _ = raw.command(b"UNSELECT")
    assert status == "OK", text


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)
