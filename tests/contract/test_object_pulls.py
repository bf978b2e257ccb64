"""Every receiver of a stage's messages asks again for a missing object within milliseconds,
not after Flower's 1 s first backoff (fedseal.contract.object_pulls)."""

from __future__ import annotations

import importlib
import sys
import time
import types

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from fedseal.contract import object_pulls
from fedseal.contract.object_pulls import FlowerMismatch, install_quick_object_pulls

RECEIVERS = {
    object_pulls.COORDINATOR_PULLS: "pull_objects",
    object_pulls.SUPERNODE_PULLS: "pull_objects",
    object_pulls.CLIENTAPP_PULLS: "pull_and_inflate_object_from_tree",
}


def _late_object(misses: int) -> object:
    """A pull function whose object is unavailable `misses` times (still being pushed)."""
    state = {"asks": 0}

    def pull(object_id: str) -> bytes:
        state["asks"] += 1
        if state["asks"] <= misses:
            raise ObjectUnavailableError(object_id)
        return b"content"

    return pull


@pytest.fixture
def flower_pullers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's own pullers in every receiver module, put back after the test."""
    for module_name, name in RECEIVERS.items():
        module = importlib.import_module(module_name)
        monkeypatch.setattr(module, name, getattr(inflatable_utils, name))


@pytest.mark.usefixtures("flower_pullers")
@pytest.mark.parametrize("module_name", sorted(RECEIVERS))
def test_every_receiver_is_made_quick_once(module_name: str) -> None:
    module = importlib.import_module(module_name)
    quick = install_quick_object_pulls(module_name)
    assert getattr(module, RECEIVERS[module_name]) is quick
    assert quick.__wrapped__ is getattr(inflatable_utils, RECEIVERS[module_name])  # type: ignore[attr-defined]
    assert install_quick_object_pulls(module_name) is quick  # idempotent


@pytest.mark.usefixtures("flower_pullers")
def test_an_object_still_on_its_way_costs_milliseconds() -> None:
    module = importlib.import_module(object_pulls.COORDINATOR_PULLS)
    install_quick_object_pulls(object_pulls.COORDINATOR_PULLS)
    started = time.monotonic()
    contents = module.pull_objects(["abc"], pull_object_fn=_late_object(misses=2))
    assert contents == {"abc": b"content"}
    assert time.monotonic() - started < 0.5  # Flower's own backoff: 0.8 + 1.6 s at least


@pytest.mark.usefixtures("flower_pullers")
def test_the_clientapp_passes_the_quick_waits_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, float] = {}

    def flower_inflate(*args: object, **kwargs: float) -> str:
        seen.update(kwargs)
        return "message"

    module = importlib.import_module(object_pulls.CLIENTAPP_PULLS)
    monkeypatch.setattr(inflatable_utils, "pull_and_inflate_object_from_tree", flower_inflate)
    monkeypatch.setattr(module, "pull_and_inflate_object_from_tree", flower_inflate)
    install_quick_object_pulls(object_pulls.CLIENTAPP_PULLS)
    assert module.pull_and_inflate_object_from_tree("tree", None, None) == "message"
    assert seen == {
        "initial_backoff": object_pulls.FIRST_BACKOFF_S,
        "backoff_cap": object_pulls.BACKOFF_CAP_S,
    }


@pytest.mark.usefixtures("flower_pullers")
def test_an_explicit_backoff_is_left_alone() -> None:
    quick = install_quick_object_pulls(object_pulls.COORDINATOR_PULLS)
    started = time.monotonic()
    quick(["abc"], pull_object_fn=_late_object(misses=1), initial_backoff=0.3)
    assert time.monotonic() - started >= 0.2


def test_a_module_with_another_puller_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fake_grid")
    fake.pull_objects = lambda *a, **k: {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, object_pulls.COORDINATOR_PULLS, fake)
    with pytest.raises(FlowerMismatch, match="does not pull objects"):
        install_quick_object_pulls(object_pulls.COORDINATOR_PULLS)
    with pytest.raises(FlowerMismatch, match="not one of the receivers"):
        install_quick_object_pulls("fake_grid")
