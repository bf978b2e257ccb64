"""Writing runs: start one, attach Flower's run id, finish it; starts and ends are chain events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, joinedload

from .chain import ChainAppender
from .checks import (
    check_config,
    check_count,
    check_final,
    check_flower_run_id,
    check_name,
    check_text,
)
from .core import RegistryCore, get_record
from .errors import AlreadyFinished, RecordConflict
from .rounds import close_round
from .schema import PrivacyEntry, Round, Run
from .statuses import EventAction, RoundStatus, RunStatus

__all__ = ["RunsMixin"]


class RunsMixin(RegistryCore):
    """The registry's run writes."""

    def start_run(
        self,
        *,
        scenario: str,
        protocol_mode: str,
        config: dict[str, Any],
        rounds_planned: int,
        flower_run_id: str | int | None = None,
    ) -> int:
        """Record a new run as running and return its registry id (and a ``run_started`` event)."""
        values: dict[str, Any] = {
            "flower_run_id": None if flower_run_id is None else check_flower_run_id(flower_run_id),
            "scenario": check_name(scenario, "scenario"),
            "protocol_mode": check_name(protocol_mode, "protocol_mode"),
            "config": check_config(config),
            "rounds_planned": check_count(rounds_planned, "rounds_planned", minimum=1),
        }
        details = {
            "flower_run_id": values["flower_run_id"],
            "mode": values["protocol_mode"],
            "rounds_planned": values["rounds_planned"],
        }

        def start(session: Session, chain: ChainAppender) -> int:
            run = Run(status=RunStatus.RUNNING, started_at=self._now(), **values)
            session.add(run)
            session.flush()
            chain.event(EventAction.RUN_STARTED, run_id=run.id, details=details)
            return run.id

        return self._chained(start)

    def set_flower_run_id(self, run_id: int, flower_run_id: str | int) -> None:
        """Attach Flower's run id once the ServerApp knows it.

        Refused once the run has privacy entries under another Flower id: they were signed
        for that one.
        """
        value = check_flower_run_id(flower_run_id)
        with self._write() as session:
            run = get_record(session, Run, run_id)
            signed = session.scalar(select(exists().where(PrivacyEntry.run_id == run_id)))
            if signed and run.flower_run_id != value:
                raise RecordConflict(
                    f"run {run_id} has privacy entries signed for Flower run {run.flower_run_id}"
                )
            run.flower_run_id = value

    def finish_run(self, run_id: int, *, status: RunStatus | str, error: str | None = None) -> None:
        """Close a run (and append a ``run_finished`` event); rounds still running are closed
        as aborted."""
        final = check_final(RunStatus, status, RunStatus.RUNNING, "run status")
        message = None if error is None else check_text(error, "error")
        check_count(run_id, "run id")

        def finish(session: Session, chain: ChainAppender) -> None:
            now = self._now()
            run = get_record(session, Run, run_id)
            if run.finished_at is not None:
                raise AlreadyFinished(f"run {run_id} already finished as {run.status}")
            open_rounds = session.scalars(
                select(Round)
                .where(Round.run_id == run_id, Round.finished_at.is_(None))
                .options(joinedload(Round.contributions))
            ).unique()
            for round_ in open_rounds:
                close_round(round_, RoundStatus.ABORTED, now)
                round_.error = f"run ended ({final}) before the round finished"
            run.status = final
            run.finished_at = now
            if message is not None:
                run.error = message
            chain.event(
                EventAction.RUN_FINISHED,
                run_id=run_id,
                details={"status": str(final), "error": message},
            )

        self._chained(finish)
