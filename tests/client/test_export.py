"""`fl-client export`: a completed run's global adapter as a PEFT adapter folder and model card.

Two real federations (the heart scenario's first two hospitals, in-process through the real
round loop): the head adapter under DP in he+ss (fl-demo's default on a CPU) and LoRA in plain
mode. The exported folder is loaded offline with transformers' and PEFT's own loaders
(`PeftModel.from_pretrained`) and must give the site's model's predictions on the site's real
test records, classifying as the card's usage snippet says; the card's figures must be the
ledger's. Bad requests end in one line and exit code 2, and write nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch

from fedseal.client.adapter_model import adapter_inputs, build_adapter_model
from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.client.export import export_run
from fedseal.client.ledger_facts import read_ledger
from fedseal.client.run_record import RunRecords, keep_applied_safely
from fedseal.client.site_config import SiteConfig, load_site_config
from fedseal.client.site_data import load_site_records
from fedseal.client.site_keys import create_site_keys
from fedseal.client.site_service import SiteService
from fedseal.contract.run_plan import AdapterKind, RunPlan
from fedseal.contract.wire import Key
from fedseal.models.adapter import AdapterLayout, adapter_layout, load_vector_into_adapter
from fedseal.models.base_models import get_base_model
from fedseal.models.data import get_scenario, load_site_data, scenario_site_names
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.registry import Registry

FL_CLIENT = str(Path(sys.executable).with_name("fl-client"))
SCENARIO = "heart"
SITES = scenario_site_names(SCENARIO, 2)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "FLWR_TELEMETRY_ENABLED": "0"}


@dataclass
class Federation:
    root: Path
    registry: Registry
    registry_run_id: int
    flower_run_id: int

    def config_path(self, site: str) -> Path:
        return self.root / "sites" / f"{site}.toml"

    def config(self, site: str) -> SiteConfig:
        return load_site_config(self.config_path(site))


def _harness() -> Any:
    """The in-process grid of the coordinator's tests (real ServerApp logic, real sites)."""
    folder = str(Path(__file__).resolve().parents[1] / "coordinator")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import inprocess_federation

    return inprocess_federation


def _federate(
    root: Path, *, adapter: str, mode: str, rounds: int, steps: int, dp: bool, run_id: int
) -> Federation:
    """Run a real federation of the two sites; every applied aggregate is recorded for export
    as `fl-client` records it."""
    from trust_support import pin_everywhere

    from fedseal.coordinator import server_app
    from fedseal.coordinator.run_settings import RunSettings, default_run_config
    from fedseal.registry import open_registry
    from fedseal.registry.ledger_key import create_ledger_key

    harness = _harness()
    coordinator_state = root / "coordinator"
    ledger_key, _ = create_ledger_key(coordinator_state)
    registry = open_registry(f"sqlite:///{root / 'registry.db'}", ledger_key=ledger_key)
    services, keys = {}, {}
    for site in SITES:
        state_dir = root / "state" / site
        document: dict[str, Any] = {
            "site": {"name": site, "state_dir": str(state_dir), "device": "cpu"},
            "coordinator": {"address": "127.0.0.1:1"},
            "data": {"source": "demo", "scenario": SCENARIO, "num_sites": len(SITES)},
            "training": {"batch_size": 16},
            "secure_agg": {"modes": ["he", "he+ss", "plain"]},
        }
        if dp:
            document["dp"] = {"epsilon": 50.0, "noise_multiplier": 1.0}
        path = root / "sites" / f"{site}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(document), encoding="utf-8")
        keys[site], _ = create_site_keys(site, state_dir)
        registry.enroll_site(site, keys[site].public().to_bundle())
        service = SiteService(load_site_config(path), keys[site])
        services[site] = service
    pin_everywhere(keys, {s: root / "state" / s for s in SITES})
    _split, labels = load_site_data(SCENARIO, SITES[0], len(SITES), 0)
    settings = RunSettings.from_run_config(
        default_run_config(
            database_url="sqlite://",
            scenario=SCENARIO,
            labels=list(labels),
            mode=mode,
            rounds=rounds,
            min_sites=len(SITES),
            steps=steps,
            max_length=get_scenario(SCENARIO).max_length,
            round_timeout=30.0,
            wait_for_sites=5.0,
            coordinator_state=str(coordinator_state),
            adapter=adapter,
            **{"max-colluding": 0},
        )
    )
    grid = harness.InProcessGrid(services, run_id)
    with harness.virtual_time():
        registry_run = server_app.drive_run(grid, settings, registry)
    assert str(registry.get_run(registry_run).status) == "completed"
    return Federation(root, registry, registry_run, run_id)


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("head")
    return _federate(root, adapter="head", mode="he+ss", rounds=2, steps=3, dp=True, run_id=811)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("lora")
    return _federate(root, adapter="lora", mode="plain", rounds=1, steps=1, dp=False, run_id=812)


def fl_client(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [FL_CLIENT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **OFFLINE},
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("fl-client: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _card_figures(folder: Path) -> dict[str, Any]:
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n")
    assert "library_name: peft" in card.split("---")[1]
    (block,) = re.findall(r"```json\n(.*?)\n```", card, flags=re.DOTALL)
    return json.loads(block)


def _snippet(folder: Path) -> str:
    card = (folder / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)\n```", card, flags=re.DOTALL)
    return code


def _site_logits(config: SiteConfig, run_id: int, texts: Any, labels: Any) -> torch.Tensor:
    """The site's model's logits, computed as the site computes them (its adapter kind's
    inputs, its stored global adapter, eval mode)."""
    record = RunRecords(config.site.state_dir).load(run_id)
    assert record is not None
    plan = record.plan
    model, tokenizer = build_adapter_model(plan, "cpu")
    loaded = GlobalAdapterStore(config.site.state_dir, run_id).load(adapter_layout(model))
    assert loaded is not None
    load_vector_into_adapter(model, loaded[1])
    model.eval()
    from fedseal.models.data.types import TextExamples

    inputs = adapter_inputs(
        plan, tokenizer, TextExamples(tuple(texts), labels), config.site.state_dir / "cache", "cpu"
    )
    with torch.no_grad():
        return inputs.logits(model, torch.arange(len(texts)), torch.device("cpu"))


def _exported_logits(folder: Path, plan: RunPlan, texts: Any) -> tuple[list[str], torch.Tensor]:
    """Classify with the card's own snippet: transformers' and PEFT's loaders, offline."""
    base = str(get_base_model(plan.base_model).folder())
    code = _snippet(folder)
    code = code.replace(
        'base_model = "sentence-transformers/all-MiniLM-L6-v2"', f"base_model = {base!r}"
    )
    code = code.replace('adapter = "."', f"adapter = {str(folder)!r}")
    scope: dict[str, Any] = {}
    exec(compile(code, "model-card-snippet", "exec"), scope)
    names, logits = scope["classify"](list(texts))
    assert type(scope["model"]).__name__.startswith("PeftModel")
    return names, logits


def _check_predictions(federation: Federation, site: str, folder: Path) -> None:
    config = federation.config(site)
    record = RunRecords(config.site.state_dir).load(federation.flower_run_id)
    assert record is not None
    test = load_site_records(config, record.plan.labels).test
    texts, labels = test.texts, test.labels
    expected = _site_logits(config, federation.flower_run_id, texts, labels)
    names, got = _exported_logits(folder, record.plan, texts)
    assert got.shape == expected.shape == (len(texts), len(record.plan.labels))
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    assert names == [record.plan.labels[i] for i in expected.argmax(-1).tolist()]
    assert float(expected.std(0).min()) > 1e-3  # the logits vary by record: a trained head


def test_head_export_loads_with_peft_and_predicts_as_the_site(
    head_run: Federation, tmp_path: Path
) -> None:
    site = SITES[0]
    out = tmp_path / "export"
    result = fl_client("--site", site, "--config", str(head_run.config_path(site)), "export",
                       "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert f"exported run {head_run.flower_run_id} (round 2" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS"
    assert config["target_modules"] == "dummy-target-modules"  # no LoRA layers: the head alone
    assert "classifier" in config["modules_to_save"]
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    _check_predictions(head_run, site, out)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "mean-pooled" in card and "**Limitation.**" in card


def test_lora_export_predicts_as_the_site(lora_run: Federation, tmp_path: Path) -> None:
    site = SITES[1]
    out = tmp_path / "lora"
    exported = export_run(lora_run.config(site), out)
    assert exported.run_id == str(lora_run.flower_run_id) and exported.applied_round == 1
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(config["target_modules"]) == ["query", "value"] and config["r"] == 8
    _check_predictions(lora_run, site, out)
    figures = _card_figures(out)
    assert figures["adapter"] == "lora" and figures["mode"] == "plain"
    assert figures["privacy"] == {}  # trained without DP, and the card says so
    assert "signed no privacy statement" in (out / "README.md").read_text(encoding="utf-8")


def _ledger_entries(registry: Registry, run_id: int, site: str) -> list[Any]:
    return [e for e in registry.privacy_ledger(run_id=run_id) if e.site == site]


def _expected_spend(entries: list[Any]) -> dict[str, Any]:
    """A site's figures recomputed from its ledger entries, as an auditor would."""
    last = entries[-1]
    charged = [e for e in entries if str(e.status) == "charged"]
    events = [DpEvent(e.noise_multiplier, e.sample_rate, e.steps) for e in charged]
    return {
        "epsilon_run": epsilon_of(events, last.delta, Accountant(str(last.accountant))),
        "epsilon_cumulative": last.epsilon_cumulative,
        "delta": last.delta,
        "accountant": str(last.accountant),
        "budget": last.budget,
        "rounds_charged": len(charged),
        "rounds_declined": len(entries) - len(charged),
    }


def _final_digest(federation: Federation) -> str:
    rounds = federation.registry.rounds(federation.registry_run_id)
    final = [r for r in rounds if str(r.status) == "completed"][-1]
    assert final.global_digest
    return final.global_digest


def test_site_card_figures_match_the_ledger(head_run: Federation, tmp_path: Path) -> None:
    """What the site alone knows: its own spend (its signed statements) and the adapter's
    digest, both as the coordinator's ledger recorded them; nothing about the other sites."""
    site = SITES[1]
    out = export_run(head_run.config(site), tmp_path / "card").folder
    figures = _card_figures(out)
    assert figures["privacy_source"] == "site"
    assert figures["adapter_digest"] == _final_digest(head_run)
    assert figures["registry_run_id"] == head_run.registry_run_id
    assert figures["flower_run_id"] == str(head_run.flower_run_id)
    assert figures["rounds_planned"] == 2 and figures["round"] == 2
    assert (figures["mode"], figures["adapter"], figures["scenario"]) == ("he+ss", "head", "heart")
    assert list(figures["privacy"]) == [site]
    expected = _expected_spend(_ledger_entries(head_run.registry, head_run.registry_run_id, site))
    assert expected["rounds_charged"] == 2
    assert figures["privacy"][site] == pytest.approx(expected)
    assert figures["sites"] is None and figures["chain_head"] is None
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "not known here" in card and "not known at the site" in card
    assert f"{expected['epsilon_cumulative']:.6g}" in card


def test_card_with_the_registry_has_every_site_and_the_chain_head(
    head_run: Federation, tmp_path: Path
) -> None:
    """fl-demo's export: it holds the registry, so every site's spend and the chain head."""
    site = SITES[0]
    ledger = read_ledger(head_run.registry, head_run.registry_run_id)
    out = export_run(head_run.config(site), tmp_path / "demo", ledger=ledger).folder
    figures = _card_figures(out)
    assert figures["privacy_source"] == "ledger"
    assert figures["sites"] == sorted(SITES) and figures["rounds_completed"] == 2
    assert figures["adapter_digest"] == _final_digest(head_run)
    seq, entry_hash = head_run.registry.chain_head()
    assert figures["chain_head"] == {"seq": seq, "entry_hash": entry_hash}
    for name in SITES:
        entries = _ledger_entries(head_run.registry, head_run.registry_run_id, name)
        assert figures["privacy"][name] == pytest.approx(_expected_spend(entries))
    # the site's own figures are the ledger's: the card reads the same either way
    own = _card_figures(export_run(head_run.config(site), tmp_path / "own").folder)
    assert own["privacy"][site] == figures["privacy"][site]


def test_an_adapter_that_is_not_the_runs_final_one_is_refused(
    head_run: Federation, tmp_path: Path
) -> None:
    from dataclasses import replace

    from fedseal.client.export import ExportError

    ledger = read_ledger(head_run.registry, head_run.registry_run_id)
    with pytest.raises(ExportError, match="not the run's final global adapter"):
        export_run(
            head_run.config(SITES[0]),
            tmp_path / "x",
            ledger=replace(ledger, final_digest="0" * 64),
        )
    with pytest.raises(ExportError, match="registry says failed"):
        export_run(
            head_run.config(SITES[0]), tmp_path / "x", ledger=replace(ledger, status="failed")
        )
    assert not (tmp_path / "x").exists()


# -- bad requests: one line, exit code 2, nothing written ------------------------------------


def _site_with_runs(root: Path, runs: dict[str, tuple[int, int]]) -> Path:
    """A site config whose state holds, for each run id, (rounds planned, round applied):
    its run record and a stored global adapter, as `fl-client` leaves them."""
    site = SITES[0]
    state_dir = root / "state"
    path = root / f"{site}.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "site": {"name": site, "state_dir": str(state_dir), "device": "cpu"},
                "coordinator": {"address": "127.0.0.1:1"},
                "data": {"source": "demo", "scenario": SCENARIO, "num_sites": len(SITES)},
            }
        ),
        encoding="utf-8",
    )
    _split, labels = load_site_data(SCENARIO, site, len(SITES), 0)
    layout = AdapterLayout((("classifier.bias", (2,)), ("classifier.weight", (2, 384))))
    for run_id, (planned, applied) in runs.items():
        plan = RunPlan(
            base_model="minilm-l6",
            labels=tuple(labels),
            lora_rank=8,
            lora_alpha=16,
            lora_dropout=0.0,
            seed=0,
            steps=3,
            learning_rate=0.1,
            max_length=72,
            rounds=planned,
            adapter=AdapterKind.HEAD,
        )
        state = GlobalAdapterStore(state_dir, run_id).save(
            applied, np.zeros(layout.size, np.float32), layout
        )
        fields = {**plan.to_config(), Key.MODE: "he+ss", Key.RUN_ID: 1}
        result = {Key.APPLIED_ROUND: applied, Key.ADAPTER_DIGEST: state.digest}
        RunRecords(state_dir).keep_applied(run_id, fields, result, {})
    return path


def _export(config: Path, *args: str) -> subprocess.CompletedProcess:
    return fl_client("--site", SITES[0], "--config", str(config), "export", *args, timeout=120)


def test_unknown_run_is_one_line(tmp_path: Path) -> None:
    config = _site_with_runs(tmp_path, {"7": (2, 2)})
    out = tmp_path / "out"
    result = _export(config, "--run", "99", "--out", str(out))
    assert result.returncode == 2
    line = one_line_error(result)
    assert "unknown run '99'" in line and "holds runs 7" in line
    assert not out.exists()


def test_a_site_without_runs_has_nothing_to_export(tmp_path: Path) -> None:
    config = _site_with_runs(tmp_path, {})
    result = _export(config, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "applied no run's aggregate: nothing to export" in one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_a_run_not_completed_is_refused(tmp_path: Path) -> None:
    config = _site_with_runs(tmp_path, {"7": (3, 2)})
    out = tmp_path / "out"
    result = _export(config, "--run", "7", "--out", str(out))
    assert result.returncode == 2
    assert "run 7 is not completed at site" in one_line_error(result)
    assert "includes round 2 of 3" in result.stderr
    assert not out.exists()


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    config = _site_with_runs(tmp_path, {"7": (2, 2)})
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    result = _export(config, "--out", str(out))
    assert result.returncode == 2
    assert "already exists; nothing was written" in one_line_error(result)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_export_needs_out_and_its_options_belong_to_it(tmp_path: Path) -> None:
    config = _site_with_runs(tmp_path, {"7": (2, 2)})
    result = _export(config)
    assert result.returncode == 2
    assert "export needs --out DIR" in one_line_error(result)
    result = fl_client("--site", SITES[0], "--config", str(config), "--out", "x", "--check")
    assert result.returncode == 2
    assert "--out belongs to the export command" in one_line_error(result)
    result = fl_client("--site", SITES[0], "--config", str(config), "export", "--out", "x",
                       "--yes", "abc")  # fmt: skip
    assert result.returncode == 2
    assert "--yes belongs to the trust command" in one_line_error(result)
    assert not Path("x").exists()


def test_help_tells_of_export() -> None:
    result = fl_client("--help", timeout=60)
    assert result.returncode == 0
    for word in ("export", "--run ID", "--out DIR", "PeftModel.from_pretrained", "model card"):
        assert word in " ".join(result.stdout.split()), word


def test_a_record_that_cannot_be_kept_does_not_fail_the_round(tmp_path: Path) -> None:
    """The aggregate is applied either way; only a later export needs the record."""
    keep_applied_safely(tmp_path, 5, {"no": "plan"}, {"anything": 1}, {})
    assert RunRecords(tmp_path).runs() == []


def test_audit_privacy_attacks_the_runs_model_with_the_sites_records(head_run: Federation) -> None:
    site = SITES[0]
    result = fl_client(
        "--site", site, "--config", str(head_run.config_path(site)), "audit-privacy",
        "--run", str(head_run.flower_run_id),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["site"] == site and figures["run"] == str(head_run.flower_run_id)
    assert figures["attack"] == "loss-threshold" and figures["members"] > 0
    assert 0 <= figures["auc_low"] <= figures["auc"] <= figures["auc_high"] <= 1
    assert figures["epsilon_lower"] >= 0
    assert "AUC" in result.stderr and "empirical ε" in result.stderr


def test_audit_privacy_of_an_unknown_run_or_with_export_options_is_one_line(
    tmp_path: Path,
) -> None:
    config = _site_with_runs(tmp_path, {"7": (2, 2)})
    base = ("--site", SITES[0], "--config", str(config), "audit-privacy")
    unknown = fl_client(*base, "--run", "99", timeout=120)
    assert unknown.returncode == 2
    assert "applied no aggregate of run '99'" in one_line_error(unknown)
    foreign = fl_client(*base, "--out", str(tmp_path / "x"), timeout=120)
    assert foreign.returncode == 2
    assert "--out belongs to the export command" in one_line_error(foreign)


def test_audit_privacy_attach_signs_a_statement_the_ledger_takes_and_the_audit_shows(
    head_run: Federation,
) -> None:
    """Site → coordinator → auditor: the signed file, `fl-coordinator attach-statement`, and
    `fl-audit verify` showing the result against the site's recorded ε."""
    from fedseal.client.site_keys import load_site_keys
    from fedseal.contract.audit_statement import SignedAuditStatement

    site = SITES[0]
    config = head_run.config(site)
    result = fl_client(
        "--site", site, "--config", str(head_run.config_path(site)), "audit-privacy",
        "--run", str(head_run.flower_run_id), "--attach",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = config.site.state_dir / "audits" / f"{head_run.flower_run_id}.json"
    assert json.loads(result.stdout.strip().splitlines()[-1])["statement"] == str(path)
    assert f"fl-coordinator attach-statement {path}" in result.stderr
    signed = SignedAuditStatement.from_json(path.read_text(encoding="utf-8"))
    statement = signed.statement
    assert signed.verify(load_site_keys(site, config.site.state_dir).public().identity)
    assert (statement.site, statement.flower_run_id) == (site, str(head_run.flower_run_id))
    assert (statement.applied_round, statement.adapter_digest) == (2, _final_digest(head_run))
    assert str(statement.attack) == "loss-threshold" and statement.members > 0

    database = f"sqlite:///{head_run.root / 'registry.db'}"
    bin_dir = Path(sys.executable).parent
    attach = subprocess.run(
        [str(bin_dir / "fl-coordinator"), "attach-statement", str(path), "--database", database,
         "--state", str(head_run.root / "coordinator")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert attach.returncode == 0, attach.stderr
    assert (
        f"attached site {site}'s privacy audit of run {head_run.registry_run_id}" in attach.stdout
    )
    audit = subprocess.run(
        [str(bin_dir / "fl-audit"), "verify", "--database", database],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = audit.stdout.splitlines()
    shown = [line for line in lines if line.startswith("empirical audit events#")]
    assert len(shown) == 1 and f"site {site}, run {head_run.registry_run_id} round 2" in shown[0]
    assert "consistent with recorded ε" in shown[0] or "not comparable" in shown[0], shown
    assert any(line.startswith("check 7 ") and line.endswith(": pass") for line in lines), lines


def test_audit_privacy_statement_goes_with_attach(tmp_path: Path) -> None:
    config = _site_with_runs(tmp_path, {"7": (2, 2)})
    result = fl_client(
        "--site", SITES[0], "--config", str(config), "audit-privacy", "--statement", "x.json",
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--statement PATH goes with --attach" in one_line_error(result)
    help_text = " ".join(fl_client("--help", timeout=60).stdout.split())
    assert "--attach" in help_text and "fl-coordinator attach-statement FILE" in help_text
