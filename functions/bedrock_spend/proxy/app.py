"""Proxy Lambda: API Gateway REST routes -> metering -> Bedrock, the model's answer unchanged.

``/invoke-model`` is this API's own JSON route; ``/model/{modelId}/<action>`` are Bedrock
Runtime's paths (InvokeModel, Converse, both streams, CountTokens) for unmodified AWS SDKs.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from bedrock_spend import metering, native
from bedrock_spend.errors import NotFoundError, ProxyError
from bedrock_spend.invoke_request import parse_invoke_request
from bedrock_spend.proxy.http import (
    body_bytes,
    caller_from_event,
    context_from_event,
    error_response,
    headers_from_event,
    model_response,
)

logger = Logger()
app = APIGatewayRestResolver()


@app.post("/invoke-model")
def invoke_model() -> Response[Any]:
    event = app.current_event.raw_event
    request = parse_invoke_request(body_bytes(event))
    response = metering.invoke(request, caller_from_event(event), context_from_event(event))
    return model_response(response)


# Bedrock Runtime's own paths, so AWS SDKs work unchanged. A regex, not <modelId>: ARN model
# ids hold "/" once decoded; native.parse_request splits the operation off the last segment.
@app.post("/model/.+")
def bedrock_operation() -> Response[Any]:
    event = app.current_event.raw_event
    caller = caller_from_event(event)
    request = native.parse_request(
        str(event.get("path") or ""), headers_from_event(event), body_bytes(event), caller
    )
    return model_response(metering.call(request, caller, context_from_event(event)))


@app.exception_handler(ProxyError)  # type: ignore[untyped-decorator]
def handle_proxy_error(error: ProxyError) -> Response[str]:
    if error.status >= 500:
        logger.warning("request failed", extra={"error_type": error.type, "status": error.status})
    return error_response(error)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def handle_unexpected(error: Exception) -> Response[str]:
    logger.exception("unexpected error")
    return error_response(ProxyError("internal error; see the proxy's logs"))


@app.not_found
def handle_not_found(error: Exception) -> Response[str]:
    return error_response(
        NotFoundError(f"no route for {app.current_event.http_method} {app.current_event.path}")
    )


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
