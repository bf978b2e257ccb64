"""The ledger chain in the registry (docs/ledger-format.md), on SQLite and PostgreSQL.

Migration 0003, events appended by the registry's own methods, the chain_started genesis,
statements refused without a valid site signature, the coordinator's ledger key, and
concurrent writers (threads, and two processes as two coordinators would be) that never fork
the chain. `_verify_chain` below recomputes a chain the way `fl-audit verify` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_signing import SiteSigner
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from fedseal.contract import ledger_codec
from fedseal.registry import (
    ChainBusy,
    ChainTable,
    EventAction,
    LedgerKeyMissing,
    PrivacyStatus,
    RecordConflict,
    RecordNotFound,
    Registry,
    StatementRefused,
    chain,
    entry_content,
    entry_rows,
    open_registry,
    upgrade_to_head,
)
from fedseal.registry import core as registry_core
from fedseal.registry.engine import create_registry_engine
from fedseal.registry.errors import AlreadyFinished
from fedseal.registry.ledger_key import (
    LEDGER_PUBLIC_KEY_FILE,
    LedgerKeyError,
    create_ledger_key,
    ledger_key_path,
    load_ledger_key,
    public_key_bytes,
)
from fedseal.registry.migrate import alembic_config, current_revision, head_revision
from fedseal.registry.schema import ChainLink

T0 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


class Ticking:
    """A clock one millisecond later at every call, so entries have distinct times."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def open_keyed(
    registry_database_url: str, ledger_key: Ed25519PrivateKey
) -> Iterator[Callable[..., Registry]]:
    """Opens registries on the test database, with the ledger key unless told otherwise."""
    opened: list[Registry] = []

    def _open(**kwargs: Any) -> Registry:
        kwargs.setdefault("ledger_key", ledger_key)
        kwargs.setdefault("clock", Ticking())
        registry = open_registry(registry_database_url, **kwargs)
        opened.append(registry)
        return registry

    yield _open
    for registry in opened:
        registry.close()


@pytest.fixture
def registry(open_keyed: Callable[..., Registry]) -> Registry:
    return open_keyed()


@pytest.fixture
def engine(registry_database_url: str) -> Iterator[Engine]:
    created = create_registry_engine(registry_database_url)
    yield created
    created.dispose()


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


def _run(registry: Registry, flower_run_id: str | None = "7001") -> int:
    return registry.start_run(
        scenario="hospitals",
        protocol_mode="he+ss",
        config={"dp": True},
        rounds_planned=3,
        flower_run_id=flower_run_id,
    )


def _record(registry: Registry, signer: SiteSigner, **arguments: Any) -> int:
    return registry.record_privacy(**signer.signed(registry, **arguments))


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _verify_chain(engine: Engine, coordinator_key: bytes) -> list[tuple[int, ChainTable]]:
    """Recompute the chain as an auditor would; returns (seq, table) of every entry."""
    with engine.connect() as connection:
        links = connection.execute(select(ChainLink.__table__).order_by(ChainLink.seq)).all()
        rows = {
            table: {row.id: row._mapping for row in connection.execute(entry_rows(table))}
            for table in ChainTable
        }
    assert [link.seq for link in links] == list(range(1, len(links) + 1))
    previous = ledger_codec.GENESIS_HASH
    for link in links:
        row = rows[link.table_name].pop(link.seq)
        content = entry_content(link.table_name, row)
        expected = ledger_codec.entry_hash(link.table_name, link.seq, previous, content)
        assert link.prev_hash == row["prev_hash"] == previous, link.seq
        assert link.entry_hash == row["entry_hash"] == expected, link.seq
        assert ledger_codec.verify_countersignature(
            coordinator_key, expected, row["coordinator_signature"]
        ), link.seq
        previous = expected
    outside = {table: [i for i in left if i > 0] for table, left in rows.items()}
    assert outside == {table: [] for table in ChainTable}  # ids <= 0 are legacy rows
    return [(link.seq, link.table_name) for link in links]


def _statement(row: Any) -> dict[str, Any]:
    """The statement a privacy row says its site signed, rebuilt from the row."""
    content = entry_content(ChainTable.PRIVACY_LEDGER, row)
    return {field: content[field] for field in ledger_codec.STATEMENT_FIELDS}


# -- the chain -------------------------------------------------------------------------------


def test_an_empty_registry_has_no_chain(registry: Registry) -> None:
    assert registry.chain_head() is None
    assert registry.events() == []


def test_the_first_entry_is_chain_started_with_the_coordinator_key(
    registry: Registry, ledger_key: Ed25519PrivateKey
) -> None:
    run_id = _run(registry)
    started, run_started = registry.events()
    assert (started.id, started.action) == (1, EventAction.CHAIN_STARTED)
    assert started.details == {"coordinator_key": _public(ledger_key).hex()}
    assert started.prev_hash == ledger_codec.GENESIS_HASH
    assert (started.site, started.run_id) == (None, None)
    assert run_started.id == 2 and run_started.prev_hash == started.entry_hash
    assert run_started.action is EventAction.RUN_STARTED and run_started.run_id == run_id
    assert run_started.details == {"flower_run_id": "7001", "mode": "he+ss", "rounds_planned": 3}
    assert registry.chain_head() == (2, run_started.entry_hash)
    assert ledger_codec.verify_countersignature(
        _public(ledger_key), started.entry_hash, started.coordinator_signature
    )


def test_a_federation_is_one_contiguous_chain_that_recomputes(
    registry: Registry,
    site_signer: SiteSigner,
    engine: Engine,
    ledger_key: Ed25519PrivateKey,
) -> None:
    site_signer.enroll(registry, "a", "b")
    registry.record_budget_change("a", 3.0)
    run_id = _run(registry)
    round_id = registry.start_round(run_id, 1, ["a", "b"])
    digest = ledger_codec.update_digest(b"update of a")
    _record(
        registry,
        site_signer,
        run_id=run_id,
        round_number=1,
        site="a",
        update_digest=digest,
        **_entry(),
    )
    _record(
        registry,
        site_signer,
        run_id=run_id,
        round_number=1,
        site="b",
        **_entry(status="declined", epsilon_round=0.0, epsilon_cumulative=2.9),
    )
    registry.record_contribution(round_id, "a", status="contributed", update_digest=digest)
    registry.record_contribution(round_id, "b", status="declined")
    registry.finish_round(round_id, status="completed")
    registry.revoke_site("b", "left the federation")
    registry.finish_run(run_id, status="completed")

    chain = _verify_chain(engine, _public(ledger_key))
    events, privacy = ChainTable.EVENTS, ChainTable.PRIVACY_LEDGER
    assert [table for _seq, table in chain] == [events] * 5 + [privacy] * 2 + [events] * 2
    assert [event.action for event in registry.events()] == [
        EventAction.CHAIN_STARTED,
        EventAction.SITE_ENROLLED,
        EventAction.SITE_ENROLLED,
        EventAction.BUDGET_CHANGED,
        EventAction.RUN_STARTED,
        EventAction.SITE_REVOKED,
        EventAction.RUN_FINISHED,
    ]
    ledger = registry.privacy_ledger()
    assert [entry.id for entry in ledger] == [6, 7]
    assert [entry.update_digest for entry in ledger] == [digest, ""]
    assert registry.rounds(run_id)[0].contributions[0].update_digest == digest
    with engine.connect() as connection:
        for row in connection.execute(entry_rows(privacy)):
            identity = site_signer.keys(row.site).public().identity
            assert ledger_codec.verify_statement(
                identity, _statement(row._mapping), row.site_signature
            )


def test_content_is_the_same_from_raw_driver_rows(
    registry: Registry, site_signer: SiteSigner, engine: Engine
) -> None:
    """An auditor reading with plain SQL (SQLite: naive timestamp text) hashes the same content."""
    site_signer.enroll(registry, "a")
    run_id = _run(registry)
    _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    raw_sql = {
        ChainTable.EVENTS: "SELECT * FROM events ORDER BY id",
        ChainTable.PRIVACY_LEDGER: (
            "SELECT p.*, s.name AS site, r.flower_run_id FROM privacy_ledger p "
            "JOIN sites s ON s.id = p.site_id JOIN runs r ON r.id = p.run_id ORDER BY p.id"
        ),
    }
    with engine.connect() as connection:
        for table, sql in raw_sql.items():
            typed = [
                entry_content(table, r._mapping) for r in connection.execute(entry_rows(table))
            ]
            raw = [entry_content(table, r._mapping) for r in connection.exec_driver_sql(sql)]
            assert raw == typed and typed


def test_a_changed_row_no_longer_recomputes(
    registry: Registry, site_signer: SiteSigner, engine: Engine, ledger_key: Ed25519PrivateKey
) -> None:
    site_signer.enroll(registry, "a")
    run_id = _run(registry)
    entry_id = _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    _verify_chain(engine, _public(ledger_key))
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE privacy_ledger SET epsilon_cumulative = 0.1 WHERE id = :id"),
            {"id": entry_id},
        )
    with pytest.raises(AssertionError, match=str(entry_id)):
        _verify_chain(engine, _public(ledger_key))


# -- events appended by the registry ----------------------------------------------------------


def test_enrolment_appends_the_keys_once_and_again_on_rekey(
    registry: Registry, site_signer: SiteSigner
) -> None:
    site_signer.enroll(registry, "a")
    site_signer.enroll(registry, "a")  # same keys: nothing new
    (enrolled,) = registry.events(site="a")
    keys = site_signer.keys("a").public()
    assert enrolled.action is EventAction.SITE_ENROLLED
    assert enrolled.details == {
        "identity_key": keys.identity.hex(),
        "sealing_key": keys.sealing.hex(),
    }
    site_signer.rekey("a")
    site_signer.enroll(registry, "a")
    first, second = registry.events(site="a")
    assert first == enrolled
    assert second.details["identity_key"] == site_signer.keys("a").public().identity.hex()
    assert registry.site_public_keys() == {"a": site_signer.bundle("a")}


def test_a_malformed_bundle_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="not a site key bundle"):
        registry.enroll_site("a", b"not a bundle")
    assert registry.chain_head() is None


def test_revocation_is_an_event_and_hides_the_key(
    registry: Registry, site_signer: SiteSigner
) -> None:
    site_signer.enroll(registry, "a", "b")
    registry.revoke_site("b", "certificate leaked")
    revoked = registry.events(site="b")[-1]
    assert revoked.action is EventAction.SITE_REVOKED
    assert revoked.details == {"reason": "certificate leaked"}
    assert set(registry.site_public_keys()) == {"a"}
    with pytest.raises(RecordConflict, match="already revoked"):
        registry.revoke_site("b", "again")
    with pytest.raises(RecordConflict, match="revoked"):
        site_signer.enroll(registry, "b")
    with pytest.raises(RecordNotFound):
        registry.revoke_site("nobody", "unknown")
    with pytest.raises(ValueError, match="reason"):
        registry.revoke_site("a", "  ")
    with pytest.raises(RecordConflict, match="revoked"):
        registry.start_round(_run(registry), 1, ["a", "b"])
    assert [e.action for e in registry.events(site="b")] == [
        EventAction.SITE_ENROLLED,
        EventAction.SITE_REVOKED,
    ]


def test_runs_start_and_finish_as_events(registry: Registry) -> None:
    run_id = _run(registry, flower_run_id=None)
    registry.finish_run(run_id, status="failed", error="no site connected")
    started, finished = registry.events(run_id=run_id)
    assert started.details == {"flower_run_id": None, "mode": "he+ss", "rounds_planned": 3}
    assert finished.action is EventAction.RUN_FINISHED
    assert finished.details == {"status": "failed", "error": "no site connected"}
    with pytest.raises(AlreadyFinished, match="already finished"):
        registry.finish_run(run_id, status="completed")
    assert len(registry.events(run_id=run_id)) == 2


def test_budget_changes_are_events(registry: Registry) -> None:
    registry.record_budget_change("new-site", 4)
    (changed,) = registry.events(site="new-site")
    assert changed.action is EventAction.BUDGET_CHANGED and changed.details == {"budget": 4.0}
    for bad, error in ((0.0, ValueError), (float("inf"), ValueError), ("3", TypeError)):
        with pytest.raises(error):
            registry.record_budget_change("new-site", bad)  # type: ignore[arg-type]
    assert len(registry.events(site="new-site")) == 1


# -- the coordinator's ledger key -------------------------------------------------------------


def test_without_the_ledger_key_nothing_is_appended_but_everything_reads(
    open_keyed: Callable[..., Registry], site_signer: SiteSigner
) -> None:
    keyed = open_keyed()
    site_signer.enroll(keyed, "a")
    run_id = _run(keyed)
    head = keyed.chain_head()
    keyless = open_keyed(ledger_key=None)
    attempts: list[Callable[[], object]] = [
        lambda: _run(keyless),
        lambda: keyless.finish_run(run_id, status="completed"),
        lambda: keyless.enroll_site("b", site_signer.bundle("b")),
        lambda: keyless.revoke_site("a", "test"),
        lambda: keyless.record_budget_change("c", 2.0),
        lambda: _record(keyless, site_signer, run_id=run_id, round_number=1, site="a", **_entry()),
    ]
    for attempt in attempts:
        with pytest.raises(LedgerKeyMissing, match="coordinator's ledger key"):
            attempt()
    assert keyless.chain_head() == head
    assert len(keyless.events()) == 3 and keyless.privacy_ledger() == []
    assert keyless.get_run(run_id).finished_at is None
    assert set(keyless.site_public_keys()) == {"a"}
    assert keyless.ensure_site("d") > 0  # not a chain entry: no key needed


def test_the_ledger_key_must_be_an_ed25519_key(registry_database_url: str) -> None:
    with pytest.raises(TypeError, match="Ed25519PrivateKey"):
        open_registry(registry_database_url, ledger_key=b"\x01" * 32)  # type: ignore[arg-type]


def test_the_ledger_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    key, made = create_ledger_key(tmp_path / "coordinator")
    again, made_again = create_ledger_key(tmp_path / "coordinator")
    assert (made, made_again) == (True, False)
    assert public_key_bytes(again) == public_key_bytes(key)
    path = ledger_key_path(tmp_path / "coordinator")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert len(path.read_bytes()) == 32
    public_file = path.parent / LEDGER_PUBLIC_KEY_FILE
    assert public_file.read_text().strip() == public_key_bytes(key).hex()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    assert public_key_bytes(load_ledger_key(tmp_path / "coordinator")) == public_key_bytes(key)


def test_a_bad_ledger_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerKeyError, match="no coordinator ledger key"):
        load_ledger_key(tmp_path)
    create_ledger_key(tmp_path)
    path = ledger_key_path(tmp_path)
    os.chmod(path, 0o640)
    with pytest.raises(LedgerKeyError, match="readable by other users"):
        load_ledger_key(tmp_path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(LedgerKeyError, match="damaged"):
        create_ledger_key(tmp_path)


# -- statements the registry refuses ----------------------------------------------------------


def _refused(registry: Registry, arguments: dict[str, Any], match: str) -> None:
    head = registry.chain_head()
    with pytest.raises(StatementRefused, match=match):
        registry.record_privacy(**arguments)
    assert registry.chain_head() == head
    assert registry.privacy_ledger() == []


def test_a_statement_signed_by_another_key_is_refused(
    registry: Registry, site_signer: SiteSigner
) -> None:
    site_signer.enroll(registry, "a")
    run_id = _run(registry)
    impostor = SiteSigner()
    forged = impostor.signed(registry, run_id=run_id, round_number=1, site="a", **_entry())
    _refused(registry, forged, "does not verify")


def test_a_statement_that_differs_from_what_was_signed_is_refused(
    registry: Registry, site_signer: SiteSigner
) -> None:
    site_signer.enroll(registry, "a")
    run_id = _run(registry)
    signed = site_signer.signed(registry, run_id=run_id, round_number=1, site="a", **_entry())
    _refused(registry, signed | {"epsilon_cumulative": 0.5}, "does not verify")
    _refused(registry, signed | {"round_number": 2}, "does not verify")
    _refused(registry, signed | {"update_digest": "ab" * 32}, "does not verify")
    other_run = site_signer.signed(
        registry, run_id=run_id, round_number=1, site="a", flower_run_id="9999", **_entry()
    )
    _refused(registry, other_run, "does not verify")
    _refused(registry, signed | {"site_signature": b"\x00" * 64}, "does not verify")
    _refused(registry, signed | {"site_signature": b""}, "does not verify")


def test_unknown_unenrolled_and_revoked_sites_are_refused(
    registry: Registry, site_signer: SiteSigner
) -> None:
    run_id = _run(registry)
    stranger = site_signer.signed(registry, run_id=run_id, round_number=1, site="x", **_entry())
    _refused(registry, stranger, "not enrolled")
    assert registry.ensure_site("x") > 0  # `x` was not registered by the refused statement
    _refused(registry, stranger, "not enrolled")
    site_signer.enroll(registry, "r")
    registry.revoke_site("r", "decommissioned")
    revoked = site_signer.signed(registry, run_id=run_id, round_number=1, site="r", **_entry())
    _refused(registry, revoked, "revoked")


def test_after_a_rekey_only_the_new_key_signs(registry: Registry, site_signer: SiteSigner) -> None:
    site_signer.enroll(registry, "a")
    run_id = _run(registry)
    old = site_signer.signed(registry, run_id=run_id, round_number=1, site="a", **_entry())
    site_signer.rekey("a")
    site_signer.enroll(registry, "a")
    _refused(registry, old, "does not verify")
    assert _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry()) > 0


def test_a_run_without_a_flower_id_cannot_check_statements(
    registry: Registry, site_signer: SiteSigner
) -> None:
    site_signer.enroll(registry, "a")
    run_id = _run(registry, flower_run_id=None)
    signed = site_signer.signed(
        registry, run_id=run_id, round_number=1, site="a", flower_run_id="5", **_entry()
    )
    _refused(registry, signed, "no Flower run id")
    registry.set_flower_run_id(run_id, 5)
    assert registry.record_privacy(**signed) > 0
    registry.set_flower_run_id(run_id, "5")  # the same id again is fine
    with pytest.raises(RecordConflict, match="signed for Flower run 5"):
        registry.set_flower_run_id(run_id, 6)


def test_a_repeat_is_a_no_op_and_a_different_report_a_conflict(
    registry: Registry, site_signer: SiteSigner
) -> None:
    site_signer.enroll(registry, "a")
    run_id = _run(registry)
    first = _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    head = registry.chain_head()
    again = _record(registry, site_signer, run_id=run_id, round_number=1, site="a", **_entry())
    assert again == first and registry.chain_head() == head
    with pytest.raises(RecordConflict, match="never changed"):
        _record(
            registry,
            site_signer,
            run_id=run_id,
            round_number=1,
            site="a",
            update_digest="cd" * 32,
            **_entry(),
        )
    assert registry.chain_head() == head and len(registry.privacy_ledger()) == 1


# -- concurrent writers -----------------------------------------------------------------------


def test_threads_appending_at_once_never_fork_the_chain(
    open_keyed: Callable[..., Registry], engine: Engine, ledger_key: Ed25519PrivateKey
) -> None:
    """From an empty chain, so they also race for the genesis entry."""
    registries = [open_keyed(), open_keyed()]  # two engines, each shared by threads
    workers, appends = 6, 5

    def work(worker: int) -> None:
        registry = registries[worker % 2]
        for number in range(appends):
            registry.record_budget_change(f"site-{worker}", 1.0 + number)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(workers)))
    chain = _verify_chain(engine, _public(ledger_key))
    assert len(chain) == 1 + workers * appends
    events = registries[0].events()
    assert [e.action for e in events].count(EventAction.CHAIN_STARTED) == 1
    for worker in range(workers):
        budgets = [e.details["budget"] for e in events if e.site == f"site-{worker}"]
        assert budgets == [1.0 + number for number in range(appends)]


def test_a_writer_that_loses_the_race_retries_on_the_new_head(
    open_keyed: Callable[..., Registry],
    engine: Engine,
    ledger_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministically: another coordinator appends between this one's head read and insert.

    On PostgreSQL the other append commits and this one retries on the new head. On SQLite a
    writer holds the write lock from BEGIN, so the other append cannot get in at all: it waits,
    and (with a short busy timeout here) gives up without writing.
    """
    if engine.dialect.name == "sqlite":
        _sqlite_has_no_race_to_lose(open_keyed, engine, ledger_key, monkeypatch)
        return
    first, second = open_keyed(), open_keyed()
    first.record_budget_change("a", 1.0)
    real_read_head = chain.read_head
    raced: list[object] = []

    def read_head_then_lose(session: Any) -> tuple[int, str] | None:
        head = real_read_head(session)
        if not raced:
            raced.append(head)
            second.record_budget_change("b", 2.0)  # commits at once, taking the next seq
        return head

    monkeypatch.setattr(chain, "read_head", read_head_then_lose)
    first.record_budget_change("a", 3.0)
    monkeypatch.undo()
    assert len(_verify_chain(engine, _public(ledger_key))) == 4
    assert [(e.site, e.details.get("budget")) for e in first.events()] == [
        (None, None),
        ("a", 1.0),
        ("b", 2.0),
        ("a", 3.0),
    ]


def _sqlite_has_no_race_to_lose(
    open_keyed: Callable[..., Registry],
    engine: Engine,
    ledger_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = open_keyed()
    first.record_budget_change("a", 1.0)
    impatient = open_registry(
        f"{engine.url.render_as_string(hide_password=False)}?timeout=0.2", ledger_key=ledger_key
    )
    real_read_head = chain.read_head
    refused: list[Exception] = []

    def read_head_while_another_tries(session: Any) -> tuple[int, str] | None:
        head = real_read_head(session)
        if not refused:
            with pytest.raises(Exception, match="locked") as caught:
                impatient.record_budget_change("b", 2.0)
            refused.append(caught.value)
        return head

    monkeypatch.setattr(chain, "read_head", read_head_while_another_tries)
    try:
        first.record_budget_change("a", 3.0)
    finally:
        monkeypatch.undo()
        impatient.close()
    assert refused
    assert len(_verify_chain(engine, _public(ledger_key))) == 3
    assert [(e.site, e.details.get("budget")) for e in first.events()] == [
        (None, None),
        ("a", 1.0),
        ("a", 3.0),
    ]


def test_a_chain_that_stays_busy_gives_up_and_writes_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.record_budget_change("a", 1.0)
    head = registry.chain_head()
    attempts: list[int] = []

    def always_taken(self: chain.ChainAppender, *args: Any, **kwargs: Any) -> int:
        attempts.append(1)
        raise chain.ChainCollision("taken")

    monkeypatch.setattr(chain.ChainAppender, "append", always_taken)
    monkeypatch.setattr(registry_core.time, "sleep", lambda _seconds: None)
    with pytest.raises(ChainBusy, match="nothing was written"):
        registry.start_run(scenario="s", protocol_mode="plain", config={}, rounds_planned=1)
    assert len(attempts) == registry_core.CHAIN_ATTEMPTS
    monkeypatch.undo()
    assert registry.chain_head() == head and registry.list_runs() == []


_COORDINATOR = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from fedseal.contract import ledger_codec
    from fedseal.registry.ledger_key import load_ledger_key
    from fedseal.registry import open_registry

    url, key_dir, site, run_id, appends, ready, go = sys.argv[1:]
    identity = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(os.environ["SITE_KEY"]))
    registry = open_registry(url, ledger_key=load_ledger_key(Path(key_dir)))
    flower_run_id = registry.get_run(int(run_id)).flower_run_id
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    for number in range(1, int(appends) + 1):
        fields = dict(
            status="charged", noise_multiplier=1.1, sample_rate=0.05, steps=10,
            max_grad_norm=1.0, delta=1e-5, accountant="rdp", epsilon_round=0.2,
            epsilon_cumulative=0.2 * number, budget=5.0, update_digest="",
        )
        statement = dict(fields, site=site, flower_run_id=flower_run_id, round_number=number)
        registry.record_privacy(
            run_id=int(run_id), round_number=number, site=site,
            site_signature=ledger_codec.sign_statement(identity, statement), **fields,
        )
        registry.record_budget_change(site, 5.0 + number)
    registry.close()
    """
)


def test_two_coordinator_processes_never_fork_the_chain(
    registry_database_url: str, site_signer: SiteSigner, engine: Engine, tmp_path: Path
) -> None:
    key_dir = tmp_path / "coordinator"
    key, _ = create_ledger_key(key_dir)
    with open_registry(registry_database_url, ledger_key=key) as registry:
        site_signer.enroll(registry, "p1", "p2")
        run_id = _run(registry)
        before = registry.chain_head()
    assert before is not None
    appends = 8
    processes = []
    for site in ("p1", "p2"):
        identity = site_signer.keys(site).identity.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        arguments = [registry_database_url, str(key_dir), site, str(run_id), str(appends)]
        arguments += [str(tmp_path / f"ready-{site}"), str(tmp_path / "go")]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", _COORDINATOR, *arguments],
                env=os.environ | {"SITE_KEY": identity.hex()},
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{site}").exists() for site in ("p1", "p2")):
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for process in processes:
        _out, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors

    chain = _verify_chain(engine, public_key_bytes(key))
    assert len(chain) == before[0] + 2 * 2 * appends
    with open_registry(registry_database_url) as reader:
        ledger = reader.privacy_ledger()
        assert len(ledger) == 2 * appends
        assert {entry.status for entry in ledger} == {PrivacyStatus.CHARGED}
        for site in ("p1", "p2"):
            rounds = [entry.round_number for entry in ledger if entry.site == site]
            assert rounds == list(range(1, appends + 1))


# -- migration 0003 ---------------------------------------------------------------------------


def _insert_legacy_rows(engine: Engine, count: int) -> None:
    """Privacy rows as a registry at revision 0002 wrote them (site `a`, run 1)."""
    stamp = "'2026-01-01 00:00:00.000000'"  # SQLite: naive UTC, as the registry stores it
    if engine.dialect.name == "postgresql":
        stamp = "'2026-01-01 00:00:00+00'"
    with engine.begin() as connection:
        connection.execute(
            text(f"INSERT INTO sites (name, created_at, status) VALUES ('a', {stamp}, 'active')")
        )
        connection.execute(
            text(
                "INSERT INTO runs (flower_run_id, scenario, protocol_mode, config, status, "
                "rounds_planned, started_at) VALUES ('7001', 'hospitals', 'plain', '{}', "
                f"'running', 3, {stamp})"
            )
        )
        for number in range(1, count + 1):
            connection.execute(
                text(
                    "INSERT INTO privacy_ledger (site_id, run_id, round_number, status, "
                    "noise_multiplier, sample_rate, steps, max_grad_norm, delta, accountant, "
                    "epsilon_round, epsilon_cumulative, budget, created_at) VALUES (1, 1, :n, "
                    f"'charged', 1.1, 0.05, 10, 1.0, 0.00001, 'rdp', 0.2, :eps, 3.0, {stamp})"
                ),
                {"n": number, "eps": 0.2 * number},
            )


def test_migration_0003_keeps_legacy_rows_outside_the_chain(
    engine: Engine,
    registry_database_url: str,
    ledger_key: Ed25519PrivateKey,
    site_signer: SiteSigner,
) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
    _insert_legacy_rows(engine, 3)
    upgrade_to_head(engine)
    with open_registry(registry_database_url, ledger_key=ledger_key) as registry:
        legacy = registry.privacy_ledger()
        assert [(e.id, e.round_number) for e in legacy] == [(-3, 1), (-2, 2), (-1, 3)]
        assert all(e.update_digest == "" and e.entry_hash is None for e in legacy)
        assert all(e.site_signature is None and e.coordinator_signature is None for e in legacy)
        assert registry.site_epsilon_spent("a") == pytest.approx(0.6)
        site_signer.enroll(registry, "a")
        new = _record(registry, site_signer, run_id=1, round_number=4, site="a", **_entry())
        assert new == 3  # chain_started, site_enrolled, then this entry
        assert registry.site_epsilon_spent("a") == pytest.approx(0.61)
    assert len(_verify_chain(engine, _public(ledger_key))) == 3

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0002")
    tables = set(inspect(engine).get_table_names())
    assert not {"events", "ledger_chain"} & tables
    columns = {c["name"] for c in inspect(engine).get_columns("privacy_ledger")}
    assert not {"update_digest", "site_signature", "entry_hash"} & columns
    assert "update_digest" not in {c["name"] for c in inspect(engine).get_columns("contributions")}
    with engine.connect() as connection:
        rounds = connection.execute(text("SELECT round_number FROM privacy_ledger ORDER BY id"))
        assert rounds.scalars().all() == [1, 2, 3, 4]
    upgrade_to_head(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision() == "0005"


def test_migration_0005_adds_and_removes_only_the_clipped_count(engine: Engine) -> None:
    upgrade_to_head(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("contributions")}
    assert "clipped_coordinates" in columns
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0004")
    columns = {c["name"] for c in inspect(engine).get_columns("contributions")}
    assert "clipped_coordinates" not in columns and "update_digest" in columns
    upgrade_to_head(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision() == "0005"


def test_migration_0003_columns(engine: Engine) -> None:
    upgrade_to_head(engine)
    inspector = inspect(engine)
    privacy = {c["name"]: c["nullable"] for c in inspector.get_columns("privacy_ledger")}
    assert privacy["update_digest"] is False
    nullable = ("site_signature", "prev_hash", "entry_hash", "coordinator_signature")
    assert all(privacy[name] for name in nullable)  # null only in legacy rows
    events = {c["name"]: c["nullable"] for c in inspector.get_columns("events")}
    assert {name for name, can_be_null in events.items() if can_be_null} == {"site", "run_id"}
    assert {c["name"] for c in inspector.get_columns("ledger_chain")} == {
        "seq",
        "table_name",
        "entry_hash",
        "prev_hash",
    }
    unique = {
        table: sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table))
        for table in ("ledger_chain", "events", "privacy_ledger")
    }
    assert unique == {
        "ledger_chain": [("entry_hash",), ("prev_hash",)],
        "events": [("entry_hash",)],
        "privacy_ledger": [("entry_hash",), ("run_id", "round_number", "site_id")],
    }
    assert inspector.get_pk_constraint("ledger_chain")["constrained_columns"] == ["seq"]


def test_the_database_refuses_a_second_entry_at_a_position(
    registry: Registry, engine: Engine
) -> None:
    registry.record_budget_change("a", 1.0)
    head = registry.chain_head()
    assert head is not None
    seq, entry_hash = head
    with engine.connect() as connection:
        taken_prev = connection.execute(
            select(ChainLink.prev_hash).where(ChainLink.seq == seq)
        ).scalar_one()
        connection.rollback()
        clashes = [
            (seq, "e" * 64, "f" * 64),  # the position itself
            (seq + 1, taken_prev, "f" * 64),  # a second successor of the same entry
            (seq + 1, "e" * 64, entry_hash),  # the same entry twice
        ]
        for position, prev_hash, new_hash in clashes:
            with pytest.raises(IntegrityError), connection.begin():
                connection.execute(
                    text(
                        "INSERT INTO ledger_chain (seq, table_name, entry_hash, prev_hash) "
                        "VALUES (:seq, 'events', :entry, :prev)"
                    ),
                    {"seq": position, "entry": new_hash, "prev": prev_hash},
                )
        with pytest.raises(IntegrityError), connection.begin():
            connection.execute(
                text(
                    "INSERT INTO ledger_chain (seq, table_name, entry_hash, prev_hash) "
                    "VALUES (:seq, 'runs', :entry, :prev)"
                ),
                {"seq": seq + 1, "entry": "f" * 64, "prev": "e" * 64},
            )
