"""The head adapter: a linear head over the frozen base model's sentence embeddings.

Under DP-SGD on a CPU, training LoRA through all six transformer layers at the batch sizes DP
needs (about a thousand records) costs ~20 s per step; the frozen encoder is a fixed function of
each record, so its output can be computed once per site and kept with the site's own records.
The adapter that trains and travels is then the head alone: mean-pooled, L2-normalised MiniLM
embeddings (the pooling the base model was trained for) into a zero-initialised linear layer.
docs/decisions.md ("The DP training regime") gives the measurements behind this choice.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fedseal.models._quiet import quiet_transformers
from fedseal.models.base_models import get_base_model, load_tokenizer

__all__ = [
    "FEATURE_POOLING",
    "FeatureHead",
    "build_feature_head",
    "cached_features",
    "encode_texts",
    "feature_size",
    "mean_pooled",
]

FEATURE_POOLING = "mean-l2"
"""How token states become one vector: attention-masked mean, then unit L2 norm."""
_FORMAT = "fedseal-features-v1"
_ENCODE_BATCH = 128


class FeatureHead(torch.nn.Module):
    """`classifier`: Linear(feature size -> labels), zero-initialised so every site starts equal.

    The parameter names (`classifier.bias`, `classifier.weight`) are the adapter's layout.
    """

    def __init__(self, features: int, num_labels: int) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(features, num_labels)
        torch.nn.init.zeros_(self.classifier.weight)
        torch.nn.init.zeros_(self.classifier.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


def mean_pooled(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token states to one vector per record: attention-masked mean, then unit L2 norm."""
    weights = attention_mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


def feature_size(base: str) -> int:
    """The embedding width of a registered base model (read from its config, no weights)."""
    import json

    config = json.loads((get_base_model(base).folder() / "config.json").read_text("utf-8"))
    return int(config["hidden_size"])


def build_feature_head(base: str, num_labels: int, device: torch.device | str) -> FeatureHead:
    """The head adapter for `base` with `num_labels` outputs, in train mode, on `device`."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
    head = FeatureHead(feature_size(base), num_labels).to(torch.device(device))
    head.train()
    return head


@torch.inference_mode()
def encode_texts(
    base: str,
    texts: Sequence[str],
    max_length: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings (float32, one row per text) from the frozen base.

    Texts are encoded in order of length so a batch pads little; rows come back in input order.
    """
    from transformers import AutoModel

    n = len(texts)
    target = torch.device(device)
    spec = get_base_model(base)
    with quiet_transformers():
        encoder = AutoModel.from_pretrained(spec.folder(), local_files_only=True).to(target)
    encoder.eval()
    tokenizer = load_tokenizer(base)
    width = int(encoder.config.hidden_size)
    out = np.zeros((n, width), dtype=np.float32)
    order = sorted(range(n), key=lambda i: len(texts[i]))
    for start in range(0, n, _ENCODE_BATCH):
        chosen = order[start : start + _ENCODE_BATCH]
        encoded = tokenizer(
            [texts[i] for i in chosen],
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        mask = encoded["attention_mask"].to(target)
        states = encoder(
            input_ids=encoded["input_ids"].to(target), attention_mask=mask
        ).last_hidden_state
        out[chosen] = mean_pooled(states, mask).float().cpu().numpy()
        if progress is not None:
            progress(min(start + _ENCODE_BATCH, n), n)
    return out


def _cache_name(base: str, max_length: int, texts: Sequence[str]) -> str:
    hasher = hashlib.sha256(f"{_FORMAT}\x1f{base}\x1f{max_length}\x1f{FEATURE_POOLING}".encode())
    for text in texts:
        hasher.update(text.encode("utf-8"))
        hasher.update(b"\x00")
    return f"features-{hasher.hexdigest()[:32]}.safetensors"


def cached_features(
    cache_dir: Path,
    base: str,
    texts: Sequence[str],
    max_length: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """`encode_texts`, kept in `cache_dir` under a name bound to the base model and the texts.

    A site computes its records' embeddings once; a later process (or a restarted site) reads
    them back. A file that is unreadable or of the wrong shape is recomputed, never trusted.
    """
    path = Path(cache_dir) / _cache_name(base, max_length, texts)
    width = feature_size(base)
    if path.is_file():
        try:
            with safe_open(path, framework="numpy") as handle:
                values = handle.get_tensor("features")
            if values.dtype == np.float32 and values.shape == (len(texts), width):
                return values
        except (SafetensorError, OSError, ValueError):
            pass
    values = encode_texts(base, texts, max_length, device, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"features": values}, tmp, metadata={"format": _FORMAT, "base": base})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return values
