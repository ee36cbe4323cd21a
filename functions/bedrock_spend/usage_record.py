"""One billed Bedrock call, as the ledger, the metrics and the fallback log line see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bedrock_spend.prices import Cost
from bedrock_spend.usage import Usage

RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, from the authorizer's context."""

    principal_id: str
    key_id: str
    username: str
    team: str = ""
    allowed_models: tuple[str, ...] = ()
    monthly_budget_usd: Decimal | None = None
    max_in_flight: int | None = None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    requested_at: datetime
    caller: Caller
    operation: str  # InvokeModel, Converse, InvokeModelWithResponseStream, ConverseStream
    model_id: str  # as called
    base_model: str | None
    region: str
    usage: Usage
    cost: Cost
    service_tier: str | None = None
    latency: str | None = None
    # Set when the call ended in a mid-stream error: what was billed before it is recorded.
    stream_error: str | None = None

    @property
    def principal_id(self) -> str:
        return self.caller.principal_id

    @property
    def month(self) -> str:
        return self.requested_at.astimezone(UTC).strftime("%Y-%m")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-safe (decimals as strings): the replayable log form."""
        usage, cost = self.usage, self.cost
        return {
            "v": RECORD_VERSION,
            "requestId": self.request_id,
            "requestedAt": self.requested_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            "principalId": self.caller.principal_id,
            "keyId": self.caller.key_id,
            "username": self.caller.username,
            "team": self.caller.team,
            "operation": self.operation,
            "modelId": self.model_id,
            "baseModel": self.base_model,
            "region": self.region,
            "serviceTier": self.service_tier,
            "latency": self.latency,
            "streamError": self.stream_error,
            "usage": {
                "inputTokens": usage.input_tokens,
                "outputTokens": usage.output_tokens,
                "cacheReadTokens": usage.cache_read_tokens,
                "cacheWrite5mTokens": usage.cache_write_5m_tokens,
                "cacheWrite1hTokens": usage.cache_write_1h_tokens,
                "images": usage.images,
                "imageVariant": usage.image_variant,
                "source": usage.source,
            },
            "cost": {
                "priced": cost.priced,
                "reason": cost.reason,
                "priceBookVersion": cost.price_book_version,
                "inputMicroUsd": str(cost.input),
                "outputMicroUsd": str(cost.output),
                "cacheReadMicroUsd": str(cost.cache_read),
                "cacheWriteMicroUsd": str(cost.cache_write),
                "imagesMicroUsd": str(cost.images),
                "totalMicroUsd": str(cost.total),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        u, c = data["usage"], data["cost"]
        return cls(
            request_id=data["requestId"],
            requested_at=datetime.fromisoformat(data["requestedAt"]),
            caller=Caller(
                principal_id=data["principalId"],
                key_id=data["keyId"],
                username=data["username"],
                team=data.get("team") or "",
            ),
            operation=data["operation"],
            model_id=data["modelId"],
            base_model=data.get("baseModel"),
            region=data["region"],
            service_tier=data.get("serviceTier"),
            latency=data.get("latency"),
            stream_error=data.get("streamError"),
            usage=Usage(
                input_tokens=u.get("inputTokens"),
                output_tokens=u.get("outputTokens"),
                cache_read_tokens=u.get("cacheReadTokens", 0),
                cache_write_5m_tokens=u.get("cacheWrite5mTokens", 0),
                cache_write_1h_tokens=u.get("cacheWrite1hTokens", 0),
                images=u.get("images", 0),
                image_variant=u.get("imageVariant"),
                source=u.get("source", "none"),
            ),
            cost=Cost(
                priced=bool(c["priced"]),
                reason=c.get("reason"),
                price_book_version=c["priceBookVersion"],
                input=Decimal(c["inputMicroUsd"]),
                output=Decimal(c["outputMicroUsd"]),
                cache_read=Decimal(c["cacheReadMicroUsd"]),
                cache_write=Decimal(c["cacheWriteMicroUsd"]),
                images=Decimal(c["imagesMicroUsd"]),
            ),
        )
