"""The CelebA-HQ-sized UNet for bench/gpu.py (issue: GPU runtime): google/ddpm-celebahq-256's
layout (114M parameters) with random weights, exported as diip-export would export the real
one (S = 10, surrogate, the iteration graph and its fp16 twin, fp16 copies), for timing
only: fp16 graphs are listed even where random weights miss fp16's tolerances.

    python bench/celeba.py make --out cache/celeba                 # here: needs diffusers (10 minutes)
    python bench/celeba.py pack cache/celeba cache/celeba.tar.gz   # weights zeroed: 5.4 MB to carry
    python bench/celeba.py unpack cache/celeba.tar.gz /tmp/celeba  # on the GPU machine: random weights back
    python bench/gpu.py --export /tmp/celeba/export --torch /tmp/celeba/unet.ts --sizes 256 --photo '' ...

A 456 MB graph cannot travel to the GPU machine (64 MiB a call), and that machine has no
diffusers to build the model.  So ``pack`` zeroes every weight tensor (1,024 values or more;
norm scales, biases and the graph's small constants stay) and the archive compresses to
almost nothing; ``unpack`` fills them with seeded N(0, 0.02) draws and rewrites the
manifest's hashes, so the runtime's checks hold.  GPU kernels take as long on any values,
so the timings are the real model's; its outputs mean nothing (random weights make the
chain chaotic, so bench/gpu.py's parity row is only meaningful for a trained model).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIN_WEIGHT = 1024  # tensors this large are weights; smaller ones are kept as exported

CELEBA_HQ_256 = dict(  # google/ddpm-celebahq-256's unet/config.json
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
    norm_eps=1e-6,
    downsample_padding=0,
    freq_shift=1,
    flip_sin_to_cos=False,
)


def make(out: Path, seed: int = 0) -> None:
    import click
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from diip_deploy.export.fp16 import add_fp16_graphs
    from diip_deploy.export.pipeline import export_model

    torch.manual_seed(seed)
    unet = UNet2DModel(**CELEBA_HQ_256)
    print(f"{sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M parameters", file=sys.stderr)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(str(out / "pipeline"), safe_serialization=True)
    try:
        export_model(
            str(out / "pipeline"),
            out / "export",
            steps=10,
            gradient="surrogate",
            iterate="surrogate",
            iterate_fp16=True,
            log=lambda m: print(m, file=sys.stderr),
        )
    except click.ClickException as e:  # random weights may miss fp16's tolerances; anything else may not
        from diip_deploy.manifest import read_data

        verification = read_data(out / "export")["verification"]
        if any(not v["passed"] for n, v in verification.items() if not n.endswith("_fp16")):
            raise
        print(f"kept for timing: {e.message}", file=sys.stderr)
    # random weights are chaotic enough to miss fp16's tolerance; listed anyway, marked, for timing
    add_fp16_graphs(out / "export", log=lambda m: print(m, file=sys.stderr), enforce=False)
    sys.path.insert(0, str(REPO / "bench"))
    from gpu import save_torchscript

    save_torchscript(out / "pipeline", out / "unet.ts", size=64)


def _onnx_weights(path: Path, fill) -> None:
    """Rewrite every weight initializer of one ONNX file with ``fill(name, shape, dtype)``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.size >= MIN_WEIGHT and arr.dtype in (np.float32, np.float16):
            init.CopyFrom(numpy_helper.from_array(fill(init.name, arr.shape, arr.dtype), init.name))
    onnx.save(model, str(path))


def _torch_weights(path: Path, fill) -> None:
    import torch

    module = torch.jit.load(str(path))
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if p.numel() >= MIN_WEIGHT and p.dtype == torch.float32:
                p.copy_(torch.from_numpy(fill(name, tuple(p.shape), np.float32)))
    torch.jit.save(module, str(path))


def _refill(root: Path, fill) -> None:
    from diip_deploy.manifest import read_data, sha256_file, write_manifest

    export = root / "export"
    man = read_data(export)
    for entry in man["graphs"].values():
        _onnx_weights(export / entry["file"], fill)
        entry["sha256"] = sha256_file(export / entry["file"])
    write_manifest(export, man)
    if (root / "unet.ts").exists():
        _torch_weights(root / "unet.ts", fill)


def pack(root: Path, archive: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "celeba"
        (staged / "export").mkdir(parents=True)
        for f in (root / "export").iterdir():
            if f.suffix in (".onnx", ".json"):
                (staged / "export" / f.name).write_bytes(f.read_bytes())
        if (root / "unet.ts").exists():
            (staged / "unet.ts").write_bytes((root / "unet.ts").read_bytes())
        _refill(staged, lambda name, shape, dtype: np.zeros(shape, dtype))
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staged, arcname="celeba")
    print(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)


def unpack(archive: Path, dest: Path, seed: int = 0) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest.parent, filter="data")
    extracted = dest.parent / "celeba"
    if extracted != dest:
        extracted.rename(dest)
    rng = np.random.default_rng(seed)
    _refill(dest, lambda name, shape, dtype: (rng.standard_normal(shape) * 0.02).astype(dtype))
    print(f"unpacked {dest} with random weights", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("pack")
    p.add_argument("root", type=Path)
    p.add_argument("archive", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("archive", type=Path)
    u.add_argument("dest", type=Path)
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.out)
    elif a.cmd == "pack":
        pack(a.root, a.archive)
    else:
        unpack(a.archive, a.dest)


if __name__ == "__main__":
    main()
