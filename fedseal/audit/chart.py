"""The report's chart: privacy against utility, round by round.

Left axis: each site's cumulative ε over the ledger's rounds, its budget as a dashed line of the
same colour, so a reader sees at a glance who spent what and how close to the limit. Right axis:
the global model's score on the coordinator's global test set after each round (accuracy, and
AUC where recorded), so the same picture shows what the spend bought. The x axis is the chain's
rounds in order across runs (run 1 round 1, …, run 2 round 1, …), since budgets span runs; a
round without ledger entries has no ε to set against and is not drawn. Rendered with
matplotlib's object API on the Agg canvas (no pyplot global state, so concurrent requests of
`fl-audit serve` cannot mix figures) into PNG bytes without metadata, which the HTML embeds as
base64: the report stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["epsilon_chart_png", "png_data_uri"]

_MAX_TICKS = 24
_MARKERS = "osD^v<>ph*"
"""One marker per site, so sites that spent exactly the same stay visible on top of each other."""


def _round_axis(sites: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    """Distinct (run, round) pairs in the order the chain first records them."""
    entries = sorted(
        (entry for site in sites for entry in site["entries"]),
        key=lambda entry: entry["seq"] if isinstance(entry["seq"], int) else 0,
    )
    axis: list[tuple[Any, Any]] = []
    for entry in entries:
        key = (entry["run_id"], entry["round_number"])
        if key not in axis:
            axis.append(key)
    return axis


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def epsilon_chart_png(
    sites: Sequence[Mapping[str, Any]], rounds: Sequence[Mapping[str, Any]] = ()
) -> bytes:
    """PNG of cumulative ε per round for each site of the report data, budgets dashed, and the
    global test score of each round of `rounds` (the report's `rounds`) on a second axis."""
    figure = Figure(figsize=(10, 5.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axis = _round_axis(sites)
    position = {key: index for index, key in enumerate(axis)}
    for index, site in enumerate(s for s in sites if s["entries"]):
        colour, marker = f"C{index % 10}", _MARKERS[index % len(_MARKERS)]
        points = [
            (position[(e["run_id"], e["round_number"])], _number(e["epsilon_cumulative"]), e)
            for e in site["entries"]
        ]
        points = [(x, y, e) for x, y, e in points if y is not None]
        if not points:
            continue
        axes.plot(
            [x for x, _, _ in points],
            [y for _, y, _ in points],
            color=colour,
            marker=marker,
            markersize=8 - 1.5 * (index % 3),
            label=f"{site['name']} (ε spent)",
        )
        declined = [(x, y) for x, y, e in points if e["status"] == "declined"]
        if declined:
            axes.scatter(
                [x for x, _ in declined],
                [y for _, y in declined],
                color=colour,
                marker="x",
                s=90,
                zorder=3,
                label=f"{site['name']} declined",
            )
        budget = _number(site["budget"])
        if budget is not None:
            axes.axhline(
                budget, color=colour, linestyle="--", linewidth=1.2, label=f"{site['name']} budget"
            )
    scored = _score_axis(axes, position, rounds)
    step = max(1, -(-len(axis) // _MAX_TICKS))
    ticks = list(range(0, len(axis), step))
    axes.set_xticks(ticks, [f"run {axis[i][0]}\nround {axis[i][1]}" for i in ticks], fontsize=8)
    axes.set_xlabel("rounds in ledger order")
    axes.set_ylabel("cumulative ε (solid), budget (dashed)")
    axes.set_title(
        "Privacy against utility: each site's cumulative ε and budget (left), "
        + ("the global model's test score (right)" if scored else "no global test score recorded")
    )
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    if axis:
        handles = [*axes.get_legend_handles_labels()[0], *scored]
        figure.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=4)
    else:
        axes.text(0.5, 0.5, "no privacy ledger entries", ha="center", transform=axes.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


_SCORES = (
    ("global_accuracy", "global test accuracy", "-", "s"),
    ("global_auc", "global test AUC", ":", "^"),
)


def _score_axis(
    axes: Any,
    position: Mapping[tuple[Any, Any], int],
    rounds: Sequence[Mapping[str, Any]],
) -> list[Any]:
    """The global test scores of the rounds on the chart, on a right-hand axis from 0 to 1;
    returns the lines drawn (none when no round on the chart was scored)."""
    lines: list[Any] = []
    right = None
    for key, label, style, marker in _SCORES:
        points = sorted(
            (position[(r["run_id"], r["round_number"])], value)
            for r in rounds
            if (r["run_id"], r["round_number"]) in position
            and (value := _number(r.get(key))) is not None
        )
        if not points:
            continue
        if right is None:
            right = axes.twinx()
            right.set_ylim(0, 1)
            right.set_ylabel("global model's test score (black)")
        (line,) = right.plot(
            [x for x, _ in points],
            [y for _, y in points],
            color="black",
            linestyle=style,
            linewidth=2,
            marker=marker,
            label=label,
        )
        lines.append(line)
    return lines


def png_data_uri(png: bytes) -> str:
    """An inline `data:` URI for an <img>, so the page needs nothing from anywhere else."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
