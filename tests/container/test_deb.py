# SPDX-License-Identifier: MIT
"""The .deb of `make deb` in a clean Debian 12 container (the debootstrap
base image): `apt-get install ./dovecot-sqlbox_*.deb` (with dovecot-imapd) pulls in the exact
dovecot-core it was built for; following PLUGIN.md ("Switching one
user"), Debian's stock Dovecot moves a system user's mbox mail into sqlbox
with doveadm backup and serves it over IMAP;
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
# A system user with mail in Debian's default location (mbox).
useradd -m tester
echo tester:tester-pw | chpasswd
install -d -o tester -g tester /home/tester/mail
printf '%%s\n' 'From a@example.org Thu Nov 26 10:00:00 2026' 'Subject: one' \
	'Message-ID: <one@example.org>' '' 'first' '' \
	'From b@example.org Thu Nov 26 10:01:00 2026' 'Subject: two' \
	'Message-ID: <two@example.org>' '' 'second' '' >/var/mail/tester
chown tester:mail /var/mail/tester
chmod 0660 /var/mail/tester
# Only for this test: one loopback port, no TLS.
cat >/etc/dovecot/local.conf <<END
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
# PLUGIN.md, "Switching one user": load the plugin for everyone ...
sed -i -E -e 's/^#(mail_plugins = )/\1/' -e '/^#protocol lmtp \{/,/^#\}/ s/^#//' \
	/etc/dovecot/conf.d/90-sqlbox.conf
cat >/etc/dovecot/conf.d/05-sqlbox-userdb.conf <<END
userdb {
  driver = passwd-file
  args = username_format=%%n /etc/dovecot/sqlbox-users
}
END
touch /etc/dovecot/sqlbox-users
dovecot
echo "before: $(doveadm -f flow mailbox status -u tester messages INBOX)"
# ... copy the user's mail ...
doveadm kick tester >/dev/null || [ $? -eq 68 ]    # 68: no sessions
doveadm -o mail_location=sqlbox:/home/tester/sqlbox -o mailbox_list_index=no \
	backup -R -u tester mbox:/home/tester/mail:INBOX=/var/mail/tester
# ... and switch them.
getent passwd tester | awk -F: '{ printf "%%s::%%s:%%s::%%s::", $1, $3, $4, $6 }
	END { print "userdb_mail=sqlbox:~/sqlbox userdb_mailbox_list_index=no" }' \
	>>/etc/dovecot/sqlbox-users
sleep 1.1
doveadm user -f mail tester
doveadm mailbox create -u tester Work
exec 3<>/dev/tcp/127.0.0.1/%(port)d
printf 'a LOGIN tester tester-pw\r\nb LIST "" "*"\r\nc SELECT INBOX\r\nd FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\ne LOGOUT\r\n' >&3
tr -d '\r' <&3
exec 3<&-
ls -l /home/tester/sqlbox/mail.sqlite
doveadm stop
rm /etc/dovecot/local.conf /etc/dovecot/conf.d/05-sqlbox-userdb.conf \
	/etc/dovecot/sqlbox-users
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
    assert "before: INBOX messages=2" in enable, out
    assert "sqlbox:~/sqlbox" in enable, out
    assert any(line.startswith("a OK ") and line.endswith("Logged in")
               for line in enable), out
    assert '* LIST (\\HasNoChildren) "/" Work' in enable, out
    assert '* LIST (\\HasNoChildren) "/" INBOX' in enable, out
    assert "* 2 EXISTS" in enable, out
    assert [line for line in enable if line.startswith("Subject:")] == [
        "Subject: one", "Subject: two"], out
    assert any(line.endswith("/home/tester/sqlbox/mail.sqlite")
               for line in enable), out
    # dpkg -r keeps conffiles (Debian policy 10.7.3); purge removes them.
    assert s["removed"] == ["config-files",
                            "/etc/dovecot/conf.d/90-sqlbox.conf"], out
    assert s["purged"][1:] == [], out
    assert "not-installed" in s["purged"][0] or \
        "no packages found" in s["purged"][0], out
