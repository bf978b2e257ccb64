"""One exception hierarchy for the secure-aggregation layer.

Callers catch `SecureAggError` to drop an offending message and let the round go on. Failures an
attacker can probe from outside (bad signature, replay, wrong binding, tampered sealed box) all
raise the same `InvalidMessage` with the same text, so the error itself tells a prober nothing.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InsufficientSurvivors",
    "InvalidCiphertext",
    "InvalidMessage",
    "InvalidShare",
    "SecureAggError",
    "WrapAroundRisk",
]


class SecureAggError(Exception):
    """Base class of every error raised by `fedseal.secure_agg`."""


class ConfigurationError(SecureAggError, ValueError):
    """Protocol parameters that are unsafe or inconsistent; raised before any secret is used."""


class WrapAroundRisk(ConfigurationError):
    """The configured ranges could make the sampled sites' sum wrap modulo the plain modulus."""


class InvalidMessage(SecureAggError):
    """A message failed authentication: forged or missing signature, replay, wrong binding.

    Deliberately carries no detail about which check failed.
    """

    def __init__(self, message: str = "message failed authentication") -> None:
        super().__init__(message)


class InvalidShare(SecureAggError):
    """A Shamir share is malformed, or a reconstruction did not match its commitment."""


class InvalidCiphertext(SecureAggError):
    """Ciphertext bytes that are malformed, truncated, or made under other parameters."""


class InsufficientSurvivors(SecureAggError):
    """Fewer than the threshold `k` sites are left: the round must abort without an aggregate."""
