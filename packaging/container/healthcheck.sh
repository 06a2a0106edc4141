#!/bin/bash
# SPDX-License-Identifier: MIT
# Health check of the sqlbox container image: healthy when Dovecot's IMAP
# listener on 127.0.0.1 answers with its "* OK" greeting. The port is the
# one the entrypoint configured, or SQLBOX_HEALTH_PORT (for a configuration
# of your own, DOVECOT_CONF).
port=${SQLBOX_HEALTH_PORT:-$(cat /run/sqlbox/imap-port 2>/dev/null || echo 143)}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
IFS= read -r -t 5 greeting <&3 || exit 1
printf 'a logout\r\n' >&3
case "$greeting" in
"* OK"*) exit 0 ;;
*) exit 1 ;;
esac
