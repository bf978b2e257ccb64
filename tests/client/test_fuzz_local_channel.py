"""Fuzz: the local socket between a site's ClientApp processes and its worker.

Random and mutated frames, hostile documents and frames over the limit: each end either gets a
document or a `ChannelError` with one clear line; the worker answers every bad request with an
error and keeps serving; a frame over the limit is refused from its length prefix alone.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from pathlib import Path

import pytest
from fuzzing import FUZZ, hostile_values, no_hang, random_or_mutated
from hypothesis import given
from hypothesis import strategies as st

from fedseal.client.local_channel import (
    ChannelError,
    LocalChannelServer,
    call,
    decode_body,
    encode_frame,
    parse_answer,
    parse_request,
    socket_path,
)
from fedseal.contract.wire import MessageType

VALID = encode_frame(
    {"stage": "train", "run_id": 7, "fields": {"blob": b"\x00\xff", "n": [1, 2], "s": "x"}}
)[4:]
LIMIT = 4096


def _echo(operation: str, run_id: int, fields: dict) -> tuple[dict, dict]:
    return {"operation": operation, "run_id": run_id}, {}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    path = socket_path(tmp_path_factory.mktemp("channel"))
    server = LocalChannelServer(path, _echo, max_frame_bytes=LIMIT).start()
    yield path
    server.close()


def _raw_exchange(path: Path, raw: bytes) -> dict | None:
    """Send raw bytes, half-close, and read one answer frame (None if the worker just closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if len(data) < 4:
        return None
    return decode_body(data[4:])


@FUZZ
@given(body=random_or_mutated(VALID))
def test_frame_bodies_decode_or_raise_channel_error(body):
    try:
        document = decode_body(body)
    except ChannelError:
        return
    assert isinstance(document, dict)
    with contextlib.suppress(ChannelError):
        parse_request(document)


@FUZZ
@given(
    document=st.dictionaries(
        st.sampled_from(("stage", "run_id", "fields", "error", "result", "metrics", "x")),
        hostile_values(),
        max_size=5,
    )
)
def test_hostile_documents_are_channel_errors(document):
    for parse in (parse_request, parse_answer):
        try:
            parse(document)
        except ChannelError as exc:
            assert "\n" not in str(exc)


@FUZZ
@given(data=st.data())
def test_worker_answers_every_bad_request_and_keeps_serving(worker, data):
    body = data.draw(random_or_mutated(VALID))
    length = data.draw(st.sampled_from((len(body), 0, len(body) + 5, 2**32 - 1, LIMIT + 1)))
    with no_hang(15):
        answer = _raw_exchange(worker, struct.pack(">I", length) + body)
        assert answer is None or set(answer) in ({"error"}, {"result", "metrics"})
        if length > LIMIT:
            assert answer is not None and "exceeds the limit of 4096" in answer["error"]
        result, _ = call(worker, MessageType.IDENTIFY, 3, {}, max_frame_bytes=LIMIT)
    assert result == {"operation": MessageType.IDENTIFY, "run_id": 3}


def test_oversize_request_is_refused_before_sending(worker):
    with pytest.raises(ChannelError, match=r"frame of \d+ bytes exceeds the limit of 4096"):
        call(worker, MessageType.TRAIN, 1, {"update": b"\x00" * 8192}, max_frame_bytes=LIMIT)


def test_oversize_request_is_refused_by_the_worker_from_its_length(worker):
    """The worker reads only the length prefix of a frame over its limit, then answers."""
    answer = _raw_exchange(worker, struct.pack(">I", 10**9) + b"{")
    assert answer is not None
    assert answer["error"] == "frame of 1000000000 bytes exceeds the limit of 4096 bytes"


def _hostile_worker(path: Path, frames: list[bytes]) -> threading.Thread:
    """A fake worker that answers each connection with the next raw frame."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        with server:
            for frame in frames:
                connection, _ = server.accept()
                with connection:
                    connection.settimeout(5)
                    try:
                        connection.recv(1 << 20)
                        connection.sendall(frame)
                    except OSError:
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


ANSWER = json.dumps({"result": {"u": {"__bytes__": "AAE="}}, "metrics": {"loss": 1.0}}).encode()


@FUZZ
@given(body=random_or_mutated(ANSWER))
def test_client_survives_a_hostile_worker(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("hostile") / "site.sock"
    frames = [struct.pack(">I", len(body)) + body]
    thread = _hostile_worker(path, frames)
    with no_hang(15):
        try:
            result, metrics = call(
                path, MessageType.TRAIN, 1, {}, timeout_s=5, max_frame_bytes=LIMIT
            )
        except ChannelError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(result, dict) and isinstance(metrics, dict)
    thread.join(5)
