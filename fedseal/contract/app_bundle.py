"""The Flower App that carries a fedseal run: a `pyproject.toml` naming fedseal's installed
ServerApp and ClientApp, with the run's settings as its config, and no code of its own.

The coordinator writes it to submit a run; every site rebuilds it from the run config a bundle
states and refuses any bundle that differs (`fedseal.client.app_pin`): this file is the one
definition both read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

__all__ = ["CLIENT_APP", "SERVER_APP", "write_app"]

SERVER_APP = "fedseal.coordinator.server_app:app"
CLIENT_APP = "fedseal.client.client_app:app"


def write_app(folder: Path, run_config: Mapping[str, Any]) -> Path:
    """A Flower App folder whose run config is `run_config`."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "fedseal-run",
            "version": "1.0.0",
            "description": "A fedseal federated LoRA fine-tuning run",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedseal",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": dict(run_config),
                }
            }
        },
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return folder
