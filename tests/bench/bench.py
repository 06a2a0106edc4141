#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""sqlbox's benchmark: sqlbox against Dovecot's own maildir and sdbox (and
optionally mdbox) on the same machine, in the same run.

    tests/bench/bench.py [--quick] [--reps N] [--backends a,b,c]
                         [--phases p,q] [--out F]

One private Dovecot per backend is started through the test harness
(scripts/dovecot-instance.sh) with the same settings: Dovecot's defaults
(mail_fsync = optimized), passwd-file users, plaintext IMAP, POP3 and LMTP on
loopback. A deterministic corpus (tests/bench/corpus.py) is generated, and
every phase runs its repetitions interleaved across the backends, in a
rotating order, so that a busy moment of the machine falls on all of them.

The result is a table of medians, min-max and the ratio to sdbox, and one
JSON line per sample and per summary in build/bench/. Nothing passes or
fails on numbers: the targets column says where sqlbox stands.

Phases (full run; --quick divides the counts by ten and runs 2
repetitions; the full run repeats the phases that move the whole corpus,
APPEND, LMTP and doveadm, twice and the others three times, SELECT five):
  APPEND of 10,000 messages over one connection (and the rate over the
      first and the last tenth); then a first SELECT + FETCH of ENVELOPE on
      that new folder, before Dovecot has cached anything
  LMTP delivery of 2,000 messages, over 1 connection and over 4 in parallel
  SELECT and FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE) on 10,000 and
      100,000 messages: in a new imap process (cold) and again in the same
      one (warm); the imap process's peak RSS on the 100,000 folder
  SEARCH of a header (SUBJECT) and of body text (BODY) on 10,000
  UID COPY and UID MOVE of 10,000; the disk of ten copies of the folder
      against one (each COPY shares the bodies)
  POP3: login, LIST, UIDL on the 100,000 folder (a new process); RETR of
      every message of the 10,000 folder (throughput)
  doveadm import and doveadm backup -R of 10,000 from a maildir
  disk bytes of the 10,000 folder (allocated blocks)
  a mixed load: 10 concurrent IMAP clients, a fixed number of operations

The 100,000-message folders (the same headers, text bodies of 1 to 8 KB:
about 6 KB a message) are built before the measured phases, the fastest
honest way for each backend: maildir by copying the generated maildir's
files in (Dovecot indexes them on first use, as after an MTA's
deliveries), the others with `doveadm -o mail_fsync=never import` from it.
The time that takes is reported but is not one of the phases.

--phases runs only some of them (names in PHASE_GROUPS: append, lmtp,
select, search, copy, pop3, doveadm, mixed). The 100,000-message folders
are built only for select and pop3; a phase that reads the 10,000-message folder
without append gets it from an unmeasured `doveadm import`.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from corpus import BODY_TOKEN, SUBJECT_TOKEN, Corpus  # noqa: E402

# mdbox is not one of the test suite's backends; the benchmark may add it.
harness.BACKENDS.setdefault("mdbox", ("mdbox:~/mdbox", False))

REFERENCE = "sdbox"
SEED = 20240
EXTRA_CONF = """
protocol imap {
  mail_max_userip_connections = 100
}
protocol pop3 {
  mail_max_userip_connections = 100
}
"""

# phase: (unit, "higher"|"lower" is better, target, what)
# A target is ("ratio", x): sqlbox/sdbox must be >= x (higher) or <= x
# (lower); ("abs", x): sqlbox's value must be <= x.
PHASES = {
    "append_rate": ("msg/s", "higher", ("ratio", 1.0),
                    "APPEND over one connection"),
    "append_rate_first10": ("msg/s", "higher", None,
                            "APPEND, first tenth"),
    "append_rate_last10": ("msg/s", "higher", None, "APPEND, last tenth"),
    "fetch_env_first_10k": ("ms", "lower", None,
                            "FETCH ENVELOPE, first ever (uncached)"),
    "lmtp_1": ("msg/s", "higher", ("ratio", 1.0), "LMTP, 1 connection"),
    "lmtp_4": ("msg/s", "higher", ("ratio", 1.0), "LMTP, 4 in parallel"),
    "select_cold_10k": ("ms", "lower", ("abs", 25.0),
                        "first SELECT, new process"),
    "fetch_env_cold_10k": ("ms", "lower", ("ratio", 1.0),
                           "FETCH 1:* ENVELOPE, new process"),
    "select_warm_10k": ("ms", "lower", None, "SELECT again, same process"),
    "fetch_env_warm_10k": ("ms", "lower", None,
                           "FETCH 1:* ENVELOPE again, same process"),
    "select_cold_100k": ("ms", "lower", ("abs", 100.0),
                         "first SELECT, new process"),
    "fetch_env_cold_100k": ("ms", "lower", None,
                            "FETCH 1:* ENVELOPE, new process"),
    "select_warm_100k": ("ms", "lower", None, "SELECT again, same process"),
    "fetch_env_warm_100k": ("ms", "lower", None,
                            "FETCH 1:* ENVELOPE again, same process"),
    "fetch_env_first_100k": ("ms", "lower", None,
                             "FETCH ENVELOPE, first ever (uncached)"),
    "rss_100k": ("MB", "lower", ("ratio", 1.5),
                 "imap peak RSS (VmHWM), SELECT+FETCH"),
    "search_header": ("ms", "lower", None, "SEARCH SUBJECT"),
    "search_body": ("ms", "lower", None, "SEARCH BODY"),
    "copy": ("ms", "lower", ("ratio", 1 / 3), "UID COPY 1:*"),
    "move": ("ms", "lower", ("ratio", 1 / 3), "UID MOVE 1:*"),
    "pop3_list_100k": ("ms", "lower", ("ratio", 1.0),
                       "POP3 login+LIST+UIDL, new process"),
    "pop3_retr": ("MB/s", "higher", ("ratio", 1.0), "POP3 RETR of all"),
    "import": ("s", "lower", ("ratio", 0.5), "doveadm import"),
    "backup": ("s", "lower", ("ratio", 0.5), "doveadm backup -R"),
    "disk": ("MB", "lower", ("ratio", 1.0), "allocated bytes of the folder"),
    "disk_10_copies": ("x", "lower", ("abs", 1.05),
                       "ten copies of a folder / one"),
    "mixed": ("op/s", "higher", None, "10 clients, mixed operations"),
    "mixed_p95": ("ms", "lower", None, "mixed load, 95th percentile"),
}


# --phases: the groups of phases that run together, in running order.
PHASE_GROUPS = ("append", "lmtp", "select", "search", "copy", "pop3",
                "doveadm", "mixed")
# The groups that read the 10,000-message folder (b.main).
NEEDS_MAIN = ("select", "search", "copy", "pop3", "mixed")


class BenchError(Exception):
    pass


# -- progress -----------------------------------------------------------------

T0 = time.monotonic()


def progress(text):
    t = int(time.monotonic() - T0)
    print("[%02d:%02d] %s" % (t // 60, t % 60, text), file=sys.stderr,
          flush=True)


# -- a buffered socket --------------------------------------------------------

class Conn:
    """A socket with a read buffer: read_until() returns everything up to
    and including a marker, without parsing (the client's own cost stays
    small and the same for every backend)."""

    def __init__(self, port, timeout=900):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def read_until(self, marker, start=0):
        scan = start
        while True:
            i = self.buf.find(marker, scan)
            if i >= 0:
                end = i + len(marker)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            scan = max(start, len(self.buf) - len(marker))
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("connection closed")
            self.buf += data

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Imap(Conn):
    """Plaintext IMAP on loopback, logged in."""

    def __init__(self, inst, user):
        super().__init__(inst.port("imap"))
        self.tagn = 0
        self.read_until(b"\r\n")
        st, _ = self.cmd(b'LOGIN "%s" "%s"' % (
            user.encode(), inst.password(user).encode()))
        if st != b"OK":
            raise BenchError("LOGIN %s failed" % user)

    def cmd(self, command, literal=None):
        """Sends one command (with an optional LITERAL+ literal at its
        end) and waits for its tagged reply: (status, all the data)."""
        self.tagn += 1
        tag = b"zq%05d" % self.tagn
        if literal is None:
            self.send(tag + b" " + command + b"\r\n")
        else:
            self.send(tag + b" " + command + b" {%d+}\r\n" % len(literal)
                      + literal + b"\r\n")
        self.buf[0:0] = b"\r\n"
        data = self.read_until(b"\r\n" + tag + b" ")
        line = self.read_until(b"\r\n")
        status = line.split(b" ", 1)[0]
        return status, data[2:] + line

    def ok(self, command, literal=None):
        st, data = self.cmd(command, literal)
        if st != b"OK":
            raise BenchError("%s: %r" % (command[:60], data[-300:]))
        return data

    def logout(self):
        try:
            self.cmd(b"LOGOUT")
        except (OSError, EOFError):
            pass
        self.close()


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t), out


def exists_count(data):
    m = re.search(rb"\* (\d+) EXISTS", data)
    return int(m.group(1)) if m else None


# -- a backend under test -----------------------------------------------------

class BenchInstance(harness.DovecotInstance):
    """A harness instance living under the benchmark's own directory
    rather than next to the test suites' /tmp/sbx-* ones."""

    def __init__(self, backend, root, **kw):
        super().__init__(backend, **kw)
        os.rmdir(self.dir)
        self.dir = root / backend
        self.dir.mkdir(mode=0o755)
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "dovecot.conf"
        self.log_path = self.dir / "log" / "dovecot.log"
        self.cafile = self.dir / "ssl" / "cert.pem"


class Backend:
    def __init__(self, name, root):
        self.name = name
        self.inst = BenchInstance(name, root, extra_conf=EXTRA_CONF,
                                  user_pool=80, keep=False)
        self.main = None        # the 10k folder user (APPEND, first rep)
        self.big = None         # the 100k folder user

    def doveadm(self, *args, location=None, timeout=1800):
        """Runs doveadm on this instance; returns stdout and sets
        self.elapsed to the run's seconds. doveadm loads every module of
        Dovecot's doveadm module directory, which a sanitizer build being
        tested elsewhere on the machine may have linked there for a while:
        a run that dies at its start for that reason is run again."""
        cmd = ["doveadm", "-c", str(self.inst.conf)]
        if location:
            cmd += ["-o", "mail_location=" + location]
        cmd += [str(a) for a in args]
        deadline = time.monotonic() + 600
        while True:
            t = time.perf_counter()
            p = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout)
            self.elapsed = time.perf_counter() - t
            err = p.stderr.decode(errors="replace")
            if p.returncode != 0 and "ASan runtime does not come first" \
                    in err and time.monotonic() < deadline:
                progress("doveadm cannot start (a sanitizer module in "
                         "Dovecot's doveadm module directory); retrying")
                time.sleep(5)
                continue
            break
        if p.returncode != 0:
            raise BenchError("%s: %s" % (" ".join(cmd), err[:2000]))
        return p.stdout.decode(errors="replace")

    def count(self, user, mailbox="INBOX"):
        out = self.doveadm("mailbox", "status", "-u", user, "messages",
                           mailbox)
        return int(out.split("=")[1])

    def drop_user(self, user):
        shutil.rmtree(self.inst.mail_dir(user), ignore_errors=True)

    def imap_pid(self):
        """The newest live imap process of this instance's master."""
        master = self.inst.master_pid()
        best = None
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if comm != "imap" or int(fields[1]) != master or \
                    fields[0] == "Z":
                continue
            start = int(fields[19])
            if best is None or start > best[0]:
                best = (start, int(d))
        return best[1] if best else None


def vm_hwm_mb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def disk_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def write_maildir(path, messages, copy_from=None):
    """A Maildir++ INBOX with the messages (or the files of copy_from's
    cur/) in cur/, readable and writable by the mail uid (Dovecot writes
    its uidlist and index there)."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    base = 1700000000
    for n, raw in enumerate(messages):
        flags = "S" if n % 3 else ""
        name = "%d.M%dP1.bench,S=%d:2,%s" % (base + n, n, len(raw), flags)
        with open(path / "cur" / name, "wb") as f:
            f.write(raw)
    if copy_from is not None:
        for name in os.listdir(copy_from / "cur"):
            shutil.copyfile(copy_from / "cur" / name, path / "cur" / name)
    uid, gid = (65534, 65534) if os.getuid() == 0 else \
        (os.getuid(), os.getgid())
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for f in files:
            os.chown(os.path.join(root, f), uid, gid)


# -- the phases ---------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        scale = 10 if self.quick else 1
        self.n_append = 10000 // scale
        self.n_lmtp = 2000 // scale
        self.n_big = 100000 // scale
        self.mixed_ops = 40 if self.quick else 100
        self.reps = args.reps or (2 if self.quick else 3)
        # The phases that move the whole corpus through a backend.
        self.reps_heavy = args.reps or 2
        self.phases = args.phases
        self.samples = {}
        self.first_sample = {}
        self.info = {}
        out = Path(args.out) if args.out else \
            harness.REPO / "build" / "bench" / time.strftime(
                "bench-%Y%m%d-%H%M%S.jsonl")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out_path = out
        self.out = open(out, "w")
        self.work = Path(tempfile.mkdtemp(prefix="sqlbox-bench-",
                                          dir="/tmp"))
        os.chmod(self.work, 0o755)
        # The source maildirs are only read: they live in memory when
        # they can (removing 100,000 files is slow on some disks).
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
        self.srcdir = Path(tempfile.mkdtemp(prefix="sqlbox-bench-", dir=shm))
        os.chmod(self.srcdir, 0o755)
        self.backends = [Backend(n, self.work) for n in args.backends]
        self.run_id = time.strftime("%Y-%m-%dT%H:%M:%S")

    # -- recording ------------------------------------------------------------

    def emit(self, rec):
        rec["run"] = self.run_id
        self.out.write(json.dumps(rec, sort_keys=True) + "\n")
        self.out.flush()

    def record(self, phase, backend, value, rep, **extra):
        self.samples.setdefault(phase, {}).setdefault(backend.name,
                                                      []).append(value)
        unit = PHASES[phase][0]
        rec = {"type": "sample", "phase": phase, "backend": backend.name,
               "rep": rep, "value": round(value, 4), "unit": unit}
        rec.update(extra)
        self.emit(rec)

    def order(self, rep):
        k = rep % len(self.backends)
        return self.backends[k:] + self.backends[:k]

    # -- setup ----------------------------------------------------------------

    def needs_big(self):
        return "select" in self.phases or "pop3" in self.phases

    def setup(self):
        progress("generating the corpus (%d messages, seed %d)"
                 % (self.n_append, SEED))
        self.corpus = Corpus(SEED).messages(self.n_append)
        self.info["corpus_bytes"] = sum(map(len, self.corpus))
        small = Corpus(SEED + 1, small=True)
        progress("corpus: %.1f MB, %d to %d bytes; generating the %d-message"
                 " folder" % (self.info["corpus_bytes"] / 1e6,
                              min(map(len, self.corpus)),
                              max(map(len, self.corpus)), self.n_big))
        self.src10k = self.srcdir / "src10k"
        write_maildir(self.src10k, self.corpus)
        self.src_big = self.srcdir / "src100k"
        big = small.messages(self.n_big if self.needs_big() else 0)
        self.info["big_corpus_bytes"] = sum(map(len, big))
        write_maildir(self.src_big, big)
        del big
        self.mixed_msgs = small.messages(50)
        for b in self.backends:
            progress("starting %s Dovecot" % b.name)
            b.inst.start()
        b = self.backends[0]
        self.info["mail_fsync"] = subprocess.run(
            ["doveconf", "-c", str(b.inst.conf), "-h", "mail_fsync"],
            stdout=subprocess.PIPE, text=True).stdout.strip()
        # Dovecot writes its uidlist and index into the source maildirs on
        # first use: do that once, unmeasured, for every backend's sake.
        u = b.inst.new_user()
        for src in (self.src10k, self.src_big):
            loc = "maildir:%s" % src
            b.doveadm("fetch", "-u", u, "guid", "all", location=loc)
        self.src10k_loc = "maildir:%s" % self.src10k
        self.src_big_loc = "maildir:%s" % self.src_big

    def build_main(self):
        """The 10,000-message folder when APPEND does not run: imported
        from the corpus's maildir, unmeasured, with the instance's own
        mail_fsync (as APPEND would leave it: nothing unwritten)."""
        for b in self.backends:
            b.main = b.inst.new_user()
            progress("building the %d-message folder on %s (doveadm import)"
                     % (self.n_append, b.name))
            b.doveadm("import", "-u", b.main, self.src10k_loc, "", "all")
            if b.count(b.main) != self.n_append:
                raise BenchError("%s: %d messages imported, not %d"
                                 % (b.name, b.count(b.main), self.n_append))

    def build_big(self):
        for b in self.backends:
            b.big = b.inst.new_user()
            how = "file copy" if b.name == "maildir" else "doveadm import"
            progress("building the %d-message folder on %s (%s)"
                     % (self.n_big, b.name, how))
            t = time.perf_counter()
            if b.name == "maildir":
                # A maildir is its files: copy them in, then let Dovecot
                # index them (as after an MTA's deliveries).
                dest = b.inst.mail_dir(b.big)
                write_maildir(dest, [], copy_from=self.src_big)
            else:
                # Not a phase: fsync only slows the build down on a busy
                # disk and changes nothing in what is stored.
                b.doveadm("-o", "mail_fsync=never", "import", "-u", b.big,
                          self.src_big_loc, "", "all")
            n = b.count(b.big)
            t = time.perf_counter() - t
            if n != self.n_big:
                raise BenchError("%s: %d messages imported, not %d"
                                 % (b.name, n, self.n_big))
            self.info.setdefault("build_big_s", {})[b.name] = round(t, 2)
            progress("  %s: %.1f s (%.0f msg/s)" % (b.name, t,
                                                   self.n_big / t))
            # The first ever SELECT + FETCH on it, before any caching.
            s, f, _ = self.select_fetch(b, b.big, self.n_big)
            self.record("fetch_env_first_100k", b, f * 1000, 0)

    # -- IMAP sessions -------------------------------------------------------

    FETCH = b"FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE)"

    def select_fetch(self, b, user, expect, warm=False, rss=False):
        c = Imap(b.inst, user)
        try:
            ts, data = timed(c.ok, b"SELECT INBOX")
            if exists_count(data) != expect:
                raise BenchError("%s: SELECT says %r messages, not %d" % (
                    b.name, exists_count(data), expect))
            tf, data = timed(c.ok, self.FETCH)
            if data.count(b" ENVELOPE (") != expect:
                raise BenchError("%s: FETCH gave %d ENVELOPEs" % (
                    b.name, data.count(b" ENVELOPE (")))
            out = [ts, tf, None]
            if warm:
                out.append(timed(c.ok, b"SELECT INBOX")[0])
                out.append(timed(c.ok, self.FETCH)[0])
            if rss:
                pid = b.imap_pid()
                out[2] = vm_hwm_mb(pid) if pid else None
            return out
        finally:
            c.logout()

    # -- phases ---------------------------------------------------------------

    def phase_append(self, b, rep):
        user = b.inst.new_user()
        c = Imap(b.inst, user)
        times = []
        t0 = time.perf_counter()
        for raw in self.corpus:
            c.ok(b"APPEND INBOX (\\Seen)", raw)
            times.append(time.perf_counter())
        c.logout()
        total = times[-1] - t0
        tenth = len(times) // 10
        first = tenth / (times[tenth - 1] - t0)
        last = tenth / (times[-1] - times[-tenth - 1])
        if b.count(user) != self.n_append:
            raise BenchError("%s: APPEND lost messages" % b.name)
        self.record("append_rate", b, self.n_append / total, rep,
                    seconds=round(total, 3))
        self.record("append_rate_first10", b, first, rep)
        self.record("append_rate_last10", b, last, rep)
        _, f, _ = self.select_fetch(b, user, self.n_append)
        self.record("fetch_env_first_10k", b, f * 1000, rep)
        self.record("disk", b, disk_bytes(b.inst.mail_dir(user)) / 1e6, rep)
        progress("  %s: %.0f msg/s (first tenth %.0f, last %.0f)"
                 % (b.name, self.n_append / total, first, last))
        if b.main is None:
            b.main = user
        else:
            b.drop_user(user)

    def lmtp_run(self, b, user, msgs):
        lm = smtplib.LMTP("127.0.0.1", b.inst.port("lmtp"), timeout=900)
        try:
            lm.ehlo()
            for raw in msgs:
                code, text = lm.mail("sender@example.org")
                if code != 250:
                    raise BenchError("LMTP MAIL: %d %s" % (code, text))
                code, text = lm.rcpt(user)
                if code not in (250, 251):
                    raise BenchError("LMTP RCPT: %d %s" % (code, text))
                code, text = lm.data(raw)
                if code != 250:
                    raise BenchError("LMTP DATA: %d %s" % (code, text))
            lm.quit()
        finally:
            lm.close()

    def phase_lmtp(self, b, rep):
        msgs = self.corpus[:self.n_lmtp]
        for par in (1, 4):
            user = b.inst.new_user()
            errors = []

            def worker(part):
                try:
                    self.lmtp_run(b, user, part)
                except Exception as e:      # reported below
                    errors.append(e)
            threads = [threading.Thread(target=worker,
                                        args=(msgs[i::par],))
                       for i in range(par)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            t = time.perf_counter() - t
            if errors:
                raise BenchError("%s LMTP: %s" % (b.name, errors[0]))
            if b.count(user) != len(msgs):
                raise BenchError("%s: LMTP lost messages" % b.name)
            self.record("lmtp_%d" % par, b, len(msgs) / t, rep,
                        seconds=round(t, 3))
            progress("  %s: LMTP x%d %.0f msg/s" % (b.name, par,
                                                    len(msgs) / t))
            b.drop_user(user)

    def phase_select(self, b, rep):
        for user, n, tag in ((b.main, self.n_append, "10k"),
                             (b.big, self.n_big, "100k")):
            s, f, rss, sw, fw = self.select_fetch(
                b, user, n, warm=True, rss=(tag == "100k"))
            self.record("select_cold_" + tag, b, s * 1000, rep)
            self.record("fetch_env_cold_" + tag, b, f * 1000, rep)
            self.record("select_warm_" + tag, b, sw * 1000, rep)
            self.record("fetch_env_warm_" + tag, b, fw * 1000, rep)
            if rss is not None:
                self.record("rss_100k", b, rss, rep)

    def phase_search(self, b, rep):
        c = Imap(b.inst, b.main)
        try:
            c.ok(b"SELECT INBOX")
            t, d1 = timed(c.ok, b'SEARCH SUBJECT "%s"'
                          % SUBJECT_TOKEN.encode())
            self.record("search_header", b, t * 1000, rep,
                        hits=len(d1.split(b"\r\n")[0].split()) - 2)
            t, d2 = timed(c.ok, b'SEARCH BODY "%s"' % BODY_TOKEN.encode())
            self.record("search_body", b, t * 1000, rep,
                        hits=len(d2.split(b"\r\n")[0].split()) - 2)
        finally:
            c.logout()

    def phase_copy_move(self, b, rep):
        c = Imap(b.inst, b.main)
        a, m = b"C%d" % rep, b"M%d" % rep
        try:
            c.ok(b"CREATE " + a)
            c.ok(b"CREATE " + m)
            c.ok(b"SELECT INBOX")
            t, _ = timed(c.ok, b"UID COPY 1:* " + a)
            self.record("copy", b, t * 1000, rep)
            c.ok(b"SELECT " + a)
            t, _ = timed(c.ok, b"UID MOVE 1:* " + m)
            self.record("move", b, t * 1000, rep)
            c.ok(b"CLOSE")
            if b.count(b.main, m.decode()) != self.n_append:
                raise BenchError("%s: MOVE lost messages" % b.name)
            c.ok(b"DELETE " + a)
            c.ok(b"DELETE " + m)
            if rep == 0:
                self.ten_copies(b, c)
        finally:
            c.logout()

    def ten_copies(self, b, c):
        """The user's disk with nine more copies of the 10,000 folder,
        over the disk with one (INBOX alone)."""
        one = disk_bytes(b.inst.mail_dir(b.main))
        names = [b"T%d" % i for i in range(9)]
        c.ok(b"SELECT INBOX")
        for name in names:
            c.ok(b"CREATE " + name)
            c.ok(b"UID COPY 1:* " + name)
        c.ok(b"CLOSE")
        ten = disk_bytes(b.inst.mail_dir(b.main))
        self.record("disk_10_copies", b, ten / one, 0,
                    one_mb=round(one / 1e6, 1), ten_mb=round(ten / 1e6, 1))
        for name in names:
            c.ok(b"DELETE " + name)

    def pop3_login(self, b, user):
        c = Conn(b.inst.port("pop3"))
        c.read_until(b"\r\n")
        for line in (b"USER " + user.encode(),
                     b"PASS " + b.inst.password(user).encode()):
            c.send(line + b"\r\n")
            r = c.read_until(b"\r\n")
            if not r.startswith(b"+OK"):
                c.close()
                raise BenchError("POP3 login: %r" % r)
        return c

    def pop3_list(self, c, expect):
        c.send(b"LIST\r\n")
        listing = c.read_until(b"\r\n.\r\n")
        c.send(b"UIDL\r\n")
        c.read_until(b"\r\n.\r\n")
        n = listing.count(b"\r\n") - 2
        if n != expect:
            raise BenchError("POP3 LIST has %d messages, not %d"
                             % (n, expect))
        return n

    def phase_pop3(self, b, rep):
        # login + LIST + UIDL of the big folder, in a new process
        t = time.perf_counter()
        c = self.pop3_login(b, b.big)
        try:
            self.pop3_list(c, self.n_big)
            t = time.perf_counter() - t
            c.send(b"QUIT\r\n")
            c.read_until(b"\r\n")
        finally:
            c.close()
        self.record("pop3_list_100k", b, t * 1000, rep)
        # RETR of every message of the 10,000 folder
        c = self.pop3_login(b, b.main)
        try:
            n = self.pop3_list(c, self.n_append)
            total = 0
            t = time.perf_counter()
            for i in range(1, n + 1):
                c.send(b"RETR %d\r\n" % i)
                total += len(c.read_until(b"\r\n.\r\n"))
            t = time.perf_counter() - t
            c.send(b"QUIT\r\n")
            c.read_until(b"\r\n")
        finally:
            c.close()
        self.record("pop3_retr", b, total / 1e6 / t, rep, bytes=total)

    def phase_doveadm(self, b, rep):
        user = b.inst.new_user()
        b.doveadm("import", "-u", user, self.src10k_loc, "", "all")
        t = b.elapsed
        if b.count(user) != self.n_append:
            raise BenchError("%s: import lost messages" % b.name)
        self.record("import", b, t, rep)
        b.drop_user(user)
        user = b.inst.new_user()
        b.doveadm("backup", "-R", "-u", user, self.src10k_loc)
        t = b.elapsed
        if b.count(user) != self.n_append:
            raise BenchError("%s: backup lost messages" % b.name)
        self.record("backup", b, t, rep)
        progress("  %s: import %.1f s, backup -R %.1f s" % (
            b.name, self.samples["import"][b.name][-1], t))
        b.drop_user(user)

    def phase_mixed(self, b, rep):
        clients = 10
        lat = []
        errors = []
        lock = threading.Lock()

        def worker(k):
            rng = random.Random("%d/%d" % (rep, k))
            try:
                c = Imap(b.inst, b.main)
                c.ok(b"SELECT INBOX")
                mine = []
                for _ in range(self.mixed_ops):
                    r = rng.random()
                    uid = rng.randrange(1, self.n_append + 1)
                    if r < 0.35:
                        cmd = b"UID FETCH %d BODY.PEEK[]" % uid
                        lit = None
                    elif r < 0.50:
                        cmd = b"UID FETCH %d:%d (FLAGS ENVELOPE)" % (
                            uid, uid + 19)
                        lit = None
                    elif r < 0.70:
                        cmd = b"UID STORE %d %sFLAGS (\\Flagged)" % (
                            uid, rng.choice((b"+", b"-")))
                        lit = None
                    elif r < 0.80:
                        cmd = b"UID SEARCH FLAGGED"
                        lit = None
                    elif r < 0.90:
                        cmd = b"APPEND INBOX"
                        lit = rng.choice(self.mixed_msgs)
                    else:
                        cmd, lit = b"NOOP", None
                    t, _ = timed(c.ok, cmd, lit)
                    mine.append(t)
                c.logout()
                with lock:
                    lat.extend(mine)
            except Exception as e:      # reported below
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(k,))
                   for k in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        t = time.perf_counter() - t
        if errors:
            raise BenchError("%s mixed: %s" % (b.name, errors[0]))
        lat.sort()
        self.record("mixed", b, len(lat) / t, rep, seconds=round(t, 3))
        self.record("mixed_p95", b, lat[int(len(lat) * 0.95)] * 1000, rep)

    # -- running --------------------------------------------------------------

    def run_phase(self, title, fn, reps=None):
        reps = reps or self.reps
        for rep in range(reps):
            for b in self.order(rep):
                progress("%s: %s, rep %d/%d" % (title, b.name, rep + 1,
                                                 reps))
                fn(b, rep)

    def run(self):
        self.emit({"type": "config", "quick": self.quick, "reps": self.reps,
                   "backends": [b.name for b in self.backends],
                   "n_append": self.n_append, "n_lmtp": self.n_lmtp,
                   "n_big": self.n_big, "seed": SEED,
                   "machine": {"cpus": os.cpu_count(),
                               "kernel": platform.release(),
                               "python": platform.python_version()}})
        try:
            self.setup()
            self.emit({"type": "info", **self.info})
            if self.needs_big():
                self.build_big()
            if "append" not in self.phases and \
                    any(p in self.phases for p in NEEDS_MAIN):
                self.build_main()
            groups = {
                "append": ("APPEND %d" % self.n_append, self.phase_append,
                           self.reps_heavy),
                "lmtp": ("LMTP %d" % self.n_lmtp, self.phase_lmtp,
                         self.reps_heavy),
                "select": ("SELECT+FETCH", self.phase_select,
                           self.reps + 2),
                "search": ("SEARCH", self.phase_search, None),
                "copy": ("COPY/MOVE", self.phase_copy_move, None),
                "pop3": ("POP3", self.phase_pop3, None),
                "doveadm": ("doveadm import/backup", self.phase_doveadm,
                            self.reps_heavy),
                "mixed": ("mixed load", self.phase_mixed, None),
            }
            for name in PHASE_GROUPS:
                if name in self.phases:
                    title, fn, reps = groups[name]
                    self.run_phase(title, fn, reps=reps)
            for b in self.backends:
                for line in b.inst.log_problems():
                    progress("log problem (%s): %s" % (b.name, line))
                    self.emit({"type": "log_problem", "backend": b.name,
                               "line": line})
            self.emit({"type": "info", **self.info})
            self.report()
        finally:
            progress("stopping the instances and removing their files")
            for b in self.backends:
                try:
                    b.inst.close()
                except Exception as e:
                    progress("stopping %s: %s" % (b.name, e))
            shutil.rmtree(self.srcdir, ignore_errors=True)
            shutil.rmtree(self.work, ignore_errors=True)
            self.out.close()

    # -- the table -----------------------------------------------------------

    def report(self):
        names = [b.name for b in self.backends]
        ref = REFERENCE if REFERENCE in names else names[-1]
        others = [n for n in names if n != ref]
        head = ["phase", "unit"] + [n for n in names] + \
            ["%s/%s" % (n, ref) for n in others] + ["target", ""]
        rows = []
        for phase, (unit, better, target, what) in PHASES.items():
            if phase not in self.samples:
                continue
            s = self.samples[phase]
            med = {n: statistics.median(s[n]) for n in names if n in s}
            row = [phase, unit]
            for n in names:
                v = s.get(n)
                row.append("%s (%s-%s)" % (fmt(med[n]), fmt(min(v)),
                                           fmt(max(v))) if v else "-")
            ratios = {}
            for n in others:
                if n in med and med.get(ref):
                    ratios[n] = med[n] / med[ref]
                    row.append("%.2fx" % ratios[n])
                else:
                    row.append("-")
            verdict = ""
            tgt = ""
            if target and "sqlbox" in med:
                kind, x = target
                if kind == "abs":
                    tgt = "<= %g %s" % (x, unit)
                    ok = med["sqlbox"] <= x
                elif "sqlbox" in ratios:
                    tgt = ("%s %.2fx" % (">=" if better == "higher" else
                                         "<=", x))
                    r = ratios["sqlbox"]
                    ok = r >= x if better == "higher" else r <= x
                else:
                    ok = None
                verdict = "" if ok is None else ("met" if ok else "MISSED")
            row += [tgt, verdict]
            rows.append(row)
            self.emit({"type": "summary", "phase": phase, "unit": unit,
                       "better": better, "what": what,
                       "median": {n: round(v, 4) for n, v in med.items()},
                       "min": {n: round(min(s[n]), 4) for n in s},
                       "max": {n: round(max(s[n]), 4) for n in s},
                       "samples": {n: len(s[n]) for n in s},
                       "ratio_to_" + ref: {n: round(r, 4)
                                           for n, r in ratios.items()},
                       "target": tgt, "verdict": verdict})
        widths = [max(len(str(r[i])) for r in rows + [head])
                  for i in range(len(head))]
        print()
        print("sqlbox benchmark, %s run, %d repetitions (%d of APPEND, LMTP"
              " and doveadm), mail_fsync=%s, %d CPUs; medians (min-max); "
              "ratio = median / %s median"
              % ("quick" if self.quick else "full", self.reps,
                 self.reps_heavy,
                 self.info.get("mail_fsync"), os.cpu_count(), ref))
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for r in rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        print("corpus: %d messages, %.1f MB; big folder: %d messages, %.1f MB;"
              " big folder build (not a phase): %s"
              % (self.n_append, self.info["corpus_bytes"] / 1e6, self.n_big,
                 self.info["big_corpus_bytes"] / 1e6,
                 ", ".join("%s %.1f s" % kv for kv in
                           self.info.get("build_big_s", {}).items())))
        print("JSON lines: %s" % self.out_path)


def fmt(v):
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a tenth of the counts, 2 repetitions")
    ap.add_argument("--reps", type=int, default=0,
                    help="repetitions per phase (default 3, and 2 of "
                    "APPEND, LMTP and doveadm; quick 2)")
    ap.add_argument("--backends", default="sqlbox,maildir,sdbox",
                    help="comma-separated: sqlbox maildir sdbox mdbox")
    ap.add_argument("--phases", default=",".join(PHASE_GROUPS),
                    help="comma-separated, default all: "
                    + " ".join(PHASE_GROUPS))
    ap.add_argument("--out", help="JSON lines file (default "
                    "build/bench/bench-<time>.jsonl)")
    args = ap.parse_args()
    args.backends = [x for x in args.backends.split(",") if x]
    args.phases = [x for x in args.phases.split(",") if x]
    for n in args.phases:
        if n not in PHASE_GROUPS:
            ap.error("unknown phase %s" % n)
    for n in args.backends:
        if n not in harness.BACKENDS or n == "maildir-fs":
            ap.error("unknown backend %s" % n)
    if "sqlbox" in args.backends and not (harness.build_dir() /
                                          harness.PLUGIN_NAME).exists():
        ap.error("the plugin is not built in %s: run make first"
                 % harness.build_dir())
    try:
        Bench(args).run()
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
