"""`python -m somner`.

The gateway starts its engines as `python -m somner worker ...`: that command is dispatched before the rest of the
command line is imported (the store commands pull in SQLAlchemy and Alembic), which takes about a second off every
engine start and restart.
"""

import sys


def _run() -> None:
    if sys.argv[1:2] == ["worker"]:
        from somner.cli.worker_cmd import standalone

        standalone(sys.argv[2:])
        return
    from somner.cli import main

    main()


if __name__ == "__main__":
    _run()
