"""Training checkpoints that survive a kill at any moment and refuse the wrong run.

A checkpoint holds the model, its EMA, the optimiser, both RNGs (whose state is the data
position) and the loss history, with the settings it was made under.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import torch


def load_checkpoint(ckpt: Path, expected: Dict) -> Dict:
    """The checkpoint's state, refused when it was made with other settings than this run's."""
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    made_with = state.get("settings", {})
    keys = list(expected) + [k for k in made_with if k not in expected]  # a setting only one side has differs too
    differ = {k: (made_with.get(k), expected.get(k)) for k in keys if made_with.get(k) != expected.get(k)}
    if differ:
        what = ", ".join(f"{k} {old} (now {new})" for k, (old, new) in differ.items())
        raise SystemExit(f"{ckpt} was made with other settings: {what}; resume with those, or use another --work")
    return state


def save_atomically(state: Dict, ckpt: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: a kill at any moment
    leaves either the previous checkpoint or the new one, never half of one."""
    tmp = ckpt.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(ckpt)


def keep(ckpt: Path, step: int) -> Path:
    """The checkpoint just written, kept as ``kept/step_NNNNNNN.ckpt`` beside it: a hard
    link where the file system allows one (no copy; the next checkpoint replaces the file
    by rename, so the link keeps this step's), a copy otherwise.  A learning curve can then
    be measured at any kept step later, after the run has moved on."""
    kept = ckpt.parent / "kept" / f"step_{step:07d}.ckpt"
    kept.parent.mkdir(exist_ok=True)
    kept.unlink(missing_ok=True)
    try:
        os.link(ckpt, kept)
    except OSError:
        import shutil

        shutil.copyfile(ckpt, kept)
    return kept
