"""The `train` stage: bring the global adapter up to date, train locally, send the change.

The site first applies the aggregates of rounds it missed (they come with the message), checks
its adapter's digest against the coordinator's, trains, and returns `n · Δ` (plain) or its
masked, encrypted form (he, he+ss). Under `[dp]` the round trains with DP-SGD only if the site's
budget allows it and is charged before the update leaves; otherwise the site declines, and
either way its signed ledger statement goes along.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedseal.client.errors import SiteRefusal
from fedseal.client.stages.apply import catch_up
from fedseal.client.statement_outbox import SentStatement, StatementOutbox
from fedseal.contract.message_fields import field_int
from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import Key
from fedseal.secure_agg.params import Mode

if TYPE_CHECKING:
    from fedseal.client.dp.private_round import PrivateRound
    from fedseal.client.dp.report import PrivacyReport
    from fedseal.client.dp.settings import DpSettings
    from fedseal.client.site_context import Fields, LoadedModel, SiteContext
    from fedseal.client.training import TrainingInputs, TrainSettings

__all__ = ["train"]

log = logging.getLogger("fedseal.client")


def train(site: SiteContext, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
    """Train this round once (a second upload for the same round is refused) and reply with
    the update, or with the reason DP declined it."""
    from fedseal.client.adapter_model import weight_decay_for
    from fedseal.client.site_context import derive_seed
    from fedseal.client.training import TrainSettings, train_on
    from fedseal.contract.update_codec import encode_update
    from fedseal.models.adapter import adapter_to_vector, load_vector_into_adapter

    plan = RunPlan.from_config(config)
    round_number = field_int(config, Key.ROUND, low=1, high=2**31)
    mode = site.checked_mode(run_id, config)
    if site.uploads.uploaded(run_id, round_number):
        raise site.trust.refuse(
            f"round {round_number} of run {run_id} was trained and uploaded before"
        )
    data = site.data(plan.labels)
    loaded = site.model(plan)
    expected = str(config.get(Key.EXPECTED_DIGEST, ""))
    store, state, vector = site.global_adapter(run_id, loaded, expected)
    state, vector = catch_up(site, run_id, store, state, vector, loaded, config)
    if expected and expected != state.digest:
        raise SiteRefusal(
            f"global adapter out of sync: site has round {state.applied_round} digest "
            f"{state.digest[:12]}, coordinator expects {expected[:12]}"
        )
    load_vector_into_adapter(loaded.model, vector)
    steps = min(plan.steps, site.config.training.max_steps_per_round)
    settings = TrainSettings(
        steps=steps,
        batch_size=site.config.training.batch_size,
        learning_rate=plan.learning_rate,
        max_length=plan.max_length,
        seed=derive_seed(plan.seed, site.name, round_number),
        weight_decay=weight_decay_for(plan),
    )
    inputs = site.inputs_for(plan, loaded, "train", data.train)
    dp = site.config.resolve_dp(len(data.train))
    adapter_state = {Key.START_DIGEST: state.digest, Key.APPLIED_ROUND: state.applied_round}
    started = time.perf_counter()
    privacy: Fields = {}
    private: PrivateRound | None = None
    if dp is not None and dp.enabled:
        private = _train_private(site, run_id, round_number, plan, loaded, inputs, settings, dp)
        if not private.trained:
            privacy = _signed_statement(site, run_id, round_number, private.report, b"")
            log.warning("round %d: declined: %s", round_number, private.reason)
            declined = {**adapter_state, Key.DECLINED: private.reason, **privacy}
            return site.reply(declined, round_number), {}
        loss = None  # a statistic of the training records, outside the DP guarantee
    else:
        plain = train_on(
            loaded.model, inputs, settings, site.device(), optimizer_state=site.moments(run_id)
        )
        loss = plain.mean_loss
        site.keep_moments(run_id, plain.optimizer_state)
    seconds = time.perf_counter() - started
    weight = len(data.train)
    delta = adapter_to_vector(loaded.model) - vector
    if mode is Mode.PLAIN:
        upload, clipped = encode_update(delta * np.float32(weight)), 0
    else:
        upload, clipped = site.secure.prepare_upload(run_id, config, delta, weight)
    site.uploads.record(run_id, round_number)  # before the upload leaves the site
    if private is not None:
        privacy = _signed_statement(site, run_id, round_number, private.report, upload)
    log.info(
        "round %d: trained %d steps in %.1f s%s",
        round_number,
        steps,
        seconds,
        "" if loss is None else f", loss {loss:.4f}",
    )
    metrics: Fields = {Key.TRAIN_SECONDS: seconds, Key.CLIPPED: float(clipped)}
    if loss is not None:
        metrics[Key.TRAIN_LOSS] = float(loss)
    sent = {**adapter_state, Key.UPDATE: upload, Key.NUM_EXAMPLES: weight, **privacy}
    if mode is Mode.HE_SS and (release := site.secure.release_with_upload(run_id, config)):
        sent[Key.SHARE_RELEASE] = release  # a unanimous round: no consistency or release stage
    return site.reply(sent, round_number), metrics


def _train_private(
    site: SiteContext,
    run_id: int,
    round_number: int,
    plan: RunPlan,
    loaded: LoadedModel,
    inputs: TrainingInputs,
    settings: TrainSettings,
    dp: DpSettings,
) -> PrivateRound:
    """One round under DP (`train_private_round`): declined, or trained and charged."""
    from fedseal.client.dp.accountant_store import AccountantStore
    from fedseal.client.dp.private_round import AlreadyCharged, train_private_round

    try:
        site.secure.keys  # noqa: B018 - ledger statements are signed: no keys, no training
    except PermissionError as exc:
        raise SiteRefusal(f"cannot train under DP: {exc}") from None
    try:
        private = train_private_round(
            loaded.model,
            inputs,
            settings,
            dp,
            AccountantStore.open(site.config.site.state_dir),
            site.device(),
            run_id=run_id,
            round_number=round_number,
            rounds_planned=plan.rounds,
            optimizer_state=site.moments(run_id),
        )
    except AlreadyCharged as exc:
        raise SiteRefusal(str(exc)) from None
    if private.result is not None:
        site.keep_moments(run_id, private.result.optimizer_state)
    if private.trained:
        report = private.report
        log.info(
            "round %d: DP-SGD σ %.4g, q %.4g, %d steps: ε this round %.4g, spent %.4g of %g",
            round_number,
            report.noise_multiplier,
            report.sample_rate,
            report.steps,
            report.epsilon_round,
            report.epsilon_cumulative,
            report.budget,
        )
    return private


def _signed_statement(
    site: SiteContext, run_id: int, round_number: int, report: PrivacyReport, upload: bytes
) -> Fields:
    """The round's privacy-ledger statement, signed with the site's identity key.

    It commits to the update sent (its SHA-256; "" when none was), so the ledger entry the
    coordinator chains is bound to what actually left the site.
    """
    from fedseal.contract.ledger_codec import sign_statement, update_digest

    fields = {
        **report.as_fields(),
        "site": site.name,
        "flower_run_id": str(run_id),
        "round_number": round_number,
        "update_digest": update_digest(upload) if upload else "",
    }
    text = json.dumps(fields)
    signature = sign_statement(site.secure.keys.identity, fields)
    StatementOutbox(site.config.site.state_dir).keep(
        SentStatement(str(run_id), round_number, text, signature)
    )
    return {Key.PRIVACY: text, Key.PRIVACY_SIGNATURE: signature}
