#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The sqlbox demo: a private Dovecot on 127.0.0.1 that keeps alice's and
# bob's mail in SQLite.
#
# Usage: scripts/demo.sh start|stop|status
#   start   installs what is missing (scripts/install-deps.sh), builds
#           (make), writes build/demo and (re)starts its Dovecot, then says
#           how to connect. Running it again restarts cleanly.
#   stop    stops the demo Dovecot (the mail stays in build/demo/home).
#   status  says whether it runs, and where things are.
#
# Environment: BUILD (default build/default), PORT_BASE (default 10000:
# IMAP 10143, IMAPS 10993, POP3 10110, POP3S 10995, LMTP 10024).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=$repo/build/demo
build=${BUILD:-build/default}
case "$build" in /*) ;; *) build=$repo/$build ;; esac
instance=$repo/scripts/dovecot-instance.sh
export PORT_BASE=${PORT_BASE:-10000}

die() {
	echo "demo: $*" >&2
	exit 1
}

sqlite_cmd() {
	# As root, read as the mail user: a root-owned -shm or -wal file
	# would lock Dovecot's own processes out of the database.
	if [ "$(id -u)" -eq 0 ]; then
		printf 'setpriv --reuid=65534 --regid=65534 --clear-groups sqlite3 -readonly'
	else
		printf 'sqlite3 -readonly'
	fi
}

explain() {
	local p=$PORT_BASE cert=$demo/ssl/cert.pem
	# The ports of the instance as written, whatever the environment says.
	if [ -r "$demo/instance.env" ]; then
		p=$(sed -n 's/^PORT_BASE=\([0-9]*\)$/\1/p' "$demo/instance.env")
	fi
	cat <<EOF

sqlbox demo: Dovecot $(dovecot --version | cut -d' ' -f1) on 127.0.0.1, mail stored in SQLite.
  users        alice (password alice), bob (password bob)
  IMAP         127.0.0.1:$((p + 143)) (STARTTLS)    IMAPS 127.0.0.1:$((p + 993)) (implicit TLS)
  POP3         127.0.0.1:$((p + 110)) (STLS)        POP3S 127.0.0.1:$((p + 995)) (implicit TLS)
  LMTP         127.0.0.1:$((p + 24)) (delivery)
  certificate  self-signed for localhost / 127.0.0.1: $cert

Connect by hand:
  openssl s_client -quiet -connect 127.0.0.1:$((p + 993)) -CAfile $cert
    then type:  a LOGIN alice alice   b LIST "" "*"   c LOGOUT
Python:
  /usr/bin/python3 -c 'import imaplib, ssl; c = imaplib.IMAP4_SSL("127.0.0.1", $((p + 993)), ssl_context=ssl.create_default_context(cafile="$cert")); c.login("alice", "alice"); print(c.list())'
Deliver a message to alice:
  /usr/bin/python3 -c 'import smtplib; smtplib.LMTP("127.0.0.1", $((p + 24))).sendmail("me@example.org", ["alice"], b"Subject: hello\r\n\r\nHi Alice\r\n")'
Thunderbird (or any mail client):
  incoming IMAP, server 127.0.0.1, port $((p + 993)), connection security SSL/TLS,
  authentication "normal password", user name alice, password alice;
  accept the self-signed certificate when asked (or use port $((p + 143)) with STARTTLS).

Databases (one per user):
  $demo/home/alice/sqlbox/mail.sqlite
  $demo/home/bob/sqlbox/mail.sqlite
  look inside: $(sqlite_cmd) $demo/home/alice/sqlbox/mail.sqlite 'SELECT name, messages FROM mailboxes'
Log: $demo/log/dovecot.log
Stop: scripts/demo.sh stop   (or: make stop)
EOF
}

case "${1:-}" in
start)
	"$repo/scripts/install-deps.sh"
	echo "demo: building"
	make -s -C "$repo" BUILD="${build#"$repo"/}" >/dev/null ||
		die "make failed (run make in $repo to see why)"
	[ -f "$build/lib20_sqlbox_plugin.so" ] ||
		die "$build/lib20_sqlbox_plugin.so was not built"
	"$instance" stop "$demo" >/dev/null
	mkdir -p "$demo"
	SQLBOX_PLUGIN_DIR=$build MAIL_LOCATION='sqlbox:~/sqlbox' LOAD_SQLBOX=yes \
		USERS="alice:alice bob:bob" "$instance" write "$demo"
	"$instance" start "$demo"
	explain
	;;
stop)
	"$instance" stop "$demo"
	;;
status)
	if "$instance" status "$demo"; then
		explain
	else
		exit 3
	fi
	;;
*)
	sed -n '/^# Usage:/,/^#   status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
