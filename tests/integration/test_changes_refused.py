# SPDX-License-Identifier: MIT
"""Changes that must be refused, cleanly: the client gets a tagged BAD or
NO with the right response code, and nothing changes, neither in SQL nor
in what the session (or another one) sees.

- Invalid flags and keywords (RFC 3501 2.3.2, 9 flag-keyword = atom;
  Dovecot's mail_max_keyword_length 50), answered like Dovecot's own
  maildir answers them.
- More keyword names than sqlbox_max_keywords in a folder (PLUGIN.md
  "Settings": NO [CANNOT], PERMANENTFLAGS without \\*).
- COPY/MOVE to a missing folder: NO [TRYCREATE] (RFC 3501 6.4.7).
- UID ranges without messages: OK with nothing, like maildir (RFC 3501
  6.4.8; a range ending in * always holds the last message, 9).
- The write lock not had within sqlbox_lock_timeout: NO [INUSE] (RFC 5530
  3) for every write, LMTP 451 (RFC 5321 4.2.5), while reads go on
  (DESIGN.md 4: reads never wait)."""

import re

import pytest

from harness import literal_plus
from invariants import check_database, db_state, fetch_lines, imap_view

MAX_KEYWORDS = 5
DOVECOT_OPTIONS = {"extra_conf": "plugin {\n"
                                 "  sqlbox_max_keywords = %d\n"
                                 "  sqlbox_lock_timeout = 1s\n"
                                 "}\n" % MAX_KEYWORDS}
MSG = (b"From: a@example.org\r\nSubject: refused %d\r\n"
       b"Message-ID: <refused-%d@sqlbox.test>\r\n\r\nbody %d\r\n")
KW50 = b"k" * 50
KW51 = b"k" * 51


def msg(n):
    return MSG % (n, n, n)


def run(raw, command):
    st, text, lines = raw.command(command)
    return st, text, lines


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command[:80], st, text)
    return text, lines


def code(text):
    m = re.match(r"\[([A-Z-]+)", text)
    return m.group(1) if m else None


def strip_timing(text):
    return re.sub(r" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)\.?$", "",
                  text)


def setup_mailbox(inst, user):
    """Four messages in INBOX (one \\Seen, one with a keyword) and an empty
    folder Other; returns a session with INBOX selected."""
    raw = inst.raw_imap(user)
    ok(raw, b'CREATE "Other"')
    ok(raw, b"APPEND INBOX " + literal_plus(msg(1)))
    ok(raw, b"APPEND INBOX (\\Seen) " + literal_plus(msg(2)))
    ok(raw, b"APPEND INBOX (Existing) " + literal_plus(msg(3)))
    ok(raw, b"APPEND INBOX " + literal_plus(msg(4)))
    ok(raw, b"SELECT INBOX")
    return raw


def everything(inst, user, raw):
    """What must not change: the session's view of INBOX and Other (EXAMINE
    through a second session) and, for sqlbox, every row of every table."""
    probe = inst.raw_imap(user)
    snap = {"session": imap_view(raw),
            "INBOX": imap_view(probe, "INBOX"),
            "Other": imap_view(probe, "Other")}
    probe.close()
    if inst.is_sqlbox:
        snap["sql"] = inst.sql_dump(user)
    return snap


# -- invalid flags and keywords -----------------------------------------------

# (id, command, expected status, expected response code)
BAD_FLAGS = [
    ("unknown-system-flag", b"STORE 1 +FLAGS (\\Foo)", "BAD", None),
    ("recent-flag", b"UID STORE 1 FLAGS (\\Recent)", "BAD", None),
    ("good-and-unknown-flag", b"STORE 1:2 +FLAGS (\\Flagged \\Foo)", "BAD",
     None),
    ("paren-in-keyword", b"STORE 1 +FLAGS (a(b)", "BAD", None),
    ("quoted-keyword", b'STORE 1 +FLAGS ("kw")', "BAD", None),
    ("good-and-bad-keyword", b"UID STORE 1:4 +FLAGS (fine a(b)", "BAD", None),
    ("keyword-too-long", b"STORE 1 +FLAGS (" + KW51 + b")", "NO", "CANNOT"),
    ("good-and-too-long", b"STORE 1:4 +FLAGS (\\Seen fine " + KW51 + b")",
     "NO", "CANNOT"),
    ("replace-with-too-long", b"STORE 3 FLAGS (" + KW51 + b")", "NO",
     "CANNOT"),
    ("bad-store-item", b"STORE 1 FLAGS.LOUD (\\Seen)", "BAD", None),
    ("append-keyword-too-long",
     b"APPEND INBOX (" + KW51 + b") " + literal_plus(msg(9)), "NO",
     "CANNOT"),
    ("append-unknown-flag",
     b"APPEND INBOX (\\Foo) " + literal_plus(msg(9)), "BAD", None),
]


@pytest.mark.parametrize("case_id,command,want_status,want_code", BAD_FLAGS,
                         ids=[c[0] for c in BAD_FLAGS])
def test_invalid_flags_change_nothing(dovecot, oracle, case_id, command,
                                      want_status, want_code):
    answers = {}
    for inst in (dovecot, oracle):
        user = inst.new_user()
        raw = setup_mailbox(inst, user)
        before = everything(inst, user, raw)
        st, text, lines = run(raw, command)
        # Nothing was applied: no FETCH told of a change either.
        assert not fetch_lines(lines), (inst.backend, lines)
        assert everything(inst, user, raw) == before, (inst.backend, text)
        answers[inst.backend] = (st, code(text), strip_timing(text))
        raw.close()
    mine = answers[dovecot.backend]
    assert answers[oracle.backend][:2] == (want_status, want_code), answers
    assert mine[:2] == (want_status, want_code), answers


def test_keyword_of_the_longest_allowed_length_is_kept(dovecot, user):
    raw = setup_mailbox(dovecot, user)
    _, lines = ok(raw, b"STORE 1 +FLAGS (" + KW50 + b")")
    assert set(fetch_lines(lines)[1]["FLAGS"]) - {b"\\Recent"} == {KW50}, \
        lines
    st, text, _ = run(raw, b"STORE 2 +FLAGS (" + KW51 + b")")
    assert (st, code(text)) == ("NO", "CANNOT"), text
    if dovecot.is_sqlbox:
        rows = db_state(dovecot, user).folder("INBOX")
        assert rows[1]["keywords"] == KW50.decode()
        assert rows[2]["keywords"] == ""


def permanentflags(lines):
    for line in lines:
        m = re.search(rb"\[PERMANENTFLAGS \(([^)]*)\)\]", line)
        if m:
            return m.group(1).split()
    return None


def test_keyword_limit_per_folder(dovecot, user):
    """sqlbox_max_keywords = 5 in this module."""
    raw = setup_mailbox(dovecot, user)          # INBOX has "Existing"
    _, lines = ok(raw, b"SELECT INBOX")
    assert b"\\*" in permanentflags(lines), lines
    ok(raw, b"STORE 1 +FLAGS (k1 k2)")
    _, lines = ok(raw, b"UID STORE 2 +FLAGS (k3)")
    assert b"\\*" in permanentflags(lines), lines
    # The fifth name: accepted, and from now on PERMANENTFLAGS has no \*
    # (RFC 3501 7.1: new keywords can't be created).
    _, lines = ok(raw, b"STORE 4 +FLAGS (k4)")
    assert permanentflags(lines) == [b"\\Answered", b"\\Flagged",
                                     b"\\Deleted", b"\\Seen", b"\\Draft",
                                     b"Existing", b"k1", b"k2", b"k3",
                                     b"k4"], lines
    before = everything(dovecot, user, raw)
    for command in (b"STORE 1 +FLAGS (k5)",
                    b"STORE 1:4 +FLAGS (k1 k6)",
                    b"UID STORE 3 FLAGS (\\Seen k7)",
                    b"APPEND INBOX (k8) " + literal_plus(msg(8))):
        st, text, lines = run(raw, command)
        assert st == "NO" and code(text) == "CANNOT", (command, text)
        assert "Can't create new keywords" in text, text
        assert not fetch_lines(lines), lines
        assert everything(dovecot, user, raw) == before, command
    # Names that exist still work, on any message.
    _, lines = ok(raw, b"STORE 3 +FLAGS (k1 k4 \\Flagged)")
    assert sorted(fetch_lines(lines)[3]["FLAGS"]) == \
        [b"Existing", b"\\Flagged", b"k1", b"k4"], lines
    # The limit is per folder.
    ok(raw, b'SELECT "Other"')
    ok(raw, b"APPEND Other (o1 o2 o3) " + literal_plus(msg(20)))
    _, lines = ok(raw, b"NOOP")
    ok(raw, b"STORE 1 +FLAGS (o4 o5)")
    st, text, _ = run(raw, b"STORE 1 +FLAGS (o6)")
    assert (st, code(text)) == ("NO", "CANNOT"), text
    # Another session, and a restart, see the same limit (it is counted
    # from what SQL holds).
    dovecot.restart()
    raw = dovecot.raw_imap(user)
    _, lines = ok(raw, b"SELECT INBOX")
    assert b"\\*" not in permanentflags(lines), lines
    st, text, _ = run(raw, b"STORE 2 +FLAGS (k9)")
    assert (st, code(text)) == ("NO", "CANNOT"), text
    if dovecot.is_sqlbox:
        st = db_state(dovecot, user)
        kws = {kw for r in st.folder("INBOX").values()
               for kw in r["keywords"].split()}
        assert kws == {"Existing", "k1", "k2", "k3", "k4"}
        assert check_database(st) == []


# -- COPY/MOVE to a missing folder --------------------------------------------

def test_copy_and_move_to_a_missing_folder_ask_to_create_it(dovecot, user):
    raw = setup_mailbox(dovecot, user)
    watcher = dovecot.raw_imap(user)
    ok(watcher, b"SELECT INBOX")
    before = everything(dovecot, user, raw)
    for command in (b'COPY 1:* "Missing"', b'UID COPY 1:4 "Missing"',
                    b'MOVE 1:* "Missing"', b'UID MOVE 2 "Other/Missing"'):
        st, text, lines = run(raw, command)
        assert (st, code(text)) == ("NO", "TRYCREATE"), (command, text)
        # A refused MOVE expunges nothing (RFC 6851 3.3).
        assert not [x for x in lines if b"EXPUNGE" in x], lines
        assert everything(dovecot, user, raw) == before, command
    _, lines = ok(watcher, b"NOOP")
    assert lines == [], lines
    _, lines = ok(raw, b'LIST "" "*Missing*"')
    assert lines == [], lines


# -- UID ranges without messages ----------------------------------------------

EMPTY_RANGES = [
    b"UID FETCH 99999:100000 (FLAGS)",
    b"UID STORE 99999:100000 +FLAGS (\\Seen)",
    b"UID STORE 99999:100000 FLAGS.SILENT (NewKeyword)",
    b'UID COPY 99999:100000 "Other"',
    b'UID MOVE 99999:100000 "Other"',
    b"UID EXPUNGE 99999:100000",
    b"UID SEARCH UID 99999:100000",
    # RFC 3501 9: * is the largest UID in use, so 99999:* is the last
    # message (6.4.8's note); reading it changes nothing either.
    b"UID FETCH 99999:* (UID FLAGS)",
]


def test_uid_ranges_without_messages_do_nothing(dovecot, oracle):
    answers = {}
    for inst in (dovecot, oracle):
        user = inst.new_user()
        raw = setup_mailbox(inst, user)
        ok(raw, b"STORE 1:* +FLAGS (\\Deleted)")
        before = everything(inst, user, raw)
        out = []
        for command in EMPTY_RANGES:
            st, text, lines = run(raw, command)
            out.append((command, st, strip_timing(text), lines))
            assert everything(inst, user, raw) == before, (inst.backend,
                                                            command)
        answers[inst.backend] = out
        raw.close()
    for mine, theirs in zip(answers[dovecot.backend],
                            answers[oracle.backend]):
        assert mine == theirs
    fetched = answers[dovecot.backend][-1][3]
    assert [x for x in fetched if x.startswith(b"* 4 FETCH")] and \
        len(fetched) == 1, fetched
    # Nothing was fetched, stored, copied or expunged (a new keyword's
    # name may be announced in FLAGS, as maildir does).
    for command, st, text, lines in answers[dovecot.backend][:-1]:
        assert st == "OK", (command, text)
        assert not [x for x in lines if re.match(
            rb"\* (\d+ (FETCH|EXPUNGE)|OK \[COPYUID)", x)], (command, lines)
        assert "COPYUID" not in text, (command, text)


# -- lock timeout -------------------------------------------------------------

# Writes refused while the lock is held.
LOCKED_WRITES = [
    b"STORE 1 +FLAGS (\\Seen)",
    b"UID STORE 1:4 FLAGS.SILENT (\\Answered NewKw)",
    b"EXPUNGE",
    b"UID EXPUNGE 3",
    b'COPY 1:2 "Other"',
    b'UID MOVE 1 "Other"',
    b"APPEND INBOX " + literal_plus(msg(30)),
    b'APPEND "Other" (\\Seen) ' + literal_plus(msg(31)),
    b'CREATE "NewFolder"',
    b'RENAME "Other" "Renamed"',
]


def test_lock_timeout_refuses_writes_and_changes_nothing(dovecot, user,
                                                         allow_log):
    """sqlbox_lock_timeout = 1s in this module; the test holds flock on
    mail.sqlite.lock like an operator's `flock` would (PLUGIN.md)."""
    raw = setup_mailbox(dovecot, user)
    ok(raw, b"UID STORE 3 +FLAGS (\\Deleted)")
    ok(raw, b"APPEND INBOX " + literal_plus(msg(5)))       # not \Recent yet
    watcher = dovecot.raw_imap(user)
    ok(watcher, b'SELECT "Other"')
    before = everything(dovecot, user, raw)
    with dovecot.hold_write_lock(user):
        for command in LOCKED_WRITES:
            st, text, lines = run(raw, command)
            # RFC 5530 3: INUSE, a temporary condition.
            assert (st, code(text)) == ("NO", "INUSE"), (command, st, text)
            assert not [x for x in lines
                        if b"EXPUNGE" in x or b"FETCH" in x], lines
            assert everything(dovecot, user, raw) == before, command
        # Reads never wait (DESIGN.md 4): SELECT (whose \Recent claim is
        # skipped), FETCH without \Seen changes, SEARCH, STATUS, LIST.
        reader = dovecot.raw_imap(user, tls="implicit")
        _, lines = ok(reader, b"SELECT INBOX")
        assert b"* 5 EXISTS\r\n" in lines and b"* 0 RECENT\r\n" in lines, \
            lines
        _, lines = ok(reader, b"UID FETCH 1:* (UID FLAGS BODY.PEEK[] "
                              b"RFC822.SIZE)")
        assert len(fetch_lines(lines)) == 5, lines
        _, lines = ok(reader, b"UID SEARCH UNSEEN")
        assert lines == [b"* SEARCH 1 3 4 5\r\n"], lines
        _, lines = ok(reader, b'STATUS "Other" (MESSAGES UNSEEN UIDNEXT)')
        assert lines == [b"* STATUS Other (MESSAGES 0 UIDNEXT 1 UNSEEN 0)"
                         b"\r\n"], lines
        ok(reader, b'LIST "" "*"')
        _, lines = ok(watcher, b"NOOP")
        assert lines == [], lines
        # A delivery waits as long, then gets a temporary failure.
        result = dovecot.lmtp_deliver(user, msg(40))
        assert result[user][0] == 451, result
        # FETCH BODY[] of an unseen message must set \Seen, a write: like
        # any FETCH failure, Dovecot answers BYE and disconnects
        # (imap_fetch_failure = disconnect-immediately), and \Seen is not
        # set.
        reader.send(b"F1 FETCH 1 BODY[]\r\n")
        lines = []
        try:
            while True:
                lines.append(reader.read_response())
        except (EOFError, OSError):
            pass
        assert [x for x in lines if x.startswith(b"* BYE FETCH failed")], \
            lines
        assert not [x for x in lines if x.startswith(b"F1 ")], lines
        assert everything(dovecot, user, raw) == before
    # The lock is free again: the same commands work, and SQL, the session
    # and a fresh session agree.
    _, lines = ok(raw, b"STORE 1 +FLAGS (\\Seen)")
    ok(raw, b"EXPUNGE")
    text, _ = ok(raw, b'UID COPY 1:2 "Other"')
    assert "[COPYUID" in text, text
    text, _ = ok(raw, b"APPEND INBOX " + literal_plus(msg(30)))
    assert "[APPENDUID" in text and text.split()[2] == "6]", text
    _, lines = ok(watcher, b"NOOP")
    assert b"* 2 EXISTS\r\n" in lines, lines
    assert dovecot.lmtp_deliver(user, msg(40))[user][0] == 250
    ok(raw, b"NOOP")
    view = imap_view(raw)
    assert sorted(view) == [1, 2, 4, 5, 6, 7]
    assert view[1] == {"\\Seen"}
    if dovecot.is_sqlbox:
        st = db_state(dovecot, user)
        assert check_database(st) == []
        assert sorted(st.folder("INBOX")) == sorted(view)
