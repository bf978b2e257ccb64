"""One upload per round: the rounds of each run that this site has already sent an update for.

A second `train` for the same (run, round) would let the coordinator difference two uploads made
under the same round secrets (the same self-mask seed and pairwise masks cancel) and read the
site's update; DP sites were protected only because a charged round cannot train twice. The log
is on disk, written before the upload leaves the site, so a restart does not forget it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["UploadLog"]


class UploadLog:
    """`STATE/runs/<run>/uploads.json`: the sorted round numbers uploaded in that run."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = Path(state_dir)

    def _path(self, run_id: int) -> Path:
        return self._state_dir / "runs" / str(run_id) / "uploads.json"

    def rounds(self, run_id: int) -> set[int]:
        try:
            raw = json.loads(self._path(run_id).read_text("utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            # an unreadable log must not read as "nothing uploaded"
            raise RuntimeError(f"upload log {self._path(run_id)} is damaged: {exc}") from None
        if not isinstance(raw, list) or not all(isinstance(r, int) for r in raw):
            raise RuntimeError(f"upload log {self._path(run_id)} is damaged")
        return set(raw)

    def uploaded(self, run_id: int, round_number: int) -> bool:
        return round_number in self.rounds(run_id)

    def record(self, run_id: int, round_number: int) -> None:
        """Add the round, durably, before its upload is returned."""
        rounds = self.rounds(run_id) | {round_number}
        path = self._path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(sorted(rounds), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
