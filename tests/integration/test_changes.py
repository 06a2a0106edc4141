# SPDX-License-Identifier: MIT
"""Changing mail safely: STORE, FETCH's implicit \\Seen, EXPUNGE, COPY,
MOVE and \\Recent.

Every change reaches SQL before the command's OK (DESIGN.md 3, 4; the
tests read the database right after the tagged OK), is what the session
and other sessions are told (RFC 3501 6.4.5-6.4.7, 7.4.2; RFC 4315 UIDPLUS;
RFC 6851 MOVE), and survives a restart of Dovecot and the deletion of every
file but mail.sqlite* while Dovecot runs (DESIGN.md 1.2: the index is a
cache). COPY and MOVE share bodies (DESIGN.md 5): the tests follow
body_id and refcount through SQL until the last reference is expunged and
the body's rows are freed."""

import json
import os
import random
import re
import subprocess
import time

from harness import literal_plus, quote, sqlbox_only, uid_set
from invariants import (check_database, db_state, fetch_lines, flags_to_sql,
                        imap_view)

SLOW = os.environ.get("SQLBOX_SLOW") == "1"
COPY_MANY = 10000 if SLOW else 3000


def message(n, tag="chg", filler=0):
    """A small message with a unique Message-ID; filler adds that many
    bytes of deterministic text (256 KiB chunks: DESIGN.md 5)."""
    body = b"Message %d of %s.\r\n" % (n, tag.encode())
    if filler:
        rng = random.Random("%s-%d" % (tag, n))
        line = []
        size = 0
        while size < filler:
            text = "".join(rng.choice("abcdefghij klmnop") for _ in range(70))
            line.append(text.encode())
            size += 72
        body += b"\r\n".join(line) + b"\r\n"
    return (b"From: Sender <sender@example.org>\r\n"
            b"To: user@example.org\r\n"
            b"Subject: change test %d\r\n"
            b"Message-ID: <%s-%d@sqlbox.test>\r\n\r\n" % (n, tag.encode(), n)
            + body)


def ok(raw, command):
    """Runs a command that must answer OK; returns (text, untagged)."""
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:80], st, text)
    return text, lines


def append(raw, box, data, flags=b""):
    text, _ = ok(raw, b"APPEND " + quote(box) + b" (" + flags + b") " +
                 literal_plus(data))
    m = re.match(r"\[APPENDUID (\d+) (\d+)\]", text)
    assert m, text
    return int(m.group(2))


def multiappend(raw, box, messages):
    """One MULTIAPPEND (RFC 3502) with LITERAL+; returns the UIDs."""
    cmd = b"APPEND " + quote(box)
    for data in messages:
        cmd += b" " + literal_plus(data)
    text, _ = ok(raw, cmd)
    m = re.match(r"\[APPENDUID (\d+) ([0-9:,]+)\]", text)
    assert m, text
    return uid_set(m.group(2))


def copyuid(text):
    """'[COPYUID v 1:3 7:9] ...' -> (uidvalidity, {src: dst}) (RFC 4315 3:
    the two sets correspond in order)."""
    if isinstance(text, bytes):
        text = text.decode()
    m = re.search(r"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", text)
    assert m, "no COPYUID in %r" % text
    src, dst = uid_set(m.group(2)), uid_set(m.group(3))
    assert len(src) == len(dst), text
    return int(m.group(1)), dict(zip(src, dst))


def expunged_uids(seq_uids, lines):
    """Applies `* n EXPUNGE` lines (RFC 3501 7.4.1: each renumbers the
    rest) to a session's list of UIDs; returns the expunged UIDs."""
    gone = []
    for line in lines:
        m = re.match(rb"\* (\d+) EXPUNGE", line)
        if m:
            gone.append(seq_uids.pop(int(m.group(1)) - 1))
    return gone


def untagged_number(lines, name):
    for line in lines:
        m = re.match(rb"\* (\d+) " + name + rb"\r\n", line)
        if m:
            return int(m.group(1))
    return None


def sql_rows(inst, user, box):
    """{uid: (flags bits, keywords, modseq)} of a folder, from SQL."""
    st = db_state(inst, user)
    return {uid: (r["flags"], r["keywords"], r["modseq"])
            for uid, r in st.folder(box).items()}


def assert_database_ok(inst, user):
    problems = check_database(db_state(inst, user))
    assert not problems, "\n".join(problems)


def session_uids(raw):
    _, lines = ok(raw, b"UID SEARCH ALL")
    for line in lines:
        if line.startswith(b"* SEARCH"):
            return [int(x) for x in line.split()[2:]]
    return []


# -- STORE --------------------------------------------------------------------

# (command, target UIDs, operation, flags, silent). UIDs equal sequence
# numbers here (nothing is expunged).
STORES = [
    (b"STORE 1 +FLAGS (\\Seen \\Flagged)", [1], "+", {"\\Seen", "\\Flagged"},
     False),
    (b"UID STORE 2 +FLAGS ($Forwarded Project-X)", [2], "+",
     {"$Forwarded", "Project-X"}, False),
    (b"STORE 3 FLAGS (\\Answered \\Draft kwA)", [3], "=",
     {"\\Answered", "\\Draft", "kwA"}, False),
    (b"UID STORE 1 -FLAGS (\\Flagged)", [1], "-", {"\\Flagged"}, False),
    (b"STORE 2:3 +FLAGS.SILENT (\\Deleted)", [2, 3], "+", {"\\Deleted"},
     True),
    (b"UID STORE 4 FLAGS.SILENT ($Label1 \\Seen)", [4], "=",
     {"$Label1", "\\Seen"}, True),
    (b"STORE 5 -FLAGS (\\Seen)", [5], "-", {"\\Seen"}, False),
    (b"UID STORE 5:6 +FLAGS (kwA kwB \\Answered)", [5, 6], "+",
     {"kwA", "kwB", "\\Answered"}, False),
    (b"STORE 6 -FLAGS.SILENT (kwA)", [6], "-", {"kwA"}, True),
    (b"UID STORE 2 FLAGS ()", [2], "=", set(), False),
    (b"STORE 1:* +FLAGS.SILENT (Everyone)", [1, 2, 3, 4, 5, 6], "+",
     {"Everyone"}, True),
    (b"UID STORE 3,5 -FLAGS (\\Answered \\Draft Everyone kwB)", [3, 5], "-",
     {"\\Answered", "\\Draft", "Everyone", "kwB"}, False),
]

INITIAL = {1: b"", 2: b"", 3: b"\\Seen", 4: b"\\Flagged old-kw",
           5: b"", 6: b"\\Draft"}


def test_store_flags_and_keywords_reach_sql_and_survive_restart(dovecot,
                                                                  user):
    raw = dovecot.raw_imap(user)
    for uid, flags in INITIAL.items():
        assert append(raw, "INBOX", message(uid, "store"), flags) == uid
    model = {uid: {f.decode() for f in flags.split()}
             for uid, flags in INITIAL.items()}
    other = dovecot.raw_imap(user, tls="implicit")
    ok(other, b"SELECT INBOX")

    _, lines = ok(raw, b"SELECT INBOX")
    # RFC 3501 7.1: PERMANENTFLAGS lists what STORE keeps, \* = new
    # keywords may be created; the defined keywords are in FLAGS.
    perm = [x for x in lines if b"PERMANENTFLAGS" in x]
    assert perm == [b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted "
                    b"\\Seen \\Draft old-kw \\*)] Flags permitted.\r\n"], lines
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft old-kw)"\
        b"\r\n" in lines, lines

    before = sql_rows(dovecot, user, "INBOX") if dovecot.is_sqlbox else {}
    for command, targets, op, flags, silent in STORES:
        old = {uid: set(model[uid]) for uid in model}
        for uid in targets:
            if op == "+":
                model[uid] |= flags
            elif op == "-":
                model[uid] -= flags
            else:
                model[uid] = set(flags)
        _, lines = ok(raw, command)
        fetched = {seq: item for seq, item in fetch_lines(lines).items()}
        # RFC 3501 6.4.6: the new flags come back unless .SILENT.
        for seq, item in fetched.items():
            got = {f.decode() for f in item["FLAGS"]} - {"\\Recent"}
            assert not silent, (command, "FETCH despite .SILENT", lines)
            assert got == model[seq], (command, seq, got, model[seq])
        if not silent:
            changed = {u for u in targets if model[u] != old[u]}
            assert changed <= set(fetched), (command, lines)
        if not dovecot.is_sqlbox:
            continue
        # In SQL before the OK (DESIGN.md 4): flag bits and the sorted
        # keyword list; changed rows get a new MODSEQ, others keep theirs.
        after = sql_rows(dovecot, user, "INBOX")
        for uid in model:
            want = flags_to_sql(model[uid])
            assert after[uid][:2] == want, (command, uid, after[uid], want)
            if model[uid] != old[uid]:
                assert after[uid][2] > before[uid][2], (command, uid)
            elif uid not in targets:
                assert after[uid][2] == before[uid][2], (command, uid)
        before = after

    # Another session sees every change at its next NOOP (RFC 3501 7.4.2).
    ok(other, b"NOOP")
    assert imap_view(other) == model
    assert imap_view(raw) == model
    dovecot.restart()
    raw = dovecot.raw_imap(user)
    _, lines = ok(raw, b"SELECT INBOX")
    assert imap_view(raw) == model
    # The keywords in use are defined again, from SQL alone.
    perm = [x for x in lines if b"PERMANENTFLAGS" in x][0]
    used = {f for flags in model.values() for f in flags
            if not f.startswith("\\")}
    assert used == {"kwA", "kwB", "$Label1", "Everyone"}
    for kw in used:
        assert b" " + kw.encode() + b" " in perm, perm
    # EXAMINE: nothing can be changed (RFC 3501 6.3.2).
    _, lines = ok(raw, b"EXAMINE INBOX")
    assert b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n" in lines, lines
    if dovecot.is_sqlbox:
        rows = sql_rows(dovecot, user, "INBOX")
        assert {u: r[:2] for u, r in rows.items()} == \
            {u: flags_to_sql(f) for u, f in model.items()}
        assert_database_ok(dovecot, user)


def test_fetch_body_sets_seen_persistently(dovecot, user):
    raw = dovecot.raw_imap(user)
    for n in range(1, 6):
        append(raw, "INBOX", message(n, "seen"))
    ro = dovecot.raw_imap(user)
    ok(ro, b"EXAMINE INBOX")
    ok(raw, b"SELECT INBOX")
    # RFC 3501 6.4.5: BODY[] (and RFC822, BODY[TEXT]) set \Seen, and the
    # changed flags come back with the data; BODY.PEEK[] does not.
    _, lines = ok(raw, b"FETCH 1 BODY[]")
    flags = fetch_lines(lines)[1]["FLAGS"]
    assert b"\\Seen" in flags, lines
    _, lines = ok(raw, b"UID FETCH 2 BODY.PEEK[]")
    assert b"\\Seen" not in fetch_lines(lines)[2].get("FLAGS", []), lines
    _, lines = ok(raw, b"FETCH 3 RFC822")
    assert b"\\Seen" in fetch_lines(lines)[3]["FLAGS"], lines
    _, lines = ok(raw, b"UID FETCH 4 BODY[TEXT]")
    assert b"\\Seen" in fetch_lines(lines)[4]["FLAGS"], lines
    # Read-only: the same FETCH changes nothing (RFC 3501 6.3.2).
    _, lines = ok(ro, b"FETCH 5 BODY[]")
    assert b"\\Seen" not in fetch_lines(lines)[5].get("FLAGS", []), lines
    want = {1: {"\\Seen"}, 2: set(), 3: {"\\Seen"}, 4: {"\\Seen"}, 5: set()}
    if dovecot.is_sqlbox:
        rows = sql_rows(dovecot, user, "INBOX")
        assert {u: r[0] for u, r in rows.items()} == \
            {1: 8, 2: 0, 3: 8, 4: 8, 5: 0}
        assert db_state(dovecot, user).mailboxes["INBOX"]["unseen"] == 2
    ok(ro, b"NOOP")
    assert imap_view(ro) == want
    dovecot.restart()
    raw = dovecot.raw_imap(user)
    assert imap_view(raw, "INBOX") == want
    st, text, lines = raw.command(b'STATUS INBOX (UNSEEN)')
    assert lines == [b'* STATUS INBOX (UNSEEN 2)\r\n'], (text, lines)


# -- EXPUNGE ------------------------------------------------------------------

def test_expunge_uid_expunge_close_leave_tombstones(dovecot, user):
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Exp"')
    for n in range(1, 11):
        assert append(raw, "Exp", message(n, "exp")) == n
    guids = {}
    if dovecot.is_sqlbox:
        guids = {u: r["guid"] for u, r in
                 db_state(dovecot, user).folder("Exp").items()}
    watcher = dovecot.raw_imap(user)
    ok(watcher, b'SELECT "Exp"')
    ok(raw, b'SELECT "Exp"')
    seqs = list(range(1, 11))
    ok(raw, b"UID STORE 2,4,6 +FLAGS.SILENT (\\Deleted)")
    # RFC 4315 2.1: UID EXPUNGE removes only the given \Deleted messages.
    _, lines = ok(raw, b"UID EXPUNGE 4:6")
    assert sorted(expunged_uids(seqs, lines)) == [4, 6], lines
    # RFC 3501 6.4.3: EXPUNGE removes every \Deleted message.
    _, lines = ok(raw, b"EXPUNGE")
    assert expunged_uids(seqs, lines) == [2], lines
    assert session_uids(raw) == [1, 3, 5, 7, 8, 9, 10]
    # RFC 3501 6.4.2: CLOSE expunges silently.
    ok(raw, b"UID STORE 1,10 +FLAGS.SILENT (\\Deleted)")
    _, lines = ok(raw, b"CLOSE")
    assert not [x for x in lines if b"EXPUNGE" in x], lines
    gone = [1, 2, 4, 6, 10]
    left = [3, 5, 7, 8, 9]
    # Another selected session is told at its next command (7.4.1).
    wseqs = list(range(1, 11))
    _, lines = ok(watcher, b"NOOP")
    assert sorted(expunged_uids(wseqs, lines)) == gone, lines
    assert wseqs == left
    if dovecot.is_sqlbox:
        st = db_state(dovecot, user)
        assert sorted(st.folder("Exp")) == left
        tomb = {uid: t for (box, uid), t in st.expunged.items()
                if box == "Exp"}
        assert sorted(tomb) == gone, tomb
        for uid, t in tomb.items():
            assert t["guid"] == guids[uid], (uid, t)
            assert t["modseq"] <= st.mailboxes["Exp"]["highestmodseq"]
        assert check_database(st) == []
    dovecot.restart()
    raw = dovecot.raw_imap(user)
    _, lines = ok(raw, b'SELECT "Exp"')
    assert b"* 5 EXISTS\r\n" in lines, lines
    assert b"* OK [UIDNEXT 11] Predicted next UID\r\n" in lines, lines
    assert session_uids(raw) == left
    # RFC 3501 2.3.1.1: UIDs are never reused, not even the last one's.
    assert append(raw, "Exp", message(11, "exp")) == 11
    ok(raw, b"UID STORE 11 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"UID EXPUNGE 11")
    ok(raw, b'CREATE "Exp2"')
    assert append(raw, "Exp2", message(1, "exp2")) == 1
    ok(raw, b'SELECT "Exp2"')
    text, _ = ok(raw, b'UID COPY 1 "Exp"')
    assert copyuid(text)[1] == {1: 12}, text
    if dovecot.is_sqlbox:
        st = db_state(dovecot, user)
        assert sorted(st.folder("Exp")) == left + [12]
        assert sorted(u for (b, u) in st.expunged if b == "Exp") == \
            gone + [11]
        assert check_database(st) == []


# -- COPY, MOVE and shared bodies ---------------------------------------------

def body_rows(inst, user, body_ids):
    """{body_id: (refcount, number of chunk rows)} for those bodies that
    still exist."""
    out = {}
    for body_id in body_ids:
        rows = inst.sql(user, "SELECT refcount, (SELECT count(*) FROM "
                              "body_chunks WHERE body_id = ?) FROM bodies "
                              "WHERE id = ?", (body_id, body_id))
        if rows:
            out[body_id] = tuple(rows[0])
        elif inst.sql(user, "SELECT count(*) FROM body_chunks WHERE "
                            "body_id = ?", (body_id,))[0][0]:
            out[body_id] = (None, "chunks without a body")
    return out


def peek_bodies(raw, box):
    _, lines = ok(raw, b"EXAMINE " + quote(box))
    _, lines = ok(raw, b"UID FETCH 1:* (UID BODY.PEEK[])")
    return {item["UID"]: item["BODY[]"] for item in
            fetch_lines(lines).values()}


def test_copy_and_move_share_bodies_until_the_last_expunge(dovecot, user):
    raw = dovecot.raw_imap(user)
    for name in (b"CopyDst", b"MoveDst"):
        ok(raw, b"CREATE " + name)
    # Three bodies: small, two chunks, three chunks (256 KiB each).
    msgs = {1: message(1, "cp"), 2: message(2, "cp", 300 * 1024),
            3: message(3, "cp", 700 * 1024)}
    for uid, data in msgs.items():
        assert append(raw, "INBOX", data, b"\\Flagged kwC") == uid
    _, lines = ok(raw, b'STATUS "CopyDst" (UIDVALIDITY)')
    copy_validity = int(re.search(rb"UIDVALIDITY (\d+)", lines[0]).group(1))
    _, lines = ok(raw, b'STATUS "MoveDst" (UIDVALIDITY)')
    move_validity = int(re.search(rb"UIDVALIDITY (\d+)", lines[0]).group(1))

    ok(raw, b"SELECT INBOX")
    # RFC 4315 3: COPYUID <dest uidvalidity> <source set> <dest set>.
    text, _ = ok(raw, b'COPY 1:3 "CopyDst"')
    assert copyuid(text) == (copy_validity, {1: 1, 2: 2, 3: 3}), text
    text, _ = ok(raw, b'UID COPY 2,3 "CopyDst"')
    assert copyuid(text) == (copy_validity, {2: 4, 3: 5}), text
    if dovecot.is_sqlbox:
        st = db_state(dovecot, user)
        ids = {uid: st.folder("INBOX")[uid]["body_id"] for uid in msgs}
        copies = st.folder("CopyDst")
        assert [copies[u]["body_id"] for u in (1, 2, 3, 4, 5)] == \
            [ids[1], ids[2], ids[3], ids[2], ids[3]]
        assert body_rows(dovecot, user, ids.values()) == {
            ids[1]: (2, 1), ids[2]: (3, 2), ids[3]: (3, 3)}
        assert len(st.bodies) == 3
        # The copies keep flags and keywords (RFC 3501 6.4.7).
        assert {(r["flags"], r["keywords"]) for r in copies.values()} == \
            {(2, "kwC")}

    # RFC 6851 3.3/4.3: the COPYUID of a MOVE comes in an untagged OK
    # before the EXPUNGEs.
    _, lines = ok(raw, b'UID MOVE 1:3 "MoveDst"')
    okline = [i for i, x in enumerate(lines) if b"[COPYUID" in x]
    expunges = [i for i, x in enumerate(lines) if x.endswith(b" EXPUNGE\r\n")]
    assert len(okline) == 1 and len(expunges) == 3, lines
    assert okline[0] < min(expunges), lines
    assert copyuid(lines[okline[0]]) == (move_validity, {1: 1, 2: 2, 3: 3})
    assert session_uids(raw) == []
    if dovecot.is_sqlbox:
        st = db_state(dovecot, user)
        assert st.folder("INBOX") == {}
        assert sorted(u for (b, u) in st.expunged if b == "INBOX") == [1, 2, 3]
        assert [st.folder("MoveDst")[u]["body_id"] for u in (1, 2, 3)] == \
            [ids[1], ids[2], ids[3]]
        assert body_rows(dovecot, user, ids.values()) == {
            ids[1]: (2, 1), ids[2]: (3, 2), ids[3]: (3, 3)}
        assert check_database(st) == []

    dovecot.restart()
    raw = dovecot.raw_imap(user)
    want = {uid: data for uid, data in msgs.items()}
    assert peek_bodies(raw, "MoveDst") == want
    assert peek_bodies(raw, "CopyDst") == {1: msgs[1], 2: msgs[2],
                                           3: msgs[3], 4: msgs[2], 5: msgs[3]}

    # Expunging references one by one: the body goes with the last one.
    ok(raw, b'SELECT "CopyDst"')
    ok(raw, b"UID STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"EXPUNGE")
    if dovecot.is_sqlbox:
        assert body_rows(dovecot, user, ids.values()) == {
            ids[1]: (1, 1), ids[2]: (2, 2), ids[3]: (2, 3)}
    ok(raw, b'SELECT "MoveDst"')
    ok(raw, b"UID STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"EXPUNGE")
    if dovecot.is_sqlbox:
        assert body_rows(dovecot, user, ids.values()) == {
            ids[2]: (1, 2), ids[3]: (1, 3)}
    ok(raw, b'SELECT "CopyDst"')
    ok(raw, b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"CLOSE")
    if dovecot.is_sqlbox:
        assert body_rows(dovecot, user, ids.values()) == {}
        st = db_state(dovecot, user)
        assert st.bodies == {} and st.chunks == {} and st.messages == {}
        assert check_database(st) == []
    # A new APPEND of the same bytes makes a new body (nothing stale).
    assert append(raw, "INBOX", msgs[3]) == 4
    assert peek_bodies(raw, "INBOX") == {4: msgs[3]}


_OBSERVER = r"""
import json, os, sqlite3, sys, time
db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True,
                     timeout=30, isolation_level=None)
box = int(sys.argv[2])
seen = {}
while True:
    stop = os.path.exists(sys.argv[3])
    db.execute('BEGIN')
    n = db.execute('SELECT count(*) FROM messages WHERE mailbox_id = ?',
                   (box,)).fetchone()[0]
    c = db.execute('SELECT messages FROM mailboxes WHERE id = ?',
                   (box,)).fetchone()[0]
    db.execute('COMMIT')
    key = '%d %d' % (n, c)
    seen[key] = seen.get(key, 0) + 1
    if stop:
        break
    time.sleep(0.001)
print(json.dumps(seen))
"""


def test_copy_of_thousands_is_one_transaction(dovecot, user):
    sqlbox_only(dovecot)
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Bulk"')
    n = COPY_MANY
    for start in range(0, n, 500):
        multiappend(raw, "INBOX", [message(i, "bulk")
                                   for i in range(start + 1,
                                                  min(n, start + 500) + 1)])
    box = dovecot.sql(user, "SELECT id FROM mailboxes WHERE name = 'Bulk'")
    stop = dovecot.dir / ("stop-observer-%s" % user)
    uid, gid = dovecot._mail_ids()
    kw = {"user": uid, "group": gid, "extra_groups": []} \
        if os.getuid() == 0 else {}
    observer = subprocess.Popen(
        ["/usr/bin/python3", "-c", _OBSERVER, str(dovecot.db_path(user)),
         str(box[0][0]), str(stop)], stdout=subprocess.PIPE, text=True, **kw)
    try:
        time.sleep(0.2)
        ok(raw, b"SELECT INBOX")
        text, _ = ok(raw, b'COPY 1:* "Bulk"')
        assert copyuid(text)[1] == {i: i for i in range(1, n + 1)}, text[:200]
    finally:
        stop.touch()
        out, _ = observer.communicate(timeout=60)
    seen = json.loads(out)
    # A second connection sees none or all of them, and the counter
    # always equals the rows (same transaction).
    assert set(seen) <= {"0 0", "%d %d" % (n, n)}, seen
    assert "%d %d" % (n, n) in seen, seen
    st = db_state(dovecot, user)
    assert len(st.folder("Bulk")) == n
    assert len(st.bodies) == n
    assert all(b["refcount"] == 2 for b in st.bodies.values())
    assert check_database(st) == []
    _, lines = ok(raw, b'STATUS "Bulk" (MESSAGES UIDNEXT UNSEEN)')
    assert lines == [b'* STATUS Bulk (MESSAGES %d UIDNEXT %d UNSEEN %d)\r\n'
                     % (n, n + 1, n)], lines


# -- \Recent ------------------------------------------------------------------

def recent_uids(raw):
    _, lines = ok(raw, b"UID FETCH 1:* (UID FLAGS)")
    return sorted(item["UID"] for item in fetch_lines(lines).values()
                  if b"\\Recent" in item["FLAGS"])


def test_recent_is_claimed_once_in_sql(dovecot, user):
    feeder = dovecot.raw_imap(user)
    for n in range(1, 4):
        append(feeder, "INBOX", message(n, "recent"))

    def first_recent():
        if not dovecot.is_sqlbox:
            return None
        return db_state(dovecot, user).mailboxes["INBOX"]["first_recent_uid"]

    # RFC 3501 6.3.2: EXAMINE does not claim: \Recent stays for the next
    # SELECT.
    ex = dovecot.raw_imap(user)
    _, lines = ok(ex, b"EXAMINE INBOX")
    assert untagged_number(lines, b"RECENT") == 3, lines
    assert recent_uids(ex) == [1, 2, 3]
    assert first_recent() in (None, 1)
    # RFC 3501 2.3.2: the first session to be told of a message gets
    # \Recent, no other does.
    a = dovecot.raw_imap(user)
    _, lines = ok(a, b"SELECT INBOX")
    assert untagged_number(lines, b"RECENT") == 3, lines
    assert recent_uids(a) == [1, 2, 3]
    assert first_recent() in (None, 4)
    b = dovecot.raw_imap(user, tls="implicit")
    _, lines = ok(b, b"SELECT INBOX")
    assert untagged_number(lines, b"RECENT") == 0, lines
    assert recent_uids(b) == []
    ex2 = dovecot.raw_imap(user)
    _, lines = ok(ex2, b"EXAMINE INBOX")
    assert untagged_number(lines, b"RECENT") == 0, lines

    # New mail while both are selected: the first to sync claims it.
    append(feeder, "INBOX", message(4, "recent"))
    append(feeder, "INBOX", message(5, "recent"))
    _, lines = ok(a, b"NOOP")
    assert untagged_number(lines, b"EXISTS") == 5, lines
    # RFC 3501 7.3.2: RECENT counts every \Recent message of the folder.
    assert untagged_number(lines, b"RECENT") == 5, lines
    _, lines = ok(b, b"NOOP")
    assert untagged_number(lines, b"EXISTS") == 5, lines
    assert untagged_number(lines, b"RECENT") in (None, 0), lines
    assert recent_uids(a) == [1, 2, 3, 4, 5]
    assert recent_uids(b) == []
    assert first_recent() in (None, 6)
    # The claim is in SQL: it survives the restart.
    dovecot.restart()
    c = dovecot.raw_imap(user)
    _, lines = ok(c, b"SELECT INBOX")
    assert untagged_number(lines, b"RECENT") == 0, lines
    feeder = dovecot.raw_imap(user)
    append(feeder, "INBOX", message(6, "recent"))
    _, lines = ok(c, b"NOOP")
    assert untagged_number(lines, b"RECENT") == 1, lines
    assert recent_uids(c) == [6]


# -- the database is enough, even while Dovecot runs --------------------------

def remove_all_but_database(home):
    """Removes everything under a user's home but sqlbox/mail.sqlite*
    (the database, its -wal and -shm, and the lock file, which Dovecot's
    processes hold open); returns what was removed."""
    removed = []
    for root, dirs, files in os.walk(home, topdown=False):
        for name in files + dirs:
            path = os.path.join(root, name)
            if os.path.dirname(path) == os.path.join(home, "sqlbox") and \
                    name.startswith("mail.sqlite"):
                continue
            if path == os.path.join(home, "sqlbox"):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
            removed.append(path)
    return removed


def test_deleting_everything_but_the_database_while_running(dovecot, user):
    """DESIGN.md 1.2 with live sessions: the files are deleted between two
    commands of a selected session; that session, new sessions and a
    restarted Dovecot keep every message, flag and keyword."""
    sqlbox_only(dovecot)
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Keep"')
    # Deleting and renaming folders writes Dovecot's dovecot.mailbox.log.
    ok(raw, b'CREATE "Gone"')
    ok(raw, b'DELETE "Gone"')
    ok(raw, b'CREATE "Old"')
    ok(raw, b'RENAME "Old" "Renamed"')
    model = {}
    for n in range(1, 7):
        uid = append(raw, "INBOX", message(n, "wipe"), b"kw%d" % n)
        model[uid] = {"kw%d" % n}
    ok(raw, b"SELECT INBOX")
    ok(raw, b"UID STORE 1:3 +FLAGS (\\Seen $Important)")
    for uid in (1, 2, 3):
        model[uid] |= {"\\Seen", "$Important"}
    ok(raw, b"UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"EXPUNGE")
    del model[4]
    other = dovecot.raw_imap(user)
    ok(other, b'SELECT "Keep"')

    deleted = remove_all_but_database(str(dovecot.user_dir(user)))
    assert deleted, "nothing but the database existed: the test proves less"
    left = sorted(os.listdir(dovecot.db_path(user).parent))
    assert all(x.startswith("mail.sqlite") for x in left), left

    ok(raw, b"UID STORE 5 +FLAGS (\\Flagged NewKw)")
    model[5] |= {"\\Flagged", "NewKw"}
    ok(raw, b"UID STORE 1 -FLAGS (kw1)")
    model[1] -= {"kw1"}
    uid = append(raw, "INBOX", message(7, "wipe"), b"\\Answered")
    model[uid] = {"\\Answered"}
    ok(raw, b"NOOP")
    ok(raw, b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"UID EXPUNGE 2")
    del model[2]
    keep_uid = append(other, "Keep", message(8, "wipe"), b"\\Seen")
    ok(other, b"UID STORE %d +FLAGS (KeepKw)" % keep_uid)
    ok(other, b'CREATE "Made/After"')
    assert imap_view(raw) == model
    fresh = dovecot.raw_imap(user)
    assert imap_view(fresh, "INBOX") == model
    assert imap_view(fresh, "Keep") == {keep_uid: {"\\Seen", "KeepKw"}}
    st = db_state(dovecot, user)
    assert {u: (r["flags"], r["keywords"]) for u, r in
            st.folder("INBOX").items()} == \
        {u: flags_to_sql(f) for u, f in model.items()}
    assert check_database(st) == []

    dovecot.restart()
    raw = dovecot.raw_imap(user)
    assert imap_view(raw, "INBOX") == model
    assert imap_view(raw, "Keep") == {keep_uid: {"\\Seen", "KeepKw"}}
    _, lines = ok(raw, b'LIST "" "Made/*"')
    assert lines == [b'* LIST (\\HasNoChildren) "/" Made/After\r\n'], lines
