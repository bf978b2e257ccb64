"""Shared fixtures for the model tests: offline, one torch thread, one tokenizer per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from fedseal.models.base_models import DEFAULT_BASE_MODEL, load_tokenizer

    return load_tokenizer(DEFAULT_BASE_MODEL)
