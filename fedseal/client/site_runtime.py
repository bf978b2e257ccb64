"""Everything a ClientApp process needs for one message: config, data, model, global adapter.

Flower starts a fresh ClientApp process for every message, so this is built once per message.
The data comes from the JSON cache in the site's state directory and the base model from its
installed package folder; the global adapter from the site's store for the run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedseal.client.adapter_state import AdapterState, GlobalAdapterStore
from fedseal.client.site_config import SiteConfig, load_site_config
from fedseal.client.site_data import SiteData, load_site_records
from fedseal.run_plan import RunPlan

__all__ = ["SiteRuntime", "derive_seed", "resolve_device"]


def resolve_device(setting: str) -> str:
    """`auto` means CUDA when this machine has it, else the CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {setting!r} requested but CUDA is not available here")
    return setting


def derive_seed(*parts: object) -> int:
    """A 63-bit seed for batch order, stable across processes (not for anything secret)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class SiteRuntime:
    """The loaded state of one site for one run."""

    config: SiteConfig
    plan: RunPlan
    run_id: int
    data: SiteData
    device: str
    model: Any
    tokenizer: Any
    layout: Any
    store: GlobalAdapterStore

    @classmethod
    def load(cls, node_config: Any, plan: RunPlan, run_id: int) -> SiteRuntime:
        import torch

        from fedseal.models.adapter import adapter_layout
        from fedseal.models.base_models import load_tokenizer
        from fedseal.models.lora import LoraSettings, build_lora_classifier

        config = load_site_config(Path(str(node_config["config"])))
        threads = int(os.environ.get("FEDSEAL_TORCH_THREADS", config.training.threads))
        torch.set_num_threads(max(1, threads))
        data = load_site_records(config, plan.labels)
        device = resolve_device(config.site.device)
        model = build_lora_classifier(
            plan.base_model,
            len(plan.labels),
            LoraSettings(rank=plan.lora_rank, alpha=plan.lora_alpha, dropout=plan.lora_dropout),
            device,
            plan.seed,
        )
        return cls(
            config=config,
            plan=plan,
            run_id=run_id,
            data=data,
            device=device,
            model=model,
            tokenizer=load_tokenizer(plan.base_model),
            layout=adapter_layout(model),
            store=GlobalAdapterStore(config.site.state_dir, run_id),
        )

    def current_global(self) -> tuple[AdapterState, np.ndarray]:
        """The site's global adapter: the stored one, or the run's seeded initial adapter."""
        from fedseal.models.adapter import adapter_to_vector, vector_digest

        stored = self.store.load(self.layout)
        if stored is not None:
            return stored
        vector = adapter_to_vector(self.model)
        return AdapterState(0, vector_digest(vector, self.layout), None), vector

    def use_vector(self, vector: np.ndarray) -> None:
        from fedseal.models.adapter import load_vector_into_adapter

        load_vector_into_adapter(self.model, vector)
