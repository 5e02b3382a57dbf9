#!/bin/sh
# Prepare what the systemd driver's tests need on a fresh Debian 12 machine
# (as root, idempotent): systemd-nspawn and debootstrap, and a cached minimal
# bookworm root file system with systemd and dbus that the tests boot with
# systemd-nspawn. The tests find the tarball through ALPHA_NSPAWN_ROOTFS
# (default /var/cache/alpha/nspawn-bookworm.tar). Nothing on the machine
# itself is started or reconfigured.
set -eu

out=${ALPHA_NSPAWN_ROOTFS:-/var/cache/alpha/nspawn-bookworm.tar}

need=""
command -v systemd-nspawn >/dev/null 2>&1 || need="$need systemd-container"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
if [ -n "$need" ]; then
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi

if [ -s "$out" ]; then
	echo "setup-systemd: $out already present"
	exit 0
fi

# The Debian mirror this machine already uses: one-line sources
# ("deb URL bookworm main") or deb822 ("URIs: URL"); the security archive
# does not carry the base suite.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
	awk '$1 == "deb" && $2 !~ /^\[/ { print $2 } $1 == "deb" && $2 ~ /^\[/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } } $1 == "URIs:" { print $2 }' |
	grep -v -e security -e '^cdrom' | head -n 1)
if [ -z "$mirror" ]; then
	echo "setup-systemd: no Debian mirror found in /etc/apt/sources.list*" >&2
	exit 1
fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/nspawn-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$work/rootfs" "$mirror"
# A machine id lets journald and D-Bus start cleanly; empty root password is
# never needed (the tests talk to the bus, not a login).
: >"$work/rootfs/etc/machine-id"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$out"
echo "setup-systemd: wrote $out"
