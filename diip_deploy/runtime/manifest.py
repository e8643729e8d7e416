"""The manifest: what an export produced, and what the runtime is willing to trust.

Written by ``diip-export``; read here without torch.  The runtime refuses a manifest
whose schema it does not know, or any graph or engine whose sha256 differs from the
one recorded, before it hands a file to ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

from ..schedule import ChainSpec

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Restoration defaults when a manifest leaves them out (the model-dependent ones
# should come from the export: see diip-export --lr/--max-iters/--k-min).
FALLBACK_DEFAULTS: Dict[str, Any] = {
    "lr": 0.01, "optimizer": "adam", "gradient": "surrogate", "max_iters": 300,
    "stop": "auto", "eps": 1e-3, "slope_window": 5, "k_min": 100,
    "slope_min_iter": 0, "patience": 1, "slope_fit": "mean", "lap_window": 1, "restarts": 1,
}

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
        return int(self.data.get("tiling", {}).get("max_tile_pixels", 4 * self.tile_size ** 2))

    @property
    def defaults(self) -> Dict[str, Any]:
        return {**FALLBACK_DEFAULTS, **self.data.get("defaults", {})}

    @property
    def graphs(self) -> Dict[str, Dict[str, Any]]:
        return self.data.get("graphs", {})

    @property
    def engines(self) -> Dict[str, Dict[str, Any]]:
        return self.data.get("engines", {})

    def has_graph(self, name: str) -> bool:
        return name in self.graphs

    def graph_path(self, name: str) -> Path:
        """Path of a listed ONNX graph, after checking its sha256 (once per process)."""
        if name not in self.graphs:
            raise ManifestError(f"{self.root}: manifest lists no graph {name!r} (has: {', '.join(self.graphs) or 'none'})")
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
            raise ManifestError(f"{path}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}...; re-export")
        self._verified[rel] = path
        return path

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


# field -> (check, what it must be); every field the runtime reads, so a broken manifest
# fails here with its name, not later with a KeyError or a ZeroDivisionError
_FIELDS = {
    "model.channels": (lambda v: _is_int(v) and v in (1, 3), "1 or 3"),
    "model.size_multiple": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "chain.timesteps": (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(t) and 0 <= t for t in v),
                        "a non-empty list of integer timesteps"),
    "chain.alphas_cumprod": (lambda v: isinstance(v, list) and all(_is_num(a) and 0.0 < a < 1.0 for a in v),
                             "a list of numbers strictly between 0 and 1"),
    "chain.clamp": (lambda v: isinstance(v, bool), "true or false"),
    "graphs": (lambda v: isinstance(v, dict) and all(isinstance(g, dict) and isinstance(g.get("file"), str)
                                                     and isinstance(g.get("sha256"), str) for g in v.values()),
               "an object of {file, sha256} entries"),
}
_OPTIONAL = {
    "model.native_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tiling.tile_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tiling.max_tile_pixels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "engines": (lambda v: isinstance(v, dict) and all(isinstance(g, dict) and isinstance(g.get("file"), str)
                                                      and isinstance(g.get("sha256"), str) for g in v.values()),
                "an object of {file, sha256} entries"),
    "defaults.lr": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "defaults.optimizer": (lambda v: v in ("adam", "gd"), "adam or gd"),
    "defaults.gradient": (lambda v: v in ("exact", "surrogate"), "exact or surrogate"),
    "defaults.max_iters": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "defaults.stop": (lambda v: v in ("auto", "slope", "laplacian", "none", "paper-auto"),
                      "auto, slope, laplacian, none or paper-auto"),
    "defaults.eps": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "defaults.slope_window": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "defaults.k_min": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "defaults.slope_min_iter": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "defaults.patience": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "defaults.slope_fit": (lambda v: v in ("mean", "regression"), "mean or regression"),
    "defaults.lap_window": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "defaults.restarts": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "defaults.precision": (lambda v: v in ("fp32", "fp16"), "fp32 or fp16"),
    "defaults.loop": (lambda v: v in ("auto", "device", "host"), "auto, device or host"),
    "defaults.residual_guard": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in 0..1 (1: off)"),
}
_MISSING = object()


def _get(data: Dict[str, Any], dotted: str) -> Any:
    v: Any = data
    for part in dotted.split("."):
        if not isinstance(v, dict) or part not in v:
            return _MISSING
        v = v[part]
    return v


def validate(data: Dict[str, Any], path: Path) -> None:
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
    tile = _get(data, "tiling.tile_size")
    if tile is not _MISSING and tile % data["model"]["size_multiple"]:
        raise ManifestError(f"{path}: field 'tiling.tile_size' must be a multiple of model.size_multiple")


def load_manifest(model_dir: Path | str, verify_files: bool = True) -> Manifest:
    """Read a manifest and, by default, check the sha256 of every graph and engine it lists:
    a manifest that does not match its files is not trusted at all."""
    root = Path(model_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{root}: no {MANIFEST_NAME} (run diip-export first)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: unsupported manifest schema {data.get('schema') if isinstance(data, dict) else None!r} (expected {SCHEMA_VERSION})")
    validate(data, path)
    manifest = Manifest(root=root, data=data)
    if verify_files:
        for name in manifest.graphs:
            manifest.graph_path(name)
        for name in manifest.engines:
            manifest.engine_path(name)
    return manifest

def write_manifest(model_dir: Path, data: Dict[str, Any]) -> Path:
    """Atomic write, so a crash never leaves a manifest the runtime half-trusts."""
    path = Path(model_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path

def fused_graph_name(gradient: str) -> str:
    return f"chain_{gradient}"


def iterate_graph_name(gradient: str) -> str:
    """The graph of a whole iteration (chain, Adam, projection) for a gradient mode."""
    return f"iterate_{gradient}"

