"""The `somner` command line (typer). Each command group lives in its own module; `commands` assembles them.

The assembled app is imported only when asked for (`main`, `from somner.cli import app`), so that a module of this
package can be used alone: the engine workers (`python -m somner worker`) start without importing the store
commands' SQLAlchemy and Alembic, and `somner serve` imports only what serving needs before it starts the default
model's engine (see serve_cmd.head_start_default_model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from somner.cli.commands import app as app


def main() -> None:
    import sys

    if sys.argv[1:2] == ["serve"]:  # (a cold start: the engine gets its head start sooner without the rest)
        from somner.cli.serve_cmd import standalone

        standalone(sys.argv[2:])
        return
    from somner.cli.commands import app

    run_app(app)


def run_app(app: typer.Typer, args: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run a typer app; a command line it cannot parse (an unknown command or option, a missing argument) is one
    line on stderr and exit status 2, not click's framed box."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # (typer vendors click)

    try:
        code = app(args=args, prog_name=prog_name, standalone_mode=False)
    except NoArgsIsHelpError as exc:  # (`somner` alone: the help)
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        typer.echo(f"error: {exc.format_message()}{hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def __getattr__(name: str) -> Any:
    if name == "app":
        from somner.cli.commands import app

        return app
    raise AttributeError(f"module 'somner.cli' has no attribute {name!r}")
