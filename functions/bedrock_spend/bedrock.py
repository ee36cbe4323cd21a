"""Bedrock Runtime adapter: one place that calls boto3 and turns its failures into domain errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from bedrock_spend.errors import (
    BEDROCK_ERROR_STATUS,
    BedrockError,
    BedrockTimeoutError,
    BedrockUnavailableError,
    ProxyError,
)
from bedrock_spend.settings import proxy_settings


@dataclass(frozen=True, slots=True)
class BedrockResponse:
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


@cache
def runtime_client() -> Any:
    import boto3
    from botocore.config import Config

    settings = proxy_settings()
    config = Config(
        connect_timeout=settings.bedrock_connect_timeout,
        read_timeout=settings.bedrock_read_timeout,
        # The caller's SDK owns retries: a retry here would spend API Gateway's 29 s twice.
        retries={"total_max_attempts": settings.bedrock_max_attempts, "mode": "standard"},
        max_pool_connections=10,
    )
    return boto3.session.Session().client("bedrock-runtime", region_name=settings.region, config=config)


def translate_error(exc: Exception) -> ProxyError:
    """A botocore failure as the domain error the caller will see."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        ConnectTimeoutError,
        EventStreamError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):  # includes EventStreamError (mid-stream errors)
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "InternalServerException")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(exc, EventStreamError) or not isinstance(status, int) or status < 400:
            status = BEDROCK_ERROR_STATUS.get(code, 500)
        message = str(error.get("Message") or code)
        return BedrockError(message, status=status, type=code)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return BedrockTimeoutError("Bedrock did not answer in time")
    if isinstance(exc, ConnectionError):
        return BedrockUnavailableError("Bedrock could not be reached")
    raise exc


def invoke_model(model_id: str, body: bytes, params: Mapping[str, str]) -> BedrockResponse:
    """InvokeModel. ``params`` are the optional InvokeModel members (contentType, accept, ...)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = runtime_client().invoke_model(modelId=model_id, body=body, **params)
        payload = response["body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc) from exc
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return BedrockResponse(
        body=payload,
        content_type=response.get("contentType") or "application/json",
        headers=headers,
    )
