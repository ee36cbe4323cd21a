"""The proxy's use case: refuse before Bedrock, forward, meter what goes by, record once at the end.

Order matters: every refusal (bad model id, allow-list, unpriced policy, budget) happens
before Bedrock is called. Once the request may have reached Bedrock, nothing may fail the
caller because of metering, and the call is recorded exactly once: when the answer ends
(completed, a Bedrock error mid-stream, the connection to Bedrock broken, the caller gone),
or when the connection breaks after the request was sent (possibly billed, usage unknown).

Collaborators (settings, the Bedrock forwarder, the ledger, the price book, the profile
resolver) are passed in as :class:`Collaborators`; :func:`default_collaborators` builds the
production ones once, at the edge.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
from aws_lambda_powertools import Logger

from bedrock_spend.aws import metrics
from bedrock_spend.aws.ledger import Ledger
from bedrock_spend.aws.profiles import ProfileResolver
from bedrock_spend.domain.errors import (
    BadRequestError,
    BedrockConnectionLostError,
    BedrockNotReachedError,
    BedrockTimeoutError,
    BudgetExceededError,
    ForbiddenModelError,
    TooManyInFlightError,
    UnpricedModelError,
)
from bedrock_spend.domain.keys import model_allowed
from bedrock_spend.domain.model_ids import InvalidModelIdError, ModelRef, parse_model_id
from bedrock_spend.domain.prices import Cost, PriceBook
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend.settings import RECORD_SECONDS, ProxySettings
from bedrock_spend.transport.forwarding import MANTLE_SIGNING_NAME, Forwarder, Outbound, Upstream
from bedrock_spend.transport.meters import HiddenUsageChunk, Measured, Meter, Requested, meter_for
from bedrock_spend.transport.native import BedrockCall

logger = Logger(child=True)
MICRO = Decimal(1_000_000)
# Bedrock's answer headers relayed to the caller: SDKs read the content type, the request id,
# the error type, the token counts, the tier served and, on streams, the model's content type.
RELAYED_HEADERS = frozenset({"content-type", "x-amzn-requestid", "x-amzn-errortype"})
RELAYED_PREFIX = "x-amzn-bedrock-"
# Free, and never recorded.
UNMETERED = frozenset({"CountTokens"})
IN_FLIGHT_POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class Collaborators:
    settings: ProxySettings
    bedrock: Forwarder
    ledger: Ledger | None
    price_book: PriceBook
    profiles: ProfileResolver
    # The bedrock-mantle endpoint (OpenAI- and Anthropic-compatible APIs); None: not served.
    mantle: Forwarder | None = None

    def forwarder(self, endpoint: str) -> Forwarder:
        if endpoint == "mantle":
            if self.mantle is None:
                raise BedrockNotReachedError("this proxy has no bedrock-mantle endpoint configured")
            return self.mantle
        return self.bedrock


def default_collaborators(settings: ProxySettings) -> Collaborators:
    from bedrock_spend import aws
    from bedrock_spend.domain.prices import load_price_book

    return Collaborators(
        settings=settings,
        bedrock=Forwarder(
            settings.bedrock_endpoint,
            settings.region,
            connect_timeout=settings.bedrock_connect_timeout,
            idle_timeout=settings.bedrock_idle_timeout,
        ),
        ledger=Ledger(settings.usage_table, ttl_days=settings.usage_record_ttl_days)
        if settings.usage_table
        else None,
        price_book=load_price_book(),
        profiles=ProfileResolver(
            static=settings.app_profile_models, client_factory=lambda: aws.client("bedrock")
        ),
        mantle=Forwarder(
            settings.mantle_endpoint,
            settings.region,
            connect_timeout=settings.bedrock_connect_timeout,
            idle_timeout=settings.bedrock_idle_timeout,
            signing_name=MANTLE_SIGNING_NAME,
        ),
    )


# --- refusals, before Bedrock is called ----------------------------------------------------------


def parse(model_id: str) -> ModelRef:
    try:
        return parse_model_id(model_id)
    except InvalidModelIdError as exc:
        raise BadRequestError(f"invalid modelId: {exc}") from exc


def check_allowed(caller: Caller, ref: ModelRef) -> None:
    if not model_allowed(caller.allowed_models, ref.raw, ref.base_model):
        raise ForbiddenModelError(f"model {ref.raw!r} is not in the allow-list of key {caller.key_id}")


def check_model(deps: Collaborators, caller: Caller, ref: ModelRef) -> None:
    """The refusals that depend on the model: allow-list and unpriced policy."""
    check_allowed(caller, ref)
    if deps.settings.unpriced_policy == "deny" and not deps.price_book.is_priced(
        ref, region=deps.settings.region
    ):
        raise UnpricedModelError(
            f"model {ref.raw!r} has no price in the price book and this deployment refuses unpriced models"
        )


def in_flight_cap(deps: Collaborators, caller: Caller) -> int | None:
    """How many calls ``caller`` may have in flight: the key's own cap, else the deployment's
    default for keys with a budget (it is what bounds a budget's overshoot), else no cap."""
    if caller.max_in_flight is not None:
        return caller.max_in_flight
    if caller.monthly_budget_usd is not None:
        return deps.settings.max_in_flight_per_key
    return None


async def take_place(deps: Collaborators, caller: Caller) -> Callable[[], None] | None:
    """Hold one of the caller's in-flight places (waiting a little for one); returns its release.

    Budget overshoot is bounded by the cap: a call is checked against the budget only while it
    holds a place, and gives the place back only after its cost is recorded, so every call that
    can still add to a spent budget is one of at most ``cap`` in flight when it was crossed.
    """
    cap = in_flight_cap(deps, caller)
    ledger = deps.ledger
    if cap is None or ledger is None:
        return None
    lease_id = uuid.uuid4().hex
    ttl_ms = int((deps.settings.max_call_seconds + RECORD_SECONDS) * 1000)
    waited_until = time.monotonic() + deps.settings.in_flight_wait_seconds

    def acquire() -> bool:
        now_ms = int(time.time() * 1000)
        return ledger.acquire_lease(caller.principal_id, lease_id, cap=cap, now_ms=now_ms, ttl_ms=ttl_ms)

    while True:
        taken = await anyio.to_thread.run_sync(acquire)
        if taken:
            return lambda: _release(ledger, caller.principal_id, lease_id)
        if time.monotonic() >= waited_until:
            raise TooManyInFlightError(
                f"key {caller.key_id} already has {cap} calls in flight, its limit; retry when one ends"
            )
        await anyio.sleep(IN_FLIGHT_POLL_SECONDS)


def _release(ledger: Ledger, principal_id: str, lease_id: str) -> None:
    try:
        ledger.release_lease(principal_id, lease_id)
    except Exception:  # the lease expires by itself; a failed release only delays the next call
        logger.warning("releasing an in-flight place failed", exc_info=True)


def check_budget(ledger: Ledger | None, caller: Caller, ctx: RequestContext) -> None:
    if caller.monthly_budget_usd is None or ledger is None:
        return
    month = ctx.requested_at.astimezone(UTC).strftime("%Y-%m")
    spent = ledger.month_spend(caller.principal_id, month) / MICRO
    if spent >= caller.monthly_budget_usd:
        metrics.emit_budget_refusal(caller.principal_id)
        spent_usd = _usd(spent)  # exact: small budgets must not be misstated by rounding
        resets = _next_month(ctx.requested_at)
        raise BudgetExceededError(
            f"monthly budget of ${caller.monthly_budget_usd} for {caller.principal_id} is spent "
            f"(${spent_usd} so far); it resets on {resets}",
            budget_usd=str(caller.monthly_budget_usd),
            spent_usd=spent_usd,
            resets_at=resets,
        )


def _usd(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if "." in text else f"{text}.00"


def _next_month(when: datetime) -> str:
    when = when.astimezone(UTC)
    year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00Z"


# --- the call ------------------------------------------------------------------------------------


class Relay:
    """Bedrock's answer on its way to the caller: relay :meth:`chunks`, then :meth:`end` once.

    ``end`` closes the connection to Bedrock and, for a metered call, records it with what
    the meter saw. It never raises.
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        deadline: float,
        meter: Meter | None = None,
        record: Callable[[Measured], None] | None = None,
        release: Callable[[], None] | None = None,
        hide_usage: HiddenUsageChunk | None = None,
    ) -> None:
        self.status = upstream.status
        self.headers = {
            name: value
            for name, value in upstream.headers.items()
            if name in RELAYED_HEADERS or name.startswith(RELAYED_PREFIX)
        }
        self.deadline = deadline
        self._upstream = upstream
        self._meter = meter
        self._record = record
        self._release = release
        self._hide_usage = hide_usage
        self._ended = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bedrock's bytes as they arrive, each metered; domain errors if the connection fails."""
        async for data in self._upstream.chunks():
            if self._meter is not None:
                self._meter.feed(data)
            if self._hide_usage is not None:
                data = self._hide_usage(data)
            if data:
                yield data
        if self._hide_usage is not None and self._hide_usage.rest():
            yield self._hide_usage.rest()

    async def end(self, error: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            await self._upstream.close()
        except Exception:  # the answer is over either way
            logger.warning("closing Bedrock's connection failed", exc_info=True)
        if self._meter is not None and self._record is not None:
            measured = self._meter.finish(error)
            await anyio.to_thread.run_sync(self._record, measured)
        if self._release is not None:  # after the record: its cost counts before the place frees
            await anyio.to_thread.run_sync(self._release)


async def call(deps: Collaborators, call: BedrockCall, caller: Caller, ctx: RequestContext) -> Relay:
    """Refuse, forward, and return the answer to relay; domain errors before Bedrock answered."""
    started = time.monotonic()
    ref = parse(call.model_id)
    if ref.kind == "application-inference-profile":  # may ask Bedrock's control plane
        ref = await anyio.to_thread.run_sync(deps.profiles.resolve, ref)
    if call.operation in UNMETERED:
        check_allowed(caller, ref)
        upstream = await _open(deps, call)
        return Relay(upstream, deadline=started + deps.settings.max_call_seconds)
    check_model(deps, caller, ref)
    release = await take_place(deps, caller)
    try:
        if caller.monthly_budget_usd is not None:  # a DynamoDB read; worker threads cost a hop
            await anyio.to_thread.run_sync(check_budget, deps.ledger, caller, ctx)

        def record(measured: Measured) -> None:
            record_billed(
                deps,
                measured,
                caller=caller,
                ref=ref,
                ctx=ctx,
                operation=call.operation,
                end_user=call.end_user,
            )

        try:
            upstream = await _open(deps, call)
        except (BedrockConnectionLostError, BedrockTimeoutError) as exc:
            # The request was sent: Bedrock may bill it. Usage unknown, the call recorded.
            await anyio.to_thread.run_sync(record, Measured(Usage(source="none"), stream_error=exc.type))
            raise
    except BaseException:
        if release is not None:
            with anyio.CancelScope(shield=True):  # also when the request was cancelled
                await anyio.to_thread.run_sync(release)
        raise
    deadline = started + deps.settings.max_call_seconds
    if upstream.status >= 300:  # Bedrock does not bill a refused call
        return Relay(upstream, deadline=deadline, release=release)
    meter = meter_for(call.operation, ref, upstream.headers, call.requested)
    streamed_sse = "text/event-stream" in upstream.headers.get("content-type", "")
    hide_usage = HiddenUsageChunk() if call.hide_stream_usage and streamed_sse else None
    return Relay(
        upstream, deadline=deadline, meter=meter, record=record, release=release, hide_usage=hide_usage
    )


async def _open(deps: Collaborators, call: BedrockCall) -> Upstream:
    try:
        upstream = await deps.forwarder(call.endpoint).open(call.outbound)
    except (BedrockNotReachedError, BedrockConnectionLostError, BedrockTimeoutError) as exc:
        metrics.emit_bedrock_error(exc.type)
        raise
    if upstream.status >= 300:
        metrics.emit_bedrock_error(_error_type(upstream))
    return upstream


async def forward_free(deps: Collaborators, endpoint: str, outbound: Outbound) -> Relay:
    """An operation Bedrock does not bill (GetAsyncInvoke): forwarded signed, relayed, not recorded."""
    started = time.monotonic()
    upstream = await deps.forwarder(endpoint).open(outbound)
    return Relay(upstream, deadline=started + deps.settings.max_call_seconds)


async def list_models(
    deps: Collaborators, endpoint: str, path: str, caller: Caller
) -> tuple[int, dict[str, str], bytes]:
    """A model listing Bedrock serves, narrowed to the models the caller's key may call."""
    upstream = await _open(deps, BedrockCall("ListModels", "", Outbound("GET", path), Requested(), endpoint))
    try:
        body = b"".join([chunk async for chunk in upstream.chunks()])
    finally:
        await upstream.close()
    headers = {k: v for k, v in upstream.headers.items() if k in RELAYED_HEADERS}
    listing = _json_object(body) if upstream.status == 200 else {}
    models = listing.get("data")
    if caller.allowed_models and isinstance(models, list):
        listing["data"] = [
            m
            for m in models
            if isinstance(m, dict) and model_allowed(caller.allowed_models, str(m.get("id")))
        ]
        body = json.dumps(listing, separators=(",", ":")).encode()
    return upstream.status, headers, body


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _error_type(upstream: Upstream) -> str:
    # "ThrottlingException:http://internal.amazon.com/coral/..." -> "ThrottlingException"
    raw = upstream.headers.get("x-amzn-errortype") or f"HTTP{upstream.status}"
    return raw.split(":", 1)[0] or f"HTTP{upstream.status}"


# --- recording -----------------------------------------------------------------------------------


def record_billed(
    deps: Collaborators,
    measured: Measured,
    *,
    caller: Caller,
    ref: ModelRef,
    ctx: RequestContext,
    operation: str,
    end_user: str | None = None,
) -> UsageRecord:
    """Price and record a call Bedrock may have billed. Never raises.

    Each step degrades instead of failing: a pricing failure is recorded as unpriced, a
    ledger failure as a replayable log line.
    """
    region = deps.settings.region
    usage = measured.usage
    try:
        cost = deps.price_book.price(
            usage, ref, region=region, service_tier=measured.service_tier, latency=measured.latency
        )
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
        service_tier=measured.service_tier,
        latency=measured.latency,
        stream_error=measured.stream_error,
        end_user=end_user,
    )
    save(deps, record)
    return record


def save(deps: Collaborators, record: UsageRecord) -> None:
    try:
        metrics.emit_call(record)
    except Exception:  # metrics are for dashboards; the ledger is the record
        logger.exception("emitting metrics failed")
    try:
        if deps.ledger is None:
            logger.info("usage record", extra={"usage_record": record.to_dict()})
            return
        deps.ledger.record(record)
        if not record.cost.priced:
            logger.warning(
                "unpriced invocation", extra={"model_id": record.model_id, "reason": record.cost.reason}
            )
    except Exception:
        # The durable fallback: every field, on one line that `bedrock-spend ledger replay` reads.
        logger.exception("USAGE_RECORD_UNSAVED", extra={"usage_record": record.to_dict()})
        metrics.emit_unsaved_record()
        return
    try:
        check_soft_threshold(deps, record)
    except Exception:  # the record is saved; a warning metric is not worth failing for
        logger.exception("soft-threshold check failed")


def check_soft_threshold(deps: Collaborators, record: UsageRecord) -> None:
    budget = record.caller.monthly_budget_usd
    if budget is None or deps.ledger is None or not record.cost.priced or record.cost.total == 0:
        return
    threshold = budget * deps.settings.budget_soft_threshold
    after = deps.ledger.month_spend(record.principal_id, record.month) / MICRO
    before = after - record.cost.total / MICRO
    if before < threshold <= after:
        metrics.emit_budget_threshold(record.principal_id)
        logger.warning(
            "budget soft threshold crossed",
            extra={"principal_id": record.principal_id, "budget_usd": str(budget), "spent_usd": str(after)},
        )
