"""The site's copy of the global adapter for one run, kept in its state directory.

Each applied round is written as its own file before the small state file that points at it is
replaced atomically, so a crash at any moment leaves either the old or the new global adapter,
never a half-written one, and never an aggregate applied twice. Reading the state file needs no
torch (the model library is imported only to read or write an adapter), so `fl-client export`
answers a bad request at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from fedseal.models.adapter import AdapterLayout

__all__ = ["AdapterState", "GlobalAdapterStore", "find_global"]

_STATE_FILE = "global.json"


@dataclass(frozen=True)
class AdapterState:
    """Which round's aggregate the site's global adapter includes, and its digest."""

    applied_round: int
    digest: str
    file: str | None


class GlobalAdapterStore:
    """Global adapter files of one run: `<state_dir>/runs/<run_id>/`."""

    def __init__(self, state_dir: Path, run_id: int | str) -> None:
        self.folder = Path(state_dir) / "runs" / str(run_id)

    def state(self) -> AdapterState | None:
        path = self.folder / _STATE_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return AdapterState(int(raw["applied_round"]), str(raw["digest"]), raw.get("file"))

    def load(self, layout: AdapterLayout) -> tuple[AdapterState, np.ndarray] | None:
        """The stored global adapter, or None before the first applied round."""
        from fedseal.models.adapter import load_adapter, vector_digest

        state = self.state()
        if state is None or state.file is None:
            return None
        vector = load_adapter(self.folder / state.file, layout)
        if vector_digest(vector, layout) != state.digest:
            raise ValueError(f"global adapter {state.file} does not match its recorded digest")
        return state, vector

    def save(self, round_number: int, vector: np.ndarray, layout: AdapterLayout) -> AdapterState:
        """Store the global adapter after applying `round_number`'s aggregate."""
        from fedseal.models.adapter import save_adapter, vector_digest

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"global-round-{round_number:05d}.safetensors"
        save_adapter(self.folder / name, vector, layout)
        state = AdapterState(round_number, vector_digest(vector, layout), name)
        tmp = self.folder / f"{_STATE_FILE}.tmp"
        tmp.write_text(
            json.dumps(
                {"applied_round": state.applied_round, "digest": state.digest, "file": state.file}
            ),
            encoding="utf-8",
        )
        os.replace(tmp, self.folder / _STATE_FILE)
        self._prune(keep=name)
        return state

    def _prune(self, keep: str) -> None:
        """Drop older round files; only the latest global adapter is needed."""
        for path in self.folder.glob("global-round-*.safetensors"):
            if path.name != keep:
                path.unlink(missing_ok=True)


def find_global(
    state_dir: Path, digest: str, layout: AdapterLayout
) -> tuple[AdapterState, np.ndarray] | None:
    """The global adapter with `digest` that this site stored for any run, or None.

    A coordinator that was restarted continues its run as a new Flower run (docs/decisions.md);
    the site then carries on from the adapter it already holds, found by the digest the
    coordinator expects (the digest is checked again when the file is loaded).
    """
    for path in sorted((Path(state_dir) / "runs").glob(f"*/{_STATE_FILE}")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(raw, dict) and raw.get("digest") == digest:
            found = GlobalAdapterStore(state_dir, path.parent.name).load(layout)
            if found is not None:
                return found
    return None
