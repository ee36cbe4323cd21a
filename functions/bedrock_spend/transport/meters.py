"""Meters: watch a Bedrock answer's bytes go by and say what the call consumed.

The proxy relays Bedrock's bytes unchanged; a meter sees each chunk after it was relayed
and, at the end, reports :class:`Measured` (usage, the service tier and latency mode Bedrock
says it served, and the error that ended a stream early). One meter per response protocol:

* JSON bodies (InvokeModel, Converse) are read once, whole, at their end;
* AWS event streams (InvokeModelWithResponseStream, ConverseStream) are decoded frame by
  frame with botocore's own :class:`~botocore.eventstream.EventStreamBuffer`, so usage is
  known up to the last frame that arrived, even when the stream is cut short.

Meters never raise: an answer Bedrock billed must be recorded whatever its bytes hold.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from bedrock_spend.domain.model_ids import ModelRef
from bedrock_spend.domain.usage import (
    CompatStreamUsage,
    StreamUsage,
    Usage,
    usage_from_async_invoke,
    usage_from_compat,
    usage_from_converse,
    usage_from_invoke,
)

logger = Logger(child=True)

SERVICE_TIER_HEADER = "x-amzn-bedrock-service-tier"
LATENCY_HEADER = "x-amzn-bedrock-performanceconfig-latency"
# Bodies above this are relayed but not kept for metering (InvokeModel then falls back to
# Bedrock's token-count headers). Bedrock's largest answers (images, embeddings) fit.
MAX_METERED_BODY = 32 * 1024 * 1024
MALFORMED_STREAM = "MalformedEventStream"


@dataclass(frozen=True, slots=True)
class Measured:
    usage: Usage
    service_tier: str | None = None
    latency: str | None = None
    # Why the answer ended early: Bedrock's exception type, or the proxy's error type.
    stream_error: str | None = None


@dataclass(frozen=True, slots=True)
class Requested:
    """What the request asked for, used where Bedrock's answer does not say what it served."""

    body: bytes = b""
    service_tier: str | None = None
    latency: str | None = None


class Meter(Protocol):
    def feed(self, data: bytes) -> None: ...

    def finish(self, error: str | None = None) -> Measured: ...


# Operations of the OpenAI- and Anthropic-compatible APIs -> the API whose usage they carry.
COMPAT_OPERATIONS = {"ChatCompletions": "chat", "Responses": "responses", "Messages": "messages"}


def meter_for(operation: str, ref: ModelRef, headers: Mapping[str, str], requested: Requested) -> Meter:
    """The meter for ``operation``'s answer; ``headers`` are Bedrock's, lower-case."""
    if operation in COMPAT_OPERATIONS:
        api = COMPAT_OPERATIONS[operation]
        if "text/event-stream" in headers.get("content-type", ""):
            return SseMeter(api)
        return CompatJsonMeter(api)
    if operation == "Converse":
        return ConverseMeter(requested)
    if operation == "StartAsyncInvoke":
        return AsyncInvokeMeter(ref, requested)
    if operation == "InvokeModelWithResponseStream":
        return EventStreamMeter(ref, _served(headers, requested))
    if operation == "ConverseStream":
        return EventStreamMeter(
            ref, Requested(service_tier=requested.service_tier, latency=requested.latency)
        )
    return InvokeMeter(ref, headers, requested)


def _served(headers: Mapping[str, str], requested: Requested) -> Requested:
    return Requested(
        service_tier=headers.get(SERVICE_TIER_HEADER) or requested.service_tier,
        latency=headers.get(LATENCY_HEADER) or requested.latency,
    )


class _Body:
    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = True

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_METERED_BODY:
            self.complete = False
            self._parts.clear()
        elif self.complete:
            self._parts.append(data)

    def bytes(self) -> bytes:
        return b"".join(self._parts)


class InvokeMeter:
    """InvokeModel: the model's JSON body, then Bedrock's token-count headers for what it lacks."""

    def __init__(self, ref: ModelRef, headers: Mapping[str, str], requested: Requested) -> None:
        self._ref = ref
        self._headers = headers
        self._requested = requested
        self._body = _Body()

    def feed(self, data: bytes) -> None:
        self._body.feed(data)

    def finish(self, error: str | None = None) -> Measured:
        body = self._body.bytes() if self._body.complete and error is None else b""
        served = _served(self._headers, self._requested)
        try:
            usage = usage_from_invoke(self._ref, body, self._headers, self._requested.body)
        except Exception:  # a meter never fails a billed call
            logger.exception("usage extraction failed", extra={"model_id": self._ref.raw})
            usage = Usage(source="none")
        return Measured(usage, served.service_tier, served.latency, error)


class AsyncInvokeMeter:
    """StartAsyncInvoke (video): accepted when the answer has an invocationArn; the usage is what
    the request's ``modelInput`` asks for (async_invoke.py), read from the request body."""

    def __init__(self, ref: ModelRef, requested: Requested) -> None:
        self._ref = ref
        self._requested = requested
        self._body = _Body()

    def feed(self, data: bytes) -> None:
        self._body.feed(data)

    def finish(self, error: str | None = None) -> Measured:
        answer = self._body.bytes() if self._body.complete else b""
        try:
            usage = usage_from_async_invoke(self._ref, self._requested.body, answer)
        except Exception:  # a meter never fails a billed call
            logger.exception("usage extraction failed", extra={"model_id": self._ref.raw})
            usage = Usage(source="none")
        return Measured(usage, stream_error=error)


class ConverseMeter:
    """Converse: ``usage``, ``serviceTier`` and ``performanceConfig`` of the JSON answer."""

    def __init__(self, requested: Requested) -> None:
        self._requested = requested
        self._body = _Body()

    def feed(self, data: bytes) -> None:
        self._body.feed(data)

    def finish(self, error: str | None = None) -> Measured:
        answer = _json_object(self._body.bytes()) if self._body.complete and error is None else {}
        return Measured(
            usage_from_converse(answer),
            _member(answer, "serviceTier", "type") or self._requested.service_tier,
            _member(answer, "performanceConfig", "latency") or self._requested.latency,
            error,
        )


class EventStreamMeter:
    """Both event-stream operations: every frame as it completes, counts never added twice."""

    def __init__(self, ref: ModelRef, requested: Requested) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._ref = ref
        self._buffer = EventStreamBuffer()
        self._usage = StreamUsage(ref)
        self._service_tier = requested.service_tier
        self._latency = requested.latency
        self._error: str | None = None
        self._broken = False
        self._pending = 0  # bytes of a frame not complete yet

    def feed(self, data: bytes) -> None:
        if self._broken:
            return
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        self._pending += len(data)
        try:
            message: Any
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                self._read(message.headers, message.payload)
        except ParserError as exc:
            # Relayed as Bedrock sent it; the caller's SDK will refuse it too.
            logger.warning("Bedrock sent a malformed event stream", extra={"reason": str(exc)[:200]})
            self._broken = True
            self._error = self._error or MALFORMED_STREAM

    def finish(self, error: str | None = None) -> Measured:
        stream_error = self._error or error
        if stream_error is None and self._pending and not self._broken:
            stream_error = "IncompleteEventStream"
        return Measured(self._usage.usage(), self._service_tier, self._latency, stream_error)

    def _read(self, headers: Mapping[str, Any], payload: bytes) -> None:
        kind = headers.get(":message-type")
        if kind in ("exception", "error"):
            name = headers.get(":exception-type") or headers.get(":error-code") or "UnknownError"
            if self._error is None:
                self._error = str(name)[:1].upper() + str(name)[1:]
            return
        event = headers.get(":event-type")
        if kind != "event" or not isinstance(event, str):
            return
        obj = _json_object(payload)
        if event == "chunk":
            chunk = _json_object(_b64(obj.get("bytes")))
            self._usage.feed_chunk(chunk)
            return
        self._usage.feed_converse_event(event, obj)
        if event == "metadata":
            self._service_tier = _member(obj, "serviceTier", "type") or self._service_tier
            self._latency = _member(obj, "performanceConfig", "latency") or self._latency


class CompatJsonMeter:
    """A non-streamed Chat Completions, Responses or Messages answer: its ``usage``."""

    def __init__(self, api: str) -> None:
        self._api = api
        self._body = _Body()

    def feed(self, data: bytes) -> None:
        self._body.feed(data)

    def finish(self, error: str | None = None) -> Measured:
        answer = _json_object(self._body.bytes()) if self._body.complete and error is None else {}
        return Measured(usage_from_compat(self._api, answer), stream_error=error)


class SseEvents:
    """Server-sent events, split as bytes arrive: (event name, data) of each complete one."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[tuple[bytes, str | None, str]]:
        """Each event completed by ``data``: (its raw bytes, its ``event:`` name, its data)."""
        self._pending += data
        events: list[tuple[bytes, str | None, str]] = []
        while True:
            end, size = _event_end(self._pending)
            if end < 0:
                return events
            raw, self._pending = self._pending[: end + size], self._pending[end + size :]
            name, lines = None, []
            for line in raw.decode("utf-8", "replace").splitlines():
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    lines.append(value)
            events.append((raw, name, "\n".join(lines)))

    @property
    def pending(self) -> bytes:
        return self._pending


def _event_end(data: bytes) -> tuple[int, int]:
    ends = [(data.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n") if data.find(sep) >= 0]
    return min(ends) if ends else (-1, 0)


class SseMeter:
    """A streamed Chat Completions, Responses or Messages answer, event by event."""

    def __init__(self, api: str) -> None:
        self._events = SseEvents()
        self._usage = CompatStreamUsage(api)
        self._error: str | None = None

    def feed(self, data: bytes) -> None:
        for _, name, text in self._events.feed(data):
            if text == "[DONE]" or not text:
                continue
            event = _json_object(text.encode())
            if name == "error" or event.get("type") in ("error", "response.failed") or "error" in event:
                error = event.get("error")
                kind = error.get("type") or error.get("code") if isinstance(error, Mapping) else None
                self._error = self._error or str(kind or "StreamError")
            self._usage.feed(event)

    def finish(self, error: str | None = None) -> Measured:
        return Measured(self._usage.usage(), stream_error=self._error or error)


class HiddenUsageChunk:
    """Keeps from the caller what asking for usage added to a Chat Completions stream.

    The proxy asks Bedrock for ``stream_options.include_usage`` so a stream is metered exactly;
    a caller that did not ask must get the stream it asked for: no extra chunk (``choices``
    empty, ``usage`` set), and no ``"usage": null`` member on the other chunks (the OpenAI API
    adds it to every chunk when usage is asked for). The member is cut from the bytes, so the
    rest of the event is relayed as Bedrock wrote it; an event where the cut would change
    anything else passes unchanged. Complete events pass as they arrive; a partial one waits
    for its end.
    """

    def __init__(self) -> None:
        self._events = SseEvents()

    def __call__(self, data: bytes) -> bytes:
        kept = []
        for raw, _, text in self._events.feed(data):
            event = _json_object(text.encode()) if text and text != "[DONE]" else {}
            if event.get("choices") == [] and isinstance(event.get("usage"), Mapping):
                continue
            kept.append(
                _without_null_usage(raw, event) if "usage" in event and event["usage"] is None else raw
            )
        return b"".join(kept)

    def rest(self) -> bytes:
        """Bytes of an event that never ended, passed on as they came."""
        return self._events.pending


# `"usage": null` as the last member (with the comma before it) or as any other (with the one after).
_NULL_USAGE = re.compile(rb'\s*,\s*"usage"\s*:\s*null(?=\s*})|"usage"\s*:\s*null\s*,\s*')


def _without_null_usage(raw: bytes, event: Mapping[str, Any]) -> bytes:
    expected = {name: value for name, value in event.items() if name != "usage"}
    for match in _NULL_USAGE.finditer(raw):
        candidate = raw[: match.start()] + raw[match.end() :]
        text = next((t for _, _, t in SseEvents().feed(candidate)), "")
        if _json_object(text.encode()) == expected:  # the top-level member, and only it, is gone
            return candidate
    return raw


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data) if data else None
    except (ValueError, RecursionError):  # relayed as Bedrock sent it; usage "not reported"
        return {}
    return value if isinstance(value, dict) else {}


def _member(obj: Mapping[str, Any], outer: str, inner: str) -> str | None:
    value = obj.get(outer)
    inner_value = value.get(inner) if isinstance(value, Mapping) else None
    return inner_value if isinstance(inner_value, str) and inner_value else None
