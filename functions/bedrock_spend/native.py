"""Bedrock Runtime's own routes, as unmodified AWS SDKs call them through the proxy.

``POST /model/{modelId}/{action}``: the last path segment names the operation, the rest is
the model id, percent-encoded by the SDK (``:`` as ``%3A``, an ARN's ``/`` as ``%2F``) and
still encoded when API Gateway hands the path over. It is decoded exactly once; anything
still encoded after that is refused by :func:`~bedrock_spend.model_ids.parse_model_id`.

InvokeModel parameters travel in headers and are passed on as the boto3 parameters they
stand for; the body is passed on byte for byte. Converse, ConverseStream and CountTokens
bodies are JSON and become boto3 parameters. Either way the caller's principal and key id
are added to the request metadata (:mod:`bedrock_spend.request_metadata`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from bedrock_spend import bedrock, request_metadata
from bedrock_spend.bedrock import BedrockRequest
from bedrock_spend.errors import BadRequestError, NotFoundError
from bedrock_spend.usage_record import Caller

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
_PREFIX = "/model/"


def parse_request(
    path: str, headers: Mapping[str, str], body: bytes | None, caller: Caller
) -> BedrockRequest:
    """The Bedrock call a request on a native route asks for. ``headers`` have lower-case names."""
    operation, model_id = parse_path(path)
    if operation in INVOKE_OPERATIONS:
        params = _invoke_params(operation, model_id, headers, body or b"", caller)
    else:
        params = _json_params(operation, model_id, body, caller)
    return BedrockRequest(operation=operation, model_id=model_id, params=params)


def parse_path(path: str) -> tuple[str, str]:
    """(operation, model id decoded once) from ``/model/<model id>/<action>``."""
    start = path.find(_PREFIX)
    target = path[start + len(_PREFIX) :] if start >= 0 else ""
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


def _invoke_params(
    operation: str, model_id: str, headers: Mapping[str, str], body: bytes, caller: Caller
) -> dict[str, Any]:
    members = bedrock.header_members(operation)
    params: dict[str, Any] = {"body": body}
    for name, value in headers.items():
        if name in members and name != METADATA_HEADER:
            params[members[name]] = value
        elif name.startswith(BEDROCK_HEADER_PREFIX) and name != METADATA_HEADER:
            # Dropping it silently could skip a guardrail or misattribute a project.
            raise BadRequestError(f"header {name!r} is not a {operation} parameter this proxy knows")
    params["requestMetadata"] = request_metadata.merged_header(headers.get(METADATA_HEADER), caller)
    bedrock.validate(operation, {"modelId": model_id, **params})
    return params


def _json_params(operation: str, model_id: str, body: bytes | None, caller: Caller) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise BadRequestError(f"request body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise BadRequestError(f"{operation} request body must be a JSON object")
    if "modelId" in data:
        raise BadRequestError("modelId belongs in the path, not in the body")
    if operation in CONVERSE_OPERATIONS:
        data["requestMetadata"] = request_metadata.merged(data.get("requestMetadata"), caller)
    params = bedrock.params_from_json(operation, model_id, data)
    del params["modelId"]
    return params
