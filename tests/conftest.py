"""Shared fixtures.

Registry databases: ``registry_database_url`` gives each test an empty database,
a SQLite file always and, when ``FEDSEAL_TEST_DATABASE_URL`` names a PostgreSQL
server (maintenance database, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``),
a fresh schema in a database created for this test session and dropped after it.

Ledger keys: ``ledger_key`` is a coordinator ledger key for ``open_registry(..., ledger_key=)``;
``site_signer`` makes site key pairs, enrols them and signs their privacy statements
(``registry_signing.SiteSigner``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from registry_signing import SiteSigner
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

POSTGRES_TEST_URL_ENV = "FEDSEAL_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def registry_postgres_database_url() -> Iterator[str]:
    """A PostgreSQL database created for this test session, dropped at its end."""
    maintenance = os.environ.get(POSTGRES_TEST_URL_ENV, "").strip()
    if not maintenance:
        pytest.skip(f"{POSTGRES_TEST_URL_ENV} not set: PostgreSQL registry tests skipped")
    from fedseal.registry.engine import normalise_url

    server = normalise_url(maintenance)
    name = f"fedseal_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def registry_backends() -> list[str]:
    """Backends the registry tests run on: SQLite always, PostgreSQL when configured."""
    return (
        ["sqlite", "postgresql"]
        if os.environ.get(POSTGRES_TEST_URL_ENV, "").strip()
        else ["sqlite"]
    )


@pytest.fixture(params=registry_backends())
def registry_database_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """URL of an empty registry database, once per backend."""
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("registry")
        yield f"sqlite:///{directory / 'registry.db'}"
        return
    database_url = make_url(request.getfixturevalue("registry_postgres_database_url"))
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        scoped = database_url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def ledger_key() -> Ed25519PrivateKey:
    """A coordinator ledger key, new for each test."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def site_signer() -> SiteSigner:
    """Sites with key pairs made on demand, to enrol and to sign privacy statements."""
    return SiteSigner()
