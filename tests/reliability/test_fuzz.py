"""The campaign's hostile frames: reproducible from the seed, and of the promised kinds."""

from __future__ import annotations

import json

from .fuzz import FRAME_KINDS, MIN_OVERSIZED, generate

COUNTS = dict.fromkeys(FRAME_KINDS, 12)


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    """The seed alone decides the frames."""
    first = generate(7, COUNTS)
    assert first == generate(7, COUNTS)
    assert first != generate(8, COUNTS)
    assert {kind: len(frames) for kind, frames in first.items()} == COUNTS


def test_frames_are_what_their_kind_promises() -> None:
    """Oversized frames reach 1 MiB; invalid UTF-8 really is; none of them forges a notify
    for a real system or a reply to a real request."""
    frames = generate(20261203, COUNTS)
    assert all(frame.size >= MIN_OVERSIZED for frame in frames["oversized"])
    for frame in frames["invalid_utf8"]:
        assert isinstance(frame.data, bytes)
        assert frame.text
        try:
            frame.data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        raise AssertionError(f"valid UTF-8: {frame.data!r}")
    for frame in frames["malformed"] + frames["unknown"] + frames["oversized"]:
        if not isinstance(frame.data, str):
            continue
        try:
            decoded = json.loads(frame.data)
        except ValueError:
            continue
        if not isinstance(decoded, dict):
            continue
        meta = decoded.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("sys"), str):
            assert meta["sys"].startswith("sys-fuzz"), frame
        request_id = decoded.get("id")
        if decoded.get("type") in ("success", "error") and type(request_id) is int:
            assert request_id >= 1 << 40 or request_id < 0, frame
    assert any(not frame.text for frame in frames["malformed"])  # binary frames too
