#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage: private-doveadm-modules.sh MODULEDIR COPY COMMAND...
# Run under `unshare -m`: replaces Dovecot's doveadm module directory
# MODULEDIR, in this mount namespace only, by COPY (its modules without
# sqlbox's), then runs COMMAND. The tests link the doveadm module under
# test into that directory; an instrumented one there would break every
# other doveadm on the machine, which does not preload the ASan runtime.
set -eu
mods=$1
copy=$2
shift 2
rm -rf "$copy"
mkdir -p "$copy"
for f in "$mods"/*; do
	case "$f" in
	*sqlbox*) ;;
	*) [ -e "$f" ] && cp -a "$f" "$copy/" ;;
	esac
done
chmod 0755 "$copy"
mount --make-rprivate /
mount --bind "$copy" "$mods"
exec "$@"
