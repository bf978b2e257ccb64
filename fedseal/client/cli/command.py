"""What every fl-client command shares: its name and options on the command line, and one line
per message on stderr.

fl-client has one parser (its options may come before or after the command's name, as people
and scripts already write them); each command declares the options only it reads, so a
command given another's option says so in one line instead of ignoring it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["PROG", "Command", "say"]

PROG = "fl-client"


@dataclass(frozen=True)
class Command:
    """One fl-client command.

    `add_arguments` adds the options only this command reads and returns their actions;
    `run` does the command for a loaded site config.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], list[argparse.Action]]
    run: Callable[[SiteConfig, argparse.Namespace], int]
    reads: tuple[str, ...] = ()
    """Another command's options (by dest) this one reads too, e.g. export's `--run`."""


def say(message: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
