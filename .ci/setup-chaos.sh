#!/bin/sh
# Prepares a fresh Debian 12 machine (as root) for the chaos suite and the
# benchmarks: ip and tc for the network-namespace scenarios, the netem
# qdisc module where the kernel ships it, and ansible-core for the
# reconcile comparison in BENCHMARKS.md. Idempotent.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends iproute2 ansible-core
# TestSlowLinkNetem needs sch_netem; some VM kernels (this project's
# development VM among them) are built without it, and the test then says so.
modprobe sch_netem 2>/dev/null || echo "setup-chaos: kernel module sch_netem not available; TestSlowLinkNetem will report it"
