# SPDX-License-Identifier: MIT
"""Many clients on one user, for the soak (test_concurrency.py) and the
crash test (test_crash.py).

ImapWorker is a thread with its own IMAP connection (so its own imap
process) doing a fixed number of random operations: APPEND (sometimes
MULTIAPPEND, sometimes a body another worker appends too), UID STORE of
flags and keywords, FETCH, UID COPY, UID MOVE between three folders, UID
EXPUNGE, SELECT and STATUS. LmtpSender delivers over LMTP. Both write what
they were told into an invariants.Ledger: every APPENDUID and COPYUID,
every FETCHed Message-ID, every refused command, and (in crash mode) every
command whose answer was lost with its connection.

Every message has a unique Message-ID saying what may happen to it:
<mv-...> messages are only ever MOVEd (so each is in exactly one place,
whatever happens), <cp-...>, <lmtp-...> and the shared body are COPYed,
MOVEd and EXPUNGEd."""

import hashlib
import random
import re
import ssl
import threading
import time

from harness import (InstanceError, ParseError, literal_plus, quote,
                     uid_set)
from invariants import compare_view, db_state, fetch_lines, imap_view

FOLDERS = ["INBOX", "Work", "Later"]
FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft"]
KEYWORDS = ["kw%d" % i for i in range(8)]
SHARED_ID = "<shared@sqlbox.test>"
# The client's port in the login line, to find the imap process of a
# connection (the default format plus rport=).
LOGIN_LOG_FORMAT = ("login_log_format_elements = user=<%u> method=%m "
                    "rip=%r rport=%{rport} lip=%l mpid=%e %c "
                    "session=<%{session}>\n")
# Answers that are not failures: another session expunged a message this
# one still shows (RFC 5530 3).
ALLOWED_NO = ("EXPUNGEISSUED",)


class ConnectionLost(Exception):
    pass


_LETTERS = bytes(b"abcdefghijklmnopqrstuvwxyz      "[i % 32]
                 for i in range(256))


def make_message(msgid, rng, size):
    """CRLF-only bytes (stored as they are), about size bytes long."""
    head = ("From: Worker <worker@example.org>\r\nTo: user@example.org\r\n"
            "Subject: load %s\r\nMessage-ID: %s\r\n\r\n"
            % (msgid, msgid)).encode()
    text = rng.randbytes(max(size - len(head), 1)).translate(_LETTERS)
    return head + b"\r\n".join(text[i:i + 76]
                                for i in range(0, len(text), 76)) + b"\r\n"


SHARED_BODY = make_message(SHARED_ID, random.Random(7), 3000)


def find_session_pid(inst, user, port, since, timeout=15):
    """The imap process of the connection from local port `port`, from
    its login line (needs LOGIN_LOG_FORMAT)."""
    pattern = re.compile(r"Login: user=<%s>.*?\brport=%d\b.*?\bmpid=(\d+)"
                         % (re.escape(user), port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(inst.log_text(since))
        if m:
            return int(m.group(1))
        time.sleep(0.02)
    raise InstanceError("no login line for port %d" % port)


class ImapWorker(threading.Thread):
    """One IMAP connection doing `ops` random operations.

    crash: connections may be killed under it; a lost connection is then
    an unknown outcome (recorded) and the worker logs in again. Otherwise a
    lost connection is a failure too."""

    def __init__(self, inst, user, ledger, name, ops, seed, tls=None,
                 crash=False, big=False, own_only=False):
        super().__init__(name=name, daemon=True)
        self.own_only = own_only
        self.stopping = threading.Event()
        self.inst = inst
        self.user = user
        self.ledger = ledger
        self.ops = ops
        self.rng = random.Random(seed)
        self.tls = tls
        self.crash = crash
        self.big = big
        self.raw = None
        self.cur = None
        self.pid = None
        self.generation = 0
        self.busy_since = None      # set while a command is out
        self.pending = None         # (what, msgids) of the command out
        self.seq = 0
        self.done_ops = 0
        self.lost = 0
        self.error = None

    # -- connection -----------------------------------------------------------

    def connect(self):
        since = self.inst.log_size()
        raw = self.inst.raw_imap(self.user, tls=self.tls, login=False)
        port = raw.sock.getsockname()[1]
        st, text, _ = raw.command(b"LOGIN " + quote(self.user) + b" " +
                                  quote(self.inst.password(self.user)))
        if st != "OK":
            raise InstanceError("LOGIN: %s %s" % (st, text))
        self.raw = raw
        if self.crash:
            self.pid = find_session_pid(self.inst, self.user, port, since)
        self.generation += 1
        self.cur = None
        self.select(self.rng.choice(FOLDERS))

    def reconnect(self):
        """connect(), retried in crash mode (a kill may hit the login)."""
        for attempt in range(30):
            try:
                self.connect()
                return
            except (ConnectionLost, EOFError, OSError, InstanceError):
                if not self.crash or attempt == 29:
                    raise
                time.sleep(0.05)

    def command(self, what, data):
        """Sends one command; returns (status, text, untagged). A lost
        connection raises ConnectionLost; a NO or BAD is recorded as a
        failure unless its response code is in ALLOWED_NO."""
        self.busy_since = time.monotonic()
        try:
            st, text, lines = self.raw.command(data)
        except TimeoutError:
            self.ledger.failure(self.name, what, "no answer in 60 s")
            raise ConnectionLost("timeout")
        except (EOFError, OSError, ssl.SSLError, ValueError) as e:
            raise ConnectionLost(repr(e))
        finally:
            self.busy_since = None
        if st != "OK":
            m = re.match(r"\[([A-Z-]+)", text)
            if not (st == "NO" and m and m.group(1) in ALLOWED_NO):
                self.ledger.failure(self.name, what,
                                    "%s %s" % (st, text))
        return st, text, lines

    def select(self, folder):
        st, _, _ = self.command("SELECT", b"SELECT " + quote(folder))
        self.cur = folder if st == "OK" else None

    # -- operations -----------------------------------------------------------

    def next_id(self, kind):
        self.seq += 1
        return "<%s-%s-%d@sqlbox.test>" % (kind, self.name, self.seq)

    def size(self):
        r = self.rng.random()
        if r < (0.08 if self.big else 0.02):
            return self.rng.randint(260 * 1024, 600 * 1024)
        return self.rng.randint(300, 4000)

    def random_flags(self, allow_system=True):
        names = (FLAGS if allow_system else []) + KEYWORDS
        return self.rng.sample(names, self.rng.randint(1, 3))

    def op_append(self):
        folder = self.rng.choice(FOLDERS)
        count = self.rng.randint(2, 4) if self.rng.random() < 0.1 else 1
        parts = [b"APPEND " + quote(folder)]
        msgids = []
        for _ in range(count):
            if self.rng.random() < 0.05:
                msgid, data = SHARED_ID, SHARED_BODY
            else:
                kind = "mv" if self.rng.random() < 0.3 else "cp"
                msgid = self.next_id(kind)
                data = make_message(msgid, self.rng, self.size())
                with self.ledger.lock:
                    self.ledger.appended[msgid] = None
                    if kind == "mv":
                        self.ledger.move_only.add(msgid)
            with self.ledger.lock:
                self.ledger.contents[msgid] = data
            msgids.append(msgid)
            flags = self.rng.sample(FLAGS + KEYWORDS[:3],
                                    self.rng.randint(0, 2))
            parts.append(b" (" + " ".join(flags).encode() + b") " +
                         literal_plus(data))
        self.pending = ("APPEND", msgids)
        t0 = time.monotonic()
        st, text, _ = self.command("APPEND", b"".join(parts))
        t1 = time.monotonic()
        m = re.match(r"\[APPENDUID \d+ ([0-9:,]+)\]", text)
        if st == "OK" and m:
            uids = uid_set(m.group(1))
            if len(uids) != len(msgids):
                self.ledger.failure(self.name, "APPEND", "APPENDUID %s for "
                                    "%d messages" % (m.group(1), count))
            self.ledger.reported(folder, list(zip(uids, msgids)), t0, t1,
                                 self.name, "APPENDUID")
            outcome = True
        else:
            if st == "OK":
                self.ledger.failure(self.name, "APPEND", "no APPENDUID: " +
                                    text)
            outcome = False
        with self.ledger.lock:
            for msgid in msgids:
                if msgid in self.ledger.appended:
                    self.ledger.appended[msgid] = outcome
        self.ledger.count("APPEND", count)

    def pick(self, k, movable_only=False):
        """Up to k (uid, msgid) of the selected folder that no removal
        was tried for; movable_only: not <mv-> messages (those are only
        ever moved)."""
        known = self.ledger.known(self.cur)
        if self.own_only:
            mine = "-%s-" % self.name
            known = [x for x in known if mine in x[1]]
        if movable_only:
            known = [x for x in known if not x[1].startswith("<mv-")]
        return self.rng.sample(known, min(k, len(known)))

    def op_store(self):
        picks = self.pick(5)
        if not picks:
            return
        flags = self.random_flags()
        item = self.rng.choice(["+FLAGS", "-FLAGS"])
        if self.rng.random() < 0.5:
            item += ".SILENT"
        uids = ",".join(str(u) for u, _ in picks)
        self.pending = ("STORE", [])
        self.command("STORE", b"UID STORE %s %s (%s)" % (
            uids.encode(), item.encode(), " ".join(flags).encode()))
        self.ledger.count("STORE")

    def op_fetch(self):
        """Learns the Message-IDs of the folder's newest messages (now and
        then of all of them), and reads one body back."""
        self.pending = ("FETCH", [])
        known = [u for u, _ in self.ledger.known(self.cur)]
        low = 1
        if known and self.rng.random() < 0.9:
            low = max(1, max(known) - 60)
        st, _, lines = self.command(
            "FETCH", b"UID FETCH %d:* (UID FLAGS BODY.PEEK[HEADER.FIELDS "
                     b"(MESSAGE-ID)])" % low)
        if st == "OK":
            try:
                items = fetch_lines(lines)
            except ParseError as e:
                self.ledger.failure(self.name, "FETCH", "unparsable "
                                    "answer: %s" % e)
                items = {}
            for item in items.values():
                head = item.get("BODY[HEADER.FIELDS (MESSAGE-ID)]")
                if "UID" not in item or not head:
                    continue
                m = re.search(rb"Message-ID:\s*(<[^>]*>)", head, re.I)
                if m:
                    self.ledger.seen(self.cur, item["UID"],
                                     m.group(1).decode())
        picks = [p for p in self.pick(3) if p[1] in self.ledger.contents]
        for uid, msgid in picks[:1]:
            st, _, lines = self.command(
                "FETCH", b"UID FETCH %d (UID BODY.PEEK[])" % uid)
            for item in fetch_lines(lines).values():
                # (NIL: expunged meanwhile, RFC 5530 EXPUNGEISSUED)
                if item.get("UID") == uid and item.get("BODY[]") is not None \
                        and item["BODY[]"] != self.ledger.contents[msgid]:
                    got = re.search(rb"Message-ID:\s*(<[^>]*>)",
                                    item["BODY[]"], re.I)
                    self.ledger.failure(
                        self.name, "FETCH", "%s uid %d: BODY[] is not what "
                        "was stored (%s): %d bytes, Message-ID %s" % (
                            self.cur, uid, msgid, len(item["BODY[]"]),
                            got.group(1).decode() if got else None))
        self.ledger.count("FETCH")

    def copyuid(self, text):
        m = re.search(r"\[COPYUID \d+ ([0-9:,]+) ([0-9:,]+)\]", text)
        if not m:
            return None
        return list(zip(uid_set(m.group(1)), uid_set(m.group(2))))

    def op_copy(self):
        picks = self.pick(40 if self.big else 10, movable_only=True)
        if not picks:
            return
        dest = self.rng.choice(FOLDERS)
        byuid = dict(picks)
        self.pending = ("COPY", list(byuid.values()))
        t0 = time.monotonic()
        st, text, _ = self.command("COPY", b"UID COPY %s %s" % (
            ",".join(str(u) for u in sorted(byuid)).encode(), quote(dest)))
        t1 = time.monotonic()
        pairs = self.copyuid(text) if st == "OK" else None
        if pairs:
            self.ledger.reported(dest, [(d, byuid[s]) for s, d in pairs],
                                 t0, t1, self.name, "COPYUID")
        self.ledger.count("COPY")

    def op_move(self):
        picks = self.pick(40 if self.big else 10)
        dests = [f for f in FOLDERS if f != self.cur]
        if not picks or not dests:
            return
        dest = self.rng.choice(dests)
        byuid = dict(picks)
        self.ledger.attempt_removal(self.cur, list(byuid))
        self.pending = ("MOVE", list(byuid.values()))
        t0 = time.monotonic()
        st, text, lines = self.command("MOVE", b"UID MOVE %s %s" % (
            ",".join(str(u) for u in sorted(byuid)).encode(), quote(dest)))
        t1 = time.monotonic()
        if st == "OK":
            # RFC 6851 4.3: COPYUID in an untagged OK before the EXPUNGEs.
            for line in lines:
                pairs = self.copyuid(line.decode(errors="replace"))
                if pairs:
                    self.ledger.reported(
                        dest, [(d, byuid[s]) for s, d in pairs], t0, t1,
                        self.name, "COPYUID")
        self.ledger.count("MOVE")

    def op_expunge(self):
        picks = self.pick(5, movable_only=True)
        if not picks:
            return
        uids = [u for u, _ in picks]
        uidset = ",".join(str(u) for u in uids).encode()
        self.ledger.attempt_removal(self.cur, uids)
        self.pending = ("EXPUNGE", [])
        # The UIDs were reported before this NOOP, so the session knows
        # every one of them that still exists.
        st1, _, _ = self.command("NOOP", b"NOOP")
        st2, _, _ = self.command("STORE", b"UID STORE %s +FLAGS.SILENT "
                                          b"(\\Deleted)" % uidset)
        st3, _, _ = self.command("EXPUNGE", b"UID EXPUNGE %s" % uidset)
        if st1 == st2 == st3 == "OK":
            self.ledger.confirm_removal(self.cur, uids)
        self.ledger.count("EXPUNGE")

    def op_status(self):
        self.pending = ("STATUS", [])
        folder = self.rng.choice(FOLDERS)
        if folder == self.cur:
            self.command("NOOP", b"NOOP")
        else:
            self.command("STATUS", b"STATUS %s (MESSAGES UNSEEN UIDNEXT)"
                         % quote(folder))

    def op_select(self):
        self.pending = ("SELECT", [])
        self.select(self.rng.choice(FOLDERS))

    OPS = [("op_append", 25), ("op_store", 20), ("op_fetch", 8),
           ("op_copy", 12), ("op_move", 14), ("op_expunge", 10),
           ("op_status", 5), ("op_select", 6)]

    def run(self):
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        try:
            self.reconnect()
            while self.done_ops < self.ops and not self.stopping.is_set():
                op = self.rng.choices(names, weights)[0]
                self.pending = None
                try:
                    if self.cur is None and op != "op_append":
                        self.op_select()
                    else:
                        getattr(self, op)()
                except ConnectionLost as e:
                    self.lost += 1
                    if self.pending:
                        self.ledger.unknown(self.pending[0],
                                            self.pending[1])
                    if not self.crash:
                        self.ledger.failure(self.name, op,
                                            "connection lost: %s" % e)
                    self.reconnect()
                self.done_ops += 1
        except Exception as e:          # reported by the test
            self.error = "%s: %r" % (self.name, e)
            raise

    # -- at the end -----------------------------------------------------------

    def final_view_problems(self, st):
        """After all writers stopped: this session, after a NOOP, must
        show what SQL has (DESIGN.md 3: every sync pulls by MODSEQ)."""
        if self.raw is None or self.cur is None:
            return []
        st_noop, text, _ = self.raw.command(b"NOOP")
        if st_noop != "OK":
            return ["%s: NOOP %s %s" % (self.name, st_noop, text)]
        return ["%s: %s" % (self.name, p)
                for p in compare_view(imap_view(self.raw), st, self.cur)]


class LmtpSender(threading.Thread):
    def __init__(self, inst, user, ledger, name, count, seed):
        super().__init__(name=name, daemon=True)
        self.inst = inst
        self.user = user
        self.ledger = ledger
        self.count = count
        self.rng = random.Random(seed)
        self.error = None

    def run(self):
        try:
            for n in range(self.count):
                msgid = "<lmtp-%s-%d@sqlbox.test>" % (self.name, n)
                data = make_message(msgid, self.rng,
                                    self.rng.randint(300, 6000))
                try:
                    reply = self.inst.lmtp_deliver(self.user, data)
                    code, text = reply[self.user]
                except Exception as e:
                    code, text = None, repr(e)
                with self.ledger.lock:
                    self.ledger.lmtp[msgid] = code
                if code != 250:
                    self.ledger.failure(self.name, "LMTP DATA",
                                        "%s %s" % (code, text))
                self.ledger.count("LMTP")
        except Exception as e:
            self.error = "%s: %r" % (self.name, e)
            raise


def join_all(threads, timeout):
    """Joins threads within timeout seconds in all, in short waits (so
    that Ctrl-C still works); returns the names of those still running."""
    deadline = time.monotonic() + timeout
    for t in threads:
        while t.is_alive() and time.monotonic() < deadline:
            t.join(0.5)
    return [t.name for t in threads if t.is_alive()]


def final_problems(inst, user, ledger, workers):
    """Every check after the load: the schema's invariants, the ledger,
    every surviving session's view, a fresh session's view and STATUS of
    every folder, and each stored body's SHA-256 against what was sent."""
    from invariants import check_database, check_ledger
    st = db_state(inst, user)
    problems = check_database(st)
    problems += check_ledger(st, ledger, crash=any(w.crash for w in workers))
    for w in workers:
        problems += w.final_view_problems(st)
    fresh = inst.raw_imap(user)
    for folder in FOLDERS:
        problems += compare_view(imap_view(fresh, folder), st, folder)
        stat, text, lines = fresh.command(
            b"STATUS %s (MESSAGES UNSEEN UIDNEXT)" % quote(folder))
        box = st.mailboxes[folder]
        want = b"(MESSAGES %d UIDNEXT %d UNSEEN %d)" % (
            box["messages"], box["uidnext"], box["unseen"])
        if stat != "OK" or not lines or want not in lines[0]:
            problems.append("STATUS %s: %s %s, SQL says %s" % (
                folder, stat, lines, want))
    # Bodies are what was sent (the hash of the stored bytes, DESIGN.md 5),
    # and a sample read back through IMAP byte for byte.
    checked = 0
    for key, row in st.messages.items():
        msgid = st.msgid(key)
        data = ledger.contents.get(msgid)
        if data is None:
            continue
        want = hashlib.sha256(data).hexdigest().upper()
        if st.bodies.get(row["body_id"], {}).get("sha256") != want:
            problems.append("%s uid %d (%s): stored body's sha256 differs "
                            "from what was appended" % (key[0], key[1],
                                                        msgid))
        checked += 1
    rng = random.Random(1)
    sample = rng.sample(sorted(st.messages, key=str),
                        min(40, len(st.messages)))
    for folder in FOLDERS:
        uids = [u for f, u in sample if f == folder]
        if not uids:
            continue
        fresh.command(b"EXAMINE " + quote(folder))
        stat, _, lines = fresh.command(b"UID FETCH %s (UID BODY.PEEK[])" % (
            ",".join(map(str, uids)).encode()))
        for item in fetch_lines(lines).values():
            data = ledger.contents.get(st.msgid((folder, item["UID"])))
            if data is not None and item["BODY[]"] != data:
                problems.append("%s uid %d: BODY[] differs from what was "
                                "appended" % (folder, item["UID"]))
    fresh.close()
    if checked == 0:
        problems.append("no appended message left to compare bodies with")
    return problems
