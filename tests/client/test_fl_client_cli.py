"""fl-client's promises to the people who run it: one clear line and an exit code per mistake."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

FL_CLIENT = str(Path(sys.executable).with_name("fl-client"))


def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FL_CLIENT, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )


def write_config(folder: Path, name: str = "hospital_a", address: str = "127.0.0.1:9") -> Path:
    sites = folder / "sites"
    sites.mkdir(exist_ok=True)
    path = sites / f"{name}.toml"
    path.write_text(
        f"""
[site]
name = "{name}"
state_dir = "../state/{name}"

[coordinator]
address = "{address}"

[data]
source = "demo"
scenario = "hospitals"
num_sites = 3
""",
        encoding="utf-8",
    )
    return path


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("fl-client: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_help_describes_every_option() -> None:
    result = run("--help")
    assert result.returncode == 0
    for option in (
        "--site",
        "--config",
        "--sites-dir",
        "--coordinator",
        "--connect-timeout",
        "--check",
    ):
        assert option in result.stdout
    assert "Exit codes" in result.stdout
    assert "enroll" in result.stdout


def test_unknown_site_names_the_known_ones(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = run("--site", "hospital_zz", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "unknown site 'hospital_zz'" in line and "hospital_a" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("this is not toml [", "not valid TOML"),
        ('[site]\nname = "hospital_a"\n', "[coordinator] section is missing"),
        (
            '[site]\nname = "hospital_a"\ndevice = "tpu"\n[coordinator]\naddress = "x:1"\n'
            '[data]\nsource = "demo"\nscenario = "hospitals"\nnum_sites = 3\n',
            "site.device",
        ),
        (
            '[site]\nname = "hospital_a"\n[coordinator]\naddress = "nohostport"\n'
            '[data]\nsource = "demo"\nscenario = "hospitals"\nnum_sites = 3\n',
            "coordinator.address",
        ),
        (
            '[site]\nname = "hospital_a"\n[coordinator]\naddress = "h:1"\n'
            '[data]\nsource = "demo"\nscenario = "hospitals"\nnum_sites = 3\n'
            "[training]\nbatch_sise = 3\n",
            "training.batch_sise is not a known setting",
        ),
    ],
)
def test_malformed_config_is_refused_in_one_line(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(content, encoding="utf-8")
    result = run("--site", "hospital_a", "--config", str(path))
    assert result.returncode == 2
    assert expected in one_line_error(result)


def test_site_outside_the_scenario_is_refused(tmp_path: Path) -> None:
    write_config(tmp_path, name="hospital_q")
    result = run("--site", "hospital_q", "--check", cwd=tmp_path)
    assert result.returncode == 2
    assert "hospital_q" in one_line_error(result)


def test_check_validates_config_and_data(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = run("--site", "hospital_a", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr


def test_check_without_dp_warns_that_records_can_be_memorised(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = run("--site", "hospital_a", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "differential privacy is OFF" in result.stderr


def test_check_reports_the_dp_budget_and_what_is_spent(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n[dp]\nepsilon = 3.0\ntarget_epsilon = 1.0\nmax_grad_norm = 0.5\n")
    result = run("--site", "hospital_a", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DP-SGD on, budget ε = 3" in result.stderr
    assert "spent so far 0" in result.stderr and "clipping 0.5" in result.stderr


@pytest.mark.parametrize(
    ("dp", "expected"),
    [
        ("epsilon = 0\nnoise_multiplier = 1.0", "dp.epsilon must be > 0"),
        ("epsilon = -2.0\nnoise_multiplier = 1.0", "dp.epsilon must be > 0"),
        ("epsilon = 1.0\ndelta = 1.5\nnoise_multiplier = 1.0", "dp.delta must be in (0, 1)"),
        ("epsilon = 1.0\ndelta = 0.0\nnoise_multiplier = 1.0", "dp.delta must be in (0, 1)"),
        ("epsilon = 1.0\nmax_grad_norm = -1.0\nnoise_multiplier = 1.0", "dp.max_grad_norm"),
        ("epsilon = 1.0", "exactly one of the two"),
        ("epsilon = 1.0\ndelta = 0.01\nnoise_multiplier = 1.0", "must be below 1/n"),
        ("epsilon = 0.01\nnoise_multiplier = 0.05", "could never fit the budget"),
        ("epsilon = 1.0\nnoise = 1.0", "dp.noise is not a known setting"),
    ],
)
def test_unusable_dp_settings_are_refused_before_anything_trains(
    tmp_path: Path, dp: str, expected: str
) -> None:
    path = write_config(tmp_path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n[dp]\n{dp}\n")
    result = run("--site", "hospital_a", "--check", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in one_line_error(result)
    assert not (tmp_path / "state" / "hospital_a" / "dp").exists()  # nothing charged or trained


def test_unreachable_coordinator_retries_visibly_then_gives_up(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_config(tmp_path, address=f"127.0.0.1:{port}")
    result = run("--site", "hospital_a", "--connect-timeout", "3", cwd=tmp_path)
    assert result.returncode == 3
    assert "waiting for coordinator" in result.stderr
    assert "unreachable after 3 s" in one_line_error(result)


def test_enroll_makes_private_keys_once_and_prints_the_public_ones(tmp_path: Path) -> None:
    write_config(tmp_path)
    first = run("--site", "hospital_a", "enroll", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "identity_ed25519" in first.stdout and "made new keys" in first.stderr
    keys = tmp_path / "state" / "hospital_a" / "keys"
    assert (keys / "identity.key").stat().st_mode & 0o077 == 0
    again = run("--site", "hospital_a", "enroll", cwd=tmp_path)
    assert again.returncode == 0 and "already has keys" in again.stderr
    assert again.stdout == first.stdout  # the same keys, not new ones
