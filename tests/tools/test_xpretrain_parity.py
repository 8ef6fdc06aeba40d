"""tools/xpretrain_parity: the measured round trip through the reference layout (tiny architecture)."""

from __future__ import annotations

from tools.xpretrain_parity import checkpoint_report


def test_the_float32_round_trip_is_exact_and_float16_only_rounds():
    report = checkpoint_report("tiny", batch=2, frames=5)
    assert report["round trip float32"] == {"video": 0.0, "text": 0.0, "logits": 0.0}
    half = report["round trip float16"]
    assert 0 < half["video"] < 1e-2 and 0 < half["text"] < 1e-2 and half["logits"] < 1.0
