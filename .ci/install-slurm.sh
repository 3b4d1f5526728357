#!/usr/bin/env bash
# Installs the Debian Slurm packages the test suite's local cluster needs (tests/infra/slurm.py).
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-slurm: all of ${packages[*]} already installed"
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

echo "install-slurm: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The daemons are started per test session by tests/infra/slurm.py; the packages' own service
# units are not used (there is no init system in CI containers anyway).
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
