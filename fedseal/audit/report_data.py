"""The audit report as plain data: what every format (HTML, JSON, CSV, the web page) shows.

Built once from a snapshot and its `VerifyResult`, as JSON-ready dicts and lists, so the
renderers only lay it out and the JSON format is this structure as is. Values come from the
database as recorded, tampered or not; next to each entry stands whether verification found
anything wrong with it and the ε the audit recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fedseal.privacy.status import PrivacyStatus

from .audit_check import verdict_text
from .entries import PRIVACY, name, resolve_entries
from .epsilon_check import ledger_order
from .findings import Check, EmpiricalAudit, VerifyResult
from .snapshot import PrivacyRow, Snapshot

__all__ = ["REPORT_FORMAT", "build_report", "plain"]

REPORT_FORMAT = "fedseal-audit-report/1"


def plain(value: Any) -> Any:
    """A database value as JSON can hold it: bytes as hex, timestamps as ISO text, odd as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


def _verification(result: VerifyResult) -> dict[str, Any]:
    failed = result.failed_checks()
    return {
        "passed": result.ok,
        "coordinator_key": {
            "fingerprint": result.key_fingerprint,
            "source": str(result.key_source),
        },
        "head": None
        if result.head is None
        else {"seq": plain(result.head[0]), "entry_hash": plain(result.head[1])},
        "counts": dict(result.counts),
        "checks": [
            {
                "number": int(check),
                "title": check.title,
                "passed": check not in failed,
                "findings": sum(1 for f in result.findings if f.check is check),
            }
            for check in Check
        ],
        "findings": [
            {
                "check": int(f.check),
                "entry": f.entry,
                "field": f.field,
                "expected": f.expected,
                "found": f.found,
                "line": f.line(),
            }
            for f in result.findings
        ],
    }


def _entry(row: PrivacyRow, result: VerifyResult) -> dict[str, Any]:
    entry = name(PRIVACY, row.id)
    recomputed = result.recomputed.get(row.id)
    return {
        "entry": entry,
        "seq": plain(row.id),
        "site": plain(row.site),
        "run_id": plain(row.run_id),
        "flower_run_id": plain(row.flower_run_id),
        "round_number": plain(row.round_number),
        "status": plain(row.status),
        "noise_multiplier": plain(row.noise_multiplier),
        "sample_rate": plain(row.sample_rate),
        "steps": plain(row.steps),
        "max_grad_norm": plain(row.max_grad_norm),
        "delta": plain(row.delta),
        "accountant": plain(row.accountant),
        "epsilon_round": plain(row.epsilon_round),
        "epsilon_cumulative": plain(row.epsilon_cumulative),
        "epsilon_round_recomputed": None if recomputed is None else recomputed.epsilon_round,
        "epsilon_cumulative_recomputed": None
        if recomputed is None
        else recomputed.epsilon_cumulative,
        "epsilon_cumulative_dp_accounting_rdp": None
        if recomputed is None
        else recomputed.dp_accounting_rdp,
        "epsilon_cumulative_dp_accounting_pld": None
        if recomputed is None
        else recomputed.dp_accounting_pld,
        "budget": plain(row.budget),
        "update_digest": plain(row.update_digest),
        "created_at": plain(row.created_at),
        "verified": not result.findings_for(entry),
        "findings": [f.line() for f in result.findings_for(entry)],
    }


def _rounds_by_run(entries: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    runs: dict[Any, list[Any]] = {}
    for entry in entries:
        if entry["status"] == status:
            runs.setdefault(entry["run_id"], []).append(entry["round_number"])
    return [{"run_id": run, "rounds": rounds} for run, rounds in runs.items()]


def _site(
    site: str,
    status: Any,
    entries: list[dict[str, Any]],
    findings: Mapping[str, int],
    empirical_audit: Mapping[str, Any] | None,
) -> dict[str, Any]:
    last = entries[-1] if entries else None
    budget = last["budget"] if last else None
    spent = last["epsilon_cumulative"] if last else None
    remaining = (
        budget - spent
        if isinstance(budget, int | float) and isinstance(spent, int | float)
        else None
    )
    return {
        "name": site,
        "status": plain(status),
        "budget": budget,
        "epsilon_spent": spent,
        "epsilon_spent_recomputed": last["epsilon_cumulative_recomputed"] if last else None,
        "remaining": remaining,
        PrivacyStatus.CHARGED.value: _rounds_by_run(entries, PrivacyStatus.CHARGED),
        PrivacyStatus.DECLINED.value: _rounds_by_run(entries, PrivacyStatus.DECLINED),
        "entries": entries,
        "verified": not any(findings.get(entry["entry"]) for entry in entries),
        "empirical_audit": None
        if empirical_audit is None
        else {str(key): plain(value) for key, value in empirical_audit.items()},
    }


def _audit(audit: EmpiricalAudit) -> dict[str, Any]:
    """A privacy audit statement as the report shows it: its figures as stored, where it is,
    whether its signature verified and how it stands against the site's recorded ε."""
    return {
        **dict(audit.figures or {}),
        "entry": audit.entry,
        "site": plain(audit.site),
        "run_id": plain(audit.run_id),
        "signature_verified": audit.signature_verified,
        "verdict": str(audit.verdict),
        "verdict_text": verdict_text(audit),
        "recorded_epsilon": audit.recorded_epsilon,
        "recorded_entry": audit.recorded_entry,
    }


def build_report(
    snapshot: Snapshot,
    result: VerifyResult,
    *,
    now: datetime | None = None,
    empirical_audits: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """The report's data: verification, runs, per-site spend, the global test score per round
    and every ledger entry.

    Each site shows its latest privacy audit statement on the chain (check 7: a
    membership-inference attack's figures, its entry, whether it verified, and how it stands
    against the site's recorded ε); `empirical_audits`, when given, maps a site's name to the
    result to show instead (plain key/value pairs). A site without one shows none.
    """
    chained = [_audit(audit) for audit in result.audits]
    audits: Mapping[str, Mapping[str, Any]] = (
        {a["site"]: a for a in chained if isinstance(a["site"], str)}
        if empirical_audits is None
        else empirical_audits
    )
    counted = {row.id for row in ledger_order(snapshot, resolve_entries(snapshot))}
    entries = [_entry(row, result) for row in snapshot.privacy]
    findings_per_entry: dict[str, int] = {}
    for finding in result.findings:
        findings_per_entry[finding.entry] = findings_per_entry.get(finding.entry, 0) + 1
    statuses = {str(site.name): site.status for site in snapshot.sites}
    names = sorted(set(statuses) | {e["site"] for e in entries if isinstance(e["site"], str)})
    sites = [
        _site(
            site,
            statuses.get(site),
            [e for e in entries if e["site"] == site and e["seq"] in counted],
            findings_per_entry,
            audits.get(site),
        )
        for site in names
    ]
    return {
        "format": REPORT_FORMAT,
        "database": snapshot.url,
        "generated_at": plain(now or datetime.now(UTC)),
        "verification": _verification(result),
        "runs": [
            {
                "id": plain(run.id),
                "flower_run_id": plain(run.flower_run_id),
                "scenario": plain(run.scenario),
                "mode": plain(run.protocol_mode),
                "status": plain(run.status),
                "rounds_planned": plain(run.rounds_planned),
            }
            for run in snapshot.runs
        ],
        "rounds": [
            {
                "run_id": plain(row.run_id),
                "round_number": plain(row.round_number),
                "status": plain(row.status),
                "global_accuracy": plain(row.global_accuracy),
                "global_auc": plain(row.global_auc),
            }
            for row in snapshot.rounds
        ],
        "sites": sites,
        "entries": entries,
        "empirical_audits": chained,
    }
