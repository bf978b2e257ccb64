"""Secure aggregation through the real round loop: secrecy, exactness and hostile sites.

Uses the in-process federation (real site workers, real TenSEAL, real signatures); the same
protocol over real Flower processes is exercised by tests/e2e.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from inprocess_federation import run_inprocess

from fedseal.client.stages.secure import SecureSite
from fedseal.contract.wire import Key, MessageType
from fedseal.models.adapter import load_adapter


def _all_bytes(message: Message) -> list[bytes]:
    """Every bytes value in a reply, including those inside lists."""
    found: list[bytes] = []
    if message.has_error():
        return [message.error.reason.encode()]
    for record in message.content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            found.extend(bytes(v) for v in items if isinstance(v, bytes | bytearray))
    return found


def _windows(vector: np.ndarray, width: int = 32) -> set[bytes]:
    """32-byte windows of a vector's float32 bytes at a few spread offsets."""
    raw = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    step = max(len(raw) // 64, width)
    return {raw[i : i + width] for i in range(0, len(raw) - width, step)}


def _global_vectors(outcome) -> dict[str, np.ndarray]:
    vectors = {}
    for site, service in outcome.services.items():
        loaded = next(iter(service._models.values()))
        store_dir = service.config.site.state_dir / "runs" / str(outcome.grid.run_id)
        state_file = sorted(store_dir.glob("global-round-*.safetensors"))[-1]
        vectors[site] = load_adapter(state_file, loaded.layout)
    return vectors


def test_he_ss_round_completes_and_the_coordinator_sees_no_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    updates: list[np.ndarray] = []
    means: list[np.ndarray] = []
    prepare, decrypt = SecureSite.prepare_upload, SecureSite.decrypt_mean

    def record_upload(self, run_id, fields, delta, weight):
        updates.extend([delta.astype(np.float32), (delta * weight).astype(np.float32)])
        return prepare(self, run_id, fields, delta, weight)

    def record_mean(self, run_id, fields, payload):
        mean = decrypt(self, run_id, fields, payload)
        means.append(mean)
        return mean

    monkeypatch.setattr(SecureSite, "prepare_upload", record_upload)
    monkeypatch.setattr(SecureSite, "decrypt_mean", record_mean)
    outcome = run_inprocess(tmp_path, mode="he+ss")

    rounds = outcome.registry.rounds(outcome.run_id)
    assert [str(r.status) for r in rounds] == ["completed"]
    assert rounds[0].participants == 3
    assert not outcome.protocol.context.is_private()  # the coordinator cannot decrypt
    with pytest.raises(ValueError):
        outcome.protocol.context.secret_key()

    secrets = set()
    for vector in [*updates, *means]:
        assert np.any(vector != 0)
        secrets |= _windows(vector)
    payloads = [b for reply in outcome.grid.replies_seen for b in _all_bytes(reply)]
    assert len(payloads) > 10
    for payload in payloads:
        assert not any(window in payload for window in secrets)

    # every site holds the same global adapter after applying the encrypted aggregate
    vectors = _global_vectors(outcome)
    first = next(iter(vectors.values()))
    assert all(np.array_equal(first, v) for v in vectors.values())


def test_he_ss_matches_plain_fedavg_within_quantisation(tmp_path: Path) -> None:
    plain = _global_vectors(run_inprocess(tmp_path / "plain", mode="plain"))
    secure = _global_vectors(run_inprocess(tmp_path / "secure", mode="he+ss"))
    difference = np.max(np.abs(plain["hospital_a"] - secure["hospital_a"]))
    assert 0 < difference < 1e-3  # stochastic rounding at scale ~2^15 per unit weight


ATTACKS = {  # round -> (stage, what hospital_c sends instead of its real reply)
    1: (MessageType.ADVERTISE, "forged signature"),
    2: (MessageType.TRAIN, "garbage bytes"),
    3: (MessageType.TRAIN, "truncated ciphertext"),
    4: (MessageType.SHARE, "forged signatures"),
}


def test_hostile_sites_are_dropped_and_every_round_completes(tmp_path: Path) -> None:
    """One attack per round from hospital_c; the other two (k = 2) finish every round."""

    def tamper(site: str, kind: str, result: dict) -> dict | None:
        attack = ATTACKS.get(int(result.get(Key.ROUND, 0)))
        if site != "hospital_c" or attack is None or kind != attack[0]:
            return None
        key = {MessageType.ADVERTISE: Key.SIGNED, MessageType.TRAIN: Key.UPDATE}.get(
            kind, Key.SIGNED_LIST
        )
        value = result[key]
        if isinstance(value, list):
            value = [bytes(v[:-1]) + bytes([v[-1] ^ 1]) for v in value]
        elif attack[1] == "forged signature":
            value = value[:-1] + bytes([value[-1] ^ 1])
        elif attack[1] == "garbage bytes":
            value = b"\x00garbage" * 50
        else:
            value = value[: len(value) // 2]
        return {**result, key: value}

    outcome = run_inprocess(  # every round keyed on its own: each has its key stages
        tmp_path, mode="he+ss", rounds=len(ATTACKS), tamper=tamper, run_config={"key_rounds": 1}
    )
    rounds = outcome.registry.rounds(outcome.run_id)
    assert len(rounds) == len(ATTACKS)
    for round_ in rounds:
        assert str(round_.status) == "completed", (round_.number, round_.error)
        statuses = {c.site: str(c.status) for c in round_.contributions}
        assert statuses == {
            "hospital_a": "contributed",
            "hospital_b": "contributed",
            "hospital_c": "failed",
        }, (round_.number, ATTACKS[round_.number])
        errors = {c.site: c.error for c in round_.contributions}
        assert errors["hospital_c"] and "Traceback" not in errors["hospital_c"]


def test_replayed_upload_from_an_earlier_round_is_refused(tmp_path: Path) -> None:
    first_upload: dict[str, bytes] = {}

    def tamper(site: str, kind: str, result: dict) -> dict | None:
        if site != "hospital_c" or kind != MessageType.TRAIN:
            return None
        if "upload" not in first_upload:
            first_upload["upload"] = bytes(result[Key.UPDATE])
            return None
        return {**result, Key.UPDATE: first_upload["upload"]}  # round 2 replays round 1

    outcome = run_inprocess(tmp_path, mode="he+ss", rounds=2, tamper=tamper)
    rounds = outcome.registry.rounds(outcome.run_id)
    assert [str(r.status) for r in rounds] == ["completed", "completed"]
    second = {c.site: c for c in rounds[1].contributions}
    assert str(second["hospital_c"].status) == "failed"
    assert "upload refused" in (second["hospital_c"].error or "")


def test_a_site_lost_after_uploading_is_unmasked_from_shares(tmp_path: Path) -> None:
    outcome = run_inprocess(
        tmp_path, mode="he+ss", offline_at={"hospital_c": MessageType.CONSISTENCY}
    )
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) == "completed", round_.error
    contributed = {c.site for c in round_.contributions if str(c.status) == "contributed"}
    assert contributed == {"hospital_a", "hospital_b", "hospital_c"}


def test_below_the_threshold_the_round_is_aborted_and_nothing_applied(tmp_path: Path) -> None:
    outcome = run_inprocess(
        tmp_path,
        mode="he+ss",
        offline_at={"hospital_b": MessageType.ADVERTISE, "hospital_c": MessageType.ADVERTISE},
    )
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert str(round_.status) == "aborted"
    assert round_.global_digest is None
    for service in outcome.services.values():
        runs = service.config.site.state_dir / "runs" / str(outcome.grid.run_id)
        assert not list(runs.glob("global-round-*.safetensors"))


def test_an_unenrolled_site_is_left_out(tmp_path: Path) -> None:
    outcome = run_inprocess(tmp_path, mode="he+ss", enroll=["hospital_a", "hospital_b"])
    (round_,) = outcome.registry.rounds(outcome.run_id)
    statuses = {c.site: str(c.status) for c in round_.contributions}
    assert statuses["hospital_c"] == "failed"
    assert str(round_.status) == "completed"


def test_the_run_config_chooses_the_neighbour_graph(tmp_path):
    outcome = run_inprocess(
        tmp_path, mode="he+ss", sites=4, run_config={"sparse_above": 0, "neighbours": 2}
    )
    params = outcome.protocol.params
    assert (params.neighbours, params.neighbour_threshold) == (2, 2)
    run = outcome.registry.get_run(outcome.run_id)
    assert (run.config["sparse_above"], run.config["neighbours"]) == (0, 2)
    rounds = outcome.registry.rounds(outcome.run_id)
    assert [str(r.status) for r in rounds] == ["completed"]


def test_coordinates_clipped_by_a_tight_clip_are_recorded_and_shown(tmp_path):
    """A clip far below the training's moves: each site's clipped count reaches the registry
    and `fl-coordinator status`, not only the site's log."""
    from fedseal.coordinator.status_report import collect_status, render_status

    outcome = run_inprocess(tmp_path, mode="he+ss", run_config={"clip": 1e-6})
    (round_,) = outcome.registry.rounds(outcome.run_id)
    counts = [c.clipped_coordinates for c in round_.contributions]
    assert all(count is not None and count > 0 for count in counts), counts
    report = collect_status(outcome.registry, outcome.run_id)
    assert report["rounds"][0]["clipped"] == sum(counts)
    text = render_status(report).splitlines()
    header = next(line for line in text if line.startswith("round "))
    assert header.split()[-1] == "clipped"
    assert text[text.index(header) + 1].split()[-1] == str(sum(counts))


def test_a_clip_the_training_stays_within_records_none_clipped(tmp_path):
    outcome = run_inprocess(tmp_path, mode="plain")
    (round_,) = outcome.registry.rounds(outcome.run_id)
    assert {c.clipped_coordinates for c in round_.contributions} == {0}
