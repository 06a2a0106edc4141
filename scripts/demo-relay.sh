#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The demo's mail relay: a private Postfix in one directory, listening only
# on 127.0.0.1:RELAY_PORT, that takes what Dovecot's submission service hands
# it and delivers the demo domain's users to Dovecot over LMTP. Every other
# domain is refused at RCPT, and the only transports that can carry mail off
# the machine are set to `error`, so nothing ever leaves. Used by the demo
# (scripts/demo.sh) and by tests/integration/test_demo_relay.py.
#
# Usage: demo-relay.sh write|start|stop|status|queue DIR
#        demo-relay.sh dovecot-conf
#
#   write         DIR/etc/{main.cf,master.cf,mailboxes}; checks them with
#                 `postconf`.
#   start         writes the config if there is none, then
#                 `postfix -c DIR/etc start`; fails if it already runs.
#   stop          `postfix -c DIR/etc stop`, then waits until the master is
#                 gone; does nothing when it is not running.
#   status        prints the state; exit 0 when running, 3 when not.
#   queue         prints the queued messages (`postqueue -p`).
#   dovecot-conf  prints the Dovecot settings the demo adds to its instance
#                 (EXTRA_CONF of scripts/dovecot-instance.sh), so that a
#                 user logging in as alice sends as alice@RELAY_DOMAIN and
#                 LMTP finds bob for bob@RELAY_DOMAIN.
#
# Settings (environment, with defaults):
#   PORT_BASE     as for dovecot-instance.sh (default 10000)
#   RELAY_PORT    the SMTP listener, 127.0.0.1 only (default PORT_BASE + 25)
#   LMTP_PORT     Dovecot's LMTP listener on 127.0.0.1 (default PORT_BASE + 24)
#   RELAY_DOMAIN  the one domain delivered (default example.test)
#   RELAY_USERS   its users, space-separated local parts (default "alice bob")
#
# Layout of DIR: etc/ (config_directory), spool/ (queue_directory; the
# master's pid in spool/pid/master.pid), data/ (data_directory), log/
# (log/postfix.log). Postfix's master runs as root and its daemons as the
# `postfix` user, so DIR and its parents must be traversable by that user.
# The system's Postfix (/etc/postfix) is neither read nor started.
set -euo pipefail

die() {
	echo "demo-relay: $*" >&2
	exit 1
}

usage() {
	sed -n '/^# Usage:/,/^#        demo-relay.sh dovecot-conf/p' "${BASH_SOURCE[0]}" |
		sed 's/^# \{0,1\}//' >&2
	exit 2
}

PORT_BASE=${PORT_BASE:-10000}
RELAY_PORT=${RELAY_PORT:-$((PORT_BASE + 25))}
LMTP_PORT=${LMTP_PORT:-$((PORT_BASE + 24))}
RELAY_DOMAIN=${RELAY_DOMAIN:-example.test}
RELAY_USERS=${RELAY_USERS-alice bob}

case "$RELAY_DOMAIN" in
'' | .* | *. | *..* | *[!A-Za-z0-9.-]*) die "bad RELAY_DOMAIN '$RELAY_DOMAIN'" ;;
esac

dovecot_conf() {
	cat <<EOF
# The demo relay (scripts/demo-relay.sh): demo users log in as alice and
# send as alice@$RELAY_DOMAIN; the relay delivers bob@$RELAY_DOMAIN to LMTP,
# where the user is looked up without the domain.
plugin {
  submission_sqlbox_senders = %n@$RELAY_DOMAIN
}
protocol lmtp {
  auth_username_format = %Ln
}
EOF
}

[ $# -ge 1 ] || usage
cmd=$1
if [ "$cmd" = dovecot-conf ]; then
	dovecot_conf
	exit 0
fi
[ $# -eq 2 ] || usage
dir=$2
case "$dir" in /*) ;; *) dir=$(pwd)/$dir ;; esac
dir=${dir%/}

etc=$dir/etc
spool=$dir/spool
data=$dir/data
log=$dir/log/postfix.log
pidfile=$spool/pid/master.pid

check_port() {
	case "$1" in '' | *[!0-9]*) die "$2 must be a number" ;; esac
	if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
		die "$2 $1 is out of range"
	fi
}

need_postfix() {
	[ -x /usr/sbin/postfix ] ||
		die "Postfix is not installed (scripts/install-deps.sh installs it)"
	[ "$(id -u)" -eq 0 ] || die "a Postfix instance runs only as root"
	getent passwd postfix >/dev/null || die "no user postfix"
	getent group postdrop >/dev/null || die "no group postdrop"
}

write_config() {
	local user
	check_port "$RELAY_PORT" RELAY_PORT
	check_port "$LMTP_PORT" LMTP_PORT
	[ "$RELAY_PORT" != 25 ] || die "RELAY_PORT must not be 25"
	for user in $RELAY_USERS; do
		case "$user" in
		*[!A-Za-z0-9._+-]*) die "bad user name '$user'" ;;
		esac
	done
	mkdir -p "$etc" "$spool" "$data" "$dir/log"
	chmod 0755 "$dir" "$etc" "$spool" "$dir/log"
	chown postfix: "$data" "$dir/log"
	chmod 0700 "$data"

	# The recipients smtpd accepts; texthash needs no postmap.
	: >"$etc/mailboxes.tmp"
	for user in $RELAY_USERS; do
		printf '%s@%s\t%s\n' "$user" "$RELAY_DOMAIN" "$user" >>"$etc/mailboxes.tmp"
	done
	mv "$etc/mailboxes.tmp" "$etc/mailboxes"

	cat >"$etc/main.cf.tmp" <<EOF
# Written by scripts/demo-relay.sh for $dir; rewritten by
# 'demo-relay.sh write', do not edit. Nothing from /etc/postfix is used.
compatibility_level = 3.6
queue_directory = $spool
data_directory = $data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-sqlbox-demo
maillog_file = $log
maillog_file_prefixes = $dir/log

# Loopback only: the one listener is 127.0.0.1:$RELAY_PORT (master.cf).
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
myhostname = relay.$RELAY_DOMAIN
mydomain = $RELAY_DOMAIN
myorigin = \$mydomain
smtpd_banner = \$myhostname ESMTP sqlbox demo relay
smtpd_peername_lookup = no
disable_vrfy_command = yes
biff = no
append_dot_mydomain = no

# One domain, delivered to Dovecot over LMTP; the users are listed, so an
# unknown one is refused at RCPT.
mydestination =
alias_maps =
alias_database =
virtual_mailbox_domains = $RELAY_DOMAIN
virtual_mailbox_maps = texthash:$etc/mailboxes
virtual_transport = lmtp:inet:127.0.0.1:$LMTP_PORT

# Every other domain is refused at RCPT (no permit_mynetworks), and the
# transports that could carry mail off the machine are errors.
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
default_transport = error:5.7.1 the demo relay delivers only $RELAY_DOMAIN
relay_transport = error:5.7.1 the demo relay delivers only $RELAY_DOMAIN
local_transport = error:5.7.1 the demo relay has no local delivery
EOF
	mv "$etc/main.cf.tmp" "$etc/main.cf"

	# No smtp client service and no listener on port 25.
	cat >"$etc/master.cf.tmp" <<EOF
# Written by scripts/demo-relay.sh; see main.cf.
# service          type  private unpriv chroot wakeup maxproc command
127.0.0.1:$RELAY_PORT inet  n       -      n      -      -       smtpd
cleanup            unix  n       -      n      -      0       cleanup
qmgr               unix  n       -      n      300    1       qmgr
rewrite            unix  -       -      n      -      -       trivial-rewrite
bounce             unix  -       -      n      -      0       bounce
defer              unix  -       -      n      -      0       bounce
trace              unix  -       -      n      -      0       bounce
verify             unix  -       -      n      -      1       verify
flush              unix  n       -      n      1000?  0       flush
proxymap           unix  -       -      n      -      -       proxymap
showq              unix  n       -      n      -      -       showq
error              unix  -       -      n      -      -       error
retry              unix  -       -      n      -      -       error
discard            unix  -       -      n      -      -       discard
lmtp               unix  -       -      n      -      -       lmtp
anvil              unix  -       -      n      -      1       anvil
scache             unix  -       -      n      -      1       scache
postlog            unix-dgram n  -      n      -      1       postlogd
EOF
	mv "$etc/master.cf.tmp" "$etc/master.cf"
	chmod 0644 "$etc/main.cf" "$etc/master.cf" "$etc/mailboxes"

	local out
	out=$(postconf -c "$etc" -n 2>&1 >/dev/null) ||
		die "postconf rejects $etc/main.cf: $out"
	[ -z "$out" ] || echo "$out" >&2
}

# The master's pid, if it runs (checked by pid and executable, never by name).
master_pid() {
	local pid
	[ -r "$pidfile" ] || return 1
	pid=$(tr -d ' \n' <"$pidfile" 2>/dev/null) || return 1
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || return 1
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/lib/postfix/sbin/master ] ||
		return 1
	echo "$pid"
}

start() {
	local out port
	if master_pid >/dev/null; then
		die "already running (pid $(master_pid)); stop it first"
	fi
	[ -f "$etc/main.cf" ] || write_config
	# Postfix's master binds with SO_REUSEPORT, so a second instance on a
	# taken port would start and share it: refuse instead.
	port=$(postconf -c "$etc" -M | sed -n 's/^127\.0\.0\.1:\([0-9]*\) .*/\1/p')
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "127.0.0.1:$port is already in use"
	fi
	if ! out=$(postfix -c "$etc" start 2>&1); then
		echo "$out" >&2
		[ -r "$log" ] && tail -n 20 "$log" >&2
		die "Postfix did not start"
	fi
	master_pid >/dev/null || die "Postfix started but its master is gone (see $log)"
}

stop() {
	local pid
	pid=$(master_pid) || return 0
	postfix -c "$etc" stop >/dev/null 2>&1 || true
	for _ in $(seq 1 100); do
		[ -d "/proc/$pid" ] || return 0
		sleep 0.1
	done
	die "the master (pid $pid) did not stop"
}

status() {
	local pid
	if pid=$(master_pid); then
		echo "demo relay: Postfix running (pid $pid) on 127.0.0.1:$(postconf -c "$etc" -M |
			sed -n 's/^127\.0\.0\.1:\([0-9]*\) .*/\1/p'), config $etc"
		return 0
	fi
	echo "demo relay: not running ($dir)"
	return 3
}

case "$cmd" in
write)
	need_postfix
	write_config
	;;
start)
	need_postfix
	start
	;;
stop)
	stop
	;;
status)
	status || exit 3
	;;
queue)
	need_postfix
	postqueue -c "$etc" -p
	;;
*)
	usage
	;;
esac
