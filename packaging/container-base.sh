#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Makes a Debian 12 (bookworm) base image for podman from Debian's own
# packages, for machines that cannot reach a container registry.
#
# Usage: packaging/container-base.sh [IMAGE]   (default localhost/debian:bookworm)
#
# The image is made once and reused while it exists (`podman rmi IMAGE`
# makes the next run build it again). debootstrap fetches from the mirror this
# machine's apt uses, and the image gets this machine's apt sources, so
# packages installed in it come in the same versions as on the host
# (including security updates).
set -euo pipefail

image=${1:-localhost/debian:bookworm}

die() {
	echo "container-base: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "debootstrap and podman import need root"
command -v podman >/dev/null 2>&1 || die "podman is not installed"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed"

if podman image exists "$image"; then
	echo "container-base: $image exists"
	exit 0
fi

sources=/etc/apt/sources.list.d/debian.sources
mirror=""
if [ -r "$sources" ]; then
	mirror=$(sed -n 's/^URIs: //p' "$sources" | head -1)
elif [ -r /etc/apt/sources.list ]; then
	mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no Debian mirror found in this machine's apt sources"

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/sqlbox-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
echo "container-base: debootstrap bookworm from $mirror"
if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" \
	>"$rootfs.log" 2>&1; then
	tail -n 30 "$rootfs.log" >&2
	rm -f "$rootfs.log"
	die "debootstrap failed"
fi
rm -f "$rootfs.log"
# The host's sources (bookworm, -updates, -security) instead of
# debootstrap's single line; the package lists are fetched by the builds.
if [ -r "$sources" ]; then
	rm -f "$rootfs/etc/apt/sources.list"
	cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
elif [ -r /etc/apt/sources.list ]; then
	cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
fi
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | podman import - "$image" >/dev/null
echo "container-base: made $image"
