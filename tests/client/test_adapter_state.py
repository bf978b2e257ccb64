"""The site's stored global adapter: atomic, digest-checked, one file per applied round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.models.adapter import AdapterLayout


def layout() -> AdapterLayout:
    return AdapterLayout((("a.weight", (2, 3)), ("b.bias", (4,))))


def test_save_then_load(tmp_path: Path) -> None:
    store = GlobalAdapterStore(tmp_path, 42)
    assert store.load(layout()) is None
    vector = np.arange(10, dtype=np.float32)
    state = store.save(1, vector, layout())
    loaded_state, loaded = store.load(layout())
    assert loaded_state == state and np.array_equal(loaded, vector)
    store.save(2, vector + 1, layout())
    assert store.state().applied_round == 2
    assert len(list(store.folder.glob("global-round-*"))) == 1


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    store = GlobalAdapterStore(tmp_path, 1)
    state = store.save(1, np.zeros(10, dtype=np.float32), layout())
    path = store.folder / state.file
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        store.load(layout())
