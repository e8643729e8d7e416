"""Train the small pixel-space DDPM that ships as ``models/default`` (``diip-train``).

Reproducible from a seed: epsilon prediction, DDPM linear betas 1e-4..0.02 over 1000
steps, random multi-scale patches with horizontal flips from the packaged photos
(held-out photos excluded).  Checkpoints let a long CPU run resume after a stop.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np
import torch
from PIL import Image

from ..cli_common import OneLineErrors, parse_timesteps
from ..schedule import checked_timesteps, ddim_timesteps, linear_alphas_cumprod
from .checkpoints import keep, load_checkpoint, save_atomically
from .grow import deepen
from .photos import HELD_OUT, PHOTO_SETS, load_photos, split

DEFAULT_CHANNELS = (32, 64, 128)
CHECKPOINT = "train_state.ckpt"  # in a run's --work folder


def make_unet(
    channels: Sequence[int] = DEFAULT_CHANNELS,
    sample_size: int = 32,
    norm_groups: Optional[int] = None,
    layers_per_block: int = 1,
):
    """A fully convolutional UNet2DModel, attention only at the coarsest level."""
    from diffusers import UNet2DModel

    n = len(channels)
    norm_groups = norm_groups or min(16, channels[0] // 2)
    down = ["DownBlock2D"] * (n - 1) + ["AttnDownBlock2D"]
    up = ["AttnUpBlock2D"] + ["UpBlock2D"] * (n - 1)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=norm_groups,
        attention_head_dim=None,
    )


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        clip_sample=True,
    )


def build_pyramids(photos: Dict[str, np.ndarray], patch: int) -> List[np.ndarray]:
    """Each photo at scales 1, 1/2, 1/4, 1/8 (box filter), as long as it still holds a patch."""
    levels = []
    for img in photos.values():
        pil = Image.fromarray((img * 255).round().astype(np.uint8))
        w, h = pil.size
        for s in (1, 2, 4, 8):
            if min(w, h) // s < patch:
                break
            lv = pil if s == 1 else pil.resize((w // s, h // s), Image.Resampling.BOX)
            levels.append(np.asarray(lv, dtype=np.float32) / 127.5 - 1.0)
    return levels


def sample_patches(levels: List[np.ndarray], n: int, patch: int, rng: np.random.Generator) -> np.ndarray:
    """n random patch x patch crops with random horizontal flips, NCHW in [-1, 1]."""
    out = np.empty((n, 3, patch, patch), dtype=np.float32)
    for i in range(n):
        lv = levels[rng.integers(len(levels))]
        y = rng.integers(lv.shape[0] - patch + 1)
        x = rng.integers(lv.shape[1] - patch + 1)
        crop = lv[y : y + patch, x : x + patch]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = crop.transpose(2, 0, 1)
    return out


def save_pipeline(unet, out: Path) -> None:
    """Write a DDPMPipeline folder (model_index.json, unet/ safetensors, scheduler/)."""
    from diffusers import DDPMPipeline

    pipeline: Any = DDPMPipeline(unet=unet, scheduler=make_scheduler())
    pipeline.save_pretrained(str(out), safe_serialization=True)


def load_ema(work: Path) -> Tuple[Any, Dict]:
    """A ``--work`` folder's EMA UNet (eval mode) and its checkpoint's state, or those of
    one checkpoint file (a step ``--keep-every`` kept): how the benchmarks judge a run in
    progress."""
    state = torch.load(work if work.is_file() else work / CHECKPOINT, weights_only=False, map_location="cpu")
    settings = state["settings"]
    unet = make_unet(settings["channels"], settings["patch"], layers_per_block=settings.get("layers_per_block", 1))
    unet.load_state_dict(state["ema"])
    return unet.eval(), state


def focus_timesteps(steps: int, timesteps: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The timesteps at which an S-step DDIM chain's prediction matters (t=0 left out), or a
    chain's own ``timesteps`` (``diip-export --timesteps``), all of them kept: a chain that
    ends above t=0 calls the prior at each."""
    if timesteps is not None:
        try:
            return torch.tensor(checked_timesteps(timesteps), dtype=torch.long)
        except ValueError as e:
            raise SystemExit(f"--focus-timesteps: {e}") from None
    if not 2 <= steps <= 1000:
        raise SystemExit(f"--focus-steps must be 2 to 1000 (a DDIM chain with a step before t=0), got {steps}")
    return torch.tensor([t for t in ddim_timesteps(steps) if t > 0], dtype=torch.long)


def draw_timesteps(batch: int, focus_t: torch.Tensor, focus_fraction: float) -> torch.Tensor:
    """Uniform timesteps, a ``focus_fraction`` of them replaced by the chain's; uniform alone
    draws exactly what runs from before the option drew, so their checkpoints resume bit for bit."""
    t = torch.randint(0, 1000, (batch,))
    if focus_fraction > 0:
        pick = focus_t[torch.randint(0, len(focus_t), (batch,))]
        t = torch.where(torch.rand(batch) < focus_fraction, pick, t)
    return t


def train(
    out: Path,
    work: Path,
    steps: int,
    batch: int,
    patch: int,
    lr: float,
    seed: int,
    channels: Sequence[int],
    max_minutes: Optional[float],
    threads: int,
    ema_decay: float,
    checkpoint_every: int,
    opencv_doc: Optional[str],
    log=print,
    resume: bool = False,
    checkpoint_minutes: Optional[float] = None,
    photo_set: str = "default",
    init_from: Optional[Path] = None,
    device: str = "cpu",
    focus_steps: int = 5,
    focus_fraction: float = 0.0,
    focus_timesteps_list: Optional[Sequence[int]] = None,
    keep_every: Optional[int] = None,
    layers_per_block: int = 1,
) -> Dict:
    """Train for ``steps`` steps in all, resuming ``work``'s checkpoint when ``resume``.

    Checkpoints (model, EMA, optimiser, both RNGs, whose state is the data position, and
    the loss history) are written every ``checkpoint_every`` steps and every
    ``checkpoint_minutes``; a run killed at any moment resumes from the last one and, on
    the same device and thread count, continues bit for bit as if never stopped. Noise
    and timesteps are drawn on the CPU so a checkpoint moves between CPU and GPU.

    ``focus_fraction`` of each batch draws its timesteps from the ``focus_steps``-step DDIM
    chain's (all but its last, t=0, whose prediction the chain scales by ~0.01) instead of
    uniformly: DIIP only ever calls the prior there, so a small UNet can spend its capacity
    on those few noise levels. ``focus_timesteps_list`` names a chain's own timesteps instead
    of the ``focus_steps``-step leading spacing.

    ``layers_per_block``: the UNet's depth; ``init_from`` weights with fewer layers are
    deepened to it without changing what they compute (``grow.deepen``).

    ``keep_every``: the checkpoints of steps that are multiples of it are also kept under
    ``work/kept/`` (``checkpoints.keep``), for learning-curve points measured later.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    train_photos, _ = split(load_photos(opencv_doc, photo_set=photo_set))
    levels = build_pyramids(train_photos, patch)

    def shape(depth: int):
        return make_unet(channels, sample_size=patch, layers_per_block=depth)

    if init_from is None:
        unet = shape(layers_per_block)
    else:
        from diffusers import UNet2DModel

        trained = UNet2DModel.from_pretrained(str(init_from), subfolder="unet")
        unet = deepen(trained, layers_per_block, shape)
        grown = trained.config.layers_per_block != layers_per_block
        log(f"weights from {init_from}{', deepened' if grown else ''}, fresh optimiser")
    unet.to(device)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    acp = torch.tensor(linear_alphas_cumprod(), dtype=torch.float32)
    if focus_timesteps_list is not None and focus_fraction <= 0:
        raise SystemExit("--focus-timesteps needs --focus-fraction above 0")
    focus_t = (
        focus_timesteps(focus_steps, focus_timesteps_list) if focus_fraction > 0 else torch.zeros(0, dtype=torch.long)
    )
    losses: List[float] = []
    step, elapsed, cpu_before = 0, 0.0, 0.0  # cpu: this process's CPU seconds, which a pause does not count
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / CHECKPOINT
    settings = {"batch": batch, "patch": patch, "lr": lr, "seed": seed, "channels": list(channels)}
    if layers_per_block != 1:  # absent otherwise, so runs from before the option still resume
        settings["layers_per_block"] = layers_per_block
    settings.update({"photo_set": photo_set, "n_train_photos": len(train_photos)})
    if focus_fraction > 0:  # absent otherwise, so runs from before the option still resume
        settings.update({"focus_steps": focus_steps, "focus_fraction": focus_fraction})
    if focus_timesteps_list is not None:  # absent otherwise, so runs from before the option still resume
        settings["focus_timesteps"] = focus_t.tolist()
    if ckpt.exists() and not resume:
        raise SystemExit(f"{ckpt} exists: pass --resume to continue it, or choose another --work")
    if resume and ckpt.exists():
        state = load_checkpoint(ckpt, settings)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        losses, step, elapsed = state["losses"], state["step"], state["elapsed"]
        cpu_before = state.get("cpu_seconds", elapsed * threads)  # older checkpoints: wall time x threads
        log(f"resumed at step {step}")
    elif resume:
        log(f"no checkpoint in {work}: starting afresh")

    def checkpoint() -> None:
        state = {"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
        state.update({"rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "settings": settings})
        state.update({"losses": losses, "step": step, "elapsed": elapsed, "cpu_seconds": cpu_seconds()})
        save_atomically(state, ckpt)

    start = time.time() - elapsed
    cpu_start = time.process_time()

    def cpu_seconds() -> float:
        return cpu_before + time.process_time() - cpu_start

    last_checkpoint = time.time()
    unet.train()
    while step < steps:
        if max_minutes is not None and (time.time() - start) > 60 * max_minutes:
            log(f"time budget reached at step {step}")
            break
        x0 = torch.from_numpy(sample_patches(levels, batch, patch, rng))
        t = draw_timesteps(batch, focus_t, focus_fraction)
        noise = torch.randn_like(x0)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        warm = min(1.0, (step + 1) / 200)
        for g in opt.param_groups:
            g["lr"] = lr * warm
        loss = torch.nn.functional.mse_loss(unet(xt.to(device), t.to(device)).sample, noise.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)
        losses.append(loss.item())
        step += 1
        elapsed = time.time() - start
        if step % 25 == 0:
            log(f"step {step} loss {np.mean(losses[-25:]):.4f} {elapsed / 60:.1f} min")
        due = checkpoint_minutes is not None and time.time() - last_checkpoint > 60 * checkpoint_minutes
        kept = keep_every is not None and step % keep_every == 0
        if step % checkpoint_every == 0 or due or kept:
            checkpoint()
            last_checkpoint = time.time()
            if kept:
                keep(ckpt, step)
    elapsed = time.time() - start
    checkpoint()
    ema.eval()
    save_pipeline(ema.to("cpu"), out)
    info = {
        "steps": step,
        "batch": batch,
        "patch": patch,
        "lr": lr,
        "seed": seed,
        "channels": list(channels),
        "layers_per_block": layers_per_block,
        "threads": threads,
        "ema_decay": ema_decay,
        "train_seconds": round(elapsed, 1),
        "cpu_seconds": round(cpu_seconds(), 1),
        "photo_set": photo_set,
        "focus_steps": focus_steps if focus_fraction > 0 else 0,
        "focus_fraction": focus_fraction,
        "focus_timesteps": focus_t.tolist(),
        "n_train_photos": len(train_photos),
        "train_photos": sorted(train_photos),
        "held_out": list(HELD_OUT),
        "params": sum(p.numel() for p in ema.parameters()),
        "losses": losses,
    }
    (out / "training.json").write_text(json.dumps(info))
    return info


@click.command(cls=OneLineErrors, name="diip-train")
@click.option("--out", type=click.Path(), default="models/default", show_default=True)
@click.option(
    "--work", type=click.Path(), default="cache/train", show_default=True, help="Checkpoint folder, out of git."
)
@click.option("--resume", is_flag=True, help="Continue the checkpoint in --work (its settings must match).")
@click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True, help="Also checkpoint this often.")
@click.option(
    "--photo-set",
    type=click.Choice(PHOTO_SETS),
    default="default",
    show_default=True,
    help="Training photos: default (42), wide (54), all (77) or more (198); "
    "models/fetch_photos.sh --wide/--all/--more unpacks what the larger sets need.",
)
@click.option("--init-from", type=click.Path(exists=True), default=None, help="Start from a pipeline folder's weights.")
@click.option(
    "--focus-steps",
    type=int,
    default=5,
    show_default=True,
    help="With --focus-fraction: the DDIM chain length whose timesteps the prior is focused on.",
)
@click.option(
    "--focus-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of each batch trained at the chain's timesteps rather than uniform ones (0: DDPM's uniform).",
)
@click.option(
    "--focus-timesteps",
    default=None,
    help="With --focus-fraction: a chain's own timesteps, comma-separated (e.g. the shipped "
    "700,450,250,100,20), instead of --focus-steps' leading spacing.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda; a checkpoint moves between them.")
@click.option("--steps", type=int, default=100000, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--patch", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--channels", default=",".join(map(str, DEFAULT_CHANNELS)), show_default=True)
@click.option(
    "--layers-per-block",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Resnets a down block; --init-from weights with fewer are deepened without changing their output.",
)
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop once the run's wall time reaches this, counted since it first started: a resumed run "
    "counts its earlier sessions too (the checkpoint's 'elapsed'), so give it the total.",
)
@click.option(
    "--keep-every",
    type=click.IntRange(min=1),
    default=None,
    help="Also keep the checkpoint of every step that is a multiple of this, under WORK/kept/ "
    "(a learning curve's points, measurable after the run moved on: bench/prior_curve.py --work FILE).",
)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--ema-decay", type=float, default=0.999, show_default=True)
@click.option("--checkpoint-every", type=int, default=200, show_default=True)
@click.option("--opencv-doc", type=click.Path(), default=None, help="Unpacked opencv-doc .deb (extra photos).")
def main(
    out,
    work,
    resume,
    checkpoint_minutes,
    photo_set,
    init_from,
    device,
    focus_steps,
    focus_fraction,
    focus_timesteps,
    steps,
    batch,
    patch,
    lr,
    seed,
    channels,
    layers_per_block,
    max_minutes,
    keep_every,
    threads,
    ema_decay,
    checkpoint_every,
    opencv_doc,
):
    """Train the default DIIP prior on the photos that packages ship."""
    info = train(
        Path(out),
        Path(work),
        steps,
        batch,
        patch,
        lr,
        seed,
        tuple(int(c) for c in channels.split(",")),
        max_minutes,
        threads,
        ema_decay,
        checkpoint_every,
        opencv_doc,
        log=lambda m: click.echo(m, err=True),
        resume=resume,
        checkpoint_minutes=checkpoint_minutes,
        photo_set=photo_set,
        init_from=Path(init_from) if init_from else None,
        device=device,
        focus_steps=focus_steps,
        focus_fraction=focus_fraction,
        focus_timesteps_list=parse_timesteps(focus_timesteps, "--focus-timesteps"),
        keep_every=keep_every,
        layers_per_block=layers_per_block,
    )
    click.echo(json.dumps({k: v for k, v in info.items() if k not in ("losses", "train_photos")}))


if __name__ == "__main__":
    main()
