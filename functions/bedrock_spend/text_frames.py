"""Event-stream frames that API Gateway can carry as text.

A REST API hands a Lambda proxy's base64 body to the client decoded only when the request's
first ``Accept`` type is one of the API's binary media types; otherwise the client gets the
base64 text. boto3, the AWS CLI and other AWS SDKs send no ``Accept`` on
InvokeModelWithResponseStream and ConverseStream, so a base64 event stream would reach them
undecodable. A body that is valid UTF-8 can travel as text instead, byte for byte.

A frame's payload and header values are UTF-8 already; its lengths and CRC-32 checksums are
binary. :func:`text_safe` adds one padding header (``p``, ``pp``, ...: a string, as Bedrock
pads its own payloads with a ``p`` member) whose size and content make every binary field ASCII. SDKs
ignore headers they do not know, and JSON allows whitespace after a value: a JSON payload may
get trailing spaces. The other headers and the payload's content stay byte for byte.
"""

from __future__ import annotations

import struct
import zlib

PAD_NAME = b"p"  # repeated: the header is named p, pp, ppp, ...
_PRELUDE = 12
_STRING = 7
_MAX_SHORT = 0x7F
_MIN_HEADER = 5  # a one-letter name and an empty value
_MAX_ADDED = 2048
_MAX_SPACES = 255
_PAD_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_VARIANTS = 4096
_HIGH_BITS = 0x80808080  # a u32 is ASCII when no byte has its high bit


def text_safe(frame: bytes) -> bytes | None:
    """``frame`` as valid UTF-8: unchanged if it is already, else padded; None if it cannot be."""
    if _utf8(frame):
        return frame
    total, headers_length = struct.unpack_from(">II", frame)
    headers = frame[_PRELUDE : _PRELUDE + headers_length]
    payload = frame[_PRELUDE + headers_length : total - 4]
    # ASCII around valid UTF-8 keeps it valid; the header section must be UTF-8 by itself.
    if not (_utf8(headers) and _utf8(payload)):
        return None
    # Two knobs, smallest total first: the padding header's size moves the header and total
    # lengths together; spaces after a JSON payload move the total alone. Some pair makes
    # the lengths and the prelude checksum ASCII; the padding's content then fixes the
    # message checksum.
    max_spaces = _MAX_SPACES if payload.startswith(b"{") else 0
    for added in range(_MIN_HEADER, _MAX_ADDED):
        for spaces in range(min(max_spaces, added - _MIN_HEADER) + 1):
            padded = _pad(headers, payload + b" " * spaces, added - spaces)
            if padded is not None:
                return padded
    return None


def _pad(headers: bytes, payload: bytes, header_size: int) -> bytes | None:
    headers_length = len(headers) + header_size
    total = 16 + headers_length + len(payload)
    if (headers_length | total) & _HIGH_BITS:
        return None
    prelude = struct.pack(">II", total, headers_length)
    prelude_crc = _crc(prelude)
    if prelude_crc & _HIGH_BITS:
        return None
    name_and_value = header_size - 4  # + name length, type, u16 value length
    value_length = _value_length(name_and_value)
    if value_length is None:
        return None
    name = PAD_NAME * (name_and_value - value_length)
    head = prelude + struct.pack(">I", prelude_crc) + headers + struct.pack(">B", len(name)) + name
    head += struct.pack(">BH", _STRING, value_length)
    head_crc = _crc(head)
    for variant in range(min(_VARIANTS, len(_PAD_CHARS) ** value_length)):
        value = _padding(variant, value_length)
        message_crc = _crc(value + payload, head_crc)
        if not message_crc & _HIGH_BITS:
            return head + value + payload + struct.pack(">I", message_crc)
    return None


def _value_length(extra: int) -> int | None:
    """A padding value length whose u16 bytes are ASCII, leaving a 1-127 byte name."""
    value_length = extra - 1
    if value_length & 0x80:
        value_length = (value_length & ~0xFF) | 0x7F
    return value_length if 1 <= extra - value_length <= _MAX_SHORT else None


def _padding(variant: int, length: int) -> bytes:
    digits = bytearray()
    while variant:
        variant, digit = divmod(variant, len(_PAD_CHARS))
        digits.append(_PAD_CHARS[digit])
    return bytes(digits[:length]).rjust(length, b"x")


def _crc(data: bytes, seed: int = 0) -> int:
    return zlib.crc32(data, seed) & 0xFFFFFFFF


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
