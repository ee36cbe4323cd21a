"""The OpenAI- and Anthropic-compatible APIs Bedrock serves, as SDKs call them through the proxy.

Bedrock speaks these APIs itself, so the proxy translates nothing: it forwards each request to
Bedrock's own path on the right endpoint and meters the answer.

| Proxy path (after the stage) | Bedrock endpoint, path |
|---|---|
| ``/openai/v1/chat/completions``, ``/openai/v1/responses`` | bedrock-runtime, same path |
| ``/mantle/v1/chat/completions``, ``/mantle/v1/responses`` | bedrock-mantle, ``/v1/...`` |
| ``/mantle/anthropic/v1/messages`` (and ``/count_tokens``) | bedrock-mantle, ``/anthropic/v1/...`` |

The model is the body's ``model``. One change is made to a request: a streamed Chat
Completion that did not ask for usage gets ``stream_options.include_usage`` (Bedrock reports a
stream's usage only then), and the extra usage chunk is kept from the caller.

End users: these APIs let a caller name the person behind a request (OpenAI's
``safety_identifier`` and older ``user``; Anthropic's ``metadata.user_id``). The proxy reads
that name, as sent and without changing the body, into the ledger's ``EndUser``, so a team's
spend can be split by its own users (``bedrock-spend report --by end-user``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bedrock_spend.domain.errors import BadRequestError, NotFoundError
from bedrock_spend.transport import json_body
from bedrock_spend.transport.forwarding import Outbound
from bedrock_spend.transport.meters import Requested
from bedrock_spend.transport.native import BedrockCall

Endpoint = Literal["runtime", "mantle"]
Dialect = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Route:
    operation: str
    endpoint: Endpoint
    upstream_path: str


ROUTES: dict[str, Route] = {
    "/openai/v1/chat/completions": Route("ChatCompletions", "runtime", "/openai/v1/chat/completions"),
    "/openai/v1/responses": Route("Responses", "runtime", "/openai/v1/responses"),
    "/mantle/v1/chat/completions": Route("ChatCompletions", "mantle", "/v1/chat/completions"),
    "/mantle/v1/responses": Route("Responses", "mantle", "/v1/responses"),
    "/mantle/anthropic/v1/messages": Route("Messages", "mantle", "/anthropic/v1/messages"),
    # Free, like Bedrock Runtime's CountTokens: forwarded within the allow-list, not recorded.
    "/mantle/anthropic/v1/messages/count_tokens": Route(
        "CountTokens", "mantle", "/anthropic/v1/messages/count_tokens"
    ),
}
MODEL_LISTS: dict[str, tuple[Endpoint, str]] = {
    "/openai/v1/models": ("runtime", "/openai/v1/models"),
    "/mantle/v1/models": ("mantle", "/v1/models"),
}
# Request headers these APIs read besides the body (the Anthropic API's version and betas).
FORWARDED_HEADERS = frozenset({"content-type", "accept", "anthropic-version", "anthropic-beta"})


def dialect(path: str) -> Dialect:
    """Whose error shape a caller on ``path`` expects."""
    return "anthropic" if path.startswith("/mantle/anthropic/") else "openai"


def parse_request(path: str, headers: Mapping[str, str], body: bytes) -> BedrockCall:
    route = ROUTES.get(path)
    if route is None:
        raise not_found(path)
    data = json_body.parse_object(body, f"{route.operation} request body")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("field 'model' is required: the Bedrock model id to call")
    hide_usage = False
    if route.operation == "ChatCompletions" and data.get("stream") is True:
        options = data.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            body = json_body.dump(data)
            hide_usage = True
    end_user = _end_user(route.operation, data)
    forwarded = {name: value for name, value in headers.items() if name in FORWARDED_HEADERS}
    for name, value in forwarded.items():
        if not value.isascii() or not value.isprintable():
            raise BadRequestError(f"header {name!r} must be printable ASCII")
    forwarded["content-type"] = "application/json"
    return BedrockCall(
        operation=route.operation,
        model_id=model,
        outbound=Outbound("POST", route.upstream_path, forwarded, body),
        requested=Requested(body=body, service_tier=_str(data.get("service_tier"))),
        endpoint=route.endpoint,
        hide_stream_usage=hide_usage,
        end_user=end_user,
    )


def not_found(path: str) -> NotFoundError:
    served = ", ".join(sorted([*ROUTES, *MODEL_LISTS]))
    return NotFoundError(f"no route {path[:120]!r}; this proxy serves {served}")


MAX_END_USER_LENGTH = 256


def _end_user(operation: str, data: Mapping[str, Any]) -> str | None:
    """The end user the body names, if it is a printable string of at most 256 characters.

    Anything else is left to Bedrock to judge: the proxy records nothing rather than refuse.
    """
    if operation in ("Messages", "CountTokens"):
        metadata = data.get("metadata")
        value = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    else:
        value = _str(data.get("safety_identifier")) or data.get("user")
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_END_USER_LENGTH and value.isprintable() else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
