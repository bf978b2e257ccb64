"""A coordinator that rewrites its own messages, through the real round loop and site workers:
every site refuses, the registry records the round with the sites' reasons, and no site
uploaded anything."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from inprocess_federation import InProcessGrid, run_inprocess

from fedseal.client.site_keys import SitePublicKeys
from fedseal.wire import Key, RecordName

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
        if kind == "train":
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

    from fedseal.client.secure_stages import decode_directory, encode_directory

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
