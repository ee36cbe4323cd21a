"""The emulator's OpenAI-compatible and Anthropic-compatible APIs, driven by the real SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from bedrock_spend_local.emulator import LISTED_MODELS, BedrockEmulator

GPT = "openai.gpt-oss-20b-1:0"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
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


@pytest.fixture(scope="module", params=["/openai/v1", "/v1"])
def oai(request: pytest.FixtureRequest, emulator: BedrockEmulator) -> openai.OpenAI:
    """bedrock-runtime's ``/openai/v1`` and bedrock-mantle's ``/v1``."""
    return openai.OpenAI(base_url=emulator.url + request.param, api_key="key", max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def claude(emulator: BedrockEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emulator.url + "/anthropic", api_key="x", max_retries=0, timeout=10)


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _only_record(emulator: BedrockEmulator) -> dict[str, Any]:
    records = emulator.billed()
    assert len(records) == 1, records
    return records[0]


def _sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines.get("event"), lines["data"]))
    return events


# --- Chat Completions --------------------------------------------------------------------------


def test_chat_completion(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    answer = oai.chat.completions.create(model=GPT, messages=_user(FIVE_WORDS), user="alice")
    assert answer.object == "chat.completion"
    assert answer.model == GPT
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert len((choice.message.content or "").split()) == 13
    assert answer.usage is not None
    assert answer.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 8,
        "completion_tokens": 13,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    record = _only_record(emulator)
    assert record["operation"] == "ChatCompletions"
    assert record["model_id"] == GPT
    assert (record["input_tokens"], record["output_tokens"]) == (8, 13)
    assert record["authorization_scheme"] == "Bearer"
    assert record["request_metadata"] == "alice"
    assert record["error"] is None


def test_chat_max_tokens_truncates(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    answer = oai.chat.completions.create(model=GPT, messages=_user(FIVE_WORDS), max_completion_tokens=4)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    assert _only_record(emulator)["output_tokens"] == 4


def test_chat_stream_without_usage(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    chunks = list(oai.chat.completions.create(model=GPT, messages=_user(FIVE_WORDS), stream=True))
    assert all(chunk.object == "chat.completion.chunk" and chunk.usage is None for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert len(text.split()) == 13
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert _only_record(emulator)["output_tokens"] == 13


def test_chat_stream_with_usage_wire_format(emulator: BedrockEmulator) -> None:
    body = {
        "model": GPT,
        "messages": _user(FIVE_WORDS),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(emulator.url + "/openai/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(response.content)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 8
    assert chunks[-1]["usage"]["completion_tokens"] == 13


def test_chat_stream_with_usage_sdk(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=GPT, messages=_user(FIVE_WORDS), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 21
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_chat_error(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        oai.chat.completions.create(model=GPT, messages=_user("hi [[emulator error=ThrottlingException]]"))
    assert raised.value.status_code == 429
    assert raised.value.body == {
        "message": "Emulated ThrottlingException",
        "type": "rate_limit_error",
        "code": "ThrottlingException",
        "param": None,
    }
    assert emulator.billed() == []


def test_chat_mid_stream_error(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    prompt = FIVE_WORDS + " [[emulator stream_error=ModelStreamErrorException after=2]]"
    received = []
    with pytest.raises(openai.APIError, match="Emulated ModelStreamErrorException"):
        for chunk in oai.chat.completions.create(model=GPT, messages=_user(prompt), stream=True):
            received.append(chunk)
    assert len(received) == 2  # the role chunk and one four-word delta
    record = _only_record(emulator)
    assert (record["output_tokens"], record["error"]) == (4, "ModelStreamErrorException")


# --- Responses ---------------------------------------------------------------------------------


def test_response(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    answer = oai.responses.create(
        model=GPT,
        instructions="be brief",
        input=[{"role": "user", "content": [{"type": "input_text", "text": FIVE_WORDS}]}],
        metadata={"team": "search"},
    )
    # 2 (instructions) + 5 + 3 (one message) = 10 input, 5 + 10 = 15 output.
    assert (answer.object, answer.status, answer.model) == ("response", "completed", GPT)
    assert len(answer.output_text.split()) == 15
    assert answer.output[0].type == "message"
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.usage.total_tokens) == (10, 15, 25)
    assert answer.usage.input_tokens_details.cached_tokens == 0
    record = _only_record(emulator)
    assert record["operation"] == "Responses"
    assert (record["input_tokens"], record["output_tokens"]) == (10, 15)
    assert record["request_metadata"] == {"team": "search"}


def test_response_truncated_is_incomplete(oai: openai.OpenAI) -> None:
    answer = oai.responses.create(model=GPT, input=FIVE_WORDS, max_output_tokens=3)
    assert answer.status == "incomplete"
    assert answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"
    assert answer.usage is not None and answer.usage.output_tokens == 3


def test_response_stream(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    events = list(oai.responses.create(model=GPT, input=FIVE_WORDS, stream=True))
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert len(text.split()) == 13
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.usage is not None and final.response.usage.output_tokens == 13
    with oai.responses.stream(model=GPT, input=FIVE_WORDS) as stream:
        assert stream.get_final_response().output_text == text
    assert [record["output_tokens"] for record in emulator.billed()] == [13, 13]


def test_response_error(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        oai.responses.create(model=GPT, input="hi [[emulator error=InternalServerException message=boom]]")
    assert raised.value.status_code == 500
    assert raised.value.body == {
        "message": "boom",
        "type": "server_error",
        "code": "InternalServerException",
        "param": None,
    }
    assert emulator.billed() == []


def test_response_mid_stream_error(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    prompt = FIVE_WORDS + " [[emulator stream_error=ThrottlingException after=5]]"
    events = list(oai.responses.create(model=GPT, input=prompt, stream=True))
    assert [event.type for event in events[-3:]] == ["response.output_text.delta", "error", "response.failed"]
    error = events[-2]
    assert error.type == "error"
    assert (error.code, error.sequence_number) == ("ThrottlingException", 5)
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    record = _only_record(emulator)
    assert (record["output_tokens"], record["error"]) == (4, "ThrottlingException")


# --- models ------------------------------------------------------------------------------------


def test_models(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    models = list(oai.models.list())
    assert [model.id for model in models] == list(LISTED_MODELS)
    assert all(model.object == "model" and model.owned_by for model in models)
    assert oai.models.retrieve(GPT).id == GPT
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope.model-v1:0")
    assert emulator.billed() == []


# --- Anthropic Messages ------------------------------------------------------------------------


def test_message(claude: anthropic.Anthropic, emulator: BedrockEmulator) -> None:
    message = claude.messages.create(
        model=CLAUDE, max_tokens=100, messages=_user(FIVE_WORDS), metadata={"user_id": "u-1"}
    )
    assert (message.type, message.role, message.model, message.stop_reason) == (
        "message",
        "assistant",
        CLAUDE,
        "end_turn",
    )
    assert message.content[0].type == "text"
    assert len(message.content[0].text.split()) == 13
    assert (message.usage.input_tokens, message.usage.output_tokens) == (8, 13)
    assert (message.usage.cache_creation_input_tokens, message.usage.cache_read_input_tokens) == (0, 0)
    record = _only_record(emulator)
    assert record["operation"] == "Messages"
    assert record["model_id"] == CLAUDE
    assert record["request_metadata"] == {"user_id": "u-1"}
    assert record["authorization_scheme"] == "Bearer"


def test_message_prompt_cache(claude: anthropic.Anthropic, emulator: BedrockEmulator) -> None:
    system: Any = [{"type": "text", "text": "a b c d e f g h i j", "cache_control": {"type": "ephemeral"}}]
    first = claude.messages.create(model=CLAUDE, max_tokens=50, system=system, messages=_user("hello"))
    second = claude.messages.create(model=CLAUDE, max_tokens=50, system=system, messages=_user("hello"))
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (10, 0)
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, 10)
    assert first.usage.input_tokens == second.usage.input_tokens == 4
    writes, reads = emulator.billed()
    assert (writes["cache_write_5m_tokens"], reads["cache_read_tokens"]) == (10, 10)


def test_message_stream(claude: anthropic.Anthropic, emulator: BedrockEmulator) -> None:
    with claude.messages.stream(model=CLAUDE, max_tokens=100, messages=_user(FIVE_WORDS)) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in types
    assert (final.usage.input_tokens, final.usage.output_tokens) == (8, 13)
    assert len(final.content[0].text.split()) == 13  # type: ignore[union-attr]
    assert _only_record(emulator)["output_tokens"] == 13


def test_message_count_tokens_is_free(claude: anthropic.Anthropic, emulator: BedrockEmulator) -> None:
    counted = claude.messages.count_tokens(model=CLAUDE, messages=_user(FIVE_WORDS))
    assert counted.input_tokens == 8
    assert emulator.billed() == []


def test_message_error(claude: anthropic.Anthropic, emulator: BedrockEmulator) -> None:
    prompt = "hi [[emulator error=ServiceUnavailableException status=529]]"
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude.messages.create(model=CLAUDE, max_tokens=10, messages=_user(prompt))
    assert raised.value.status_code == 529
    body: Any = raised.value.body
    assert body["type"] == "error"
    assert body["error"] == {"type": "overloaded_error", "message": "Emulated ServiceUnavailableException"}
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=CLAUDE, max_tokens=0, messages=_user("hi"))
    assert emulator.billed() == []


def test_message_mid_stream_error(claude: anthropic.Anthropic, emulator: BedrockEmulator) -> None:
    prompt = FIVE_WORDS + " [[emulator stream_error=InternalServerException after=5]]"
    types = []
    stream_call = claude.messages.stream(model=CLAUDE, max_tokens=100, messages=_user(prompt))
    with (
        pytest.raises(anthropic.APIStatusError, match="Emulated InternalServerException"),
        stream_call as stream,
    ):
        types.extend(event.type for event in stream)
    # message_start, content_block_start, ping, two deltas of four words, then the error.
    assert types.count("content_block_delta") == 2
    record = _only_record(emulator)
    assert (record["output_tokens"], record["error"]) == (8, "InternalServerException")


# --- shared machinery --------------------------------------------------------------------------


def test_fault_rule_and_chunk_delay(
    claude: anthropic.Anthropic, oai: openai.OpenAI, emulator: BedrockEmulator
) -> None:
    emulator.add_fault("ThrottlingException", operation="Messages")
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model=CLAUDE, max_tokens=10, messages=_user("hi"))
    prompt = FIVE_WORDS + " [[emulator chunk_delay_ms=40]]"
    chunks = list(oai.chat.completions.create(model=GPT, messages=_user(prompt), stream=True))
    # A pause before every SSE event but the first; [DONE] is one more event than the chunks.
    assert len(chunks) >= 3
    assert _only_record(emulator)["waited_ms"] == 40 * len(chunks)


def test_stream_disconnect(oai: openai.OpenAI, emulator: BedrockEmulator) -> None:
    prompt = FIVE_WORDS + " [[emulator disconnect after=2]]"
    with pytest.raises(openai.APIConnectionError):
        list(oai.chat.completions.create(model=GPT, messages=_user(prompt), stream=True))
    record = _only_record(emulator)
    assert (record["output_tokens"], record["error"]) == (4, "disconnect")


def test_sigv4_scheme_and_error_shapes(emulator: BedrockEmulator) -> None:
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/bedrock-mantle/aws4_request"
    }
    body = {"model": GPT, "messages": _user(FIVE_WORDS)}
    response = httpx.post(emulator.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert response.status_code == 200
    assert _only_record(emulator)["authorization_scheme"] == "AWS4-HMAC-SHA256"
    missing = httpx.post(emulator.url + "/anthropic/v1/nothing", json={}, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    malformed = httpx.post(emulator.url + "/openai/v1/chat/completions", content=b"{", timeout=10)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
