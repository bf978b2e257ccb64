"""Check 7 and its part of check 2: the sites' privacy audit statements on a real ledger.

A site's signed membership-inference result is attached through the registry (as
`fl-coordinator attach-statement` does) and `verify` must show it per site with how it stands
against the site's recorded ε; an attack that proves more ε than the site recorded is a finding.
Then the attacks: any byte of the entry changed; a coordinator that chains (and countersigns) a
statement forged with another key, altered after signing, signed for another statement kind,
put under another site or run, signed after the site's revocation, or that is no statement.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from audit_ledger import T0, Ledger, attach_audit, audit_statement, build_ledger
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.orm import Session

from fedseal.audit import Check, VerifyResult, verify, verify_database
from fedseal.audit.cli import summary_lines
from fedseal.audit.findings import AuditVerdict
from fedseal.audit.render import render_html
from fedseal.audit.report_data import build_report
from fedseal.audit.snapshot import read_snapshot
from fedseal.contract import ledger_codec
from fedseal.contract.audit_statement import SignedAuditStatement
from fedseal.registry.chain import ChainAppender
from fedseal.registry.engine import normalise_url
from fedseal.registry.statuses import EventAction

Tamper = Callable[[Callable[[Connection], None]], VerifyResult]

RECORDED = "privacy_ledger#24"
"""hospital_a's last charged entry of run 7001 (round 3): the ε its audit is compared with."""


@pytest.fixture
def ledger(registry_database_url: str, tmp_path: Path) -> Ledger:
    return build_ledger(registry_database_url, tmp_path / "sites")


@pytest.fixture
def audited(ledger: Ledger) -> tuple[Ledger, int]:
    return ledger, attach_audit(ledger)


@pytest.fixture
def tamper(audited: tuple[Ledger, int], tmp_path: Path) -> Iterator[Tamper]:
    """A change applied to a copy of the audited ledger (SQLite) or in a rolled-back
    transaction (PostgreSQL), and what `verify` says then."""
    ledger = audited[0]
    url = normalise_url(ledger.url)
    if url.get_backend_name() == "sqlite":
        copies = iter(range(1_000))

        def on_copy(change: Callable[[Connection], None]) -> VerifyResult:
            copy = tmp_path / f"copy-{next(copies)}.db"
            shutil.copyfile(str(url.database), copy)
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


def _lines(result: VerifyResult) -> list[str]:
    return [finding.line() for finding in result.findings]


# -- what an honest statement shows ----------------------------------------------------------


def test_an_attached_audit_verifies_and_is_shown_per_site(audited: tuple[Ledger, int]) -> None:
    ledger, seq = audited
    snapshot, result = verify_database(ledger.url, ledger.coordinator_public)
    assert result.ok, _lines(result)
    (audit,) = result.audits
    assert audit.entry == f"events#{seq}" and audit.site == "hospital_a"
    assert audit.signature_verified and audit.verdict is AuditVerdict.CONSISTENT
    assert audit.recorded_entry == RECORDED and audit.recorded_epsilon == pytest.approx(5.171709)
    lines = summary_lines(snapshot, result)
    assert (
        f"empirical audit events#{seq}: site hospital_a, run {ledger.run_ids[1]} round 3, "
        "loss-threshold attack on 600 members and 600 non-members: AUC 0.512 [0.480, 0.545], "
        "ε ≥ 0.000 (95% confidence, δ = 1e-05); consistent with recorded ε 5.1717 "
        f"({RECORDED})"
    ) in lines
    assert any(
        line.startswith("check 7 empirical audits") and line.endswith("pass") for line in lines
    )
    report = build_report(snapshot, result)
    sites = {site["name"]: site for site in report["sites"]}
    shown = sites["hospital_a"]["empirical_audit"]
    assert shown["verdict"] == "consistent" and shown["entry"] == f"events#{seq}"
    assert shown["epsilon_lower"] == 0.0 and shown["signature_verified"] is True
    assert sites["hospital_b"]["empirical_audit"] is None
    assert report["empirical_audits"] == [shown]
    page = render_html(report)
    assert f'round 3 (events#{seq}): <span class="ok">consistent with recorded ε 5.1717' in page
    json.dumps(report, allow_nan=False)


def test_an_attack_proving_more_than_the_recorded_epsilon_is_a_finding(ledger: Ledger) -> None:
    seq = attach_audit(ledger, epsilon_lower=6.25, auc=0.97, auc_low=0.95, auc_high=0.99)
    _snapshot, result = verify_database(ledger.url)
    (finding,) = result.findings
    assert finding.check is Check.EMPIRICAL_AUDITS and finding.entry == f"events#{seq}"
    assert finding.expected == (
        f"an empirical ε lower bound at most 5.171709, the ε site hospital_a recorded ({RECORDED})"
    ).replace("5.171709", repr(result.audits[0].recorded_epsilon))
    assert finding.found == "ε ≥ 6.25 at 95% confidence (δ = 1e-05)"
    assert result.audits[0].verdict is AuditVerdict.CONTRADICTED
    page = render_html(build_report(_snapshot, result))
    assert '<span class="bad">CONTRADICTS recorded ε 5.1717' in page


def test_a_latest_audit_is_the_one_shown_and_every_one_is_checked(ledger: Ledger) -> None:
    first = attach_audit(ledger)
    second = attach_audit(ledger, audited_at="2026-03-03T08:00:00+00:00", epsilon_lower=0.4)
    snapshot, result = verify_database(ledger.url)
    assert result.ok and [a.entry for a in result.audits] == [f"events#{first}", f"events#{second}"]
    shown = {s["name"]: s for s in build_report(snapshot, result)["sites"]}["hospital_a"]
    assert shown["empirical_audit"]["entry"] == f"events#{second}"


@pytest.mark.parametrize(
    ("site", "overrides", "why"),
    [
        ("hospital_a", {"delta": 1e-6}, "the attack's δ is below the ledger's"),
        ("hospital_d", {}, "no charged entry of the site in that run"),
        ("hospital_a", {"run_index": 0, "applied_round": 1, "epsilon_lower": 0.5}, None),
    ],
)
def test_what_cannot_be_compared_is_shown_not_flagged(
    ledger: Ledger, site: str, overrides: dict[str, Any], why: str | None
) -> None:
    if overrides.get("run_index") == 0:
        from audit_ledger import global_digest

        overrides["adapter_digest"] = global_digest(ledger.run_ids[0], 1)
    attach_audit(ledger, site, **overrides)
    snapshot, result = verify_database(ledger.url)
    assert result.ok, _lines(result)
    (audit,) = result.audits
    line = summary_lines(snapshot, result)
    if why is None:  # round 1 of run 7000: compared with that round's own entry
        assert (
            audit.verdict is AuditVerdict.CONSISTENT and audit.recorded_entry == "privacy_ledger#8"
        )
    else:
        assert audit.verdict is AuditVerdict.NOT_COMPARABLE
        assert any(why in text for text in line)


# -- attacks ---------------------------------------------------------------------------------


def test_changing_any_column_of_the_audit_entry_names_it(
    audited: tuple[Ledger, int], tamper: Tamper
) -> None:
    ledger, seq = audited
    engine = create_engine(normalise_url(ledger.url))
    with engine.connect() as connection:
        row = dict(
            connection.execute(text("SELECT * FROM events WHERE id = :id"), {"id": seq})
            .mappings()
            .one()
        )
    engine.dispose()
    details = json.loads(row["details"])
    changes: dict[str, Any] = {
        "details": json.dumps(
            {**details, "statement": {**details["statement"], "epsilon_lower": 0.001}},
            sort_keys=True,
            separators=(",", ":"),
        ),
        "site": "hospital_b",
        "run_id": ledger.run_ids[0],
        "action": "budget_changed",
        "created_at": row["created_at"] + timedelta(microseconds=1)
        if not isinstance(row["created_at"], str)
        else row["created_at"].replace("000", "001", 1),
        "entry_hash": "0" + row["entry_hash"][1:]
        if row["entry_hash"][0] != "0"
        else "1" + row["entry_hash"][1:],
        "coordinator_signature": bytes([bytes(row["coordinator_signature"])[0] ^ 1])
        + bytes(row["coordinator_signature"])[1:],
    }
    for column, value in changes.items():
        result = tamper(
            lambda c, column=column, value=value: c.execute(
                text(f"UPDATE events SET {column} = :v WHERE id = :id"), {"v": value, "id": seq}
            )
        )
        assert f"events#{seq}" in result.failing_entries(), (column, _lines(result))


def _chain_audit(
    connection: Connection,
    ledger: Ledger,
    *,
    details: dict[str, Any],
    site: str = "hospital_a",
    run_id: int | None = None,
) -> int:
    """An audit event a buggy or dishonest coordinator chained and countersigned without
    checking it: only checks 2 and 7 can catch what it let through."""
    with Session(bind=connection, join_transaction_mode="rollback_only") as session:
        chain = ChainAppender(session, ledger.coordinator_key, T0 + timedelta(days=2))
        seq = chain.event(
            EventAction.PRIVACY_AUDIT,
            site=site,
            run_id=ledger.run_ids[1] if run_id is None else run_id,
            details=details,
        )
        session.flush()
        return seq


def _details(statement: Any, signature: bytes) -> dict[str, Any]:
    return {"statement": statement.fields(), "signature": signature.hex()}


def _only_finding(result: VerifyResult, seqs: list[int]) -> Any:
    (finding,) = result.findings
    assert finding.entry == f"events#{seqs[0]}"
    return finding


def test_a_statement_forged_with_another_key_is_named(ledger: Ledger, tamper: Tamper) -> None:
    forged = audit_statement(ledger).sign(Ed25519PrivateKey.generate())
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(
            _chain_audit(c, ledger, details=_details(forged.statement, forged.signature))
        )
    )
    finding = _only_finding(result, seqs)
    assert finding.check is Check.SITE_SIGNATURES and finding.field == "details"
    assert finding.found == "a signature that does not verify"
    assert result.audits[-1].verdict is AuditVerdict.UNVERIFIED


def test_a_statement_altered_after_signing_is_named(ledger: Ledger, tamper: Tamper) -> None:
    honest = audit_statement(ledger, epsilon_lower=7.5, auc=0.99, auc_low=0.98, auc_high=1.0)
    signed = honest.sign(ledger.site_keys["hospital_a"].identity)
    softened = dataclasses.replace(honest, epsilon_lower=0.0, auc=0.5, auc_low=0.45, auc_high=0.55)
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(_chain_audit(c, ledger, details=_details(softened, signed.signature)))
    )
    finding = _only_finding(result, seqs)
    assert finding.check is Check.SITE_SIGNATURES
    assert "does not verify" in finding.found


def test_a_signature_made_for_another_statement_kind_is_named(
    ledger: Ledger, tamper: Tamper
) -> None:
    statement = audit_statement(ledger)
    key = ledger.site_keys["hospital_a"].identity
    as_round = key.sign(
        b"fedseal-ledger-statement/v1\n" + statement.signed_bytes().split(b"\n", 1)[1]
    )
    assert not SignedAuditStatement(statement, as_round).verify(
        ledger.site_keys["hospital_a"].public().identity
    )
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(_chain_audit(c, ledger, details=_details(statement, as_round)))
    )
    assert _only_finding(result, seqs).found == "a signature that does not verify"


def test_a_statement_under_another_site_or_run_is_named(ledger: Ledger, tamper: Tamper) -> None:
    signed = audit_statement(ledger).sign(ledger.site_keys["hospital_a"].identity)
    details = _details(signed.statement, signed.signature)
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(_chain_audit(c, ledger, details=details, site="hospital_b"))
    )
    # the statement is hospital_a's, the entry says hospital_b's: and hospital_b's key did not
    # sign it either
    assert {(f.entry, f.check, f.field) for f in result.findings} == {
        (f"events#{seqs[0]}", Check.SITE_SIGNATURES, "site"),
        (f"events#{seqs[0]}", Check.SITE_SIGNATURES, "details"),
    }
    seqs.clear()
    result = tamper(
        lambda c: seqs.append(_chain_audit(c, ledger, details=details, run_id=ledger.run_ids[0]))
    )
    finding = _only_finding(result, seqs)
    assert (finding.check, finding.field) == (Check.EMPIRICAL_AUDITS, "run_id")
    assert "Flower run id 7001" in finding.expected


def test_a_statement_signed_after_revocation_is_named(ledger: Ledger, tamper: Tamper) -> None:
    signed = audit_statement(ledger, "hospital_c", run_index=0).sign(
        ledger.site_keys["hospital_c"].identity
    )
    seqs: list[int] = []
    result = tamper(
        lambda c: seqs.append(
            _chain_audit(
                c,
                ledger,
                details=_details(signed.statement, signed.signature),
                site="hospital_c",
                run_id=ledger.run_ids[0],
            )
        )
    )
    finding = _only_finding(result, seqs)
    assert finding.check is Check.SITE_SIGNATURES and "revocation" in finding.found


@pytest.mark.parametrize(
    "details",
    [
        {"statement": {"site": "hospital_a"}, "signature": "00" * 64},
        {"statement": {}, "signature": "xyz"},
        {"something": "else"},
    ],
)
def test_details_that_are_no_statement_are_named(
    ledger: Ledger, tamper: Tamper, details: dict[str, Any]
) -> None:
    seqs: list[int] = []
    result = tamper(lambda c: seqs.append(_chain_audit(c, ledger, details=details)))
    finding = _only_finding(result, seqs)
    assert (finding.check, finding.field) == (Check.EMPIRICAL_AUDITS, "details")
    assert result.audits[-1].figures is None


def test_codec_prefix_is_the_audit_statements_own() -> None:
    assert ledger_codec.audit_statement(
        dict.fromkeys(ledger_codec.AUDIT_STATEMENT_FIELDS, 0)
    ).startswith(b"fedseal-privacy-audit-statement/v1\n")
