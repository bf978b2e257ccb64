"""Fuzz: what a site reads from outside — its config file, and the coordinator's messages.

* A site config (random and mutated TOML, random documents): `SiteConfigError`, one line.
* The he+ss stage handlers (`SecureSite`) and the run plan, given hostile message fields:
  `MessageFieldError`, a `SecureAggError`, `PermissionError` or `RunPlanError`, never another
  exception and never an allocation sized by a number the coordinator chose.
* The ClientApp relay refuses a message over the site's limit by its size, before reading it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from fuzzing import FUZZ, FUZZ_SLOW, hostile_values, mutated, no_hang
from hypothesis import given
from hypothesis import strategies as st
from trust_support import pin_everywhere, trust_of

from fedseal.client.client_app import relay
from fedseal.client.errors import SiteRefusal
from fedseal.client.site_config import SiteConfigError, load_site_config, parse_site_config
from fedseal.client.site_keys import create_site_keys
from fedseal.client.stages.secure import SecureSite
from fedseal.contract.message_fields import MessageFieldError
from fedseal.contract.run_plan import RunPlan, RunPlanError
from fedseal.contract.wire import PROTOCOL_VERSION, Key, MessageType, RecordName
from fedseal.secure_agg.errors import SecureAggError
from fedseal.secure_agg.params import Mode, params_to_json, plan

VALID_TOML = b"""
[site]
name = "hospital_a"
state_dir = "state"
device = "cpu"

[coordinator]
address = "127.0.0.1:9092"
connect_timeout_s = 5

[data]
source = "demo"
scenario = "hospitals"
num_sites = 3

[training]
batch_size = 16

[limits]
max_message_mib = 64
max_control_message_mib = 2

[dp]
epsilon = 10.0
target_epsilon = 3.0
"""

toml_values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(("~nobody_here/x", "a\x00b", "/" * 300, "../../etc", "cuda:99")),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SECTIONS = ("site", "coordinator", "data", "training", "limits", "dp", "other")


@FUZZ
@given(data=st.data())
def test_site_config_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "site.toml"
    path.write_bytes(data.draw(st.one_of(st.binary(max_size=200), mutated(VALID_TOML))))
    with no_hang(10):
        try:
            load_site_config(path)
        except SiteConfigError as exc:
            assert "\n" not in str(exc).strip()
        else:
            assert True


@FUZZ
@given(data=st.data())
def test_site_config_documents(data):
    import tomllib

    document = tomllib.loads(VALID_TOML.decode())
    for _ in range(data.draw(st.integers(1, 3))):
        section = data.draw(st.sampled_from(SECTIONS))
        table = document.setdefault(section, {})
        if isinstance(table, dict) and data.draw(st.booleans()):
            table[data.draw(st.sampled_from([*table, "x"]))] = data.draw(toml_values)
        else:
            document[section] = data.draw(toml_values)
    with contextlib.suppress(SiteConfigError):
        parse_site_config(document, Path("/tmp/fuzz/site.toml"))


def test_oversize_config_is_refused_before_parsing(tmp_path):
    path = tmp_path / "site.toml"
    path.write_bytes(VALID_TOML + b"#" * (1 << 20))
    with pytest.raises(SiteConfigError, match=r"exceeds the limit of 1048576 bytes"):
        load_site_config(path)


# -- coordinator messages at the site -------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[SecureSite, dict[str, Any]]:
    """A site with keys, and the fields of a valid he+ss advertise message for it."""
    from fedseal.contract.site_identity import encode_directory

    folder = tmp_path_factory.mktemp("site")
    keys = {name: create_site_keys(name, folder / name)[0] for name in ("site_a", "site_b")}
    params = plan(vector_length=20, clip=1.0, max_weight=10, n_sites=2, mode=Mode.HE_SS)
    fields = {
        Key.PROTOCOL_VERSION: PROTOCOL_VERSION,
        Key.RUN_ID: 5,
        Key.ROUND: 1,
        Key.MODE: "he+ss",
        Key.PROTOCOL_PARAMS: params_to_json(params),
        Key.DIRECTORY: encode_directory({n: k.public() for n, k in keys.items()}),
        Key.SAMPLED: '["site_a", "site_b"]',
        Key.SURVIVORS: '["site_a", "site_b"]',
        Key.RELAYED: [b"\x00\x00\x00\x01x"],
        Key.SEALED_KEY: b"\x00" * 8,
        Key.CUSTODIAN: "site_b",
    }
    pin_everywhere(keys, {name: folder / name for name in keys})
    return SecureSite(
        keys["site_a"], folder / "site_a", trust_of("site_a", folder / "site_a")
    ), fields


EXPECTED = (MessageFieldError, SecureAggError, PermissionError)


@FUZZ_SLOW
@given(data=st.data())
def test_stage_handlers_given_hostile_fields(site, data):
    secure, valid = site
    fields = dict(valid)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(fields)))
        if data.draw(st.booleans()):
            fields.pop(key)
        else:
            fields[key] = data.draw(
                st.one_of(hostile_values(), st.sampled_from((10**9, [10**9], [2**62])))
            )
    stage = data.draw(st.sampled_from(("advertise", "share", "consistency", "release", "install")))
    with no_hang(15):
        try:
            if stage != "advertise":
                secure.advertise(5, valid)  # so the later stages have a round to refer to
            getattr(secure, stage)(5, fields)
        except EXPECTED:
            pass


@FUZZ
@given(data=st.data())
def test_run_plan_from_hostile_fields(data):
    config = RunPlan("minilm-l6", ("a", "b"), 4, 8.0, 0.0, 0, 1, 0.01, 16, 3).to_config()
    key = data.draw(st.sampled_from(sorted(config)))
    config[key] = data.draw(
        st.one_of(hostile_values(), st.sampled_from(("[" * 5000, "1e999", float("inf"))))
    )
    with contextlib.suppress(RunPlanError):
        RunPlan.from_config(config)


def test_relay_refuses_an_oversize_message_before_reading_it(tmp_path):
    config = tmp_path / "site.toml"
    config.write_bytes(
        VALID_TOML.replace(b"max_control_message_mib = 2", b"max_control_message_mib = 1")
    )
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 1, 1
    big = ConfigRecord({Key.PROTOCOL_VERSION: PROTOCOL_VERSION, "blob": b"\x00" * (1 << 20)})
    message = Message(RecordDict({RecordName.CONFIG: big}), dst_node_id=2, message_type="train")
    with pytest.raises(
        SiteRefusal,
        match=r"refused: advertise message of \d+ bytes exceeds the limit of 1048576 bytes",
    ):
        relay(MessageType.ADVERTISE, message, config)
