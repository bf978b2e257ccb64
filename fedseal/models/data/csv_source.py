"""Labelled texts from a CSV file: how a real institution brings its own data."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedseal.models.data.types import TextExamples

__all__ = ["load_csv_examples"]


def load_csv_examples(
    path: str | os.PathLike[str],
    text_column: str,
    label_column: str,
    labels: Sequence[str],
) -> TextExamples:
    """Read `text_column` and `label_column` from a CSV with a header row.

    Each label value must be one of `labels` (its position is the class index), so every site maps
    class names to the same indices.
    """
    label_index = {str(name): i for i, name in enumerate(labels)}
    if len(label_index) != len(labels) or len(labels) < 2:
        raise ValueError("labels must be at least two distinct class names")
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"CSV file not found: {source}")
    texts: list[str] = []
    ids: list[int] = []
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise ValueError(
                f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
                f"columns present: {', '.join(header) or '(none)'}"
            )
        for line, row in enumerate(reader, start=2):
            value = (row[label_column] or "").strip()
            if value not in label_index:
                raise ValueError(
                    f"{source}, line {line}: unknown label {value!r}; "
                    f"expected one of: {', '.join(label_index)}"
                )
            text = (row[text_column] or "").strip()
            if not text:
                raise ValueError(f"{source}, line {line}: empty text in column {text_column!r}")
            texts.append(text)
            ids.append(label_index[value])
    if not texts:
        raise ValueError(f"{source}: no data rows")
    return TextExamples(tuple(texts), np.asarray(ids, dtype=np.int64))
