"""What every command of the project shares: one-line errors, exit codes, ``-h``.

Click prints usage errors as three lines (usage, hint, error); a batch tool's users grep
logs, so every error here is one line ``NAME: error: ...``.  Exit codes: 0 all done,
1 some inputs failed, 2 usage, model or export error, 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
HELP = {"help_option_names": ["-h", "--help"]}


class CommandError(click.ClickException):
    """A command's failure before or instead of its work: one line, exit 2."""

    exit_code = EXIT_USAGE


def fail(name: str, message: str) -> NoReturn:
    """Print ``NAME: error: MESSAGE`` (its first line) and exit 2."""
    click.echo(f"{name}: error: {str(message).splitlines()[0] if str(message) else 'failed'}", err=True)
    sys.exit(EXIT_USAGE)


class _OneLine:
    name: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {**HELP, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)  # type: ignore[misc]
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            fail(self.name, e.format_message())
        except (click.Abort, KeyboardInterrupt):
            click.echo(f"{self.name}: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


class OneLineErrors(_OneLine, click.Command):
    """A command with one-line errors, the exit codes above and ``-h``."""


class OneLineGroup(_OneLine, click.Group):
    """A group of such commands (``diip-tune record|choose|score``)."""

    command_class = OneLineErrors


def parse_timesteps(text, option: str = "--timesteps"):
    """A comma-separated timesteps option's list, or None where it is not given."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise CommandError(f"{option} must be integers separated by commas, got {text!r}") from None
