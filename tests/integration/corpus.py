# SPDX-License-Identifier: MIT
"""A deterministic corpus of about 50 RFC 5322 messages for the
integration tests.

messages() returns [(name, bytes)], the same bytes on every call and every
machine (random parts come from a seeded RNG). The set covers what a mail
store must keep exactly: plain and long lines, every common MIME shape
(alternative, mixed with base64 binary, nested, message/rfc822), raw 8-bit
and RFC 2047 headers, quoted-printable, bare-LF and mixed line endings,
header-only messages, empty header values, reply chains for THREAD, many
Dates and sizes (up to about 1 MB), dot-leading lines and odd address forms.

expected(raw) is what IMAP must give back for BODY[]: the same bytes with
every bare LF turned into CRLF (DESIGN.md section 5: bodies are stored as
received apart from line endings).
"""

import base64
import random
import re

SEED = 5322
_cache = None


def expected(raw):
    """CRLF-normalised bytes: each LF not preceded by CR becomes CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def _crlf(text):
    """Builds a message from a str with \\n line ends: CRLF, UTF-8."""
    return text.replace("\n", "\r\n").encode("utf-8")


def _b64(data, width=76):
    enc = base64.b64encode(data).decode("ascii")
    return "\n".join(enc[i:i + width] for i in range(0, len(enc), width))


def _words(rng, n):
    vocab = ("mail store index folder sqlite dovecot message header body "
             "part boundary quota sieve thread subject reply forward "
             "archive draft junk trash sent inbox flag keyword uid modseq "
             "lorem ipsum dolor sit amet consectetur adipiscing elit").split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def _para(rng, lines, width=72):
    out = []
    for _ in range(lines):
        line = _words(rng, 14)[:width]
        out.append(line)
    return "\n".join(out)


DATES = [
    "Mon, 02 Jan 2023 09:15:00 +0000",
    "Tue, 14 Feb 2023 23:59:59 -0800",
    "Wed, 01 Mar 2023 00:00:01 +0530",
    "Thu, 27 Apr 2023 12:00:00 +1400",
    "Fri, 19 May 2023 06:30:00 -1100",
    "Sat, 01 Jul 2023 18:45:12 +0200",
    "Sun, 13 Aug 2023 03:03:03 GMT",
    "1 Sep 2023 10:10:10 +0100",
    "Tue, 31 Oct 2023 17:00:00 EST",
    "Fri, 29 Dec 2023 08:00:00 +0000",
]


def _hdr(i, subject, frm="Alice Example <alice@example.org>",
         to="Bob Example <bob@example.net>", date=None, msgid=None,
         extra=""):
    date = date or DATES[i % len(DATES)]
    msgid = msgid or "<corpus-%03d@sqlbox.test>" % i
    h = ("From: %s\nTo: %s\nSubject: %s\nDate: %s\nMessage-ID: %s\n"
         % (frm, to, subject, date, msgid))
    return h + extra


def _build():
    rng = random.Random(SEED)
    msgs = []

    def add(name, data):
        msgs.append((name, data))

    # 1-3: plain ASCII of a few sizes.
    add("plain-short", _crlf(_hdr(1, "Hello there") +
                             "MIME-Version: 1.0\n\nHi Bob,\n\njust a note.\n"
                             "\n-- \nAlice\n"))
    add("plain-medium", _crlf(_hdr(2, "Weekly report") +
                              "\n" + _para(rng, 60) + "\n"))
    add("plain-100k", _crlf(_hdr(3, "Big plain text") +
                            "\n" + _para(rng, 1400) + "\n"))

    # 4: long lines (far beyond the 998 of RFC 5322 2.1.1, stored as is).
    add("long-lines", _crlf(_hdr(4, "Long lines") + "\n" +
                            "x" * 1200 + "\n" + _words(rng, 700) + "\n"
                            "short\n" + "y" * 5000 + "\n"))

    # 5: multipart/alternative.
    add("alternative", _crlf(_hdr(5, "Alternative parts") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="alt-5"\n\n'
        "This is a multi-part message in MIME format.\n"
        "--alt-5\nContent-Type: text/plain; charset=us-ascii\n\n"
        "Plain version.\n"
        "--alt-5\nContent-Type: text/html; charset=us-ascii\n\n"
        "<html><body><p>HTML <b>version</b>.</p></body></html>\n"
        "--alt-5--\n"))

    # 6-7: multipart/mixed with a base64 binary attachment.
    for i, size in ((6, 3000), (7, 20000)):
        blob = bytes(rng.getrandbits(8) for _ in range(size))
        add("mixed-binary-%d" % size, _crlf(_hdr(i, "Attachment %d" % size) +
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="mix-%d"\n\n'
            "--mix-%d\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 7bit\n\nSee attached.\n"
            "--mix-%d\nContent-Type: application/octet-stream; "
            'name="blob%d.bin"\nContent-Transfer-Encoding: base64\n'
            'Content-Disposition: attachment; filename="blob%d.bin"\n\n'
            "%s\n--mix-%d--\n" % (i, i, i, size, size, _b64(blob), i)))

    # 8: nested multipart: mixed(alternative(text, related(html, png)), pdf).
    png = bytes(rng.getrandbits(8) for _ in range(1500))
    pdf = b"%PDF-1.4\n" + bytes(rng.getrandbits(8) for _ in range(4000))
    add("nested", _crlf(_hdr(8, "Nested multiparts") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="outer"\n\n'
        "--outer\n"
        'Content-Type: multipart/alternative; boundary="middle"\n\n'
        "--middle\nContent-Type: text/plain; charset=utf-8\n\n"
        "Text body of the nested message.\n"
        "--middle\n"
        'Content-Type: multipart/related; boundary="inner"; '
        'type="text/html"\n\n'
        "--inner\nContent-Type: text/html; charset=utf-8\n\n"
        '<p>Look: <img src="cid:img1@sqlbox"></p>\n'
        "--inner\nContent-Type: image/png\nContent-ID: <img1@sqlbox>\n"
        "Content-Transfer-Encoding: base64\n\n%s\n"
        "--inner--\n"
        "--middle--\n"
        "--outer\nContent-Type: application/pdf\n"
        "Content-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="doc.pdf"\n\n%s\n'
        "--outer--\n" % (_b64(png), _b64(pdf))))

    # 9: message/rfc822 attachment (a forwarded mail).
    inner = ("From: Carol <carol@example.com>\nTo: Alice <alice@example.org>\n"
             "Subject: The original\nDate: Mon, 02 Jan 2023 08:00:00 +0000\n"
             "Message-ID: <inner-9@sqlbox.test>\nMIME-Version: 1.0\n"
             "Content-Type: text/plain; charset=us-ascii\n\n"
             "Original text.\n")
    add("rfc822-attachment", _crlf(_hdr(9, "Fwd: The original") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="fwd-9"\n\n'
        "--fwd-9\nContent-Type: text/plain\n\nForwarding this.\n"
        "--fwd-9\nContent-Type: message/rfc822\n"
        'Content-Disposition: attachment; filename="orig.eml"\n\n'
        "%s\n--fwd-9--\n" % inner))

    # 10: a bare message/rfc822 body, nested twice.
    add("rfc822-nested", _crlf(_hdr(10, "Digest in a digest") +
        "MIME-Version: 1.0\nContent-Type: message/rfc822\n\n"
        "From: Dave <dave@example.com>\nSubject: Level 1\n"
        "MIME-Version: 1.0\nContent-Type: message/rfc822\n\n"
        "From: Erin <erin@example.com>\nSubject: Level 2\n\n"
        "Deepest body.\n"))

    # 11: raw 8-bit UTF-8 headers (RFC 6532 style, no encoding).
    add("utf8-raw-headers", _crlf(
        "From: Jürgen Groß <juergen@example.de>\n"
        "To: Zoë Ærøskøbing <zoe@example.dk>, 山田太郎 <yamada@example.jp>\n"
        "Subject: Grüße aus Köln – 日本語の件名\n"
        "Date: %s\nMessage-ID: <utf8-11@sqlbox.test>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        "Straße, Übermut, naïve café, 東京.\n" % DATES[1]))

    # 12-13: RFC 2047 encoded words (B and Q, two charsets, folded).
    add("rfc2047-b", _crlf(
        "From: =?UTF-8?B?SsO8cmdlbiBHcm/Dnw==?= <juergen@example.de>\n"
        "To: =?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>\n"
        "Subject: =?UTF-8?B?w5xiZXIgZGllIEJyw7xja2U=?=\n"
        " =?UTF-8?Q?_und_weiter_=E2=82=AC?=\n"
        "Date: %s\nMessage-ID: <rfc2047-12@sqlbox.test>\n\n"
        "Encoded headers.\n" % DATES[2]))
    add("rfc2047-q", _crlf(
        "From: =?iso-8859-1?q?Fran=E7ois_P=E9rez?= <fp@example.fr>\n"
        "To: bob@example.net\n"
        "Subject: =?iso-8859-1?q?Caf=E9_cr=E8me?= and plain text\n"
        "Date: %s\nMessage-ID: <rfc2047-13@sqlbox.test>\n\n"
        "Latin-1 encoded words.\n" % DATES[3]))

    # 14: quoted-printable with soft breaks and encoded 8-bit.
    add("quoted-printable", _crlf(_hdr(14, "QP body") +
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Caf=C3=A9 cr=C3=A8me br=C3=BBl=C3=A9e, this line is long enough to=\n"
        " need a soft line break somewhere in the middle of it.=\n"
        "\nEquals sign: =3D, trailing space=20\n"
        "Tab=09here.\n"))

    # 15: bare LF line endings everywhere (stored and served as CRLF).
    add("bare-lf", (_hdr(15, "Bare LF endings") +
                    "\nline one\nline two\n\nline four\n").encode())

    # 16: mixed CRLF and LF.
    add("mixed-eol", (b"From: alice@example.org\r\nTo: bob@example.net\n"
                      b"Subject: Mixed endings\r\nDate: " +
                      DATES[6].encode() +
                      b"\nMessage-ID: <mixed-16@sqlbox.test>\r\n\r\n"
                      b"crlf line\r\nlf line\nanother crlf\r\nlast lf\n"))

    # 17-18: headers only, with and without the blank line.
    add("headers-only-blank", _crlf(_hdr(17, "No body, blank line") + "\n"))
    add("headers-only-noblank", _crlf(_hdr(18, "No body, no blank line")))

    # 19: empty header values.
    add("empty-values", _crlf(
        "From: alice@example.org\nTo: bob@example.net\nSubject:\n"
        "X-Empty:\nX-Spaces:   \nDate: %s\n"
        "Message-ID: <empty-19@sqlbox.test>\n\nEmpty subject.\n"
        % DATES[7]))

    # 20-27: a reply tree (THREAD=REFERENCES, RFC 5256 5) and a second
    # thread with only In-Reply-To and one message whose parent is missing.
    root = "<thread-root@sqlbox.test>"
    r1 = "<thread-r1@sqlbox.test>"
    r2 = "<thread-r2@sqlbox.test>"
    r11 = "<thread-r11@sqlbox.test>"
    r111 = "<thread-r111@sqlbox.test>"
    tdates = ["Mon, 06 Mar 2023 10:00:%02d +0000" % s
              for s in range(0, 60, 7)]
    add("thread-root", _crlf(_hdr(20, "Project kickoff", date=tdates[0],
                                  msgid=root) + "\nLet's start.\n"))
    add("thread-r1", _crlf(_hdr(
        21, "Re: Project kickoff", frm="Bob <bob@example.net>",
        date=tdates[1], msgid=r1,
        extra="In-Reply-To: %s\nReferences: %s\n" % (root, root)) +
        "\nSounds good.\n"))
    add("thread-r2", _crlf(_hdr(
        22, "RE: Project kickoff", frm="Carol <carol@example.com>",
        date=tdates[2], msgid=r2,
        extra="In-Reply-To: %s\nReferences: %s\n" % (root, root)) +
        "\nCount me in.\n"))
    add("thread-r11", _crlf(_hdr(
        23, "Re: Re: Project kickoff", date=tdates[3], msgid=r11,
        extra="In-Reply-To: %s\nReferences: %s %s\n" % (r1, root, r1)) +
        "\nGreat.\n"))
    add("thread-r111", _crlf(_hdr(
        24, "Re: Project kickoff [was: planning]", date=tdates[4],
        msgid=r111,
        extra="References: %s\n %s\n %s\n" % (root, r1, r11)) +
        "\nFolded References.\n"))
    add("thread-orphan", _crlf(_hdr(
        25, "Re: Lost parent", date=tdates[5],
        msgid="<thread-orphan@sqlbox.test>",
        extra="In-Reply-To: <never-seen@sqlbox.test>\n"
              "References: <never-seen@sqlbox.test>\n") + "\nOrphan.\n"))
    add("thread-irt-only-root", _crlf(_hdr(
        26, "Budget", date=tdates[6], msgid="<budget@sqlbox.test>") +
        "\nBudget thread.\n"))
    add("thread-irt-only-reply", _crlf(_hdr(
        27, "Re: Budget", date=tdates[7], msgid="<budget-re@sqlbox.test>",
        extra="In-Reply-To: <budget@sqlbox.test>\n") + "\nIRT only.\n"))

    # 28-30: ~100 KB messages.
    for i in (28, 29):
        blob = bytes(rng.getrandbits(8) for _ in range(75000))
        add("attach-100k-%d" % i, _crlf(_hdr(i, "Hundred KB %d" % i) +
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="big-%d"\n\n'
            "--big-%d\nContent-Type: text/plain\n\nBig one.\n"
            "--big-%d\nContent-Type: image/jpeg\n"
            "Content-Transfer-Encoding: base64\n\n%s\n--big-%d--\n"
            % (i, i, i, _b64(blob), i)))
    add("html-100k", _crlf(_hdr(30, "Newsletter") +
        "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
        "<html><body>\n" +
        "\n".join("<p>%s</p>" % _words(rng, 12) for _ in range(1200)) +
        "\n</body></html>\n"))

    # 31: about 1 MB.
    blob = bytes(rng.getrandbits(8) for _ in range(760000))
    add("attach-1m", _crlf(_hdr(31, "One megabyte") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="mb"\n\n'
        "--mb\nContent-Type: text/plain\n\nThe big one.\n"
        "--mb\nContent-Type: application/zip\n"
        "Content-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="big.zip"\n\n'
        "%s\n--mb--\n" % _b64(blob)))

    # 32: lines starting with '.' (SMTP/LMTP dot-stuffing must not leak).
    add("dot-lines", _crlf(_hdr(32, "Dots") +
                           "\n.hidden\n..two dots\n.\n. space\nend.\n"))

    # 33-35: groups and odd address forms (RFC 5322 3.4, 4.4).
    add("addr-groups", _crlf(
        "From: \"Doe, John\" <john.doe@example.com>\n"
        "To: undisclosed-recipients:;\n"
        "Cc: Team: anna@example.com, \"Ben B.\" <ben@example.com>;, "
        "solo@example.com\n"
        "Bcc: Empty Group:;\n"
        "Subject: Groups\nDate: %s\nMessage-ID: <groups-33@sqlbox.test>\n\n"
        "Group syntax.\n" % DATES[8]))
    add("addr-odd", _crlf(
        "From: john@example.com (John Doe)\n"
        "Sender: <@relay.example.net:sender@example.com>\n"
        "Reply-To: \"john..doe\"@example.com, root\n"
        "To: \"Quoted \\\"Name\\\"\" <q@example.com>, <angle@example.com>,\n"
        "  bare@example.com\n"
        "Cc: =?UTF-8?Q?J=C3=BCrgen?= <j@example.de>, Mary Smith "
        "<mary@x.test> (comment)\n"
        "Subject: Odd addresses\nDate: %s\n"
        "Message-ID: <odd-34@sqlbox.test>\n\nOdd forms.\n" % DATES[9]))
    add("addr-missing", _crlf(
        "Subject: No From, no To, no Date\n"
        "Message-ID: <missing-35@sqlbox.test>\n\nNothing else.\n"))

    # 36-38: dates: missing above; obsolete and invalid ones.
    add("date-obsolete", _crlf(_hdr(36, "Obsolete date",
                                    date="Sun, 6 Nov 94 08:49:37 GMT") +
                               "\nTwo-digit year.\n"))
    add("date-invalid", _crlf(_hdr(37, "Invalid date",
                                   date="not a date at all") +
                              "\nBroken Date header.\n"))
    add("date-future", _crlf(_hdr(38, "Future date",
                                  date="Wed, 31 Dec 2098 23:59:59 -1200") +
                             "\nFrom the future.\n"))

    # 39: an unknown Content-Transfer-Encoding (BINARY answers UNKNOWN-CTE).
    add("unknown-cte", _crlf(_hdr(39, "Unknown CTE") +
        "MIME-Version: 1.0\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: x-uuencode\n\n"
        "begin 644 a.txt\n#86)C\n`\nend\n"))

    # 40: raw Latin-1 8-bit body with format=flowed.
    add("latin1-flowed", _hdr(40, "Flowed latin1").encode() +
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1; format=flowed\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        b"Caf\xe9 cr\xe8me is a soft \r\nbroken paragraph.\r\n")

    # 41: many headers, and folded ones.
    extra = "".join("X-Trace-%03d: hop %d via relay%d.example.net\n"
                    % (n, n, n % 7) for n in range(150))
    add("many-headers", _crlf(
        "From: alice@example.org\nTo: bob@example.net\n"
        "Subject: A subject folded\n\tover several\n   lines\n"
        "Date: %s\nMessage-ID: <many-41@sqlbox.test>\n%s"
        "Received: from a (a [192.0.2.1])\n\tby b with ESMTP id 1;\n"
        "\tMon, 02 Jan 2023 09:15:00 +0000\n\nMany headers.\n"
        % (DATES[0], extra)))

    # 42: header without a space after the colon, and a line without one.
    add("header-oddities", _crlf(
        "From:alice@example.org\nTo:bob@example.net\nSubject:NoSpace\n"
        "Date: %s\nMessage-ID: <odd-hdr-42@sqlbox.test>\n"
        "X-Weird :  spaced name\n\nbody\n" % DATES[4]))

    # 43: preamble and epilogue; 44: missing final boundary.
    add("preamble-epilogue", _crlf(_hdr(43, "Preamble and epilogue") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="pe"\n\n'
        "This is the preamble.\nTwo lines.\n"
        "--pe\n\nImplicit text/plain part.\n"
        "--pe\nContent-Type: text/x-diff\n\n-a\n+b\n"
        "--pe--\nThis is the epilogue.\n"))
    add("missing-final-boundary", _crlf(_hdr(44, "Truncated multipart") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="trunc"\n\n'
        "--trunc\nContent-Type: text/plain\n\nfirst\n"
        "--trunc\nContent-Type: text/plain\n\nsecond, never closed\n"))

    # 45: RFC 2231 parameters and a calendar part.
    add("rfc2231-calendar", _crlf(_hdr(45, "Invitation") +
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="cal"\n\n'
        "--cal\nContent-Type: text/calendar; method=REQUEST; "
        "charset=utf-8\n\nBEGIN:VCALENDAR\nVERSION:2.0\n"
        "BEGIN:VEVENT\nSUMMARY:Meeting\nEND:VEVENT\nEND:VCALENDAR\n"
        "--cal\nContent-Type: text/plain; name*=UTF-8''%C3%BCber.txt\n"
        "Content-Disposition: attachment;\n"
        " filename*0*=UTF-8''%C3%BCber%20;\n filename*1=long.txt\n"
        "Content-Language: de\nContent-Location: http://example.org/u\n"
        "Content-Description: a description\n"
        "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\nInhalt.\n--cal--\n"))

    # 46: no trailing newline at all.
    add("no-final-newline", _crlf(_hdr(46, "No final newline") +
                                  "\nlast line without newline"))

    # 47-50: subjects for SORT (base subject, RFC 5256 2.1) and sizes.
    for i, subj in ((47, "[list] Re: Fwd: Sorting test"),
                    (48, "Fwd: sorting TEST (fwd)"),
                    (49, "   Zebra  crossing  "),
                    (50, "re: aardvark")):
        add("sort-%d" % i, _crlf(_hdr(
            i, subj, frm="%s <%s@example.org>" % (
                ["Zed", "amy", "Bob", "carl"][i % 4],
                ["zed", "amy", "bob", "carl"][i % 4]),
            to="list-%d@example.org" % i,
            extra="Cc: cc%d@example.org\n" % (50 - i)) +
            "\n" + _para(rng, i - 40) + "\n"))

    # 51: text/plain 8bit UTF-8 body, for BODY and TEXT search.
    add("utf8-body", _crlf(_hdr(51, "Unicode body") +
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        "Die Brücke über den Fluß. Ελληνικά. Кириллица. needle-utf8\n"))

    # 52: base64 text part (searchable only when decoded).
    add("base64-text", _crlf(_hdr(52, "Base64 text") +
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\n%s\n"
        % _b64("The hidden word is haystack-needle.\n".encode())))
    return msgs


def messages():
    """[(name, raw bytes)] of the corpus, in a fixed order."""
    global _cache
    if _cache is None:
        _cache = _build()
    return list(_cache)


def by_name(name):
    for n, data in messages():
        if n == name:
            return data
    raise KeyError(name)


if __name__ == "__main__":
    total = 0
    for n, data in messages():
        total += len(data)
        print("%-24s %8d" % (n, len(data)))
    print("%d messages, %d bytes" % (len(messages()), total))
