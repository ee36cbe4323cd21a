"""One billed Bedrock call, as the ledger, the metrics and the fallback log line see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bedrock_spend.domain.parts import COUNTS, PARTS, Part
from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage

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
    # The caller's own end user, as the request named it (compat.py), else None.
    end_user: str | None = None

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
            "endUser": self.end_user,
            "usage": {
                **{count.record: n for count, n in zip(COUNTS, usage.counts, strict=True)},
                "imageVariant": usage.image_variant,
                "source": usage.source,
            },
            "cost": {
                "priced": cost.priced,
                "reason": cost.reason,
                "priceBookVersion": cost.price_book_version,
                **{part.cost_record: str(cost.of(part)) for part in PARTS},
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
            end_user=data.get("endUser"),
            usage=Usage(
                image_variant=u.get("imageVariant"),
                source=u.get("source", "none"),
                **{count.field: u.get(count.record, None if count.optional else 0) for count in COUNTS},
            ),
            cost=Cost.by_part(
                bool(c["priced"]),
                c["priceBookVersion"],
                {part.name: _part_cost(part, u, c) for part in PARTS},
                reason=c.get("reason"),
            ),
        )


def _part_cost(part: Part, usage: dict[str, Any], cost: dict[str, Any]) -> Decimal:
    # A record without the part's cost or counts was written before the part existed: 0.
    if part.cost_record not in cost and not any(count.record in usage for count in part.counts):
        return Decimal(0)
    return Decimal(cost[part.cost_record])
