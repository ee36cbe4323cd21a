"""Price book: what each billed part of a call costs, in exact decimal micro-USD.

Interface used by the proxy (implementation completed by the price-book work):

    book = load_price_book()                       # cached; reads data/price_book.json
    cost = book.price(usage, model_ref, region="us-east-1", service_tier=None, latency=None)
    book.is_priced(model_ref, region="us-east-1")  # for the `deny` unpriced-model policy
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Cost:
    """Cost of one call by part, in micro-USD (1e-6 USD), exact decimals.

    ``priced`` is False when the model or a used part has no price: the parts are then
    not to be read as $0, and ``reason`` says what was missing.
    """

    priced: bool
    price_book_version: str
    input: Decimal = ZERO
    output: Decimal = ZERO
    cache_read: Decimal = ZERO
    cache_write: Decimal = ZERO
    images: Decimal = ZERO
    reason: str | None = None

    @property
    def total(self) -> Decimal:
        return self.input + self.output + self.cache_read + self.cache_write + self.images
