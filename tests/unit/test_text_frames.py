"""Text-safe event-stream frames: valid UTF-8, and the same events for botocore."""

from __future__ import annotations

import json
import struct
from typing import Any

from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from bedrock_spend.eventstream import chunk_event, encode_message, error_event, exception_event
from bedrock_spend.text_frames import text_safe


def decoded(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Headers without the padding header, and payloads, as botocore reads them."""
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [({k: v for k, v in m.headers.items() if k.strip("p")}, m.payload) for m in buffer]


def assert_same_event(original: bytes, safe: bytes | None) -> None:
    assert safe is not None
    safe.decode("utf-8")  # the whole frame is text
    [(headers, payload)] = decoded(safe)
    [(want_headers, want_payload)] = decoded(original)
    assert headers == want_headers
    if want_payload.startswith(b"{"):
        assert json.loads(payload) == json.loads(want_payload)
        assert payload.rstrip(b" ") == want_payload
    else:
        assert payload == want_payload


def test_a_frame_that_is_already_utf8_is_unchanged() -> None:
    safe = text_safe(chunk_event({"t": "hello"}))
    assert safe is not None
    assert text_safe(safe) is safe


def test_bedrock_frames_of_every_size_become_text() -> None:
    for size in range(600):
        frame = chunk_event({"type": "content_block_delta", "delta": {"text": "é" + "w" * size}})
        assert_same_event(frame, text_safe(frame))


def test_a_length_that_needs_payload_whitespace_is_handled() -> None:
    # 16 + payload length = 128 (mod 256): the header knob alone cannot make both lengths ASCII.
    payload = b'{"message":"' + b"x" * (112 - 14) + b'"}'
    assert (16 + len(payload)) % 256 == 128
    frame = encode_message({":message-type": "event", ":event-type": "metadata"}, payload)
    assert_same_event(frame, text_safe(frame))


def test_exception_and_error_frames_become_text() -> None:
    for frame in (
        exception_event("ModelStreamErrorException", "boom " * 50, originalStatusCode=500),
        error_event("StreamTooLarge", "the streamed response exceeds the proxy's limit"),
    ):
        assert_same_event(frame, text_safe(frame))


def test_a_payload_that_is_not_utf8_cannot_be_text() -> None:
    frame = encode_message({":message-type": "event"}, b"\xff\xfe\x00binary")
    assert text_safe(frame) is None


def test_the_padding_stays_small() -> None:
    growth = []
    for size in range(300):
        frame = chunk_event({"delta": {"text": "w" * size}})
        safe = text_safe(frame)
        assert safe is not None
        growth.append(len(safe) - len(frame))
    assert max(growth) < 400
    assert sum(growth) / len(growth) < 80


@settings(max_examples=150, deadline=None)
@given(
    headers=st.dictionaries(
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=2, max_size=20).filter(
            lambda name: bool(name.strip("p"))
        ),
        st.text(max_size=300),
        max_size=4,
    ),
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ),
)
def test_any_frame_with_utf8_sections_becomes_the_same_event_as_text(
    headers: dict[str, str], payload: Any
) -> None:
    body = json.dumps({"v": payload}, ensure_ascii=False).encode("utf-8")
    frame = encode_message(headers, body)
    safe = text_safe(frame)
    (headers_length,) = struct.unpack_from(">I", frame, 4)
    try:
        frame[12 : 12 + headers_length].decode("utf-8")
    except UnicodeDecodeError:
        # A value of 128+ bytes can have a length that is not UTF-8: base64 it must be.
        assert safe is None
        return
    assert_same_event(frame, safe)
    assert safe is not None
    (total,) = struct.unpack_from(">I", safe)
    assert total == len(safe)
