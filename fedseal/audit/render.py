"""The report's three formats, from `report_data.build_report`'s data.

- HTML: one self-contained page (inline CSS, the chart as a base64 PNG, no script, no external
  URL), also what `fl-audit serve` answers with. Everything from the database is escaped.
- JSON: the report data as is, for machines.
- CSV: one row per privacy-ledger entry with its verification status, for spreadsheets.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from fedseal.contract import ledger_codec
from fedseal.privacy.membership import MembershipAudit

from .audit_check import figures_text
from .chart import epsilon_chart_png, png_data_uri

__all__ = ["CSV_COLUMNS", "render_csv", "render_html", "render_json"]

_SIGNED = ledger_codec.STATEMENT_FIELDS
_MECHANISM = _SIGNED[_SIGNED.index("flower_run_id") : _SIGNED.index("budget")]
"""The statement's fields from the Flower run id to the cumulative ε, in the statement's order."""

CSV_COLUMNS = (
    "entry",
    "seq",
    "site",
    "run_id",
    *_MECHANISM,
    "epsilon_round_recomputed",
    "epsilon_cumulative_recomputed",
    "epsilon_cumulative_dp_accounting_rdp",
    "epsilon_cumulative_dp_accounting_pld",
    *_SIGNED[_SIGNED.index("budget") :],
    "created_at",
    "verification",
    "findings",
)


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_csv(report: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in report["entries"]:
        row = dict(entry)
        row["verification"] = "pass" if entry["verified"] else "fail"
        row["findings"] = "; ".join(entry["findings"])
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; }
.meta { color: #555; font-size: 0.9em; }
.verdict { padding: 0.8em 1em; border-radius: 6px; font-size: 1.2em; font-weight: 600; }
.pass { background: #e3f4e1; border: 1px solid #5a9e52; }
.fail { background: #fbe3e1; border: 1px solid #c0392b; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2d7a25; font-weight: 600; }
.bad { color: #b03020; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ddd; }
code, .finding { font-family: ui-monospace, monospace; font-size: 0.85em; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _eps(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:.4f}"
    return _e(value)


def _rounds(groups: Sequence[Mapping[str, Any]]) -> str:
    if not groups:
        return "none"
    return "; ".join(
        f"run {_e(g['run_id'])}: {', '.join(_e(n) for n in g['rounds'])}" for g in groups
    )


def _mark(ok: bool) -> str:
    return '<span class="ok">pass</span>' if ok else '<span class="bad">FAIL</span>'


def _verdict(report: Mapping[str, Any]) -> str:
    verification = report["verification"]
    counts = verification["counts"]
    entries = counts.get("ledger_chain", 0)
    if verification["passed"]:
        text = f"Verified: PASS. All seven checks hold over {entries} chain entries."
        css = "pass"
    else:
        text = (
            f"Verification FAILED: {len(verification['findings'])} finding(s) over "
            f"{entries} chain entries."
        )
        css = "fail"
    key = verification["coordinator_key"]
    source = {
        "pinned": "pinned by the auditor (--coordinator-key)",
        "chain": "taken from the chain's own chain_started entry (not pinned: this shows the "
        "chain is consistent, not who wrote it)",
        "none": "none usable: countersignatures were not checked",
    }[key["source"]]
    head = verification["head"]
    head_text = (
        "empty chain"
        if head is None
        else f"entry {_e(head['seq'])}, hash <code>{_e(head['entry_hash'])}</code>"
    )
    return (
        f'<div class="verdict {css}">{_e(text)}</div>\n'
        f"<p>Coordinator key: <code>{_e(key['fingerprint'] or 'none')}</code>, {_e(source)}. "
        f"Chain head: {head_text}.</p>\n"
    )


def _site_table(sites: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{_e(s['name'])}</td><td>{_e(s['status'])}</td>"
        f"<td class=num>{_eps(s['budget'])}</td><td class=num>{_eps(s['epsilon_spent'])}</td>"
        f"<td class=num>{_eps(s['remaining'])}</td>"
        f"<td>{_rounds(s['charged'])}</td><td>{_rounds(s['declined'])}</td>"
        f"<td>{_mark(s['verified']) if s['entries'] else 'no entries'}</td>"
        f"<td>{_empirical(s.get('empirical_audit'))}</td></tr>"
        for s in sites
    )
    return (
        "<table><tr><th>site</th><th>status</th><th>budget ε</th><th>ε spent</th>"
        "<th>remaining</th><th>rounds joined (charged)</th><th>rounds declined</th>"
        "<th>entries verified</th><th>empirical audit (membership inference)</th></tr>"
        f"{rows}</table>\n"
    )


_MEMBERSHIP_FIELDS = tuple(field.name for field in dataclasses.fields(MembershipAudit))
"""What `MembershipAudit.as_fields()` holds: a result with all of them is laid out as one
sentence."""


def _empirical(result: Mapping[str, Any] | None) -> str:
    """A site's empirical audit result: a membership-inference attack's AUC and the ε lower
    bound it proves, with the chain entry it is and how it stands against the site's recorded
    ε when it comes from the ledger; any other result as its key/value pairs, or none."""
    if not result:
        return "none"
    if all(isinstance(result.get(key), int | float | str) for key in _MEMBERSHIP_FIELDS):
        try:
            text = _e(figures_text(result))
        except ValueError:
            text = None  # a field that is not a number: shown as it is, below
        if text is not None:
            if "verdict_text" not in result:
                return text
            css = "ok" if result.get("verdict") == "consistent" else "bad"
            if result.get("verdict") == "not comparable":
                css = "meta"
            return (
                f"{text}; run {_e(result.get('run_id'))} round "
                f"{_e(result.get('applied_round'))} ({_e(result.get('entry'))}): "
                f'<span class="{css}">{_e(result["verdict_text"])}</span>'
            )
    return "; ".join(f"{_e(key)}: {_e(value)}" for key, value in result.items())


def _entries_table(site: Mapping[str, Any]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{_e(e['entry'])}</td><td class=num>{_e(e['run_id'])}</td>"
        f"<td class=num>{_e(e['round_number'])}</td><td>{_e(e['status'])}</td>"
        f"<td class=num>{_eps(e['epsilon_round'])}</td>"
        f"<td class=num>{_eps(e['epsilon_cumulative'])}</td>"
        f"<td class=num>{_eps(e['epsilon_cumulative_recomputed'])}</td>"
        f"<td class=num>{_eps(e.get('epsilon_cumulative_dp_accounting_rdp'))}</td>"
        f"<td class=num>{_eps(e.get('epsilon_cumulative_dp_accounting_pld'))}</td>"
        f"<td class=num>{_eps(e['budget'])}</td>"
        f"<td>{_e(e['accountant'])}, σ={_e(e['noise_multiplier'])}, q={_eps(e['sample_rate'])}, "
        f"{_e(e['steps'])} steps, δ={_e(e['delta'])}</td>"
        f"<td>{_mark(e['verified'])}</td></tr>"
        for e in site["entries"]
    )
    return (
        f"<h3>{_e(site['name'])}</h3>\n<table><tr><th>entry</th><th>run</th><th>round</th>"
        "<th>status</th><th>ε round</th><th>ε cumulative</th><th>ε recomputed (Opacus)</th>"
        "<th>dp-accounting RDP</th><th>dp-accounting PLD</th>"
        f"<th>budget</th><th>mechanism</th><th>verified</th></tr>{rows}</table>\n"
    )


def _checks(report: Mapping[str, Any]) -> str:
    verification = report["verification"]
    items = "".join(
        f"<li>{_mark(c['passed'])} {c['number']}. {_e(c['title'])}"
        + (f" ({c['findings']} finding(s))" if c["findings"] else "")
        + "</li>"
        for c in verification["checks"]
    )
    findings = "".join(
        f'<li class="finding">{_e(f["line"])}</li>' for f in verification["findings"]
    )
    return f"<h2>Checks</h2>\n<ul>{items}</ul>\n<h2>Findings</h2>\n" + (
        f"<ol>{findings}</ol>\n" if findings else "<p>None.</p>\n"
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one HTML page that loads nothing from anywhere."""
    sites = report["sites"]
    chart = png_data_uri(epsilon_chart_png(sites, report.get("rounds", ())))
    counts = report["verification"]["counts"]
    count_text = ", ".join(f"{_e(table)} {_e(n)}" for table, n in counts.items())
    runs = "".join(
        f"<tr><td class=num>{_e(r['id'])}</td><td>{_e(r['flower_run_id'])}</td>"
        f"<td>{_e(r['scenario'])}</td><td>{_e(r['mode'])}</td><td>{_e(r['status'])}</td>"
        f"<td class=num>{_e(r['rounds_planned'])}</td></tr>"
        for r in report["runs"]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>fedseal privacy ledger audit</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        "<h1>fedseal privacy ledger audit</h1>\n"
        f'<p class="meta">Registry {_e(report["database"])}; generated '
        f"{_e(report['generated_at'])}; rows checked: {count_text}.</p>\n"
        + _verdict(report)
        + "<h2>Privacy against utility</h2>\n"
        f'<img src="{chart}" alt="Cumulative epsilon per site over the rounds, with each '
        "site's budget as a dashed line, and the global model's test score per round on a "
        'second axis" width="1000" height="560">\n'
        + _site_table(sites)
        + "<h2>Runs</h2>\n<table><tr><th>run</th><th>Flower run id</th><th>scenario</th>"
        f"<th>mode</th><th>status</th><th>rounds planned</th></tr>{runs}</table>\n"
        + _checks(report)
        + "<h2>Ledger entries per site</h2>\n"
        + "".join(_entries_table(site) for site in sites if site["entries"])
        + "</body>\n</html>\n"
    )
