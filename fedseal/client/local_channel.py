"""The local socket between a site's ClientApp processes and its long-lived `fl-client`.

A Unix socket inside a folder only the site's user can open (0700). Frames are a 4-byte
big-endian length and a JSON object; bytes travel base64-encoded. No pickle: the worker never
executes anything it is sent.

Both ends read the length first and refuse a frame over their limit (`max_frame_bytes`, from the
site config's `[limits]`) before reading or parsing its body; anything malformed (not JSON, too
deeply nested, bad base64, the wrong shape) is a `ChannelError` with one clear line, on either
side, and the worker answers it instead of crashing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import socketserver
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedseal.client.errors import SiteError
from fedseal.contract.wire import MessageType

__all__ = [
    "MAX_FRAME_BYTES",
    "ChannelError",
    "LocalChannelServer",
    "call",
    "decode_body",
    "encode_frame",
    "parse_answer",
    "parse_request",
    "socket_path",
]

log = logging.getLogger("fedseal.client")

_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Default frame limit (the site config's `[limits]` sets it from its message limit)."""
_BYTES_TAG = "__bytes__"
_READ_TIMEOUT_S = 60.0  # the worker waits this long for a request to arrive in full

Handler = Callable[[MessageType, int, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


class ChannelError(SiteError, RuntimeError):
    """The site's worker could not be reached or refused the request (reason in the message)."""


def socket_path(state_dir: Path) -> Path:
    """Where the site's worker listens (short enough for the 107-byte Unix socket limit)."""
    candidate = Path(state_dir).resolve() / "site.sock"
    if len(str(candidate)) <= 100:
        return candidate
    tag = hashlib.sha256(str(candidate).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fedseal-{tag}" / "site.sock"


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_BYTES_TAG}:
            encoded = value[_BYTES_TAG]
            if not isinstance(encoded, str):
                raise ChannelError("frame holds a bytes value that is not base64 text")
            try:
                return base64.b64decode(encoded, validate=True)
            except ValueError:
                raise ChannelError("frame holds a bytes value that is not valid base64") from None
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_frame(document: dict[str, Any], max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Length prefix and JSON body; a `ChannelError` when the body is over the limit."""
    try:
        body = json.dumps(_encode(document), separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"cannot send this message over the local channel: {exc}") from None
    if len(body) > max_frame_bytes:
        raise ChannelError(
            f"frame of {len(body)} bytes exceeds the limit of {max_frame_bytes} bytes"
        )
    return _LENGTH.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """A frame's JSON body as a document with its bytes restored, else `ChannelError`."""
    try:
        document = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise ChannelError("frame is nested too deeply") from None
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise ChannelError("frame is not valid JSON") from None
    if not isinstance(document, dict):
        raise ChannelError("frame is not a JSON object")
    try:
        return _decode(document)
    except RecursionError:
        raise ChannelError("frame is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _send(sock: socket.socket, document: dict[str, Any], max_frame_bytes: int) -> None:
    sock.sendall(encode_frame(document, max_frame_bytes))


def _receive(sock: socket.socket, max_frame_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """One frame; its length is checked against the limit before the body is read."""
    header = _read_exactly(sock, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > max_frame_bytes:
        raise ChannelError(f"frame of {length} bytes exceeds the limit of {max_frame_bytes} bytes")
    return decode_body(_read_exactly(sock, length))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        try:
            chunk = sock.recv(min(size - len(chunks), 1 << 20))
        except TimeoutError:
            raise ChannelError("timed out waiting for the rest of a frame") from None
        if not chunk:
            raise ChannelError("connection closed mid-frame")
        chunks.extend(chunk)
    return bytes(chunks)


def _drain(sock: socket.socket, seconds: float = 1.0) -> None:
    """Discard what a peer is still sending after its answer went out, for a bounded time.

    Closing a Unix socket with unread input resets it and the peer would lose the answer (for
    example the refusal of an oversize frame it is still writing).
    """
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline and sock.recv(1 << 20):
            pass


def parse_request(request: dict[str, Any]) -> tuple[MessageType, int, dict[str, Any]]:
    """(stage, run id, fields) of a request document, else `ChannelError`."""
    run_id = request.get("run_id")
    fields = request.get("fields")
    if "stage" not in request:
        raise ChannelError("request names no stage")
    try:
        stage = MessageType.parse(request["stage"])
    except ValueError as exc:
        raise ChannelError(str(exc)) from None
    if isinstance(run_id, bool) or not isinstance(run_id, int) or not 0 <= run_id < 2**64:
        raise ChannelError("request has no valid run id")
    if not isinstance(fields, dict):
        raise ChannelError("request fields are not an object")
    return stage, run_id, fields


def parse_answer(answer: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result, metrics) of an answer document; its error, or a malformed answer, raised."""
    if "error" in answer:
        raise ChannelError(" ".join(str(answer["error"]).split())[:2000] or "worker failed")
    result = answer.get("result", {})
    metrics = answer.get("metrics", {})
    if not isinstance(result, dict) or not isinstance(metrics, dict):
        raise ChannelError("the site's worker sent a malformed answer")
    return dict(result), dict(metrics)


def call(
    path: Path,
    stage: MessageType,
    run_id: int,
    fields: dict[str, Any],
    *,
    timeout_s: float = 3600.0,
    max_frame_bytes: int = MAX_FRAME_BYTES,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask the site's worker to answer `stage`; returns (result fields, metrics)."""
    frame = encode_frame({"stage": stage, "run_id": run_id, "fields": fields}, max_frame_bytes)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ChannelError(f"the site's fl-client is not reachable at {path}: {exc}") from None
        try:
            sock.sendall(frame)
        except OSError as exc:  # the worker refused the frame and closed: read why
            sent_error = exc
        else:
            sent_error = None
        try:
            answer = _receive(sock, max_frame_bytes)
        except (ChannelError, OSError) as exc:
            reason = sent_error or exc
            raise ChannelError(f"the site's worker did not answer: {reason}") from None
    return parse_answer(answer)


def _log_failure(exc: Exception) -> None:
    """Log at the site what goes back to the coordinator as an error: a refusal in one line
    (a trust refusal logged itself), anything unexpected with its traceback."""
    from fedseal.client.trust import TrustRefusal

    if isinstance(exc, TrustRefusal):
        return
    if isinstance(exc, SiteError):
        log.warning("refused: %s", " ".join(str(exc).split()))
    else:
        log.error("unexpected error, sent to the coordinator as a refusal", exc_info=exc)


class LocalChannelServer:
    """Serves `handler` on the site's socket in a background thread."""

    def __init__(
        self, path: Path, handler: Handler, *, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)
        outer_handler = handler

        class _RequestHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    self.request.settimeout(_READ_TIMEOUT_S)
                    request = _receive(self.request, max_frame_bytes)
                    self.request.settimeout(None)
                    result, metrics = outer_handler(*parse_request(request))
                    answer: dict[str, Any] = {"result": result, "metrics": metrics}
                except Exception as exc:  # every failure goes back as one line, never a crash
                    _log_failure(exc)
                    answer = {"error": " ".join(str(exc).split())[:2000] or type(exc).__name__}
                with contextlib.suppress(OSError, ChannelError):  # the ClientApp went away
                    try:
                        _send(self.request, answer, max_frame_bytes)
                    except ChannelError as exc:  # e.g. a result over the limit
                        _send(self.request, {"error": str(exc)}, max_frame_bytes)
                    _drain(self.request)

        self._server = socketserver.ThreadingUnixStreamServer(str(path), _RequestHandler)
        self._server.daemon_threads = True
        os.chmod(path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LocalChannelServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)
