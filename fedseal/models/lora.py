"""LoRA settings and the deterministic construction of a LoRA classifier.

Federated averaging only makes sense if every site starts from the same adapter, so the model is
built under a fixed seed: the same seed gives bit-identical trainable parameters on every site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from fedseal.models._quiet import quiet_transformers
from fedseal.models.base_models import get_base_model, load_classifier

__all__ = ["LoraSettings", "build_lora_classifier", "trainable_parameters"]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters shared by every site of a federation."""

    rank: int = 8
    alpha: float = 16
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int):
            raise ValueError(f"LoRA rank must be an int, got {self.rank!r}")
        if not 1 <= self.rank <= 256:
            raise ValueError(f"LoRA rank must be in [1, 256], got {self.rank}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise ValueError(f"LoRA alpha must be a number, got {self.alpha!r}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a finite number > 0, got {self.alpha}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"LoRA dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def _devices_to_fork(device: torch.device) -> list[int]:
    """CUDA devices whose RNG state `fork_rng` must save (none on CPU)."""
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def build_lora_classifier(
    base: str,
    num_labels: int,
    settings: LoraSettings,
    device: torch.device | str,
    seed: int,
) -> PeftModel:
    """Build `base` with a `num_labels`-way head and LoRA adapters; only LoRA and the head train.

    The model is returned in train mode (all submodules).

    The head and the LoRA matrices are initialised on the CPU from `seed` inside a forked RNG, so
    the caller's RNG state is untouched and every site gets the same starting adapter. The model
    is moved to `device` before wrapping: LoRA weights wrapped first and moved later silently stop
    updating under Opacus (opacus issue #820).
    """
    spec = get_base_model(base)
    target = torch.device(device)
    with torch.random.fork_rng(devices=_devices_to_fork(target)):
        torch.manual_seed(seed)
        model = load_classifier(spec.name, num_labels, "cpu").to(target)
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(spec.lora_target_modules),
            modules_to_save=[spec.classifier_module],
        )
        with quiet_transformers():
            peft_model = get_peft_model(model, config)
    _freeze_all_but_adapter(peft_model)
    # from_pretrained leaves the model in eval mode and PEFT's head copy keeps it; Opacus only
    # records activations of modules in train mode, so put every module in one mode.
    peft_model.train()
    return peft_model


def _freeze_all_but_adapter(model: PeftModel) -> None:
    """Keep exactly LoRA matrices and the head's trainable copy trainable.

    Opacus fails on any trainable parameter unused in forward, such as the head's
    `original_module` that PEFT keeps beside the trained copy.
    """
    for name, param in model.named_parameters():
        param.requires_grad_(_is_adapter_parameter(name))
    if not any(p.requires_grad for p in model.parameters()):
        raise RuntimeError("no LoRA or head parameters were found to train")


def _is_adapter_parameter(name: str) -> bool:
    return ".lora_" in name or ".modules_to_save." in name


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable parameters in sorted-name order (the order the adapter vector uses)."""
    return sorted(
        ((name, p) for name, p in model.named_parameters() if p.requires_grad),
        key=lambda item: item[0],
    )
