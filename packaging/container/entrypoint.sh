#!/bin/bash
# SPDX-License-Identifier: MIT
# Entrypoint of the sqlbox container image: prepares users, TLS and
# listeners from the environment and the config volume, then runs Dovecot in
# the foreground (its log goes to stdout).
#
# With arguments other than "dovecot", runs them instead (doveadm, a shell).
# With DOVECOT_CONF set, runs Dovecot on that configuration unchanged (a
# complete configuration of your own, e.g. in a mounted volume).
#
# Environment (all optional):
#   SQLBOX_USERS       space-separated user:password pairs, added to the
#                      users of /etc/sqlbox/users (a passwd-file)
#   SQLBOX_PORT_BASE   added to every port (default 0: 24, 110, 143, 465,
#                      587, 993, 995)
#   SQLBOX_LISTEN      addresses to listen on (default "*, ::")
#   SQLBOX_HOSTNAME    name in the generated certificate and in Dovecot's
#                      replies (default: the container's hostname)
#   SQLBOX_RELAY_HOST  the MTA that submission relays to (default 127.0.0.1)
#   SQLBOX_RELAY_PORT  its port (default 25)
#   SQLBOX_POSTMASTER  postmaster_address (default postmaster@HOSTNAME)
set -euo pipefail

die() {
	echo "sqlbox-entrypoint: $*" >&2
	exit 1
}

if [ $# -gt 0 ] && [ "$1" != dovecot ]; then
	exec "$@"
fi
if [ -n "${DOVECOT_CONF:-}" ]; then
	[ -r "$DOVECOT_CONF" ] || die "DOVECOT_CONF=$DOVECOT_CONF is not readable"
	exec dovecot -F -c "$DOVECOT_CONF"
fi

config=/etc/sqlbox
run=/run/sqlbox
port_base=${SQLBOX_PORT_BASE:-0}
listen=${SQLBOX_LISTEN:-*, ::}
host=${SQLBOX_HOSTNAME:-$(hostname)}
relay_host=${SQLBOX_RELAY_HOST:-127.0.0.1}
relay_port=${SQLBOX_RELAY_PORT:-25}
postmaster=${SQLBOX_POSTMASTER:-postmaster@$host}

case "$port_base" in '' | *[!0-9]*) die "SQLBOX_PORT_BASE must be a number" ;; esac
[ "$((port_base + 995))" -le 65535 ] || die "SQLBOX_PORT_BASE puts ports out of range"
case "$relay_port" in '' | *[!0-9]*) die "SQLBOX_RELAY_PORT must be a number" ;; esac
port() { echo $((port_base + $1)); }

install -d -m 0755 "$run"
install -d -m 0750 -g dovecot "$run/tls"

# Users: the mounted passwd-file and the environment's pairs.
passdbs=""
if [ -e "$config/users" ]; then
	[ -r "$config/users" ] || die "$config/users is not readable"
	passdbs="$config/users"
fi
users=$run/users
: >"$users.tmp"
for pair in ${SQLBOX_USERS:-}; do
	user=${pair%%:*}
	pass=${pair#*:}
	[ "$pair" != "$user" ] && [ -n "$pass" ] ||
		die "SQLBOX_USERS entry '$pair' is not user:password"
	case "$user" in
	'' | *[!A-Za-z0-9._@+-]*) die "SQLBOX_USERS: bad user name '$user'" ;;
	esac
	hash=$(printf '%s' "$pass" | openssl passwd -6 -stdin)
	printf '%s:{SHA512-CRYPT}%s::::::\n' "$user" "$hash" >>"$users.tmp"
done
chgrp dovecot "$users.tmp"
chmod 0640 "$users.tmp"
mv "$users.tmp" "$users"
[ -s "$users" ] && passdbs="$passdbs $users"
[ -n "$passdbs" ] || die "no users: mount a passwd-file at $config/users or set SQLBOX_USERS"

# TLS: the mounted certificate, or a self-signed one made now.
cert=$config/tls/cert.pem
key=$config/tls/key.pem
if [ ! -e "$cert" ] || [ ! -e "$key" ]; then
	cert=$run/tls/cert.pem
	key=$run/tls/key.pem
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$host" \
		-addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
		-keyout "$key" -out "$cert" >/dev/null 2>&1 ||
		die "openssl could not make a certificate"
	chmod 0640 "$key"
	chgrp dovecot "$key"
	echo "sqlbox-entrypoint: no $config/tls/cert.pem and key.pem: made a self-signed certificate for $host ($cert)"
fi
# RFC 7919's ffdhe2048: a fixed group, nothing slow to generate.
openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 \
	-out "$run/tls/dh.pem" >/dev/null 2>&1 || die "openssl could not write DH parameters"

{
	echo "# Written by sqlbox-entrypoint at start; do not edit."
	echo "listen = $listen"
	echo "hostname = $host"
	echo "postmaster_address = $postmaster"
	echo "submission_relay_host = $relay_host"
	echo "submission_relay_port = $relay_port"
	echo "ssl_cert = <$cert"
	echo "ssl_key = <$key"
	echo "ssl_dh = <$run/tls/dh.pem"
	for f in $passdbs; do
		echo "passdb {"
		echo "  driver = passwd-file"
		echo "  args = scheme=SHA512-CRYPT username_format=%u $f"
		echo "}"
		echo "userdb {"
		echo "  driver = passwd-file"
		echo "  args = username_format=%u $f"
		echo "  default_fields = uid=vmail gid=vmail home=/srv/mail/%u"
		echo "}"
	done
	cat <<CONF
service imap-login {
  inet_listener imap {
    port = $(port 143)
  }
  inet_listener imaps {
    port = $(port 993)
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = $(port 110)
  }
  inet_listener pop3s {
    port = $(port 995)
    ssl = yes
  }
}
service submission-login {
  inet_listener submission {
    port = $(port 587)
  }
  inet_listener submissions {
    port = $(port 465)
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    port = $(port 24)
  }
}
CONF
} >"$run/runtime.conf"
echo "$(port 143)" >"$run/imap-port"

if ! out=$(doveconf -n 2>&1 >/dev/null); then
	echo "$out" >&2
	die "doveconf rejects the configuration"
fi
echo "sqlbox-entrypoint: starting Dovecot (IMAP $(port 143)/$(port 993), POP3 $(port 110)/$(port 995), submission $(port 587)/$(port 465), LMTP $(port 24))"
exec dovecot -F
