"""API Gateway in front of the proxy's ASGI app: a REST API stage, its Lambda authorizers and a
Lambda proxy integration in STREAM mode, reached the way the Lambda Web Adapter (LWA) calls
the app.

:class:`ApiGateway` is an ASGI app. For each request it does what the deployed API does: the
10 MB request limit, the stage prefix, routing (unknown route -> 403 "Missing Authentication
Token"), the real authorizer with a TOKEN or REQUEST event (its policy honoured and cached by
identity sources, as the route's authorizer says), the template's
gateway responses; then it builds the REST ``requestContext`` and calls the app as LWA does:
the path as sent (percent-encoding kept, stage not included), the query, the caller's headers,
and ``x-amzn-request-context`` / ``x-amzn-lambda-context`` inserted, replacing any the caller
sent. Response messages go to the client as the app sends them. docs/local.md lists each
behaviour and its source.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

from bedrock_spend_local.api import ACCOUNT_ID, ApiDefinition, AuthorizerSpec, GatewayResponse, Route

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Runs the authorizer function on an event; raises FunctionError or TimeoutError.
Authorize = Callable[[dict[str, Any]], Awaitable[Any]]

# REST API payload quota: 10 MB. Above it the front door answers a plain-text 413 that
# gateway responses cannot change (observed on deployed APIs; see docs/local.md).
MAX_REQUEST_BODY = 10 * 1024 * 1024
TOO_LARGE_BODY = b"HTTP content length exceeded 10485760 bytes."
# Bodies above the limit are read and dropped (so the client sees the 413 instead of a
# reset connection) up to this size; beyond it the connection is closed.
MAX_DRAINED_BODY = 64 * 1024 * 1024
# In STREAM mode the integration timeout bounds the wait for the response to start;
# the stream itself may then run on (up to the function's own timeout).
DEFAULT_INTEGRATION_TIMEOUT = 29.0

# Built-in gateway responses: status, $context.error.message, default x-amzn-ErrorType.
DEFAULT_GATEWAY_RESPONSES: dict[str, tuple[int, str | None, str | None]] = {
    "UNAUTHORIZED": (401, "Unauthorized", "UnauthorizedException"),
    "ACCESS_DENIED": (403, "User is not authorized to access this resource", "AccessDeniedException"),
    "MISSING_AUTHENTICATION_TOKEN": (
        403,
        "Missing Authentication Token",
        "MissingAuthenticationTokenException",
    ),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out", None),
    "AUTHORIZER_FAILURE": (500, None, "AuthorizerConfigurationException"),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, None, "AuthorizerConfigurationException"),
}
DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
# What API Gateway answers when the integration fails before the response starts.
INTERNAL_ERROR_BODY = b'{"message": "Internal server error"}'
# Response headers a Lambda proxy result cannot set; API Gateway renames them.
REMAPPED_RESPONSE_HEADERS = frozenset(
    {"authorization", "connection", "date", "server", "www-authenticate", "x-amzn-requestid"}
)
# Request headers that describe the hop, not the request, and so never reach the app.
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade", "content-length"}
)
# What API Gateway sets itself (the caller's values are replaced) ...
GATEWAY_REQUEST_HEADERS = frozenset(
    {"x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-amzn-trace-id"}
)
# ... and what LWA inserts (HeaderMap::insert: every caller-sent value of the name is replaced).
LWA_REQUEST_HEADERS = frozenset({"x-amzn-request-context", "x-amzn-lambda-context"})
_CONTEXT_REF = re.compile(r"\$(!?)(?:\{(context(?:\.\w+)+)\}|(context(?:\.\w+)+))")


class FunctionError(Exception):
    """A function failed: it raised or returned something Lambda cannot send."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(slots=True)
class HttpResponse:
    """A response the gateway answers itself (gateway responses, 413, 502)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def too_large_response() -> HttpResponse:
    return HttpResponse(413, [("Content-Type", "text; charset=utf-8")], TOO_LARGE_BODY)


@dataclass(frozen=True, slots=True)
class Policy:
    """An authorizer's validated output."""

    principal_id: str
    statements: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # (effect, actions, resources)
    context: Mapping[str, str]

    def decide(self, method_arn: str) -> str:
        """ "allow", "deny" (an explicit Deny matches) or "none" (nothing allows it)."""
        matching = [
            effect
            for effect, actions, resources in self.statements
            if any(_glob(a.lower(), "execute-api:invoke") for a in actions)
            and any(_glob(r, method_arn) for r in resources)
        ]
        if "Deny" in matching:
            return "deny"
        return "allow" if "Allow" in matching else "none"


class AuthorizerOutputError(ValueError):
    pass


def parse_policy(output: Any) -> Policy:
    """Validate a TOKEN authorizer's result the way API Gateway does; AuthorizerOutputError if not."""
    if not isinstance(output, dict):
        raise AuthorizerOutputError("authorizer result is not an object")
    principal = output.get("principalId")
    if not isinstance(principal, str) or not principal:
        raise AuthorizerOutputError("principalId is missing")
    document = output.get("policyDocument")
    if not isinstance(document, dict):
        raise AuthorizerOutputError("policyDocument is missing")
    raw_statements = document.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise AuthorizerOutputError("policyDocument has no Statement")
    statements = []
    for statement in raw_statements:
        if not isinstance(statement, dict) or statement.get("Effect") not in ("Allow", "Deny"):
            raise AuthorizerOutputError("a statement has no Effect of Allow or Deny")
        actions, resources = _strings(statement.get("Action")), _strings(statement.get("Resource"))
        if actions is None or resources is None:
            raise AuthorizerOutputError("a statement has no Action or Resource")
        statements.append((str(statement["Effect"]), actions, resources))
    raw_context = output.get("context") or {}
    if not isinstance(raw_context, dict):
        raise AuthorizerOutputError("context is not an object")
    context: dict[str, str] = {}
    for key, value in raw_context.items():
        # Context values must be strings, numbers or booleans; the backend sees them as strings.
        if isinstance(value, bool):
            context[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            context[str(key)] = str(value)
        elif value is not None:
            raise AuthorizerOutputError(f"context value for {key!r} is an object or array")
    return Policy(principal, tuple(statements), context)


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _glob(pattern: str, value: str) -> bool:
    """IAM wildcard match: ``*`` any run of characters (``/`` included), ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


class AuthorizerCache:
    """Policies by token for the authorizer's TTL, as API Gateway caches them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[Policy, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Policy | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if self._clock() >= entry[1]:
                del self._entries[token]
                return None
            return entry[0]

    def put(self, token: str, policy: Policy, ttl: float) -> None:
        with self._lock:
            self._entries[token] = (policy, self._clock() + ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(slots=True)
class _Call:
    """What one request carries through the gateway."""

    method: str
    raw_path: str  # as sent, percent-encoded, without the stage
    query: str
    headers: list[tuple[str, str]]
    source_ip: str
    port: int
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    extended_request_id: str = field(default_factory=lambda: _extended_request_id())
    trace_id: str = field(default_factory=lambda: _trace_id())
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    route: Route | None = None
    path_parameters: dict[str, str] = field(default_factory=dict)
    authorizer: dict[str, Any] | None = None

    def header(self, name: str) -> str | None:
        """The last value of a header (API Gateway's single-value ``headers`` keep the last)."""
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[-1] if found else None


class _ClientGoneError(Exception):
    pass


class ApiGateway:
    """The deployed REST API's behaviour for one stage, in front of the proxy's ASGI app."""

    def __init__(
        self,
        api: ApiDefinition,
        app: AsgiApp,
        authorize: Authorize,
        *,
        region: str,
        api_id: str = "localapi01",
        authorizer_ttl: int | None = None,
        integration_timeout: float | None = None,
        remove_base_path: str | None = None,
        function_name: str = "bedrock-spend-local-ProxyFunction",
        function_timeout: float = 30.0,
        function_memory_mb: int = 128,
        clock: Callable[[], float] = time.monotonic,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.app = app
        self.authorize = authorize
        self.region = region
        self.api_id = api_id
        self.stage = api.stage
        default_ttl = api.authorizer.ttl_seconds if api.authorizer else 0
        self.authorizer_ttl: int = default_ttl if authorizer_ttl is None else authorizer_ttl
        self.integration_timeout = integration_timeout
        self.remove_base_path = remove_base_path or None
        self.function_name = function_name
        self.function_timeout = function_timeout
        self.function_memory_mb = function_memory_mb
        self.cache = AuthorizerCache(clock)
        self.access_log = access_log

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan: the app's own
            return
        started = time.monotonic()
        target = cast(bytes, scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        client = scope.get("client") or ("127.0.0.1", 0)
        server = scope.get("server") or ("127.0.0.1", 443)
        call = _Call(
            method=scope["method"].upper(),
            raw_path=target.split("?", 1)[0],
            query=cast(bytes, scope.get("query_string", b"")).decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            source_ip=client[0],
            port=server[1] or 443,
        )
        status = 0
        try:
            status = await self._serve(call, scope, receive, send)
        except _ClientGoneError:
            status = 499
        finally:
            if self.access_log is not None:
                elapsed = (time.monotonic() - started) * 1000
                self.access_log(f"{call.method} {target.split('?', 1)[0]} {status} {elapsed:.0f} ms")

    async def _serve(self, call: _Call, scope: Scope, receive: Receive, send: Send) -> int:
        body = await _read_body(receive)
        if body is None:
            return await _answer(send, too_large_response())
        prefix = f"/{self.stage}"
        if call.raw_path != prefix and not call.raw_path.startswith(prefix + "/"):
            return await _answer(send, self._missing_token(call))
        call.raw_path = call.raw_path[len(prefix) :] or "/"
        found = self.api.route_for(call.method, call.raw_path)
        if found is None:
            return await _answer(send, self._missing_token(call))
        call.route, call.path_parameters = found
        spec = self.api.authorizer_for(call.route)
        if spec is not None:
            denied = await self._authorize(call, spec)
            if denied is not None:
                return await _answer(send, denied)
        return await self._integrate(call, body, scope, receive, send)

    def _missing_token(self, call: _Call) -> HttpResponse:
        authorization = call.header("Authorization")
        if authorization and authorization.strip():
            # An unknown route is an IAM-authorized one to API Gateway: it tries to read the
            # header as a SigV4 signature and fails on a bearer token.
            digest = base64.b64encode(hashlib.sha256(authorization.encode()).digest()).decode()
            message = (
                "Invalid key=value pair (missing equal-sign) in Authorization header "
                f"(hashed with SHA-256 and encoded with Base64): '{digest}'."
            )
            return self.gateway_response(
                "MISSING_AUTHENTICATION_TOKEN",
                call,
                message=message,
                error_type="IncompleteSignatureException",
            )
        return self.gateway_response("MISSING_AUTHENTICATION_TOKEN", call)

    def method_arn(self, call: _Call) -> str:
        return (
            f"arn:aws:execute-api:{self.region}:{ACCOUNT_ID}:{self.api_id}/{self.stage}/"
            f"{call.method}/{call.raw_path.lstrip('/')}"
        )

    async def _authorize(self, call: _Call, spec: AuthorizerSpec) -> HttpResponse | None:
        identity = [call.header(name) for name in spec.identity_headers]
        if any(value is None or not value.strip() for value in identity):
            return self.gateway_response("UNAUTHORIZED", call)  # the authorizer is not called
        method_arn = self.method_arn(call)
        latency = 0
        # --authorizer-ttl overrides the default authorizer's TTL, as AuthorizerCacheTtl does.
        ttl = self.authorizer_ttl if spec == self.api.authorizer else spec.ttl_seconds
        cache_key = "\0".join([spec.name, *(value or "" for value in identity)])
        policy = self.cache.get(cache_key) if ttl > 0 else None
        if policy is None:
            event = (
                {"type": "TOKEN", "authorizationToken": identity[0], "methodArn": method_arn}
                if spec.payload_type == "TOKEN"
                else self.request_authorizer_event(call, method_arn)
            )
            started = time.monotonic()
            try:
                output = await self.authorize(event)
            except FunctionError as error:
                if error.message == "Unauthorized":
                    return self.gateway_response("UNAUTHORIZED", call)
                logger.warning("authorizer failed: %s: %s", error.error_type, error.message)
                return self.gateway_response("AUTHORIZER_FAILURE", call, message=None)
            except TimeoutError:
                logger.warning("authorizer timed out")
                return self.gateway_response("AUTHORIZER_FAILURE", call, message=None)
            latency = int((time.monotonic() - started) * 1000)
            try:
                policy = parse_policy(output)
            except AuthorizerOutputError as error:
                logger.warning("authorizer returned an invalid policy: %s", error)
                return self.gateway_response("AUTHORIZER_CONFIGURATION_ERROR", call, message=None)
            if ttl > 0:
                self.cache.put(cache_key, policy, ttl)
        decision = policy.decide(method_arn)
        if decision == "deny":
            return self.gateway_response(
                "ACCESS_DENIED",
                call,
                message="User is not authorized to access this resource with an explicit deny",
            )
        if decision == "none":
            return self.gateway_response("ACCESS_DENIED", call)
        call.authorizer = {
            "principalId": policy.principal_id,
            **policy.context,
            "integrationLatency": latency,
        }
        return None

    # --- the integration: the app, called as LWA calls it --------------------------------------

    def timeout_for(self, call: _Call) -> float:
        """The route's integration timeout from the template, unless one is set for all routes."""
        if self.integration_timeout is not None:
            return self.integration_timeout
        return call.route.timeout if call.route is not None else DEFAULT_INTEGRATION_TIMEOUT

    async def _integrate(self, call: _Call, body: bytes, scope: Scope, receive: Receive, send: Send) -> int:
        delivered = False
        started = asyncio.Event()
        status = 0

        async def app_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the body is read: this waits for the client to leave

        async def app_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": self._response_headers(message.get("headers") or (), call)}
                started.set()
            await send(message)  # as it comes: no buffering

        task = asyncio.ensure_future(self.app(self.app_scope(call, body, scope), app_receive, app_send))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=self.timeout_for(call), return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        if not started.is_set():
            if not task.done():
                task.cancel()
                return await _answer(send, self.gateway_response("INTEGRATION_TIMEOUT", call))
            if task.exception() is not None:
                logger.error("the proxy app failed", exc_info=task.exception())
            return await _answer(send, self._internal_error(call))
        try:
            await task
        except Exception:
            # Logged once, not raised: in Lambda the stream just ends (truncated if it had not).
            logger.exception("the proxy app raised after its response started")
        return status

    def app_scope(self, call: _Call, body: bytes, scope: Scope) -> Scope:
        """The ASGI scope of the request LWA sends the app (http://127.0.0.1:8080 in Lambda)."""
        path = call.raw_path
        if self.remove_base_path:
            while self.remove_base_path and path.startswith(self.remove_base_path):
                path = path[len(self.remove_base_path) :]  # Rust's trim_start_matches
        headers = [
            (name.lower(), value)
            for name, value in self._forwarded_headers(call)
            if name.lower() not in LWA_REQUEST_HEADERS
        ]
        headers.append(("content-length", str(len(body))))
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        # serde_json writes non-ASCII as UTF-8 (no \u escapes), and the header carries those bytes.
        raw_headers += [
            (name.encode(), json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            for name, value in (
                ("x-amzn-request-context", self.request_context(call)),
                ("x-amzn-lambda-context", self.lambda_context(call)),
            )
        ]
        app_scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": call.method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": call.query.encode("latin-1"),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 8080),
        }
        if "state" in scope:
            app_scope["state"] = scope["state"]
        return app_scope

    def request_authorizer_event(self, call: _Call, method_arn: str) -> dict[str, Any]:
        """A REQUEST authorizer's input for a REST API (AWS docs: "Input to an API Gateway
        Lambda authorizer"): the request's headers, query and path parameters."""
        assert call.route is not None
        headers: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in call.headers:
            headers[name] = value
            multi.setdefault(name, []).append(value)
        query = parse_qsl(call.query, keep_blank_values=True)
        return {
            "type": "REQUEST",
            "methodArn": method_arn,
            "resource": call.route.path,
            "path": call.raw_path,
            "httpMethod": call.method,
            "headers": headers,
            "multiValueHeaders": multi,
            "queryStringParameters": dict(query) or None,
            "multiValueQueryStringParameters": {k: [v for n, v in query if n == k] for k, _ in query} or None,
            "pathParameters": call.path_parameters or None,
            "stageVariables": None,
            "requestContext": self.request_context(call),
        }

    def request_context(self, call: _Call) -> dict[str, Any]:
        """The REST proxy event's ``requestContext`` (what LWA puts in x-amzn-request-context)."""
        assert call.route is not None
        host = call.header("Host") or f"{self.api_id}.execute-api.{self.region}.amazonaws.com"
        domain = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        context: dict[str, Any] = {
            "resourceId": hashlib.sha256(call.route.path.encode()).hexdigest()[:6],
            "resourcePath": call.route.path,
            "httpMethod": call.method,
            "extendedRequestId": call.extended_request_id,
            "requestTime": call.started.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{self.stage}{call.raw_path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": self.stage,
            "domainPrefix": domain.split(".")[0],
            "requestTimeEpoch": int(call.started.timestamp() * 1000),
            "requestId": call.request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": call.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": call.header("User-Agent"),
                "user": None,
            },
            "domainName": domain,
            "apiId": self.api_id,
        }
        if call.authorizer is not None:
            context["authorizer"] = call.authorizer
        return context

    def lambda_context(self, call: _Call) -> dict[str, Any]:
        """lambda_runtime's ``Context`` as LWA serializes it into x-amzn-lambda-context."""
        deadline = int((time.time() + self.function_timeout) * 1000)
        arn = f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"
        return {
            "request_id": str(uuid.uuid4()),
            "deadline": deadline,
            "invoked_function_arn": arn,
            "xray_trace_id": call.trace_id,
            "client_context": None,
            "identity": None,
            "env_config": {
                "function_name": self.function_name,
                "memory": self.function_memory_mb,
                "version": "$LATEST",
                "log_stream": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
                "log_group": f"/aws/lambda/{self.function_name}",
            },
        }

    def _forwarded_headers(self, call: _Call) -> list[tuple[str, str]]:
        """The caller's headers as API Gateway forwards them: per-hop ones dropped, and the
        forwarding ones it sets itself."""
        forwarded_for = call.header("X-Forwarded-For")
        dropped = HOP_BY_HOP_HEADERS | GATEWAY_REQUEST_HEADERS
        headers = [(k, v) for k, v in call.headers if k.lower() not in dropped]
        headers += [
            ("X-Amzn-Trace-Id", call.trace_id),
            ("X-Forwarded-For", f"{forwarded_for}, {call.source_ip}" if forwarded_for else call.source_ip),
            ("X-Forwarded-Port", str(call.port)),
            ("X-Forwarded-Proto", "https"),
        ]
        return headers

    def _response_headers(self, raw: Any, call: _Call) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for name, value in raw:
            lower = bytes(name).lower()
            if lower == b"transfer-encoding":
                continue  # LWA drops it
            if lower.decode("latin-1") in REMAPPED_RESPONSE_HEADERS:
                name = b"x-amzn-Remapped-" + bytes(name)
            out.append((bytes(name), bytes(value)))
        if not any(name.lower() == b"content-type" for name, _ in out):
            out.append((b"content-type", b"application/json"))
        return out + [(k.encode(), v.encode()) for k, v in self._gateway_headers(call)]

    def _internal_error(self, call: _Call) -> HttpResponse:
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "InternalServerErrorException")]
        return HttpResponse(502, headers + self._gateway_headers(call), INTERNAL_ERROR_BODY)

    def _gateway_headers(self, call: _Call) -> list[tuple[str, str]]:
        return [
            ("x-amzn-RequestId", call.request_id),
            ("x-amz-apigw-id", call.extended_request_id),
            ("X-Amzn-Trace-Id", call.trace_id),
        ]

    # --- gateway responses --------------------------------------------------------------------

    def gateway_response(
        self,
        kind: str,
        call: _Call,
        *,
        message: str | object | None = ...,
        error_type: str | None = None,
    ) -> HttpResponse:
        """A gateway response of ``kind``, customized by the template's GatewayResponses."""
        status, default_message, default_error_type = DEFAULT_GATEWAY_RESPONSES[kind]
        text = default_message if message is ... else cast(str | None, message)
        fallback = self.api.gateway_responses.get("DEFAULT_4XX" if status < 500 else "DEFAULT_5XX")
        specific = self.api.gateway_responses.get(kind)
        headers: dict[str, str] = {}
        for custom in (fallback, specific):
            if custom is not None:
                headers.update(custom.headers)
        template, content_type = self._template(specific, fallback)
        values = self._context_values(call, kind, text)
        body = _render(template, values)
        out = [("Content-Type", content_type)]
        out += [
            (name, v) for name, expr in headers.items() if (v := self._mapped(expr, call, values)) is not None
        ]
        errortype = error_type or default_error_type
        if errortype and not any(name.lower() == "x-amzn-errortype" for name, _ in out):
            out.append(("x-amzn-ErrorType", errortype))
        final_status = specific.status if specific is not None and specific.status else status
        return HttpResponse(final_status, out + self._gateway_headers(call), body.encode())

    @staticmethod
    def _template(specific: GatewayResponse | None, fallback: GatewayResponse | None) -> tuple[str, str]:
        for custom in (specific, fallback):
            if custom is not None and custom.templates:
                if "application/json" in custom.templates:
                    return custom.templates["application/json"], "application/json"
                content_type, template = next(iter(custom.templates.items()))
                return template, content_type
        return DEFAULT_TEMPLATE, "application/json"

    def _context_values(self, call: _Call, kind: str, message: str | None) -> dict[str, str]:
        values = {
            "context.error.message": message if message is not None else "",
            # messageString is the message as a JSON string literal (quotes included), or null.
            "context.error.messageString": json.dumps(message),
            "context.error.responseType": kind,
            "context.requestId": call.request_id,
            "context.extendedRequestId": call.extended_request_id,
            "context.apiId": self.api_id,
            "context.stage": self.stage,
            "context.path": f"/{self.stage}{call.raw_path}",
            "context.resourcePath": call.route.path if call.route else "",
            "context.httpMethod": call.method,
            "context.accountId": ACCOUNT_ID,
            "context.identity.sourceIp": call.source_ip,
            "context.identity.userAgent": call.header("User-Agent") or "",
            "context.requestTimeEpoch": str(int(call.started.timestamp() * 1000)),
        }
        for key, value in (call.authorizer or {}).items():
            values[f"context.authorizer.{key}"] = str(value)
        return values

    @staticmethod
    def _mapped(expression: str, call: _Call, values: Mapping[str, str]) -> str | None:
        """A gateway response header value: a 'static' string or a request/context value."""
        expression = expression.strip()
        if len(expression) >= 2 and expression[0] == expression[-1] == "'":
            return expression[1:-1]
        if expression.startswith("method.request.header."):
            return call.header(expression.removeprefix("method.request.header."))
        if expression.startswith("method.request.querystring."):
            single, _ = _query_parameters(call.query)
            return (single or {}).get(expression.removeprefix("method.request.querystring."))
        if expression.startswith("method.request.path."):
            return call.path_parameters.get(expression.removeprefix("method.request.path."))
        return values.get(expression)


def _render(template: str, values: Mapping[str, str]) -> str:
    """The subset of VTL gateway response templates use: ``$context.*`` references.

    An unknown reference renders as written (VTL's rule); ``$!ref`` renders as empty.
    """

    def replace(match: re.Match[str]) -> str:
        quiet, name = match.group(1), match.group(2) or match.group(3)
        if name in values:
            return values[name]
        return "" if quiet else match.group(0)

    return _CONTEXT_REF.sub(replace, template)


def _query_parameters(query: str) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    if not query:
        return None, None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        single[name] = value
        multi.setdefault(name, []).append(value)
    return (single or None), (multi or None)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (API Gateway buffers requests); None above the 10 MB quota."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_REQUEST_BODY:
            parts.append(chunk)
        if not message.get("more_body") or size > MAX_DRAINED_BODY:
            break
    return b"".join(parts) if size <= MAX_REQUEST_BODY else None


async def _answer(send: Send, response: HttpResponse) -> int:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
    return response.status


def _extended_request_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(15)) + "="


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"
