"""``diip-variants``: verify reduced-precision CPU variants on restorations, not on tensors.

A variant (OpenVINO bf16 today) passes when, on validation crops of the training photos,
the PSNR it restores at the export's own stop rule is no more than ``--tolerance-db``
below fp32 on ONNX Runtime, per task, on the same crops and seeds: the check is that no
variant is less accurate than fp32; one that restores better passes, and its largest
difference either way is recorded beside the loss (``worst_delta_db``).  The result, pass or fail, goes
into the manifest's ``variants`` section with the scores and a side-by-side speed ratio
of one UNet call; the runtime runs only the variants that passed (a failed one is not
shipped: ``--backend auto`` never takes it and ``--precision bf16`` refuses it).  A record
holds the defaults it was verified under, and stops counting when they change; a check on
a CPU without native bf16 does not pass, since OpenVINO computes fp32 there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import click

from ..cli_common import CommandError, OneLineErrors
from ..manifest import ManifestError, load_manifest, read_data, write_manifest
from ..runtime.backends.cpu_variants import REDUCED, machine_name, unet_seconds, variant_name
from ..runtime.backends.select import CPU_BATCH, backend_unavailable_reason
from .degrade import TASKS
from .tune import record
from .tune_scoring import score

VERIFY_TASKS = ("noise25", "jpeg10")
TOLERANCE_DB = 0.1


def verify(
    export_dir: Path,
    n_per_task: int = 8,
    tasks: Sequence[str] = VERIFY_TASKS,
    tolerance_db: float = TOLERANCE_DB,
    threads: Optional[int] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Each reduced variant's record: per-task auto-stop PSNR against fp32, speed, passed."""
    manifest = load_manifest(export_dir)
    rule = manifest.defaults
    size = manifest.tile_size

    def run(backend: str, precision: str) -> Dict[str, Any]:
        log(f"restoring {n_per_task} crops x {len(tasks)} tasks with {variant_name(backend, precision)}")
        h = record(
            export_dir, n_per_task, size, tasks, None, None, CPU_BATCH, threads, backend=backend, precision=precision
        )
        return {"histories": h, "scores": score(h, rule)}

    reference = run("ort-cpu", "fp32")
    out: Dict[str, Any] = {}
    for name, (backend, precision) in REDUCED.items():
        why = backend_unavailable_reason(manifest, backend)
        if why:
            log(f"{name}: skipped ({why})")
            continue
        got = run(backend, precision)
        per_task = {
            t: {
                "fp32": reference["scores"][t]["auto"],
                "variant": got["scores"][t]["auto"],
                "delta_db": round(got["scores"][t]["auto"] - reference["scores"][t]["auto"], 3),
                "stop_fp32": reference["scores"][t]["stop"],
                "stop_variant": got["scores"][t]["stop"],
            }
            for t in reference["scores"]
        }
        worst = max(abs(v["delta_db"]) for v in per_task.values())
        loss = max(0.0, -min(v["delta_db"] for v in per_task.values()))
        native = native_here(precision)
        ref_s = unet_seconds(manifest, "ort-cpu", "fp32", threads, CPU_BATCH)
        var_s = unet_seconds(manifest, backend, precision, threads, CPU_BATCH)
        out[name] = {
            "backend": backend,
            "precision": precision,
            "passed": bool(loss <= tolerance_db and native),
            "native": native,
            "tolerance_db": tolerance_db,
            "worst_loss_db": round(loss, 3),
            "worst_delta_db": round(worst, 3),
            "tasks": per_task,
            "crops_per_task": n_per_task,
            "crop_size": size,
            "split": reference["histories"]["split"],
            "stop_rule": "the manifest's defaults",
            "defaults": dict(manifest.data.get("defaults", {})),
            "speed_vs_ort_fp32": round(ref_s / var_s, 3),
            "unet_call_ms": {"ort-fp32": round(ref_s * 1000, 1), name: round(var_s * 1000, 1)},
            "measured_on": machine_name(),
        }
        verdict = (
            "passed"
            if out[name]["passed"]
            else "FAILED (not shipped)"
            if native
            else f"not passed: this CPU has no native {precision}, so the variant computed fp32 and proved nothing"
        )
        log(
            f"{name}: worst loss against fp32 {loss:.3f} dB (largest |delta| {worst:.3f}), "
            f"{ref_s / var_s:.2f}x fp32's speed: {verdict}"
        )
    return out


def native_here(precision: str) -> bool:
    """Whether this CPU computes ``precision`` itself: without native bf16, OpenVINO's
    bf16 hint falls back to fp32, and a check run here would pass a variant it never ran."""
    if precision != "bf16":
        return True
    from ..runtime.backends.openvino import cpu_has_bf16

    return cpu_has_bf16()


def write_variants(export_dir: Path, records: Dict[str, Any]) -> None:
    data = read_data(export_dir)
    data["variants"] = {**data.get("variants", {}), **records}
    write_manifest(Path(export_dir), data)


@click.command("diip-variants", cls=OneLineErrors)
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--n", "n_per_task", type=click.IntRange(min=1), default=8, show_default=True, help="Crops per task.")
@click.option(
    "--task", "tasks", multiple=True, type=click.Choice(sorted(TASKS)), default=VERIFY_TASKS, show_default=True
)
@click.option("--tolerance-db", type=click.FloatRange(min=0), default=TOLERANCE_DB, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--dry-run", is_flag=True, help="Print the records; leave the manifest as it is.")
def main(export_dir, n_per_task, tasks, tolerance_db, threads, dry_run):
    """Verify the reduced-precision CPU variants of EXPORT_DIR on restorations and record
    each one's result in its manifest (only passed variants ever run)."""
    import json

    try:
        records = verify(export_dir, n_per_task, tasks, tolerance_db, threads, log=lambda m: click.echo(m, err=True))
    except (OSError, ValueError, ManifestError) as e:
        raise CommandError(str(e)) from None
    if not records:
        raise CommandError("no reduced-precision variant can run here (pip install 'diip-deploy[openvino]')")
    click.echo(json.dumps(records, indent=1))
    if not dry_run:
        write_variants(export_dir, records)
        click.echo(f"wrote {len(records)} variant record(s) into {Path(export_dir) / 'manifest.json'}", err=True)


if __name__ == "__main__":
    main()
