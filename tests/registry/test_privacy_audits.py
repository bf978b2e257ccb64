"""Sites' privacy audit statements in the registry (fedseal.registry.audits): appended to the
ledger chain as `privacy_audit` events after the same checks as a round's statement, and only
for a model the run made; migration 0004 allows the new event word on every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_signing import SiteSigner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from fedseal.contract import ledger_codec
from fedseal.contract.audit_statement import (
    AuditAttack,
    PrivacyAuditStatement,
    SignedAuditStatement,
)
from fedseal.registry import (
    EventAction,
    RecordNotFound,
    Registry,
    StatementRefused,
    entry_content,
    entry_rows,
    open_registry,
)
from fedseal.registry.migrate import alembic_config, current_revision, head_revision

DIGEST = "cd" * 32


def audit(site: str = "a", **overrides: Any) -> PrivacyAuditStatement:
    values: dict[str, Any] = {
        "site": site,
        "flower_run_id": "9001",
        "applied_round": 2,
        "adapter_digest": DIGEST,
        "attack": AuditAttack.LOSS_THRESHOLD,
        "members": 500,
        "non_members": 300,
        "auc": 0.53,
        "auc_low": 0.49,
        "auc_high": 0.57,
        "epsilon_lower": 0.12,
        "confidence": 0.95,
        "delta": 1e-5,
        "audited_at": "2026-03-02T09:30:00+00:00",
    }
    values.update(overrides)
    return PrivacyAuditStatement(**values)


@pytest.fixture
def registry(
    registry_database_url: str, ledger_key: Ed25519PrivateKey, site_signer: SiteSigner
) -> Iterator[Registry]:
    """Sites a and b enrolled, c known but never enrolled; run 9001 with two rounds."""
    with open_registry(registry_database_url, ledger_key=ledger_key) as registry:
        site_signer.enroll(registry, "a", "b")
        registry.ensure_site("c")
        run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="plain",
            config={},
            rounds_planned=2,
            flower_run_id=9001,
        )
        for number, digest in ((1, "ab" * 32), (2, DIGEST)):
            round_id = registry.start_round(run_id, number, ["a", "b"])
            registry.finish_round(round_id, status="completed", global_digest=digest)
        registry.finish_run(run_id, status="completed")
        yield registry


def _verify_chain(registry: Registry) -> int:
    """Recompute every entry's hash in order (what fl-audit does first); returns the count."""
    with registry.engine.connect() as connection:
        links = connection.execute(
            text("SELECT seq, table_name, entry_hash, prev_hash FROM ledger_chain ORDER BY seq")
        ).all()
        rows = {
            table: {r._mapping["id"]: r._mapping for r in connection.execute(entry_rows(table))}
            for table in ("events", "privacy_ledger")
        }
    previous = ledger_codec.GENESIS_HASH
    for link in links:
        content = entry_content(link.table_name, rows[link.table_name][link.seq])
        expected = ledger_codec.entry_hash(link.table_name, link.seq, previous, content)
        assert link.prev_hash == previous and link.entry_hash == expected
        previous = link.entry_hash
    return len(links)


def test_a_signed_audit_is_a_chained_event(registry: Registry, site_signer: SiteSigner) -> None:
    signed = audit().sign(site_signer.keys("a").identity)
    recorded = registry.record_privacy_audit(signed)
    assert recorded.added and recorded.run_id == registry.find_flower_run(9001).id
    event = registry.events(site="a")[-1]
    assert event.id == recorded.seq and event.action is EventAction.PRIVACY_AUDIT
    assert event.run_id == recorded.run_id
    assert event.details == {
        "statement": signed.statement.fields(),
        "signature": signed.signature.hex(),
    }
    (view,) = registry.privacy_audits()
    assert view.seq == recorded.seq and view.site == "a" and view.statement == signed.statement
    assert SignedAuditStatement(view.statement, view.signature).verify(
        site_signer.keys("a").public().identity
    )
    assert registry.privacy_audits(site="b") == []
    assert registry.privacy_audits(run_id=recorded.run_id) == [view]
    assert _verify_chain(registry) == recorded.seq


def test_the_same_statement_twice_is_one_entry(registry: Registry, site_signer: SiteSigner) -> None:
    signed = audit().sign(site_signer.keys("a").identity)
    first = registry.record_privacy_audit(signed)
    again = registry.record_privacy_audit(signed)
    assert again == dataclasses.replace(first, added=False)
    later = audit(audited_at="2026-03-03T09:30:00+00:00").sign(site_signer.keys("a").identity)
    assert registry.record_privacy_audit(later).added  # a new audit is a new entry
    assert len(registry.privacy_audits(site="a")) == 2


def test_a_statement_signed_by_another_key_is_refused(
    registry: Registry, site_signer: SiteSigner
) -> None:
    head = registry.chain_head()
    forged = audit().sign(site_signer.keys("b").identity)  # b signs for a
    with pytest.raises(StatementRefused, match="does not verify with its enrolled identity key"):
        registry.record_privacy_audit(forged)
    signed = audit().sign(site_signer.keys("a").identity)
    altered = SignedAuditStatement(audit(epsilon_lower=0.0), signed.signature)
    with pytest.raises(StatementRefused, match="does not verify"):
        registry.record_privacy_audit(altered)
    round_fields = dict.fromkeys(ledger_codec.STATEMENT_FIELDS, 1)
    other_kind = ledger_codec.sign_statement(site_signer.keys("a").identity, round_fields)
    with pytest.raises(StatementRefused, match="does not verify"):
        registry.record_privacy_audit(SignedAuditStatement(audit(), other_kind))
    assert registry.chain_head() == head


@pytest.mark.parametrize(
    ("statement", "error", "message"),
    [
        (audit(flower_run_id="404"), RecordNotFound, "no run with Flower run id 404"),
        (audit(site="c"), StatementRefused, "site c is not enrolled"),
        (audit(site="zed"), StatementRefused, "site zed is not enrolled"),
        (audit(applied_round=3), StatementRefused, "holds no round of that number"),
        (audit(applied_round=1), StatementRefused, f"holds global digest {'ab' * 32}"),
    ],
)
def test_what_the_registry_refuses(
    registry: Registry,
    site_signer: SiteSigner,
    statement: PrivacyAuditStatement,
    error: type[Exception],
    message: str,
) -> None:
    head = registry.chain_head()
    with pytest.raises(error, match=message):
        registry.record_privacy_audit(statement.sign(site_signer.keys(statement.site).identity))
    assert registry.chain_head() == head


def test_a_revoked_sites_audit_is_refused(registry: Registry, site_signer: SiteSigner) -> None:
    registry.revoke_site("b", "left")
    with pytest.raises(StatementRefused, match="site b is revoked"):
        registry.record_privacy_audit(audit(site="b").sign(site_signer.keys("b").identity))


def test_only_a_signed_statement_is_taken(registry: Registry) -> None:
    with pytest.raises(TypeError):
        registry.record_privacy_audit(audit())  # type: ignore[arg-type]


def test_migration_0004_allows_the_word_and_downgrades_only_without_it(
    registry: Registry, registry_database_url: str, site_signer: SiteSigner
) -> None:
    engine = registry.engine
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0003")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
    registry.record_privacy_audit(audit().sign(site_signer.keys("a").identity))
    with engine.begin() as connection:  # the later revisions first
        command.downgrade(alembic_config(connection), "0004")
    with (
        pytest.raises(RuntimeError, match="chain entries are never deleted"),
        engine.begin() as connection,
    ):
        command.downgrade(alembic_config(connection), "0003")
    with engine.connect() as connection:
        assert current_revision(connection) == "0004"
        actions = connection.execute(text("SELECT action FROM events")).scalars().all()
    assert "privacy_audit" in actions
    # the constraint still guards the column after the round trip
    other = create_engine(registry_database_url)
    try:
        with pytest.raises(IntegrityError), other.begin() as connection:
            connection.execute(
                text(
                    "UPDATE events SET action = 'no_such_word' WHERE id = "
                    "(SELECT MAX(id) FROM events)"
                )
            )
    finally:
        other.dispose()
    with engine.begin() as connection:  # back to head, where the rest of the suite expects it
        command.upgrade(alembic_config(connection), "head")
