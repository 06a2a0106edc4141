#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A private Dovecot instance in one directory: writes its configuration,
# starts it, stops it by pid. Used by the demo (scripts/demo.sh) and by the
# integration tests (tests/integration/harness.py).
#
# Usage: dovecot-instance.sh write|start|stop|restart|status DIR
#        dovecot-instance.sh add-user DIR USER PASSWORD [FIELDS]
#
#   write     DIR/dovecot.conf, DIR/passwd, DIR/ssl/{cert,key,dh}.pem (the
#             certificate is made once and kept), homes; checks the result
#             with `doveconf -n`.
#   start     runs `dovecot -c DIR/dovecot.conf` (writing the config first if
#             there is none) and waits until the IMAP port accepts
#             connections; fails if the instance is already running.
#   stop      TERM to the master from DIR/run/master.pid, then waits until no
#             process of the instance remains. Never kills by name.
#   restart   stop (if running), then start; the config is not rewritten
#             (run write in between to apply changed settings).
#   status    prints the state; exit 0 when running, 3 when not.
#   add-user  adds (or replaces) one passwd-file user and makes its home; a
#             running instance sees it within a second (the auth process
#             re-reads passwd-file at most once a second). `write` rewrites
#             passwd from USERS, dropping users added this way. An optional
#             fifth argument is the user's extra userdb fields, space
#             separated (userdb_name=value: per-user settings).
#
# Settings (environment, with defaults):
#   SQLBOX_PLUGIN_DIR   directory holding lib20_sqlbox_plugin.so and
#                       lib21_sqlbox_lmtp_plugin.so; DIR/modules (the
#                       mail_plugin_dir) links to them and to Dovecot's
#                       own modules           (default <repo>/build/default)
#   MAIL_LOCATION       mail_location        (default sqlbox:~/sqlbox)
#   LOAD_SQLBOX         yes|no: put `sqlbox` in mail_plugins; `no` for a
#                       maildir/sdbox oracle instance (default yes)
#   PORT_BASE           ports are PORT_BASE + the usual port (default 10000):
#                       IMAP (STARTTLS) +143, IMAPS +993, POP3 (STLS) +110,
#                       POP3S +995, LMTP +24, submission (STARTTLS) +587
#                       and submissions (implicit TLS) +465
#   RELAY_PORT          the SMTP relay that submission hands mail to, on
#                       127.0.0.1 (default PORT_BASE + 25); nothing listens
#                       there unless the caller starts a relay
#   USERS               space-separated user:password pairs written by
#                       `write` (default "alice:alice bob:bob")
#   EXTRA_CONF          a file whose text is appended to dovecot.conf
#   TOOL_CONF           a second such file, appended last, for runs of the
#                       whole suite under a tool (mk/asan.mk, mk/valgrind.mk)
#   SQLBOX_DEBUG        1 turns on mail_debug and auth_debug (default off)
#   IDLE_CHECK_INTERVAL mailbox_idle_check_interval (default "30 secs")
#   VSZ_LIMIT           default_vsz_limit, e.g. 0 for ASan (default: unset,
#                       i.e. Dovecot's 256M)
#
# Layout of DIR: dovecot.conf, instance.env (PORT_BASE of the written config,
# used by the other subcommands), passwd, ssl/, run/ (base_dir, master.pid,
# lmtp socket), state/, log/dovecot.log, home/<user>/ (mail in
# home/<user>/sqlbox/mail.sqlite with the default MAIL_LOCATION).
#
# As root, mail is owned by nobody:nogroup (65534), login processes run as
# dovenull and internal ones as dovecot; DIR and its parents must be
# traversable by them. As any other user, everything runs as that user.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
	echo "dovecot-instance: $*" >&2
	exit 1
}

usage() {
	sed -n '/^# Usage:/,/^#   add-user/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir=$(pwd)/$dir ;; esac
dir=${dir%/}

SQLBOX_PLUGIN_DIR=${SQLBOX_PLUGIN_DIR:-$repo/build/default}
MAIL_LOCATION=${MAIL_LOCATION:-'sqlbox:~/sqlbox'}
LOAD_SQLBOX=${LOAD_SQLBOX:-yes}
PORT_BASE=${PORT_BASE:-10000}
USERS=${USERS-alice:alice bob:bob}
EXTRA_CONF=${EXTRA_CONF:-}
TOOL_CONF=${TOOL_CONF:-}
SQLBOX_DEBUG=${SQLBOX_DEBUG:-0}
IDLE_CHECK_INTERVAL=${IDLE_CHECK_INTERVAL:-30 secs}
VSZ_LIMIT=${VSZ_LIMIT:-}
RELAY_PORT=${RELAY_PORT:-}

# The ports of a written config are the ones that count afterwards.
if [ "$cmd" != write ] && [ -r "$dir/instance.env" ]; then
	PORT_BASE=$(sed -n 's/^PORT_BASE=\([0-9]*\)$/\1/p' "$dir/instance.env")
fi
case "$LOAD_SQLBOX" in yes | no) ;; *) die "LOAD_SQLBOX must be yes or no" ;; esac
case "$PORT_BASE" in '' | *[!0-9]*) die "PORT_BASE must be a number" ;; esac
if [ "$PORT_BASE" -lt 1 ] || [ "$((PORT_BASE + 995))" -gt 65535 ]; then
	die "PORT_BASE $PORT_BASE puts ports out of range"
fi

conf=$dir/dovecot.conf
base_dir=$dir/run
pidfile=$base_dir/master.pid
log=$dir/log/dovecot.log
imap_port=$((PORT_BASE + 143))
RELAY_PORT=${RELAY_PORT:-$((PORT_BASE + 25))}

if [ "$(id -u)" -eq 0 ]; then
	mail_uid=65534
	mail_gid=65534
	login_user=dovenull
	internal_user=dovecot
	internal_group=dovecot
else
	mail_uid=$(id -u)
	mail_gid=$(id -g)
	login_user=$(id -un)
	internal_user=$login_user
	internal_group=$(id -gn)
fi

# Unix socket paths are limited to 108 bytes (sun_path); the deepest one
# Dovecot makes is about 40 bytes below base_dir.
[ ${#base_dir} -le 64 ] || die "DIR is too long for Unix sockets: $base_dir"

# The directory name makes instance_name unique, so instances never share a
# name in logs or process titles.
instance_name=sqlbox-$(printf '%s' "$dir" | cksum | cut -d' ' -f1)

ensure_cert() {
	local ssl=$dir/ssl
	mkdir -p "$ssl"
	if [ ! -s "$ssl/cert.pem" ] || [ ! -s "$ssl/key.pem" ]; then
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
			-subj /CN=localhost \
			-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
			-keyout "$ssl/key.pem.tmp" -out "$ssl/cert.pem.tmp" \
			>/dev/null 2>&1 || die "openssl could not make a certificate"
		chmod 0600 "$ssl/key.pem.tmp"
		chmod 0644 "$ssl/cert.pem.tmp"
		mv "$ssl/key.pem.tmp" "$ssl/key.pem"
		mv "$ssl/cert.pem.tmp" "$ssl/cert.pem"
	fi
	# RFC 7919's ffdhe2048: a fixed group, so nothing slow to generate.
	# Without ssl_dh a client offering only DHE ciphers makes Dovecot log
	# an Error.
	if [ ! -s "$ssl/dh.pem" ]; then
		openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 \
			-out "$ssl/dh.pem.tmp" >/dev/null 2>&1 ||
			die "openssl could not write DH parameters"
		mv "$ssl/dh.pem.tmp" "$ssl/dh.pem"
	fi
}

make_home() {
	local home=$dir/home/$1
	mkdir -p "$home"
	chmod 0700 "$home"
	if [ "$(id -u)" -eq 0 ]; then
		chown "$mail_uid:$mail_gid" "$home"
	fi
}

# passwd-file line: user:{PLAIN}password:uid:gid::home::extra fields
passwd_line() {
	printf '%s:{PLAIN}%s:%s:%s::%s::%s\n' "$1" "$2" "$mail_uid" "$mail_gid" \
		"$dir/home/$1" "${3:-}"
}

check_user() {
	case "$1" in
	'' | *[!A-Za-z0-9._@+-]*) die "bad user name '$1'" ;;
	esac
	case "$2" in *:* | *$'\n'*) die "a password cannot contain ':'" ;; esac
}

write_passwd() {
	local tmp=$dir/passwd.tmp pair user pass
	: >"$tmp"
	for pair in $USERS; do
		user=${pair%%:*}
		pass=${pair#*:}
		[ "$pair" != "$user" ] || die "USERS entry '$pair' is not user:password"
		check_user "$user" "$pass"
		passwd_line "$user" "$pass" >>"$tmp"
		make_home "$user"
	done
	install_passwd "$tmp"
}

install_passwd() {
	if [ "$(id -u)" -eq 0 ]; then
		chown "root:$internal_group" "$1"
	fi
	chmod 0640 "$1"
	mv "$1" "$dir/passwd"
}

add_user() {
	local user=$1 pass=$2 fields=${3:-} tmp=$dir/passwd.tmp.$$
	check_user "$user" "$pass"
	case "$fields" in *:* | *$'\n'*) die "userdb fields cannot contain ':'" ;; esac
	[ -f "$dir/passwd" ] || die "no $dir/passwd; run write first"
	{
		grep -v "^$user:" "$dir/passwd" || true
		passwd_line "$user" "$pass" "$fields"
	} >"$tmp"
	make_home "$user"
	install_passwd "$tmp"
}

# As root, the mail user (nobody) must reach DIR/home and the login user the
# certificate-free parts: check once, with the real uid, instead of guessing
# from modes.
check_traversable() {
	[ "$(id -u)" -eq 0 ] || return 0
	if ! setpriv --reuid="$mail_uid" --regid="$mail_gid" --clear-groups \
		test -x "$dir/home"; then
		die "$dir/home is not reachable by uid $mail_uid: make DIR's parents world-traversable (chmod o+x)"
	fi
}

# Dovecot loads mail plugins from one directory: DIR/modules links to
# Dovecot's own modules (quota, zlib, sieve, ...) and to the sqlbox ones of
# SQLBOX_PLUGIN_DIR, so both can be stacked. The links point at the build,
# so a rebuild needs no new write.
link_modules() {
	local to=$1 moduledir f
	moduledir=$(. /usr/lib/dovecot/dovecot-config && echo "$dovecot_moduledir")
	rm -rf "$to"
	mkdir -p "$to"
	for f in "$moduledir"/*.so; do
		[ -e "$f" ] && ln -s "$f" "$to/"
	done
	for f in lib20_sqlbox_plugin.so lib21_sqlbox_lmtp_plugin.so \
		lib95_submission_sqlbox_plugin.so; do
		ln -sf "$SQLBOX_PLUGIN_DIR/$f" "$to/$f"
	done
	chmod 755 "$to"
}

write_config() {
	local plugins="" lmtp_plugins="" submission_plugins="" debug=no vsz="" extra=""
	if [ "$LOAD_SQLBOX" = yes ]; then
		plugins=sqlbox
		# LMTP's 552 5.3.4 for messages over sqlbox_max_message_size
		lmtp_plugins=sqlbox_lmtp
		# sender ownership, rate limits, Sent copy, audit (PLUGIN.md)
		submission_plugins=submission_sqlbox
		[ -f "$SQLBOX_PLUGIN_DIR/lib20_sqlbox_plugin.so" ] ||
			echo "dovecot-instance: warning: $SQLBOX_PLUGIN_DIR/lib20_sqlbox_plugin.so does not exist (yet)" >&2
	fi
	[ "$SQLBOX_DEBUG" = 1 ] && debug=yes
	[ -n "$VSZ_LIMIT" ] && vsz="default_vsz_limit = $VSZ_LIMIT"
	if [ -n "$EXTRA_CONF" ]; then
		[ -r "$EXTRA_CONF" ] || die "EXTRA_CONF $EXTRA_CONF is not readable"
		extra=$(cat "$EXTRA_CONF")
	fi

	mkdir -p "$dir" "$dir/log" "$dir/state" "$dir/home"
	chmod 0755 "$dir" "$dir/home"
	chmod 0750 "$dir/log" "$dir/state"
	# the submission operator database, written by the mail user
	mkdir -p "$dir/policy"
	chmod 0700 "$dir/policy"
	if [ "$(id -u)" -eq 0 ]; then
		chown "$mail_uid:$mail_gid" "$dir/policy"
	fi
	ensure_cert
	write_passwd
	check_traversable

	local plugin_dir_line="mail_plugin_dir = $dir/modules"
	[ "$LOAD_SQLBOX" = yes ] || plugin_dir_line="# mail_plugin_dir: Dovecot's default (no sqlbox)"
	link_modules "$dir/modules"

	local nonroot=""
	if [ "$(id -u)" -ne 0 ]; then
		# Not root: nothing can chroot or change user.
		nonroot="service imap-login {
  chroot =
}
service pop3-login {
  chroot =
}
service submission-login {
  chroot =
}
service anvil {
  chroot =
}
service auth-worker {
  user = \$default_internal_user
}
service imap-urlauth-login {
  chroot =
}"
	fi

	cat >"$conf.tmp" <<EOF
# Written by scripts/dovecot-instance.sh for $dir; rewritten by
# 'dovecot-instance.sh write', do not edit. Standalone: nothing from
# /etc/dovecot is read.
protocols = imap pop3 lmtp submission
listen = 127.0.0.1
base_dir = $base_dir
state_dir = $dir/state
instance_name = $instance_name
log_path = $log
log_timestamp = "%Y-%m-%d %H:%M:%S "
mail_debug = $debug
auth_debug = $debug

default_login_user = $login_user
default_internal_user = $internal_user
default_internal_group = $internal_group
first_valid_uid = 1
first_valid_gid = 1
$vsz

ssl = yes
ssl_cert = <$dir/ssl/cert.pem
ssl_key = <$dir/ssl/key.pem
ssl_dh = <$dir/ssl/dh.pem

# Tests sometimes log in before STARTTLS on purpose.
disable_plaintext_auth = no
auth_mechanisms = plain login

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $dir/passwd
}

mail_location = $MAIL_LOCATION
mail_plugins = \$mail_plugins $plugins
$plugin_dir_line
# Required for sqlbox (DESIGN.md section 7): the list index would advertise
# NOTIFY, which sqlbox does not implement.
mailbox_list_index = no
# IMAP METADATA (RFC 5464). Dovecot advertises it only with a non-empty
# mail_attribute_dict; sqlbox keeps attributes in its database and never
# uses the dict (maildir and sdbox instances do).
imap_metadata = yes
mail_attribute_dict = file:%h/dovecot-attributes
mailbox_idle_check_interval = $IDLE_CHECK_INTERVAL
postmaster_address = postmaster@localhost

namespace inbox {
  inbox = yes
  separator = /
  prefix =
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = create
  }
  mailbox Archive {
    special_use = \\Archive
    auto = create
  }
}

# IMAP: STARTTLS on the 143 role, implicit TLS on the 993 role.
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $((PORT_BASE + 143))
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $((PORT_BASE + 993))
    ssl = yes
  }
}
# POP3: STLS on the 110 role, implicit TLS on the 995 role.
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $((PORT_BASE + 110))
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $((PORT_BASE + 995))
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $((PORT_BASE + 24))
  }
  unix_listener lmtp {
    mode = 0666
  }
}
protocol lmtp {
  lmtp_save_to_detail_mailbox = no
  mail_plugins = \$mail_plugins $lmtp_plugins
}
# Submission: STARTTLS on the 587 role (RFC 6409), implicit TLS on the 465
# role (RFC 8314). Mail goes to the relay on RELAY_PORT, never anywhere else.
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = $((PORT_BASE + 587))
  }
  inet_listener submissions {
    address = 127.0.0.1
    port = $((PORT_BASE + 465))
    ssl = yes
  }
}
submission_relay_host = 127.0.0.1
submission_relay_port = $RELAY_PORT
submission_relay_ssl = no
protocol submission {
  mail_plugins = \$mail_plugins $submission_plugins
}
plugin {
  submission_sqlbox_policy_db = $dir/policy/submission.sqlite
}
$nonroot
EOF
	if [ -n "$extra" ]; then
		printf '\n# --- EXTRA_CONF %s ---\n%s\n' "$EXTRA_CONF" "$extra" >>"$conf.tmp"
	fi
	if [ -n "$TOOL_CONF" ]; then
		[ -r "$TOOL_CONF" ] || die "TOOL_CONF $TOOL_CONF is not readable"
		printf '\n# --- TOOL_CONF %s ---\n%s\n' "$TOOL_CONF" "$(cat "$TOOL_CONF")" >>"$conf.tmp"
	fi
	chmod 0644 "$conf.tmp"
	mv "$conf.tmp" "$conf"
	printf 'PORT_BASE=%s\n' "$PORT_BASE" >"$dir/instance.env"
	local out
	if ! out=$(doveconf -c "$conf" -n 2>&1 >/dev/null); then
		echo "$out" >&2
		die "doveconf rejects $conf"
	fi
	if [ -n "$out" ]; then
		echo "$out" >&2
	fi
}

master_pid() {
	local pid
	[ -r "$pidfile" ] || return 1
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || return 1
	# A stale pid file whose pid now belongs to something else.
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/sbin/dovecot ] ||
		return 1
	echo "$pid"
}

# Prints "pid:starttime" for each descendant of $1 (found through
# /proc/PID/stat, so by pid, never by name).
descendants() {
	local root=$1 f stat rest pid
	local -A parent=() start=()
	local -a fields
	for f in /proc/[0-9]*/stat; do
		read -r stat 2>/dev/null <"$f" || continue
		pid=${stat%% *}
		rest=${stat##*) }
		read -r -a fields <<<"$rest"
		parent[$pid]=${fields[1]}
		start[$pid]=${fields[19]}
	done
	local -a queue=("$root")
	local p c
	while [ ${#queue[@]} -gt 0 ]; do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		for c in "${!parent[@]}"; do
			if [ "${parent[$c]}" = "$p" ]; then
				echo "$c:${start[$c]}"
				queue+=("$c")
			fi
		done
	done
}

# True while process pid:starttime still exists (not a recycled pid).
alive() {
	local pid=${1%%:*} st=${1#*:} stat rest
	local -a fields
	read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
	rest=${stat##*) }
	read -r -a fields <<<"$rest"
	[ "${fields[19]}" = "$st" ] && [ "${fields[0]}" != Z ]
}

log_tail() {
	if [ -r "$log" ]; then
		echo "--- last lines of $log ---" >&2
		tail -n 30 "$log" >&2
	fi
}

port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

do_start() {
	local pid
	if pid=$(master_pid); then
		die "already running (pid $pid); use restart"
	fi
	[ -f "$conf" ] || write_config
	# The master keeps its stderr open for good: a file, not a pipe that a
	# caller would wait on forever.
	if ! dovecot -c "$conf" >"$dir/log/master.out" 2>&1; then
		cat "$dir/log/master.out" >&2
		log_tail
		die "dovecot -c $conf failed"
	fi
	for _ in $(seq 1 150); do
		if pid=$(master_pid) && port_open "$imap_port"; then
			echo "dovecot-instance: running (pid $pid, IMAP 127.0.0.1:$imap_port, IMAPS 127.0.0.1:$((PORT_BASE + 993)))"
			return 0
		fi
		sleep 0.1
	done
	log_tail
	die "IMAP port $imap_port did not accept connections within 15 s"
}

do_stop() {
	local pid procs=() p
	if ! pid=$(master_pid); then
		rm -f "$pidfile"
		echo "dovecot-instance: not running"
		return 0
	fi
	mapfile -t procs < <(descendants "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	# Keep collecting children while the master lives: after it exits
	# they are reparented and can no longer be told apart.
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		while read -r p; do
			[[ " ${procs[*]} " == *" $p "* ]] || procs+=("$p")
		done < <(descendants "$pid")
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "dovecot-instance: master $pid ignores TERM; sending KILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	local left
	for _ in $(seq 1 100); do
		left=()
		for p in "${procs[@]}"; do
			alive "$p" && left+=("$p")
		done
		[ ${#left[@]} -eq 0 ] && break
		sleep 0.1
	done
	if [ ${#left[@]} -gt 0 ]; then
		echo "dovecot-instance: killing leftover processes ${left[*]%%:*}" >&2
		for p in "${left[@]}"; do
			if alive "$p"; then
				kill -KILL "${p%%:*}" 2>/dev/null || true
			fi
		done
	fi
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	rm -f "$pidfile"
	echo "dovecot-instance: stopped"
}

do_status() {
	local pid
	if pid=$(master_pid); then
		echo "running (pid $pid, IMAP 127.0.0.1:$imap_port)"
		return 0
	fi
	echo "not running"
	return 3
}

case "$cmd" in
write) write_config ;;
start) do_start ;;
stop) do_stop ;;
restart)
	do_stop >/dev/null
	do_start
	;;
status) do_status ;;
add-user)
	[ $# -eq 4 ] || [ $# -eq 5 ] || usage
	add_user "$3" "$4" "${5:-}"
	;;
*) usage ;;
esac
