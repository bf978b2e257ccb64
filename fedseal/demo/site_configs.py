"""Site config files for a demo federation (one per site, as an institution would write them)."""

from __future__ import annotations

from pathlib import Path

import tomli_w

__all__ = ["write_demo_site_configs"]


def write_demo_site_configs(
    folder: Path,
    *,
    sites: list[str],
    scenario: str,
    seed: int,
    coordinator: str,
    state_root: Path,
    threads: int = 1,
    batch_size: int = 32,
    max_eval_examples: int = 0,
) -> dict[str, Path]:
    """Write `folder/<site>.toml` for each demo site; returns the paths by site."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for site in sites:
        document = {
            "site": {"name": site, "state_dir": str(state_root / site), "device": "auto"},
            "coordinator": {"address": coordinator, "insecure": True, "connect_timeout_s": 60},
            "data": {
                "source": "demo",
                "scenario": scenario,
                "num_sites": len(sites),
                "seed": seed,
            },
            "training": {
                "batch_size": batch_size,
                "threads": threads,
                "max_eval_examples": max_eval_examples,
            },
        }
        path = folder / f"{site}.toml"
        path.write_text(tomli_w.dumps(document), encoding="utf-8")
        paths[site] = path
    return paths
