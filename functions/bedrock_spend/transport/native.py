"""Bedrock Runtime's own routes, as unmodified AWS SDKs call them through the proxy.

``POST /model/{modelId}/{action}``: the last path segment names the operation, the rest is
the model id, percent-encoded by the SDK (``:`` as ``%3A``, an ARN's ``/`` as ``%2F``). It is
decoded exactly once; anything still encoded after that is refused by
:func:`~bedrock_spend.domain.model_ids.parse_model_id`. The request is forwarded as it came: the
body byte for byte and every Bedrock header, so members Bedrock adds later work without an
upgrade. The one change is the caller's principal and key id merged into the request
metadata (:mod:`bedrock_spend.transport.request_metadata`), so Bedrock's invocation logs name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote, unquote

from bedrock_spend.domain.errors import BadRequestError, NotFoundError
from bedrock_spend.domain.usage_record import Caller
from bedrock_spend.transport import json_body, request_metadata
from bedrock_spend.transport.forwarding import Outbound
from bedrock_spend.transport.meters import Requested

ACTIONS: dict[str, str] = {
    "invoke": "InvokeModel",
    "converse": "Converse",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "converse-stream": "ConverseStream",
    "count-tokens": "CountTokens",
}
INVOKE_OPERATIONS = frozenset({"InvokeModel", "InvokeModelWithResponseStream"})
CONVERSE_OPERATIONS = frozenset({"Converse", "ConverseStream"})
BEDROCK_HEADER_PREFIX = "x-amzn-bedrock-"
METADATA_HEADER = "x-amzn-bedrock-request-metadata"
SERVICE_TIER_HEADER = "x-amzn-bedrock-service-tier"
LATENCY_HEADER = "x-amzn-bedrock-performanceconfig-latency"
# Caller headers Bedrock reads besides its own x-amzn-bedrock-* ones.
FORWARDED_HEADERS = frozenset({"content-type", "accept"})
_PREFIX = "/model/"


@dataclass(frozen=True, slots=True)
class BedrockCall:
    """One Bedrock Runtime operation, ready to forward."""

    operation: str
    model_id: str
    outbound: Outbound
    requested: Requested
    # Which Bedrock endpoint serves it: bedrock-runtime, or bedrock-mantle (compat.py).
    endpoint: str = "runtime"
    # A streamed Chat Completion whose usage chunk the proxy asked for, not the caller.
    hide_stream_usage: bool = False
    # The caller's own end user, as the request names it (compat.py): recorded, never sent.
    end_user: str | None = None


def parse_path(raw_path: str) -> tuple[str, str]:
    """(operation, model id decoded once) from ``/model/<model id>/<action>``."""
    start = raw_path.find(_PREFIX)
    target = raw_path[start + len(_PREFIX) :] if start >= 0 else ""
    encoded_model, _, action = target.rpartition("/")
    operation = ACTIONS.get(action)
    if operation is None:
        raise NotFoundError(
            f"unknown Bedrock Runtime operation {action[:80]!r}; this proxy serves "
            f"/model/{{modelId}}/{{{'|'.join(ACTIONS)}}}"
        )
    if not encoded_model:
        raise BadRequestError("the path has no model id: expected /model/{modelId}/" + action)
    return operation, unquote(encoded_model)


def model_path(model_id: str, action: str) -> str:
    """The path as botocore writes it: the model id with only ``-._~`` left unescaped."""
    return f"{_PREFIX}{quote(model_id, safe='-._~')}/{action}"


def parse_request(raw_path: str, headers: Mapping[str, str], body: bytes, caller: Caller) -> BedrockCall:
    """The call a request on a native route asks for. ``headers`` have lower-case names."""
    operation, model_id = parse_path(raw_path)
    action = raw_path.rsplit("/", 1)[-1]
    if operation in INVOKE_OPERATIONS:
        return invoke_call(operation, model_id, headers, body, caller)
    data = json_body.parse_object(body or b"{}", f"{operation} request body")
    if "modelId" in data:
        raise BadRequestError("modelId belongs in the path, not in the body")
    if operation in CONVERSE_OPERATIONS:
        data["requestMetadata"] = request_metadata.merged(data.get("requestMetadata"), caller)
        body = json_body.dump(data)
    outbound = Outbound("POST", model_path(model_id, action), {"content-type": "application/json"}, body)
    requested = Requested(
        body=body,
        service_tier=_member(data, "serviceTier", "type"),
        latency=_member(data, "performanceConfig", "latency"),
    )
    return BedrockCall(operation, model_id, outbound, requested)


def invoke_call(
    operation: str, model_id: str, headers: Mapping[str, str], body: bytes, caller: Caller
) -> BedrockCall:
    """InvokeModel or its stream: the model-native body as it is, parameters in headers."""
    if _is_json(headers.get("content-type")):
        json_body.parse_object(body, f"{operation} request body")  # every model takes a JSON object
    forwarded = {
        name: value
        for name, value in headers.items()
        if name in FORWARDED_HEADERS or (name.startswith(BEDROCK_HEADER_PREFIX) and name != METADATA_HEADER)
    }
    for name, value in forwarded.items():
        if not value.isascii() or not value.isprintable():
            raise BadRequestError(f"header {name!r} must be printable ASCII")
    forwarded.setdefault("content-type", "application/json")
    forwarded[METADATA_HEADER] = request_metadata.merged_header(headers.get(METADATA_HEADER), caller)
    action = "invoke" if operation == "InvokeModel" else "invoke-with-response-stream"
    requested = Requested(
        body=body, service_tier=headers.get(SERVICE_TIER_HEADER), latency=headers.get(LATENCY_HEADER)
    )
    return BedrockCall(
        operation, model_id, Outbound("POST", model_path(model_id, action), forwarded, body), requested
    )


def _is_json(content_type: str | None) -> bool:
    return content_type is None or content_type.split(";", 1)[0].strip().lower() in ("", "application/json")


def _member(obj: Mapping[str, Any], outer: str, inner: str) -> str | None:
    value = obj.get(outer)
    inner_value = value.get(inner) if isinstance(value, Mapping) else None
    return inner_value if isinstance(inner_value, str) and inner_value else None


@dataclass(frozen=True, slots=True)
class HeaderMember:
    """An InvokeModel parameter that travels as an HTTP header, as botocore's model defines it."""

    header: str  # lower-case
    enum: tuple[str, ...] = ()
    pattern: str | None = None


@cache
def invoke_header_members() -> dict[str, HeaderMember]:
    """InvokeModel's header members by boto3 name, read from botocore's service model."""
    import botocore.session

    model: Any = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("InvokeModel").input_shape
    return {
        name: HeaderMember(
            header=str(member.serialization["name"]).lower(),
            enum=tuple(getattr(member, "enum", None) or ()),
            pattern=member.metadata.get("pattern"),
        )
        for name, member in shape.members.items()
        if member.serialization.get("location") == "header"
    }
