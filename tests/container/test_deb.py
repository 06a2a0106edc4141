# SPDX-License-Identifier: MIT
"""The .deb of `make deb` in a clean Debian 12 container (the debootstrap
base image): `apt-get install ./dovecot-sqlbox_*.deb` (with dovecot-imapd) pulls in the exact
dovecot-core it was built for; with the snippet enabled as PLUGIN.md
says, Debian's stock Dovecot serves a system user's mail from sqlbox over
IMAP;
`dpkg -r` removes every file but the conffile, `dpkg -P` that too."""

import os
import re
import subprocess

from containerutil import pick_port_base, podman, run_options, setting

SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
apt-get install -y -q --no-install-recommends /deb/%(deb)s dovecot-imapd \
	>>/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
echo "== versions"
dpkg-query -W -f='${Package} ${Version} ${db:Status-Status}\n' \
	dovecot-core dovecot-sqlbox
echo "== files"
dpkg -L dovecot-sqlbox | sort
echo "== enable"
useradd -m tester
echo tester:tester-pw | chpasswd
sed -E 's/^#(\s*([a-z_]+\s*=|[a-z_ ]+\{\s*$|\}\s*$))/\1/' \
	/etc/dovecot/conf.d/90-sqlbox.conf >/etc/dovecot/local.conf
# Debian's stock configuration (PAM, system users), on one loopback port.
cat >>/etc/dovecot/local.conf <<END
listen = 127.0.0.1
protocols = imap
ssl = no
service imap-login {
  inet_listener imap {
    port = %(port)d
  }
  inet_listener imaps {
    port = 0
  }
}
END
dovecot
doveadm mailbox create -u tester Work
exec 3<>/dev/tcp/127.0.0.1/%(port)d
printf 'a LOGIN tester tester-pw\r\nb LIST "" "*"\r\nc LOGOUT\r\n' >&3
tr -d '\r' <&3
exec 3<&-
ls -l /home/tester/sqlbox/mail.sqlite
doveadm stop
rm /etc/dovecot/local.conf
echo "== removed"
dpkg -r dovecot-sqlbox >/dev/null
dpkg-query -W -f='${db:Status-Status}\n' dovecot-sqlbox
find / -xdev -name '*sqlbox*' ! -path '/deb/*' ! -path '/home/*' \
	! -path '/proc/*' ! -path '/var/lib/dpkg/*' | sort
echo "== purged"
dpkg -P dovecot-sqlbox >/dev/null
dpkg-query -W -f='${db:Status-Status}\n' dovecot-sqlbox 2>&1 || true
find / -xdev -name '*sqlbox*' ! -path '/deb/*' ! -path '/home/*' \
	! -path '/proc/*' | sort
echo "== end"
"""


def sections(text):
    out = {}
    for part in re.split(r"^== ", text, flags=re.M)[1:]:
        name, _, body = part.partition("\n")
        out[name.strip()] = body.splitlines()
    return out


def test_deb_installs_serves_and_removes_cleanly():
    deb = setting("SQLBOX_DEB")
    base = setting("SQLBOX_CONTAINER_BASE")
    assert os.path.isfile(deb), "no %s: run make deb" % deb
    name = os.path.basename(deb)
    p = podman("run", "--rm", *run_options(),
               "-v", "%s:/deb:ro" % os.path.dirname(os.path.abspath(deb)),
               base, "bash", "-c",
               SCRIPT % {"deb": name, "port": pick_port_base() + 143},
               check=False, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    s = sections(p.stdout)
    assert "end" in s, out

    host_core = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "dovecot-core"],
        stdout=subprocess.PIPE, text=True, check=True).stdout
    assert s["versions"] == ["dovecot-core %s installed" % host_core,
                             "dovecot-sqlbox %s installed" %
                             name.split("_")[1]], out
    files = set(s["files"])
    for f in ("/usr/lib/dovecot/modules/lib20_sqlbox_plugin.so",
              "/usr/lib/dovecot/modules/lib21_sqlbox_lmtp_plugin.so",
              "/usr/lib/dovecot/modules/doveadm/"
              "lib10_doveadm_sqlbox_plugin.so",
              "/etc/dovecot/conf.d/90-sqlbox.conf",
              "/usr/share/doc/dovecot-sqlbox/PLUGIN.md",
              "/usr/share/doc/dovecot-sqlbox/README.md",
              "/usr/share/doc/dovecot-sqlbox/copyright"):
        assert f in files, out
    enable = s["enable"]
    assert any(line.startswith("a OK ") and line.endswith("Logged in")
               for line in enable), out
    assert '* LIST (\\HasNoChildren) "/" Work' in enable, out
    assert '* LIST (\\HasNoChildren) "/" INBOX' in enable, out
    assert any(line.endswith("/home/tester/sqlbox/mail.sqlite")
               for line in enable), out
    # dpkg -r keeps conffiles (Debian policy 10.7.3); purge removes them.
    assert s["removed"] == ["config-files",
                            "/etc/dovecot/conf.d/90-sqlbox.conf"], out
    assert s["purged"][1:] == [], out
    assert "not-installed" in s["purged"][0] or \
        "no packages found" in s["purged"][0], out
