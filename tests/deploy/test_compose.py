"""compose.yaml against the Compose Specification, and every command in it against the project.

No Docker engine is used: the schema is vendored (tests/deploy/README.md) and each command is run
here, in this environment, with `--help`.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from compose_local import REPO, LocalStack, executable, interpolate, load_compose, service_order

SCHEMA = json.loads((Path(__file__).with_name("compose-spec.json")).read_text("utf-8"))
FEDSEAL_IMAGE = "fedseal:latest"
SITES = ("hospital_a", "hospital_b", "hospital_c")


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return interpolate(compose, {"FEDSEAL_DB_PASSWORD": "x"})["services"]


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda doc: doc["services"]["superlink"].update(
            depends_on={"pki": {"condition": "service_ready"}}
        ),
        lambda doc: doc["services"]["registry"].update(healthcheck={"test": 5}),
        lambda doc: doc["services"]["hospital_a"].update(ports="9443"),
        lambda doc: doc["services"]["auditor"].update(unknown_key=1),
    ],
    ids=["bad-depends-on", "bad-healthcheck", "bad-ports", "unknown-key"],
)
def test_the_schema_check_catches_mistakes(compose: dict[str, Any], break_it) -> None:
    broken = copy.deepcopy(compose)
    break_it(broken)
    assert schema_errors(broken)


def test_services_wait_on_health_restart_and_keep_data_in_volumes(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert service_order(services)[:2] == ["registry", "pki"]
    declared = set(compose["volumes"])
    for name, spec in services.items():
        if name == "pki":
            assert spec["restart"] == "on-failure"  # a one-shot job: again only if it failed
        else:
            assert spec["restart"] in ("on-failure", "unless-stopped", "always"), name
        for mount in spec.get("volumes", []):
            source = mount.split(":")[0]
            assert source.startswith(".") or source in declared, f"{name}: {mount}"
        for dependency, condition in (spec.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully" if dependency == "pki" else "service_healthy"
            )
            assert condition["condition"] == expected, f"{name} -> {dependency}"
            if expected == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
    registry = services["registry"]
    assert any(m.endswith(":/var/lib/postgresql/data") for m in registry["volumes"])


def test_superlink_has_tls_node_auth_a_state_volume_and_no_telemetry(services) -> None:
    superlink = services["superlink"]
    command = superlink["command"]
    for flag in ("--ssl-ca-certfile=", "--ssl-certfile=", "--ssl-keyfile=", "--database="):
        assert any(part.startswith(flag) for part in command), flag
    assert "--enable-supernode-auth" in command
    assert "--insecure" not in command
    database = next(part for part in command if part.startswith("--database="))
    state_mount = next(m for m in superlink["volumes"] if m.startswith("superlink-state:"))
    assert database.split("=", 1)[1].startswith(state_mount.split(":")[1] + "/")
    assert superlink["environment"]["FLWR_TELEMETRY_ENABLED"] == "0"
    assert "ports" not in superlink  # reachable only through the proxy


def test_sites_reach_only_the_fleet_proxy(compose: dict[str, Any], services) -> None:
    assert compose["networks"]["backend"].get("internal") is True
    for name, spec in services.items():
        if name in SITES:
            assert spec["networks"] == ["fleet"], name
            assert "ports" not in spec
        elif name != "fleet-proxy":
            assert "fleet" not in spec.get("networks", []), name
    assert set(services["fleet-proxy"]["networks"]) == {"backend", "fleet"}


def test_each_site_has_its_own_data_and_key_volumes(services) -> None:
    seen: set[str] = set()
    for site in SITES:
        volumes = {mount.split(":")[0] for mount in services[site]["volumes"]}
        assert {f"{site}-state", f"{site}-data"} <= volumes
        assert not volumes & seen - {"trust"}
        seen |= volumes
        assert services[site]["command"][:2] == ["fl-client", f"--site={site}"]


def test_fleet_proxy_passes_only_the_fleet_api() -> None:
    conf = (REPO / "deploy" / "fleet-proxy" / "nginx.conf").read_text("utf-8")
    public = conf[conf.index("listen 9443") : conf.index("listen 127.0.0.1:8081")]
    blocks = nginx_locations(public)
    assert [path for path, body in blocks.items() if "proxy_pass" in body] == ["/v1/fleet/"]
    assert blocks["/"].split() == ["return", "404;"]
    assert "deny all;" in blocks["/v1/fleet/"]  # inside `limit_except POST`
    assert "proxy_ssl_verify on;" in public


def nginx_locations(conf: str) -> dict[str, str]:
    """Each `location [modifier] PATH { ... }` block's path and body (nested braces kept)."""
    blocks: dict[str, str] = {}
    for match in re.finditer(r"location\s+(?:\S+\s+)?(\S+)\s*\{", conf):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf[end], 0)
            end += 1
        blocks[match.group(1)] = conf[match.end() : end - 1]
    return blocks


def _fedseal_services(services: dict[str, Any]) -> list[str]:
    return [name for name, spec in services.items() if spec.get("image") == FEDSEAL_IMAGE]


def _local_stack(tmp_path: Path) -> LocalStack:
    return LocalStack(root=tmp_path, addresses={}, variables={"FEDSEAL_DB_PASSWORD": "x"})


@pytest.mark.parametrize(
    "service",
    _fedseal_services(interpolate(load_compose(), {"FEDSEAL_DB_PASSWORD": "x"})["services"]),
)
def test_every_fedseal_service_command_exists_and_takes_its_options(
    service: str, tmp_path: Path
) -> None:
    local = _local_stack(tmp_path).local(service)
    command = local.command
    if command[0].endswith("/sh"):
        script = Path(command[1])
        assert script.is_file(), f"{service}: {script} is not in the project"
        help_command = [command[0], str(script), "--help"]
        options: list[str] = []
    else:
        # subcommands stay, options are checked against the help text
        words = [part for part in command[1:] if not part.startswith("-")]
        subcommand = words[:1] if words and words[0] == command[1] else []
        help_command = [command[0], *subcommand, "--help"]
        options = [part.split("=")[0] for part in command[1:] if part.startswith("--")]
    done = subprocess.run(
        help_command, env=local.environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert text.strip()
    for option in options:
        assert option in text, f"{service}: {Path(command[0]).name} has no option {option}"


def test_the_healthchecks_name_real_commands(tmp_path: Path) -> None:
    stack = _local_stack(tmp_path)
    for service in ("superlink",):
        check = stack.local(service).healthcheck
        assert check is not None
        assert Path(check[0]).exists() and check[1] == "-c"
        compile(check[2], f"{service} healthcheck", "exec")


def test_the_fleet_proxy_config_is_valid_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or executable("nginx")
    assert Path(nginx).exists(), "nginx is needed (scripts/test.sh installs Debian's package)"
    stack = LocalStack(
        root=tmp_path,
        addresses={"superlink:9093": "127.0.0.1:9"},
        variables={"FEDSEAL_DB_PASSWORD": "x"},
    )
    pki = stack.local_path("fleet-proxy", "/var/lib/fedseal/pki")
    from fedseal.coordinator.pki import init_pki

    init_pki(pki, names=("superlink", "fleet-proxy"))
    conf = stack.local_path("fleet-proxy", "/etc/nginx/nginx.conf")
    done = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-e", "stderr"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_the_image_runs_as_a_user_and_pins_a_cpu_torch_by_default() -> None:
    dockerfile = (REPO / "Dockerfile").read_text("utf-8")
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", dockerfile, re.M)
    assert re.search(r"^USER fedseal", dockerfile, re.M)
    assert "FLWR_TELEMETRY_ENABLED=0" in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (REPO / copied).exists(), copied
