# SPDX-License-Identifier: MIT
"""Folders over IMAP: LIST/LSUB, hierarchy, \\Noselect parents, SPECIAL-USE,
CREATE/DELETE/RENAME, subscriptions and names that must round-trip exactly.
One Dovecot for the module, a fresh user per test."""

import pytest

from harness import (append, check, imap_cmd, list_mailboxes, mbox,
                     mutf7_decode, mutf7_encode, parse_list, sqlbox_only,
                     status)

MSG = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: folder test\r\n"
       b"Message-ID: <f@sqlbox.test>\r\n\r\nbody\r\n")

AUTO = {"INBOX": None, "Drafts": "\\drafts", "Sent": "\\sent",
        "Trash": "\\trash", "Junk": "\\junk", "Archive": "\\archive"}


def create(c, name):
    check(c.create(mbox(name)), "CREATE %s" % name)


def selectable(c, name):
    typ, _ = c.select(mbox(name), readonly=True)
    if typ == "OK":
        c.close()
    return typ == "OK"


class TestList:
    def test_inbox_and_auto_mailboxes_exist_for_a_new_user(self, dovecot,
                                                            user):
        c = dovecot.imap(user)
        boxes = list_mailboxes(c)
        assert set(boxes) == set(AUTO)
        # RFC 3501 6.3.1: INBOX can always be selected.
        typ, data = c.select("INBOX")
        assert typ == "OK" and data == [b"0"]
        st = status(c, "INBOX")
        assert st["MESSAGES"] == 0 and st["UIDNEXT"] == 1
        assert st["UIDVALIDITY"] > 0

    def test_special_use_return_option(self, dovecot, user):
        # RFC 6154 2 and 3: RETURN (SPECIAL-USE) adds the attributes; the
        # SPECIAL-USE selection option lists only special-use mailboxes.
        c = dovecot.imap(user)
        boxes = list_mailboxes(c, return_opts="SPECIAL-USE")
        for name, flag in AUTO.items():
            if flag:
                assert flag in boxes[name], (name, boxes[name])
        assert not {"\\sent", "\\drafts"} & boxes["INBOX"]
        only = list_mailboxes(c, select_opts="SPECIAL-USE")
        assert set(only) == {n for n, f in AUTO.items() if f}
        plain = list_mailboxes(c)
        assert "\\trash" in plain["Trash"]

    def test_list_empty_pattern_gives_the_separator(self, dovecot, user):
        # RFC 3501 6.3.8: LIST "" "" returns the hierarchy delimiter.
        c = dovecot.imap(user)
        data = check(imap_cmd(c, "LIST", '""', '""'), "LIST")
        assert parse_list(data) == [({"\\noselect"}, "/", "")]

    def test_inbox_is_case_insensitive(self, dovecot, user):
        # RFC 3501 5.1: INBOX is case-insensitive.
        c = dovecot.imap(user)
        assert set(list_mailboxes(c, "inbox")) == {"INBOX"}
        assert c.select("iNbOx")[0] == "OK"


class TestHierarchy:
    def test_create_makes_noselect_parents(self, dovecot, user):
        # RFC 3501 6.3.3: superior names needed for CREATE are created.
        c = dovecot.imap(user)
        create(c, "a/b/c")
        boxes = list_mailboxes(c, "a*")
        assert boxes == {
            "a": {"\\noselect", "\\haschildren"},
            "a/b": {"\\noselect", "\\haschildren"},
            "a/b/c": {"\\hasnochildren"},
        }
        assert not selectable(c, "a")
        assert not selectable(c, "a/b")
        assert selectable(c, "a/b/c")
        assert list_mailboxes(c, "%", ref="a/") == {
            "a/b": {"\\noselect", "\\haschildren"}}
        assert set(list_mailboxes(c, "a/%")) == {"a/b"}
        assert set(list_mailboxes(c, "%")) == set(AUTO) | {"a"}

    def test_noselect_parents_survive_delete_and_restart(self, dovecot,
                                                         user):
        c = dovecot.imap(user)
        create(c, "a/b/c")
        check(c.delete(mbox("a/b/c")), "DELETE a/b/c")
        expect = {"a": {"\\noselect", "\\haschildren"},
                  "a/b": {"\\noselect", "\\hasnochildren"}}
        assert list_mailboxes(c, "a*") == expect
        c.logout()
        dovecot.restart()
        c = dovecot.imap(user)
        assert list_mailboxes(c, "a*") == expect
        # A \Noselect parent becomes a real mailbox when created.
        create(c, "a/b")
        assert list_mailboxes(c, "a*")["a/b"] == {"\\hasnochildren"}
        assert selectable(c, "a/b")

    def test_create_with_trailing_separator(self, dovecot, user):
        # RFC 3501 6.3.3: "zz/" declares that names will be created under
        # it; Dovecot makes zz a \Noselect directory, without the '/'.
        c = dovecot.imap(user)
        create(c, "zz/")
        assert list_mailboxes(c, "zz*") == {
            "zz": {"\\noselect", "\\hasnochildren"}}

    def test_children_flags_follow_changes(self, dovecot, user):
        c = dovecot.imap(user)
        create(c, "p")
        assert list_mailboxes(c, "p")["p"] == {"\\hasnochildren"}
        create(c, "p/q")
        assert list_mailboxes(c, "p")["p"] == {"\\haschildren"}
        check(c.delete(mbox("p/q")), "DELETE p/q")
        assert list_mailboxes(c, "p")["p"] == {"\\hasnochildren"}


class TestDelete:
    def test_delete_with_children_leaves_noselect(self, dovecot, user):
        # RFC 3501 6.3.4: deleting a name with inferiors removes its
        # messages and leaves it \Noselect.
        c = dovecot.imap(user)
        create(c, "m")
        create(c, "m/n")
        append(c, "m", MSG)
        append(c, "m/n", MSG)
        check(c.delete(mbox("m")), "DELETE m")
        boxes = list_mailboxes(c, "m*")
        assert boxes == {"m": {"\\noselect", "\\haschildren"},
                         "m/n": {"\\hasnochildren"}}
        assert not selectable(c, "m")
        assert status(c, "m/n")["MESSAGES"] == 1
        # It is an error to delete a \Noselect name that has inferiors.
        typ, data = c.delete(mbox("m"))
        assert typ == "NO", data
        assert list_mailboxes(c, "m*") == boxes
        check(c.delete(mbox("m/n")), "DELETE m/n")
        assert list_mailboxes(c, "m*") == {
            "m": {"\\noselect", "\\hasnochildren"}}
        # A \Noselect leaf can be deleted.
        check(c.delete(mbox("m")), "DELETE m")
        assert list_mailboxes(c, "m*") == {}

    def test_recreate_is_empty_with_new_uidvalidity(self, dovecot, user):
        c = dovecot.imap(user)
        create(c, "again")
        append(c, "again", MSG)
        before = status(c, "again")
        check(c.delete(mbox("again")), "DELETE")
        create(c, "again")
        after = status(c, "again")
        assert after["MESSAGES"] == 0 and after["UIDNEXT"] == 1
        # RFC 3501 2.3.1.1: a new mailbox with the same name gets a new
        # UIDVALIDITY.
        assert after["UIDVALIDITY"] != before["UIDVALIDITY"]


class TestRename:
    def test_rename_moves_the_subtree(self, dovecot, user):
        # RFC 3501 6.3.5: inferior names are renamed too.
        c = dovecot.imap(user)
        for name in ("p", "p/q", "p/q/r"):
            create(c, name)
        append(c, "p", MSG)
        append(c, "p/q/r", MSG)
        append(c, "p/q/r", MSG)
        before = {n: status(c, n) for n in ("p", "p/q", "p/q/r")}
        check(c.rename(mbox("p"), mbox("z/p2")), "RENAME")
        boxes = list_mailboxes(c)
        assert not [n for n in boxes if n == "p" or n.startswith("p/")]
        assert boxes["z"] == {"\\noselect", "\\haschildren"}
        assert boxes["z/p2"] == {"\\haschildren"}
        assert boxes["z/p2/q"] == {"\\haschildren"}
        assert boxes["z/p2/q/r"] == {"\\hasnochildren"}
        for old, new in (("p", "z/p2"), ("p/q", "z/p2/q"),
                         ("p/q/r", "z/p2/q/r")):
            assert status(c, new) == before[old], (old, new)

    def test_rename_noselect_parent_moves_children(self, dovecot, user):
        c = dovecot.imap(user)
        create(c, "x/y")
        append(c, "x/y", MSG)
        check(c.rename(mbox("x"), mbox("w")), "RENAME")
        boxes = list_mailboxes(c, "*")
        assert boxes["w"] == {"\\noselect", "\\haschildren"}
        assert status(c, "w/y")["MESSAGES"] == 1
        assert "x" not in boxes and "x/y" not in boxes

    def test_rename_inbox(self, dovecot, user):
        # RFC 3501 6.3.5: renaming INBOX moves all its messages to the new
        # name and leaves INBOX empty.
        c = dovecot.imap(user)
        for _ in range(3):
            append(c, "INBOX", MSG)
        uids_before = fetch_uids(c, "INBOX")
        typ, data = c.rename("INBOX", mbox("Old Inbox"))
        if typ == "NO" and b"[CANNOT]" in data[0] and not dovecot.is_sqlbox:
            pytest.skip("%s cannot rename INBOX" % dovecot.backend)
        assert typ == "OK", data
        assert status(c, "Old Inbox")["MESSAGES"] == 3
        assert fetch_uids(c, "Old Inbox") == uids_before
        st = status(c, "INBOX")
        assert st["MESSAGES"] == 0
        boxes = list_mailboxes(c)
        assert "INBOX" in boxes and "Old Inbox" in boxes
        append(c, "INBOX", MSG)
        assert status(c, "INBOX")["MESSAGES"] == 1
        assert status(c, "Old Inbox")["MESSAGES"] == 3

    def test_rename_inbox_leaves_its_children(self, dovecot, user):
        # RFC 3501 6.3.5: "any inferior hierarchical names of INBOX are
        # unaffected" by renaming INBOX.
        c = dovecot.imap(user)
        create(c, "INBOX/sub")
        append(c, "INBOX", MSG)
        typ, data = c.rename("INBOX", mbox("moved"))
        if typ == "NO" and b"[CANNOT]" in data[0] and not dovecot.is_sqlbox:
            pytest.skip("%s cannot rename INBOX" % dovecot.backend)
        assert typ == "OK", data
        boxes = list_mailboxes(c)
        assert "INBOX/sub" in boxes and "moved/sub" not in boxes, boxes
        assert "moved" in boxes and "INBOX" in boxes


def fetch_uids(c, name):
    check(c.select(mbox(name), readonly=True), "SELECT")
    typ, data = c.uid("SEARCH", "ALL")
    c.close()
    return [int(x) for x in data[0].split()]


class TestSubscriptions:
    def test_subscribe_unsubscribe_lsub(self, dovecot, user):
        c = dovecot.imap(user)
        create(c, "news")
        create(c, "s/t")
        # auto = subscribe mailboxes are subscribed, auto = create not.
        assert set(list_mailboxes(c, command="LSUB")) == {
            "Drafts", "Sent", "Trash"}
        check(c.subscribe(mbox("news")), "SUBSCRIBE")
        check(c.subscribe(mbox("s/t")), "SUBSCRIBE")
        lsub = list_mailboxes(c, command="LSUB")
        assert {"news", "s/t"} <= set(lsub)
        # RFC 3501 6.3.9: with "%", an unsubscribed parent of a subscribed
        # name is returned with \Noselect.
        top = list_mailboxes(c, "%", command="LSUB")
        assert "\\noselect" in top["s"]
        sub = list_mailboxes(c, select_opts="SUBSCRIBED")
        assert "\\subscribed" in sub["news"]
        check(c.unsubscribe(mbox("news")), "UNSUBSCRIBE")
        assert "news" not in list_mailboxes(c, command="LSUB")
        assert "news" in list_mailboxes(c)

    def test_subscription_outlives_its_mailbox(self, dovecot, user):
        # RFC 3501 6.3.6: the server MUST NOT unilaterally remove a name
        # from the subscriptions because the mailbox is gone.
        c = dovecot.imap(user)
        create(c, "gone")
        check(c.subscribe(mbox("gone")), "SUBSCRIBE")
        check(c.delete(mbox("gone")), "DELETE")
        assert "gone" in list_mailboxes(c, command="LSUB")
        assert "gone" not in list_mailboxes(c)

    def test_subscriptions_persist(self, dovecot, user):
        c = dovecot.imap(user)
        create(c, "keep/me")
        check(c.subscribe(mbox("keep/me")), "SUBSCRIBE")
        check(c.subscribe(mbox("Junk")), "SUBSCRIBE")
        before = list_mailboxes(c, command="LSUB")
        c.logout()
        c = dovecot.imap(user, tls="implicit")
        assert list_mailboxes(c, command="LSUB") == before


NON_ASCII = ["Entwürfe", "日本語/子フォルダ", "Ünïcödé & Co", "Ελληνικά",
             "emoji 📬 box", "台北"]

SPECIAL = ["it's", 'say "hi"', "100% sure", "a..b", "trailing..",
           "..leading", "back\\slash", "semi;colon", "star*name",
           "sp ace", " lead", "trail ", "&-literal", "a&b",
           "x'); DROP TABLE mailboxes; --"]


class TestNames:
    def test_modified_utf7_encoder(self):
        # RFC 3501 5.1.3's own example.
        assert (mutf7_encode("~peter/mail/台北/日本語")
                == "~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        assert mutf7_encode("a&b") == "a&-b"
        for name in NON_ASCII + SPECIAL:
            assert mutf7_decode(mutf7_encode(name)) == name

    def test_non_ascii_names_round_trip(self, dovecot, user):
        c = dovecot.imap(user)
        for name in NON_ASCII:
            create(c, name)
            append(c, name, MSG)
        boxes = list_mailboxes(c)
        for name in NON_ASCII:
            assert name in boxes, (name, sorted(boxes))
            assert status(c, name)["MESSAGES"] == 1
            assert selectable(c, name)
        # The wire form is exactly the encoder's (RFC 3501 5.1.3).
        raw = {n for _, _, n in parse_list(check(c.list('""', '"*"'),
                                                 "LIST"))}
        assert mutf7_encode("日本語/子フォルダ") in raw, raw
        assert "&U,BTFw-" in raw
        sqlbox_only(dovecot)
        names = {r[0] for r in dovecot.sql(user, "SELECT name FROM mailboxes")}
        for name in NON_ASCII:
            assert name in names, (name, names)
        assert "日本語" in names    # the \Noselect parent, in UTF-8

    def test_special_characters_round_trip(self, dovecot, user):
        c = dovecot.imap(user)
        for name in SPECIAL:
            create(c, name)
        append(c, "a..b", MSG)
        boxes = list_mailboxes(c)
        for name in SPECIAL:
            assert name in boxes, (name, sorted(boxes))
            assert boxes[name] == {"\\hasnochildren"}, (name, boxes[name])
            assert selectable(c, name), name
            # LIST with the name itself as the pattern: only the wildcard
            # characters may match more.
            if "%" not in name and "*" not in name:
                assert set(list_mailboxes(c, name)) == {name}
        assert status(c, "a..b")["MESSAGES"] == 1
        check(c.rename(mbox('say "hi"'), mbox("it's/say \"hi\"")),
              "RENAME")
        boxes = list_mailboxes(c)
        assert "it's/say \"hi\"" in boxes and 'say "hi"' not in boxes
        assert boxes["it's"] == {"\\haschildren"}

    def test_sql_injection_name_is_just_a_name(self, dovecot, user):
        name = "x'); DROP TABLE mailboxes; --"
        other = 'y"; DELETE FROM messages; --'
        c = dovecot.imap(user)
        append(c, "INBOX", MSG)
        if dovecot.is_sqlbox:
            tables_before = dovecot.sql_dump(user)
        create(c, name)
        create(c, other)
        append(c, name, MSG)
        append(c, other, MSG)
        check(c.subscribe(mbox(name)), "SUBSCRIBE")
        boxes = list_mailboxes(c)
        assert name in boxes and other in boxes
        assert name in list_mailboxes(c, command="LSUB")
        for n in (name, other, "INBOX"):
            assert status(c, n)["MESSAGES"] == 1
        check(c.select(mbox(name)), "SELECT")
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == MSG
        c.close()
        sqlbox_only(dovecot)
        tables = dovecot.sql_dump(user)
        # Every table is still there and no row went missing.
        assert set(tables) == set(tables_before)
        assert {"mailboxes", "messages"} <= set(tables), set(tables)
        for t, rows in tables_before.items():
            assert len(tables[t]) >= len(rows), t
        names = [r[0] for r in dovecot.sql(user, "SELECT name FROM mailboxes")]
        assert name in names and other in names and "INBOX" in names
        assert len(names) == len(set(names))
        counts = dict(dovecot.sql(
            user, "SELECT b.name, count(m.uid) FROM mailboxes b "
                  "LEFT JOIN messages m ON m.mailbox_id = b.id "
                  "GROUP BY b.name"))
        assert counts[name] == 1 and counts[other] == 1
        assert counts["INBOX"] == 1
