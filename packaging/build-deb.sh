#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds dovecot-sqlbox_VERSION_ARCH.deb from a staged tree with dpkg-deb:
# the three modules (through `make install DESTDIR=`), the commented
# snippet as a conffile, and the docs. Run by `make deb`, which passes:
#
#   build-deb.sh BUILD OUTDIR VERSION MAINTAINER
#
# The package depends on the Dovecot ABI the modules were built for
# (/usr/share/dovecot/dovecot-abi) and on the exact dovecot-core version
# (that of the dovecot-dev headers):
# Debian's updates change structures under the same ABI string.
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 BUILD OUTDIR VERSION MAINTAINER" >&2; exit 2; }
build=$1
out=$2
version=$3
maintainer=$4

die() {
	echo "build-deb: $*" >&2
	exit 1
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
pkg=dovecot-sqlbox
arch=$(dpkg --print-architecture)
abi=$(cat /usr/share/dovecot/dovecot-abi 2>/dev/null) ||
	die "no /usr/share/dovecot/dovecot-abi: install dovecot-dev"
# The headers built against are dovecot-dev's; dovecot-core comes from the
# same source package, in the same version.
core=$(dpkg-query -W -f='${Version}' dovecot-dev 2>/dev/null) ||
	die "dovecot-dev is not installed"
[ -n "$abi" ] && [ -n "$core" ] || die "cannot tell the Dovecot ABI and version"
case "$version" in
'' | *[!0-9A-Za-z.+~-]*) die "bad package version '$version'" ;;
esac

case "$build" in /*) absbuild=$build ;; *) absbuild=$repo/$build ;; esac
work=$absbuild/deb
stage=$work/root
doc=$stage/usr/share/doc/$pkg
rm -rf "$work"
mkdir -p "$stage/DEBIAN"
# Modes come from here, not from the caller's umask.
umask 022

${MAKE:-make} --no-print-directory -s install BUILD="$build" DESTDIR="$stage" >/dev/null
# As dh_strip does: debug sections out, symbols for dlopen() stay.
find "$stage" -name '*.so' -exec strip --strip-unneeded \
	--remove-section=.comment --remove-section=.note {} +

install -d "$doc"
install -m 0644 README.md PLUGIN.md "$doc/"
install -m 0644 docs/storage.md "$doc/"
{
	echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
	echo "Upstream-Name: sqlbox"
	echo
	echo "Files: *"
	echo "Copyright: $(sed -n 's/^Copyright (c) //p' LICENSE | head -1)"
	echo "License: Expat"
	echo
	echo "License: Expat"
	sed -n '/^Permission/,$p' LICENSE | sed 's/^$/./; s/^/ /'
} >"$doc/copyright"
date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
{
	echo "$pkg ($version) unstable; urgency=medium"
	echo
	echo "  * Built for Dovecot $core ($abi)."
	echo
	echo " -- $maintainer  $date"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

# Shared-library dependencies (libc, SQLite, OpenSSL) as dpkg-shlibdeps
# finds them; it wants a debian/control beside it.
mkdir -p "$work/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" \
	>"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O \
	$(find "$stage" -name '*.so' | sort) 2>/dev/null |
	sed -n 's/^shlibs:Depends=//p') || die "dpkg-shlibdeps failed"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: dovecot-abi-$abi, dovecot-core (= $core), $shlibs
Section: mail
Priority: optional
Description: SQLite mail storage for Dovecot
 sqlbox stores each user's mail in one SQLite database: folders, UIDs,
 flags, keywords, dates and message bodies. Dovecot keeps serving IMAP,
 POP3, LMTP and submission; its index is only a cache.
 .
 This package holds the storage plugin, its LMTP size check, the
 "doveadm sqlbox" commands and a commented configuration snippet,
 /etc/dovecot/conf.d/90-sqlbox.conf, that changes nothing until it is
 edited. It is built for exactly one dovecot-core version.
CONTROL
echo /etc/dovecot/conf.d/90-sqlbox.conf >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' |
	sort | xargs md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/${pkg}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "build-deb: $deb (Dovecot $core, $abi)"
