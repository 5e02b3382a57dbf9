#!/bin/sh
# Install what the containers driver and its tests need on a fresh Debian 12
# machine (as root, idempotent): podman 4.3 with runc and conmon, catatonit
# (the init the driver runs as PID 1 of every container; podman only
# recommends it), and a static busybox the tests turn into a local image
# (there is no registry).
#
# Nothing machine-wide is reconfigured: the tests start their own
# `podman system service` with a private containers.conf and storage. For
# an agent on such a machine, /etc/alpha/podman/containers.conf holds the
# settings that work here (runc, since crun fails on hybrid cgroups;
# cgroupfs; file events; ulimits below the VM's hard limits); start the API
# with CONTAINERS_CONF=/etc/alpha/podman/containers.conf podman system service.
set -eu

need=""
for c in podman:podman runc:runc conmon:conmon busybox:busybox-static; do
	command -v "${c%%:*}" >/dev/null 2>&1 || need="$need ${c#*:}"
done
[ -x /usr/libexec/podman/catatonit ] || need="$need catatonit"
# busybox may exist as the dynamic build; the image needs the static one.
if command -v busybox >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
	need="$need busybox-static"
fi
if [ -n "$need" ]; then
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi

mkdir -p /etc/alpha/podman
cat >/etc/alpha/podman/containers.conf.new <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mv /etc/alpha/podman/containers.conf.new /etc/alpha/podman/containers.conf
echo "setup-podman: podman $(podman --version | awk '{print $3}'), runc, conmon, catatonit, busybox-static ready"
