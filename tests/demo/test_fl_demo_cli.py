"""fl-demo refuses bad input with one line and a non-zero exit, before starting anything; its DP
options become each site's `[dp]` table, capped by what the site already spent in the workdir."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedseal.cli_support import UserError
from fedseal.client.dp.accountant_store import STORE_RELATIVE_PATH, AccountantStore
from fedseal.client.dp.settings import default_delta, parse_dp_section
from fedseal.demo.dp_budget import DemoDpOptions, plan_site_dp
from fedseal.demo.run import plan_dp
from fedseal.demo.site_configs import write_demo_site_configs
from fedseal.privacy.events import DpEvent

FL_DEMO = str(Path(sys.executable).with_name("fl-demo"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FL_DEMO, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_help_describes_every_option(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in (
        "--scenario",
        "--sites",
        "--rounds",
        "--steps",
        "--learning-rate",
        "--batch-size",
        "--seed",
        "--workdir",
        "--database",
        "--port",
        "--round-timeout",
        "--timeout",
        "--eval-limit",
        "--no-baseline",
        "--mode",
        "--clip",
        "--epsilon",
        "--dp-budget",
        "--noise-multiplier",
        "--max-grad-norm",
        "--delta",
        "--no-dp",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scenario", "pharmacies"], "unknown scenario 'pharmacies'"),
        (["--rounds", "0"], "--rounds must be between"),
        (["--scenario", "heart", "--sites", "9"], "heart"),
        (["--database", "nosuchdialect://x"], "nosuchdialect"),
        (["--database", "sqlite:////nonexistent/dir/registry.db"], "registry"),
        (["--database", "postgresql://u:secret@127.0.0.1:1/x"], "unavailable"),
        (["--epsilon", "0"], "--epsilon must be a number > 0"),
        (["--epsilon", "-1"], "--epsilon must be a number > 0"),
        (["--epsilon", "nan"], "--epsilon must be a number > 0"),
        (["--epsilon", "x"], "--epsilon: invalid float value"),
        (["--dp-budget", "0"], "--dp-budget must be a number > 0"),
        (["--epsilon", "5", "--dp-budget", "4"], "--dp-budget (4) must be at least --epsilon"),
        (["--epsilon", "12"], "--dp-budget (10) must be at least --epsilon (12)"),
        (["--max-grad-norm", "0"], "--max-grad-norm must be a number > 0"),
        (["--delta", "0"], "--delta must be between 0 and 1"),
        (["--delta", "1"], "--delta must be between 0 and 1"),
        (["--noise-multiplier", "0"], "--noise-multiplier must be > 0 and at most 1000"),
        (["--noise-multiplier", "1001"], "--noise-multiplier must be > 0 and at most 1000"),
        (["--no-dp", "--epsilon", "1"], "--no-dp cannot be combined with --epsilon"),
        (["--no-dp", "--delta", "1e-6", "--max-grad-norm", "2"], "--max-grad-norm, --delta"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run("--workdir", str(tmp_path / "w"), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fl-demo: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr


def test_bad_dp_arguments_start_nothing(tmp_path: Path) -> None:
    result = run("--workdir", str(tmp_path / "w"), "--epsilon", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "w").exists()


# -- each site's [dp] table ------------------------------------------------------------------------

OPTIONS = DemoDpOptions(epsilon=3.0, budget=10.0)
EVENT = DpEvent(noise_multiplier=1.0, sample_rate=0.01, steps=200)


def _store_with(state_dir: Path, rounds: int) -> AccountantStore:
    store = AccountantStore.open(state_dir)
    for number in range(1, rounds + 1):
        store.record(EVENT, run_id=1, round_number=number)
    return store


def test_site_that_never_trained_may_spend_epsilon_and_nothing_is_written(tmp_path: Path) -> None:
    plan = plan_site_dp("hospital_a", tmp_path / "hospital_a", 3000, OPTIONS)
    assert plan.spent == 0.0 and plan.target == 3.0 and plan.this_run == 3.0
    assert plan.delta == default_delta(3000) and not plan.exhausted
    assert plan.table() == {
        "epsilon": 10.0,
        "target_epsilon": 3.0,
        "max_grad_norm": 1.0,
        "accountant": "prv",
    }
    assert not (tmp_path / "hospital_a").exists()


def test_target_is_spent_plus_epsilon_capped_by_the_budget(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "a", rounds=1)
    delta = default_delta(500)
    spent = store.spent_epsilon(delta)
    assert 0 < spent < 10 - 3  # so the first case is not capped

    plan = plan_site_dp("a", tmp_path / "a", 500, OPTIONS)
    assert plan.spent == pytest.approx(spent) and plan.delta == delta
    assert plan.target == pytest.approx(spent + 3.0)
    assert plan.table()["target_epsilon"] == pytest.approx(spent + 3.0)
    assert plan.table()["epsilon"] == 10.0  # the lifetime budget stays the budget

    capped = plan_site_dp("a", tmp_path / "a", 500, DemoDpOptions(epsilon=3.0, budget=spent + 1))
    assert capped.target == pytest.approx(spent + 1) and capped.this_run == pytest.approx(1.0)
    assert not capped.exhausted


def test_spent_is_read_at_the_delta_the_site_will_use(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "a", rounds=1)
    plan = plan_site_dp("a", tmp_path / "a", 500, DemoDpOptions(3.0, 10.0, delta=1e-8))
    assert plan.delta == 1e-8 and plan.table()["delta"] == 1e-8
    assert plan.spent == pytest.approx(store.spent_epsilon(1e-8))
    assert plan.spent > store.spent_epsilon(default_delta(500))


def test_spent_budget_is_exhausted_and_the_config_still_valid(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "a", rounds=3)
    spent = store.spent_epsilon(default_delta(500))
    options = DemoDpOptions(epsilon=spent / 4, budget=spent / 2)
    plan = plan_site_dp("a", tmp_path / "a", 500, options)
    assert plan.exhausted and plan.this_run == 0.0 and plan.target == options.budget
    parse_dp_section(plan.table(), Path("a.toml"), num_records=500, batch_size=32)


def test_fixed_noise_caps_this_run_with_the_site_budget(tmp_path: Path) -> None:
    _store_with(tmp_path / "a", rounds=1)
    options = DemoDpOptions(epsilon=3.0, budget=10.0, noise_multiplier=1.1, max_grad_norm=0.5)
    plan = plan_site_dp("a", tmp_path / "a", 500, options)
    table = plan.table()
    assert table == {
        "epsilon": plan.target,
        "noise_multiplier": 1.1,
        "max_grad_norm": 0.5,
        "accountant": "prv",
    }
    assert plan.target == pytest.approx(plan.spent + 3.0)
    assert "σ = 1.1 fixed" in plan.describe()


def test_unreadable_history_is_an_error_not_a_fresh_budget(tmp_path: Path) -> None:
    path = tmp_path / "state" / "a" / STORE_RELATIVE_PATH
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="fresh --workdir"):
        plan_dp(OPTIONS, ["a"], tmp_path / "state", {"a": 500}, {"a": 32})


def test_written_configs_carry_a_dp_table_the_site_accepts(tmp_path: Path) -> None:
    plans = {
        site: plan_site_dp(site, tmp_path / "state" / site, 3000, OPTIONS)
        for site in ("hospital_a", "hospital_b")
    }
    paths = write_demo_site_configs(
        tmp_path / "sites",
        sites=list(plans),
        scenario="hospitals",
        seed=0,
        coordinator="127.0.0.1:9093",
        state_root=tmp_path / "state",
        dp={site: plan.table() for site, plan in plans.items()},
    )
    for path in paths.values():
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        settings = parse_dp_section(document["dp"], path, num_records=3000, batch_size=32)
        assert settings is not None and settings.enabled
        assert settings.epsilon == 10.0 and settings.target_epsilon == 3.0
        assert settings.max_grad_norm == 1.0 and settings.delta == default_delta(3000)


def test_without_dp_no_table_is_written_and_a_missing_site_is_refused(tmp_path: Path) -> None:
    common = {
        "scenario": "hospitals",
        "seed": 0,
        "coordinator": "127.0.0.1:9093",
        "state_root": tmp_path / "state",
    }
    paths = write_demo_site_configs(tmp_path / "plain", sites=["a"], **common)
    assert "dp" not in tomllib.loads(paths["a"].read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="no \\[dp\\] table for site"):
        write_demo_site_configs(
            tmp_path / "dp", sites=["a", "b"], dp={"a": {"epsilon": 1.0}}, **common
        )


def test_operator_sees_one_line_per_site_and_a_note_when_spent(tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    spent = _store_with(state / "b", rounds=3).spent_epsilon(default_delta(500))
    options = DemoDpOptions(epsilon=min(3.0, spent / 2), budget=spent / 2)
    plans = plan_dp(options, ["a", "b"], state, {"a": 500, "b": 500}, {"a": 32, "b": 32})
    assert plans is not None and not plans["a"].exhausted and plans["b"].exhausted
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"fl-demo: a: DP ε ≤ {options.epsilon:.3g} this run (spent 0 of")
    assert "δ = 1e-05, C = 1, σ calibrated by the site" in lines[0]
    assert lines[1].startswith("fl-demo: b: DP ε ≤ 0 this run")
    assert "already spent" in lines[2] and "fresh --workdir" in lines[2]
    assert len(lines) == 3


def test_no_dp_warns_about_memorisation_and_earlier_dp_runs(tmp_path: Path, capsys) -> None:
    _store_with(tmp_path / "state" / "b", rounds=1)
    assert (
        plan_dp(None, ["a", "b"], tmp_path / "state", {"a": 5, "b": 5}, {"a": 32, "b": 32}) is None
    )
    out = capsys.readouterr().out
    assert "WITHOUT differential privacy" in out and "memorise" in out
    assert "b trained with DP in this workdir before" in out
    assert "a trained with DP" not in out


def test_delta_at_or_above_one_over_n_is_refused_before_anything_starts(tmp_path: Path) -> None:
    options = DemoDpOptions(epsilon=3.0, budget=10.0, delta=0.01)
    with pytest.raises(UserError, match=r"--delta 0\.01 must be below 1/n"):
        plan_dp(options, ["a"], tmp_path / "state", {"a": 100}, {"a": 32})
