"""The site accepts only fedseal's own Flower App: the check, and where it sits in the SuperNode.

The bundles here are built the way `flwr run` builds them (`write_app` or a hand-written app
folder, then Flower's `build_fab_from_disk`). The SuperNode part runs Flower 1.41's own
`_pull_and_store_message` with the check around it, against a real NodeState and ObjectStore.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import ErrorCode
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supernode import start_client_internal
from flwr.supernode.nodestate import NodeStateFactory

from fedseal.client import app_pin
from fedseal.client.app_pin import (
    AppPinError,
    FabRefused,
    check_fab,
    check_run,
    expected_fab,
    install_app_pin,
)
from fedseal.client.site_config import load_site_config
from fedseal.client.supernode import SUPERNODE_MODULE, supernode_command
from fedseal.contract.app_bundle import CLIENT_APP, write_app
from fedseal.coordinator.run_settings import default_run_config


def _run_config(**overrides: Any) -> dict[str, Any]:
    return default_run_config(
        database_url="sqlite:////srv/registry.db",
        scenario="hospitals",
        labels=["I10", "E11.9", "J45.909", "ünïcode"],
        **overrides,
    )


def _fedseal_fab(folder: Path, run_config: dict[str, Any]) -> bytes:
    """What fedseal's coordinator submits: write_app, then Flower's builder (as `flwr run`)."""
    return build_fab_from_disk(write_app(folder, run_config))


def _edited_fab(folder: Path, edit, extra_files: dict[str, str] | None = None) -> bytes:
    """fedseal's app folder with its pyproject edited and files added, built by Flower."""
    write_app(folder, _run_config())
    pyproject = folder / "pyproject.toml"
    document = tomllib.loads(pyproject.read_text())
    edit(document)
    pyproject.write_text(tomli_w.dumps(document))
    for name, text in (extra_files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return build_fab_from_disk(folder)


def _app(document: dict[str, Any]) -> dict[str, Any]:
    return document["tool"]["flwr"]["app"]


@pytest.mark.parametrize(
    "run_config",
    [
        _run_config(),
        _run_config(mode="plain", rounds=1, clip=0.1 + 0.2, round_timeout=1e-7),
        {},
        {"nested": {"a": 1, "b": 2.5, "c": True}, "quote": 'he said "hi"\n'},
    ],
    ids=["defaults", "plain", "empty", "odd-values"],
)
def test_fedseal_s_own_fab_is_accepted(tmp_path: Path, run_config: dict[str, Any]) -> None:
    fab = _fedseal_fab(tmp_path / "app", run_config)
    digest = hashlib.sha256(fab).hexdigest()
    assert check_fab(fab, digest) == digest
    assert expected_fab(run_config) == fab  # the builder is deterministic


def test_the_fedseal_fab_carries_no_code() -> None:
    with zipfile.ZipFile(io.BytesIO(expected_fab(_run_config()))) as archive:
        assert archive.namelist() == ["pyproject.toml", ".info/CONTENT"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}


def test_a_foreign_clientapp_component_is_refused(tmp_path: Path) -> None:
    def edit(document: dict[str, Any]) -> None:
        _app(document)["components"]["clientapp"] = "mallory.client_app:app"

    with pytest.raises(FabRefused, match=r"clientapp component is 'mallory.client_app:app'"):
        check_fab(_edited_fab(tmp_path, edit))


def test_extra_python_files_are_refused_even_under_fedseal_s_own_component(
    tmp_path: Path,
) -> None:
    """The app folder comes first on the ClientApp's import path: a bundled
    `fedseal/client/client_app.py` would run instead of the installed one."""
    fab = _edited_fab(
        tmp_path,
        lambda document: None,
        {"fedseal/__init__.py": "", "fedseal/client/client_app.py": "import os\n"},
    )
    with pytest.raises(FabRefused, match=r"carries files .*fedseal/client/client_app\.py"):
        check_fab(fab)


def test_a_changed_publisher_is_refused(tmp_path: Path) -> None:
    def edit(document: dict[str, Any]) -> None:
        _app(document)["publisher"] = "mallory"

    with pytest.raises(FabRefused, match=r"publisher is 'mallory', not 'fedseal'"):
        check_fab(_edited_fab(tmp_path, edit))


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["project"].__setitem__("dependencies", ["requests"]), "project.dependencies"),
        (lambda d: d["project"].__setitem__("version", "9.9.9"), "project.version"),
        (lambda d: d["project"].__setitem__("name", "other-run"), "project.name"),
        (lambda d: _app(d)["components"].__setitem__("agentapp", "x:app"), "components.agentapp"),
        (lambda d: d["build-system"]["requires"].append("evil"), "build-system.requires"),
    ],
    ids=["dependency", "version", "name", "agentapp", "build-requires"],
)
def test_anything_else_fedseal_would_not_write_is_refused(tmp_path: Path, edit, where: str) -> None:
    with pytest.raises(FabRefused, match=rf"not the app fedseal builds.*differs at .*{where}"):
        check_fab(_edited_fab(tmp_path, edit))


def test_the_same_pyproject_in_another_archive_is_refused(tmp_path: Path) -> None:
    fab = _fedseal_fab(tmp_path, _run_config())
    with zipfile.ZipFile(io.BytesIO(fab)) as original:
        members = [(i.filename, original.read(i)) for i in original.infolist()]
    repacked = io.BytesIO()
    with zipfile.ZipFile(repacked, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    with pytest.raises(FabRefused, match="laid out differently"):
        check_fab(repacked.getvalue())


def test_malformed_bundles_are_refused(tmp_path: Path) -> None:
    fab = _fedseal_fab(tmp_path, _run_config())
    with pytest.raises(FabRefused, match="claimed digest"):
        check_fab(fab, "0" * 64)
    with pytest.raises(FabRefused, match="not a zip archive"):
        check_fab(b"PK\x03\x04 not really")
    with pytest.raises(FabRefused, match="larger than any fedseal app bundle"):
        check_fab(b"\0" * (app_pin.MAX_FAB_BYTES + 1))
    only_content = io.BytesIO()
    with zipfile.ZipFile(only_content, "w") as archive:
        archive.writestr(".info/CONTENT", "")
    with pytest.raises(FabRefused, match=r"no pyproject\.toml"):
        check_fab(only_content.getvalue())


def _run(fab: bytes, **changes: Any) -> Run:
    run = dataclasses.replace(
        Run.create_empty(7),
        fab_id="fedseal/fedseal-run",
        fab_version="1.0.0",
        fab_hash=hashlib.sha256(fab).hexdigest(),
    )
    return dataclasses.replace(run, **changes)


def _fab(content: bytes) -> Fab:
    return Fab(hashlib.sha256(content).hexdigest(), content, {})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"fab_version": "1.0.0/../../../elsewhere"}, "version '1.0.0/../../../elsewhere'"),
        ({"fab_id": "mallory/fedseal-run"}, "app 'mallory/fedseal-run'"),
        ({"fab_hash": "ab" * 32}, "its run names FAB abab"),
        ({"primary_task_type": TaskType.AGENT_APP}, "AgentApp run"),
    ],
    ids=["version-path", "fab-id", "fab-hash", "agent-app"],
)
def test_the_run_record_must_name_fedseal_s_app(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    content = _fedseal_fab(tmp_path, _run_config())
    assert check_run(_run(content), _fab(content)) == hashlib.sha256(content).hexdigest()
    with pytest.raises(FabRefused, match=reason):
        check_run(_run(content, **changes), _fab(content))


# --- inside Flower's SuperNode ------------------------------------------------------------


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch):
    """Flower's `_pull_and_store_message` with fedseal's check installed (undone after)."""
    monkeypatch.setattr(
        start_client_internal,
        "_pull_and_store_message",
        start_client_internal._pull_and_store_message,
    )
    install_app_pin()
    install_app_pin()  # idempotent: wrapped once
    return start_client_internal._pull_and_store_message


def _pull_one(pull_and_store, content: bytes, run: Run | None = None):
    """One message of a new run through the SuperNode's receive path; the state afterwards."""
    objects = ObjectStoreFactory()
    state = NodeStateFactory(objectstore_factory=objects).state()
    store = objects.store()
    state.set_node_id(3)
    message = Message(
        RecordDict({"config": ConfigRecord({"x": 1})}),
        metadata=Metadata(
            run_id=7,
            message_id="",
            src_node_id=1,
            dst_node_id=3,
            reply_to_message_id="",
            group_id="",
            created_at=1.0,
            ttl=3600.0,
            message_type="query",
        ),
    )
    message.metadata.__dict__["_message_id"] = message.object_id
    contents = {k: v.deflate() for k, v in get_all_nested_objects(message).items()}
    fab = _fab(content)
    fetched: list[str] = []
    run_id = pull_and_store(
        state=state,
        object_store=store,
        node_config={"site": "hospital_a", "config": "/srv/site.toml"},
        receive=lambda: (message, get_object_tree(message)),
        get_run=lambda run_id: run or _run(content),
        get_fab=lambda fab_hash, run_id: fetched.append(fab_hash) or fab,
        pull_object=lambda run_id, object_id: contents[object_id],
        confirm_message_received=lambda run_id, message_id: None,
        trusted_entities=None,
    )
    return run_id, state, fetched


def test_the_supernode_stores_fedseal_s_app(pinned, tmp_path: Path) -> None:
    content = _fedseal_fab(tmp_path, _run_config())
    run_id, state, _ = _pull_one(pinned, content)
    assert run_id == 7
    assert state.get_run(7) is not None
    assert state.get_fab(hashlib.sha256(content).hexdigest()).content == content
    assert not state.get_messages_legacy(is_reply=True)


def test_the_supernode_refuses_a_foreign_app_before_storing_it(
    pinned, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def edit(document: dict[str, Any]) -> None:
        _app(document)["components"]["clientapp"] = "mallory.client_app:app"

    content = _edited_fab(tmp_path, edit)
    run_id, state, fetched = _pull_one(pinned, content)
    assert run_id == 7 and fetched == [hashlib.sha256(content).hexdigest()]
    # nothing the ClientApp process could install or run: no run, no FAB, no task
    assert state.get_run(7) is None
    assert state.get_fab(hashlib.sha256(content).hexdigest()) is None
    [reply] = state.get_messages_legacy(is_reply=True)
    assert reply.has_error() and reply.error.code == ErrorCode.INVALID_FAB
    assert "the site refused this app" in reply.error.reason
    assert "mallory.client_app:app" in reply.error.reason
    # one line at the site naming what it refused
    [record] = [r for r in caplog.records if "refused the Flower App" in r.getMessage()]
    line = record.getMessage()
    assert record.levelname == "ERROR" and "\n" not in line
    assert "site hospital_a" in line and "run 7" in line and "'mallory.client_app:app'" in line
    assert "nothing of it was installed or run" in line


def test_a_run_record_pointing_elsewhere_is_refused_in_the_supernode(
    pinned, tmp_path: Path
) -> None:
    content = _fedseal_fab(tmp_path, _run_config())
    _, state, _ = _pull_one(pinned, content, _run(content, fab_version="1.0.0/../x"))
    assert state.get_run(7) is None
    [reply] = state.get_messages_legacy(is_reply=True)
    assert reply.error.code == ErrorCode.INVALID_FAB


def test_another_flower_version_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr

    monkeypatch.setattr(flwr, "__version__", "1.42.0")
    with pytest.raises(AppPinError, match=r"this is Flower 1\.42\.0"):
        install_app_pin()


def test_another_supernode_internal_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(start_client_internal, "_pull_and_store_message", lambda state: None)
    with pytest.raises(AppPinError, match="takes"):
        install_app_pin()


def test_the_site_starts_its_supernode_through_the_pin(tmp_path: Path) -> None:
    config_path = tmp_path / "site.toml"
    config_path.write_text(
        tomli_w.dumps(
            {
                "site": {"name": "hospital_a", "state_dir": str(tmp_path / "state")},
                "coordinator": {"address": "127.0.0.1:9092", "insecure": True},
                "data": {"source": "demo", "scenario": "hospitals", "num_sites": 3},
            }
        )
    )
    command = supernode_command(load_site_config(config_path), 45678)
    assert command[:3] == [sys.executable, "-m", SUPERNODE_MODULE]
    assert "--trusted-entities" not in command and "--runtime-dependency-install" not in command
    assert CLIENT_APP == "fedseal.client.client_app:app"
    shown = subprocess.run(
        [*command[:3], "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: flower-supernode") and "--superlink" in shown.stdout
