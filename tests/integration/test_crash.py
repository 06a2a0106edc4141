# SPDX-License-Identifier: MIT
"""kill -9 of imap processes in the middle of changes (DESIGN.md 1.4: a
killed process never leaves a half message, a duplicate UID or a corrupt
database).

Four IMAP sessions on one user APPEND (single, MULTIAPPEND, bodies of
several 256 KiB chunks), UID COPY and UID MOVE up to 40 messages at a time
between three folders, and UID EXPUNGE, while a killer sends SIGKILL to
the imap process of a session that has a command out, after a random
delay. The process of a connection is known from its login line
(login_log_format_elements with rport=). A killed session logs in again
and goes on; the command it had out has an unknown outcome.

Each session only touches the messages it appended itself, so what is
checked is what the kills did, not what racing sessions do to each other
(test_concurrency.py). Afterwards (invariants.py, workload.py):

- every APPEND, COPY and MOVE answered OK before a kill is in the
  database, at the UID it was given, with its body;
- a message that was only ever MOVEd is in exactly one folder (RFC 6851:
  the copy and the expunge are one transaction), none if its APPEND was
  refused, at most one if its APPEND was interrupted;
- no UID was given twice, UIDs grew over time, nothing appeared that no
  client asked for, nothing was expunged that no client expunged;
- the schema's invariants and PRAGMA integrity_check;
- every session and a fresh one show what SQL holds;
- the only Error lines in the log are Dovecot's own "service(imap): child
  <pid> killed with signal 9", for exactly the pids the test killed.

30 kills by default; SQLBOX_SLOW=1: 300."""

import os
import random
import re
import signal
import threading
import time

from invariants import Ledger
from workload import LOGIN_LOG_FORMAT, ImapWorker, final_problems, join_all

SLOW = os.environ.get("SQLBOX_SLOW") == "1"
KILLS = 300 if SLOW else 30
WORKERS = 4
DOVECOT_OPTIONS = {"extra_conf": LOGIN_LOG_FORMAT +
                   "verbose_proctitle = yes\n"}


def imap_child(inst, pid):
    """True if pid is an imap (not imap-login) process of this instance's
    master: the only processes the killer may touch."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            title = f.read()
    except OSError:
        return False
    ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
    # "<instance_name>/imap [user ip command]" (verbose_proctitle)
    return ppid == inst.master_pid() and \
        re.match(rb"[^/\0 ]+/imap[ \0]", title) is not None


def killer(inst, workers, kills, rng, killed, log):
    """Kills `kills` imap processes, each of a session with a command out
    (maybe not yet read by the server, maybe already answered: the delay
    is random)."""
    deadline = time.monotonic() + (3600 if SLOW else 600)
    misses = 0
    while len(killed) < kills and time.monotonic() < deadline:
        assert misses < 1000, "the killer finds no imap process to kill"
        alive = [w for w in workers if w.is_alive() and w.pid]
        if not alive:
            break
        w = rng.choice(alive)
        gen, pid = w.generation, w.pid
        wait_until = time.monotonic() + 2
        while w.busy_since is None and time.monotonic() < wait_until:
            time.sleep(0.0005)
        time.sleep(rng.choice([0, 0.001, 0.003, 0.01, 0.03]) *
                   rng.random())
        if w.generation != gen or not imap_child(inst, pid):
            misses += 1
            continue
        misses = 0
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                title = f.read().replace(b"\0", b" ").strip()
        except OSError:
            title = b"?"
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        log.append(title.decode(errors="replace"))
        # Let the session log in again before it can be chosen again.
        wait_until = time.monotonic() + 30
        while w.generation == gen and w.is_alive() and \
                time.monotonic() < wait_until:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.05)


def test_sigkill_during_changes_loses_nothing(dovecot, user, allow_log):
    ledger = Ledger()
    raw = dovecot.raw_imap(user)
    for folder in (b"Work", b"Later"):
        st, text, _ = raw.command(b"CREATE " + folder)
        assert st == "OK", text
    raw.close()
    # Plain-text connections: with TLS, imap-login proxies the session
    # and Dovecot 2.3.19's imap-login itself panics when the imap process
    # behind it is SIGKILLed ("imap-login: Panic: epoll_ctl(del, N) failed:
    # Bad file descriptor"), which is not what this test is about.
    workers = [ImapWorker(dovecot, user, ledger, "k%d" % i, 10 ** 6,
                          seed=3000 + i, tls=None, crash=True, big=True,
                          own_only=True)
               for i in range(WORKERS)]
    # APPEND, COPY, MOVE and EXPUNGE only (and the SELECTs between them).
    for w in workers:
        w.OPS = [("op_append", 30), ("op_copy", 20), ("op_move", 25),
                 ("op_expunge", 15), ("op_select", 5), ("op_fetch", 5)]
    for w in workers:
        w.start()
    killed, titles = [], []
    rng = random.Random(4242)
    k = threading.Thread(target=killer, args=(dovecot, workers, KILLS, rng,
                                              killed, titles), daemon=True)
    time.sleep(0.5)
    k.start()
    join_all([k], 7200)
    for w in workers:
        w.stopping.set()
    join_all(workers, 120)
    for pid in killed:
        allow_log.append(r"service\(imap\): child %d killed with signal 9"
                         % pid)
    assert not [w.name for w in workers if w.is_alive()], "stuck workers"
    errors = [w.error for w in workers if w.error]
    assert not errors, errors
    assert len(killed) >= KILLS, "only %d kills" % len(killed)

    problems = ["%s %s: %s" % f for f in ledger.failures]
    problems += final_problems(dovecot, user, ledger, workers)
    summary = "%d kills (%s), %d answers lost, counts %s" % (
        len(killed), ", ".join(sorted(set(t.split("[", 1)[-1].rstrip("]")
                                          for t in titles))),
        len(ledger.unknown_ops), ledger.counts)
    assert not problems, "%s\n%d problems:\n%s" % (
        summary, len(problems), "\n".join(problems[:100]))
    # The kills hit commands in flight, or the test proves little.
    assert len(ledger.unknown_ops) >= KILLS // 3, summary
    print(summary)
