"""The `somner` command line (typer). Each command group lives in its own module; `commands` assembles them.

The assembled app is imported only when asked for (`main`, `from somner.cli import app`), so that a module of this
package can be used alone: the engine workers (`python -m somner worker`) start without importing the store
commands' SQLAlchemy and Alembic, and `somner serve` imports only what serving needs before it starts the default
model's engine (see serve_cmd.head_start_default_model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from somner.cli.commands import app as app


def main() -> None:
    import sys

    if sys.argv[1:2] == ["serve"]:  # (a cold start: the engine gets its head start sooner without the rest)
        from somner.cli.serve_cmd import standalone

        standalone(sys.argv[2:])
        return
    from somner.cli.commands import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from somner.cli.commands import app

        return app
    raise AttributeError(f"module 'somner.cli' has no attribute {name!r}")
