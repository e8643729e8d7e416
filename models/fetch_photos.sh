#!/usr/bin/env bash
# Unpack the photos that Debian packages ship into cache/ (no install, no root needed for
# the unpacking). Training and the held-out evaluation set use them; see
# diip_deploy/train/photos.py and NOTICE.
#   models/fetch_photos.sh          opencv-doc's example photos (cache/opencv-doc)
#   models/fetch_photos.sh --wide   also plasma-workspace-wallpapers (cache/plasma-wallpapers),
#                                   the photographs that `diip-train --photo-set wide` adds
#   models/fetch_photos.sh --all    also tuxpaint-data and palapeli-data (cache/tuxpaint-data,
#                                   cache/palapeli-data), for `diip-train --photo-set all`
#   models/fetch_photos.sh --more   also gcompris-qt-data (cache/gcompris-qt-data, 44 MB), for
#                                   `diip-train --photo-set more`
set -euo pipefail
cd "$(dirname "$0")/.."

unpack() {  # unpack PACKAGE into DEST unless MARKER (a file inside it) is already there
    local package=$1 dest=$2 marker=$3
    [ -f "$dest/$marker" ] && { echo "$dest already there"; return 0; }
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "$package" >/dev/null)
    mkdir -p "$dest"
    dpkg-deb -x "$tmp"/"$package"_*.deb "$dest"
    rm -rf "$tmp"
    echo "unpacked $package into $dest"
}

unpack opencv-doc cache/opencv-doc usr/share/doc/opencv-doc/examples/data/baboon.jpg
case "${1:-}" in ""|--wide|--all|--more) ;; *) echo "usage: $0 [--wide|--all|--more]" >&2; exit 2;; esac
if [ "${1:-}" = "--wide" ] || [ "${1:-}" = "--all" ] || [ "${1:-}" = "--more" ]; then
    unpack plasma-workspace-wallpapers cache/plasma-wallpapers usr/share/wallpapers/Path/metadata.json
fi
if [ "${1:-}" = "--all" ] || [ "${1:-}" = "--more" ]; then
    unpack tuxpaint-data cache/tuxpaint-data usr/share/tuxpaint/templates/sheep.jpg
    unpack palapeli-data cache/palapeli-data usr/share/palapeli/collection/citrus-fruits.jpg
fi
if [ "${1:-}" = "--more" ]; then
    unpack gcompris-qt-data cache/gcompris-qt-data usr/share/gcompris-qt/rcc/erase.rcc
fi
