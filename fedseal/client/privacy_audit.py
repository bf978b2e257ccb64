"""The site's empirical privacy audit: membership inference against the run's global model.

The site attacks the model it took part in training with its own records: its training records
(members) against its validation and test records (non-members, which no site trained on),
with the loss-threshold attack of `fedseal.privacy.membership`. No record leaves the site; the
result is a check that the noise the site signed for is not contradicted by an attack, not a
proof of privacy (a weak attack proves little about any model).

`write_statement` signs the result with the site's identity key as a privacy audit statement
(`fedseal.contract.audit_statement`) and writes it to a file, which the coordinator's operator
attaches to the ledger (`fl-coordinator attach-statement FILE`): the statement holds only the
attack's figures, the run and the digest of the model attacked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.client.errors import SiteError
from fedseal.client.run_record import RunRecords
from fedseal.client.site_config import SiteConfig
from fedseal.client.site_context import SiteContext
from fedseal.client.site_keys import load_site_keys
from fedseal.client.training import TrainingInputs
from fedseal.contract.audit_statement import (
    AuditAttack,
    AuditStatementError,
    PrivacyAuditStatement,
    audit_time_text,
)
from fedseal.contract.site_identity import SiteKeyError
from fedseal.models.data.types import TextExamples
from fedseal.privacy.membership import MembershipAudit, membership_audit

__all__ = [
    "PrivacyAuditError",
    "SiteAudit",
    "audit_run",
    "default_statement_path",
    "write_statement",
]

_BATCH = 512


class PrivacyAuditError(SiteError, ValueError):
    """An audit that cannot be made; the message is one line for a person."""


@dataclass(frozen=True)
class SiteAudit:
    """The attack's result on one run's global model at one site."""

    site: str
    run_id: str
    applied_round: int
    adapter_digest: str
    result: MembershipAudit

    def statement(self, at: datetime) -> PrivacyAuditStatement:
        """The result as the statement the site signs, made at `at`."""
        fields = self.result.as_fields()
        fields["attack"] = AuditAttack(fields["attack"])
        return PrivacyAuditStatement(
            site=self.site,
            flower_run_id=self.run_id,
            applied_round=self.applied_round,
            adapter_digest=self.adapter_digest,
            audited_at=audit_time_text(at),
            **fields,
        )


def _losses(model: torch.nn.Module, inputs: TrainingInputs, device: str) -> np.ndarray:
    """Per-record cross-entropy of the true label, in batches, without gradients."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, inputs.n, _BATCH):
            index = torch.arange(start, min(start + _BATCH, inputs.n))
            logits = inputs.logits(model, index, torch.device(device))
            labels = inputs.labels[index].to(device)
            out.append(F.cross_entropy(logits, labels, reduction="none").cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def audit_run(config: SiteConfig, run_id: str | None = None, *, seed: int = 0) -> SiteAudit:
    """Attack run `run_id`'s global adapter (default: the run applied last) on this site."""
    from fedseal.models.adapter import load_vector_into_adapter

    records = RunRecords(config.site.state_dir)
    known = records.runs()
    chosen = run_id if run_id is not None else (known[-1] if known else None)
    record = records.load(chosen) if chosen is not None and chosen in known else None
    if record is None:
        held = ", ".join(known) or "none"
        raise PrivacyAuditError(
            f"site {config.site.name} applied no aggregate of run {chosen!r} (it holds: {held})"
        )
    site = SiteContext(config)
    loaded = site.model(record.plan)
    stored = GlobalAdapterStore(config.site.state_dir, record.run_id).load(loaded.layout)
    if stored is None:
        raise PrivacyAuditError(f"site {config.site.name} holds no adapter of run {record.run_id}")
    state, vector = stored
    load_vector_into_adapter(loaded.model, vector)
    data = site.data(record.plan.labels)
    held_out = TextExamples(
        tuple(data.validation.texts) + tuple(data.test.texts),
        np.concatenate([np.asarray(data.validation.labels), np.asarray(data.test.labels)]),
    )
    members = site.inputs_for(record.plan, loaded, "train", data.train)
    others = site.inputs_for(record.plan, loaded, "held-out", held_out)
    device = site.device()
    try:
        result = membership_audit(
            -_losses(loaded.model, members, device),
            -_losses(loaded.model, others, device),
            delta=_delta(config, members.n),
            seed=seed,
        )
    except ValueError as exc:
        raise PrivacyAuditError(f"run {record.run_id}: {exc}") from None
    return SiteAudit(config.site.name, record.run_id, state.applied_round, state.digest, result)


def _delta(config: SiteConfig, n: int) -> float:
    """The δ the site trains with (its `[dp]` table's, else the default for its size)."""
    from fedseal.client.dp.settings import default_delta

    dp = config.resolve_dp(n)
    return float(dp.delta) if dp is not None else default_delta(n)


def default_statement_path(config: SiteConfig, run_id: str) -> Path:
    """`<state_dir>/audits/<run>.json`: where `--attach` writes unless told otherwise."""
    return Path(config.site.state_dir) / "audits" / f"{run_id}.json"


def write_statement(
    config: SiteConfig, audit: SiteAudit, path: Path | None = None, *, at: datetime | None = None
) -> Path:
    """Sign the audit with the site's identity key and write the statement file (atomically:
    the old file or the new one, never a torn one); returns its path."""
    try:
        keys = load_site_keys(config.site.name, config.site.state_dir)
        signed = audit.statement(at or datetime.now(UTC)).sign(keys.identity)
    except (SiteKeyError, AuditStatementError) as exc:
        raise PrivacyAuditError(str(exc)) from None
    target = default_statement_path(config, audit.run_id) if path is None else Path(path)
    if target.is_dir():
        raise PrivacyAuditError(f"{target} is a folder; give the statement file's path")
    temp = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(signed.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        raise PrivacyAuditError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
