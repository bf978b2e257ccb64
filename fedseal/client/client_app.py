"""The site's Flower ClientApp: identify, train (send an update), apply (take the aggregate).

One round, seen from a site:
1. `train`: bring the global adapter up to date (catch-up aggregates for rounds it missed), check
   its digest against the coordinator's, train locally, and send `n · Δ` (plain mode).
2. `evaluate.apply`: add the round's aggregate to the global adapter, store it, evaluate it on the
   site's held-out test set (and the global test set when asked), and report the new digest.
The locally trained adapter is never kept as the global one: only aggregates change it.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedseal.run_plan import RunPlan
from fedseal.wire import PROTOCOL_VERSION, Key, RecordName

__all__ = ["app"]

log = logging.getLogger("fedseal.client")

app = ClientApp()


class SiteRefusal(RuntimeError):
    """The site will not do what the message asks; the reason goes back to the coordinator."""


def _config(msg: Message) -> ConfigRecord:
    try:
        config = msg.content.config_records[RecordName.CONFIG]
    except KeyError:
        raise SiteRefusal("message has no config record") from None
    if int(config.get(Key.PROTOCOL_VERSION, -1)) != PROTOCOL_VERSION:
        raise SiteRefusal(f"unsupported protocol version (site speaks {PROTOCOL_VERSION})")
    return config


def _reply(msg: Message, result: dict, metrics: dict | None = None) -> Message:
    records = RecordDict({RecordName.RESULT: ConfigRecord(result)})
    if metrics:
        records[RecordName.METRICS] = MetricRecord(metrics)
    return Message(records, reply_to=msg)


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Tell the coordinator which site this node is (light: no torch, no model)."""
    from pathlib import Path

    from fedseal.client.site_config import load_site_config
    from fedseal.client.site_data import load_site_records

    config = load_site_config(Path(str(context.node_config["config"])))
    data = load_site_records(config)
    return _reply(
        msg,
        {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: config.site.name,
            Key.TRAIN_EXAMPLES: len(data.train),
            Key.TEST_EXAMPLES: len(data.test),
            Key.DEVICE: config.site.device,
        },
    )


def _load_runtime(msg: Message, context: Context, config: ConfigRecord):
    from fedseal.client.site_runtime import SiteRuntime

    plan = RunPlan.from_config(config)
    return SiteRuntime.load(context.node_config, plan, msg.metadata.run_id)


def _catch_up(runtime, config: ConfigRecord) -> tuple[int, np.ndarray, str]:
    """Apply aggregates of rounds this site missed, in order; return (round, vector, digest)."""
    from fedseal.models.adapter import vector_digest

    state, vector = runtime.current_global()
    rounds = [int(r) for r in config.get(Key.CATCHUP_ROUNDS, [])]
    payloads = list(config.get(Key.CATCHUP_PAYLOADS, []))
    if len(rounds) != len(payloads):
        raise SiteRefusal("catch-up rounds and payloads differ in number")
    for number, payload in zip(rounds, payloads, strict=True):
        if number <= state.applied_round:
            continue
        if number != state.applied_round + 1:
            raise SiteRefusal(f"catch-up skips from round {state.applied_round} to {number}")
        vector = _add_aggregate(vector, payload, runtime.layout.size)
        state = runtime.store.save(number, vector, runtime.layout)
    return state.applied_round, vector, vector_digest(vector, runtime.layout)


def _add_aggregate(vector: np.ndarray, payload: bytes, size: int) -> np.ndarray:
    from fedseal.update_codec import decode_aggregate

    weighted_sum, total_weight = decode_aggregate(payload, size)
    return (vector + weighted_sum / np.float32(total_weight)).astype(np.float32)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the global adapter locally and send the weighted change."""
    from fedseal.client.site_runtime import derive_seed
    from fedseal.client.training import TrainSettings, train_steps
    from fedseal.models.adapter import adapter_to_vector
    from fedseal.update_codec import encode_update

    config = _config(msg)
    runtime = _load_runtime(msg, context, config)
    round_number = int(config[Key.ROUND])
    applied_round, vector, digest = _catch_up(runtime, config)
    expected = str(config.get(Key.EXPECTED_DIGEST, ""))
    if expected and expected != digest:
        raise SiteRefusal(
            f"global adapter out of sync: site has round {applied_round} digest {digest[:12]}, "
            f"coordinator expects {expected[:12]}"
        )
    runtime.use_vector(vector)
    steps = min(runtime.plan.steps, runtime.config.training.max_steps_per_round)
    settings = TrainSettings(
        steps=steps,
        batch_size=runtime.config.training.batch_size,
        learning_rate=runtime.plan.learning_rate,
        max_length=runtime.plan.max_length,
        seed=derive_seed(runtime.plan.seed, runtime.config.site.name, round_number),
    )
    started = time.perf_counter()
    result = train_steps(
        runtime.model, runtime.tokenizer, runtime.data.train, settings, runtime.device
    )
    seconds = time.perf_counter() - started
    weight = len(runtime.data.train)
    delta = adapter_to_vector(runtime.model) - vector
    log.info(
        "round %d: trained %d steps in %.1f s, loss %.4f",
        round_number,
        steps,
        seconds,
        result.mean_loss,
    )
    return _reply(
        msg,
        {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: runtime.config.site.name,
            Key.ROUND: round_number,
            Key.START_DIGEST: digest,
            Key.APPLIED_ROUND: applied_round,
            Key.UPDATE: encode_update(delta * np.float32(weight)),
            Key.NUM_EXAMPLES: weight,
        },
        {Key.TRAIN_LOSS: float(result.mean_loss), Key.TRAIN_SECONDS: seconds},
    )


@app.evaluate("apply")
def apply(msg: Message, context: Context) -> Message:
    """Add the round's aggregate to the global adapter, store it and evaluate it."""
    from fedseal.client.training import evaluate
    from fedseal.models.adapter import vector_digest

    config = _config(msg)
    runtime = _load_runtime(msg, context, config)
    round_number = int(config[Key.ROUND])
    state, vector = runtime.current_global()
    if state.applied_round == round_number - 1:
        vector = _add_aggregate(vector, bytes(config[Key.AGGREGATE]), runtime.layout.size)
        state = runtime.store.save(round_number, vector, runtime.layout)
    elif state.applied_round != round_number:
        raise SiteRefusal(
            f"cannot apply round {round_number}: "
            f"the site's adapter is at round {state.applied_round}"
        )
    runtime.use_vector(vector)
    plan = runtime.plan
    local = evaluate(
        runtime.model,
        runtime.tokenizer,
        runtime.data.test,
        runtime.device,
        max_length=plan.max_length,
    )
    metrics = {
        Key.EVAL_LOSS: float(local.loss),
        Key.EVAL_ACCURACY: float(local.accuracy),
        Key.EVAL_EXAMPLES: int(local.n),
    }
    if local.auc is not None:
        metrics[Key.EVAL_AUC] = float(local.auc)
    if bool(config.get(Key.EVALUATE_GLOBAL, False)) and runtime.data.global_test is not None:
        overall = evaluate(
            runtime.model,
            runtime.tokenizer,
            runtime.data.global_test,
            runtime.device,
            max_length=plan.max_length,
        )
        metrics[Key.GLOBAL_ACCURACY] = float(overall.accuracy)
        metrics[Key.GLOBAL_EXAMPLES] = int(overall.n)
        if overall.auc is not None:
            metrics[Key.GLOBAL_AUC] = float(overall.auc)
    return _reply(
        msg,
        {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: runtime.config.site.name,
            Key.ROUND: round_number,
            Key.ADAPTER_DIGEST: vector_digest(vector, runtime.layout),
            Key.APPLIED_ROUND: state.applied_round,
        },
        metrics,
    )
