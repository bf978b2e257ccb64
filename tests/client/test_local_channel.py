"""The socket between ClientApp processes and the site's worker."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from fedseal.client.errors import SiteRefusal
from fedseal.client.local_channel import ChannelError, LocalChannelServer, call, socket_path
from fedseal.contract.wire import MessageType


def test_round_trip_with_bytes_and_lists(tmp_path: Path) -> None:
    seen = {}

    def handler(operation: str, run_id: int, fields: dict) -> tuple[dict, dict]:
        seen.update(operation=operation, run_id=run_id, fields=fields)
        return {"echo": fields["blob"], "many": fields["blobs"]}, {"loss": 0.5}

    path = socket_path(tmp_path)
    server = LocalChannelServer(path, handler).start()
    try:
        result, metrics = call(
            path, "train", 7, {"blob": b"\x00\xff", "blobs": [b"a", b"b"], "n": 3}
        )
    finally:
        server.close()
    assert result == {"echo": b"\x00\xff", "many": [b"a", b"b"]}
    assert metrics == {"loss": 0.5}
    assert seen["operation"] == "train" and seen["run_id"] == 7 and seen["fields"]["n"] == 3
    assert not path.exists()


def test_handler_errors_come_back_as_one_line(tmp_path: Path) -> None:
    def handler(operation: str, run_id: int, fields: dict) -> tuple[dict, dict]:
        raise ValueError("budget\nexhausted")

    path = socket_path(tmp_path)
    server = LocalChannelServer(path, handler).start()
    try:
        with pytest.raises(ChannelError, match="budget exhausted"):
            call(path, MessageType.TRAIN, 1, {})
    finally:
        server.close()


def test_every_failure_is_logged_at_the_site_before_it_is_sent(tmp_path: Path, caplog) -> None:
    failures = iter([SiteRefusal("round 3 was uploaded before"), KeyError("bug")])

    def handler(operation: str, run_id: int, fields: dict) -> tuple[dict, dict]:
        raise next(failures)

    path = socket_path(tmp_path)
    server = LocalChannelServer(path, handler).start()
    try:
        with caplog.at_level(logging.WARNING, "fedseal.client"):
            for _ in range(2):
                with pytest.raises(ChannelError):
                    call(path, MessageType.TRAIN, 1, {})
    finally:
        server.close()
    refusal, unexpected = caplog.records
    assert refusal.getMessage() == "refused: round 3 was uploaded before"
    assert refusal.exc_info is None  # an expected refusal is one line
    assert "unexpected error" in unexpected.getMessage() and unexpected.exc_info is not None


def test_socket_is_private_to_the_site(tmp_path: Path) -> None:
    path = socket_path(tmp_path / "state")
    server = LocalChannelServer(path, lambda *a: ({}, {})).start()
    try:
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    finally:
        server.close()


def test_unreachable_worker_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="not reachable"):
        call(socket_path(tmp_path), "identify", 1, {})


def test_long_state_paths_get_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    assert len(str(socket_path(deep))) < 108
