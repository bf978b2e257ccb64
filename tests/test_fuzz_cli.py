"""Fuzz: the command lines of fl-client, fl-demo, fl-audit and fl-coordinator.

Random and half-right argument lists are parsed (and, for fl-demo and fl-client, validated up to
the point where the command would start doing something): each ends in a parsed namespace, a
`UserError` (one line, exit code 2) or argparse's usage error (exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from fedseal.audit import cli as audit_cli
from fedseal.cli_support import ExitCode, UserError
from fedseal.client import cli as client_cli
from fedseal.coordinator import cli as coordinator_cli
from fedseal.demo import cli as demo_cli

PARSERS = {
    "fl-client": client_cli.build_parser,
    "fl-demo": demo_cli.build_parser,
    "fl-audit": audit_cli.build_parser,
    "fl-coordinator": coordinator_cli.build_parser,
}
NUMBERS = ("0", "-1", "nan", "inf", "-inf", "1e999", "99999999999999999999", "3", "0.5", "x", "")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    found = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                found.update(action.choices)
                stack.extend(action.choices.values())
    return sorted(found - {"-h", "--help"})


def argv_for(parser: argparse.ArgumentParser) -> st.SearchStrategy[list[str]]:
    token = st.one_of(
        st.sampled_from(_options(parser)),
        st.sampled_from(NUMBERS),
        st.text(max_size=12),
        st.sampled_from(("run", "enroll", "verify", "report", "--format=pdf", "--site=../x")),
    )
    return st.lists(token, max_size=8)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """The namespace, or None after argparse's usage error (exit code 2, message on stderr)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2), exc.code
            if exc.code == 2:
                assert f"\n{parser.prog}" in stderr.getvalue() and ": error: " in stderr.getvalue()
                assert "Traceback" not in stderr.getvalue()
            return None


@pytest.mark.parametrize("prog", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_random_arguments_parse_or_exit_2(prog, data):
    parser = PARSERS[prog]()
    _parse(parser, data.draw(argv_for(parser)))


@FUZZ
@given(data=st.data())
def test_fl_demo_validation_is_one_user_error(data):
    parser = demo_cli.build_parser()
    argv = data.draw(argv_for(parser))
    args = _parse(parser, argv)
    if args is None:
        return
    try:
        demo_cli._validate(args)
        demo_cli._dp_options(args)
    except UserError as exc:
        assert exc.exit_code == ExitCode.USAGE and "\n" not in str(exc)


@FUZZ
@given(data=st.data())
def test_fl_client_bad_arguments_end_in_exit_2(tmp_path_factory, data):
    """Every argument list with a config that cannot be used stops at exit code 2, one line."""
    folder = tmp_path_factory.mktemp("client")
    config = folder / "site.toml"
    config.write_text(data.draw(st.sampled_from(("", "[site]\nname = 3\n", "not toml ]"))))
    argv = [*data.draw(argv_for(client_cli.build_parser())), "--site", "hospital_a"]
    argv += ["--config", str(config), "--sites-dir", str(Path(folder))]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = client_cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    assert code in (0, 2), stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()
    if code == 2:
        assert "fl-client: error: " in stderr.getvalue()
