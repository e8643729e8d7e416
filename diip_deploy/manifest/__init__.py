"""The manifest: what an export produced, and what the runtime is willing to trust.

The one package both sides use for it: the export builds, edits and writes a manifest
here (graph entries and their names, the chain's identity, verification records, the
fp16 variants, engines, tuned defaults) and the runtime reads and validates it here,
without torch.  The runtime refuses a manifest whose schema it does not know, or any
graph or engine whose sha256 differs from the one recorded, before it hands a file to
ONNX Runtime or TensorRT.  docs/export.md describes the contract.
"""

from .names import (
    BAKED_PREFIXES,
    FP16_SUFFIX,
    chain_record,
    fp16_name,
    fused_graph_name,
    iterate_graph_name,
    same_chain,
)
from .reading import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    ManifestError,
    baked_chain_matches,
    load_manifest,
    read_data,
    sha256_file,
    validate,
)
from .writing import (
    add_graphs,
    graph_entry,
    new_manifest,
    remove_graphs,
    set_defaults,
    set_engines,
    set_fp16,
    write_manifest,
)

__all__ = [
    "BAKED_PREFIXES",
    "FP16_SUFFIX",
    "chain_record",
    "fp16_name",
    "fused_graph_name",
    "iterate_graph_name",
    "same_chain",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Manifest",
    "ManifestError",
    "baked_chain_matches",
    "load_manifest",
    "read_data",
    "sha256_file",
    "validate",
    "add_graphs",
    "graph_entry",
    "new_manifest",
    "remove_graphs",
    "set_defaults",
    "set_engines",
    "set_fp16",
    "write_manifest",
]
