"""Bedrock Runtime adapter: one place that calls boto3 and turns its failures into domain errors.

Bedrock's answers are passed on as Bedrock sent them. botocore's documented
``before-parse.bedrock-runtime.<Operation>`` event hands over the raw HTTP body before
botocore parses it: the JSON bytes of Converse and CountTokens, the streaming body of
InvokeModel, and the open HTTP response of the two event-stream operations, whose frames
the proxy then reads itself (see :func:`open_stream`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from bedrock_spend import aws
from bedrock_spend.errors import (
    BEDROCK_ERROR_STATUS,
    BadRequestError,
    BedrockError,
    BedrockTimeoutError,
    BedrockUnavailableError,
    ProxyError,
)
from bedrock_spend.settings import proxy_settings

STREAM_OPERATIONS = frozenset({"InvokeModelWithResponseStream", "ConverseStream"})
RAW_OPERATIONS = ("InvokeModel", "Converse", "CountTokens", *sorted(STREAM_OPERATIONS))
# Where the before-parse hook leaves the raw body in botocore's parsed response.
RAW_BODY = "BedrockSpendRawBody"
READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class BedrockResponse:
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BedrockRequest:
    """One Bedrock Runtime operation: its boto3 parameters, ``modelId`` apart."""

    operation: str
    model_id: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BedrockStream:
    """An event stream Bedrock has started (HTTP 200): its headers and its raw bytes.

    Iterating ``chunks`` raises :class:`BedrockTimeoutError` once the stream outlives the
    read timeout, and :class:`BedrockUnavailableError` if the connection breaks.
    """

    headers: Mapping[str, str]
    chunks: Iterator[bytes]


@cache
def runtime_client() -> Any:
    from botocore.config import Config

    settings = proxy_settings()
    config = Config(
        region_name=settings.region,
        connect_timeout=settings.bedrock_connect_timeout,
        read_timeout=settings.bedrock_read_timeout,
        # The caller's SDK owns retries: a retry here would spend API Gateway's 29 s twice.
        retries={"total_max_attempts": settings.bedrock_max_attempts, "mode": "standard"},
        max_pool_connections=10,
    )
    client = aws.new_client("bedrock-runtime", config)
    for operation in RAW_OPERATIONS:
        client.meta.events.register(f"before-parse.bedrock-runtime.{operation}", _keep_raw_body)
    return client


def _keep_raw_body(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **kwargs: Any
) -> None:
    # botocore merges customized_response_dict into the parsed response.
    if response_dict.get("status_code", 500) < 300:
        customized_response_dict[RAW_BODY] = response_dict.get("body")


# --- requests as they arrive on Bedrock's own routes --------------------------------------------


def header_members(operation: str) -> dict[str, str]:
    """Lower-cased HTTP header name -> boto3 parameter, for every header member of ``operation``."""
    shape = _input_shape(operation)
    return {
        str(member.serialization["name"]).lower(): name
        for name, member in shape.members.items()
        if member.serialization.get("location") == "header"
    }


def params_from_json(operation: str, model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """boto3 parameters from a request body as an SDK sent it on the wire (rest-json).

    Blob members travel base64-encoded in JSON; boto3 wants bytes (it would encode a str
    again), so they are decoded here. The result is validated like boto3 would, so a bad
    request is refused before Bedrock is called.
    """
    shape = _input_shape(operation)
    params: dict[str, Any] = _from_wire(shape, dict(body), "")
    params["modelId"] = model_id
    validate(operation, params)
    return params


def validate(operation: str, params: Mapping[str, Any]) -> None:
    """BadRequestError naming the problem if boto3 would refuse ``params``."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    try:
        validate_parameters(params, _input_shape(operation))
    except ParamValidationError as exc:
        report = str(exc).replace("Parameter validation failed:\n", "").replace("\n", "; ")
        raise BadRequestError(f"invalid {operation} request: {report[:500]}") from exc


def _input_shape(operation: str) -> Any:
    return runtime_client().meta.service_model.operation_model(operation).input_shape


def _from_wire(shape: Any, value: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        # Unknown members stay as they are: validation names them.
        return {
            key: _from_wire(shape.members[key], item, f"{path}.{key}" if path else key)
            if key in shape.members
            else item
            for key, item in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [_from_wire(shape.member, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {key: _from_wire(shape.value, item, f"{path}.{key}") for key, item in value.items()}
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise BadRequestError(f"{path} must be base64-encoded bytes") from exc
    return value


# --- calls --------------------------------------------------------------------------------------


def translate_error(exc: Exception) -> ProxyError:
    """A botocore failure as the domain error the caller will see."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        ConnectTimeoutError,
        EventStreamError,
        HTTPClientError,
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
    if isinstance(exc, HTTPClientError):  # e.g. Bedrock closed the connection mid-answer
        return BedrockUnavailableError("the connection to Bedrock failed")
    raise exc


def _send(request: BedrockRequest) -> dict[str, Any]:
    from botocore import xform_name
    from botocore.exceptions import BotoCoreError, ClientError

    method = getattr(runtime_client(), xform_name(request.operation))
    try:
        return dict(method(modelId=request.model_id, **request.params))
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc) from exc


def call(request: BedrockRequest) -> BedrockResponse:
    """A non-streaming operation; the body exactly as Bedrock sent it."""
    from botocore.exceptions import BotoCoreError

    response = _send(request)
    raw: Any = response.get(RAW_BODY)
    try:
        payload = raw.read() if hasattr(raw, "read") else bytes(raw or b"")
    except BotoCoreError as exc:
        raise translate_error(exc) from exc
    headers = _headers(response)
    content_type = response.get("contentType") or headers.get("content-type") or "application/json"
    return BedrockResponse(body=payload, content_type=str(content_type), headers=headers)


def open_stream(request: BedrockRequest) -> BedrockStream:
    """Start an event-stream operation; its frames are read raw, as Bedrock sent them.

    A stream gets the same time as any other call: it must end within the read timeout,
    counted from the start of the call (API Gateway answers 504 at 29 s regardless).
    """
    read_timeout = proxy_settings().bedrock_read_timeout
    deadline = time.monotonic() + read_timeout
    response = _send(request)
    return BedrockStream(
        headers=_headers(response),
        chunks=_read_raw(response.get(RAW_BODY), deadline, read_timeout),
    )


def _headers(response: Mapping[str, Any]) -> dict[str, str]:
    return dict(response.get("ResponseMetadata", {}).get("HTTPHeaders", {}))


def _read_raw(raw: Any, deadline: float, read_timeout: float) -> Iterator[bytes]:
    from urllib3.exceptions import HTTPError, ReadTimeoutError

    if raw is None:
        raise BedrockUnavailableError("Bedrock's stream body is missing")
    read = getattr(raw, "read1", None) or raw.read
    finished = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BedrockTimeoutError(f"Bedrock's stream did not end within {read_timeout:g} s")
            _limit_wait(raw, min(remaining, read_timeout))
            try:
                data = read(READ_SIZE)
            except (ReadTimeoutError, TimeoutError) as exc:
                raise BedrockTimeoutError(f"Bedrock's stream did not end within {read_timeout:g} s") from exc
            except (HTTPError, OSError) as exc:
                raise BedrockUnavailableError("Bedrock's stream broke off") from exc
            if not data:
                finished = True
                return
            yield data
    finally:
        if not finished:
            raw.close()  # never hand a half-read connection back to the pool


def _limit_wait(raw: Any, seconds: float) -> None:
    """Bound the next socket wait, so a stalled stream ends at the deadline, not after it."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        # urllib3 resets the socket timeout when it reuses the connection.
        sock.settimeout(max(seconds, 0.001))
