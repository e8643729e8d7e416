"""Building and editing a manifest on the export side, and writing it atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from ..schedule import ChainSpec
from ..settings import RestoreSettings, SettingsClass, check_manifest_defaults
from .names import BAKED_PREFIXES, FP16_SUFFIX, chain_record
from .reading import MANIFEST_NAME, SCHEMA_VERSION, sha256_file


def write_manifest(model_dir: Path, data: Dict[str, Any]) -> Path:
    """Atomic write, so a crash never leaves a manifest the runtime half-trusts."""
    path = Path(model_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


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
