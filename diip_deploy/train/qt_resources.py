"""Files inside a Qt binary resource bundle (``.rcc``), read without Qt.

GCompris (Debian's gcompris-qt-data) ships its activities' photographs only inside such
bundles; training reads them from there rather than from an unpacked copy.  The layout
is Qt's (``rcc --binary``, format versions 1 to 3): a ``qres`` header with the offsets of
a tree of fixed-size entries, a table of UTF-16 names and a data area of length-prefixed
blobs, zlib-compressed where the entry's flag says so (as ``qCompress`` writes them: a
4-byte big-endian length before the zlib stream).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, Union

COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 1, 2, 4


class ResourceError(ValueError):
    """A file that is not a Qt resource bundle this reader understands."""


def read_rcc(path: Union[str, Path]) -> Dict[str, bytes]:
    """Every file in the bundle at ``path``, keyed by its path inside it ('/a/b.webp')."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres" or len(blob) < 20:
        raise ResourceError(f"{path}: not a Qt resource bundle (no 'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise ResourceError(f"{path}: Qt resource format {version}, this reader knows 1 to 3")
    entry_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        start = names + offset + 6  # after the length and a 4-byte hash
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: Dict[str, bytes] = {}

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise ResourceError(f"{path}: resource tree deeper than 64 levels (corrupt?)")
        at = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[at : at + 6])
        name = name_at(name_offset) if index else ""
        if flags & DIRECTORY:
            count, first = struct.unpack(">II", blob[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if index else "/", depth + 1)
            return
        (data_offset,) = struct.unpack(">I", blob[at + 10 : at + 14])
        (size,) = struct.unpack(">I", blob[data + data_offset : data + data_offset + 4])
        payload = blob[data + data_offset + 4 : data + data_offset + 4 + size]
        if flags & COMPRESSED_ZSTD:
            raise ResourceError(f"{path}: {prefix}{name} is zstd-compressed, which this reader does not decode")
        if flags & COMPRESSED:
            payload = zlib.decompress(payload[4:])
        files[prefix + name] = payload

    walk(0, "", 0)
    return files
