"""The proxy's use case: check limits, call Bedrock, meter what it billed, record it.

Order matters: every refusal (bad model id, allow-list, unpriced policy, budget) happens
before Bedrock is called; after Bedrock has answered, nothing may fail the caller or lose
the usage (see :func:`record_billed`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger

from bedrock_spend import bedrock, buffered_stream, metrics, request_metadata
from bedrock_spend.bedrock import BedrockRequest, BedrockResponse
from bedrock_spend.errors import (
    BadRequestError,
    BedrockTimeoutError,
    BudgetExceededError,
    ForbiddenModelError,
    ProxyError,
    UnpricedModelError,
)
from bedrock_spend.invoke_request import InvokeRequest
from bedrock_spend.keys import model_allowed
from bedrock_spend.ledger import Ledger, default_ledger
from bedrock_spend.model_ids import InvalidModelIdError, ModelRef, parse_model_id
from bedrock_spend.prices import Cost, load_price_book
from bedrock_spend.profiles import ProfileResolver
from bedrock_spend.settings import proxy_settings
from bedrock_spend.usage import Usage, usage_from_converse, usage_from_invoke
from bedrock_spend.usage_record import Caller, UsageRecord

logger = Logger(child=True)
MICRO = Decimal(1_000_000)
SERVICE_TIER_HEADER = "x-amzn-bedrock-service-tier"
LATENCY_HEADER = "x-amzn-bedrock-performanceconfig-latency"


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    requested_at: datetime


@cache
def profile_resolver() -> ProfileResolver:
    from bedrock_spend import aws

    return ProfileResolver(
        static=proxy_settings().app_profile_models,
        client_factory=lambda: aws.client("bedrock"),
    )


def ledger() -> Ledger | None:
    settings = proxy_settings()
    if not settings.usage_table:
        return None
    return default_ledger(settings.usage_table, settings.usage_record_ttl_days)


def resolve_model(model_id: str) -> ModelRef:
    try:
        ref = parse_model_id(model_id)
    except InvalidModelIdError as exc:
        raise BadRequestError(f"invalid modelId: {exc}") from exc
    return profile_resolver().resolve(ref)


def check_before_call(caller: Caller, ref: ModelRef, ctx: RequestContext) -> None:
    """Every refusal that must happen before Bedrock bills anything."""
    check_allowed(caller, ref)
    settings = proxy_settings()
    if settings.unpriced_policy == "deny" and not load_price_book().is_priced(ref, region=settings.region):
        raise UnpricedModelError(
            f"model {ref.raw!r} has no price in the price book and this deployment refuses unpriced models"
        )
    check_budget(caller, ctx)


def check_allowed(caller: Caller, ref: ModelRef) -> None:
    if not model_allowed(caller.allowed_models, ref.raw, ref.base_model):
        raise ForbiddenModelError(f"model {ref.raw!r} is not in the allow-list of key {caller.key_id}")


def check_budget(caller: Caller, ctx: RequestContext) -> None:
    book = ledger()
    if caller.monthly_budget_usd is None or book is None:
        return
    month = ctx.requested_at.astimezone(UTC).strftime("%Y-%m")
    spent = book.month_spend(caller.principal_id, month) / MICRO
    if spent >= caller.monthly_budget_usd:
        metrics.emit_budget_refusal(caller.principal_id)
        spent_usd = _usd(spent)  # exact: small budgets must not be misstated by rounding
        raise BudgetExceededError(
            f"monthly budget of ${caller.monthly_budget_usd} for {caller.principal_id} is spent "
            f"(${spent_usd} so far); it resets on {_next_month(ctx.requested_at)}",
            budget_usd=str(caller.monthly_budget_usd),
            spent_usd=spent_usd,
            resets_at=_next_month(ctx.requested_at),
        )


def _usd(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if "." in text else f"{text}.00"


def _next_month(when: datetime) -> str:
    when = when.astimezone(UTC)
    year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class Served:
    """What Bedrock answered, and how to measure what it billed for it."""

    response: BedrockResponse
    measure: Callable[[], Usage]
    # The tier and latency mode Bedrock reports it served: that is what it bills.
    service_tier: str | None = None
    latency: str | None = None
    stream_error: str | None = None


def invoke(request: InvokeRequest, caller: Caller, ctx: RequestContext) -> BedrockResponse:
    """``POST /invoke-model``: InvokeModel with the caller named in the request metadata."""
    params = {**request.options, "requestMetadata": request_metadata.merged_header(None, caller)}
    return call(
        BedrockRequest("InvokeModel", request.model_id, {"body": request.body, **params}), caller, ctx
    )


def call(request: BedrockRequest, caller: Caller, ctx: RequestContext) -> BedrockResponse:
    """Every Bedrock operation: refuse before the call, meter and record after it.

    CountTokens is free: it is forwarded (within the key's allow-list) and never recorded.
    """
    ref = resolve_model(request.model_id)
    if request.operation == "CountTokens":
        check_allowed(caller, ref)
        return bedrock.call(request)
    check_before_call(caller, ref, ctx)
    try:
        served = _SERVERS[request.operation](ref, request)
    except BedrockTimeoutError as exc:
        metrics.emit_bedrock_error(exc.type)
        # Bedrock may bill a call we stopped waiting for. Its usage is unknown, but the call is
        # recorded (unpriced, "no usage reported") so reports and reconciliation can see it.
        record_billed(
            lambda: Usage(source="none"),
            caller=caller,
            ref=ref,
            ctx=ctx,
            operation=request.operation,
            stream_error=exc.type,
        )
        raise
    except ProxyError as exc:
        metrics.emit_bedrock_error(exc.type)
        raise
    record_billed(
        served.measure,
        caller=caller,
        ref=ref,
        ctx=ctx,
        operation=request.operation,
        service_tier=served.service_tier,
        latency=served.latency,
        stream_error=served.stream_error,
    )
    return served.response


def _serve_invoke(ref: ModelRef, request: BedrockRequest) -> Served:
    response = bedrock.call(request)
    body = request.params.get("body")
    return Served(
        response,
        lambda: usage_from_invoke(ref, response.body, response.headers, body),
        service_tier=response.headers.get(SERVICE_TIER_HEADER) or request.params.get("serviceTier"),
        latency=response.headers.get(LATENCY_HEADER) or request.params.get("performanceConfigLatency"),
    )


def _serve_converse(ref: ModelRef, request: BedrockRequest) -> Served:
    response = bedrock.call(request)
    answer = _json_object(response.body)
    return Served(
        response,
        lambda: usage_from_converse(answer),
        service_tier=_member(answer, "serviceTier", "type") or _member(request.params, "serviceTier", "type"),
        latency=_member(answer, "performanceConfig", "latency")
        or _member(request.params, "performanceConfig", "latency"),
    )


def _serve_stream(ref: ModelRef, request: BedrockRequest) -> Served:
    stream = bedrock.open_stream(request)
    collected = buffered_stream.collect(ref, request.operation, stream.chunks)
    headers = stream.headers
    if request.operation == "ConverseStream":
        tier = collected.service_tier or _member(request.params, "serviceTier", "type")
        latency = collected.latency or _member(request.params, "performanceConfig", "latency")
    else:
        tier = headers.get(SERVICE_TIER_HEADER) or request.params.get("serviceTier")
        latency = headers.get(LATENCY_HEADER) or request.params.get("performanceConfigLatency")
    return Served(
        BedrockResponse(body=collected.body, content_type=buffered_stream.EVENT_STREAM, headers=headers),
        collected.usage.usage,
        service_tier=tier,
        latency=latency,
        stream_error=collected.error,
    )


_SERVERS: dict[str, Callable[[ModelRef, BedrockRequest], Served]] = {
    "InvokeModel": _serve_invoke,
    "Converse": _serve_converse,
    "InvokeModelWithResponseStream": _serve_stream,
    "ConverseStream": _serve_stream,
}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # passed on as Bedrock sent it; usage "not reported"
        return {}
    return value if isinstance(value, dict) else {}


def _member(obj: Mapping[str, Any], outer: str, inner: str) -> str | None:
    value = obj.get(outer)
    inner_value = value.get(inner) if isinstance(value, Mapping) else None
    return inner_value if isinstance(inner_value, str) and inner_value else None


def record_billed(
    measure: Callable[[], Usage],
    *,
    caller: Caller,
    ref: ModelRef,
    ctx: RequestContext,
    operation: str,
    service_tier: str | None = None,
    latency: str | None = None,
    stream_error: str | None = None,
) -> UsageRecord | None:
    """Meter and record a call Bedrock has billed. Never raises.

    Each step degrades instead of failing: unreadable usage is recorded as unknown,
    a pricing failure as unpriced, a ledger failure as a replayable log line.
    """
    region = proxy_settings().region
    try:
        usage = measure()
    except Exception:
        logger.exception("usage extraction failed", extra={"model_id": ref.raw})
        usage = Usage(source="none")
    try:
        cost = load_price_book().price(usage, ref, region=region, service_tier=service_tier, latency=latency)
    except Exception:
        logger.exception("pricing failed", extra={"model_id": ref.raw})
        cost = Cost(priced=False, price_book_version="unavailable", reason="pricing failed")
    record = UsageRecord(
        request_id=ctx.request_id,
        requested_at=ctx.requested_at,
        caller=caller,
        operation=operation,
        model_id=ref.raw,
        base_model=ref.base_model,
        region=region,
        usage=usage,
        cost=cost,
        service_tier=service_tier,
        latency=latency,
        stream_error=stream_error,
    )
    save(record)
    return record


def save(record: UsageRecord) -> None:
    metrics.emit_call(record)
    try:
        book = ledger()
        if book is None:
            logger.info("usage record", extra={"usage_record": record.to_dict()})
            return
        book.record(record)
        if not record.cost.priced:
            logger.warning(
                "unpriced invocation", extra={"model_id": record.model_id, "reason": record.cost.reason}
            )
        check_soft_threshold(book, record)
    except Exception:
        # The durable fallback: every field, on one line that `bedrock-spend ledger replay` reads.
        logger.exception("USAGE_RECORD_UNSAVED", extra={"usage_record": record.to_dict()})
        metrics.emit_unsaved_record()


def check_soft_threshold(book: Ledger, record: UsageRecord) -> None:
    budget = record.caller.monthly_budget_usd
    if budget is None or not record.cost.priced or record.cost.total == 0:
        return
    threshold = budget * proxy_settings().budget_soft_threshold
    after = book.month_spend(record.principal_id, record.month) / MICRO
    before = after - record.cost.total / MICRO
    if before < threshold <= after:
        metrics.emit_budget_threshold(record.principal_id)
        logger.warning(
            "budget soft threshold crossed",
            extra={"principal_id": record.principal_id, "budget_usd": str(budget), "spent_usd": str(after)},
        )
