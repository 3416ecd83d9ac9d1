#!/usr/bin/env bash
# Print the base image to build the project image on: the requested one if it is present or can be pulled,
# otherwise an equivalent built here (Debian bookworm by debootstrap, with Debian's Python 3.11 and venv), for
# machines that reach Debian's package archive but no container registry.
# Usage: containers/base-image.sh [BASE_IMAGE]   (default python:3.11-slim-bookworm)
set -euo pipefail
requested="${1:-python:3.11-slim-bookworm}"
local_base="musicrec-base:bookworm-python3.11"
docker="${DOCKER:-docker}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if "$docker" image inspect "$requested" >/dev/null 2>&1 || "$docker" pull --quiet "$requested" >/dev/null 2>&1; then
    echo "$requested"
    exit 0
fi
if "$docker" image inspect "$local_base" >/dev/null 2>&1; then
    echo "$local_base"
    exit 0
fi
echo "base-image: cannot pull $requested; building $local_base with debootstrap from $mirror" >&2
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
rootfs="$(mktemp -d "${TMPDIR:-/tmp}/musicrec-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2
# What a slim image leaves out: package lists, caches, documentation.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | "$docker" import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --message "debian bookworm minbase + python3.11 (debootstrap)" - "$local_base" >&2
echo "$local_base"
