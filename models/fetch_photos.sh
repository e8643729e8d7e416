#!/usr/bin/env bash
# Unpack the example photos of Debian's opencv-doc package into cache/opencv-doc
# (no install, no root needed for the unpacking). Training and the held-out
# evaluation set use them; see diip_deploy/train/photos.py and NOTICE.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=cache/opencv-doc
[ -f "$dest/usr/share/doc/opencv-doc/examples/data/baboon.jpg" ] && { echo "$dest already there"; exit 0; }
tmp=$(mktemp -d)
(cd "$tmp" && apt-get download opencv-doc >/dev/null)
mkdir -p "$dest"
dpkg-deb -x "$tmp"/opencv-doc_*.deb "$dest"
rm -rf "$tmp"
echo "unpacked opencv-doc into $dest"
