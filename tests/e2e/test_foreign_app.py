"""End-to-end: a coordinator ships a Flower App of its own; the site's SuperNode refuses it.

Real processes on 127.0.0.1: a SuperLink, one site started as operators start it
(`fl-client --site NAME`), and, as a control, a plain `flower-supernode` given the same site's
config. The coordinator submits a foreign app whose ClientApp reads the site's config and lists
its key folder, then writes a marker file. The control node runs it (the attack is real: the
marker appears, naming the site's private keys); the site refuses it before Flower installs or
imports anything, says so in one line, answers the round with an error and keeps serving.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedseal.client.site_keys import create_site_keys
from fedseal.coordinator.flower_app import submit_run
from fedseal.demo.federation import LocalFederation, free_port
from fedseal.models.data import scenario_site_names
from fedseal.registry import open_registry

pytestmark = pytest.mark.e2e

FLOWER_SUPERNODE = str(Path(sys.executable).with_name("flower-supernode"))
FL_CLIENT = str(Path(sys.executable).with_name("fl-client"))

_SERVER_APP = '''
"""The coordinator's side of the foreign app: ask every node, write down what came back."""
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config["marker-dir"]))
    want = int(context.run_config["nodes"])
    deadline = time.monotonic() + 90
    nodes = list(grid.get_node_ids())
    while len(nodes) < want and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    messages = [
        Message(RecordDict({"q": ConfigRecord({"x": 1})}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = []
    for reply in grid.send_and_receive(messages, timeout=90):
        entry = {"node": reply.metadata.src_node_id}
        if reply.has_error():
            entry.update(code=int(reply.error.code), reason=str(reply.error.reason))
        else:
            entry.update(dict(reply.content["r"].items()))
        replies.append(entry)
    (out / "replies.json").write_text(json.dumps(replies))
'''

_CLIENT_APP = '''
"""The foreign ClientApp: what any code the coordinator ships could do at a site."""
import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedseal.client.site_config import load_site_config

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    site = str(context.node_config.get("site", "?"))
    config = load_site_config(Path(str(context.node_config["config"])))
    keys = sorted(p.name for p in (config.site.state_dir / "keys").iterdir())
    marker = Path(str(context.run_config["marker-dir"])) / f"{site}.marker"
    marker.write_text(json.dumps({"site": site, "keys": keys}))
    return Message(RecordDict({"r": ConfigRecord({"site": site, "keys": len(keys)})}), reply_to=msg)
'''


def write_foreign_app(folder: Path, marker_dir: Path, nodes: int) -> Path:
    """A Flower App of the coordinator's own: its own code, its own components, as `flwr run`
    would submit it."""
    package = folder / "mallory"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "server_app.py").write_text(_SERVER_APP)
    (package / "client_app.py").write_text(_CLIENT_APP)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "helpful-run"
            version = "1.0.0"
            description = "Looks like a run"
            license = "Apache-2.0"
            dependencies = []

            [tool.flwr.app]
            publisher = "mallory"

            [tool.flwr.app.components]
            serverapp = "mallory.server_app:app"
            clientapp = "mallory.client_app:app"

            [tool.flwr.app.config]
            marker-dir = {json.dumps(str(marker_dir))}
            nodes = {nodes}
            """
        )
    )
    return folder


def _wait_for(path: Path, timeout_s: float, federation: LocalFederation) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        dead = [c.name for c in federation.processes.dead()]
        if dead:
            pytest.fail(f"{dead} exited: {federation.processes.children[dead[0]].log_tail(10)}")
        if time.monotonic() > deadline:
            logs = {n: c.log_tail(15) for n, c in federation.processes.children.items()}
            pytest.fail(f"{path.name} did not appear in {timeout_s:g} s: {logs}")
        time.sleep(0.5)


def test_a_foreign_app_is_refused_by_the_site_and_run_by_a_plain_supernode(
    tmp_path: Path,
) -> None:
    sites = scenario_site_names("hospitals", 2)  # the scenario's smallest; one of them joins
    site = sites[0]
    federation = LocalFederation(
        workdir=tmp_path,
        scenario="hospitals",
        sites=sites,
        registry=open_registry(f"sqlite:///{tmp_path / 'registry.db'}"),
        max_eval_examples=16,
    )
    state_dir = federation.state_root / site
    create_site_keys(site, state_dir)  # what `fl-client enroll` leaves in the site's state
    markers = tmp_path / "markers"
    markers.mkdir()
    app = write_foreign_app(tmp_path / "foreign-app", markers, nodes=2)
    try:
        federation.start_superlink()
        # as on the site's own machine: its Flower home is the default, inside its state
        site_env = federation.environment()
        site_env.pop("FLWR_HOME")
        federation.processes.start(
            f"site-{site}",
            [FL_CLIENT, "--site", site, "--config", str(federation.site_configs[site])],
            env=site_env,
        )
        control_config = f'site="control" config={json.dumps(str(federation.site_configs[site]))}'
        federation.processes.start(
            "control-supernode",
            [
                FLOWER_SUPERNODE,
                "--insecure",
                "--superlink",
                federation.address,
                "--node-config",
                control_config,
                "--port",
                str(free_port()),
            ],
            env={**federation.environment(), "FLWR_HOME": str(tmp_path / "control-flwr")},
        )
        submit_run(app, federation.flwr_home)
        _wait_for(markers / "replies.json", 120, federation)
        site_alive = federation.processes.children[f"site-{site}"].alive()
    finally:
        federation.stop()

    # the attack is real: an unrestricted SuperNode ran the foreign ClientApp, which read the
    # site's config and listed its private keys
    stolen = json.loads((markers / "control.marker").read_text())
    assert stolen["site"] == "control" and "identity.key" in stolen["keys"], stolen
    assert list((tmp_path / "control-flwr").glob("apps/mallory.*"))  # Flower installed it
    # the site did not: no marker, nothing of the foreign app installed in its Flower home
    assert not (markers / f"{site}.marker").exists()
    assert (state_dir / "flwr-home").is_dir()
    assert not list((state_dir / "flwr-home").glob("apps/*"))
    # the coordinator got an error reply from the site, and content from the control node only
    replies = json.loads((markers / "replies.json").read_text())
    assert len(replies) == 2, replies
    errors = [r for r in replies if "reason" in r]
    assert [r.get("site") for r in replies if "reason" not in r] == ["control"], replies
    assert len(errors) == 1 and "refused" in errors[0]["reason"], replies
    # the site said so locally, in one line naming what it refused, and kept serving
    log = (federation.processes.log_dir / f"site-{site}.log").read_text(errors="replace")
    refusals = [line for line in log.splitlines() if "refused the Flower App" in line]
    assert refusals, log[-3000:]
    assert "mallory.client_app:app" in refusals[0] and site in refusals[0], refusals[0]
    assert site_alive
