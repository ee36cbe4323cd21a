"""A Bedrock event stream collected whole, metered on the way, returned as one response.

Python Lambda functions cannot stream a response, so the proxy reads the entire stream,
passes every event on (exception events included: the SDK raises from them) and meters each
one as it goes: InvokeModelWithResponseStream chunks and ConverseStream events feed
:class:`~bedrock_spend.usage.StreamUsage`, which reads Bedrock's own counts without
counting anything twice.

The body is made of Bedrock's frames made text-safe (:mod:`bedrock_spend.text_frames`), so
API Gateway delivers it to SDKs that send no ``Accept`` header; if a frame cannot be, the
body is Bedrock's exact bytes, base64 (it reaches clients whose ``Accept`` is
``application/vnd.amazon.eventstream``).

Two limits of the buffered design end a stream early; each is passed on as an event-stream
``error`` message after the events that fit, so the SDK raises mid-stream as it would for a
Bedrock error, and the usage seen so far is still recorded:

* size: the body must fit Lambda's 6 MB response as the proxy returns it (text escaped
  as JSON, or base64), so at most :data:`MAX_BODY_BYTES` of it. Past that the proxy keeps
  reading without keeping, so the record still gets Bedrock's final counts (error code
  ``StreamTooLarge``);
* time: the stream must end within the Bedrock read timeout (``BedrockTimeout``); a broken
  connection gives ``BedrockUnavailable``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from bedrock_spend.errors import ProxyError
from bedrock_spend.eventstream import (
    EventMessage,
    EventStreamDecoder,
    EventStreamError,
    decode_chunk,
    error_event,
)
from bedrock_spend.model_ids import ModelRef
from bedrock_spend.text_frames import text_safe
from bedrock_spend.usage import StreamUsage

logger = Logger(child=True)

EVENT_STREAM = "application/vnd.amazon.eventstream"
# Of Lambda's 6 MB (6,291,456 byte) response, what the body may take as returned; the rest
# is room for the headers and the response's JSON envelope.
MAX_BODY_BYTES = 5_500_000
STREAM_TOO_LARGE = "StreamTooLarge"
MALFORMED_STREAM = "MalformedEventStream"
# Room kept for the closing error frame.
_ERROR_FRAME_ROOM = 1024


@dataclass(frozen=True, slots=True)
class CollectedStream:
    body: bytes
    usage: StreamUsage
    # The first error the caller sees: Bedrock's exception type or one of the codes above.
    error: str | None = None
    # What Bedrock reports it served (ConverseStream ``metadata`` event).
    service_tier: str | None = None
    latency: str | None = None


def collect(
    ref: ModelRef, operation: str, chunks: Iterator[bytes], limit: int | None = None
) -> CollectedStream:
    """Read ``chunks`` to the end. Never raises: what Bedrock billed must still be recorded.

    ``limit`` bounds the body as returned (default :data:`MAX_BODY_BYTES`).
    """
    collector = _Collector(ref, operation, MAX_BODY_BYTES if limit is None else limit)
    try:
        for data in chunks:
            if not collector.feed(data):
                break
    except ProxyError as exc:
        collector.fail(exc.type, exc.message)
    except Exception:
        # A bug here must not lose what Bedrock billed: end the stream, record what was seen.
        logger.exception("stream collection failed", extra={"operation": operation})
        collector.fail("InternalServerError", "the proxy failed while reading the stream")
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return collector.result()


class _Collector:
    def __init__(self, ref: ModelRef, operation: str, limit: int) -> None:
        self._operation = operation
        self._limit = limit
        self._usage = StreamUsage(ref)
        self._decoder = EventStreamDecoder()
        self._pending = bytearray()  # bytes of frames not complete yet, in step with the decoder
        self._frames: list[bytes] = []  # as Bedrock sent them
        self._text: list[bytes] | None = []  # the same, text-safe; None once one cannot be
        self._size = 0  # of the body as returned, whichever form it takes
        self._overflow = False
        self._error: str | None = None
        self._closing: bytes = b""
        self._service_tier: str | None = None
        self._latency: str | None = None

    def feed(self, data: bytes) -> bool:
        """Take the next bytes; False when the stream cannot be read any further."""
        self._pending += data
        try:
            messages = self._decoder.feed(data)
        except EventStreamError as exc:
            logger.warning("Bedrock sent a malformed event stream", extra={"reason": str(exc)})
            self.fail(MALFORMED_STREAM, "Bedrock sent a malformed event stream")
            return False
        for message in messages:
            (length,) = struct.unpack_from(">I", self._pending, 0)
            frame = bytes(self._pending[:length])
            del self._pending[:length]
            self._keep(frame)
            self._meter(message)
        return True

    def fail(self, code: str, message: str) -> None:
        """End the stream with an ``error`` frame, unless the caller already got an error."""
        logger.warning("stream ended early", extra={"error_type": code, "operation": self._operation})
        if self._error is None:
            self._error = code
            self._closing = error_event(code, message)

    def result(self) -> CollectedStream:
        if self._decoder.buffered and self._error is None:
            self.fail("BedrockUnavailable", "Bedrock's stream ended inside a message")
        if self._overflow and not self._closing:
            message = f"the streamed response exceeds the proxy's limit of {self._limit} bytes"
            self._closing = error_event(STREAM_TOO_LARGE, message)
        closing = text_safe(self._closing) if self._closing and self._text is not None else b""
        if self._text is not None and closing is not None:
            body = b"".join(self._text) + closing
        else:
            body = b"".join(self._frames) + self._closing
        return CollectedStream(
            body=body,
            usage=self._usage,
            error=self._error,
            service_tier=self._service_tier,
            latency=self._latency,
        )

    def _keep(self, frame: bytes) -> None:
        if self._overflow:
            return
        safe = text_safe(frame) if self._text is not None else None
        # Sized as the larger of its two forms: a later frame may still force base64.
        size = max(_base64_size(frame), _json_size(safe) if safe is not None else 0)
        if self._size + size > self._limit - _ERROR_FRAME_ROOM:
            self._overflow = True
            if self._error is None:
                self._error = STREAM_TOO_LARGE
            return
        self._size += size
        self._frames.append(frame)
        if self._text is not None:
            if safe is None:
                self._text = None
            else:
                self._text.append(safe)

    def _meter(self, message: EventMessage) -> None:
        kind = message.message_type
        if kind in ("exception", "error"):
            name = message.exception_type or _str(message.headers.get(":error-code")) or "UnknownError"
            if self._error is None:
                self._error = name[:1].upper() + name[1:]
            return
        if kind != "event" or message.event_type is None:
            return
        try:
            if message.event_type == "chunk":
                self._usage.feed_chunk(decode_chunk(message))
                return
            payload = json.loads(message.payload)
        except (EventStreamError, ValueError, RecursionError):
            return  # unreadable: passed on as it is, metered from the other events
        if isinstance(payload, dict):
            self._usage.feed_converse_event(message.event_type, payload)
            if message.event_type == "metadata":
                self._service_tier = _member(payload, "serviceTier", "type") or self._service_tier
                self._latency = _member(payload, "performanceConfig", "latency") or self._latency


def _base64_size(frame: bytes) -> int:
    return (len(frame) + 2) // 3 * 4


def _json_size(frame: bytes) -> int:
    # As Lambda's runtime serializes the body string (json.dumps: ASCII, control characters
    # and non-ASCII escaped).
    return len(json.dumps(frame.decode("utf-8"))) - 2


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _member(obj: Mapping[str, Any], outer: str, inner: str) -> str | None:
    value = obj.get(outer)
    return _str(value.get(inner)) if isinstance(value, Mapping) else None
