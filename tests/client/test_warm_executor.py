"""The site's ClientApp executor and the SuperNode's quick polling (fedseal.client.warm_executor,
fedseal.client.supernode_main): only ClientApp tasks start, and polling is quick only while busy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
from flwr.proto.runtime_pb2 import AcquireTaskResponse
from flwr.proto.task_pb2 import Task

from fedseal.client import supernode_main, warm_executor
from fedseal.client.app_pin import AppPinError
from fedseal.client.supernode_main import (
    ExecutorWake,
    QuickPolling,
    install_quick_polling,
    runtime_api_port,
)
from fedseal.client.warm_executor import CLIENT_APP_TASK, WakePipe, serve, take_task


@dataclass
class FakeRuntime:
    """The SuperNode's runtime API handing out the given replies, then nothing."""

    replies: list[AcquireTaskResponse]
    requests: list[object] = field(default_factory=list)
    closed: bool = False

    def AcquireTask(self, request: object) -> AcquireTaskResponse:
        self.requests.append(request)
        return self.replies.pop(0) if self.replies else AcquireTaskResponse()

    def close(self) -> None:
        self.closed = True


def _task(kind: str, token: str) -> AcquireTaskResponse:
    return AcquireTaskResponse(task=Task(task_id=7, type=kind), token=token)


def test_only_clientapp_tasks_are_asked_for_and_started() -> None:
    runtime = FakeRuntime([_task(CLIENT_APP_TASK, "t-1")])
    assert take_task(runtime) == "t-1"
    assert list(runtime.requests[0].supported_task_types) == [CLIENT_APP_TASK]
    assert take_task(runtime) is None  # nothing waiting


def test_a_task_of_another_type_is_never_started(capsys: pytest.CaptureFixture[str]) -> None:
    runtime = FakeRuntime([_task("flwr-agentapp", "t-agent"), _task(CLIENT_APP_TASK, "t-2")])
    assert take_task(runtime) is None
    assert "refused a task of type 'flwr-agentapp'" in capsys.readouterr().err
    assert take_task(runtime) == "t-2"


def test_serve_launches_each_clientapp_token_and_stops_with_its_supernode() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    runtime = FakeRuntime(
        [_task(CLIENT_APP_TASK, "a"), _task("flwr-serverapp", "x"), _task(CLIENT_APP_TASK, "b")]
    )
    launched: list[str] = []

    def launch(token: str) -> None:
        launched.append(token)
        if token == "b":
            parent.kill()
            parent.wait()

    serve("127.0.0.1:1", parent.pid, poll_s=0.01, source=runtime, launch=launch)
    assert launched == ["a", "b"]
    assert runtime.closed


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_quick_polling_is_quick_only_while_the_site_is_busy() -> None:
    clock = FakeClock()
    polling = QuickPolling(busy_poll_s=0.25, reply_poll_s=0.05, busy_window_s=10.0, clock=clock)
    polling.sleep(0.5)  # waiting for a ClientApp's reply: the site is busy
    assert clock.slept == [0.05]
    polling.sleep(3.0)  # the reply just went: the next stage is pushed within a moment
    assert clock.slept[-1] == polling.next_poll_s
    clock.now += polling.next_window_s  # other sites still at work: ask quickly, not as quickly
    polling.sleep(3.0)
    assert clock.slept[-1] == 0.25
    clock.now += 20.0  # quiet for longer than the window: Flower's own interval again
    polling.sleep(3.0)
    assert clock.slept[-1] == 3.0
    assert polling.monotonic() == clock.now  # everything else is the time module's


def test_quick_polling_goes_into_flowers_supernode_loop_once() -> None:
    import flwr.supernode.start_client_internal as loop

    installed = install_quick_polling()
    try:
        assert loop.time is installed
        assert install_quick_polling() is installed
    finally:
        loop.time = __import__("time")


def test_quick_polling_refuses_a_flower_whose_loop_it_does_not_know(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flwr.supernode.start_client_internal as loop

    monkeypatch.setattr(loop, "time", object())
    with pytest.raises(AppPinError, match="does not use the time module"):
        install_quick_polling()


def test_the_runtime_port_comes_from_the_command_line() -> None:
    assert runtime_api_port(["--superlink", "x:1", "--port", "45678"]) == 45678
    assert runtime_api_port(["--port=4567"]) == 4567
    assert runtime_api_port([]) == 9094  # Flower's default


def test_the_executor_preloads_the_clientapp_and_flowers_runner() -> None:
    assert "fedseal.client.client_app" in warm_executor.PRELOAD
    probe = subprocess.run(
        [sys.executable, "-c", "; ".join(f"import {m}" for m in warm_executor.PRELOAD)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
    )
    assert probe.returncode == 0, probe.stderr
    assert supernode_main.__doc__ and "process" in supernode_main.__doc__


def test_the_supernode_wakes_the_executor_once_per_message() -> None:
    """The loop's first wait for a reply means a message is stored: one wake, not one per
    0.05 s wait, and one again for the next message."""
    clock = FakeClock()
    woken: list[float] = []
    polling = QuickPolling(clock=clock, on_message=lambda: woken.append(clock.now))
    polling.sleep(3.0)  # an empty poll of the SuperLink
    assert woken == []
    for _ in range(4):  # a message: waiting for its reply
        polling.sleep(0.5)
    assert len(woken) == 1
    polling.sleep(3.0)  # replied, asks the SuperLink again
    polling.sleep(0.5)  # the next message
    assert len(woken) == 2


def test_a_wake_written_while_the_executor_was_asking_is_not_missed() -> None:
    read_fd, write_fd = os.pipe()
    wake, pipe = ExecutorWake(), WakePipe(read_fd)
    wake()  # not attached yet: nothing happens
    wake.attach(write_fd)
    wake()  # the executor is busy asking: the byte waits in the pipe
    started = time.monotonic()
    pipe.wait(5.0)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    pipe.wait(0.1)  # nothing pending: a plain wait
    assert time.monotonic() - started >= 0.09
    wake.close()  # the SuperNode ended: waits are sleeps, not a busy loop on end of file
    wake()  # and a wake after that writes nothing
    pipe.wait(0.01)
    assert pipe.fd is None
    started = time.monotonic()
    pipe.wait(0.05)
    assert time.monotonic() - started >= 0.04


def test_serve_takes_the_task_at_once_when_woken_though_its_poll_is_long() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    read_fd, write_fd = os.pipe()
    runtime = FakeRuntime([])
    launched: list[float] = []

    def launch(token: str) -> None:
        launched.append(time.monotonic())
        parent.kill()
        parent.wait()

    def message_arrives() -> None:
        time.sleep(0.3)
        runtime.replies.append(_task(CLIENT_APP_TASK, "t"))
        os.write(write_fd, b"\0")

    arrival = time.monotonic() + 0.3
    threading.Thread(target=message_arrives).start()
    serve("127.0.0.1:1", parent.pid, poll_s=20.0, source=runtime, launch=launch, wake_fd=read_fd)
    os.close(write_fd)
    assert launched and launched[0] - arrival < 1.0


def test_an_executor_whose_supernode_died_ends_instead_of_retrying_forever() -> None:
    """Flower's runtime-API client retries without limit; an executor kept asking a SuperNode
    that had been killed, an orphan per crash (found after the fault tests)."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    done = threading.Event()

    def run() -> None:
        serve(address, parent.pid, poll_s=0.05, launch=lambda token: None)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    parent.wait()
    assert done.wait(30.0), "the executor outlived its SuperNode by 30 s"
