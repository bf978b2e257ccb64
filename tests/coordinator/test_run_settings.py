"""Run settings: validated before any site trains."""

from __future__ import annotations

import pytest

from fedseal.contract.limits import DEFAULT_KEY_ROUNDS
from fedseal.coordinator.run_settings import RunSettings, RunSettingsError, default_run_config


def config(**overrides):
    overrides.setdefault("coordinator_state", "/var/lib/fedseal/coordinator")
    return default_run_config(
        database_url="sqlite:///x.db", scenario="hospitals", labels=["a", "b"], **overrides
    )


def test_defaults_are_valid_and_summary_hides_the_database() -> None:
    settings = RunSettings.from_run_config(config())
    assert settings.mode == "he+ss" and settings.rounds == 3
    assert settings.key_rounds == DEFAULT_KEY_ROUNDS == 8
    assert settings.public_summary()["key_rounds"] == DEFAULT_KEY_ROUNDS
    assert "database" not in str(settings.public_summary())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "he-lite"}, "not available"),
        ({"coordinator_state": ""}, "coordinator-state"),
        ({"clip": 0.0}, "clip"),
        ({"rounds": 0}, "rounds"),
        ({"min_sites": 0}, "min-sites"),
        ({"round_timeout": 0.0}, "round-timeout"),
        ({"steps": 0}, "steps"),
        ({"sparse_above": -1}, "sparse-above"),
        ({"sparse_above": 70_000}, "sparse-above"),
        ({"neighbours": 7}, "neighbours"),
        ({"neighbours": -2}, "neighbours"),
        ({"key_rounds": 0}, "key-rounds"),
        ({"key_rounds": 65}, "key-rounds"),
    ],
)
def test_bad_values_are_refused(overrides, message) -> None:
    with pytest.raises(RunSettingsError, match=message):
        RunSettings.from_run_config(config(**overrides))


def test_a_single_label_is_refused() -> None:
    broken = config()
    broken["labels"] = '["only-one"]'
    with pytest.raises(RunSettingsError, match="two distinct labels"):
        RunSettings.from_run_config(broken)


def test_unknown_override_and_missing_key() -> None:
    with pytest.raises(RunSettingsError, match="unknown run setting"):
        config(colour="blue")
    broken = config()
    del broken["rounds"]
    with pytest.raises(RunSettingsError, match="missing 'rounds'"):
        RunSettings.from_run_config(broken)


def test_the_neighbour_graph_settings_are_read_and_recorded() -> None:
    defaults = RunSettings.from_run_config(config())
    assert (defaults.sparse_above, defaults.neighbours) == (50, 0)
    settings = RunSettings.from_run_config(config(sparse_above=20, neighbours=8))
    assert (settings.sparse_above, settings.neighbours) == (20, 8)
    summary = settings.public_summary()
    assert (summary["sparse_above"], summary["neighbours"]) == (20, 8)


def test_a_run_config_without_the_graph_keys_keeps_the_planner_defaults() -> None:
    older = config()
    del older["sparse-above"], older["neighbours"]
    settings = RunSettings.from_run_config(older)
    assert (settings.sparse_above, settings.neighbours) == (50, 0)


def test_the_collusion_bound_is_read_checked_and_recorded() -> None:
    assert RunSettings.from_run_config(config()).max_colluding == -1  # a minority
    settings = RunSettings.from_run_config({**config(), "max-colluding": 2})
    assert settings.public_summary()["max_colluding"] == 2
    with pytest.raises(RunSettingsError, match="max-colluding"):
        RunSettings.from_run_config({**config(), "max-colluding": -5})
