"""Hostile frames for the fault campaign, drawn with hypothesis from a seed.

Four kinds, each a hypothesis strategy:

- `malformed`: text that is not a usable protocol frame (random text, truncated or mistyped
  JSON, notifies with broken `meta`) and binary frames;
- `unknown`: well-formed JSON the client has no use for (unknown `type`, `debug`, notifies for
  bindings nobody holds, replies to requests nobody sent);
- `oversized`: frames of at least 1 MiB (a small drawn template blown up to size);
- `invalid_utf8`: TEXT frames whose bytes are not UTF-8 (RFC 6455 makes the client fail the
  connection with 1007, so these are outages to recover from).

None of them may look like the server's answer to anything the client really asked: forged
notifies name systems under `sys-fuzz`, forged replies carry ids far above any the client
uses. The campaign checks that the entities still show the simulator's values afterwards, so a
frame that legitimately changed a value would be a bug in this module, not in the client.

`generate(seed, counts)` runs a `@given` function under `@seed(seed)` with the generate phase
only, so the same seed and hypothesis version always give the same frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import json
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings
import hypothesis.strategies as st

MIN_OVERSIZED: Final = 1 << 20  # 1 MiB
FRAME_KINDS: Final = ("malformed", "unknown", "oversized", "invalid_utf8")
# Far above any request id the client hands out (it counts from 1 per client).
_FORGED_ID_MIN: Final = 1 << 40
_KNOWN_TYPES: Final = frozenset({"notify", "success", "error"})
# Byte sequences that are never valid UTF-8: lone continuation or start bytes, overlong forms,
# UTF-16 surrogates, code points above U+10FFFF, a sequence cut short.
_INVALID_UTF8: Final = (
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame to inject: `data` as a TEXT frame (`str`, or raw `bytes` when `text`) or as a
    BINARY frame (`bytes`, not `text`)."""

    kind: str
    data: str | bytes
    text: bool = True

    @property
    def size(self) -> int:
        """Payload size in bytes."""
        return len(self.data.encode() if isinstance(self.data, str) else self.data)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
_fuzz_sys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=12).map(
    lambda suffix: f"sys-fuzz{suffix}"
)
_fuzz_meta = st.fixed_dictionaries(
    {
        "sys": _fuzz_sys,
        "mod": st.text(max_size=12),
        "index": st.integers(min_value=-5, max_value=2**31),
        "name": st.text(max_size=12),
    }
)
_forged_id = st.one_of(
    st.integers(min_value=_FORGED_ID_MIN, max_value=2**62),
    st.integers(max_value=-1),
    st.text(max_size=6),
    st.floats(allow_nan=False),
    st.none(),
)


@st.composite
def _broken_meta(draw: st.DrawFn) -> Any:
    """`meta` the client cannot route: not an object, keys missing, or unhashable values."""
    meta = draw(_fuzz_meta)
    how = draw(st.sampled_from(("drop", "unhashable", "not_object")))
    if how == "not_object":
        return draw(_json_values.filter(lambda value: not isinstance(value, dict)))
    victim = draw(st.sampled_from(sorted(meta)))
    if how == "drop":
        del meta[victim]
    else:
        meta[victim] = draw(st.lists(_json_scalars, max_size=3))
    return meta


@st.composite
def _malformed(draw: st.DrawFn) -> Frame:
    shape = draw(st.sampled_from(("text", "truncated", "broken_notify", "binary", "not_object")))
    if shape == "text":
        text = draw(st.text(max_size=300))
        return Frame("malformed", text if text != "pong" else "pong?")
    if shape == "truncated":
        whole = _dumps({"id": 1, "type": "notify", "value": draw(_json_values), "meta": {}})
        cut = draw(st.integers(min_value=0, max_value=len(whole) - 1))
        return Frame("malformed", whole[:cut])
    if shape == "broken_notify":
        frame = {"id": draw(_forged_id), "type": "notify", "meta": draw(_broken_meta())}
        if draw(st.booleans()):
            frame["value"] = draw(_json_values)
        return Frame("malformed", _dumps(frame))
    if shape == "binary":
        return Frame("malformed", draw(st.binary(max_size=300)), text=False)
    return Frame("malformed", _dumps(draw(_json_values.filter(lambda v: not isinstance(v, dict)))))


@st.composite
def _unknown(draw: st.DrawFn) -> Frame:
    shape = draw(st.sampled_from(("type", "debug", "unrouted", "reply", "no_type")))
    if shape == "type":
        kind = draw(st.text(max_size=12).filter(lambda t: t not in _KNOWN_TYPES))
        frame: dict[str, Any] = {"id": draw(_forged_id), "type": kind, "value": draw(_json_values)}
    elif shape == "debug":
        frame = {
            "id": draw(_forged_id),
            "type": "debug",
            "msg": draw(st.text(max_size=80)),
            "meta": draw(_fuzz_meta),
            "mod": "mod-fuzz",
            "level": draw(st.sampled_from(("trace", "debug", "info", "warn", "error", "fatal"))),
        }
    elif shape == "unrouted":
        frame = {"id": draw(_forged_id), "type": "notify", "meta": draw(_fuzz_meta)}
        frame["value"] = draw(_json_values)
    elif shape == "reply":
        frame = {"id": draw(_forged_id), "type": draw(st.sampled_from(("success", "error")))}
        if frame["type"] == "error":
            frame |= {"error_code": draw(st.integers(0, 7)), "msg": draw(st.text(max_size=30))}
        else:
            frame["value"] = draw(_json_values)
    else:
        frame = draw(
            st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), _json_values)
        )
    return Frame("unknown", _dumps(frame))


@st.composite
def _oversized(draw: st.DrawFn) -> Frame:
    size = MIN_OVERSIZED + draw(st.integers(min_value=0, max_value=256 * 1024))
    filler = draw(
        st.characters(codec="utf-8", exclude_characters='"\\', exclude_categories=("Cs", "Cc"))
    )
    shape = draw(st.sampled_from(("unrouted", "unknown_type", "not_json", "binary", "reply")))
    if shape == "binary":
        chunk = draw(st.binary(min_size=1, max_size=64))
        return Frame("oversized", chunk * (size // len(chunk) + 1), text=False)
    if shape == "not_json":
        return Frame("oversized", "[" + filler * size)
    body = filler * (size // len(filler.encode()))
    if shape == "unrouted":
        frame: dict[str, Any] = {"id": 7, "type": "notify", "value": body, "meta": draw(_fuzz_meta)}
    elif shape == "reply":
        frame = {"id": draw(_forged_id), "type": "success", "value": [body]}
    else:
        frame = {"type": draw(st.text(max_size=8).filter(lambda t: t not in _KNOWN_TYPES))}
        frame["payload"] = body
    return Frame("oversized", _dumps(frame))


@st.composite
def _invalid_utf8(draw: st.DrawFn) -> Frame:
    valid = _dumps({"id": draw(_forged_id), "type": "notify", "meta": draw(_fuzz_meta)})
    cut = draw(st.integers(min_value=0, max_value=len(valid)))
    bad = draw(st.sampled_from(_INVALID_UTF8))
    tail = draw(st.text(max_size=20))
    return Frame("invalid_utf8", valid[:cut].encode() + bad + tail.encode())


STRATEGIES: Final[Mapping[str, st.SearchStrategy[Frame]]] = {
    "malformed": _malformed(),
    "unknown": _unknown(),
    "oversized": _oversized(),
    "invalid_utf8": _invalid_utf8(),
}


def draw_frames(kind: str, count: int, seed: int) -> list[Frame]:
    """`count` frames of one kind, the same for the same seed.

    Hypothesis stops early when a strategy runs out of distinct examples; the list is then
    cycled. The first example is hypothesis's simplest one (an empty text and the like), which
    is a fine hostile frame too.
    """
    if count <= 0:
        return []
    drawn: list[Frame] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        phases=(Phase.generate,),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        print_blob=False,
    )
    @given(STRATEGIES[kind])
    def collect(frame: Frame) -> None:
        drawn.append(frame)

    collect()
    return [drawn[i % len(drawn)] for i in range(count)]


def generate(seed: int, counts: Mapping[str, int]) -> dict[str, list[Frame]]:
    """Frames per kind (`counts` maps a kind of FRAME_KINDS to how many)."""
    return {kind: draw_frames(kind, count, seed) for kind, count in counts.items()}
