"""The billed parts of a Bedrock call, declared once.

Every module that handles a part reads :data:`PARTS`: :class:`~bedrock_spend.domain.usage.Usage`
(its counts), :mod:`~bedrock_spend.domain.prices` (how each is priced,
:class:`~bedrock_spend.domain.prices.Cost`),
the usage record's JSON, the ledger's request record and monthly total, the EMF metrics and
the CLI's report and usage columns. Adding a part is one entry here (plus the usage driver
that measures it, and its price in the book).

The names are a stored schema: ledgers and logged records written with them must still read,
so an entry's names never change once shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a part is priced:
#   tokens   count x the scope's rate (USD per 1M tokens), a Rates key per count
#   unit     count x the model entry's price per unit (USD), e.g. "queries": "0.002"
#   variant  count x the model entry's price for the call's variant: image size/quality, or
#            video resolution (the Usage's one variant: a call generates images or video)
Pricing = Literal["tokens", "unit", "variant"]


@dataclass(frozen=True, slots=True)
class Count:
    """One measured count of a part (cache writes have two: one per TTL)."""

    field: str  # Usage attribute and keyword
    record: str  # key in a usage record's "usage" object
    attribute: str  # number attribute of a ledger request record
    price: str  # price book key: a token rate of a scope, or a model entry's unit price
    label: str  # as named in an unpriced reason
    optional: bool = False  # None means "not reported" (input and output only)


@dataclass(frozen=True, slots=True)
class Part:
    """A billed part: what is counted, how it is priced, where it is stored and shown."""

    name: str  # Cost attribute and keyword
    pricing: Pricing
    counts: tuple[Count, ...]
    cost_record: str  # key in a usage record's "cost" object (micro-USD string)
    cost_attribute: str  # ledger request record: the part's cost in micro-USD
    total: str  # the counts summed: Usage attribute, report/usage row key and CSV/JSON field
    total_attribute: str  # ledger monthly total (ADDed per call)
    column: str  # report and usage column header
    metric: str | None = None  # EMF metric of the summed count, emitted when not 0
    metric_per_principal: bool = False  # PrincipalId x ModelId (only a few: see metrics.py)
    cost_property: str | None = None  # EMF property with the part's cost in USD
    input_side: bool = False  # counts toward the long-context threshold (input tokens in all)

    @property
    def tokens(self) -> bool:
        return self.pricing == "tokens"


PARTS: tuple[Part, ...] = (
    Part(
        name="input",
        pricing="tokens",
        counts=(Count("input_tokens", "inputTokens", "InputTokens", "input", "input", optional=True),),
        cost_record="inputMicroUsd",
        cost_attribute="InputCostMicroUsd",
        total="input_tokens",
        total_attribute="InputTokens",
        column="INPUT TOKENS",
        metric="InputTokensUsed",
        metric_per_principal=True,
        cost_property="InputTokensCost",
        input_side=True,
    ),
    Part(
        name="output",
        pricing="tokens",
        counts=(Count("output_tokens", "outputTokens", "OutputTokens", "output", "output", optional=True),),
        cost_record="outputMicroUsd",
        cost_attribute="OutputCostMicroUsd",
        total="output_tokens",
        total_attribute="OutputTokens",
        column="OUTPUT TOKENS",
        metric="OutputTokensUsed",
        metric_per_principal=True,
        cost_property="OutputTokensCost",
    ),
    Part(
        name="cache_read",
        pricing="tokens",
        counts=(
            Count("cache_read_tokens", "cacheReadTokens", "CacheReadTokens", "cache_read", "cache read"),
        ),
        cost_record="cacheReadMicroUsd",
        cost_attribute="CacheReadCostMicroUsd",
        total="cache_read_tokens",
        total_attribute="CacheReadTokens",
        column="CACHE READ",
        metric="CacheReadTokensUsed",
        cost_property="CacheReadTokensCost",
        input_side=True,
    ),
    Part(
        name="cache_write",
        pricing="tokens",
        counts=(
            # The model's default TTL (5 minutes for Claude), then the 1-hour TTL.
            Count(
                "cache_write_5m_tokens",
                "cacheWrite5mTokens",
                "CacheWrite5mTokens",
                "cache_write",
                "cache write (5m)",
            ),
            Count(
                "cache_write_1h_tokens",
                "cacheWrite1hTokens",
                "CacheWrite1hTokens",
                "cache_write_1h",
                "cache write (1h)",
            ),
        ),
        cost_record="cacheWriteMicroUsd",
        cost_attribute="CacheWriteCostMicroUsd",
        total="cache_write_tokens",
        total_attribute="CacheWriteTokens",
        column="CACHE WRITE",
        metric="CacheWriteTokensUsed",
        cost_property="CacheWriteTokensCost",
        input_side=True,
    ),
    Part(
        name="images",
        pricing="variant",
        counts=(Count("images", "images", "Images", "images", "image"),),
        cost_record="imagesMicroUsd",
        cost_attribute="ImagesCostMicroUsd",
        total="images",
        total_attribute="Images",
        column="IMAGES",
        metric="ImagesGenerated",
    ),
    Part(
        name="queries",
        pricing="unit",
        # Rerank models bill per query: up to 100 documents each (usage.py counts them).
        counts=(Count("queries", "queries", "Queries", "queries", "rerank query"),),
        cost_record="queriesMicroUsd",
        cost_attribute="QueriesCostMicroUsd",
        total="queries",
        total_attribute="Queries",
        column="QUERIES",
        metric="RerankQueries",
    ),
    Part(
        name="video_seconds",
        pricing="variant",
        # Nova Reel, Luma Ray: seconds of video a StartAsyncInvoke asked for, priced by the
        # resolution (the model entry's "video_seconds": {"720p": USD per second, "*": any}).
        counts=(Count("video_seconds", "videoSeconds", "VideoSeconds", "video_seconds", "video second"),),
        cost_record="videoSecondsMicroUsd",
        cost_attribute="VideoSecondsCostMicroUsd",
        total="video_seconds",
        total_attribute="VideoSeconds",
        column="VIDEO SECONDS",
        metric="VideoSecondsRequested",
    ),
    Part(
        name="input_images",
        pricing="unit",
        # Multimodal embeddings (Titan Multimodal, Nova Multimodal) bill each image embedded
        # on top of the text tokens (the model entry's "input_images": USD per image).
        counts=(Count("input_images", "inputImages", "InputImages", "input_images", "input image"),),
        cost_record="inputImagesMicroUsd",
        cost_attribute="InputImagesCostMicroUsd",
        total="input_images",
        total_attribute="InputImages",
        column="INPUT IMAGES",
    ),
)

COUNTS: tuple[Count, ...] = tuple(count for part in PARTS for count in part.counts)
TOKEN_RATES: tuple[str, ...] = tuple(c.price for p in PARTS if p.pricing == "tokens" for c in p.counts)
UNIT_PRICES: tuple[str, ...] = tuple(c.price for p in PARTS if p.pricing == "unit" for c in p.counts)
# Variant prices kept as a map of variant -> USD per unit ("images" has its own size rules).
VARIANT_PRICES: tuple[str, ...] = tuple(
    c.price for p in PARTS if p.pricing == "variant" for c in p.counts if c.price != "images"
)


def _check(parts: tuple[Part, ...]) -> None:
    """Names that must be unique are: a clash would overwrite a stored attribute."""
    usage_names = [c.field for p in parts for c in p.counts]
    usage_names += [p.total for p in parts if p.total not in {c.field for c in p.counts}]
    names = [p.name for p in parts]
    attributes = [a for p in parts for a in (p.cost_attribute, *(c.attribute for c in p.counts))]
    for kind, values in (
        ("part name", names),
        ("Usage count", usage_names),
        ("ledger attribute", attributes),
        ("record key", [c.record for c in COUNTS]),
        ("total attribute", [p.total_attribute for p in parts]),
    ):
        dupes = {v for v in values if values.count(v) > 1}
        if dupes:
            raise ValueError(f"parts: {kind} {sorted(dupes)} declared twice")


_check(PARTS)
