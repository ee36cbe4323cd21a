"""The `POST /invoke-model` request: `{"modelId": str, "body": object, ...InvokeModel options}`.

The options are InvokeModel's header members under their boto3 names (``trace``,
``serviceTier``, ``guardrailIdentifier``, ...). Which members exist and which values an enum
takes are read from botocore's service model, never copied; the request then travels to
Bedrock as the native InvokeModel call with those headers (:func:`to_call`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from bedrock_spend.domain.errors import BadRequestError
from bedrock_spend.domain.usage_record import Caller
from bedrock_spend.transport import json_body, native

# Set by the proxy from the caller's key, never by the caller.
_OURS = frozenset({"requestMetadata"})
# Bedrock accepts only JSON bodies here, and this route's body is a JSON object.
_CONTENT_TYPES = ("application/json",)
MAX_OPTION_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class InvokeRequest:
    model_id: str
    body: bytes
    options: dict[str, str] = field(default_factory=dict)

    @property
    def service_tier(self) -> str | None:
        return self.options.get("serviceTier")

    @property
    def latency(self) -> str | None:
        return self.options.get("performanceConfigLatency")


@cache
def _options() -> dict[str, native.HeaderMember]:
    """The options this route takes: InvokeModel's header members but the proxy's own."""
    return {name: m for name, m in native.invoke_header_members().items() if name not in _OURS}


@cache
def _pattern(name: str) -> re.Pattern[str] | None:
    pattern = _options()[name].pattern
    return re.compile(pattern) if pattern else None


def parse_invoke_request(raw: str | bytes | None) -> InvokeRequest:
    data = json_body.parse_object(raw, "request body")
    options_allowed = _options()
    unknown = sorted(set(data) - {"modelId", "body", *options_allowed})
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(repr(name)[:80] for name in unknown[:5])}")
    model_id = data.get("modelId")
    if model_id is None:
        raise BadRequestError("field 'modelId' is required")
    if not isinstance(model_id, str) or not model_id:
        raise BadRequestError(
            f"field 'modelId' must be a non-empty string, got {json_body.type_name(model_id)}"
        )
    if "body" not in data:
        raise BadRequestError("field 'body' is required")
    if not isinstance(data["body"], dict):
        raise BadRequestError(f"field 'body' must be a JSON object, got {json_body.type_name(data['body'])}")
    options: dict[str, str] = {}
    for name, member in options_allowed.items():
        if name not in data:
            continue
        allowed = _CONTENT_TYPES if name == "contentType" else (member.enum or None)
        value = data[name]
        if not isinstance(value, str) or not value or len(value) > MAX_OPTION_LENGTH:
            raise BadRequestError(
                f"field {name!r} must be a non-empty string, got {json_body.type_name(value)}"
            )
        if allowed is not None and value not in allowed:
            raise BadRequestError(f"field {name!r} must be one of {', '.join(allowed)}")
        pattern = _pattern(name) if name.startswith("guardrail") else None
        if pattern is not None and not pattern.fullmatch(value):
            raise BadRequestError(f"field {name!r} is not a valid {name} ({pattern.pattern})")
        options[name] = value
    if ("guardrailIdentifier" in options) != ("guardrailVersion" in options):
        raise BadRequestError("fields 'guardrailIdentifier' and 'guardrailVersion' go together")
    return InvokeRequest(model_id=model_id, body=json_body.dump(data["body"]), options=options)


def to_call(request: InvokeRequest, caller: Caller) -> native.BedrockCall:
    """The native InvokeModel call this request stands for: options become their headers."""
    members = native.invoke_header_members()
    headers = {members[name].header: value for name, value in request.options.items()}
    return native.invoke_call("InvokeModel", request.model_id, headers, request.body, caller)
