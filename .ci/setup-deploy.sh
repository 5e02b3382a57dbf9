#!/bin/sh
# Prepares what the accounts and deploy tests need on a fresh Debian 12
# machine: systemd-analyze (to verify the unit files) and openssl (used by
# the production walkthrough). Idempotent.
set -eu
if command -v systemd-analyze >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends systemd openssl
