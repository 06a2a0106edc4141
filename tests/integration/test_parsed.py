# SPDX-License-Identifier: MIT
"""Parsed fields kept at save (schema version 3, docs/storage.md "Parsed
fields"): a save keeps the lines of a fixed set of header fields, the
BODYSTRUCTURE and the ENVELOPE beside the body, and FETCH ENVELOPE, BODY, BODYSTRUCTURE,
BODY[HEADER.FIELDS (...)] and header SEARCH answer from them without
reading the body.

- the answers equal Dovecot's own maildir (the `oracle` instance) for a
  varied corpus and for header edge cases, with the kept fields and
  again after an operator deleted them (mail saved before version 3);
- with the bodies' content deleted behind sqlbox's back, those answers
  still come: they read no body;
- a header block too large to keep (its ENVELOPE is kept), or a message
  without any of the set's fields, is kept as such and answered right."""

import re

import pytest

import corpus
import deliveryutil as du
from harness import literal_plus, sqlbox_only

KEPT = {b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc",
        b"bcc", b"in-reply-to", b"message-id", b"references",
        b"content-type", b"priority", b"x-priority", b"importance",
        b"newsgroups", b"list-id"}
HUGE_REFS = b" ".join(b"<ref%05d@huge.example>" % i for i in range(4000))

EDGES = [
    ("folded subject", b"From: Folded <f@example.org>\r\n"
     b"Subject: first line\r\n\tsecond line\r\n third line\r\n"
     b"Date: Mon, 2 Jan 2023 10:00:00 +0100\r\n\r\nbody\r\n"),
    ("space before colon", b"From : Spaced <s@example.org>\r\n"
     b"Subject : spaced name\r\nTo: a@example.org\r\n\r\nbody\r\n"),
    ("repeated fields", b"From: One <one@example.org>\r\n"
     b"To: a@example.org\r\nTo: b@example.org\r\nSubject: one\r\n"
     b"Subject: two\r\nCc: c@example.org\r\n\r\nbody\r\n"),
    ("no kept field", b"X-Only: nothing kept\r\nX-Other: either\r\n"
     b"\r\nbody\r\n"),
    ("header only, no newline", b"Subject: header only"),
    ("huge references", b"From: Huge <h@example.org>\r\n"
     b"Subject: huge\r\nReferences: " + HUGE_REFS + b"\r\n\r\nbody\r\n"),
    ("8-bit subject", b"From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n"
     b"Subject: caf\xc3\xa9 8-bit\r\nTo: a@example.org\r\n"
     b"Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n"),
]

MESSAGES = corpus.messages() + du.generate(150, seed=7311, max_size=80000) + \
    EDGES
N = len(MESSAGES)

FETCH_ITEMS = [
    b"ENVELOPE",
    b"BODYSTRUCTURE",
    b"BODY",
    b"BODY.PEEK[HEADER.FIELDS (Subject From To Date Message-ID References"
    b" Content-Type)]",
    b"BODY.PEEK[HEADER.FIELDS (Cc Bcc Reply-To In-Reply-To Sender)]",
    # a field outside the set: read from the body
    b"BODY.PEEK[HEADER.FIELDS (Subject X-Only)]",
]
# answerable without the body (FETCH_ITEMS but the last)
NO_BODY_ITEMS = b" ".join(FETCH_ITEMS[:-1])

SEARCHES = [
    b"SUBJECT \"line\"",
    b"SUBJECT \"two\"",
    b"FROM \"example.org\"",
    b"TO \"b@example.org\"",
    b"OR SUBJECT \"spaced\" CC \"c@example.org\"",
    b"HEADER Message-ID \"@\"",
    b"HEADER References \"ref03999\"",
    b"NOT SUBJECT \"e\"",
    b"SENTBEFORE 1-Jan-2000",
    b"SENTSINCE 1-Jan-2020",
]


@pytest.fixture(autouse=True)
def _sqlbox(dovecot):
    sqlbox_only(dovecot)


def load(inst, messages=MESSAGES):
    user = inst.new_user()
    raw = inst.raw_imap(user)
    for name, data in messages:
        st, text, _ = raw.command(b"APPEND INBOX " + literal_plus(data))
        assert st == "OK", (inst.backend, name, text)
    raw.close()
    return user


@pytest.fixture(scope="module")
def loaded(dovecot, oracle):
    return {"sqlbox": load(dovecot), "oracle": load(oracle)}


def answers(inst, user):
    """{command: answer lines} for every FETCH item and SEARCH, in a new
    session (so nothing comes from a process's memory)."""
    raw = inst.raw_imap(user)
    assert du.select(raw, examine=True) == N
    out = {}
    for item in FETCH_ITEMS:
        cmd = b"UID FETCH 1:* (UID " + item + b")"
        st, text, lines = raw.command(cmd)
        assert st == "OK", (cmd, text)
        out[cmd] = [normalise(x) for x in lines]
    for crit in SEARCHES:
        cmd = b"UID SEARCH " + crit
        st, text, lines = raw.command(cmd)
        assert st == "OK", (cmd, text)
        out[cmd] = lines
    raw.close()
    return out


def normalise(line):
    """A part's charset value in lower case: Dovecot answers
    charset="US-ASCII" as parsed and "us-ascii" once its cache knows the
    part is plain 7-bit (see test_oracle_corpus.normalise)."""
    return re.sub(rb'("charset" )("[^"]*")',
                  lambda m: m.group(1) + m.group(2).lower(), line,
                  flags=re.I)


def assert_same(mine, theirs, what):
    for cmd in theirs:
        if mine[cmd] != theirs[cmd]:
            for a, b in zip(mine[cmd], theirs[cmd]):
                if a != b:
                    break
            raise AssertionError("%s: %s differs:\nsqlbox: %r\nmaildir: %r"
                                 % (what, cmd.decode(), a[:2000], b[:2000]))


def test_saves_keep_the_header_lines_and_bodystructure(dovecot, loaded):
    user = loaded["sqlbox"]
    bodies, kept, with_bs, with_env = dovecot.sql(
        user, "SELECT (SELECT count(*) FROM bodies),"
        " (SELECT count(*) FROM body_parsed),"
        " (SELECT count(*) FROM body_parsed"
        "  WHERE bodystructure IS NOT NULL),"
        " (SELECT count(*) FROM body_parsed WHERE envelope IS NOT NULL)")[0]
    assert bodies == kept == with_bs == with_env, \
        (bodies, kept, with_bs, with_env)
    rows = dovecot.sql(user, "SELECT m.uid, p.headers FROM messages m"
                       " JOIN body_parsed p ON p.body_id = m.body_id"
                       " ORDER BY m.uid")
    by_name = {name: rows[i][1] for i, (name, _) in enumerate(MESSAGES)}
    folded = bytes.fromhex(by_name["folded subject"])
    assert folded.startswith(b"From: Folded <f@example.org>\n"
                             b"Subject: first line\n\tsecond line\n"
                             b" third line\nDate: "), folded
    assert bytes.fromhex(by_name["no kept field"]) == b""
    assert by_name["huge references"] is None, "over 64 KiB: not kept"
    assert bytes.fromhex(by_name["header only, no newline"]) == \
        b"Subject: header only"
    # only the set's fields (no Received, DKIM, X-Mailer, ...)
    for name, hexed in by_name.items():
        for line in bytes.fromhex(hexed or "").split(b"\n"):
            if line and line[:1] not in b" \t":
                field = line.split(b":")[0].strip().lower()
                assert field in KEPT, (name, line)


def test_answers_equal_maildir_with_and_without_kept_fields(
        dovecot, oracle, loaded):
    theirs = answers(oracle, loaded["oracle"])
    assert_same(answers(dovecot, loaded["sqlbox"]), theirs, "kept fields")

    # mail saved before version 3 has none: readers parse the body
    user = loaded["sqlbox"]
    dovecot.operator_sql(user, "DELETE FROM body_parsed;")
    assert_same(answers(dovecot, user), theirs, "parsed from the body")


def test_kept_fields_answer_without_the_body(dovecot):
    # the huge header block isn't kept: its ENVELOPE needs the body
    messages = [m for m in MESSAGES if m[0] != "huge references"]
    user = load(dovecot, messages)
    raw = dovecot.raw_imap(user)
    assert du.select(raw, examine=True) == len(messages)
    cmd = b"UID FETCH 1:* (UID " + NO_BODY_ITEMS + b")"
    st, _, before = raw.command(cmd)
    assert st == "OK"
    searches = {}
    for crit in SEARCHES[:-2]:     # SENT* parse the Date: no kept field
        st, _, lines = raw.command(b"UID SEARCH " + crit)
        searches[crit] = (st, lines)
    raw.close()

    # the content goes (an operator's mistake); the kept fields stay
    dovecot.operator_sql(user, "DELETE FROM body_chunks;")
    assert dovecot.sql(user, "SELECT count(*) FROM body_chunks")[0][0] == 0
    raw = dovecot.raw_imap(user)
    assert du.select(raw, examine=True) == len(messages)
    st, text, after = raw.command(cmd)
    assert st == "OK", text
    assert after == before
    for crit, answer in searches.items():
        st, _, lines = raw.command(b"UID SEARCH " + crit)
        assert (st, lines) == answer, crit
    raw.close()
