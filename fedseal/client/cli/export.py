"""`fl-client --site NAME export [--run ID] --out DIR`: the run's global adapter as a PEFT
adapter folder with its model card (`fedseal.client.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.client.cli.command import Command, say

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["EXPORT"]


def _add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        parser.add_argument(
            "--run",
            metavar="ID",
            help="(export, audit-privacy) the Flower run id, as the site keeps it under "
            "STATE_DIR/runs/ "
            "(default: the run this site applied an aggregate of last)",
        ),
        parser.add_argument(
            "--out",
            type=Path,
            metavar="DIR",
            help="(export) the folder to create: adapter_config.json, "
            "adapter_model.safetensors and README.md (the model card); it must not exist",
        ),
    ]


def _export(config: SiteConfig, args: argparse.Namespace) -> int:
    from fedseal.client.export import ExportError, export_run

    if args.out is None:
        raise UserError("export needs --out DIR, a folder that does not exist yet")
    try:
        exported = export_run(config, args.out, args.run)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    say(
        f"site {config.site.name}: exported run {exported.run_id} (round "
        f"{exported.applied_round}, digest {exported.adapter_digest[:12]}) to {exported.folder}; "
        f"model card {exported.card}"
    )
    print(exported.folder, flush=True)
    return ExitCode.OK


EXPORT = Command(
    name="export",
    help="export --out DIR: write a completed run's global adapter as a PEFT adapter folder "
    "(PeftModel.from_pretrained loads it) with its model card",
    add_arguments=_add_arguments,
    run=_export,
)
