# SPDX-License-Identifier: MIT
"""IMAP METADATA (RFC 5464) over sqlbox: mailbox attributes kept in the
`attributes` table (mailbox_id, type 0 private / 1 shared, key, value),
never in Dovecot's mail_attribute_dict (DESIGN.md 7, research note 6.5).

Checked through a raw IMAP client: SETMETADATA/GETMETADATA of /private and
/shared entries on a folder and on the server (""; Dovecot keeps server
entries on INBOX under vendor/vendor.dovecot/pvt/server/), the DEPTH and
MAXSIZE options (RFC 5464 4.2), NIL to remove (4.3), values sent as
literals, literal8 and 8-bit bytes; that they survive a restart, follow a
RENAME, go with a DELETE, show in `doveadm mailbox metadata`, and travel
with dsync to maildir (its dict given with -o) and to another sqlbox user;
that a SETMETADATA refused for one entry changes nothing (RFC 5464 4.3:
"the server MUST NOT change any of the annotations"). Where Dovecot
itself decides an answer, the maildir `oracle` (a dict-backed Dovecot) is
asked the same and must answer the same.
"""

import re
import time

import dsyncutil as du
from harness import Literal, literal_plus, parse_imap, quote, sqlbox_only

PRIVATE, SHARED = 0, 1
SERVER_PREFIX = "vendor/vendor.dovecot/pvt/server/"



def session(inst, user):
    return inst.raw_imap(user)


def ok(r, *parts):
    st, text, untagged = r.command(*parts)
    assert st == "OK", (parts[0][:120], st, text, untagged)
    return untagged


def metadata(untagged):
    """{(mailbox, entry): value} of the METADATA responses (RFC 5464 4.4)."""
    out = {}
    for line in untagged:
        if not line.startswith(b"* METADATA "):
            continue
        vals = parse_imap(line[len(b"* METADATA "):])
        box = vals[0]
        box = box.decode() if isinstance(box, bytes) else str(box)
        items = vals[1]
        for i in range(0, len(items), 2):
            out[(box, items[i].decode())] = items[i + 1]
    return out


def get(r, box, *entries, options=b""):
    st, text, untagged = r.command(
        b"GETMETADATA " + (options + b" " if options else b"") +
        quote(box) + b" (" + " ".join(entries).encode() + b")")
    return st, text, metadata(untagged)


def attr_rows(inst, user):
    """{(mailbox name, type, key): value bytes} from SQL."""
    rows = inst.sql(user, "SELECT m.name, a.type, a.key, hex(a.value) "
                          "FROM attributes a JOIN mailboxes m "
                          "ON m.id = a.mailbox_id")
    return {(b, t, k): bytes.fromhex(v) if v is not None else None
            for b, t, k, v in rows}


def test_folder_private_and_shared(dovecot, user):
    r = session(dovecot, user)
    ok(r, b"CREATE Projects")
    ok(r, b'SETMETADATA Projects (/private/comment "my note" '
          b'/shared/comment "team note" /shared/vendor/example/x "1")')
    st, _, got = get(r, "Projects", "/private/comment", "/shared/comment",
                     "/shared/vendor/example/x", "/private/nothing")
    assert st == "OK"
    assert got == {("Projects", "/private/comment"): b"my note",
                   ("Projects", "/shared/comment"): b"team note",
                   ("Projects", "/shared/vendor/example/x"): b"1",
                   ("Projects", "/private/nothing"): None}
    if dovecot.is_sqlbox:
        assert attr_rows(dovecot, user) == {
            ("Projects", PRIVATE, "comment"): b"my note",
            ("Projects", SHARED, "comment"): b"team note",
            ("Projects", SHARED, "vendor/example/x"): b"1"}
        # the dict is not used
        assert not (dovecot.user_dir(user) / "dovecot-attributes").exists()


def test_server_entries(dovecot, user):
    """Server metadata (mailbox ""): Dovecot stores it as INBOX attributes
    under vendor/vendor.dovecot/pvt/server/. /shared/comment and
    /shared/admin of the server are the administrator's (set in the
    config), so SETMETADATA refuses them, as on maildir."""
    r = session(dovecot, user)
    ok(r, b'SETMETADATA "" (/private/comment "server note" '
          b'/shared/vendor/example/motd "hello all")')
    st, _, got = get(r, "", "/private/comment", "/shared/vendor/example/motd",
                     "/shared/comment")
    assert st == "OK"
    assert got == {("", "/private/comment"): b"server note",
                   ("", "/shared/vendor/example/motd"): b"hello all",
                   ("", "/shared/comment"): None}
    # not a folder attribute of INBOX for clients
    st, _, got = get(r, "INBOX", "/private/comment")
    assert got == {("INBOX", "/private/comment"): None}
    st, text, _ = r.command(b'SETMETADATA "" (/shared/comment "x")')
    assert st == "NO" and "[CANNOT]" in text, text
    if dovecot.is_sqlbox:
        assert attr_rows(dovecot, user) == {
            ("INBOX", PRIVATE, SERVER_PREFIX + "comment"): b"server note",
            ("INBOX", SHARED, SERVER_PREFIX + "vendor/example/motd"):
                b"hello all"}


def test_nil_removes(dovecot, user):
    r = session(dovecot, user)
    ok(r, b"CREATE Box")
    ok(r, b'SETMETADATA Box (/private/a "1" /private/b "2" /shared/a "3")')
    ok(r, b"SETMETADATA Box (/private/a NIL /shared/a NIL)")
    _, _, got = get(r, "Box", "/private/a", "/private/b", "/shared/a")
    assert got == {("Box", "/private/a"): None, ("Box", "/private/b"): b"2",
                   ("Box", "/shared/a"): None}
    if dovecot.is_sqlbox:
        assert attr_rows(dovecot, user) == {("Box", PRIVATE, "b"): b"2"}
    # removing what isn't there is fine too (RFC 5464 4.3)
    ok(r, b"SETMETADATA Box (/private/never NIL)")


def test_literals_and_8bit(dovecot, user):
    """Values as synchronizing literals, LITERAL+ and literal8 (RFC 3516
    ~{n}), with CRLF, 8-bit and non-UTF-8 bytes, come back byte for byte
    and are stored as such."""
    r = session(dovecot, user)
    ok(r, b"CREATE Bin")
    v1 = "Zeile 1\r\nGrüße – 日本\r\n".encode()
    v2 = b"\xff\xfe raw latin1 caf\xe9 \x01\x7f"
    v3 = b"x" * 70000
    ok(r, b"SETMETADATA Bin (/private/v1 ", Literal(v1), b")")
    ok(r, b"SETMETADATA Bin (/private/v2 ~{%d}\r\n" % len(v2) + v2 + b")")
    ok(r, b"SETMETADATA Bin (/shared/v3 {%d+}\r\n" % len(v3) + v3 + b")")
    _, _, got = get(r, "Bin", "/private/v1", "/private/v2", "/shared/v3")
    assert got == {("Bin", "/private/v1"): v1, ("Bin", "/private/v2"): v2,
                   ("Bin", "/shared/v3"): v3}
    if dovecot.is_sqlbox:
        rows = attr_rows(dovecot, user)
        assert rows[("Bin", PRIVATE, "v1")] == v1
        assert rows[("Bin", PRIVATE, "v2")] == v2
        assert rows[("Bin", SHARED, "v3")] == v3


def test_nul_refused_like_dovecot(dovecot, oracle, user):
    """A value with NUL is refused by Dovecot's own METADATA code ("has
    NULs"), whatever the backend: the same answer as maildir, and nothing
    stored."""
    answers = []
    for inst in (dovecot, oracle):
        u = user if inst is dovecot else oracle.new_user()
        r = session(inst, u)
        ok(r, b"CREATE Nul")
        st, text, _ = r.command(b"SETMETADATA Nul (/private/n ~{3}\r\n"
                                b"a\x00b)")
        answers.append((st, re.sub(r" \(.*secs\)\.?", "", text)))
        _, _, got = get(r, "Nul", "/private/n")
        assert got == {("Nul", "/private/n"): None}
    assert answers[0] == answers[1]
    assert answers[0][0] == "NO"
    if dovecot.is_sqlbox:
        assert attr_rows(dovecot, user) == {}


def test_depth_and_maxsize(dovecot, user):
    """RFC 5464 4.2.1 MAXSIZE: longer values are left out and
    [METADATA LONGENTRIES n] gives the largest left-out size; 4.2.2 DEPTH
    0, 1 and infinity below an entry."""
    r = session(dovecot, user)
    ok(r, b"CREATE Tree")
    ok(r, b'SETMETADATA Tree (/shared/a "1" /shared/a/b "22" '
          b'/shared/a/b/c "333" /shared/a/d "4444" /shared/z "z" '
          b'/private/p "pp")')
    st, _, got = get(r, "Tree", "/shared/a", options=b"(DEPTH 0)")
    assert (st, got) == ("OK", {("Tree", "/shared/a"): b"1"})
    st, _, got = get(r, "Tree", "/shared/a", options=b"(DEPTH 1)")
    assert st == "OK"
    assert got == {("Tree", "/shared/a"): b"1", ("Tree", "/shared/a/b"): b"22",
                   ("Tree", "/shared/a/d"): b"4444"}
    st, _, got = get(r, "Tree", "/shared/a", options=b"(DEPTH infinity)")
    assert st == "OK"
    assert set(got) == {("Tree", "/shared/a"), ("Tree", "/shared/a/b"),
                        ("Tree", "/shared/a/b/c"), ("Tree", "/shared/a/d")}
    st, text, got = get(r, "Tree", "/shared/a/b", "/shared/a/d", "/shared/z",
                        options=b"(MAXSIZE 2)")
    assert st == "OK" and "[METADATA LONGENTRIES 4]" in text, text
    assert got == {("Tree", "/shared/a/b"): b"22", ("Tree", "/shared/z"): b"z"}
    st, text, got = get(r, "Tree", "/shared/a", options=b"(MAXSIZE 3 DEPTH 1)")
    assert st == "OK" and "[METADATA LONGENTRIES 4]" in text, text
    assert got == {("Tree", "/shared/a"): b"1", ("Tree", "/shared/a/b"): b"22"}


def test_depth_below_the_type_root(dovecot, oracle, user):
    """GETMETADATA of "/shared" or "/private" itself, or with DEPTH below
    it, lists what the folder has (RFC 5464 4.2.2), as on maildir.
    lib-imap-storage looks up the entry itself, i.e. the empty attribute
    key, which must answer "not found" (maildir: `* METADATA Tree
    (/shared NIL)` and OK), not an error."""
    answers = []
    for inst in (dovecot, oracle):
        u = user if inst is dovecot else oracle.new_user()
        r = session(inst, u)
        ok(r, b"CREATE Tree")
        ok(r, b'SETMETADATA Tree (/shared/a "1" /private/p "2")')
        transcript = []
        for cmd in (b"GETMETADATA Tree (/shared)",
                    b"GETMETADATA (DEPTH 1) Tree (/private)",
                    b"GETMETADATA (DEPTH infinity) Tree (/shared /private)",
                    b"GETMETADATA (DEPTH infinity) Empty (/shared)"):
            if cmd.endswith(b"Empty (/shared)"):
                ok(r, b"CREATE Empty")
            st, text, untagged = r.command(cmd)
            transcript.append((cmd, st, re.sub(r" \(.*secs\)\.?", "", text),
                               untagged))
        answers.append(transcript)
    assert answers[0] == answers[1]
    assert all(st == "OK" for _, st, _, _ in answers[0])


def test_failed_transaction_changes_nothing(dovecot, oracle, user):
    """RFC 5464 4.3: a SETMETADATA that fails for one entry sets none.
    Dovecot refuses /private/specialuse (internal, read-only) and the
    server's /shared/comment at commit time, after the valid entries
    before them were handed to the storage."""
    r = session(dovecot, user)
    ok(r, b"CREATE Keep")
    ok(r, b'SETMETADATA Keep (/private/old "kept")')
    before = attr_rows(dovecot, user) if dovecot.is_sqlbox else None
    st, text, _ = r.command(b'SETMETADATA Keep (/private/new "x" '
                            b'/private/old "changed" '
                            b'/private/specialuse "\\\\Junk")')
    assert st == "NO" and "[CANNOT]" in text, text
    st, text, _ = r.command(b'SETMETADATA "" (/private/comment "x" '
                            b'/shared/comment "y")')
    assert st == "NO" and "[CANNOT]" in text, text
    _, _, got = get(r, "Keep", "/private/new", "/private/old")
    assert got == {("Keep", "/private/new"): None,
                   ("Keep", "/private/old"): b"kept"}
    _, _, got = get(r, "", "/private/comment")
    assert got == {("", "/private/comment"): None}
    if dovecot.is_sqlbox:
        assert attr_rows(dovecot, user) == before
    # and the session goes on working
    ok(r, b'SETMETADATA Keep (/private/new "now")')
    _, _, got = get(r, "Keep", "/private/new")
    assert got == {("Keep", "/private/new"): b"now"}


def test_survives_restart(dovecot, user):
    r = session(dovecot, user)
    ok(r, b"CREATE Durable")
    ok(r, b'SETMETADATA Durable (/private/x "1" /shared/y "2")')
    ok(r, b'SETMETADATA "" (/private/z "3")')
    dovecot.restart()
    r = session(dovecot, user)
    _, _, got = get(r, "Durable", "/private/x", "/shared/y")
    assert got == {("Durable", "/private/x"): b"1",
                   ("Durable", "/shared/y"): b"2"}
    _, _, got = get(r, "", "/private/z")
    assert got == {("", "/private/z"): b"3"}


def test_rename_carries_and_delete_drops(dovecot, user):
    r = session(dovecot, user)
    ok(r, b"CREATE Old")
    ok(r, b"CREATE Old/Child")
    ok(r, b'SETMETADATA Old (/private/x "parent" /shared/s "sp")')
    ok(r, b'SETMETADATA Old/Child (/private/x "child")')
    if dovecot.is_sqlbox:
        ids = dict(dovecot.sql(user, "SELECT name, id FROM mailboxes"))
    ok(r, b"RENAME Old New")
    _, _, got = get(r, "New", "/private/x", "/shared/s")
    assert got == {("New", "/private/x"): b"parent",
                   ("New", "/shared/s"): b"sp"}
    _, _, got = get(r, "New/Child", "/private/x")
    assert got == {("New/Child", "/private/x"): b"child"}
    ok(r, b"CREATE Old")          # a new folder of the old name: nothing
    _, _, got = get(r, "Old", "/private/x", "/shared/s")
    assert got == {("Old", "/private/x"): None, ("Old", "/shared/s"): None}
    if dovecot.is_sqlbox:
        rows = attr_rows(dovecot, user)
        assert rows == {("New", PRIVATE, "x"): b"parent",
                        ("New", SHARED, "s"): b"sp",
                        ("New/Child", PRIVATE, "x"): b"child"}
        now = dict(dovecot.sql(user, "SELECT name, id FROM mailboxes"))
        assert now["New"] == ids["Old"]
    ok(r, b"DELETE New/Child")
    ok(r, b"DELETE New")
    ok(r, b"CREATE New")
    _, _, got = get(r, "New", "/private/x")
    assert got == {("New", "/private/x"): None}
    if dovecot.is_sqlbox:
        assert attr_rows(dovecot, user) == {}
        assert dovecot.sql(user, "SELECT count(*) FROM attributes") == [[0]]


def test_doveadm_sees_imap_values(dovecot, user):
    r = session(dovecot, user)
    ok(r, b"CREATE Seen")
    ok(r, b'SETMETADATA Seen (/private/comment "via imap" /shared/k "s")')
    ok(r, b'SETMETADATA "" (/private/motd "server")')
    assert du.metadata_get(dovecot, user, "Seen", "/private/comment") == \
        "via imap"
    assert du.metadata_get(dovecot, user, "Seen", "/shared/k") == "s"
    assert du.metadata_get(dovecot, user, "", "/private/motd",
                           server=True) == "server"
    keys = du.run(dovecot, "mailbox", "metadata", "list", "-u", user, "-p",
                  "Seen").stdout.decode().split()
    assert {"/private/comment", "/shared/k"} <= set(keys)


# -- dsync ------------------------------------------------------------------

def fill_attributes(dovecot, user):
    r = session(dovecot, user)
    ok(r, b"CREATE Mail")
    ok(r, b"CREATE Empty")
    ok(r, b"APPEND Mail " + literal_plus(b"Subject: x\r\n\r\nbody\r\n"))
    ok(r, b'SETMETADATA Mail (/private/comment "mail p" /shared/comment '
          b'"mail s" /shared/vendor/example/bin ~{4}\r\n\xff\x01\r\xfe)')
    ok(r, b'SETMETADATA Empty (/private/comment "empty p")')
    ok(r, b'SETMETADATA "" (/private/comment "server p")')
    r.close()
    return {("Mail", "/private/comment"): "mail p",
            ("Mail", "/shared/comment"): "mail s",
            ("Empty", "/private/comment"): "empty p"}


def check_values(inst, user, want, location=None, options=()):
    for (box, key), value in want.items():
        got = du.metadata_get(inst, user, box, key, location=location,
                              options=options)
        assert got == value, (box, key, got, value)


def test_dsync_to_maildir_carries_attributes(dovecot, user):
    """Backup to maildir, whose attributes live in the dict given with
    -o (sqlbox ignores the setting), then back into a new sqlbox user."""
    sqlbox_only(dovecot)
    want = fill_attributes(dovecot, user)
    home = dovecot.user_dir(user)
    loc = du.maildir_location(home / "export")
    dict_opt = ("mail_attribute_dict=file:%s" % (home / "export-attrs"),)
    du.run(dovecot, "backup", "-u", user, loc, options=dict_opt)
    check_values(dovecot, user, want, location=loc, options=dict_opt)
    assert du.metadata_get(dovecot, user, "", "/private/comment",
                           location=loc, options=dict_opt,
                           server=True) == "server p"
    assert (home / "export-attrs").exists()
    # and back: maildir (pipe form) into another sqlbox user
    other = dovecot.new_user()
    du.run(dovecot, "backup", "-R", "-u", other, loc, options=dict_opt)
    check_values(dovecot, other, want)
    rows = attr_rows(dovecot, other)
    assert rows == attr_rows(dovecot, user)


def test_dsync_sqlbox_to_sqlbox_carries_attributes(dovecot, user):
    """sqlbox to sqlbox (another user, the stream protocol), as
    replication between two sqlbox hosts would run (DESIGN.md 8),
    including the attributes of a folder without messages (Empty, and the
    server entries on an empty INBOX): dsync skips a mailbox whose
    UIDVALIDITY, UIDNEXT, message count and HIGHESTMODSEQ are the same on
    both sides, so an attribute change must raise HIGHESTMODSEQ."""
    sqlbox_only(dovecot)
    want = fill_attributes(dovecot, user)
    other = dovecot.new_user()
    du.run(dovecot, "backup", "-R", "-u", other,
           *du.dsync_server_cmd(dovecot, user))
    assert attr_rows(dovecot, other) == attr_rows(dovecot, user)
    check_values(dovecot, other, want)


def test_dsync_carries_a_later_attribute_change(dovecot, user):
    """An attribute changed after a sync, with no mail change, reaches the
    other side at the next sync. The maildir control shows Dovecot's own
    behaviour: a second backup carries the new value."""
    sqlbox_only(dovecot)
    fill_attributes(dovecot, user)
    home = dovecot.user_dir(user)
    # control: maildir to maildir, both on this instance through -o
    a = du.maildir_location(home / "ctl-a")
    b = du.maildir_location(home / "ctl-b")
    a_opts = ("mail_attribute_dict=file:%s" % (home / "ctl-a-attrs"),)
    b_opts = ("mail_attribute_dict=file:%s" % (home / "ctl-b-attrs"),)
    du.run(dovecot, "backup", "-u", user, a, options=a_opts)   # seed a
    server_a = du.dsync_server_cmd(dovecot, user, location=a, options=a_opts)
    du.run(dovecot, "backup", "-R", "-u", user, *server_a, location=b,
           options=b_opts)
    other = dovecot.new_user()
    du.run(dovecot, "backup", "-R", "-u", other,
           *du.dsync_server_cmd(dovecot, user))
    time.sleep(1.1)     # dsync orders attribute changes by their second
    du.run(dovecot, "mailbox", "metadata", "set", "-u", user, "Mail",
           "/shared/comment", "changed later", location=a, options=a_opts)
    du.run(dovecot, "mailbox", "metadata", "set", "-u", user, "Mail",
           "/shared/comment", "changed later")
    du.run(dovecot, "backup", "-R", "-u", user, *server_a, location=b,
           options=b_opts)
    assert du.metadata_get(dovecot, user, "Mail", "/shared/comment",
                           location=b, options=b_opts) == "changed later"
    du.run(dovecot, "backup", "-R", "-u", other,
           *du.dsync_server_cmd(dovecot, user))
    assert du.metadata_get(dovecot, other, "Mail", "/shared/comment") == \
        "changed later"
