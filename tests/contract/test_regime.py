"""The public training regime: each scenario's defaults, and what fl-demo fills in from them."""

from __future__ import annotations

import pytest

from fedseal.contract.regime import REGIMES, regime_for
from fedseal.contract.run_plan import AdapterKind
from fedseal.demo.cli import _validate, build_parser


def test_hospitals_train_few_large_steps_and_the_others_keep_the_adapters_defaults() -> None:
    hospitals = regime_for(AdapterKind.HEAD, "hospitals")
    assert (hospitals.rounds, hospitals.steps, hospitals.batch_size) == (5, 10, 3000)
    assert hospitals.learning_rate == pytest.approx(0.2)
    for scenario in ("banks", "heart", None):
        assert regime_for(AdapterKind.HEAD, scenario) == REGIMES[AdapterKind.HEAD]
    # LoRA has no scenario settings of its own
    assert regime_for(AdapterKind.LORA, "hospitals") == REGIMES[AdapterKind.LORA]


@pytest.mark.parametrize(
    ("scenario", "steps", "batch"),
    [("hospitals", 10, 3000), ("banks", 60, 1024), ("heart", 60, 1024)],
)
def test_fl_demo_fills_in_the_scenarios_own_defaults(scenario: str, steps: int, batch: int) -> None:
    args = build_parser().parse_args(["--scenario", scenario, "--adapter", "head"])
    _validate(args)
    assert (args.steps, args.batch_size) == (steps, batch)


def test_a_value_given_on_the_command_line_wins_over_the_scenarios() -> None:
    args = build_parser().parse_args(["--adapter", "head", "--steps", "7", "--batch-size", "64"])
    _validate(args)
    assert (args.steps, args.batch_size, args.rounds) == (7, 64, 5)
