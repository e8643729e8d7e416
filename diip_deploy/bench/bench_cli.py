"""``diip-bench``: the restoration benchmark over a folder or the held-out photos."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import click
import numpy as np

from ..cli_common import OneLineErrors
from ..runtime.images.codec import load_image
from .degrade import TASKS
from .run import BenchSettings, run_benchmark


def _images_from_dir(folder: Path, size: int) -> List[Tuple[str, np.ndarray]]:
    from ..train.photos import center_crop

    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
            img = load_image(p).astype(np.float64)
            scale = min(1.0, 4 * size / min(img.shape[:2]))
            out.append((p.stem, center_crop(img, size, scale) if min(img.shape[:2]) >= size else img))
    return out


@click.command(cls=OneLineErrors, name="diip-bench")
@click.option("--export", "export_dir", required=True, type=click.Path(path_type=Path), help="diip-export folder.")
@click.option(
    "--model", "model_dir", default=None, help="Diffusers folder of the export, to time torch against the runtime."
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of clean photos (default: the held-out set).",
)
@click.option("--n", "n_images", type=int, default=8, show_default=True)
@click.option("--size", type=int, default=64, show_default=True)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    type=click.Choice(sorted(TASKS)),
    default=("noise25", "jpeg10", "sr4", "waterdrop"),
    show_default=True,
)
@click.option(
    "--exact-task",
    "exact_tasks",
    multiple=True,
    type=click.Choice(sorted(TASKS)),
    default=("noise25",),
    show_default=True,
    help="Tasks also run with the exact gradient.",
)
@click.option("--lr", type=float, default=None)
@click.option("--max-iters", type=int, default=None)
@click.option("--k-min", type=int, default=None)
@click.option("--dip-iters", type=int, default=1000, show_default=True)
@click.option("--no-dip", is_flag=True)
@click.option("--no-exact", is_flag=True, help="Run no task with the exact gradient (overrides --exact-task).")
@click.option("--threads", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True)
def main(
    export_dir,
    model_dir,
    images_dir,
    n_images,
    size,
    tasks,
    exact_tasks,
    lr,
    max_iters,
    k_min,
    dip_iters,
    no_dip,
    no_exact,
    threads,
    seed,
    out_dir,
):
    """Run the restoration benchmark and write JSON, a markdown table and pictures."""
    if images_dir:
        images = _images_from_dir(images_dir, size)[:n_images]
        dataset = f"{images_dir} (centre crops {size}x{size})"
    else:
        from ..train.photos import HELD_OUT, held_out_crops

        images = [(k.replace("/", "_"), v.astype(np.float64)) for k, v in held_out_crops(size)][:n_images]
        dataset = (
            f"held-out photos of the default model ({len(HELD_OUT)} listed in diip_deploy/train/photos.py), "
            f"centre crops {size}x{size} at 1/4 scale"
        )
    if not images:
        raise click.ClickException("no images found (the held-out set needs opencv-doc's photos; see README)")
    settings = BenchSettings(
        tasks=tasks,
        lr=lr,
        max_iters=max_iters,
        k_min=k_min,
        exact_tasks=() if no_exact else exact_tasks,
        dip_iters=dip_iters,
        dip=not no_dip,
        seed=seed,
        threads=threads,
    )
    report = run_benchmark(
        export_dir, images, settings, out_dir, dataset, model_dir, log=lambda m: click.echo(m, err=True)
    )
    click.echo((out_dir / "results.md").read_text())
    click.echo(f"wrote {out_dir}/results.json, results.md and pictures ({len(report['tasks'])} tasks)")
