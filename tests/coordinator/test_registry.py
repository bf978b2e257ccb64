"""Registry: migrations, the Registry API, and opening databases, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy import Enum as SAEnum
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedseal.registry import (
    DEFAULT_DATABASE_ENV,
    ContributionStatus,
    ContributionView,
    RecordConflict,
    RecordNotFound,
    Registry,
    RegistryUnavailable,
    RoundStatus,
    RunStatus,
    SiteStatus,
    open_registry,
    resolve_database_url,
    upgrade_to_head,
)
from fedseal.registry.engine import create_registry_engine, normalise_url
from fedseal.registry.errors import AlreadyFinished
from fedseal.registry.migrate import alembic_config, current_revision, head_revision
from fedseal.registry.schema import Base, Contribution, Round, Run, Site

POSTGRES_TEST_URL_ENV = "FEDSEAL_TEST_DATABASE_URL"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand, so durations are exact."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_test_registry(
    registry_database_url: str, ledger_key: Ed25519PrivateKey
) -> Iterator[Callable[..., Registry]]:
    """Opens registries (with the test's ledger key) on the test database, closes them after."""
    opened: list[Registry] = []

    def _open(**kwargs: object) -> Registry:
        kwargs.setdefault("ledger_key", ledger_key)
        registry = open_registry(registry_database_url, **kwargs)  # type: ignore[arg-type]
        opened.append(registry)
        return registry

    yield _open
    for registry in opened:
        registry.close()


@pytest.fixture
def registry(open_test_registry: Callable[..., Registry], clock: FakeClock) -> Registry:
    return open_test_registry(clock=clock)


@pytest.fixture
def engine(registry_database_url: str) -> Iterator[Engine]:
    engine = create_registry_engine(registry_database_url)
    yield engine
    engine.dispose()


def _start_run(registry: Registry, **overrides: object) -> int:
    arguments: dict[str, object] = {
        "scenario": "icd10-chapters",
        "protocol_mode": "plain",
        "config": {"lr": 0.001, "sites": ["a", "b"], "dp": {"sigma": 1.1}},
        "rounds_planned": 3,
    }
    arguments.update(overrides)
    return registry.start_run(**arguments)  # type: ignore[arg-type]


def _statements(engine: Engine) -> tuple[list[str], Callable[[], None]]:
    """Collect the SQL an engine executes until the returned stop function is called."""
    seen: list[str] = []

    def _record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", _record)
    return seen, lambda: event.remove(engine, "before_cursor_execute", _record)


# -- migrations ------------------------------------------------------------------------------


def test_migration_builds_exactly_the_orm_metadata(engine: Engine) -> None:
    upgrade_to_head(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migration_guards_status_columns_like_the_orm(engine: Engine) -> None:
    upgrade_to_head(engine)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        enums = [c.type for c in table.columns if isinstance(c.type, SAEnum)]
        expected = {f"ck_{table.name}_{enum.name}": set(enum.enums) for enum in enums}
        found = {c["name"]: c["sqltext"] for c in inspector.get_check_constraints(table.name)}
        assert set(found) == set(expected), table.name
        for name, values in expected.items():
            assert all(f"'{value}'" in found[name] for value in values), name


def test_second_upgrade_only_reads(engine: Engine) -> None:
    upgrade_to_head(engine)
    seen, stop = _statements(engine)
    try:
        upgrade_to_head(engine)
    finally:
        stop()
    writes = [s for s in seen if s.split()[0].upper() not in {"SELECT", "PRAGMA", "BEGIN"}]
    assert writes == []
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()


def test_upgrade_accepts_a_url(registry_database_url: str, engine: Engine) -> None:
    upgrade_to_head(registry_database_url)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()


def test_migrations_downgrade_to_an_empty_database_and_back(engine: Engine) -> None:
    upgrade_to_head(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_to_head(engine)
    assert {"sites", "runs", "rounds", "contributions"} <= set(inspect(engine).get_table_names())


def test_unknown_schema_revision_makes_the_registry_unavailable(
    registry_database_url: str, engine: Engine
) -> None:
    upgrade_to_head(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(RegistryUnavailable, match="schema migration failed") as caught:
        open_registry(registry_database_url)
    assert "\n" not in str(caught.value)


# -- runs, rounds and contributions ---------------------------------------------------------


def test_a_run_round_trips(registry: Registry, clock: FakeClock) -> None:
    config = {"lr": 0.001, "sites": ["a", "b"], "dp": {"sigma": 1.1}}
    run_id = _start_run(registry, config=config, flower_run_id=4242)
    assert registry.get_run(run_id).flower_run_id == "4242"
    registry.set_flower_run_id(run_id, "777")

    round_id = registry.start_round(run_id, 1, ["site-b", "site-a"])
    clock.advance(12.5)
    registry.record_contribution(
        round_id,
        "site-a",
        status=ContributionStatus.CONTRIBUTED,
        num_examples=120,
        train_loss=0.75,
        train_seconds=8.25,
        clipped_coordinates=3,
    )
    registry.record_contribution(
        round_id,
        "site-a",
        eval_loss=0.5,
        eval_accuracy=0.8,
        eval_auc=0.9,
        eval_examples=30,
        adapter_digest="ab" * 32,
    )
    registry.record_contribution(round_id, "site-b", status="contributed", num_examples=80)
    registry.finish_round(
        round_id,
        status=RoundStatus.COMPLETED,
        aggregate_digest="cd" * 32,
        global_digest="ab" * 32,
        loss=0.55,
        accuracy=0.78,
        auc=0.88,
        global_accuracy=0.7,
        global_auc=0.8,
    )
    clock.advance(1)
    registry.finish_run(run_id, status="completed")

    run = registry.get_run(run_id)
    assert run.id == run_id
    assert run.flower_run_id == "777"
    assert (run.scenario, run.protocol_mode) == ("icd10-chapters", "plain")
    assert run.config == config
    assert run.status is RunStatus.COMPLETED
    assert (run.rounds_planned, run.rounds_completed) == (3, 1)
    assert run.started_at == T0
    assert run.finished_at == T0 + timedelta(seconds=13.5)
    assert run.error is None

    [round_] = registry.rounds(run_id)
    assert (round_.id, round_.run_id, round_.number) == (round_id, run_id, 1)
    assert round_.status is RoundStatus.COMPLETED
    assert (round_.sampled, round_.participants, round_.dropped) == (2, 2, 0)
    assert round_.started_at == T0
    assert round_.finished_at == T0 + timedelta(seconds=12.5)
    assert round_.started_at.tzinfo is UTC and round_.finished_at.tzinfo is UTC
    assert round_.duration_s == pytest.approx(12.5)
    assert (round_.aggregate_digest, round_.global_digest) == ("cd" * 32, "ab" * 32)
    assert (round_.loss, round_.accuracy, round_.auc) == (0.55, 0.78, 0.88)
    assert (round_.global_accuracy, round_.global_auc) == (0.7, 0.8)
    assert round_.error is None
    assert round_.contributions == (
        ContributionView(
            site="site-a",
            status=ContributionStatus.CONTRIBUTED,
            num_examples=120,
            train_loss=0.75,
            train_seconds=8.25,
            eval_loss=0.5,
            eval_accuracy=0.8,
            eval_auc=0.9,
            eval_examples=30,
            clipped_coordinates=3,
            adapter_digest="ab" * 32,
            update_digest=None,
            error=None,
        ),
        ContributionView(
            site="site-b",
            status=ContributionStatus.CONTRIBUTED,
            num_examples=80,
            train_loss=None,
            train_seconds=None,
            eval_loss=None,
            eval_accuracy=None,
            eval_auc=None,
            eval_examples=None,
            clipped_coordinates=None,
            adapter_digest=None,
            update_digest=None,
            error=None,
        ),
    )


def test_timestamps_are_stored_in_utc_whatever_the_clock_zone(
    open_test_registry: Callable[..., Registry],
) -> None:
    plus_two = timezone(timedelta(hours=2))
    registry = open_test_registry(clock=lambda: datetime(2026, 3, 1, 14, 0, tzinfo=plus_two))
    run = registry.get_run(_start_run(registry))
    assert run.started_at == T0
    assert run.started_at.tzinfo is UTC


def test_naive_clock_is_refused(open_test_registry: Callable[..., Registry]) -> None:
    registry = open_test_registry(clock=lambda: datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        _start_run(registry)


def test_dropped_and_declined_sites_are_counted(registry: Registry) -> None:
    run_id = _start_run(registry)
    sites = ["a", "b", "c", "d", "e"]
    round_id = registry.start_round(run_id, 1, sites)
    registry.record_contribution(round_id, "a", status="contributed", num_examples=10)
    registry.record_contribution(round_id, "b", status="contributed", num_examples=12)
    registry.record_contribution(round_id, "c", status="declined", error="budget spent")
    registry.record_contribution(round_id, "d", status="failed", error="out of memory")
    # "e" never answers
    registry.finish_round(round_id, status="completed")

    [round_] = registry.rounds(run_id)
    assert (round_.sampled, round_.participants, round_.dropped) == (5, 2, 3)
    statuses = {c.site: c.status for c in round_.contributions}
    assert statuses == {
        "a": ContributionStatus.CONTRIBUTED,
        "b": ContributionStatus.CONTRIBUTED,
        "c": ContributionStatus.DECLINED,
        "d": ContributionStatus.FAILED,
        "e": ContributionStatus.DROPPED,
    }
    assert {c.site: c.error for c in round_.contributions}["c"] == "budget spent"


def test_a_running_round_shows_sampled_sites(registry: Registry) -> None:
    run_id = _start_run(registry)
    registry.start_round(run_id, 1, ["b", "a"])
    [round_] = registry.rounds(run_id)
    assert round_.status is RoundStatus.RUNNING
    assert round_.finished_at is None and round_.duration_s is None
    assert (round_.sampled, round_.participants, round_.dropped) == (2, 0, 0)
    assert [(c.site, c.status) for c in round_.contributions] == [
        ("a", ContributionStatus.SAMPLED),
        ("b", ContributionStatus.SAMPLED),
    ]


def test_a_running_round_counts_answers_as_they_come(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a", "b", "c"])
    registry.record_contribution(round_id, "a", status="contributed")
    registry.record_contribution(round_id, "b", status="declined")
    [round_] = registry.rounds(run_id)
    assert round_.status is RoundStatus.RUNNING
    assert (round_.sampled, round_.participants, round_.dropped) == (3, 1, 1)


def test_record_contribution_changes_only_the_given_fields(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a"])
    registry.record_contribution(
        round_id, "a", status="contributed", num_examples=5, train_loss=1.5, error="slow"
    )
    registry.record_contribution(round_id, "a", eval_accuracy=0.5)
    [contribution] = registry.rounds(run_id)[0].contributions
    assert contribution.status is ContributionStatus.CONTRIBUTED
    assert (contribution.num_examples, contribution.train_loss) == (5, 1.5)
    assert (contribution.eval_accuracy, contribution.error) == (0.5, "slow")


def test_the_clipped_count_is_kept_with_the_contribution(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a", "b"])
    registry.record_contribution(round_id, "a", status="contributed", clipped_coordinates=7)
    registry.record_contribution(round_id, "b", status="contributed")
    a, b = registry.rounds(run_id)[0].contributions
    assert (a.clipped_coordinates, b.clipped_coordinates) == (7, None)


def test_non_finite_metrics_are_recorded_as_unknown(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a"])
    registry.record_contribution(round_id, "a", status="contributed", eval_auc=0.7)
    registry.record_contribution(round_id, "a", eval_auc=float("nan"), train_loss=float("inf"))
    registry.finish_round(round_id, status="completed", auc=float("nan"))
    [round_] = registry.rounds(run_id)
    assert round_.auc is None
    assert round_.contributions[0].eval_auc is None
    assert round_.contributions[0].train_loss is None


def test_an_unsampled_site_gets_a_row_only_with_a_status(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a"])
    with pytest.raises(RecordConflict, match="needs a status"):
        registry.record_contribution(round_id, "late", eval_loss=1.0)
    registry.record_contribution(round_id, "late", status="dropped", error="not sampled")
    registry.finish_round(round_id, status="completed")
    [round_] = registry.rounds(run_id)
    assert [c.site for c in round_.contributions] == ["a", "late"]
    assert (round_.sampled, round_.participants, round_.dropped) == (2, 0, 2)


def test_a_late_report_recounts_a_finished_round(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a", "b"])
    registry.record_contribution(round_id, "a", status="contributed")
    registry.finish_round(round_id, status="completed")
    registry.record_contribution(round_id, "b", status="contributed", eval_loss=0.1)
    [round_] = registry.rounds(run_id)
    assert (round_.sampled, round_.participants, round_.dropped) == (2, 2, 0)


def test_finishing_a_run_aborts_its_open_round(registry: Registry, clock: FakeClock) -> None:
    run_id = _start_run(registry)
    done = registry.start_round(run_id, 1, ["a"])
    registry.record_contribution(done, "a", status="contributed")
    registry.finish_round(done, status="completed")
    registry.start_round(run_id, 2, ["a", "b"])
    clock.advance(3)
    registry.finish_run(run_id, status=RunStatus.FAILED, error="coordinator crashed")

    run = registry.get_run(run_id)
    assert (run.status, run.error, run.rounds_completed) == ("failed", "coordinator crashed", 1)
    first, second = registry.rounds(run_id)
    assert first.status is RoundStatus.COMPLETED
    assert second.status is RoundStatus.ABORTED
    assert second.finished_at == T0 + timedelta(seconds=3)
    assert second.error is not None and "failed" in second.error
    assert (second.sampled, second.participants, second.dropped) == (2, 0, 2)


def test_finishing_twice_is_a_conflict(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a"])
    registry.finish_round(round_id, status="aborted", error="too few sites")
    with pytest.raises(AlreadyFinished, match="already finished"):
        registry.finish_round(round_id, status="completed")
    registry.finish_run(run_id, status="aborted")
    with pytest.raises(AlreadyFinished, match="already finished"):
        registry.finish_run(run_id, status="completed")
    with pytest.raises(RecordConflict, match="not running"):
        registry.start_round(run_id, 2, ["a"])


def test_final_statuses_only_when_finishing(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a"])
    with pytest.raises(ValueError, match="final"):
        registry.finish_round(round_id, status="running")
    with pytest.raises(ValueError, match="must be one of"):
        registry.finish_run(run_id, status="done")
    with pytest.raises(ValueError, match="must be one of"):
        registry.record_contribution(round_id, "a", status="happy")


def test_a_round_number_is_used_once_per_run(registry: Registry) -> None:
    run_id = _start_run(registry)
    other_run = _start_run(registry)
    registry.start_round(run_id, 1, ["a"])
    registry.start_round(other_run, 1, ["a"])
    with pytest.raises(RecordConflict, match="already has a round 1"):
        registry.start_round(run_id, 1, ["b"])


def test_ensure_site_is_idempotent(registry: Registry) -> None:
    first = registry.ensure_site("site-a")
    assert registry.ensure_site("site-a") == first
    assert registry.ensure_site("site-b") != first


def test_revoked_sites_cannot_be_sampled(registry: Registry) -> None:
    registry.ensure_site("revoked-site")
    registry.revoke_site("revoked-site", "left the federation")
    run_id = _start_run(registry)
    with pytest.raises(RecordConflict, match="revoked-site"):
        registry.start_round(run_id, 1, ["a", "revoked-site"])
    assert registry.rounds(run_id) == []


def test_unknown_ids_are_not_found(registry: Registry) -> None:
    with pytest.raises(RecordNotFound):
        registry.get_run(999)
    with pytest.raises(RecordNotFound):
        registry.rounds(999)
    with pytest.raises(RecordNotFound):
        registry.start_round(999, 1, ["a"])
    with pytest.raises(RecordNotFound):
        registry.record_contribution(999, "a", status="contributed")
    with pytest.raises(RecordNotFound):
        registry.finish_round(999, status="completed")
    with pytest.raises(RecordNotFound):
        registry.finish_run(999, status="completed")
    with pytest.raises(RecordNotFound):
        registry.set_flower_run_id(999, "1")


def test_run_queries(registry: Registry, clock: FakeClock) -> None:
    assert registry.latest_run() is None
    assert registry.list_runs() == []
    first = _start_run(registry, flower_run_id="11")
    clock.advance(1)
    second = _start_run(registry, scenario="cardio", flower_run_id="22")
    assert [run.id for run in registry.list_runs()] == [second, first]
    latest = registry.latest_run()
    assert latest is not None and latest.id == second and latest.scenario == "cardio"
    found = registry.find_flower_run(22)
    assert found is not None and found.id == second
    assert registry.find_flower_run("33") is None


def test_views_are_frozen(registry: Registry) -> None:
    run = registry.get_run(_start_run(registry))
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = RunStatus.FAILED  # type: ignore[misc]


def test_rounds_is_one_query_after_the_run_check(registry: Registry) -> None:
    run_id = _start_run(registry)
    for number in range(1, 4):
        round_id = registry.start_round(run_id, number, ["a", "b", "c"])
        registry.record_contribution(round_id, "a", status="contributed")
        registry.finish_round(round_id, status="completed")
    seen, stop = _statements(registry.engine)
    try:
        rounds = registry.rounds(run_id)
    finally:
        stop()
    assert [len(r.contributions) for r in rounds] == [3, 3, 3]
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 2


def test_two_registries_share_one_database(open_test_registry: Callable[..., Registry]) -> None:
    writer, reader = open_test_registry(), open_test_registry()
    run_id = _start_run(writer)
    round_id = writer.start_round(run_id, 1, ["a"])
    assert reader.rounds(run_id)[0].status is RoundStatus.RUNNING
    writer.finish_round(round_id, status="completed")
    assert reader.rounds(run_id)[0].status is RoundStatus.COMPLETED


def test_concurrent_ensure_site_agrees_on_one_id(
    open_test_registry: Callable[..., Registry],
) -> None:
    registries = [open_test_registry() for _ in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda i: registries[i % 4].ensure_site("shared"), range(16)))
    assert len(set(ids)) == 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r, run: r.start_round(run, 1, "site-a"), TypeError),
        (lambda r, run: r.start_round(run, 1, ["a", "a"]), ValueError),
        (lambda r, run: r.start_round(run, 0, ["a"]), ValueError),
        (lambda r, run: r.start_round(run, True, ["a"]), TypeError),
        (lambda r, run: r.start_round(run, 1, [" a"]), ValueError),
        (lambda r, run: r.ensure_site(""), ValueError),
        (lambda r, run: r.ensure_site(3), TypeError),
        (lambda r, run: _start_run(r, rounds_planned=0), ValueError),
        (lambda r, run: _start_run(r, config={"x": object()}), TypeError),
        (lambda r, run: _start_run(r, config={"x": float("nan")}), ValueError),
        (lambda r, run: _start_run(r, config=[1]), TypeError),
        (lambda r, run: r.set_flower_run_id(run, 1.5), TypeError),
    ],
)
def test_bad_arguments_are_refused(
    registry: Registry, call: Callable[[Registry, int], object], error: type[Exception]
) -> None:
    run_id = _start_run(registry)
    with pytest.raises(error):
        call(registry, run_id)


def test_bad_contribution_values_are_refused(registry: Registry) -> None:
    run_id = _start_run(registry)
    round_id = registry.start_round(run_id, 1, ["a"])
    with pytest.raises(ValueError, match="num_examples"):
        registry.record_contribution(round_id, "a", status="contributed", num_examples=-1)
    with pytest.raises(TypeError, match="train_loss"):
        registry.record_contribution(round_id, "a", status="contributed", train_loss="0.5")
    with pytest.raises(ValueError, match="train_seconds"):
        registry.record_contribution(round_id, "a", status="contributed", train_seconds=-2.0)
    with pytest.raises(ValueError, match="adapter_digest"):
        registry.record_contribution(round_id, "a", status="contributed", adapter_digest="")
    with pytest.raises(ValueError, match="clipped_coordinates"):
        registry.record_contribution(round_id, "a", status="contributed", clipped_coordinates=-1)
    assert registry.rounds(run_id)[0].contributions[0].status is ContributionStatus.SAMPLED


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    outcomes=st.lists(st.sampled_from([*ContributionStatus, None]), min_size=0, max_size=8),
    final=st.sampled_from([RoundStatus.COMPLETED, RoundStatus.ABORTED, RoundStatus.FAILED]),
)
def test_counts_always_add_up(
    registry: Registry, outcomes: list[ContributionStatus | None], final: RoundStatus
) -> None:
    run_id = _start_run(registry)
    sites = [f"site-{i}" for i in range(len(outcomes))]
    round_id = registry.start_round(run_id, 1, sites)
    for site, outcome in zip(sites, outcomes, strict=True):
        if outcome is not None:
            registry.record_contribution(round_id, site, status=outcome)
    registry.finish_round(round_id, status=final)
    [round_] = registry.rounds(run_id)
    contributed = sum(outcome is ContributionStatus.CONTRIBUTED for outcome in outcomes)
    assert (round_.sampled, round_.participants) == (len(sites), contributed)
    assert round_.dropped == len(sites) - contributed
    assert all(c.status is not ContributionStatus.SAMPLED for c in round_.contributions)


# -- constraints in the database itself -------------------------------------------------------


def _seed(session: Session) -> tuple[Run, Round, Site]:
    run = Run(
        scenario="s",
        protocol_mode="plain",
        config="{}",
        status=RunStatus.RUNNING,
        rounds_planned=1,
        started_at=T0,
    )
    site = Site(name="a", created_at=T0, status=SiteStatus.ACTIVE)
    round_ = Round(
        run=run,
        number=1,
        status=RoundStatus.RUNNING,
        sampled=1,
        participants=0,
        dropped=0,
        started_at=T0,
    )
    session.add_all([run, site, round_])
    session.flush()
    return run, round_, site


@pytest.mark.parametrize(
    "duplicate",
    [
        lambda run, round_, site: Site(name="a", created_at=T0, status=SiteStatus.ACTIVE),
        lambda run, round_, site: Round(
            run_id=run.id,
            number=1,
            status=RoundStatus.RUNNING,
            sampled=0,
            participants=0,
            dropped=0,
            started_at=T0,
        ),
        lambda run, round_, site: Contribution(
            round_id=round_.id, site_id=site.id, status=ContributionStatus.DROPPED
        ),
    ],
    ids=["site-name", "run-round-number", "round-site"],
)
def test_unique_constraints(engine: Engine, duplicate: Callable[..., object]) -> None:
    upgrade_to_head(engine)
    with Session(engine) as session, session.begin():
        run, round_, site = _seed(session)
        session.add(Contribution(round_id=round_.id, site_id=site.id, status="sampled"))
        session.flush()
        session.add(duplicate(run, round_, site))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def test_foreign_keys_and_status_checks_are_enforced(engine: Engine) -> None:
    upgrade_to_head(engine)
    with engine.connect() as connection:
        with pytest.raises(IntegrityError), connection.begin():
            connection.execute(
                text(
                    "INSERT INTO contributions (round_id, site_id, status) "
                    "VALUES (:missing, :missing, 'sampled')"
                ),
                {"missing": 99},
            )
        with pytest.raises(IntegrityError), connection.begin():
            connection.execute(
                text(
                    "INSERT INTO sites (name, created_at, status) "
                    "VALUES ('x', '2026-01-01 00:00:00', 'sleeping')"
                )
            )


# -- choosing and opening the database ---------------------------------------------------------


def test_cli_value_beats_environment_beats_default(tmp_path: Path) -> None:
    default = tmp_path / "registry.db"
    env = {DEFAULT_DATABASE_ENV: "postgresql://from-env/db"}
    assert resolve_database_url("sqlite:///cli.db", default, environ=env) == "sqlite:///cli.db"
    assert resolve_database_url(None, default, environ=env) == "postgresql://from-env/db"
    assert resolve_database_url(None, default, environ={}) == f"sqlite:///{default}"
    blank = {DEFAULT_DATABASE_ENV: "  "}
    assert resolve_database_url("", default, environ=blank) == f"sqlite:///{default}"


def test_plain_postgresql_urls_use_psycopg() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def _not_a_database(tmp_path: Path) -> str:
    path = tmp_path / "notes.txt"
    path.write_text("these are notes, not a database\n" * 100)
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("make_url", "reason"),
    [
        (lambda tmp: "postgresql://u:secret@127.0.0.1:1/x", "cannot use the database"),
        (lambda tmp: "sqlite:////nonexistent/dir/x.db", "directory /nonexistent/dir does not"),
        (lambda tmp: "nosuchdialect://x", "unknown database dialect"),
        (lambda tmp: "::not a url::", "not a valid database URL"),
        (lambda tmp: "mysql+nosuchdriver://u:secret@h/db", "unknown database dialect"),
        (_not_a_database, "not a database"),
        (lambda tmp: f"sqlite:///{tmp}", "unable to open"),
    ],
    ids=["unreachable", "missing-dir", "dialect", "syntax", "driver", "text-file", "directory"],
)
def test_unusable_databases_give_one_line_without_the_password(
    tmp_path: Path, make_url: Callable[[Path], str], reason: str
) -> None:
    url = make_url(tmp_path)
    with pytest.raises(RegistryUnavailable) as caught:
        open_registry(url)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message
    assert "secret" not in message
    assert reason in message
    assert message.startswith("registry database ")


def test_sqlite_registry_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite:///{tmp_path / 'r.db'}")
    with registry, registry.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_readers_are_not_blocked_by_a_writer(
    tmp_path: Path, ledger_key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "r.db"
    with open_registry(f"sqlite:///{path}", ledger_key=ledger_key) as registry:
        run_id = _start_run(registry)
        other_process = sqlite3.connect(path, isolation_level=None)
        try:
            other_process.execute("BEGIN IMMEDIATE")
            other_process.execute("UPDATE runs SET scenario = 'changing'")
            assert registry.get_run(run_id).scenario == "icd10-chapters"
            assert registry.list_runs()[0].id == run_id
        finally:
            other_process.execute("ROLLBACK")
            other_process.close()


def test_sqlite_writers_wait_for_each_other(tmp_path: Path, ledger_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "r.db"
    with open_registry(f"sqlite:///{path}", ledger_key=ledger_key) as registry:
        other_process = sqlite3.connect(path, isolation_level=None)
        other_process.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(_start_run, registry)
            time.sleep(0.3)
            assert not pending.done()
            other_process.execute("COMMIT")
            other_process.close()
            run_id = pending.result(timeout=10)
        assert registry.get_run(run_id).status is RunStatus.RUNNING


def test_postgresql_backend_is_configured() -> None:
    """Reminds, as one skip line, that the PostgreSQL half of these tests did not run."""
    if not os.environ.get(POSTGRES_TEST_URL_ENV, "").strip():
        pytest.skip(f"{POSTGRES_TEST_URL_ENV} not set: registry tests ran on SQLite only")


def test_the_registry_does_not_import_torch() -> None:
    code = "import sys, fedseal.registry; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
