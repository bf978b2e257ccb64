"""ORM tables of the registry: sites, runs, rounds, contributions, the privacy ledger and events.

The privacy ledger and the events are the entries of one hash chain, indexed by ``ledger_chain``
(docs/ledger-format.md); those three tables are insert-only.

The Alembic revisions in ``migrations/versions`` must build exactly this
metadata; a test compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, relationship

from . import statuses
from .column_types import UTCDateTime, status_column_type

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "ChainLink",
    "Contribution",
    "Event",
    "PrivacyEntry",
    "Round",
    "Run",
    "Site",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, so migrations can drop and alter them on every backend."""

NAME_LENGTH = 200
DIGEST_LENGTH = 128
HASH_LENGTH = 64
"""A SHA-256 digest in hex: chain hashes and update digests."""


class Base(DeclarativeBase):
    """Declarative base whose metadata names every constraint."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - read by SQLAlchemy


class Site(Base):
    """A hospital or other data holder known to the federation."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime]
    status: Mapped[statuses.SiteStatus] = mapped_column(
        status_column_type(statuses.SiteStatus, "site_status")
    )
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)

    contributions: Mapped[list[Contribution]] = relationship(back_populates="site")


class Run(Base):
    """One federated training run as the coordinator started it."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    flower_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    scenario: Mapped[str] = mapped_column(String(NAME_LENGTH))
    protocol_mode: Mapped[str] = mapped_column(String(64))
    config: Mapped[str] = mapped_column(Text)  # JSON text, keys sorted
    status: Mapped[statuses.RunStatus] = mapped_column(
        status_column_type(statuses.RunStatus, "run_status")
    )
    rounds_planned: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    rounds: Mapped[list[Round]] = relationship(back_populates="run", order_by="Round.number")


class Round(Base):
    """One round of a run: who was sampled, what came back, and the aggregate's evaluation."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[statuses.RoundStatus] = mapped_column(
        status_column_type(statuses.RoundStatus, "round_status")
    )
    sampled: Mapped[int] = mapped_column(Integer)
    participants: Mapped[int] = mapped_column(Integer)
    dropped: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None]
    aggregate_digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))
    global_digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))
    # federated evaluation: weighted over the sites' held-out sets
    loss: Mapped[float | None]
    accuracy: Mapped[float | None]
    auc: Mapped[float | None]
    # the global model scored on the coordinator's global test set
    global_accuracy: Mapped[float | None]
    global_auc: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="rounds")
    contributions: Mapped[list[Contribution]] = relationship(back_populates="round")


class Contribution(Base):
    """What one sampled site did and reported in one round."""

    __tablename__ = "contributions"
    __table_args__ = (
        UniqueConstraint("round_id", "site_id"),
        Index(None, "site_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    status: Mapped[statuses.ContributionStatus] = mapped_column(
        status_column_type(statuses.ContributionStatus, "contribution_status")
    )
    num_examples: Mapped[int | None] = mapped_column(Integer)
    train_loss: Mapped[float | None]
    train_seconds: Mapped[float | None]
    eval_loss: Mapped[float | None]
    eval_accuracy: Mapped[float | None]
    eval_auc: Mapped[float | None]
    eval_examples: Mapped[int | None] = mapped_column(Integer)
    # update coordinates the site clipped to the plan's fixed-point bound (None: not reported)
    clipped_coordinates: Mapped[int | None] = mapped_column(Integer)
    # digest the site reports after applying the round's aggregate
    adapter_digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))
    # SHA-256 (hex) of the update the site sent; its privacy entry signs the same digest
    update_digest: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    error: Mapped[str | None] = mapped_column(Text)

    round: Mapped[Round] = relationship(back_populates="contributions")
    site: Mapped[Site] = relationship(back_populates="contributions")


class PrivacyEntry(Base):
    """One site's DP spend, or its refusal, in one round; rows are only ever added.

    The mechanism (σ, q, steps, clipping norm, δ, accountant) is kept with every ε, so each figure
    can be recomputed from the row alone (``epsilon_round``) or from the site's charged rows in
    order (``epsilon_cumulative``). A declined row spent nothing: ``epsilon_round`` is 0 and the
    mechanism is the one the site would have used.

    Each row is a chain entry (``id`` = its ``seq``) carrying the site's signature over its
    statement and the coordinator's countersignature. Rows written before migration 0003 are
    not: they have ids <= 0 and null hashes and signatures, and an audit flags them.
    """

    __tablename__ = "privacy_ledger"
    __table_args__ = (
        UniqueConstraint("run_id", "round_number", "site_id"),
        Index(None, "site_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    round_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[statuses.PrivacyStatus] = mapped_column(
        status_column_type(statuses.PrivacyStatus, "privacy_status")
    )
    noise_multiplier: Mapped[float]
    sample_rate: Mapped[float]
    steps: Mapped[int] = mapped_column(Integer)
    max_grad_norm: Mapped[float]
    delta: Mapped[float]
    accountant: Mapped[statuses.Accountant] = mapped_column(
        status_column_type(statuses.Accountant, "privacy_accountant")
    )
    epsilon_round: Mapped[float]
    epsilon_cumulative: Mapped[float]
    budget: Mapped[float]
    created_at: Mapped[datetime]
    update_digest: Mapped[str] = mapped_column(String(HASH_LENGTH))  # "" when no update was sent
    site_signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    prev_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    entry_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH), unique=True)
    coordinator_signature: Mapped[bytes | None] = mapped_column(LargeBinary)

    site: Mapped[Site] = relationship()


class Event(Base):
    """An operator action on the chain: enrolments, revocations, runs, budgets. Insert-only.

    ``id`` is the entry's ``seq``; ``details`` is canonical JSON, hashed as the text.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    action: Mapped[statuses.EventAction] = mapped_column(
        status_column_type(statuses.EventAction, "event_action")
    )
    site: Mapped[str | None] = mapped_column(String(NAME_LENGTH), ForeignKey("sites.name"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    details: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    entry_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    coordinator_signature: Mapped[bytes] = mapped_column(LargeBinary)


class ChainLink(Base):
    """The chain's index: one row per entry, in order; two writers racing for a ``seq`` collide
    on the primary key (and on ``prev_hash``), so the chain never forks. Insert-only."""

    __tablename__ = "ledger_chain"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    table_name: Mapped[statuses.ChainTable] = mapped_column(
        status_column_type(statuses.ChainTable, "chain_table")
    )
    entry_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)


def _insert_only(_mapper: Mapper[Any], _connection: Connection, target: Base) -> None:
    raise TypeError(f"{target.__tablename__} rows are insert-only: entries are never changed")


for _model in (PrivacyEntry, Event, ChainLink):
    event.listen(_model, "before_update", _insert_only)
    event.listen(_model, "before_delete", _insert_only)
