"""The registry API: the only way the ServerApp and the CLIs read or write runs and rounds.

:class:`Registry` is the one class callers use; each of its parts is a module with one job:

- ``core``: the engine, the clock, the ledger key and the transactions every call runs in;
- ``sites``: registering, enrolling and revoking sites, budget changes;
- ``runs``: starting and finishing runs; ``rounds``: opening, recording and closing rounds;
- ``queries``: reading runs and rounds as frozen views;
- ``ledger``: the privacy ledger's signed entries and the chain's events;
- ``audits``: the sites' signed privacy audit statements on the chain.

Every method opens its own short transaction and hands back plain values or frozen views, so
callers never hold ORM objects or sessions. Enrolments, revocations, budget changes, run starts
and ends are also appended to the ledger chain as events, in the same transaction
(``chain.py``), which needs the coordinator's ledger key.
"""

from __future__ import annotations

from .audits import PrivacyAuditsMixin
from .core import Clock, utc_now
from .ledger import PrivacyLedgerMixin
from .queries import RunQueries
from .rounds import RoundsMixin
from .runs import RunsMixin
from .sites import SitesMixin

__all__ = ["Clock", "Registry", "utc_now"]


class Registry(
    SitesMixin, RunsMixin, RoundsMixin, RunQueries, PrivacyLedgerMixin, PrivacyAuditsMixin
):
    """Records runs, rounds, each sampled site's contribution and the privacy ledger.

    Build one with :func:`fedseal.registry.open_registry`, which also
    migrates the schema; the constructor assumes the schema is already at head.
    """
