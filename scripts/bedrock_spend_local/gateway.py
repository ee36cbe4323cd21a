"""API Gateway (REST API, Lambda proxy integration, TOKEN authorizer) over real HTTP.

:class:`ApiGateway` turns one HTTP request into what the deployed API would answer: it
routes it like API Gateway (unknown route -> 403 "Missing Authentication Token"), calls the
real authorizer with a TOKEN event and honours (and caches) its policy, builds the REST v1
proxy event, invokes the real proxy handler and turns its result back into HTTP, with the
template's gateway responses and the 10 MB / 6 MB payload limits. :class:`GatewayServer`
is the HTTP/1.1 server around it. docs/local.md lists each behaviour and its source.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from bedrock_spend_local.api import ACCOUNT_ID, ApiDefinition, GatewayResponse, Route
from bedrock_spend_local.http_server import TrackingHTTPServer
from bedrock_spend_local.runtime import (
    CallerTimeoutError,
    FunctionError,
    LambdaFunction,
    RequestTooLargeError,
)

logger = logging.getLogger(__name__)

# REST API payload quota: 10 MB. Above it the front door answers a plain-text 413 that
# gateway responses cannot change (observed on deployed APIs; see docs/local.md).
MAX_REQUEST_BODY = 10 * 1024 * 1024
TOO_LARGE_BODY = b"HTTP content length exceeded 10485760 bytes."
# Bodies above the limit are read and dropped (so the client sees the 413 instead of a
# reset connection) up to this size; beyond it the connection is closed.
MAX_DRAINED_BODY = 64 * 1024 * 1024
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
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "BadRequestException"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out", None),
    "AUTHORIZER_FAILURE": (500, None, "AuthorizerConfigurationException"),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, None, "AuthorizerConfigurationException"),
}
DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
# What API Gateway answers when the Lambda proxy integration fails (the function raised,
# timed out, or returned a malformed or oversized result): 502, not a gateway response.
INTERNAL_ERROR_BODY = b'{"message": "Internal server error"}'
# Response headers a Lambda proxy result cannot set; API Gateway renames them.
REMAPPED_RESPONSE_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "date",
        "server",
        "www-authenticate",
        "x-amzn-requestid",
    }
)
# Request headers that describe the hop, not the request, and so never reach the function.
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade", "content-length"}
)
CAPITALIZED_REQUEST_HEADERS = {"authorization": "Authorization", "user-agent": "User-Agent"}
# What a Lambda proxy result may hold; anything else makes it malformed (502).
PROXY_RESULT_KEYS = frozenset({"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"})
_CONTEXT_REF = re.compile(r"\$(!?)(?:\{(context(?:\.\w+)+)\}|(context(?:\.\w+)+))")


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str  # request-target as sent: path and query, still percent-encoded
    headers: list[tuple[str, str]]
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    port: int = 443

    def header(self, name: str) -> str | None:
        """The last value of a header (API Gateway's single-value ``headers`` keep the last)."""
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[-1] if found else None


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[-1] if found else None


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

    request: HttpRequest
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    extended_request_id: str = field(default_factory=lambda: _extended_request_id())
    trace_id: str = field(default_factory=lambda: _trace_id())
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    raw_path: str = "/"  # without the stage
    query: str = ""
    route: Route | None = None
    path_parameters: dict[str, str] = field(default_factory=dict)
    authorizer: dict[str, Any] | None = None


class ApiGateway:
    """The deployed REST API's behaviour for one stage, in front of in-process functions."""

    def __init__(
        self,
        api: ApiDefinition,
        functions: Mapping[str, LambdaFunction],
        *,
        region: str,
        api_id: str = "localapi01",
        authorizer_ttl: int | None = None,
        integration_timeout: float = DEFAULT_INTEGRATION_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.functions = functions
        self.region = region
        self.api_id = api_id
        self.stage = api.stage
        default_ttl = api.authorizer.ttl_seconds if api.authorizer else 0
        self.authorizer_ttl: int = default_ttl if authorizer_ttl is None else authorizer_ttl
        self.integration_timeout = integration_timeout
        self.cache = AuthorizerCache(clock)
        self.binary_media_types = api.binary_media_types

    # --- the request lifecycle ---------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        call = _Call(request)
        target = request.target
        split = urlsplit(target if target.startswith(("/", "http://", "https://")) else "/" + target)
        call.query = split.query
        prefix = f"/{self.stage}"
        if split.path != prefix and not split.path.startswith(prefix + "/"):
            return self._missing_token(call)
        call.raw_path = split.path[len(prefix) :] or "/"
        found = self.api.route_for(request.method.upper(), call.raw_path)
        if found is None:
            return self._missing_token(call)
        call.route, call.path_parameters = found
        if call.route.authorized and self.api.authorizer is not None:
            denied = self._authorize(call)
            if denied is not None:
                return denied
        return self._integrate(call)

    def _missing_token(self, call: _Call) -> HttpResponse:
        authorization = call.request.header("Authorization")
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
            f"{call.request.method.upper()}/{call.raw_path.lstrip('/')}"
        )

    def _authorize(self, call: _Call) -> HttpResponse | None:
        spec = self.api.authorizer
        assert spec is not None
        token = call.request.header(spec.identity_header)
        if token is None or not token.strip():
            return self.gateway_response("UNAUTHORIZED", call)  # the authorizer is not called
        method_arn = self.method_arn(call)
        latency = 0
        policy = self.cache.get(token) if self.authorizer_ttl > 0 else None
        if policy is None:
            event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
            started = time.monotonic()
            try:
                output = self.functions[spec.function].invoke(event, self.integration_timeout)
            except FunctionError as error:
                if error.message == "Unauthorized":
                    return self.gateway_response("UNAUTHORIZED", call)
                logger.warning("authorizer failed: %s: %s", error.error_type, error.message)
                return self.gateway_response("AUTHORIZER_FAILURE", call, message=None)
            except (CallerTimeoutError, RequestTooLargeError) as error:
                logger.warning("authorizer failed: %s", error)
                return self.gateway_response("AUTHORIZER_FAILURE", call, message=None)
            latency = int((time.monotonic() - started) * 1000)
            try:
                policy = parse_policy(output)
            except AuthorizerOutputError as error:
                logger.warning("authorizer returned an invalid policy: %s", error)
                return self.gateway_response("AUTHORIZER_CONFIGURATION_ERROR", call, message=None)
            if self.authorizer_ttl > 0:
                self.cache.put(token, policy, self.authorizer_ttl)
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

    def _integrate(self, call: _Call) -> HttpResponse:
        assert call.route is not None
        event = self.proxy_event(call)
        function = self.functions[call.route.function]
        try:
            result = function.invoke(event, self.integration_timeout)
        except RequestTooLargeError as error:
            logger.warning("%s: %s", function.name, error)
            return self.gateway_response("REQUEST_TOO_LARGE", call)
        except CallerTimeoutError:
            return self.gateway_response("INTEGRATION_TIMEOUT", call)
        except FunctionError as error:
            logger.warning("%s failed: %s: %s", function.name, error.error_type, error.message)
            return self._internal_error(call)
        response = self.proxy_response(result, call)
        return response if response is not None else self._internal_error(call)

    def _internal_error(self, call: _Call) -> HttpResponse:
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "InternalServerErrorException")]
        return HttpResponse(502, headers + self._gateway_headers(call), INTERNAL_ERROR_BODY)

    # --- REST v1 proxy event and result -----------------------------------------------------

    def proxy_event(self, call: _Call) -> dict[str, Any]:
        """The Lambda proxy integration's input event (payload format 1.0) for this request."""
        assert call.route is not None
        request = call.request
        headers = self._forwarded_headers(call)
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for name, value in headers:
            key = names.setdefault(name.lower(), name)
            single[key] = value
            multi.setdefault(key, []).append(value)
        query_single, query_multi = _query_parameters(call.query)
        body: str | None = None
        is_base64 = False
        if request.body:
            if self._is_binary(request.header("Content-Type")):
                body, is_base64 = base64.b64encode(request.body).decode("ascii"), True
            else:
                body = request.body.decode("utf-8", errors="replace")
        epoch_ms = int(call.started.timestamp() * 1000)
        host = request.header("Host") or f"{self.api_id}.execute-api.{self.region}.amazonaws.com"
        domain = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        context: dict[str, Any] = {
            "resourceId": hashlib.sha256(call.route.path.encode()).hexdigest()[:6],
            "resourcePath": call.route.path,
            "httpMethod": request.method.upper(),
            "extendedRequestId": call.extended_request_id,
            "requestTime": call.started.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{self.stage}{call.raw_path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": self.stage,
            "domainPrefix": domain.split(".")[0],
            "requestTimeEpoch": epoch_ms,
            "requestId": call.request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": request.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": request.header("User-Agent"),
                "user": None,
            },
            "domainName": domain,
            "apiId": self.api_id,
        }
        if call.authorizer is not None:
            context["authorizer"] = call.authorizer
        return {
            "resource": call.route.path,
            "path": call.raw_path,
            "httpMethod": request.method.upper(),
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": query_single,
            "multiValueQueryStringParameters": query_multi,
            # As received: REST APIs hand path and path parameters to Lambda still percent-encoded.
            "pathParameters": dict(call.path_parameters) or None,
            "stageVariables": None,
            "requestContext": context,
            "body": body,
            "isBase64Encoded": is_base64,
        }

    def _forwarded_headers(self, call: _Call) -> list[tuple[str, str]]:
        """The request's headers as the function sees them: per hop ones and the length dropped,
        the forwarding ones API Gateway sets, and two names capitalized as its front end does."""
        request = call.request
        forwarded_for = request.header("X-Forwarded-For")
        dropped = HOP_BY_HOP_HEADERS | {
            "x-forwarded-for",
            "x-forwarded-port",
            "x-forwarded-proto",
            "x-amzn-trace-id",
        }
        headers = [
            (CAPITALIZED_REQUEST_HEADERS.get(k.lower(), k), v)
            for k, v in request.headers
            if k.lower() not in dropped
        ]
        headers += [
            ("X-Amzn-Trace-Id", call.trace_id),
            (
                "X-Forwarded-For",
                f"{forwarded_for}, {request.source_ip}" if forwarded_for else request.source_ip,
            ),
            ("X-Forwarded-Port", str(request.port)),
            ("X-Forwarded-Proto", "http"),
        ]
        return headers

    def _is_binary(self, content_type: str | None) -> bool:
        if not content_type:
            return False
        media = content_type.split(";", 1)[0].strip().lower()
        return any(_media_matches(pattern.lower(), media) for pattern in self.binary_media_types)

    def proxy_response(self, result: Any, call: _Call) -> HttpResponse | None:
        """The HTTP response for a Lambda proxy result; None if API Gateway would call it malformed."""
        if not isinstance(result, dict) or not set(result) <= PROXY_RESULT_KEYS:
            return None
        status = result.get("statusCode", 200)
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            return None
        headers = _result_headers(result.get("headers"), result.get("multiValueHeaders"))
        body = result.get("body")
        if headers is None or not (body is None or isinstance(body, str)):
            return None
        payload = (body or "").encode()
        if result.get("isBase64Encoded") is True and body:
            accept = (call.request.header("Accept") or "").split(",", 1)[0]
            # Decoded only when the caller's first Accept type is a binary media type.
            if self._is_binary(accept):
                try:
                    payload = base64.b64decode(body, validate=True)
                except ValueError:
                    return None
        out: list[tuple[str, str]] = []
        for name, value in headers:
            if name.lower() in REMAPPED_RESPONSE_HEADERS:
                name = "x-amzn-Remapped-" + name
            out.append((name, value))
        if not any(name.lower() == "content-type" for name, _ in out):
            out.append(("Content-Type", "application/json"))
        return HttpResponse(status, out + self._gateway_headers(call), payload)

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
        request = call.request
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
            "context.httpMethod": request.method.upper(),
            "context.accountId": ACCOUNT_ID,
            "context.identity.sourceIp": request.source_ip,
            "context.identity.userAgent": request.header("User-Agent") or "",
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
            return call.request.header(expression.removeprefix("method.request.header."))
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


def _result_headers(headers: Any, multi: Any) -> list[tuple[str, str]] | None:
    """Merge ``multiValueHeaders`` and ``headers``; a pair given in both appears once.

    Values must be strings or booleans (API Gateway rejects numbers as malformed).
    """
    out: list[tuple[str, str]] = []
    if multi is not None:
        if not isinstance(multi, dict):
            return None
        for name, values in multi.items():
            if not isinstance(values, list) or not all(isinstance(v, str | bool) for v in values):
                return None
            out += [(str(name), _header_text(v)) for v in values]
    if headers is not None:
        if not isinstance(headers, dict) or not all(isinstance(v, str | bool) for v in headers.values()):
            return None
        seen = {(name.lower(), value) for name, value in out}
        for name, value in headers.items():
            if (str(name).lower(), _header_text(value)) not in seen:
                out.append((str(name), _header_text(value)))
    return out


def _header_text(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _media_matches(pattern: str, media: str) -> bool:
    if pattern == media or pattern == "*/*":
        return True
    if "/" not in pattern or "/" not in media:
        return False
    p_type, p_sub = pattern.split("/", 1)
    m_type, m_sub = media.split("/", 1)
    return p_type in ("*", m_type) and p_sub in ("*", m_sub)


def _extended_request_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(15)) + "="


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


# --- HTTP server ----------------------------------------------------------------------------------


class _BadRequestError(Exception):
    pass


class _Server(TrackingHTTPServer):
    name = "gateway"
    gateway: ApiGateway
    access_log: Callable[[str], None] | None

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds an idle keep-alive connection (or a stalled upload) is kept

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.track(self.connection, True)

    def finish(self) -> None:
        self._server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def handle_expect_100(self) -> bool:
        # Refuse an announced oversized upload before the client sends it.
        length = (self.headers.get("Content-Length") or "").strip()
        if length.isdigit() and int(length) > MAX_REQUEST_BODY:
            self.close_connection = True
            self._send(too_large_response())
            return False
        return super().handle_expect_100()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def __getattr__(self, name: str) -> Any:
        # Every method, known or not, goes through the gateway (unknown ones get its 403).
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        started = time.monotonic()
        try:
            body = self._read_body()
        except _BadRequestError:
            self.close_connection = True
            self._send(HttpResponse(400, [("Content-Type", "text/plain")], b"Bad Request"))
            return
        if body is None:
            response = too_large_response()
        else:
            port = cast(tuple[str, int], self.server.server_address)[1]
            request = HttpRequest(
                method=self.command,
                target=self.path,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                port=int(port),
            )
            try:
                response = self._server.gateway.handle(request)
            except Exception:
                logger.exception("the gateway emulation failed on %s %s", self.command, self.path)
                response = HttpResponse(500, [("Content-Type", "application/json")], INTERNAL_ERROR_BODY)
        self._send(response)
        if self._server.access_log is not None:
            elapsed = (time.monotonic() - started) * 1000
            self._server.access_log(
                f"{self.command} {urlsplit(self.path).path} {response.status} {elapsed:.0f} ms"
            )

    def _read_body(self) -> bytes | None:
        """The request body; None if it exceeds API Gateway's 10 MB (it is read and dropped)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len({v.strip() for v in lengths}) != 1 or not lengths[0].strip().isdigit():
            raise _BadRequestError
        length = int(lengths[0])
        if length > MAX_REQUEST_BODY:
            self._discard(length)
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadRequestError
        return body

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadRequestError from exc
            if length < 0:
                raise _BadRequestError
            if length == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts) if size <= MAX_REQUEST_BODY else None
            size += length
            if size > MAX_DRAINED_BODY:
                self.close_connection = True
                return None
            chunk = self.rfile.read(length)
            if len(chunk) != length:
                raise _BadRequestError
            if size <= MAX_REQUEST_BODY:
                parts.append(chunk)
            else:
                parts.clear()
            self.rfile.readline(1024)

    def _discard(self, length: int) -> None:
        if length > MAX_DRAINED_BODY:
            self.close_connection = True
            return
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    def _send(self, response: HttpResponse) -> None:
        try:
            self.send_response_only(response.status, _reason(response.status))
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Date", formatdate(usegmt=True))
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client hung up


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class GatewayServer:
    """The HTTP/1.1 server in front of an :class:`ApiGateway`.

    Binds in the constructor, so a taken port raises OSError before anything else starts.
    """

    def __init__(
        self,
        gateway: ApiGateway,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        self._server = _Server((host, port))
        self._server.gateway = gateway
        self._server.access_log = access_log
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="api-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()
