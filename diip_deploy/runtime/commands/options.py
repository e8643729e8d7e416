"""``diip-run``'s options, made from the settings' declarations and shown in groups.

Every ``RestoreSettings`` field that is offered on the command line becomes one click
option here, its type, choices, range and help read off the field; each defaults to
None ("not given") so that the export's defaults apply under the user's choices.  The
help lists options under the settings' group headings, so a newcomer finds the few that
matter (model, out, backend) before the tuning knobs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import click

from ...cli_common import OneLineErrors
from ...settings import GROUPS, RestoreSettings, SettingsError, Spec, specs


class GroupedOption(click.Option):
    """A click option that knows its help heading."""

    def __init__(self, *args: Any, group: str = "io", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(OneLineErrors):
    """A command whose ``-h`` lists options under the settings' group headings."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: Dict[str, List[Tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                rows.setdefault(getattr(param, "group", "io"), []).append(record)
        for group, title in GROUPS.items():
            if group in rows:
                with formatter.section(title):
                    formatter.write_dl(rows[group])


def click_type(spec: Spec) -> Any:
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.kind is int:
        return click.IntRange(min=spec.min, max=spec.max, min_open=spec.min_open)  # type: ignore[arg-type]
    if spec.kind is float:
        return click.FloatRange(min=spec.min, max=spec.max, min_open=spec.min_open)
    raise TypeError(f"{spec.name}: no command-line type for {spec.kind.__name__}")


def help_text(spec: Spec) -> str:
    if spec.manifest:
        return f"{spec.help} Default: the export's, else {spec.default}."
    if spec.default is not None and "Default" not in spec.help:
        return f"{spec.help} Default: {spec.default}."
    return spec.help


def _checked(spec: Spec) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback holding a given value to the field's own rule (NaN, infinity)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:  # not given: the export's default applies
            return None
        try:
            return spec.check(value)
        except SettingsError as e:
            raise click.BadParameter(str(e)) from None

    return check


def _field_option(spec: Spec, help: str, **extra: Any) -> Callable[[Callable], Callable]:
    """One settings field as a click option: its flag, type, range and check, None when not given."""
    return click.option(
        spec.flag, spec.name, type=click_type(spec), default=None, help=help, callback=_checked(spec), **extra
    )


def settings_options(settings_class: type = RestoreSettings) -> Callable[[Callable], Callable]:
    """A decorator that adds one option per command-line field of ``settings_class``."""

    def add(fn: Callable) -> Callable:
        for spec in reversed([s for s in specs(settings_class).values() if s.cli]):
            fn = _field_option(spec, help_text(spec), cls=GroupedOption, group=spec.group)(fn)
        return fn

    return add


def setting_option(name: str, note: str = "", settings_class: type = RestoreSettings) -> Callable[[Callable], Callable]:
    """One field of ``settings_class`` as diip-run declares it, for a command that offers a
    few of the settings rather than all; ``note`` adds what the field means to it."""
    spec = specs(settings_class)[name]
    return _field_option(spec, f"{help_text(spec)} {note}".strip())


def option(*args: Any, group: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """A command's own (non-settings) option under a help heading."""
    return click.option(*args, cls=GroupedOption, group=group, **kwargs)


def pop_settings(kwargs: Dict[str, Any], settings_class: type = RestoreSettings) -> Dict[str, Any]:
    """The settings' values out of a command's keyword arguments (None: not given)."""
    return {name: kwargs.pop(name) for name, spec in specs(settings_class).items() if spec.cli}
