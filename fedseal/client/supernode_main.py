"""The site's SuperNode process: Flower's SuperNode, running only fedseal's ClientApp, quickly.

`python -m fedseal.client.supernode_main ARGS` is `flower-supernode ARGS` with four changes,
each to one named piece of Flower 1.41 (the app pin refuses any other Flower version):

- the app pin (`app_pin.install_app_pin`): only fedseal's own app bundle is accepted;
- quick object pulls (`fedseal.contract.object_pulls`): a message seen before all of it has
  arrived is asked for again within milliseconds, not after Flower's 1 s backoff;
- `process` isolation with fedseal's own executor (`warm_executor`): ClientApp processes are
  forked from one that already imported them, and no other task type is ever started;
- quick polling while a run is active (`QuickPolling`): Flower's SuperNode asks the SuperLink
  for a message every 3 s and checks for the ClientApp's reply every 0.5 s, fixed. Each stage
  of a round waits on both, so a round of six stages paid about 10 s for the SuperLink poll
  alone. Within `busy_window_s` of the site's last message it asks every `busy_poll_s`
  instead, and goes back to Flower's own interval when the federation is quiet. When a
  message has arrived it wakes the executor (`ExecutorWake`), which then need not poll the
  runtime API every 50 ms.

fl-client starts the SuperNode this way (`supernode.supernode_command`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from fedseal.client.app_pin import AppPinError, install_app_pin
from fedseal.contract.object_pulls import (
    SUPERNODE_PULLS,
    FlowerMismatch,
    install_quick_object_pulls,
)

__all__ = ["ExecutorWake", "QuickPolling", "install_quick_polling", "main", "runtime_api_port"]

_LOOP_MODULE = "flwr.supernode.start_client_internal"
_IDLE_SLEEP_S = 3.0
"""Flower 1.41's fixed wait after a poll of the SuperLink that brought no message."""

_QUICK = "_fedseal_quick_polling"


class QuickPolling:
    """Stands in for the `time` module inside Flower's SuperNode loop; only `sleep` differs.

    Flower's loop sleeps `_IDLE_SLEEP_S` after an empty poll of the SuperLink and shorter waits
    (0.5 s) while the ClientApp works on a message. A short wait means the site is busy: it
    marks the site active and is cut to `reply_poll_s`. The idle wait is cut to
    `next_poll_s` for `next_window_s` after the site was last active (the next stage of a
    round is pushed within about 0.1 s of the last site's reply, and a 0.2 s poll made every
    stage wait for it), to `busy_poll_s` until `busy_window_s` (a site waiting for slower sites
    to train), and after that it is Flower's own, so an idle site costs the SuperLink what it
    did before.
    """

    def __init__(
        self,
        busy_poll_s: float = 0.2,
        reply_poll_s: float = 0.05,
        busy_window_s: float = 120.0,
        clock: Any = time,
        next_poll_s: float = 0.1,
        next_window_s: float = 1.0,
        on_message: Callable[[], None] | None = None,
    ) -> None:
        self.on_message = on_message
        """Called once per message, at the loop's first wait for its reply (it is stored)."""
        self._waiting_reply = False
        self.busy_poll_s = busy_poll_s
        self.reply_poll_s = reply_poll_s
        self.busy_window_s = busy_window_s
        self.next_poll_s = next_poll_s
        self.next_window_s = next_window_s
        self._time = clock
        self._last_active = clock.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)

    def sleep(self, seconds: float) -> None:
        now = self._time.monotonic()
        if seconds < _IDLE_SLEEP_S:  # a message is stored and its reply awaited
            self._last_active = now
            if not self._waiting_reply and self.on_message is not None:
                self.on_message()
            self._waiting_reply = True
            self._time.sleep(min(seconds, self.reply_poll_s))
            return
        self._waiting_reply = False
        if now - self._last_active < self.next_window_s:
            self._time.sleep(min(seconds, self.next_poll_s))
        elif now - self._last_active < self.busy_window_s:
            self._time.sleep(min(seconds, self.busy_poll_s))
        else:
            self._time.sleep(seconds)


def install_quick_polling(polling: QuickPolling | None = None) -> QuickPolling:
    """Put `QuickPolling` in place of `time` inside Flower's SuperNode loop (idempotent)."""
    module: ModuleType = importlib.import_module(_LOOP_MODULE)
    current = getattr(module, "time", None)
    if isinstance(current, QuickPolling):
        return current
    if current is not time:
        raise AppPinError(f"Flower's {_LOOP_MODULE} does not use the time module as expected")
    quick = polling or QuickPolling()
    module.time = quick  # type: ignore[attr-defined]
    return quick


def runtime_api_port(argv: Sequence[str]) -> int:
    """The `--port` the SuperNode serves its runtime API on, else Flower's default."""
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    from flwr.supercore.constant import SUPERNODE_UVICORN_DEFAULT_PORT

    return int(SUPERNODE_UVICORN_DEFAULT_PORT)


class ExecutorWake:
    """The write end of a pipe to the ClientApp executor: one byte says a message is stored,
    so the executor asks for its task at once instead of polling the runtime API.

    The SuperNode's loop calls it while the supervising thread may swap the pipe (an executor
    restart): a lock keeps a write off a descriptor that was closed and perhaps reused."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._lock = threading.Lock()

    def attach(self, fd: int) -> None:
        with self._lock:
            self._fd = fd

    def close(self) -> None:
        """Detach the pipe and close its write end (the executor has ended)."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def __call__(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            # full (the executor has a wake pending anyway) or closed (it polls): nothing to do
            with contextlib.suppress(OSError):
                os.write(self._fd, b"\0")


def _run_executor(command: list[str], wake: ExecutorWake) -> int:
    """One run of the executor with a fresh wake pipe; its exit code."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        child = subprocess.Popen([*command, "--wake-fd", str(read_fd)], pass_fds=(read_fd,))
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    wake.attach(write_fd)
    try:
        return child.wait()
    finally:
        wake.close()


def _keep_executor_running(address: str, wake: ExecutorWake) -> None:
    """Start fedseal's ClientApp executor, and start it again if it fails (up to 5 times)."""

    def supervise() -> None:
        failures = 0
        while failures < 5:
            command = [
                sys.executable,
                "-m",
                "fedseal.client.warm_executor",
                "--runtime-api-address",
                address,
                "--parent-pid",
                str(os.getpid()),
            ]
            code = _run_executor(command, wake)
            if code <= 0:  # ended with its SuperNode, or stopped by a signal: shutting down
                return
            failures += 1
            print(
                f"fedseal supernode: the ClientApp executor ended (exit {code}); restarting",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1.0)
        print("fedseal supernode: the ClientApp executor keeps failing", file=sys.stderr)

    threading.Thread(target=supervise, name="clientapp-executor", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """`flower-supernode`, with the app pin, fedseal's executor and quick polling."""
    args = list(sys.argv[1:] if argv is None else argv)
    wake = ExecutorWake()
    try:
        install_app_pin()
        install_quick_polling(QuickPolling(on_message=wake))
        install_quick_object_pulls(SUPERNODE_PULLS)
        port = runtime_api_port(args)
    except (AppPinError, FlowerMismatch) as exc:
        print(f"fedseal supernode: {exc}", file=sys.stderr, flush=True)
        return 2
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if not {"-h", "--help", "--version", "-V"} & set(args):
        _keep_executor_running(f"127.0.0.1:{port}", wake)
    sys.argv = ["flower-supernode", *args, "--isolation", "process"]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
