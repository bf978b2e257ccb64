"""The settings of one federated run, as the ServerApp receives them in Flower's run config.

Validated once at the start of the run; a bad value stops the run before any site trains, with a
message that names the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fedseal.contract.limits import DEFAULT_CONTROL_BYTES, DEFAULT_KEY_ROUNDS, MAX_KEY_ROUNDS
from fedseal.contract.run_plan import RunPlan
from fedseal.coordinator.errors import CoordinatorError
from fedseal.secure_agg.params import MAX_SITES, SPARSE_ABOVE

__all__ = [
    "DEFAULT_KEY_ROUNDS",
    "PROTOCOL_MODES",
    "RunSettings",
    "RunSettingsError",
    "default_run_config",
]

PROTOCOL_MODES = ("he+ss", "he", "plain")
DEFAULT_MODE = "he+ss"


class RunSettingsError(CoordinatorError, ValueError):
    """A run config value that cannot be used."""


@dataclass(frozen=True)
class RunSettings:
    """Everything the coordinator needs to drive one run."""

    database_url: str
    scenario: str
    mode: str
    rounds: int
    min_sites: int
    sites_per_round: int
    min_participants: int
    round_timeout_s: float
    wait_for_sites_s: float
    clip: float
    plan: RunPlan
    coordinator_state: str = ""
    """The coordinator's state folder: its ledger key (keys/ledger.key) countersigns every entry
    of the registry's ledger chain."""
    resume_run: int = 0
    """The registry run this run continues (its coordinator stopped mid-run); 0 for a new run."""
    registry_retry_s: float = 600.0
    """How long the coordinator waits for an unavailable registry database before failing."""
    max_upload_bytes: int = 0
    """Largest train reply (an update) accepted from a site; 0 derives it from the adapter."""
    max_reply_bytes: int = DEFAULT_CONTROL_BYTES
    """Largest reply accepted at every other stage; larger ones fail their site for the round."""
    sparse_above: int = SPARSE_ABOVE
    """he+ss runs of more than this many sites mask and share over a SecAgg+ neighbour graph
    instead of all pairs (docs/protocol.md, "Large federations"); 0 uses a graph at any size
    where one is smaller than all pairs, a number at or above the federation's size never."""
    max_colluding: int = -1
    """Sites that may collude with the coordinator while each other site's update stays hidden;
    the Shamir threshold is then k > (n + c) / 2. -1: a minority, (n - 1) // 2 of the run's n
    sites (docs/protocol.md, "Threat model"). Sites refuse rounds below their manifest's bound."""
    neighbours: int = 0
    """The neighbour graph's degree (even, at least 2); 0 lets the planner size it for the
    default collusion and dropout bounds."""
    key_rounds: int = DEFAULT_KEY_ROUNDS
    """he+ss: rounds whose keys one advertise and one share stage make at once (fresh keys per
    round, each round's messages bound to it); the batch's later rounds send four messages a
    site instead of six. 1 keys every round on its own."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_run_config(cls, config: Any) -> RunSettings:
        def get(key: str) -> Any:
            if key not in config:
                raise RunSettingsError(f"run config is missing {key!r}")
            return config[key]

        try:
            plan = RunPlan.from_config(
                {
                    "base-model": get("base-model"),
                    "labels": get("labels"),
                    "lora-rank": get("lora-rank"),
                    "lora-alpha": get("lora-alpha"),
                    "lora-dropout": get("lora-dropout"),
                    "seed": get("seed"),
                    "steps": get("steps"),
                    "learning-rate": get("learning-rate"),
                    "max-length": get("max-length"),
                    "rounds": get("rounds"),
                    "adapter": get("adapter"),
                }
            )
            settings = cls(
                database_url=str(get("database")),
                scenario=str(get("scenario")),
                mode=str(get("mode")),
                rounds=int(get("rounds")),
                min_sites=int(get("min-sites")),
                sites_per_round=int(get("sites-per-round")),
                min_participants=int(get("min-participants")),
                round_timeout_s=float(get("round-timeout")),
                wait_for_sites_s=float(get("wait-for-sites")),
                clip=float(get("clip")),
                plan=plan,
                coordinator_state=str(get("coordinator-state")),
                resume_run=int(config.get("resume-run", 0)),
                registry_retry_s=float(config.get("registry-retry", 600.0)),
                max_upload_bytes=int(config.get("max-upload-bytes", 0)),
                max_reply_bytes=int(config.get("max-reply-bytes", DEFAULT_CONTROL_BYTES)),
                sparse_above=int(config.get("sparse-above", SPARSE_ABOVE)),
                neighbours=int(config.get("neighbours", 0)),
                max_colluding=int(config.get("max-colluding", -1)),
                key_rounds=int(config.get("key-rounds", DEFAULT_KEY_ROUNDS)),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise RunSettingsError(f"invalid run config: {exc}") from None
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.mode not in PROTOCOL_MODES:
            raise RunSettingsError(
                f"mode {self.mode!r} is not available (available: {', '.join(PROTOCOL_MODES)})"
            )
        if not 1 <= self.rounds <= 100_000:
            raise RunSettingsError("rounds must be between 1 and 100000")
        if self.min_sites < 1 or self.min_participants < 1:
            raise RunSettingsError("min-sites and min-participants must be at least 1")
        if self.sites_per_round < 0:
            raise RunSettingsError("sites-per-round must be 0 (all) or positive")
        if self.round_timeout_s <= 0 or self.wait_for_sites_s <= 0:
            raise RunSettingsError("round-timeout and wait-for-sites must be positive")
        if not 0 < self.clip < 1e6:
            raise RunSettingsError("clip must be positive (the largest |change| per coordinate)")
        if self.resume_run < 0:
            raise RunSettingsError("resume-run must be 0 (a new run) or a registry run id")
        if not 0 <= self.max_upload_bytes < 2**32:
            raise RunSettingsError("max-upload-bytes must be 0 (from the adapter size) to 4 GiB")
        if not 1024 <= self.max_reply_bytes < 2**32:
            raise RunSettingsError("max-reply-bytes must be between 1024 bytes and 4 GiB")
        if not 0 <= self.sparse_above <= MAX_SITES:
            raise RunSettingsError(
                f"sparse-above must be between 0 (a neighbour graph at any size) and {MAX_SITES}"
            )
        if not -1 <= self.max_colluding < MAX_SITES:
            raise RunSettingsError("max-colluding must be -1 (a minority of the sites) or >= 0")
        if self.neighbours != 0 and not (
            2 <= self.neighbours <= MAX_SITES and self.neighbours % 2 == 0
        ):
            raise RunSettingsError(
                "neighbours must be 0 (sized by the planner) or an even degree of at least 2"
            )
        if not 1 <= self.key_rounds <= MAX_KEY_ROUNDS:
            raise RunSettingsError(
                f"key-rounds must be between 1 (every round keyed on its own) and {MAX_KEY_ROUNDS}"
            )
        if not 0 <= self.registry_retry_s <= 86_400:
            raise RunSettingsError("registry-retry must be between 0 and 86400 seconds")
        if not self.coordinator_state:
            raise RunSettingsError(
                "coordinator-state must name the coordinator's state folder (its ledger key "
                "signs the ledger)"
            )

    def public_summary(self) -> dict[str, Any]:
        """What the registry keeps about the run (no database URL: it may hold a password)."""
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "rounds": self.rounds,
            "min_sites": self.min_sites,
            "sites_per_round": self.sites_per_round,
            "min_participants": self.min_participants,
            "round_timeout_s": self.round_timeout_s,
            "clip": self.clip,
            "sparse_above": self.sparse_above,
            "neighbours": self.neighbours,
            "max_colluding": self.max_colluding,
            "key_rounds": self.key_rounds,
            "base_model": self.plan.base_model,
            "labels": list(self.plan.labels),
            "lora_rank": self.plan.lora_rank,
            "lora_alpha": self.plan.lora_alpha,
            "steps": self.plan.steps,
            "learning_rate": self.plan.learning_rate,
            "max_length": self.plan.max_length,
            "seed": self.plan.seed,
            "adapter": str(self.plan.adapter),
        }


def default_run_config(
    *, database_url: str, scenario: str, labels: list[str], **overrides: Any
) -> dict[str, Any]:
    """A complete run config with fedseal's defaults; keys use Flower's dashed style."""
    config: dict[str, Any] = {
        "database": database_url,
        "coordinator-state": "",
        "resume-run": 0,
        "registry-retry": 600.0,
        "max-upload-bytes": 0,
        "max-reply-bytes": DEFAULT_CONTROL_BYTES,
        "sparse-above": SPARSE_ABOVE,
        "neighbours": 0,
        "max-colluding": -1,
        "key-rounds": DEFAULT_KEY_ROUNDS,
        "scenario": scenario,
        "mode": DEFAULT_MODE,
        "clip": 0.5,
        "rounds": 3,
        "min-sites": 3,
        "sites-per-round": 0,
        "min-participants": 1,
        "round-timeout": 600.0,
        "wait-for-sites": 300.0,
        "base-model": "minilm-l6",
        "labels": json.dumps(labels),
        "lora-rank": 8,
        "lora-alpha": 16.0,
        "lora-dropout": 0.0,
        "seed": 0,
        "steps": 30,
        "learning-rate": 0.005,
        "max-length": 32,
        # the library default; fl-demo and fl-coordinator start-run choose the regime's adapter
        "adapter": "lora",
    }
    for key, value in overrides.items():
        dashed = key.replace("_", "-")
        if dashed not in config:
            raise RunSettingsError(f"unknown run setting {key!r}")
        config[dashed] = value
    return config
