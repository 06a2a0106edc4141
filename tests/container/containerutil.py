# SPDX-License-Identifier: MIT
"""What the container tests share: podman as `make container-check` runs
it (SQLBOX_PODMAN, SQLBOX_PODMAN_RUN), the image and base image names, a
free port base on loopback, and an SMTP sink that stands in for the MTA
the image's submission service relays to."""

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from harness import pick_port_base  # noqa: E402


def setting(name):
    """An environment setting `make container-check` passes; failing (not
    skipping) without it, so a run that tests nothing never passes."""
    value = os.environ.get(name)
    if not value:
        import pytest
        pytest.fail("%s is not set: run these tests through `make "
                    "container-check`" % name, pytrace=False)
    return value


def podman(*args, check=True, timeout=600, input=None):
    cmd = (shlex.split(os.environ.get("SQLBOX_PODMAN", "podman")) +
           [str(a) for a in args])
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (
            " ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def run_options():
    """Options every `podman run` gets: host network (loopback ports only)
    and the resource limits of SQLBOX_PODMAN_RUN."""
    return ["--network=host"] + shlex.split(
        os.environ.get("SQLBOX_PODMAN_RUN", ""))


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 that accepts every message and
    keeps it: (mail_from, [rcpts], data) in .messages. Just enough of RFC
    5321 for Dovecot's submission relay (EHLO, MAIL, RCPT, DATA, RSET,
    NOOP, QUIT)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.messages = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,),
                             daemon=True).start()

    def _session(self, conn):
        f = conn.makefile("rb")

        def reply(text):
            conn.sendall(text.encode() + b"\r\n")

        mail_from, rcpts = None, []
        try:
            reply("220 sink ESMTP")
            for line in f:
                cmd = line.decode(errors="replace").rstrip("\r\n")
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    reply("250-sink\r\n250-8BITMIME\r\n250 SIZE 10000000")
                elif verb == "MAIL":
                    mail_from, rcpts = cmd[10:].split(" ")[0], []
                    reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpts.append(cmd[8:].split(" ")[0])
                    reply("250 2.1.5 ok")
                elif verb == "DATA":
                    reply("354 go on")
                    data = b""
                    for dl in f:
                        if dl == b".\r\n":
                            break
                        data += dl[1:] if dl.startswith(b"..") else dl
                    with self.lock:
                        self.messages.append((mail_from, rcpts, data))
                    reply("250 2.0.0 queued")
                elif verb in ("RSET", "NOOP"):
                    reply("250 2.0.0 ok")
                elif verb == "QUIT":
                    reply("221 2.0.0 bye")
                    return
                else:
                    reply("502 5.5.2 not here")
        except OSError:
            pass
        finally:
            conn.close()

    def wait_messages(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)

    def close(self):
        self.sock.close()
