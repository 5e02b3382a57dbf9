#!/bin/sh
# Installs the OS tools the agent's OS drivers run and their tests need:
# nft (nftables), ip (iproute2), modprobe (kmod), sysctl (procps).
# Idempotent; run as root on Debian 12.
set -eu
need=""
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v modprobe >/dev/null 2>&1 || need="$need kmod"
command -v sysctl >/dev/null 2>&1 || need="$need procps"
if [ -n "$need" ]; then
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi
# The tests make network namespaces; check the kernel allows it.
ns="alpha-setup-$$"
ip netns add "$ns"
ip netns exec "$ns" nft list ruleset >/dev/null
ip netns delete "$ns"
echo "setup-os: nft, ip, modprobe, sysctl ready"
