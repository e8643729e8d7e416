"""One-line errors for the project's commands, with documented exit codes.

Click prints usage errors as three lines (usage, hint, error); a batch tool's users grep
logs, so every error here is one line ``NAME: error: ...``.  Exit codes: 0 all done,
1 some inputs failed, 2 usage or model error, 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Any

import click

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class OneLineErrors(click.Command):
    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"{self.name}: error: {e.format_message().splitlines()[0]}", err=True)
            sys.exit(EXIT_USAGE)
        except (click.Abort, KeyboardInterrupt):
            click.echo(f"{self.name}: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)
