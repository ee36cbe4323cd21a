"""The Bedrock Runtime emulator, driven over real HTTP by unmodified boto3 clients."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import pytest
import trustme
from botocore.config import Config

from bedrock_spend_local.emulator import ERROR_NAMESPACE, ERROR_STATUS, BedrockEmulator

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
NOVA = "amazon.nova-lite-v1:0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# "one two three four five" in one message: 5 words + 3 overhead = 8 input, 5 + 8 % 40 = 13 output.
FIVE_WORDS = "one two three four five"


@pytest.fixture(scope="module")
def emulator() -> Iterator[BedrockEmulator]:
    with BedrockEmulator() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_state(emulator: BedrockEmulator) -> None:
    emulator.reset()
    emulator.default_latency_ms = 0


def _client(url: str, access_key: str | None = None) -> Any:
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10)
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        config=config,
        aws_access_key_id=access_key,
        aws_secret_access_key=access_key,
    )


@pytest.fixture(scope="module")
def client(emulator: BedrockEmulator) -> Any:
    return _client(emulator.url, access_key="x")


def _invoke(
    client: Any, model_id: str, body: dict[str, Any], **kwargs: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    response = client.invoke_model(modelId=model_id, body=json.dumps(body), **kwargs)
    return json.loads(response["body"].read()), response["ResponseMetadata"]["HTTPHeaders"]


def _claude_body(*content: Any, system: Any = None, max_tokens: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": list(content) if len(content) > 1 else content[0]}],
    }
    if system is not None:
        body["system"] = system
    return body


def _http(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _words(text: str) -> int:
    return len(text.split())


# --- InvokeModel, one case per family ----------------------------------------------------------

Extract = Callable[[dict[str, Any]], str]

FAMILY_CASES: list[tuple[str, dict[str, Any], Extract]] = [
    (CLAUDE, _claude_body(FIVE_WORDS), lambda b: b["content"][0]["text"]),
    (
        NOVA,
        {"messages": [{"role": "user", "content": [{"text": FIVE_WORDS}]}]},
        lambda b: b["output"]["message"]["content"][0]["text"],
    ),
    (TITAN, {"inputText": FIVE_WORDS}, lambda b: b["results"][0]["outputText"]),
    ("meta.llama3-1-70b-instruct-v1:0", {"prompt": FIVE_WORDS}, lambda b: b["generation"]),
    ("mistral.mistral-7b-instruct-v0:2", {"prompt": FIVE_WORDS}, lambda b: b["outputs"][0]["text"]),
    (
        "mistral.mistral-large-2407-v1:0",
        {"messages": [{"role": "user", "content": FIVE_WORDS}]},
        lambda b: b["choices"][0]["message"]["content"],
    ),
    ("cohere.command-r-plus-v1:0", {"message": FIVE_WORDS}, lambda b: b["text"]),
    (
        "ai21.jamba-1-5-mini-v1:0",
        {"messages": [{"role": "user", "content": FIVE_WORDS}]},
        lambda b: b["choices"][0]["message"]["content"],
    ),
    (
        "openai.gpt-oss-120b-1:0",
        {"messages": [{"role": "user", "content": FIVE_WORDS}]},
        lambda b: b["choices"][0]["message"]["content"],
    ),
    ("deepseek.r1-v1:0", {"prompt": FIVE_WORDS}, lambda b: b["choices"][0]["text"]),
    (
        "writer.palmyra-x5-v1:0",
        {"messages": [{"role": "user", "content": FIVE_WORDS}]},
        lambda b: b["choices"][0]["message"]["content"],
    ),
]


@pytest.mark.parametrize(
    ("model_id", "request_body", "extract"), FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES]
)
def test_invoke_model_text_families(
    client: Any, emulator: BedrockEmulator, model_id: str, request_body: dict[str, Any], extract: Extract
) -> None:
    body, headers = _invoke(client, model_id, request_body)

    assert headers["content-type"] == "application/json"
    assert headers["x-amzn-bedrock-input-token-count"] == "8"
    assert headers["x-amzn-bedrock-output-token-count"] == "13"
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0
    assert headers["x-amzn-requestid"]
    assert _words(extract(body)) == 13
    assert "x-amzn-bedrock-cache-read-input-token-count" not in headers
    (record,) = emulator.billed()
    assert record["request_id"] == headers["x-amzn-requestid"]
    assert (record["operation"], record["model_id"]) == ("InvokeModel", model_id)
    assert (record["input_tokens"], record["output_tokens"], record["images"]) == (8, 13, 0)


def test_usage_in_bodies_matches_headers(client: Any) -> None:
    claude, _ = _invoke(client, CLAUDE, _claude_body(FIVE_WORDS))
    nova, _ = _invoke(client, NOVA, {"messages": [{"role": "user", "content": [{"text": FIVE_WORDS}]}]})
    titan, _ = _invoke(client, TITAN, {"inputText": FIVE_WORDS})
    llama, _ = _invoke(client, "meta.llama3-8b-instruct-v1:0", {"prompt": FIVE_WORDS})
    jamba, _ = _invoke(
        client, "ai21.jamba-1-5-large-v1:0", {"messages": [{"role": "user", "content": FIVE_WORDS}]}
    )

    assert claude["usage"] == {
        "input_tokens": 8,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 13,
    }
    assert (claude["type"], claude["role"], claude["stop_reason"]) == ("message", "assistant", "end_turn")
    assert nova["usage"] == {
        "inputTokens": 8,
        "outputTokens": 13,
        "totalTokens": 21,
        "cacheReadInputTokenCount": 0,
        "cacheWriteInputTokenCount": 0,
    }
    assert nova["stopReason"] == "end_turn"
    assert titan["inputTextTokenCount"] == 8
    assert titan["results"][0]["tokenCount"] == 13
    assert titan["results"][0]["completionReason"] == "FINISHED"
    assert (llama["prompt_token_count"], llama["generation_token_count"], llama["stop_reason"]) == (
        8,
        13,
        "stop",
    )
    assert jamba["usage"] == {"prompt_tokens": 8, "completion_tokens": 13, "total_tokens": 21}


def test_embeddings_bill_input_only(client: Any, emulator: BedrockEmulator) -> None:
    titan, titan_headers = _invoke(
        client, "amazon.titan-embed-text-v2:0", {"inputText": FIVE_WORDS, "dimensions": 256}
    )
    cohere, _ = _invoke(
        client, "cohere.embed-english-v3", {"texts": ["a b", "c"], "input_type": "search_document"}
    )

    assert len(titan["embedding"]) == 256
    assert titan["inputTextTokenCount"] == 8
    assert titan_headers["x-amzn-bedrock-output-token-count"] == "0"
    assert len(cohere["embeddings"]) == 2
    assert cohere["response_type"] == "embeddings_floats"
    assert [(r["input_tokens"], r["output_tokens"]) for r in emulator.billed()] == [(8, 0), (6, 0)]


@pytest.mark.parametrize(
    ("model_id", "request_body", "images"),
    [
        ("amazon.titan-image-generator-v2:0", {"textToImageParams": {"text": "a cat"}}, 1),
        (
            "amazon.nova-canvas-v1:0",
            {"textToImageParams": {"text": "a cat"}, "imageGenerationConfig": {"numberOfImages": 3}},
            3,
        ),
    ],
)
def test_titan_and_nova_canvas_images(
    client: Any, emulator: BedrockEmulator, model_id: str, request_body: dict[str, Any], images: int
) -> None:
    body, headers = _invoke(client, model_id, request_body)

    assert body["error"] is None
    assert len(body["images"]) == images
    assert all(base64.b64decode(image).startswith(PNG_SIGNATURE) for image in body["images"])
    assert "x-amzn-bedrock-input-token-count" not in headers
    (record,) = emulator.billed()
    assert (record["images"], record["input_tokens"], record["output_tokens"]) == (images, 0, 0)


def test_stability_image_shape(client: Any, emulator: BedrockEmulator) -> None:
    body, _ = _invoke(client, "stability.sd3-5-large-v1:0", {"prompt": "a lighthouse"})

    assert set(body) == {"seeds", "finish_reasons", "images"}
    assert base64.b64decode(body["images"][0]).startswith(PNG_SIGNATURE)
    assert emulator.billed()[0]["images"] == 1


# --- token counting ----------------------------------------------------------------------------


def test_counts_are_deterministic_and_follow_the_formula(client: Any) -> None:
    request = _claude_body(
        "alpha beta gamma", {"type": "text", "text": "delta"}, system="be brief please", max_tokens=500
    )
    # 3 + 1 + 3 words + 3 overhead for the one message = 10 input; 5 + 10 % 40 = 15 output.
    first, first_headers = _invoke(client, CLAUDE, {**request, "messages": [request["messages"][0]]})
    second, _ = _invoke(client, CLAUDE, {**request, "messages": [request["messages"][0]]})

    assert first_headers["x-amzn-bedrock-input-token-count"] == "10"
    assert first["usage"]["output_tokens"] == second["usage"]["output_tokens"] == 15
    assert first["content"] == second["content"]


def test_max_tokens_caps_output_with_length_stop_reason(client: Any) -> None:
    claude, _ = _invoke(client, CLAUDE, _claude_body(FIVE_WORDS, max_tokens=2))
    titan, _ = _invoke(client, TITAN, {"inputText": FIVE_WORDS, "textGenerationConfig": {"maxTokenCount": 3}})

    assert (claude["usage"]["output_tokens"], claude["stop_reason"]) == (2, "max_tokens")
    assert _words(claude["content"][0]["text"]) == 2
    assert (titan["results"][0]["tokenCount"], titan["results"][0]["completionReason"]) == (3, "LENGTH")


def test_directives_are_not_counted(client: Any) -> None:
    _, headers = _invoke(client, TITAN, {"inputText": FIVE_WORDS + " [[emulator latency_ms=1]]"})

    assert headers["x-amzn-bedrock-input-token-count"] == "8"


def test_count_tokens_matches_invoke_and_is_free(client: Any, emulator: BedrockEmulator) -> None:
    invoke = client.count_tokens(
        modelId=CLAUDE, input={"invokeModel": {"body": json.dumps(_claude_body(FIVE_WORDS))}}
    )
    converse = client.count_tokens(
        modelId=CLAUDE,
        input={"converse": {"messages": [{"role": "user", "content": [{"text": FIVE_WORDS}]}]}},
    )

    assert invoke["inputTokens"] == converse["inputTokens"] == 8
    assert emulator.billed() == []


# --- prompt caching ----------------------------------------------------------------------------


def test_anthropic_cache_write_then_read_by_ttl(client: Any, emulator: BedrockEmulator) -> None:
    ten_words = " ".join(f"s{i}" for i in range(10))
    system = [{"type": "text", "text": ten_words, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]

    def body(cached_block: str) -> dict[str, Any]:
        cached = {"type": "text", "text": cached_block, "cache_control": {"type": "ephemeral"}}
        return _claude_body(cached, {"type": "text", "text": "new question"}, system=system)

    # Breakpoints: 10 (system, 1h) and 10 + 3 + 4 = 17 (5m); 2 words after them.
    first, first_headers = _invoke(client, CLAUDE, body("a b c d"))
    second, second_headers = _invoke(client, CLAUDE, body("a b c d"))
    third, _ = _invoke(client, CLAUDE, body("w x y z"))

    assert (
        first["usage"]["input_tokens"]
        == second["usage"]["input_tokens"]
        == third["usage"]["input_tokens"]
        == 2
    )
    assert first["usage"]["cache_creation_input_tokens"] == 17
    assert first["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 7,
        "ephemeral_1h_input_tokens": 10,
    }
    assert first_headers["x-amzn-bedrock-cache-write-input-token-count"] == "17"
    assert first_headers["x-amzn-bedrock-cache-read-input-token-count"] == "0"
    assert second["usage"]["cache_read_input_tokens"] == 17
    assert second["usage"]["cache_creation_input_tokens"] == 0
    assert second_headers["x-amzn-bedrock-cache-read-input-token-count"] == "17"
    assert (third["usage"]["cache_read_input_tokens"], third["usage"]["cache_creation_input_tokens"]) == (
        10,
        7,
    )
    tally = [
        (r["input_tokens"], r["cache_read_tokens"], r["cache_write_5m_tokens"], r["cache_write_1h_tokens"])
        for r in emulator.billed()
    ]
    assert tally == [(2, 0, 7, 10), (2, 17, 0, 0), (2, 10, 7, 0)]


def test_cache_is_per_base_model_and_ignores_geo_prefix(client: Any) -> None:
    cached = {"type": "text", "text": "long shared context", "cache_control": {"type": "ephemeral"}}
    _invoke(client, CLAUDE, _claude_body(cached, "q"))
    geo, _ = _invoke(client, "us." + CLAUDE, _claude_body(cached, "q"))
    other, _ = _invoke(client, "anthropic.claude-3-5-haiku-20241022-v1:0", _claude_body(cached, "q"))

    assert geo["usage"]["cache_read_input_tokens"] == 6
    assert other["usage"]["cache_creation_input_tokens"] == 6


def test_nova_invoke_cache_point_counts(client: Any) -> None:
    request = {
        "system": [{"text": "you are a careful assistant"}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": "hello"}]}],
    }
    first, first_headers = _invoke(client, NOVA, request)
    second, _ = _invoke(client, NOVA, request)

    assert first["usage"]["cacheWriteInputTokenCount"] == 5
    assert first["usage"]["inputTokens"] == 4
    assert first_headers["x-amzn-bedrock-cache-write-input-token-count"] == "5"
    assert second["usage"]["cacheReadInputTokenCount"] == 5
    assert second["usage"]["cacheWriteInputTokenCount"] == 0


def test_converse_cache_point_with_ttls(client: Any, emulator: BedrockEmulator) -> None:
    kwargs: dict[str, Any] = {
        "modelId": "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "system": [{"text": "a b c d e f"}, {"cachePoint": {"type": "default", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": [{"text": "g h"}, {"cachePoint": {"type": "default", "ttl": "5m"}}]},
            {"role": "assistant", "content": [{"text": "ok"}]},
            {"role": "user", "content": [{"text": "next"}]},
        ],
    }
    first = client.converse(**kwargs)
    second = client.converse(**kwargs)

    # 6 system words (1h), then 3 + 2 = 5 (5m), then 3 + 1 + 3 + 1 = 8 uncached.
    assert first["usage"] == {
        "inputTokens": 8,
        "outputTokens": 5 + 19 % 40,
        "totalTokens": 19 + 24,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 11,
        "cacheDetails": [{"ttl": "1h", "inputTokens": 6}, {"ttl": "5m", "inputTokens": 5}],
    }
    assert second["usage"]["cacheReadInputTokens"] == 11
    assert second["usage"]["cacheWriteInputTokens"] == 0
    assert second["usage"]["cacheDetails"] == []
    assert [(r["cache_write_1h_tokens"], r["cache_write_5m_tokens"]) for r in emulator.billed()] == [
        (6, 5),
        (0, 0),
    ]


# --- Converse ----------------------------------------------------------------------------------


def test_converse_body(client: Any, emulator: BedrockEmulator) -> None:
    response = client.converse(
        modelId=NOVA,
        messages=[{"role": "user", "content": [{"text": FIVE_WORDS}]}],
        requestMetadata={"team": "search"},
    )

    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {"inputTokens": 8, "outputTokens": 13, "totalTokens": 21}
    assert response["metrics"]["latencyMs"] >= 0
    message = response["output"]["message"]
    assert message["role"] == "assistant"
    assert _words(message["content"][0]["text"]) == 13
    (record,) = emulator.billed()
    assert record["operation"] == "Converse"
    assert record["request_metadata"] == {"team": "search"}


def test_converse_max_tokens(client: Any) -> None:
    response = client.converse(
        modelId=CLAUDE,
        messages=[{"role": "user", "content": [{"text": FIVE_WORDS}]}],
        inferenceConfig={"maxTokens": 4},
    )

    assert (response["usage"]["outputTokens"], response["stopReason"]) == (4, "max_tokens")


def test_converse_on_embedding_model_is_a_validation_error(client: Any, emulator: BedrockEmulator) -> None:
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(
            modelId="amazon.titan-embed-text-v2:0", messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert emulator.billed() == []


# --- streaming ---------------------------------------------------------------------------------


def _chunks(client: Any, model_id: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    response = client.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))
    assert response["contentType"] == "application/json"
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    return chunks, response["ResponseMetadata"]["HTTPHeaders"]


def test_anthropic_stream_sequence(client: Any, emulator: BedrockEmulator) -> None:
    chunks, headers = _chunks(client, CLAUDE, _claude_body(FIVE_WORDS))

    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    types = [chunk["type"] for chunk in chunks]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [chunk["delta"]["text"] for chunk in chunks if chunk["type"] == "content_block_delta"]
    assert len(deltas) > 1
    assert _words("".join(deltas)) == 13
    start_usage = chunks[0]["message"]["usage"]
    assert (start_usage["input_tokens"], start_usage["cache_read_input_tokens"]) == (8, 0)
    assert chunks[-2]["usage"] == {"output_tokens": 13}
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (8, 13)
    assert {"invocationLatency", "firstByteLatency"} <= set(metrics)
    assert emulator.billed()[0]["operation"] == "InvokeModelWithResponseStream"


def _chunk_text(chunk: dict[str, Any]) -> str:
    for key in ("outputText", "generation", "text", "completion"):
        if isinstance(chunk.get(key), str):
            return str(chunk[key])
    if "outputs" in chunk:
        return str(chunk["outputs"][0]["text"])
    if "contentBlockDelta" in chunk:
        return str(chunk["contentBlockDelta"]["delta"]["text"])
    if "choices" in chunk:
        choice = chunk["choices"][0]
        source = choice.get("delta") or choice.get("message") or choice
        return str(source.get("content", source.get("text", "")))
    return ""


@pytest.mark.parametrize(
    ("model_id", "request_body"),
    [
        (TITAN, {"inputText": FIVE_WORDS}),
        ("meta.llama3-8b-instruct-v1:0", {"prompt": FIVE_WORDS}),
        (NOVA, {"messages": [{"role": "user", "content": [{"text": FIVE_WORDS}]}]}),
        ("mistral.mixtral-8x7b-instruct-v0:1", {"prompt": FIVE_WORDS}),
        ("mistral.mistral-large-2407-v1:0", {"messages": [{"role": "user", "content": FIVE_WORDS}]}),
        ("cohere.command-r-v1:0", {"message": FIVE_WORDS}),
        ("ai21.jamba-1-5-mini-v1:0", {"messages": [{"role": "user", "content": FIVE_WORDS}]}),
        ("deepseek.r1-v1:0", {"prompt": FIVE_WORDS}),
    ],
)
def test_stream_text_chunks_then_metrics(client: Any, model_id: str, request_body: dict[str, Any]) -> None:
    chunks, _ = _chunks(client, model_id, request_body)

    text = "".join(_chunk_text(chunk) for chunk in chunks)
    assert _words(text) == 13
    assert all("amazon-bedrock-invocationMetrics" not in chunk for chunk in chunks[:-1])
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (8, 13)


def test_stream_metrics_carry_cache_counts(client: Any) -> None:
    cached = {"type": "text", "text": "stable prefix", "cache_control": {"type": "ephemeral"}}
    _invoke(client, CLAUDE, _claude_body(cached, "q"))

    chunks, _ = _chunks(client, CLAUDE, _claude_body(cached, "q"))

    assert chunks[0]["message"]["usage"]["cache_read_input_tokens"] == 5
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["cacheReadInputTokenCount"], metrics["cacheWriteInputTokenCount"]) == (5, 0)


def test_stream_on_image_model_is_a_validation_error(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model_with_response_stream(
            modelId="stability.sd3-5-large-v1:0", body=json.dumps({"prompt": "x"})
        )


def test_converse_stream_sequence(client: Any, emulator: BedrockEmulator) -> None:
    response = client.converse_stream(
        modelId=NOVA,
        messages=[{"role": "user", "content": [{"text": FIVE_WORDS}]}],
        requestMetadata={"project": "p1"},
    )
    events = list(response["stream"])

    names = [next(iter(event)) for event in events]
    assert names[0] == "messageStart"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(names[1:-3]) == {"contentBlockDelta"}
    text = "".join(event["contentBlockDelta"]["delta"]["text"] for event in events[1:-3])
    assert _words(text) == 13
    metadata = events[-1]["metadata"]
    assert metadata["usage"] == {"inputTokens": 8, "outputTokens": 13, "totalTokens": 21}
    assert metadata["metrics"]["latencyMs"] >= 0
    (record,) = emulator.billed()
    assert (record["operation"], record["request_metadata"]) == ("ConverseStream", {"project": "p1"})


def test_chunk_delay_pauses_between_events_each_flushed_before_the_pause(
    client: Any, emulator: BedrockEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[Any] = []
    arrived = threading.Condition()
    pauses: list[tuple[float, bool]] = []  # (seconds, whether the client had every event sent so far)

    def sleep(seconds: float) -> None:
        # The n-th pause comes after the n-th event. Flushed, that event reaches the client while
        # the emulator waits here; buffered to the end, it never would (the wait gives up).
        with arrived:
            flushed = arrived.wait_for(lambda: len(received) > len(pauses), timeout=5)
        pauses.append((seconds, flushed))

    monkeypatch.setattr(emulator, "sleep", sleep)
    response = client.converse_stream(
        modelId=NOVA, messages=[{"role": "user", "content": [{"text": "hi [[emulator chunk_delay_ms=30]]"}]}]
    )
    for event in response["stream"]:
        with arrived:
            received.append(event)
            arrived.notify_all()

    assert len(received) >= 3
    assert pauses == [(0.03, True)] * (len(received) - 1)
    (record,) = emulator.billed()
    assert record["waited_ms"] == 30 * (len(received) - 1)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ERROR_STATUS))
def test_every_error_type_raises_its_botocore_exception(
    client: Any, emulator: BedrockEmulator, name: str
) -> None:
    exception_class = getattr(client.exceptions, name)

    with pytest.raises(exception_class) as caught:
        _invoke(client, CLAUDE, _claude_body(f"hi [[emulator error={name}]]"))

    response = caught.value.response
    assert response["Error"]["Code"] == name
    assert response["Error"]["Message"] == f"Emulated {name}"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == ERROR_STATUS[name]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == f"{name}:{ERROR_NAMESPACE}"
    assert emulator.billed() == []


def test_model_error_carries_original_status_and_resource(client: Any) -> None:
    with pytest.raises(client.exceptions.ModelErrorException) as caught:
        _invoke(client, CLAUDE, _claude_body("[[emulator error=ModelErrorException]]"))

    assert caught.value.response["originalStatusCode"] == 500
    assert caught.value.response["resourceName"] == CLAUDE


def test_errors_on_converse_and_streams_before_the_first_byte(client: Any) -> None:
    messages = [{"role": "user", "content": [{"text": "[[emulator error=AccessDeniedException]]"}]}]

    with pytest.raises(client.exceptions.AccessDeniedException):
        client.converse(modelId=NOVA, messages=messages)
    with pytest.raises(client.exceptions.AccessDeniedException):
        client.converse_stream(modelId=NOVA, messages=messages)
    with pytest.raises(client.exceptions.ThrottlingException):
        _chunks(client, TITAN, {"inputText": "[[emulator error=ThrottlingException]]"})


def test_mid_stream_exception_surfaces_as_event_stream_error(client: Any, emulator: BedrockEmulator) -> None:
    body = {"inputText": FIVE_WORDS + " [[emulator stream_error=modelStreamErrorException after=3]]"}
    response = client.invoke_model_with_response_stream(modelId=TITAN, body=json.dumps(body))
    received = []

    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        for event in response["body"]:
            received.append(json.loads(event["chunk"]["bytes"]))

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert caught.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert len(received) == 3
    (record,) = emulator.billed()
    assert (record["input_tokens"], record["output_tokens"]) == (8, 12)  # three 4-word chunks
    assert record["error"] == "modelStreamErrorException"


def test_converse_stream_mid_stream_throttling(client: Any, emulator: BedrockEmulator) -> None:
    text = FIVE_WORDS + " [[emulator stream_error=ThrottlingException after=2]]"
    response = client.converse_stream(modelId=NOVA, messages=[{"role": "user", "content": [{"text": text}]}])

    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        list(response["stream"])

    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert emulator.billed()[0]["output_tokens"] == 4  # messageStart + one 4-word delta


def test_unmodelled_stream_error_uses_error_message_type(client: Any) -> None:
    body = _claude_body("x [[emulator stream_error=InternalFailure after=1 message=boom]]")
    response = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))

    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        list(response["body"])

    assert caught.value.response["Error"] == {"Code": "InternalFailure", "Message": "boom"}


def test_malformed_bodies_are_still_billed(client: Any, emulator: BedrockEmulator) -> None:
    response = client.invoke_model(modelId=CLAUDE, body=json.dumps(_claude_body("x [[emulator malformed]]")))
    raw = response["body"].read()
    converse = client.converse(
        modelId=NOVA, messages=[{"role": "user", "content": [{"text": "x [[emulator malformed]]"}]}]
    )
    stream = client.invoke_model_with_response_stream(
        modelId=TITAN, body=json.dumps({"inputText": "x [[emulator malformed]]"})
    )
    (event,) = list(stream["body"])

    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "4"
    assert "output" not in converse
    with pytest.raises(json.JSONDecodeError):
        json.loads(event["chunk"]["bytes"])
    assert len(emulator.billed()) == 3


def test_no_usage_headers(client: Any, emulator: BedrockEmulator) -> None:
    _, headers = _invoke(client, TITAN, {"inputText": "x [[emulator no_usage_headers]]"})
    chunks, _ = _chunks(client, TITAN, {"inputText": "x [[emulator no_usage_headers]]"})

    assert "x-amzn-bedrock-input-token-count" not in headers
    assert "x-amzn-bedrock-output-token-count" not in headers
    assert "amazon-bedrock-invocationMetrics" not in chunks[-1]
    assert [r["input_tokens"] for r in emulator.billed()] == [4, 4]


def test_latency_directive_and_default_latency(
    client: Any, emulator: BedrockEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[tuple[float, int]] = []  # (seconds, calls billed by then)
    monkeypatch.setattr(emulator, "sleep", lambda seconds: slept.append((seconds, len(emulator.billed()))))
    _, headers = _invoke(client, TITAN, {"inputText": "x [[emulator latency_ms=250]]"})
    emulator.default_latency_ms = 100
    client.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "x"}]}])
    client.converse(
        modelId=NOVA, messages=[{"role": "user", "content": [{"text": "x [[emulator latency_ms=50]]"}]}]
    )

    # Each call's latency is slept before the call is billed (just before its answer); the
    # directive adds to the default.
    assert slept == [(0.25, 0), (0.1, 1), (0.15, 2)]
    assert [record["waited_ms"] for record in emulator.billed()] == [250, 100, 150]
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0


def test_unknown_directive_is_a_validation_error(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationException):
        _invoke(client, TITAN, {"inputText": "[[emulator explode=1]]"})


# --- fault rules -------------------------------------------------------------------------------


def test_fault_rules_via_control_api(client: Any, emulator: BedrockEmulator) -> None:
    rule = {"error": "ThrottlingException", "times": 2, "model": "titan"}
    status, _, _ = _http(emulator.url, "POST", "/_emulator/faults", json.dumps(rule).encode())

    for _ in range(2):
        _invoke(client, CLAUDE, _claude_body("not matched"))
        with pytest.raises(client.exceptions.ThrottlingException):
            _invoke(client, TITAN, {"inputText": "x"})
    _invoke(client, TITAN, {"inputText": "x"})

    assert status == 200
    assert [r["model_id"] for r in emulator.billed()] == [CLAUDE, CLAUDE, TITAN]


def test_fault_rules_clear_and_validation(emulator: BedrockEmulator) -> None:
    emulator.add_fault("ServiceUnavailableException", times=5, operation="Converse")
    bad_status, bad_headers, _ = _http(emulator.url, "POST", "/_emulator/faults", b'{"error": "x y"}')
    listed = json.loads(_http(emulator.url, "GET", "/_emulator/faults")[2])
    cleared = json.loads(_http(emulator.url, "DELETE", "/_emulator/faults")[2])

    assert bad_status == 400
    assert bad_headers["x-amzn-errortype"].startswith("ValidationException:")
    assert listed == [
        {"error": "ServiceUnavailableException", "times": 5, "model": None, "operation": "Converse"}
    ]
    assert cleared == {"cleared": 1}
    assert emulator.faults() == []


def test_fault_rule_can_inject_a_stream_error(client: Any, emulator: BedrockEmulator) -> None:
    emulator.add_fault(stream_error="internalServerException", after=0, operation="ConverseStream")
    response = client.converse_stream(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "x"}]}])

    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        list(response["stream"])

    assert caught.value.response["Error"]["Code"] == "internalServerException"
    assert emulator.billed()[0]["output_tokens"] == 0


# --- auth, model ids, routes -------------------------------------------------------------------


def test_bearer_token_client_over_https(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Current botocore sends a bearer key only over HTTPS, so this emulator serves TLS.
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-test")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    emulator = BedrockEmulator(tls=server_context)
    emulator.start()
    assert emulator.url.startswith("https://")
    bearer_client = _client(emulator.url)

    bearer_client.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "x"}]}])
    list(
        bearer_client.converse_stream(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "x"}]}])[
            "stream"
        ]
    )

    try:
        assert [r["authorization_scheme"] for r in emulator.billed()] == ["Bearer", "Bearer"]
    finally:
        emulator.stop()


def test_sigv4_scheme_and_request_metadata_header(client: Any, emulator: BedrockEmulator) -> None:
    _invoke(client, TITAN, {"inputText": "x"}, requestMetadata='{"cost-center":"42"}')

    (record,) = emulator.billed()
    assert record["authorization_scheme"] == "AWS4-HMAC-SHA256"
    assert record["request_metadata"] == '{"cost-center":"42"}'


@pytest.mark.parametrize(
    ("model_id", "usage_key"),
    [
        ("eu." + CLAUDE, "usage"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "usage"),
        ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "usage"),
        ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us." + CLAUDE, "usage"),
        ("arn:aws:bedrock:us-east-1::foundation-model/" + TITAN, "inputTextTokenCount"),
        ("apac.amazon.nova-micro-v1:0", "usage"),
    ],
)
def test_geo_prefixed_and_arn_model_ids(
    client: Any, emulator: BedrockEmulator, model_id: str, usage_key: str
) -> None:
    request = {"inputText": "x"} if usage_key == "inputTextTokenCount" else _claude_body("x")
    if "nova" in model_id:
        request = {"messages": [{"role": "user", "content": [{"text": "x"}]}]}

    body, _ = _invoke(client, model_id, request)

    assert usage_key in body
    assert emulator.billed()[0]["model_id"] == model_id


def test_model_id_is_percent_decoded_exactly_once(emulator: BedrockEmulator) -> None:
    status, _, _ = _http(emulator.url, "POST", "/model/custom%253Amodel/invoke", b'{"prompt": "x"}')

    assert status == 200
    assert emulator.billed()[0]["model_id"] == "custom%3Amodel"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/model/x/explode"),
        ("GET", "/model/x/invoke"),
        ("POST", "/nothing"),
        ("GET", "/_emulator/nope"),
    ],
)
def test_unknown_routes_are_404_with_bedrock_error(emulator: BedrockEmulator, method: str, path: str) -> None:
    status, headers, body = _http(emulator.url, method, path)

    assert status == 404
    assert headers["x-amzn-errortype"].endswith(":" + ERROR_NAMESPACE)
    assert "message" in json.loads(body)


def test_invalid_json_is_a_validation_error_and_not_billed(emulator: BedrockEmulator) -> None:
    status, headers, _ = _http(emulator.url, "POST", f"/model/{CLAUDE}/invoke", b"{nope")

    assert status == 400
    assert headers["x-amzn-errortype"].startswith("ValidationException:")
    assert emulator.billed() == []


def test_keep_alive_reuses_one_connection(emulator: BedrockEmulator) -> None:
    parts = urlsplit(emulator.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        for _ in range(3):
            connection.request("POST", f"/model/{TITAN}/invoke", body=b'{"inputText": "x"}')
            response = connection.getresponse()
            payload = response.read()
            assert int(response.getheader("Content-Length") or -1) == len(payload)
            assert not response.will_close
        sock = connection.sock
        connection.request("GET", "/_emulator/health")
        assert json.loads(connection.getresponse().read()) == {"status": "ok"}
        assert connection.sock is sock
    finally:
        connection.close()


def test_tally_over_http_and_reset(client: Any, emulator: BedrockEmulator) -> None:
    _invoke(client, TITAN, {"inputText": "x"})

    over_http = json.loads(_http(emulator.url, "GET", "/_emulator/billed")[2])
    assert over_http == emulator.billed()
    assert len(over_http) == 1

    reset_status = _http(emulator.url, "POST", "/_emulator/reset")[0]

    assert reset_status == 200
    assert emulator.billed() == []


def test_concurrent_calls_are_all_tallied(client: Any, emulator: BedrockEmulator) -> None:
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _invoke(client, TITAN, {"inputText": "x"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert len({r["request_id"] for r in emulator.billed()}) == 16


# --- lifecycle and command line ----------------------------------------------------------------


# A stop that waited out the idle connection (the handler's 60 s) would hit this hang guard.
@pytest.mark.timeout(30)
def test_stop_returns_promptly_with_idle_keep_alive_connection() -> None:
    emulator = BedrockEmulator()
    url = emulator.start()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    connection.request("GET", "/_emulator/health")
    connection.getresponse().read()
    assert connection.sock is not None  # kept alive: a handler thread waits on it for a next request

    emulator.stop()

    # That handler was woken and the connection closed from the server's end (end of file, not
    # the socket's timeout).
    assert connection.sock.recv(1) == b""
    with pytest.raises(RuntimeError):
        _ = emulator.url
    connection.close()


def _run_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bedrock_spend_local.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_serves_until_interrupted() -> None:
    process = _run_cli("--port", "0", "--latency-ms", "0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        status, _, body = _http(url, "GET", "/_emulator/health")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert url.startswith("http://127.0.0.1:")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert process.returncode == 0
    assert "stopped" in out
    assert err == ""


def test_cli_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = _run_cli("--port", str(taken.getsockname()[1]))
        _, err = process.communicate(timeout=10)

    assert process.returncode == 2
    assert len(err.strip().splitlines()) == 1
    assert "cannot listen" in err
