"""The `apply` stage: add the round's aggregate to the global adapter, store it, evaluate it.

The aggregates of rounds a site missed arrive with its next train message (`catch_up`), so the
same addition serves both. The locally trained adapter is never kept as the global one: only
aggregates change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedseal.client.adapter_state import AdapterState, GlobalAdapterStore
from fedseal.client.errors import SiteRefusal
from fedseal.client.run_record import keep_applied_safely
from fedseal.contract.message_fields import field_bytes, field_bytes_list, field_int, field_json
from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import Key
from fedseal.secure_agg.params import Mode

if TYPE_CHECKING:
    from fedseal.client.site_context import Fields, LoadedModel, SiteContext

__all__ = ["add_aggregate", "apply", "catch_up"]


def _catchup_fields(text: object) -> dict[str, Any]:
    """One missed round's extra fields (JSON object text from the coordinator)."""
    value = field_json({Key.CATCHUP_FIELDS: text}, Key.CATCHUP_FIELDS)
    if not isinstance(value, dict):
        raise SiteRefusal("catch-up fields must be JSON objects")
    return value


def add_aggregate(
    site: SiteContext,
    run_id: int,
    vector: np.ndarray,
    payload: bytes,
    fields: Mapping[str, Any],
    loaded: LoadedModel,
) -> np.ndarray:
    """The global adapter after one round's aggregate (decrypted here in the he modes)."""
    from fedseal.contract.update_codec import InvalidPayload, decode_aggregate
    from fedseal.secure_agg.errors import SecureAggError

    mode = site.checked_mode(run_id, fields)
    try:
        if mode is Mode.PLAIN:
            weighted_sum, total_weight = decode_aggregate(payload, loaded.layout.size)
            mean = weighted_sum / np.float32(total_weight)
        else:
            mean = site.secure.decrypt_mean(run_id, fields, payload)
    except (InvalidPayload, SecureAggError) as exc:
        raise SiteRefusal(f"aggregate rejected: {exc}") from None
    if mean.shape != vector.shape:
        raise SiteRefusal("aggregate has the wrong length for this adapter")
    return (vector + mean).astype(np.float32)


def catch_up(
    site: SiteContext,
    run_id: int,
    store: GlobalAdapterStore,
    state: AdapterState,
    vector: np.ndarray,
    loaded: LoadedModel,
    config: Mapping[str, Any],
) -> tuple[AdapterState, np.ndarray]:
    """Apply aggregates of completed rounds this site missed, in order.

    Round numbers increase but may skip rounds that aborted (no aggregate); the train
    stage then checks the result against the digest the coordinator expects."""
    rounds = [field_int({"r": r}, "r", low=1) for r in config.get(Key.CATCHUP_ROUNDS) or []]
    payloads = field_bytes_list(config, Key.CATCHUP_PAYLOADS, max_len=1 << 31, default=[])
    extras = [_catchup_fields(e) for e in config.get(Key.CATCHUP_FIELDS) or []]
    if len(rounds) != len(payloads) or len(extras) not in (0, len(rounds)):
        raise SiteRefusal("catch-up rounds, payloads and fields differ in number")
    for index, (number, payload) in enumerate(zip(rounds, payloads, strict=True)):
        if number <= state.applied_round:
            continue
        fields = {**config, **(extras[index] if extras else {}), Key.ROUND: number}
        vector = add_aggregate(site, run_id, vector, payload, fields, loaded)
        state = store.save(number, vector, loaded.layout)
    return state, vector


def apply(site: SiteContext, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
    """Add the round's aggregate (unless the train stage's catch-up already did), store the
    adapter, and evaluate it on the site's test set (and the global one when asked)."""
    from fedseal.client.site_context import capped
    from fedseal.client.training import evaluate_on
    from fedseal.models.adapter import load_vector_into_adapter

    plan = RunPlan.from_config(config)
    round_number = field_int(config, Key.ROUND, low=1, high=2**31)
    data = site.data(plan.labels)
    loaded = site.model(plan)
    store, state, vector = site.global_adapter(run_id, loaded)
    # the train stage of this round checked the adapter against the coordinator's digest;
    # rounds between (aborted ones) have no aggregate
    if state.applied_round < round_number:
        payload = field_bytes(config, Key.AGGREGATE, max_len=1 << 31)
        vector = add_aggregate(site, run_id, vector, payload, config, loaded)
        state = store.save(round_number, vector, loaded.layout)
    elif state.applied_round != round_number:
        raise SiteRefusal(
            f"cannot apply round {round_number}: "
            f"the site's adapter is at round {state.applied_round}"
        )
    load_vector_into_adapter(loaded.model, vector)
    cap = site.config.training.max_eval_examples
    local = evaluate_on(
        loaded.model,
        site.inputs_for(plan, loaded, "test", capped(data.test, cap)),
        site.device(),
    )
    metrics: Fields = {
        Key.EVAL_LOSS: float(local.loss),
        Key.EVAL_ACCURACY: float(local.accuracy),
        Key.EVAL_EXAMPLES: int(local.n),
    }
    if local.auc is not None:
        metrics[Key.EVAL_AUC] = float(local.auc)
    if bool(config.get(Key.EVALUATE_GLOBAL, False)) and data.global_test is not None:
        overall = evaluate_on(
            loaded.model,
            site.inputs_for(plan, loaded, "global", capped(data.global_test, cap)),
            site.device(),
        )
        metrics[Key.GLOBAL_ACCURACY] = float(overall.accuracy)
        metrics[Key.GLOBAL_EXAMPLES] = int(overall.n)
        if overall.auc is not None:
            metrics[Key.GLOBAL_AUC] = float(overall.auc)
    adapter = {Key.ADAPTER_DIGEST: state.digest, Key.APPLIED_ROUND: state.applied_round}
    result = site.reply(adapter, round_number)
    keep_applied_safely(site.config.site.state_dir, run_id, dict(config), result, metrics)
    return result, metrics
