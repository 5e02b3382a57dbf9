#!/usr/bin/env bash
# Make sure a Terraform >= 1.5 binary is available for the cloud reconciler's
# tests (hub/cloud), on a fresh Debian 12 machine, as root. Idempotent.
#
# Debian 12 packages neither Terraform (BSL-licensed since 1.6) nor OpenTofu:
# `apt-cache search` finds only Go libraries around Terraform. Binaries cannot
# be downloaded from this environment either, so this script does not fetch
# one: it finds the binary the machine image carries (/usr/local/bin on this
# project's image), checks its version, and fails clearly when there is none.
#
# Terraform's CLI configuration: the Makefile points TF_CLI_CONFIG_FILE at
# .ci/terraformrc; a missing file makes Terraform print a warning that breaks
# terraform-exec's parsing (FIELD-NOTES), so make sure it exists. The
# reconciler itself writes its own and does not depend on this.
set -euo pipefail

need_major=1
need_minor=5
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# An empty CLI configuration, wherever a caller may point TF_CLI_CONFIG_FILE.
touch "$here/terraformrc"
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then
	mkdir -p "$(dirname "$TF_CLI_CONFIG_FILE")"
	touch "$TF_CLI_CONFIG_FILE"
fi
export TF_CLI_CONFIG_FILE="${TF_CLI_CONFIG_FILE:-$here/terraformrc}"

find_terraform() {
	local c
	for c in "${TERRAFORM:-}" "$(command -v terraform 2>/dev/null || true)" /usr/local/bin/terraform /usr/bin/terraform /opt/terraform/terraform; do
		if [ -n "$c" ] && [ -x "$c" ]; then
			echo "$c"
			return 0
		fi
	done
	return 1
}

# Only if nothing is installed, ask apt once: should Debian ever package it,
# this picks it up without changing the script.
if ! find_terraform >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || true
	for pkg in terraform opentofu; do
		if apt-cache show "$pkg" >/dev/null 2>&1; then
			apt-get install -y -qq "$pkg" || true
		fi
	done
	if ! find_terraform >/dev/null && command -v tofu >/dev/null 2>&1; then
		ln -sf "$(command -v tofu)" /usr/local/bin/terraform
	fi
fi

if ! tf="$(find_terraform)"; then
	cat >&2 <<-EOF
	setup-terraform: no Terraform binary found.
	  Looked at \$TERRAFORM, PATH, /usr/local/bin, /usr/bin and /opt/terraform.
	  Debian 12 does not package Terraform or OpenTofu, and this environment
	  cannot download binaries. Install terraform >= ${need_major}.${need_minor} at
	  /usr/local/bin/terraform (for example from your organisation's internal
	  mirror or the machine image) and run this script again.
	  Without it the hub/cloud tests skip locally and FAIL under CI=1.
	EOF
	exit 1
fi

version="$("$tf" version 2>/dev/null | sed -n '1s/^[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')"
major="${version%%.*}"
minor="${version#*.}"
minor="${minor%%.*}"
if [ -z "$version" ] || [ "$major" -lt "$need_major" ] || { [ "$major" -eq "$need_major" ] && [ "$minor" -lt "$need_minor" ]; }; then
	echo "setup-terraform: $tf is version '${version:-unknown}'; need ${need_major}.${need_minor} or newer" >&2
	exit 1
fi

# Tests find terraform on PATH; make sure a binary outside PATH is reachable.
if ! command -v terraform >/dev/null 2>&1; then
	ln -sf "$tf" /usr/local/bin/terraform
fi

# A smoke run with the built-in provider only (registries are unreachable).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf 'resource "terraform_data" "smoke" { input = "ok" }\noutput "v" { value = terraform_data.smoke.output }\n' >"$tmp/main.tf"
(
	cd "$tmp"
	"$tf" init -input=false -no-color >/dev/null
	"$tf" apply -input=false -auto-approve -no-color >/dev/null
	[ "$("$tf" output -raw v)" = ok ]
) || {
	echo "setup-terraform: $tf $version is installed but a terraform_data smoke apply failed" >&2
	exit 1
}
echo "setup-terraform: $tf $version ok (terraform_data smoke apply passed)"
