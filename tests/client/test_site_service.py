"""The site's stage dispatch: what every stage's reply carries."""

from __future__ import annotations

import math

from fedseal.client.local_channel import decode_body, encode_frame
from fedseal.client.site_service import known_metrics
from fedseal.contract.wire import Key


def test_metrics_that_are_not_finite_are_left_out_and_the_reply_can_be_sent() -> None:
    """A site whose test split is empty evaluates to NaN: before, its apply reply failed on the
    local channel ('Out of range float values are not JSON compliant')."""
    metrics = {
        Key.EVAL_LOSS: math.nan,
        Key.EVAL_ACCURACY: math.nan,
        Key.EVAL_AUC: math.inf,
        Key.EVAL_EXAMPLES: 0,
        Key.WORK_SECONDS: 0.25,
    }
    kept = known_metrics(metrics)
    assert kept == {Key.EVAL_EXAMPLES: 0, Key.WORK_SECONDS: 0.25}
    frame = encode_frame({"metrics": kept})
    assert decode_body(frame[4:])["metrics"] == {"eval-examples": 0, "work-seconds": 0.25}
