"""Collecting a Bedrock event stream: events passed on, usage metered, limits and failures."""

from __future__ import annotations

from collections.abc import Iterator

from bedrock_spend.buffered_stream import collect
from bedrock_spend.errors import BedrockTimeoutError
from bedrock_spend.eventstream import (
    chunk_event,
    converse_event,
    decode_messages,
    encode_message,
    exception_event,
)
from bedrock_spend.model_ids import parse_model_id

HAIKU = parse_model_id("anthropic.claude-3-haiku-20240307-v1:0")
METRICS = {"inputTokenCount": 12, "outputTokenCount": 7, "cacheReadInputTokenCount": 30}


def anthropic_stream() -> bytes:
    return b"".join(
        [
            chunk_event(
                {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}
            ),
            chunk_event({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi there"}}),
            chunk_event({"type": "message_delta", "usage": {"output_tokens": 7}}),
            chunk_event({"type": "message_stop", "amazon-bedrock-invocationMetrics": METRICS}),
        ]
    )


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def payloads(body: bytes) -> list[bytes]:
    return [m.payload.rstrip(b" ") for m in decode_messages(body)]


def test_events_split_anywhere_are_passed_on_as_text_and_metered() -> None:
    data = anthropic_stream()
    collected = collect(HAIKU, "InvokeModelWithResponseStream", pieces(data, 7))
    collected.body.decode("utf-8")
    assert payloads(collected.body) == payloads(data)
    usage = collected.usage.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (12, 7, 30)
    assert collected.error is None


def test_a_frame_that_cannot_be_text_makes_the_body_bedrocks_exact_bytes() -> None:
    data = anthropic_stream() + encode_message({":message-type": "event", ":event-type": "x"}, b"\xff\x00")
    collected = collect(HAIKU, "InvokeModelWithResponseStream", iter([data]))
    assert collected.body == data


def test_an_exception_event_is_passed_on_and_named() -> None:
    stream = b"".join(
        [
            converse_event("messageStart", {"role": "assistant"}),
            exception_event("ThrottlingException", "slow down"),
        ]
    )
    collected = collect(HAIKU, "ConverseStream", iter([stream]))
    messages = decode_messages(collected.body)
    assert messages[-1].exception_type == "throttlingException"
    assert collected.error == "ThrottlingException"


def test_a_timeout_mid_stream_ends_with_an_error_event_after_the_events_read() -> None:
    def chunks() -> Iterator[bytes]:
        yield chunk_event({"type": "message_start", "message": {"usage": {"input_tokens": 12}}})
        raise BedrockTimeoutError("Bedrock's stream did not end within 26 s")

    collected = collect(HAIKU, "InvokeModelWithResponseStream", chunks())
    messages = decode_messages(collected.body)
    assert [m.message_type for m in messages] == ["event", "error"]
    assert messages[-1].headers[":error-code"] == "BedrockTimeout"
    assert collected.error == "BedrockTimeout"
    assert collected.usage.usage().input_tokens == 12


def test_a_stream_cut_inside_a_frame_drops_the_partial_frame() -> None:
    data = anthropic_stream()
    collected = collect(HAIKU, "InvokeModelWithResponseStream", iter([data[:-10]]))
    messages = decode_messages(collected.body)
    assert messages[-1].headers[":error-code"] == "BedrockUnavailable"
    assert len(messages) == 4  # three whole events and the error


def test_a_body_over_the_limit_keeps_reading_for_the_final_counts() -> None:
    data = anthropic_stream()
    collected = collect(HAIKU, "InvokeModelWithResponseStream", iter([data]), limit=1500)
    messages = decode_messages(collected.body)
    assert messages[-1].headers[":error-code"] == "StreamTooLarge"
    assert 1 < len(messages) < 5
    assert len(collected.body) <= 1500
    assert collected.usage.usage().output_tokens == 7  # from the last chunk, never passed on
