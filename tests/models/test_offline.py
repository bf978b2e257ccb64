"""Everything a site needs loads with the network cut (sockets refuse to connect)."""

from __future__ import annotations

import socket

import pytest

from fedseal.models import base_models
from fedseal.models.data import SCENARIOS, banks, heart, hospitals, load_federated_dataset
from fedseal.models.lora import LoraSettings, build_lora_classifier


def _refuse(*args, **kwargs):
    raise OSError("network access attempted")


def test_models_and_scenarios_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    # drop every in-process cache so the packages are really read again
    for cached in (
        hospitals.icd10_chapter_examples,
        heart._patients_by_site,
        banks._loans_by_bank,
        base_models.load_tokenizer,
    ):
        cached.cache_clear()
    for name, spec in SCENARIOS.items():
        assert len(load_federated_dataset(name, spec.default_sites).global_test) > 0
    assert base_models.load_tokenizer(base_models.DEFAULT_BASE_MODEL)("ok")["input_ids"]
    build_lora_classifier(base_models.DEFAULT_BASE_MODEL, 2, LoraSettings(), "cpu", seed=0)
