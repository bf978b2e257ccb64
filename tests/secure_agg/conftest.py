"""Fixtures of the secure-aggregation tests (the harness itself is in `secagg_harness`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from secagg_harness import Federation

from fedseal.secure_agg.params import Mode


@pytest.fixture(scope="session")
def federation() -> Callable[..., Federation]:
    """Factory of federations (sites, keys, contexts), cached by arguments for the session."""
    cache: dict[tuple, Federation] = {}

    def make(n_sites: int, mode: Mode | str, **kwargs) -> Federation:
        key = (n_sites, str(mode), tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = Federation(n_sites, Mode(mode), **kwargs)
        return cache[key]

    return make
