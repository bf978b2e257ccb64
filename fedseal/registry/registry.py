"""The registry API: the only way the ServerApp and the CLIs read or write runs and rounds.

Every method opens its own short transaction and hands back plain values or
frozen views, so callers never hold ORM objects or sessions. Enrolments, revocations, budget
changes, run starts and ends are also appended to the ledger chain as events, in the same
transaction (``chain.py``), which needs the coordinator's ledger key.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, Select, exists, func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, joinedload

from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys

from .chain import ChainAppender, ChainCollision
from .checks import (
    check_budget,
    check_config,
    check_count,
    check_digest,
    check_duration,
    check_metric,
    check_name,
    check_names,
    check_sha256,
    check_text,
    load_config,
)
from .engine import writer
from .errors import AlreadyFinished, ChainBusy, LedgerKeyMissing, RecordConflict, RecordNotFound
from .failures import describe_error, one_line, unavailable
from .ledger import PrivacyLedgerMixin
from .schema import Contribution, Event, PrivacyEntry, Round, Run, Site
from .statuses import ContributionStatus, EventAction, RoundStatus, RunStatus, SiteStatus
from .views import ContributionView, RoundView, RunView

__all__ = ["Clock", "Registry", "utc_now"]

_T = TypeVar("_T")
_Model = TypeVar("_Model", Run, Round)
_Status = TypeVar("_Status", ContributionStatus, RoundStatus, RunStatus)
_FinalStatus = TypeVar("_FinalStatus", RoundStatus, RunStatus)

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware; tests pass a fake one."""


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


_CONTRIBUTION_METRICS = ("train_loss", "eval_loss", "eval_accuracy", "eval_auc")
_ROUND_METRICS = ("loss", "accuracy", "auc", "global_accuracy", "global_auc")

CHAIN_ATTEMPTS = 20
"""How often a chain append is tried when other writers keep taking the next position."""
_BACKOFF_BASE_S = 0.005
_BACKOFF_MAX_S = 0.25
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # PostgreSQL: serialisation, deadlock


class Registry(PrivacyLedgerMixin):
    """Records runs, rounds, each sampled site's contribution and the privacy ledger.

    Build one with :func:`fedseal.registry.open_registry`, which also
    migrates the schema; the constructor assumes the schema is already at head.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utc_now,
        url: str | None = None,
        ledger_key: Ed25519PrivateKey | None = None,
    ) -> None:
        if ledger_key is not None and not isinstance(ledger_key, Ed25519PrivateKey):
            raise TypeError("ledger_key must be an Ed25519PrivateKey or None")
        self._engine = engine
        self._writer = writer(engine)
        self._clock = clock
        self._url = url if url is not None else engine.url.render_as_string(hide_password=True)
        self._ledger_key = ledger_key

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The underlying engine, for tools that inspect the schema (not for writing rows)."""
        return self._engine

    def close(self) -> None:
        """Release pooled connections; the registry must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- sites ---------------------------------------------------------------------------------

    def ensure_site(self, name: str) -> int:
        """The id of the site called ``name``, registering it as active if it is new."""
        name = check_name(name, "site name")
        try:
            with self._write() as session:
                return self._site_ids(session, [name])[name]
        except RecordConflict:
            # another process registered the same name between our read and our insert
            with self._read() as session:
                site_id = session.scalar(select(Site.id).where(Site.name == name))
            if site_id is None:
                raise
            return site_id

    def enroll_site(self, name: str, public_key: bytes) -> int:
        """Register (or re-key) a site with its public key bundle; returns its id.

        Appends a ``site_enrolled`` event, unless the site is already enrolled with exactly
        these keys. A revoked site stays revoked: re-enrolling it is refused.
        """
        name = check_name(name, "site name")
        if not isinstance(public_key, bytes) or not public_key:
            raise TypeError("public_key must be non-empty bytes")
        try:
            keys = SitePublicKeys.from_bundle(name, public_key)
        except SiteKeyError:
            raise ValueError(
                f"public_key of site {name} is not a site key bundle (fl-client enroll makes one)"
            ) from None
        details = {"identity_key": keys.identity.hex(), "sealing_key": keys.sealing.hex()}
        self._require_ledger_key()  # before the site is registered
        site_id = self.ensure_site(name)

        def enroll(session: Session, chain: ChainAppender) -> int:
            site = session.get(Site, site_id)
            assert site is not None
            if site.status is SiteStatus.REVOKED:
                raise RecordConflict(f"site {name} is revoked and cannot be re-enrolled")
            if site.public_key == public_key and _enrolled_keys(session, name) == details:
                return site_id
            site.public_key = public_key
            chain.event(EventAction.SITE_ENROLLED, site=name, details=details)
            return site_id

        return self._chained(enroll)

    def revoke_site(self, name: str, reason: str) -> None:
        """Revoke a site for good: it is no longer sampled, its key no longer listed, and its
        statements are refused. Appends a ``site_revoked`` event."""
        name = check_name(name, "site name")
        reason = check_text(reason, "reason")
        if not reason.strip():
            raise ValueError("reason must say why the site is revoked")

        def revoke(session: Session, chain: ChainAppender) -> None:
            site = session.scalar(select(Site).where(Site.name == name))
            if site is None:
                raise RecordNotFound(f"no site called {name}")
            if site.status is SiteStatus.REVOKED:
                raise RecordConflict(f"site {name} is already revoked")
            site.status = SiteStatus.REVOKED
            chain.event(EventAction.SITE_REVOKED, site=name, details={"reason": reason})

        self._chained(revoke)

    def record_budget_change(self, site: str, budget: float) -> None:
        """Record that the operator set the site's total ε budget (a ``budget_changed`` event),
        registering the site if it is new."""
        name = check_name(site, "site")
        value = check_budget(budget, "budget")
        self._require_ledger_key()  # before the site is registered
        self.ensure_site(name)
        self._chained(
            lambda _session, chain: chain.event(
                EventAction.BUDGET_CHANGED, site=name, details={"budget": value}
            )
        )

    def site_public_keys(self) -> dict[str, bytes]:
        """Enrolled public key bundles of the active sites, by site name."""
        with self._read() as session:
            rows = session.execute(
                select(Site.name, Site.public_key).where(
                    Site.status == SiteStatus.ACTIVE, Site.public_key.is_not(None)
                )
            ).all()
        return {name: bytes(key) for name, key in rows}

    # -- runs ----------------------------------------------------------------------------------

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
            "flower_run_id": None if flower_run_id is None else _flower_id(flower_run_id),
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
        value = _flower_id(flower_run_id)
        with self._write() as session:
            run = _get(session, Run, run_id)
            signed = session.scalar(select(exists().where(PrivacyEntry.run_id == run_id)))
            if signed and run.flower_run_id != value:
                raise RecordConflict(
                    f"run {run_id} has privacy entries signed for Flower run {run.flower_run_id}"
                )
            run.flower_run_id = value

    def finish_run(self, run_id: int, *, status: RunStatus | str, error: str | None = None) -> None:
        """Close a run (and append a ``run_finished`` event); rounds still running are closed
        as aborted."""
        final = _final(RunStatus, status, RunStatus.RUNNING, "run status")
        message = None if error is None else check_text(error, "error")
        check_count(run_id, "run id")

        def finish(session: Session, chain: ChainAppender) -> None:
            now = self._now()
            run = _get(session, Run, run_id)
            if run.finished_at is not None:
                raise AlreadyFinished(f"run {run_id} already finished as {run.status}")
            open_rounds = session.scalars(
                select(Round)
                .where(Round.run_id == run_id, Round.finished_at.is_(None))
                .options(joinedload(Round.contributions))
            ).unique()
            for round_ in open_rounds:
                _close_round(round_, RoundStatus.ABORTED, now)
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

    # -- rounds --------------------------------------------------------------------------------

    def start_round(self, run_id: int, number: int, sampled_sites: Sequence[str]) -> int:
        """Open round ``number`` of a running run with one ``sampled`` row per sampled site."""
        number = check_count(number, "round number", minimum=1)
        names = check_names(sampled_sites, "sampled_sites")
        with self._write() as session:
            run = _get(session, Run, run_id)
            if run.status is not RunStatus.RUNNING:
                raise RecordConflict(f"run {run_id} is {run.status}, not running")
            taken = session.scalar(
                select(Round.id).where(Round.run_id == run_id, Round.number == number)
            )
            if taken is not None:
                raise RecordConflict(f"run {run_id} already has a round {number}")
            site_ids = self._site_ids(session, names)
            revoked = session.scalars(
                select(Site.name).where(
                    Site.id.in_(site_ids.values()), Site.status == SiteStatus.REVOKED
                )
            ).all()
            if revoked:
                raise RecordConflict(f"revoked sites cannot be sampled: {', '.join(revoked)}")
            round_ = Round(
                run_id=run_id,
                number=number,
                status=RoundStatus.RUNNING,
                sampled=len(names),
                participants=0,
                dropped=0,
                started_at=self._now(),
            )
            round_.contributions = [
                Contribution(site_id=site_ids[name], status=ContributionStatus.SAMPLED)
                for name in names
            ]
            session.add(round_)
            session.flush()
            return round_.id

    def record_contribution(
        self,
        round_id: int,
        site: str,
        *,
        status: ContributionStatus | str | None = None,
        num_examples: int | None = None,
        train_loss: float | None = None,
        train_seconds: float | None = None,
        eval_loss: float | None = None,
        eval_accuracy: float | None = None,
        eval_auc: float | None = None,
        eval_examples: int | None = None,
        adapter_digest: str | None = None,
        update_digest: str | None = None,
        error: str | None = None,
    ) -> None:
        """Create or update ``site``'s row for the round; arguments left as None keep their value.

        ``update_digest`` is the SHA-256 (hex) of the update the site sent, the one its signed
        privacy statement names.

        A site that was not sampled gets a row too (and is registered if new),
        which needs a status. Non-finite metrics are recorded as unknown. The
        round's counts follow at once, so a live view sees them while it runs.
        """
        name = check_name(site, "site")
        changes: dict[str, object] = {}
        if status is not None:
            changes["status"] = _status(ContributionStatus, status, "contribution status")
        for field, value in (("num_examples", num_examples), ("eval_examples", eval_examples)):
            if value is not None:
                changes[field] = check_count(value, field)
        for field, value in zip(
            _CONTRIBUTION_METRICS, (train_loss, eval_loss, eval_accuracy, eval_auc), strict=True
        ):
            if value is not None:
                changes[field] = check_metric(value, field)
        if train_seconds is not None:
            changes["train_seconds"] = check_duration(train_seconds, "train_seconds")
        if adapter_digest is not None:
            changes["adapter_digest"] = check_digest(adapter_digest, "adapter_digest")
        if update_digest is not None:
            changes["update_digest"] = check_sha256(update_digest, "update_digest")
        if error is not None:
            changes["error"] = check_text(error, "error")
        with self._write() as session:
            round_ = _round_with_contributions(session, round_id)
            site_id = self._site_ids(session, [name])[name]
            row = next((row for row in round_.contributions if row.site_id == site_id), None)
            if row is None:
                if status is None:
                    raise RecordConflict(
                        f"site {name} has no row in round {round_id}; a new row needs a status"
                    )
                row = Contribution(site_id=site_id)
                round_.contributions.append(row)
            for field, value in changes.items():
                setattr(row, field, value)
            _tally(round_)

    def finish_round(
        self,
        round_id: int,
        *,
        status: RoundStatus | str,
        aggregate_digest: str | None = None,
        global_digest: str | None = None,
        loss: float | None = None,
        accuracy: float | None = None,
        auc: float | None = None,
        global_accuracy: float | None = None,
        global_auc: float | None = None,
        error: str | None = None,
    ) -> None:
        """Close a round: sites that never answered become dropped, counts and duration are set."""
        final = _final(RoundStatus, status, RoundStatus.RUNNING, "round status")
        changes: dict[str, object] = {}
        for field, value in (
            ("aggregate_digest", aggregate_digest),
            ("global_digest", global_digest),
        ):
            if value is not None:
                changes[field] = check_digest(value, field)
        for field, value in zip(
            _ROUND_METRICS, (loss, accuracy, auc, global_accuracy, global_auc), strict=True
        ):
            if value is not None:
                changes[field] = check_metric(value, field)
        if error is not None:
            changes["error"] = check_text(error, "error")
        now = self._now()
        with self._write() as session:
            round_ = _round_with_contributions(session, round_id)
            if round_.finished_at is not None:
                raise AlreadyFinished(f"round {round_id} already finished as {round_.status}")
            _close_round(round_, final, now)
            for field, value in changes.items():
                setattr(round_, field, value)

    # -- queries -------------------------------------------------------------------------------

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
        value = _flower_id(flower_run_id)
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
            _get(session, Run, run_id)
            found = session.scalars(
                select(Round)
                .where(Round.run_id == run_id)
                .order_by(Round.number)
                .options(joinedload(Round.contributions).joinedload(Contribution.site))
            ).unique()
            return [_round_view(round_) for round_ in found]

    # -- internals -----------------------------------------------------------------------------

    def _require_ledger_key(self) -> Ed25519PrivateKey:
        if self._ledger_key is None:
            raise LedgerKeyMissing(
                "this write appends to the ledger chain, which needs the coordinator's ledger "
                "key: open the registry with ledger_key= (fedseal.registry.ledger_key)"
            )
        return self._ledger_key

    def _chained(self, work: Callable[[Session, ChainAppender], _T]) -> _T:
        """Run ``work`` in one write transaction that appends to the ledger chain.

        When another writer takes the chain's next position first, the transaction rolls back
        and ``work`` runs again on the new head, after a short random pause; after
        ``CHAIN_ATTEMPTS`` tries, :class:`ChainBusy`.
        """
        key = self._require_ledger_key()
        with self._translated():
            for attempt in range(CHAIN_ATTEMPTS):
                try:
                    with Session(self._writer) as session, session.begin():
                        return work(session, ChainAppender(session, key, self._now()))
                except ChainCollision:
                    pass
                except OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) not in _TRANSIENT_SQLSTATES:
                        raise
                ceiling = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**attempt)
                time.sleep(ceiling * secrets.randbelow(1001) / 1000)
        raise ChainBusy(
            f"other writers took the ledger chain's next position {CHAIN_ATTEMPTS} times; "
            "nothing was written"
        )

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the registry clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._translated(), Session(self._writer) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._translated(), Session(self._engine) as session, session.begin():
            yield session

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database failures become registry errors with one-line, password-free messages."""
        try:
            yield
        except IntegrityError as exc:
            raise RecordConflict(one_line(describe_error(exc))) from exc
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._url, exc) from exc

    def _site_ids(self, session: Session, names: Sequence[str]) -> dict[str, int]:
        """Ids of the named sites, registering the missing ones as active."""
        found = session.execute(select(Site.name, Site.id).where(Site.name.in_(names)))
        ids = {name: site_id for name, site_id in found}
        missing = [name for name in names if name not in ids]
        if missing:
            now = self._now()
            created = [
                Site(name=name, created_at=now, status=SiteStatus.ACTIVE) for name in missing
            ]
            session.add_all(created)
            session.flush()
            ids.update((site.name, site.id) for site in created)
        return ids


def _enrolled_keys(session: Session, name: str) -> dict[str, str] | None:
    """The keys of the site's latest ``site_enrolled`` event, unless a revocation followed it."""
    latest = session.execute(
        select(Event.action, Event.details)
        .where(
            Event.site == name,
            Event.action.in_([EventAction.SITE_ENROLLED, EventAction.SITE_REVOKED]),
        )
        .order_by(Event.id.desc())
        .limit(1)
    ).one_or_none()
    if latest is None or latest.action is not EventAction.SITE_ENROLLED:
        return None
    return json.loads(latest.details)


def _runs_query() -> Select[tuple[Run, int]]:
    completed = (
        select(func.count(Round.id))
        .where(Round.run_id == Run.id, Round.status == RoundStatus.COMPLETED)
        .correlate(Run)
        .scalar_subquery()
    )
    return select(Run, completed)


def _get(session: Session, model: type[_Model], record_id: int) -> _Model:
    check_count(record_id, f"{model.__name__.lower()} id")
    found = session.get(model, record_id)
    if found is None:
        raise RecordNotFound(f"no {model.__name__.lower()} with id {record_id}")
    return found


def _round_with_contributions(session: Session, round_id: int) -> Round:
    check_count(round_id, "round id")
    found = (
        session.scalars(
            select(Round).where(Round.id == round_id).options(joinedload(Round.contributions))
        )
        .unique()
        .one_or_none()
    )
    if found is None:
        raise RecordNotFound(f"no round with id {round_id}")
    return found


def _status(enum: type[_Status], value: object, what: str) -> _Status:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValueError(f"{what} must be one of {allowed}, not {value!r}") from None


def _final(
    enum: type[_FinalStatus], value: object, running: _FinalStatus, what: str
) -> _FinalStatus:
    status = _status(enum, value, what)
    if status is running:
        raise ValueError(f"{what} must be final, not {running.value}")
    return status


def _flower_id(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError("flower_run_id must be a str or int")
    text = str(value)
    if not text or len(text) > 64:
        raise ValueError("flower_run_id must be 1 to 64 characters")
    return text


def _close_round(round_: Round, status: RoundStatus, now: datetime) -> None:
    """Mark silent sites dropped, then set status, end time, duration and counts."""
    for row in round_.contributions:
        if row.status is ContributionStatus.SAMPLED:
            row.status = ContributionStatus.DROPPED
    round_.status = status
    round_.finished_at = now
    round_.duration_s = max(0.0, (now - round_.started_at).total_seconds())
    _tally(round_)


def _tally(round_: Round) -> None:
    """sampled = every row; participants = contributed; dropped = neither contributed nor waiting.

    Once the round is closed nobody is waiting, so sampled = participants + dropped.
    """
    statuses = [row.status for row in round_.contributions]
    round_.sampled = len(statuses)
    round_.participants = statuses.count(ContributionStatus.CONTRIBUTED)
    round_.dropped = (
        round_.sampled - round_.participants - statuses.count(ContributionStatus.SAMPLED)
    )


def _run_view(run: Run, rounds_completed: int) -> RunView:
    return RunView(
        id=run.id,
        flower_run_id=run.flower_run_id,
        scenario=run.scenario,
        protocol_mode=run.protocol_mode,
        config=load_config(run.config),
        status=run.status,
        rounds_planned=run.rounds_planned,
        rounds_completed=rounds_completed,
        started_at=run.started_at,
        finished_at=run.finished_at,
        error=run.error,
    )


def _contribution_view(row: Contribution) -> ContributionView:
    return ContributionView(
        site=row.site.name,
        status=row.status,
        num_examples=row.num_examples,
        train_loss=row.train_loss,
        train_seconds=row.train_seconds,
        eval_loss=row.eval_loss,
        eval_accuracy=row.eval_accuracy,
        eval_auc=row.eval_auc,
        eval_examples=row.eval_examples,
        adapter_digest=row.adapter_digest,
        update_digest=row.update_digest,
        error=row.error,
    )


def _round_view(round_: Round) -> RoundView:
    contributions = sorted(
        (_contribution_view(row) for row in round_.contributions), key=lambda view: view.site
    )
    return RoundView(
        id=round_.id,
        run_id=round_.run_id,
        number=round_.number,
        status=round_.status,
        sampled=round_.sampled,
        participants=round_.participants,
        dropped=round_.dropped,
        started_at=round_.started_at,
        finished_at=round_.finished_at,
        duration_s=round_.duration_s,
        aggregate_digest=round_.aggregate_digest,
        global_digest=round_.global_digest,
        loss=round_.loss,
        accuracy=round_.accuracy,
        auc=round_.auc,
        global_accuracy=round_.global_accuracy,
        global_auc=round_.global_auc,
        error=round_.error,
        contributions=tuple(contributions),
    )
