"""What a Bedrock call consumed, as billed: tokens by part and generated images.

Usage drivers (one per response family) turn a response body, its headers or a stream's
final event into a :class:`Usage`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Billed quantities of one call. ``None`` means "not reported", never zero.

    ``input_tokens`` counts only non-cached input, as Bedrock bills it; cache reads and
    cache writes are separate parts (total input = input + cache_read + cache writes).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    images: int = 0
    # Image pricing variant, e.g. "1024x1024/standard"; None for token models.
    image_variant: str | None = None
    # Where the numbers came from: "anthropic", "nova", "headers", "converse", "stream", "none", ...
    source: str = "none"

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def known(self) -> bool:
        """True when the call reported anything billable."""
        return self.input_tokens is not None or self.output_tokens is not None or self.images > 0
