# SPDX-License-Identifier: MIT
"""`make install` and `make uninstall` (PLUGIN.md, "Installing").

Into a scratch DESTDIR and, as root, into the system: the three modules
land in Dovecot's module directory (from dovecot-config) and the commented
snippet in conf.d; a Dovecot whose sqlbox settings are exactly the
snippet's, uncommented, serves IMAP and LMTP from the installed modules;
uninstall leaves nothing behind (in the system: the module directory and
conf.d are as they were). An edited snippet survives install and
uninstall.

The system part (root only) installs into /usr/lib/dovecot/modules for a
few seconds and always uninstalls. When one of its files is already there
(test_doveadm_sqlbox.py of another run links the doveadm module for a
while), it waits up to two minutes, then fails without touching anything.
"""

import filecmp
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import REPO, DovecotInstance, build_dir, check, mbox

MODULEDIR = subprocess.run(
    ["sh", "-c", '. /usr/lib/dovecot/dovecot-config && '
     'echo "$dovecot_moduledir"'],
    stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
MODULES = {"lib20_sqlbox_plugin.so": "lib20_sqlbox_plugin.so",
           "lib21_sqlbox_lmtp_plugin.so": "lib21_sqlbox_lmtp_plugin.so",
           "doveadm/lib10_doveadm_sqlbox_plugin.so":
           "lib10_doveadm_sqlbox_plugin.so"}
CONFD = "/etc/dovecot/conf.d"
SNIPPET = REPO / "packaging" / "90-sqlbox.conf"


def make(*args):
    p = subprocess.run(["make", "-C", str(REPO), "--no-print-directory",
                        "BUILD=%s" % build_dir()] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
    assert p.returncode == 0, "make %s failed:\n%s" % (" ".join(args),
                                                        p.stdout)
    return p.stdout


def installed_paths(root):
    """The files install puts under root (DESTDIR, or / for the system)."""
    paths = [Path(root + MODULEDIR) / m for m in MODULES]
    return paths + [Path(root + CONFD) / "90-sqlbox.conf"]


def enabled_snippet(path):
    """The snippet with its settings uncommented (`name = value`, `name {`
    and `}` lines); the explanations stay comments."""
    text = Path(path).read_text()
    enabled = re.sub(r"^#(?=\s*(?:[a-z_]+\s*=|[a-z_ ]+\{\s*$|\}\s*$))",
                     "", text, flags=re.M)
    assert "mail_location = sqlbox:~/sqlbox" in enabled.splitlines()
    return enabled


def tree(path):
    """Every file, link and directory below path, with its mode."""
    out = set()
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out.add((p, os.lstat(p).st_mode))
    return out


def serve_from_snippet(snippet, moduledir=None):
    """Starts a Dovecot whose sqlbox settings are the enabled snippet (and
    mail_plugin_dir, for a DESTDIR), then checks IMAP and LMTP on a new
    user: APPEND, LMTP delivery, FETCH, and the user's mail.sqlite."""
    conf = enabled_snippet(snippet)
    if moduledir:
        conf += "\nmail_plugin_dir = %s\n" % moduledir
    # "maildir" only names the instance's own defaults; the snippet,
    # appended last, sets mail_location and mail_plugins.
    inst = DovecotInstance("maildir", extra_conf=conf, local=True)
    try:
        inst.start()
        user = inst.new_user()
        c = inst.imap(user)
        msg = b"From: a@example.org\r\nSubject: installed\r\n\r\nbody\r\n"
        check(c.append(mbox("INBOX"), None, None, msg), "APPEND")
        reply = inst.lmtp_deliver(user, b"Subject: by lmtp\r\n\r\nhi\r\n")
        assert reply[user][0] == 250, reply
        check(c.select(mbox("INBOX")), "SELECT")
        data = check(c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"),
                     "FETCH")
        subjects = re.findall(rb"Subject: ([^\r]*)", b"".join(
            d[1] for d in data if isinstance(d, tuple)))
        assert subjects == [b"installed", b"by lmtp"]
        assert inst.db_path(user).is_file(), "no mail.sqlite: not sqlbox"
        assert inst.sql(user, "SELECT messages FROM mailboxes "
                              "WHERE name = 'INBOX'") == [[2]]
        inst.close_clients()
        inst.wait_sessions_closed()
        inst.stop()
        inst.check_log()
    finally:
        inst.close()


def check_installed(root):
    for rel, built in MODULES.items():
        path = Path(root + MODULEDIR) / rel
        assert path.is_file() and not path.is_symlink(), path
        assert path.stat().st_mode & 0o777 == 0o644, path
        assert filecmp.cmp(path, build_dir() / built, shallow=False), path
    conf = Path(root + CONFD) / "90-sqlbox.conf"
    assert filecmp.cmp(conf, SNIPPET, shallow=False)
    assert conf.stat().st_mode & 0o777 == 0o644


def test_destdir_install_serves_and_uninstall_leaves_nothing():
    with tempfile.TemporaryDirectory(prefix="sbx-destdir-") as d:
        os.chmod(d, 0o755)
        make("install", "DESTDIR=%s" % d)
        check_installed(d)
        serve_from_snippet(Path(d + CONFD) / "90-sqlbox.conf",
                           moduledir=d + MODULEDIR)
        make("uninstall", "DESTDIR=%s" % d)
        assert os.listdir(d) == [], tree(d)


def test_edited_snippet_is_kept():
    with tempfile.TemporaryDirectory(prefix="sbx-destdir-") as d:
        make("install", "DESTDIR=%s" % d)
        conf = Path(d + CONFD) / "90-sqlbox.conf"
        edited = enabled_snippet(conf)
        conf.write_text(edited)
        out = make("install", "DESTDIR=%s" % d)
        assert "keeping %s" % conf in out
        assert conf.read_text() == edited
        out = make("uninstall", "DESTDIR=%s" % d)
        assert "keeping %s: it was changed" % conf in out
        assert conf.read_text() == edited
        left = {str(p.relative_to(d)) for p in Path(d).rglob("*")
                if not p.is_dir()}
        assert left == {str(conf.relative_to(d))}


def wait_not_installed(timeout=120):
    """The system paths must be free: another run's doveadm test links
    the doveadm module there for a while."""
    deadline = time.time() + timeout
    while True:
        there = [p for p in installed_paths("") if os.path.lexists(p)]
        if not there:
            return
        if time.time() > deadline:
            pytest.fail("sqlbox is already installed in the system (%s): "
                        "run make uninstall first" % ", ".join(map(str, there)))
        time.sleep(1)


def test_system_install_serves_and_uninstall_restores():
    if os.getuid() != 0:
        pytest.skip("installing into %s needs root" % MODULEDIR)
    wait_not_installed()
    before = tree(MODULEDIR) | tree(CONFD)
    try:
        make("install")
        check_installed("")
        serve_from_snippet(Path(CONFD) / "90-sqlbox.conf")
    finally:
        make("uninstall")
    assert tree(MODULEDIR) | tree(CONFD) == before
