"""The site's accountant state: every DP-SGD event it has ever released, on disk as JSON.

One file per site data set (`<state_dir>/dp/accountant.json`), shared by every run on those data
and never reset by a new run: the budget in the site config is for all runs together. The file
holds

- `charges`: one entry per (run, round) that trained, in the order they were charged. This is the
  record that makes charging idempotent: a retried round finds its charge and is not charged again.
- `history`: the same events merged (consecutive identical (σ, q) summed) as [σ, q, steps] lists,
  exactly an Opacus accountant's `history`; on load it must equal the merge of `charges`.
- `run_noise`: the σ calibrated once per run when the site budgets by target ε.

Writes are atomic (temp file, fsync, `os.replace`, fsync of the folder) under an exclusive lock, so
a killed site leaves either the old or the new file, never half of one. An unreadable or
inconsistent file raises `AccountantStoreError`: resetting it would reset the budget.

When a round is charged: after it trained and BEFORE its update leaves the site. A round whose
upload then fails stays charged (its noisy update exists and may have been seen); a round that
crashed before `record` released nothing and costs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent, merge_events

from .errors import AccountantStoreError, DoubleCharge

__all__ = ["STORE_FORMAT", "STORE_RELATIVE_PATH", "AccountantStore", "Charge"]

STORE_FORMAT = "fedseal-dp-accountant/1"
STORE_RELATIVE_PATH = Path("dp") / "accountant.json"


@dataclass(frozen=True)
class Charge:
    """The event one round of one run released; `release_id` names the training call."""

    run_id: int
    round: int
    event: DpEvent
    release_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run_id": self.run_id, "round": self.round}
        data.update(self.event.to_json())
        if self.release_id is not None:
            data["release_id"] = self.release_id
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Charge:
        release = data.get("release_id")
        return cls(
            int(data["run_id"]),
            int(data["round"]),
            DpEvent.from_json(data),
            None if release is None else str(release),
        )


class AccountantStore:
    """Read and charge the site's privacy spend; one instance per site state directory."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._charges: list[Charge] = []
        self._run_noise: dict[int, float] = {}
        self._load()

    @classmethod
    def open(cls, state_dir: Path) -> AccountantStore:
        """The store of the site whose state lives in `state_dir` (empty if it never trained)."""
        return cls(Path(state_dir) / STORE_RELATIVE_PATH)

    # -- reading ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def charges(self) -> tuple[Charge, ...]:
        return tuple(self._charges)

    @property
    def history(self) -> tuple[DpEvent, ...]:
        """Every event ever charged, merged: what the accountant composes."""
        return tuple(merge_events(c.event for c in self._charges))

    def charge_for(self, run_id: int, round_number: int) -> Charge | None:
        """The charge of that round, or None if it was never charged."""
        return next(
            (c for c in self._charges if (c.run_id, c.round) == (run_id, round_number)), None
        )

    def spent_epsilon(self, delta: float, accountant: Accountant = Accountant.RDP) -> float:
        """ε at `delta` of every step this site's data has ever been through."""
        return epsilon_of(self.history, delta, accountant)

    def projected_epsilon(
        self, planned: DpEvent, delta: float, accountant: Accountant = Accountant.RDP
    ) -> float:
        """ε the site would reach after `planned`, composed after everything already spent."""
        return epsilon_of([*self.history, planned], delta, accountant)

    def run_noise(self, run_id: int) -> float | None:
        """The σ calibrated for `run_id`, if one was."""
        return self._run_noise.get(run_id)

    # -- writing ---------------------------------------------------------------------------

    def record(
        self,
        event: DpEvent,
        run_id: int,
        round_number: int,
        *,
        release_id: str | None = None,
    ) -> bool:
        """Charge `event` for (run, round); False (and nothing written) if already charged.

        Call it after the round trained and before its update is sent. Pass the training
        call's `release_id` (`DpTrainResult.release_id`): charging a round again with the same
        release (a retried report of the same update) is a no-op, but a DIFFERENT release of a
        charged round -- the round trained twice, with fresh noise -- raises `DoubleCharge`, as
        does a different event. A retried round must resend the update it already computed or
        decline, never train again (`check_round` with run and round says so).
        """
        charge = Charge(run_id, round_number, event, release_id)
        with self._locked():
            self._load()
            existing = self.charge_for(run_id, round_number)
            if existing is not None:
                if existing.event != event:
                    raise DoubleCharge(
                        f"run {run_id} round {round_number} was already charged with "
                        f"{existing.event}; it cannot be charged again with {event}"
                    )
                if release_id is not None and existing.release_id not in (None, release_id):
                    raise DoubleCharge(
                        f"run {run_id} round {round_number} was trained twice: a second noisy "
                        "update of a charged round must not be sent"
                    )
                return False
            self._charges.append(charge)
            self._write()
        return True

    def set_run_noise(self, run_id: int, noise_multiplier: float) -> float:
        """Keep the σ calibrated for a run; the first one set wins and is returned."""
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be finite and > 0, got {noise_multiplier}")
        with self._locked():
            self._load()
            if run_id not in self._run_noise:
                self._run_noise[run_id] = float(noise_multiplier)
                self._write()
            return self._run_noise[run_id]

    # -- file ------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._charges, self._run_noise = [], {}
            return
        except OSError as exc:
            raise AccountantStoreError(f"cannot read {self._path}: {exc}") from exc
        try:
            data = json.loads(text)
            if data.get("format") != STORE_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {STORE_FORMAT!r}")
            charges = [Charge.from_json(item) for item in data["charges"]]
            history = [DpEvent(*item) for item in data["history"]]
            run_noise = {int(k): float(v) for k, v in data["run_noise"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AccountantStoreError(
                f"{self._path} is not a valid accountant file: {exc}"
            ) from exc
        if history != merge_events(c.event for c in charges):
            raise AccountantStoreError(f"{self._path}: history does not match the charged rounds")
        keys = [(c.run_id, c.round) for c in charges]
        if len(set(keys)) != len(keys):
            raise AccountantStoreError(f"{self._path}: a round is charged twice")
        self._charges, self._run_noise = charges, run_noise

    def _write(self) -> None:
        merged = merge_events(c.event for c in self._charges)
        document = {
            "format": STORE_FORMAT,
            # an Opacus accountant's `history` (any mechanism): accountant.history = this list
            "history": [list(e.as_tuple()) for e in merged],
            "charges": [c.to_json() for c in self._charges],
            "run_noise": {str(k): v for k, v in sorted(self._run_noise.items())},
        }
        payload = json.dumps(document, indent=1, allow_nan=False).encode()
        folder = self._path.parent
        handle, temp = tempfile.mkstemp(prefix=".accountant-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock across processes for read-modify-write of the file."""
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self._path.with_name(self._path.name + ".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
