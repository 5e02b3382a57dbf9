#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test (hub/ui), driven over
# the DevTools protocol by chromedp. Debian's own package: no browser build
# is downloaded. Idempotent; as root on a fresh Debian 12 machine.
set -euo pipefail
if ! command -v chromium >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version
