# SPDX-License-Identifier: MIT
"""Changing mail with SQL by hand, exactly as PLUGIN.md ("Reading and
changing mail with SQL") tells an operator to (DESIGN.md 1.3).

The worked example is taken from PLUGIN.md's ```sql block and run as it
stands, through the documented command (rule 1, also read from the page),
so that the page and this test can't drift apart. A session that is
connected while the change is made sees it at its next NOOP (RFC 3501
6.1.2, 7.4.2); so does everything after a restart. An expunge by hand
following rule 4 (tombstone with the new MODSEQ, then delete) reaches a
selected session as EXPUNGE (RFC 3501 7.4.1)."""

import os
import re
import shlex
import subprocess

from harness import REPO, plugin_md_blocks, sqlbox_only
from invariants import check_database, db_state, fetch_lines, imap_view

MSG = (b"From: a@example.org\r\nSubject: by hand %d\r\n"
       b"Message-ID: <hand-%d@sqlbox.test>\r\n\r\nbody %d\r\n")

# Rule 4 for UID 2 of INBOX, written the way rules 2-4 describe it.
EXPUNGE_UID_2 = """BEGIN IMMEDIATE;
UPDATE mailboxes SET highestmodseq = (highestmodseq / 65536 + 1) * 65536
 WHERE name = 'INBOX';
INSERT INTO expunged(mailbox_id, uid, modseq, guid, expunged_at)
 SELECT mailbox_id, uid,
        (SELECT highestmodseq FROM mailboxes WHERE name = 'INBOX'), guid,
        CAST(strftime('%s', 'now') AS INTEGER)
   FROM messages
  WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = 'INBOX')
    AND uid = 2;
DELETE FROM messages
 WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = 'INBOX')
   AND uid = 2;
COMMIT;
"""


def documented_example():
    """PLUGIN.md's worked example (the ```sql block for UID 3)."""
    blocks = [b for b in plugin_md_blocks("sql") if "uid = 3" in b]
    assert len(blocks) == 1, "PLUGIN.md should have one worked example " \
        "for UID 3: %r" % blocks
    sql = blocks[0]
    # What the page says the example does; if the page changes, so must
    # the checks below.
    assert "uid = 3" in sql and "flags | 8" in sql and "'INBOX'" in sql, sql
    return sql


def documented_command(inst, user):
    """Rule 1's command line from PLUGIN.md, for this user's home."""
    text = (REPO / "PLUGIN.md").read_text()
    m = re.search(r"`(flock ~alice/\S+ sqlite3 -cmd '[^']*' ~alice/\S+)`",
                  text)
    assert m, "rule 1's command is not in PLUGIN.md any more"
    home = str(inst.user_dir(user))
    return [a.replace("~alice", home) for a in shlex.split(m.group(1))]


def ok(raw, command):
    st, text, lines = raw.command(command)
    assert st == "OK", "%r: %s %s" % (command, st, text)
    return text, lines


def fill(inst, user, n=4):
    raw = inst.raw_imap(user)
    for i in range(1, n + 1):
        st, text, _ = raw.command(b"APPEND INBOX (kw%d) {%d+}\r\n" % (
            i, len(MSG % (i, i, i))) + MSG % (i, i, i))
        assert st == "OK", text
    return raw


def test_documented_command_is_what_the_tests_run(dovecot, user):
    sqlbox_only(dovecot)
    fill(dovecot, user, 1)
    assert documented_command(dovecot, user) == \
        dovecot.sql_by_hand_argv(user)


def test_documented_example_is_seen_at_noop_and_after_restart(dovecot, user):
    sqlbox_only(dovecot)
    raw = fill(dovecot, user)
    ok(raw, b"SELECT INBOX")
    before = db_state(dovecot, user)
    out = dovecot.sql_by_hand(user, documented_example())
    assert "no_ckpt_on_close" in out and " on" in out, out
    after = db_state(dovecot, user)
    rows = after.folder("INBOX")
    assert rows[3]["flags"] == 8
    assert rows[3]["modseq"] == after.mailboxes["INBOX"]["highestmodseq"]
    assert rows[3]["modseq"] == \
        before.mailboxes["INBOX"]["highestmodseq"] + 65536
    for uid in (1, 2, 4):
        assert rows[uid] == before.folder("INBOX")[uid]
    # The triggers kept the counter (rule 5: never edit counters).
    assert after.mailboxes["INBOX"]["unseen"] == 3
    assert check_database(after) == []

    # RFC 3501 7.4.2: the connected session is told at its next command.
    _, lines = ok(raw, b"NOOP")
    fetched = fetch_lines(lines)
    assert list(fetched) == [3], lines
    assert set(fetched[3]["FLAGS"]) - {b"\\Recent"} == {b"\\Seen", b"kw3"}
    assert imap_view(raw) == {1: {"kw1"}, 2: {"kw2"}, 3: {"\\Seen", "kw3"},
                              4: {"kw4"}}
    other = dovecot.raw_imap(user)
    _, lines = ok(other, b"STATUS INBOX (MESSAGES UNSEEN)")
    assert lines == [b"* STATUS INBOX (MESSAGES 4 UNSEEN 3)\r\n"], lines
    # The session's own next change is not lost over the hand-made one.
    ok(raw, b"UID STORE 3 +FLAGS (\\Flagged)")
    assert db_state(dovecot, user).folder("INBOX")[3]["flags"] == 8 | 2
    dovecot.restart()
    raw = dovecot.raw_imap(user)
    assert imap_view(raw, "INBOX")[3] == {"\\Seen", "\\Flagged", "kw3"}


def test_expunge_by_hand_is_seen_as_expunge(dovecot, user):
    sqlbox_only(dovecot)
    raw = fill(dovecot, user)
    ok(raw, b"SELECT INBOX")
    guid = db_state(dovecot, user).folder("INBOX")[2]["guid"]
    dovecot.sql_by_hand(user, EXPUNGE_UID_2)
    st = db_state(dovecot, user)
    assert sorted(st.folder("INBOX")) == [1, 3, 4]
    tomb = st.expunged[("INBOX", 2)]
    assert tomb["guid"] == guid
    assert tomb["modseq"] == st.mailboxes["INBOX"]["highestmodseq"]
    assert st.mailboxes["INBOX"]["messages"] == 3
    assert check_database(st) == []
    _, lines = ok(raw, b"NOOP")
    # (Dovecot follows an EXPUNGE with the new RECENT count.)
    assert [x for x in lines if not x.endswith(b" RECENT\r\n")] == \
        [b"* 2 EXPUNGE\r\n"], lines
    assert sorted(imap_view(raw)) == [1, 3, 4]
    # UIDNEXT is untouched (rule 5): the next message gets UID 5.
    text, _ = ok(raw, b"APPEND INBOX {%d+}\r\n" % len(MSG % (5, 5, 5)) +
                 MSG % (5, 5, 5))
    assert "[APPENDUID " in text and text.split()[2] == "5]", text
    dovecot.restart()
    raw = dovecot.raw_imap(user)
    assert sorted(imap_view(raw, "INBOX")) == [1, 3, 4, 5]


def test_documented_read_query_needs_no_lock(dovecot, user):
    """PLUGIN.md: "Reading needs nothing else and never blocks Dovecot":
    the page's read-only query works while the write lock is held."""
    sqlbox_only(dovecot)
    fill(dovecot, user, 2)
    blocks = [b for b in plugin_md_blocks("sh")
              if b.startswith("sqlite3 -readonly")]
    assert len(blocks) == 1, blocks
    argv = shlex.split(blocks[0].replace("\\\n", " "))
    assert argv[:2] == ["sqlite3", "-readonly"], argv
    argv = [a.replace("~alice", str(dovecot.user_dir(user))) for a in argv]
    uid, gid = dovecot._mail_ids()
    if os.getuid() == 0:
        argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                "--clear-groups"] + argv
    with dovecot.hold_write_lock(user):
        p = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    assert (p.returncode, p.stderr) == (0, ""), p
    assert p.stdout.split() == ["1|0|kw1", "2|0|kw2"], p.stdout
