"""Reading runs and rounds: one run, the latest, by Flower id, all of them, and a run's rounds.

Each query hands back frozen views (``views.py``), built inside the session that read them.
"""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import joinedload

from .checks import check_count, check_flower_run_id, load_config
from .core import RegistryCore, get_record
from .errors import RecordNotFound
from .schema import Contribution, Round, Run
from .statuses import RoundStatus
from .views import ContributionView, RoundView, RunView, view_of

__all__ = ["RunQueries"]


class RunQueries(RegistryCore):
    """The registry's reads of runs and rounds."""

    def get_run(self, run_id: int) -> RunView:
        """One run; :class:`RecordNotFound` if the id is unknown."""
        check_count(run_id, "run id")
        with self._read() as session:
            row = session.execute(_runs_query().where(Run.id == run_id)).one_or_none()
            if row is None:
                raise RecordNotFound(f"no run with id {run_id}")
            return _run_view(*row)

    def latest_run(self) -> RunView | None:
        """The most recently started run, or None on an empty registry."""
        with self._read() as session:
            row = session.execute(_runs_query().order_by(Run.id.desc()).limit(1)).one_or_none()
            return None if row is None else _run_view(*row)

    def find_flower_run(self, flower_run_id: str | int) -> RunView | None:
        """The newest run with this Flower run id, or None until the ServerApp has started it."""
        value = check_flower_run_id(flower_run_id)
        with self._read() as session:
            row = session.execute(
                _runs_query().where(Run.flower_run_id == value).order_by(Run.id.desc()).limit(1)
            ).one_or_none()
            return None if row is None else _run_view(*row)

    def list_runs(self) -> list[RunView]:
        """Every run, newest first."""
        with self._read() as session:
            rows = session.execute(_runs_query().order_by(Run.id.desc())).all()
            return [_run_view(*row) for row in rows]

    def rounds(self, run_id: int) -> list[RoundView]:
        """A run's rounds by number, each with its contributions by site name.

        One indexed query (rounds joined to contributions and sites), so a CLI
        can poll it every second for a live progress table.
        """
        with self._read() as session:
            get_record(session, Run, run_id)
            found = session.scalars(
                select(Round)
                .where(Round.run_id == run_id)
                .order_by(Round.number)
                .options(joinedload(Round.contributions).joinedload(Contribution.site))
            ).unique()
            return [_round_view(round_) for round_ in found]


def _runs_query() -> Select[tuple[Run, int]]:
    """Runs, each with its number of completed rounds."""
    completed = (
        select(func.count(Round.id))
        .where(Round.run_id == Run.id, Round.status == RoundStatus.COMPLETED)
        .correlate(Run)
        .scalar_subquery()
    )
    return select(Run, completed)


def _run_view(run: Run, rounds_completed: int) -> RunView:
    return view_of(RunView, run, config=load_config(run.config), rounds_completed=rounds_completed)


def _round_view(round_: Round) -> RoundView:
    contributions = sorted(
        (view_of(ContributionView, row, site=row.site.name) for row in round_.contributions),
        key=lambda view: view.site,
    )
    return view_of(RoundView, round_, contributions=tuple(contributions))
