"""The CPU variants an export may run, which of them the manifest verified, and which is
fastest on this machine.

A variant is a backend and a precision.  fp32 on ONNX Runtime is the reference; a
reduced-precision variant runs only where ``diip-variants`` restored validation crops
with it within tolerance of fp32 and wrote ``variants.<name>.passed`` into the manifest,
so no run is silently less accurate than the export says.  Which verified variant is
fastest depends on the CPU (bf16 pays only with native bf16), so ``--backend auto`` times
one UNet call of each here rather than trusting a number measured elsewhere, once per
machine: the timings are kept in a cache file (``DIIP_CACHE_DIR``, else
``~/.cache/diip-deploy``), so the same machine makes the same choice run after run and
the same inputs and options give the same outputs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...manifest import Manifest, ManifestError
from ...settings import Precision
from .runners import graph_at, make_runner

Variant = Tuple[str, Precision]  # (backend, precision)
REFERENCE: Variant = ("ort-cpu", "fp32")
REDUCED: Dict[str, Variant] = {"openvino-bf16": ("openvino", "bf16")}  # what diip-variants verifies
_TIMED: Dict[Tuple[str, str, str, Optional[int], int], float] = {}


def variant_name(backend: str, precision: str) -> str:
    return f"{'ort' if backend == 'ort-cpu' else backend}-{precision}"


def unverified_reason(manifest: Manifest, name: str) -> Optional[str]:
    """Why variant ``name`` may not run on this export, or None where the manifest records
    that it passed its restoration check under the defaults and on the chain the manifest
    holds now: a check made under other defaults (another clamp gradient, lr or stop rule)
    or on another chain (``diip-export --rechain``) says nothing of the runs made now."""
    record = manifest.data.get("variants", {}).get(name)
    if not isinstance(record, dict) or record.get("passed") is not True:
        return "not verified for this export"
    chain, now_chain = record.get("chain_timesteps"), list(manifest.chain_spec.timesteps)
    if chain is not None and list(chain) != now_chain:
        return f"not verified on this export's chain (verified at timesteps {chain}, the chain is now {now_chain})"
    under, now = record.get("defaults"), manifest.data.get("defaults", {})
    if under is not None and under != now:
        changed = sorted(k for k in set(under) | set(now) if under.get(k) != now.get(k))
        return f"not verified under this export's defaults (verified before {', '.join(changed)} changed)"
    return None


def verified(manifest: Manifest, name: str) -> bool:
    return unverified_reason(manifest, name) is None


def check_precision(manifest: Manifest, backend: str, precision: str, must_be_verified: bool = True) -> None:
    """A precision the backend runs and, if reduced on the CPU, the manifest verified
    (``must_be_verified=False``: what ``diip-variants`` opens to verify it)."""
    if backend == "openvino" and precision not in ("fp32", "bf16"):
        raise ValueError(f"--backend openvino runs fp32 or bf16, not {precision}")
    if precision == "bf16":
        if backend != "openvino":
            raise ValueError("--precision bf16 runs on --backend openvino")
        why = unverified_reason(manifest, variant_name(backend, precision)) if must_be_verified else None
        if why:
            raise ManifestError(
                f"{manifest.root}: bf16 is {why} (run diip-variants {manifest.root} on a CPU with native bf16)"
            )


def resolve_precision(manifest: Manifest, backend: str, precision: Precision) -> Precision:
    """``auto``: bf16 on OpenVINO where verified and native here, else fp32."""
    if precision != "auto":
        check_precision(manifest, backend, precision)
        return precision
    if backend == "openvino" and verified(manifest, "openvino-bf16"):
        from .openvino import cpu_has_bf16

        if cpu_has_bf16():
            return "bf16"
    return "fp32"


def unet_feed(manifest: Manifest, batch: int) -> Dict[str, np.ndarray]:
    """``batch`` seeded random tiles of the model's tile size at its first timestep: what a
    UNet call is timed on, here and in the CPU benchmark."""
    t, c = manifest.tile_size, manifest.channels
    return {
        "sample": np.random.default_rng(0).standard_normal((batch, c, t, t)).astype(np.float32),
        "timestep": np.full((batch,), manifest.chain_spec.timesteps[0], dtype=np.int64),
    }


def _cache_file() -> Path:
    return Path(os.environ.get("DIIP_CACHE_DIR") or Path.home() / ".cache" / "diip-deploy") / "cpu_variants.json"


def machine_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def timed_on_this_machine(
    manifest: Manifest, backend: str, precision: str, threads: Optional[int], batch: int
) -> float:
    """``unet_seconds``, measured once per machine, model, variant, threads and batch and
    kept in the cache file (a cache that cannot be read or written is only slower)."""
    model = manifest.graphs["unet"]["sha256"][:16]
    key = "|".join([model, machine_name(), variant_name(backend, precision), str(threads), str(batch)])
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict) or not isinstance(cache.get(key), (int, float)):
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = unet_seconds(manifest, backend, precision, threads, batch)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass
    return float(cache[key])


def unet_seconds(manifest: Manifest, backend: str, precision: str, threads: Optional[int], batch: int) -> float:
    """The best of two timed UNet calls on ``batch`` tiles, after one warm-up call."""
    key = (str(manifest.root.resolve()), backend, precision, threads, batch)
    if key not in _TIMED:
        feed = unet_feed(manifest, batch)
        with make_runner(
            manifest, backend, graph_at(manifest, "unet", precision), threads, precision=precision
        ) as runner:
            runner.infer(feed)
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                runner.infer(feed)
                times.append(time.perf_counter() - t0)
        _TIMED[key] = min(times)
    return _TIMED[key]


def cpu_candidates(manifest: Manifest, precision: Precision, skipped: Dict[str, str]) -> List[Variant]:
    """The (backend, precision) pairs ``auto`` may take on the CPU; why others are out goes
    into ``skipped``."""
    if precision not in ("auto", "bf16"):
        return [("ort-cpu", precision)]
    out = [REFERENCE] if precision == "auto" else []
    for name, (backend, prec) in REDUCED.items():
        from .openvino import cpu_has_bf16, unavailable_reason

        unverified = unverified_reason(manifest, name)
        why = (
            unavailable_reason()
            or (unverified and f"{unverified} (diip-variants)")
            or (None if cpu_has_bf16() else "this CPU has no native bf16")
        )
        if why:
            skipped[name] = why
        else:
            out.append((backend, prec))
    if not out:
        raise ManifestError(f"{manifest.root}: --precision bf16: {skipped.get('openvino-bf16')}")
    return out


def fastest_cpu_variant(
    manifest: Manifest, precision: Precision, threads: Optional[int], skipped: Dict[str, str], batch: int
) -> Tuple[str, Precision, Dict[str, float]]:
    """(backend, precision, seconds per UNet call of each timed variant): the fastest of
    the candidates here; a lone candidate is taken untimed."""
    found = cpu_candidates(manifest, precision, skipped)
    if len(found) == 1:
        return found[0][0], found[0][1], {}
    timed = {variant_name(b, p): timed_on_this_machine(manifest, b, p, threads, batch) for b, p in found}
    best = min(found, key=lambda bp: timed[variant_name(*bp)])
    return best[0], best[1], timed
