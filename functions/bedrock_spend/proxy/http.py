"""HTTP in and out of the proxy app: who is calling, error bodies, and the relaying response.

Behind the Lambda Web Adapter, API Gateway's request context (the authorizer's values
included) arrives as the JSON header ``x-amzn-request-context``. The adapter sets it from the
invocation event, replacing any header of that name a caller sent, so it is the one place the
principal is read from.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
from aws_lambda_powertools import Logger
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bedrock_spend.domain.errors import ProxyError, UnauthorizedError
from bedrock_spend.domain.usage_record import Caller
from bedrock_spend.metering import Relay, RequestContext

logger = Logger(child=True)
REQUEST_CONTEXT_HEADER = "x-amzn-request-context"


def request_context(headers: Any) -> dict[str, Any]:
    raw = headers.get(REQUEST_CONTEXT_HEADER)
    try:
        # The adapter writes the JSON as UTF-8 bytes; ASGI servers hand header bytes over as
        # Latin-1 text, so the text is turned back into its bytes and read as UTF-8.
        value = json.loads(raw.encode("latin-1").decode("utf-8")) if raw else None
    except (ValueError, UnicodeError):
        value = None
    return value if isinstance(value, dict) else {}


def caller_from(context: dict[str, Any]) -> Caller:
    authorizer = context.get("authorizer") or {}
    principal = authorizer.get("principalId") if isinstance(authorizer, dict) else None
    if not principal:
        # Only reachable if the API is deployed without the authorizer: refuse, never meter as nobody.
        raise UnauthorizedError("request carries no authorizer context")
    budget: Decimal | None = None
    if authorizer.get("monthlyBudgetUsd") not in (None, ""):
        try:
            budget = Decimal(str(authorizer["monthlyBudgetUsd"]))
        except InvalidOperation:
            budget = None
    allowed = str(authorizer.get("allowedModels") or "")
    raw_cap = str(authorizer.get("maxInFlight") or "")
    return Caller(
        principal_id=str(principal),
        key_id=str(authorizer.get("keyId") or ""),
        username=str(authorizer.get("username") or ""),
        team=str(authorizer.get("team") or ""),
        allowed_models=tuple(p for p in allowed.split(",") if p),
        monthly_budget_usd=budget,
        max_in_flight=int(raw_cap) if raw_cap.isdigit() and int(raw_cap) > 0 else None,
    )


def context_from(context: dict[str, Any]) -> RequestContext:
    epoch_ms = context.get("requestTimeEpoch")
    when = (
        datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC)
        if isinstance(epoch_ms, int | str) and str(epoch_ms).isdigit()
        else datetime.now(UTC)
    )
    return RequestContext(request_id=str(context.get("requestId") or ""), requested_at=when)


# The Anthropic API's error types by HTTP status (its SDK picks exception classes by status).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_response(error: ProxyError, dialect: str = "bedrock") -> Response:
    """The error in the shape the caller's SDK reads: AWS (``message`` and ``x-amzn-errortype``),
    OpenAI (``{"error": {"message", "type", "code"}}``) or Anthropic (``{"type": "error", ...}``)."""
    body = error.body()
    detail = body["error"]
    if dialect == "openai":
        body = {"error": {**detail, "type": error.type, "code": error.type, "message": error.message}}
    elif dialect == "anthropic":
        kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
        body = {"type": "error", "error": {**detail, "type": kind, "message": error.message}}
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=error.status,
        media_type="application/json",
        headers={"x-amzn-errortype": error.type},
    )


class RelayResponse(Response):
    """Relays Bedrock's answer chunk by chunk as it arrives, then ends the call once.

    It does not stop when the caller goes away: Bedrock is read to its end (or to the call's
    deadline) so the record holds Bedrock's final counts, and the function does not return
    before the call is recorded.
    """

    def __init__(self, relay: Relay) -> None:
        self.status_code = relay.status
        self.background = None
        # No content-length: the length is Bedrock's to tell, chunk by chunk.
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in relay.headers.items()]
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = self.relay
        caller_gone = False
        error: str | None = None

        async def to_caller(message: dict[str, Any]) -> None:
            nonlocal caller_gone
            if caller_gone:
                return
            try:
                await send(message)
            except (OSError, RuntimeError):  # uvicorn: closed socket, or a send after disconnect
                caller_gone = True
                logger.info("caller went away; reading Bedrock's answer to its end")

        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        await to_caller(start)
        with anyio.move_on_after(max(relay.deadline - time.monotonic(), 0)) as scope_:
            try:
                async for chunk in relay.chunks():
                    await to_caller({"type": "http.response.body", "body": chunk, "more_body": True})
            except ProxyError as exc:
                error = exc.type
                logger.warning("Bedrock's answer ended early", extra={"error_type": exc.type})
        if scope_.cancelled_caught:
            error = "ProxyDeadline"
            logger.warning("the call reached the proxy's deadline", extra={"error_type": error})
        with anyio.CancelScope(shield=True):
            await relay.end(error)
        if error is not None:
            # An answer cut short must not look complete: return without the closing chunk, so
            # the server drops the connection and the caller's client raises (its bytes so far
            # are Bedrock's; no made-up ending is added). The warning above names the cause.
            return
        await to_caller({"type": "http.response.body", "body": b"", "more_body": False})
