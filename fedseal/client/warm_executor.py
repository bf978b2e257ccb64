"""Starts the site's ClientApp for each message from a process that has already imported it.

Flower 1.41's SuperNode, in its default `subprocess` isolation, runs `flower-superexec`, which
asks the SuperNode for work once a second and starts a fresh `flwr-clientapp` interpreter for
every message: about a second of polling and two seconds of imports (Flower, then fedseal's
relay) before each stage of a round even begins, six times per round in `he+ss`.

fedseal runs its SuperNode in Flower's `process` isolation instead, where the SuperNode only
serves its runtime API and an executor of the site's choosing takes the tasks. This is that
executor: it asks for `flwr-clientapp` tasks only (anything else the coordinator might send is
never started), asks at once when its SuperNode writes a byte on the wake pipe (a message has
arrived: `supernode_main.ExecutorWake`), else every `poll_s` while the site is busy (within
`BUSY_WINDOW_S` of its last task; every `IDLE_POLL_S` otherwise), and runs each task in a
child forked from a forkserver that preloaded Flower's ClientApp runner and fedseal's relay.
Each message still gets a process of its own (a crash in one cannot touch the next) and runs
Flower's own `run_clientapp`, so what the ClientApp receives, checks and replies is
unchanged. The site's secrets stay where they were: in the long-lived `fl-client` worker, not
here (docs/decisions.md, "Warm ClientApp").

`python -m fedseal.client.warm_executor --runtime-api-address HOST:PORT --parent-pid PID
[--wake-fd FD]`
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import ForkServerContext
from typing import Any, Protocol

__all__ = [
    "BUSY_WINDOW_S",
    "CLIENT_APP_TASK",
    "IDLE_POLL_S",
    "POLL_S",
    "PRELOAD",
    "RETRY_S",
    "WOKEN_POLL_S",
    "TaskSource",
    "WakePipe",
    "main",
    "run_task",
    "runtime_client",
    "serve",
    "take_task",
]

POLL_S = 0.05
"""Seconds between asks for a task while the site is busy, without a wake pipe."""

WOKEN_POLL_S = 0.5
"""The same with a wake pipe: the pipe brings each message at once, so the poll only covers a
wake that was lost. Asking every 50 ms cost ten sites about a third of a core in HTTP calls."""

IDLE_POLL_S = 1.0
"""Seconds between asks when the site had no task for `BUSY_WINDOW_S` (Flower's SuperExec's)."""

RETRY_S = 5.0
"""How long one ask for a task retries an unreachable SuperNode before `serve` checks that the
SuperNode still runs (Flower's retries back off 1, 2, 4 s, so an ask gives up within ~8 s)."""

BUSY_WINDOW_S = 120.0
"""The stages of a round follow each other within seconds; a quiet site costs nothing."""

PRELOAD = ("flwr.supernode.runtime.run_clientapp", "fedseal.client.client_app")
"""What every ClientApp process needs, imported once in the forkserver."""

CLIENT_APP_TASK = "flwr-clientapp"
"""Flower's task type for a ClientApp run (flwr.supercore.constant.TaskType.CLIENT_APP)."""


def run_task(runtime_api_address: str, token: str, parent_pid: int) -> None:
    """One ClientApp run in this (forked) process: Flower's own runner, then exit."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    from fedseal.contract.object_pulls import CLIENTAPP_PULLS, install_quick_object_pulls

    install_quick_object_pulls(CLIENTAPP_PULLS)  # the task may start before its message is whole

    run_clientapp(
        runtime_api_address=runtime_api_address,
        token=token,
        insecure=True,
        parent_pid=parent_pid,
    )


def _context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    context.set_forkserver_preload(list(PRELOAD))
    return context


class TaskSource(Protocol):
    """The SuperNode's runtime API, as far as this executor uses it."""

    def AcquireTask(self, request: Any) -> Any:
        """The next task waiting to be launched, if any (Flower's AcquireTask)."""

    def close(self) -> None:
        """Release the connection."""


def runtime_client(runtime_api_address: str) -> TaskSource:
    """Flower's runtime API client for the SuperNode on this machine (loopback, no TLS)."""
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    client: TaskSource = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=_bounded(make_simple_http_retry_invoker()),
    )
    return client


def _bounded(invoker: Any) -> Any:
    """Flower's runtime-API retries, given up after `RETRY_S`: unbounded, they kept an
    executor whose SuperNode had died asking forever (an orphan per crash); `serve` asks
    again itself while its SuperNode lives."""
    invoker.max_time = RETRY_S
    return invoker


def take_task(source: TaskSource) -> str | None:
    """Ask for one ClientApp task; its token, or None when none waits.

    Only `flwr-clientapp` is asked for, and a reply of any other type is dropped unlaunched:
    the coordinator cannot make this site start an AgentApp or any other task process.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest

    reply = source.AcquireTask(AcquireTaskRequest(supported_task_types=[CLIENT_APP_TASK]))
    if not (reply.HasField("task") and reply.token):
        return None
    if reply.task.type != CLIENT_APP_TASK:
        print(
            f"fedseal clientapp executor: refused a task of type {reply.task.type!r}",
            file=sys.stderr,
            flush=True,
        )
        return None
    return str(reply.token)


def serve(
    runtime_api_address: str,
    parent_pid: int,
    poll_s: float = POLL_S,
    source: TaskSource | None = None,
    launch: Callable[[str], None] | None = None,
    wake_fd: int | None = None,
) -> None:
    """Take the SuperNode's ClientApp tasks until the SuperNode (parent_pid) ends; a byte on
    `wake_fd` ends a wait at once."""
    if launch is None:
        context = _context()

        def launch(token: str) -> None:
            context.Process(
                target=run_task, args=(runtime_api_address, token, parent_pid), name="clientapp"
            ).start()

    client = source or runtime_client(runtime_api_address)
    wait = WakePipe(wake_fd).wait
    last_task = time.monotonic()
    try:
        while _alive(parent_pid):
            try:
                token = take_task(client)
            except Exception as exc:  # the SuperNode is starting or restarting: ask again
                _note_unreachable(exc)
                time.sleep(0.5)
                continue
            multiprocessing.active_children()  # reaps the ClientApp processes that ended
            if token is not None:
                launch(token)
                last_task = time.monotonic()
                continue
            busy = time.monotonic() - last_task < BUSY_WINDOW_S
            wait(poll_s if busy else max(poll_s, IDLE_POLL_S))
    finally:
        client.close()


class WakePipe:
    """The read end of the SuperNode's wake pipe: `wait` returns on a byte or after `timeout`.

    A byte written while the executor was asking stays in the pipe, so the next wait returns
    at once and that message is not missed. Without a pipe (`fd` None), or once the
    SuperNode's end closes, waits are plain sleeps (the executor then ends with its
    SuperNode)."""

    def __init__(self, fd: int | None) -> None:
        self.fd: int | None = fd

    def wait(self, timeout: float) -> None:
        if self.fd is None:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready and not os.read(self.fd, 4096):  # end of file: the SuperNode closed its end
            os.close(self.fd)
            self.fd = None


_unreachable_noted = False


def _note_unreachable(exc: Exception) -> None:
    global _unreachable_noted
    if not _unreachable_noted:
        _unreachable_noted = True
        print(
            f"fedseal clientapp executor: the SuperNode's runtime API does not answer yet "
            f"({type(exc).__name__}); retrying",
            file=sys.stderr,
            flush=True,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point started by the site's SuperNode process (fedseal.client.supernode_main)."""
    parser = argparse.ArgumentParser(prog="python -m fedseal.client.warm_executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--poll-s", type=float, default=None)
    parser.add_argument("--wake-fd", type=int, default=None)
    args = parser.parse_args(argv)
    if args.poll_s is not None:
        poll_s = args.poll_s
    else:
        poll_s = POLL_S if args.wake_fd is None else WOKEN_POLL_S
    try:
        serve(args.runtime_api_address, args.parent_pid, poll_s, wake_fd=args.wake_fd)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
