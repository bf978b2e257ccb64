"""A coordinator that lies: each attack against the real site code is refused, logged, and
leaks no key and no update (the site takes members, custodian, mode and threshold from its
pinned manifest and its own `[secure_agg]` policy, never from the message)."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from trust_support import pin_everywhere, trust_of

from fedseal.client.site_config import load_site_config
from fedseal.client.site_keys import SiteKeys, create_site_keys
from fedseal.client.site_service import SiteService
from fedseal.client.stages.secure import SecureSite
from fedseal.client.trust import TrustRefusal
from fedseal.contract.site_identity import encode_directory
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.run_settings import RunSettings, default_run_config
from fedseal.secure_agg import bfv, recipe
from fedseal.secure_agg.errors import InvalidMessage
from fedseal.secure_agg.messages import Signed
from fedseal.secure_agg.params import Mode, params_to_json, plan

NAMES = ("hospital_a", "hospital_b", "hospital_c")
RUN = 7


def _params(mode: Mode = Mode.HE_SS, colluding: int = 1, n_sites: int = 3, **kwargs: Any):
    return plan(
        vector_length=16,
        clip=1.0,
        max_weight=10,
        n_sites=n_sites,
        mode=mode,
        max_colluding=colluding,
        **kwargs,
    )


@pytest.fixture()
def federation(tmp_path: Path):
    """Three member sites that pinned one manifest (a minority, 1 site, may collude)."""
    keys = {name: create_site_keys(name, tmp_path / name)[0] for name in NAMES}
    manifest = pin_everywhere(
        keys, {n: tmp_path / n for n in NAMES}, max_colluding=1, modes=frozenset({Mode.HE_SS})
    )
    sites = {
        n: SecureSite(keys[n], tmp_path / n, trust_of(n, tmp_path / n, frozenset({Mode.HE_SS})))
        for n in NAMES
    }
    directory = {n: k.public() for n, k in keys.items()}
    fields = {
        Key.RUN_ID: RUN,
        Key.MODE: "he+ss",
        Key.PROTOCOL_PARAMS: params_to_json(_params()),
        Key.DIRECTORY: encode_directory(directory),
    }
    return keys, sites, fields, manifest, tmp_path


def _coordinator_keys(name: str) -> SiteKeys:
    return SiteKeys(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())


def _ceremony(sites: dict[str, SecureSite], fields: dict[str, Any]) -> None:
    """The honest key ceremony: hospital_a is custodian, the others install its sealed key."""
    reply = sites["hospital_a"].keygen(RUN, fields)
    names = json.loads(reply[Key.SEALED_SITES])
    for name, sealed in zip(names, reply[Key.SEALED_KEYS], strict=True):
        sites[name].install(RUN, {**fields, Key.CUSTODIAN: "hospital_a", Key.SEALED_KEY: sealed})


def test_1_directory_injection_is_refused_and_nothing_is_sealed_to_the_coordinator(
    federation, caplog
) -> None:
    keys, sites, fields, _manifest, tmp = federation
    intruder = _coordinator_keys("coordinator_site")
    directory = {n: k.public() for n, k in keys.items()}
    injected = {**directory, "coordinator_site": intruder.public()}
    with caplog.at_level(logging.WARNING, "fedseal.client"), pytest.raises(TrustRefusal):
        sites["hospital_a"].keygen(RUN, {**fields, Key.DIRECTORY: encode_directory(injected)})
    assert "not a member in the pinned manifest" in caplog.text  # logged at the site
    # an honest name with the coordinator's sealing key in place of the member's
    swapped = dict(directory)
    swapped["hospital_b"] = type(directory["hospital_b"])(
        "hospital_b", directory["hospital_b"].identity, intruder.public().sealing
    )
    with pytest.raises(TrustRefusal, match="differ from the pinned manifest"):
        sites["hospital_a"].keygen(RUN, {**fields, Key.DIRECTORY: encode_directory(swapped)})
    assert not (tmp / "hospital_a" / "runs").exists()  # no key was made or kept


def test_2_a_fake_custodian_cannot_install_or_overwrite_the_run_key(federation) -> None:
    keys, sites, fields, _manifest, tmp = federation
    _ceremony(sites, fields)
    key_file = tmp / "hospital_b" / "runs" / str(RUN) / "federation-key.json"
    before = key_file.read_bytes()
    # a coordinator-made BFV key, sealed to hospital_b and signed by the coordinator's own key
    fake = _coordinator_keys("mallory")
    context = bfv.make_secret_context(_params().bfv)
    sealed = recipe.custodian_seal_federation_key(
        context,
        custodian=recipe.SiteIdentity("mallory", fake.identity),
        run_id=str(RUN),
        recipients={"hospital_b": keys["hospital_b"].public().sealing},
        randbytes=__import__("os").urandom,
    )["hospital_b"].to_bytes()
    attempt = {**fields, Key.CUSTODIAN: "mallory", Key.SEALED_KEY: sealed}
    with pytest.raises(TrustRefusal, match="custodian 'mallory' is not a member"):
        sites["hospital_b"].install(RUN, attempt)
    # the same forged key claimed to come from a real member: refused (second key for the run)
    with pytest.raises(TrustRefusal, match="already has a federation key"):
        sites["hospital_b"].install(RUN, {**attempt, Key.CUSTODIAN: "hospital_c"})
    assert key_file.read_bytes() == before
    # in a fresh run, the forged signature does not verify against hospital_c's pinned key
    fresh = SecureSite(
        keys["hospital_b"], tmp / "hospital_b", trust_of("hospital_b", tmp / "hospital_b")
    )
    with pytest.raises(InvalidMessage, match="failed authentication"):
        fresh.install(RUN + 1, {**attempt, Key.RUN_ID: RUN + 1, Key.CUSTODIAN: "hospital_c"})
    assert not (tmp / "hospital_b" / "runs" / str(RUN + 1) / "federation-key.json").exists()


def test_1b_a_second_keygen_for_a_run_is_refused(federation) -> None:
    _keys, sites, fields, _manifest, _tmp = federation
    _ceremony(sites, fields)
    with pytest.raises(TrustRefusal, match="already has a federation key"):
        sites["hospital_a"].keygen(RUN, fields)


def _round_fields(fields: dict[str, Any], sampled: list[str], number: int = 1, **over: Any):
    return {**fields, Key.ROUND: number, Key.SAMPLED: json.dumps(sampled), **over}


def test_3_a_round_of_invented_sites_is_refused(federation) -> None:
    _keys, sites, fields, _manifest, _tmp = federation
    _ceremony(sites, fields)
    sybils = _round_fields(fields, ["hospital_a", "sybil_1", "sybil_2"])
    with pytest.raises(TrustRefusal, match="sampled site 'sybil_1' is not a member"):
        sites["hospital_a"].advertise(RUN, sybils)


def _keyed_upload_fields(sites: dict[str, SecureSite], fields: dict[str, Any]) -> dict[str, Any]:
    """Round 1 advertised and shared by every site: hospital_a's train message fields."""
    sampled = list(NAMES)
    round_fields = _round_fields(fields, sampled)
    adverts = {n: sites[n].advertise(RUN, round_fields)[Key.SIGNED] for n in NAMES}
    relayed = {**round_fields, Key.RELAYED: list(adverts.values())}
    shares = {n: sites[n].share(RUN, relayed)[Key.SIGNED_LIST] for n in NAMES}
    info = recipe.RoundInfo(str(RUN), 1, _params(), tuple(sampled))
    book = recipe.collect_envelopes(
        info,
        {n: [Signed.from_bytes(e) for e in shares[n]] for n in NAMES},
        adverts={n: Signed.from_bytes(a) for n, a in adverts.items()},
        directory=sites["hospital_a"].identity_directory(),
    )
    return {**round_fields, Key.RELAYED: [e.to_bytes() for e in book.for_recipient("hospital_a")]}


def test_an_update_beyond_the_clip_is_counted_and_the_operator_told(
    federation, caplog: pytest.LogCaptureFixture
) -> None:
    import numpy as np

    _keys, sites, fields, _manifest, _tmp = federation
    _ceremony(sites, fields)
    delta = np.full(16, 0.01, dtype=np.float32)
    delta[:2] = [3.0, -2.0]  # the plan's clip is 1 per coordinate
    with caplog.at_level(logging.WARNING, logger="fedseal.client"):
        upload, clipped = sites["hospital_a"].prepare_upload(
            RUN, _keyed_upload_fields(sites, fields), delta, 5
        )
    assert upload and clipped == 2
    assert "2 of 16 adapter coordinates moved by more than the run's update clip 1" in caplog.text


def test_4_one_upload_per_round_even_without_dp(federation) -> None:
    import numpy as np

    _keys, sites, fields, _manifest, _tmp = federation
    _ceremony(sites, fields)
    upload_fields = _keyed_upload_fields(sites, fields)
    delta = np.full(16, 0.01, dtype=np.float32)
    first, _ = sites["hospital_a"].prepare_upload(RUN, upload_fields, delta, 5)
    assert first
    with pytest.raises(TrustRefusal, match="used before"):  # fresh secrets for a second upload
        sites["hospital_a"].advertise(RUN, _round_fields(fields, list(NAMES)))
    with pytest.raises(TrustRefusal, match="uploaded before"):
        sites["hospital_a"].prepare_upload(RUN, upload_fields, delta * 0, 5)


def test_5_a_missing_or_weaker_mode_is_refused(federation) -> None:
    _keys, sites, fields, _manifest, _tmp = federation
    no_mode = {k: v for k, v in fields.items() if k != Key.MODE}
    with pytest.raises(TrustRefusal, match="names no aggregation mode"):
        sites["hospital_a"].keygen(RUN, no_mode)
    he_params = {**fields, Key.PROTOCOL_PARAMS: params_to_json(_params(Mode.HE, colluding=0))}
    with pytest.raises(TrustRefusal, match="protocol parameters say mode he"):
        sites["hospital_a"].keygen(RUN, he_params)
    with pytest.raises(TrustRefusal, match="not allowed by this site"):
        sites["hospital_a"].keygen(RUN, {**he_params, Key.MODE: "he"})


def test_6_a_threshold_below_the_manifest_bound_is_refused(federation) -> None:
    _keys, sites, fields, _manifest, _tmp = federation
    _ceremony(sites, fields)
    weak = _round_fields(
        fields, list(NAMES), **{Key.PROTOCOL_PARAMS: params_to_json(_params(colluding=0))}
    )
    with pytest.raises(TrustRefusal, match="threshold k=2 is below 3"):
        sites["hospital_a"].advertise(RUN, weak)
    two = _round_fields(
        fields,
        ["hospital_a", "hospital_b"],
        **{Key.PROTOCOL_PARAMS: params_to_json(_params(colluding=0, n_sites=2))},
    )
    with pytest.raises(TrustRefusal, match="would show one honest site's update"):
        sites["hospital_a"].advertise(RUN, two)


def test_a_site_without_a_pinned_manifest_refuses_secure_stages(tmp_path: Path) -> None:
    keys, _ = create_site_keys("hospital_a", tmp_path / "a")
    site = SecureSite(keys, tmp_path / "a", trust_of("hospital_a", tmp_path / "a"))
    fields = {
        Key.RUN_ID: RUN,
        Key.MODE: "he+ss",
        Key.PROTOCOL_PARAMS: params_to_json(_params()),
        Key.DIRECTORY: encode_directory({"hospital_a": keys.public()}),
    }
    with pytest.raises(TrustRefusal, match="pinned no federation manifest"):
        site.keygen(RUN, fields)
    (tmp_path / "a" / "trust").mkdir()
    (tmp_path / "a" / "trust" / "manifest.json").write_text("{not json")
    with pytest.raises(TrustRefusal, match="is damaged"):
        site.keygen(RUN, fields)


# -- the site service: checks before any training ---------------------------------------------


def _service(tmp_path: Path, modes: list[str] | None = None) -> SiteService:
    document: dict[str, Any] = {
        "site": {"name": "hospital_a", "state_dir": str(tmp_path / "state"), "device": "cpu"},
        "coordinator": {"address": "127.0.0.1:1"},
        "data": {"source": "demo", "scenario": "hospitals", "num_sites": 3},
    }
    if modes is not None:
        document["secure_agg"] = {"modes": modes}
    path = tmp_path / "hospital_a.toml"
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return SiteService(load_site_config(path))


def _train_config(mode: str | None, number: int = 1) -> dict[str, Any]:
    config = default_run_config(
        database_url="sqlite://",
        scenario="hospitals",
        labels=["a", "b"],
        rounds=3,
        min_sites=3,
        steps=1,
        coordinator_state="/tmp/unused",
    )
    fields: dict[str, Any] = {
        Key.ROUND: number,
        **RunSettings.from_run_config(config).plan.to_config(),
    }
    if mode is not None:
        fields[Key.MODE] = mode
    return fields


def test_5b_a_train_message_without_a_mode_never_uploads_in_the_clear(tmp_path: Path) -> None:
    service = _service(tmp_path)
    with pytest.raises(TrustRefusal, match="names no aggregation mode"):
        service.handle(MessageType.TRAIN, RUN, _train_config(None))
    with pytest.raises(TrustRefusal, match="mode plain is not allowed by this site"):
        service.handle(MessageType.TRAIN, RUN, _train_config("plain"))


def test_4b_a_second_train_of_a_round_is_refused_before_training(tmp_path: Path) -> None:
    service = _service(tmp_path, modes=["plain", "he+ss"])
    service.uploads.record(RUN, 1)
    with pytest.raises(TrustRefusal, match="trained and uploaded before"):
        service.handle(MessageType.TRAIN, RUN, _train_config("plain"))
    # the log survives a restart of the site
    assert _service(tmp_path, modes=["plain"]).uploads.uploaded(RUN, 1)


def test_manifest_round_trips_and_rejects_tampering(federation) -> None:
    from fedseal.contract.manifest import FederationManifest, ManifestError

    _keys, _sites, _fields, manifest, _tmp = federation
    again = FederationManifest.from_bytes(manifest.to_bytes())
    assert again.fingerprint == manifest.fingerprint
    document = json.loads(manifest.to_bytes())
    document["max_colluding"] = 0
    changed = FederationManifest.from_bytes(json.dumps(document).encode())
    assert changed.fingerprint != manifest.fingerprint
    document["members"]["hospital_b"]["identity_ed25519"] = base64.b64encode(b"x").decode()
    with pytest.raises(ManifestError, match="32-byte key"):
        FederationManifest.from_bytes(json.dumps(document).encode())
