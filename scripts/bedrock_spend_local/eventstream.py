"""AWS event-stream encoding (``application/vnd.amazon.eventstream``) for the emulator.

Wire format of one message, all integers big-endian::

    | total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32 |

``prelude_crc`` is the CRC-32 of the first 8 bytes, ``message_crc`` the CRC-32 of everything
before it. Encoding maps ``bool`` to header types 0/1, ``str`` to 7, ``bytes`` to 6 and ``int``
to int32 (type 4), widening to int64 (type 5) only when the value does not fit in 32 bits.
Decoding is botocore's (``botocore.eventstream``); only the encoder lives here.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

HeaderValue = str | bytes | int | bool

MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
_MIN_MESSAGE_LENGTH = 16  # prelude (12) + message CRC (4)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TYPE_TRUE, _TYPE_FALSE, _TYPE_INT32, _TYPE_INT64, _TYPE_BYTES, _TYPE_STRING = 0, 1, 4, 5, 6, 7
_JSON = "application/json"


class EventStreamError(ValueError):
    """A message that cannot be framed."""


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) <= 0xFF:
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
    if len(data) > 0xFFFF:
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


# --- Bedrock Runtime events -------------------------------------------------------------------


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
