"""A coordinator that rewrites its own messages, through the real round loop and site workers:
every site refuses, the registry records the round with the sites' reasons, and no site
uploaded anything."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from inprocess_federation import InProcessGrid, run_inprocess

from fedseal.contract.site_identity import SitePublicKeys
from fedseal.contract.wire import Key, MessageType, RecordName

Rewrite = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def _lying_grid(rewrite: Rewrite) -> type[InProcessGrid]:
    class LyingGrid(InProcessGrid):
        """Rewrites the fields of each message before the site sees it."""

        def _handle(self, site, kind, message):  # type: ignore[override]
            config = message.content.config_records[RecordName.CONFIG]
            fields = rewrite(site, kind, dict(config.items()))
            for key in list(config.keys()):
                if key not in fields:
                    del config[key]
            for key, value in fields.items():
                config[key] = value
            return super()._handle(site, kind, message)

    return LyingGrid


def _no_uploads(outcome) -> None:
    for service in outcome.services.values():
        assert not service.uploads.rounds(outcome.grid.run_id)


def test_a_train_message_without_its_mode_is_refused_by_every_site(tmp_path: Path) -> None:
    def drop_mode(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind == MessageType.TRAIN:
            fields.pop(Key.MODE, None)
        return fields

    outcome = run_inprocess(
        tmp_path, mode="plain", sites=2, rounds=1, grid_class=_lying_grid(drop_mode)
    )
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) != "completed"
    reasons = {c.site: c.error or "" for c in round_.contributions}
    assert reasons and all("names no aggregation mode" in r for r in reasons.values()), reasons
    _no_uploads(outcome)


def test_a_directory_with_the_coordinators_own_key_stops_the_key_ceremony(
    tmp_path: Path,
) -> None:
    import os

    from fedseal.contract.site_identity import decode_directory, encode_directory

    intruder = SitePublicKeys("coordinator_site", os.urandom(32), os.urandom(32))

    def inject(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if Key.DIRECTORY in fields:
            directory = decode_directory(fields[Key.DIRECTORY])
            directory["coordinator_site"] = intruder
            fields[Key.DIRECTORY] = encode_directory(directory)
        return fields

    with pytest.raises(Exception, match=r"custodian .* failed.*not a member"):
        run_inprocess(tmp_path, mode="he+ss", sites=3, rounds=1, grid_class=_lying_grid(inject))
    for site_state in (tmp_path / "state").iterdir():
        assert not list(site_state.glob("runs/*/federation-key.json"))  # no key was kept


def test_a_train_message_delivered_twice_gets_one_upload(tmp_path: Path) -> None:
    replays: list = []

    class ReplayGrid(InProcessGrid):
        def _handle(self, site, kind, message):  # type: ignore[override]
            reply = super()._handle(site, kind, message)
            if kind == MessageType.TRAIN:
                replays.append(super()._handle(site, kind, message))
            return reply

    outcome = run_inprocess(tmp_path, mode="he+ss", sites=3, rounds=1, grid_class=ReplayGrid)
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) == "completed", round_.error  # the first delivery counts
    assert len(replays) == 3
    for replay in replays:
        assert replay.has_error() and "uploaded before" in replay.error.reason
    for service in outcome.services.values():
        assert service.uploads.rounds(outcome.grid.run_id) == {1}


def test_a_threshold_below_the_sites_pin_is_refused(tmp_path: Path) -> None:
    # the sites pinned "one site may collude" (k = 3 of 3); the coordinator plans k = 2
    outcome = run_inprocess(tmp_path, mode="he+ss", sites=3, rounds=1, manifest_colluding=1)
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) != "completed"
    reasons = [c.error or "" for c in round_.contributions]
    assert reasons and all("threshold k=2 is below 3" in r for r in reasons), reasons
    _no_uploads(outcome)


def test_a_sampled_set_with_invented_sites_is_refused(tmp_path: Path) -> None:
    def add_sybils(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if Key.SAMPLED in fields:
            sampled = json.loads(fields[Key.SAMPLED])
            fields[Key.SAMPLED] = json.dumps([*sorted(sampled)[:2], "sybil_1"])
        return fields

    outcome = run_inprocess(
        tmp_path, mode="he+ss", sites=3, rounds=1, grid_class=_lying_grid(add_sybils)
    )
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) != "completed"
    reasons = [c.error or "" for c in round_.contributions]
    assert reasons and all("'sybil_1' is not a member" in r for r in reasons), reasons
    _no_uploads(outcome)


def test_an_install_from_an_invented_custodian_is_refused(tmp_path: Path, caplog) -> None:
    def fake_custodian(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind == MessageType.INSTALL:
            fields[Key.CUSTODIAN] = "mallory"
        return fields

    with caplog.at_level(logging.WARNING):
        outcome = run_inprocess(
            tmp_path, mode="he+ss", sites=3, rounds=1, grid_class=_lying_grid(fake_custodian)
        )
    assert "refused: custodian 'mallory' is not a member" in caplog.text
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) != "completed"  # only the custodian holds the run's key
    _no_uploads(outcome)
    for site_state in (tmp_path / "state").iterdir():
        keys = list(site_state.glob("runs/*/federation-key.json"))
        assert len(keys) <= 1  # only the custodian's own, made by itself
