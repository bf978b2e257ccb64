"""The site's long-lived worker: data, base model and global adapter, loaded once.

Flower starts a fresh ClientApp process for every message. Importing torch and building the model
in each of them cost ~10 s per message on a 2-core machine, so `fl-client` keeps this service in
its own process and the ClientApp forwards each message to it over a local socket
(`local_channel`). Data and model are loaded once per process; the global adapter lives in the
site's state directory, so a restarted site picks up where it was.

One round, seen from a site:
1. `train`: bring the global adapter up to date (catch-up aggregates for rounds it missed), check
   its digest against the coordinator's, train locally, and return `n · Δ` (plain mode). Under
   `[dp]` the round trains with DP-SGD only if the site's budget allows it and is charged before
   the update leaves; otherwise the site declines, and either way its ledger entry goes along.
2. `apply`: add the round's aggregate to the global adapter, store it, evaluate it on the site's
   held-out test set (and the global test set when asked), and report the new digest.
The locally trained adapter is never kept as the global one: only aggregates change it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedseal.client.adapter_state import AdapterState, GlobalAdapterStore, find_global
from fedseal.client.secure_stages import SecureSite
from fedseal.client.site_config import SiteConfig
from fedseal.client.site_data import SiteData, check_validation, load_site_records
from fedseal.client.site_keys import SiteKeys
from fedseal.client.statement_outbox import SentStatement, StatementOutbox
from fedseal.client.trust import SiteTrust
from fedseal.client.upload_log import UploadLog
from fedseal.contract.message_fields import field_bytes, field_bytes_list, field_int, field_json
from fedseal.contract.run_plan import AdapterKind, RunPlan
from fedseal.contract.wire import PROTOCOL_VERSION, Key
from fedseal.models.data.types import TextExamples
from fedseal.secure_agg.params import Mode

if TYPE_CHECKING:
    from fedseal.client.dp.private_round import PrivateRound
    from fedseal.client.dp.report import PrivacyReport
    from fedseal.client.dp.settings import DpSettings
    from fedseal.client.training import TrainingInputs, TrainSettings

from fedseal.client.errors import SiteRefusal

__all__ = ["SiteRefusal", "SiteService", "derive_seed", "resolve_device"]

log = logging.getLogger("fedseal.client")

Fields = dict[str, Any]


def resolve_device(setting: str) -> str:
    """`auto` means CUDA when this machine has it, else the CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise SiteRefusal(f"device {setting!r} requested but CUDA is not available here")
    return setting


def _catchup_fields(text: object) -> dict[str, Any]:
    """One missed round's extra fields (JSON object text from the coordinator)."""
    value = field_json({Key.CATCHUP_FIELDS: text}, Key.CATCHUP_FIELDS)
    if not isinstance(value, dict):
        raise SiteRefusal("catch-up fields must be JSON objects")
    return value


def derive_seed(*parts: object) -> int:
    """A 63-bit seed for batch order, stable across processes (not for anything secret)."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class _LoadedModel:
    model: Any
    tokenizer: Any  # None for the head adapter, which reads cached embeddings
    layout: Any
    initial: np.ndarray  # the run's seeded initial adapter, identical on every site
    adapter: AdapterKind = AdapterKind.LORA


def _encoding_progress(part: str) -> Any:
    """A progress callback that logs the embedding of a large part every ~10 %."""
    marks: set[int] = set()

    def report(done: int, total: int) -> None:
        if total < 2000:
            return
        tenth = done * 10 // total
        if tenth not in marks:
            marks.add(tenth)
            log.info("embedding %s records with the frozen base model: %d of %d", part, done, total)

    return report


def _capped(examples: TextExamples, cap: int) -> TextExamples:
    """The first `cap` records (the demo splits are already shuffled); all when cap is 0."""
    if cap <= 0 or len(examples) <= cap:
        return examples
    return TextExamples(examples.texts[:cap], examples.labels[:cap])


_SECURE_STAGES = frozenset({"keygen", "install", "advertise", "share", "consistency", "release"})
"""Operations of the key ceremony and the he+ss key stages (light: no training)."""


class SiteService:
    """Answers the coordinator's stages for one site; one request at a time."""

    def __init__(self, config: SiteConfig, keys: SiteKeys | None = None) -> None:
        self.config = config
        self.trust = SiteTrust(config.site.name, config.site.state_dir, config.secure_agg)
        self.secure = SecureSite(keys, config.site.state_dir, self.trust)
        self.uploads = UploadLog(config.site.state_dir)
        self._lock = threading.Lock()
        self._data: dict[tuple[str, ...] | None, SiteData] = {}
        self._models: dict[tuple[Any, ...], _LoadedModel] = {}
        self._inputs: dict[tuple[Any, ...], TrainingInputs] = {}
        # The optimizer's moments after the site's last round of a run: computed from what the
        # site already released (noisy gradients under DP), so keeping them costs no privacy.
        # Lost on a restart (the next round starts with fresh moments, as the first one does).
        self._moments: dict[int, dict[str, Any]] = {}
        self._device: str | None = None

    # -- shared loading -------------------------------------------------------------------

    def data(self, labels: tuple[str, ...] | None = None) -> SiteData:
        if labels not in self._data:
            data = load_site_records(self.config, labels)
            check_validation(self.config, data)
            self._data[labels] = data
        return self._data[labels]

    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self.config.site.device)
        return self._device

    def _model(self, plan: RunPlan) -> _LoadedModel:
        key = (
            plan.adapter,
            plan.base_model,
            len(plan.labels),
            plan.lora_rank,
            plan.lora_alpha,
            plan.lora_dropout,
            plan.seed,
        )
        if key not in self._models:
            from fedseal.client.adapter_model import build_adapter_model
            from fedseal.models.adapter import adapter_layout, adapter_to_vector

            model, tokenizer = build_adapter_model(plan, self.device())
            self._models = {
                key: _LoadedModel(
                    model,
                    tokenizer,
                    adapter_layout(model),
                    adapter_to_vector(model),
                    plan.adapter,
                )
            }
        return self._models[key]

    def _inputs_for(
        self, plan: RunPlan, loaded: _LoadedModel, part: str, examples: TextExamples
    ) -> TrainingInputs:
        """`examples` as the run's adapter reads them: token ids (LoRA) or the records' cached
        embeddings (head; computed once, kept in the site's own state directory)."""
        key = (plan.adapter, plan.base_model, plan.max_length, part, examples.digest())
        if key not in self._inputs:
            from fedseal.client.adapter_model import adapter_inputs

            inputs = adapter_inputs(
                plan,
                loaded.tokenizer,
                examples,
                self.config.site.state_dir / "cache",
                self.device(),
                progress=_encoding_progress(part),
            )
            self._inputs = {k: v for k, v in self._inputs.items() if k[3] != part}
            self._inputs[key] = inputs
        return self._inputs[key]

    def _global(
        self, run_id: int, plan: RunPlan, loaded: _LoadedModel, expected: str = ""
    ) -> tuple[GlobalAdapterStore, AdapterState, np.ndarray]:
        """This run's global adapter: stored, or (first message of a run that continues an
        interrupted one) the adapter this site holds with the digest the coordinator expects,
        or the seeded initial one."""
        from fedseal.models.adapter import vector_digest

        store = GlobalAdapterStore(self.config.site.state_dir, run_id)
        stored = store.load(loaded.layout)
        if stored is not None:
            return store, stored[0], stored[1]
        vector = loaded.initial.copy()
        initial = AdapterState(0, vector_digest(vector, loaded.layout), None)
        if expected and expected != initial.digest:
            found = find_global(self.config.site.state_dir, expected, loaded.layout)
            if found is not None:
                state, vector = found
                log.info("continuing from the global adapter of round %d", state.applied_round)
                return store, store.save(state.applied_round, vector, loaded.layout), vector
        return store, initial, vector

    # -- stages ---------------------------------------------------------------------------

    def identify(self, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
        """Who the site is; with a run plan, also the adapter's size and layout digest."""
        data = self.data()
        result: Fields = {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: self.config.site.name,
            Key.TRAIN_EXAMPLES: len(data.train),
            Key.TEST_EXAMPLES: len(data.test),
            Key.DEVICE: self.config.site.device,
        }
        if Key.BASE_MODEL in config:
            with self._lock:
                loaded = self._model(RunPlan.from_config(config))
            result[Key.ADAPTER_SIZE] = int(loaded.layout.size)
            result[Key.LAYOUT_DIGEST] = str(loaded.layout.digest)
        runs = [str(r) for r in config.get(Key.RECOVER_RUNS, [])]
        if runs:
            try:
                kept = StatementOutbox(self.config.site.state_dir).sent(runs)
            except ValueError as exc:
                raise SiteRefusal(f"recover-runs: {exc}") from None
            result[Key.RECOVERED] = [s.statement for s in kept]
            result[Key.RECOVERED_SIGNATURES] = [s.signature for s in kept]
        return result, {}

    def handle(
        self, operation: str, run_id: int, fields: Mapping[str, Any]
    ) -> tuple[Fields, Fields]:
        """The site's one dispatch table: every operation a ClientApp process relays."""
        if operation in _SECURE_STAGES:
            return self.secure_stage(operation, run_id, fields)
        plain = {"identify": self.identify, "train": self.train, "apply": self.apply}
        if operation not in plain:
            raise SiteRefusal(f"unknown operation {operation!r}")
        return plain[operation](run_id, fields)

    def secure_stage(
        self, operation: str, run_id: int, config: Mapping[str, Any]
    ) -> tuple[Fields, Fields]:
        """Key ceremony and he+ss key stages (light: no training)."""
        stages = {
            "keygen": self.secure.keygen,
            "install": self.secure.install,
            "advertise": self.secure.advertise,
            "share": self.secure.share,
            "consistency": self.secure.consistency,
            "release": self.secure.release,
        }
        with self._lock:
            result = stages[operation](run_id, config)
        return {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: self.config.site.name,
            Key.ROUND: int(config.get(Key.ROUND, 0)),
            **result,
        }, {}

    def train(self, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
        with self._lock:
            return self._train(run_id, config)

    def apply(self, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
        with self._lock:
            return self._apply(run_id, config)

    def _train(self, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
        from fedseal.client.adapter_model import weight_decay_for
        from fedseal.client.training import TrainSettings, train_on
        from fedseal.contract.update_codec import encode_update
        from fedseal.models.adapter import adapter_to_vector, load_vector_into_adapter

        plan = RunPlan.from_config(config)
        round_number = field_int(config, Key.ROUND, low=1, high=2**31)
        mode = self._checked_mode(run_id, config)
        if self.uploads.uploaded(run_id, round_number):
            raise self.trust.refuse(
                f"round {round_number} of run {run_id} was trained and uploaded before"
            )
        data = self.data(plan.labels)
        loaded = self._model(plan)
        expected = str(config.get(Key.EXPECTED_DIGEST, ""))
        store, state, vector = self._global(run_id, plan, loaded, expected)
        state, vector = self._catch_up(run_id, store, state, vector, loaded, config)
        if expected and expected != state.digest:
            raise SiteRefusal(
                f"global adapter out of sync: site has round {state.applied_round} digest "
                f"{state.digest[:12]}, coordinator expects {expected[:12]}"
            )
        load_vector_into_adapter(loaded.model, vector)
        steps = min(plan.steps, self.config.training.max_steps_per_round)
        settings = TrainSettings(
            steps=steps,
            batch_size=self.config.training.batch_size,
            learning_rate=plan.learning_rate,
            max_length=plan.max_length,
            seed=derive_seed(plan.seed, self.config.site.name, round_number),
            weight_decay=weight_decay_for(plan),
        )
        inputs = self._inputs_for(plan, loaded, "train", data.train)
        dp = self.config.resolve_dp(len(data.train))
        started = time.perf_counter()
        privacy: Fields = {}
        private: PrivateRound | None = None
        if dp is not None and dp.enabled:
            private = self._train_private(
                run_id, round_number, plan, loaded, inputs, settings, dp, self._moments.get(run_id)
            )
            if not private.trained:
                privacy = self._signed_statement(run_id, round_number, private.report, b"")
                log.warning("round %d: declined: %s", round_number, private.reason)
                return {
                    Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
                    Key.SITE: self.config.site.name,
                    Key.ROUND: round_number,
                    Key.START_DIGEST: state.digest,
                    Key.APPLIED_ROUND: state.applied_round,
                    Key.DECLINED: private.reason,
                    **privacy,
                }, {}
            loss = None  # a statistic of the training records, outside the DP guarantee
        else:
            plain = train_on(
                loaded.model,
                inputs,
                settings,
                self.device(),
                optimizer_state=self._moments.get(run_id),
            )
            loss = plain.mean_loss
            self._keep_moments(run_id, plain.optimizer_state)
        seconds = time.perf_counter() - started
        weight = len(data.train)
        delta = adapter_to_vector(loaded.model) - vector
        if mode is Mode.PLAIN:
            upload, clipped = encode_update(delta * np.float32(weight)), 0
        else:
            upload, clipped = self.secure.prepare_upload(run_id, config, delta, weight)
        self.uploads.record(run_id, round_number)  # before the upload leaves the site
        if private is not None:
            privacy = self._signed_statement(run_id, round_number, private.report, upload)
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
        return {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: self.config.site.name,
            Key.ROUND: round_number,
            Key.START_DIGEST: state.digest,
            Key.APPLIED_ROUND: state.applied_round,
            Key.UPDATE: upload,
            Key.NUM_EXAMPLES: weight,
            **privacy,
        }, metrics

    def _train_private(
        self,
        run_id: int,
        round_number: int,
        plan: RunPlan,
        loaded: _LoadedModel,
        inputs: TrainingInputs,
        settings: TrainSettings,
        dp: DpSettings,
        moments: dict[str, Any] | None = None,
    ) -> PrivateRound:
        """One round under DP (`train_private_round`): declined, or trained and charged."""
        from fedseal.client.dp.accountant_store import AccountantStore
        from fedseal.client.dp.private_round import AlreadyCharged, train_private_round

        try:
            self.secure.keys  # noqa: B018 - ledger statements are signed: no keys, no training
        except PermissionError as exc:
            raise SiteRefusal(f"cannot train under DP: {exc}") from None
        try:
            private = train_private_round(
                loaded.model,
                inputs,
                settings,
                dp,
                AccountantStore.open(self.config.site.state_dir),
                self.device(),
                run_id=run_id,
                round_number=round_number,
                rounds_planned=plan.rounds,
                optimizer_state=moments,
            )
        except AlreadyCharged as exc:
            raise SiteRefusal(str(exc)) from None
        if private.result is not None:
            self._keep_moments(run_id, private.result.optimizer_state)
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

    def _keep_moments(self, run_id: int, state: dict[str, Any] | None) -> None:
        """Keep this run's optimizer moments (one run at a time) for the site's next round."""
        self._moments = {} if state is None else {run_id: state}

    def _signed_statement(
        self, run_id: int, round_number: int, report: PrivacyReport, upload: bytes
    ) -> Fields:
        """The round's privacy-ledger statement, signed with the site's identity key.

        It commits to the update sent (its SHA-256; "" when none was), so the ledger entry the
        coordinator chains is bound to what actually left the site.
        """
        from fedseal.contract.ledger_codec import sign_statement, update_digest

        fields = {
            **report.as_fields(),
            "site": self.config.site.name,
            "flower_run_id": str(run_id),
            "round_number": round_number,
            "update_digest": update_digest(upload) if upload else "",
        }
        text = json.dumps(fields)
        signature = sign_statement(self.secure.keys.identity, fields)
        StatementOutbox(self.config.site.state_dir).keep(
            SentStatement(str(run_id), round_number, text, signature)
        )
        return {Key.PRIVACY: text, Key.PRIVACY_SIGNATURE: signature}

    def _catch_up(
        self,
        run_id: int,
        store: GlobalAdapterStore,
        state: AdapterState,
        vector: np.ndarray,
        loaded: _LoadedModel,
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
            vector = self._add_aggregate(run_id, vector, payload, fields, loaded)
            state = store.save(number, vector, loaded.layout)
        return state, vector

    def _add_aggregate(
        self,
        run_id: int,
        vector: np.ndarray,
        payload: bytes,
        fields: Mapping[str, Any],
        loaded: _LoadedModel,
    ) -> np.ndarray:
        """The global adapter after one round's aggregate (decrypted here in the he modes)."""
        from fedseal.contract.update_codec import InvalidPayload, decode_aggregate
        from fedseal.secure_agg.errors import SecureAggError

        mode = self._checked_mode(run_id, fields)
        try:
            if mode is Mode.PLAIN:
                weighted_sum, total_weight = decode_aggregate(payload, loaded.layout.size)
                mean = weighted_sum / np.float32(total_weight)
            else:
                mean = self.secure.decrypt_mean(run_id, fields, payload)
        except (InvalidPayload, SecureAggError) as exc:
            raise SiteRefusal(f"aggregate rejected: {exc}") from None
        if mean.shape != vector.shape:
            raise SiteRefusal("aggregate has the wrong length for this adapter")
        return (vector + mean).astype(np.float32)

    def _checked_mode(self, run_id: int, fields: Mapping[str, Any]) -> Mode:
        """The message's mode, allowed by this site, and the run's own once it has a key."""
        mode = self.trust.mode(fields)
        bound = self.secure.bound_mode(run_id)
        if bound is not None and bound is not mode:
            raise self.trust.refuse(f"run {run_id} is bound to mode {bound}, message {mode}")
        return mode

    def _apply(self, run_id: int, config: Mapping[str, Any]) -> tuple[Fields, Fields]:
        from fedseal.client.training import evaluate_on
        from fedseal.models.adapter import load_vector_into_adapter

        plan = RunPlan.from_config(config)
        round_number = field_int(config, Key.ROUND, low=1, high=2**31)
        data = self.data(plan.labels)
        loaded = self._model(plan)
        store, state, vector = self._global(run_id, plan, loaded)
        # the train stage of this round checked the adapter against the coordinator's digest;
        # rounds between (aborted ones) have no aggregate
        if state.applied_round < round_number:
            payload = field_bytes(config, Key.AGGREGATE, max_len=1 << 31)
            vector = self._add_aggregate(run_id, vector, payload, config, loaded)
            state = store.save(round_number, vector, loaded.layout)
        elif state.applied_round != round_number:
            raise SiteRefusal(
                f"cannot apply round {round_number}: "
                f"the site's adapter is at round {state.applied_round}"
            )
        load_vector_into_adapter(loaded.model, vector)
        cap = self.config.training.max_eval_examples
        local = evaluate_on(
            loaded.model,
            self._inputs_for(plan, loaded, "test", _capped(data.test, cap)),
            self.device(),
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
                self._inputs_for(plan, loaded, "global", _capped(data.global_test, cap)),
                self.device(),
            )
            metrics[Key.GLOBAL_ACCURACY] = float(overall.accuracy)
            metrics[Key.GLOBAL_EXAMPLES] = int(overall.n)
            if overall.auc is not None:
                metrics[Key.GLOBAL_AUC] = float(overall.auc)
        return {
            Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
            Key.SITE: self.config.site.name,
            Key.ROUND: round_number,
            Key.ADAPTER_DIGEST: state.digest,
            Key.APPLIED_ROUND: state.applied_round,
        }, metrics
