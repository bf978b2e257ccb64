"""Riding out a registry database that is down for a while (restarted, failed over, unreachable).

The coordinator must not lose a round because PostgreSQL restarted under it, nor record anything
twice. Every registry call is one transaction, so a call that failed wrote all or nothing; a call
is retried with a visible message until the database answers or `give_up_after_s` has passed.

One case needs care: the connection can drop after the server committed but before the client
heard it. The retry then finds its own write and is refused as a duplicate. For the writes the
coordinator makes, that refusal means "already done": `start_run` is looked up by its Flower run
id, `start_round` by its number, `finish_round`/`finish_run` are already finished, and
`record_privacy` and `record_contribution` are idempotent anyway. Chain appends are atomic with
their position, so the ledger chain can neither fork nor gain a gap or a duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .database import open_registry
from .errors import AlreadyFinished, RecordConflict, RegistryUnavailable
from .registry import Registry

__all__ = ["RetryPolicy", "RetryingRegistry", "open_registry_retrying"]

log = logging.getLogger("fedseal.coordinator")

_T = TypeVar("_T")

_FIRST_WAIT_S = 1.0
_MAX_WAIT_S = 30.0


class RetryPolicy:
    """How long to keep trying, and how (the clock and sleep are injectable for tests)."""

    def __init__(
        self,
        give_up_after_s: float = 600.0,
        *,
        first_wait_s: float = _FIRST_WAIT_S,
        max_wait_s: float = _MAX_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if give_up_after_s < 0 or first_wait_s <= 0 or max_wait_s < first_wait_s:
            raise ValueError("retry times must be positive and first_wait_s <= max_wait_s")
        self.give_up_after_s = give_up_after_s
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.clock = clock
        self.report = report or log.warning

    def call(
        self,
        what: str,
        attempt: Callable[[], _T],
        on_conflict_after_retry: Callable[[RecordConflict], _T] | None = None,
    ) -> _T:
        """`attempt()` until it stops raising a transient `RegistryUnavailable`.

        After a failed attempt, a `RecordConflict` may mean the failed attempt had in fact
        committed; `on_conflict_after_retry` then decides (it re-raises when it was not ours).
        """
        deadline = self.clock() + self.give_up_after_s
        wait = self.first_wait_s
        retried = False
        while True:
            try:
                return attempt()
            except RecordConflict as exc:
                if retried and on_conflict_after_retry is not None:
                    return on_conflict_after_retry(exc)
                raise
            except RegistryUnavailable as exc:
                left = deadline - self.clock()
                if not exc.transient or left <= 0:
                    raise
                pause = min(wait, left)
                self.report(
                    f"registry unavailable, retrying in {pause:.0f} s "
                    f"({what}; giving up in {left:.0f} s): {exc}"
                )
                self.sleep(pause)
                wait = min(wait * 2, self.max_wait_s)
                retried = True


def open_registry_retrying(url: str, policy: RetryPolicy, **kwargs: Any) -> Registry:
    """`open_registry`, waiting for a database that is not up yet."""
    return policy.call("opening the registry", lambda: open_registry(url, **kwargs))


class RetryingRegistry:
    """A `Registry` whose calls wait out a database outage (see the module docstring).

    Reads and idempotent writes are simply retried; the non-idempotent writes the coordinator
    makes resolve a duplicate found after a retry as their own earlier, committed attempt.
    """

    def __init__(self, registry: Registry, policy: RetryPolicy | None = None) -> None:
        self._registry = registry
        self._policy = policy or RetryPolicy()

    @property
    def inner(self) -> Registry:
        return self._registry

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._registry, name)
        if not callable(target) or name.startswith("_"):
            return target

        def retried(*args: Any, **kwargs: Any) -> Any:
            return self._policy.call(name, lambda: target(*args, **kwargs))

        return retried

    def start_run(self, **kwargs: Any) -> int:
        """A retry first looks for the run by its Flower id: the failed try may have committed."""
        flower_run_id = kwargs.get("flower_run_id")
        tries = 0

        def attempt() -> int:
            nonlocal tries
            tries += 1
            if tries > 1 and flower_run_id is not None:
                found = self._registry.find_flower_run(flower_run_id)
                if found is not None:
                    return found.id
            return self._registry.start_run(**kwargs)

        return self._policy.call("start_run", attempt)

    def start_round(self, run_id: int, number: int, sampled_sites: Any) -> int:
        def ours(exc: RecordConflict) -> int:
            found = [r for r in self._registry.rounds(run_id) if r.number == number]
            if not found:
                raise exc
            return found[0].id

        return self._policy.call(
            "start_round",
            lambda: self._registry.start_round(run_id, number, sampled_sites),
            ours,
        )

    def finish_round(self, round_id: int, **kwargs: Any) -> None:
        def ours(exc: RecordConflict) -> None:
            if not isinstance(exc, AlreadyFinished):
                raise exc

        self._policy.call(
            "finish_round", lambda: self._registry.finish_round(round_id, **kwargs), ours
        )

    def finish_run(self, run_id: int, **kwargs: Any) -> None:
        def ours(exc: RecordConflict) -> None:
            if not isinstance(exc, AlreadyFinished):
                raise exc

        self._policy.call("finish_run", lambda: self._registry.finish_run(run_id, **kwargs), ours)
