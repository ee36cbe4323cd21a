"""The OpenAI- and Anthropic-compatible routes with in-memory collaborators: what is forwarded
where, how each API's usage is metered (whole answers and server-sent-event streams), the
usage chunk the proxy asks for and the caller did not, and errors in each SDK's shape."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.domain.errors import BadRequestError, BudgetExceededError
from bedrock_spend.proxy.http import error_response
from bedrock_spend.transport import compat
from bedrock_spend.transport.meters import HiddenUsageChunk, SseEvents
from tests.unit.test_metering import FakeBedrock, FakeLedger, FakeUpstream, collaborators, serve

GPT_OSS = "openai.gpt-oss-120b-1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SSE = {"content-type": "text/event-stream"}


def deps(bedrock: FakeBedrock, ledger: FakeLedger) -> Any:
    """Collaborators whose runtime and mantle endpoints are both ``bedrock``."""
    return replace(collaborators(bedrock, ledger), mantle=bedrock)


def sse(*events: dict[str, Any], named: bool = False, done: bool = False) -> list[bytes | Exception]:
    frames: list[bytes | Exception] = []
    for event in events:
        head = f"event: {event['type']}\n" if named else ""
        frames.append(f"{head}data: {json.dumps(event)}\n\n".encode())
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames


def chat_call(
    stream: bool, include_usage: bool | None = None, path: str = "/openai/v1/chat/completions"
) -> Any:
    body: dict[str, Any] = {
        "model": GPT_OSS,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    if include_usage is not None:
        body["stream_options"] = {"include_usage": include_usage}
    return compat.parse_request(path, {"content-type": "application/json"}, json.dumps(body).encode())


def chat_chunk(text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
        "usage": None,
    }


USAGE_CHUNK = {
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 100}},
}


def test_each_route_goes_to_its_endpoint_and_path() -> None:
    body = json.dumps({"model": HAIKU, "max_tokens": 5, "messages": []}).encode()
    expected = {
        "/openai/v1/chat/completions": ("runtime", "/openai/v1/chat/completions", "ChatCompletions"),
        "/openai/v1/responses": ("runtime", "/openai/v1/responses", "Responses"),
        "/mantle/v1/chat/completions": ("mantle", "/v1/chat/completions", "ChatCompletions"),
        "/mantle/v1/responses": ("mantle", "/v1/responses", "Responses"),
        "/mantle/anthropic/v1/messages": ("mantle", "/anthropic/v1/messages", "Messages"),
    }
    for path, (endpoint, upstream, operation) in expected.items():
        call = compat.parse_request(path, {"anthropic-version": "2023-06-01", "authorization": "x"}, body)
        assert (call.endpoint, call.outbound.path, call.operation, call.model_id) == (
            endpoint,
            upstream,
            operation,
            HAIKU,
        )
        assert call.outbound.body == body  # forwarded as sent
        assert "authorization" not in call.outbound.headers
    assert call.outbound.headers["anthropic-version"] == "2023-06-01"


def test_a_request_without_a_model_is_a_400() -> None:
    with pytest.raises(BadRequestError, match="'model' is required"):
        compat.parse_request("/openai/v1/responses", {}, b'{"input": "hi"}')


def test_a_streamed_chat_completion_is_metered_exactly_without_showing_a_usage_chunk_not_asked_for() -> None:
    call = chat_call(stream=True)
    assert json.loads(call.outbound.body)["stream_options"] == {"include_usage": True}
    frames = sse(chat_chunk("Hel"), chat_chunk("lo"), USAGE_CHUNK, done=True)
    ledger = FakeLedger()
    served = serve(deps(FakeBedrock(FakeUpstream(200, SSE, frames)), ledger), call)
    events = [text for _, _, text in SseEvents().feed(served.body)]
    # Byte for byte what Bedrock sends a caller that did not ask for usage: no "usage": null.
    assert events == [json.dumps(chunk_without_usage("Hel")), json.dumps(chunk_without_usage("lo")), "[DONE]"]
    [record] = ledger.records
    usage = record.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (20, 100, 30)
    assert record.operation == "ChatCompletions" and record.model_id == GPT_OSS


def test_a_caller_that_asked_for_usage_gets_the_usage_chunk_unchanged() -> None:
    call = chat_call(stream=True, include_usage=True)
    assert not call.hide_stream_usage
    frames = sse(chat_chunk("Hi"), USAGE_CHUNK, done=True)
    served = serve(deps(FakeBedrock(FakeUpstream(200, SSE, frames)), FakeLedger()), call)
    assert served.body == b"".join(f for f in frames if isinstance(f, bytes))


def chunk_without_usage(text: str) -> dict[str, Any]:
    return {name: value for name, value in chat_chunk(text).items() if name != "usage"}


def test_the_usage_chunk_filter_holds_a_split_event_until_it_ends() -> None:
    hide = HiddenUsageChunk()
    event = f"data: {json.dumps(chat_chunk('abc'))}\n\n".encode()
    assert hide(event[:10]) == b""
    assert hide(event[10:]) == f"data: {json.dumps(chunk_without_usage('abc'))}\n\n".encode()
    assert hide(f"data: {json.dumps(USAGE_CHUNK)}\n\n".encode()) == b""


def test_a_non_streamed_chat_completion_is_metered_from_its_usage() -> None:
    answer = json.dumps(
        {"object": "chat.completion", "choices": [], **{"usage": USAGE_CHUNK["usage"]}}
    ).encode()
    ledger = FakeLedger()
    serve(
        deps(FakeBedrock(FakeUpstream(200, {"content-type": "application/json"}, [answer])), ledger),
        chat_call(stream=False),
    )
    [record] = ledger.records
    assert (record.usage.input_tokens, record.usage.cache_read_tokens, record.usage.output_tokens) == (
        20,
        100,
        30,
    )


def test_a_streamed_response_is_metered_from_response_completed() -> None:
    call = compat.parse_request(
        "/openai/v1/responses", {}, json.dumps({"model": GPT_OSS, "input": "x"}).encode()
    )
    frames = sse(
        {"type": "response.created", "response": {"status": "in_progress"}},
        {"type": "response.output_text.delta", "delta": "hi"},
        {"type": "response.completed", "response": {"usage": {"input_tokens": 50, "output_tokens": 7}}},
        named=True,
    )
    ledger = FakeLedger()
    served = serve(deps(FakeBedrock(FakeUpstream(200, SSE, frames)), ledger), call)
    assert served.body == b"".join(f for f in frames if isinstance(f, bytes))
    [record] = ledger.records
    assert (record.usage.input_tokens, record.usage.output_tokens, record.stream_error) == (50, 7, None)


def test_a_streamed_message_takes_input_at_the_start_and_cumulative_output_at_the_end() -> None:
    body = {
        "model": "anthropic.claude-haiku-4-5-20251001-v1:0",
        "max_tokens": 50,
        "messages": [],
        "stream": True,
    }
    call = compat.parse_request("/mantle/anthropic/v1/messages", {}, json.dumps(body).encode())
    frames = sse(
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 40, "output_tokens": 1, "cache_read_input_tokens": 8}},
        },
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 12}},
        {"type": "message_delta", "usage": {"output_tokens": 25}},
        {"type": "message_stop"},
        named=True,
    )
    ledger = FakeLedger()
    serve(deps(FakeBedrock(FakeUpstream(200, SSE, frames)), ledger), call)
    [record] = ledger.records
    assert (record.usage.input_tokens, record.usage.output_tokens, record.usage.cache_read_tokens) == (
        40,
        25,
        8,
    )
    assert record.cost.priced  # Claude Haiku 4.5 prices cache reads


def test_a_mid_stream_error_event_is_relayed_and_recorded_with_the_usage_seen() -> None:
    body = {"model": HAIKU, "max_tokens": 50, "messages": [], "stream": True}
    call = compat.parse_request("/mantle/anthropic/v1/messages", {}, json.dumps(body).encode())
    frames = sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 40, "output_tokens": 1}}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
        named=True,
    )
    ledger = FakeLedger()
    serve(deps(FakeBedrock(FakeUpstream(200, SSE, frames)), ledger), call)
    [record] = ledger.records
    assert (record.stream_error, record.usage.input_tokens) == ("overloaded_error", 40)


def test_a_mantle_call_goes_to_the_mantle_forwarder() -> None:
    runtime = FakeBedrock(FakeUpstream(200, {}, [b"{}"]))
    mantle = FakeBedrock(FakeUpstream(200, {"content-type": "application/json"}, [b'{"usage": {}}']))
    deps = replace(collaborators(runtime, FakeLedger()), mantle=mantle)
    serve(deps, chat_call(stream=False, path="/mantle/v1/chat/completions"))
    assert runtime.sent == [] and [o.path for o in mantle.sent] == ["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        ("openai", {"error": {"message": "spent", "type": "BudgetExceeded", "code": "BudgetExceeded"}}),
        ("anthropic", {"type": "error", "error": {"message": "spent", "type": "rate_limit_error"}}),
    ],
)
def test_errors_come_in_the_shape_the_callers_sdk_reads(dialect: str, expected: dict[str, Any]) -> None:
    error = BudgetExceededError("spent", budget_usd="1", spent_usd="1.5", resets_at="2027-01-01T00:00:00Z")
    response = error_response(error, dialect)
    body = json.loads(response.body)
    assert response.status_code == 429
    for key, value in expected.items():
        if isinstance(value, dict):
            assert value.items() <= body[key].items()
        else:
            assert body[key] == value
    assert body["error"]["spentUsd"] == "1.5"  # the budget's details are kept


def test_paths_say_which_sdk_is_calling() -> None:
    assert compat.dialect("/mantle/anthropic/v1/messages") == "anthropic"
    assert compat.dialect("/openai/v1/chat/completions") == compat.dialect("/mantle/v1/responses") == "openai"


def test_costs_are_exact() -> None:
    ledger = FakeLedger()
    answer = json.dumps({"usage": {"input_tokens": 1000, "output_tokens": 100}}).encode()
    body = json.dumps({"model": HAIKU, "max_tokens": 5, "messages": []}).encode()
    call = compat.parse_request("/mantle/anthropic/v1/messages", {}, body)
    serve(deps(FakeBedrock(FakeUpstream(200, {}, [answer])), ledger), call)
    [record] = ledger.records
    assert record.cost.total == 1000 * Decimal("0.25") + 100 * Decimal("1.25")


@pytest.mark.parametrize(
    ("sent", "relayed"),
    [
        # Compact, last member (the form the OpenAI API writes).
        (
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}',
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"a"}}]}',
        ),
        # Spaced, first member.
        (b'{"usage": null, "id": "c1", "choices": []}', b'{"id": "c1", "choices": []}'),
        # A nested "usage": null is content, not the stream's usage member: only the top one goes.
        (
            b'{"choices":[{"delta":{"tool":{"usage":null}}}],"usage":null}',
            b'{"choices":[{"delta":{"tool":{"usage":null}}}]}',
        ),
        # The text "usage": null inside a string is left alone.
        (
            b'{"choices":[{"delta":{"content":"\\"usage\\":null,"}}]}',
            b'{"choices":[{"delta":{"content":"\\"usage\\":null,"}}]}',
        ),
        # Only member: nothing can be cut cleanly, the event passes as it came.
        (b'{"usage":null}', b'{"usage":null}'),
    ],
)
def test_a_null_usage_member_added_for_metering_is_cut_from_the_bytes(sent: bytes, relayed: bytes) -> None:
    hide = HiddenUsageChunk()
    assert hide(b"data: " + sent + b"\n\n") == b"data: " + relayed + b"\n\n"


def compat_request(path: str, **fields: Any) -> Any:
    body = json.dumps({"model": GPT_OSS, **fields}).encode()
    return compat.parse_request(path, {"content-type": "application/json"}, body), body


@pytest.mark.parametrize(
    ("path", "fields", "end_user"),
    [
        ("/openai/v1/chat/completions", {"user": "u-42"}, "u-42"),
        ("/mantle/v1/responses", {"safety_identifier": "hash-9", "user": "u-42"}, "hash-9"),
        ("/openai/v1/responses", {"safety_identifier": "", "user": "u-42"}, "u-42"),
        ("/mantle/anthropic/v1/messages", {"metadata": {"user_id": " 7f3a "}}, "7f3a"),
        ("/mantle/anthropic/v1/messages", {"user": "not Anthropic's field"}, None),
        ("/openai/v1/chat/completions", {"user": 42}, None),
        ("/openai/v1/chat/completions", {"user": "x" * 257}, None),
        ("/openai/v1/chat/completions", {"user": "line\nbreak"}, None),
        ("/mantle/anthropic/v1/messages", {"metadata": "u-1"}, None),
    ],
)
def test_the_end_user_a_request_names_is_read_without_changing_the_body(
    path: str, fields: dict[str, Any], end_user: str | None
) -> None:
    call, body = compat_request(path, **fields)
    assert call.end_user == end_user
    assert call.outbound.body == body


def test_the_end_user_reaches_the_usage_record() -> None:
    call, _ = compat_request("/openai/v1/chat/completions", user="u-42", messages=[])
    answer = json.dumps({"object": "chat.completion", "choices": [], "usage": USAGE_CHUNK["usage"]}).encode()
    ledger = FakeLedger()
    serve(deps(FakeBedrock(FakeUpstream(200, {"content-type": "application/json"}, [answer])), ledger), call)
    [record] = ledger.records
    assert record.end_user == "u-42"
    assert record.to_dict()["endUser"] == "u-42"
    assert type(record).from_dict(record.to_dict()).end_user == "u-42"
