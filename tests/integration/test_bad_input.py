# SPDX-License-Identifier: MIT
"""Bad input: what Dovecot's own maildir and sdbox refuse, sqlbox refuses
the same way (same tagged NO or BAD, same response code) and changes
nothing, neither as IMAP sees it nor in the database.

Each case runs for a fresh user on three instances: the backend under test,
a maildir and an sdbox oracle. The expected answer is also written down,
with the RFC that asks for it, so that a change in Dovecot shows up too.
Response codes are RFC 5530's unless noted."""

import json

import pytest

from harness import Literal, literal_plus, quote, resp_code

LONG_COMPONENT = b"x" * 256                 # MAILBOX_MAX_HIERARCHY_NAME_LENGTH
DEEP = b"/".join([b"d"] * 2100)             # > MAILBOX_LIST_NAME_MAX_LENGTH
MSG = (b"From: a@example.org\r\nSubject: bad input\r\n"
       b"Message-ID: <bad@sqlbox.test>\r\n\r\nbody\r\n")


def q(name):
    return quote(name)


# (id, setup commands, command, expected (status, response code or None))
# "ANY" as the code: the oracles disagree among themselves; sqlbox must
# then answer like one of them.
CASES = [
    # Names refused by lib-storage's mailbox_verify_create_name() and by
    # imap's mUTF-7 check (RFC 3501 5.1.3: modified UTF-7 only).
    ("create-empty", [], b'CREATE ""', ("NO", "CANNOT")),
    ("create-control-char", [], b'CREATE "a\x01b"', ("NO", None)),
    ("create-tab", [], b'CREATE "a\tb"', ("NO", None)),
    ("create-del-char", [], b'CREATE "a\x7fb"', ("NO", None)),
    ("create-8bit-literal", [],
     b"CREATE " + literal_plus("Grüße".encode()), ("NO", None)),
    ("create-overlong-component", [], b"CREATE " + q(LONG_COMPONENT),
     ("NO", "CANNOT")),
    ("create-overlong-deep", [], b"CREATE " + q(DEEP), ("NO", "CANNOT")),
    ("create-mutf7-unterminated", [], b'CREATE "&Jjo"', ("NO", None)),
    ("create-mutf7-encodes-ascii", [], b'CREATE "&AGE-"', ("NO", None)),
    ("create-mutf7-bare-ampersand", [], b'CREATE "a&b"', ("NO", None)),
    ("create-mutf7-unterminated-cjk", [], b'CREATE "x/&ZeVnLIqe"',
     ("NO", None)),
    ("create-leading-separator", [], b'CREATE "/x"', ("NO", "CANNOT")),
    ("create-adjacent-separators", [], b'CREATE "x//y"', ("NO", "CANNOT")),
    ("create-dotdot-component", [], b'CREATE "a/../b"', ("NO", "CANNOT")),
    ("create-dot-component", [], b'CREATE "a/./b"', ("NO", "CANNOT")),
    ("create-tilde", [], b'CREATE "~x"', ("NO", "CANNOT")),
    # RFC 5530 3: ALREADYEXISTS.
    ("create-existing", [b'CREATE "dup"'], b'CREATE "dup"',
     ("NO", "ALREADYEXISTS")),
    ("create-existing-child", [b'CREATE "Dup"', b'CREATE "Dup/x"'],
     b'CREATE "Dup/x"', ("NO", "ALREADYEXISTS")),
    ("create-inbox", [b"SELECT INBOX", b"CLOSE"], b'CREATE "INBOX"',
     ("NO", "ALREADYEXISTS")),
    ("create-inbox-other-case", [b"SELECT INBOX", b"CLOSE"],
     b'CREATE "iNbOx"', ("NO", "ALREADYEXISTS")),
    ("rename-to-existing", [b'CREATE "src"', b'CREATE "dst"'],
     b'RENAME "src" "dst"', ("NO", "ALREADYEXISTS")),
    # RFC 5530 3: NONEXISTENT, for DELETE and RENAME. Dovecot 2.3 answers
    # SELECT, EXAMINE and STATUS of a missing mailbox with a plain NO
    # (COMMAND_FLAG_USE_NONEXISTENT is set only for DELETE, RENAME and
    # UNSUBSCRIBE in imap-commands.c).
    ("delete-missing", [], b'DELETE "missing"', ("NO", "NONEXISTENT")),
    ("rename-missing", [], b'RENAME "missing" "other"',
     ("NO", "NONEXISTENT")),
    ("select-missing", [], b'SELECT "missing"', ("NO", None)),
    ("examine-missing", [], b'EXAMINE "missing"', ("NO", None)),
    ("status-missing", [], b'STATUS "missing" (MESSAGES UIDNEXT)',
     ("NO", None)),
    ("subscribe-missing", [], b'SUBSCRIBE "missing"', ("NO", None)),
    # RFC 3501 6.3.11 and 6.4.7: TRYCREATE when the target is missing.
    ("append-missing", [], b'APPEND "missing" ' + literal_plus(MSG),
     ("NO", "TRYCREATE")),
    ("copy-missing", [b"APPEND INBOX " + literal_plus(MSG), b"SELECT INBOX"],
     b'COPY 1 "missing"', ("NO", "TRYCREATE")),
    ("move-missing", [b"APPEND INBOX " + literal_plus(MSG), b"SELECT INBOX"],
     b'MOVE 1 "missing"', ("NO", "TRYCREATE")),
    # RFC 3501 6.3.4: INBOX cannot be deleted; a \Noselect name with
    # inferiors cannot be deleted (Maildir++ has no \Noselect names and
    # answers NONEXISTENT, sdbox a plain NO).
    ("delete-inbox", [b"SELECT INBOX", b"CLOSE"], b'DELETE "INBOX"',
     ("NO", None)),
    ("delete-noselect-with-children", [b'CREATE "p/q"'], b'DELETE "p"',
     ("NO", "ANY")),
    ("delete-storage-root", [], b'DELETE ""', ("NO", "CANNOT")),
    ("rename-under-itself", [b'CREATE "r"'], b'RENAME "r" "r/child"',
     ("NO", None)),
    ("rename-to-bad-name", [b'CREATE "ok"'], b'RENAME "ok" "&Jjo"',
     ("NO", None)),
    ("rename-to-empty", [b'CREATE "ok"'], b'RENAME "ok" ""',
     ("NO", "CANNOT")),
    ("rename-to-overlong", [b'CREATE "ok"'],
     b'RENAME "ok" ' + q(LONG_COMPONENT), ("NO", "CANNOT")),
    # Syntax errors are BAD (RFC 3501 7.1.5).
    # Synchronizing literals: the server refuses before reading them.
    ("append-bad-date", [],
     (b'APPEND INBOX "32-Foo-2020 99:00:00 +0000" ', Literal(MSG)),
     ("BAD", None)),
    ("append-recent-flag", [],
     (b"APPEND INBOX (\\Recent) ", Literal(MSG)), ("BAD", None)),
    ("append-unknown-system-flag", [],
     (b"APPEND INBOX (\\Bogus) ", Literal(MSG)), ("BAD", None)),
    ("append-empty-message", [], b"APPEND INBOX {0+}\r\n", ("NO", None)),
    ("create-no-argument", [], b"CREATE", ("BAD", None)),
    ("create-unbalanced-quote", [], b'CREATE "abc', ("BAD", None)),
]


def state(inst, raw, user):
    """What must not change: every name with its attributes,
    subscriptions and counters, and (sqlbox) every table row."""
    status, _, lines = raw.command(
        b'LIST "" "*" RETURN (SUBSCRIBED CHILDREN STATUS '
        b'(MESSAGES UIDNEXT UIDVALIDITY UNSEEN))')
    assert status == "OK"
    status2, _, lsub = raw.command(b'LSUB "" "*"')
    assert status2 == "OK"
    snap = {"list": sorted(lines), "lsub": sorted(lsub)}
    if inst.is_sqlbox:
        for table, rows in inst.sql_dump(user).items():
            snap["table " + table] = sorted(json.dumps(r) for r in rows)
    return snap


def run_case(inst, setup, command):
    user = inst.new_user()
    raw = inst.raw_imap(user)
    for cmd in setup:
        status, text, _ = raw.command(cmd)
        assert status == "OK", "setup %r: %s %s" % (cmd, status, text)
    # Sequence-breaking setups leave a mailbox selected: that is fine.
    before = state(inst, raw, user)
    parts = command if isinstance(command, tuple) else (command,)
    status, text, _ = raw.command(*parts)
    after = state(inst, raw, user)
    raw.close()
    return status, resp_code(text), text, before, after


@pytest.mark.parametrize("case_id,setup,command,expected", CASES,
                         ids=[c[0] for c in CASES])
def test_refused_like_maildir_and_sdbox(dovecot, oracle, sdbox_oracle,
                                        case_id, setup, command, expected):
    results = {}
    for inst in (dovecot, oracle, sdbox_oracle):
        status, code, text, before, after = run_case(inst, setup, command)
        results[inst.backend] = (status, code, text)
        # Refused means nothing changed (for the sqlbox backend also no
        # row of any table).
        assert after == before, "%s: %s changed state:\n%s\n%s" % (
            case_id, inst.backend, before, after)
    want_status, want_code = expected
    oracles = [results[b] for b in ("maildir", "sdbox")]
    mine = results[dovecot.backend]
    summary = "\n".join("  %-10s %s %s" % (b, r[0], r[2])
                        for b, r in results.items())
    for status, code, _ in oracles:
        assert status == want_status, "oracle answers changed:\n" + summary
        if want_code != "ANY":
            assert code == want_code, "oracle answers changed:\n" + summary
    assert mine[0] == want_status, summary
    if want_code == "ANY":
        assert (mine[0], mine[1]) in [(s, c) for s, c, _ in oracles], summary
    else:
        assert mine[1] == want_code, summary
    # A refusal is never an internal error.
    assert mine[1] not in ("SERVERBUG", "UNAVAILABLE"), summary
