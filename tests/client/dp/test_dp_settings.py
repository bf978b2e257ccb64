"""The `[dp]` table of a site config: refused with one clear line before anything trains."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedseal.client.dp.errors import DpConfigError
from fedseal.client.dp.settings import DELTA_CAP, DpSettings, default_delta, parse_dp_section
from fedseal.privacy.accountant_kind import Accountant

PATH = Path("sites/hospital_a.toml")
GOOD = {"epsilon": 3.0, "noise_multiplier": 1.1}


def _parse(text: str, **kwargs) -> DpSettings | None:
    return parse_dp_section(tomllib.loads(text).get("dp"), PATH, **kwargs)


def test_a_full_section_parses() -> None:
    settings = _parse(
        """
        [dp]
        epsilon = 3
        delta = 1e-6
        max_grad_norm = 0.5
        target_epsilon = 2.0
        accountant = "prv"
        enabled = true
        """
    )
    assert settings == DpSettings(
        epsilon=3.0,
        delta=1e-6,
        max_grad_norm=0.5,
        target_epsilon=2.0,
        accountant=Accountant.PRV,
    )


def test_no_section_means_no_dp() -> None:
    assert _parse("[site]\nname = 'a'\n") is None


def test_defaults_rdp_clipping_one_and_delta_from_the_records() -> None:
    settings = parse_dp_section(dict(GOOD), PATH)
    assert settings is not None
    assert settings.accountant is Accountant.RDP and settings.max_grad_norm == 1.0
    assert settings.delta is None and settings.enabled
    with pytest.raises(DpConfigError, match="not resolved"):
        settings.require_delta()
    assert parse_dp_section(dict(GOOD), PATH, num_records=600).delta == DELTA_CAP
    assert parse_dp_section(dict(GOOD), PATH, num_records=1_000_000).delta == 1e-7
    assert settings.resolved(600).delta == DELTA_CAP


@pytest.mark.parametrize("n", [1, 7, 600, 10_000, 123_456, 10**9])
def test_default_delta_is_well_below_one_over_n(n: int) -> None:
    assert default_delta(n) <= 1 / (10 * n) and default_delta(n) <= DELTA_CAP


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"epsilon": 0, "noise_multiplier": 1.0}, "dp.epsilon must be > 0"),
        ({"epsilon": -1, "noise_multiplier": 1.0}, "dp.epsilon must be > 0"),
        ({"epsilon": float("inf"), "noise_multiplier": 1.0}, "dp.epsilon must be finite"),
        ({"epsilon": "3", "noise_multiplier": 1.0}, "dp.epsilon must be a number"),
        ({"noise_multiplier": 1.0}, "dp.epsilon is missing"),
        ({**GOOD, "delta": 0}, "dp.delta must be in (0, 1)"),
        ({**GOOD, "delta": 1}, "dp.delta must be in (0, 1)"),
        ({**GOOD, "delta": -1e-5}, "dp.delta must be in (0, 1)"),
        ({**GOOD, "delta": 1.5}, "dp.delta must be in (0, 1)"),
        ({**GOOD, "max_grad_norm": -1.0}, "dp.max_grad_norm must be > 0"),
        ({**GOOD, "max_grad_norm": 0}, "dp.max_grad_norm must be > 0"),
        ({"epsilon": 3}, "exactly one of the two"),
        ({**GOOD, "target_epsilon": 2.0}, "exactly one of the two"),
        ({**GOOD, "noise_multiplier": 0}, "dp.noise_multiplier must be in (0, 1000]"),
        ({**GOOD, "noise_multiplier": -1}, "dp.noise_multiplier must be in (0, 1000]"),
        ({"epsilon": 3, "target_epsilon": 4}, "at most dp.epsilon"),
        ({"epsilon": 3, "target_epsilon": 0}, "dp.target_epsilon must be > 0"),
        ({**GOOD, "accountant": "gdp"}, 'dp.accountant must be "rdp", "prv"'),
        ({**GOOD, "enabled": "yes"}, "dp.enabled must be true or false"),
        ({**GOOD, "sigma": 1.0}, "dp.sigma is not a known setting in [dp]"),
        ({**GOOD, "noise_multiplier": True}, "dp.noise_multiplier must be a number"),
    ],
)
def test_bad_values_are_refused_with_one_line(table: dict, fragment: str) -> None:
    with pytest.raises(DpConfigError) as caught:
        parse_dp_section(table, PATH)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(f"{PATH}: ")
    assert "\n" not in message


def test_an_explicit_delta_must_be_below_one_over_n() -> None:
    with pytest.raises(DpConfigError, match=r"dp.delta = 0.001 must be below 1/n"):
        parse_dp_section({**GOOD, "delta": 1e-3}, PATH, num_records=2000)
    assert parse_dp_section({**GOOD, "delta": 1e-4}, PATH, num_records=2000).delta == 1e-4


def test_a_noise_level_that_could_never_fit_is_refused() -> None:
    # one step at σ = 0.3 and q = 1/600 already costs ε ≈ 9 under RDP
    table = {"epsilon": 1.0, "noise_multiplier": 0.3}
    with pytest.raises(DpConfigError, match="could never fit the budget") as caught:
        parse_dp_section(table, PATH, num_records=600)
    assert "q = 0.00167" in str(caught.value) and "\n" not in str(caught.value)
    # the site's real q (batch 32 of 600) refuses more: one step at σ = 1 costs ε ≈ 1.65
    table = {"epsilon": 1.0, "noise_multiplier": 1.0}
    assert parse_dp_section(table, PATH, num_records=600) is not None
    with pytest.raises(DpConfigError, match="could never fit"):
        parse_dp_section(table, PATH, num_records=600, batch_size=32)
    # a budget below what any single step costs (RDP's floor is ~0.1 at δ = 1e-5)
    with pytest.raises(DpConfigError, match=r"dp\.target_epsilon could never fit"):
        parse_dp_section({"epsilon": 0.05, "target_epsilon": 0.05}, PATH, num_records=600)


def test_disabled_settings_skip_the_fit_check() -> None:
    table = {"epsilon": 1.0, "noise_multiplier": 0.3, "enabled": False}
    settings = parse_dp_section(table, PATH, num_records=600)
    assert settings is not None and not settings.enabled


def test_parsing_imports_neither_torch_nor_opacus() -> None:
    code = (
        "import sys; from pathlib import Path;"
        "from fedseal.client.dp import parse_dp_section;"
        "parse_dp_section({'epsilon': 1.0, 'noise_multiplier': 1.0}, Path('x'));"
        "assert 'torch' not in sys.modules and 'opacus' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
