"""How an option is declared and read back: ``option()`` for a field, ``Spec`` for what it allows.

The machinery behind ``settings.RestoreSettings``: a dataclass field declared with
``option()`` carries its group, help, range and where it may be set; ``specs(cls)`` reads
each field's type hint and metadata into a ``Spec`` that checks values.  Torch-free.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Dict, Literal, Optional, Tuple, Union, get_args, get_origin, get_type_hints

# Option groups, in the order ``diip-run -h`` shows them.
GROUPS = {
    "model": "Model and backend",
    "optimisation": "Optimisation",
    "stopping": "Stopping",
    "tiles": "Tiles",
    "io": "Inputs and outputs",
}


class SettingsError(ValueError):
    """An option name or value that the settings do not allow; one line says which, and
    ``name`` is the option's."""

    def __init__(self, message: str, name: Optional[str] = None):
        super().__init__(message)
        self.name = name


def option(
    default: Any,
    group: str,
    help: str,
    *,
    min: Optional[float] = None,
    max: Optional[float] = None,
    min_open: bool = False,
    manifest: bool = True,
    cli: bool = True,
) -> Any:
    """A settings field: ``min`` / ``max`` bound numbers (``min_open``: strictly above),
    ``manifest``: an export may set its default, ``cli``: ``diip-run`` offers it."""
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    meta = {
        "group": group,
        "help": help,
        "min": min,
        "max": max,
        "min_open": min_open,
        "manifest": manifest,
        "cli": cli,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Spec:
    """What one field allows, read from its declaration."""

    name: str
    kind: type  # int, float, str or bool
    choices: Optional[Tuple[str, ...]]
    optional: bool  # None is allowed (and means "decided elsewhere", e.g. the manifest's tile)
    default: Any
    group: str
    help: str
    min: Optional[float]
    max: Optional[float]
    min_open: bool
    manifest: bool
    cli: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What a value must be, in words."""
        if self.choices:
            return " or ".join(
                [", ".join(self.choices[:-1]), self.choices[-1]] if len(self.choices) > 1 else self.choices
            )
        what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
        if self.min is not None and self.max is not None:
            return f"{what} in {self.min:g}..{self.max:g}"
        if self.min is not None:
            return f"{what} {'>' if self.min_open else '>='} {self.min:g}"
        return what

    def check(self, value: Any) -> Any:
        """The value as this field holds it, or a SettingsError naming the field."""
        if value is None and self.optional:
            return None
        bad = SettingsError(f"{self.name} must be {self.describe()}, got {value!r}", self.name)
        if self.choices:
            if value not in self.choices:
                raise bad
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind is int:
            if not float(value).is_integer():
                raise bad
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            raise bad
        if self.max is not None and value > self.max:
            raise bad
        return value


def _spec(f: Any, hint: Any) -> Spec:
    optional = get_origin(hint) is Union and type(None) in get_args(hint)
    if optional:
        hint = next(a for a in get_args(hint) if a is not type(None))
    choices = tuple(get_args(hint)) if get_origin(hint) is Literal else None
    kind = str if choices else hint
    return Spec(name=f.name, kind=kind, choices=choices, optional=optional, default=f.default, **f.metadata)


_SPECS: Dict[type, Dict[str, Spec]] = {}


def specs(cls: type) -> Dict[str, Spec]:
    """Each field's Spec, in declaration order (read once per class)."""
    if cls not in _SPECS:
        hints = get_type_hints(cls)
        out = {}
        for f in fields(cls):
            if f.default is MISSING or "group" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with option()")
            out[f.name] = _spec(f, hints[f.name])
        _SPECS[cls] = out
    return _SPECS[cls]


def unknown_name(name: str, known: Any, what: str = "option") -> SettingsError:
    """An unknown name, with the nearest known one when there is one close enough."""
    near = difflib.get_close_matches(name, list(known), n=1)
    return SettingsError(f"unknown {what} {name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""), name)
