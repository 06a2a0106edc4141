# SPDX-License-Identifier: MIT
"""mbsync (isync 1.4) against sqlbox over IMAPS, the way a user syncs a
laptop: a local Maildir of 500 messages in 10 folders (nested, non-ASCII
names, the flags S F R D P) is pushed into an empty sqlbox account, then
pulled into a second, empty Maildir. Both Maildirs and the server must
hold the same messages (bodies byte-identical) with the same flags. Then
three rounds of changes on every side (flags, deleted files, \\Deleted
and EXPUNGE, new mail by LMTP and LDA, new local files), each followed by
mbsync runs, after which all three agree again.

isync 1.4 passes mailbox names through unconverted, so the Maildir
folders of non-ASCII names are named in modified UTF-7 (RFC 3501 5.1.3);
sqlbox stores them decoded (UTF-8). When mbsync stores a message on the
IMAP side it adds an X-TUID header field (its own transaction id), which
then travels on to the other Maildir; that one line, and only it, is left
out of the comparisons.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

import deliveryutil as du
from harness import mutf7_decode, mutf7_encode, quote

N_MESSAGES = 2000 if du.SLOW else 500
FOLDERS = ["INBOX", "Work", "Work/Projects", "Work/Projects/sqlbox",
           "Lists/Dovecot", "Grüße", "Work/日本語", "Archiv/2023",
           "Receipts", "Old/Very/Deep/Nested"]
# mbsync's Maildir flags and the IMAP flags they stand for.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded",
                 "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
IMAP_FLAGS = {v: k for k, v in MAILDIR_FLAGS.items()}
FLAG_PATTERNS = ["S", "", "FS", "RS", "DS", "PS", "F", "S", "FRS", "D",
                 "S", "PRS"]
X_TUID = re.compile(rb"^X-TUID: [^\r\n]*\r?\n", re.M)


def maildir_path(root, inbox, folder):
    if folder == "INBOX":
        return inbox
    return os.path.join(root, *mutf7_encode(folder).split("/"))


def make_maildir(path):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)


_unique = [0]


def add_file(root, inbox, folder, data, flags):
    """Writes one message the way an MUA does: LF line ends, in new/ when
    it has no flags, else in cur/ with its :2, info (sorted flags)."""
    path = maildir_path(root, inbox, folder)
    make_maildir(path)
    _unique[0] += 1
    base = "%d.P%dQ%d.testhost" % (time.time(), os.getpid(), _unique[0])
    if flags:
        name = os.path.join(path, "cur", base + ":2," +
                            "".join(sorted(flags)))
    else:
        name = os.path.join(path, "new", base)
    with open(name, "wb") as f:
        f.write(data)
    return name


def read_maildir(root, inbox):
    """{folder (decoded): sorted [(bytes, flags str)]} of a Maildir tree
    as mbsync keeps it (Verbatim subfolders, INBOX elsewhere)."""
    out = {}
    tops = [("INBOX", inbox)]
    for dirpath, dirnames, _ in os.walk(root):
        if "cur" in dirnames and dirpath != root:
            rel = os.path.relpath(dirpath, root)
            tops.append((mutf7_decode(rel.replace(os.sep, "/")), dirpath))
        dirnames[:] = [d for d in dirnames if d not in ("cur", "new", "tmp")]
    for name, path in tops:
        msgs = []
        for sub in ("cur", "new"):
            d = os.path.join(path, sub)
            if not os.path.isdir(d):
                continue
            for fn in os.listdir(d):
                flags = ""
                if ":2," in fn:
                    flags = "".join(sorted(fn.split(":2,", 1)[1]))
                with open(os.path.join(d, fn), "rb") as f:
                    msgs.append((X_TUID.sub(b"", f.read(), count=1), flags))
        out[name] = sorted(msgs)
    return out


def maildir_files(root, inbox, folder):
    """[(path, flags)] of one folder, in a stable order."""
    path = maildir_path(root, inbox, folder)
    out = []
    for sub in ("cur", "new"):
        d = os.path.join(path, sub)
        for fn in sorted(os.listdir(d)):
            flags = fn.split(":2,", 1)[1] if ":2," in fn else ""
            out.append((os.path.join(d, fn), flags))
    return out


def set_file_flags(path, flags):
    """Renames a Maildir file to carry flags (moving it to cur/)."""
    d, fn = os.path.split(path)
    base = fn.split(":2,", 1)[0]
    new = os.path.join(os.path.dirname(d), "cur", base + ":2," +
                       "".join(sorted(flags)))
    os.rename(path, new)
    return new


class Sync:
    """mbsync's configuration and two Maildirs (A and B) in a temporary
    directory, with channels `a` and `b` to the same IMAP account."""

    def __init__(self, inst, user):
        self.inst = inst
        self.user = user
        self.dir = tempfile.mkdtemp(prefix="sbx-mbsync-", dir="/tmp")
        self.roots = {}
        for side in ("a", "b"):
            root = os.path.join(self.dir, side, "mail")
            inbox = os.path.join(self.dir, side, "inbox")
            os.makedirs(root)
            self.roots[side] = (root, inbox)
        stores = ""
        for side, (root, inbox) in self.roots.items():
            stores += """
MaildirStore near-%(side)s
Path %(root)s/
Inbox %(inbox)s
SubFolders Verbatim

Channel %(side)s
Far :far:
Near :near-%(side)s:
Patterns *
Create Both
Remove None
Expunge Both
Sync All
SyncState *
CopyArrivalDate yes
""" % {"side": side, "root": root, "inbox": inbox}
        # The certificate names localhost (isync 1.4 does not match IP
        # addresses); the instance listens on 127.0.0.1, which localhost
        # resolves to.
        self.rc = os.path.join(self.dir, "mbsyncrc")
        with open(self.rc, "w") as f:
            f.write("""FSync no

IMAPAccount acct
Host localhost
Port %d
User %s
Pass %s
SSLType IMAPS
CertificateFile %s
Timeout 60

IMAPStore far
Account acct
%s""" % (inst.port("imaps"), user, inst.password(user), inst.cafile,
                stores))
        self.runs = []

    def run(self, channel):
        p = subprocess.run(["mbsync", "-c", self.rc, channel],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=1200 if du.SLOW else 300)
        self.runs.append((channel, p.returncode))
        assert p.returncode == 0, "mbsync %s failed (%d):\n%s\n%s" % (
            channel, p.returncode, p.stdout[-4000:], p.stderr[-4000:])

    def maildir(self, side):
        return read_maildir(*self.roots[side])

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def server_state(inst, user):
    """{folder: sorted [(bytes as a Maildir holds them, flags str)]} of
    every selectable folder, over IMAP: X-TUID dropped, CRLF as LF."""
    raw = inst.raw_imap(user, tls="implicit")
    st, _, lines = raw.command(b'LIST "" "*"')
    assert st == "OK"
    names = []
    for line in lines:
        m = re.match(rb'\* LIST \(([^)]*)\) "/" (.*)\r\n$', line)
        assert m, line
        if b"\\noselect" in m.group(1).lower():
            continue
        name = m.group(2)
        if name.startswith(b'"'):
            name = name[1:-1]
        names.append(mutf7_decode(name.decode()))
    out = {}
    for name in names:
        n = du.select(raw, quote(mutf7_encode(name)), examine=True)
        msgs = []
        if n:
            got = du.fetch_all(raw, b"(UID FLAGS BODY.PEEK[])")
            assert len(got) == n, (name, n, len(got))
            for v in got.values():
                flags = "".join(sorted(
                    IMAP_FLAGS[f.decode()] for f in v["FLAGS"]
                    if f.decode() != "\\Recent"))
                body = X_TUID.sub(b"", v["BODY[]"], count=1).replace(
                    b"\r\n", b"\n")
                msgs.append((body, flags))
        out[name] = sorted(msgs)
    raw.close()
    return out


def describe_diff(a, b):
    lines = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x != y:
            lines.append("%s: %s vs %s messages; flags %s vs %s" % (
                name, None if x is None else len(x),
                None if y is None else len(y),
                None if x is None else sorted(f for _, f in x),
                None if y is None else sorted(f for _, f in y)))
    return "\n".join(lines)


def check_sql(inst, user, state):
    """SQL agrees: rows per folder, the counters, unseen."""
    if not inst.is_sqlbox:
        return
    rows = inst.sql(user, "SELECT b.name, b.noselect, b.messages, b.unseen, "
                    "(SELECT count(*) FROM messages m WHERE m.mailbox_id = "
                    "b.id), (SELECT count(*) FROM messages m WHERE "
                    "m.mailbox_id = b.id AND m.flags & 8 = 0) "
                    "FROM mailboxes b")
    sql = {r[0]: r[1:] for r in rows}
    for name, msgs in state.items():
        noselect, messages, unseen, n_rows, n_unseen = sql[name]
        assert noselect == 0, name
        assert (messages, n_rows) == (len(msgs), len(msgs)), (name, sql[name])
        want_unseen = len([1 for _, f in msgs if "S" not in f])
        assert (unseen, n_unseen) == (want_unseen, want_unseen), (
            name, sql[name])
    selectable = {n for n, r in sql.items() if r[0] == 0}
    assert selectable == set(state), (selectable, set(state))


def converged(sync, want_total=None):
    """A, B and the server hold the same folders, messages and flags."""
    a = sync.maildir("a")
    b = sync.maildir("b")
    server = server_state(sync.inst, sync.user)
    assert a == b, "Maildirs A and B differ:\n" + describe_diff(a, b)
    assert a == server, "Maildir A and the server differ:\n" + \
        describe_diff(a, server)
    check_sql(sync.inst, sync.user, server)
    if want_total is not None:
        assert sum(len(v) for v in a.values()) == want_total
    return a


def lf(data):
    return data.replace(b"\r\n", b"\n")


@pytest.fixture(scope="module")
def state(dovecot):
    class State:
        pass
    st = State()
    st.user = dovecot.new_user()
    st.sync = Sync(dovecot, st.user)
    st.done = 0
    st.total = 0
    yield st
    st.sync.remove()


@pytest.fixture
def step(state, request):
    """The steps build on each other: step n runs only after step n-1
    passed (a step after a failed one fails, it is not skipped)."""
    n = int(re.search(r"test_(\d+)_", request.node.name).group(1))
    if state.done != n - 1:
        pytest.fail("step %d did not pass" % (state.done + 1))
    return state


def done(state, n):
    """Marks step n passed: the last line of each step."""
    state.done = n


class TestMbsync:
    def test_1_push_maildir_into_sqlbox(self, dovecot, step):
        msgs = du.generate(N_MESSAGES, seed=1404, max_size=120000)
        root, inbox = step.sync.roots["a"]
        for folder in FOLDERS:
            make_maildir(maildir_path(root, inbox, folder))
        for i, (_, data) in enumerate(msgs):
            data = lf(data)
            assert b"\r" not in data
            folder = FOLDERS[(i * 7 + i // 13) % len(FOLDERS)]
            add_file(root, inbox, folder, data,
                     FLAG_PATTERNS[i % len(FLAG_PATTERNS)])
        step.total = len(msgs)
        local = step.sync.maildir("a")
        assert set(local) == set(FOLDERS)
        assert all(len(local[f]) > 20 for f in FOLDERS)
        step.sync.run("a")
        server = server_state(dovecot, step.user)
        # Dovecot's auto folders come along empty.
        for name in ("Drafts", "Sent", "Trash", "Junk", "Archive"):
            assert server.pop(name) == [], name
        assert server == local, describe_diff(server, local)
        check_sql(dovecot, step.user, server_state(dovecot, step.user))
        if dovecot.is_sqlbox:
            names = {r[0] for r in dovecot.sql(step.user, "SELECT name FROM "
                                                "mailboxes")}
            assert {"Grüße", "Work/日本語", "Old/Very/Deep"} <= names, names
        done(step, 1)

    def test_2_pull_into_empty_maildir(self, dovecot, step):
        step.sync.run("b")
        # A picks up the server's auto folders; then everything agrees.
        step.sync.run("a")
        converged(step.sync, step.total)
        done(step, 2)

    def test_3_changes_in_a_and_on_the_server(self, dovecot, step):
        root, inbox = step.sync.roots["a"]
        new = du.generate(30, seed=3001, max_size=60000)
        # A: flags changed, files deleted, new files (one in a new folder).
        for folder in ("INBOX", "Work/日本語", "Lists/Dovecot"):
            files = maildir_files(root, inbox, folder)
            for path, flags in files[:4]:
                set_file_flags(path, set(flags) ^ {"S", "F"})
            for path, _ in files[4:7]:
                os.remove(path)
        for i, (_, data) in enumerate(new[:10]):
            add_file(root, inbox, ["Receipts", "Neu/Ordner ÄÖÜ"][i % 2],
                     lf(data), ["", "S", "RS"][i % 3])
        # Server: flags over IMAP on other folders, new mail by LMTP.
        raw = dovecot.raw_imap(step.user)
        du.select(raw, quote(mutf7_encode("Grüße")))
        assert raw.command(b"UID STORE 1:5 +FLAGS.SILENT (\\Answered "
                           b"$Forwarded)")[0] == "OK"
        assert raw.command(b"UID STORE 6:8 -FLAGS.SILENT (\\Seen)")[0] \
            == "OK"
        du.select(raw, b"Archiv/2023")
        assert raw.command(b"UID STORE 1:* +FLAGS.SILENT (\\Seen)")[0] \
            == "OK"
        raw.close()
        for _, data in new[10:20]:
            r = du.lmtp_deliver(dovecot, [step.user], data)
            assert r[step.user][0] == 250, r
        step.total += 10 + 10 - 9
        step.sync.run("a")
        step.sync.run("b")
        state = converged(step.sync, step.total)
        assert len(state["Neu/Ordner ÄÖÜ"]) == 5
        # The LMTP deliveries arrived in both Maildirs as delivered.
        inbox_bodies = [m for m, _ in state["INBOX"]]
        for _, data in new[10:20]:
            assert any(body.endswith(lf(data)) and
                       body.startswith(b"Return-Path: <sender@example.org>")
                       for body in inbox_bodies)
        done(step, 3)

    def test_4_changes_in_b_and_on_the_server(self, dovecot, step):
        root, inbox = step.sync.roots["b"]
        new = du.generate(20, seed=3002, max_size=60000)
        # B: flags, deletions and new files in a nested non-ASCII folder.
        for folder in ("Work/Projects", "Receipts", "Old/Very/Deep/Nested"):
            files = maildir_files(root, inbox, folder)
            for path, flags in files[:5]:
                set_file_flags(path, set(flags) ^ {"D", "R"})
            for path, _ in files[-3:]:
                os.remove(path)
        for i, (_, data) in enumerate(new[:6]):
            add_file(root, inbox, "Work/日本語", lf(data), ["F", ""][i % 2])
        # Server: EXPUNGE (with \Deleted) in one folder, MOVE to another,
        # and mail by dovecot-lda into a nested folder.
        raw = dovecot.raw_imap(step.user)
        du.select(raw, b"Work")
        assert raw.command(b"UID STORE 1:4 +FLAGS.SILENT (\\Deleted)")[0] \
            == "OK"
        assert raw.command(b"EXPUNGE")[0] == "OK"
        du.select(raw, b"Lists/Dovecot")
        st, text, _ = raw.command(b"UID MOVE 10:12 Archiv/2023")
        assert st == "OK", text
        raw.close()
        for _, data in new[6:10]:
            status, err = du.lda(dovecot, step.user, data,
                                 "Work/Projects/sqlbox")
            assert status == 0, err
        step.total += 6 - 9 - 4 + 4
        step.sync.run("b")
        step.sync.run("a")
        converged(step.sync, step.total)
        done(step, 4)

    def test_5_changes_everywhere(self, dovecot, step):
        a_root, a_inbox = step.sync.roots["a"]
        b_root, b_inbox = step.sync.roots["b"]
        new = du.generate(20, seed=3003, max_size=60000)
        # A: trash (T) is \Deleted on the server and expunged everywhere
        # (Expunge Both); new files.
        files = maildir_files(a_root, a_inbox, "Grüße")
        for path, flags in files[:3]:
            set_file_flags(path, set(flags) | {"T"})
        for _, data in new[:4]:
            add_file(a_root, a_inbox, "INBOX", lf(data), "")
        # B: flags and deletions elsewhere.
        files = maildir_files(b_root, b_inbox, "Archiv/2023")
        for path, flags in files[:6]:
            set_file_flags(path, set(flags) ^ {"F", "P"})
        os.remove(files[-1][0])
        # Server: flags, an expunge and new mail (LMTP, LDA).
        raw = dovecot.raw_imap(step.user)
        du.select(raw, b"Receipts")
        assert raw.command(b"UID STORE 1:3 FLAGS.SILENT (\\Seen \\Flagged "
                           b"$Forwarded)")[0] == "OK"
        assert raw.command(b"UID STORE 4 +FLAGS.SILENT (\\Deleted)")[0] \
            == "OK"
        assert raw.command(b"UID EXPUNGE 4")[0] == "OK"
        raw.close()
        for _, data in new[4:8]:
            r = du.lmtp_deliver(dovecot, [step.user], data)
            assert r[step.user][0] == 250, r
        status, err = du.lda(dovecot, step.user, new[8][1], "Grüße")
        assert status == 0, err
        step.total += 4 - 3 - 1 - 1 + 4 + 1
        step.sync.run("a")
        step.sync.run("b")
        step.sync.run("a")
        state = converged(step.sync, step.total)
        assert not any("T" in f for msgs in state.values() for _, f in msgs)
        done(step, 5)
