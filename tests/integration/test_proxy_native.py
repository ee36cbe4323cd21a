"""Bedrock Runtime's own routes (/model/{modelId}/...) through the real proxy app, the
Bedrock emulator and moto: path decoding, the signed pass-through (requests forwarded as they
came, answers relayed as Bedrock's exact bytes, errors included), metering of Converse and
streams (mid-stream errors too), CountTokens and request metadata."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest

from tests import proxy_client
from tests.conftest import USAGE_TABLE, load_event
from tests.helpers import (
    BedrockTraffic,
    chunk_payloads,
    claude_body,
    header,
    spy_on_bedrock,
    stream_messages,
    usage_records,
)

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
# Priced for cache reads and both cache-write TTLs (per 1M tokens, regional).
CACHING = "anthropic.claude-haiku-4-5-20251001-v1:0"
CACHE_WRITE_5M, CACHE_WRITE_1H, CACHE_READ = Decimal("1.375"), Decimal("2.2"), Decimal("0.11")
PRINCIPAL, KEY_ID = "User::alice", "kid_0a1b2c3d4e5f"
pytestmark = pytest.mark.usefixtures("proxy_env")
# One second apart, so ledger items (sorted by time) come back in call order.
_REQUEST_TIMES = itertools.count(1795947362000, 1000)


def encoded(model_id: str) -> str:
    """The model id as botocore puts it in the path (only -._~ left unescaped)."""
    return quote(model_id, safe="")


def native_event(
    model_path: str,
    action: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    event: str = "native_invoke",
    **authorizer: str,
) -> dict[str, Any]:
    """The event API Gateway delivers for POST /model/<model_path>/<action>."""
    ev = load_event(event)
    path = f"/model/{model_path}/{action}"
    ev["path"] = path
    ev["pathParameters"] = {"proxy": path.removeprefix("/model/")}
    ev["requestContext"]["path"] = "/v1" + path
    ev["requestContext"]["requestId"] = str(uuid.uuid4())
    ev["requestContext"]["requestTimeEpoch"] = next(_REQUEST_TIMES)
    ev["requestContext"]["authorizer"].update(authorizer)
    if body is not None:
        ev["body"] = body if isinstance(body, str) else json.dumps(body)
    ev["headers"].update(headers or {})
    return ev


def native(model_path: str, action: str, body: Any = None, **kw: Any) -> dict[str, Any]:
    """Call the proxy as API Gateway would for POST /model/<model_path>/<action>."""
    return proxy_client.invoke(native_event(model_path, action, body, **kw))


def converse(model_id: str, body: dict[str, Any], action: str = "converse", **kw: Any) -> dict[str, Any]:
    return native(encoded(model_id), action, body, event="converse", **kw)


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert body["message"] == body["error"]["message"]
    assert header(response, "x-amzn-errortype") == body["error"]["type"]
    return dict(body["error"])


def ledger_items(dynamodb: Any) -> list[dict[str, Any]]:
    return usage_records(dynamodb.scan(TableName=USAGE_TABLE)["Items"])


# Emulator tally field -> ledger attribute.
TOKEN_FIELDS = {
    "input_tokens": "InputTokens",
    "output_tokens": "OutputTokens",
    "cache_read_tokens": "CacheReadTokens",
    "cache_write_5m_tokens": "CacheWrite5mTokens",
    "cache_write_1h_tokens": "CacheWrite1hTokens",
}


def tokens(item: dict[str, Any]) -> dict[str, int]:
    return {key: int(item[name]["N"]) for key, name in TOKEN_FIELDS.items()}


def billed_tokens(billed: dict[str, Any]) -> dict[str, int]:
    return {key: billed[key] for key in TOKEN_FIELDS}


def stream_bytes(response: dict[str, Any]) -> bytes:
    assert response["statusCode"] == 200, response["body"]
    assert header(response, "Content-Type") == "application/vnd.amazon.eventstream"
    return bytes(response["raw"])


def messages_of(data: bytes) -> list[Any]:
    """The stream's messages, checking it ends on a message boundary (not cut short)."""
    messages, left = stream_messages(data)
    assert left == 0, f"{left} bytes of an incomplete message at the end of the stream"
    return messages


def chunk_text(messages: list[Any]) -> str:
    return "".join(
        chunk.get("delta", {}).get("text", "") or chunk.get("generation", "")
        for chunk in chunk_payloads(messages)
    )


@pytest.fixture
def bedrock_traffic(monkeypatch: pytest.MonkeyPatch) -> BedrockTraffic:
    """The proxy's requests to Bedrock and every body byte it read from Bedrock."""
    return spy_on_bedrock(monkeypatch)


# --- routing and model ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "body"),
    [
        (HAIKU, claude_body()),
        ("us.anthropic.claude-3-haiku-20240307-v1:0", claude_body()),
        (NOVA, {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}),
        (LLAMA, {"prompt": "hello there", "max_gen_len": 20}),
        ("amazon.titan-embed-text-v2:0", {"inputText": "hello world"}),
        ("arn:aws:bedrock:us-east-1::foundation-model/" + HAIKU, claude_body()),
        (
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
            claude_body(),
        ),
    ],
)
def test_invoke_decodes_the_model_id_once_and_records_the_call(
    model_id: str, body: dict[str, Any], emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = native(encoded(model_id), "invoke", body)
    assert response["statusCode"] == 200, response["body"]
    # Sent on with the model id encoded as botocore encodes it (what SigV4 signs).
    [request] = bedrock_traffic.requests
    assert request.url.raw_path == f"/model/{quote(model_id, safe='-._~')}/invoke".encode()
    [billed] = emulator.billed()
    assert billed["model_id"] == model_id
    assert billed["operation"] == "InvokeModel"
    [item] = ledger_items(dynamodb)
    assert item["ModelId"]["S"] == model_id
    assert item["Operation"]["S"] == "InvokeModel"
    assert tokens(item) == billed_tokens(billed)


def test_a_path_api_gateway_already_decoded_is_served(emulator: Any) -> None:
    arn = "arn:aws:bedrock:us-east-1::foundation-model/" + HAIKU
    response = native(arn, "invoke", claude_body())
    assert response["statusCode"] == 200, response["body"]
    assert emulator.billed()[0]["model_id"] == arn


def test_a_double_encoded_model_id_is_refused_before_bedrock(emulator: Any, dynamodb: Any) -> None:
    response = native(quote(encoded(HAIKU), safe=""), "invoke", claude_body())
    assert response["statusCode"] == 400
    error = error_of(response)
    assert error["type"] == "ValidationException"
    assert "percent-encoded" in error["message"]
    assert emulator.billed() == []
    assert ledger_items(dynamodb) == []


def test_unknown_operation_is_a_404_naming_it(emulator: Any) -> None:
    response = native(encoded(HAIKU), "invoke-async", claude_body())
    assert response["statusCode"] == 404
    error = error_of(response)
    assert error["type"] == "NotFound"
    assert "'invoke-async'" in error["message"]
    assert emulator.billed() == []


def test_bedrock_errors_are_relayed_unchanged(emulator: Any, bedrock_traffic: BedrockTraffic) -> None:
    emulator.fault("ThrottlingException")
    response = converse(HAIKU, load_converse_body())
    assert response["statusCode"] == 429
    # Bedrock's own error answer, byte for byte: {"message": ...} and its namespaced type.
    assert response["raw"] == b"".join(bedrock_traffic.received)
    assert json.loads(response["body"]) == {"message": "Emulated ThrottlingException"}
    assert header(response, "x-amzn-errortype") == (
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert header(response, "Content-Type") == "application/json"


def test_allow_list_refuses_before_bedrock(emulator: Any) -> None:
    response = native(encoded(HAIKU), "invoke-with-response-stream", claude_body(), allowedModels=NOVA)
    assert response["statusCode"] == 403
    assert error_of(response)["type"] == "ModelNotAllowed"
    assert emulator.billed() == []


# --- InvokeModel pass-through ---------------------------------------------------------------


def test_invoke_parameters_in_headers_reach_bedrock(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    headers = {
        "X-Amzn-Bedrock-Trace": "ENABLED_FULL",
        "X-Amzn-Bedrock-GuardrailIdentifier": "gr-abc123",
        "X-Amzn-Bedrock-GuardrailVersion": "3",
        "X-Amzn-Bedrock-Service-Tier": "flex",
        "X-Amzn-Bedrock-PerformanceConfig-Latency": "optimized",
        "Accept": "application/json",
    }
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hello"}]}]})
    response = native(encoded("amazon.nova-pro-v1:0"), "invoke", body, headers=headers)
    assert response["statusCode"] == 200, response["body"]
    [request] = bedrock_traffic.requests
    for name, value in headers.items():
        assert request.headers[name] == value
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")  # signed by the proxy
    assert request.content == body.encode()  # byte for byte
    # Bedrock reports the tier it served; that is passed back and priced.
    assert header(response, "x-amzn-bedrock-service-tier") == "flex"
    [item] = ledger_items(dynamodb)
    assert item["ServiceTier"]["S"] == "flex"
    assert item["Latency"]["S"] == "optimized"


def test_invoke_answer_keeps_bedrock_headers_and_body(emulator: Any) -> None:
    response = native(encoded(HAIKU), "invoke", claude_body())
    [billed] = emulator.billed()
    assert header(response, "x-amzn-requestid") == billed["request_id"]
    assert header(response, "x-amzn-bedrock-input-token-count") == str(billed["input_tokens"])
    assert header(response, "Content-Type") == "application/json"
    assert json.loads(response["body"])["usage"]["output_tokens"] == billed["output_tokens"]


def test_unknown_bedrock_headers_are_forwarded(emulator: Any, bedrock_traffic: BedrockTraffic) -> None:
    # A parameter Bedrock adds later works through the proxy without an upgrade.
    headers = {"X-Amzn-Bedrock-Some-Future-Option": "on", "X-Not-For-Bedrock": "dropped"}
    response = native(encoded(HAIKU), "invoke", claude_body(), headers=headers)
    assert response["statusCode"] == 200, response["body"]
    [request] = bedrock_traffic.requests
    assert request.headers["x-amzn-bedrock-some-future-option"] == "on"
    assert "x-not-for-bedrock" not in request.headers
    assert "x-amzn-request-context" not in request.headers  # the caller's identity stays here
    assert len(emulator.billed()) == 1


def test_invoke_answer_body_is_bedrocks_bytes(emulator: Any, bedrock_traffic: BedrockTraffic) -> None:
    response = native(encoded(LLAMA), "invoke", {"prompt": "hello there", "max_gen_len": 20})
    assert response["statusCode"] == 200, response["body"]
    assert response["raw"] == b"".join(bedrock_traffic.received)
    assert json.loads(response["raw"])["generation_token_count"] == emulator.billed()[0]["output_tokens"]


# --- Converse ---------------------------------------------------------------------------------


def load_converse_body() -> dict[str, Any]:
    return dict(json.loads(load_event("converse")["body"]))


def cached_converse_body() -> dict[str, Any]:
    return {
        "system": [
            {"text": "You answer in one short sentence. " * 20},
            {"cachePoint": {"type": "default", "ttl": "1h"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Here is a long document to keep in cache. " * 30},
                    {"cachePoint": {"type": "default"}},
                    {"text": "What is it about?"},
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 300},
    }


def test_converse_returns_bedrocks_body_unchanged_and_records_usage(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = converse(HAIKU, load_converse_body())
    assert response["statusCode"] == 200, response["body"]
    assert response["raw"] == b"".join(bedrock_traffic.received)
    [billed] = emulator.billed()
    assert json.loads(response["body"])["usage"]["inputTokens"] == billed["input_tokens"]
    [item] = ledger_items(dynamodb)
    assert item["Operation"]["S"] == "Converse"
    assert item["UsageSource"]["S"] == "converse"
    assert tokens(item) == billed_tokens(billed)
    assert item["Priced"]["BOOL"] is True


def test_converse_cache_writes_then_reads_are_recorded_and_priced_exactly(
    emulator: Any, dynamodb: Any
) -> None:
    first = converse(CACHING, cached_converse_body())
    second = converse(CACHING, cached_converse_body())
    assert first["statusCode"] == second["statusCode"] == 200
    write, read = emulator.billed()
    assert write["cache_write_1h_tokens"] > 0 and write["cache_write_5m_tokens"] > 0
    assert read["cache_read_tokens"] == write["cache_write_1h_tokens"] + write["cache_write_5m_tokens"]
    usage = json.loads(first["body"])["usage"]
    assert {d["ttl"] for d in usage["cacheDetails"]} == {"5m", "1h"}
    items = ledger_items(dynamodb)
    assert [tokens(item) for item in items] == [billed_tokens(write), billed_tokens(read)]
    assert all(item["Priced"]["BOOL"] for item in items)
    # micro-USD per token = USD per 1M tokens; each TTL at its own price.
    assert Decimal(items[0]["CacheWriteCostMicroUsd"]["N"]) == (
        write["cache_write_5m_tokens"] * CACHE_WRITE_5M + write["cache_write_1h_tokens"] * CACHE_WRITE_1H
    )
    assert Decimal(items[1]["CacheReadCostMicroUsd"]["N"]) == read["cache_read_tokens"] * CACHE_READ


def test_converse_blobs_reach_bedrock_unchanged(emulator: Any, bedrock_traffic: BedrockTraffic) -> None:
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode()
    body = load_converse_body()
    body["messages"][0]["content"].append({"image": {"format": "png", "source": {"bytes": image}}})
    response = converse(HAIKU, body)
    assert response["statusCode"] == 200, response["body"]
    sent_body = json.loads(bedrock_traffic.requests[0].content)
    assert sent_body["messages"][0]["content"][1]["image"]["source"]["bytes"] == image


@pytest.mark.parametrize("action", ["converse", "converse-stream", "count-tokens"])
def test_a_model_id_in_the_body_is_a_400_before_bedrock(
    action: str, emulator: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = converse(HAIKU, {**load_converse_body(), "modelId": HAIKU}, action=action)
    assert response["statusCode"] == 400
    error = error_of(response)
    assert error["type"] == "ValidationException"
    assert "path" in error["message"]
    assert bedrock_traffic.requests == []


def test_converse_members_are_bedrocks_to_validate(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    # The proxy forwards what it does not know (a member Bedrock adds later works); Bedrock's
    # own validation error comes back as Bedrock sent it, and nothing is billed or recorded.
    body = {**load_converse_body(), "someFutureMember": {"x": 1}, "messages": "hello"}
    response = converse(HAIKU, body)
    assert response["statusCode"] == 400
    assert json.loads(bedrock_traffic.requests[0].content)["someFutureMember"] == {"x": 1}
    assert response["raw"] == b"".join(bedrock_traffic.received)
    assert str(header(response, "x-amzn-errortype")).startswith("ValidationException:")
    assert emulator.billed() == [] and ledger_items(dynamodb) == []


def test_converse_service_tier_served_is_recorded(emulator: Any, dynamodb: Any) -> None:
    body = {**load_converse_body(), "serviceTier": {"type": "priority"}}
    assert converse("amazon.nova-pro-v1:0", body)["statusCode"] == 200
    [item] = ledger_items(dynamodb)
    assert item["ServiceTier"]["S"] == "priority"


# --- streams ---------------------------------------------------------------------------------------


def anthropic_cached_body() -> dict[str, Any]:
    body = claude_body("Summarise the document in a few words.", max_tokens=300)
    body["system"] = [
        {
            "type": "text",
            "text": "A long reference document. " * 40,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        },
        {"type": "text", "text": "More rules to follow. " * 20, "cache_control": {"type": "ephemeral"}},
    ]
    return body


@pytest.mark.parametrize(
    ("model_id", "body"),
    [
        (HAIKU, claude_body()),
        (NOVA, {"messages": [{"role": "user", "content": [{"text": "tell me a story please"}]}]}),
        (LLAMA, {"prompt": "tell me a story please", "max_gen_len": 100}),
        ("amazon.titan-text-express-v1", {"inputText": "tell me a story please"}),
        ("mistral.mistral-large-2407-v1:0", {"prompt": "tell me a story please", "max_tokens": 100}),
    ],
)
def test_invoke_stream_is_bedrocks_exact_bytes_and_metered(
    model_id: str, body: dict[str, Any], emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = native(encoded(model_id), "invoke-with-response-stream", body)
    data = stream_bytes(response)
    assert data == b"".join(bedrock_traffic.received)  # every frame, byte for byte
    assert header(response, "x-amzn-bedrock-content-type") == "application/json"
    assert header(response, "x-amzn-requestid") == emulator.billed()[0]["request_id"]
    messages = messages_of(data)
    assert {m.headers[":event-type"] for m in messages} == {"chunk"}
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["Operation"]["S"] == "InvokeModelWithResponseStream"
    assert "StreamError" not in item
    assert tokens(item) == billed_tokens(billed)


def test_stream_frames_are_relayed_as_they_arrive(emulator: Any, bedrock_traffic: BedrockTraffic) -> None:
    # Frames 100 ms apart reach the caller as separate pieces, not as one body at the end.
    event = native_event(
        encoded(LLAMA),
        "invoke-with-response-stream",
        {"prompt": "a paced story [[emulator chunk_delay_ms=100]]", "max_gen_len": 16},
    )
    method, target, headers, data = proxy_client.request_of(event)
    client = proxy_client._client
    assert client is not None
    pieces: list[bytes] = []
    with client.stream(method, target, headers=headers, content=data) as response:
        assert response.status_code == 200
        pieces.extend(response.iter_raw())
    frames = messages_of(b"".join(pieces))
    # Four frames 100 ms apart: merged into fewer pieces only if the proxy lagged 100 ms.
    assert len(frames) == 4 and len(pieces) >= 2
    assert b"".join(pieces) == b"".join(bedrock_traffic.received)


@pytest.mark.parametrize("directive", ["", " [[emulator no_usage_headers]]"])
def test_anthropic_stream_with_cache_counts_each_token_once(
    directive: str, emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    # Without amazon-bedrock-invocationMetrics only Anthropic's own events tell the counts.
    body = anthropic_cached_body()
    body["messages"][0]["content"][0]["text"] += directive
    data = b""
    for _ in range(2):
        response = native(encoded(CACHING), "invoke-with-response-stream", body)
        data += stream_bytes(response)
        text = chunk_text(messages_of(stream_bytes(response)))
    assert data == b"".join(bedrock_traffic.received)
    write, read = emulator.billed()
    assert len(text.split()) == read["output_tokens"]  # the streamed text is complete
    assert write["cache_write_1h_tokens"] and write["cache_write_5m_tokens"] and read["cache_read_tokens"]
    # message_start reports output_tokens=1 and message_delta the cumulative total: not 1 + total.
    assert [tokens(item) for item in ledger_items(dynamodb)] == [billed_tokens(write), billed_tokens(read)]


def test_converse_stream_is_bedrocks_exact_bytes_and_metered_with_cache(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    responses = [converse(CACHING, cached_converse_body(), action="converse-stream") for _ in range(2)]
    for response in responses:
        messages = messages_of(stream_bytes(response))
        assert messages[-1].headers[":event-type"] == "metadata"
    assert b"".join(stream_bytes(r) for r in responses) == b"".join(bedrock_traffic.received)
    write, read = emulator.billed()
    items = ledger_items(dynamodb)
    assert [item["Operation"]["S"] for item in items] == ["ConverseStream"] * 2
    assert [tokens(item) for item in items] == [billed_tokens(write), billed_tokens(read)]
    assert write["cache_write_1h_tokens"] and read["cache_read_tokens"]
    assert all("StreamError" not in item for item in items)


def test_mid_stream_error_is_relayed_and_the_usage_before_it_recorded(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    body = {
        "prompt": "a story [[emulator stream_error=modelStreamErrorException after=3]]",
        "max_gen_len": 90,
    }
    response = native(encoded(LLAMA), "invoke-with-response-stream", body)
    data = stream_bytes(response)
    assert data == b"".join(bedrock_traffic.received)
    messages = messages_of(data)  # relayed whole: the stream ends on the exception's frame
    assert [m.headers[":message-type"] for m in messages] == ["event"] * 3 + ["exception"]
    assert messages[-1].headers[":exception-type"] == "modelStreamErrorException"
    assert json.loads(messages[-1].payload)["originalStatusCode"] == 500
    [billed] = emulator.billed()
    assert billed["error"] == "modelStreamErrorException"
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "ModelStreamErrorException"
    # Llama chunks carry running counts, so the usage before the error is exact.
    assert tokens(item) == billed_tokens(billed)
    assert chunk_payloads(messages)[-1]["generation_token_count"] == billed["output_tokens"] > 0
    assert Decimal(item["CostMicroUsd"]["N"]) > 0


@pytest.mark.parametrize("error", ["throttlingException", "internalServerException", "someUnmodelledError"])
def test_mid_converse_stream_error_is_relayed_and_recorded_with_the_usage_seen(
    error: str, emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    body = load_converse_body()
    body["messages"][0]["content"][0]["text"] += f" [[emulator stream_error={error} after=2]]"
    response = converse(HAIKU, body, action="converse-stream")
    data = stream_bytes(response)
    assert data == b"".join(bedrock_traffic.received)
    messages = messages_of(data)
    assert len(messages) == 3
    last = messages[-1].headers
    assert last.get(":exception-type", last.get(":error-code")) == error
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == error[:1].upper() + error[1:]
    # ConverseStream tells usage only in its last (metadata) event, which never came: the
    # call is recorded as unpriced rather than at $0.
    assert (item["Priced"]["BOOL"], item["UsageSource"]["S"]) == (False, "none")
    assert billed["input_tokens"] > 0


# --- CountTokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "count_input",
    [
        {"invokeModel": {"body": base64.b64encode(json.dumps(claude_body()).encode()).decode()}},
        {
            "converse": {
                "messages": [{"role": "user", "content": [{"text": "Say hello in three languages."}]}]
            }
        },
    ],
)
def test_count_tokens_is_forwarded_and_never_recorded(
    count_input: dict[str, Any], emulator: Any, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    response = native(encoded(HAIKU), "count-tokens", {"input": count_input})
    assert response["statusCode"] == 200, response["body"]
    # The same prompt through InvokeModel bills exactly this many input tokens.
    counted = json.loads(response["body"])["inputTokens"]
    assert emulator.billed() == []
    assert ledger_items(dynamodb) == []
    assert "Invocations" not in capsys.readouterr().out
    native(encoded(HAIKU), "invoke", claude_body())
    assert emulator.billed()[0]["input_tokens"] == counted


# --- request metadata ----------------------------------------------------------------------------


def test_invoke_request_metadata_names_the_caller_and_keeps_client_entries(emulator: Any) -> None:
    client = {"team": "search", "principalId": "User::mallory", "job": "nightly-42"}
    headers = {"X-Amzn-Bedrock-Request-Metadata": json.dumps(client)}
    assert native(encoded(HAIKU), "invoke", claude_body(), headers=headers)["statusCode"] == 200
    metadata = json.loads(emulator.billed()[0]["request_metadata"])
    assert metadata == {"team": "search", "job": "nightly-42", "principalId": PRINCIPAL, "keyId": KEY_ID}


def test_converse_request_metadata_is_merged_in_the_body(emulator: Any) -> None:
    body = {**load_converse_body(), "requestMetadata": {"keyId": "spoofed", "ticket": "T-1"}}
    assert converse(HAIKU, body, action="converse-stream")["statusCode"] == 200
    assert emulator.billed()[0]["request_metadata"] == {
        "ticket": "T-1",
        "principalId": PRINCIPAL,
        "keyId": KEY_ID,
    }


def test_invoke_model_route_also_sends_request_metadata(emulator: Any) -> None:
    event = load_event("invoke_model")
    assert proxy_client.invoke(event)["statusCode"] == 200  # type: ignore[arg-type]
    assert json.loads(emulator.billed()[0]["request_metadata"]) == {"principalId": PRINCIPAL, "keyId": KEY_ID}


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({f"k{i}": "v" for i in range(15)}, "16"),
        ({"note": "x" * 257}, "256"),
        ({"note": "semi;colon"}, "character"),
    ],
)
def test_request_metadata_over_bedrocks_limits_is_refused_before_bedrock(
    metadata: dict[str, str], fragment: str, emulator: Any
) -> None:
    body = {**load_converse_body(), "requestMetadata": metadata}
    response = converse(HAIKU, body)
    assert response["statusCode"] == 400
    assert fragment in error_of(response)["message"]
    headers = {"X-Amzn-Bedrock-Request-Metadata": json.dumps(metadata)}
    assert native(encoded(HAIKU), "invoke", claude_body(), headers=headers)["statusCode"] == 400
    assert emulator.billed() == []


def test_request_metadata_header_over_8500_characters_is_refused(emulator: Any) -> None:
    # Within the entry limits; tabs are allowed but take two characters each as JSON.
    metadata = {f"k{i:02d}" + "\t" * 200: "\t" * 256 for i in range(14)}
    headers = {"X-Amzn-Bedrock-Request-Metadata": json.dumps(metadata)}
    response = native(encoded(HAIKU), "invoke", claude_body(), headers=headers)
    assert response["statusCode"] == 400
    assert "8500" in error_of(response)["message"]
    assert emulator.billed() == []
