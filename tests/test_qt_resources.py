"""The Qt resource-bundle reader that GCompris' photographs come out of: a bundle written
here in Qt's own layout (rcc formats 1 and 2: a raw and a qCompress'd file under folders) reads
back byte for byte, and what it cannot read is a clear error, not garbage."""

import io
import struct
import zlib

import pytest

from diip_deploy.train.photos import find_package_photos
from diip_deploy.train.qt_resources import COMPRESSED, COMPRESSED_ZSTD, DIRECTORY, ResourceError, read_rcc


def _rcc(files, version=2, file_flags=None):
    """A bundle as Qt's rcc writes it: ``files`` maps '/dir/name' to (bytes, compress)."""
    names, name_at = b"", {}

    def name(n):
        nonlocal names
        if n not in name_at:
            name_at[n] = len(names)
            names += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
        return name_at[n]

    tree = {}  # a nested dict of folders; leaves are (bytes, compress)
    for path, leaf in files.items():
        node = tree
        *folders, leaf_name = path.strip("/").split("/")
        for f in folders:
            node = node.setdefault(f, {})
        node[leaf_name] = leaf
    entries, data = [], b""
    size = 14 if version == 1 else 22

    def add_children(node):  # a folder's children side by side, then each subfolder's, as rcc lays them out
        first = len(entries)
        for key in sorted(node):
            entries.append([key, node[key]])
        for i, (_key, child) in enumerate(list(entries[first:])):
            if isinstance(child, dict):
                entries[first + i].append(add_children(child))
        return first

    entries.append(["", tree])
    root_children = add_children(tree)
    blob = b""
    for index, entry in enumerate(entries):
        key, child = entry[0], entry[1]
        n = name(key) if index else 0
        if isinstance(child, dict):
            first = root_children if index == 0 else entry[2]
            blob += struct.pack(">IHII", n, DIRECTORY, len(child), first)
        else:
            raw, compress = child
            payload = struct.pack(">I", len(raw)) + zlib.compress(raw) if compress else raw
            flags = (file_flags if file_flags is not None else COMPRESSED) if compress else 0
            blob += struct.pack(">IHHHI", n, flags, 0, 0, len(data))
            data += struct.pack(">I", len(payload)) + payload
        if version > 1:
            blob += b"\0" * 8
        assert len(blob) == (index + 1) * size
    header = 20
    tree_at, data_at = header, header + len(blob)
    names_at = data_at + len(data)
    return b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at) + blob + data + names


@pytest.mark.parametrize("version", [1, 2])
def test_reads_back_raw_and_compressed_files_under_folders(tmp_path, version):
    photo = bytes(range(256)) * 40
    files = {"/gcompris/a/photo.webp": (photo, False), "/gcompris/a/b/notes.json": (b'{"x": 1}' * 50, True)}
    bundle = tmp_path / "x.rcc"
    bundle.write_bytes(_rcc(files, version))
    assert read_rcc(bundle) == {path: raw for path, (raw, _) in files.items()}


def test_what_it_cannot_read_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.rcc"
    bad.write_bytes(b"PK\x03\x04 not a bundle at all")
    with pytest.raises(ResourceError, match="no 'qres' header"):
        read_rcc(bad)
    future = tmp_path / "v9.rcc"
    future.write_bytes(b"qres" + struct.pack(">IIII", 9, 20, 20, 20))
    with pytest.raises(ResourceError, match="format 9"):
        read_rcc(future)
    zstd = tmp_path / "zstd.rcc"
    zstd.write_bytes(_rcc({"/a.txt": (b"hello", True)}, file_flags=COMPRESSED_ZSTD))
    with pytest.raises(ResourceError, match="zstd"):
        read_rcc(zstd)


@pytest.mark.skipif(find_package_photos("gcompris") is None, reason="models/fetch_photos.sh --more not run here")
def test_gcompris_photographs_load_at_half_size():
    """Every photograph the more set names is in its bundle once and decodes, at half size."""
    from PIL import Image

    from diip_deploy.train.photos import _GCOMPRIS, _gcompris_photos

    photos = _gcompris_photos()
    assert len(photos) == sum(len(names) for names in _GCOMPRIS.values()) >= 120
    folder = find_package_photos("gcompris")
    assert folder is not None
    raw = read_rcc(folder / "erase.rcc")
    full = Image.open(io.BytesIO(next(v for k, v in raw.items() if k.endswith("/toucan.webp"))))
    assert photos["gcompris/erase/toucan"].shape == (full.height // 2, full.width // 2, 3)
    assert all(0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.05 for a in photos.values())
