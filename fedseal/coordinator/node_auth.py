"""Registering sites' SuperNode keys with Flower's node authentication (`flwr supernode`).

A SuperLink started with ``--enable-supernode-auth`` accepts only SuperNodes whose public key
was registered through its Control API. The commands (flwr 1.41, checked against its source):

    flwr supernode register KEY.pub CONNECTION --name SITE --format json
        -> {"success": true, "node-id": 123}
    flwr supernode unregister NODE_ID CONNECTION --format json
        -> {"success": true, "node-id": 123}

run with ``FLWR_HOME`` naming the folder whose ``config.toml`` defines CONNECTION. Flower does
not list a node's name or key (``flwr supernode ls`` shows ids and owners only), so the node id
each site got is kept in ``<coordinator state>/flower-nodes.json`` to unregister it later.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from fedseal.coordinator.errors import CoordinatorError

from .flower_app import run_flwr_json

__all__ = [
    "NODES_FILE",
    "NodeAuthError",
    "NodeKeyInUse",
    "forget_node",
    "recorded_node",
    "register_command",
    "register_node",
    "remember_node",
    "unregister_command",
    "unregister_node",
]

NODES_FILE = "flower-nodes.json"


class NodeAuthError(CoordinatorError, RuntimeError):
    """A `flwr supernode` command that failed; the message is one line."""


class NodeKeyInUse(NodeAuthError):
    """Flower already has this SuperNode key registered (under some node id)."""


def register_command(public_key: Path, connection: str, site: str) -> list[str]:
    """`flwr supernode register` for the site's public key (the node is named after the site)."""
    return ["supernode", "register", str(public_key), connection, "--name", site]


def unregister_command(node_id: int, connection: str) -> list[str]:
    """`flwr supernode unregister` of a node id."""
    return ["supernode", "unregister", str(node_id), connection]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_flwr(argv: list[str], flwr_home: Path, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """Run a `flwr ...` command (argv without the executable and `--format json`); its JSON
    answer, or NodeAuthError in one line."""
    what = " ".join(argv[:2])
    try:
        done = run_flwr_json(argv, flwr_home, timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        raise NodeAuthError(f"`flwr {what}` did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise NodeAuthError(f"cannot run `flwr {what}`: {exc}") from None
    if not done.ok:
        # flwr's message starts with "Using SuperLink: ..." lines; the reason is the last one
        text = str(done.answer.get("error-message") or "") or done.stderr + "\n" + done.stdout
        lines = [line for line in text.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit code {done.returncode}"
        # flwr says so only in its message: this is the one place its text is read
        kind = NodeKeyInUse if "already in use" in detail else NodeAuthError
        raise kind(f"`flwr {what}` failed: {_one_line(detail)}")
    return done.answer


def register_node(public_key: Path, connection: str, site: str, flwr_home: Path) -> int:
    """Register the site's SuperNode key with the SuperLink; returns Flower's node id."""
    answer = run_flwr(register_command(public_key, connection, site), flwr_home)
    try:
        return int(answer["node-id"])
    except (KeyError, TypeError, ValueError):
        raise NodeAuthError("`flwr supernode register` answered without a node id") from None


def unregister_node(node_id: int, connection: str, flwr_home: Path) -> None:
    run_flwr(unregister_command(node_id, connection), flwr_home)


def _nodes_path(state_dir: Path) -> Path:
    return Path(state_dir) / NODES_FILE


def _load_nodes(state_dir: Path) -> dict[str, dict[str, Any]]:
    path = _nodes_path(state_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise NodeAuthError(f"{path} is unreadable: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("node_id"), int) for v in raw.values()
    ):
        raise NodeAuthError(f"{path} is not a JSON object of site -> {{node_id, public_key}}")
    return raw


def _save_nodes(state_dir: Path, nodes: dict[str, dict[str, Any]]) -> None:
    path = _nodes_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{NODES_FILE}.{os.getpid()}")
    aside.write_text(json.dumps(nodes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(aside, path)


def remember_node(state_dir: Path, site: str, node_id: int, public_key: Path) -> None:
    """Keep the Flower node id the site's key (its OpenSSH text) was registered under."""
    nodes = _load_nodes(state_dir)
    nodes[site] = {"node_id": node_id, "public_key": _key_text(public_key)}
    _save_nodes(state_dir, nodes)


def recorded_node(state_dir: Path, site: str, public_key: Path | None = None) -> int | None:
    """The node id recorded for the site (and, if given, for exactly this public key)."""
    entry = _load_nodes(state_dir).get(site)
    if entry is None:
        return None
    if public_key is not None and entry.get("public_key") != _key_text(public_key):
        return None
    return int(entry["node_id"])


def _key_text(public_key: Path) -> str:
    parts = public_key.read_text(encoding="ascii", errors="replace").split()
    return " ".join(parts[:2])


def forget_node(state_dir: Path, site: str) -> None:
    nodes = _load_nodes(state_dir)
    if nodes.pop(site, None) is not None:
        _save_nodes(state_dir, nodes)
