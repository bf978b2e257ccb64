"""The signed privacy statements a site has sent, kept so that a lost reply loses no ledger entry.

A site charges its budget and signs the round's ledger statement before the update leaves. If the
reply is lost (the site is killed, the coordinator restarts mid-round), the charge is real but the
registry never saw the statement, and the site's next statement would name a cumulative ε that the
ledger cannot account for. So each statement is written here first (atomically, like the
accountant store), and the site hands the statements of the runs the coordinator asks about back
with its identity; the registry records the ones it lacks (the same statement twice is a no-op).

Statements hold nothing secret: the mechanism, ε figures and the digest of the update sent.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_RECOVERED", "SentStatement", "StatementOutbox"]

MAX_RECOVERED = 1000
"""At most this many statements go back in one identity reply (newest rounds kept)."""

_RUN = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dataclass(frozen=True)
class SentStatement:
    """A statement as signed: its JSON fields and the site's signature over them."""

    flower_run_id: str
    round_number: int
    statement: str
    signature: bytes


class StatementOutbox:
    """`<state_dir>/dp/statements/<flower run>/<round>.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = Path(state_dir) / "dp" / "statements"

    def keep(self, sent: SentStatement) -> None:
        """Store a statement before it is sent (atomic: old file or new one, never torn)."""
        folder = self._run_folder(sent.flower_run_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(sent.round_number):06d}.json"
        tmp = path.with_suffix(".tmp")
        document = {"statement": sent.statement, "signature": sent.signature.hex()}
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def sent(self, flower_run_ids: list[str]) -> list[SentStatement]:
        """Statements kept for these Flower runs, oldest round first (unreadable files skipped)."""
        found: list[SentStatement] = []
        for run in flower_run_ids:
            folder = self._run_folder(run)
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                try:
                    raw = json.loads(path.read_text(encoding="utf-8"))
                    found.append(
                        SentStatement(
                            run,
                            int(path.stem),
                            str(raw["statement"]),
                            bytes.fromhex(str(raw["signature"])),
                        )
                    )
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return found[-MAX_RECOVERED:]

    def _run_folder(self, flower_run_id: str) -> Path:
        if not _RUN.match(str(flower_run_id)):
            raise ValueError("a Flower run id is 1 to 64 letters, digits, '-' or '_'")
        return self.folder / str(flower_run_id)
