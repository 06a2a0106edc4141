# SPDX-License-Identifier: MIT
"""Pigeonhole Sieve (RFC 5228) at delivery into sqlbox, through LMTP and
dovecot-lda, with the user's active script installed by
`doveadm sieve put -a` (sieve = file:~/sieve;active=~/.dovecot.sieve):

- fileinto :create (RFC 5490 3.2) into nested folders, ASCII and not,
  created as sqlbox folders with a \\Noselect parent;
- addflag / fileinto :flags (RFC 5232 imap4flags) setting system flags
  and keywords, seen in SQL (flags bits, keywords) and over IMAP;
- discard (RFC 5228 4.3): the delivery is answered 250 and nothing is
  stored, while another recipient of the same transaction gets the
  message.

Nothing can ever be sent from here: vacation and enotify are removed from
the available extensions, redirects are limited to 0 and sendmail_path is
/bin/false.
"""

import re
import subprocess

import pytest

import conftest
import deliveryutil as du
from harness import backend_under_test, build_dir, mutf7_encode, quote

SENDER = "sender@example.org"


def extra_conf(backend):
    lmtp_plugins = "sqlbox_lmtp sieve" if backend == "sqlbox" else "sieve"
    return r"""
protocol lmtp {
  mail_plugins = $mail_plugins %s
}
protocol lda {
  mail_plugins = $mail_plugins sieve
}
plugin {
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_extensions = -vacation -vacation-seconds -enotify
  sieve_max_redirects = 0
}
sendmail_path = /bin/false
""" % lmtp_plugins


@pytest.fixture(scope="module")
def dovecot():
    """The module's instance: mail_plugin_dir also offers Pigeonhole's
    sieve plugin next to the build's plugins."""
    backend = backend_under_test()
    plugins = du.PluginDir(build_dir(), ["lib90_sieve_plugin.so"])
    try:
        inst = conftest._start(backend, plugin_dir=plugins.path,
                               extra_conf=extra_conf(backend))
        yield inst
        conftest._finish(inst)
    finally:
        plugins.remove()


def put_script(inst, user, text, name="main"):
    """Uploads and activates the user's script (as ManageSieve would)."""
    p = subprocess.run(["doveadm", "-c", str(inst.conf), "sieve", "put",
                        "-u", user, "-a", name], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    link = inst.user_dir(user) / ".dovecot.sieve"
    assert link.is_symlink(), link


def message(subject, extra="", body="Hello.\r\n", n=0):
    return ("From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
            "Subject: %s\r\nMessage-ID: <sieve-%d-%s@sqlbox.test>\r\n%s\r\n%s"
            % (subject, n, re.sub(r"\W", "", subject)[:20], extra,
               body)).encode("utf-8")


def folder_rows(inst, user):
    """{name: (noselect, messages counter, unseen counter)} from SQL."""
    return {r[0]: (r[1], r[2], r[3]) for r in inst.sql(
        user, "SELECT name, noselect, messages, unseen FROM mailboxes")}


def message_rows(inst, user, name):
    """[(uid, flags bits, keywords)] of a folder from SQL."""
    return [tuple(r) for r in inst.sql(
        user, "SELECT m.uid, m.flags, m.keywords FROM messages m "
        "JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = ? "
        "ORDER BY m.uid", [name])]


def imap_folder(inst, user, name):
    """{uid: (set of flags without \\Recent, BODY[])} over IMAP."""
    raw = inst.raw_imap(user)
    du.select(raw, quote(mutf7_encode(name)), examine=True)
    got = du.fetch_all(raw, b"(UID FLAGS BODY.PEEK[])")
    raw.close()
    return {uid: ({f.decode() for f in v["FLAGS"]} - {"\\Recent"},
                  v["BODY[]"]) for uid, v in got.items()}


FILEINTO = r'''require ["fileinto", "mailbox"];
if header :contains "List-Id" "dovecot.dovecot.org" {
  fileinto :create "Lists/Dovecot";
  stop;
}
if header :contains "Subject" "Grüße" {
  fileinto :create "Archiv/Grüße/2024";
  stop;
}
'''

FLAGS = r'''require ["fileinto", "mailbox", "imap4flags"];
if header :contains "Subject" "urgent" {
  addflag ["\\Flagged", "Project_X", "$Urgent"];
}
if header :contains "Subject" "done" {
  fileinto :create :flags ["\\Seen", "zz-last", "\\Answered", "$Label1"]
           "Done";
  stop;
}
if header :contains "Subject" "read" {
  setflag "\\Seen";
}
'''

DISCARD = r'''if anyof (header :contains "Subject" "spam",
          header :is "X-Spam-Flag" "YES") {
  discard;
  stop;
}
'''


class TestSieve:
    def test_fileinto_create_nested_folders(self, dovecot, user):
        put_script(dovecot, user, FILEINTO)
        msgs = [
            message("release 2.3.21", "List-Id: Dovecot <dovecot.dovecot.org>"
                    "\r\n", n=1),
            message("plain note", n=2),
            message("Re: release 2.3.21", "List-Id: Dovecot "
                    "<dovecot.dovecot.org>\r\n", n=3),
            message("Grüße aus Köln", n=4),
        ]
        for m in msgs:
            r = du.lmtp_deliver(dovecot, [user], m)
            assert r[user][0] == 250, r
        lists = imap_folder(dovecot, user, "Lists/Dovecot")
        assert sorted(lists) == [1, 2]
        du.check_delivered(lists[1][1], msgs[0], user, SENDER)
        du.check_delivered(lists[2][1], msgs[2], user, SENDER)
        inbox = imap_folder(dovecot, user, "INBOX")
        assert sorted(inbox) == [1]
        du.check_delivered(inbox[1][1], msgs[1], user, SENDER)
        deep = imap_folder(dovecot, user, "Archiv/Grüße/2024")
        assert sorted(deep) == [1]
        du.check_delivered(deep[1][1], msgs[3], user, SENDER)
        raw = dovecot.raw_imap(user)
        st, _, lines = raw.command(b'LIST "" "*"')
        listing = b"".join(lines)
        assert b'(\\Noselect \\HasChildren) "/" Lists\r\n' in listing, lines
        assert b'(\\HasNoChildren) "/" Lists/Dovecot\r\n' in listing, lines
        assert (b'"/" ' + mutf7_encode("Archiv/Grüße/2024").encode() +
                b"\r\n") in listing, lines
        raw.close()
        if dovecot.is_sqlbox:
            rows = folder_rows(dovecot, user)
            assert rows["Lists"][0] == 1, rows            # \Noselect
            assert rows["Lists/Dovecot"] == (0, 2, 2), rows
            assert rows["Archiv"][0] == 1 and rows["Archiv/Grüße"][0] == 1
            assert rows["Archiv/Grüße/2024"] == (0, 1, 1), rows
            assert rows["INBOX"] == (0, 1, 1), rows

    def test_flags_and_keywords(self, dovecot, user):
        put_script(dovecot, user, FLAGS)
        msgs = [message("urgent: server down", n=1),
                message("nothing special", n=2),
                message("done: ticket 42", n=3),
                message("urgent, already read", n=4)]
        for m in msgs:
            r = du.lmtp_deliver(dovecot, [user], m)
            assert r[user][0] == 250, r
        # dovecot-lda runs the same script.
        status, err = du.lda(dovecot, user, message("urgent via lda", n=5))
        assert status == 0, err
        inbox = imap_folder(dovecot, user, "INBOX")
        assert {u: f for u, (f, _) in inbox.items()} == {
            1: {"\\Flagged", "$Urgent", "Project_X"},
            2: set(),
            # setflag replaces what addflag set (RFC 5232 4.1)
            3: {"\\Seen"},
            4: {"\\Flagged", "$Urgent", "Project_X"},
        }
        done = imap_folder(dovecot, user, "Done")
        assert {u: f for u, (f, _) in done.items()} == {
            1: {"\\Seen", "\\Answered", "$Label1", "zz-last"}}
        du.check_delivered(done[1][1], msgs[2], user, SENDER)
        assert inbox[4][1] == du.crlf(message("urgent via lda", n=5))
        if dovecot.is_sqlbox:
            # PLUGIN.md: 1 \Answered, 2 \Flagged, 8 \Seen; keywords sorted.
            assert message_rows(dovecot, user, "INBOX") == [
                (1, 2, "$Urgent Project_X"), (2, 0, ""),
                (3, 8, ""),
                (4, 2, "$Urgent Project_X")]
            assert message_rows(dovecot, user, "Done") == [
                (1, 1 | 8, "$Label1 zz-last")]
            rows = folder_rows(dovecot, user)
            assert rows["INBOX"][1:] == (4, 3), rows
            assert rows["Done"][1:] == (1, 0), rows

    def test_discard(self, dovecot, user):
        put_script(dovecot, user, DISCARD)
        other = dovecot.new_user()          # no script: implicit keep
        spam = message("cheap spam", n=1)
        flagged = message("hello", "X-Spam-Flag: YES\r\n", n=2)
        ham = message("ham", n=3)
        r = du.lmtp_deliver(dovecot, [user], spam)
        assert r[user][0] == 250, r
        r = du.lmtp_deliver(dovecot, [user, other], flagged)
        assert r[user][0] == 250 and r[other][0] == 250, r
        r = du.lmtp_deliver(dovecot, [other, user], ham)
        assert r[user][0] == 250 and r[other][0] == 250, r
        mine = imap_folder(dovecot, user, "INBOX")
        assert sorted(mine) == [1]
        du.check_delivered(mine[1][1], ham, user, SENDER, single=False)
        theirs = imap_folder(dovecot, user=other, name="INBOX")
        assert sorted(theirs) == [1, 2]
        du.check_delivered(theirs[1][1], flagged, other, SENDER,
                           single=False)
        if dovecot.is_sqlbox:
            assert dovecot.sql(user, "SELECT count(*) FROM messages")[0][0] \
                == 1
            # Nothing of the discarded mail is left: one body, the kept one.
            assert dovecot.sql(user, "SELECT count(*) FROM bodies")[0][0] \
                == 1
        log = dovecot.log_text()
        assert re.search(r"lmtp\(%s\)<[^>]*><[^>]*>: Info: sieve: "
                         r"msgid=<sieve-1-cheapspam@sqlbox.test>: "
                         r"discard action: Marked message to be discarded"
                         % user, log), log
