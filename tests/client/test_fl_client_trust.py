"""`fl-client trust` and `fl-coordinator manifest`: a person pins a manifest they checked; every
mistake is one line and an exit code, and a pin is never lost or silently replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedseal.client.cli import main as fl_client
from fedseal.client.site_keys import create_site_keys
from fedseal.client.trust import PINNED_MANIFEST
from fedseal.contract.manifest import FederationManifest
from fedseal.coordinator.cli import main as fl_coordinator

SITES = ("hospital_a", "hospital_b")


def _config(folder: Path, name: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'[site]\nname = "{name}"\nstate_dir = "state/{name}"\n\n'
        '[coordinator]\naddress = "127.0.0.1:9"\n\n'
        '[data]\nsource = "demo"\nscenario = "hospitals"\nnum_sites = 3\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture()
def federation(tmp_path: Path):
    keys = {}
    for name in SITES:
        _config(tmp_path, name)
        create_site_keys(name, tmp_path / "state" / name)
        keys[name] = tmp_path / "state" / name / "keys" / "site-public-keys.json"
    return tmp_path, keys


def _manifest(tmp_path: Path, keys: dict[str, Path], out: str, *extra: str) -> tuple[Path, str]:
    path = tmp_path / out
    code = fl_coordinator(
        ["manifest", "--out", str(path), "--keys", *map(str, keys.values()), *extra]
    )
    assert code == 0
    return path, FederationManifest.from_bytes(path.read_bytes()).fingerprint


def _trust(tmp_path: Path, site: str, *args: str) -> int:
    return fl_client(["--site", site, "--config", str(tmp_path / f"{site}.toml"), "trust", *args])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_operator_writes_a_manifest_and_a_site_pins_it(federation, capsys) -> None:
    tmp_path, keys = federation
    path, fingerprint = _manifest(tmp_path, keys, "manifest.json")
    manifest = FederationManifest.from_bytes(path.read_bytes())
    assert set(manifest.members) == set(SITES) and manifest.max_colluding == 0  # (2 - 1) // 2
    assert [str(m) for m in manifest.modes] == ["he+ss"]
    assert _trust(tmp_path, "hospital_a", str(path), "--yes", fingerprint) == 0
    out = capsys.readouterr()
    assert fingerprint in out.out and "hospital_b" in out.out
    pinned = tmp_path / "state" / "hospital_a" / PINNED_MANIFEST
    assert pinned.read_bytes() == manifest.to_bytes()
    # pinning the same one again changes nothing; --check then shows the pin
    assert _trust(tmp_path, "hospital_a", str(path), "--yes", fingerprint) == 0
    code = fl_client(
        ["--site", "hospital_a", "--config", str(tmp_path / "hospital_a.toml"), "--check"]
    )
    assert code == 0
    assert f"manifest fedseal v1 pinned ({fingerprint}" in capsys.readouterr().err


def test_a_wrong_fingerprint_pins_nothing(federation, capsys) -> None:
    tmp_path, keys = federation
    path, _fingerprint = _manifest(tmp_path, keys, "manifest.json")
    assert _trust(tmp_path, "hospital_a", str(path), "--yes", "sha256:" + "0" * 64) == 2
    assert "fingerprint mismatch" in _error_line(capsys)
    assert not (tmp_path / "state" / "hospital_a" / PINNED_MANIFEST).exists()
    assert _trust(tmp_path, "hospital_a", str(path)) == 2  # no terminal, no --yes: no pin
    assert "confirm the fingerprint" in _error_line(capsys)


def test_a_damaged_or_foreign_manifest_is_one_line(federation, capsys) -> None:
    tmp_path, keys = federation
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json", encoding="utf-8")
    assert _trust(tmp_path, "hospital_a", str(damaged), "--yes", "x") == 2
    assert "not a fedseal manifest" in _error_line(capsys)
    assert _trust(tmp_path, "hospital_a", str(tmp_path / "missing.json"), "--yes", "x") == 2
    assert "cannot read" in _error_line(capsys)
    assert _trust(tmp_path, "hospital_a") == 2
    assert "needs the manifest FILE" in _error_line(capsys)
    only_b = {"hospital_b": keys["hospital_b"]}
    path, fingerprint = _manifest(tmp_path, only_b, "only-b.json")
    assert _trust(tmp_path, "hospital_a", str(path), "--yes", fingerprint) == 2
    assert "does not list this site" in _error_line(capsys)


def test_a_pin_is_replaced_only_by_a_later_version(federation, capsys) -> None:
    tmp_path, keys = federation
    first, fp1 = _manifest(tmp_path, keys, "v1.json")
    assert _trust(tmp_path, "hospital_a", str(first), "--yes", fp1) == 0
    pinned = tmp_path / "state" / "hospital_a" / PINNED_MANIFEST
    before = pinned.read_bytes()
    same_version, fp_same = _manifest(tmp_path, keys, "v1b.json", "--modes", "he+ss", "plain")
    assert _trust(tmp_path, "hospital_a", str(same_version), "--yes", fp_same) == 2
    assert "must be a later version" in _error_line(capsys)
    assert pinned.read_bytes() == before
    later, fp2 = _manifest(tmp_path, keys, "v2.json", "--version", "2")
    assert _trust(tmp_path, "hospital_a", str(later), "--yes", fp2) == 0
    assert json.loads(pinned.read_bytes())["version"] == 2


def test_a_damaged_pin_stops_the_site_in_one_line(federation, capsys) -> None:
    tmp_path, _keys = federation
    pinned = tmp_path / "state" / "hospital_a" / PINNED_MANIFEST
    pinned.parent.mkdir(parents=True)
    pinned.write_text("garbage", encoding="utf-8")
    code = fl_client(
        ["--site", "hospital_a", "--config", str(tmp_path / "hospital_a.toml"), "--check"]
    )
    assert code == 2
    assert "pinned manifest" in _error_line(capsys) and pinned.read_text() == "garbage"


def test_the_manifest_command_never_overwrites(federation, capsys) -> None:
    tmp_path, keys = federation
    path, _ = _manifest(tmp_path, keys, "manifest.json")
    before = path.read_bytes()
    code = fl_coordinator(["manifest", "--out", str(path), "--keys", *map(str, keys.values())])
    assert code == 2 and "nothing was overwritten" in _error_line(capsys)
    assert path.read_bytes() == before
    code = fl_coordinator(
        [
            "manifest",
            "--out",
            str(tmp_path / "x.json"),
            "--max-colluding",
            "2",
            "--keys",
            *map(str, keys.values()),
        ]
    )
    assert code == 2 and "max_colluding must be in 0..1" in _error_line(capsys)
