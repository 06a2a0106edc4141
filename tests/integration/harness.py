# SPDX-License-Identifier: MIT
"""A private Dovecot for the integration tests, and the small IMAP helpers
they share.

DovecotInstance wraps scripts/dovecot-instance.sh: a temporary directory,
free loopback ports, a self-signed certificate the clients trust (real
verification, not CERT_NONE), one backend (sqlbox, or maildir/sdbox as
oracles), a pool of users (more on demand), and the instance's log, which
every test checks for Error/Panic/Fatal lines at the end.

The rest: a modified UTF-7 codec (RFC 3501 5.1.3), IMAP quoting, a parser
for IMAP response data (LIST, STATUS, FETCH) and RawImap, a socket-level
client for what imaplib cannot send (MULTIAPPEND with LITERAL+, exact
transcripts).
"""

import contextlib
import fcntl
import json
import os
import random
import re
import shlex
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import imaplib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dovecot-instance.sh"
PLUGIN_NAME = "lib20_sqlbox_plugin.so"

# Ports relative to the instance's base (scripts/dovecot-instance.sh).
PORT_OFFSETS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995,
                "lmtp": 24, "submission": 587, "submissions": 465,
                "relay": 25}

# Backends: mail_location and whether the sqlbox plugin is loaded. Maildir++
# (the plain "maildir") refuses '.' in names; "maildir-fs" is the closer
# model of sqlbox's arbitrary names, used when the suite checks itself.
BACKENDS = {
    "sqlbox": ("sqlbox:~/sqlbox", True),
    "maildir": ("maildir:~/Maildir", False),
    "maildir-fs": ("maildir:~/Maildir:LAYOUT=fs", False),
    "sdbox": ("sdbox:~/sdbox", False),
}

LOG_PROBLEM = re.compile(r": (Error|Panic|Fatal): ")

_used_bases = set()

# SQLBOX_CONTAINER=IMAGE runs every instance's Dovecot in a container of
# IMAGE (the Containerfile's; `make container-check`) instead of on this
# machine. The instance's directory and the plugin directory are mounted at
# the same paths and the container shares the host's network and pids, so
# ports, files, sockets, pids and the log stay where the tests look.
# SQLBOX_PODMAN is the podman command, SQLBOX_PODMAN_RUN extra run options.
CONTAINER_IMAGE = os.environ.get("SQLBOX_CONTAINER") or None


def build_dir():
    """The plugin's build directory: $SQLBOX_BUILD or <repo>/build/default."""
    return Path(os.environ.get("SQLBOX_BUILD") or REPO / "build" / "default")



DOVEADM_MODULE = "/usr/lib/dovecot/modules/doveadm/lib10_doveadm_sqlbox_plugin.so"


@contextlib.contextmanager
def linked_doveadm_module():
    """doveadm loads plugins only from its own module directory: links the
    built lib10_doveadm_sqlbox_plugin.so there for the duration (as root;
    skips otherwise), unless one is there already."""
    import pytest
    if os.getuid() != 0:
        pytest.skip("needs root to link the doveadm module into %s"
                    % os.path.dirname(DOVEADM_MODULE))
    built = os.path.join(build_dir(), "lib10_doveadm_sqlbox_plugin.so")
    assert os.path.exists(built), "doveadm module not built: run make"
    existed = os.path.lexists(DOVEADM_MODULE)
    if not existed:
        os.symlink(os.path.abspath(built), DOVEADM_MODULE)
    try:
        yield
    finally:
        if not existed:
            os.unlink(DOVEADM_MODULE)

def sqlbox_only(instance):
    """Skips the rest of a test unless the backend is sqlbox: for the
    sqlite-specific checks, in the suite's self-check mode."""
    import pytest
    if not instance.is_sqlbox:
        pytest.skip("sqlite-specific check (backend %s)" % instance.backend)


def memory_is_measurable():
    """False when Dovecot runs under a sanitizer or valgrind (`make asan`,
    `make valgrind-check` set TOOL_CONF): ASan's allocator holds 256 MB of
    freed memory in quarantine and adds shadow memory, so a process's
    peak says nothing about sqlbox. Memory bounds are asserted in `make
    check`."""
    return not os.environ.get("TOOL_CONF")


def backend_under_test():
    """The backend under test: sqlbox unless SQLBOX_TEST_BACKEND says
    otherwise (the suite's self-check against Dovecot's own backends)."""
    name = os.environ.get("SQLBOX_TEST_BACKEND", "sqlbox")
    if name == "maildir":
        name = "maildir-fs"
    if name not in BACKENDS:
        raise ValueError("SQLBOX_TEST_BACKEND=%s: use one of %s"
                         % (name, ", ".join(BACKENDS)))
    return name


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_port_base(rng=random):
    """A base below the ephemeral range whose ports are all free now."""
    for _ in range(200):
        base = rng.randrange(11000, 31000, 10)
        if base in _used_bases:
            continue
        if all(_port_free(base + off) for off in PORT_OFFSETS.values()):
            _used_bases.add(base)
            return base
    raise RuntimeError("no free port base found")


def plugin_md_blocks(lang):
    """The fenced code blocks of PLUGIN.md in a language (```sql), in
    order: tests run the documented examples themselves, so the page and
    the tests can't drift apart."""
    text = (REPO / "PLUGIN.md").read_text()
    return re.findall(r"^```%s\n(.*?)^```" % re.escape(lang), text,
                      re.M | re.S)


class InstanceError(Exception):
    pass


class DovecotInstance:
    """One private Dovecot. Typical use:

        d = DovecotInstance("sqlbox"); d.start()
        user = d.new_user()
        c = d.imap(user)            # logged in over STARTTLS
        ...
        d.close()                   # stops it and removes the directory
    """

    def __init__(self, backend="sqlbox", plugin_dir=None, extra_conf=None,
                 idle_check_interval=None, vsz_limit=None, debug=None,
                 env=None, keep=None, user_pool=60, local=False):
        if backend not in BACKENDS:
            raise ValueError("unknown backend %r" % backend)
        self.backend = backend
        self.mail_location, self.loads_plugin = BACKENDS[backend]
        self.plugin_dir = Path(plugin_dir) if plugin_dir else build_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="sbx-%s-" % backend[:6],
                                         dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "dovecot.conf"
        self.log_path = self.dir / "log" / "dovecot.log"
        self.cafile = self.dir / "ssl" / "cert.pem"
        self.port_base = None
        self.extra_conf = extra_conf
        self.idle_check_interval = idle_check_interval
        self.vsz_limit = vsz_limit
        self.debug = (os.environ.get("SQLBOX_DEBUG") == "1"
                      if debug is None else debug)
        self.extra_env = dict(env or {})
        self.keep = (os.environ.get("SQLBOX_KEEP") == "1"
                     if keep is None else keep)
        self.running = False
        # passwd-file is re-read at most once a second (db-passwd-file.c
        # passwd_file_sync()), so users added while Dovecot runs are not
        # seen at once: a pool is written before the start, and
        # add_user() on a running instance waits out that second.
        self._pool = ["user%02d" % n for n in range(1, user_pool + 1)]
        self._users = {u: "pw-" + u for u in self._pool}
        self._clients = []
        self._ssl_ctx = None
        # local: on this machine even when SQLBOX_CONTAINER is set.
        self.container = None if local else CONTAINER_IMAGE
        self._container_name = None

    # -- properties ---------------------------------------------------------

    @property
    def is_sqlbox(self):
        return self.backend == "sqlbox"

    def port(self, name):
        return self.port_base + PORT_OFFSETS[name]

    @property
    def plugin_path(self):
        return self.plugin_dir / PLUGIN_NAME

    def __repr__(self):
        return "<DovecotInstance %s %s ports %s>" % (
            self.backend, self.dir, self.port_base)

    # -- the script ---------------------------------------------------------

    def _env(self):
        env = dict(os.environ)
        env.update({
            "SQLBOX_PLUGIN_DIR": str(self.plugin_dir),
            "MAIL_LOCATION": self.mail_location,
            "LOAD_SQLBOX": "yes" if self.loads_plugin else "no",
            "PORT_BASE": str(self.port_base),
            "USERS": "",
            "SQLBOX_DEBUG": "1" if self.debug else "0",
        })
        for key in ("EXTRA_CONF", "IDLE_CHECK_INTERVAL", "VSZ_LIMIT"):
            env.pop(key, None)
        if self.extra_conf:
            path = self.dir / "extra.conf"
            path.write_text(self.extra_conf)
            env["EXTRA_CONF"] = str(path)
        if self.idle_check_interval:
            env["IDLE_CHECK_INTERVAL"] = str(self.idle_check_interval)
        if self.vsz_limit is not None:
            env["VSZ_LIMIT"] = str(self.vsz_limit)
        env.update(self.extra_env)
        return env

    def _script(self, *args, check=True):
        p = subprocess.run([str(SCRIPT), args[0], str(self.dir)] +
                           [str(a) for a in args[1:]],
                           env=self._env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        if check and p.returncode != 0:
            raise InstanceError("dovecot-instance.sh %s failed (%d):\n%s%s"
                                % (args[0], p.returncode, p.stdout, p.stderr))
        return p

    def write(self):
        env_users = " ".join("%s:%s" % kv for kv in self._users.items())
        self.extra_env["USERS"] = env_users
        try:
            self._script("write")
        finally:
            del self.extra_env["USERS"]

    def start(self):
        """Writes the config (first time) and starts; retries on another
        port base if a port was taken in the meantime."""
        if self.running:
            return
        if self.loads_plugin and not self.plugin_path.exists():
            raise InstanceError(
                "sqlbox plugin not built: %s does not exist. Build it with "
                "`make` (SQLBOX_BUILD=%s)" % (self.plugin_path,
                                             self.plugin_dir))
        for attempt in range(5):
            if self.port_base is None:
                self.port_base = pick_port_base()
                self.write()
            if self.container:
                p = self._container_start()
            else:
                p = self._script("start", check=False)
            if p.returncode == 0:
                self.running = True
                return
            text = p.stdout + p.stderr
            if "Address already in use" in text and attempt < 4:
                self.port_base = None
                continue
            raise InstanceError("start failed:\n%s" % text)

    def stop(self):
        self.close_clients()
        if self.container:
            self._container_stop()
        else:
            self._script("stop")
        self.running = False

    def restart(self):
        self.stop()
        self.start()

    def status(self):
        if self.container:
            return self._container_name is not None and self._podman(
                "inspect", "-f", "{{.State.Running}}",
                self._container_name).stdout.strip() == "true"
        return self._script("status", check=False).returncode == 0

    # -- Dovecot in a container (SQLBOX_CONTAINER) ----------------------------

    def _podman(self, *args, timeout=120):
        cmd = shlex.split(os.environ.get("SQLBOX_PODMAN", "podman"))
        return subprocess.run(cmd + [str(a) for a in args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)

    def _container_start(self):
        """Runs this instance's dovecot.conf in a container; returns a
        CompletedProcess like _script("start")."""
        name = "sqlbox-test-%d-%d" % (os.getpid(), self.port_base)
        self._podman("rm", "-f", name)
        # The plugin directory may hold links into the build directory.
        mounts = ["-v", "%s:%s" % (self.dir, self.dir)]
        for d in sorted({str(self.plugin_dir), str(build_dir())}):
            mounts += ["-v", "%s:%s:ro" % (d, d)]
        args = (["run", "-d", "--name", name, "--network=host",
                 "--pid=host"] +
                shlex.split(os.environ.get("SQLBOX_PODMAN_RUN", "")) +
                mounts + ["-e", "DOVECOT_CONF=%s" % self.conf,
                          self.container])
        p = self._podman(*args)
        if p.returncode != 0:
            return p
        self._container_name = name
        pidfile = self.dir / "run" / "master.pid"
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port("imap"))) == 0 \
                        and pidfile.exists():
                    return p
            if not self.status():
                break
            time.sleep(0.1)
        logs = self._podman("logs", name)
        self._container_stop()
        return subprocess.CompletedProcess(
            args, 1, logs.stdout, logs.stderr + self.log_text())

    def _container_stop(self):
        """TERM to the master only, as the script does (`podman stop` would
        signal every process of a container without its own pid namespace
        at once), then waits for it to exit."""
        if self._container_name is None:
            return
        self._podman("kill", "--signal", "TERM", self._container_name)
        try:
            self._podman("wait", self._container_name, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self._podman("rm", "-f", self._container_name)
        self._container_name = None

    def close(self):
        """Stops the instance and removes its directory (kept with
        SQLBOX_KEEP=1, for a post-mortem)."""
        try:
            if self.running:
                self.stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- users --------------------------------------------------------------

    def add_user(self, user, password=None, fields=None):
        """Adds a passwd-file user (and its home) and, on a running
        instance, waits until the auth process will have re-read it.
        fields: extra userdb fields ({"name": "value"}), i.e. per-user
        settings."""
        password = password or "pw-" + user
        self._users[user] = password
        extra = " ".join("userdb_%s=%s" % kv for kv in (fields or {}).items())
        if self.port_base is not None:
            self._script("add-user", user, password,
                         *([extra] if extra else []))
            if self.running:
                time.sleep(1.1)
        return user

    def new_user(self):
        """A user that has never logged in."""
        if self._pool:
            return self._pool.pop(0)
        self._extra_seq = getattr(self, "_extra_seq", 0) + 1
        return self.add_user("extra%03d" % self._extra_seq)

    def password(self, user):
        return self._users[user]

    def user_dir(self, user):
        """The user's home directory."""
        return self.dir / "home" / user

    def mail_dir(self, user):
        loc = self.mail_location.split(":")[1]
        return self.user_dir(user) / loc.replace("~/", "", 1)

    def db_path(self, user):
        return self.user_dir(user) / "sqlbox" / "mail.sqlite"

    # -- clients ------------------------------------------------------------

    def ssl_context(self):
        """Trusts exactly this instance's self-signed certificate."""
        if self._ssl_ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.cafile))
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            self._ssl_ctx = ctx
        return self._ssl_ctx

    def imap(self, user=None, tls="starttls", login=True, timeout=60):
        """An imaplib client, logged in as user unless login is False.
        tls: 'starttls' (143 role), 'implicit' (993 role) or None
        (plaintext on the 143 role)."""
        if tls == "implicit":
            c = imaplib.IMAP4_SSL("127.0.0.1", self.port("imaps"),
                                  ssl_context=self.ssl_context(),
                                  timeout=timeout)
        else:
            c = imaplib.IMAP4("127.0.0.1", self.port("imap"),
                              timeout=timeout)
            if tls == "starttls":
                c.starttls(ssl_context=self.ssl_context())
            elif tls is not None:
                raise ValueError("tls=%r" % (tls,))
        self._clients.append(c)
        if login:
            c.login(user, self.password(user))
        return c

    def raw_imap(self, user=None, tls="starttls", login=True, timeout=60):
        """A RawImap on a fresh connection, logged in unless login is False."""
        if tls == "implicit":
            sock = socket.create_connection(
                ("127.0.0.1", self.port("imaps")), timeout=timeout)
            sock = self.ssl_context().wrap_socket(
                sock, server_hostname="127.0.0.1")
            r = RawImap(sock)
        else:
            sock = socket.create_connection(
                ("127.0.0.1", self.port("imap")), timeout=timeout)
            r = RawImap(sock)
            if tls == "starttls":
                r.starttls(self.ssl_context())
        self._clients.append(r)
        if login:
            status, _, _ = r.command(b"LOGIN " + quote(user) + b" " +
                                     quote(self.password(user)))
            if status != "OK":
                raise InstanceError("LOGIN %s failed" % user)
        return r

    def close_clients(self):
        for c in self._clients:
            try:
                if isinstance(c, RawImap):
                    c.close()
                else:
                    if c.state == "SELECTED":
                        c.close()
                    c.logout()
            except Exception:
                try:
                    c.shutdown()
                except Exception:
                    pass
        self._clients = []

    def wait_sessions_closed(self, since=0, timeout=5.0):
        """Waits until every imap/pop3 session that logged in after the
        log offset `since` has ended (logged its disconnect, or was
        reported dead by the master), so that its last log lines are in.
        Returns False on timeout."""
        deadline = time.time() + timeout
        while True:
            text = self.log_text(since)
            pids = set(re.findall(r"(?:imap|pop3)-login: Info: Login: .*?"
                                  r"mpid=(\d+)", text))
            done = set(re.findall(r"^\S+ \S+ (?:imap|pop3)\([^)]*\)<(\d+)>"
                                  r"(?:<[^>]*>)*: \w+: "
                                  r"(?:Disconnected|Logged out)", text, re.M))
            done |= set(re.findall(r"service\((?:imap|pop3)\): child "
                                   r"(\d+) (?:killed|returned)", text))
            if pids <= done:
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.05)

    def lmtp_deliver(self, rcpts, message, mail_from="sender@example.org"):
        """Delivers one message over LMTP (the inet listener). Returns
        {rcpt: (code, text)} with the reply for every recipient: RCPT's when
        refused there, else the per-recipient reply after DATA
        (RFC 2033 4.2)."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        if isinstance(message, str):
            message = message.encode()
        # SMTP/LMTP carry CRLF lines only (RFC 5321 2.3.8); smtplib adds
        # the final CRLF and does the dot-stuffing.
        message = re.sub(rb"(?<!\r)\n", b"\r\n", message)
        result = {}
        lmtp = smtplib.LMTP("127.0.0.1", self.port("lmtp"), timeout=60)
        try:
            lmtp.ehlo_or_helo_if_needed()
            code, text = lmtp.mail(mail_from)
            if code != 250:
                raise InstanceError("LMTP MAIL FROM: %d %s" % (code, text))
            accepted = []
            for r in rcpts:
                code, text = lmtp.rcpt(r)
                if code in (250, 251):
                    accepted.append(r)
                else:
                    result[r] = (code, text.decode(errors="replace"))
            if accepted:
                code, text = lmtp.data(message)
                result[accepted[0]] = (code, text.decode(errors="replace"))
                for r in accepted[1:]:
                    code, text = lmtp.getreply()
                    result[r] = (code, text.decode(errors="replace"))
            lmtp.quit()
        finally:
            lmtp.close()
        return result

    # -- doveadm, SQL ---------------------------------------------------------

    def doveadm(self, *args, check=True, input=None):
        """Runs `doveadm -c <conf> args...` and returns its stdout."""
        p = subprocess.run(["doveadm", "-c", str(self.conf)] +
                           [str(a) for a in args],
                           input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        if check and p.returncode != 0:
            raise InstanceError("doveadm %s failed (%d): %s" % (
                " ".join(map(str, args)), p.returncode,
                p.stderr.decode(errors="replace")))
        return p.stdout.decode(errors="replace")

    def _mail_ids(self):
        if os.getuid() == 0:
            return 65534, 65534
        return os.getuid(), os.getgid()

    _SQL_CHILD = (
        "import json, sqlite3, sys\n"
        "db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True,"
        " timeout=30)\n"
        "out = []\n"
        "for q, p in json.loads(sys.stdin.read()):\n"
        "    if q is None:\n"
        "        q = ('SELECT name FROM sqlite_master'\n"
        "             ' WHERE type = \\'table\\'')\n"
        "        out.append({t: [list(r) for r in db.execute("
        "'SELECT * FROM \"%s\"' % t.replace('\"', '\"\"'))]"
        " for (t,) in db.execute(q)})\n"
        "    else:\n"
        "        out.append([list(r) for r in db.execute(q, p)])\n"
        "db.close()\n"
        "print(json.dumps(out, default=lambda b: b.hex()))\n")

    def _sql_run(self, user, queries):
        """Runs read-only queries on the user's database in one child
        process, as the mail user: a root process would leave root-owned
        -shm/-wal files behind, and reading needs no lock (DESIGN.md 1.3).
        A query of None dumps every table."""
        uid, gid = self._mail_ids()
        kw = {}
        if os.getuid() == 0:
            kw = {"user": uid, "group": gid, "extra_groups": []}
        p = subprocess.run(["/usr/bin/python3", "-c", self._SQL_CHILD,
                            str(self.db_path(user))],
                           input=json.dumps(queries),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60, **kw)
        if p.returncode != 0:
            raise InstanceError("sql %r on %s failed: %s" % (
                queries, self.db_path(user), p.stderr))
        return json.loads(p.stdout)

    def sql(self, user, query, params=()):
        """One read-only query on the user's database: rows as lists (BLOBs
        as hex strings)."""
        return self._sql_run(user, [[query, list(params)]])[0]

    def operator_sql(self, user, sql):
        """Changes the user's database the way PLUGIN.md tells an operator
        to: sqlite3 as the mail user, holding the lock file, without a
        checkpoint at close."""
        uid, gid = self._mail_ids()
        db = str(self.db_path(user))
        cmd = ["flock", db + ".lock", "sqlite3", "-cmd",
               ".dbconfig no_ckpt_on_close on", db, sql]
        if os.getuid() == 0:
            cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                   "--clear-groups"] + cmd
        subprocess.run(cmd, check=True, timeout=60,
                       stdout=subprocess.DEVNULL)

    def sql_dump(self, user):
        """{table: [rows]} of every table of the user's database."""
        return self._sql_run(user, [[None, []]])[0]

    def sqlite3_cli(self, user, query, *options):
        """Runs the sqlite3 command-line tool read-only on the user's
        database (as the mail user) and returns its output."""
        uid, gid = self._mail_ids()
        cmd = ["sqlite3", "-readonly"] + list(options) + [
            str(self.db_path(user)), query]
        if os.getuid() == 0:
            cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                   "--clear-groups"] + cmd
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        if p.returncode != 0:
            raise InstanceError("sqlite3 %r failed: %s" % (query, p.stderr))
        return p.stdout

    def lock_path(self, user):
        """The user's write lock file (DESIGN.md 4)."""
        return self.db_path(user).with_name("mail.sqlite.lock")

    @contextlib.contextmanager
    def hold_write_lock(self, user):
        """Holds flock(LOCK_EX) on the user's mail.sqlite.lock for the
        with-block, as an operator's `flock` would. The file is opened
        read-only and never created (a root-owned lock file would lock the
        mail user out), so it must exist: any write by Dovecot makes it."""
        fd = os.open(str(self.lock_path(user)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # Closes under the lock file: a read-write connection may checkpoint
    # on close (DESIGN.md 4).
    _SQLITE_LOCK_CHILD = (
        "import fcntl, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "db.execute('ROLLBACK')\n"
        "lock = open(sys.argv[1] + '.lock')\n"
        "fcntl.flock(lock, fcntl.LOCK_EX)\n"
        "db.close()\n")

    @contextlib.contextmanager
    def hold_sqlite_write_lock(self, user):
        """Holds SQLite's own write lock (BEGIN IMMEDIATE, without the
        lock file) in a child process running as the mail user, for the
        with-block: a Dovecot writer then gets the lock file and waits
        inside SQLite, which orders writers deterministically. The child
        never commits, so nothing changes."""
        uid, gid = self._mail_ids()
        kw = {}
        if os.getuid() == 0:
            kw = {"user": uid, "group": gid, "extra_groups": []}
        p = subprocess.Popen(["/usr/bin/python3", "-c",
                              self._SQLITE_LOCK_CHILD,
                              str(self.db_path(user))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, **kw)
        try:
            if p.stdout.readline().strip() != "locked":
                raise InstanceError("could not take SQLite's write lock")
            yield
        finally:
            try:
                p.stdin.write("\n")
                p.stdin.close()
            except OSError:
                pass
            p.wait(timeout=60)

    def write_lock_is_held(self, user):
        """True when some process holds flock on mail.sqlite.lock."""
        fd = os.open(str(self.lock_path(user)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def sql_by_hand_argv(self, user):
        """PLUGIN.md's command for changing mail by hand, for this user."""
        return ["flock", str(self.lock_path(user)), "sqlite3", "-cmd",
                ".dbconfig no_ckpt_on_close on", str(self.db_path(user))]

    def sql_by_hand(self, user, script, timeout=120):
        """Changes the user's database the way PLUGIN.md ("Reading and
        changing mail with SQL", rule 1) tells an operator to: `flock
        mail.sqlite.lock sqlite3 -cmd '.dbconfig no_ckpt_on_close on'
        mail.sqlite`, as the mail user, with the SQL on stdin. Fails on a
        non-zero exit or anything on stderr; returns stdout."""
        uid, gid = self._mail_ids()
        cmd = self.sql_by_hand_argv(user)
        if os.getuid() == 0:
            cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                   "--clear-groups"] + cmd
        p = subprocess.run(cmd, input=script, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if p.returncode != 0 or p.stderr.strip():
            raise InstanceError("sql by hand failed (%d): %s\n--- SQL ---\n"
                                "%s" % (p.returncode, p.stderr, script))
        return p.stdout

    # -- processes ----------------------------------------------------------

    def master_pid(self):
        """The running master's pid (from base_dir's master.pid)."""
        return int((self.dir / "run" / "master.pid").read_text().split()[0])

    # -- the log ------------------------------------------------------------

    def log_text(self, since=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self):
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_problems(self, allowed_patterns=(), since=0):
        """Error/Panic/Fatal lines since the offset that no allowed
        pattern (regex, searched) matches."""
        allowed = [re.compile(p) for p in allowed_patterns]
        bad = []
        for line in self.log_text(since).splitlines():
            if LOG_PROBLEM.search(line) and \
                    not any(a.search(line) for a in allowed):
                bad.append(line)
        return bad

    def check_log(self, allowed_patterns=(), since=0):
        """Raises AssertionError, with the log, when the log has an
        unexpected Error/Panic/Fatal line."""
        bad = self.log_problems(allowed_patterns, since)
        if bad:
            raise AssertionError(
                "unexpected problems in %s:\n  %s\n--- log ---\n%s" % (
                    self.log_path, "\n  ".join(bad), self.log_text(since)))


# -- IMAP helpers -------------------------------------------------------------

def mutf7_encode(name):
    """RFC 3501 5.1.3 modified UTF-7: printable ASCII stands for itself
    ('&' as '&-'), everything else is UTF-16BE in modified base64 (',' for
    '/', no padding) between '&' and '-'."""
    import base64
    out = []
    pending = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode().rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(name):
    """The inverse of mutf7_encode; raises ValueError on invalid input."""
    import base64
    if isinstance(name, bytes):
        name = name.decode("ascii")
    out = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-sequence in %r" % name)
        chunk = name[i + 1:end]
        if chunk == "":
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64, validate=True)
                       .decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def quote(s):
    """An IMAP astring argument: a quoted string (with \\ and \" escaped)
    or, for CR, LF, NUL or 8-bit data, a synchronizing literal prefix that
    imaplib cannot send; such names go through RawImap with literal()."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    if any(b in s for b in (0, 10, 13)) or any(b > 127 for b in s):
        raise ValueError("needs a literal: %r" % s)
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def qstr(s):
    """quote() as str, for imaplib arguments."""
    return quote(s).decode("ascii")


def literal_plus(data):
    """A non-synchronizing literal (RFC 7888 LITERAL+)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return b"{%d+}\r\n" % len(data) + data


class ParseError(Exception):
    pass


def parse_imap(data):
    """Parses IMAP response data (bytes; literals as {n}\\r\\n<bytes>, also
    literal8 ~{n}) into
    Python values: atoms and quoted strings as bytes, numbers as int, NIL as
    None, parenthesized lists as lists, literals as bytes. Returns the list
    of top-level values."""
    pos = 0
    n = len(data)

    def skip_sp():
        nonlocal pos
        while pos < n and data[pos] in b" \r\n":
            pos += 1

    def value():
        nonlocal pos
        skip_sp()
        if pos >= n:
            raise ParseError("unexpected end")
        c = data[pos]
        if c == ord("("):
            pos += 1
            items = []
            while True:
                skip_sp()
                if pos >= n:
                    raise ParseError("unterminated list")
                if data[pos] == ord(")"):
                    pos += 1
                    return items
                items.append(value())
        if c == ord('"'):
            pos += 1
            out = bytearray()
            while True:
                if pos >= n:
                    raise ParseError("unterminated string")
                ch = data[pos]
                if ch == ord("\\"):
                    out.append(data[pos + 1])
                    pos += 2
                elif ch == ord('"'):
                    pos += 1
                    return bytes(out)
                else:
                    out.append(ch)
                    pos += 1
        if c == ord("~") and data[pos + 1:pos + 2] == b"{":
            pos += 1            # literal8 (RFC 3516 4.3)
            c = ord("{")
        if c == ord("{"):
            end = data.index(b"}", pos)
            size = int(data[pos + 1:end].rstrip(b"+"))
            pos = end + 1
            if data[pos:pos + 2] == b"\r\n":
                pos += 2
            out = data[pos:pos + size]
            pos += size
            return bytes(out)
        start = pos
        depth = 0
        # An atom; BODY[...]<..> keeps its brackets (and spaces inside
        # HEADER.FIELDS lists) together.
        while pos < n:
            ch = data[pos]
            if ch == ord("["):
                depth += 1
            elif ch == ord("]"):
                depth -= 1
            elif depth == 0 and ch in b" ()\r\n":
                break
            pos += 1
        atom = bytes(data[start:pos])
        if atom.upper() == b"NIL":
            return None
        if atom.isdigit():
            return int(atom)
        return atom

    out = []
    while True:
        skip_sp()
        if pos >= n:
            return out
        out.append(value())


def join_imaplib(data):
    """imaplib returns literals as (prefix, literal) tuples followed by the
    rest of the line: join them back into one bytes string per response."""
    out = []
    cur = b""
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            cur += item[0] + item[1]
        else:
            cur += item
            out.append(cur)
            cur = b""
    if cur:
        out.append(cur)
    return out


def parse_list(data):
    """imaplib LIST/LSUB data -> list of (flags as a set of lowercase str,
    separator str or None, name str as sent (modified UTF-7))."""
    result = []
    for line in join_imaplib(data):
        vals = parse_imap(line)
        flags = {f.decode().lower() for f in vals[0]}
        sep = vals[1].decode() if vals[1] is not None else None
        name = vals[2]
        if isinstance(name, int):
            name = str(name).encode()
        result.append((flags, sep, name.decode("utf-8")))
    return result


def parse_status(data):
    """imaplib STATUS data -> (name, {ITEM: int})."""
    line = join_imaplib(data)[0]
    vals = parse_imap(line)
    name = vals[0]
    if isinstance(name, int):
        name = str(name).encode()
    items = vals[1]
    return name.decode(), {items[i].decode().upper(): items[i + 1]
                           for i in range(0, len(items), 2)}


def parse_fetch(data):
    """imaplib FETCH data -> {seq: {ITEM-NAME (upper-case): value}}."""
    out = {}
    for line in join_imaplib(data):
        vals = parse_imap(line)
        seq, items = vals[0], vals[1]
        d = out.setdefault(seq, {})
        for i in range(0, len(items), 2):
            d[items[i].decode().upper()] = items[i + 1]
    return out


def check(result, what=""):
    """imaplib (typ, data) -> data; raises unless typ is OK."""
    typ, data = result
    if typ != "OK":
        raise AssertionError("%s: %s %r" % (what, typ, data))
    return data


class Literal:
    """A synchronizing literal for RawImap.command()."""

    def __init__(self, data):
        self.data = data.encode("utf-8") if isinstance(data, str) else data


class RawImap:
    """A minimal IMAP client on a socket: sends exactly the bytes given and
    returns the server's lines, for transcripts and for commands imaplib
    cannot send (MULTIAPPEND with non-synchronizing literals)."""

    def __init__(self, sock):
        self.sock = sock
        self.file = sock.makefile("rb")
        self.tagnum = 0
        self.greeting = self.readline()

    def starttls(self, ctx):
        status, text, _ = self.command(b"STARTTLS")
        if status != "OK":
            raise InstanceError("STARTTLS: %s %s" % (status, text))
        self.file.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def readline(self):
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed by server")
        return line

    def read_response(self):
        """One response with its literals inlined."""
        line = self.readline()
        while True:
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return line
            data = self.file.read(int(m.group(1)))
            line += data + self.readline()

    def next_tag(self):
        self.tagnum += 1
        return b"R%04d" % self.tagnum

    def command(self, *parts, tag=None):
        """Sends one command: `tag` and the parts, then CRLF. A bytes part
        goes out as is (it may hold LITERAL+ literals); a Literal part is
        sent as a synchronizing literal, only after the server's "+"
        (RFC 3501 7.5), so a command refused early never has its literal
        read as commands. Returns (status 'OK'|'NO'|'BAD', text of the
        tagged line as str, [untagged response lines as bytes])."""
        tag = tag or self.next_tag()
        untagged = []
        out = tag + b" "
        for part in parts:
            if not isinstance(part, Literal):
                out += part
                continue
            self.send(out + b"{%d}\r\n" % len(part.data))
            out = b""
            while True:
                line = self.read_response()
                if line.startswith(b"+"):
                    break
                if line.startswith(tag + b" "):
                    return self._tagged(line, tag, untagged)
                untagged.append(line)
            out = part.data
        self.send(out + b"\r\n")
        while True:
            line = self.read_response()
            if line.startswith(tag + b" "):
                return self._tagged(line, tag, untagged)
            untagged.append(line)

    @staticmethod
    def _tagged(line, tag, untagged):
        rest = line[len(tag) + 1:].rstrip(b"\r\n").decode(
            "utf-8", errors="replace")
        status, _, text = rest.partition(" ")
        return status, text, untagged

    def close(self):
        try:
            self.command(b"LOGOUT")
        except Exception:
            pass
        try:
            self.file.close()
            self.sock.close()
        except Exception:
            pass


def resp_code(text):
    """The response code of a tagged or untagged text: '[TRYCREATE] ..' ->
    'TRYCREATE', 'ALREADYEXISTS', 'APPENDUID 1 2' -> 'APPENDUID'."""
    m = re.match(r"\s*\[([A-Z0-9-]+)", text if isinstance(text, str)
                 else text.decode(errors="replace"))
    return m.group(1) if m else None


# -- imaplib conveniences -----------------------------------------------------

def imap_cmd(c, name, *args):
    """Runs a command imaplib knows by name with arguments passed through
    as given (quote them with qstr()); returns (typ, untagged data of that
    name). A BAD answer raises imaplib.IMAP4.error."""
    typ, dat = c._simple_command(name, *args)
    return c._untagged_response(typ, dat, name)


def list_mailboxes(c, pattern="*", ref="", select_opts=None,
                   return_opts=None, command="LIST"):
    """LIST (or LSUB) -> {decoded name: set of lowercase flags}."""
    args = []
    if select_opts is not None:
        args.append("(%s)" % select_opts)
    args += [qstr(mutf7_encode(ref)), qstr(mutf7_encode(pattern))]
    if return_opts is not None:
        args.append("RETURN (%s)" % return_opts)
    data = check(imap_cmd(c, command, *args), command)
    out = {}
    for flags, sep, name in parse_list(data):
        assert sep in ("/", None), "separator %r" % sep
        out[mutf7_decode(name)] = flags
    return out


def status(c, mailbox, items="MESSAGES UIDNEXT UIDVALIDITY UNSEEN"):
    """STATUS of a decoded mailbox name -> {ITEM: int}."""
    data = check(c.status(qstr(mutf7_encode(mailbox)), "(%s)" % items),
                 "STATUS " + mailbox)
    return parse_status(data)[1]


def mbox(name):
    """A decoded mailbox name as an imaplib argument (mUTF-7, quoted)."""
    return qstr(mutf7_encode(name))


def append(c, mailbox, message, flags=None, date=None):
    """imaplib APPEND (imaplib turns bare LF into CRLF itself; use
    RawImap to send exact bytes). Returns (uidvalidity, uid) from
    APPENDUID."""
    typ, data = c.append(mbox(mailbox), flags, date, message)
    if typ != "OK":
        raise AssertionError("APPEND to %s: %s %r" % (mailbox, typ, data))
    text = data[-1].decode() if isinstance(data[-1], bytes) else str(data)
    m = re.search(r"\[APPENDUID (\d+) (\d+)\]", text)
    if not m:
        raise AssertionError("no APPENDUID in %r" % text)
    return int(m.group(1)), int(m.group(2))


def uid_set(text):
    """An RFC 3501 sequence set '1:3,7' -> [1, 2, 3, 7]."""
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


MONTHS = ("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec").split()


def internaldate(year, month, day, hh, mm, ss, tz_minutes):
    """An IMAP date-time string, with its quotes, independent of locale."""
    sign = "+" if tz_minutes >= 0 else "-"
    tz = abs(tz_minutes)
    return '"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        day, MONTHS[month - 1], year, hh, mm, ss, sign, tz // 60, tz % 60)


def internaldate_epoch(value):
    """An INTERNALDATE as returned (bytes/str, without quotes) -> unix
    time."""
    import calendar
    if isinstance(value, bytes):
        value = value.decode()
    m = re.match(r'"?\s?(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) '
                 r'([+-])(\d\d)(\d\d)"?$', value)
    if not m:
        raise ValueError("bad INTERNALDATE %r" % value)
    d, mon, y, hh, mi, ss, sign, tzh, tzm = m.groups()
    t = calendar.timegm((int(y), MONTHS.index(mon) + 1, int(d), int(hh),
                         int(mi), int(ss)))
    off = (int(tzh) * 60 + int(tzm)) * 60
    return t - off if sign == "+" else t + off
