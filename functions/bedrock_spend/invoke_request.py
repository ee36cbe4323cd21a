"""The `POST /invoke-model` request: `{"modelId": str, "body": object, ...InvokeModel options}`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bedrock_spend.errors import BadRequestError

# Optional InvokeModel members accepted by the API, with the values Bedrock accepts
# (reference §1). None means "any non-empty string".
_ENUMS: dict[str, tuple[str, ...] | None] = {
    "contentType": ("application/json",),
    "accept": None,
    "trace": ("ENABLED", "DISABLED", "ENABLED_FULL"),
    "guardrailIdentifier": None,
    "guardrailVersion": None,
    "performanceConfigLatency": ("standard", "optimized"),
    "serviceTier": ("priority", "default", "flex", "reserved"),
}
_GUARDRAIL_VERSION = re.compile(r"(?:[1-9][0-9]{0,7}|DRAFT)")
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


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def parse_invoke_request(raw: str | bytes | None) -> InvokeRequest:
    if raw is None or not raw.strip():
        raise BadRequestError("request body is empty; expected a JSON object with modelId and body")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise BadRequestError(f"request body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise BadRequestError(f"request body must be a JSON object, got {_type_name(data)}")
    unknown = sorted(set(data) - {"modelId", "body", *_ENUMS})
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(repr(name)[:80] for name in unknown[:5])}")
    model_id = data.get("modelId")
    if model_id is None:
        raise BadRequestError("field 'modelId' is required")
    if not isinstance(model_id, str) or not model_id:
        raise BadRequestError(f"field 'modelId' must be a non-empty string, got {_type_name(model_id)}")
    if "body" not in data:
        raise BadRequestError("field 'body' is required")
    if not isinstance(data["body"], dict):
        raise BadRequestError(f"field 'body' must be a JSON object, got {_type_name(data['body'])}")
    options: dict[str, str] = {}
    for name, allowed in _ENUMS.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, str) or not value or len(value) > MAX_OPTION_LENGTH:
            raise BadRequestError(f"field {name!r} must be a non-empty string, got {_type_name(value)}")
        if allowed is not None and value not in allowed:
            raise BadRequestError(f"field {name!r} must be one of {', '.join(allowed)}")
        options[name] = value
    if "guardrailVersion" in options and not _GUARDRAIL_VERSION.fullmatch(options["guardrailVersion"]):
        raise BadRequestError("field 'guardrailVersion' must be 1-99999999 or DRAFT")
    if ("guardrailIdentifier" in options) != ("guardrailVersion" in options):
        raise BadRequestError("fields 'guardrailIdentifier' and 'guardrailVersion' go together")
    body = json.dumps(data["body"], separators=(",", ":"), ensure_ascii=False).encode()
    return InvokeRequest(model_id=model_id, body=body, options=options)
