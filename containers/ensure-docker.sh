#!/usr/bin/env bash
# Make a Docker daemon available to this (root) shell: install Debian's docker.io and debootstrap when they are
# missing, and start dockerd when none answers. What `.ci/run` calls before `make test-containers`; on a laptop
# with Docker running it does nothing.
set -euo pipefail
log_dir="${TMPDIR:-/tmp}"
mkdir -p "$log_dir"

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "ensure-docker: installing docker.io and debootstrap" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    echo "ensure-docker: starting dockerd (log: $log_dir/dockerd.log)" >&2
    nohup dockerd --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
        >"$log_dir/dockerd.log" 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && exit 0
        sleep 1
    done
    echo "ensure-docker: dockerd did not answer within 60 s; see $log_dir/dockerd.log" >&2
    tail -20 "$log_dir/dockerd.log" >&2
    exit 1
fi
