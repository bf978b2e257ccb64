"""The value types every demo scenario and data source produces."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

__all__ = [
    "PRIMARY_METRICS",
    "FederatedDataset",
    "Scenario",
    "SiteSplit",
    "TextExamples",
]

PRIMARY_METRICS = ("accuracy", "auc")


@dataclass(frozen=True, eq=False)
class TextExamples:
    """Labelled texts; `labels[i]` is the class index of `texts[i]` (labels are read-only)."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __post_init__(self) -> None:
        texts = tuple(self.texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        labels = np.array(self.labels, dtype=np.int64, copy=True).reshape(-1)
        if labels.size != len(texts):
            raise ValueError(f"{len(texts)} texts but {labels.size} labels")
        if labels.size and labels.min() < 0:
            raise ValueError("labels must be non-negative class indices")
        labels.setflags(write=False)
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.texts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextExamples):
            return NotImplemented
        return self.texts == other.texts and np.array_equal(self.labels, other.labels)

    def __hash__(self) -> int:
        return hash((self.texts, self.labels.tobytes()))

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextExamples:
        """The examples at `indices`, in that order."""
        index = np.asarray(indices, dtype=np.int64)
        return TextExamples(tuple(self.texts[i] for i in index), self.labels[index])

    def label_counts(self, num_labels: int) -> np.ndarray:
        """How many examples carry each class index."""
        return np.bincount(self.labels, minlength=num_labels)[:num_labels]

    def digest(self) -> str:
        """SHA-256 (hex) of texts and labels, to tell data sets apart in logs."""
        hasher = hashlib.sha256()
        for text, label in zip(self.texts, self.labels.tolist(), strict=True):
            hasher.update(f"{label}\t{text}\n".encode())
        return hasher.hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"texts": list(self.texts), "labels": self.labels.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TextExamples:
        return cls(tuple(data["texts"]), np.asarray(data["labels"], dtype=np.int64))

    @classmethod
    def concat(cls, parts: Sequence[TextExamples]) -> TextExamples:
        texts = tuple(t for part in parts for t in part.texts)
        labels = np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64)
        return cls(texts, labels)


def _no_examples() -> TextExamples:
    return TextExamples((), np.zeros(0, np.int64))


@dataclass(frozen=True)
class SiteSplit:
    """One site's private training, validation and held-out test examples (disjoint).

    Validation records are held out of training for choosing hyperparameters; the test records
    score the model (the global test set is the union of every site's test records).
    """

    name: str
    train: TextExamples
    test: TextExamples
    validation: TextExamples = field(default_factory=_no_examples)


@dataclass(frozen=True)
class FederatedDataset:
    """A scenario split into sites plus a global test set.

    `labels[i]` is the name of class i. `sites` keeps the scenario's site order. `max_length` is
    the token length that fits the scenario's texts (a hint for training settings).
    """

    scenario: str
    labels: tuple[str, ...]
    sites: Mapping[str, SiteSplit]
    global_test: TextExamples
    primary_metric: Literal["accuracy", "auc"]
    max_length: int = 32

    def __post_init__(self) -> None:
        if self.primary_metric not in PRIMARY_METRICS:
            raise ValueError(f"primary_metric must be one of {PRIMARY_METRICS}")
        object.__setattr__(self, "sites", MappingProxyType(dict(self.sites)))
        num_labels = len(self.labels)
        for part in (self.global_test, *(s.train for s in self.sites.values())):
            if len(part) and part.labels.max() >= num_labels:
                raise ValueError("an example's label index is outside the label names")

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Scenario:
    """A registered demo scenario: where its sites come from and how to build it."""

    name: str
    description: str
    primary_metric: Literal["accuracy", "auc"]
    site_pool: tuple[str, ...]
    default_sites: int
    min_sites: int
    max_length: int
    build: Callable[[int, int], FederatedDataset] = field(repr=False)

    @property
    def max_sites(self) -> int:
        return len(self.site_pool)
