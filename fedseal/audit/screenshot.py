"""Headless Chromium on a report: a screenshot, or the text a browser really shows.

For the docs' screenshot of a demo run's report and for tests that check what a reader sees
(not just what the HTML source says). It runs Debian's `/usr/bin/chromium` with no sandbox (it
runs as root in CI containers), no GPU, no network chatter and a throw-away profile; a report is
self-contained, so nothing needs to be fetched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fedseal.audit.errors import AuditError

__all__ = [
    "CHROMIUM",
    "ChromiumError",
    "capture",
    "chromium_command",
    "dump_dom",
]

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium package; scripts/test.sh installs it when missing."""

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class ChromiumError(AuditError, RuntimeError):
    """Chromium is missing, failed, or produced nothing."""


def chromium_command(
    target: str, user_data_dir: Path, extra: Sequence[str] = (), chromium: Path = CHROMIUM
) -> list[str]:
    """The command line for `target` (a URL or a file path) with the fixed headless flags."""
    if not Path(chromium).is_file():
        raise ChromiumError(
            f"{chromium} not found: install Debian's chromium (scripts/test.sh does)"
        )
    if "://" not in target:
        target = Path(target).absolute().as_uri()
    return [str(chromium), *_FLAGS, f"--user-data-dir={user_data_dir}", *extra, target]


def _run(target: str, extra: Sequence[str], timeout: float, chromium: Path) -> str:
    profile = Path(tempfile.mkdtemp(prefix="fedseal-chromium-"))
    try:
        command = chromium_command(target, profile, extra, chromium)
        environment = {**os.environ, "HOME": str(profile)}
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=environment,
            )
        except subprocess.TimeoutExpired:
            raise ChromiumError(f"chromium did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            tail = " ".join(done.stderr.split()[-40:])
            raise ChromiumError(f"chromium exited with {done.returncode}: {tail}")
        return done.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def capture(
    html_path: str | Path,
    png_path: str | Path,
    *,
    width: int = 1200,
    height: int = 1600,
    timeout: float = 90.0,
    chromium: Path = CHROMIUM,
) -> Path:
    """Screenshot of a report file (or a URL) into `png_path`; returns the PNG's path."""
    png = Path(png_path).absolute()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run(
        str(html_path),
        [f"--screenshot={png}", f"--window-size={width},{height}"],
        timeout,
        chromium,
    )
    if not png.is_file() or png.stat().st_size == 0:
        raise ChromiumError(f"chromium wrote no screenshot to {png}")
    return png


def dump_dom(target: str | Path, *, timeout: float = 90.0, chromium: Path = CHROMIUM) -> str:
    """The page's DOM after Chromium loaded and laid it out, as HTML text."""
    return _run(str(target), ["--dump-dom"], timeout, chromium)
