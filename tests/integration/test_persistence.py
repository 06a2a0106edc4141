# SPDX-License-Identifier: MIT
"""The database is the single source of truth (DESIGN.md 1.1, 1.2).

A user's mail (folders with \\Noselect parents, subscriptions, UIDs with
gaps, UIDNEXT past expunged messages, UIDVALIDITY, flags, keywords,
INTERNALDATEs, bodies) must look the same after a restart of Dovecot and
after deleting every file of the user except mail.sqlite (and its -wal and
-shm): Dovecot's index files are only a cache. The sqlite3 command-line
tool, read-only, sees the same folders and messages."""

import json
import os
import shutil

import corpus
from harness import (append, check, internaldate, list_mailboxes, mbox,
                     parse_fetch, sqlbox_only, status)

FOLDERS = ["Work/Projects/2024", "Work/Reports", "Privat", "Ünïcödé",
           "Nest/a", "it's \"quoted\""]
SUBSCRIBE = ["Work/Reports", "Ünïcödé", "Privat", "Junk",
             "Work/Projects/2024"]
UNSUBSCRIBE = ["Privat"]
DB_FILES = ("mail.sqlite", "mail.sqlite-wal", "mail.sqlite-shm")
FLAG_BITS = {"\\Answered": 1, "\\Flagged": 2, "\\Deleted": 4,
             "\\Seen": 8, "\\Draft": 16}


def populate(inst, user):
    """Builds a mailbox state with every kind of thing that must persist.
    Returns the UIDNEXT of INBOX, whose last message was expunged."""
    c = inst.imap(user)
    for name in FOLDERS:
        check(c.create(mbox(name)), "CREATE " + name)
    check(c.delete(mbox("Nest/a")), "DELETE")        # leaves Nest \Noselect
    for name in SUBSCRIBE:
        check(c.subscribe(mbox(name)), "SUBSCRIBE")
    for name in UNSUBSCRIBE:
        check(c.unsubscribe(mbox(name)), "UNSUBSCRIBE")
    names = ["plain-short", "bare-lf", "nested", "utf8-raw-headers",
             "no-final-newline", "attach-100k-28", "headers-only-noblank"]
    raw = inst.raw_imap(user)
    for i, name in enumerate(names):
        flags = [["\\Seen"], ["\\Flagged", "$Forwarded"], [],
                 ["\\Answered", "Project-X", "$Label1"], ["\\Draft"],
                 ["\\Seen", "\\Flagged"], ["NonJunk"]][i]
        date = internaldate(2022, 1 + i, 10 + i, 8, 30, i, [0, 120, -300,
                                                             330, 0, 60,
                                                             -60][i])
        cmd = (b"APPEND INBOX (" + " ".join(flags).encode() + b") " +
               date.encode() + b" {%d+}\r\n" % len(corpus.by_name(name)) +
               corpus.by_name(name))
        st, text, _ = raw.command(cmd)
        assert st == "OK", text
    for name in ("alternative", "quoted-printable", "dot-lines"):
        append(c, "Work/Reports", corpus.by_name(name), "(\\Seen)")
    for name in ("rfc2047-b", "addr-groups"):
        append(c, "Ünïcödé", corpus.by_name(name), "($Important)")
    append(c, "it's \"quoted\"", corpus.by_name("plain-medium"))
    check(c.select("INBOX"), "SELECT")
    check(c.uid("STORE", "2", "+FLAGS", "(\\Seen Custom-Kw)"), "STORE")
    check(c.uid("STORE", "3", "+FLAGS", "(\\Deleted)"), "STORE")
    check(c.uid("STORE", "7", "+FLAGS", "(\\Deleted)"), "STORE")
    check(c.expunge(), "EXPUNGE")     # UIDs 3 and 7 gone: a gap and the end
    check(c.uid("STORE", "4", "-FLAGS", "(Project-X)"), "STORE")
    c.close()
    check(c.select(mbox("Work/Reports")), "SELECT")
    check(c.store("1:*", "+FLAGS", "(\\Deleted)"), "STORE")
    check(c.expunge(), "EXPUNGE")     # empty, UIDNEXT 4
    c.close()
    c.logout()
    return 8


def snapshot(inst, user, tls="starttls"):
    """Everything a client can see of the user's mail."""
    c = inst.imap(user, tls=tls)
    snap = {"list": list_mailboxes(c),
            "lsub": list_mailboxes(c, command="LSUB"),
            "status": {}, "mail": {}, "keywords": {}}
    for name, flags in snap["list"].items():
        if "\\noselect" in flags:
            continue
        snap["status"][name] = status(
            c, name, "MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE")
        if snap["status"][name]["MESSAGES"] == 0:
            continue
        check(c.select(mbox(name), readonly=True), "EXAMINE")
        perm = [p for p in c.untagged_responses.get("OK", [])
                if b"PERMANENTFLAGS" in p]
        snap["keywords"][name] = sorted(perm[0].split(b"(")[1].split(b")")[0]
                                        .split()) if perm else None
        typ, data = c.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE "
                                          "RFC822.SIZE BODY.PEEK[])")
        msgs = {}
        for item in parse_fetch(data).values():
            msgs[item["UID"]] = (
                sorted(f.decode() for f in item["FLAGS"]
                       if f != b"\\Recent"),
                item["INTERNALDATE"], item["RFC822.SIZE"], item["BODY[]"])
        snap["mail"][name] = msgs
        c.close()
    c.logout()
    return snap


def check_snapshot(before, after):
    for key in ("list", "lsub", "status", "keywords"):
        assert after[key] == before[key], key
    assert set(after["mail"]) == set(before["mail"])
    for name in before["mail"]:
        assert after["mail"][name] == before["mail"][name], name


def test_restart_keeps_everything(dovecot, user):
    uidnext = populate(dovecot, user)
    before = snapshot(dovecot, user)
    assert before["status"]["INBOX"]["UIDNEXT"] == uidnext
    assert sorted(before["mail"]["INBOX"]) == [1, 2, 4, 5, 6]
    assert before["status"]["Work/Reports"]["UIDNEXT"] == 4
    assert before["list"]["Nest"] == {"\\noselect", "\\hasnochildren"}
    assert "\\noselect" in before["list"]["Work/Projects"]
    dovecot.restart()
    check_snapshot(before, snapshot(dovecot, user, tls="implicit"))


def wipe_all_but_database(home):
    """Deletes every file and directory under home except the database
    files in home/sqlbox; returns what was deleted."""
    keep = {os.path.join(home, "sqlbox", f) for f in DB_FILES}
    deleted = []
    for dirpath, dirnames, filenames in os.walk(home, topdown=False):
        for f in filenames:
            path = os.path.join(dirpath, f)
            if path not in keep:
                os.unlink(path)
                deleted.append(path)
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if path != os.path.join(home, "sqlbox"):
                if os.path.islink(path):
                    os.unlink(path)
                else:
                    shutil.rmtree(path)
                deleted.append(path + "/")
    return deleted


def test_database_alone_is_enough(dovecot, user):
    sqlbox_only(dovecot)
    uidnext = populate(dovecot, user)
    before = snapshot(dovecot, user)
    dovecot.stop()
    home = str(dovecot.user_dir(user))
    assert os.path.exists(os.path.join(home, "sqlbox", "mail.sqlite"))
    deleted = wipe_all_but_database(home)
    left = sorted(os.listdir(os.path.join(home, "sqlbox")))
    assert set(left) <= set(DB_FILES), left
    dovecot.start()
    after = snapshot(dovecot, user, tls="implicit")
    check_snapshot(before, after)
    # RFC 3501 2.3.1.1: UIDs are never reused, even for an expunged last
    # message and with the index gone.
    c = dovecot.imap(user)
    _, uid = append(c, "INBOX", corpus.by_name("plain-short"))
    assert uid == uidnext, (uid, deleted)
    _, uid = append(c, "Work/Reports", corpus.by_name("plain-short"))
    assert uid == 4


def test_sqlite3_cli_sees_folders_and_messages(dovecot, user):
    sqlbox_only(dovecot)
    populate(dovecot, user)
    snap = snapshot(dovecot, user)
    out = dovecot.sqlite3_cli(user, "SELECT name FROM mailboxes", "-json")
    names = {row["name"] for row in json.loads(out or "[]")}
    for name in ["Work/Projects/2024", "Work/Reports", "Privat", "Ünïcödé",
                 "it's \"quoted\"", "INBOX", "Work", "Work/Projects",
                 "Nest"]:
        assert name in names, (name, names)
    assert "Nest/a" not in names
    out = dovecot.sqlite3_cli(
        user, "SELECT b.name AS box, m.uid, m.flags, m.keywords "
              "FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id "
              "ORDER BY b.name, m.uid", "-json")
    rows = json.loads(out or "[]")
    got = {}
    for r in rows:
        got.setdefault(r["box"], {})[r["uid"]] = (
            r["flags"], set((r["keywords"] or "").split()))
    want = {}
    for box, msgs in snap["mail"].items():
        for uid, (flags, _, _, _) in msgs.items():
            bits = sum(FLAG_BITS.get(f, 0) for f in flags)
            kws = {f for f in flags if not f.startswith("\\")}
            want.setdefault(box, {})[uid] = (bits, kws)
    assert got == want
    # The mailboxes table is what STATUS answers from.
    out = dovecot.sqlite3_cli(
        user, "SELECT name, uidvalidity, uidnext FROM mailboxes "
              "WHERE noselect = 0", "-json")
    for r in json.loads(out or "[]"):
        if r["name"] in snap["status"]:
            st = snap["status"][r["name"]]
            assert (r["uidvalidity"], r["uidnext"]) == (
                st["UIDVALIDITY"], st["UIDNEXT"]), r
