"""API Gateway REST proxy event <-> domain values, in one place."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aws_lambda_powertools.event_handler import Response

from bedrock_spend.bedrock import BedrockResponse
from bedrock_spend.errors import BadRequestError, ProxyError, UnauthorizedError
from bedrock_spend.metering import RequestContext
from bedrock_spend.usage_record import Caller

# Bedrock response headers passed back: SDKs and humans read the request id, the token
# counts, the tier served and, on streams, the model's content type.
PASSED_HEADER_PREFIX = "x-amzn-bedrock-"
PASSED_HEADERS = frozenset({"x-amzn-requestid"})


def body_bytes(event: dict[str, Any]) -> bytes | None:
    """The raw request body; BadRequestError if API Gateway's base64 is corrupt."""
    body = event.get("body")
    if body is None:
        return None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise BadRequestError("request body is not valid base64") from exc
    return body.encode() if isinstance(body, str) else bytes(body)


def headers_from_event(event: dict[str, Any]) -> dict[str, str]:
    """Request headers with lower-case names (HTTP names are case-insensitive)."""
    headers = event.get("headers") or {}
    return {str(name).lower(): str(value) for name, value in headers.items() if value is not None}


def caller_from_event(event: dict[str, Any]) -> Caller:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    principal = authorizer.get("principalId")
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
    return Caller(
        principal_id=str(principal),
        key_id=str(authorizer.get("keyId") or ""),
        username=str(authorizer.get("username") or ""),
        team=str(authorizer.get("team") or ""),
        allowed_models=tuple(p for p in allowed.split(",") if p),
        monthly_budget_usd=budget,
    )


def context_from_event(event: dict[str, Any]) -> RequestContext:
    request_context = event.get("requestContext") or {}
    epoch_ms = request_context.get("requestTimeEpoch")
    when = (
        datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC)
        if isinstance(epoch_ms, int | str) and str(epoch_ms).isdigit()
        else datetime.now(UTC)
    )
    return RequestContext(request_id=str(request_context.get("requestId") or ""), requested_at=when)


def model_response(response: BedrockResponse, status: int = 200) -> Response[Any]:
    headers = {
        name: value
        for name, value in ((str(k).lower(), str(v)) for k, v in response.headers.items())
        if name in PASSED_HEADERS or name.startswith(PASSED_HEADER_PREFIX)
    }
    # Text when it is UTF-8 (event streams are made so): API Gateway decodes a base64 body
    # only for callers whose Accept header names a binary media type, and SDKs send none.
    text = _utf8(response.body)
    if text is not None:
        return Response(status_code=status, content_type=response.content_type, body=text, headers=headers)
    # Bytes travel base64-encoded; API Gateway decodes them (binary media types).
    return Response(
        status_code=status, content_type=response.content_type, body=response.body, headers=headers
    )


def _utf8(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def error_response(error: ProxyError) -> Response[str]:
    return Response(
        status_code=error.status,
        content_type="application/json",
        body=error.to_json(),
        headers={"x-amzn-errortype": error.type},
    )
