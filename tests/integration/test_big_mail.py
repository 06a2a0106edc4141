# SPDX-License-Identifier: MIT
"""Big messages and bounded memory.

With sqlbox_max_message_size = 100M and Dovecot's default vsz_limit
(256M, which already caps what a process can hold), a 50 MB message
(text, a base64 attachment, text) is stored from IMAP APPEND and from one
LMTP delivery: one body whose chunks (PLUGIN.md: 256 KiB body_chunks rows
in seq order) hold exactly its bytes, with the right physical_size and
SHA-256; read back byte-identical with BODY.PEEK[], with partial fetches
BODY.PEEK[2]<offset.length> at offsets around chunk boundaries and the
end, and BINARY.PEEK[2]<..> (RFC 3516) decoding the attachment. The imap
process's peak memory (VmHWM) stays well below twice the message.

A message one byte over a (per-user, small) limit is refused with
NO [LIMIT] (RFC 5530) and leaves nothing behind; one at the limit is
stored.

Reading mail repeatedly in one session must not make the imap process
grow: each open of a message stream must give its memory back.
"""

import base64
import hashlib
import random
import re

import pytest

import deliveryutil as du
from harness import (Literal, backend_under_test, literal_plus,
                     memory_is_measurable)

if backend_under_test() != "sqlbox":
    pytest.skip("sqlbox limits and SQL layout", allow_module_level=True)

MB = 1024 * 1024
BIG = (120 if du.SLOW else 50) * MB
CHUNK = 256 * 1024
DOVECOT_OPTIONS = {
    "extra_conf": "plugin {\n  sqlbox_max_message_size = 100M\n}\n"
    if not du.SLOW else "plugin {\n  sqlbox_max_message_size = 200M\n}\n",
}


def build_big(size, seed=50):
    """(message, part 2's body as it appears in the message, the
    attachment's decoded bytes): multipart/mixed with a text part of about
    1 MB, a base64 attachment filling the rest, and a short text part."""
    rng = random.Random(seed)
    head = (b"From: Big Sender <big@example.org>\r\nTo: you@example.net\r\n"
            b"Subject: a %d byte message\r\nDate: Mon, 02 Jan 2023 09:15:00 "
            b"+0000\r\nMessage-ID: <big-%d@sqlbox.test>\r\nMIME-Version: 1.0"
            b"\r\nContent-Type: multipart/mixed; boundary=\"big-boundary\"\r\n"
            b"\r\n" % (size, size))
    words = [w.encode() for w in du.VOCAB]
    lines = []
    for _ in range(14000):
        lines.append(b" ".join(rng.choice(words) for _ in range(11))[:72])
    text = b"\r\n".join(lines) + b"\r\n"
    part1 = (b"--big-boundary\r\nContent-Type: text/plain; charset=us-ascii"
             b"\r\n\r\n" + text)
    part2_head = (b"--big-boundary\r\nContent-Type: application/octet-stream;"
                  b" name=\"data.bin\"\r\n"
                  b"Content-Transfer-Encoding: base64\r\n"
                  b"Content-Disposition: attachment; filename=\"data.bin\""
                  b"\r\n\r\n")
    tail = (b"--big-boundary\r\nContent-Type: text/plain\r\n\r\n"
            b"The end.\r\n--big-boundary--\r\n")
    room = size - len(head) - len(part1) - len(part2_head) - len(tail)
    # base64 lines of 76 characters + CRLF carry 57 bytes each.
    n_lines = room // 78
    blob = rng.randbytes(n_lines * 57)
    encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    assert len(encoded) == n_lines * 78
    pad = room - len(encoded)
    # Pad the first part's text so the total is exactly size.
    part1 = part1[:-2] + b"x" * pad + b"\r\n" if pad else part1
    msg = head + part1 + part2_head + encoded + tail
    assert len(msg) == size, (len(msg), size)
    # Part 2's body ends before the CRLF that precedes the next boundary
    # (RFC 2046 5.1.1).
    return msg, encoded[:-2], blob


@pytest.fixture(scope="module")
def big():
    return build_big(BIG)


def imap_pid(inst, mark):
    """The pid of the imap process of the last login after log offset
    mark."""
    pids = re.findall(r"imap-login: Info: Login: .*?mpid=(\d+)",
                      inst.log_text(mark))
    assert pids, inst.log_text(mark)
    return int(pids[-1])


def proc_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^%s:\s+(\d+) kB" % field, f.read(),
                             re.M).group(1))


def check_stored(inst, user, want):
    """The body rows of the user's one message hold exactly `want`."""
    rows = inst.sql(user, "SELECT b.id, b.refcount, b.physical_size, "
                    "b.sha256 FROM messages m JOIN bodies b ON b.id = "
                    "m.body_id")
    assert len(rows) == 1, rows
    body_id, refcount, size, sha = rows[0]
    assert inst.sql(user, "SELECT count(*) FROM bodies")[0][0] == 1
    assert (refcount, size) == (1, len(want)), rows
    assert sha == hashlib.sha256(want).hexdigest()
    chunks = inst.sql(user, "SELECT seq, length(data) FROM body_chunks "
                      "WHERE body_id = ? ORDER BY seq", [body_id])
    seqs = [c[0] for c in chunks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs[:10]
    assert len(chunks) == -(-len(want) // CHUNK), len(chunks)
    assert all(n == CHUNK for _, n in chunks[:-1]), chunks[:3]
    assert sum(n for _, n in chunks) == len(want)
    assert inst.sql(user, "SELECT count(*) FROM body_chunks")[0][0] == \
        len(chunks)
    assert du.body_bytes(inst, user, body_id) == want


def check_read_back(inst, user, want, part2, blob, mark):
    """BODY.PEEK[] and partial fetches of part 2 give the stored bytes;
    the imap process's peak memory stays below twice the message."""
    raw = inst.raw_imap(user)
    pid = imap_pid(inst, mark)
    assert du.select(raw, examine=True) == 1
    got = du.fetch_all(raw, b"(UID RFC822.SIZE BODY.PEEK[])")
    item = list(got.values())[0]
    assert item["RFC822.SIZE"] == len(want)
    assert item["BODY[]"] == want
    del got, item
    start = want.index(part2)
    offsets = [0, 1, 77, 1000003]
    # Partial fetches that straddle chunk boundaries of the stored body.
    for k in (3, 4, 57, len(want) // CHUNK - 1):
        boundary = k * CHUNK - start
        if 0 < boundary < len(part2):
            offsets += [boundary - 50, boundary, boundary - 1]
    offsets += [len(part2) - 70, len(part2) - 1, len(part2)]
    for off in offsets:
        for length in (100, CHUNK + 3):
            got = du.fetch_all(raw, b"(UID BODY.PEEK[2]<%d.%d>)"
                               % (off, length))
            value = list(got.values())[0]["BODY[2]<%d>" % off]
            assert value == part2[off:off + length], (off, length)
    for off in (0, 57 * 1000, len(blob) - 10):
        got = du.fetch_all(raw, b"(UID BINARY.PEEK[2]<%d.4096>)" % off)
        value = list(got.values())[0]["BINARY[2]<%d>" % off]
        assert value == blob[off:off + 4096], off
    hwm = proc_kb(pid, "VmHWM") * 1024
    raw.close()
    if memory_is_measurable():
        assert hwm < 2 * len(want), "imap VmHWM %d bytes for a %d byte " \
            "message" % (hwm, len(want))
    return hwm


class TestBigMessage:
    def test_append_50mb(self, dovecot, user, big):
        msg, part2, blob = big
        mark = dovecot.log_size()
        raw = dovecot.raw_imap(user)
        pid = imap_pid(dovecot, mark)
        st, text, _ = raw.command(b"APPEND INBOX " + literal_plus(msg))
        assert st == "OK", text
        assert re.match(r"\[APPENDUID \d+ 1\]", text), text
        append_hwm = proc_kb(pid, "VmHWM") * 1024
        raw.close()
        if memory_is_measurable():
            assert append_hwm < 2 * len(msg), append_hwm
        check_stored(dovecot, user, msg)
        check_read_back(dovecot, user, msg, part2, blob, dovecot.log_size())

    def test_lmtp_50mb(self, dovecot, user, big):
        msg, part2, blob = big
        mark = dovecot.log_size()
        r = du.lmtp_deliver(dovecot, [user], msg)
        assert r[user][0] == 250, r
        pids = re.findall(r"lmtp\((\d+)\): Info: Connect from",
                          dovecot.log_text(mark))
        got = du.fetch_all_bodies(dovecot, user)
        assert len(got) == 1
        stored = got[0]
        du.check_delivered(stored, msg, user)
        check_stored(dovecot, user, stored)
        check_read_back(dovecot, user, stored, part2, blob,
                        dovecot.log_size())
        if pids and memory_is_measurable():
            try:
                hwm = proc_kb(int(pids[-1]), "VmHWM") * 1024
            except FileNotFoundError:
                hwm = 0             # the lmtp process has gone
            assert hwm < 2 * len(msg), hwm


class TestLimit:
    def test_one_byte_over_is_refused(self, dovecot, user):
        # A per-user limit through a userdb field; RFC 5530 [LIMIT].
        limit = 1 * MB
        du.set_userdb_fields(dovecot, user,
                             {"sqlbox_max_message_size": str(limit)})
        over = build_big(limit + 1, seed=1)[0]
        exact = build_big(limit, seed=2)[0]
        raw = dovecot.raw_imap(user)
        for cmd in ([b"APPEND INBOX " + literal_plus(over)],
                    [b"APPEND INBOX ", Literal(over)],
                    [b"APPEND INBOX (\\Seen) " + literal_plus(over) + b" " +
                     literal_plus(exact)]):
            st, text, _ = raw.command(*cmd)
            assert st == "NO" and text.startswith("[LIMIT]"), (st, text)
        assert dovecot.sql(user, "SELECT (SELECT count(*) FROM messages), "
                           "(SELECT count(*) FROM bodies), (SELECT count(*) "
                           "FROM body_chunks)") == [[0, 0, 0]]
        st, text, _ = raw.command(b"APPEND INBOX " + literal_plus(exact))
        assert st == "OK", text
        raw.close()
        check_stored(dovecot, user, exact)


class TestMemory:
    def test_reading_mail_does_not_grow_the_process(self, dovecot, user):
        # Every message read opens a body stream; closing it must give
        # the memory back. 300 messages read 12 times over = 3600 opens.
        #
        # FAILS with the current plugin (reported): each opened body
        # stream leaks its 8 KiB read buffer, because
        # plugin/sqlbox-istream.c's i_stream_sqlbox_body_destroy() replaces
        # the default destroy without calling i_stream_free_buffer()
        # (valgrind: memarea_init <- i_stream_try_alloc <-
        # i_stream_sqlbox_body_read, definitely lost). Over about 30000
        # message reads a session reaches vsz_limit and dies ("Fatal:
        # pool_system_malloc(8192): Out of memory"). With that one call
        # added this test passes.
        raw = dovecot.raw_imap(user)
        msgs = du.generate(300, seed=77, max_size=3000)
        for _, data in msgs:
            assert raw.command(b"APPEND INBOX " + literal_plus(data))[0] \
                == "OK"
        raw.close()
        mark = dovecot.log_size()
        raw = dovecot.raw_imap(user)
        pid = imap_pid(dovecot, mark)
        du.select(raw, examine=True)
        # Warm up (index, caches), then measure.
        raw.command(b"UID FETCH 1:* (BODY.PEEK[HEADER] BODYSTRUCTURE)")
        before = proc_kb(pid, "VmSize")
        for i in range(4):
            assert raw.command(b"UID FETCH 1:* (BODY.PEEK[])")[0] == "OK"
            assert raw.command(b"UID SEARCH BODY nosuchword%d" % i)[0] \
                == "OK"
            assert raw.command(b"UID SEARCH HEADER X-None x%d" % i)[0] \
                == "OK"
        grown = proc_kb(pid, "VmSize") - before
        raw.close()
        # Dovecot's maildir grows by about 0.3 MB here.
        assert grown < 8 * 1024, (
            "the imap process grew by %d kB over 3600 message reads "
            "(%.1f kB per read)" % (grown, grown / 3600.0))
