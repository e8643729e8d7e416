"""The torch-free DIIP runtime: numpy plus ONNX Runtime or TensorRT.

Importing this package must never import torch (a test guards it).  Its rooms:
``optimise/`` (the chain, both loops, Adam, the stopping rules, the guard, restarts),
``images/`` (decoding, tiles, layout and assembly, outputs), ``backends/`` (the runners
and the choice between them) and ``commands/`` (``diip-run``, its jobs, Ray); beside
them ``restorer.py`` (one model and backend restoring images), ``report.py`` and
``units.py``.
"""

from ..manifest import Manifest, ManifestError, load_manifest
from ..settings import RestoreSettings
from .backends.select import open_chain, select_backend
from .optimise.chain import GraphChain, chain_backward, chain_forward
from .optimise.loop import restore
from .optimise.samples import NonFiniteError, RestoreResult

__all__ = [
    "GraphChain",
    "chain_backward",
    "chain_forward",
    "NonFiniteError",
    "RestoreSettings",
    "RestoreResult",
    "restore",
    "Manifest",
    "ManifestError",
    "load_manifest",
    "open_chain",
    "select_backend",
]
