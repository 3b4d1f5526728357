#!/usr/bin/env bash
# Installs what the image tests need: a Docker engine and client, and debootstrap for the registry-free
# stand-in base images. Idempotent: installs only what is missing. Needs root (CI runs as root).
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)

if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-docker.sh: run as root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Sorted and deduplicated: docker.io may be listed twice.
    mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

# The tests start their own private dockerd; nothing is started here.
echo "install-docker.sh: $(command -v dockerd) $(command -v debootstrap)"
