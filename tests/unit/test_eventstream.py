"""Event-stream framing: round trips, every header type, CRC checks, botocore interoperability."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from bedrock_spend.eventstream import (
    MAX_HEADERS_LENGTH,
    MAX_PAYLOAD_LENGTH,
    EventMessage,
    EventStreamDecoder,
    EventStreamError,
    HeaderValue,
    chunk_event,
    converse_event,
    decode_chunk,
    decode_messages,
    encode_message,
    error_event,
    exception_event,
)

UUID_BYTES = uuid.UUID("12345678-1234-5678-1234-567812345678").bytes


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _raw_header(name: str, type_id: int, value: bytes = b"") -> bytes:
    raw_name = name.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">B", type_id) + value


def _hand_frame(raw_headers: bytes, payload: bytes) -> bytes:
    """Build a frame independently of the module under test."""
    total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", _crc(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", _crc(body))


# One header of every wire type 0..9, with the value botocore (and we) decode it to.
ALL_TYPES: list[tuple[str, int, bytes, HeaderValue]] = [
    ("t-true", 0, b"", True),
    ("t-false", 1, b"", False),
    ("t-int8", 2, struct.pack(">b", -5), -5),
    ("t-int16", 3, struct.pack(">h", -300), -300),
    ("t-int32", 4, struct.pack(">i", 70000), 70000),
    ("t-int64", 5, struct.pack(">q", -(2**40)), -(2**40)),
    ("t-bytes", 6, struct.pack(">H", 3) + b"\x00\xff\x10", b"\x00\xff\x10"),
    ("t-string", 7, struct.pack(">H", 6) + "héllo".encode(), "héllo"),
    ("t-timestamp", 8, struct.pack(">q", 1_700_000_000_123), 1_700_000_000_123),
    ("t-uuid", 9, UUID_BYTES, UUID_BYTES),
]


def _all_types_frame(payload: bytes = b'{"ok":true}') -> bytes:
    raw = b"".join(_raw_header(name, type_id, value) for name, type_id, value, _ in ALL_TYPES)
    return _hand_frame(raw, payload)


def _botocore_parse(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages: list[Any] = list(buffer)
    return [(dict(message.headers), message.payload) for message in messages]


def test_round_trip_preserves_headers_order_and_payload() -> None:
    headers: dict[str, HeaderValue] = {":message-type": "event", "n": 7, "flag": True, "raw": b"\x01"}
    frame = encode_message(headers, b"payload")

    (message,) = EventStreamDecoder().feed(frame)

    assert message == EventMessage(headers=headers, payload=b"payload")
    assert list(message.headers) == list(headers)


def test_encoding_uses_documented_wire_types() -> None:
    frame = encode_message({"s": "x", "b": b"y", "i": 1, "big": 2**40, "t": True, "f": False}, b"")

    raw_headers = frame[12:-4]

    assert raw_headers == (
        _raw_header("s", 7, b"\x00\x01x")
        + _raw_header("b", 6, b"\x00\x01y")
        + _raw_header("i", 4, struct.pack(">i", 1))
        + _raw_header("big", 5, struct.pack(">q", 2**40))
        + _raw_header("t", 0)
        + _raw_header("f", 1)
    )


def test_every_header_type_is_decoded() -> None:
    (message,) = EventStreamDecoder().feed(_all_types_frame())

    assert message.headers == {name: decoded for name, _, _, decoded in ALL_TYPES}


def test_empty_headers_and_payload() -> None:
    (message,) = decode_messages(encode_message({}, b""))

    assert message == EventMessage(headers={}, payload=b"")


def test_feeding_byte_by_byte_yields_each_message_once_complete() -> None:
    frames = [encode_message({":event-type": f"e{i}"}, bytes([i]) * i) for i in range(4)]
    stream = b"".join(frames)
    decoder = EventStreamDecoder()

    got: list[EventMessage] = []
    completed_at: list[int] = []
    for offset in range(len(stream)):
        new = decoder.feed(stream[offset : offset + 1])
        got.extend(new)
        completed_at.extend([offset + 1] * len(new))

    assert [m.event_type for m in got] == ["e0", "e1", "e2", "e3"]
    assert [m.payload for m in got] == [bytes([i]) * i for i in range(4)]
    ends = [sum(len(f) for f in frames[: i + 1]) for i in range(4)]
    assert completed_at == ends
    assert decoder.buffered == 0


def test_several_messages_in_one_feed() -> None:
    stream = encode_message({"a": "1"}, b"x") + encode_message({"a": "2"}, b"y")

    assert [m.headers["a"] for m in EventStreamDecoder().feed(stream)] == ["1", "2"]


@pytest.mark.parametrize(
    "position", [2, 9, 20, -6, -1], ids=["length", "prelude-crc", "header", "payload", "crc"]
)
def test_corruption_anywhere_is_detected(position: int) -> None:
    frame = bytearray(encode_message({":event-type": "chunk"}, b"some payload"))
    frame[position] ^= 0x01

    with pytest.raises(EventStreamError, match="checksum"):
        EventStreamDecoder().feed(bytes(frame))


def test_decoder_stays_failed_after_corruption() -> None:
    frame = bytearray(encode_message({}, b"abc"))
    frame[-1] ^= 0xFF
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError):
        decoder.feed(bytes(frame))

    with pytest.raises(EventStreamError, match="already failed"):
        decoder.feed(encode_message({}, b"ok"))


def test_truncated_stream_is_reported_by_decode_messages() -> None:
    frame = encode_message({}, b"abc")

    with pytest.raises(EventStreamError, match="ends inside"):
        decode_messages(frame[:-2])


def test_oversized_headers_length_in_prelude_is_rejected() -> None:
    prelude = struct.pack(">II", 16 + MAX_HEADERS_LENGTH + 1, MAX_HEADERS_LENGTH + 1)
    prelude += struct.pack(">I", _crc(prelude))

    with pytest.raises(EventStreamError, match="headers length"):
        EventStreamDecoder().feed(prelude)


def test_oversized_payload_length_in_prelude_is_rejected() -> None:
    prelude = struct.pack(">II", 16 + MAX_PAYLOAD_LENGTH + 1, 0)
    prelude += struct.pack(">I", _crc(prelude))

    with pytest.raises(EventStreamError, match="payload length"):
        EventStreamDecoder().feed(prelude)


def test_encoder_enforces_payload_limit() -> None:
    with pytest.raises(EventStreamError, match="payload"):
        encode_message({}, b"\0" * (MAX_PAYLOAD_LENGTH + 1))


@pytest.mark.parametrize(
    "raw_headers",
    [
        _raw_header("x", 42),
        _raw_header("dup", 0) + _raw_header("dup", 1),
        _raw_header("s", 7, b"\x00\x09abc"),
    ],
    ids=["unknown-type", "duplicate", "truncated-string"],
)
def test_malformed_headers_are_rejected(raw_headers: bytes) -> None:
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(_hand_frame(raw_headers, b""))


def test_frames_we_encode_are_parsed_by_botocore() -> None:
    headers: dict[str, HeaderValue] = {
        ":message-type": "event",
        "blob": b"\x00\x01",
        "count": -12,
        "wide": 2**35,
        "yes": True,
        "no": False,
    }
    stream = encode_message(headers, b"first") + chunk_event({"type": "message_stop"})

    parsed = _botocore_parse(stream)

    assert parsed[0] == (headers, b"first")
    assert parsed[1][0] == {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }


def test_frames_botocore_accepts_decode_identically() -> None:
    stream = _all_types_frame() + _hand_frame(_raw_header(":event-type", 7, b"\x00\x05chunk"), b"{}")

    ours = [(m.headers, m.payload) for m in decode_messages(stream)]

    assert ours == _botocore_parse(stream)


def test_botocore_and_we_reject_the_same_corruption() -> None:
    frame = bytearray(_all_types_frame())
    frame[-8] ^= 0x40

    with pytest.raises(ChecksumMismatch):
        _botocore_parse(bytes(frame))
    with pytest.raises(EventStreamError):
        decode_messages(bytes(frame))


def test_chunk_event_round_trips_model_json() -> None:
    model_json = {"type": "content_block_delta", "delta": {"text": "héllo"}}

    (message,) = decode_messages(chunk_event(model_json))

    assert message.message_type == "event"
    assert message.event_type == "chunk"
    envelope = json.loads(message.payload)
    assert list(envelope) == ["bytes"]
    assert json.loads(base64.b64decode(envelope["bytes"])) == model_json
    assert decode_chunk(message) == model_json


def test_decode_chunk_rejects_other_events_and_bad_payloads() -> None:
    (not_chunk,) = decode_messages(converse_event("messageStart", {"role": "assistant"}))
    bad = EventMessage(headers={":event-type": "chunk"}, payload=b'{"bytes": "!!"}')

    with pytest.raises(EventStreamError):
        decode_chunk(not_chunk)
    with pytest.raises(EventStreamError):
        decode_chunk(bad)


def test_converse_event_headers_and_body() -> None:
    (message,) = decode_messages(converse_event("metadata", {"usage": {"inputTokens": 3}}))

    assert message.headers == {
        ":event-type": "metadata",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(message.payload) == {"usage": {"inputTokens": 3}}


def test_exception_event_uses_lower_camel_type_and_extra_members() -> None:
    (message,) = decode_messages(
        exception_event("ModelStreamErrorException", "boom", originalStatusCode=500, originalMessage="x")
    )

    assert message.message_type == "exception"
    assert message.exception_type == "modelStreamErrorException"
    assert message.headers[":content-type"] == "application/json"
    assert json.loads(message.payload) == {
        "message": "boom",
        "originalStatusCode": 500,
        "originalMessage": "x",
    }


def test_error_event_carries_code_and_message_in_headers() -> None:
    (message,) = decode_messages(error_event("InternalFailure", "bad"))

    assert message.message_type == "error"
    assert message.headers[":error-code"] == "InternalFailure"
    assert message.headers[":error-message"] == "bad"
