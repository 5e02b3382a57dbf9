#!/bin/sh
# install.sh puts Alpha on a node: the binary, the systemd units, the role's
# configuration and its credentials. It is idempotent: run it again with a
# new binary to upgrade; a configuration file already in place is kept.
#
#   install.sh --role hub|leaf|agent|site [--binary bin/alpha] [--args "FLAGS"]
#              [--bundle DIR] [--operator-dir DIR] [--tls-dir DIR]
#              [--destdir DIR] [--no-start]
#
# --bundle DIR        site bundle from `alpha site add` -> /etc/alpha/bundle
# --operator-dir DIR  operator directory (hub only)      -> /etc/alpha/operator
#                     (its public part and the secrets the hub uses at run time)
# --tls-dir DIR       CA, certificates and keys (PEM)     -> /etc/alpha/tls
# --args "FLAGS"      ALPHA_ARGS written to /etc/alpha/ROLE.env when it does not exist yet
# --destdir DIR       install under DIR (packaging, tests); implies --no-start
set -eu

role="" binary="bin/alpha" args="" bundle="" operator="" tlsdir="" destdir="" start=1
while [ $# -gt 0 ]; do
	case "$1" in
	--role) role="$2"; shift 2 ;;
	--binary) binary="$2"; shift 2 ;;
	--args) args="$2"; shift 2 ;;
	--bundle) bundle="$2"; shift 2 ;;
	--operator-dir) operator="$2"; shift 2 ;;
	--tls-dir) tlsdir="$2"; shift 2 ;;
	--destdir) destdir="$2"; start=0; shift 2 ;;
	--no-start) start=0; shift ;;
	-h|--help) sed -n '2,15p' "$0"; exit 0 ;;
	*) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case "$role" in
hub|leaf|agent|site) ;;
*) echo "install.sh: --role must be hub, leaf, agent or site (got '$role')" >&2; exit 2 ;;
esac
[ -f "$binary" ] || { echo "install.sh: --binary $binary: no such file (make build)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
etc="$destdir/etc/alpha"
# Whether anything changed (a restart is due); a file, because mirror's
# loops run in subshells.
flag=$(mktemp)
trap 'rm -f "$flag"' EXIT

# put SRC DST MODE: replace DST atomically when its content or mode differs.
put() {
	if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "$3" ]; then
		echo "unchanged $2"
		return
	fi
	verb=updated
	[ -e "$2" ] || verb=created
	mkdir -p "$(dirname "$2")"
	tmp="$2.tmp.$$"
	# Created owner-only: a secret is never readable by others, not even
	# between the copy and the chmod.
	(umask 077 && cp "$1" "$tmp")
	chmod "$3" "$tmp"
	mv -f "$tmp" "$2"
	echo "$verb $2"
	echo 1 >"$flag"
}

# secret FILE: whether FILE holds private material, by content first (a
# seed or key under any name, say notes.txt, is still one): an nkey seed
# (S + role letter + 56 base32 characters, alone or in a .creds file), a PEM
# private key; then by the names Alpha gives its secrets.
secret() {
	grep -Eq -e '-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----' -e 'NKEY SEED-----' \
		-e '(^|[^A-Z2-7])S[OAUNCXP][A-Z2-7]{56}([^A-Z2-7]|$)' "$1" && return 0
	case "$1" in
	*.nk | *.creds | *.secret | *key*.pem | *.key) return 0 ;;
	esac
	return 1
}

# hub_secret REL: whether the hub reads the operator directory's secret REL
# at run time: the tenants' admin creds (bootstrap, cloud reconciler,
# metrics), the cloud outputs signing seed and the cluster's route secret.
# Not creds/sys.creds: only `site revoke` and `tenant-add` push account
# changes, from the operator's machine, which keeps it.
hub_secret() {
	case "$1" in
	creds/*-admin.creds | creds/hub-outputs.nk | creds/cluster.secret) return 0 ;;
	esac
	return 1
}

# all_secrets REL: a bundle's or TLS directory's secrets are all used.
all_secrets() { return 0; }

# mirror SRC DST USES [PRUNE...]: DST holds exactly SRC's files, without
# the top-level directories named PRUNE and without the secrets the
# function USES refuses (0700 dir, secrets 0600, public files 0644).
mirror() {
	[ -d "$1" ] || { echo "install.sh: $1: not a directory" >&2; exit 2; }
	src="$1" dst="$2" uses="$3"
	shift 3
	prune=""
	for p in "$@"; do
		prune="$prune -path ./$p -prune -o"
	done
	found=$(mktemp) list=$(mktemp)
	# shellcheck disable=SC2086 # prune is a list of find operators
	(cd "$src" && find . $prune -type f -print | sed 's|^\./||') >"$found"
	mkdir -p "$dst"
	chmod 0700 "$dst"
	while read -r f; do
		mode=644
		if secret "$src/$f"; then
			if ! "$uses" "$f"; then
				echo "skipped $src/$f: a secret alpha-$role does not use"
				continue
			fi
			mode=600
		fi
		echo "$f" >>"$list"
		put "$src/$f" "$dst/$f" "$mode"
	done <"$found"
	(cd "$dst" && find . -type f | sed 's|^\./||') | while read -r f; do
		if ! grep -qxF "$f" "$list"; then
			rm -f "$dst/$f"
			echo "removed $dst/$f"
		fi
	done
	rm -f "$found" "$list"
}

put "$binary" "$destdir/usr/local/bin/alpha" 755
for unit in "$here"/systemd/*.service; do
	put "$unit" "$destdir/etc/systemd/system/$(basename "$unit")" 644
done
mkdir -p "$etc" "$destdir/var/lib/alpha"
chmod 0755 "$etc"
chmod 0700 "$destdir/var/lib/alpha"
[ -n "$bundle" ] && mirror "$bundle" "$etc/bundle" all_secrets
# The hub gets the operator directory's public part and the secrets it
# uses at run time: never the keys (the root of trust), the system user,
# nor the sites' bundles.
[ -n "$operator" ] && mirror "$operator" "$etc/operator" hub_secret keys bundles sites
[ -n "$tlsdir" ] && mirror "$tlsdir" "$etc/tls" all_secrets

env="$etc/$role.env"
if [ -e "$env" ]; then
	echo "kept $env"
else
	if [ -z "$args" ]; then
		case "$role" in
		hub) args="--store /var/lib/alpha/hub --operator-dir /etc/alpha/operator --tls-cert /etc/alpha/tls/hub.pem --tls-key /etc/alpha/tls/hub-key.pem" ;;
		leaf) args="--store /var/lib/alpha/leaf --bundle /etc/alpha/bundle --hub nats-leaf://HUB:7422 --tls-ca /etc/alpha/tls/ca.pem" ;;
		agent) args="--site SITE --node NODE --state /var/lib/alpha/agent --creds /etc/alpha/bundle/agent-NODE.nk --trusted-keys /etc/alpha/bundle/trusted-keys" ;;
		site) args="--store /var/lib/alpha/leaf --bundle /etc/alpha/bundle --node NODE --hub nats-leaf://HUB:7422 --tls-ca /etc/alpha/tls/ca.pem" ;;
		esac
	fi
	tmp="$env.tmp.$$"
	printf '# Flags of `alpha %s` (alpha %s -h). Kept across upgrades.\nALPHA_ARGS=%s\n' "$role" "$role" "$args" >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$env"
	echo "created $env"
	echo 1 >"$flag"
fi

if grep -q 'HUB\|NODE\|SITE' "$env"; then
	echo "install.sh: edit the placeholders (HUB, SITE, NODE) in $env, then: systemctl restart alpha-$role" >&2
	start=0
fi
if [ "$start" = 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable "alpha-$role.service"
	if [ -s "$flag" ]; then
		systemctl restart "alpha-$role.service"
		echo "restarted alpha-$role"
	else
		systemctl start "alpha-$role.service"
	fi
fi
