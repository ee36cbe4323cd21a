"""Bedrock Runtime's own routes (/model/{modelId}/...) through the real proxy handler, the
Bedrock emulator and moto: decoding, pass-through, metering of Converse and streams."""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest

from bedrock_spend import bedrock, buffered_stream
from bedrock_spend.eventstream import EventMessage, decode_chunk, decode_messages
from bedrock_spend.proxy import app
from tests.conftest import USAGE_TABLE, load_event
from tests.helpers import LambdaContext, claude_body, header

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


def native(
    model_path: str,
    action: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    event: str = "native_invoke",
    **authorizer: str,
) -> dict[str, Any]:
    """Call the handler as API Gateway would for POST /model/<model_path>/<action>."""
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
    return app.lambda_handler(ev, LambdaContext())  # type: ignore[arg-type]


def converse(model_id: str, body: dict[str, Any], action: str = "converse", **kw: Any) -> dict[str, Any]:
    return native(encoded(model_id), action, body, event="converse", **kw)


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert body["message"] == body["error"]["message"]
    assert header(response, "x-amzn-errortype") == body["error"]["type"]
    return dict(body["error"])


def ledger_items(dynamodb: Any) -> list[dict[str, Any]]:
    items = dynamodb.scan(TableName=USAGE_TABLE)["Items"]
    return sorted(
        (item for item in items if item["PK"]["S"].startswith("USAGE#")), key=lambda i: i["SK"]["S"]
    )


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
    # Text, not base64: API Gateway passes it to SDKs, which send no Accept header.
    assert response["isBase64Encoded"] is False
    return str(response["body"]).encode("utf-8")


def events(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Each message's headers and payload, without the text-safe padding (header p..., spaces)."""
    return [
        (
            {k: v for k, v in m.headers.items() if k.strip("p")},
            m.payload.rstrip(b" ") if m.payload.startswith(b"{") else m.payload,
        )
        for m in decode_messages(data)
    ]


def chunk_text(messages: list[EventMessage]) -> str:
    text = ""
    for message in messages:
        if message.event_type == "chunk":
            chunk = decode_chunk(message)
            text += chunk.get("delta", {}).get("text", "") or chunk.get("generation", "")
    return text


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every raw byte the proxy read from Bedrock's event streams."""
    got: list[bytes] = []
    original = buffered_stream.collect

    def spy(ref: Any, operation: str, chunks: Iterator[bytes], limit: int | None = None) -> Any:
        def tee() -> Iterator[bytes]:
            for data in chunks:
                got.append(data)
                yield data

        return original(ref, operation, tee(), limit)

    monkeypatch.setattr(buffered_stream, "collect", spy)
    return got


@pytest.fixture
def sent() -> list[Any]:
    """Every HTTP request the proxy sent to Bedrock (botocore's prepared requests)."""
    requests: list[Any] = []

    def capture(request: Any, **kwargs: Any) -> None:
        requests.append(request)  # None: botocore sends it as usual

    bedrock.runtime_client().meta.events.register("before-send.bedrock-runtime", capture)
    return requests


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
    model_id: str, body: dict[str, Any], emulator: Any, dynamodb: Any
) -> None:
    response = native(encoded(model_id), "invoke", body)
    assert response["statusCode"] == 200, response["body"]
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


def test_bedrock_errors_keep_their_type_and_status(emulator: Any) -> None:
    emulator.fault("ThrottlingException")
    response = converse(HAIKU, load_converse_body())
    assert response["statusCode"] == 429
    assert error_of(response)["type"] == "ThrottlingException"


def test_allow_list_refuses_before_bedrock(emulator: Any) -> None:
    response = native(encoded(HAIKU), "invoke-with-response-stream", claude_body(), allowedModels=NOVA)
    assert response["statusCode"] == 403
    assert error_of(response)["type"] == "ModelNotAllowed"
    assert emulator.billed() == []


# --- InvokeModel pass-through ---------------------------------------------------------------


def test_invoke_parameters_in_headers_reach_bedrock(emulator: Any, dynamodb: Any, sent: list[Any]) -> None:
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
    [request] = sent
    for name, value in headers.items():
        assert request.headers[name] == value.encode()
    assert request.headers["Content-Type"] == b"application/json"
    assert request.body == body.encode()  # byte for byte
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


def test_unknown_bedrock_header_is_refused_not_dropped(emulator: Any) -> None:
    response = native(encoded(HAIKU), "invoke", claude_body(), headers={"X-Amzn-Bedrock-Foo": "1"})
    assert response["statusCode"] == 400
    assert "x-amzn-bedrock-foo" in error_of(response)["message"]
    assert emulator.billed() == []


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


def test_converse_returns_bedrocks_body_unchanged_and_records_usage(emulator: Any, dynamodb: Any) -> None:
    raw: list[bytes] = []
    bedrock.runtime_client().meta.events.register(
        "response-received.bedrock-runtime.Converse",
        lambda response_dict, **kw: raw.append(response_dict["body"]),
    )
    response = converse(HAIKU, load_converse_body())
    assert response["statusCode"] == 200, response["body"]
    assert response["body"].encode() == raw[0]
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


def test_converse_blobs_reach_bedrock_unchanged(emulator: Any, sent: list[Any]) -> None:
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode()
    body = load_converse_body()
    body["messages"][0]["content"].append({"image": {"format": "png", "source": {"bytes": image}}})
    response = converse(HAIKU, body)
    assert response["statusCode"] == 200, response["body"]
    sent_body = json.loads(sent[0].body)
    assert sent_body["messages"][0]["content"][1]["image"]["source"]["bytes"] == image


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"inferenceConfigs": {}}, "inferenceConfigs"),
        ({"messages": "hello"}, "messages"),
        ({"modelId": HAIKU}, "path"),
    ],
)
def test_invalid_converse_requests_are_400_before_bedrock(
    change: dict[str, Any], fragment: str, emulator: Any
) -> None:
    response = converse(HAIKU, {**load_converse_body(), **change})
    assert response["statusCode"] == 400
    error = error_of(response)
    assert error["type"] == "ValidationException"
    assert fragment in error["message"]
    assert emulator.billed() == []


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
def test_invoke_stream_events_are_passed_on_and_metered(
    model_id: str, body: dict[str, Any], emulator: Any, dynamodb: Any, received: list[bytes]
) -> None:
    response = native(encoded(model_id), "invoke-with-response-stream", body)
    data = stream_bytes(response)
    assert events(data) == events(b"".join(received))  # every event, as Bedrock sent it
    assert header(response, "x-amzn-bedrock-content-type") == "application/json"
    messages = decode_messages(data)
    assert {m.event_type for m in messages} == {"chunk"}
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["Operation"]["S"] == "InvokeModelWithResponseStream"
    assert "StreamError" not in item
    assert tokens(item) == billed_tokens(billed)


@pytest.mark.parametrize("directive", ["", " [[emulator no_usage_headers]]"])
def test_anthropic_stream_with_cache_counts_each_token_once(
    directive: str, emulator: Any, dynamodb: Any, received: list[bytes]
) -> None:
    # Without amazon-bedrock-invocationMetrics only Anthropic's own events tell the counts.
    body = anthropic_cached_body()
    body["messages"][0]["content"][0]["text"] += directive
    for _ in range(2):
        response = native(encoded(CACHING), "invoke-with-response-stream", body)
        text = chunk_text(decode_messages(stream_bytes(response)))
    write, read = emulator.billed()
    assert len(text.split()) == read["output_tokens"]  # the streamed text is complete
    assert write["cache_write_1h_tokens"] and write["cache_write_5m_tokens"] and read["cache_read_tokens"]
    # message_start reports output_tokens=1 and message_delta the cumulative total: not 1 + total.
    assert [tokens(item) for item in ledger_items(dynamodb)] == [billed_tokens(write), billed_tokens(read)]


def test_converse_stream_is_passed_on_and_metered_with_cache(
    emulator: Any, dynamodb: Any, received: list[bytes]
) -> None:
    responses = [converse(CACHING, cached_converse_body(), action="converse-stream") for _ in range(2)]
    for response in responses:
        data = stream_bytes(response)
        messages = decode_messages(data)
        assert messages[-1].event_type == "metadata"
    assert events(b"".join(stream_bytes(r) for r in responses)) == events(b"".join(received))
    write, read = emulator.billed()
    items = ledger_items(dynamodb)
    assert [item["Operation"]["S"] for item in items] == ["ConverseStream"] * 2
    assert [tokens(item) for item in items] == [billed_tokens(write), billed_tokens(read)]
    assert write["cache_write_1h_tokens"] and read["cache_read_tokens"]


def test_mid_stream_error_is_passed_on_and_the_partial_usage_recorded(
    emulator: Any, dynamodb: Any, received: list[bytes]
) -> None:
    body = {
        "prompt": "a story [[emulator stream_error=modelStreamErrorException after=3]]",
        "max_gen_len": 90,
    }
    response = native(encoded(LLAMA), "invoke-with-response-stream", body)
    data = stream_bytes(response)
    assert events(data) == events(b"".join(received))
    messages = decode_messages(data)
    assert [m.message_type for m in messages] == ["event"] * 3 + ["exception"]
    assert messages[-1].exception_type == "modelStreamErrorException"
    [billed] = emulator.billed()
    assert billed["error"] == "modelStreamErrorException"
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "ModelStreamErrorException"
    # Llama chunks carry running counts, so the usage before the error is exact.
    assert tokens(item) == billed_tokens(billed)
    assert Decimal(item["CostMicroUsd"]["N"]) > 0


def test_mid_converse_stream_error_is_recorded_with_the_stream_error(emulator: Any, dynamodb: Any) -> None:
    body = load_converse_body()
    body["messages"][0]["content"][0]["text"] += " [[emulator stream_error=throttlingException after=2]]"
    response = converse(HAIKU, body, action="converse-stream")
    messages = decode_messages(stream_bytes(response))
    assert messages[-1].exception_type == "throttlingException"
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "ThrottlingException"


def test_stream_over_the_size_cap_ends_with_an_error_and_is_fully_metered(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, dynamodb: Any
) -> None:
    monkeypatch.setattr(buffered_stream, "MAX_BODY_BYTES", 2048)
    body = {"prompt": "tell me a long story please", "max_gen_len": 300}
    response = native(encoded(LLAMA), "invoke-with-response-stream", body)
    data = stream_bytes(response)
    assert len(json.dumps(response["body"])) <= 2048  # as Lambda returns it
    messages = decode_messages(data)
    assert messages[-1].message_type == "error"
    assert messages[-1].headers[":error-code"] == "StreamTooLarge"
    assert all(m.message_type == "event" for m in messages[:-1])
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "StreamTooLarge"
    assert tokens(item) == billed_tokens(billed)  # read to the end: Bedrock's final counts


def test_a_stalled_stream_ends_at_the_read_timeout_with_an_error_and_is_recorded(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, dynamodb: Any
) -> None:
    monkeypatch.setenv("BEDROCK_READ_TIMEOUT_SECONDS", "1.0")
    from tests.conftest import reset_caches

    reset_caches()
    # Chunks at 0, 0.9, 1.8 s...: the wait after the second must end at the 1 s deadline,
    # not a whole read timeout later.
    body = {"prompt": "a slow story " + "word " * 27 + "[[emulator chunk_delay_ms=900]]", "max_gen_len": 60}
    started = time.monotonic()
    response = native(encoded(LLAMA), "invoke-with-response-stream", body)
    assert time.monotonic() - started < 1.6
    messages = decode_messages(stream_bytes(response))
    assert messages[-1].headers[":error-code"] == "BedrockTimeout"
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "BedrockTimeout"
    assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
    assert 0 < int(item["OutputTokens"]["N"]) < billed["output_tokens"]


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
    assert app.lambda_handler(event, LambdaContext())["statusCode"] == 200  # type: ignore[arg-type]
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
