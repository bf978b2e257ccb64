"""The local socket between a site's ClientApp processes and its long-lived `fl-client`.

A Unix socket inside a folder only the site's user can open (0700). Frames are a 4-byte
big-endian length and a JSON object; bytes travel base64-encoded. No pickle: the worker never
executes anything it is sent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import socketserver
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ChannelError", "LocalChannelServer", "call", "socket_path"]

_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
_BYTES_TAG = "__bytes__"

Handler = Callable[[str, int, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


class ChannelError(RuntimeError):
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
            return base64.b64decode(value[_BYTES_TAG], validate=True)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _send(sock: socket.socket, document: dict[str, Any]) -> None:
    body = json.dumps(_encode(document), separators=(",", ":")).encode()
    sock.sendall(_LENGTH.pack(len(body)) + body)


def _receive(sock: socket.socket) -> dict[str, Any]:
    header = _read_exactly(sock, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ChannelError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES} limit")
    document = json.loads(_read_exactly(sock, length))
    if not isinstance(document, dict):
        raise ChannelError("frame is not a JSON object")
    return _decode(document)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ChannelError("connection closed mid-frame")
        chunks.extend(chunk)
    return bytes(chunks)


def call(
    path: Path, operation: str, run_id: int, fields: dict[str, Any], *, timeout_s: float = 3600.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask the site's worker to perform `operation`; returns (result fields, metrics)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ChannelError(f"the site's fl-client is not reachable at {path}: {exc}") from None
        _send(sock, {"operation": operation, "run_id": run_id, "fields": fields})
        answer = _receive(sock)
    if "error" in answer:
        raise ChannelError(str(answer["error"]))
    return dict(answer.get("result", {})), dict(answer.get("metrics", {}))


class LocalChannelServer:
    """Serves `handler` on the site's socket in a background thread."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)
        outer_handler = handler

        class _RequestHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    request = _receive(self.request)
                    result, metrics = outer_handler(
                        str(request["operation"]), int(request["run_id"]), dict(request["fields"])
                    )
                    answer: dict[str, Any] = {"result": result, "metrics": metrics}
                except Exception as exc:  # every failure goes back as one line, never a crash
                    answer = {"error": " ".join(str(exc).split())[:2000] or type(exc).__name__}
                with contextlib.suppress(OSError):  # the ClientApp went away; nothing to tell
                    _send(self.request, answer)

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
