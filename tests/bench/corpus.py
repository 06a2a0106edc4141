# SPDX-License-Identifier: MIT
"""The benchmark's mail: a deterministic, realistic corpus.

Corpus(seed).message(n) is message number n, the same bytes on every call
and every machine: CRLF line ends, a Received chain, a folded
DKIM-Signature, raw 8-bit (UTF-8) and RFC 2047 headers, reply threads
(In-Reply-To and References pointing at earlier messages of the same
seed), and bodies of every common shape: plain text, multipart/alternative
with HTML, multipart/mixed with base64 attachments (a few of 0.25 to 5 MB),
forwarded message/rfc822 parts.

Sizes follow a long-tailed mix: most messages are a few KB, about one in
ten carries an attachment, and each block of 5,000 messages holds one of
5 MB. The "small" corpus (for the 100,000-message folders) keeps the same
headers with text bodies of 1 to 8 KB.

Search tokens: SUBJECT_TOKEN is in the Subject of about 2% of the
messages, BODY_TOKEN in the body text of about 1%.
"""

import base64
import random

SUBJECT_TOKEN = "Quarterly"
BODY_TOKEN = "quokka"

_SYLLABLES = ("ka ri to me sa lo vin da ne pu ra tel mo si gor an el "
              "bri cus ta fen lu ho ver stra pol").split()
_WORDS_8BIT = ("café naïve Grüße Straße déjà señal smörgåsbord "
               "Zürich øre łódź東京 données").split()
_FIRST = ("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory "
          "Niaj Olivia Peggy Rupert Sybil Trent Victor Walter").split()
_FIRST_8BIT = ("Jérôme Zoë Björn Åsa Łukasz Ñandú Müller Çelik").split()
_LAST = ("Smith Jones Garcia Miller Davis Lopez Wilson Moore Taylor "
         "Anderson Thomas Jackson White Harris Martin").split()
_DOMAINS = ("example.org example.net example.com mail.example.org "
            "lists.example.net corp.example.com").split()
_TOPICS = ("Meeting notes", "Invoice", "Build failure", "Lunch?",
           "Release plan", "Weekly report", "Travel booking",
           "Contract draft", "Server maintenance", "Photos from the trip",
           "Newsletter", "Password reset", "Budget review",
           "Holiday schedule", "Code review", "Customer feedback")
_TOPICS_8BIT = ("Réunion de l'équipe", "Grüße aus Zürich",
                "Año nuevo: planificación", "Påminnelse: möte")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec").split()
_ATTACH = (("application/pdf", "report.pdf"), ("image/jpeg", "photo.jpg"),
           ("image/png", "chart.png"), ("application/zip", "files.zip"),
           ("application/vnd.openxmlformats-officedocument."
            "spreadsheetml.sheet", "budget.xlsx"))


def _b64_lines(data):
    enc = base64.b64encode(data)
    return b"\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))


def _rfc2047(text):
    return "=?UTF-8?B?%s?=" % base64.b64encode(text.encode()).decode()


class Corpus:
    """Messages of one seed; small=True for the text-only corpus."""

    def __init__(self, seed, small=False):
        self.seed = seed
        self.small = small
        rng = random.Random(seed)
        vocab = ["".join(rng.choice(_SYLLABLES)
                         for _ in range(rng.randrange(1, 4)))
                 for _ in range(3000)]
        vocab += ["the", "and", "of", "to", "in", "for", "with", "on"] * 60
        vocab += _WORDS_8BIT * 3
        # A pool of wrapped text lines; bodies are runs of it.
        lines = []
        for _ in range(40000):
            words = []
            width = 0
            while width < 60:
                w = rng.choice(vocab)
                words.append(w)
                width += len(w) + 1
            lines.append(" ".join(words))
        self._lines = lines
        self._ids = []

    # -- pieces ---------------------------------------------------------------

    def _text(self, rng, size):
        """About `size` bytes of text lines (CRLF); BODY_TOKEN in 1%."""
        out = []
        total = 0
        start = rng.randrange(len(self._lines))
        i = start
        while total < size:
            line = self._lines[i % len(self._lines)]
            out.append(line)
            total += len(line.encode()) + 2
            i += 1
        if rng.random() < 0.01:
            out.insert(rng.randrange(len(out) + 1),
                       "see the %s in the attic" % BODY_TOKEN)
        return "\r\n".join(out) + "\r\n"

    def _person(self, rng):
        eightbit = rng.random() < 0.15
        first = rng.choice(_FIRST_8BIT if eightbit else _FIRST)
        last = rng.choice(_LAST)
        addr = "%s.%s@%s" % (first.lower().encode("ascii", "ignore")
                             .decode() or "x", last.lower(),
                             rng.choice(_DOMAINS))
        name = "%s %s" % (first, last)
        if eightbit and rng.random() < 0.5:
            name = _rfc2047(name)
        elif eightbit:
            name = '"%s"' % name
        return "%s <%s>" % (name, addr)

    def _date(self, rng, n):
        t = n * 97 + rng.randrange(90)
        day = 1 + (t // 86400) % 28
        return "%s, %02d %s %04d %02d:%02d:%02d %s" % (
            _DAYS[(t // 86400) % 7], day, _MONTHS[(t // 2419200) % 12],
            2015 + (t // 29030400) % 10, (t // 3600) % 24, (t // 60) % 60,
            t % 60, rng.choice(("+0000", "+0100", "-0500", "+0530",
                                "-0800", "+0900")))

    def _headers(self, rng, n, subject, extra):
        host = "mx%d.%s" % (rng.randrange(9), rng.choice(_DOMAINS))
        hops = []
        for h in range(rng.randrange(2, 5)):
            hops.append("Received: from relay%d.%s (relay%d.%s [192.0.2.%d])"
                        "\r\n\tby %s with ESMTPS id %016x\r\n\tfor "
                        "<user@example.org>; %s" % (
                            h, rng.choice(_DOMAINS), h,
                            rng.choice(_DOMAINS), rng.randrange(1, 255),
                            host, rng.getrandbits(64),
                            self._date(rng, n)))
        sig = base64.b64encode(rng.randbytes(192)).decode()
        dkim = ("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
                "d=%s; s=sel1;\r\n\th=from:to:subject:date:message-id;\r\n"
                "\tbh=%s;\r\n\tb=%s\r\n\t %s" % (
                    rng.choice(_DOMAINS),
                    base64.b64encode(rng.randbytes(32)).decode(),
                    sig[:70], sig[70:]))
        msgid = "<%d.%08x@bench.%s>" % (n, rng.getrandbits(32),
                                         rng.choice(_DOMAINS))
        h = ["Return-Path: <bounce-%d@example.org>" % n] + hops + [dkim]
        h.append("Date: " + self._date(rng, n))
        h.append("From: " + self._person(rng))
        h.append("To: " + ", ".join(self._person(rng)
                                    for _ in range(rng.randrange(1, 4))))
        if rng.random() < 0.3:
            h.append("Cc: " + ", ".join(self._person(rng)
                                        for _ in range(rng.randrange(1, 6))))
        # Threads: 40% reply to one of the last 200 messages.
        refs = None
        if self._ids and rng.random() < 0.4:
            parent_subject, parent_id, parent_refs = rng.choice(
                self._ids[-200:])
            subject = parent_subject if parent_subject.startswith("Re: ") \
                else "Re: " + parent_subject
            refs = (parent_refs + [parent_id])[-10:]
            h.append("In-Reply-To: " + parent_id)
            h.append("References: " + "\r\n ".join(refs))
        self._ids.append((subject, msgid, refs or []))
        if len(self._ids) > 400:
            del self._ids[:200]
        if any(ord(c) > 127 for c in subject) and rng.random() < 0.5:
            h.append("Subject: " + _rfc2047(subject))
        else:
            h.append("Subject: " + subject)
        h.append("Message-ID: " + msgid)
        if rng.random() < 0.2:
            h.append("List-Id: <dev.lists.example.net>")
        h.append("X-Mailer: Bench Mailer %d.%d" % (rng.randrange(9),
                                                  rng.randrange(20)))
        h.append("MIME-Version: 1.0")
        h += extra
        return "\r\n".join(h) + "\r\n\r\n"

    # -- messages -------------------------------------------------------------

    def _size_class(self, rng, n):
        """Target body size in bytes."""
        if self.small:
            return rng.randrange(1000, 8000)
        if n % 5000 == 1234:
            return 5 * 1024 * 1024 - 16384
        r = rng.random()
        if r < 0.60:
            return rng.randrange(500, 6000)
        if r < 0.88:
            return rng.randrange(6000, 40000)
        if r < 0.985:
            return rng.randrange(40000, 200000)
        if r < 0.998:
            return rng.randrange(250000, 1000000)
        return rng.randrange(1000000, 3000000)

    def message(self, n):
        """Message n (bytes). Call in order 0, 1, 2 ... so that replies
        point at messages already generated."""
        rng = random.Random("%d/%d/%d" % (self.seed, self.small, n))
        size = self._size_class(rng, n)
        if rng.random() < 0.08:
            subject = rng.choice(_TOPICS_8BIT)
        else:
            subject = rng.choice(_TOPICS)
        if rng.random() < 0.02:
            subject = "%s %s" % (SUBJECT_TOKEN, subject)
        subject = "%s #%d" % (subject, n % 997)
        boundary = "=_b%d_%08x" % (n, rng.getrandbits(32))
        if self.small or size < 6000 and rng.random() < 0.7:
            ctype = ["Content-Type: text/plain; charset=utf-8",
                     "Content-Transfer-Encoding: 8bit"]
            body = self._text(rng, size).encode()
        elif size < 40000:
            text = self._text(rng, size // 2)
            html = "<html><body>\r\n%s</body></html>\r\n" % "".join(
                "<p>%s</p>\r\n" % ln for ln in
                self._text(rng, size // 2).split("\r\n") if ln)
            ctype = ['Content-Type: multipart/alternative; boundary="%s"'
                     % boundary]
            body = ("This is a multi-part message in MIME format.\r\n"
                    "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\n%s"
                    "--%s\r\nContent-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\n%s"
                    "--%s--\r\n" % (boundary, text, boundary, html,
                                    boundary)).encode()
        else:
            parts = []
            text = self._text(rng, rng.randrange(300, 3000))
            parts.append(("Content-Type: text/plain; charset=utf-8\r\n"
                          "Content-Transfer-Encoding: 8bit\r\n\r\n"
                          + text).encode())
            left = size * 3 // 4
            k = 1 if left < 100000 else rng.randrange(1, 4)
            for i in range(k):
                ctype_a, fname = rng.choice(_ATTACH)
                parts.append(("Content-Type: %s; name=\"%s\"\r\n"
                              "Content-Disposition: attachment; "
                              "filename=\"%d-%s\"\r\n"
                              "Content-Transfer-Encoding: base64\r\n\r\n"
                              % (ctype_a, fname, i, fname)).encode() +
                             _b64_lines(rng.randbytes(left // k)) + b"\r\n")
            if rng.random() < 0.15:
                inner = self._headers(random.Random(n), n, "Fwd",
                                      ["Content-Type: text/plain"])
                parts.append(b"Content-Type: message/rfc822\r\n\r\n" +
                             (inner + self._text(rng, 800)).encode())
            ctype = ['Content-Type: multipart/mixed; boundary="%s"'
                     % boundary]
            b = boundary.encode()
            body = b"This is a multi-part message in MIME format.\r\n"
            for p in parts:
                body += b"--" + b + b"\r\n" + p
            body += b"--" + b + b"--\r\n"
        return self._headers(rng, n, subject, ctype).encode() + body

    def messages(self, count):
        """The first `count` messages, in order."""
        return [self.message(n) for n in range(count)]
