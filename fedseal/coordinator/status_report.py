"""What `fl-coordinator status` shows: runs, one run's rounds, and each site's ε against budget.

Built from the registry's read API only (no ledger key needed). A site's budget is the latest
`budget_changed` event for it, else the budget its latest ledger entry names; its ε spent is the
cumulative ε of its latest charged ledger entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedseal.coordinator.stage_timing import (
    format_stages,
    read_progress,
    read_stage_summary,
    run_folder,
)

if TYPE_CHECKING:
    from fedseal.registry import Registry, RoundView

__all__ = ["collect_status", "render_status"]


def collect_status(
    registry: Registry, run_id: int | None = None, state: Path | None = None
) -> dict[str, Any]:
    """A JSON-ready summary; ``run_id`` picks the run whose rounds are listed (else the latest).
    With the coordinator's ``state`` directory, also that run's per-stage timings and, while a
    round runs, its stage and answers (`stage_timing`).

    Raises the registry's RecordNotFound for an unknown run id.
    """
    from fedseal.registry import EventAction, PrivacyStatus

    runs = registry.list_runs()
    chosen = registry.get_run(run_id) if run_id is not None else (runs[0] if runs else None)
    rounds = registry.rounds(chosen.id) if chosen is not None else []

    sites: dict[str, dict[str, Any]] = {}

    def site(name: str) -> dict[str, Any]:
        return sites.setdefault(
            name,
            {"status": "registered", "budget": None, "epsilon_spent": None, "rounds_charged": 0},
        )

    for event in registry.events():
        if event.site is None:
            continue
        entry = site(event.site)
        if event.action is EventAction.SITE_ENROLLED and entry["status"] != "revoked":
            entry["status"] = "enrolled"
        elif event.action is EventAction.SITE_REVOKED:
            entry["status"] = "revoked"
        elif event.action is EventAction.BUDGET_CHANGED:
            entry["budget"] = float(event.details["budget"])
            entry["budget_from_event"] = True
    for ledger_entry in registry.privacy_ledger():
        entry = site(ledger_entry.site)
        if not entry.get("budget_from_event"):
            entry["budget"] = ledger_entry.budget
        if ledger_entry.status is PrivacyStatus.CHARGED:
            entry["rounds_charged"] += 1
    for name, entry in sites.items():
        entry.pop("budget_from_event", None)
        entry["epsilon_spent"] = registry.site_epsilon_spent(name)

    folder_known = state is not None and chosen is not None
    return {
        "runs": [
            {
                "id": run.id,
                "flower_run_id": run.flower_run_id,
                "scenario": run.scenario,
                "protocol": run.protocol_mode,
                "status": str(run.status),
                "rounds_completed": run.rounds_completed,
                "rounds_planned": run.rounds_planned,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "error": run.error,
            }
            for run in runs
        ],
        "run": chosen.id if chosen is not None else None,
        "rounds": [
            {
                "number": round_.number,
                "status": str(round_.status),
                "sampled": round_.sampled,
                "participants": round_.participants,
                "dropped": round_.dropped,
                "duration_s": round_.duration_s,
                "accuracy": round_.accuracy,
                "auc": round_.auc,
                "clipped": _clipped(round_),
                "error": round_.error,
            }
            for round_ in rounds
        ],
        "sites": {name: sites[name] for name in sorted(sites)},
        "stages": read_stage_summary(run_folder(state, chosen.id)) if folder_known else [],
        "progress": read_progress(run_folder(state, chosen.id)) if folder_known else None,
    }


def _clipped(round_: RoundView) -> int | None:
    """Update coordinates the round's sites clipped to the plan's bound (None: none reported)."""
    known = [
        c.clipped_coordinates for c in round_.contributions if c.clipped_coordinates is not None
    ]
    return sum(known) if known else None


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return [line(headers).rstrip(), *(line(row).rstrip() for row in rows)]


def _section(title: str, headers: list[str], rows: list[list[str]], *, empty: str) -> list[str]:
    """A titled table, or the one line `empty` when there is nothing to list."""
    return [title, *_table(headers, rows)] if rows else [empty]


def render_status(report: dict[str, Any]) -> str:
    """The summary as plain text tables."""
    out = _section(
        "Runs",
        ["id", "flower id", "scenario", "protocol", "status", "rounds", "started"],
        [
            [
                str(r["id"]),
                _fmt(r["flower_run_id"]),
                r["scenario"],
                r["protocol"],
                r["status"],
                f"{r['rounds_completed']}/{r['rounds_planned']}",
                r["started_at"][:19],
            ]
            for r in report["runs"]
        ],
        empty="Runs: none recorded yet",
    )
    if report["run"] is not None:
        out.append("")
        out.append(f"Rounds of run {report['run']}")
        if report["rounds"]:
            out += _table(
                [
                    "round",
                    "status",
                    "sampled",
                    "joined",
                    "dropped",
                    "seconds",
                    "accuracy",
                    "auc",
                    "clipped",
                ],
                [
                    [
                        str(r["number"]),
                        r["status"],
                        str(r["sampled"]),
                        str(r["participants"]),
                        str(r["dropped"]),
                        _fmt(r["duration_s"], ".1f"),
                        _fmt(r["accuracy"], ".4f"),
                        _fmt(r["auc"], ".4f"),
                        _fmt(r.get("clipped")),
                    ]
                    for r in report["rounds"]
                ],
            )
        else:
            out.append("(no rounds yet)")
        progress = report.get("progress")
        if progress:
            out.append(
                f"Now: round {progress['round']}, {progress['stage']}, "
                f"{progress['answered']} of {progress['sites']} sites answered"
            )
        if report.get("stages"):
            out.append("")
            out.append(
                f"Stages of run {report['run']}, mean over rounds (wait = the coordinator's, "
                "sites = the slowest site's own work, Flower = delivery and ClientApp start)"
            )
            out += format_stages(report["stages"]).splitlines()
    out.append("")
    out += _section(
        "Sites (ε spent of budget)",
        ["site", "status", "ε spent", "budget", "charged rounds"],
        [
            [
                name,
                s["status"],
                _fmt(s["epsilon_spent"], ".4f"),
                _fmt(s["budget"], ".4g"),
                str(s["rounds_charged"]),
            ]
            for name, s in report["sites"].items()
        ],
        empty="Sites: none enrolled yet",
    )
    return "\n".join(out)
