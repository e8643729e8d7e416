"""Shared fixtures: one tiny random UNet, exported once per test session (2 DDIM steps)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# --backend auto keeps its CPU variant timings per machine; the tests keep theirs apart
os.environ["DIIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="diip-cache-")

REPO = Path(__file__).resolve().parents[1]
TINY_STEPS = 2


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    from tiny_model import make_tiny_pipeline

    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipeline")


@pytest.fixture(scope="session")
def tiny_export(tiny_pipeline, tmp_path_factory) -> Path:
    """unet, unet_vjp, both fused chains and both iteration graphs of the tiny model,
    verified against autograd.  DIIP_TINY_EXPORT names a folder to keep it in between
    runs on a developer's machine (made there once, copied per session); CI makes it anew."""
    keep = os.environ.get("DIIP_TINY_EXPORT")
    if keep and (Path(keep) / "manifest.json").is_file():
        return copy_export(Path(keep), tmp_path_factory.mktemp("tiny_export") / "export")
    out = export_tiny(tiny_pipeline, tmp_path_factory.mktemp("tiny_export"))
    if keep:
        copy_export(out, Path(keep))
    return out


def export_tiny(pipeline: Path, out: Path, iterate: str = "both", **defaults) -> Path:
    """The tiny model's export as the tests use it (both gradients, both fused chains,
    verified), with ``iterate`` graphs and ``defaults`` over the tests' own."""
    from diip_deploy.export.pipeline import export_model

    export_model(
        str(pipeline),
        out,
        steps=TINY_STEPS,
        gradient="both",
        fused="both",
        iterate=iterate,
        verify=True,
        defaults={"lr": 0.02, "max_iters": 12, "k_min": 5, **defaults},
        log=lambda m: None,
    )
    return out


@pytest.fixture(scope="session")
def tiny_torch(tiny_pipeline):
    """(EpsModel, ChainSpec) of the tiny model, as the torch reference sees it."""
    from diip_deploy.export.loading import load_model
    from diip_deploy.export.reference import EpsModel
    from diip_deploy.export.trace import prepare_unet
    from diip_deploy.schedule import ChainSpec

    m = load_model(str(tiny_pipeline))
    return EpsModel(prepare_unet(m.unet), m.alphas_cumprod, m.prediction_type).eval(), ChainSpec.from_table(
        m.alphas_cumprod, TINY_STEPS
    )


def copy_export(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst
