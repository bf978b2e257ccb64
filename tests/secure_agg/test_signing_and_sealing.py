"""Signatures bound to run, round, stage and sender; pairwise seeds; sealed boxes."""

from __future__ import annotations

import pytest
from secagg_harness import rng

from fedseal.secure_agg import keys
from fedseal.secure_agg.errors import InvalidMessage
from fedseal.secure_agg.messages import Signed, Stage

BINDING = {"run_id": "run-1", "round_no": 3, "stage": Stage.TRAIN, "sender": "site-00"}


@pytest.fixture(scope="module")
def alice():
    return keys.generate_identity_key(rng("alice"))


@pytest.fixture(scope="module")
def mallory():
    return keys.generate_identity_key(rng("mallory"))


def test_sign_and_verify(alice):
    signature = keys.sign_message(alice, payload=b"update", **BINDING)
    assert (
        keys.verify_message(keys.public_bytes(alice), signature, payload=b"update", **BINDING)
        is None
    )


@pytest.mark.parametrize(
    "change",
    [
        {"run_id": "run-2"},
        {"round_no": 2},
        {"stage": Stage.RELEASE},
        {"sender": "site-01"},
        {"payload": b"updatf"},
    ],
)
def test_binding_changes_are_rejected(alice, change):
    signature = keys.sign_message(alice, payload=b"update", **BINDING)
    args = {**BINDING, "payload": b"update", **change}
    with pytest.raises(InvalidMessage):
        keys.verify_message(keys.public_bytes(alice), signature, **args)


def test_forged_and_missing_signatures(alice, mallory):
    forged = keys.sign_message(mallory, payload=b"update", **BINDING)
    for signature in (forged, None, b"", bytes(64), forged[:-1]):
        with pytest.raises(InvalidMessage):
            keys.verify_message(keys.public_bytes(alice), signature, payload=b"update", **BINDING)


def test_failures_look_the_same(alice, mallory):
    """Attacker-probeable failures carry one identical message."""
    messages = set()
    public = keys.public_bytes(alice)
    good = keys.sign_message(alice, payload=b"p", **BINDING)
    for signature, binding in (
        (keys.sign_message(mallory, payload=b"p", **BINDING), BINDING),
        (good, {**BINDING, "round_no": 9}),
        (b"", BINDING),
    ):
        with pytest.raises(InvalidMessage) as info:
            keys.verify_message(public, signature, payload=b"p", **binding)
        messages.add(str(info.value))
    with pytest.raises(InvalidMessage) as info:
        keys.verify_message(b"short", good, payload=b"p", **BINDING)
    messages.add(str(info.value))
    assert len(messages) == 1


def test_signed_envelope_roundtrip_and_garbage(alice):
    directory = {"site-00": keys.public_bytes(alice)}
    message = Signed.create(
        alice, sender="site-00", stage=Stage.RELEASE, body=b"body", run_id="r", round_no=1
    )
    parsed = Signed.from_bytes(message.to_bytes())
    assert parsed == message
    assert parsed.verify(directory, run_id="r", round_no=1, stage=Stage.RELEASE) == b"body"
    with pytest.raises(InvalidMessage):
        parsed.verify(directory, run_id="r", round_no=1, stage=Stage.SHARE)
    with pytest.raises(InvalidMessage):
        parsed.verify({}, run_id="r", round_no=1, stage=Stage.RELEASE)  # not enrolled
    raw = message.to_bytes()
    for garbage in (
        b"",
        raw[:-1],
        raw + b"\x00",
        b"\xff" * 100,
        raw.replace(b"release", b"releasX"),
    ):
        with pytest.raises(InvalidMessage):
            Signed.from_bytes(garbage)


def test_pairwise_seed_is_symmetric_and_bound():
    a = keys.generate_agreement_key(rng("a"))
    b = keys.generate_agreement_key(rng("b"))
    ab = keys.pairwise_seed(
        a, keys.public_bytes(b), own_id="A", peer_id="B", run_id="r", round_no=1
    )
    ba = keys.pairwise_seed(
        b, keys.public_bytes(a), own_id="B", peer_id="A", run_id="r", round_no=1
    )
    assert ab == ba and len(ab) == 32
    other_round = keys.pairwise_seed(
        a, keys.public_bytes(b), own_id="A", peer_id="B", run_id="r", round_no=2
    )
    assert other_round != ab
    with pytest.raises(InvalidMessage):  # low-order point: all-zero shared secret
        keys.pairwise_seed(a, bytes(32), own_id="A", peer_id="B", run_id="r", round_no=1)


def test_sealed_box_bound_to_recipient_and_run():
    bob = keys.generate_agreement_key(rng("bob"))
    eve = keys.generate_agreement_key(rng("eve"))
    sealed = keys.seal(
        keys.public_bytes(bob),
        b"secret context",
        run_id="run-1",
        recipient_id="bob",
        randbytes=rng("seal"),
        context=b"ctx",
    )
    assert keys.open_sealed(bob, sealed, run_id="run-1", recipient_id="bob", context=b"ctx") == (
        b"secret context"
    )
    attempts = [
        (eve, sealed, "run-1", "bob", b"ctx"),
        (bob, sealed, "run-2", "bob", b"ctx"),
        (bob, sealed, "run-1", "eve", b"ctx"),
        (bob, sealed, "run-1", "bob", b"other"),
        (bob, sealed[:-1] + bytes([sealed[-1] ^ 1]), "run-1", "bob", b"ctx"),
        (bob, sealed[:10], "run-1", "bob", b"ctx"),
        (bob, b"\x02" + sealed[1:], "run-1", "bob", b"ctx"),
    ]
    for key, box, run_id, recipient, context in attempts:
        with pytest.raises(InvalidMessage):
            keys.open_sealed(key, box, run_id=run_id, recipient_id=recipient, context=context)
    assert len(sealed) == len(b"secret context") + keys.sealed_overhead()


def test_randbytes_must_deliver():
    with pytest.raises(ValueError):
        keys.generate_identity_key(lambda n: b"short")
