"""A stable mapping between a model's trainable adapter and one flat float32 vector.

Secure aggregation and the ledger work on flat vectors; the layout (names and shapes in sorted
order) and its digest let every party check that they are adding up the same coordinates.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fedseal.models.lora import trainable_parameters

__all__ = [
    "AdapterLayout",
    "InvalidAdapterFile",
    "adapter_layout",
    "adapter_to_vector",
    "load_adapter",
    "load_vector_into_adapter",
    "save_adapter",
    "vector_digest",
]

_TENSOR_KEY = "adapter"
_FORMAT = "fedseal-adapter-v1"


@dataclass(frozen=True)
class AdapterLayout:
    """Names and shapes of the trainable parameters, in the order they appear in the vector."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        names = [name for name, _ in self.entries]
        if names != sorted(names) or len(set(names)) != len(names):
            raise ValueError("adapter layout entries must have unique names in sorted order")
        for name, shape in self.entries:
            if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
                raise ValueError(f"adapter layout entry {name!r} has an invalid shape {shape!r}")

    @property
    def size(self) -> int:
        """Number of float32 values in the flat vector."""
        return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in self.entries)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of names and shapes."""
        canonical = json.dumps([[name, list(shape)] for name, shape in self.entries])
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class InvalidAdapterFile(ValueError):
    """An adapter file is unreadable, altered, or made for a different layout."""


def adapter_layout(model: torch.nn.Module) -> AdapterLayout:
    """The layout of `model`'s trainable parameters in sorted-name order."""
    return AdapterLayout(
        tuple((name, tuple(int(d) for d in p.shape)) for name, p in trainable_parameters(model))
    )


def adapter_to_vector(model: torch.nn.Module) -> np.ndarray:
    """Concatenate the trainable parameters (layout order) into one float32 vector."""
    params = [p for _, p in trainable_parameters(model)]
    if not params:
        return np.zeros(0, dtype=np.float32)
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in params])
    return flat.numpy().copy()


def load_vector_into_adapter(model: torch.nn.Module, vector: np.ndarray) -> None:
    """Write a flat vector (layout order) into the trainable parameters, in place."""
    values = _checked_vector(vector, adapter_layout(model).size)
    offset = 0
    with torch.no_grad():
        for _, param in trainable_parameters(model):
            count = param.numel()
            chunk = torch.from_numpy(values[offset : offset + count].copy()).view(param.shape)
            param.copy_(chunk.to(param.device, param.dtype))
            offset += count


def vector_digest(vector: np.ndarray, layout: AdapterLayout) -> str:
    """SHA-256 (hex) binding a vector's exact float32 bytes to a layout."""
    values = _checked_vector(vector, layout.size, require_finite=False)
    hasher = hashlib.sha256()
    hasher.update(layout.digest.encode("ascii"))
    hasher.update(values.astype("<f4", copy=False).tobytes())
    return hasher.hexdigest()


def save_adapter(path: str | os.PathLike[str], vector: np.ndarray, layout: AdapterLayout) -> str:
    """Write a vector as safetensors with its digests in the metadata; returns the vector digest.

    The file is written beside its destination and renamed over it, so readers only ever see a
    complete file.
    """
    values = _checked_vector(vector, layout.size)
    digest = vector_digest(values, layout)
    metadata = {
        "format": _FORMAT,
        "layout": json.dumps([[name, list(shape)] for name, shape in layout.entries]),
        "layout_digest": layout.digest,
        "vector_digest": digest,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file({_TENSOR_KEY: values.astype("<f4", copy=False)}, tmp_name, metadata=metadata)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return digest


def load_adapter(
    path: str | os.PathLike[str],
    expected_layout: AdapterLayout,
    *,
    expected_digest: str | None = None,
) -> np.ndarray:
    """Read a vector written by `save_adapter`, checking layout and digest.

    The stored digest catches corruption and careless edits; anyone can recompute it, so pass
    `expected_digest` from a trusted record (the ledger) to reject a deliberately swapped file.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no adapter file at {source}")
    try:
        with safe_open(source, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidAdapterFile(f"{source}: not a readable adapter file") from exc
    if metadata.get("format") != _FORMAT or set(tensors) != {_TENSOR_KEY}:
        raise InvalidAdapterFile(f"{source}: not a fedseal adapter file")
    if metadata.get("layout_digest") != expected_layout.digest:
        raise InvalidAdapterFile(f"{source}: adapter was saved for a different layout")
    values = tensors[_TENSOR_KEY]
    if values.dtype != np.float32 or values.ndim != 1 or values.size != expected_layout.size:
        raise InvalidAdapterFile(f"{source}: adapter tensor has the wrong dtype or size")
    digest = vector_digest(values, expected_layout)
    if digest != metadata.get("vector_digest"):
        raise InvalidAdapterFile(f"{source}: adapter digest mismatch (file altered)")
    if expected_digest is not None and digest != expected_digest:
        raise InvalidAdapterFile(f"{source}: adapter is not the expected one (digest differs)")
    if not np.all(np.isfinite(values)):
        raise InvalidAdapterFile(f"{source}: adapter contains non-finite values")
    return values.astype(np.float32, copy=True)


def _checked_vector(vector: np.ndarray, size: int, *, require_finite: bool = True) -> np.ndarray:
    """Validate a flat vector and return it as contiguous float32."""
    if not isinstance(vector, np.ndarray):
        raise TypeError("adapter vector must be a numpy array")
    if vector.ndim != 1:
        raise ValueError(f"adapter vector must be 1-D, got shape {vector.shape}")
    if vector.size != size:
        raise ValueError(f"adapter vector has {vector.size} values, the layout needs {size}")
    if not np.issubdtype(vector.dtype, np.floating):
        raise ValueError(f"adapter vector must be floating point, got {vector.dtype}")
    values = np.ascontiguousarray(vector, dtype=np.float32)
    if require_finite and not np.all(np.isfinite(values)):
        raise ValueError("adapter vector contains NaN or infinite values")
    return values
