"""Proxy: an ASGI app that relays Bedrock's answers as they stream and meters every call.

In Lambda it runs under uvicorn behind the AWS Lambda Web Adapter (``run.sh``), which turns
API Gateway's streaming invocations into HTTP requests; ``make run`` serves the same app.
``/invoke-model`` is this API's own JSON route; ``/model/{modelId}/<action>`` are Bedrock
Runtime's paths (InvokeModel, Converse, both streams, CountTokens) for unmodified AWS SDKs;
``/async-invoke`` is its async API for video models (StartAsyncInvoke, GetAsyncInvoke).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bedrock_spend import metering
from bedrock_spend.domain.errors import NotFoundError, ProxyError
from bedrock_spend.metering import Collaborators
from bedrock_spend.proxy.http import (
    RelayResponse,
    caller_from,
    context_from,
    error_response,
    request_context,
)
from bedrock_spend.settings import proxy_settings
from bedrock_spend.transport import async_invoke, compat, native
from bedrock_spend.transport.forwarding import Outbound
from bedrock_spend.transport.invoke_request import parse_invoke_request, to_call

logger = Logger(service="bedrock-spend-proxy")


def create_app(collaborators: Callable[[], Collaborators] | None = None) -> Starlette:
    """The proxy app; ``collaborators`` builds its dependencies once, on the first request."""
    build = collaborators or (lambda: metering.default_collaborators(proxy_settings()))
    built: list[Collaborators] = []

    def deps() -> Collaborators:
        if not built:
            built.append(build())
        return built[0]

    async def forward(request: Request, call: native.BedrockCall) -> Response:
        context = request_context(request.headers)
        relay = await metering.call(deps(), call, caller_from(context), context_from(context))
        return RelayResponse(relay)

    async def invoke_model(request: Request) -> Response:
        caller = caller_from(request_context(request.headers))
        return await forward(request, to_call(parse_invoke_request(await request.body()), caller))

    async def bedrock_operation(request: Request) -> Response:
        caller = caller_from(request_context(request.headers))
        # The raw path: an ARN model id's "/" arrives as %2F and must not split the path.
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        headers = {name.lower(): value for name, value in request.headers.items()}
        return await forward(request, native.parse_request(raw_path, headers, await request.body(), caller))

    async def start_async_invoke(request: Request) -> Response:
        if request.method == "GET":
            raise async_invoke.ListingRefusedError(async_invoke.LISTING_REFUSED)
        buckets = deps().settings.async_output_buckets
        return await forward(request, async_invoke.parse_start(await request.body(), buckets))

    async def get_async_invoke(request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        outbound = Outbound("GET", async_invoke.status_path(raw_path))
        return RelayResponse(await metering.forward_free(deps(), "runtime", outbound))

    async def compat_operation(request: Request) -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        call = compat.parse_request(request.url.path, headers, await request.body())
        return await forward(request, call)

    async def model_list(request: Request) -> Response:
        context = request_context(request.headers)
        endpoint, path = compat.MODEL_LISTS[request.url.path]
        status, headers, body = await metering.list_models(deps(), endpoint, path, caller_from(context))
        return Response(body, status_code=status, headers=headers)

    def errors_for(request: Request) -> str:
        path = request.url.path
        return compat.dialect(path) if path.startswith(("/openai/", "/mantle/")) else "bedrock"

    async def on_proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        if exc.status >= 500:
            logger.warning("request failed", extra={"error_type": exc.type, "status": exc.status})
        return error_response(exc, errors_for(request))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            error: ProxyError = NotFoundError(f"no route for {request.method} {request.url.path}")
        else:
            error = ProxyError(str(exc.detail), status=exc.status_code, type="MethodNotAllowed")
        return error_response(error, errors_for(request))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error")
        return error_response(ProxyError("internal error; see the proxy's logs"), errors_for(request))

    return Starlette(
        routes=[
            Route("/invoke-model", invoke_model, methods=["POST"]),
            Route("/model/{target:path}", bedrock_operation, methods=["POST"]),
            Route(async_invoke.PATH, start_async_invoke, methods=["POST", "GET"]),
            Route(async_invoke.PATH + "/{arn:path}", get_async_invoke, methods=["GET"]),
            *(Route(path, compat_operation, methods=["POST"]) for path in compat.ROUTES),
            *(Route(path, model_list, methods=["GET"]) for path in compat.MODEL_LISTS),
        ],
        exception_handlers={
            ProxyError: on_proxy_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )


def prime() -> None:
    """Load what every first request needs, so a SnapStart snapshot holds it already.

    Only data and code: credentials and connections are made after restore, never frozen
    into a snapshot that many environments resume from.
    """
    import botocore.auth
    import botocore.eventstream  # noqa: F401

    from bedrock_spend import aws
    from bedrock_spend.domain.prices import load_price_book

    load_price_book()
    aws.prime()  # boto3's DynamoDB serializers
    native.invoke_header_members()


def _register_priming() -> None:
    try:  # present in Lambda's Python runtimes (3.12+), where SnapStart runs the hook once
        from snapshot_restore_py import register_before_snapshot  # type: ignore[import-not-found]
    except ImportError:
        return
    register_before_snapshot(prime)


app: Any = create_app()
_register_priming()
