"""What every fedseal command line shares: user errors as one line and an exit code.

A mistake a person can fix (a wrong name, a bad file, a server that is down) must never show a
traceback; it is raised as `UserError` and printed as `PROG: error: MESSAGE`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["ExitCode", "UserError", "configure_logging", "run_cli", "with_own_scripts"]


class ExitCode:
    """Process exit codes shared by the fedseal commands."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    UNREACHABLE = 3
    CHILD_FAILED = 4
    REFUSED = 5
    INTERRUPTED = 130


class UserError(Exception):
    """An error the user can fix; printed as one line, never with a traceback."""

    def __init__(self, message: str, exit_code: int = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_cli(
    prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None
) -> int:
    """Run a command's main function, mapping user errors and Ctrl-C to exit codes."""
    try:
        return main(argv)
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return ExitCode.INTERRUPTED


def configure_logging(verbose: bool) -> None:
    """Plain, timestamped log lines on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def with_own_scripts(env: dict[str, str]) -> dict[str, str]:
    """`env` with this environment's scripts folder first on PATH.

    Flower's processes start each other by name (the SuperLink runs `flower-superexec`, the
    SuperNode `flwr-clientapp`), so they must find the ones installed beside this Python even
    when the virtual environment was never activated (`.venv/bin/fl-demo`).
    """
    scripts = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(part for part in (scripts, path) if part)
    return env
