"""A run's global adapter as a PEFT adapter folder with its model card, for use outside fedseal.

`export_run` writes `adapter_config.json` and `adapter_model.safetensors` (what
`PeftModel.from_pretrained(base_model, folder)` loads) and `README.md` (the model card). Before
the folder appears it is loaded back with PEFT's own loader and must give the site's model's
logits on the site's test records. It is written beside its destination and renamed into
place, so a failed export leaves nothing, and an existing folder is never touched.

Only a completed run is exported: at the site that means it applied the aggregate of the run's
last planned round; with the registry's `LedgerFacts`, that the registry says the run completed
and the site holds its final global adapter (a run may end early, or its last round abort).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.client.errors import SiteError
from fedseal.client.run_record import RunRecord, RunRecords
from fedseal.contract.run_plan import AdapterKind, RunPlan

if TYPE_CHECKING:
    from fedseal.client.ledger_facts import LedgerFacts
    from fedseal.client.model_card import CardFacts
    from fedseal.client.site_config import SiteConfig

__all__ = ["CHECK_RECORDS", "ExportError", "Exported", "export_run"]

CHECK_RECORDS = 64
"""How many of the site's test records the exported folder is checked on."""
_TOLERANCE = 1e-4
"""Largest logit difference accepted between the folder and the site's model (float32)."""


class ExportError(SiteError, ValueError):
    """An export that cannot be made; the message is one line for a person."""


@dataclass(frozen=True)
class Exported:
    """Where the adapter went, and what it is."""

    folder: Path
    run_id: str
    applied_round: int
    adapter_digest: str

    @property
    def card(self) -> Path:
        return self.folder / "README.md"


def export_run(
    config: SiteConfig,
    out: Path,
    run_id: str | None = None,
    ledger: LedgerFacts | None = None,
) -> Exported:
    """Export run `run_id` (default: the one this site applied an aggregate of last) to `out`.

    `ledger` (from `ledger_facts.read_ledger`, by whoever holds the registry) puts every site's
    spend and the chain head on the card; without it the card has what the site knows."""
    name = config.site.name
    state_dir = config.site.state_dir
    records = RunRecords(state_dir)
    record = _record(records, name, run_id)
    try:
        state = GlobalAdapterStore(state_dir, record.run_id).state()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"run {record.run_id}: its adapter state is damaged: {exc}") from None
    if state is None or state.file is None:
        raise ExportError(f"site {name} holds no global adapter of run {record.run_id}")
    _check_completed(name, record, state.applied_round, state.digest, ledger)
    target = Path(out)
    if target.exists() or target.is_symlink():
        raise ExportError(f"{target} already exists; nothing was written (name a new folder)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {target.parent}: {exc.strerror}") from None
    from fedseal.client.model_card import render_card

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _as_mkdir_would(staging)
        facts = _write(config, record, state.applied_round, state.digest, staging, ledger)
        (staging / "README.md").write_text(render_card(facts), encoding="utf-8")
        if target.exists():
            raise ExportError(f"{target} appeared meanwhile; nothing was written")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(target, record.run_id, state.applied_round, state.digest)


def _as_mkdir_would(folder: Path) -> None:
    """The permissions `mkdir` gives under the process's umask (mkdtemp's are owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _record(records: RunRecords, site: str, run_id: str | None) -> RunRecord:
    """The run's record at this site, or one line naming the runs it does hold."""
    try:
        known = records.runs()
        if run_id is None:
            if not known:
                raise ExportError(f"site {site} has applied no run's aggregate: nothing to export")
            run_id = known[-1]
        record = records.load(run_id) if _plain_id(run_id) else None
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if record is None or not record.rounds:
        held = f"it holds runs {', '.join(known)}" if known else "it holds none"
        raise ExportError(
            f"unknown run {run_id!r}: site {site} applied no aggregate of it ({held})"
        )
    return record


def _plain_id(run_id: str) -> bool:
    return 0 < len(run_id) <= 64 and all(c.isalnum() or c in "-_" for c in run_id)


def _check_completed(
    site: str, record: RunRecord, applied: int, digest: str, ledger: LedgerFacts | None
) -> None:
    if ledger is None:
        if applied < record.plan.rounds:
            raise ExportError(
                f"run {record.run_id} is not completed at site {site}: its global adapter "
                f"includes round {applied} of {record.plan.rounds}"
            )
        return
    if ledger.flower_run_id != record.run_id:
        raise ExportError(
            f"the registry's run {ledger.registry_run_id} is Flower run {ledger.flower_run_id}, "
            f"not run {record.run_id}"
        )
    if ledger.status != "completed" or ledger.final_digest is None:
        raise ExportError(
            f"run {record.run_id} is not completed: the registry says {ledger.status}"
        )
    if digest != ledger.final_digest:
        raise ExportError(
            f"site {site}'s adapter of run {record.run_id} (round {applied}) is not the run's "
            f"final global adapter (round {ledger.final_round}, digest {ledger.final_digest[:12]})"
        )


def _write(
    config: SiteConfig,
    record: RunRecord,
    applied: int,
    digest: str,
    folder: Path,
    ledger: LedgerFacts | None,
) -> CardFacts:
    """Write the PEFT folder, check it against the site's model, and gather the card's facts."""
    import torch

    from fedseal.client.adapter_model import build_adapter_model
    from fedseal.client.ledger_facts import own_spend
    from fedseal.client.model_card import CardFacts
    from fedseal.models.adapter import adapter_layout, load_vector_into_adapter
    from fedseal.models.base_models import get_base_model
    from fedseal.models.peft_export import head_as_peft, save_peft_adapter

    plan = record.plan
    spec = get_base_model(plan.base_model)
    with torch.random.fork_rng():
        model, tokenizer = build_adapter_model(plan, "cpu")
    store = GlobalAdapterStore(config.site.state_dir, record.run_id)
    try:
        loaded = store.load(adapter_layout(model))
    except ValueError as exc:  # also the adapter file's own InvalidAdapterFile
        raise ExportError(f"run {record.run_id}: {exc}") from None
    if loaded is None or loaded[0].digest != digest:
        raise ExportError(f"run {record.run_id}: the global adapter changed during the export")
    load_vector_into_adapter(model, loaded[1])
    model.eval()
    peft_model = head_as_peft(plan.base_model, model) if plan.adapter is AdapterKind.HEAD else model
    save_peft_adapter(peft_model, plan.base_model, folder)
    checked, difference = _check_folder(config, plan, model, tokenizer, folder)
    last = record.last if record.last.number == applied else None
    return CardFacts(
        site=config.site.name,
        run_id=record.run_id,
        registry_run_id=record.registry_run_id,
        plan=plan,
        mode=record.mode,
        scenario=ledger.scenario if ledger is not None else config.data.scenario,
        applied_round=applied,
        sampled=() if last is None else last.sampled,
        adapter_digest=digest,
        weights_sha256=_sha256(folder / "adapter_model.safetensors"),
        base_hub_id=spec.hub_id or spec.name,
        base_package=spec.package.replace("_", "-"),
        base_weights_sha256=_sha256(spec.folder() / "model.safetensors"),
        own_spend=own_spend(config.site.state_dir, config.site.name, record.run_id),
        scores={} if last is None else dict(last.scores),
        checked_records=checked,
        checked_max_difference=difference,
        ledger=ledger,
    )


def _check_folder(
    config: SiteConfig, plan: RunPlan, model: Any, tokenizer: Any, folder: Path
) -> tuple[int, float]:
    """Load `folder` with PEFT's loader onto a fresh base classifier and compare its logits
    with the site's model on the site's first test records; (records, largest difference)."""
    import torch
    from peft import PeftModel

    from fedseal.client.adapter_model import adapter_inputs
    from fedseal.client.site_data import SiteDataError, load_site_records
    from fedseal.models._quiet import quiet_transformers
    from fedseal.models.base_models import load_classifier, load_tokenizer
    from fedseal.models.data.types import TextExamples
    from fedseal.models.peft_export import head_logits

    try:
        test = load_site_records(config, plan.labels).test
    except SiteDataError as exc:
        raise ExportError(f"cannot check the export on the site's records: {exc}") from None
    count = min(CHECK_RECORDS, len(test))
    if count == 0:
        raise ExportError(f"site {config.site.name} has no test records to check the export on")
    examples = TextExamples(test.texts[:count], test.labels[:count])
    with tempfile.TemporaryDirectory() as cache:  # the site's cache is left as it is
        inputs = adapter_inputs(plan, tokenizer, examples, Path(cache), "cpu")
    with torch.random.fork_rng(), quiet_transformers():
        base = load_classifier(plan.base_model, len(plan.labels), "cpu")
        exported = PeftModel.from_pretrained(base, str(folder)).eval()
    batch = load_tokenizer(plan.base_model)(
        list(examples.texts),
        padding=True,
        truncation=True,
        max_length=plan.max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = inputs.logits(model, torch.arange(count), torch.device("cpu"))
        if plan.adapter is AdapterKind.HEAD:
            got = head_logits(exported, batch["input_ids"], batch["attention_mask"])
        else:
            got = exported(**batch).logits
    difference = float((got - expected).abs().max())
    if not difference <= _TOLERANCE:
        raise ExportError(
            f"the exported adapter does not reproduce the site's model (logits differ by "
            f"{difference:.3g} on its test records); nothing was written"
        )
    return count, difference


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()
