#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what sqlbox needs to build and test on Debian 12 (bookworm).
#
# Idempotent: when every package is already installed it touches nothing
# (no apt-get update, no download). Runs as root, or through sudo otherwise.
# Output is quiet; on failure the apt log is printed and the exit status is 1.
#
# The packages start Dovecot's system service on a normal Debian. sqlbox never
# uses the system instance (its listeners would hold 143, 993, 110, 995 ...),
# so the service is kept from starting during installation and is stopped and
# disabled afterwards, with or without systemd. Postfix (the demo's private
# relay, scripts/demo-relay.sh) is installed unconfigured ("No configuration"):
# no /etc/postfix/main.cf, no system MTA, no port 25; a Postfix that this
# script installs has its system service disabled too. One that was already
# installed is the machine's own MTA and is left alone.
set -euo pipefail

packages=(
	gcc make pkg-config
	dovecot-core dovecot-dev dovecot-imapd dovecot-pop3d dovecot-lmtpd
	dovecot-submissiond
	libsqlite3-dev libssl-dev libcriterion-dev
	sqlite3 openssl
	python3 python3-pytest
	ca-certificates
	# POP3 clients of tests/integration/test_pop3_clients.py
	fetchmail getmail6 isync dovecot-sieve
	# full-text search stacked on sqlbox (tests/integration/test_stacking.py)
	dovecot-fts-xapian
	# submission tests: SMTP client and the recording relay sink; swaks
	# speaks TLS through Net::SSLeay, only a recommendation of its package
	swaks libnet-ssleay-perl libio-socket-ssl-perl python3-aiosmtpd
	# libFuzzer targets (make fuzz, the short run in make check)
	clang libclang-rt-14-dev
	# the demo's relay (scripts/demo-relay.sh) and ss, which its test
	# (tests/integration/test_demo_relay.py) reads the listeners with
	postfix iproute2
)

die() {
	echo "install-deps: $*" >&2
	exit 1
}

[ -r /etc/debian_version ] || die "this script is for Debian 12 (no /etc/debian_version)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found"
case "$(cut -d. -f1 /etc/debian_version)" in
12 | bookworm*) ;;
*) echo "install-deps: warning: written for Debian 12, found $(cat /etc/debian_version)" >&2 ;;
esac

# Root (or sudo) is needed only when there is something to do.
as_root=()
need_root() {
	[ "$(id -u)" -eq 0 ] && return 0
	[ ${#as_root[@]} -gt 0 ] && return 0
	command -v sudo >/dev/null 2>&1 ||
		die "not root and no sudo: run this script as root"
	sudo -n true 2>/dev/null ||
		die "not root and 'sudo -n' needs a password: run this script as root or via sudo"
	as_root=(sudo -n)
}

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done

# Stops and disables the system Dovecot. Without systemd (containers, CI
# images) the SysV script and its pid file are used; nothing is killed by name.
system_dovecot_pid() {
	local pid
	pid=$(cat /run/dovecot/master.pid 2>/dev/null) || return 1
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || [ -d "/proc/$pid" ] || return 1
	echo "$pid"
}

system_dovecot_enabled() {
	[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
		systemctl -q is-enabled dovecot.service 2>/dev/null
}

stop_system_dovecot() {
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		"${as_root[@]}" systemctl disable --now dovecot.service dovecot.socket \
			>/dev/null 2>&1 || true
	fi
	if [ -x /etc/init.d/dovecot ] && command -v update-rc.d >/dev/null 2>&1; then
		"${as_root[@]}" update-rc.d dovecot disable >/dev/null 2>&1 || true
	fi
	local pid
	pid=$(system_dovecot_pid) || return 0
	if [ -x /etc/init.d/dovecot ]; then
		"${as_root[@]}" /etc/init.d/dovecot stop >/dev/null 2>&1 || true
	fi
	if kill -0 "$pid" 2>/dev/null; then
		"${as_root[@]}" kill -TERM "$pid" 2>/dev/null || true
	fi
	for _ in $(seq 1 100); do
		[ -d "/proc/$pid" ] || return 0
		sleep 0.1
	done
	echo "install-deps: warning: system Dovecot (pid $pid) did not stop" >&2
}

# Stops and disables the system Postfix service, which an unconfigured
# install could not run anyway; the pid is the master's, never found by name.
stop_system_postfix() {
	# systemctl disable also works without a running systemd (images
	# that boot one later).
	if command -v systemctl >/dev/null 2>&1; then
		if [ -d /run/systemd/system ]; then
			"${as_root[@]}" systemctl disable --now postfix.service \
				>/dev/null 2>&1 || true
		else
			"${as_root[@]}" systemctl disable postfix.service \
				>/dev/null 2>&1 || true
		fi
	fi
	if [ -x /etc/init.d/postfix ] && command -v update-rc.d >/dev/null 2>&1; then
		"${as_root[@]}" update-rc.d postfix disable >/dev/null 2>&1 || true
	fi
	local pid pidfile=/var/spool/postfix/pid/master.pid
	[ -r "$pidfile" ] || return 0
	pid=$(tr -d ' \n' <"$pidfile")
	case "$pid" in '' | *[!0-9]*) return 0 ;; esac
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/lib/postfix/sbin/master ] ||
		return 0
	"${as_root[@]}" postfix stop >/dev/null 2>&1 || true
}

installs_postfix=no
for p in "${missing[@]}"; do
	[ "$p" = postfix ] && installs_postfix=yes
done
if [ "$installs_postfix" = yes ]; then
	# Postfix conflicts with every other MTA; apt would remove it.
	other_mta=$(dpkg-query -W -f='${Package}\t${db:Status-Status}\t${Provides}\n' |
		awk -F'\t' '$2 == "installed" && $3 ~ /mail-transport-agent/ { print $1 }' |
		tr '\n' ' ')
	[ -z "$other_mta" ] ||
		die "installing postfix (the demo relay) would remove this machine's mail transport agent: ${other_mta% }. Install postfix yourself if that is wanted, then run this script again"
fi

if [ ${#missing[@]} -gt 0 ]; then
	need_root
	log=$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX")
	policy=/usr/sbin/policy-rc.d
	made_policy=no
	cleanup() {
		if [ "$made_policy" = yes ]; then
			"${as_root[@]}" rm -f "$policy"
		fi
		rm -f "$log"
	}
	trap cleanup EXIT
	# policy-rc.d exit 101 = "action forbidden": dpkg's maintainer scripts
	# (invoke-rc.d, deb-systemd-invoke) then leave the service alone.
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
		"${as_root[@]}" chmod 0755 "$policy"
		made_policy=yes
	fi
	if [ "$installs_postfix" = yes ]; then
		echo 'postfix postfix/main_mailer_type select No configuration' |
			"${as_root[@]}" debconf-set-selections
	fi
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Another apt (unattended upgrades at boot) may hold the locks: wait.
	lock_opts=(-o DPkg::Lock::Timeout=600)
	apt_opts=("${lock_opts[@]}" -y -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef
		-o Dpkg::Options::=--force-confold --no-install-recommends)
	if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get "${lock_opts[@]}" -q update >"$log" 2>&1; then
		cat "$log" >&2
		die "apt-get update failed"
	fi
	if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$log" 2>&1; then
		tail -n 60 "$log" >&2
		die "apt-get install failed: ${missing[*]}"
	fi
fi

if [ ${#missing[@]} -gt 0 ] || system_dovecot_pid >/dev/null ||
	system_dovecot_enabled; then
	need_root
	stop_system_dovecot
fi
if [ "$installs_postfix" = yes ]; then
	stop_system_postfix
fi

for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || die "package $p is still not installed"
done
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] ||
	die "dovecot binary not found after installation"
/usr/bin/python3 -c 'import pytest' 2>/dev/null ||
	die "/usr/bin/python3 cannot import pytest"
echo "install-deps: ok ($(/usr/sbin/dovecot --version 2>/dev/null | cut -d' ' -f1))"
