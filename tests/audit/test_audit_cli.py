"""fl-audit as a user runs it: help that matches the options, exit codes 0/1/2, one-line
errors without tracebacks, reports in three formats, a GET-only page, and no writes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_ledger import (
    DELTA,
    NOISE,
    PRIVACY_IDS,
    SAMPLE_RATE,
    STEPS,
    Ledger,
    build_ledger,
    mechanism,
    statement,
)
from sqlalchemy import create_engine

from fedseal.audit.render import CSV_COLUMNS
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.privacy.second_opinion import second_opinion
from fedseal.registry.engine import normalise_url
from fedseal.registry.migrate import current_revision

FL_AUDIT = str(Path(sys.executable).with_name("fl-audit"))


def fl_audit(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "FEDSEAL_DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [FL_AUDIT, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=180,
        check=False,
    )


def _db(ledger: Ledger) -> Path:
    return Path(normalise_url(ledger.url).database)


def _tampered(ledger: Ledger, tmp_path: Path, sql: str) -> str:
    copy = tmp_path / "tampered.db"
    shutil.copyfile(_db(ledger), copy)
    with sqlite3.connect(copy) as connection:
        connection.execute(sql)
    return f"sqlite:///{copy}"


def _key_file(ledger: Ledger, tmp_path: Path) -> Path:
    path = tmp_path / "ledger-public-key.hex"
    path.write_text(ledger.coordinator_public.hex() + "\n")
    return path


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ((), ("verify", "report", "serve", "Exit codes")),
        (("verify",), ("--database", "--coordinator-key", "FEDSEAL_DATABASE_URL", "Exit codes")),
        (("report",), ("--format", "html,json,csv", "--out", "--database", "--coordinator-key")),
        (("serve",), ("--database", "--host", "127.0.0.1", "--port", "8050", "405")),
    ],
)
def test_help_lists_what_each_command_takes(command: tuple[str, ...], options: tuple[str, ...]):
    result = fl_audit(*command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in options:
        assert option in text, option


def test_help_options_are_the_parser_options() -> None:
    """--help is generated from the parser: every option it names is accepted."""
    from fedseal.audit.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"verify", "report", "serve"}
    for name, subparser in commands.items():
        flags = {flag for action in subparser._actions for flag in action.option_strings}
        shown = fl_audit(name, "--help").stdout
        assert all(flag in shown for flag in flags), name


# -- verify ----------------------------------------------------------------------------------


def test_verify_passes_and_prints_the_summary(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    result = fl_audit("verify", "--database", sqlite_ledger.url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "rows checked: ledger_chain 28, privacy_ledger 15, events 13, contributions 15" in out
    assert "sites: 4 (hospital_a, hospital_b, hospital_c, hospital_d); runs: 3" in out
    assert "from the chain's chain_started entry, not pinned" in out
    assert "chain head: entry 28" in out
    checks = [line for line in out.splitlines() if line.startswith("check ")]
    assert len(checks) == 7 and all(line.endswith(": pass") for line in checks)
    assert out.rstrip().endswith("result: PASS, every check holds")
    table = _epsilon_table(out)
    assert set(table) == {f"privacy_ledger#{row_id}" for row_id in PRIVACY_IDS}
    for recorded, recomputed, rdp, pld in table.values():
        assert recorded == recomputed  # printed to 6 decimals
        assert rdp == pytest.approx(recorded, rel=1e-3)  # dp-accounting's RDP at Opacus' orders
        assert 0.8 * recorded < pld < recorded  # the tight bound, below RDP
    assert table["privacy_ledger#24"][0] == 5.171709  # hospital_a after six rounds
    pinned = fl_audit(
        "verify",
        "--database",
        sqlite_ledger.url,
        "--coordinator-key",
        str(_key_file(sqlite_ledger, tmp_path)),
    )
    assert pinned.returncode == 0
    assert "(pinned with --coordinator-key)" in pinned.stdout


def test_verify_reads_the_url_from_the_environment(sqlite_ledger: Ledger, tmp_path: Path):
    result = fl_audit("verify", cwd=tmp_path, env={"FEDSEAL_DATABASE_URL": sqlite_ledger.url})
    assert result.returncode == 0
    assert f"registry: {sqlite_ledger.url}" in result.stdout


def test_verify_defaults_to_the_demo_registry(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    missing = fl_audit("verify", cwd=tmp_path)
    assert missing.returncode == 2
    assert "fedseal-demo/registry.db" in missing.stderr
    (tmp_path / "fedseal-demo").mkdir()
    shutil.copyfile(_db(sqlite_ledger), tmp_path / "fedseal-demo" / "registry.db")
    assert fl_audit("verify", cwd=tmp_path).returncode == 0


def test_verify_fails_with_one_line_per_finding(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    url = _tampered(
        sqlite_ledger, tmp_path, "UPDATE privacy_ledger SET max_grad_norm = 1.5 WHERE id = 12"
    )
    result = fl_audit("verify", "--database", url)
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    assert failures and all("privacy_ledger#12 " in line for line in failures)
    assert any("expected" in line and "found" in line for line in failures)
    assert "check 1 chain" in result.stdout and "FAIL (" in result.stdout
    assert result.stdout.rstrip().endswith(f"result: FAIL, {len(failures)} finding(s)")
    assert result.stderr == ""


def _epsilon_table(out: str) -> dict[str, tuple[float, ...]]:
    """verify's ε table: entry -> (recorded, recomputed, dp-accounting RDP, dp-accounting PLD)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("epsilon per entry"))
    header = lines[start + 1].split()
    assert header[:1] == ["entry"] and header[-6:] == [
        "recorded",
        "recomputed",
        "dp-acc",
        "RDP",
        "dp-acc",
        "PLD",
    ]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("  privacy_ledger#"):
            break
        cells = line.split()
        rows[cells[0]] = tuple(float(cell) for cell in cells[-4:])
    return rows


def test_verify_names_an_epsilon_below_the_pld_bound(sqlite_ledger: Ledger) -> None:
    """A signed, chained entry whose cumulative ε is below dp-accounting's PLD bound: verify
    shows both accountants' figures for it and fails it on check 3 alone."""
    history = [DpEvent(NOISE, SAMPLE_RATE, STEPS)] * 7  # hospital_a's six rounds, and this one
    low = 0.9 * second_opinion(history, DELTA).pld
    with sqlite_ledger.open() as registry:
        run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="he+ss",
            config={},
            rounds_planned=1,
            flower_run_id=8100,
        )
        entry_id = registry.record_privacy(
            **statement(
                registry,
                sqlite_ledger.site_keys["hospital_a"],
                run_id=run_id,
                round_number=1,
                status="charged",
                **mechanism(),
                epsilon_round=epsilon_of(history[:1], DELTA, Accountant.RDP),
                epsilon_cumulative=low,
                budget=10.0,
                update_digest="",
            )
        )
    result = fl_audit("verify", "--database", sqlite_ledger.url)
    assert result.returncode == 1 and result.stderr == ""
    recorded, recomputed, rdp, pld = _epsilon_table(result.stdout)[f"privacy_ledger#{entry_id}"]
    assert recorded == round(low, 6) and recorded < pld < recomputed
    assert rdp == pytest.approx(recomputed, rel=1e-3)
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    assert all(
        line.startswith(f"FAIL privacy_ledger#{entry_id} epsilon_cumulative") for line in failures
    )
    assert any("dp-accounting's PLD bound" in line for line in failures)
    assert "check 3 epsilon" in result.stdout and "check 1 chain" in result.stdout
    assert [line for line in result.stdout.splitlines() if "FAIL (" in line] == [
        line for line in result.stdout.splitlines() if line.startswith("check 3 ")
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database", "sqlite:///{tmp}/nothing-here.db"], "no such file"),
        (["--database", "nosuchdialect://x"], "nosuchdialect"),
        (["--database", "not a url"], "not a valid database URL"),
        (["--database", "postgresql://auditor:s3cret@127.0.0.1:1/registry"], "unavailable"),
        (["--database", "sqlite:///{tmp}/notes.txt"], "unavailable"),
        (["--database", "sqlite:///{tmp}/old.db"], "no ledger chain here"),
        (["--coordinator-key", "{tmp}/no-key.hex"], "cannot read coordinator key file"),
        (["--coordinator-key", "{tmp}/notes.txt"], "holds no Ed25519 public key"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], message: str, sqlite_ledger: Ledger, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a database, not a key\n")
    sqlite3.connect(tmp_path / "old.db").execute(
        "CREATE TABLE sites (id INTEGER)"
    ).connection.commit()
    args = [arg.format(tmp=tmp_path) for arg in args]
    if "--database" not in args:
        args += ["--database", sqlite_ledger.url]
    for command in (["verify"], ["report", "--format", "json", "--out", str(tmp_path / "r.json")]):
        result = fl_audit(*command, *args)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fl-audit: error: ")
        assert message in lines[0]
        assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_argument_errors_exit_2(tmp_path: Path) -> None:
    assert fl_audit().returncode == 2
    assert fl_audit("audit-everything").returncode == 2
    assert fl_audit("report", "--format", "pdf", "--out", "x").returncode == 2
    assert fl_audit("report", "--format", "html").returncode == 2  # --out is required
    result = fl_audit("report", "--format", "html", "--out", str(tmp_path / "no" / "r.html"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_verify_and_report_never_write_the_database(sqlite_ledger: Ledger, tmp_path: Path):
    database = _db(sqlite_ledger)
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('0002')")
    assert fl_audit("verify", "--database", sqlite_ledger.url).returncode == 0
    out = tmp_path / "r.html"
    assert (
        fl_audit(
            "report", "--format", "html", "--out", str(out), "--database", sqlite_ledger.url
        ).returncode
        == 0
    )
    assert fl_audit("verify", "--database", f"sqlite:///{old}").returncode == 2
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    engine = create_engine(f"sqlite:///{old}")
    with engine.connect() as connection:
        assert current_revision(connection) == "0002"  # not migrated
    engine.dispose()


# -- report ----------------------------------------------------------------------------------


def _report(ledger_url: str, fmt: str, tmp_path: Path, *extra: str) -> tuple[int, str]:
    out = tmp_path / f"report.{fmt}"
    result = fl_audit(
        "report", "--format", fmt, "--out", str(out), "--database", ledger_url, *extra
    )
    assert f"wrote the {fmt} report to {out}" in result.stdout, result.stderr
    return result.returncode, out.read_text(encoding="utf-8")


def test_json_report_holds_each_sites_spend(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    code, text = _report(sqlite_ledger.url, "json", tmp_path)
    assert code == 0
    report = json.loads(text)
    assert report["format"] == "fedseal-audit-report/1"
    assert report["verification"]["passed"] is True
    assert [c["passed"] for c in report["verification"]["checks"]] == [True] * 7
    sites = {site["name"]: site for site in report["sites"]}
    assert set(sites) == {"hospital_a", "hospital_b", "hospital_c", "hospital_d"}
    b = sites["hospital_b"]
    assert b["budget"] == 3.5
    assert b["charged"] == [{"run_id": 1, "rounds": [1, 2]}]
    assert b["declined"] == [{"run_id": 1, "rounds": [3]}, {"run_id": 2, "rounds": [1, 2, 3]}]
    a = sites["hospital_a"]
    assert a["charged"] == [{"run_id": 1, "rounds": [1, 2, 3]}, {"run_id": 2, "rounds": [1, 2, 3]}]
    assert a["epsilon_spent"] == a["entries"][-1]["epsilon_cumulative"]
    assert a["epsilon_spent"] == pytest.approx(a["epsilon_spent_recomputed"], rel=1e-9)
    assert a["remaining"] == pytest.approx(10.0 - a["epsilon_spent"])
    assert sites["hospital_c"]["status"] == "revoked" and not sites["hospital_d"]["entries"]
    assert len(report["entries"]) == 15 and all(e["verified"] for e in report["entries"])


def test_csv_report_has_one_row_per_entry(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    url = _tampered(sqlite_ledger, tmp_path, "UPDATE privacy_ledger SET budget = 3.6 WHERE id = 12")
    code, text = _report(url, "csv", tmp_path)
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 15
    verdicts = {row["entry"]: row["verification"] for row in rows}
    assert verdicts.pop("privacy_ledger#12") == "fail"
    assert set(verdicts.values()) == {"pass"}
    (bad,) = [row for row in rows if row["entry"] == "privacy_ledger#12"]
    assert "privacy_ledger#12" in bad["findings"] and bad["budget"] == "3.6"


def test_html_report_is_self_contained(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    code, page = _report(sqlite_ledger.url, "html", tmp_path)
    assert code == 0
    assert page.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in page
    for external in ("http://", "https://", "//cdn", "<script", "<link", "@import", "url("):
        assert external not in page
    assert "Verified: PASS" in page
    for site in ("hospital_a", "hospital_b", "hospital_c"):
        assert site in page


def test_html_report_of_a_tampered_ledger_says_so(sqlite_ledger: Ledger, tmp_path: Path):
    url = _tampered(
        sqlite_ledger, tmp_path, "UPDATE privacy_ledger SET epsilon_round = 0.5 WHERE id = 10"
    )
    code, page = _report(url, "html", tmp_path)
    assert code == 1
    assert "Verification FAILED" in page and "privacy_ledger#10 epsilon_round" in page


# -- serve -----------------------------------------------------------------------------------


@pytest.fixture
def served(sqlite_ledger: Ledger) -> Iterator[str]:
    process = subprocess.Popen(
        [FL_AUDIT, "serve", "--port", "0", "--database", sqlite_ledger.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "serving the audit page on http://127.0.0.1:" in line, process.stderr.read()  # type: ignore[union-attr]
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def _request(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(
        url, method=method, data=b"x" if method in ("POST", "PUT") else None
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_serve_answers_get_with_the_report(served: str) -> None:
    status, headers, body = _request(served)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "Verified: PASS" in body and "hospital_a" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert _request(served + "elsewhere")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"])
def test_serve_refuses_every_other_method(served: str, method: str) -> None:
    status, headers, _body = _request(served, method)
    assert status == 405 and headers["Allow"] == "GET"


def test_serve_recomputes_on_each_request(sqlite_ledger: Ledger, served: str) -> None:
    assert "Verified: PASS" in _request(served)[2]
    with sqlite3.connect(_db(sqlite_ledger)) as connection:
        (first,) = connection.execute("SELECT MIN(id) FROM privacy_ledger").fetchone()
        connection.execute("UPDATE privacy_ledger SET delta = 2e-5 WHERE id = ?", (first,))
    page = _request(served)[2]
    assert "Verification FAILED" in page and f"privacy_ledger#{first} " in page


def test_serve_usage_errors_exit_2(tmp_path: Path) -> None:
    result = fl_audit("serve", "--database", f"sqlite:///{tmp_path}/none.db")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert fl_audit("serve", "--port", "70000", "--database", "x").returncode == 2


def test_postgresql_ledger_verifies_through_the_cli(
    registry_database_url: str, tmp_path: Path
) -> None:
    """Verify and report read a PostgreSQL registry too (run on SQLite as well)."""
    ledger = build_ledger(registry_database_url, tmp_path / "sites")
    result = fl_audit(
        "verify", "--database", ledger.url, "--coordinator-key", str(_key_file(ledger, tmp_path))
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: PASS" in result.stdout
    code, text = _report(ledger.url, "json", tmp_path)
    assert code == 0 and json.loads(text)["verification"]["passed"]
