"""`fl-audit`: check a registry's tamper-evident privacy ledger, report on it, or serve the report.

- `verify`: the seven checks of docs/ledger-format.md; prints a summary, every entry's ε by its
  own accountant and by dp-accounting's RDP and PLD, and one line per finding.
- `report`: the same verification plus each site's ε against its budget, as HTML, JSON or CSV.
- `serve`: the HTML report as a read-only web page, recomputed on every request.

Everything opens the database read-only and never migrates it. Exit codes: 0 everything verified,
1 a check failed (the report is still written), 2 a usage error (bad argument, unreadable
database or key file: one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_args import Command, command_parser, run_command
from fedseal.cli_support import ExitCode, UserError, run_cli

if TYPE_CHECKING:
    from .findings import VerifyResult
    from .snapshot import Snapshot

__all__ = ["main"]

PROG = "fl-audit"
DEFAULT_SQLITE = Path("fedseal-demo") / "registry.db"
"""Where fl-demo keeps its registry: the default when neither --database nor the env var is set."""

_EPILOG = (
    "Exit codes: 0 every check holds, 1 a check failed, 2 usage error (bad argument, "
    "unreadable database or key file), 130 interrupted."
)


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="registry database URL (default: $FEDSEAL_DATABASE_URL, else "
        f"./{DEFAULT_SQLITE}); opened read-only",
    )
    parser.add_argument(
        "--coordinator-key",
        metavar="PATH",
        type=Path,
        help="the coordinator's public ledger key, obtained out of band (hex, raw, PEM or DER; "
        "the coordinator writes it as keys/ledger-public-key.hex): countersignatures are "
        "checked against it. Without it, the key named by the chain's first entry is used, "
        "which proves consistency but not who wrote the chain",
    )


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=("html", "json", "csv"))
    parser.add_argument("--out", required=True, type=Path, metavar="PATH", help="file to write")
    _database_options(parser)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    _database_options(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8050, help="port (default 8050; 0 picks a free one)"
    )


def build_parser() -> argparse.ArgumentParser:
    return command_parser(
        PROG,
        "Audit a fedseal registry's privacy ledger: recompute every hash, signature and ε, and "
        "report each site's privacy spend against its budget.",
        _EPILOG,
        COMMANDS,
    )


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _database_url(args: argparse.Namespace) -> str:
    from fedseal.registry.database import resolve_database_url

    return resolve_database_url(args.database, DEFAULT_SQLITE)


def _pinned_key(args: argparse.Namespace) -> bytes | None:
    from .keys import KeyFileError, load_coordinator_key

    if args.coordinator_key is None:
        return None
    try:
        return load_coordinator_key(args.coordinator_key)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None


def _verified(args: argparse.Namespace) -> tuple[Snapshot, VerifyResult]:
    from fedseal.registry.errors import RegistryUnavailable

    from .verify import verify_database

    key = _pinned_key(args)
    try:
        return verify_database(_database_url(args), key)
    except RegistryUnavailable as exc:
        raise UserError(str(exc)) from None


def summary_lines(snapshot: Snapshot, result: VerifyResult) -> list[str]:
    """What `verify` prints: the summary, every entry's ε by both accountants, every site's
    empirical privacy audit, one line per check, then one line per finding."""
    from .audit_check import audit_line
    from .epsilon_table import epsilon_lines
    from .findings import Check, KeySource

    counts = ", ".join(f"{table} {count}" for table, count in result.counts.items())
    sites = ", ".join(result.sites) or "none"
    source = {
        KeySource.PINNED: "pinned with --coordinator-key",
        KeySource.CHAIN: "from the chain's chain_started entry, not pinned: pass "
        "--coordinator-key to rule out a rewritten chain",
        KeySource.NONE: "none usable: countersignatures not checked",
    }[result.key_source]
    head = (
        "empty chain"
        if result.head is None
        else f"entry {result.head[0]}, entry_hash {result.head[1]}"
    )
    lines = [
        f"registry: {snapshot.url}",
        f"rows checked: {counts}",
        f"sites: {len(result.sites)} ({sites}); runs: {result.runs}",
        f"coordinator key: {result.key_fingerprint or 'none'} ({source})",
        f"chain head: {head} (note it: a later truncation shows only against it)",
        *epsilon_lines(snapshot.privacy, result),
        *(audit_line(audit) for audit in result.audits),
    ]
    failed = result.failed_checks()
    for check in Check:
        count = sum(1 for finding in result.findings if finding.check is check)
        verdict = f"FAIL ({count})" if check in failed else "pass"
        lines.append(f"check {int(check)} {check.title}: {verdict}")
    lines += [f"FAIL {finding.line()}" for finding in result.findings]
    lines.append(
        "result: PASS, every check holds"
        if result.ok
        else f"result: FAIL, {len(result.findings)} finding(s)"
    )
    return lines


def _verify(args: argparse.Namespace) -> int:
    snapshot, result = _verified(args)
    for line in summary_lines(snapshot, result):
        print(line, flush=True)
    return ExitCode.OK if result.ok else ExitCode.FAILURE


def _write(path: Path, text: str) -> None:
    """Write the whole file or nothing (temp file in the same folder, then rename)."""
    folder = path.absolute().parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _report(args: argparse.Namespace) -> int:
    from .render import render_csv, render_html, render_json
    from .report_data import build_report

    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file path")
    if not args.out.absolute().parent.is_dir():
        raise UserError(
            f"cannot write {args.out}: folder {args.out.absolute().parent} does not exist"
        )
    snapshot, result = _verified(args)
    data = build_report(snapshot, result)
    render = {"html": render_html, "json": render_json, "csv": render_csv}[args.format]
    _write(args.out, render(data))
    verdict = "PASS" if result.ok else f"FAIL, {len(result.findings)} finding(s)"
    _say(f"wrote the {args.format} report to {args.out} (verification: {verdict})")
    return ExitCode.OK if result.ok else ExitCode.FAILURE


def _serve(args: argparse.Namespace) -> int:
    from fedseal.registry.errors import RegistryUnavailable

    from .serve import make_page, make_server

    if not 0 <= args.port < 65536:
        raise UserError("--port must be between 0 and 65535")
    key = _pinned_key(args)
    try:
        page = make_page(_database_url(args), key)
    except RegistryUnavailable as exc:
        raise UserError(str(exc)) from None
    try:
        server = make_server(args.host, args.port, page)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    _say(f"serving the audit page on http://{shown}:{port}/ (read-only; Ctrl-C to stop)")

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _say("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return ExitCode.OK


COMMANDS = (
    Command(
        name="verify",
        help="run the seven checks of docs/ledger-format.md",
        description="Check the ledger chain, the sites' and the coordinator's signatures, every "
        "ε, the budgets, the contributions, the enrolled keys and the sites' privacy audit "
        "statements (an attack's ε lower bound above the site's recorded ε is a finding). "
        "Prints a summary and one line per failure naming the entry, the field, and what was "
        "expected and found.",
        add_arguments=_database_options,
        run=_verify,
    ),
    Command(
        name="report",
        help="write the audit report (html, json or csv)",
        description="Verify, then write each site's ε spent per round against its budget, the "
        "rounds it joined or declined and the verification result. html: one self-contained "
        "page with a chart; json: the same data; csv: one row per ledger entry.",
        add_arguments=_report_arguments,
        run=_report,
        epilog=_EPILOG + " The report is written in both cases 0 and 1.",
    ),
    Command(
        name="serve",
        help="serve the HTML report as a read-only web page",
        description="Serve the HTML report on GET /, verified afresh on every request; any "
        "other method is refused (405). Runs until Ctrl-C.",
        add_arguments=_serve_arguments,
        run=_serve,
        epilog="Exit codes: 0 stopped, 2 usage error (bad argument, unreadable database, "
        "address in use).",
    ),
)


def _main(argv: Sequence[str] | None) -> int:
    return run_command(COMMANDS, build_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
