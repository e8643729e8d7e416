"""Reading a manifest, and deciding whether to trust it.

Torch-free.  Every field the runtime reads is checked here, with one line naming the
file and the field; every graph and engine is checked against its recorded sha256
before any backend sees it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from ..schedule import ChainSpec
from ..settings import RestoreSettings, SettingsClass, SettingsError, check_manifest_defaults
from .names import same_chain

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(Exception):
    """A manifest or a file it lists cannot be trusted; one line says why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Manifest:
    root: Path
    data: Dict[str, Any]
    settings_class: SettingsClass = RestoreSettings  # the options its defaults were validated against
    _verified: Dict[str, Path] = field(default_factory=dict)

    @property
    def chain_spec(self) -> ChainSpec:
        c = self.data["chain"]
        return ChainSpec(timesteps=tuple(c["timesteps"]), alphas=tuple(c["alphas_cumprod"]), clamp=bool(c["clamp"]))

    @property
    def channels(self) -> int:
        return int(self.data["model"]["channels"])

    @property
    def size_multiple(self) -> int:
        return int(self.data["model"]["size_multiple"])

    @property
    def tile_size(self) -> int:
        """The tile the model restores best at (its criteria were tuned there); default: native size."""
        t = self.data.get("tiling", {}).get("tile_size", self.data["model"].get("native_size", 64))
        return int(t)

    @property
    def max_tile_pixels(self) -> int:
        """The largest tile (or whole image) the model's attention is allowed to see at once."""
        return int(self.data.get("tiling", {}).get("max_tile_pixels", 4 * self.tile_size**2))

    @property
    def defaults(self) -> Dict[str, Any]:
        """The export's restoration defaults (RestoreSettings fills what they leave out)."""
        return dict(self.data.get("defaults", {}))

    def settings(self, **overrides: Any) -> Any:
        """The settings a run uses: the class's defaults, under the export's, under the
        user's ``overrides`` (None: not given)."""
        return self.settings_class.resolve(self.defaults, **overrides)

    def settings_notes(self, **overrides: Any) -> List[str]:
        """Where the export's defaults yielded to the user's ``overrides`` (see
        ``RestoreSettings.resolve_noted``): one line each, for the report."""
        return self.settings_class.resolve_noted(self.defaults, **overrides)[1]

    @property
    def graphs(self) -> Dict[str, Dict[str, Any]]:
        return self.data.get("graphs", {})

    @property
    def engines(self) -> Dict[str, Dict[str, Any]]:
        return self.data.get("engines", {})

    def has_graph(self, name: str) -> bool:
        return name in self.graphs

    def baked_clamp_gradient(self, name: str) -> str:
        """The gradient through the clamp that a fused or iteration graph was traced with
        (exports before it was recorded traced the mask)."""
        return str(self.graphs[name].get("clamp_gradient", "mask"))

    def graph_path(self, name: str) -> Path:
        """Path of a listed ONNX graph, after checking its sha256 (once per process)."""
        if name not in self.graphs:
            raise ManifestError(
                f"{self.root}: manifest lists no graph {name!r} (has: {', '.join(self.graphs) or 'none'})"
            )
        return self._checked(self.graphs[name]["file"], self.graphs[name]["sha256"])

    def engine_path(self, name: str) -> Path:
        if name not in self.engines:
            raise ManifestError(f"{self.root}: manifest lists no TensorRT engine {name!r}")
        return self._checked(self.engines[name]["file"], self.engines[name]["sha256"])

    def _checked(self, rel: str, expected: str) -> Path:
        if rel in self._verified:
            return self._verified[rel]
        path = self.root / rel
        if not path.is_file():
            raise ManifestError(f"{path}: listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ManifestError(
                f"{path}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}...; re-export"
            )
        self._verified[rel] = path
        return path


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_file_table(v: Any) -> bool:
    """An object of {file, sha256} entries (graphs, engines)."""
    entries = v.values() if isinstance(v, dict) else [None]
    return all(
        isinstance(g, dict) and isinstance(g.get("file"), str) and isinstance(g.get("sha256"), str) for g in entries
    )


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


# field -> (check, what it must be); every field the runtime reads, so a broken manifest
# fails here with its name, not later with a KeyError or a ZeroDivisionError
_FIELDS = {
    "model.channels": (lambda v: _is_int(v) and v in (1, 3), "1 or 3"),
    "model.size_multiple": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "chain.timesteps": (
        lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(t) and 0 <= t for t in v),
        "a non-empty list of integer timesteps",
    ),
    "chain.alphas_cumprod": (
        lambda v: isinstance(v, list) and all(_is_num(a) and 0.0 < a < 1.0 for a in v),
        "a list of numbers strictly between 0 and 1",
    ),
    "chain.clamp": (lambda v: isinstance(v, bool), "true or false"),
    "graphs": (_is_file_table, "an object of {file, sha256} entries"),
}
_OPTIONAL = {
    "model.native_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tiling.tile_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tiling.max_tile_pixels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "engines": (_is_file_table, "an object of {file, sha256} entries"),
    "variants": (
        lambda v: (
            isinstance(v, dict) and all(isinstance(r, dict) and isinstance(r.get("passed"), bool) for r in v.values())
        ),
        "an object of {passed: true|false, ...} entries",
    ),
}
_MISSING = object()


def _get(data: Dict[str, Any], dotted: str) -> Any:
    v: Any = data
    for part in dotted.split("."):
        if not isinstance(v, dict) or part not in v:
            return _MISSING
        v = v[part]
    return v


def validate(data: Dict[str, Any], path: Path, settings_class: SettingsClass = RestoreSettings) -> None:
    """Every field the runtime reads, checked; one line names the file and the field."""
    for section in ("model", "chain", "graphs"):
        if not isinstance(data.get(section), dict):
            raise ManifestError(f"{path}: missing section {section!r}")
    for fields, required in ((_FIELDS, True), (_OPTIONAL, False)):
        for name, (ok, what) in fields.items():
            v = _get(data, name)
            if v is _MISSING:
                if required:
                    raise ManifestError(f"{path}: missing field {name!r} ({what})")
                continue
            if not ok(v):
                raise ManifestError(f"{path}: field {name!r} must be {what}, got {json.dumps(v)[:60]}")
    if len(data["chain"]["timesteps"]) != len(data["chain"]["alphas_cumprod"]):
        raise ManifestError(f"{path}: chain timesteps and alphas_cumprod differ in length")
    try:
        check_manifest_defaults(data.get("defaults", {}), settings_class)
    except SettingsError as e:
        field_name = f"defaults.{e.name}" if e.name else "defaults"
        raise ManifestError(f"{path}: field {field_name!r}: {e}") from None
    tile = _get(data, "tiling.tile_size")
    if tile is not _MISSING and tile % data["model"]["size_multiple"]:
        raise ManifestError(f"{path}: field 'tiling.tile_size' must be a multiple of model.size_multiple")


def load_manifest(
    model_dir: Path | str, verify_files: bool = True, settings_class: SettingsClass = RestoreSettings
) -> Manifest:
    """Read a manifest and, by default, check the sha256 of every graph and engine it lists:
    a manifest that does not match its files is not trusted at all."""
    root = Path(model_dir)
    path = root / MANIFEST_NAME
    data = read_data(root)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: unsupported manifest schema {data.get('schema') if isinstance(data, dict) else None!r} "
            f"(expected {SCHEMA_VERSION})"
        )
    validate(data, path, settings_class)
    manifest = Manifest(root=root, data=data, settings_class=settings_class)
    if verify_files:
        for name in manifest.graphs:
            manifest.graph_path(name)
        for name in manifest.engines:
            manifest.engine_path(name)
    return manifest


def read_data(model_dir: Path | str) -> Dict[str, Any]:
    """A manifest's raw JSON, for an export step to edit (``load_manifest`` validates)."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{model_dir}: no {MANIFEST_NAME} (run diip-export first)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None


def baked_chain_matches(manifest: Manifest, name: str) -> bool:
    """Whether a graph with the chain inside was exported for the manifest's chain."""
    return same_chain(manifest.graphs[name].get("chain", {}), manifest.data["chain"])
