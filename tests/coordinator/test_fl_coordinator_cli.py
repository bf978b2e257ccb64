"""`fl-coordinator`: init-pki, site-auth-key, enroll, revoke, status, and one-line errors.

The Flower part (`flwr supernode register/unregister`) runs against a stand-in `flwr` script
that records its arguments and answers like flwr 1.41 does with `--format json`.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from fedseal.client.site_keys import create_site_keys
from fedseal.coordinator import flower_app
from fedseal.coordinator.cli import main
from fedseal.registry import EventAction, Registry, open_registry, sqlite_url
from fedseal.registry.ledger_key import load_ledger_key

FAKE_FLWR = """#!{python}
import json, os, sys
with open(os.environ["FAKE_FLWR_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "home": os.environ.get("FLWR_HOME")}}) + "\\n")
answer = os.environ.get("FAKE_FLWR_ANSWER", "ok")
node = int(os.environ.get("FAKE_FLWR_NODE", "77"))
if answer == "ok" and sys.argv[1] == "run":
    print(json.dumps({{"success": True, "run-id": 4242}}))
elif answer == "ok":
    print(f"✅ SuperNode {{node}} registered successfully.")
    print(json.dumps({{"success": True, "node-id": node}}))
else:
    print(json.dumps({{"success": False,
                      "error-message": "Using SuperLink: fedseal (x)\\n\\n" + answer}}))
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("FEDSEAL_DATABASE_URL", "FEDSEAL_COORDINATOR_STATE", "FLWR_HOME"):
        monkeypatch.delenv(name, raising=False)
    fake = tmp_path / "flwr"
    fake.write_text(FAKE_FLWR.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setattr(flower_app, "_flwr_executable", lambda: str(fake))
    monkeypatch.setenv("FAKE_FLWR_LOG", str(tmp_path / "flwr.log"))
    (tmp_path / "fh").mkdir()
    (tmp_path / "fh" / "config.toml").write_text('[superlink]\ndefault = "fedseal"\n')
    return tmp_path


def _flwr_calls(root: Path) -> list[dict[str, object]]:
    log = root / "flwr.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _site_keys(root: Path, site: str = "hospital_a") -> Path:
    create_site_keys(site, root / f"{site}-state")
    return root / f"{site}-state" / "keys" / "site-public-keys.json"


def _ready(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-pki", "--out", "pki", "--state", "state"]) == 0
    capsys.readouterr()


def _registry(root: Path) -> Registry:
    state = root / "state"
    return open_registry(sqlite_url(state / "registry.db"), ledger_key=load_ledger_key(state))


def test_init_pki_writes_the_pki_and_ledger_key_and_is_idempotent(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init-pki", "--out", "pki", "--state", "state"]) == 0
    out = capsys.readouterr().out
    assert "made pki/server.pem" in out and "made the coordinator's ledger key" in out
    for name in ("ca.crt", "server.pem", "server.key"):
        assert (env / "pki" / name).is_file()
    assert stat.S_IMODE((env / "pki" / "server.key").stat().st_mode) == 0o600
    key = (env / "state" / "keys" / "ledger.key").read_bytes()
    server = (env / "pki" / "server.pem").read_bytes()
    assert main(["init-pki", "--out", "pki", "--state", "state"]) == 0
    out = capsys.readouterr().out
    assert "kept existing pki/server.pem (not overwritten)" in out
    assert "kept existing the coordinator's ledger key" in out
    assert (env / "state" / "keys" / "ledger.key").read_bytes() == key
    assert (env / "pki" / "server.pem").read_bytes() == server


def test_site_auth_key_command(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site-auth-key", "--out", "a.key"]) == 0
    assert (env / "a.key.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert main(["site-auth-key", "--out", "missing/a.key"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fl-coordinator: error:") and "\n" not in err


def test_enroll_records_a_chained_event_and_registers_with_flower(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ready(env, capsys)
    keys = _site_keys(env)
    assert main(["site-auth-key", "--out", "a.key"]) == 0
    argv = ["enroll", "--site", "hospital_a", "--keys", str(keys), "--state", "state"]
    flower = ["--auth-public-key", "a.key.pub", "--flwr-home", "fh", "--connection", "link"]
    assert main(argv + flower) == 0
    out = capsys.readouterr().out
    assert "enrolled site hospital_a" in out and "as node 77" in out
    with _registry(env) as registry:
        events = registry.events(site="hospital_a")
        assert [e.action for e in events] == [EventAction.SITE_ENROLLED]
        assert "hospital_a" in registry.site_public_keys()
        assert registry.chain_head() is not None
    (call,) = _flwr_calls(env)
    assert call["argv"] == [
        "supernode", "register", "a.key.pub", "link", "--name", "hospital_a", "--format", "json"
    ]  # fmt: skip
    assert call["home"] == "fh"
    nodes = json.loads((env / "state" / "flower-nodes.json").read_text())
    assert nodes["hospital_a"]["node_id"] == 77

    # again, with Flower answering that the key is in use: nothing new, exit 0
    monkeypatch.setenv("FAKE_FLWR_ANSWER", "[code: 23] Public key already in use.")
    assert main(argv + flower) == 0
    out = capsys.readouterr().out
    assert "nothing changed" in out and "already registered with Flower as node 77" in out
    with _registry(env) as registry:
        assert len(registry.events(site="hospital_a")) == 1


def test_a_failing_flwr_command_is_one_line_and_exit_4(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ready(env, capsys)
    keys = _site_keys(env)
    main(["site-auth-key", "--out", "a.key"])
    capsys.readouterr()
    monkeypatch.setenv("FAKE_FLWR_ANSWER", "Connection to the SuperLink is unavailable.")
    code = main(
        [
            *("enroll", "--site", "hospital_a", "--keys", str(keys), "--state", "state"),
            *("--auth-public-key", "a.key.pub", "--flwr-home", "fh"),
        ]
    )
    assert code == 4
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err == (
        "fl-coordinator: error: site hospital_a is enrolled in the registry, but its SuperNode "
        "key was not registered with Flower: `flwr supernode register` failed: Connection to "
        "the SuperLink is unavailable."
    )


def test_revoke_records_the_event_and_unregisters_the_node(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ready(env, capsys)
    keys = _site_keys(env)
    main(["site-auth-key", "--out", "a.key"])
    base = ["--state", "state", "--flwr-home", "fh"]
    enroll = ["enroll", "--site", "hospital_a", "--keys", str(keys), "--auth-public-key"]
    assert main([*enroll, "a.key.pub", *base]) == 0
    assert main(["revoke", "--site", "hospital_a", "--reason", "key lost", *base]) == 0
    out = capsys.readouterr().out
    assert "revoked site hospital_a" in out and "unregistered Flower node 77" in out
    assert _flwr_calls(env)[-1]["argv"] == [
        "supernode", "unregister", "77", "fedseal", "--format", "json"
    ]  # fmt: skip
    with _registry(env) as registry:
        actions = [e.action for e in registry.events(site="hospital_a")]
        assert actions == [EventAction.SITE_ENROLLED, EventAction.SITE_REVOKED]
        assert registry.events(site="hospital_a")[-1].details == {"reason": "key lost"}
        assert "hospital_a" not in registry.site_public_keys()
    assert "hospital_a" not in json.loads((env / "state" / "flower-nodes.json").read_text())
    # a revoked site cannot be enrolled again
    assert main(["enroll", "--site", "hospital_a", "--keys", str(keys), "--state", "state"]) == 2
    assert "revoked" in capsys.readouterr().err


def test_status_shows_runs_rounds_and_budgets(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ready(env, capsys)
    keys = _site_keys(env)
    assert main(["enroll", "--site", "hospital_a", "--keys", str(keys), "--state", "state"]) == 0
    with _registry(env) as registry:
        registry.record_budget_change("hospital_a", 3.0)
        run_id = registry.start_run(
            scenario="icd10", protocol_mode="plain", config={}, rounds_planned=2, flower_run_id=9
        )
        round_id = registry.start_round(run_id, 1, ["hospital_a"])
        registry.record_contribution(round_id, "hospital_a", status="contributed")
        registry.finish_round(round_id, status="completed")
    capsys.readouterr()
    # read-only: works without the ledger key
    (env / "state" / "keys" / "ledger.key").unlink()
    assert main(["status", "--state", "state"]) == 0
    out = capsys.readouterr().out
    assert "icd10" in out and "1/2" in out
    assert f"Rounds of run {run_id}" in out and "completed" in out
    assert "hospital_a  enrolled" in out and "3" in out
    assert main(["status", "--state", "state", "--json", "--run", str(run_id)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sites"]["hospital_a"] == {
        "status": "enrolled",
        "budget": 3.0,
        "epsilon_spent": None,
        "rounds_charged": 0,
    }
    assert report["rounds"][0]["participants"] == 1
    assert main(["status", "--state", "state", "--run", "99"]) == 2
    assert "no run with id 99" in capsys.readouterr().err


ENROLL_A = ["enroll", "--site", "a", "--keys", "KEYS", "--state", "state"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["enroll", "--site", "a", "--keys", "nope.json", "--state", "state"], "does not exist"),
        (["enroll", "--site", "a", "--keys", "bad.json", "--state", "state"], "not a fedseal"),
        (["enroll", "--site", "b", "--keys", "KEYS", "--state", "state"], "keys of site 'a'"),
        (["enroll", "--site", "a", "--keys", "KEYS", "--state", "nostate"], "init-pki"),
        (
            [*ENROLL_A, "--auth-public-key", "bad.json", "--flwr-home", "fh"],
            "not an OpenSSH public key",
        ),
        (
            [*ENROLL_A, "--auth-public-key", "a.key.pub"],
            "--flwr-home",
        ),
        (["revoke", "--site", "ghost", "--reason", "x", "--state", "state"], "no site called"),
        (
            ["status", "--state", "state", "--database", "sqlite:////no/such/dir/r.db"],
            "no registry",
        ),
        (["status", "--database", "nosuchdialect://x"], "unavailable"),
        (["init-pki", "--out", "pki", "--days", "0", "--state", "state"], "--days"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    _ready(env, capsys)
    keys = _site_keys(env, "a")
    main(["site-auth-key", "--out", "a.key"])
    (env / "bad.json").write_text("{not json")
    capsys.readouterr()
    argv = [str(keys) if part == "KEYS" else part for part in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fl-coordinator: error:") and "\n" not in err
    assert message in err
    assert "Traceback" not in err


def test_a_new_supernode_key_replaces_the_old_one(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key rotation: enrolling a site with a new SuperNode key unregisters the previous one."""
    _ready(env, capsys)
    keys = _site_keys(env)
    argv = ["enroll", "--site", "hospital_a", "--keys", str(keys), "--state", "state"]
    argv += ["--flwr-home", "fh"]
    assert main(["site-auth-key", "--out", "old.key"]) == 0
    assert main([*argv, "--auth-public-key", "old.key.pub"]) == 0
    monkeypatch.setenv("FAKE_FLWR_NODE", "78")
    assert main(["site-auth-key", "--out", "new.key"]) == 0
    capsys.readouterr()
    assert main([*argv, "--auth-public-key", "new.key.pub"]) == 0
    out = capsys.readouterr().out
    assert "as node 78" in out and "previous SuperNode key (Flower node 77)" in out
    calls = [call["argv"][:4] for call in _flwr_calls(env)]
    assert calls[-2:] == [
        ["supernode", "register", "new.key.pub", "fedseal"],
        ["supernode", "unregister", "77", "fedseal"],
    ]
    assert (
        json.loads((env / "state" / "flower-nodes.json").read_text())["hospital_a"]["node_id"] == 78
    )


def test_start_run_submits_once_and_follows_an_unfinished_run(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ready(env, capsys)
    start = ["start-run", "--state", "state", "--flwr-home", "fh", "--rounds", "2"]
    assert main(start) == 2
    assert "no site is enrolled" in capsys.readouterr().err
    for site in ("hospital_a", "hospital_b"):
        keys = _site_keys(env, site)
        assert main(["enroll", "--site", site, "--keys", str(keys), "--state", "state"]) == 0
    capsys.readouterr()
    assert main(start) == 0
    assert "submitted Flower run 4242 (he+ss, 2 rounds)" in capsys.readouterr().out
    (call,) = [c for c in _flwr_calls(env) if c["argv"][0] == "run"]
    app = Path(call["argv"][1])
    config = (app / "pyproject.toml").read_text()
    assert "min-sites = 2" in config and "rounds = 2" in config
    assert json.loads((env / "state" / "current-run.json").read_text()) == {"flower_run_id": 4242}
    # started again (a restarted job): the run is not in the registry yet, so it is followed
    assert main(start) == 0
    assert "following the unfinished Flower run 4242" in capsys.readouterr().out
    assert len([c for c in _flwr_calls(env) if c["argv"][0] == "run"]) == 1


def test_help_of_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("init-pki", "site-auth-key", "enroll", "revoke", "start-run", "status"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "flwr supernode register KEY.pub CONNECTION --name SITE" in out
    assert "flwr supernode unregister NODE_ID CONNECTION" in out
