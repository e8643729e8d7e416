"""``diip-tune``: record histories on validation crops, choose the stop defaults, score them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import click

from ..cli_common import OneLineErrors, OneLineGroup
from ..runtime.commands.options import setting_option
from ..runtime.optimise.stopping import PAPER_SETTINGS
from ..settings import RestoreSettings
from .degrade import TASKS
from .tune import TUNE_TASKS, record
from .tune_scoring import best_run, classic_scores, score, scored_samples, write_defaults


@click.group(cls=OneLineGroup, name="diip-tune")
def main() -> None:
    """Tune a model's stopping defaults on validation crops from its training photos."""


@main.command("record", cls=OneLineErrors)
@click.option("--export", "export_dir", required=True, type=click.Path(path_type=Path))
@click.option("--n", "n_per_task", type=click.IntRange(min=1), default=64, show_default=True, help="Crops per task.")
@click.option("--size", type=click.IntRange(min=8), default=None, help="Crop size (default: the model's tile size).")
@click.option("--task", "tasks", multiple=True, type=click.Choice(sorted(TASKS)), default=TUNE_TASKS, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--max-iters", type=click.IntRange(min=1), default=None)
@setting_option("steps_per_eval")
@setting_option("clamp_gradient")
@setting_option("lr_final", "Recorded histories under a falling rate score at their own cap only.")
@setting_option("init")
@setting_option("init_strength")
@setting_option("adam_beta1")
@setting_option("adam_beta2")
@click.option(
    "--saturated",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also this many crops with saturated colours (from the training photos).",
)
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--held-out", is_flag=True, help="Crops of the held-out photos instead: to report scores, not to choose.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Histories JSON to write.")
def record_cmd(
    export_dir,
    n_per_task,
    size,
    tasks,
    lr,
    max_iters,
    saturated,
    batch,
    threads,
    seed,
    held_out,
    out,
    **chosen,
):
    """Run DIIP to the iteration cap on every validation crop and keep the histories."""
    from ..manifest import load_manifest
    from ..runtime.images.codec import save_json

    size = size or load_manifest(export_dir).tile_size
    h = record(
        export_dir,
        n_per_task,
        size,
        tasks,
        lr,
        max_iters,
        batch,
        threads,
        seed,
        log=lambda m: click.echo(m, err=True),
        held_out=held_out,
        overrides={k: v for k, v in chosen.items() if v is not None},  # the settings given, over the export's
        saturated=saturated,
    )
    save_json(out, h)
    click.echo(f"wrote {out}: {len(h['samples'])} histories in {h['seconds']} s")


@main.command("choose", cls=OneLineErrors)
@click.option(
    "--histories",
    "histories_files",
    required=True,
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Recorded histories; several (one per learning rate) to choose the lr too.",
)
@click.option(
    "--max-loss-db",
    type=click.FloatRange(min=0),
    default=0.2,
    show_default=True,
    help="Largest mean loss against the input allowed on any task.",
)
@click.option(
    "--write",
    "write_export",
    type=click.Path(path_type=Path),
    default=None,
    help="Export folder whose manifest gets the chosen defaults.",
)
def choose_cmd(histories_files, max_loss_db, write_export):
    """Apply every candidate stop setting to recorded histories and pick the best."""
    if any("HELD-OUT" in json.loads(f.read_text()).get("split", "") for f in histories_files):
        raise click.UsageError("refusing to choose defaults on held-out histories (record without --held-out)")
    runs = [json.loads(f.read_text()) for f in histories_files]
    h, choice = best_run(runs, max_loss_db)
    click.echo(json.dumps({"lr": h["settings"]["lr"], **choice}, indent=1))
    if write_export:
        from ..manifest import load_manifest

        ref = score(h, manifest_settings(load_manifest(write_export).defaults))
        write_defaults(write_export, h, choice, ref)
        click.echo(f"wrote the chosen defaults into {write_export}/manifest.json")


def manifest_settings(defaults: Dict[str, Any]) -> Dict[str, Any]:
    """A manifest's defaults as the settings ``score`` takes."""
    return RestoreSettings.resolve(defaults).as_dict()


@main.command("score", cls=OneLineErrors)
@click.option("--histories", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--export",
    "export_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Score this manifest's defaults (and the paper's rules beside them).",
)
@click.option("--classic", is_flag=True, help="Also the classic blind baselines on the same crops (needs the photos).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def score_cmd(histories, export_dir, classic, json_out):
    """Per task: input, auto-stop (manifest defaults and paper-auto) and oracle PSNR, stop iterations."""
    from ..manifest import load_manifest

    h = json.loads(histories.read_text())
    d = load_manifest(export_dir).defaults
    out = {
        "histories": str(histories),
        "split": h.get("split"),
        "n_per_task": h.get("n_per_task"),
        "excluded_undamaged": len(h["samples"]) - len(scored_samples(h)),
        "manifest_defaults": score(h, manifest_settings(d)),
        "paper_auto": score(h, {**manifest_settings(d), **PAPER_SETTINGS}),
    }
    if classic:
        out["classic"] = classic_scores(h)
    click.echo(json.dumps(out, indent=1))
    if json_out:
        json_out.write_text(json.dumps(out, indent=1) + "\n")
