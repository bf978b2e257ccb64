"""One name per stage: the wire's `MessageType` is what every party and the signatures use."""

from __future__ import annotations

import pytest

from fedseal.contract.limits import ReplyLimits, SiteLimits
from fedseal.contract.wire import MessageType


def test_every_stage_routes_to_one_flower_category() -> None:
    assert {stage.category for stage in MessageType} == {"query", "train", "evaluate"}
    assert MessageType.TRAIN.action is None and MessageType.TRAIN.word == "train"
    assert MessageType.ADVERTISE.word == "advertise"
    assert len({stage.word for stage in MessageType}) == len(MessageType)


def test_an_unknown_stage_is_refused_never_defaulted() -> None:
    assert MessageType.parse("train.advertise") is MessageType.ADVERTISE
    for word in ("advertise", "advertise-keys", "", "train.unmask"):
        with pytest.raises(ValueError, match="unknown stage"):
            MessageType.parse(word)
    with pytest.raises(ValueError):
        ReplyLimits().for_message_type("train.advertise-keys")  # type: ignore[arg-type]


def test_limits_are_per_stage() -> None:
    limits = SiteLimits(message=1 << 20, control=1 << 10)
    large = {MessageType.TRAIN, MessageType.APPLY, MessageType.INSTALL, MessageType.KEYGEN}
    for stage in MessageType:
        assert limits.for_stage(stage) == (limits.message if stage in large else limits.control)


def test_the_signed_he_ss_stages_carry_the_site_stages_words() -> None:
    from fedseal.secure_agg.messages import Stage

    for name in ("ADVERTISE", "SHARE", "TRAIN", "CONSISTENCY", "RELEASE"):
        assert Stage[name].value == MessageType[name].word
