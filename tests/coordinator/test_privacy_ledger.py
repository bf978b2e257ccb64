"""Privacy ledger in the registry: migration 0002, append-only signed entries, per-site spend.

The chain those entries belong to, and the signature checks, are tests/coordinator/
test_ledger_chain.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_signing import SiteSigner
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from fedseal.registry import (
    Accountant,
    PrivacyEntryView,
    PrivacyStatus,
    RecordConflict,
    RecordNotFound,
    Registry,
    open_registry,
    upgrade_to_head,
)
from fedseal.registry.engine import create_registry_engine
from fedseal.registry.migrate import alembic_config, current_revision, head_revision
from fedseal.registry.schema import ChainLink, Event, PrivacyEntry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


SITES = ("a", "b", "hospital_a")


@pytest.fixture
def registry(
    registry_database_url: str, ledger_key: Ed25519PrivateKey, site_signer: SiteSigner
) -> Iterator[Registry]:
    opened = open_registry(registry_database_url, clock=lambda: T0, ledger_key=ledger_key)
    site_signer.enroll(opened, *SITES)
    yield opened
    opened.close()


@pytest.fixture
def engine(registry_database_url: str) -> Iterator[Engine]:
    created = create_registry_engine(registry_database_url)
    yield created
    created.dispose()


def _run(registry: Registry) -> int:
    return registry.start_run(
        scenario="hospitals",
        protocol_mode="plain",
        config={"dp": True},
        rounds_planned=3,
        flower_run_id=4100 + len(registry.list_runs()),
    )


def _entry(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": "charged",
        "noise_multiplier": 1.1,
        "sample_rate": 32 / 600,
        "steps": 20,
        "max_grad_norm": 1.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "epsilon_round": 0.61,
        "epsilon_cumulative": 0.61,
        "budget": 3.0,
    }
    values.update(overrides)
    return values


# -- migration -------------------------------------------------------------------------------


def test_migration_0002_adds_the_ledger_and_downgrades_to_0001(engine: Engine) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
    assert "privacy_ledger" in inspect(engine).get_table_names()
    columns = {c["name"]: c for c in inspect(engine).get_columns("privacy_ledger")}
    assert all(not c["nullable"] for c in columns.values())
    uniques = inspect(engine).get_unique_constraints("privacy_ledger")
    assert [u["column_names"] for u in uniques] == [["run_id", "round_number", "site_id"]]
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0001")
    with engine.connect() as connection:
        assert current_revision(connection) == "0001"
    tables = set(inspect(engine).get_table_names())
    assert "privacy_ledger" not in tables
    assert {"sites", "runs", "rounds", "contributions"} <= tables
    upgrade_to_head(engine)
    upgrade_to_head(engine)  # a second upgrade changes nothing
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    assert "privacy_ledger" in inspect(engine).get_table_names()


def test_rows_survive_reopening_the_registry(
    registry_database_url: str, ledger_key: Ed25519PrivateKey, site_signer: SiteSigner
) -> None:
    with open_registry(registry_database_url, ledger_key=ledger_key) as first:
        site_signer.enroll(first, "hospital_a")
        run_id = _run(first)
        first.record_privacy(
            **site_signer.signed(
                first, run_id=run_id, round_number=1, site="hospital_a", **_entry()
            )
        )
    with open_registry(registry_database_url) as second:  # reading needs no ledger key
        assert [e.site for e in second.privacy_ledger()] == ["hospital_a"]


# -- entries ---------------------------------------------------------------------------------


def test_an_entry_round_trips(registry: Registry, site_signer: SiteSigner) -> None:
    run_id = _run(registry)
    digest = "5e" * 32
    signed = site_signer.signed(
        registry,
        run_id=run_id,
        round_number=1,
        site="hospital_a",
        update_digest=digest,
        **_entry(),
    )
    entry_id = registry.record_privacy(**signed)
    (view,) = registry.privacy_ledger()
    head = registry.chain_head()
    assert head is not None and head[0] == entry_id
    assert view.entry_hash == head[1] and view.prev_hash is not None
    assert view.coordinator_signature is not None and len(view.coordinator_signature) == 64
    assert view == PrivacyEntryView(
        id=entry_id,
        site="hospital_a",
        run_id=run_id,
        round_number=1,
        status=PrivacyStatus.CHARGED,
        noise_multiplier=1.1,
        sample_rate=32 / 600,
        steps=20,
        max_grad_norm=1.0,
        delta=1e-5,
        accountant=Accountant.RDP,
        epsilon_round=0.61,
        epsilon_cumulative=0.61,
        budget=3.0,
        created_at=T0,
        update_digest=digest,
        site_signature=signed["site_signature"],
        prev_hash=view.prev_hash,
        entry_hash=view.entry_hash,
        coordinator_signature=view.coordinator_signature,
    )


def _record(registry: Registry, signer: SiteSigner, **arguments: Any) -> int:
    """Record a signed entry: run_id, round_number, site, then the report's fields."""
    return registry.record_privacy(**signer.signed(registry, **arguments))


def test_ledger_is_in_recording_order_and_filters_by_run_and_site(
    registry: Registry, site_signer: SiteSigner
) -> None:
    first, second = _run(registry), _run(registry)
    _record(registry, site_signer, run_id=first, round_number=1, site="b", **_entry())
    _record(registry, site_signer, run_id=first, round_number=1, site="a", **_entry())
    _record(
        registry,
        site_signer,
        run_id=second,
        round_number=1,
        site="a",
        **_entry(epsilon_cumulative=0.9),
    )
    ledger = registry.privacy_ledger()
    assert [(e.run_id, e.site) for e in ledger] == [(first, "b"), (first, "a"), (second, "a")]
    assert [e.site for e in registry.privacy_ledger(run_id=first)] == ["b", "a"]
    assert [e.run_id for e in registry.privacy_ledger(site="a")] == [first, second]
    assert registry.privacy_ledger(run_id=second, site="b") == []
    assert registry.privacy_ledger(site="nobody") == []


def test_a_repeated_report_is_recorded_once(registry: Registry, site_signer: SiteSigner) -> None:
    run_id = _run(registry)
    one = _record(registry, site_signer, run_id=run_id, round_number=2, site="a", **_entry())
    head = registry.chain_head()
    two = _record(registry, site_signer, run_id=run_id, round_number=2, site="a", **_entry())
    assert one == two
    assert len(registry.privacy_ledger()) == 1
    assert registry.chain_head() == head


@pytest.mark.parametrize(
    "change",
    [
        {"epsilon_cumulative": 0.7},
        {"status": "declined", "epsilon_round": 0.0},
        {"steps": 21},
        {"update_digest": "ab" * 32},
    ],
)
def test_an_entry_is_never_changed(
    registry: Registry, site_signer: SiteSigner, change: dict[str, Any]
) -> None:
    run_id = _run(registry)
    _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    with pytest.raises(RecordConflict):
        _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry(**change))
    (view,) = registry.privacy_ledger()
    assert view.epsilon_cumulative == 0.61 and view.status is PrivacyStatus.CHARGED


def test_the_registry_has_no_update_or_delete_path_for_the_ledger() -> None:
    public = {name for name in dir(Registry) if not name.startswith("_")}
    words = ("privacy", "epsilon", "exhaust", "event", "chain", "ledger")
    ledger_methods = {n for n in public if any(word in n for word in words)}
    assert ledger_methods == {
        "record_privacy",
        "record_privacy_audit",  # appends a signed site statement; never changes one
        "privacy_audits",
        "privacy_ledger",
        "site_epsilon_spent",
        "exhausted_sites",
        "events",
        "chain_head",
    }
    changing = ("update", "delete", "remove", "edit", "amend", "truncate", "prune", "reset")
    assert [n for n in public if any(word in n for word in changing)] == []


def test_ledger_rows_cannot_be_changed_through_the_orm(
    registry: Registry, site_signer: SiteSigner, engine: Engine
) -> None:
    run_id = _run(registry)
    _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    for model in (PrivacyEntry, Event, ChainLink):
        with Session(engine) as session, session.begin():
            row = session.scalars(select(model).limit(1)).one()
            session.delete(row)
            with pytest.raises(TypeError, match="insert-only"):
                session.flush()
            session.rollback()
    with Session(engine) as session, session.begin():
        entry = session.scalars(select(PrivacyEntry)).one()
        entry.epsilon_cumulative = 0.0
        with pytest.raises(TypeError, match="insert-only"):
            session.flush()
        session.rollback()
    assert registry.privacy_ledger()[0].epsilon_cumulative == 0.61


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"status": "spent"}, ValueError),
        ({"status": 1}, TypeError),
        ({"accountant": "gdp"}, ValueError),
        ({"noise_multiplier": 0.0}, ValueError),
        ({"noise_multiplier": float("nan")}, ValueError),
        ({"sample_rate": 1.5}, ValueError),
        ({"sample_rate": 0.0}, ValueError),
        ({"steps": 0}, ValueError),
        ({"steps": 2.5}, TypeError),
        ({"max_grad_norm": -1.0}, ValueError),
        ({"delta": 1.0}, ValueError),
        ({"epsilon_round": -0.1}, ValueError),
        ({"epsilon_cumulative": float("inf")}, ValueError),
        ({"budget": 0.0}, ValueError),
        ({"status": "declined"}, ValueError),  # declined but epsilon_round > 0
        ({"epsilon_round": True}, TypeError),
        ({"update_digest": "AB" * 32}, ValueError),
        ({"update_digest": "ab"}, ValueError),
        ({"update_digest": None}, TypeError),
        ({"site_signature": "signed"}, TypeError),
    ],
)
def test_bad_entries_are_refused(registry: Registry, change: dict[str, Any], error: type) -> None:
    run_id = _run(registry)
    unsigned = {"update_digest": "", "site_signature": bytes(64)}  # checked before the signature
    arguments = _entry(**unsigned) | change
    with pytest.raises(error):
        registry.record_privacy(run_id=run_id, round_number=1, site="a", **arguments)
    assert registry.privacy_ledger() == []


def test_an_unknown_run_is_refused(registry: Registry, site_signer: SiteSigner) -> None:
    with pytest.raises(RecordNotFound):
        registry.record_privacy(
            **site_signer.signed(
                registry, run_id=99, round_number=1, site="a", flower_run_id="99", **_entry()
            )
        )
    with pytest.raises(ValueError):
        registry.record_privacy(
            **site_signer.signed(
                registry, run_id=1, round_number=0, site="a", flower_run_id="1", **_entry()
            )
        )


# -- per-site spend --------------------------------------------------------------------------


def test_site_spend_follows_the_latest_charged_entry(
    registry: Registry, site_signer: SiteSigner
) -> None:
    run_id = _run(registry)
    assert registry.site_epsilon_spent("a") is None
    _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    _record(
        registry,
        site_signer,
        run_id=run_id,
        round_number=2,
        site="a",
        **_entry(epsilon_round=0.61, epsilon_cumulative=0.93),
    )
    _record(
        registry,
        site_signer,
        run_id=run_id,
        round_number=3,
        site="a",
        **_entry(status="declined", epsilon_round=0.0, epsilon_cumulative=0.93, budget=1.0),
    )
    _record(registry, site_signer, run_id=run_id, round_number=1, site="b", **_entry())
    assert registry.site_epsilon_spent("a") == pytest.approx(0.93)
    assert registry.site_epsilon_spent("b") == pytest.approx(0.61)
    assert registry.exhausted_sites(run_id) == ["a"]
    assert registry.exhausted_sites(_run(registry)) == []
