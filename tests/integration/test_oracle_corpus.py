# SPDX-License-Identifier: MIT
"""A corpus of 550+ varied messages (corpus.py's hand-made ones plus
deliveryutil.generate()'s seeded MIME trees, charsets, transfer encodings,
threads, odd headers, 8-bit and sizes) appended the same way to sqlbox and
to Dovecot's own maildir (the `oracle` instance): every answer Dovecot
computes from the stored message must be the same, message by message.

- FETCH ENVELOPE, BODYSTRUCTURE, BODY, RFC822.SIZE, FLAGS (RFC 3501
  7.4.2) and body sections: HEADER, TEXT, 1, 1.MIME, 2, 2.MIME, 1.1,
  1.2, 2.1, HEADER.FIELDS(.NOT), partial ranges, BINARY (RFC 3516),
  INTERNALDATE (as a point in time);
- BODY[] is the appended message, CRLF-normalised, on both;
- SEARCH (RFC 3501 6.4.4) with headers, bodies in several charsets,
  sizes, dates, flags, keywords and boolean combinations; ESEARCH
  (RFC 4731); SORT and THREAD (RFC 5256).

FETCH runs over UID ranges, not message by message.
"""

import re

import pytest

import corpus
import deliveryutil as du
from harness import (internaldate, internaldate_epoch, literal_plus,
                     sqlbox_only)

N_GENERATED = 1500 if du.SLOW else 500
MESSAGES = corpus.messages() + du.generate(N_GENERATED, seed=5322,
                                           max_size=150000)
N = len(MESSAGES)
RANGE = 100
TZS = [0, 60, -300, 330, 840, -720, 120, -480, 545, -210]


def flags_for(i):
    f = []
    for mod, rem, flag in ((3, 0, "\\Seen"), (4, 1, "\\Flagged"),
                           (5, 2, "\\Answered"), (7, 3, "\\Draft"),
                           (6, 4, "$Forwarded"), (8, 5, "Project-X"),
                           (11, 6, "$Junk"), (13, 7, "\\Deleted")):
        if i % mod == rem:
            f.append(flag)
    return f


def date_for(i):
    return internaldate(2018 + i % 7, 1 + i % 12, 1 + (i * 7) % 28,
                        (i * 5) % 24, (i * 13) % 60, i % 60,
                        TZS[i % len(TZS)])


@pytest.fixture(scope="module")
def loaded(dovecot, oracle):
    """{backend: user} with the corpus in INBOX, appended with the same
    flags and dates through LITERAL+ (exact bytes)."""
    users = {}
    for inst in (dovecot, oracle):
        user = inst.new_user()
        raw = inst.raw_imap(user)
        for i, (name, data) in enumerate(MESSAGES):
            st, text, _ = raw.command(
                b"APPEND INBOX (" + " ".join(flags_for(i)).encode() + b") " +
                date_for(i).encode() + b" " + literal_plus(data))
            assert st == "OK", (inst.backend, name, text)
            m = re.match(r"\[APPENDUID \d+ (\d+)\]", text)
            assert m and int(m.group(1)) == i + 1, (name, text)
        raw.close()
        users[inst.backend] = user
    return users


def sessions(dovecot, oracle, loaded):
    a = dovecot.raw_imap(loaded[dovecot.backend])
    b = oracle.raw_imap(loaded[oracle.backend])
    for r in (a, b):
        assert du.select(r, examine=True) == N
    return a, b


def normalise(line):
    """FLAGS sorted and without \\Recent; charset parameter values in
    lower case. Dovecot itself answers a part's `charset="US-ASCII"` as
    "US-ASCII" when it parses the message and as "us-ascii" once its cache
    records the part as plain 7-bit ASCII (index-mail.c's fixed
    BODYSTRUCTURE): maildir with a fresh index gives "US-ASCII" once,
    then "us-ascii". sqlbox's in-memory cache starts empty, so the case
    of that one value depends on the cache, not on the store."""
    def fix(m):
        toks = sorted(t for t in m.group(1).split() if t != b"\\Recent")
        return b"FLAGS (" + b" ".join(toks) + b")"
    line = re.sub(rb"FLAGS \(([^)]*)\)", fix, line)
    return re.sub(rb'("charset" )("[^"]*")',
                  lambda m: m.group(1) + m.group(2).lower(), line,
                  flags=re.I)


def by_uid(lines):
    """Untagged FETCH lines -> {uid: [normalised lines]} (a FETCH may
    answer one message in more than one line); other lines under 0."""
    out = {}
    for line in lines:
        m = re.match(rb"\* \d+ FETCH \(.*?\bUID (\d+)", line, re.S)
        key = int(m.group(1)) if m else 0
        out.setdefault(key, []).append(normalise(line))
    return out


def compare_fetch(a, b, items):
    """UID FETCH items over ranges of RANGE UIDs on both sessions; the
    tagged status and every message's answer must be equal. Returns the
    number of messages compared."""
    diffs = []
    for start in range(1, N + 1, RANGE):
        cmd = b"UID FETCH %d:%d (UID %s)" % (start, min(N, start + RANGE - 1),
                                             items)
        ra = a.command(cmd)
        rb = b.command(cmd)
        assert ra[0] == rb[0], (cmd, ra[:2], rb[:2])
        ga, gb = by_uid(ra[2]), by_uid(rb[2])
        for uid in sorted(set(ga) | set(gb)):
            if ga.get(uid) != gb.get(uid):
                name = MESSAGES[uid - 1][0] if uid else "(untagged)"
                diffs.append((uid, name, ga.get(uid), gb.get(uid)))
    if diffs:
        uid, name, mine, theirs = diffs[0]
        raise AssertionError(
            "%s: %d messages differ from maildir (UIDs %s); first: UID %d "
            "(%s)\nsqlbox:  %r\nmaildir: %r" % (
                items.decode(), len(diffs), [d[0] for d in diffs][:40], uid,
                name, (mine or [b""])[0][:3000],
                (theirs or [b""])[0][:3000]))
    return N


class TestCorpusMatchesMaildir:
    def test_bodies_are_the_appended_bytes(self, dovecot, oracle, loaded):
        a, b = sessions(dovecot, oracle, loaded)
        for start in range(1, N + 1, RANGE):
            uids = b"%d:%d" % (start, min(N, start + RANGE - 1))
            for r in (a, b):
                got = du.fetch_all(r, b"(UID RFC822.SIZE BODY.PEEK[])", uids)
                for uid, item in got.items():
                    name, raw = MESSAGES[uid - 1]
                    want = corpus.expected(raw)
                    assert item["BODY[]"] == want, (r is a, name)
                    assert item["RFC822.SIZE"] == len(want), (r is a, name)

    def test_structure(self, dovecot, oracle, loaded):
        a, b = sessions(dovecot, oracle, loaded)
        compare_fetch(a, b, b"FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY")
        # The corpus is varied: many distinct structures.
        st, _, lines = b.command(b"UID FETCH 1:* (BODYSTRUCTURE)")
        shapes = {re.sub(rb"^\* \d+ FETCH ", b"", l) for l in lines}
        assert len(shapes) > N // 3, len(shapes)

    @pytest.mark.parametrize("items", [
        b"BODY.PEEK[HEADER] BODY.PEEK[TEXT]",
        b"BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.MIME]",
        b"BODY.PEEK[1.1] BODY.PEEK[1.2] BODY.PEEK[2.1] BODY.PEEK[1.1.MIME] "
        b"BODY.PEEK[3] BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT]",
        b"BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID "
        b"References In-Reply-To Content-Type X-Long-Header)] "
        b"BODY.PEEK[HEADER.FIELDS.NOT (Received X-Trace-001 Subject)]",
        b"BODY.PEEK[]<0.100> BODY.PEEK[TEXT]<100.2000> "
        b"BODY.PEEK[1]<7.70> BODY.PEEK[]<50000.1000>",
        b"RFC822.HEADER RFC822.TEXT",
        b"BINARY.PEEK[1] BINARY.PEEK[1]<3.50>",
        b"BINARY.PEEK[2] BINARY.PEEK[1.1]<0.500>",
    ], ids=["header-text", "parts-1-2", "nested-parts", "header-fields",
            "partial", "rfc822", "binary-1", "binary-2"])
    def test_sections(self, dovecot, oracle, loaded, items):
        a, b = sessions(dovecot, oracle, loaded)
        compare_fetch(a, b, items)

    def test_binary_size_is_the_decoded_length(self, dovecot, loaded):
        # RFC 3516 4.2. Not compared with maildir: Dovecot's maildir
        # answers BINARY.SIZE[1] of a multipart part 1 with a wrong number
        # (405 for corpus "nested", whose BINARY[1] has 1884 octets; see
        # test_append_fetch.py), so in the suite's self-check mode this
        # is skipped.
        sqlbox_only(dovecot)
        raw = dovecot.raw_imap(loaded[dovecot.backend])
        du.select(raw, examine=True)
        checked = 0

        def fetch(uids, part):
            st, _, lines = raw.command(
                b"UID FETCH " + uids + b" (UID BINARY.SIZE[" + part +
                b"] BINARY.PEEK[" + part + b"])")
            got = {}
            for line in lines:
                m = re.match(rb"\* \d+ FETCH ", line)
                if m:
                    vals = du.parse_imap_items(line[m.end():])
                    got[vals["UID"]] = vals
            return st, got

        for part in (b"1", b"2"):
            key = "BINARY[%s]" % part.decode()
            size_key = "BINARY.SIZE[%s]" % part.decode()
            for start in range(1, N + 1, RANGE):
                end = min(N, start + RANGE - 1)
                st, got = fetch(b"%d:%d" % (start, end), part)
                if st != "OK":
                    # A part with an unknown transfer encoding fails the
                    # whole FETCH (NO [UNKNOWN-CTE]): one by one then.
                    got = {}
                    for uid in range(start, end + 1):
                        got.update(fetch(b"%d" % uid, part)[1])
                for uid, vals in got.items():
                    if vals.get(key) is not None and size_key in vals:
                        assert vals[size_key] == len(vals[key]), (uid, part)
                        checked += 1
        assert checked > N, checked

    def test_internaldate(self, dovecot, oracle, loaded):
        # maildir keeps the time, not the zone: compare points in time.
        for inst in (dovecot, oracle):
            raw = inst.raw_imap(loaded[inst.backend])
            du.select(raw, examine=True)
            got = du.fetch_all(raw, b"(UID INTERNALDATE)")
            raw.close()
            assert len(got) == N
            for uid, item in got.items():
                assert internaldate_epoch(item["INTERNALDATE"]) == \
                    internaldate_epoch(date_for(uid - 1).strip('"')), (
                        inst.backend, uid)


SEARCHES = [
    b"ALL", b"SEEN", b"UNSEEN", b"FLAGGED", b"ANSWERED", b"DRAFT",
    b"DELETED", b"UNDELETED", b"KEYWORD $Forwarded", b"KEYWORD Project-X",
    b"KEYWORD $Junk", b"UNKEYWORD $Junk", b"NEW", b"OLD", b"RECENT",
    b"FROM alice", b"FROM example.com", b'FROM "Doe, John"',
    b"FROM juergen", b"FROM yamada", b"TO bob", b"TO undisclosed",
    b"TO anna", b"CC carol", b"CC erin", b"BCC nobody",
    b"SUBJECT report", b'SUBJECT "Re:"', b"SUBJECT Fwd", b"SUBJECT sqlbox",
    b"SUBJECT agenda", b'SUBJECT ""',
    b"HEADER List-Id sqlbox", b"HEADER X-Priority 3", b'HEADER X-Empty ""',
    b"HEADER Message-ID gen-5322-4", b"HEADER References gen-5322-1",
    b'HEADER In-Reply-To ""', b"HEADER X-Long-Header xxxxxxxxxx",
    b'HEADER Content-Type "multipart/mixed"',
    b'HEADER Content-Type "multipart/digest"',
    b"HEADER Content-Transfer-Encoding base64",
    b"BODY meeting", b"BODY invoice", b"BODY VEVENT", b"BODY haystack",
    b"BODY consectetur", b"BODY 5.1.1", b"TEXT sqlbox", b"TEXT X-Priority",
    b"BODY blob.bin", b"TEXT Fwd",
    b"LARGER 100000", b"SMALLER 2000", b"LARGER 20000 SMALLER 60000",
    b"SINCE 1-Jun-2021", b"BEFORE 1-Mar-2019", b"ON 8-Jan-2018",
    b"SENTSINCE 1-Jan-2023", b"SENTBEFORE 1-Jan-2000", b"SENTON 6-Mar-2023",
    b"UID 1:50", b"UID 100:*", b"1:5,7,400:450",
    b"NOT SEEN", b"OR FLAGGED DRAFT", b"OR FROM bob SUBJECT Invoice",
    b"NOT (OR DRAFT ANSWERED)", b"(FROM example.org LARGER 5000) UNSEEN",
    b"SEEN SINCE 1-Jan-2020 BEFORE 1-Jan-2024 NOT KEYWORD $Forwarded",
    b"OR (BODY lorem SMALLER 3000) (HEADER X-Priority 1)",
]
UTF8_SEARCHES = [
    (b"BODY", "Köln"), (b"BODY", "Съешь"), (b"BODY", "日本語"),
    (b"BODY", "€"), (b"BODY", "你好"), (b"BODY", "Καλημέρα"),
    (b"BODY", "“Smart"), (b"TEXT", "テキスト"), (b"BODY", "測試"),
    (b"SUBJECT", "Über"), (b"SUBJECT", "Grüße"), (b"FROM", "Jürgen"),
    (b"FROM", "Zoë"), (b"TO", "山田"), (b"FROM", "François"),
    (b"HEADER X-8bit-Raw", "Ünïcödé"), (b"SUBJECT", "日本"),
]


class TestSearchSortThread:
    def test_search(self, dovecot, oracle, loaded):
        # All queries run in one session, as a client would.
        #
        # FAILS with the current plugin (reported): the sqlbox imap process
        # leaks about 8 KiB per message it reads (see test_big_mail.py
        # TestMemory), so after some 40 header/body searches over the 550
        # messages it reaches vsz_limit (256M) and dies: "Fatal:
        # pool_system_malloc(8192): Out of memory". Each query on its own
        # session gives the same answer as maildir; with the leak fixed
        # this test passes.
        a, b = sessions(dovecot, oracle, loaded)
        nonempty = 0
        queries = [b"UID SEARCH " + q for q in SEARCHES]
        queries += [b"UID SEARCH CHARSET UTF-8 " + k + b" " +
                    literal_plus(v.encode()) for k, v in UTF8_SEARCHES]
        queries += [b"SEARCH RETURN (MIN MAX COUNT) " + q
                    for q in SEARCHES[:12]]
        for cmd in queries:
            ra, rb = a.command(cmd), b.command(cmd)
            got = (ra[0], ra[2])
            want = (rb[0], rb[2])
            if b"RETURN" in cmd:
                got = (ra[0], [re.sub(rb'\(TAG "[^"]*"\)', b"", l)
                               for l in ra[2]])
                want = (rb[0], [re.sub(rb'\(TAG "[^"]*"\)', b"", l)
                                for l in rb[2]])
            assert got == want, "%r differs from maildir:\n%r\n%r" % (
                cmd, got, want)
            assert ra[0] == "OK", (cmd, ra)
            if any(len(l.split()) > 2 for l in ra[2]):
                nonempty += 1
        # The queries mean something: most of them find messages.
        assert nonempty > len(queries) * 2 // 3, nonempty

    def test_sort_and_thread(self, dovecot, oracle, loaded):
        a, b = sessions(dovecot, oracle, loaded)
        for cmd in (b"UID SORT (ARRIVAL) UTF-8 ALL",
                    b"UID SORT (DATE) UTF-8 ALL",
                    b"UID SORT (REVERSE SIZE) UTF-8 ALL",
                    b"UID SORT (SUBJECT DATE) UTF-8 ALL",
                    b"UID SORT (FROM TO) UTF-8 UNSEEN",
                    b"UID SORT (CC REVERSE DATE) UTF-8 ALL",
                    b"UID SORT (DISPLAYFROM) UTF-8 ALL",
                    b"UID THREAD REFERENCES UTF-8 ALL",
                    b"UID THREAD ORDEREDSUBJECT UTF-8 ALL",
                    b"UID THREAD REFS UTF-8 ALL"):
            ra, rb = a.command(cmd), b.command(cmd)
            assert (ra[0], ra[2]) == (rb[0], rb[2]), cmd
            assert ra[0] == "OK", (cmd, ra[:2])
        # Threads exist in the corpus (every 4th generated message is a
        # reply).
        st, _, lines = a.command(b"UID THREAD REFERENCES UTF-8 ALL")
        assert lines[0].count(b"(") < N - 50, lines[0][:300]
