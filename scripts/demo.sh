#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The sqlbox demo: a private Dovecot on 127.0.0.1 that keeps alice's and
# bob's mail in SQLite, and a private Postfix (scripts/demo-relay.sh) that
# its submission service relays to, which delivers alice@example.test and
# bob@example.test back to Dovecot over LMTP and refuses everything else.
#
# Usage: scripts/demo.sh start|stop|status
#   start   installs what is missing (scripts/install-deps.sh), builds
#           (make), writes build/demo and (re)starts its Dovecot and its
#           relay, then says how to connect. Running it again restarts
#           cleanly.
#   stop    stops the demo Dovecot and relay (the mail stays in
#           build/demo/home).
#   status  says whether they run, and where things are.
#
# Environment: BUILD (default build/default), PORT_BASE (default 10000:
# IMAP 10143, IMAPS 10993, POP3 10110, POP3S 10995, LMTP 10024,
# submission 10587, submissions 10465, the relay 10025).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=$repo/build/demo
build=${BUILD:-build/default}
case "$build" in /*) ;; *) build=$repo/$build ;; esac
instance=$repo/scripts/dovecot-instance.sh
relay=$repo/scripts/demo-relay.sh
export PORT_BASE=${PORT_BASE:-10000}
domain=example.test

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
  addresses    alice@$domain, bob@$domain
  IMAP         127.0.0.1:$((p + 143)) (STARTTLS)    IMAPS 127.0.0.1:$((p + 993)) (implicit TLS)
  POP3         127.0.0.1:$((p + 110)) (STLS)        POP3S 127.0.0.1:$((p + 995)) (implicit TLS)
  submission   127.0.0.1:$((p + 587)) (STARTTLS)    submissions 127.0.0.1:$((p + 465)) (implicit TLS)
  LMTP         127.0.0.1:$((p + 24)) (delivery)
  relay        Postfix on 127.0.0.1:$((p + 25)): delivers $domain to LMTP, refuses other domains
  certificate  self-signed for localhost / 127.0.0.1: $cert

Connect by hand:
  openssl s_client -quiet -connect 127.0.0.1:$((p + 993)) -CAfile $cert
    then type:  a LOGIN alice alice   b LIST "" "*"   c LOGOUT
Python:
  /usr/bin/python3 -c 'import imaplib, ssl; c = imaplib.IMAP4_SSL("127.0.0.1", $((p + 993)), ssl_context=ssl.create_default_context(cafile="$cert")); c.login("alice", "alice"); print(c.list())'
Send as alice to bob (587 with STARTTLS; for 465 use --server 127.0.0.1:$((p + 465)) --tls-on-connect):
  swaks --server 127.0.0.1:$((p + 587)) --tls --tls-verify --tls-ca-path $cert --auth-user alice --auth-password alice --from alice@$domain --to bob@$domain --h-Subject hello --body 'Hi Bob' </dev/null
  then bob finds it in his INBOX (IMAP or POP3) and alice a copy in Sent.
Deliver a message to alice directly through LMTP:
  /usr/bin/python3 -c 'import smtplib; smtplib.LMTP("127.0.0.1", $((p + 24))).sendmail("me@example.org", ["alice"], b"Subject: hello\r\n\r\nHi Alice\r\n")'
Thunderbird (or any mail client):
  email address alice@$domain;
  incoming IMAP, server 127.0.0.1, port $((p + 993)), connection security SSL/TLS,
  authentication "normal password", user name alice, password alice;
  outgoing SMTP, server 127.0.0.1, port $((p + 465)), SSL/TLS, same user name and password;
  accept the self-signed certificate when asked (or use ports $((p + 143)) and $((p + 587)) with STARTTLS).

Databases (one per user):
  $demo/home/alice/sqlbox/mail.sqlite
  $demo/home/bob/sqlbox/mail.sqlite
  look inside: $(sqlite_cmd) $demo/home/alice/sqlbox/mail.sqlite 'SELECT name, messages FROM mailboxes'
Logs: $demo/log/dovecot.log, $demo/postfix/log/postfix.log
Relay queue: scripts/demo-relay.sh queue $demo/postfix
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
	"$relay" stop "$demo/postfix"
	"$instance" stop "$demo" >/dev/null
	mkdir -p "$demo"
	# alice sends as alice@$domain; LMTP finds bob for bob@$domain
	RELAY_DOMAIN=$domain "$relay" dovecot-conf >"$demo/relay-dovecot.conf"
	SQLBOX_PLUGIN_DIR=$build MAIL_LOCATION='sqlbox:~/sqlbox' LOAD_SQLBOX=yes \
		USERS="alice:alice bob:bob" EXTRA_CONF=$demo/relay-dovecot.conf \
		"$instance" write "$demo"
	"$instance" start "$demo"
	if [ "$(id -u)" -eq 0 ]; then
		RELAY_PORT=$((PORT_BASE + 25)) LMTP_PORT=$((PORT_BASE + 24)) \
			RELAY_DOMAIN=$domain RELAY_USERS="alice bob" \
			"$relay" write "$demo/postfix"
		"$relay" start "$demo/postfix"
		"$relay" status "$demo/postfix"
	else
		echo "demo: not root: the relay (Postfix) is not started, so submission answers MAIL with 421 4.4.0; run scripts/demo.sh start as root for it" >&2
	fi
	explain
	;;
stop)
	"$relay" stop "$demo/postfix"
	"$instance" stop "$demo"
	;;
status)
	"$relay" status "$demo/postfix" || true
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
