#!/usr/bin/env bash
# Install the Debian packages of the throwaway SLURM cluster (scripts/slurm/start.sh) when missing.
# Needs root and apt-get. Package services are NOT started: a temporary policy-rc.d denies it,
# because start.sh runs its own daemons under a temp dir. Usage: install.sh
set -euo pipefail

PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && { echo "install.sh: all present ($PACKAGES)"; exit 0; }

command -v apt-get >/dev/null || { echo "install.sh: apt-get not found (not a Debian-like system)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root to install:$missing" >&2; exit 2; }

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod +x "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q $missing
echo "install.sh: installed$missing"
