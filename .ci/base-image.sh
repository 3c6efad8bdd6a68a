#!/usr/bin/env bash
# Build a stand-in for python:3.12-slim, for machines that cannot reach Docker Hub:
# Debian bookworm (minbase) with python3, and a venv at /usr/local so that `python` and
# `pip` are where the official image has them. Usage: .ci/base-image.sh [NAME]
set -euo pipefail
name=${1:-frameqc-base:bookworm}
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already built"
  exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" >/dev/null  # debootstrap's own default mirror
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" python3 -m venv /usr/local
chroot "$root" /usr/local/bin/python -c "import ensurepip, venv" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$name"
echo "built base image $name"
