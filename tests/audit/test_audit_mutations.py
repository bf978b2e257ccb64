"""fl-audit's acceptance: any change to a real ledger is reported, naming the changed entry.

A ledger is written through the registry (audit_ledger.build_ledger) and verified clean; then,
for every column of every `privacy_ledger`, `events` and `ledger_chain` row, one byte is altered
with a raw SQL UPDATE (numbers nudged by the smallest step, text one character, bytes one bit)
and `verify` must name that row. Then whole-entry attacks: deletion, truncation, reordering,
forged and duplicated entries, statements under revoked or unknown keys, ε figures that do not
follow from their mechanism, a budget passed, and the sites and contributions tables.

On SQLite every tampering happens on a copy of the database file, verified through the
read-only path; on PostgreSQL (FEDSEAL_TEST_DATABASE_URL) inside a transaction that is read back
and rolled back, so the ledger under test is never changed.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from audit_ledger import (
    PRIVACY_IDS,
    SITES,
    SPARE_SITE,
    T0,
    Ledger,
    build_ledger,
    mechanism,
    statement,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.orm import Session

from fedseal.audit import Check, KeySource, VerifyResult, verify, verify_database
from fedseal.audit.snapshot import read_snapshot
from fedseal.contract import ledger_codec
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.privacy.second_opinion import second_opinion
from fedseal.privacy.status import PrivacyStatus
from fedseal.registry.chain import ChainAppender, entry_content
from fedseal.registry.engine import normalise_url
from fedseal.registry.schema import PrivacyEntry, Run, Site

KEYS = {"privacy_ledger": "id", "events": "id", "ledger_chain": "seq"}
CHOICES = {
    ("privacy_ledger", "status"): ("charged", "declined"),
    ("privacy_ledger", "accountant"): ("rdp", "prv"),
    ("ledger_chain", "table_name"): ("privacy_ledger", "events"),
    ("events", "action"): (
        "chain_started",
        "site_enrolled",
        "site_revoked",
        "run_started",
        "run_finished",
        "budget_changed",
    ),
}
"""Columns a CHECK constraint holds to a few values: altered to another allowed value."""

Tamper = Callable[[Callable[[Connection], None]], VerifyResult]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def ledger(registry_database_url: str, tmp_path: Path) -> Ledger:
    return build_ledger(registry_database_url, tmp_path / "sites")


@pytest.fixture
def tamper(ledger: Ledger, tmp_path: Path) -> Iterator[Tamper]:
    """Applies a change to a copy of the ledger and returns what `verify` says about it."""
    url = normalise_url(ledger.url)
    if url.get_backend_name() == "sqlite":
        original = Path(url.database)
        copies = iter(range(1_000_000))

        def on_copy(change: Callable[[Connection], None]) -> VerifyResult:
            copy = tmp_path / f"copy-{next(copies)}.db"
            shutil.copyfile(original, copy)
            engine = create_engine(f"sqlite:///{copy}")
            try:
                with engine.begin() as connection:
                    change(connection)
            finally:
                engine.dispose()
            return verify_database(f"sqlite:///{copy}")[1]

        yield on_copy
        return
    engine = create_engine(url)

    def in_transaction(change: Callable[[Connection], None]) -> VerifyResult:
        with engine.connect() as connection:
            transaction = connection.begin()
            try:
                change(connection)
                return verify(read_snapshot(connection, ledger.url))
            finally:
                transaction.rollback()

    yield in_transaction
    engine.dispose()


def _rows(connection: Connection, table: str) -> list[dict[str, Any]]:
    key = KEYS[table]
    return [
        dict(row)
        for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {key}")).mappings()
    ]


def _one(connection: Connection, sql: str, **params: Any) -> Any:
    return connection.execute(text(sql), params).scalar_one()


# -- one byte in every column ----------------------------------------------------------------


def _one_character(value: str) -> str:
    """`value` with its last letter or digit changed to another of its kind (hex stays hex)."""
    if not value:
        return "0"
    for index in range(len(value) - 1, -1, -1):
        char = value[index]
        if char.isdigit():
            new = str((int(char) + 1) % 10)
        elif char in "abcdef":
            new = "abcdef"[("abcdef".index(char) + 1) % 6]
        elif char.isalpha():
            new = "a" if char in "zZ" else chr(ord(char) + 1)
        else:
            continue
        return value[:index] + new + value[index + 1 :]
    return value + "x"


@dataclasses.dataclass(frozen=True)
class World:
    spare_site_id: int
    spare_run_id: int
    first_run_id: int


def _altered(table: str, column: str, value: Any, world: World) -> Any:
    """The smallest change to one column's value that the schema's constraints still allow."""
    if column == KEYS[table]:
        return value + 1000  # a free id: the entry moves out of its place in the chain
    if (table, column) in CHOICES:
        return next(choice for choice in CHOICES[table, column] if choice != value)
    if column == "site_id":
        return world.spare_site_id  # a real site with no entry in any round
    if column == "run_id":  # a real run with no entries, or (for its own events) another one
        return world.spare_run_id if value != world.spare_run_id else world.first_run_id
    if (table, column) == ("events", "site"):
        return SPARE_SITE if value != SPARE_SITE else SITES[0]
    if column == "round_number":
        return value + 100
    if isinstance(value, bool):
        raise AssertionError(f"{table}.{column} is a boolean")
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return math.nextafter(value, math.inf)
    if isinstance(value, bytes | memoryview):
        data = bytes(value)
        return bytes([data[0] ^ 0x01]) + data[1:]
    if isinstance(value, datetime):
        return value + timedelta(microseconds=1)
    if isinstance(value, str):
        return _one_character(value)
    raise AssertionError(f"no alteration for {table}.{column} = {value!r}")


def _world(connection: Connection, ledger: Ledger) -> World:
    return World(
        spare_site_id=_one(connection, "SELECT id FROM sites WHERE name = :n", n=SPARE_SITE),
        spare_run_id=ledger.spare_run_id,
        first_run_id=ledger.run_ids[0],
    )


def test_the_ledger_as_written_verifies(ledger: Ledger) -> None:
    snapshot, result = verify_database(ledger.url)
    assert result.ok, [finding.line() for finding in result.findings]
    assert result.counts["privacy_ledger"] == 15 and result.counts["ledger_chain"] == 28
    assert result.key_source is KeySource.CHAIN
    assert {row.status for row in snapshot.privacy} == {"charged", "declined"}
    assert tuple(row.id for row in snapshot.privacy) == PRIVACY_IDS
    _snapshot, pinned = verify_database(ledger.url, ledger.coordinator_public)
    assert pinned.ok and pinned.key_source is KeySource.PINNED


@pytest.mark.parametrize("table", ["privacy_ledger", "events", "ledger_chain"])
def test_altering_any_column_of_any_row_names_that_row(
    table: str, ledger: Ledger, tamper: Tamper
) -> None:
    engine = create_engine(normalise_url(ledger.url))
    try:
        with engine.connect() as connection:
            rows = _rows(connection, table)
            columns = {column["name"] for column in inspect(connection).get_columns(table)}
            world = _world(connection, ledger)
    finally:
        engine.dispose()
    assert rows and columns
    missed, tried = [], 0
    for row in rows:
        assert set(row) == columns  # every column of the table, whatever migrations add
        key = row[KEYS[table]]
        for column, value in row.items():
            new = _altered(table, column, value, world)
            assert new != value

            def change(
                connection: Connection, column: str = column, new: Any = new, key: Any = key
            ) -> None:
                connection.execute(
                    text(f"UPDATE {table} SET {column} = :new WHERE {KEYS[table]} = :key"),
                    {"new": new, "key": key},
                )

            result = tamper(change)
            tried += 1
            if f"{table}#{key}" not in result.failing_entries():
                missed.append(f"{table}#{key}.{column}: {[f.line() for f in result.findings]}")
    assert tried == len(rows) * len(columns)
    assert not missed, "\n".join(missed)


# -- whole entries ---------------------------------------------------------------------------


def _entries(result: VerifyResult) -> frozenset[str]:
    return result.failing_entries()


def test_deleting_an_entry_row_names_it(tamper: Tamper) -> None:
    result = tamper(lambda c: c.execute(text("DELETE FROM privacy_ledger WHERE id = 10")))
    assert "privacy_ledger#10" in _entries(result)


def test_deleting_an_entry_with_its_index_row_leaves_a_gap(tamper: Tamper) -> None:
    def delete(connection: Connection) -> None:
        connection.execute(text("DELETE FROM privacy_ledger WHERE id = 10"))
        connection.execute(text("DELETE FROM ledger_chain WHERE seq = 10"))

    result = tamper(delete)
    assert "ledger_chain#10" in _entries(result)
    assert any(f.field == "seq" and "missing" in f.found for f in result.findings)


def test_truncating_the_newest_entries_is_caught_by_the_contributions(
    ledger: Ledger, tamper: Tamper
) -> None:
    def truncate(connection: Connection) -> None:
        last_charged = _one(
            connection, "SELECT MAX(id) FROM privacy_ledger WHERE status = 'charged'"
        )
        for table, key in (("privacy_ledger", "id"), ("events", "id"), ("ledger_chain", "seq")):
            connection.execute(text(f"DELETE FROM {table} WHERE {key} >= :n"), {"n": last_charged})

    result = tamper(truncate)
    assert {f.check for f in result.findings} == {Check.CONTRIBUTIONS}
    assert any(f.entry.startswith("contributions#") for f in result.findings)


def test_truncating_only_events_is_caught_only_against_a_head_seen_before(
    ledger: Ledger, tamper: Tamper
) -> None:
    """The documented limit: the newest entries can go unnoticed when no contribution needs
    them; only the head an auditor noted earlier (printed by verify) shows the loss."""
    head = verify_database(ledger.url)[1].head
    assert head is not None

    def truncate(connection: Connection) -> None:
        connection.execute(text("DELETE FROM events WHERE id = :n"), {"n": head[0]})
        connection.execute(text("DELETE FROM ledger_chain WHERE seq = :n"), {"n": head[0]})

    result = tamper(truncate)
    assert result.ok
    assert result.head is not None and result.head != head


def _swap(connection: Connection, table: str, first: int, second: int) -> None:
    rows = {row["id"]: row for row in _rows(connection, table) if row["id"] in (first, second)}
    connection.execute(text(f"DELETE FROM {table} WHERE id IN (:a, :b)"), {"a": first, "b": second})
    for target, source in ((first, second), (second, first)):
        values = {**rows[source], "id": target}
        columns = ", ".join(values)
        connection.execute(
            text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + c for c in values)})"),
            values,
        )


@pytest.mark.parametrize(
    ("table", "first", "second"), [("privacy_ledger", 10, 13), ("events", 2, 4)]
)
def test_reordering_two_entries_names_both(
    table: str, first: int, second: int, tamper: Tamper
) -> None:
    result = tamper(lambda c: _swap(c, table, first, second))
    assert {f"{table}#{first}", f"{table}#{second}"} <= _entries(result)


def _head(connection: Connection) -> tuple[int, str]:
    row = connection.execute(
        text("SELECT seq, entry_hash FROM ledger_chain ORDER BY seq DESC LIMIT 1")
    ).one()
    return row.seq, row.entry_hash


def _forge_privacy_entry(
    connection: Connection, *, coordinator: Ed25519PrivateKey, signer: Ed25519PrivateKey
) -> int:
    """Append a well-formed entry of hospital_a at the head, hashed correctly, signed by the
    given keys (a forger's, unless they are the real ones)."""
    seq, prev = _head(connection)
    seq += 1
    site_id = _one(connection, "SELECT id FROM sites WHERE name = 'hospital_a'")
    event = DpEvent(1.1, 32 / 600, 40)
    fields = {
        "site": "hospital_a",
        "flower_run_id": "7001",
        "round_number": 9,
        "status": "charged",
        **mechanism(),
        "epsilon_round": epsilon_of([event], 1e-5, Accountant.RDP),
        "epsilon_cumulative": 9.0,
        "budget": 10.0,
        "update_digest": "ab" * 32,
    }
    signature = ledger_codec.sign_statement(signer, fields)
    row = {
        "id": seq,
        "site_id": site_id,
        "run_id": _one(connection, "SELECT id FROM runs WHERE flower_run_id = '7001'"),
        **{k: v for k, v in fields.items() if k not in ("site", "flower_run_id")},
        "site_signature": signature,
        "created_at": T0 + timedelta(days=1),
        "prev_hash": prev,
    }
    content = entry_content("privacy_ledger", {**row, **fields})
    digest = ledger_codec.entry_hash("privacy_ledger", seq, prev, content)
    row |= {
        "entry_hash": digest,
        "coordinator_signature": ledger_codec.countersign(coordinator, digest),
    }
    connection.execute(
        text(
            f"INSERT INTO privacy_ledger ({', '.join(row)}) "
            f"VALUES ({', '.join(':' + c for c in row)})"
        ),
        row,
    )
    connection.execute(
        text(
            "INSERT INTO ledger_chain (seq, table_name, entry_hash, prev_hash) "
            "VALUES (:s, 'privacy_ledger', :h, :p)"
        ),
        {"s": seq, "h": digest, "p": prev},
    )
    return seq


def test_a_forged_entry_fails_both_signatures(tamper: Tamper) -> None:
    forger = Ed25519PrivateKey.generate()
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(_forge_privacy_entry(c, coordinator=forger, signer=forger))
    )
    fields = {f.field for f in result.findings if f.entry == f"privacy_ledger#{seqs[0]}"}
    assert {"coordinator_signature", "site_signature"} <= fields


def test_an_entry_outside_the_index_is_named(tamper: Tamper) -> None:
    def insert(connection: Connection) -> None:
        row = _rows(connection, "privacy_ledger")[-1]
        row |= {"id": 500, "round_number": 50, "entry_hash": "0" * 63 + "1"}
        connection.execute(
            text(
                f"INSERT INTO privacy_ledger ({', '.join(row)}) "
                f"VALUES ({', '.join(':' + c for c in row)})"
            ),
            row,
        )

    result = tamper(insert)
    assert "privacy_ledger#500" in _entries(result)


def test_a_duplicated_event_is_named(tamper: Tamper) -> None:
    """An enrolment replayed at the head: the copy keeps the original's countersignature
    (the forger has no key), and its hash is recomputed for its new place."""

    def duplicate(connection: Connection) -> None:
        seq, prev = _head(connection)
        row = next(r for r in _rows(connection, "events") if r["action"] == "site_enrolled")
        seq += 1
        content = entry_content("events", row)
        digest = ledger_codec.entry_hash("events", seq, prev, content)
        row |= {"id": seq, "prev_hash": prev, "entry_hash": digest}
        connection.execute(
            text(
                f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join(':' + c for c in row)})"
            ),
            row,
        )
        connection.execute(
            text(
                "INSERT INTO ledger_chain (seq, table_name, entry_hash, prev_hash) "
                "VALUES (:s, 'events', :h, :p)"
            ),
            {"s": seq, "h": digest, "p": prev},
        )

    result = tamper(duplicate)
    assert any(
        f.field == "coordinator_signature" and f.entry.startswith("events#")
        for f in result.findings
    )


def test_a_duplicated_privacy_entry_is_named_even_without_the_unique_constraint(
    ledger: Ledger,
) -> None:
    """The database's unique (run, round, site) constraint is not trusted: a snapshot holding
    the same entry twice (as a database without the constraint could) fails verification."""
    snapshot, _ = verify_database(ledger.url)
    original = next(row for row in snapshot.privacy if row.status == "charged")
    top = snapshot.chain[-1].seq + 1
    copy = dataclasses.replace(original, id=top)
    link = dataclasses.replace(snapshot.chain[original.id - 1], seq=top)
    tampered = dataclasses.replace(
        snapshot, privacy=(*snapshot.privacy, copy), chain=(*snapshot.chain, link)
    )
    result = verify(tampered)
    fields = {f.field for f in result.findings if f.entry == f"privacy_ledger#{top}"}
    assert {"round_number", "columns"} <= fields


def _append_with_coordinator_key(
    connection: Connection,
    ledger: Ledger,
    *,
    site: str,
    signer: Ed25519PrivateKey,
    round_number: int = 7,
    **overrides: Any,
) -> int:
    """An entry the coordinator itself chained and countersigned without checking the site's
    signature (a buggy or dishonest coordinator): only check 2 can catch what it let through."""
    with Session(bind=connection, join_transaction_mode="rollback_only") as session:
        site_row = session.query(Site).filter(Site.name == site).one()
        run = session.get(Run, ledger.run_ids[1])
        assert run is not None
        event = DpEvent(1.1, 32 / 600, 40)
        history = [*ledger.history.get(site, []), event]
        values: dict[str, Any] = {
            "status": "charged",
            **mechanism(),
            "epsilon_round": epsilon_of([event], 1e-5, Accountant.RDP),
            "epsilon_cumulative": epsilon_of(history, 1e-5, Accountant.RDP),
            "budget": 10.0,
            "update_digest": "cd" * 32,
            **overrides,
        }
        fields = {
            "site": site,
            "flower_run_id": run.flower_run_id,
            "round_number": round_number,
            **values,
        }
        values["status"] = PrivacyStatus(values["status"])
        values["accountant"] = Accountant(values["accountant"])
        entry = PrivacyEntry(
            site_id=site_row.id,
            run_id=run.id,
            round_number=round_number,
            site_signature=ledger_codec.sign_statement(signer, fields),
            **values,
        )
        chain = ChainAppender(session, ledger.coordinator_key, T0 + timedelta(days=2))
        seq = chain.append(entry, site=site, flower_run_id=run.flower_run_id)
        session.flush()
        return seq


def test_an_entry_signed_by_a_revoked_key_is_named(ledger: Ledger, tamper: Tamper) -> None:
    revoked = ledger.site_keys["hospital_c"].identity
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(
            _append_with_coordinator_key(c, ledger, site="hospital_c", signer=revoked)
        )
    )
    (finding,) = result.findings
    assert finding.entry == f"privacy_ledger#{seqs[0]}" and finding.check is Check.SITE_SIGNATURES
    assert "revocation" in finding.found


@pytest.mark.parametrize("site", ["hospital_a", "clinic_never_enrolled"])
def test_an_entry_signed_by_an_unknown_key_is_named(
    site: str, ledger: Ledger, tamper: Tamper
) -> None:
    seqs: list[int] = []

    def append(connection: Connection) -> None:
        if site not in SITES:
            connection.execute(
                text("INSERT INTO sites (name, created_at, status) VALUES (:n, :t, 'active')"),
                {"n": site, "t": T0},
            )
        seqs.append(
            _append_with_coordinator_key(
                connection, ledger, site=site, signer=Ed25519PrivateKey.generate()
            )
        )

    result = tamper(append)
    named = [f for f in result.findings if f.entry == f"privacy_ledger#{seqs[0]}"]
    assert [f.field for f in named] == ["site_signature"]


@pytest.mark.parametrize("factor", [1.01, 0.99])
def test_an_epsilon_off_its_mechanism_is_named(
    factor: float, ledger: Ledger, tmp_path: Path
) -> None:
    """The site signs a wrong ε (higher or lower than its mechanism gives) and the registry,
    which does not recompute ε, records it: check 3 names the entry and the field."""
    history = ledger.history["hospital_a"]
    event = DpEvent(1.1, 32 / 600, 40)
    true_cumulative = epsilon_of([*history, event], 1e-5, Accountant.RDP)
    with ledger.open() as registry:
        run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="he+ss",
            config={},
            rounds_planned=1,
            flower_run_id=8000,
        )
        entry_id = registry.record_privacy(
            **statement(
                registry,
                ledger.site_keys["hospital_a"],
                run_id=run_id,
                round_number=1,
                status="charged",
                **mechanism(),
                epsilon_round=epsilon_of([event], 1e-5, Accountant.RDP),
                epsilon_cumulative=true_cumulative * factor,
                budget=10.0,
                update_digest="",
            )
        )
    result = verify_database(ledger.url)[1]
    (finding,) = result.findings
    assert (finding.entry, finding.field) == (f"privacy_ledger#{entry_id}", "epsilon_cumulative")
    assert finding.check is Check.EPSILON
    assert repr(true_cumulative) in finding.expected


@pytest.mark.parametrize("field", ["epsilon_round", "epsilon_cumulative"])
def test_an_epsilon_below_the_pld_bound_is_named(
    field: str, ledger: Ledger, tmp_path: Path
) -> None:
    """The site signs an ε below dp-accounting's tight (PLD) bound for its mechanism, and the
    registry records it: the chain and the signature hold, and check 3 names the entry and the
    field, once against Opacus' figure and once against the PLD bound."""
    history = ledger.history["hospital_a"]
    event = DpEvent(1.1, 32 / 600, 40)
    figures = {
        "epsilon_round": epsilon_of([event], 1e-5, Accountant.RDP),
        "epsilon_cumulative": epsilon_of([*history, event], 1e-5, Accountant.RDP),
    }
    pld = second_opinion([event] if field == "epsilon_round" else [*history, event], 1e-5).pld
    figures[field] = 0.9 * pld
    with ledger.open() as registry:
        run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="he+ss",
            config={},
            rounds_planned=1,
            flower_run_id=8002,
        )
        entry_id = registry.record_privacy(
            **statement(
                registry,
                ledger.site_keys["hospital_a"],
                run_id=run_id,
                round_number=1,
                status="charged",
                **mechanism(),
                **figures,
                budget=10.0,
                update_digest="",
            )
        )
    result = verify_database(ledger.url)[1]
    assert result.failed_checks() == {Check.EPSILON}
    assert {(f.entry, f.field) for f in result.findings} == {(f"privacy_ledger#{entry_id}", field)}
    below = [f for f in result.findings if "dp-accounting's PLD bound" in f.expected]
    assert len(below) == 1 and below[0].found == repr(0.9 * pld)
    assert result.recomputed[entry_id].dp_accounting_pld is not None


def test_an_accountant_that_agrees_with_itself_is_caught(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auditor whose own accountant under-reports by a third recomputes figures that differ
    from the ledger's (check 3), and dp-accounting names its figures as off its own."""
    from fedseal.privacy import accounting

    honest = accounting.epsilon_of
    monkeypatch.setattr(
        accounting, "epsilon_of", lambda events, delta, kind: 2 / 3 * honest(events, delta, kind)
    )
    result = verify_database(ledger.url)[1]
    assert result.failed_checks() == {Check.EPSILON}
    off = [f for f in result.findings if "of dp-accounting's RDP" in f.expected]
    assert {f.entry for f in off} == {f"privacy_ledger#{row_id}" for row_id in PRIVACY_IDS}
    assert all(f.found.endswith("from Opacus' rdp accountant") for f in off)


def test_a_cumulative_epsilon_over_budget_is_named(ledger: Ledger) -> None:
    """hospital_b's next charged round would take it past its budget of 3.5: it is recorded
    (the ledger keeps what happened) and check 4 names it; every figure is right (check 3)."""
    history = ledger.history["hospital_b"]
    event = DpEvent(1.1, 32 / 600, 40)
    with ledger.open() as registry:
        run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="he+ss",
            config={},
            rounds_planned=1,
            flower_run_id=8001,
        )
        entry_id = registry.record_privacy(
            **statement(
                registry,
                ledger.site_keys["hospital_b"],
                run_id=run_id,
                round_number=1,
                status="charged",
                **mechanism(),
                epsilon_round=epsilon_of([event], 1e-5, Accountant.RDP),
                epsilon_cumulative=epsilon_of([*history, event], 1e-5, Accountant.RDP),
                budget=3.5,
                update_digest="",
            )
        )
    (finding,) = verify_database(ledger.url)[1].findings
    assert finding.check is Check.BUDGET and finding.entry == f"privacy_ledger#{entry_id}"


def test_a_contribution_without_its_digest_or_entry_is_named(tamper: Tamper) -> None:
    declined: list[int] = []

    def change(connection: Connection) -> None:
        connection.execute(
            text("UPDATE contributions SET update_digest = :d WHERE id = 1"), {"d": "ee" * 32}
        )
        declined.append(
            _one(connection, "SELECT MIN(id) FROM contributions WHERE status = 'declined'")
        )
        connection.execute(
            text("UPDATE contributions SET status = 'contributed' WHERE id = :i"),
            {"i": declined[0]},
        )

    result = tamper(change)
    assert {(f.entry, f.field) for f in result.findings} == {
        ("contributions#1", "update_digest"),
        (f"contributions#{declined[0]}", "status"),
    }


def test_a_site_key_swapped_in_the_sites_table_is_named(tamper: Tamper) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()

    def swap(connection: Connection) -> None:
        bundle = bytes(_one(connection, "SELECT public_key FROM sites WHERE id = 1"))
        forged = bundle[:-64] + other + bundle[-32:]
        connection.execute(text("UPDATE sites SET public_key = :k WHERE id = 1"), {"k": forged})
        connection.execute(text("UPDATE sites SET status = 'active' WHERE name = 'hospital_c'"))

    result = tamper(swap)
    hospital_c = {f.entry for f in result.findings if f.field == "status"}
    assert ("sites#1", "public_key") in {(f.entry, f.field) for f in result.findings}
    assert len(hospital_c) == 1 and all(f.check is Check.SITE_KEYS for f in result.findings)


def test_a_pinned_key_that_did_not_sign_the_chain_fails_every_entry(ledger: Ledger) -> None:
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    _snapshot, result = verify_database(ledger.url, stranger)
    assert result.key_source is KeySource.PINNED
    assert ("events#1", "details") in {(f.entry, f.field) for f in result.findings}
    signatures = [f for f in result.findings if f.field == "coordinator_signature"]
    assert len(signatures) == result.counts["ledger_chain"]


def test_a_legacy_entry_is_reported_not_accepted(ledger: Ledger) -> None:
    """Rows from before migration 0003 (ids <= 0, unsigned) are flagged, one finding each."""
    snapshot, _ = verify_database(ledger.url)
    spare = next(site for site in snapshot.sites if site.name == SPARE_SITE)
    template = snapshot.privacy[0]
    legacy = dataclasses.replace(
        template,
        id=-1,
        site_id=spare.id,
        site=SPARE_SITE,
        status="declined",
        epsilon_round=0.0,
        epsilon_cumulative=0.0,
        update_digest="",
        site_signature=None,
        prev_hash=None,
        entry_hash=None,
        coordinator_signature=None,
    )
    result = verify(dataclasses.replace(snapshot, privacy=(legacy, *snapshot.privacy)))
    (finding,) = result.findings
    assert (finding.entry, finding.field) == ("privacy_ledger#-1", "entry_hash")
    assert "legacy" in finding.found


def test_a_rewritten_chain_passes_only_until_the_key_is_pinned(ledger: Ledger) -> None:
    """Whoever can write the database can re-hash and re-sign every entry with a key of their
    own, naming it in chain_started: consistent, so it verifies unpinned; the pinned key
    exposes it. This is why docs/audit.md asks auditors to pin the coordinator key."""
    snapshot, _ = verify_database(ledger.url)
    forger = Ed25519PrivateKey.generate()
    forger_public = forger.public_key().public_bytes_raw()
    events = {row.id: row for row in snapshot.events}
    privacy = {row.id: row for row in snapshot.privacy}
    events[1] = dataclasses.replace(
        events[1],
        details=ledger_codec.canonical_json({"coordinator_key": forger_public.hex()}).decode(),
    )
    chain, prev = [], ledger_codec.GENESIS_HASH
    for link in snapshot.chain:
        rows = events if link.table_name == "events" else privacy
        row = rows[link.seq]
        mapping = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
        digest = ledger_codec.entry_hash(
            link.table_name, link.seq, prev, entry_content(link.table_name, mapping)
        )
        rows[link.seq] = dataclasses.replace(
            row,
            prev_hash=prev,
            entry_hash=digest,
            coordinator_signature=ledger_codec.countersign(forger, digest),
        )
        chain.append(dataclasses.replace(link, prev_hash=prev, entry_hash=digest))
        prev = digest
    rewritten = dataclasses.replace(
        snapshot,
        chain=tuple(chain),
        events=tuple(events[key] for key in sorted(events)),
        privacy=tuple(privacy[key] for key in sorted(privacy)),
    )
    unpinned = verify(rewritten)
    assert unpinned.ok and unpinned.key_source is KeySource.CHAIN
    pinned = verify(rewritten, ledger.coordinator_public)
    assert not pinned.ok
    assert ("events#1", "details") in {(f.entry, f.field) for f in pinned.findings}
