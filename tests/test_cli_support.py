"""What every fedseal command line shares."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fedseal.cli_support import with_own_scripts


def test_own_scripts_come_first_on_path_once() -> None:
    scripts = str(Path(sys.executable).parent)
    env = with_own_scripts({"PATH": "/usr/bin"})
    assert env["PATH"].split(os.pathsep) == [scripts, "/usr/bin"]
    assert with_own_scripts(dict(env))["PATH"] == env["PATH"]
    assert with_own_scripts({})["PATH"] == scripts
