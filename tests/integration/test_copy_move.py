# SPDX-License-Identifier: MIT
"""COPY and MOVE of whole sets within one user's database.

sqlbox copies a set in one SQL statement at commit and a MOVE expunges its
sources in the same transaction (docs/storage.md, "Saving and copying").
These tests hold that to the promises a per-message copy kept: a source
expunged by another session between the client's view and the commit makes
the whole COPY or MOVE fail with EXPUNGEISSUED (RFC 5530 3) and keeps
nothing; a MOVE of thousands (imap moves in batches of 1,000, each its own
transaction) leaves every message in exactly one folder, the counters equal
to the rows, and one MODSEQ per write transaction and folder
(docs/storage.md, "Permanent MODSEQs"); COPYUID (RFC 4315 3) names every
copy; a MOVE into the selected folder itself gives the messages new UIDs.
"""

import re

import pytest

from harness import literal_plus, quote, sqlbox_only, uid_set
from invariants import check_database, db_state

MOVE_MANY = 2500        # three of imap's MOVE batches (MOVE_COMMIT_INTERVAL)


def message(n, tag):
    return (b"From: a@example.org\r\nSubject: %s %d\r\n"
            b"Message-ID: <%s-%d@sqlbox.test>\r\n\r\nbody %d\r\n"
            % (tag.encode(), n, tag.encode(), n, n))


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:80], st, text)
    return text, lines


def fill(raw, box, n, tag):
    """Appends n messages in MULTIAPPENDs of 500: every third \\Seen,
    every fifth with a keyword."""
    for start in range(1, n + 1, 500):
        cmd = b"APPEND " + quote(box)
        for i in range(start, min(n, start + 499) + 1):
            flags = []
            if i % 3 == 0:
                flags.append(b"\\Seen")
            if i % 5 == 0:
                flags.append(b"kw%d" % (i % 2))
            cmd += b" (" + b" ".join(flags) + b") " + \
                literal_plus(message(i, tag))
        ok(raw, cmd)


def copyuids(lines_or_text):
    """Every COPYUID in the answer -> (uidvalidities, {src: dst})."""
    if isinstance(lines_or_text, str):
        lines_or_text = [lines_or_text.encode()]
    validities, pairs = set(), {}
    for line in lines_or_text:
        for m in re.finditer(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]",
                             line):
            src = uid_set(m.group(2).decode())
            dst = uid_set(m.group(3).decode())
            assert len(src) == len(dst), line
            validities.add(int(m.group(1)))
            pairs.update(zip(src, dst))
    return validities, pairs


@pytest.mark.parametrize("verb", [b"COPY", b"MOVE"])
def test_a_set_with_a_source_expunged_meanwhile_is_not_copied_at_all(
        dovecot, user, verb):
    """Session a still shows UID 7 when session b expunges it; a's
    UID COPY/MOVE 1:20 then fails whole (NO [EXPUNGEISSUED]) and keeps
    nothing: the destination stays empty, its UIDNEXT unchanged, and a
    MOVE leaves every other source where it was."""
    sqlbox_only(dovecot)
    a = dovecot.raw_imap(user)
    ok(a, b'CREATE "Dest"')
    fill(a, "INBOX", 20, "gone")
    ok(a, b"SELECT INBOX")
    b = dovecot.raw_imap(user)
    ok(b, b"SELECT INBOX")
    ok(b, b"UID STORE 7 +FLAGS.SILENT (\\Deleted)")
    ok(b, b"UID EXPUNGE 7")

    st, text, lines = a.command(b'UID ' + verb + b' 1:20 "Dest"')
    assert st == "NO" and text.startswith("[EXPUNGEISSUED]"), (st, text)
    assert not any(b"[COPYUID" in x for x in lines), lines
    state = db_state(dovecot, user)
    assert check_database(state) == []
    assert state.folder("Dest") == {}
    assert state.mailboxes["Dest"]["uidnext"] == 1
    assert state.mailboxes["Dest"]["messages"] == 0
    assert sorted(state.folder("INBOX")) == [u for u in range(1, 21)
                                             if u != 7]
    assert [k for k in state.expunged] == [("INBOX", 7)]
    # The session learns of the expunge and can copy the rest.
    ok(a, b"NOOP")
    text, lines = ok(a, b'UID ' + verb + b' 1:20 "Dest"')
    _, pairs = copyuids([text.encode()] + lines)
    assert sorted(pairs) == [u for u in range(1, 21) if u != 7], pairs
    assert sorted(pairs.values()) == list(range(1, 20)), pairs
    state = db_state(dovecot, user)
    assert check_database(state) == []
    assert len(state.folder("Dest")) == 19


def test_move_of_thousands_keeps_every_message_in_one_place(dovecot, user):
    """UID MOVE 1:* of 2,500 messages, shared with a copy in a third
    folder: every message ends in Dest only, COPYUID maps all of them, the
    counters equal the rows (MESSAGES, UNSEEN, sizes), the bodies keep
    their two references, and each of imap's batches wrote one MODSEQ per
    folder: the tombstones' and the moved rows' MODSEQs come in as many
    values as there were batches, and INBOX's HIGHESTMODSEQ is its last
    tombstones' (the source's own expunge afterwards wrote nothing)."""
    sqlbox_only(dovecot)
    n = MOVE_MANY
    raw = dovecot.raw_imap(user)
    ok(raw, b'CREATE "Dest"')
    ok(raw, b'CREATE "Kept"')
    fill(raw, "INBOX", n, "many")
    ok(raw, b"SELECT INBOX")
    ok(raw, b'UID COPY 1:* "Kept"')
    before = db_state(dovecot, user)
    flags = {uid: (r["flags"], r["keywords"], r["body_id"])
             for uid, r in before.folder("INBOX").items()}

    text, lines = ok(raw, b'UID MOVE 1:* "Dest"')
    validities, pairs = copyuids([text.encode()] + lines)
    assert validities == {before.mailboxes["Dest"]["uidvalidity"]}
    assert pairs == {u: u for u in range(1, n + 1)}
    assert sum(1 for x in lines if x.endswith(b" EXPUNGE\r\n")) == n

    st = db_state(dovecot, user)
    assert check_database(st) == []
    assert st.folder("INBOX") == {}
    dest = st.folder("Dest")
    assert {uid: (r["flags"], r["keywords"], r["body_id"])
            for uid, r in dest.items()} == flags
    assert len(st.folder("Kept")) == n
    assert all(b["refcount"] == 2 for b in st.bodies.values())
    assert sorted(u for (box, u) in st.expunged if box == "INBOX") == \
        list(range(1, n + 1))
    batches = (n + 999) // 1000
    tomb_modseqs = {t["modseq"] for (box, _), t in st.expunged.items()
                    if box == "INBOX"}
    assert len(tomb_modseqs) == batches, sorted(tomb_modseqs)
    assert len({r["modseq"] for r in dest.values()}) == batches
    assert st.mailboxes["INBOX"]["highestmodseq"] == max(tomb_modseqs)
    unseen = sum(1 for u in range(1, n + 1) if u % 3)
    _, lines = ok(raw, b'STATUS "Dest" (MESSAGES UIDNEXT UNSEEN)')
    assert lines == [b'* STATUS Dest (MESSAGES %d UIDNEXT %d UNSEEN %d)\r\n'
                     % (n, n + 1, unseen)], lines
    _, lines = ok(raw, b'STATUS "INBOX" (MESSAGES UNSEEN)')
    assert lines == [b'* STATUS INBOX (MESSAGES 0 UNSEEN 0)\r\n'], lines
    assert st.mailboxes["Dest"]["vsize"] == st.mailboxes["Kept"]["vsize"]


def test_move_into_the_selected_folder_gives_new_uids(dovecot, user):
    """UID MOVE of messages into their own folder (RFC 6851 allows it):
    they come back under new UIDs (COPYUID 1:3 4:6), the old UIDs are
    tombstones, and the folder still counts three messages."""
    sqlbox_only(dovecot)
    raw = dovecot.raw_imap(user)
    fill(raw, "INBOX", 3, "self")
    ok(raw, b"SELECT INBOX")
    text, lines = ok(raw, b"UID MOVE 1:3 INBOX")
    _, pairs = copyuids([text.encode()] + lines)
    assert pairs == {1: 4, 2: 5, 3: 6}, (text, lines)
    st = db_state(dovecot, user)
    assert check_database(st) == []
    assert sorted(st.folder("INBOX")) == [4, 5, 6]
    assert sorted(u for (_, u) in st.expunged) == [1, 2, 3]
    _, lines = ok(raw, b"UID SEARCH ALL")
    assert lines == [b"* SEARCH 4 5 6\r\n"], lines
    _, lines = ok(raw, b'STATUS "INBOX" (MESSAGES UIDNEXT)')
    assert lines == [b'* STATUS INBOX (MESSAGES 3 UIDNEXT 7)\r\n'], lines
