"""AWS event-stream framing (``application/vnd.amazon.eventstream``), standard library only.

Wire format of one message, all integers big-endian::

    | total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32 |

``prelude_crc`` is the CRC-32 of the first 8 bytes, ``message_crc`` the CRC-32 of everything
before it. A header is ``name_len u8, name, type u8, value``; types 0..9 are bool-true,
bool-false, int8, int16, int32, int64, bytes (u16 length), string (u16 length), timestamp
(int64 ms since the epoch) and UUID (16 bytes).

Decoded values follow botocore: integers and timestamps become ``int``, bytes and UUIDs ``bytes``.
Encoding maps ``bool`` to types 0/1, ``str`` to 7, ``bytes`` to 6 and ``int`` to int32 (type 4),
widening to int64 (type 5) only when the value does not fit in 32 bits.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HeaderValue = str | bytes | int | bool

PRELUDE_LENGTH = 12
MESSAGE_CRC_LENGTH = 4
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024

_MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + MESSAGE_CRC_LENGTH
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_U16_MAX = 0xFFFF
_U8_MAX = 0xFF

_TYPE_TRUE = 0
_TYPE_FALSE = 1
_TYPE_INT8 = 2
_TYPE_INT16 = 3
_TYPE_INT32 = 4
_TYPE_INT64 = 5
_TYPE_BYTES = 6
_TYPE_STRING = 7
_TYPE_TIMESTAMP = 8
_TYPE_UUID = 9

# Fixed-width header value types: struct format (None = no value bytes) by type id.
_FIXED_FORMATS: dict[int, str] = {
    _TYPE_INT8: ">b",
    _TYPE_INT16: ">h",
    _TYPE_INT32: ">i",
    _TYPE_INT64: ">q",
    _TYPE_TIMESTAMP: ">q",
}


class EventStreamError(ValueError):
    """A frame is corrupt, truncated, over a size limit, or cannot be encoded."""


@dataclass(frozen=True)
class EventMessage:
    """One decoded event-stream message."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def _str_header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str | None:
        """``event``, ``exception`` or ``error`` (the ``:message-type`` header)."""
        return self._str_header(":message-type")

    @property
    def event_type(self) -> str | None:
        return self._str_header(":event-type")

    @property
    def exception_type(self) -> str | None:
        return self._str_header(":exception-type")


def _crc(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    return zlib.crc32(data, seed) & 0xFFFFFFFF


def _encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) <= _U8_MAX:
        raise EventStreamError(f"header name must be 1..255 bytes of UTF-8: {name!r}")
    prefix = struct.pack(">B", len(raw_name)) + raw_name
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return prefix + struct.pack(">B", _TYPE_TRUE if value else _TYPE_FALSE)
    if isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            return prefix + struct.pack(">Bi", _TYPE_INT32, value)
        if _INT64_MIN <= value <= _INT64_MAX:
            return prefix + struct.pack(">Bq", _TYPE_INT64, value)
        raise EventStreamError(f"header {name!r}: integer does not fit in 64 bits")
    if isinstance(value, str):
        data, type_id = value.encode("utf-8"), _TYPE_STRING
    elif isinstance(value, bytes | bytearray | memoryview):
        data, type_id = bytes(value), _TYPE_BYTES
    else:
        raise EventStreamError(f"header {name!r}: unsupported value type {type(value).__name__}")
    if len(data) > _U16_MAX:
        raise EventStreamError(f"header {name!r}: value longer than 65535 bytes")
    return prefix + struct.pack(">BH", type_id, len(data)) + data


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """Frame one message; headers are written in the mapping's iteration order."""
    encoded_headers = b"".join(_encode_header(name, value) for name, value in headers.items())
    if len(encoded_headers) > MAX_HEADERS_LENGTH:
        raise EventStreamError(f"headers are {len(encoded_headers)} bytes, limit {MAX_HEADERS_LENGTH}")
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise EventStreamError(f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_LENGTH}")
    total_length = _MIN_MESSAGE_LENGTH + len(encoded_headers) + len(payload)
    prelude = struct.pack(">II", total_length, len(encoded_headers))
    prelude += struct.pack(">I", _crc(prelude))
    body = prelude + encoded_headers + bytes(payload)
    return body + struct.pack(">I", _crc(body))


def _decode_headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    view = memoryview(data)
    pos = 0
    end = len(data)

    def take(count: int) -> bytes:
        nonlocal pos
        if pos + count > end:
            raise EventStreamError("header section truncated")
        chunk = bytes(view[pos : pos + count])
        pos += count
        return chunk

    while pos < end:
        (name_length,) = struct.unpack(">B", take(1))
        try:
            name = take(name_length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventStreamError("header name is not UTF-8") from exc
        (type_id,) = struct.unpack(">B", take(1))
        value: HeaderValue
        if type_id == _TYPE_TRUE:
            value = True
        elif type_id == _TYPE_FALSE:
            value = False
        elif type_id in _FIXED_FORMATS:
            fmt = _FIXED_FORMATS[type_id]
            (value,) = struct.unpack(fmt, take(struct.calcsize(fmt)))
        elif type_id in (_TYPE_BYTES, _TYPE_STRING):
            (length,) = struct.unpack(">H", take(2))
            raw = take(length)
            if type_id == _TYPE_BYTES:
                value = raw
            else:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise EventStreamError(f"header {name!r}: string value is not UTF-8") from exc
        elif type_id == _TYPE_UUID:
            value = take(16)
        else:
            raise EventStreamError(f"header {name!r}: unknown value type {type_id}")
        if name in headers:
            raise EventStreamError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Incremental decoder: feed bytes split anywhere, get the messages completed so far.

    After an error the decoder stays failed: the stream cannot be resynchronised.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failure: EventStreamError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a message (non-zero at end = truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventMessage]:
        if self._failure is not None:
            raise EventStreamError(f"decoder already failed: {self._failure}")
        self._buffer += data
        messages: list[EventMessage] = []
        try:
            while True:
                message = self._next_message()
                if message is None:
                    return messages
                messages.append(message)
        except EventStreamError as exc:
            self._failure = exc
            raise

    def _next_message(self) -> EventMessage | None:
        buffer = self._buffer
        if len(buffer) < PRELUDE_LENGTH:
            return None
        total_length, headers_length, prelude_crc = struct.unpack_from(">III", buffer, 0)
        computed = _crc(memoryview(buffer)[:8])
        if computed != prelude_crc:
            raise EventStreamError(
                f"prelude checksum mismatch: expected 0x{prelude_crc:08x}, computed 0x{computed:08x}"
            )
        if headers_length > MAX_HEADERS_LENGTH:
            raise EventStreamError(f"headers length {headers_length} exceeds {MAX_HEADERS_LENGTH}")
        payload_length = total_length - headers_length - _MIN_MESSAGE_LENGTH
        if payload_length < 0:
            raise EventStreamError(f"total length {total_length} too small for {headers_length} header bytes")
        if payload_length > MAX_PAYLOAD_LENGTH:
            raise EventStreamError(f"payload length {payload_length} exceeds {MAX_PAYLOAD_LENGTH}")
        if len(buffer) < total_length:
            return None
        frame = bytes(buffer[:total_length])
        del buffer[:total_length]
        (message_crc,) = struct.unpack_from(">I", frame, total_length - MESSAGE_CRC_LENGTH)
        computed = _crc(frame[: total_length - MESSAGE_CRC_LENGTH])
        if computed != message_crc:
            raise EventStreamError(
                f"message checksum mismatch: expected 0x{message_crc:08x}, computed 0x{computed:08x}"
            )
        headers_end = PRELUDE_LENGTH + headers_length
        headers = _decode_headers(frame[PRELUDE_LENGTH:headers_end])
        return EventMessage(headers=headers, payload=frame[headers_end : total_length - MESSAGE_CRC_LENGTH])


def decode_messages(data: bytes) -> list[EventMessage]:
    """Decode a complete stream; trailing partial data is an error."""
    decoder = EventStreamDecoder()
    messages = decoder.feed(data)
    if decoder.buffered:
        raise EventStreamError(f"stream ends inside a message ({decoder.buffered} bytes left over)")
    return messages


# --- Bedrock Runtime events -------------------------------------------------------------------

_JSON = "application/json"


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def chunk_event(model_json: Mapping[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event carrying one model-native JSON chunk."""
    return raw_chunk_event(_json_bytes(model_json))


def raw_chunk_event(model_bytes: bytes) -> bytes:
    """A ``chunk`` event carrying ``model_bytes`` as given, JSON or not."""
    headers = {":event-type": "chunk", ":content-type": _JSON, ":message-type": "event"}
    encoded = base64.b64encode(model_bytes).decode("ascii")
    return encode_message(headers, _json_bytes({"bytes": encoded}))


def converse_event(event_type: str, body: Mapping[str, Any]) -> bytes:
    """A ConverseStream event such as ``messageStart`` or ``metadata``."""
    headers = {":event-type": event_type, ":content-type": _JSON, ":message-type": "event"}
    return encode_message(headers, _json_bytes(body))


def exception_event(exception_type: str, message: str, **extra: Any) -> bytes:
    """A modelled stream exception; ``ThrottlingException`` is sent as ``throttlingException``."""
    name = exception_type[:1].lower() + exception_type[1:]
    headers = {":exception-type": name, ":content-type": _JSON, ":message-type": "exception"}
    return encode_message(headers, _json_bytes({"message": message, **extra}))


def error_event(error_code: str, message: str) -> bytes:
    """An unmodelled stream error (``:message-type`` ``error``), carried in headers only."""
    headers = {":error-code": error_code, ":error-message": message, ":message-type": "error"}
    return encode_message(headers, b"")


def decode_chunk(msg: EventMessage) -> dict[str, Any]:
    """The model-native JSON inside a ``chunk`` event (base64 ``bytes`` member of the payload)."""
    if msg.event_type != "chunk":
        raise EventStreamError(f"not a chunk event: {msg.message_type}/{msg.event_type}")
    try:
        envelope = json.loads(msg.payload)
        model_json = json.loads(base64.b64decode(envelope["bytes"], validate=True))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise EventStreamError(f"chunk payload is not base64 model JSON: {exc}") from exc
    if not isinstance(model_json, dict):
        raise EventStreamError("chunk model JSON is not an object")
    return model_json
