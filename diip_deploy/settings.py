"""Every restoration option, declared once.

A field of ``RestoreSettings`` is the one place an option lives: its type (a ``Literal``
lists the allowed values), its default, its range, its help text and its group.  The
``diip-run`` options, the manifest's ``defaults`` validation, ``resolve`` (a manifest's
defaults under the user's choices), the JSON report's ``settings`` and the Ray task
payload are all read off this class, as diffusers' ``register_to_config`` makes a
signature the single source of a saved config.  Adding an option is one field here plus
its use; how a field is declared and checked lives in ``option_fields``.  Torch-free:
both the export and the runtime import it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Type

from .option_fields import GROUPS, SettingsError, Spec, option, specs, unknown_name

__all__ = [
    "GROUPS",
    "Precision",
    "StopRule",
    "RULES",
    "RestoreSettings",
    "Rule",
    "SettingsClass",
    "SettingsError",
    "Spec",
    "check_manifest_defaults",
    "choices",
    "manifest_defaults",
    "option",
    "specs",
    "unknown_name",
]


# The allowed values of options that code outside this module also names (type checkers
# hold those names to them).
Precision = Literal["auto", "fp32", "fp16", "bf16"]
StopRule = Literal["auto", "slope", "laplacian", "none", "paper-auto"]


@dataclass(frozen=True)
class Rule:
    """A constraint between options: ``holds`` over the values by name, ``why`` it exists,
    and ``fix``: how a user gets what was asked."""

    names: Tuple[str, ...]
    holds: Callable[[Mapping[str, Any]], bool]
    why: str
    fix: str


RULES = (
    Rule(
        ("steps_per_eval", "gradient"),
        lambda v: v["steps_per_eval"] == 1 or v["gradient"] == "surrogate",
        "--steps-per-eval above 1 reuses the UNet's eps, which only --gradient surrogate holds constant",
        "give --steps-per-eval 1 with --gradient exact, or --gradient surrogate with more steps",
    ),
)


@dataclass(frozen=True)
class RestoreSettings:
    """How one image is restored; the manifest may set the defaults of fields marked so."""

    # model and backend
    precision: Precision = option(
        "auto",
        "model",
        "Precision: fp32; fp16 (the copies diip-fp16 verified, ONNX Runtime backends); bf16 "
        "(OpenVINO, where diip-variants verified it); auto: fp32, or on the CPU the fastest variant verified.",
    )
    loop: Literal["auto", "device", "host"] = option(
        "auto",
        "model",
        "Where z and Adam's moments live: device (the export's iterate graph, one call per "
        "iteration; only losses come back), host (numpy); auto: device on ort-cuda / ort-tensorrt when the export "
        "has the graph.",
    )
    # optimisation
    gradient: Literal["exact", "surrogate"] = option(
        "surrogate",
        "optimisation",
        "Latent gradient: exact (through the UNet's VJP) or surrogate (eps held constant; forward graphs only).",
    )
    clamp_gradient: Literal["mask", "straight"] = option(
        "mask",
        "optimisation",
        "The gradient through the chain's x0 clamp: mask (BIRD's: zero where x0 sits on -1 or 1, so a channel "
        "clamped there gets no pull back) or straight (straight-through: the clamp passes the gradient as if it "
        "were not there; the forward chain is unchanged). The fused and iteration graphs hold the one their "
        "export's default named; a run asking for the other uses the per-step graph on the host.",
    )
    optimizer: Literal["adam", "gd"] = option("adam", "optimisation", "Optimiser of the latent z.")
    lr: float = option(0.01, "optimisation", "Learning rate.", min=0, min_open=True)
    lr_final: float = option(
        1.0,
        "optimisation",
        "The learning rate at the cap, as a fraction of --lr: it falls from --lr along a half cosine over "
        "--max-iters evaluations (each evaluation's Adam steps share one rate); 1 keeps it constant, as the "
        "paper does. The host loop runs a falling rate (the iteration graphs hold one rate).",
        min=0,
        max=1,
    )
    adam_beta1: float = option(0.9, "optimisation", "Adam's beta1: memory of the gradient's mean.", min=0, max=0.9999)
    adam_beta2: float = option(
        0.999, "optimisation", "Adam's beta2: memory of the squared gradient's mean.", min=0, max=0.9999
    )
    steps_per_eval: int = option(
        1,
        "optimisation",
        "Adam steps per evaluation of the chain (one UNet call a DDIM step): the steps after the first run the "
        "chain on that evaluation's eps, which the surrogate gradient already holds constant, so they call no "
        "graph. An iteration (and --max-iters) counts evaluations.",
        min=1,
    )
    init: Literal["noise", "noised"] = option(
        "noise",
        "optimisation",
        "The starting z: noise (seeded Gaussian, the paper's) or noised (the damaged input taken by DDPM's "
        "forward process to the chain's first timestep, sqrt(a_T) * --init-strength * y + sqrt(1 - a_T) * noise, "
        "with the same seeded noise); both are then projected onto the sphere.",
    )
    init_strength: float = option(
        1.0,
        "optimisation",
        "With --init noised: how much of the input the start holds (1: exactly the forward process).",
        min=0,
    )
    max_iters: int = option(300, "optimisation", "Iteration cap (evaluations of the chain).", min=1)
    restarts: int = option(
        1, "optimisation", "Restore K times from different seeds, batched, and average (K times the work).", min=1
    )
    seed: int = option(0, "optimisation", "Noise seed (each tile derives its own from it).", min=0, manifest=False)
    project: bool = option(
        True,
        "optimisation",
        "Project z back onto the sphere of its expected norm after each step (the iteration graphs always do).",
        manifest=False,
        cli=False,
    )
    # stopping
    stop: StopRule = option(
        "auto",
        "stopping",
        "Stopping criterion: loss slope, Laplacian-variance peak, the first of both (auto), the "
        "paper's exact rules, or none (run to --max-iters).",
    )
    eps: float = option(1e-3, "stopping", "Slope threshold.", min=0)
    slope_window: int = option(5, "stopping", "Iterations in the smoothed slope.", min=1)
    slope_fit: Literal["mean", "regression"] = option(
        "mean", "stopping", "Smoothed slope: mean of raw slopes, or a regression line."
    )
    slope_min_iter: int = option(0, "stopping", "Earliest slope stop.", min=0)
    patience: int = option(1, "stopping", "Iterations the slope must stay below --eps before stopping.", min=1)
    k_min: int = option(100, "stopping", "Earliest Laplacian-peak stop.", min=0)
    lap_window: int = option(1, "stopping", "Trailing mean of the Laplacian variance before its peak is sought.", min=1)
    residual_guard: float = option(
        1.0,
        "stopping",
        "Return the input for a region whose residual (restored - input) has a lag-one "
        "correlation above this: structure the prior could not fit, not noise (1: off).",
        min=0,
        max=1,
    )
    guard_at: int = option(
        0,
        "stopping",
        "Also judge the residual guard at this iteration (--stop-scope image): a region it would "
        "return as the input stops there, not at the stop (0: only after the stop).",
        min=0,
    )
    # tiles
    tile: Optional[int] = option(
        None,
        "tiles",
        "Tile size (a multiple of the model's); 0: the whole image, where it fits. Default: the manifest's tile size.",
        min=0,
        manifest=False,
    )
    tile_overlap: Optional[int] = option(
        None, "tiles", "Overlap between tiles, in pixels. Default: the export's, else a quarter of the tile.", min=0
    )
    batch: Optional[int] = option(
        None,
        "tiles",
        "Tiles per graph call (the output does not depend on it). "
        "Default: 8 on the CPU and TensorRT engines, 512x512 pixels a call on ort-cuda / "
        "ort-tensorrt.",
        min=1,
        manifest=False,
    )
    stop_scope: Literal["image", "tile"] = option(
        "image",
        "tiles",
        "image: one stop for all tiles of a region (summed loss, Laplacian of the blended image); "
        "tile: each tile its own.",
        manifest=False,
    )
    region_tiles: int = option(
        256,
        "tiles",
        "With --stop-scope image: at most this many neighbouring tiles share one stop (bounds memory).",
        min=1,
        manifest=False,
    )
    max_pixels: int = option(50_000_000, "io", "Refuse larger images before any compute.", min=1, manifest=False)

    def __post_init__(self) -> None:
        for name, spec in specs(type(self)).items():
            object.__setattr__(self, name, spec.check(getattr(self, name)))
        for rule in RULES:
            if not rule.holds(self.__dict__):
                raise SettingsError(f"{rule.why}; {rule.fix}", rule.names[0])

    @classmethod
    def resolve(cls, defaults: Mapping[str, Any] = {}, **overrides: Any) -> RestoreSettings:
        """The class defaults, under a manifest's ``defaults``, under every override that is
        not None; an unknown name is an error that names the nearest known one."""
        return cls.resolve_noted(defaults, **overrides)[0]

    @classmethod
    def resolve_noted(cls, defaults: Mapping[str, Any] = {}, **overrides: Any) -> Tuple[RestoreSettings, List[str]]:
        """``resolve``, and where a manifest default breaks a rule against the user's explicit
        choice, the default yields: the class default is used instead, and a note (for the
        report) says so.  A rule broken by the user's own choices is an error that says how
        to get what was asked."""
        known = specs(cls)
        for name in list(defaults) + list(overrides):
            if name not in known:
                raise unknown_name(name, known)
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {n: s.default for n, s in known.items()} | dict(defaults) | given
        notes: List[str] = []
        for rule in RULES:
            if rule.holds(values):
                continue
            yielding = [n for n in rule.names if n not in given and n in defaults]
            if not yielding or not any(n in given for n in rule.names):
                continue  # the user's own choices, or the manifest's alone: __post_init__ says why
            asked = ", ".join(f"{known[g].flag} {given[g]}" for g in rule.names if g in given)
            for n in yielding:
                notes.append(
                    f"{n}: the model's default {defaults[n]!r} conflicts with {asked}; "
                    f"{known[n].default!r} used ({rule.why})"
                )
                values[n] = known[n].default
        return cls(**values), notes

    def as_dict(self) -> Dict[str, Any]:
        """Every field, as the report records it and a Ray task carries it."""
        return asdict(self)


SettingsClass = Type[RestoreSettings]


def check_manifest_defaults(defaults: Any, cls: SettingsClass = RestoreSettings) -> None:
    """A manifest's ``defaults`` section: only fields an export may set, each allowed."""
    if not isinstance(defaults, dict):
        raise SettingsError("defaults must be an object")
    allowed = {n: s for n, s in specs(cls).items() if s.manifest}
    for name, value in defaults.items():
        if name not in allowed:
            raise unknown_name(name, allowed, "default")
        allowed[name].check(value)


def manifest_defaults(cls: SettingsClass = RestoreSettings, **chosen: Any) -> Dict[str, Any]:
    """The ``defaults`` an export writes: every field it may set, with ``chosen`` over the
    class defaults."""
    settings = cls.resolve(**chosen)
    return {n: getattr(settings, n) for n, s in specs(cls).items() if s.manifest}


def choices(name: str) -> Tuple[str, ...]:
    """The allowed values of option ``name``, read off its declaration."""
    return specs(RestoreSettings)[name].choices or ()
