"""`fl-coordinator attach-statement FILE`: a site's signed privacy audit statement checked and
appended to the ledger chain; every mistake is one line and exit code 2, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedseal.client.site_keys import create_site_keys
from fedseal.contract.audit_statement import AuditAttack, PrivacyAuditStatement
from fedseal.coordinator.cli import main
from fedseal.registry import EventAction, Registry, open_registry, sqlite_url
from fedseal.registry.ledger_key import load_ledger_key

DIGEST = "ef" * 32


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    """A coordinator state with hospital_a enrolled and run 9001 of two rounds; hospital_b has
    keys but is not enrolled."""
    monkeypatch.chdir(tmp_path)
    for name in ("FEDSEAL_DATABASE_URL", "FEDSEAL_COORDINATOR_STATE", "FLWR_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert main(["init-pki", "--out", "pki", "--state", "state"]) == 0
    for site in ("hospital_a", "hospital_b"):
        create_site_keys(site, tmp_path / site)
    keys = tmp_path / "hospital_a" / "keys" / "site-public-keys.json"
    assert main(["enroll", "--site", "hospital_a", "--keys", str(keys), "--state", "state"]) == 0
    with _registry(tmp_path) as registry:
        run = registry.start_run(
            scenario="heart", protocol_mode="plain", config={}, rounds_planned=2, flower_run_id=9001
        )
        for number, digest in ((1, "ab" * 32), (2, DIGEST)):
            round_id = registry.start_round(run, number, ["hospital_a"])
            registry.finish_round(round_id, status="completed", global_digest=digest)
    capsys.readouterr()
    return tmp_path


def _registry(root: Path) -> Registry:
    state = root / "state"
    return open_registry(sqlite_url(state / "registry.db"), ledger_key=load_ledger_key(state))


def _statement(**overrides: Any) -> PrivacyAuditStatement:
    values: dict[str, Any] = {
        "site": "hospital_a",
        "flower_run_id": "9001",
        "applied_round": 2,
        "adapter_digest": DIGEST,
        "attack": AuditAttack.LOSS_THRESHOLD,
        "members": 120,
        "non_members": 80,
        "auc": 0.52,
        "auc_low": 0.44,
        "auc_high": 0.6,
        "epsilon_lower": 0.0,
        "confidence": 0.95,
        "delta": 1e-5,
        "audited_at": "2026-03-02T08:00:00+00:00",
    }
    values.update(overrides)
    return PrivacyAuditStatement(**values)


def _file(
    root: Path, name: str = "audit.json", *, signer: str | None = None, **overrides: Any
) -> Path:
    from fedseal.client.site_keys import load_site_keys

    statement = _statement(**overrides)
    keys = load_site_keys(signer or statement.site, root / (signer or statement.site))
    path = root / name
    path.write_text(statement.sign(keys.identity).to_json(), encoding="utf-8")
    return path


def _attach(path: Path | str) -> int:
    return main(["attach-statement", str(path), "--state", "state"])


def test_a_signed_statement_is_attached_once(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(env)
    assert _attach(path) == 0
    out = capsys.readouterr().out
    assert "attached site hospital_a's privacy audit of run 1, chain entry" in out
    assert "loss-threshold attack, AUC 0.520 [0.440, 0.600], empirical ε ≥ 0.00" in out
    with _registry(env) as registry:
        (event,) = [
            e for e in registry.events(site="hospital_a") if e.action is EventAction.PRIVACY_AUDIT
        ]
        assert event.details["statement"] == _statement().fields()
        head = registry.chain_head()
    assert _attach(path) == 0
    assert "already on the ledger" in capsys.readouterr().out
    with _registry(env) as registry:
        assert registry.chain_head() == head


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing.json", "missing.json does not exist"),
        (lambda root: root, "is a folder, not a statement file"),
        (lambda root: _text(root, "{not json"), "not a privacy audit statement file (not JSON)"),
        (lambda root: _text(root, '{"format": "other"}'), "its format is not"),
        (lambda root: _text(root, "x" * 40_000), "too large"),
        (lambda root: _edited(root, auc=2.0), "auc must be in [0, 1]"),
        (lambda root: _edited(root, epsilon_lower=3.0), "does not verify with its enrolled"),
        (lambda root: _file(root, flower_run_id="4242"), "no run with Flower run id 4242"),
        (lambda root: _file(root, site="hospital_b"), "site hospital_b is not enrolled"),
        (lambda root: _file(root, signer="hospital_b"), "does not verify with its enrolled"),
        (lambda root: _file(root, applied_round=1), "but the registry holds global digest"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(
    env: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    with _registry(env) as registry:
        head = registry.chain_head()
    path = make(env)
    assert _attach(path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fl-coordinator: error:") and "\n" not in err, err
    assert message in err and "Traceback" not in err
    with _registry(env) as registry:
        assert registry.chain_head() == head


def _text(root: Path, content: str) -> Path:
    path = root / "bad.json"
    path.write_text(content, encoding="utf-8")
    return path


def _edited(root: Path, **changes: Any) -> Path:
    """A genuine file whose statement was edited after signing."""
    path = _file(root)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["statement"].update(changes)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_help_tells_what_it_checks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["attach-statement", "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "audit-privacy --attach" in out and "enrolled identity key" in out
