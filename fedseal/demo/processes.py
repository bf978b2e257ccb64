"""The child processes fl-demo starts, and the guarantee that they all stop with it.

Each child runs in its own process group with its output in a log file; on exit, Ctrl-C or
SIGTERM every group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["ManagedProcess", "ProcessGroup"]


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class ProcessGroup:
    """Starts named children and stops every one of them, whatever happens to the parent."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, ManagedProcess] = {}
        atexit.register(self.stop_all)

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            list(command),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        child = ManagedProcess(name, process, log_path, log_file)
        self.children[name] = child
        return child

    def stop(self, name: str, *, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
        child = self.children.pop(name, None)
        if child is None:
            return
        _stop_group(child.process, grace_s, sig)
        child.log_file.close()

    def stop_all(self, grace_s: float = 10.0) -> None:
        for name in list(self.children):
            self.stop(name, grace_s=grace_s)

    def dead(self) -> list[ManagedProcess]:
        return [c for c in self.children.values() if not c.alive()]


def _stop_group(process: subprocess.Popen[bytes], grace_s: float, sig: int) -> None:
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # leftovers of an exited leader
        return
    _kill_group(process.pid, sig)
    deadline = time.monotonic() + grace_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    _kill_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
