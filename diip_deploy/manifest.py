"""The manifest: what an export produced, and what the runtime is willing to trust.

The one module both sides use for it: the export builds, edits and writes a manifest
here (graph entries and their names, the chain's identity, verification records, the
fp16 variants, engines, tuned defaults) and the runtime reads and validates it here,
without torch.  The runtime refuses a manifest whose schema it does not know, or any
graph or engine whose sha256 differs from the one recorded, before it hands a file to
ONNX Runtime or TensorRT.  docs/export.md describes the contract.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np

from .schedule import ChainSpec
from .settings import RestoreSettings, SettingsClass, SettingsError, check_manifest_defaults

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
    "graphs": (
        lambda v: (
            isinstance(v, dict)
            and all(
                isinstance(g, dict) and isinstance(g.get("file"), str) and isinstance(g.get("sha256"), str)
                for g in v.values()
            )
        ),
        "an object of {file, sha256} entries",
    ),
}
_OPTIONAL = {
    "model.native_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tiling.tile_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "tiling.max_tile_pixels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "engines": (
        lambda v: (
            isinstance(v, dict)
            and all(
                isinstance(g, dict) and isinstance(g.get("file"), str) and isinstance(g.get("sha256"), str)
                for g in v.values()
            )
        ),
        "an object of {file, sha256} entries",
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
            f"{path}: unsupported manifest schema {data.get('schema') if isinstance(data, dict) else None!r} (expected {SCHEMA_VERSION})"
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


def write_manifest(model_dir: Path, data: Dict[str, Any]) -> Path:
    """Atomic write, so a crash never leaves a manifest the runtime half-trusts."""
    path = Path(model_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# Graph names: the per-step graphs are "unet" and "unet_vjp"; a graph with the chain baked
# in is chain_<gradient> (one loss-and-gradient call) or iterate_<gradient> (a whole
# iteration with Adam); an fp16 copy of any of them is <name>_fp16.
FP16_SUFFIX = "_fp16"
BAKED_PREFIXES = ("chain_", "iterate_")


def fused_graph_name(gradient: str) -> str:
    return f"chain_{gradient}"


def iterate_graph_name(gradient: str) -> str:
    """The graph of a whole iteration (chain, Adam, projection) for a gradient mode."""
    return f"iterate_{gradient}"


def fp16_name(graph: str) -> str:
    return graph + FP16_SUFFIX


def chain_record(spec: ChainSpec) -> Dict[str, Any]:
    """The chain's identity as a manifest records it (top level, and in each baked graph)."""
    return {"timesteps": list(spec.timesteps), "alphas_cumprod": list(spec.alphas), "clamp": bool(spec.clamp)}


def same_chain(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The one rule for "the same chain": equal timesteps and clamp, alphas equal to 1e-12."""
    ta, tb = list(a.get("timesteps", [])), list(b.get("timesteps", []))
    aa, ab = list(a.get("alphas_cumprod", [])), list(b.get("alphas_cumprod", []))
    return (
        ta == tb
        and a.get("clamp") == b.get("clamp")
        and len(aa) == len(ab)
        and bool(np.allclose(aa, ab, rtol=0, atol=1e-12))
    )


def graph_entry(root: Path, name: str, spec: ChainSpec, **fields: Any) -> Dict[str, Any]:
    """A graph's manifest entry: ``fields`` (its file, inputs, outputs) with its sha256, the
    chain it bakes in (chain_* and iterate_* graphs), and for an fp16 copy which it copies."""
    entry = {**fields, "sha256": sha256_file(Path(root) / fields["file"])}
    base = name.removesuffix(FP16_SUFFIX)
    if base.startswith(BAKED_PREFIXES):
        entry["chain"] = chain_record(spec)
    if name.endswith(FP16_SUFFIX):
        entry.update(precision="fp16", fp16_of=base)
    return entry


def new_manifest(
    model: Dict[str, Any],
    chain: Dict[str, Any],
    graphs: Dict[str, Any],
    tiling: Dict[str, Any],
    defaults: Dict[str, Any],
    tools: Dict[str, Any],
    verification: Optional[Dict[str, Any]],
    created: str,
) -> Dict[str, Any]:
    """A whole manifest, in the order its readers expect."""
    return {
        "schema": SCHEMA_VERSION,
        "created": created,
        "model": model,
        "chain": chain,
        "graphs": graphs,
        "tiling": tiling,
        "defaults": defaults,
        "tools": tools,
        "verification": verification if verification is not None else {"skipped": True},
    }


def add_graphs(data: Dict[str, Any], graphs: Dict[str, Any], verification: Optional[Dict[str, Any]] = None) -> None:
    """List more graphs (and their verification records) in a manifest being edited."""
    data["graphs"] = {**data.get("graphs", {}), **graphs}
    if verification:
        data["verification"] = {**data.get("verification", {}), **verification}


def remove_graphs(data: Dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        data.get("graphs", {}).pop(name, None)


def set_defaults(
    data: Dict[str, Any], defaults: Dict[str, Any], settings_class: SettingsClass = RestoreSettings
) -> None:
    """Tuned defaults into a manifest being edited, checked as the runtime will check them."""
    merged = {**data.get("defaults", {}), **defaults}
    check_manifest_defaults(merged, settings_class)
    data["defaults"] = merged


def set_engines(data: Dict[str, Any], engines: Dict[str, Any], checks: Dict[str, Any]) -> None:
    """TensorRT engines (one per graph) and the operator check they passed."""
    data["engines"] = engines
    data["tensorrt_check"] = checks


def set_fp16(data: Dict[str, Any], section: Dict[str, Any]) -> None:
    """The fp16 copies' verification: ops kept in fp32, tolerances, errors per gradient."""
    data["fp16"] = section


def baked_chain_matches(manifest: Manifest, name: str) -> bool:
    """Whether a graph with the chain inside was exported for the manifest's chain."""
    return same_chain(manifest.graphs[name].get("chain", {}), manifest.data["chain"])
