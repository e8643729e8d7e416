"""Where each restoration goes, and writing it so that nothing is lost or mismatched.

Naming rule: ``IN.ext`` restores to ``OUT/IN.png`` and ``OUT/IN.json``; a folder input
is searched recursively and its layout mirrored under OUT.  Where two inputs of one run
would get the same output name (``a.png`` and ``a.jpg``), the later ones keep their
extension in the name (``a.jpg.png``) and a warning says so.  An output that resolves
to an input file is refused before any compute.

Each result is a pair written last and atomically: the PNG and the JSON go to
temporary names first, the JSON records the PNG's sha256 and ``"complete": true``, and
both are renamed into place under a per-output lock, so concurrent runs never leave a
PNG of one beside the JSON of another, and ``--skip-existing`` trusts only a pair whose
hash matches.  Each temporary is locked while its writer lives; the next write of the pair
deletes the ones whose writers died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ...manifest import sha256_file
from .codec import _umask, encode_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")


class OutputError(Exception):
    """The outputs cannot be written safely; one line says why (a usage error)."""


@dataclass(frozen=True)
class Job:
    source: Path
    png: Path
    json: Path


def expand_inputs(inputs: Sequence[Path]) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(source, output stem relative to OUT) for every image, and one error line per input
    that is neither an image file nor a folder holding any."""
    found: List[Tuple[Path, Path]] = []
    errors: List[str] = []
    for p in inputs:
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not files:
                errors.append(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            errors.append(f"{p}: no such file or folder")
    return found, errors


def plan_outputs(found: Sequence[Tuple[Path, Path]], out_dir: Path) -> Tuple[List[Job], List[str]]:
    """Jobs with collision-free output names, and a warning per renamed output."""
    jobs: List[Job] = []
    warnings: List[str] = []
    taken: Dict[Path, Path] = {}
    for source, rel in found:
        name = rel.with_suffix("")
        if name in taken:
            renamed, n = rel, 1
            while renamed in taken:
                renamed, n = rel.parent / f"{rel.name}.{n}", n + 1
            warnings.append(
                f"{source}: {taken[name]} already writes {out_dir / name}.png; writing {out_dir / renamed}.png"
            )
            name = renamed
        taken[name] = source
        jobs.append(Job(source, out_dir / f"{name}.png", out_dir / f"{name}.json"))
    inputs = {s.resolve() for s, _ in found}
    for j in jobs:
        for target in (j.png, j.json):
            if target.resolve() in inputs:
                raise OutputError(f"{target} is an input file: refusing to overwrite it (choose another --out)")
    return jobs, warnings


def check_writable(out_dir: Path) -> None:
    """Make OUT (and parents) or fail now, before any compute, with one line."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".diip-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"--out {out_dir} is not writable ({e.strerror or type(e).__name__})") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An advisory lock beside one output, held while its pair is renamed into place."""
    lock = path.parent / f".{path.name}.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(lock)


def _temp_beside(path: Path) -> Tuple[str, int]:
    """A hidden temporary file beside ``path``, and its descriptor, flock-ed for as long as
    the writer lives: a temporary whose lock is free was left by a writer that died."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return tmp, fd


def remove_orphans(path: Path) -> List[Path]:
    """Delete the temporaries beside ``path`` whose writers died mid-write (killed workers,
    power loss); those of live writers are locked and stay.  Returns what went."""
    gone = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            gone.append(tmp)
    return gone


def write_result(job: Job, image: np.ndarray, report: Dict[str, Any]) -> Dict[str, Any]:
    """Write the PNG and its JSON (with the PNG's sha256) as one pair; returns the report
    written.  The report's "run" measurements (time, memory) are left out of the file, so
    the same input and options give the same bytes on any machine or worker."""
    report = {k: v for k, v in report.items() if k != "run"}
    job.png.parent.mkdir(parents=True, exist_ok=True)
    tmps: List[Tuple[str, int]] = []
    try:
        tmps.append(_temp_beside(job.png))
        png_tmp = tmps[-1][0]
        encode_png(image, png_tmp)
        report = {**report, "output": job.png.name, "png_sha256": sha256_file(Path(png_tmp)), "complete": True}
        tmps.append(_temp_beside(job.json))
        json_tmp = tmps[-1][0]
        with open(json_tmp, "w") as f:
            json.dump(report, f, indent=1)
        for t, _ in tmps:
            os.chmod(t, 0o666 & ~_umask())
        with _locked(job.png):
            os.replace(png_tmp, job.png)
            os.replace(json_tmp, job.json)
            for path in (job.png, job.json):  # what an earlier writer of this pair left when it died
                remove_orphans(path)
        return report
    finally:
        for t, fd in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)
            os.close(fd)


def is_complete(job: Job) -> bool:
    """True if JOB's JSON says it is complete and the PNG beside it has the hash it records."""
    try:
        report = json.loads(job.json.read_text())
        return bool(report.get("complete")) and job.png.is_file() and sha256_file(job.png) == report.get("png_sha256")
    except (OSError, ValueError, AttributeError):
        return False
