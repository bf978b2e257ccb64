"""Shared pieces of the fuzz tests: the hypothesis budget, byte mutations and a hang guard.

The budget is small and derandomised so CI stays fast (the whole fuzz suite adds well under a
minute on 2 cores) and never flaky. Run longer, with fresh random examples, locally::

    FEDSEAL_FUZZ_EXAMPLES=2000 FEDSEAL_FUZZ_RANDOM=1 pytest -k fuzz
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = [
    "FUZZ",
    "FUZZ_SLOW",
    "hostile_values",
    "mutated",
    "no_hang",
    "random_or_mutated",
]

_EXAMPLES = int(os.environ.get("FEDSEAL_FUZZ_EXAMPLES", "60"))
_RANDOM = os.environ.get("FEDSEAL_FUZZ_RANDOM", "") == "1"

FUZZ = settings(
    max_examples=_EXAMPLES,
    deadline=2000,
    derandomize=not _RANDOM,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
"""For cheap pure decoders."""

FUZZ_SLOW = settings(FUZZ, max_examples=max(_EXAMPLES // 3, 10), deadline=5000)
"""For handlers that load ciphertexts or run a protocol step per example."""

_U32 = struct.Struct(">I")


@st.composite
def mutated(draw: st.DrawFn, valid: bytes, max_steps: int = 3) -> bytes:
    """`valid` after a few random edits: bit flips, truncation, extension, insertion, deletion,
    a length prefix set to a huge value, a slice duplicated or two slices swapped."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(
            st.sampled_from(
                ("flip", "truncate", "extend", "insert", "delete", "length", "dup", "swap")
            )
        )
        size = len(data)
        if kind == "flip" and size:
            i = draw(st.integers(0, size - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, size)) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "insert":
            i = draw(st.integers(0, size))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and size:
            i = draw(st.integers(0, size - 1))
            del data[i : i + draw(st.integers(1, 16))]
        elif kind == "length" and size >= 4:
            i = draw(st.integers(0, size - 4))
            value = draw(st.sampled_from((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, size, size + 1)))
            data[i : i + 4] = _U32.pack(value)
        elif kind == "dup" and size:
            i = draw(st.integers(0, size - 1))
            data[i:i] = data[i : i + draw(st.integers(1, 64))]
        elif kind == "swap" and size >= 8:
            i = draw(st.integers(0, size // 2 - 4))
            j = draw(st.integers(size // 2, size - 4))
            data[i : i + 4], data[j : j + 4] = data[j : j + 4], data[i : i + 4]
    return bytes(data)


def random_or_mutated(valid: bytes, max_random: int = 512) -> st.SearchStrategy[bytes]:
    """Either random bytes or a mutation of `valid`."""
    return st.one_of(st.binary(max_size=max_random), mutated(valid))


def hostile_values() -> st.SearchStrategy[Any]:
    """Values a peer can put in a message field, of every type Flower and JSON carry."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from((0, -1, 2**31, 2**62, 10**9)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.sampled_from(("", "[", "{}", "[[[[", "null", "NaN", "1e999", "-1", "he+ss")),
        st.binary(max_size=64),
    )
    return st.one_of(
        scalars,
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
        st.lists(st.binary(max_size=64), max_size=4),
        st.lists(st.text(max_size=10), max_size=4),
    )


@contextlib.contextmanager
def no_hang(seconds: float = 20.0) -> Iterator[None]:
    """Fail (rather than hang CI) when the body runs longer than `seconds`."""

    def _timeout(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no answer within {seconds} s: the decoder hangs")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
