#!/usr/bin/env bash
# The CPU twin's base image, made locally (no registry needed): Ubuntu 24.04 "noble" minbase, the distribution of the
# CUDA image (nvidia/cuda:*-ubuntu24.04), so that the twin has the same Python 3.12 and the same apt packages.
#   usage: docker/make-base.sh [TAG]        (default tag: pgolf-base:noble; skipped when the tag exists)
# Needs: root, debootstrap, docker, and the Ubuntu archive (MIRROR, default http://archive.ubuntu.com/ubuntu).
# Trust: the Ubuntu archive key comes from ubuntu-keyring 2023.11.28.1, whose sha256 below was read from noble's
# main/binary-amd64/Packages index on 2026-11-23 (trust on first use); debootstrap then checks every package with it.
set -euo pipefail
TAG=${1:-pgolf-base:noble}
MIRROR=${MIRROR:-http://archive.ubuntu.com/ubuntu}
KEYRING_DEB=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
KEYRING_SHA256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8

if docker image inspect "$TAG" > /dev/null 2>&1; then
  echo "make-base: $TAG exists"
  exit 0
fi
work=$(mktemp -d /tmp/pgolf-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
curl -fsSL -o "$work/keyring.deb" "$MIRROR/$KEYRING_DEB"
echo "$KEYRING_SHA256  $work/keyring.deb" | sha256sum -c -
dpkg-deb -x "$work/keyring.deb" "$work/keyring"
# bookworm's debootstrap predates noble: its jammy script (the common Ubuntu one) bootstraps noble as well.
debootstrap --variant=minbase --arch=amd64 --components=main,universe \
  --keyring="$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
  noble "$work/root" "$MIRROR" /usr/share/debootstrap/scripts/jammy
cat > "$work/root/etc/apt/sources.list" << EOF
deb $MIRROR noble main universe
deb $MIRROR noble-updates main universe
deb $MIRROR noble-security main universe
EOF
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" -c . | docker import - "$TAG"
echo "make-base: imported $TAG"
