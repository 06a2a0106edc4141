# SPDX-License-Identifier: MIT
"""What must hold in a user's database whatever happened to it (DESIGN.md
1.4, 3, 5; PLUGIN.md "The database"), and what must agree between the
database, IMAP and what clients were told.

- db_state(): one consistent read of every table that matters, as the mail
  user, without the lock (readers never wait, DESIGN.md 1.3).
- check_database(): the invariants of the schema alone: counters equal the
  rows, reference counts equal the references, no orphan or duplicate
  bodies, chunks add up to the body's size, UIDs below UIDNEXT, MODSEQs not
  above HIGHESTMODSEQ, no UID both a message and a tombstone, SQLite's own
  integrity and foreign-key checks.
- Ledger and check_ledger(): what IMAP and LMTP clients were told (APPENDUID,
  COPYUID, 250 replies, what FETCH showed where), checked against the
  database: nothing answered OK is missing, no UID was handed out twice or
  out of order, nothing appeared that no client asked for, a MOVEd message
  is in exactly one place.
- imap_view() / compare_view(): a session's idea of a folder (UIDs, flags,
  keywords) against SQL's rows.

The soak (test_concurrency.py) and the crash test (test_crash.py) use all
of it; the smaller tests use the helpers."""

import re
import threading

from harness import ParseError, parse_imap, quote

FLAG_BITS = {"\\Answered": 1, "\\Flagged": 2, "\\Deleted": 4, "\\Seen": 8,
             "\\Draft": 16}
BIT_FLAGS = {v: k for k, v in FLAG_BITS.items()}
_FLAG_BITS_LOWER = {k.lower(): v for k, v in FLAG_BITS.items()}
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.I | re.M)

_STATE_QUERIES = [
    ("mailboxes", "SELECT id, name, noselect, uidvalidity, uidnext, "
                  "highestmodseq, first_recent_uid, messages, unseen, vsize, "
                  "psize FROM mailboxes ORDER BY id"),
    ("messages", "SELECT mailbox_id, uid, body_id, guid, flags, keywords, "
                 "modseq FROM messages ORDER BY mailbox_id, uid"),
    ("bodies", "SELECT id, refcount, hex(sha256), physical_size, "
               "virtual_size FROM bodies ORDER BY id"),
    ("chunks", "SELECT body_id, count(*), sum(length(data)), min(seq), "
               "max(seq) FROM body_chunks GROUP BY body_id"),
    ("heads", "SELECT body_id, hex(substr(data, 1, 8192)) FROM body_chunks "
              "WHERE seq = 0"),
    ("expunged", "SELECT mailbox_id, uid, modseq, guid FROM expunged "
                 "ORDER BY mailbox_id, uid"),
    ("integrity", "PRAGMA integrity_check"),
    ("foreign_keys", "PRAGMA foreign_key_check"),
]


class DbState:
    """The rows of one read, with lookups by folder name."""

    def __init__(self, rows):
        self.raw = rows
        self.mailboxes = {r[1]: dict(zip(
            ("id", "name", "noselect", "uidvalidity", "uidnext",
             "highestmodseq", "first_recent_uid", "messages", "unseen",
             "vsize", "psize"), r)) for r in rows["mailboxes"]}
        self.names = {b["id"]: name for name, b in self.mailboxes.items()}
        self.messages = {}      # (folder, uid) -> dict
        for mid, uid, body, guid, flags, kw, modseq in rows["messages"]:
            self.messages[(self.names.get(mid, mid), uid)] = {
                "body_id": body, "guid": guid, "flags": flags,
                "keywords": kw, "modseq": modseq}
        self.expunged = {(self.names.get(r[0], r[0]), r[1]):
                         {"modseq": r[2], "guid": r[3]}
                         for r in rows["expunged"]}
        self.bodies = {r[0]: {"refcount": r[1], "sha256": r[2],
                              "physical_size": r[3], "virtual_size": r[4]}
                       for r in rows["bodies"]}
        self.chunks = {r[0]: {"count": r[1], "bytes": r[2], "min": r[3],
                              "max": r[4]} for r in rows["chunks"]}
        self.msgid_of_body = {}
        for body_id, head in rows["heads"]:
            m = MESSAGE_ID.search(bytes.fromhex(head).split(b"\r\n\r\n")[0])
            self.msgid_of_body[body_id] = m.group(1).decode() if m else None

    def folder(self, name):
        """{uid: row} of one folder."""
        return {uid: row for (box, uid), row in self.messages.items()
                if box == name}

    def msgid(self, key):
        """The Message-ID of the message at (folder, uid), from its body."""
        return self.msgid_of_body.get(self.messages[key]["body_id"])

    def where(self):
        """{Message-ID: [(folder, uid), ...]} over every message."""
        out = {}
        for key in sorted(self.messages, key=lambda k: (str(k[0]), k[1])):
            out.setdefault(self.msgid(key), []).append(key)
        return out


def db_state(inst, user):
    """Reads everything check_database() needs in one child process (one
    connection, each query its own read transaction)."""
    results = inst._sql_run(user, [[q, []] for _, q in _STATE_QUERIES])
    return DbState({name: res for (name, _), res in
                    zip(_STATE_QUERIES, results)})


def check_database(st):
    """The schema's invariants; returns a list of problems (empty: fine)."""
    problems = []

    def bad(fmt, *args):
        problems.append(fmt % args)

    if st.raw["integrity"] != [["ok"]]:
        bad("PRAGMA integrity_check: %r", st.raw["integrity"])
    if st.raw["foreign_keys"]:
        bad("PRAGMA foreign_key_check: %r", st.raw["foreign_keys"][:10])

    # Folder counters equal their rows (STATUS and quota answer from them).
    for name, box in st.mailboxes.items():
        rows = st.folder(name)
        want = {"messages": len(rows),
                "unseen": sum(1 for r in rows.values() if not r["flags"] & 8),
                "vsize": sum(st.bodies.get(r["body_id"], {})
                             .get("virtual_size", 0) for r in rows.values()),
                "psize": sum(st.bodies.get(r["body_id"], {})
                             .get("physical_size", 0) for r in rows.values())}
        for key, value in want.items():
            if box[key] != value:
                bad("%s: counter %s = %s, rows say %s", name, key, box[key],
                    value)
        if box["noselect"] and rows:
            bad("%s: \\Noselect folder holds %d messages", name, len(rows))
        for uid, r in rows.items():
            if uid >= box["uidnext"]:
                bad("%s: message uid %d >= uidnext %d", name, uid,
                    box["uidnext"])
            if r["modseq"] > box["highestmodseq"]:
                bad("%s: uid %d modseq %d > highestmodseq %d", name, uid,
                    r["modseq"], box["highestmodseq"])
            if r["flags"] & ~31:
                bad("%s: uid %d has unknown flag bits %#x", name, uid,
                    r["flags"])
            if r["keywords"] != " ".join(sorted(r["keywords"].split())):
                bad("%s: uid %d keywords %r not a sorted, space-separated "
                    "list", name, uid, r["keywords"])
    for (name, uid), t in st.expunged.items():
        box = st.mailboxes.get(name)
        if box is None:
            bad("tombstone of unknown mailbox %r uid %d", name, uid)
            continue
        if uid >= box["uidnext"]:
            bad("%s: tombstone uid %d >= uidnext %d", name, uid,
                box["uidnext"])
        if t["modseq"] > box["highestmodseq"]:
            bad("%s: tombstone uid %d modseq %d > highestmodseq %d", name,
                uid, t["modseq"], box["highestmodseq"])
        if (name, uid) in st.messages:
            bad("%s: uid %d is both a message and a tombstone", name, uid)

    # Bodies: refcount == references, nothing orphaned, chunks complete.
    refs = {}
    for key, r in st.messages.items():
        refs[r["body_id"]] = refs.get(r["body_id"], 0) + 1
        if r["body_id"] not in st.bodies:
            bad("%s uid %d: body %d does not exist", key[0], key[1],
                r["body_id"])
    for body_id, b in st.bodies.items():
        if b["refcount"] != refs.get(body_id, 0):
            bad("body %d: refcount %d, referenced by %d messages", body_id,
                b["refcount"], refs.get(body_id, 0))
        if refs.get(body_id, 0) == 0:
            bad("body %d: orphan (no message uses it)", body_id)
        c = st.chunks.get(body_id)
        if c is None:
            bad("body %d: no chunks", body_id)
            continue
        if c["bytes"] != b["physical_size"]:
            bad("body %d: chunks hold %d bytes, physical_size %d", body_id,
                c["bytes"], b["physical_size"])
        if (c["min"], c["max"]) != (0, c["count"] - 1):
            bad("body %d: chunk seqs %d..%d for %d chunks", body_id,
                c["min"], c["max"], c["count"])
    for body_id in st.chunks:
        if body_id not in st.bodies:
            bad("body_chunks of body %d without a bodies row", body_id)
    seen = {}
    for body_id, b in st.bodies.items():
        if b["sha256"]:
            if b["sha256"] in seen:
                bad("bodies %d and %d have the same sha256 (stored twice)",
                    seen[b["sha256"]], body_id)
            seen[b["sha256"]] = body_id
    return problems


# -- IMAP views ---------------------------------------------------------------

def flags_to_sql(flags):
    """IMAP flags (bytes or str, \\Recent dropped) -> (bits, 'kw1 kw2')."""
    bits = 0
    kws = []
    for f in flags:
        f = f.decode() if isinstance(f, bytes) else f
        if f.lower() == "\\recent":
            continue
        if f.startswith("\\"):
            bits |= _FLAG_BITS_LOWER[f.lower()]
        else:
            kws.append(f)
    return bits, " ".join(sorted(kws))


def sql_to_flags(bits, keywords):
    """(bits, keywords) -> set of IMAP flag names (str)."""
    out = {name for bit, name in BIT_FLAGS.items() if bits & bit}
    return out | set(keywords.split())


def fetch_lines(lines):
    """Untagged FETCH lines -> {seq: {ITEM: value}}."""
    out = {}
    for line in lines:
        m = re.match(rb"\* (\d+) FETCH ", line)
        if not m:
            continue
        try:
            vals = parse_imap(line[m.end():])
        except ParseError as e:
            raise ParseError("%s in %r" % (e, line[:300] + b" ... " +
                                           line[-300:]))
        items = vals[0]
        d = out.setdefault(int(m.group(1)), {})
        for i in range(0, len(items), 2):
            d[items[i].decode().upper()] = items[i + 1]
    return out


def imap_view(raw, folder=None):
    """{uid: set of flags without \\Recent} of the selected folder (or of
    `folder`, EXAMINEd first) as the session sees it."""
    if folder is not None:
        st, text, _ = raw.command(b"EXAMINE " + quote(folder))
        assert st == "OK", text
    st, text, lines = raw.command(b"UID FETCH 1:* (UID FLAGS)")
    assert st == "OK", text
    out = {}
    for item in fetch_lines(lines).values():
        if "UID" in item and "FLAGS" in item:
            out[item["UID"]] = {f.decode() for f in item["FLAGS"]
                                if f.lower() != b"\\recent"}
    return out


def compare_view(view, st, folder):
    """A session's view against SQL's rows; returns problems."""
    rows = st.folder(folder)
    problems = []
    if set(view) != set(rows):
        problems.append("%s: IMAP shows UIDs %s, SQL has %s (only IMAP: %s, "
                        "only SQL: %s)" % (
                            folder, len(view), len(rows),
                            sorted(set(view) - set(rows))[:20],
                            sorted(set(rows) - set(view))[:20]))
    for uid in sorted(set(view) & set(rows)):
        want = sql_to_flags(rows[uid]["flags"], rows[uid]["keywords"])
        if {f.lower() for f in view[uid]} != {f.lower() for f in want}:
            problems.append("%s uid %d: IMAP flags %s, SQL %s" % (
                folder, uid, sorted(view[uid]), sorted(want)))
    return problems


# -- what clients were told ---------------------------------------------------

class Ledger:
    """Thread-safe record of what clients were told and what they tried.

    Locations are (folder, uid). A location is `reported` when an APPENDUID
    or COPYUID named it, `seen` when a FETCH showed its Message-ID. A
    removal (EXPUNGE, or being the source of a MOVE) is `attempted` before
    the command is sent, whatever the answer; `removed` when the client
    knows the message is gone (UID EXPUNGE of a \\Deleted message answered
    OK). Unknown outcomes (the connection died mid-command) keep the
    Message-IDs the command could have created somewhere."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []               # (folder, [uids], t_sent, t_answered, who)
        self.location = {}          # (folder, uid) -> msgid
        self.conflicts = []
        self.attempted = set()
        self.removed = set()
        self.unknown_msgids = set()
        self.unknown_ops = []
        self.failures = []          # (who, command, answer)
        self.lmtp = {}              # msgid -> reply code
        self.contents = {}          # msgid -> bytes as sent
        self.move_only = set()      # msgids only ever MOVEd
        self.appended = {}          # msgid -> True OK, False NO, None unknown
        self.live = {}              # folder -> {uid: msgid} not yet removed
        self.counts = {}

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def _place(self, key, msgid, how):
        old = self.location.get(key)
        if old is not None and old != msgid:
            self.conflicts.append("%s uid %d: %s says %s, earlier %s" % (
                key[0], key[1], how, msgid, old))
        else:
            self.location[key] = msgid
            if key not in self.attempted:
                self.live.setdefault(key[0], {})[key[1]] = msgid

    def reported(self, folder, pairs, t_sent, t_answered, who, how):
        """pairs: [(uid, msgid)] named by one APPENDUID or COPYUID."""
        with self.lock:
            self.ops.append((folder, [u for u, _ in pairs], t_sent,
                             t_answered, who))
            for uid, msgid in pairs:
                self._place((folder, uid), msgid, how)

    def seen(self, folder, uid, msgid):
        with self.lock:
            self._place((folder, uid), msgid, "FETCH")

    def attempt_removal(self, folder, uids):
        with self.lock:
            self.attempted.update((folder, u) for u in uids)
            live = self.live.get(folder, {})
            for u in uids:
                live.pop(u, None)

    def confirm_removal(self, folder, uids):
        with self.lock:
            self.removed.update((folder, u) for u in uids)

    def unknown(self, what, msgids):
        with self.lock:
            self.unknown_ops.append(what)
            self.unknown_msgids.update(msgids)

    def failure(self, who, command, answer):
        with self.lock:
            self.failures.append((who, command, answer))

    def known(self, folder):
        """[(uid, msgid)] known in folder and not yet tried for removal."""
        with self.lock:
            return list(self.live.get(folder, {}).items())


def check_ledger(st, ledger, crash=False):
    """The database against what clients were told; returns problems.
    crash: connections died mid-command (their outcome is unknown)."""
    problems = list(ledger.conflicts)

    def bad(fmt, *args):
        problems.append(fmt % args)

    # UIDs named by APPENDUID/COPYUID: each at most once per folder, and
    # ascending in time: an answer received before another command was
    # sent names lower UIDs (RFC 3501 2.3.1.1: strictly ascending, never
    # reused).
    by_folder = {}
    for folder, uids, t_sent, t_answered, who in ledger.ops:
        by_folder.setdefault(folder, []).append((t_sent, t_answered, uids,
                                                 who))
    for folder, ops in by_folder.items():
        count = {}
        for _, _, uids, _ in ops:
            for u in uids:
                count[u] = count.get(u, 0) + 1
        dups = sorted(u for u, n in count.items() if n > 1)
        if dups:
            bad("%s: UIDs reported more than once: %s", folder, dups[:20])
        done = sorted(ops, key=lambda o: o[1])
        best = 0        # highest UID of the answers received so far
        j = 0
        for t_sent, _, uids, who in sorted(ops, key=lambda o: o[0]):
            while j < len(done) and done[j][1] < t_sent:
                best = max([best] + done[j][2])
                j += 1
            if uids and min(uids) <= best:
                bad("%s: %s was given UID %d after an earlier answer had "
                    "given UID %d", folder, who, min(uids), best)
        box = st.mailboxes.get(folder)
        if box is not None and max(count, default=0) >= box["uidnext"]:
            bad("%s: UID %d reported, uidnext is %d", folder, max(count),
                box["uidnext"])

    # What was reported is there (with its Message-ID), unless a removal
    # was tried; what was surely removed is gone, with a tombstone.
    for key, msgid in ledger.location.items():
        if key in ledger.attempted:
            continue
        if key not in st.messages:
            bad("%s uid %d (%s) was answered OK but is not in the database"
                "%s", key[0], key[1], msgid,
                " (a tombstone says it was expunged)"
                if key in st.expunged else "")
        elif st.msgid(key) != msgid:
            bad("%s uid %d: the database holds %s, the client was told %s",
                key[0], key[1], st.msgid(key), msgid)
    for key in ledger.removed:
        if key in st.messages:
            bad("%s uid %d: UID EXPUNGE answered OK, the message is still "
                "there", *key)
        elif key not in st.expunged:
            bad("%s uid %d: expunged without a tombstone", *key)
    for key in st.expunged:
        if key not in ledger.attempted:
            bad("%s uid %d: a tombstone, but no client removed it", *key)

    # Nothing appears that no client asked for: every row is a reported or
    # seen location, an LMTP delivery, or the result of a command whose
    # answer was lost with its connection.
    for key in st.messages:
        msgid = st.msgid(key)
        if key in ledger.location:
            continue
        if msgid in ledger.lmtp and key[0] == "INBOX":
            continue
        if crash and msgid in ledger.unknown_msgids:
            continue
        bad("%s uid %d (%s): in the database, but no client was told so",
            key[0], key[1], msgid)

    where = st.where()
    # Accepted deliveries are somewhere unless a client removed a copy.
    for msgid, code in ledger.lmtp.items():
        if code != 250 or msgid in where:
            continue
        if not any(m == msgid and k in ledger.attempted
                   for k, m in ledger.location.items()):
            bad("LMTP delivery %s answered 250 but is not in the database",
                msgid)
    # MOVE (RFC 6851): a message that is only ever moved is in exactly one
    # place, whatever was interrupted (zero or one if its APPEND was).
    for msgid in ledger.move_only:
        n = len(where.get(msgid, []))
        ok = ledger.appended.get(msgid)
        if ok is True and n != 1:
            bad("moved message %s is in %d places: %s", msgid, n,
                where.get(msgid, []))
        elif ok is False and n:
            bad("message %s whose APPEND was refused is in %s", msgid,
                where[msgid])
        elif ok is None and n > 1:
            bad("moved message %s (APPEND interrupted) is in %d places: %s",
                msgid, n, where.get(msgid))
    return problems
