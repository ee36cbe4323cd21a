"""What a Bedrock call consumed, as billed: tokens by part, generated images, rerank queries,
seconds of generated video.

Usage drivers (one per response family) turn a response body, its headers or a stream's
final event into a :class:`Usage`. They never raise: metering must not fail a call that
Bedrock already served, so anything unreadable counts as "not reported".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from bedrock_spend.domain.model_ids import ModelRef, family
from bedrock_spend.domain.parts import COUNTS, PARTS, Part

_INDEX = {count.field: i for i, count in enumerate(COUNTS)}
_TOTALS = {part.total: part for part in PARTS}
_UNITS = tuple(_INDEX[c.field] for p in PARTS if not p.tokens for c in p.counts)


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Usage:
    """Billed quantities of one call: a count per :data:`~bedrock_spend.domain.parts.COUNTS` entry.

    Read a count by its field name (``usage.cache_read_tokens``, ``usage.images``) or a part's
    summed counts by its total (``usage.cache_write_tokens``); both are in the parts table.
    ``input_tokens`` and ``output_tokens`` are ``None`` when not reported, never zero; every
    other count is 0 when absent.

    ``input_tokens`` counts only non-cached input, as Bedrock bills it; cache reads and
    cache writes are separate parts (total input = input + cache_read + cache writes).
    """

    counts: tuple[int | None, ...]  # in COUNTS order
    # Image pricing variant, e.g. "1024x1024/standard"; None for token models.
    image_variant: str | None
    # Where the numbers came from: "anthropic", "nova", "headers", "converse", "stream", "none", ...
    source: str

    def __init__(
        self, *, image_variant: str | None = None, source: str = "none", **counts: int | None
    ) -> None:
        unknown = set(counts) - set(_INDEX)
        if unknown:
            raise TypeError(f"Usage has no count {sorted(unknown)[0]!r}")
        values = tuple(counts.get(c.field) if c.optional else counts.get(c.field) or 0 for c in COUNTS)
        object.__setattr__(self, "counts", values)
        object.__setattr__(self, "image_variant", image_variant)
        object.__setattr__(self, "source", source)

    @property
    def input_tokens(self) -> int | None:
        return self.counts[_INDEX["input_tokens"]]

    @property
    def output_tokens(self) -> int | None:
        return self.counts[_INDEX["output_tokens"]]

    def __getattr__(self, name: str) -> int:
        """A count by its field name, or a part's counts summed by the part's total name."""
        if name in _INDEX:
            return self.counts[_INDEX[name]] or 0
        part = _TOTALS.get(name)
        if part is None:
            raise AttributeError(f"Usage has no count {name!r}")
        return sum(self.counts[_INDEX[c.field]] or 0 for c in part.counts)

    def count(self, field: str) -> int:
        """A count by its field name; 0 when not reported."""
        return self.counts[_INDEX[field]] or 0

    def total(self, part: Part) -> int:
        return sum(self.counts[_INDEX[c.field]] or 0 for c in part.counts)

    @property
    def known(self) -> bool:
        """True when the call reported anything billable."""
        return (
            self.input_tokens is not None
            or self.output_tokens is not None
            or any(self.counts[i] for i in _UNITS)
        )

    def __repr__(self) -> str:
        shown = [f"{c.field}={v!r}" for c, v in zip(COUNTS, self.counts, strict=True) if v or c.optional]
        if self.image_variant is not None:
            shown.append(f"image_variant={self.image_variant!r}")
        return f"Usage({', '.join([*shown, f'source={self.source!r}'])})"


# Anything above this is a corrupt or hostile value, not a token count.
MAX_COUNT = 10**12
_DIGITS = re.compile(r"[0-9]{1,13}")
_HEADER_PREFIX = "x-amzn-bedrock-"
_EMBEDDING_FAMILIES = frozenset({"titan-embed", "cohere-embed", "nova-embed"})
# Models that bill per second of the video they read (TwelveLabs Pegasus), which no answer
# reports: their calls are recorded unpriced with this reason, never priced on tokens alone.
_MEDIA_SECONDS_FAMILIES = frozenset({"video-analysis"})


@dataclass(slots=True)
class _Parts:
    """Token counts while being gathered; every part may still be unknown (None).

    Cache writes are kept as a total plus its 1-hour share, so a total from one source
    (headers, invocation metrics) and a TTL breakdown from another combine without drift.
    """

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    cache_write_1h: int | None = None

    def known(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def fill_from(self, other: _Parts) -> bool:
        """Take ``other``'s value for each part still unknown; True if any was taken."""
        took = False
        for f in fields(self):
            if getattr(self, f.name) is None and getattr(other, f.name) is not None:
                setattr(self, f.name, getattr(other, f.name))
                took = True
        return took

    def raise_to(self, other: _Parts) -> None:
        # Stream counters are cumulative and often repeated: keep the highest, never add.
        for f in fields(self):
            new = getattr(other, f.name)
            if new is not None:
                old = getattr(self, f.name)
                setattr(self, f.name, new if old is None else max(old, new))

    def to_usage(self, source: str, image_variant: str | None = None, **units: int) -> Usage:
        write = self.cache_write or 0
        write_1h = min(self.cache_write_1h or 0, write)
        return Usage(
            input_tokens=self.input,
            output_tokens=self.output,
            cache_read_tokens=self.cache_read or 0,
            # Writes without a TTL breakdown (or beyond it) are 5-minute writes, the default TTL.
            cache_write_5m_tokens=write - write_1h,
            cache_write_1h_tokens=write_1h,
            image_variant=image_variant,
            source=source,
            **units,
        )


def usage_from_invoke(
    ref: ModelRef,
    body: bytes,
    headers: Mapping[str, str],
    request_body: bytes | None = None,
) -> Usage:
    """Usage of a non-streaming InvokeModel call: the body first, then the token headers.

    ``source`` is the family name when the body told something, with "+headers" appended
    when headers filled parts the body lacked; "headers" alone, or "none".
    """
    if family(ref) in _MEDIA_SECONDS_FAMILIES:
        return _MEDIA_SECONDS_UNREPORTED
    if _is_rerank(ref):
        # Billed per query, counted from the request; token counts (if any) are not billed.
        queries = _rerank_queries(request_body)
        return Usage(source="rerank" if queries else "none", queries=queries)
    fam = family(ref)
    obj = _load_object(body)
    parts = _BODY_READERS.get(fam, _read_openai_style)(obj) if obj is not None else _Parts()
    images = _image_count(obj) if fam == "image" and obj is not None else 0
    variant = _image_variant(ref, request_body) if fam == "image" else None

    from_body = parts.known() or images > 0
    from_headers = parts.fill_from(_read_headers(headers))
    if fam in _EMBEDDING_FAMILIES:
        # Embeddings bill input only; Cohere's output-count header is not a billed output.
        parts.output = None if parts.input is None else 0
    if from_body:
        source = f"{fam}+headers" if from_headers else fam
    else:
        source = "headers" if from_headers else "none"
    if fam in _EMBEDDING_FAMILIES:
        media = _embedded_media(fam, _load_object(request_body))
        if media is None:
            # Audio or video billed per second that no count reports: unpriced, never guessed.
            return Usage(source=UNREADABLE + "seconds of the audio or video embedded are not reported")
        return parts.to_usage(source, variant, images=images, input_images=media)
    return parts.to_usage(source, variant, images=images)


def _embedded_media(fam: str, request: Mapping[str, object] | None) -> int | None:
    """Images a multimodal embedding request embeds (billed per image); None when it embeds
    audio or video, which are billed per second and reported nowhere in the answer.

    Titan Multimodal Embeddings: ``inputImage`` (base64). Nova Multimodal Embeddings:
    ``singleEmbeddingParams`` holds one of ``text``, ``image``, ``video``, ``audio``; its
    segmented (async) form is not an InvokeModel call. Request shapes: the Amazon Titan and
    Amazon Nova user guides' embeddings request pages.
    """
    if request is None:
        return 0
    if fam == "titan-embed":
        image = request.get("inputImage")
        return 1 if isinstance(image, str) and image else 0
    if fam == "nova-embed":
        params = request.get("singleEmbeddingParams")
        if not isinstance(params, Mapping):
            return 0
        if params.get("video") is not None or params.get("audio") is not None:
            return None
        return 1 if params.get("image") is not None else 0
    return 0


def usage_from_converse(response: Mapping[str, Any]) -> Usage:
    """Usage of a Converse response (its ``usage`` TokenUsage)."""
    parts = _read_token_usage(_get(response, "usage"))
    return parts.to_usage("converse" if parts.known() else "none")


class StreamUsage:
    """Accumulates usage while a stream passes through; :meth:`usage` works at any point.

    Bedrock's own counts (``amazon-bedrock-invocationMetrics``, the ConverseStream
    ``metadata`` event) win over the model's per-chunk counts, which only fill the gaps,
    e.g. when the stream was cut before its last chunk.
    """

    def __init__(self, ref: ModelRef) -> None:
        self._ref = ref
        self._family = family(ref)
        self._bedrock = _Parts()
        self._model = _Parts()

    def feed_chunk(self, payload: Mapping[str, Any]) -> None:
        """Read one decoded InvokeModelWithResponseStream chunk."""
        self._bedrock.raise_to(_read_invocation_metrics(_get(payload, "amazon-bedrock-invocationMetrics")))
        reader = _CHUNK_READERS.get(self._family, _read_openai_style)
        self._model.raise_to(reader(payload))

    def feed_converse_event(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """Read one ConverseStream event; only ``metadata`` carries usage."""
        if event_type != "metadata":
            return
        parts = _read_token_usage(_get(payload, "usage"))
        # Measured by a third party (maximhq/bifrost PR #6942): OpenAI-family ConverseStream reports
        # inputTokens including the cache write (4995 with 4993 written; non-streaming said 2).
        # totalTokens is inflated by the same amount, so it cannot tell the cases apart; the
        # guard trusts the measurement and only fires when the subtraction cannot go negative.
        if (
            self._ref.provider == "openai"
            and parts.input is not None
            and parts.cache_write
            and parts.input >= parts.cache_write
        ):
            parts.input -= parts.cache_write
        self._bedrock.raise_to(parts)

    def usage(self) -> Usage:
        """The best knowledge so far; source "stream", or "none" when nothing was seen."""
        if family(self._ref) in _MEDIA_SECONDS_FAMILIES:
            return _MEDIA_SECONDS_UNREPORTED
        parts = _Parts()
        parts.fill_from(self._bedrock)
        parts.fill_from(self._model)
        return parts.to_usage("stream" if parts.known() else "none")


# --- the OpenAI- and Anthropic-compatible APIs Bedrock serves ------------------------------------

# API name -> reader of the object that carries ``usage`` (a whole answer or a stream event's).
COMPAT_APIS = ("chat", "responses", "messages")


def usage_from_compat(api: str, answer: Mapping[str, Any]) -> Usage:
    """Usage of a non-streamed Chat Completions, Responses or Messages answer."""
    parts = _COMPAT_READERS[api](answer)
    return parts.to_usage(api if parts.known() else "none")


class CompatStreamUsage:
    """Usage from a server-sent-event stream of those APIs, event by event.

    Chat Completions reports usage in its last chunk (when asked: the proxy asks); Responses
    in ``response.completed`` (or ``incomplete`` / ``failed``); Messages reports input in
    ``message_start`` and cumulative output in each ``message_delta``: counts never added.
    """

    def __init__(self, api: str) -> None:
        self._api = api
        self._parts = _Parts()

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if self._api == "chat":
            if isinstance(event.get("usage"), Mapping):
                self._parts.raise_to(_read_openai_style(event))
        elif self._api == "responses":
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                self._parts.raise_to(_read_responses(event.get("response")))
        elif kind == "message_start":
            self._parts.raise_to(_read_anthropic(event.get("message")))
        elif kind == "message_delta":
            self._parts.raise_to(_read_anthropic(event))

    def usage(self) -> Usage:
        return self._parts.to_usage("stream" if self._parts.known() else "none")


def _read_responses(obj: object) -> _Parts:
    u = _get(obj, "usage")
    # Like Chat Completions, input_tokens includes the cached part.
    total_input, cached = _without_cached(
        _count(_get(u, "input_tokens")), _count(_get(_get(u, "input_tokens_details"), "cached_tokens"))
    )
    return _Parts(input=total_input, output=_count(_get(u, "output_tokens")), cache_read=cached)


def _without_cached(total: int | None, cached: int | None) -> tuple[int | None, int | None]:
    """(non-cached input, cached input) from a total that includes the cached part."""
    if total is None or cached is None:
        return total, cached
    cached = min(cached, total)
    return total - cached, cached


# --- readers: each takes decoded JSON of unknown shape and returns what it could read ---


def _read_anthropic(obj: object) -> _Parts:
    u = _get(obj, "usage")
    write_total = _count(_get(u, "cache_creation_input_tokens"))
    ttl = _get(u, "cache_creation")
    write_5m = _count(_get(ttl, "ephemeral_5m_input_tokens"))
    write_1h = _count(_get(ttl, "ephemeral_1h_input_tokens"))
    if write_total is None and (write_5m is not None or write_1h is not None):
        write_total = (write_5m or 0) + (write_1h or 0)
    return _Parts(
        input=_count(_get(u, "input_tokens")),
        output=_count(_get(u, "output_tokens")),
        cache_read=_count(_get(u, "cache_read_input_tokens")),
        cache_write=write_total,
        cache_write_1h=write_1h,
    )


def _read_nova(obj: object) -> _Parts:
    u = _get(obj, "usage")
    return _Parts(
        input=_count(_get(u, "inputTokens")),
        output=_count(_get(u, "outputTokens")),
        # Nova's InvokeModel names end in "Count"; accept the Converse names seen in streams too.
        cache_read=_first_count(u, "cacheReadInputTokenCount", "cacheReadInputTokens"),
        cache_write=_first_count(u, "cacheWriteInputTokenCount", "cacheWriteInputTokens"),
    )


def _read_titan_text(obj: object) -> _Parts:
    results = _get(obj, "results")
    output = None
    if isinstance(results, list) and results:
        counts = [_count(_get(r, "tokenCount")) for r in results]
        output = None if None in counts else sum(c for c in counts if c is not None)
    return _Parts(input=_count(_get(obj, "inputTextTokenCount")), output=output)


def _read_titan_embed(obj: object) -> _Parts:
    # Embeddings bill input only: a reported input means a known output of zero.
    input_tokens = _count(_get(obj, "inputTextTokenCount"))
    return _Parts(input=input_tokens, output=None if input_tokens is None else 0)


def _read_llama(obj: object) -> _Parts:
    return _Parts(
        input=_count(_get(obj, "prompt_token_count")),
        output=_count(_get(obj, "generation_token_count")),
    )


def _read_openai_style(obj: object) -> _Parts:
    u = _get(obj, "usage")
    # OpenAI counts cached tokens inside prompt_tokens; Usage.input_tokens is non-cached.
    prompt, cached = _without_cached(
        _count(_get(u, "prompt_tokens")), _count(_get(_get(u, "prompt_tokens_details"), "cached_tokens"))
    )
    return _Parts(input=prompt, output=_count(_get(u, "completion_tokens")), cache_read=cached)


def _read_nothing(obj: object) -> _Parts:
    return _Parts()


def _read_token_usage(u: object) -> _Parts:
    """Converse ``TokenUsage``; inputTokens is already the non-cached part."""
    write_total = _count(_get(u, "cacheWriteInputTokens"))
    details = _get(u, "cacheDetails")
    write_1h = None
    if isinstance(details, list):
        by_ttl: dict[str, int] = {}
        for entry in details:
            n = _count(_get(entry, "inputTokens"))
            ttl = _get(entry, "ttl")
            if n is not None and isinstance(ttl, str):
                by_ttl[ttl] = by_ttl.get(ttl, 0) + n
        write_1h = by_ttl.get("1h")
        # The explicit total wins over the breakdown; its unexplained remainder (including
        # any TTL we do not know) counts as 5-minute writes in Parts.to_usage.
        if write_total is None and by_ttl:
            write_total = sum(by_ttl.values())
    return _Parts(
        input=_count(_get(u, "inputTokens")),
        output=_count(_get(u, "outputTokens")),
        cache_read=_count(_get(u, "cacheReadInputTokens")),
        cache_write=write_total,
        cache_write_1h=write_1h,
    )


def _read_invocation_metrics(m: object) -> _Parts:
    return _Parts(
        input=_count(_get(m, "inputTokenCount")),
        output=_count(_get(m, "outputTokenCount")),
        cache_read=_count(_get(m, "cacheReadInputTokenCount")),
        cache_write=_count(_get(m, "cacheWriteInputTokenCount")),
    )


def _read_headers(headers: object) -> _Parts:
    if not isinstance(headers, Mapping):
        return _Parts()
    found = {
        k.lower()[len(_HEADER_PREFIX) :]: v
        for k, v in headers.items()
        if isinstance(k, str) and k.lower().startswith(_HEADER_PREFIX)
    }
    return _Parts(
        input=_count(found.get("input-token-count")),
        output=_count(found.get("output-token-count")),
        cache_read=_count(found.get("cache-read-input-token-count")),
        cache_write=_count(found.get("cache-write-input-token-count")),
    )


def _read_anthropic_chunk(payload: object) -> _Parts:
    # message_start nests usage under "message"; message_delta has it at the top, cumulative.
    parts = _read_anthropic(_get(payload, "message"))
    parts.raise_to(_read_anthropic(payload))
    return parts


def _read_nova_chunk(payload: object) -> _Parts:
    return _read_nova(_get(payload, "metadata"))


def _read_titan_chunk(payload: object) -> _Parts:
    return _Parts(
        input=_count(_get(payload, "inputTextTokenCount")),
        output=_count(_get(payload, "totalOutputTextTokenCount")),
    )


# Families without counts in the body (Mistral, Cohere, DeepSeek R1, unknown) still get the
# OpenAI-style reader: newer models on Bedrock answer with an OpenAI `usage` object.
_BODY_READERS: dict[str, Callable[[object], _Parts]] = {
    "anthropic": _read_anthropic,
    "nova": _read_nova,
    "titan-text": _read_titan_text,
    "titan-embed": _read_titan_embed,
    "llama": _read_llama,
    "openai-style": _read_openai_style,
    "image": _read_nothing,
    "video": _read_nothing,
}
_CHUNK_READERS: dict[str, Callable[[object], _Parts]] = {
    "anthropic": _read_anthropic_chunk,
    "nova": _read_nova_chunk,
    "titan-text": _read_titan_chunk,
    "llama": _read_llama,
    "image": _read_nothing,
    "video": _read_nothing,
}


# --- images ---


def _image_count(obj: Mapping[str, object]) -> int:
    for key in ("images", "artifacts"):  # artifacts: legacy Stability SDXL
        value = obj.get(key)
        if isinstance(value, list):
            return len(value)
    return 0


def _image_variant(ref: ModelRef, request_body: bytes | None) -> str | None:
    """Pricing variant from the request, or None when the request is not known."""
    if ref.provider == "stability":
        return "default"
    request = _load_object(request_body)
    if request is None:
        return None
    config = _get(request, "imageGenerationConfig")
    width = _count(_get(config, "width")) or 1024
    height = _count(_get(config, "height")) or 1024
    quality = _get(config, "quality")
    if not isinstance(quality, str) or not re.fullmatch(r"[A-Za-z]{1,20}", quality):
        quality = "standard"
    return f"{width}x{height}/{quality.lower()}"


# --- rerank ---

RERANK_DOCUMENTS_PER_QUERY = 100


def _is_rerank(ref: ModelRef) -> bool:
    """Cohere Rerank and Amazon Rerank (``cohere.rerank-v3-5:0``, ``amazon.rerank-v1:0``)."""
    name = (ref.base_model or "").lower().partition(".")[2]
    return name.startswith("rerank-")


def _rerank_queries(request_body: bytes | None) -> int:
    """Billed queries of a rerank request: one per 100 documents, at least one; 0 if unreadable."""
    request = _load_object(request_body)
    if request is None:
        return 0
    documents = _get(request, "documents")
    count = len(documents) if isinstance(documents, list) else 0
    return max(1, -(-count // RERANK_DOCUMENTS_PER_QUERY))


# --- video (StartAsyncInvoke) ---

# The source of a Usage whose billed quantities could not be read, followed by why; the price
# book gives it as the unpriced reason (never a guess).
UNREADABLE = "unreadable: "
_MEDIA_SECONDS_UNREPORTED = Usage(source=UNREADABLE + "seconds of the video analysed are not reported")
# Nova Reel: every shot of a multi-shot video is 6 seconds long (Amazon Nova user guide,
# "Video generation input parameters"), and 6 s is the TEXT_VIDEO default.
NOVA_REEL_SHOT_SECONDS = 6
# Nova Reel renders only 1280x720 (the dimension's default).
NOVA_REEL_DIMENSION = "1280x720"
MAX_VIDEO_SECONDS = 24 * 3600
_LUMA_DURATION = re.compile(r"([0-9]{1,5})s")
_RESOLUTION = re.compile(r"[0-9]{3,4}p")
_DIMENSION = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class VideoRequest:
    """What a video generation asks for: its length, and its resolution ("720p") if known."""

    seconds: int
    resolution: str | None


def usage_from_async_invoke(ref: ModelRef, request_body: bytes | None, answer: bytes) -> Usage:
    """Usage of a StartAsyncInvoke Bedrock accepted: the seconds (and resolution) of video its
    ``modelInput`` asks for. The proxy never sees the job end; AWS bills what it generates."""
    arn = _get(_load_object(answer), "invocationArn")
    if not isinstance(arn, str) or not arn:
        return Usage(source=UNREADABLE + "Bedrock's answer has no invocationArn")
    return usage_from_video(ref, _get(_load_object(request_body), "modelInput"))


def usage_from_video(ref: ModelRef, model_input: object) -> Usage:
    """Usage of one video generation from its model input (``image_variant`` = resolution)."""
    read = video_request(ref, model_input)
    if isinstance(read, str):
        return Usage(source=UNREADABLE + read)
    return Usage(video_seconds=read.seconds, image_variant=read.resolution, source="video")


def video_request(ref: ModelRef, model_input: object) -> VideoRequest | str:
    """The seconds and resolution a video generation asks for, or why they cannot be read."""
    name = (ref.base_model or "").lower()
    if not isinstance(model_input, Mapping):
        return "modelInput is not a JSON object"
    if name.startswith("amazon.nova-reel"):
        return _nova_reel(model_input)
    if name.startswith("luma."):
        return _luma(model_input)
    return f"no reader of video requests for model {_clip(ref.base_model or ref.raw)}"


def _nova_reel(request: Mapping[str, object]) -> VideoRequest | str:
    config = request.get("videoGenerationConfig", {})
    if not isinstance(config, Mapping):
        return "videoGenerationConfig is not an object"
    dimension = config.get("dimension", NOVA_REEL_DIMENSION)
    size = _DIMENSION.fullmatch(dimension) if isinstance(dimension, str) else None
    resolution = f"{min(int(size[1]), int(size[2]))}p" if size else None
    task = request.get("taskType")
    if task == "TEXT_VIDEO":
        raw = config.get("durationSeconds", NOVA_REEL_SHOT_SECONDS)
    elif task == "MULTI_SHOT_AUTOMATED":
        raw = config.get("durationSeconds")
        if raw is None:
            raw = _get(request.get("multiShotAutomatedParams"), "durationSeconds")
    elif task == "MULTI_SHOT_MANUAL":
        shots = _get(request.get("multiShotManualParams"), "shots")
        if not isinstance(shots, list) or not shots:
            return "multiShotManualParams.shots is not a non-empty list"
        return VideoRequest(NOVA_REEL_SHOT_SECONDS * len(shots), resolution)
    else:
        return f"taskType {_clip(task)} is not TEXT_VIDEO, MULTI_SHOT_AUTOMATED or MULTI_SHOT_MANUAL"
    seconds = _count(raw) if not isinstance(raw, str) else None
    if not seconds or seconds > MAX_VIDEO_SECONDS:
        return f"durationSeconds {_clip(raw)} of {task} is not a whole number of seconds"
    return VideoRequest(seconds, resolution)


def _luma(request: Mapping[str, object]) -> VideoRequest | str:
    duration = request.get("duration")
    match = _LUMA_DURATION.fullmatch(duration) if isinstance(duration, str) else None
    seconds = int(match[1]) if match else 0
    if not 0 < seconds <= MAX_VIDEO_SECONDS:
        return f"duration {_clip(duration)} is not a length such as '5s'"
    resolution = request.get("resolution")
    known = isinstance(resolution, str) and _RESOLUTION.fullmatch(resolution.lower())
    return VideoRequest(seconds, resolution.lower() if known and isinstance(resolution, str) else None)


def _clip(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value[:40])
    return text if len(text) <= 60 else text[:57] + "..."


# --- defensive primitives ---


def _load_object(body: object) -> Mapping[str, object] | None:
    if not isinstance(body, (bytes, bytearray, str)):
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 as well as bad JSON
        return None
    return obj if isinstance(obj, dict) else None


def _get(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _count(value: object) -> int | None:
    """A token or image count, or None unless it is a plausible non-negative integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _first_count(obj: object, *keys: str) -> int | None:
    for key in keys:
        n = _count(_get(obj, key))
        if n is not None:
            return n
    return None


_COMPAT_READERS: dict[str, Callable[[object], _Parts]] = {
    "chat": _read_openai_style,
    "responses": _read_responses,
    "messages": _read_anthropic,
}
