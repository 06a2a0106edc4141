#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Reads the sanitizer logs of a run (ASan/LSan/UBSan log_path files, or
valgrind --log-file files) and decides whether the run passes.

Usage: sanitizer-reports.py asan|valgrind DIR

asan:     every AddressSanitizer or UndefinedBehaviorSanitizer error fails;
          a LeakSanitizer leak fails when its allocation stack passes
          through sqlbox (the plugins or libsbx). Leaks of Dovecot's own
          that tests/sanitizers/lsan.supp does not hide are counted and
          listed, never failed on: Dovecot's binaries are not instrumented.
valgrind: an invalid read or write, a use of uninitialised memory, or a
          definitely lost block whose stack passes through sqlbox fails;
          the rest is counted.
Prints one summary line; exits 1 on a failing report.
"""

import re
import sys
from pathlib import Path

# a frame of sqlbox's code: its functions, its modules, its sources (not
# any path that happens to hold "sqlbox", like a test instance's module
# directory /tmp/sbx-sqlbox-*/modules/ with Dovecot's own plugins in it)
SQLBOX_FRAME = re.compile(r"\b(sqlbox|sbx)_|_sqlbox_[a-z_]*plugin\.so|"
                          r"/(sbx|sqlbox|submission-sqlbox)-[a-z-]+\.[ch]\b")


def blocks(text, start):
    """Splits a log into blocks, each beginning at a line matching start."""
    out, cur = [], None
    for line in text.splitlines():
        if start.search(line):
            if cur:
                out.append(cur)
            cur = [line]
        elif cur is not None:
            if line.strip() == "" and len(cur) > 1 and \
                    cur[-1].strip() == "":
                out.append(cur)
                cur = None
            else:
                cur.append(line)
    if cur:
        out.append(cur)
    return ["\n".join(b).strip() for b in out]


def asan(files):
    fail, other = [], 0
    for f in files:
        text = f.read_text(errors="replace")
        for m in re.finditer(r"^.*(ERROR: AddressSanitizer|runtime error:"
                             r"|ERROR: UndefinedBehaviorSanitizer).*$",
                             text, re.M):
            fail.append("%s:\n%s" % (f.name,
                                      text[m.start():m.start() + 4000]))
        for b in blocks(text, re.compile(r"^(Direct|Indirect) leak of")):
            stack = b.split("SUMMARY:")[0]
            if SQLBOX_FRAME.search(stack):
                fail.append("%s:\n%s" % (f.name, stack))
            else:
                other += 1
    return fail, other


def valgrind(files):
    fail, other = [], 0
    start = re.compile(r"^==\d+== (Invalid (read|write|free)|Conditional jump"
                       r"|Use of uninitialised|Syscall param|Mismatched free"
                       r"|Source and destination overlap"
                       r"|\S+ bytes in \S+ blocks are (definitely|possibly"
                       r"|indirectly) lost|\S+ bytes in \S+ blocks are still)")
    for f in files:
        text = f.read_text(errors="replace")
        for b in blocks(text, start):
            first = b.splitlines()[0]
            body = "\n".join(line for line in b.splitlines()
                             if re.match(r"^==\d+==\s+(at|by) ", line))
            ours = SQLBOX_FRAME.search(body)
            if "lost" in first or "still reachable" in first:
                if ours and "definitely lost" in first:
                    fail.append("%s:\n%s" % (f.name, b))
                else:
                    other += 1
            elif ours or "Invalid" in first:
                fail.append("%s:\n%s" % (f.name, b))
            else:
                other += 1
    return fail, other


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("asan", "valgrind"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    kind, folder = sys.argv[1], Path(sys.argv[2])
    files = sorted(p for p in folder.glob("*") if p.is_file())
    fail, other = (asan if kind == "asan" else valgrind)(files)
    for r in fail:
        print(r + "\n")
    print("%s: %d log files, %d failing reports, %d reports outside sqlbox"
          % (kind, len(files), len(fail), other))
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
