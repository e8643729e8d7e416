"""The torch-free DIIP runtime: numpy plus ONNX Runtime or TensorRT.

Importing this package must never import torch (a test guards it).
"""

from .chain import GraphChain, chain_backward, chain_forward
from .loop import NonFiniteError, RestoreConfig, RestoreResult, restore
from .manifest import Manifest, ManifestError, load_manifest
from .select import open_chain, select_backend

__all__ = ["GraphChain", "chain_backward", "chain_forward", "NonFiniteError", "RestoreConfig", "RestoreResult",
           "restore", "Manifest", "ManifestError", "load_manifest", "open_chain", "select_backend"]
