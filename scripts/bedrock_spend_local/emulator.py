"""A Bedrock Runtime emulator: a real HTTP server that unmodified boto3 clients can call.

Point ``boto3.client("bedrock-runtime", endpoint_url=emulator.url, ...)`` at it (SigV4 or
``AWS_BEARER_TOKEN_BEDROCK``; auth is recorded, never checked). It serves
``POST /model/{modelId}/invoke | converse | invoke-with-response-stream | converse-stream |
count-tokens`` with model-native bodies for each family, deterministic token counts, prompt
caching, event streams, and injectable faults. Run it alone with
``python -m bedrock_spend_local.emulator --port 8765``.

Token counts (same request -> same counts, on every operation):

* ``words(t)`` = number of whitespace-separated words of ``t`` once directives are removed.
* Text is every string under a key named ``text``, ``prompt``, ``inputText``, ``content``,
  ``system``, ``message``, ``texts``, ``preamble``, ``negativeText`` or ``description``,
  anywhere in the request (so image bytes, roles and parameters never count).
* ``total_input = sum(words) + 3 * max(1, len(messages))``.
* ``output = 5 + total_input % 40``, capped by the request's max-token setting (``max_tokens``,
  ``max_gen_len``, ``maxTokens``, ``maxTokenCount``, ``max_new_tokens``, ... at the top level or
  in ``inferenceConfig`` / ``textGenerationConfig``); a capped reply stops with the family's
  "length" reason. The reply text has exactly ``output`` words. Embeddings produce no output.
  Image models report no tokens; they bill ``images`` (``numberOfImages``, default 1).
* CountTokens returns ``total_input`` and is never billed.

Prompt caching: a block with Anthropic ``cache_control`` (``ttl`` ``5m`` default or ``1h``) or a
``cachePoint`` block (Converse and Nova) marks a breakpoint after all text before it (order:
tools, other members, system, messages). The longest breakpoint prefix already seen for the same
base model (geo prefix and ARN stripped) is a cache READ; the tokens from there up to the last
breakpoint are a cache WRITE, attributed to the TTL of the breakpoint that ends each segment.
Entries expire after their TTL (refreshed on read). ``input_tokens`` is always the non-cached
rest. There is no minimum cacheable length.

Fault and latency directives, written anywhere in the prompt text (not counted as tokens)::

    [[emulator error=ThrottlingException]]        HTTP error before the call (not billed);
                                                  also status=<int> message=<one_word>
    [[emulator latency_ms=250]]                   sleep before answering (adds to --latency-ms)
    [[emulator malformed]]                        200 with a non-JSON body (streams: one chunk
                                                  whose model bytes are not JSON); billed
    [[emulator stream_error=modelStreamErrorException after=3]]
                                                  streams only: exception event after 3 events
    [[emulator no_usage_headers]]                 no token-count headers on InvokeModel and no
                                                  amazon-bedrock-invocationMetrics in streams
    [[emulator chunk_delay_ms=20]]                sleep between stream events
    [[emulator disconnect]]                       close the connection without answering (not
                                                  billed); streams: after ``after`` events (billed
                                                  like a stream error, error ``disconnect``)

Several ``key=value`` / flag words may share one ``[[emulator ...]]``. The same keys form fault
rules queued with ``POST /_emulator/faults`` (``{"error": "ThrottlingException", "times": 2,
"model": "claude", "operation": "Converse"}``; ``model`` is a substring of the model id) or
:meth:`BedrockEmulator.add_fault`; ``DELETE /_emulator/faults`` clears them. A stream error named
after a modelled member of the operation's stream union is sent as ``:message-type: exception``;
any other name as an unmodelled ``error`` message.

Errors: every Bedrock error name maps to its HTTP status, ``x-amzn-errortype:
<Name>:http://internal.amazon.com/coral/com.amazon.bedrock/`` and ``{"message": ...}``, so botocore
raises ``client.exceptions.<Name>``.

Headers: InvokeModel answers carry ``x-amzn-bedrock-input-token-count`` / ``-output-token-count``
/ ``-invocation-latency`` (+ the two cache headers when the request had breakpoints; image models
get no token headers). Converse answers deliberately carry no ``x-amzn-bedrock-*`` count headers,
so a proxy must read the body, which is the documented source. Streams are sent with chunked
transfer encoding, one HTTP chunk per event, flushed.

Tally (``billed()``, ``GET /_emulator/billed``): one dict per billed call with ``request_id,
operation, model_id`` (as sent, decoded once), ``input_tokens`` (non-cached), ``output_tokens,
cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, images, request_metadata`` (the
raw ``X-Amzn-Bedrock-Request-Metadata`` string for invoke operations, the ``requestMetadata`` map
for Converse), ``authorization_scheme`` (``Bearer``, ``AWS4-HMAC-SHA256`` or None), ``error``
(None, or the injected stream error) and ``waited_ms`` (what the emulator slept for the call: its
latency, then each pause between stream events, counted as each pause ends, so a stream's total
is final once its last event is out), written just before the response is sent. Every wait goes
through ``BedrockEmulator.sleep``, which an in-process test may wrap to step in between two
events. A stream that ends in an injected error still bills all its input (cache read and write
included) and the output words carried by the events sent before the error. Calls rejected before
the model runs (injected or validation errors) and CountTokens are not billed. ``reset()`` /
``POST /_emulator/reset`` clears the tally, the prompt cache and the fault rules.

OpenAI- and Anthropic-compatible APIs (the same server; auth recorded, never checked):

* ``POST /openai/v1/chat/completions`` and ``/v1/chat/completions`` (bedrock-runtime and
  bedrock-mantle): a ``chat.completion`` whose ``usage`` has ``prompt_tokens`` (cached part
  included), ``completion_tokens``, ``total_tokens``, ``prompt_tokens_details.cached_tokens`` and
  ``completion_tokens_details.reasoning_tokens``; ``finish_reason`` ``stop`` or ``length``. With
  ``"stream": true``: SSE ``data: {chat.completion.chunk}`` lines, a usage chunk (``choices: []``)
  only when ``stream_options.include_usage`` (earlier chunks then carry ``"usage": null``), then
  ``data: [DONE]``.
* ``POST /openai/v1/responses`` and ``/v1/responses``: a ``response`` (``input`` string or item
  list, plus ``instructions``, counted like messages and ``system``); ``status`` ``completed``, or
  ``incomplete`` with ``incomplete_details.reason = max_output_tokens`` when capped by
  ``max_output_tokens``. Streamed: ``event: <type>`` SSE with ``sequence_number``:
  ``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` (several), ``...text.done``,
  ``...content_part.done``, ``...output_item.done``, ``response.completed`` (or
  ``response.incomplete``) whose ``response.usage`` has the counts.
* ``GET /openai/v1/models`` and ``/v1/models`` (and ``.../models/{id}``): ``LISTED_MODELS``.
* ``POST /anthropic/v1/messages``: an Anthropic ``message`` (``max_tokens`` required), prompt
  caching with ``cache_control`` as for Claude on InvokeModel; streamed like
  InvokeModelWithResponseStream's Claude events plus a ``ping``, as ``event: <type>`` SSE.
  ``POST /anthropic/v1/messages/count_tokens``: ``{"input_tokens": N}``, not billed.

Token counts are those of the module's rules (the Chat Completions / Responses APIs never cache:
``cached_tokens`` is 0). The directives work as above, except ``no_usage_headers`` (ignored); the
fault-rule ``operation`` names are ``ChatCompletions``, ``Responses``, ``Messages`` and
``CountTokens`` (also Anthropic's count_tokens). Errors are non-2xx with the API's shape: OpenAI
``{"error": {"message", "type", "code": <Bedrock error name>, "param": null}}`` (``type`` from the
status: ``rate_limit_error``, ``server_error``...), Anthropic ``{"type": "error", "error":
{"type", "message"}, "request_id"}`` (``overloaded_error`` for 503/529...), with the injected
status. Stream errors after ``after`` events: Chat Completions ``data: {"error": {...}}`` and no
``[DONE]``; Responses ``event: error`` then ``event: response.failed``; Messages ``event: error``.
``chunk_delay_ms`` spaces the SSE events. Tally records have ``operation`` ``ChatCompletions`` /
``Responses`` / ``Messages``, ``model_id`` = the body's ``model``, ``request_metadata`` = the body's
``metadata``, else its ``user``, and ``authorization_scheme`` also ``x-api-key`` (that header and
no ``Authorization``).

Async API (video models: ``amazon.nova-reel-*``, ``luma.*``; any other model is a
ValidationException): ``POST /async-invoke`` (StartAsyncInvoke) checks ``modelId``,
``modelInput`` and ``outputDataConfig.s3OutputDataConfig.s3Uri``, reads the seconds of video asked
for (Nova Reel ``TEXT_VIDEO`` ``videoGenerationConfig.durationSeconds``, 6 by default;
``MULTI_SHOT_AUTOMATED`` the same or ``multiShotAutomatedParams.durationSeconds``;
``MULTI_SHOT_MANUAL`` 6 per shot; Luma ``duration`` ``"5s"``/``"9s"``; unreadable: a
ValidationException, not billed) and answers ``{"invocationArn"}``; the job is ``Completed`` at
once and nothing is written to S3. ``GET /async-invoke/{invocationArn}`` (GetAsyncInvoke) answers
the job (``status``, ``modelArn``, ``submitTime``, ``endTime``, ``outputDataConfig``...), ``GET
/async-invoke`` (ListAsyncInvokes) every job as ``asyncInvokeSummaries``; neither is billed. A
submission's tally record has ``operation`` ``StartAsyncInvoke``, zero tokens, ``video_seconds``,
``invocation_arn`` and ``s3_uri``; directives in the model input's text work as above.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import copy
import functools
import hashlib
import json
import logging
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from bedrock_spend_local.eventstream import (
    chunk_event,
    converse_event,
    encode_message,
    error_event,
    exception_event,
    raw_chunk_event,
)
from bedrock_spend_local.http_server import TrackingHTTPServer

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
# Calls the emulator's tally keeps (the soak makes 10,000 by default).
MAX_TALLY = 100_000


def error_statuses() -> dict[str, int]:
    """Bedrock Runtime's error shapes and their HTTP status, from botocore's service model.

    Read from the model rather than written down: the proxy relays Bedrock's status as it
    comes, and tests check it against this table.
    """
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    return {shape.name: int(shape.metadata["error"]["httpStatusCode"]) for shape in model.error_shapes}


ERROR_STATUS: Mapping[str, int] = error_statuses()
_STREAM_UNION_ERRORS = frozenset(
    {
        "InternalServerException",
        "ModelStreamErrorException",
        "ValidationException",
        "ThrottlingException",
        "ServiceUnavailableException",
    }
)
STREAM_EXCEPTIONS: Mapping[str, frozenset[str]] = {
    "InvokeModelWithResponseStream": _STREAM_UNION_ERRORS | {"ModelTimeoutException"},
    "ConverseStream": _STREAM_UNION_ERRORS,
}
OPERATIONS: Mapping[str, str] = {
    "invoke": "InvokeModel",
    "converse": "Converse",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "converse-stream": "ConverseStream",
    "count-tokens": "CountTokens",
}
# The OpenAI-compatible (bedrock-runtime ``/openai/v1``, bedrock-mantle ``/v1``) and
# Anthropic-compatible (bedrock-mantle ``/anthropic/v1``) APIs: path -> (api, operation).
COMPAT_ROUTES: Mapping[str, tuple[str, str]] = {
    "/openai/v1/chat/completions": ("openai", "ChatCompletions"),
    "/v1/chat/completions": ("openai", "ChatCompletions"),
    "/openai/v1/responses": ("openai", "Responses"),
    "/v1/responses": ("openai", "Responses"),
    "/anthropic/v1/messages": ("anthropic", "Messages"),
    "/anthropic/v1/messages/count_tokens": ("anthropic", "CountTokens"),
}
COMPAT_OPERATIONS = ("ChatCompletions", "Responses", "Messages")
COMPAT_PREFIXES = ("/openai/", "/v1/", "/anthropic/")
MODELS_ROUTES = ("/openai/v1/models", "/v1/models")
LISTED_MODELS = (
    "openai.gpt-oss-120b-1:0",
    "openai.gpt-oss-20b-1:0",
    "qwen.qwen3-32b-v1:0",
    "anthropic.claude-3-haiku-20240307-v1:0",
)
LISTED_MODELS_CREATED = 1_754_006_400  # a fixed date, so listings are deterministic
GEO_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "global.")

MESSAGE_OVERHEAD_TOKENS = 3
OUTPUT_BASE_TOKENS = 5
OUTPUT_SPREAD_TOKENS = 40
WORDS_PER_CHUNK = 4
MAX_REQUEST_BYTES = 26_000_000
MALFORMED_BODY = b"<html><body>502 upstream gateway error</body></html>"
CACHE_TTL_SECONDS: Mapping[str, int] = {"5m": 300, "1h": 3600}

_MODEL_ROUTE = re.compile(r"^/model/(?P<model>.+)/(?P<action>" + "|".join(map(re.escape, OPERATIONS)) + r")$")
_DIRECTIVE = re.compile(r"\[\[emulator(?P<body>[^\]]*)\]\]")
_ERROR_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_TEXT_KEYS = frozenset(
    {"text", "prompt", "inputText", "content", "system", "message", "texts", "preamble", "negativeText"}
    | {"description"}  # tool definitions, so a cache point after tools covers something
)
_MAX_TOKEN_KEYS = (
    "max_tokens",
    "max_gen_len",
    "max_new_tokens",
    "maxTokens",
    "maxTokenCount",
    "max_completion_tokens",
    "max_tokens_to_sample",
    "max_output_tokens",  # OpenAI Responses
)
_REPLY_WORDS = ("emulated", "bedrock", "answer", "with", "deterministic", "tokens", "for", "metering")
_FAMILY_PREFIXES: Sequence[tuple[str, str]] = (
    ("anthropic.claude", "anthropic"),
    ("amazon.nova-canvas", "image"),
    ("amazon.titan-image", "image"),
    ("amazon.nova", "nova"),
    ("amazon.titan-embed", "titan_embed"),
    ("amazon.titan-text", "titan_text"),
    ("amazon.titan-tg1", "titan_text"),
    ("meta.llama", "llama"),
    ("mistral.", "mistral"),
    ("cohere.embed", "cohere_embed"),
    ("cohere.command-r", "cohere_chat"),
    ("cohere.command", "cohere_command"),
    ("ai21.jamba", "openai_chat"),
    ("openai.", "openai_chat"),
    ("deepseek.r1", "deepseek"),
    ("stability.", "stability"),
)
_EMBEDDING_FAMILIES = frozenset({"titan_embed", "cohere_embed"})
_IMAGE_FAMILIES = frozenset({"image", "stability"})
# Models served only by the async API (StartAsyncInvoke), by base model id prefix.
VIDEO_MODEL_PREFIXES = ("amazon.nova-reel", "luma.")
ASYNC_PATH = "/async-invoke"
ASYNC_ACCOUNT = "123456789012"
ASYNC_REGION = "us-east-1"
_S3_URI = re.compile(r"s3://[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9](/.*)?", re.DOTALL)
_LENGTH_STOP: Mapping[str, tuple[str, str]] = {  # family -> (finished, truncated)
    "anthropic": ("end_turn", "max_tokens"),
    "nova": ("end_turn", "max_tokens"),
    "titan_text": ("FINISHED", "LENGTH"),
    "cohere_chat": ("COMPLETE", "MAX_TOKENS"),
    "cohere_command": ("COMPLETE", "MAX_TOKENS"),
}


# --- model ids ---------------------------------------------------------------------------------


def base_model_id(model_id: str) -> str:
    """The base model id: ARN resource after the last ``/``, geo prefix removed."""
    name = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
    for prefix in GEO_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def model_family(model_id: str) -> str:
    """The response family the emulator answers with; ``generic`` is an OpenAI-style chat body."""
    base = base_model_id(model_id)
    for prefix, family in _FAMILY_PREFIXES:
        if base.startswith(prefix):
            return family
    return "generic"


# --- errors and options ------------------------------------------------------------------------


class BedrockApiError(Exception):
    """A Bedrock-style error reply: name, HTTP status, message and extra body members."""

    def __init__(self, name: str, message: str, status: int | None = None, **extra: Any) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.status = status if status is not None else ERROR_STATUS.get(name, 400)
        self.extra = extra


def _validation(message: str) -> BedrockApiError:
    return BedrockApiError("ValidationException", message)


@dataclass(frozen=True)
class FaultOptions:
    """What a directive or fault rule asks for."""

    error: str | None = None
    status: int | None = None
    message: str | None = None
    latency_ms: int = 0
    malformed: bool = False
    stream_error: str | None = None
    after: int = 0
    no_usage_headers: bool = False
    chunk_delay_ms: int = 0
    disconnect: bool = False


_OPTION_KINDS: Mapping[str, type] = {
    "error": str,
    "status": int,
    "message": str,
    "latency_ms": int,
    "malformed": bool,
    "stream_error": str,
    "after": int,
    "no_usage_headers": bool,
    "chunk_delay_ms": int,
    "disconnect": bool,
}


def _coerce(key: str, value: Any) -> Any:
    kind = _OPTION_KINDS.get(key)
    if kind is None:
        raise _validation(f"unknown emulator option {key!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise _validation(f"emulator option {key} must be a boolean")
    if kind is int:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _validation(f"emulator option {key} must be a non-negative integer")
        return value
    if not isinstance(value, str) or not value:
        raise _validation(f"emulator option {key} must be a non-empty string")
    if key in ("error", "stream_error") and not _ERROR_NAME.match(value):
        raise _validation(f"emulator option {key} must be an error name, got {value!r}")
    return value


def parse_options(raw: Mapping[str, Any]) -> FaultOptions:
    """Validate option values (strings from directives, JSON values from the control API)."""
    return FaultOptions(**{key: _coerce(key, value) for key, value in raw.items()})


def directives_in(texts: Iterable[str]) -> dict[str, Any]:
    """Raw options from every ``[[emulator ...]]`` in ``texts``; later ones win."""
    found: dict[str, Any] = {}
    for text in texts:
        for match in _DIRECTIVE.finditer(text):
            for word in match.group("body").split():
                key, sep, value = word.partition("=")
                found[key] = value if sep else True
    return found


@dataclass
class _FaultRule:
    options: dict[str, Any]
    remaining: int
    model: str | None = None
    operation: str | None = None

    def matches(self, model_id: str, operation: str) -> bool:
        return (self.model is None or self.model in model_id) and self.operation in (None, operation)

    def describe(self) -> JsonDict:
        return {**self.options, "times": self.remaining, "model": self.model, "operation": self.operation}


# --- token accounting --------------------------------------------------------------------------


def _collect_texts(node: Any, out: list[str], text_context: bool = False) -> list[str]:
    if isinstance(node, str):
        if text_context:
            out.append(node)
    elif isinstance(node, list):
        for item in node:
            _collect_texts(item, out, text_context)
    elif isinstance(node, dict):
        for key, value in node.items():
            _collect_texts(value, out, key in _TEXT_KEYS)
    return out


def request_texts(request: Any) -> list[str]:
    """Every text string of a request, in document order."""
    return _collect_texts(request, [])


def count_words(texts: Iterable[str]) -> int:
    return sum(len(_DIRECTIVE.sub(" ", text).split()) for text in texts)


@dataclass(frozen=True)
class _Unit:
    """A span of the prompt in cache order; ``cache_ttl`` set when a breakpoint follows it."""

    tokens: int
    fingerprint: str
    cache_ttl: str | None = None


def _fingerprint(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def _block_unit(block: Any) -> _Unit:
    ttl: str | None = None
    if isinstance(block, dict):
        marker = block.get("cache_control", block.get("cachePoint"))
        if isinstance(marker, dict):
            ttl = marker.get("ttl", "5m")
            if ttl not in CACHE_TTL_SECONDS:
                raise _validation(f"unsupported cache ttl {ttl!r}; use 5m or 1h")
        content = {key: value for key, value in block.items() if key != "cache_control"}
    else:
        content = block
    texts = [block] if isinstance(block, str) else request_texts(content)
    return _Unit(count_words(texts), _fingerprint(content), ttl)


def prompt_units(request: Mapping[str, Any]) -> list[_Unit]:
    """The request as spans in caching order: tools, other members, system, then messages."""
    messages = request.get("messages")
    units: list[_Unit] = []
    if not (isinstance(messages, list) and messages):
        messages = []
        units.append(_Unit(MESSAGE_OVERHEAD_TOKENS, "prompt"))
    tools = request.get("tools")
    tool_config = request.get("toolConfig")
    if isinstance(tool_config, dict) and isinstance(tool_config.get("tools"), list):
        tools = tool_config["tools"]
    if isinstance(tools, list):
        units.extend(_block_unit(tool) for tool in tools)
    for key, value in request.items():
        if key in ("messages", "system", "tools", "toolConfig"):
            continue
        texts = _collect_texts({key: value}, [])
        if texts:
            units.append(_Unit(count_words(texts), _fingerprint({key: value})))
    system = request.get("system")
    if isinstance(system, list):
        units.extend(_block_unit(block) for block in system)
    elif system is not None:
        units.append(_block_unit(system))
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        units.append(_Unit(MESSAGE_OVERHEAD_TOKENS, f"message:{role}"))
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):
            units.extend(_block_unit(block) for block in content)
        elif content is not None:
            units.append(_block_unit(content))
    return units


def count_input_tokens(request: Mapping[str, Any]) -> int:
    """``total_input`` of the module docstring (what CountTokens returns)."""
    return sum(unit.tokens for unit in prompt_units(request))


def max_tokens_of(request: Mapping[str, Any]) -> int | None:
    for container in (request, request.get("inferenceConfig"), request.get("textGenerationConfig")):
        if isinstance(container, dict):
            for key in _MAX_TOKEN_KEYS:
                value = container.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return None


def output_tokens_for(total_input: int, max_tokens: int | None) -> tuple[int, bool]:
    """(output tokens, truncated by max tokens)."""
    natural = OUTPUT_BASE_TOKENS + total_input % OUTPUT_SPREAD_TOKENS
    if max_tokens is not None and 0 <= max_tokens < natural:
        return max_tokens, True
    return natural, False


def reply_text(words: int, seed: int) -> str:
    return " ".join(_REPLY_WORDS[(seed + i) % len(_REPLY_WORDS)] for i in range(words))


@dataclass(frozen=True)
class Usage:
    total_input: int
    input_tokens: int  # non-cached input only
    output_tokens: int
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    caching: bool = False  # the request had cache breakpoints
    truncated: bool = False

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h


class PromptCache:
    """Prefix cache of one emulator instance; callers hold the emulator lock."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def clear(self) -> None:
        self._expiry.clear()

    def apply(self, model: str, units: Sequence[_Unit], now: float) -> tuple[int, int, int]:
        """(read, write 5m, write 1h) for this request; updates the cache."""
        breakpoints: list[tuple[int, str, str]] = []
        digest = hashlib.sha256(model.encode())
        running = 0
        for unit in units:
            running += unit.tokens
            digest.update(unit.fingerprint.encode() + b"\0")
            if unit.cache_ttl is not None:
                breakpoints.append((running, digest.copy().hexdigest(), unit.cache_ttl))
        hit = -1
        for index in range(len(breakpoints) - 1, -1, -1):
            if self._expiry.get(breakpoints[index][1], 0.0) > now:
                hit = index
                break
        read = breakpoints[hit][0] if hit >= 0 else 0
        writes = {"5m": 0, "1h": 0}
        previous = read
        for prefix, _, ttl in breakpoints[hit + 1 :]:
            writes[ttl] += prefix - previous
            previous = prefix
        for _, key, ttl in breakpoints:
            self._expiry[key] = now + CACHE_TTL_SECONDS[ttl]
        return read, writes["5m"], writes["1h"]


# --- response bodies ---------------------------------------------------------------------------


def _tiny_png(shade: int) -> str:
    """A valid 1x1 grayscale PNG, base64."""

    def png_chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes([0, shade % 256]))
    png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels)
    return base64.b64encode(png + png_chunk(b"IEND", b"")).decode("ascii")


def _embedding(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 127.5) / 127.5, 6) for i in range(dimensions)]


def image_count(family: str, request: Mapping[str, Any]) -> int:
    if family != "image":
        return 1
    config = request.get("imageGenerationConfig")
    number = config.get("numberOfImages", 1) if isinstance(config, dict) else 1
    return number if isinstance(number, int) and number > 0 else 1


def _stop(family: str, usage: Usage) -> str:
    finished, truncated = _LENGTH_STOP.get(family, ("stop", "length"))
    return truncated if usage.truncated else finished


def _anthropic_usage(usage: Usage, output_tokens: int) -> JsonDict:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output_tokens,
    }


def _nova_usage(usage: Usage) -> JsonDict:
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_input + usage.output_tokens,
        "cacheReadInputTokenCount": usage.cache_read,
        "cacheWriteInputTokenCount": usage.cache_write,
    }


def _openai_usage(usage: Usage) -> JsonDict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def converse_usage(usage: Usage) -> JsonDict:
    body: JsonDict = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_input + usage.output_tokens,
    }
    if usage.caching:
        body["cacheReadInputTokens"] = usage.cache_read
        body["cacheWriteInputTokens"] = usage.cache_write
        details = [("1h", usage.cache_write_1h), ("5m", usage.cache_write_5m)]
        body["cacheDetails"] = [{"ttl": ttl, "inputTokens": tokens} for ttl, tokens in details if tokens]
    return body


def invocation_metrics(usage: Usage, latency_ms: int, first_byte_ms: int) -> JsonDict:
    metrics: JsonDict = {
        "inputTokenCount": usage.input_tokens,
        "outputTokenCount": usage.output_tokens,
        "invocationLatency": latency_ms,
        "firstByteLatency": first_byte_ms,
    }
    if usage.caching:
        metrics["cacheReadInputTokenCount"] = usage.cache_read
        metrics["cacheWriteInputTokenCount"] = usage.cache_write
    return metrics


def _openai_chat(model_id: str, text: str, stop: str, usage: Usage) -> JsonDict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": stop}],
        "usage": _openai_usage(usage),
    }


def invoke_body(family: str, model_id: str, request: Mapping[str, Any], usage: Usage, text: str) -> JsonDict:
    """The InvokeModel response body in the family's native shape."""
    stop = _stop(family, usage)
    if family == "anthropic":
        if "prompt" in request and "messages" not in request:
            return {
                "completion": " " + text,
                "stop_reason": "max_tokens" if usage.truncated else "stop_sequence",
            }
        return {
            "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": base_model_id(model_id),
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": _anthropic_usage(usage, usage.output_tokens),
        }
    if family == "nova":
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop,
            "usage": _nova_usage(usage),
        }
    if family == "titan_text":
        result = {"tokenCount": usage.output_tokens, "outputText": text, "completionReason": stop}
        return {"inputTextTokenCount": usage.input_tokens, "results": [result]}
    if family == "titan_embed":
        dimensions = request.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and dimensions > 0 else 1024
        return {
            "embedding": _embedding(str(request.get("inputText")), size),
            "inputTextTokenCount": usage.input_tokens,
        }
    if family == "cohere_embed":
        texts = [t for t in request.get("texts", []) if isinstance(t, str)]
        return {
            "embeddings": [_embedding(t, 1024) for t in texts],
            "id": str(uuid.uuid4()),
            "response_type": "embeddings_floats",
            "texts": texts,
        }
    if family == "llama":
        return {
            "generation": text,
            "prompt_token_count": usage.input_tokens,
            "generation_token_count": usage.output_tokens,
            "stop_reason": stop,
        }
    if family == "mistral":
        if "messages" in request:
            message = {"role": "assistant", "content": text}
            return {"choices": [{"index": 0, "message": message, "stop_reason": stop}]}
        return {"outputs": [{"text": text, "stop_reason": stop}]}
    if family == "cohere_chat":
        history = [*request.get("chat_history", []), {"role": "USER", "message": request.get("message", "")}]
        return {
            "response_id": str(uuid.uuid4()),
            "text": text,
            "generation_id": str(uuid.uuid4()),
            "chat_history": [*history, {"role": "CHATBOT", "message": text}],
            "finish_reason": stop,
        }
    if family == "cohere_command":
        generation = {"id": str(uuid.uuid4()), "text": text, "finish_reason": stop}
        return {"generations": [generation], "id": str(uuid.uuid4()), "prompt": request.get("prompt", "")}
    if family == "deepseek":
        return {"choices": [{"text": text, "stop_reason": stop}]}
    if family == "image":
        count = image_count(family, request)
        return {"images": [_tiny_png(i) for i in range(count)], "error": None}
    if family == "stability":
        return {"seeds": [usage.total_input], "finish_reasons": [None], "images": [_tiny_png(0)]}
    return _openai_chat(model_id, text, stop, usage)


def _pieces(text: str) -> list[tuple[str, int]]:
    """The reply split into stream deltas of a few words; concatenated they give ``text``."""
    words = text.split()
    pieces = []
    for start in range(0, len(words), WORDS_PER_CHUNK):
        group = words[start : start + WORDS_PER_CHUNK]
        pieces.append((("" if start == 0 else " ") + " ".join(group), len(group)))
    return pieces


def invoke_stream_chunks(
    family: str, model_id: str, request: Mapping[str, Any], usage: Usage, text: str
) -> list[tuple[JsonDict, int]]:
    """Model-native stream chunks with the output words each carries; the last gets the metrics."""
    stop = _stop(family, usage)
    pieces = _pieces(text)
    chunks: list[tuple[JsonDict, int]] = []
    if family == "anthropic":
        message: JsonDict = {
            "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": base_model_id(model_id),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Like Anthropic, a small running count here; message_delta has the cumulative total.
            "usage": _anthropic_usage(usage, min(1, usage.output_tokens)),
        }
        chunks.append(({"type": "message_start", "message": message}, 0))
        block = {"type": "text", "text": ""}
        chunks.append(({"type": "content_block_start", "index": 0, "content_block": block}, 0))
        for piece, words in pieces:
            delta = {"type": "text_delta", "text": piece}
            chunks.append(({"type": "content_block_delta", "index": 0, "delta": delta}, words))
        chunks.append(({"type": "content_block_stop", "index": 0}, 0))
        delta_stop = {"stop_reason": stop, "stop_sequence": None}
        chunks.append(
            (
                {
                    "type": "message_delta",
                    "delta": delta_stop,
                    "usage": {"output_tokens": usage.output_tokens},
                },
                0,
            )
        )
        chunks.append(({"type": "message_stop"}, 0))
        return chunks
    if family == "nova":
        chunks.append(({"messageStart": {"role": "assistant"}}, 0))
        for piece, words in pieces:
            chunks.append(({"contentBlockDelta": {"delta": {"text": piece}, "contentBlockIndex": 0}}, words))
        chunks.append(({"contentBlockStop": {"contentBlockIndex": 0}}, 0))
        chunks.append(({"messageStop": {"stopReason": stop}}, 0))
        chunks.append(({"metadata": {"usage": _nova_usage(usage), "metrics": {}, "trace": {}}}, 0))
        return chunks
    produced = 0
    for piece, words in pieces:
        produced += words
        chunks.append((_text_chunk(family, request, usage, piece, produced, None), words))
    chunks.append((_text_chunk(family, request, usage, "", usage.output_tokens, stop), 0))
    return chunks


def _text_chunk(
    family: str, request: Mapping[str, Any], usage: Usage, piece: str, produced: int, stop: str | None
) -> JsonDict:
    if family == "titan_text":
        return {
            "outputText": piece,
            "index": 0,
            "totalOutputTextTokenCount": produced,
            "completionReason": stop,
            "inputTextTokenCount": usage.input_tokens,
        }
    if family == "llama":
        return {
            "generation": piece,
            "prompt_token_count": usage.input_tokens,
            "generation_token_count": produced,
            "stop_reason": stop,
        }
    if family == "mistral":
        if "messages" in request:
            message = {"role": "assistant", "content": piece}
            return {"choices": [{"index": 0, "message": message, "stop_reason": stop}]}
        return {"outputs": [{"text": piece, "stop_reason": stop}]}
    if family in ("cohere_chat", "cohere_command"):
        if stop is None:
            return {"is_finished": False, "event_type": "text-generation", "text": piece}
        return {"is_finished": True, "event_type": "stream-end", "finish_reason": stop}
    if family == "deepseek":
        return {"choices": [{"text": piece, "stop_reason": stop}]}
    if family == "anthropic":  # legacy text completions
        return {"completion": piece, "stop_reason": stop}
    chunk: JsonDict = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": piece} if piece else {}, "finish_reason": stop}],
    }
    if stop is not None:
        chunk["usage"] = _openai_usage(usage)
    return chunk


def converse_body(usage: Usage, text: str, latency_ms: int) -> JsonDict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "max_tokens" if usage.truncated else "end_turn",
        "usage": converse_usage(usage),
        "metrics": {"latencyMs": latency_ms},
    }


def converse_stream_events(usage: Usage, text: str, latency_ms: int) -> list[tuple[str, JsonDict, int]]:
    events: list[tuple[str, JsonDict, int]] = [("messageStart", {"role": "assistant"}, 0)]
    for piece, words in _pieces(text):
        events.append(("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}, words))
    events.append(("contentBlockStop", {"contentBlockIndex": 0}, 0))
    events.append(("messageStop", {"stopReason": "max_tokens" if usage.truncated else "end_turn"}, 0))
    metadata = {"usage": converse_usage(usage), "metrics": {"latencyMs": latency_ms}}
    events.append(("metadata", metadata, 0))
    return events


# --- replies -----------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the HTTP layer sends: a plain body, or event-stream frames (chunked)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    frames: list[bytes] | None = None
    pause: Callable[[], None] | None = None  # called between two frames
    disconnect: bool = False  # close the connection instead of finishing the reply


def _json_reply(status: int, body: Any, request_id: str) -> Reply:
    headers = [("Content-Type", "application/json"), ("x-amzn-requestid", request_id)]
    return Reply(status, headers, json.dumps(body).encode())


def error_reply(error: BedrockApiError, request_id: str) -> Reply:
    reply = _json_reply(error.status, {"message": error.message, **error.extra}, request_id)
    reply.headers.append(("x-amzn-errortype", f"{error.name}:{ERROR_NAMESPACE}"))
    return reply


def _injected_error(options: FaultOptions, model_id: str) -> BedrockApiError:
    name = cast(str, options.error)
    message = options.message or f"Emulated {name}"
    extra: JsonDict = {}
    if name == "ModelErrorException":
        extra = {"originalStatusCode": 500, "resourceName": model_id}
    elif name == "ModelStreamErrorException":
        extra = {"originalStatusCode": 500, "originalMessage": message}
    return BedrockApiError(name, message, options.status, **extra)


def _stream_error_frame(operation: str, name: str, message: str | None) -> bytes:
    upper = name[:1].upper() + name[1:]
    text = message or f"Emulated {upper}"
    if upper not in STREAM_EXCEPTIONS[operation]:
        return error_event(name, text)
    if upper == "ModelStreamErrorException":
        return exception_event(upper, text, originalStatusCode=500, originalMessage=text)
    return exception_event(upper, text)


# --- OpenAI- and Anthropic-compatible APIs -----------------------------------------------------


_OPENAI_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def compat_error_type(api: str, status: int) -> str:
    """The error ``type`` an OpenAI- or Anthropic-shaped error body carries for ``status``."""
    table = _ANTHROPIC_ERROR_TYPES if api == "anthropic" else _OPENAI_ERROR_TYPES
    if status in table:
        return table[status]
    if status >= 500:
        return "api_error" if api == "anthropic" else "server_error"
    return "invalid_request_error"


def compat_error_body(api: str, name: str, message: str, status: int) -> JsonDict:
    """``{"error": {message, type, code, param}}`` (OpenAI; ``code`` is the Bedrock error name)
    or ``{"type": "error", "error": {type, message}}`` (Anthropic)."""
    kind = compat_error_type(api, status)
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": name, "param": None}}


def _compat_headers(api: str, request_id: str, content_type: str) -> list[tuple[str, str]]:
    headers = [("Content-Type", content_type), ("x-amzn-requestid", request_id)]
    headers.append(("request-id" if api == "anthropic" else "x-request-id", request_id))
    return headers


def compat_error_reply(api: str, error: BedrockApiError, request_id: str) -> Reply:
    body = compat_error_body(api, error.name, error.message, error.status)
    if api == "anthropic":
        body["request_id"] = request_id
    headers = _compat_headers(api, request_id, "application/json")
    headers.append(("x-amzn-errortype", f"{error.name}:{ERROR_NAMESPACE}"))
    return Reply(error.status, headers, json.dumps(body).encode())


def _compat_json_reply(api: str, body: Any, request_id: str) -> Reply:
    return Reply(200, _compat_headers(api, request_id, "application/json"), json.dumps(body).encode())


def sse_frame(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: optional ``event:`` line, one ``data:`` line, blank line."""
    payload = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + payload + b"\n\n"


def compat_prompt(operation: str, request: Mapping[str, Any]) -> JsonDict:
    """The request in the messages form the token counter reads.

    Chat Completions and Anthropic Messages already are; a Responses request's ``input`` (a
    string or a list of items) becomes ``messages`` and its ``instructions`` the ``system``.
    """
    if operation != "Responses":
        return dict(request)
    prompt = {key: value for key, value in request.items() if key not in ("input", "instructions")}
    items = request.get("input")
    messages: list[Any] = []
    for item in [items] if isinstance(items, str) else items if isinstance(items, list) else []:
        if isinstance(item, str):
            messages.append({"role": "user", "content": item})
        elif isinstance(item, dict) and item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
        else:
            messages.append(item)
    prompt["messages"] = messages
    if isinstance(request.get("instructions"), str):
        prompt["system"] = request["instructions"]
    return prompt


def _validate_compat(operation: str, request: Mapping[str, Any]) -> None:
    if operation == "Responses":
        if not isinstance(request.get("input"), str | list):
            raise _validation("input is required (a string or a list of input items)")
        return
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _validation("messages is required and must be a non-empty list")
    if not all(isinstance(message, dict) for message in messages):
        raise _validation("each message must be an object")
    if operation == "Messages":
        max_tokens = request.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _validation("max_tokens: Field required (a positive integer)")


def models_listing() -> JsonDict:
    return {"object": "list", "data": [_model_object(model) for model in LISTED_MODELS]}


def _model_object(model_id: str) -> JsonDict:
    owner = model_id.split(".", 1)[0]
    return {"id": model_id, "object": "model", "created": LISTED_MODELS_CREATED, "owned_by": owner}


def chat_usage(usage: Usage) -> JsonDict:
    """Chat Completions usage: ``prompt_tokens`` includes the cached part, like OpenAI's."""
    return {
        "prompt_tokens": usage.total_input,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_input + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_body(model_id: str, usage: Usage, text: str) -> JsonDict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": _stop("generic", usage),
            }
        ],
        "usage": chat_usage(usage),
    }


def chat_stream_chunks(
    model_id: str, usage: Usage, text: str, include_usage: bool
) -> list[tuple[JsonDict, int]]:
    """``chat.completion.chunk`` objects with the output words each carries; the usage chunk
    (``choices: []``) only when the request asked with ``stream_options.include_usage``."""
    base: JsonDict = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model_id,
    }

    def chunk(delta: JsonDict, finish: str | None) -> JsonDict:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return body

    chunks = [(chunk({"role": "assistant", "content": ""}, None), 0)]
    chunks.extend((chunk({"content": piece}, None), words) for piece, words in _pieces(text))
    chunks.append((chunk({}, _stop("generic", usage)), 0))
    if include_usage:
        chunks.append(({**base, "choices": [], "usage": chat_usage(usage)}, 0))
    return chunks


def responses_usage(usage: Usage) -> JsonDict:
    return {
        "input_tokens": usage.total_input,
        "input_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_input + usage.output_tokens,
    }


@dataclass
class _ResponsesReply:
    """One Responses API answer: the ids and the full objects its stream events carry."""

    model_id: str
    request: Mapping[str, Any]
    usage: Usage
    text: str
    response_id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    item_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def status(self) -> str:
        return "incomplete" if self.usage.truncated else "completed"

    def part(self, text: str) -> JsonDict:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def item(self, status: str, content: list[JsonDict]) -> JsonDict:
        return {
            "type": "message",
            "id": self.item_id,
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def response(
        self, status: str, output: list[JsonDict], usage: JsonDict | None, error: JsonDict | None = None
    ) -> JsonDict:
        request = self.request
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "metadata": request.get("metadata") or {},
            "model": self.model_id,
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "temperature": request.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools", []),
            "top_p": request.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": request.get("user"),
        }

    def body(self) -> JsonDict:
        output = [self.item(self.status, [self.part(self.text)])]
        return self.response(self.status, output, responses_usage(self.usage))

    def events(self) -> list[tuple[JsonDict, int]]:
        """Stream events (``sequence_number`` = position) with the output words each carries."""
        started = self.response("in_progress", [], None)
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        events: list[tuple[JsonDict, int]] = [
            ({"type": "response.created", "response": started}, 0),
            ({"type": "response.in_progress", "response": started}, 0),
            (
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": self.item("in_progress", []),
                },
                0,
            ),
            ({"type": "response.content_part.added", **where, "part": self.part("")}, 0),
        ]
        for piece, words in _pieces(self.text):
            events.append(
                ({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}, words)
            )
        events.append(({"type": "response.output_text.done", **where, "text": self.text, "logprobs": []}, 0))
        events.append(({"type": "response.content_part.done", **where, "part": self.part(self.text)}, 0))
        item = self.item(self.status, [self.part(self.text)])
        events.append(({"type": "response.output_item.done", "output_index": 0, "item": item}, 0))
        final = self.response(self.status, [item], responses_usage(self.usage))
        events.append(({"type": f"response.{self.status}", "response": final}, 0))
        for number, (event, _) in enumerate(events):
            event["sequence_number"] = number
        return events

    def error_events(self, code: str, message: str, sequence_number: int) -> list[JsonDict]:
        """A mid-stream failure: ``error``, then ``response.failed`` (no usage)."""
        error = {"type": "error", "code": code, "message": message, "param": None}
        failed = self.response("failed", [], None, {"code": code, "message": message})
        return [
            {**error, "sequence_number": sequence_number},
            {"type": "response.failed", "response": failed, "sequence_number": sequence_number + 1},
        ]


def messages_stream_chunks(
    model_id: str, request: Mapping[str, Any], usage: Usage, text: str
) -> list[tuple[JsonDict, int]]:
    """Anthropic Messages stream events (as InvokeModelWithResponseStream's, plus a ``ping``)."""
    chunks = invoke_stream_chunks("anthropic", model_id, request, usage, text)
    chunks[0][0]["message"]["model"] = model_id
    chunks.insert(2, ({"type": "ping"}, 0))
    return chunks


# --- the emulator ------------------------------------------------------------------------------


@dataclass
class _Call:
    operation: str
    model_id: str
    request: JsonDict
    request_id: str
    started: float
    headers: Mapping[str, str]
    options: FaultOptions = field(default_factory=FaultOptions)
    waited_ms: int = 0
    record: JsonDict | None = None  # its tally record, once billed

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


class BedrockEmulator:
    """The emulator: state (tally, prompt cache, fault rules) plus its HTTP server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default_latency_ms: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.default_latency_ms = default_latency_ms
        # Serves HTTPS with this server context: SDKs send bearer keys only over HTTPS.
        self.tls = tls
        self._lock = threading.Lock()
        # The latest calls only: `make run` may serve for days, and its memory must not grow with it.
        self._billed: collections.deque[JsonDict] = collections.deque(maxlen=MAX_TALLY)
        self._cache = PromptCache()
        self._faults: list[_FaultRule] = []
        # Async invocations (video jobs) by invocation ARN, oldest first.
        self._jobs: collections.OrderedDict[str, JsonDict] = collections.OrderedDict()
        # Calls being answered (latency included): billed once they are through.
        self._in_progress = 0
        self._quiet = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # How every wait (latency, pauses between stream events) is slept; see the tally's waited_ms.
        self.sleep: Callable[[float], None] = time.sleep

    # lifecycle

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL."""
        if self._server is not None:
            return self.url
        server = _Server((self.host, self.port), _Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="bedrock-emulator", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def __enter__(self) -> BedrockEmulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # state

    def billed(self) -> list[JsonDict]:
        with self._lock:
            return copy.deepcopy(list(self._billed))

    def reset(self, wait_seconds: float = 10.0) -> None:
        """Forget the tally, the prompt cache and the fault rules.

        Calls still being answered (a client that gave up on a slow one, say) finish first, so
        they are not billed into the next tally.
        """
        with self._quiet:
            self._quiet.wait_for(lambda: self._in_progress == 0, timeout=wait_seconds)
        with self._lock:
            self._billed.clear()
            self._cache.clear()
            self._faults.clear()
            self._jobs.clear()

    def add_fault(
        self,
        error: str | None = None,
        *,
        times: int = 1,
        model: str | None = None,
        operation: str | None = None,
        **options: Any,
    ) -> None:
        """Queue a fault rule for the next ``times`` matching calls (options as in directives)."""
        raw = dict(options, **({"error": error} if error is not None else {}))
        parse_options(raw)
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise _validation("times must be a positive integer")
        if operation is not None and operation not in (*OPERATIONS.values(), *COMPAT_OPERATIONS):
            raise _validation(f"unknown operation {operation!r}")
        if model is not None and not isinstance(model, str):
            raise _validation("model must be a string")
        with self._lock:
            self._faults.append(_FaultRule(raw, times, model, operation))

    def clear_faults(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def faults(self) -> list[JsonDict]:
        with self._lock:
            return [rule.describe() for rule in self._faults]

    def _take_fault(self, model_id: str, operation: str) -> dict[str, Any]:
        with self._lock:
            for rule in self._faults:
                if rule.matches(model_id, operation):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._faults.remove(rule)
                    return dict(rule.options)
        return {}

    def _record(self, call: _Call, usage: Usage, output_tokens: int, images: int, error: str | None) -> None:
        if call.operation in ("Converse", "ConverseStream"):
            metadata: Any = call.request.get("requestMetadata")
        elif call.operation in COMPAT_OPERATIONS:
            metadata = call.request.get("metadata")
            if metadata is None:
                metadata = call.request.get("user")
        else:
            metadata = call.headers.get("x-amzn-bedrock-request-metadata")
        authorization = call.headers.get("authorization", "").split()
        if not authorization and call.operation in COMPAT_OPERATIONS and "x-api-key" in call.headers:
            authorization = ["x-api-key"]  # Anthropic's own key header
        record = {
            "request_id": call.request_id,
            "operation": call.operation,
            "model_id": call.model_id,
            "input_tokens": usage.input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": usage.cache_read,
            "cache_write_5m_tokens": usage.cache_write_5m,
            "cache_write_1h_tokens": usage.cache_write_1h,
            "images": images,
            "request_metadata": metadata,
            "authorization_scheme": authorization[0] if authorization else None,
            "error": error,
            "waited_ms": call.waited_ms,
        }
        with self._lock:
            call.record = record
            self._billed.append(record)

    def _wait(self, call: _Call, ms: int) -> None:
        """Sleep ``ms`` for ``call`` and count it in ``waited_ms`` (its tally record's too, if billed)."""
        self.sleep(ms / 1000)
        with self._lock:
            call.waited_ms += ms
            if call.record is not None:
                call.record["waited_ms"] = call.waited_ms

    def _pause(self, call: _Call) -> Callable[[], None] | None:
        """What the HTTP layer calls between two stream events (None: no pause)."""
        delay_ms = call.options.chunk_delay_ms
        return functools.partial(self._wait, call, delay_ms) if delay_ms else None

    # HTTP entry points (called by the handler)

    def handle_model_call(
        self, action: str, raw_model: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> Reply:
        started = time.monotonic()
        with self._answering():
            try:
                return self._model_call(action, raw_model, headers, body, request_id, started)
            except BedrockApiError as error:
                return error_reply(error, request_id)

    def handle_control(self, method: str, path: str, body: bytes, request_id: str) -> Reply:
        try:
            return self._control(method, path, body, request_id)
        except BedrockApiError as error:
            return error_reply(error, request_id)

    def _control(self, method: str, path: str, body: bytes, request_id: str) -> Reply:
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_emulator/billed"):
            return _json_reply(200, self.billed(), request_id)
        if route == ("POST", "/_emulator/reset"):
            self.reset()
            return _json_reply(200, {"reset": True}, request_id)
        if route == ("GET", "/_emulator/faults"):
            return _json_reply(200, self.faults(), request_id)
        if route == ("DELETE", "/_emulator/faults"):
            return _json_reply(200, {"cleared": self.clear_faults()}, request_id)
        if route == ("GET", "/_emulator/health"):
            return _json_reply(200, {"status": "ok"}, request_id)
        if route == ("POST", "/_emulator/faults"):
            rule = _json_object(body)
            times = rule.pop("times", 1)
            model = rule.pop("model", None)
            operation = rule.pop("operation", None)
            self.add_fault(times=times, model=model, operation=operation, **rule)
            return _json_reply(200, {"queued": self.faults()[-1]}, request_id)
        raise unknown_route(method, path)

    def _begin(
        self,
        operation: str,
        model_id: str,
        request: JsonDict,
        prompt: Any,
        request_id: str,
        started: float,
        headers: Mapping[str, str],
    ) -> _Call:
        """A call with its options (directives in ``prompt``, queued faults), after its latency;
        raises the injected error, if any."""
        raw_options = directives_in(request_texts(prompt))
        raw_options.update(self._take_fault(model_id, operation))
        call = _Call(operation, model_id, request, request_id, started, headers, parse_options(raw_options))
        delay_ms = self.default_latency_ms + call.options.latency_ms
        if delay_ms:
            self._wait(call, delay_ms)
        if call.options.error:
            raise _injected_error(call.options, model_id)
        return call

    def _model_call(
        self,
        action: str,
        raw_model: str,
        headers: Mapping[str, str],
        body: bytes,
        request_id: str,
        started: float,
    ) -> Reply:
        operation = OPERATIONS[action]
        model_id = unquote(raw_model)
        request = _json_object(body)
        if operation == "CountTokens":
            request = _count_tokens_input(request)
        call = self._begin(operation, model_id, request, request, request_id, started, headers)
        if call.options.disconnect and operation not in ("InvokeModelWithResponseStream", "ConverseStream"):
            return Reply(0, [], disconnect=True)
        family = model_family(model_id)
        if operation == "CountTokens":
            return _json_reply(200, {"inputTokens": count_input_tokens(request)}, request_id)
        if operation != "InvokeModel" and family in _EMBEDDING_FAMILIES | _IMAGE_FAMILIES:
            raise _validation(f"The model {model_id} does not support {operation}")
        if operation in ("Converse", "ConverseStream") and not isinstance(request.get("messages"), list):
            raise _validation("messages is required")
        usage = self._usage(model_id, family, request)
        text = reply_text(usage.output_tokens, usage.total_input)
        if operation == "InvokeModel":
            return self._invoke(call, family, usage, text)
        if operation == "Converse":
            return self._converse(call, usage, text)
        return self._stream(call, family, usage, text)

    def _usage(self, model_id: str, family: str, request: Mapping[str, Any], caching: bool = True) -> Usage:
        units = prompt_units(request)
        total = sum(unit.tokens for unit in units)
        if family in _IMAGE_FAMILIES:
            return Usage(total, 0, 0)
        if family in _EMBEDDING_FAMILIES:
            return Usage(total, total, 0)
        output, truncated = output_tokens_for(total, max_tokens_of(request))
        caching = caching and any(unit.cache_ttl for unit in units)
        if not caching:
            return Usage(total, total, output, truncated=truncated)
        with self._lock:
            read, write_5m, write_1h = self._cache.apply(base_model_id(model_id), units, time.monotonic())
        uncached = total - read - write_5m - write_1h
        return Usage(total, uncached, output, read, write_5m, write_1h, caching=True, truncated=truncated)

    def _invoke(self, call: _Call, family: str, usage: Usage, text: str) -> Reply:
        images = image_count(family, call.request) if family in _IMAGE_FAMILIES else 0
        payload = invoke_body(family, call.model_id, call.request, usage, text)
        self._record(call, usage, usage.output_tokens, images, None)
        reply = _json_reply(200, payload, call.request_id)
        if call.options.malformed:
            reply.body = MALFORMED_BODY
        reply.headers.append(("x-amzn-bedrock-invocation-latency", str(call.elapsed_ms())))
        if not call.options.no_usage_headers and family not in _IMAGE_FAMILIES:
            reply.headers.append(("x-amzn-bedrock-input-token-count", str(usage.input_tokens)))
            reply.headers.append(("x-amzn-bedrock-output-token-count", str(usage.output_tokens)))
            if usage.caching:
                reply.headers.append(("x-amzn-bedrock-cache-read-input-token-count", str(usage.cache_read)))
                reply.headers.append(("x-amzn-bedrock-cache-write-input-token-count", str(usage.cache_write)))
        for name in ("x-amzn-bedrock-performanceconfig-latency", "x-amzn-bedrock-service-tier"):
            if name in call.headers:
                reply.headers.append((name, call.headers[name]))
        return reply

    def _converse(self, call: _Call, usage: Usage, text: str) -> Reply:
        self._record(call, usage, usage.output_tokens, 0, None)
        reply = _json_reply(200, converse_body(usage, text, call.elapsed_ms()), call.request_id)
        if call.options.malformed:
            reply.body = MALFORMED_BODY
        return reply

    def _stream(self, call: _Call, family: str, usage: Usage, text: str) -> Reply:
        options = call.options
        first_byte_ms = call.elapsed_ms()
        latency_ms = first_byte_ms + options.chunk_delay_ms * (len(_pieces(text)) + 4)
        frames: list[bytes] = []
        words: list[int] = []
        if call.operation == "ConverseStream":
            for event_type, body, count in converse_stream_events(usage, text, latency_ms):
                frames.append(converse_event(event_type, body))
                words.append(count)
            if options.malformed:
                bad_headers = {":event-type": "contentBlockDelta", ":content-type": "application/json"}
                frames, words = (
                    [encode_message({**bad_headers, ":message-type": "event"}, MALFORMED_BODY)],
                    [0],
                )
        else:
            chunks = invoke_stream_chunks(family, call.model_id, call.request, usage, text)
            if not options.no_usage_headers:
                metrics = invocation_metrics(usage, latency_ms, first_byte_ms)
                chunks[-1][0]["amazon-bedrock-invocationMetrics"] = metrics
            frames = [chunk_event(chunk) for chunk, _ in chunks]
            words = [count for _, count in chunks]
            if options.malformed:
                frames, words = [raw_chunk_event(MALFORMED_BODY)], [0]
        error: str | None = None
        output_tokens = usage.output_tokens
        if options.stream_error:
            cut = min(options.after, len(frames))
            frames = [
                *frames[:cut],
                _stream_error_frame(call.operation, options.stream_error, options.message),
            ]
            output_tokens = sum(words[:cut])
            error = options.stream_error
        elif options.disconnect:
            cut = min(options.after, len(frames))
            frames, output_tokens, error = frames[:cut], sum(words[:cut]), "disconnect"
        self._record(call, usage, output_tokens, 0, error)
        headers = [
            ("Content-Type", "application/vnd.amazon.eventstream"),
            ("x-amzn-requestid", call.request_id),
        ]
        if call.operation == "InvokeModelWithResponseStream":
            headers.append(("X-Amzn-Bedrock-Content-Type", "application/json"))
        return Reply(200, headers, frames=frames, pause=self._pause(call), disconnect=options.disconnect)

    # The async API (video models)

    def handle_async_call(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> Reply:
        started = time.monotonic()
        with self._answering():
            try:
                if method == "POST" and path == ASYNC_PATH:
                    return self._async_start(headers, body, request_id, started)
                if method == "GET" and path == ASYNC_PATH:
                    with self._lock:
                        jobs = [dict(job) for job in reversed(self._jobs.values())]
                    return _json_reply(200, {"asyncInvokeSummaries": jobs}, request_id)
                if method == "GET" and path.startswith(ASYNC_PATH + "/"):
                    arn = unquote(path[len(ASYNC_PATH) + 1 :])
                    with self._lock:
                        job = self._jobs.get(arn)
                    if job is None:
                        raise _validation(f"No async invocation {arn[:120]}")
                    return _json_reply(200, job, request_id)
                raise unknown_route(method, path)
            except BedrockApiError as error:
                return error_reply(error, request_id)

    def _async_start(self, headers: Mapping[str, str], body: bytes, request_id: str, started: float) -> Reply:
        request = _json_object(body)
        model_id = request.get("modelId")
        model_input = request.get("modelInput")
        if not isinstance(model_id, str) or not model_id:
            raise _validation("modelId is required")
        if not isinstance(model_input, dict):
            raise _validation("modelInput is required")
        output = request.get("outputDataConfig")
        s3 = output.get("s3OutputDataConfig") if isinstance(output, dict) else None
        s3_uri = s3.get("s3Uri") if isinstance(s3, dict) else None
        if not isinstance(s3_uri, str) or not _S3_URI.fullmatch(s3_uri):
            raise _validation("outputDataConfig.s3OutputDataConfig.s3Uri must be an S3 URI")
        base = base_model_id(model_id)
        if not base.startswith(VIDEO_MODEL_PREFIXES):
            raise _validation(f"The model {model_id} does not support StartAsyncInvoke")
        call = self._begin("StartAsyncInvoke", model_id, request, model_input, request_id, started, headers)
        if call.options.disconnect:
            return Reply(0, [], disconnect=True)
        seconds = requested_video_seconds(base, model_input)
        arn = f"arn:aws:bedrock:{ASYNC_REGION}:{ASYNC_ACCOUNT}:async-invoke/{uuid.uuid4().hex[:12]}"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        job: JsonDict = {
            "invocationArn": arn,
            "modelArn": f"arn:aws:bedrock:{ASYNC_REGION}::foundation-model/{base}",
            "status": "Completed",
            "submitTime": now,
            "lastModifiedTime": now,
            "endTime": now,
            "outputDataConfig": output,
        }
        if isinstance(request.get("clientRequestToken"), str):
            job["clientRequestToken"] = request["clientRequestToken"]
        authorization = call.headers.get("authorization", "").split()
        record: JsonDict = {
            "request_id": call.request_id,
            "operation": call.operation,
            "model_id": call.model_id,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0,
            "images": 0,
            "video_seconds": seconds,
            "invocation_arn": arn,
            "s3_uri": s3_uri,
            "request_metadata": None,
            "authorization_scheme": authorization[0] if authorization else None,
            "error": None,
            "waited_ms": call.waited_ms,
        }
        with self._lock:
            self._jobs[arn] = job
            while len(self._jobs) > MAX_TALLY:
                self._jobs.popitem(last=False)
            call.record = record
            self._billed.append(record)
        return _json_reply(200, {"invocationArn": arn}, request_id)

    # OpenAI- and Anthropic-compatible APIs

    def handle_compat_call(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> Reply:
        api = "anthropic" if path.startswith("/anthropic/") else "openai"
        started = time.monotonic()
        with self._answering():
            try:
                return self._compat_call(api, method, path.rstrip("/"), headers, body, request_id, started)
            except BedrockApiError as error:
                return compat_error_reply(api, error, request_id)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        with self._quiet:
            self._in_progress += 1
        try:
            yield
        finally:
            with self._quiet:
                self._in_progress -= 1
                self._quiet.notify_all()

    def _compat_call(
        self,
        api: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        request_id: str,
        started: float,
    ) -> Reply:
        if method == "GET" and path in MODELS_ROUTES:
            return _compat_json_reply(api, models_listing(), request_id)
        listed = next(
            (path[len(route) + 1 :] for route in MODELS_ROUTES if path.startswith(route + "/")), None
        )
        if method == "GET" and listed is not None:
            model = unquote(listed)
            if model not in LISTED_MODELS:
                raise BedrockApiError("ResourceNotFoundException", f"The model {model} does not exist", 404)
            return _compat_json_reply(api, _model_object(model), request_id)
        route = COMPAT_ROUTES.get(path)
        if route is None or method != "POST":
            raise unknown_route(method, path)
        operation = route[1]
        request = _json_object(body)
        model_id = request.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise _validation("model: Field required (a model id string)")
        prompt = compat_prompt(operation, request)
        call = self._begin(operation, model_id, request, prompt, request_id, started, headers)
        streaming = request.get("stream") is True and operation != "CountTokens"
        if call.options.disconnect and not streaming:
            return Reply(0, [], disconnect=True)
        _validate_compat(operation, request)
        family = model_family(model_id)
        if family in _EMBEDDING_FAMILIES | _IMAGE_FAMILIES:
            raise _validation(f"The model {model_id} does not support {operation}")
        if operation == "CountTokens":
            return _compat_json_reply(api, {"input_tokens": count_input_tokens(prompt)}, request_id)
        usage = self._usage(model_id, family, prompt, caching=operation == "Messages")
        text = reply_text(usage.output_tokens, usage.total_input)
        if operation == "ChatCompletions":
            if streaming:
                options = request.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                chunks = chat_stream_chunks(model_id, usage, text, include_usage)
                events = [(sse_frame(chunk), words) for chunk, words in chunks]
                return self._compat_stream(api, call, usage, events, [sse_frame(b"[DONE]")])
            payload: JsonDict = chat_body(model_id, usage, text)
        elif operation == "Responses":
            answer = _ResponsesReply(model_id, request, usage, text)
            if streaming:
                events = [(sse_frame(event, event["type"]), words) for event, words in answer.events()]
                return self._compat_stream(api, call, usage, events, [], answer)
            payload = answer.body()
        else:
            if streaming:
                chunks = messages_stream_chunks(model_id, request, usage, text)
                events = [(sse_frame(chunk, chunk["type"]), words) for chunk, words in chunks]
                return self._compat_stream(api, call, usage, events, [])
            payload = invoke_body("anthropic", model_id, request, usage, text)
            payload["model"] = model_id
        self._record(call, usage, usage.output_tokens, 0, None)
        reply = _compat_json_reply(api, payload, request_id)
        if call.options.malformed:
            reply.body = MALFORMED_BODY
        return reply

    def _compat_stream(
        self,
        api: str,
        call: _Call,
        usage: Usage,
        events: list[tuple[bytes, int]],
        tail: list[bytes],
        responses: _ResponsesReply | None = None,
    ) -> Reply:
        """An SSE reply, one HTTP chunk per event; ``tail`` (``[DONE]``) only if nothing failed."""
        options = call.options
        frames = [frame for frame, _ in events]
        words = [count for _, count in events]
        if options.malformed:
            event = {"ChatCompletions": None, "Responses": "response.output_text.delta"}.get(
                call.operation, "content_block_delta"
            )
            frames, words, tail = [sse_frame(MALFORMED_BODY, event)], [0], []
        error: str | None = None
        output_tokens = usage.output_tokens
        if options.stream_error:
            cut = min(options.after, len(frames))
            name = options.stream_error
            message = options.message or f"Emulated {name[:1].upper() + name[1:]}"
            status = ERROR_STATUS.get(name[:1].upper() + name[1:], 500)
            if responses is not None:
                failure = [sse_frame(e, e["type"]) for e in responses.error_events(name, message, cut)]
            elif api == "anthropic":
                failure = [sse_frame(compat_error_body(api, name, message, status), "error")]
            else:
                failure = [sse_frame(compat_error_body(api, name, message, status))]
            frames = [*frames[:cut], *failure]
            output_tokens = sum(words[:cut])
            error = name
        elif options.disconnect:
            cut = min(options.after, len(frames))
            frames, output_tokens, error = frames[:cut], sum(words[:cut]), "disconnect"
        else:
            frames.extend(tail)
        self._record(call, usage, output_tokens, 0, error)
        headers = _compat_headers(api, call.request_id, "text/event-stream; charset=utf-8")
        headers.append(("Cache-Control", "no-cache"))
        return Reply(200, headers, frames=frames, pause=self._pause(call), disconnect=options.disconnect)


def requested_video_seconds(base_model: str, model_input: Mapping[str, Any]) -> int:
    """Seconds of video a StartAsyncInvoke asks for; a ValidationException when unreadable."""
    if base_model.startswith("luma."):
        duration = model_input.get("duration")
        if isinstance(duration, str) and re.fullmatch(r"[1-9][0-9]{0,3}s", duration):
            return int(duration[:-1])
        raise _validation("duration must be a length such as '5s'")
    config = model_input.get("videoGenerationConfig")
    config = config if isinstance(config, dict) else {}
    task = model_input.get("taskType")
    if task == "MULTI_SHOT_MANUAL":
        params = model_input.get("multiShotManualParams")
        shots = params.get("shots") if isinstance(params, dict) else None
        if isinstance(shots, list) and shots:
            return 6 * len(shots)
        raise _validation("multiShotManualParams.shots is required")
    if task == "MULTI_SHOT_AUTOMATED":
        params = model_input.get("multiShotAutomatedParams")
        seconds = config.get(
            "durationSeconds", params.get("durationSeconds") if isinstance(params, dict) else None
        )
    elif task == "TEXT_VIDEO":
        seconds = config.get("durationSeconds", 6)
    else:
        raise _validation(f"taskType {task!r} is not supported")
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
        return seconds
    raise _validation("durationSeconds must be a positive integer")


def unknown_route(method: str, path: str) -> BedrockApiError:
    return BedrockApiError("UnknownOperationException", f"No route for {method} {path}", 404)


def _json_object(body: bytes) -> JsonDict:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError as exc:
        raise _validation(f"Malformed input request: {exc}") from exc
    if not isinstance(parsed, dict):
        raise _validation("Malformed input request: expected a JSON object")
    return parsed


def _count_tokens_input(request: Mapping[str, Any]) -> JsonDict:
    """The inner request of CountTokens: ``invokeModel.body`` (base64 blob) or ``converse``."""
    union = request.get("input")
    if isinstance(union, dict) and isinstance(union.get("converse"), dict):
        return cast(JsonDict, union["converse"])
    if isinstance(union, dict) and isinstance(union.get("invokeModel"), dict):
        blob = union["invokeModel"].get("body")
        if isinstance(blob, str):
            try:
                return _json_object(base64.b64decode(blob, validate=True))
            except (ValueError, BedrockApiError):
                return _json_object(blob.encode())
    raise _validation("input must contain invokeModel.body or converse")


# --- HTTP layer --------------------------------------------------------------------------------


class _Server(TrackingHTTPServer):
    name = "emulator"
    emulator: BedrockEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BedrockEmulator/1.0"
    timeout = 60  # drop idle keep-alive connections

    @property
    def _emulator(self) -> BedrockEmulator:
        return cast(_Server, self.server).emulator

    def setup(self) -> None:
        super().setup()
        cast(_Server, self.server).track(self.connection, True)

    def finish(self) -> None:
        cast(_Server, self.server).track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        request_id = str(uuid.uuid4())
        path = urlsplit(self.path).path
        try:
            body = self._read_body()
        except BedrockApiError as error:
            self.close_connection = True
            self._send(error_reply(error, request_id))
            return
        match = _MODEL_ROUTE.match(path)
        if path.startswith("/_emulator/"):
            reply = self._emulator.handle_control(method, path, body, request_id)
        elif match and method == "POST":
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = self._emulator.handle_model_call(
                match.group("action"), match.group("model"), headers, body, request_id
            )
        elif path == ASYNC_PATH or path.startswith(ASYNC_PATH + "/"):
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = self._emulator.handle_async_call(method, path, headers, body, request_id)
        elif path.startswith(COMPAT_PREFIXES):
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = self._emulator.handle_compat_call(method, path, headers, body, request_id)
        else:
            reply = error_reply(unknown_route(method, path), request_id)
        self._send(reply)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                size += length
                if size > MAX_REQUEST_BYTES:
                    raise _validation("request body too large")
                parts.append(self.rfile.read(length))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise _validation("request body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        try:
            if reply.disconnect and reply.frames is None:
                self._drop_connection()
                return
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.frames is None:
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index, frame in enumerate(reply.frames):
                if index and reply.pause is not None:
                    reply.pause()
                self.wfile.write(b"%x\r\n%b\r\n" % (len(frame), frame))
                self.wfile.flush()
            if reply.disconnect:
                self._drop_connection()
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # client hung up mid-response

    def _drop_connection(self) -> None:
        """An injected fault: the connection breaks, with no (or no more) reply."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bedrock_spend_local.emulator", description="Serve a Bedrock Runtime emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every model call")
    args = parser.parse_args(argv)
    emulator = BedrockEmulator(args.host, args.port, args.latency_ms)
    try:
        url = emulator.start()
    except OSError as exc:
        print(
            f"bedrock emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"Bedrock Runtime emulator listening on {url} (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        emulator.stop()
    print("Bedrock Runtime emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
