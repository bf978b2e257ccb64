"""What a site's worker holds between stages: its config, trust, keys, data, model and adapter.

Flower starts a fresh ClientApp process for every message. Importing torch and building the model
in each of them cost ~10 s per message on a 2-core machine, so `fl-client` keeps one
`SiteContext` in its own process (inside `SiteService`) and the ClientApp forwards each message
to it over a local socket (`local_channel`). Data and model are loaded once per process; the
global adapter lives in the site's state directory, so a restarted site picks up where it was.
The stages (`fedseal.client.stages`) read and change it; none holds state of its own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedseal.client.adapter_state import AdapterState, GlobalAdapterStore, find_global
from fedseal.client.errors import SiteRefusal
from fedseal.client.site_config import SiteConfig
from fedseal.client.site_data import SiteData, check_validation, load_site_records
from fedseal.client.site_keys import SiteKeys
from fedseal.client.stages.secure import SecureSite
from fedseal.client.trust import SiteTrust
from fedseal.client.upload_log import UploadLog
from fedseal.contract.run_plan import AdapterKind, RunPlan
from fedseal.contract.wire import PROTOCOL_VERSION, Key
from fedseal.models.data.types import TextExamples
from fedseal.secure_agg.params import Mode

if TYPE_CHECKING:
    from fedseal.client.training import TrainingInputs

__all__ = [
    "Fields",
    "LoadedModel",
    "SiteContext",
    "capped",
    "derive_seed",
    "resolve_device",
]

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


def derive_seed(*parts: object) -> int:
    """A 63-bit seed for batch order, stable across processes (not for anything secret)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def capped(examples: TextExamples, cap: int) -> TextExamples:
    """The first `cap` records (the demo splits are already shuffled); all when cap is 0."""
    if cap <= 0 or len(examples) <= cap:
        return examples
    return TextExamples(examples.texts[:cap], examples.labels[:cap])


def _encoding_progress(part: str) -> Callable[[int, int], None]:
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


@dataclass
class LoadedModel:
    """The run's model with its adapter layout and the seeded initial adapter."""

    model: Any
    tokenizer: Any  # None for the head adapter, which reads cached embeddings
    layout: Any
    initial: np.ndarray  # the run's seeded initial adapter, identical on every site
    adapter: AdapterKind = AdapterKind.LORA


class SiteContext:
    """One site's loaded state, shared by its stages (one request at a time, see `SiteService`)."""

    def __init__(self, config: SiteConfig, keys: SiteKeys | None = None) -> None:
        self.config = config
        self.trust = SiteTrust(config.site.name, config.site.state_dir, config.secure_agg)
        self.secure = SecureSite(keys, config.site.state_dir, self.trust)
        self.uploads = UploadLog(config.site.state_dir)
        self.lock = threading.Lock()  # held by every stage that loads or changes the model
        self._data: dict[tuple[str, ...] | None, SiteData] = {}
        self._models: dict[tuple[Any, ...], LoadedModel] = {}
        self._inputs: dict[tuple[Any, ...], TrainingInputs] = {}
        # The optimizer's moments after the site's last round of a run: computed from what the
        # site already released (noisy gradients under DP), so keeping them costs no privacy.
        # Lost on a restart (the next round starts with fresh moments, as the first one does).
        self._moments: dict[int, dict[str, Any]] = {}
        self._device: str | None = None

    @property
    def name(self) -> str:
        return self.config.site.name

    def reply(self, fields: Mapping[str, Any], round_number: int | None = None) -> Fields:
        """A result record: the protocol version, the site's name and the round, then `fields`."""
        head: Fields = {Key.PROTOCOL_VERSION: PROTOCOL_VERSION, Key.SITE: self.name}
        if round_number is not None:
            head[Key.ROUND] = round_number
        return {**head, **fields}

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

    def model(self, plan: RunPlan) -> LoadedModel:
        """The run's model, built once (a new plan replaces the one held)."""
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
                key: LoadedModel(
                    model,
                    tokenizer,
                    adapter_layout(model),
                    adapter_to_vector(model),
                    plan.adapter,
                )
            }
        return self._models[key]

    def inputs_for(
        self, plan: RunPlan, loaded: LoadedModel, part: str, examples: TextExamples
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

    def global_adapter(
        self, run_id: int, loaded: LoadedModel, expected: str = ""
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

    def moments(self, run_id: int) -> dict[str, Any] | None:
        """The optimizer moments this run's last round left, if this process trained it."""
        return self._moments.get(run_id)

    def keep_moments(self, run_id: int, state: dict[str, Any] | None) -> None:
        """Keep this run's optimizer moments (one run at a time) for the site's next round."""
        self._moments = {} if state is None else {run_id: state}

    def checked_mode(self, run_id: int, fields: Mapping[str, Any]) -> Mode:
        """The message's mode, allowed by this site, and the run's own once it has a key."""
        mode = self.trust.mode(fields)
        bound = self.secure.bound_mode(run_id)
        if bound is not None and bound is not mode:
            raise self.trust.refuse(f"run {run_id} is bound to mode {bound}, message {mode}")
        return mode
