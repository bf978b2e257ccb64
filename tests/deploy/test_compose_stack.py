"""compose.yaml's stack as local processes: one full round with TLS and node authentication,
through the fleet-only proxy, against PostgreSQL.

Every command, environment, config file and health check comes from compose.yaml (see
compose_local.py); only paths and addresses are made local. The proxy is nginx with the stack's
own configuration. After the round: a Control API route through the proxy is refused, and a site
whose SuperNode key was never registered, or was revoked, is refused in one line by fl-client.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_local import LocalService, LocalStack, executable, run_healthcheck, service_order

from fedseal.demo.federation import free_port
from fedseal.demo.processes import ProcessGroup
from fedseal.registry import open_registry

pytestmark = pytest.mark.e2e

SITES = ("hospital_a", "hospital_b", "hospital_c")
DEFAULT_MAINTENANCE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def stack_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the stack's registry (the `registry` service)."""
    from sqlalchemy import create_engine

    from fedseal.registry.engine import normalise_url

    maintenance = os.environ.get("FEDSEAL_TEST_DATABASE_URL", "").strip()
    server = normalise_url(maintenance or DEFAULT_MAINTENANCE_URL)
    name = f"fedseal_stack_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def start(processes: ProcessGroup, service: LocalService, extra: list[str] | None = None) -> None:
    """Start a long-running service (its log in the group's folder, named after it)."""
    processes.start(service.name, service.command + (extra or []), env=service.environment)


def log(processes: ProcessGroup, name: str) -> str:
    return (processes.log_dir / f"{name}.log").read_text(errors="replace")


def wait_healthy(service: LocalService, processes: ProcessGroup, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run_healthcheck(service):
            return
        assert processes.children[service.name].alive(), log(processes, service.name)[-3000:]
        time.sleep(1.0)
    raise AssertionError(f"{service.name} not healthy: {log(processes, service.name)[-3000:]}")


def https_status(url: str, ca: Path, method: str = "POST") -> int:
    """The HTTP status the proxy answers (no body needed to be refused)."""
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run_site_once(stack: LocalStack, site: str, config: Path, timeout_s: float = 180.0):
    """fl-client as the site's service runs it, but with another config; waits for its exit."""
    service = stack.local(site)
    command = [*service.command[:2], "--config", str(config)]
    return subprocess.run(
        command,
        env=service.environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_compose_stack_runs_a_round_through_the_fleet_proxy(stack_database: str) -> None:
    assert shutil.which("nginx"), "nginx is needed (scripts/test.sh installs Debian's package)"
    # A short root keeps Unix socket paths of the sites' workers within their limit.
    root = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    superlink_port, proxy_port, proxy_health_port, auditor_port = (free_port() for _ in range(4))
    stack = LocalStack(
        root=root,
        addresses={
            "superlink:9093": f"127.0.0.1:{superlink_port}",
            "--port=9093": f"--port={superlink_port}",
            "fleet-proxy:9443": f"127.0.0.1:{proxy_port}",
            "listen 9443 ssl": f"listen 127.0.0.1:{proxy_port} ssl",
            "127.0.0.1:8081": f"127.0.0.1:{proxy_health_port}",
            "--port=8050": f"--port={auditor_port}",
            "--host=0.0.0.0": "--host=127.0.0.1",
            "fedseal@registry:5432/fedseal": f"postgres@127.0.0.1:5432/{stack_database}",
        },
        variables={"FEDSEAL_DB_PASSWORD": "not-used-by-trust-auth"},
        # A short run: what an operator sets in the coordinator's environment.
        overrides={"coordinator": {"FEDSEAL_ROUNDS": "1", "FEDSEAL_STEPS": "2"}},
    )
    order = service_order(stack.services)
    assert order.index("pki") < order.index("superlink") < order.index("fleet-proxy")
    assert order.index("fleet-proxy") < min(order.index(site) for site in SITES)
    log_dir = root / "logs"
    log_dir.mkdir()
    processes = ProcessGroup(log_dir)
    try:
        # registry: the machine's PostgreSQL (stack_database). pki: a one-shot job.
        pki = stack.local("pki")
        done = subprocess.run(
            pki.command, env=pki.environment, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]

        superlink = stack.local("superlink")
        start(processes, superlink)
        wait_healthy(superlink, processes)

        proxy = stack.local("fleet-proxy")
        nginx_conf = stack.local_path("fleet-proxy", "/etc/nginx/nginx.conf")
        start(processes, proxy, ["-c", str(nginx_conf), "-e", "stderr"])
        wait_healthy(proxy, processes)

        coordinator = stack.local("coordinator")
        start(processes, coordinator)
        for site in SITES:
            start(processes, stack.local(site))

        deadline = time.monotonic() + 600
        coordinator_process = processes.children["coordinator"].process
        while coordinator_process.poll() is None:
            assert time.monotonic() < deadline, log(processes, "coordinator")[-3000:]
            time.sleep(2.0)
        assert coordinator_process.returncode == 0, (
            log(processes, "coordinator")[-3000:] + log(processes, "superlink")[-3000:]
        )

        # The registry (PostgreSQL) holds one completed run: one round with all three sites.
        url = coordinator.environment["FEDSEAL_DATABASE_URL"]
        registry = open_registry(url)
        try:
            (run,) = registry.list_runs()
            assert str(run.status) == "completed"
            (round_,) = registry.rounds(run.id)
            assert str(round_.status) == "completed"
            contributed = [c.site for c in round_.contributions if str(c.status) == "contributed"]
            assert contributed == list(SITES), round_.contributions
        finally:
            registry.close()
        # ... and its privacy ledger verifies against the key the auditors were given.
        public_key_file = stack.local_path(
            "auditor", "/var/lib/fedseal/ledger-public/ledger-public-key.hex"
        )
        audit = subprocess.run(
            [
                executable("fl-audit"),
                "verify",
                "--database",
                url,
                "--coordinator-key",
                str(public_key_file),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr

        # The sites reached the SuperLink only through the proxy, over TLS, on Fleet routes.
        access = log(processes, "fleet-proxy")
        assert "POST /v1/fleet/push-messages" in access or "POST /v1/fleet/push-object" in access
        assert "/v1/control/" not in access

        # The proxy refuses the Control API (no authentication in the open-source SuperLink).
        ca = stack.local_path("hospital_a", "/var/lib/fedseal/trust/ca.crt")
        proxy_url = f"https://127.0.0.1:{proxy_port}"
        assert https_status(f"{proxy_url}/v1/control/list-runs", ca) == 404
        assert https_status(f"{proxy_url}/v1/control/register-node", ca) == 404
        assert https_status(f"{proxy_url}/docs", ca, method="GET") == 404
        assert https_status(f"{proxy_url}/v1/fleet/get-run", ca, method="GET") == 403
        # ... which the SuperLink itself would have answered.
        direct = f"https://127.0.0.1:{superlink_port}/v1/control/list-runs"
        assert https_status(direct, ca) != 404

        # The auditor's page shows the run, verified.
        auditor = stack.local("auditor")
        start(processes, auditor)
        page = _get_page(f"http://127.0.0.1:{auditor_port}/", processes)
        assert all(site in page for site in SITES)

        # An unenrolled site: hospital_c's config with a SuperNode key nobody registered.
        processes.stop("hospital_c")
        site_config = stack.local_path("hospital_c", "/etc/fedseal/sites/hospital_c.toml")
        stranger_key = root / "stranger" / "node-auth"
        stranger_key.parent.mkdir()
        subprocess.run(
            [
                executable("fl-coordinator"),
                "site-auth-key",
                "--out",
                str(stranger_key),
            ],
            check=True,
            capture_output=True,
        )
        real_key = stack.local_path(
            "hospital_c", "/var/lib/fedseal/sites/hospital_c/keys/node-auth"
        )
        stranger_config = root / "stranger" / "hospital_c.toml"
        stranger_config.write_text(
            site_config.read_text().replace(str(real_key), str(stranger_key)), "utf-8"
        )
        refused = run_site_once(stack, "hospital_c", stranger_config)
        _assert_refused(refused)

        # A revoked site: `fl-coordinator revoke` as the operator runs it in the coordinator.
        coordinator_env = dict(coordinator.environment)
        coordinator_env["FLWR_HOME"] = str(
            stack.local_path("coordinator", "/var/lib/fedseal/coordinator/flwr")
        )
        revoke = subprocess.run(
            [
                executable("fl-coordinator"),
                "revoke",
                "--site",
                "hospital_c",
                "--reason",
                "left the federation",
            ],
            env=coordinator_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert revoke.returncode == 0, revoke.stdout + revoke.stderr
        assert "unregistered Flower node" in revoke.stdout
        _assert_refused(run_site_once(stack, "hospital_c", site_config))
    finally:
        processes.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def _assert_refused(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 5, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fl-client: error: site hospital_c was refused by the coordinator")
    assert "not registered" in last
    assert "Exit Code" not in done.stderr  # Flower's multi-line banner is replaced


def _get_page(url: str, processes: ProcessGroup, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, log(processes, "auditor")[-3000:]
            time.sleep(1.0)
