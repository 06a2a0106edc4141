# SPDX-License-Identifier: MIT
"""APPEND and reading mail back: UIDPLUS, MULTIAPPEND, UIDVALIDITY,
SELECT/EXAMINE, STATUS, FETCH, SEARCH, SORT and THREAD.

Mail must come back byte for byte (CRLF-normalised), and every answer that
Dovecot computes from the stored message (ENVELOPE, BODYSTRUCTURE, body
sections, BINARY, SEARCH, SORT, THREAD) must equal what Dovecot's own
maildir gives for the same messages appended the same way (the `oracle`
instance). A representative subset runs over STARTTLS (143 role) and over
implicit TLS (993 role)."""

import re
import time

import pytest

import corpus
from harness import (Literal, append, check, internaldate,
                     internaldate_epoch, literal_plus, list_mailboxes, mbox,
                     parse_fetch, resp_code, status, uid_set)

MESSAGES = corpus.messages()
N = len(MESSAGES)
TLS_MODES = ["starttls", "implicit"]
TZS = [0, 60, -300, 330, 840, -720, 120, -480, 545, -210]


def flags_for(i):
    """Flags and keywords given to corpus message i (0-based) at APPEND."""
    f = []
    if i % 3 == 0:
        f.append("\\Seen")
    if i % 4 == 1:
        f.append("\\Flagged")
    if i % 5 == 2:
        f.append("\\Answered")
    if i % 7 == 3:
        f.append("\\Draft")
    if i % 6 == 4:
        f.append("$Forwarded")
    if i % 8 == 5:
        f.append("Project-X")
    return f


def date_for(i):
    """INTERNALDATE given to corpus message i, with varied zones."""
    return internaldate(2023, 1 + i % 12, 1 + (i * 7) % 28, (i * 5) % 24,
                        (i * 13) % 60, i % 60, TZS[i % len(TZS)])


def append_corpus(raw, mailbox=b"INBOX"):
    """Appends the whole corpus with its exact bytes (imaplib would rewrite
    bare LFs), flags and dates; returns the APPENDUID uids."""
    uids = []
    for i, (_, data) in enumerate(MESSAGES):
        cmd = (b"APPEND " + mailbox + b" (" +
               " ".join(flags_for(i)).encode() + b") " +
               date_for(i).encode() + b" " + literal_plus(data))
        st, text, _ = raw.command(cmd)
        assert st == "OK", (i, st, text)
        m = re.match(r"\[APPENDUID (\d+) (\d+)\]", text)
        assert m, text
        uids.append(int(m.group(2)))
    return uids


def normalise(lines):
    """Untagged FETCH lines with FLAGS sorted and \\Recent dropped (which
    session sees a message as recent is not what is compared here)."""
    def fix(m):
        toks = sorted(t for t in m.group(1).split() if t != b"\\Recent")
        return b"FLAGS (" + b" ".join(toks) + b")"
    return [re.sub(rb"FLAGS \(([^)]*)\)", fix, line) for line in lines]


def compare(a, b, command, ok=True):
    """Runs a command on two RawImap sessions; the tagged status and
    response code and all untagged lines must be equal, and the status OK
    unless ok is False (the answer may then be a NO, as long as it is the
    same NO)."""
    ra = a.command(command)
    rb = b.command(command)
    got = (ra[0], resp_code(ra[1]), normalise(ra[2]))
    want = (rb[0], resp_code(rb[1]), normalise(rb[2]))
    assert got == want, "%r differs from maildir:\n%r\n%r" % (
        command, got, want)
    if ok:
        assert ra[0] == "OK", (command, ra)
    return ra


@pytest.fixture(scope="module")
def loaded(dovecot, oracle):
    """The corpus in INBOX of one user on each instance, appended the same
    way, plus a few STOREs and one EXPUNGE, so flags and UIDs differ from
    the append order a little."""
    users = {}
    for inst in (dovecot, oracle):
        user = inst.new_user()
        raw = inst.raw_imap(user)
        append_corpus(raw)
        for cmd in (b"SELECT INBOX",
                    b"UID STORE 2,4,6 +FLAGS (\\Seen)",
                    b"UID STORE 10:12 +FLAGS (\\Deleted)",
                    b"UID STORE 11 -FLAGS (\\Deleted)",
                    b"UID STORE 13 +FLAGS (NonJunk)",
                    b"EXPUNGE"):
            st, text, _ = raw.command(cmd)
            assert st == "OK", (cmd, st, text)
        raw.close()
        users[inst.backend] = user
    return users


def session(inst, loaded, tls="starttls"):
    raw = inst.raw_imap(loaded[inst.backend], tls=tls)
    st, text, _ = raw.command(b"EXAMINE INBOX")
    assert st == "OK", text
    return raw


class TestAppend:
    def test_appenduid_flags_keywords_internaldate(self, dovecot, user):
        # RFC 3501 6.3.11 (flags, date-time), RFC 4315 3 (APPENDUID).
        c = dovecot.imap(user)
        check(c.create(mbox("Box")), "CREATE")
        uidvalidity = status(c, "Box")["UIDVALIDITY"]
        msg = corpus.by_name("plain-short")
        args = [("(\\Seen \\Flagged $Forwarded Project-X)",
                 internaldate(2021, 3, 4, 5, 6, 7, 120)),
                ("(\\Answered \\Draft)", internaldate(1999, 12, 31, 23, 59,
                                                      59, -600)),
                (None, internaldate(2010, 1, 1, 0, 0, 0, 0))]
        uids = []
        for flags, date in args:
            v, uid = append(c, "Box", msg, flags, date)
            assert v == uidvalidity
            uids.append(uid)
        assert uids == sorted(set(uids)), uids
        check(c.select(mbox("Box")), "SELECT")
        permanent = c.untagged_responses.get("OK", [])
        assert any(b"PERMANENTFLAGS" in p and b"\\*" in p
                   for p in permanent), permanent
        typ, data = c.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE)")
        got = parse_fetch(data)
        for seq, (flags, date) in enumerate(args, 1):
            item = got[seq]
            assert item["UID"] == uids[seq - 1]
            want = set(flags.strip("()").split()) if flags else set()
            have = {f.decode() for f in item["FLAGS"]} - {"\\Recent"}
            assert have == want, (seq, have, want)
            assert (internaldate_epoch(item["INTERNALDATE"]) ==
                    internaldate_epoch(date.strip('"'))), item
        # cmd-append.c: a date too far in the future becomes "now".
        before = time.time()
        _, uid = append(c, "Box", msg, None,
                        internaldate(2090, 1, 1, 0, 0, 0, 0))
        typ, data = c.uid("FETCH", str(uid), "(INTERNALDATE)")
        when = internaldate_epoch(list(parse_fetch(data).values())[0]
                                  ["INTERNALDATE"])
        assert before - 5 <= when <= time.time() + 5

    def test_uids_ascend_strictly_across_sessions(self, dovecot, user):
        msg = corpus.by_name("plain-short")
        seen = []
        for tls in TLS_MODES:
            c = dovecot.imap(user, tls=tls)
            for _ in range(3):
                seen.append(append(c, "INBOX", msg)[1])
            c.logout()
        assert seen == sorted(set(seen)) and seen[0] >= 1, seen

    def test_multiappend(self, dovecot, user):
        # RFC 3502 (MULTIAPPEND) with RFC 7888 LITERAL+, answered with one
        # APPENDUID holding a UID set (RFC 4315 3).
        raw = dovecot.raw_imap(user)
        st, text, caps = raw.command(b"CAPABILITY")
        assert b"MULTIAPPEND" in caps[0] and b"UIDPLUS" in caps[0]
        a, b, c = (corpus.by_name(n) for n in
                   ("plain-short", "bare-lf", "alternative"))
        cmd = (b"APPEND INBOX (\\Seen) " +
               internaldate(2022, 2, 2, 2, 2, 2, 0).encode() + b" " +
               literal_plus(a) + b" (\\Flagged $Label1) " + literal_plus(b) +
               b" " + literal_plus(c))
        st, text, _ = raw.command(cmd)
        assert st == "OK", text
        m = re.match(r"\[APPENDUID (\d+) ([0-9:,]+)\]", text)
        assert m, text
        first = uid_set(m.group(2))
        assert len(first) == 3 and first == sorted(set(first)), first
        # Synchronizing literals work the same way.
        st, text, _ = raw.command(b"APPEND INBOX ", Literal(a), b" ",
                                  Literal(c))
        assert st == "OK", text
        second = uid_set(re.match(r"\[APPENDUID \d+ ([0-9:,]+)\]",
                                  text).group(1))
        assert len(second) == 2 and min(second) > max(first)
        st, text, _ = raw.command(b"SELECT INBOX")
        st, text, lines = raw.command(b"UID FETCH 1:* (UID FLAGS "
                                      b"BODY.PEEK[])")
        got = parse_fetch(lines_to_imaplib(lines))
        bodies = [v["BODY[]"] for _, v in sorted(got.items())]
        assert bodies == [corpus.expected(x) for x in (a, b, c, a, c)]
        assert {f.decode() for f in got[2]["FLAGS"]} - {"\\Recent"} == {
            "\\Flagged", "$Label1"}

    def test_failed_multiappend_appends_nothing(self, dovecot, user):
        # RFC 3502 6.3.11: "If the server fails to append any message,
        # none of the messages are appended."
        raw = dovecot.raw_imap(user)
        msg = corpus.by_name("plain-short")
        st, text, _ = raw.command(b"APPEND INBOX ", Literal(msg),
                                  b' "99-Bad-2020 00:00:00 +0000" ',
                                  Literal(msg))
        assert st == "BAD", text
        st, text, lines = raw.command(b"STATUS INBOX (MESSAGES UIDNEXT)")
        assert st == "OK"
        assert b"MESSAGES 0 " in lines[0], lines

    def test_empty_message_is_refused(self, dovecot, user):
        raw = dovecot.raw_imap(user)
        st, text, _ = raw.command(b"APPEND INBOX {0+}\r\n")
        assert st == "NO", text


def lines_to_imaplib(lines):
    """RawImap untagged lines -> the data list parse_fetch() takes."""
    return [re.sub(rb"^\* (\d+) FETCH ", rb"\1 ", line).rstrip(b"\r\n")
            for line in lines if re.match(rb"\* \d+ FETCH ", line)]


class TestUidValidity:
    def test_stable_across_restart_new_after_recreate(self, dovecot, user):
        # RFC 3501 2.3.1.1: UIDVALIDITY stays while UIDs stay valid, and a
        # mailbox deleted and created again gets a new, larger one.
        c = dovecot.imap(user)
        check(c.create(mbox("Keep")), "CREATE")
        append(c, "Keep", corpus.by_name("plain-short"))
        before = {"INBOX": status(c, "INBOX"), "Keep": status(c, "Keep")}
        c.logout()
        dovecot.restart()
        c = dovecot.imap(user, tls="implicit")
        for name, st in before.items():
            assert status(c, name) == st, name
        check(c.delete(mbox("Keep")), "DELETE")
        check(c.create(mbox("Keep")), "CREATE")
        after = status(c, "Keep")
        assert after["UIDVALIDITY"] != before["Keep"]["UIDVALIDITY"]
        assert after["UIDVALIDITY"] > before["Keep"]["UIDVALIDITY"]
        assert after["MESSAGES"] == 0 and after["UIDNEXT"] == 1


def select_transcript(raw, cmd):
    """SELECT/EXAMINE answers without the values that differ between
    stores by design (UIDVALIDITY, MODSEQ lines)."""
    st, text, lines = raw.command(cmd)
    out = []
    for line in lines:
        if b"HIGHESTMODSEQ" in line or b"NOMODSEQ" in line:
            continue
        line = re.sub(rb"\[UIDVALIDITY \d+\]", b"[UIDVALIDITY x]", line)
        m = re.match(rb"(\* (?:OK \[PERMANENTFLAGS|FLAGS) \()([^)]*)(\).*)",
                     line, re.S)
        if m:
            line = m.group(1) + b" ".join(sorted(m.group(2).split())) + \
                m.group(3)
        out.append(line)
    return st, resp_code(text), sorted(out)


class TestSelectStatus:
    def test_select_and_examine_match_maildir(self, dovecot, oracle,
                                              loaded):
        # RFC 3501 6.3.1, 6.3.2: EXISTS, RECENT, FLAGS, PERMANENTFLAGS,
        # UNSEEN, UIDNEXT, UIDVALIDITY and READ-WRITE / READ-ONLY.
        mine = dovecot.raw_imap(loaded[dovecot.backend])
        theirs = oracle.raw_imap(loaded[oracle.backend])
        for cmd in (b"EXAMINE INBOX", b"SELECT INBOX", b"EXAMINE INBOX"):
            a = select_transcript(mine, cmd)
            b = select_transcript(theirs, cmd)
            assert a == b, (cmd, a, b)
        st, code, lines = a
        assert code == "READ-ONLY"
        assert b"* %d EXISTS\r\n" % (N - 2) in lines
        assert b"* OK [UIDNEXT %d] Predicted next UID\r\n" % (N + 1) in lines

    def test_status_of_unselected_mailbox(self, dovecot, oracle, user):
        # RFC 3501 6.3.10; SIZE from RFC 8438 (STATUS=SIZE).
        items = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE RECENT"
        picks = [0, 1, 4, 14, 16, 30]
        results = {}
        for inst in (dovecot, oracle):
            u = user if inst is dovecot else inst.new_user()
            c = inst.imap(u)
            check(c.create(mbox("Folder")), "CREATE")
            raw = inst.raw_imap(u)
            for i in picks:
                name, data = MESSAGES[i]
                cmd = (b'APPEND "Folder" (' + " ".join(flags_for(i))
                       .encode() + b") " + literal_plus(data))
                assert raw.command(cmd)[0] == "OK"
            check(c.select("INBOX"), "SELECT INBOX")
            st1 = status(c, "Folder", items)
            raw2 = inst.raw_imap(u)
            assert raw2.command(b'SELECT "Folder"')[0] == "OK"
            assert raw2.command(b"UID STORE 1 +FLAGS.SILENT (\\Deleted)")[0] \
                == "OK"
            assert raw2.command(b"EXPUNGE")[0] == "OK"
            raw2.close()
            st2 = status(c, "Folder", items)
            results[inst.backend] = (st1, st2)
        sizes = [len(corpus.expected(MESSAGES[i][1])) for i in picks]
        unseen = [i for i in picks if "\\Seen" not in flags_for(i)]
        st1, st2 = results[dovecot.backend]
        assert st1["MESSAGES"] == len(picks)
        assert st1["UIDNEXT"] == len(picks) + 1
        assert st1["UNSEEN"] == len(unseen)
        assert st1["SIZE"] == sum(sizes)
        assert st2["MESSAGES"] == len(picks) - 1
        assert st2["UIDNEXT"] == len(picks) + 1
        assert st2["SIZE"] == sum(sizes[1:])
        assert st2["UIDVALIDITY"] == st1["UIDVALIDITY"]
        for k in st1:
            if k != "UIDVALIDITY":
                assert st1[k] == results[oracle.backend][0][k], k
                assert st2[k] == results[oracle.backend][1][k], k


class TestFetch:
    @pytest.mark.parametrize("tls", TLS_MODES)
    def test_corpus_round_trip(self, dovecot, user, tls):
        # The stored message is the received one, CRLF-normalised;
        # RFC822.SIZE is its length (RFC 3501 6.4.5).
        raw = dovecot.raw_imap(user, tls=tls)
        uids = append_corpus(raw)
        assert uids == list(range(1, N + 1))
        raw.close()
        c = dovecot.imap(user, tls=tls)
        check(c.select("INBOX", readonly=True), "EXAMINE")
        typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[] "
                                          "INTERNALDATE)")
        got = parse_fetch(data)
        assert len(got) == N
        for seq in range(1, N + 1):
            name, raw_msg = MESSAGES[seq - 1]
            want = corpus.expected(raw_msg)
            item = got[seq]
            assert item["UID"] == seq
            assert item["BODY[]"] == want, name
            assert item["RFC822.SIZE"] == len(want), name
            assert (internaldate_epoch(item["INTERNALDATE"]) ==
                    internaldate_epoch(date_for(seq - 1).strip('"'))), name

    @pytest.mark.parametrize("tls", TLS_MODES)
    def test_structure_matches_maildir(self, dovecot, oracle, loaded, tls):
        # RFC 3501 7.4.2: ENVELOPE, BODYSTRUCTURE, BODY are computed from
        # the stored message; they must equal maildir's.
        a = session(dovecot, loaded, tls)
        b = session(oracle, loaded, tls)
        compare(a, b, b"UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE "
                      b"BODYSTRUCTURE BODY)")

    def test_sections_match_maildir(self, dovecot, oracle, loaded):
        # RFC 3501 6.4.5 body sections, partial fetches; RFC 3516 BINARY.
        a = session(dovecot, loaded)
        b = session(oracle, loaded)
        st, _, lines = a.command(b"UID SEARCH ALL")
        uids = [int(x) for x in lines[0].split()[2:]]
        groups = [
            b"(BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.100> BODY.PEEK[1] "
            b"BODY.PEEK[1.MIME] RFC822.HEADER)",
            b"(BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)] "
            b"BODY.PEEK[HEADER.FIELDS.NOT (Received X-Trace-001)] "
            b"BODY.PEEK[]<10.200> BODY.PEEK[TEXT]<5000.3>)",
            b"(BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[1.1] "
            b"BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[1.2.1])",
            b"(BINARY.PEEK[1])",
            b"(BINARY.PEEK[1]<3.50>)",
            b"(BINARY.PEEK[2])",
            b"(BINARY.PEEK[1.2.2])",
        ]
        for uid in uids:
            for items in groups:
                compare(a, b, b"UID FETCH %d %s" % (uid, items),
                        ok=b"BINARY" not in items)

    def test_binary_size_is_the_decoded_length(self, dovecot, loaded):
        # RFC 3516 4.2: BINARY.SIZE is the size of the decoded section.
        # Not compared with maildir: Dovecot's maildir and sdbox answer
        # BINARY.SIZE[1] of a multipart part 1 with a wrong number (405
        # for corpus "nested", whose BINARY[1] has 1884 octets), so only
        # leaf parts are checked here.
        c = dovecot.imap(loaded[dovecot.backend])
        check(c.select("INBOX", readonly=True), "EXAMINE")
        typ, data = c.uid("FETCH", "1:*", "(UID BODYSTRUCTURE)")
        checked = 0
        for item in parse_fetch(data).values():
            bs = item["BODYSTRUCTURE"]
            part1 = bs[0] if isinstance(bs[0], list) else bs
            if isinstance(part1[0], list):
                continue            # part 1 is itself a multipart
            typ, data = c.uid("FETCH", str(item["UID"]),
                              "(BINARY.SIZE[1] BINARY.PEEK[1])")
            if typ != "OK":
                # UNKNOWN-CTE (compared with maildir); imaplib keeps the
                # untagged part of a failed FETCH: drop it.
                c.untagged_responses.pop("FETCH", None)
                continue
            got = [v for v in parse_fetch(data).values()
                   if v["UID"] == item["UID"]][0]
            assert got["BINARY.SIZE[1]"] == len(got["BINARY[1]"]), item
            checked += 1
        assert checked > N // 2

    def test_fetch_body_sets_seen(self, dovecot, oracle, user):
        # RFC 3501 6.4.5: BODY[] (not PEEK) sets \Seen.
        results = []
        for inst in (dovecot, oracle):
            u = user if inst is dovecot else inst.new_user()
            raw = inst.raw_imap(u)
            raw.command(b"APPEND INBOX " +
                        literal_plus(corpus.by_name("alternative")))
            raw.command(b"SELECT INBOX")
            st, _, lines = raw.command(b"FETCH 1 (BODY[1])")
            st2, _, lines2 = raw.command(b"FETCH 1 (FLAGS)")
            results.append((st, normalise(lines), normalise(lines2)))
        assert results[0] == results[1]
        assert b"\\Seen" in results[0][2][0]


class TestDelivery:
    def test_lmtp_delivery_keeps_the_body(self, dovecot, user):
        # RFC 2033 over the 24 role: the body arrives unchanged (no dot
        # stuffing left, bare LFs as CRLF); LMTP prepends trace headers.
        names = ["dot-lines", "bare-lf", "utf8-body", "nested"]
        for name in names:
            result = dovecot.lmtp_deliver([user, "nosuchuser"],
                                          corpus.by_name(name))
            assert result[user][0] == 250, result
            assert result["nosuchuser"][0] == 550, result
        c = dovecot.imap(user)
        check(c.select("INBOX", readonly=True), "EXAMINE")
        typ, data = c.fetch("1:*", "(BODY.PEEK[TEXT] BODY.PEEK[HEADER])")
        got = parse_fetch(data)
        assert len(got) == len(names)
        for seq, name in enumerate(names, 1):
            want = corpus.expected(corpus.by_name(name))
            assert want.endswith(got[seq]["BODY[TEXT]"]), name
            assert b"Delivered-To: " + user.encode() in \
                got[seq]["BODY[HEADER]"]
        out = dovecot.doveadm("search", "-u", user, "mailbox", "INBOX",
                              "ALL")
        assert len(out.splitlines()) == len(names)


SEARCHES = [
    b"ALL", b"SEEN", b"UNSEEN", b"FLAGGED", b"UNFLAGGED", b"ANSWERED",
    b"UNANSWERED", b"DRAFT", b"UNDRAFT", b"DELETED", b"UNDELETED",
    b"KEYWORD $Forwarded", b"KEYWORD Project-X", b"UNKEYWORD Project-X",
    b"KEYWORD NonJunk", b"KEYWORD NeverUsed",
    b"HEADER Message-ID thread", b"HEADER X-Trace-005 relay5",
    b'HEADER Content-Type "multipart/mixed"', b'HEADER In-Reply-To ""',
    b'HEADER X-Empty ""', b"SUBJECT kickoff", b'SUBJECT "Re:"',
    b"SUBJECT caf", b"FROM alice", b"FROM example.com", b'FROM "Doe, John"',
    b"TO bob", b"TO undisclosed", b"CC anna", b"BCC Empty",
    b"BODY needle", b"BODY haystack-needle", b'BODY "Original text"',
    b"TEXT Alice", b"TEXT X-Trace-149", b"BODY VEVENT",
    b"SINCE 1-Jun-2023", b"BEFORE 1-Mar-2023", b"ON 2-Jan-2023",
    b"SENTSINCE 1-Jul-2023", b"SENTBEFORE 1-Jan-2000", b"SENTON 6-Mar-2023",
    b"LARGER 100000", b"SMALLER 300", b"LARGER 1000000", b"SMALLER 1",
    b"UID 1:10", b"UID 5,7,9:11", b"UID 40:*", b"1:5", b"*",
    b"NOT SEEN", b"OR FLAGGED SEEN", b"OR FROM bob SUBJECT Budget",
    b"NOT (OR DRAFT ANSWERED)", b"(FROM example.org LARGER 5000) UNSEEN",
    b"SEEN SINCE 1-Jan-2023 BEFORE 1-Jan-2024 NOT KEYWORD $Forwarded",
]
UTF8_SEARCHES = [("SUBJECT", "Grüße"), ("FROM", "Jürgen"),
                 ("BODY", "Brücke"), ("BODY", "crème"), ("TEXT", "東京"),
                 ("SUBJECT", "Über die Brücke"), ("TO", "山田")]


class TestSearchSortThread:
    def test_search_matches_maildir(self, dovecot, oracle, loaded):
        # RFC 3501 6.4.4.
        a = session(dovecot, loaded)
        b = session(oracle, loaded)
        for crit in SEARCHES:
            compare(a, b, b"UID SEARCH " + crit)
            compare(a, b, b"SEARCH " + crit)
        for key, value in UTF8_SEARCHES:
            v = value.encode()
            compare(a, b, b"UID SEARCH CHARSET UTF-8 " + key.encode() +
                    b" " + literal_plus(v))

    def test_search_answers_are_right(self, dovecot, loaded):
        # Independent of the oracle: sizes and flags are known.
        c = dovecot.imap(loaded[dovecot.backend])
        check(c.select("INBOX", readonly=True), "EXAMINE")
        typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
        sizes = {v["UID"]: v["RFC822.SIZE"] for v in parse_fetch(data)
                 .values()}
        for uid, size in sizes.items():
            assert size == len(corpus.expected(MESSAGES[uid - 1][1]))
        typ, data = c.uid("SEARCH", "LARGER", "100000")
        assert {int(x) for x in data[0].split()} == {
            u for u, s in sizes.items() if s > 100000}
        typ, data = c.uid("SEARCH", "KEYWORD", "Project-X")
        assert {int(x) for x in data[0].split()} == {
            u for u in sizes if "Project-X" in flags_for(u - 1)}
        typ, data = c.uid("SEARCH", "HEADER", "Message-ID",
                          "<thread-r11@sqlbox.test>")
        assert [int(x) for x in data[0].split()] == [
            1 + [n for n, _ in MESSAGES].index("thread-r11")]

    SORTS = [b"(ARRIVAL)", b"(DATE)", b"(SUBJECT)", b"(FROM)", b"(SIZE)",
             b"(TO)", b"(CC)", b"(REVERSE DATE)", b"(REVERSE SIZE)",
             b"(SUBJECT DATE)", b"(REVERSE ARRIVAL)", b"(DISPLAYFROM)",
             b"(DISPLAYTO)", b"(REVERSE SUBJECT FROM)"]

    def test_sort_matches_maildir(self, dovecot, oracle, loaded):
        # RFC 5256 3 (SORT), RFC 5957 (DISPLAYFROM, DISPLAYTO).
        a = session(dovecot, loaded)
        b = session(oracle, loaded)
        for crit in self.SORTS:
            compare(a, b, b"SORT " + crit + b" UTF-8 ALL")
            compare(a, b, b"UID SORT " + crit + b" UTF-8 UNSEEN")

    def test_sort_by_size_is_right(self, dovecot, loaded):
        c = dovecot.imap(loaded[dovecot.backend])
        check(c.select("INBOX", readonly=True), "EXAMINE")
        typ, data = c.uid("SORT", "(SIZE)", "UTF-8", "ALL")
        uids = [int(x) for x in data[0].split()]
        keys = [(len(corpus.expected(MESSAGES[u - 1][1])), u) for u in uids]
        assert keys == sorted(keys)

    def test_thread_matches_maildir(self, dovecot, oracle, loaded):
        # RFC 5256 4: REFERENCES and ORDEREDSUBJECT; REFS (Dovecot).
        a = session(dovecot, loaded)
        b = session(oracle, loaded)
        for algo in (b"REFERENCES", b"ORDEREDSUBJECT", b"REFS"):
            compare(a, b, b"THREAD " + algo + b" UTF-8 ALL")
            compare(a, b, b"UID THREAD " + algo + b" UTF-8 SEEN")

    def test_thread_references_tree(self, dovecot, loaded):
        # The reply tree of corpus messages thread-*: root -> (r1 -> r11 ->
        # r111), r2 (RFC 5256 4 notation).
        c = dovecot.imap(loaded[dovecot.backend])
        check(c.select("INBOX", readonly=True), "EXAMINE")
        typ, data = c.uid("THREAD", "REFERENCES", "UTF-8", "ALL")
        names = [n for n, _ in MESSAGES]
        u = {n: names.index(n) + 1 for n in names}
        want = "(%d (%d %d %d)(%d))" % (
            u["thread-root"], u["thread-r1"], u["thread-r11"],
            u["thread-r111"], u["thread-r2"])
        assert want.encode() in data[0], data[0]
        assert ("(%d %d)" % (u["thread-irt-only-root"],
                             u["thread-irt-only-reply"])).encode() in data[0]


def test_capabilities_after_login(dovecot, user):
    # What the corpus tests rely on, as announced after login.
    raw = dovecot.raw_imap(user, tls="implicit")
    st, text, lines = raw.command(b"CAPABILITY")
    caps = set(lines[0].split()[2:])
    for cap in (b"UIDPLUS", b"MULTIAPPEND", b"LITERAL+", b"BINARY",
                b"SORT", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT",
                b"SPECIAL-USE", b"STATUS=SIZE", b"ESEARCH", b"MOVE"):
        assert cap in caps, cap
    # DESIGN.md 7: no NOTIFY (mailbox_list_index = no).
    assert b"NOTIFY" not in caps
    assert "INBOX" in list_mailboxes(dovecot.imap(user))
