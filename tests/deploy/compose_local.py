"""compose.yaml turned into local processes on 127.0.0.1, for tests on a machine without Docker.

Everything a service runs is taken from compose.yaml itself: its command, its environment, its
configs and mounted files, its health check and the order `depends_on` gives. Only where things
live is rewritten, the way a container runtime would have mapped them:

- each service gets a file tree of its own (its "container"); a volume is one folder, linked at
  its mount target in the tree of every service that mounts it, so services share exactly what
  they share in compose and nothing else;
- `configs:` and bind-mounted files are copied into the tree, with the same rewriting applied;
- `/opt/fedseal` (the image's copy of the project) is a link to this checkout;
- service addresses (`superlink:9093`, ...) become 127.0.0.1 with free ports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
IMAGE_PROJECT = "/opt/fedseal"
IMAGE_ENV = {  # the Dockerfile's ENV lines that the commands rely on
    "FLWR_TELEMETRY_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}
CONTAINER_ROOTS = (  # where the image and compose.yaml put things; each service gets its own
    "/var/lib/fedseal",
    "/etc/fedseal",
    "/srv/fedseal",
    "/etc/nginx",
    "/opt/fedseal",
    "/tmp",
)
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """compose.yaml as YAML data, before interpolation (what the schema describes)."""
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` substitution, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
            current = variables.get(name)
            if operator and operator.endswith("?") and not current:
                raise KeyError(f"compose needs ${name}: {argument}")
            if operator and operator.endswith("-") and not current:
                return argument
            return current or ""

        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    return value


def service_order(services: Mapping[str, Any]) -> list[str]:
    """Services in an order where each comes after everything it depends on."""
    ordered: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in trail:
            raise ValueError(f"dependency cycle: {' -> '.join((*trail, name))}")
        for dependency in services[name].get("depends_on", {}) or {}:
            visit(dependency, (*trail, name))
        ordered.append(name)

    for name in services:
        visit(name, ())
    return ordered


@dataclass
class LocalService:
    """One compose service, localised: what to run, with which environment."""

    name: str
    command: list[str]
    environment: dict[str, str]
    healthcheck: list[str] | None
    home: Path


@dataclass
class LocalStack:
    """compose.yaml's services mapped onto folders under `root` and ports on 127.0.0.1."""

    root: Path
    addresses: dict[str, str]
    """Rewrites of addresses, e.g. ``{"superlink:9093": "127.0.0.1:40123"}``."""
    variables: dict[str, str] = field(default_factory=dict)
    """Values for compose's `${...}` interpolation."""
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per service, environment values to change (as `docker compose run -e` would)."""
    compose: dict[str, Any] = field(init=False)
    _built: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.compose = interpolate(load_compose(), self.variables)

    @property
    def services(self) -> dict[str, Any]:
        return self.compose["services"]

    def volume_dir(self, volume: str) -> Path:
        path = self.root / "volumes" / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def filesystem(self, service: str) -> Path:
        """The service's own file tree: its mounts are links to the volumes' folders.

        Like a container, a service sees the project at /opt/fedseal, its own /tmp, each volume
        at its mount target, and each config or bind-mounted file (rewritten for it) at its
        target; everything else under the container roots is an empty folder of its own.
        """
        fs = self.root / "fs" / service
        if service in self._built:
            return fs
        self._built.add(service)
        spec = self.services[service]
        for container_root in CONTAINER_ROOTS:
            (fs / container_root.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self._link(fs, IMAGE_PROJECT, REPO)
        files: dict[str, Path] = {}
        for mount in spec.get("volumes", []) or []:
            source, target = mount.split(":")[:2]
            if source.startswith("."):
                files[target] = REPO / source
            else:
                self._link(fs, target, self.volume_dir(source))
        for config in spec.get("configs", []) or []:
            files[config["target"]] = REPO / self.compose["configs"][config["source"]]["file"]
        for target, source_file in files.items():
            local = fs / target.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(self.rewrite(service, source_file.read_text("utf-8")), "utf-8")
        return fs

    def local_path(self, service: str, container_path: str) -> Path:
        """Where `container_path` of the service is on this machine."""
        return self.filesystem(service) / container_path.lstrip("/")

    def _link(self, fs: Path, target: str, to: Path) -> None:
        link = fs / target.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_dir() and not link.is_symlink():
            link.rmdir()
        if not link.is_symlink():
            link.symlink_to(to, target_is_directory=True)

    def rewrite(self, service: str, text: str) -> str:
        """`text` with this service's container paths and the stack's addresses made local."""
        fs = self.filesystem(service)
        alternatives = "|".join(
            re.escape(p) for p in sorted(CONTAINER_ROOTS, key=len, reverse=True)
        )
        pattern = re.compile(rf"(?<![\w/.-])({alternatives})(?=[/\"';:\s,]|$)")
        text = pattern.sub(lambda match: str(fs) + match.group(1), text)
        for address, local in self.addresses.items():
            text = text.replace(address, local)
        return text

    def _dir(self, kind: str, service: str) -> Path:
        path = self.root / kind / service
        path.mkdir(parents=True, exist_ok=True)
        return path

    def local(self, service: str) -> LocalService:
        """The service's command, environment and health check, with everything made local."""
        spec = self.services[service]
        command = [self.rewrite(service, str(part)) for part in _as_list(spec["command"])]
        command[0] = executable(command[0])
        home = self._dir("home", service)
        environment = {**os.environ, **IMAGE_ENV, "HOME": str(home)}
        for key, value in (spec.get("environment") or {}).items():
            environment[key] = self.rewrite(service, str(value))
        environment.update(self.overrides.get(service, {}))
        health = spec.get("healthcheck", {}).get("test")
        healthcheck = None
        if health:
            parts = _as_list(health)
            if parts[0] in ("CMD", "CMD-SHELL"):
                parts = parts[1:] if parts[0] == "CMD" else ["/bin/sh", "-c", parts[1]]
            healthcheck = [self.rewrite(service, str(part)) for part in parts]
            healthcheck[0] = executable(healthcheck[0])
        return LocalService(service, command, environment, healthcheck, home)


def _as_list(value: Any) -> list[str]:
    return [str(part) for part in value] if isinstance(value, list) else ["/bin/sh", "-c", value]


def executable(name: str) -> str:
    """A command of the image, found in this environment (python is this interpreter)."""
    if name == "python":
        return sys.executable
    if os.path.isabs(name):
        return name
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def run_healthcheck(service: LocalService, timeout_s: float = 15.0) -> bool:
    """Run the service's compose health check once; True when it passes."""
    assert service.healthcheck is not None
    try:
        done = subprocess.run(
            service.healthcheck,
            env=service.environment,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0
