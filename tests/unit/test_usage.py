import json
from typing import Any

import pytest

from bedrock_spend.domain.model_ids import parse_model_id
from bedrock_spend.domain.usage import StreamUsage, Usage, usage_from_converse, usage_from_invoke

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NO_HEADERS: dict[str, str] = {}


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _invoke(model_id: str, body: Any, headers: dict[str, str] | None = None) -> Usage:
    raw = body if isinstance(body, bytes) else _body(body)
    return usage_from_invoke(parse_model_id(model_id), raw, headers or NO_HEADERS)


def _headers(input_tokens: int, output_tokens: int) -> dict[str, str]:
    return {
        "x-amzn-bedrock-input-token-count": str(input_tokens),
        "x-amzn-bedrock-output-token-count": str(output_tokens),
        "x-amzn-bedrock-invocation-latency": "511",
    }


# --- InvokeModel bodies, one realistic body per family ---

ANTHROPIC_BODY = {
    "id": "msg_bdrk_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-haiku-20240307",
    "content": [{"type": "text", "text": "Hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 30,
        "output_tokens": 265,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}
NOVA_BODY = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 12,
        "outputTokens": 40,
        "totalTokens": 69,
        "cacheReadInputTokenCount": 10,
        "cacheWriteInputTokenCount": 7,
    },
}
TITAN_TEXT_BODY = {
    "inputTextTokenCount": 9,
    "results": [
        {"tokenCount": 23, "outputText": "a", "completionReason": "FINISHED"},
        {"tokenCount": 7, "outputText": "b", "completionReason": "LENGTH"},
    ],
}
TITAN_EMBED_BODY = {"embedding": [0.18, -0.36], "inputTextTokenCount": 13}
LLAMA_BODY = {
    "generation": "Hi",
    "prompt_token_count": 9,
    "generation_token_count": 120,
    "stop_reason": "stop",
}
GPT_OSS_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "openai.gpt-oss-120b-1:0",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "<reasoning>x</reasoning>y"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 25, "completion_tokens": 80, "total_tokens": 105},
}
JAMBA_BODY = {
    "id": "j-1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 50, "total_tokens": 70},
}


@pytest.mark.parametrize(
    ("model_id", "body", "expected"),
    [
        (HAIKU, ANTHROPIC_BODY, Usage(input_tokens=30, output_tokens=265, source="anthropic")),
        (
            "us.amazon.nova-pro-v1:0",
            NOVA_BODY,
            Usage(
                input_tokens=12,
                output_tokens=40,
                cache_read_tokens=10,
                cache_write_5m_tokens=7,
                source="nova",
            ),
        ),
        (
            "amazon.titan-text-express-v1",
            TITAN_TEXT_BODY,
            Usage(input_tokens=9, output_tokens=30, source="titan-text"),
        ),
        (
            "amazon.titan-embed-text-v2:0",
            TITAN_EMBED_BODY,
            Usage(input_tokens=13, output_tokens=0, source="titan-embed"),
        ),
        (
            "meta.llama3-1-70b-instruct-v1:0",
            LLAMA_BODY,
            Usage(input_tokens=9, output_tokens=120, source="llama"),
        ),
        (
            "openai.gpt-oss-120b-1:0",
            GPT_OSS_BODY,
            Usage(input_tokens=25, output_tokens=80, source="openai-style"),
        ),
        (
            "ai21.jamba-1-5-large-v1:0",
            JAMBA_BODY,
            Usage(input_tokens=20, output_tokens=50, source="openai-style"),
        ),
    ],
    ids=["anthropic", "nova", "titan-text", "titan-embed", "llama", "gpt-oss", "jamba"],
)
def test_invoke_reads_each_family_body(model_id: str, body: dict[str, Any], expected: Usage) -> None:
    assert _invoke(model_id, body) == expected


def test_openai_cached_tokens_become_cache_read_and_leave_input_non_cached() -> None:
    body = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 60},
        }
    }
    usage = _invoke("qwen.qwen3-32b-v1:0", body)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (40, 60, 5)


def test_openai_usage_object_is_read_even_for_a_family_without_counts() -> None:
    body = {
        "choices": [{"message": {"content": "x"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3},
    }
    usage = _invoke("mistral.mistral-large-2407-v1:0", body)
    assert (usage.input_tokens, usage.output_tokens, usage.source) == (11, 3, "mistral")


# --- Anthropic prompt-cache writes by TTL ---


def _anthropic_cache_body(usage_extra: dict[str, Any]) -> dict[str, Any]:
    usage = {"input_tokens": 30, "output_tokens": 10, "cache_read_input_tokens": 200}
    return {**ANTHROPIC_BODY, "usage": {**usage, **usage_extra}}


def test_anthropic_cache_writes_split_by_ttl_breakdown() -> None:
    body = _anthropic_cache_body(
        {
            "cache_creation_input_tokens": 1500,
            "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
        }
    )
    usage = _invoke(HAIKU, body)
    assert (usage.cache_read_tokens, usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (
        200,
        500,
        1000,
    )


def test_anthropic_cache_writes_without_breakdown_are_5m() -> None:
    usage = _invoke(HAIKU, _anthropic_cache_body({"cache_creation_input_tokens": 1500}))
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (1500, 0)


def test_anthropic_cache_breakdown_short_of_total_puts_remainder_in_5m() -> None:
    body = _anthropic_cache_body(
        {"cache_creation_input_tokens": 1500, "cache_creation": {"ephemeral_1h_input_tokens": 1000}}
    )
    usage = _invoke(HAIKU, body)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (500, 1000)


def test_anthropic_cache_breakdown_without_total_sums_to_total() -> None:
    body = _anthropic_cache_body(
        {"cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 700}}
    )
    usage = _invoke(HAIKU, body)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (300, 700)


# --- header fallback ---

MISTRAL_BODY = {"outputs": [{"text": "Hi", "stop_reason": "stop"}]}
COHERE_COMMAND_BODY = {"response_id": "r", "text": "Hi", "generation_id": "g", "finish_reason": "COMPLETE"}
COHERE_EMBED_BODY = {"embeddings": [[0.1]], "id": "e", "response_type": "embeddings_floats", "texts": ["hi"]}
DEEPSEEK_R1_BODY = {"choices": [{"text": "Hi", "stop_reason": "stop"}]}
CLAUDE_V2_BODY = {"completion": " Hi", "stop_reason": "stop_sequence"}


@pytest.mark.parametrize(
    ("model_id", "body"),
    [
        ("mistral.mistral-7b-instruct-v0:2", MISTRAL_BODY),
        ("cohere.command-r-plus-v1:0", COHERE_COMMAND_BODY),
        ("us.deepseek.r1-v1:0", DEEPSEEK_R1_BODY),
        ("anthropic.claude-v2:1", CLAUDE_V2_BODY),
        (HAIKU, b"{not json"),
        (HAIKU, b""),
        (HAIKU, b"[1, 2]"),
        (HAIKU, b"\xff\xfe\x00garbage"),
        (HAIKU, b"[" * 100_000),
    ],
    ids=[
        "mistral",
        "cohere-command",
        "deepseek-r1",
        "claude-v2",
        "bad-json",
        "empty",
        "array",
        "bad-utf8",
        "deep",
    ],
)
def test_body_without_counts_falls_back_to_headers(model_id: str, body: Any) -> None:
    usage = _invoke(model_id, body, _headers(21, 34))
    assert usage == Usage(input_tokens=21, output_tokens=34, source="headers")


@pytest.mark.parametrize("model_id", ["cohere.embed-english-v3", "cohere.embed-multilingual-v3"])
def test_embedding_output_count_in_headers_is_not_billed(model_id: str) -> None:
    # Cohere Embed's body has no counts; its headers may report output tokens, never billed.
    usage = _invoke(model_id, COHERE_EMBED_BODY, _headers(21, 34))
    assert usage == Usage(input_tokens=21, output_tokens=0, source="headers")


def test_embedding_without_input_count_stays_unknown() -> None:
    headers = {"x-amzn-bedrock-output-token-count": "34"}
    assert not _invoke("cohere.embed-english-v3", COHERE_EMBED_BODY, headers).known


def test_header_names_are_case_insensitive() -> None:
    headers = {
        "X-Amzn-Bedrock-Input-Token-Count": "21",
        "X-AMZN-BEDROCK-OUTPUT-TOKEN-COUNT": "34",
        "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": "5",
        "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": "8",
    }
    usage = _invoke("mistral.mistral-7b-instruct-v0:2", MISTRAL_BODY, headers)
    assert usage == Usage(
        input_tokens=21, output_tokens=34, cache_read_tokens=5, cache_write_5m_tokens=8, source="headers"
    )


def test_body_counts_win_over_headers() -> None:
    usage = _invoke(HAIKU, ANTHROPIC_BODY, _headers(999, 999))
    assert (usage.input_tokens, usage.output_tokens, usage.source) == (30, 265, "anthropic")


def test_headers_fill_only_the_parts_the_body_lacks() -> None:
    body = {"generation": "Hi", "prompt_token_count": 9, "stop_reason": "length"}
    usage = _invoke("meta.llama3-1-70b-instruct-v1:0", body, _headers(999, 34))
    assert (usage.input_tokens, usage.output_tokens, usage.source) == (9, 34, "llama+headers")


def test_header_cache_counts_fill_a_body_without_cache_fields() -> None:
    headers = {"x-amzn-bedrock-cache-read-input-token-count": "100"}
    usage = _invoke("amazon.titan-text-express-v1", TITAN_TEXT_BODY, headers)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.source) == (9, 100, "titan-text+headers")


def test_nothing_usable_gives_source_none() -> None:
    usage = _invoke(HAIKU, b"oops", {"x-amzn-bedrock-input-token-count": "lots"})
    assert usage == Usage(source="none")
    assert not usage.known


# --- defensive numbers ---


def test_numeric_strings_are_accepted() -> None:
    body = {"generation": "Hi", "prompt_token_count": "12", "generation_token_count": 7.0}
    usage = _invoke("meta.llama3-1-70b-instruct-v1:0", body)
    assert (usage.input_tokens, usage.output_tokens) == (12, 7)


@pytest.mark.parametrize(
    "garbage",
    [
        -1,
        1.5,
        True,
        False,
        10**12 + 1,
        "12.0",
        " 12",
        "1e3",
        "-3",
        "",
        None,
        [],
        {},
        float("nan"),
        float("inf"),
    ],
)
def test_garbage_numbers_count_as_not_reported(garbage: Any) -> None:
    body = {"generation": "Hi", "prompt_token_count": garbage, "generation_token_count": 4}
    usage = _invoke("meta.llama3-1-70b-instruct-v1:0", body)
    assert (usage.input_tokens, usage.output_tokens) == (None, 4)


def test_largest_plausible_count_is_accepted() -> None:
    body = {"prompt_token_count": 10**12, "generation_token_count": 0}
    assert _invoke("meta.llama3-1-70b-instruct-v1:0", body).input_tokens == 10**12


def test_garbage_shapes_do_not_raise() -> None:
    body = {"usage": {"input_tokens": 3, "cache_creation": [1, 2], "cache_read_input_tokens": {"x": 1}}}
    usage = _invoke(HAIKU, body)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (3, 0, 0)


def test_titan_text_with_an_unreadable_result_count_leaves_output_to_headers() -> None:
    body = {"inputTextTokenCount": 9, "results": [{"tokenCount": 23}, {"tokenCount": "n/a"}]}
    usage = _invoke("amazon.titan-text-express-v1", body, _headers(1, 40))
    assert (usage.input_tokens, usage.output_tokens) == (9, 40)


# --- images ---


def _image_usage(model_id: str, body: dict[str, Any], request: dict[str, Any] | None) -> Usage:
    request_body = None if request is None else _body(request)
    return usage_from_invoke(parse_model_id(model_id), _body(body), NO_HEADERS, request_body)


def test_titan_image_counts_images_and_reads_size_and_quality() -> None:
    request = {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a cat"},
        "imageGenerationConfig": {"numberOfImages": 2, "width": 512, "height": 768, "quality": "premium"},
    }
    usage = _image_usage(
        "amazon.titan-image-generator-v2:0", {"images": ["aaa", "bbb"], "error": None}, request
    )
    assert usage == Usage(images=2, image_variant="512x768/premium", source="image")


def test_nova_canvas_without_generation_config_uses_defaults() -> None:
    request = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}}
    usage = _image_usage("amazon.nova-canvas-v1:0", {"images": ["aaa"]}, request)
    assert (usage.images, usage.image_variant) == (1, "1024x1024/standard")


def test_stability_images_shape() -> None:
    body = {"seeds": [123], "finish_reasons": [None], "images": ["aaa"]}
    usage = _image_usage("stability.sd3-5-large-v1:0", body, {"prompt": "a cat"})
    assert (usage.images, usage.image_variant, usage.known) == (1, "default", True)


def test_stability_legacy_artifacts_shape() -> None:
    body = {"result": "success", "artifacts": [{"seed": 1, "base64": "aaa", "finishReason": "SUCCESS"}] * 2}
    usage = _image_usage("stability.stable-diffusion-xl-v1", body, {"text_prompts": [{"text": "a cat"}]})
    assert (usage.images, usage.image_variant) == (2, "default")


def test_image_variant_is_unknown_without_the_request_body() -> None:
    usage = _image_usage("amazon.nova-canvas-v1:0", {"images": ["aaa"]}, None)
    assert (usage.images, usage.image_variant) == (1, None)


# --- Converse ---


def _converse(usage: Any) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
        "stopReason": "end_turn",
        "usage": usage,
        "metrics": {"latencyMs": 273},
    }


def test_converse_reads_token_usage() -> None:
    response = _converse(
        {
            "inputTokens": 14,
            "outputTokens": 9,
            "totalTokens": 23,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": 0,
        }
    )
    assert usage_from_converse(response) == Usage(input_tokens=14, output_tokens=9, source="converse")


def test_converse_cache_details_split_writes_by_ttl() -> None:
    response = _converse(
        {
            "inputTokens": 14,
            "outputTokens": 9,
            "totalTokens": 1723,
            "cacheReadInputTokens": 200,
            "cacheWriteInputTokens": 1500,
            "cacheDetails": [{"ttl": "1h", "inputTokens": 1000}, {"ttl": "5m", "inputTokens": 500}],
        }
    )
    usage = usage_from_converse(response)
    assert (usage.cache_read_tokens, usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (
        200,
        500,
        1000,
    )


def test_converse_cache_writes_without_details_are_5m() -> None:
    usage = usage_from_converse(
        _converse({"inputTokens": 14, "outputTokens": 9, "cacheWriteInputTokens": 1500})
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (1500, 0)


def test_converse_cache_total_wins_over_details_and_remainder_is_5m() -> None:
    usage = usage_from_converse(
        _converse(
            {
                "inputTokens": 14,
                "outputTokens": 9,
                "cacheWriteInputTokens": 1500,
                "cacheDetails": [{"ttl": "1h", "inputTokens": 1200}],
            }
        )
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (300, 1200)


def test_converse_details_larger_than_total_are_capped_at_total() -> None:
    usage = usage_from_converse(
        _converse(
            {
                "inputTokens": 14,
                "outputTokens": 9,
                "cacheWriteInputTokens": 1000,
                "cacheDetails": [{"ttl": "1h", "inputTokens": 1200}, {"ttl": "5m", "inputTokens": 100}],
            }
        )
    )
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (0, 1000)


@pytest.mark.parametrize(
    "response", [{}, {"usage": None}, {"usage": "x"}, {"usage": {"inputTokens": -4}}, []]
)
def test_converse_without_usable_usage_gives_source_none(response: Any) -> None:
    assert usage_from_converse(response) == Usage(source="none")


# --- InvokeModelWithResponseStream ---


def _stream(model_id: str, chunks: list[Any]) -> Usage:
    acc = StreamUsage(parse_model_id(model_id))
    for chunk in chunks:
        acc.feed_chunk(chunk)
    return acc.usage()


ANTHROPIC_STREAM = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_bdrk_01",
            "type": "message",
            "role": "assistant",
            "content": [],
            "usage": {
                "input_tokens": 30,
                "output_tokens": 1,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 20,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 20},
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 15}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 40}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 30,
            "outputTokenCount": 40,
            "invocationLatency": 511,
            "firstByteLatency": 358,
            "cacheReadInputTokenCount": 10,
            "cacheWriteInputTokenCount": 20,
        },
    },
]


def test_anthropic_stream_counts_once() -> None:
    assert _stream(HAIKU, ANTHROPIC_STREAM) == Usage(
        input_tokens=30, output_tokens=40, cache_read_tokens=10, cache_write_1h_tokens=20, source="stream"
    )


def test_invocation_metrics_win_over_model_counts() -> None:
    chunks = [
        *ANTHROPIC_STREAM[:-1],
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"outputTokenCount": 41}},
    ]
    usage = _stream(HAIKU, chunks)
    assert (usage.input_tokens, usage.output_tokens) == (30, 41)


def test_cut_off_anthropic_stream_keeps_what_was_seen() -> None:
    usage = _stream(HAIKU, ANTHROPIC_STREAM[:4])
    assert usage == Usage(
        input_tokens=30, output_tokens=15, cache_read_tokens=10, cache_write_1h_tokens=20, source="stream"
    )


def test_titan_stream_uses_cumulative_output_and_string_metrics() -> None:
    chunks = [
        {
            "outputText": "Hel",
            "index": 0,
            "totalOutputTextTokenCount": 2,
            "completionReason": None,
            "inputTextTokenCount": 8,
        },
        {
            "outputText": "lo",
            "index": 0,
            "totalOutputTextTokenCount": 4,
            "completionReason": None,
            "inputTextTokenCount": 8,
        },
        {
            "outputText": "",
            "index": 0,
            "totalOutputTextTokenCount": 4,
            "completionReason": "FINISHED",
            "inputTextTokenCount": 8,
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": "8", "outputTokenCount": "4"},
        },
    ]
    assert _stream("amazon.titan-text-express-v1", chunks) == Usage(
        input_tokens=8, output_tokens=4, source="stream"
    )


def test_cut_off_titan_stream_uses_last_cumulative_count() -> None:
    chunks = [
        {"outputText": "Hel", "index": 0, "totalOutputTextTokenCount": 2, "inputTextTokenCount": 8},
        {"outputText": "lo", "index": 0, "totalOutputTextTokenCount": 4, "inputTextTokenCount": 8},
    ]
    usage = _stream("amazon.titan-text-express-v1", chunks)
    assert (usage.input_tokens, usage.output_tokens) == (8, 4)


def test_llama_stream_takes_last_counts_without_summing() -> None:
    chunks = [
        {"generation": "A", "prompt_token_count": 9, "generation_token_count": 1, "stop_reason": None},
        {"generation": "B", "prompt_token_count": None, "generation_token_count": 2, "stop_reason": None},
        {"generation": "C", "prompt_token_count": 9, "generation_token_count": 3, "stop_reason": "stop"},
    ]
    usage = _stream("meta.llama3-1-70b-instruct-v1:0", chunks)
    assert (usage.input_tokens, usage.output_tokens) == (9, 3)


def test_nova_stream_reads_metadata_usage() -> None:
    chunks = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}},
        {"metadata": {"usage": {"inputTokens": 12, "outputTokens": 40, "cacheReadInputTokenCount": 3}}},
    ]
    usage = _stream("amazon.nova-lite-v1:0", chunks)
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (12, 40, 3)


def test_openai_style_stream_reads_usage_chunk() -> None:
    chunks = [
        {"choices": [{"delta": {"content": "Hi"}}]},
        {"choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 80}},
    ]
    usage = _stream("openai.gpt-oss-20b-1:0", chunks)
    assert (usage.input_tokens, usage.output_tokens) == (25, 80)


def test_empty_stream_reports_nothing() -> None:
    usage = _stream(HAIKU, [])
    assert usage == Usage(source="none")


@pytest.mark.parametrize(
    "chunk",
    [
        [],
        "text",
        {"amazon-bedrock-invocationMetrics": "x"},
        {"type": "message_start", "message": [1]},
        {"type": "message_delta", "usage": {"output_tokens": "many"}},
    ],
)
def test_odd_chunks_are_ignored(chunk: Any) -> None:
    assert _stream(HAIKU, [chunk]) == Usage(source="none")


# --- ConverseStream ---


def _converse_stream(model_id: str, usage: dict[str, Any]) -> Usage:
    acc = StreamUsage(parse_model_id(model_id))
    acc.feed_converse_event("messageStart", {"role": "assistant"})
    acc.feed_converse_event(
        "contentBlockDelta", {"delta": {"text": "Hi"}, "contentBlockIndex": 0, "p": "abc"}
    )
    acc.feed_converse_event("messageStop", {"stopReason": "end_turn"})
    acc.feed_converse_event("metadata", {"usage": usage, "metrics": {"latencyMs": 300}})
    return acc.usage()


def test_converse_stream_reads_metadata_usage_with_cache_details() -> None:
    usage = _converse_stream(
        f"us.{HAIKU}",
        {
            "inputTokens": 14,
            "outputTokens": 9,
            "totalTokens": 1723,
            "cacheReadInputTokens": 200,
            "cacheWriteInputTokens": 1500,
            "cacheDetails": [{"ttl": "1h", "inputTokens": 1000}, {"ttl": "5m", "inputTokens": 500}],
        },
    )
    assert usage == Usage(
        input_tokens=14,
        output_tokens=9,
        cache_read_tokens=200,
        cache_write_5m_tokens=500,
        cache_write_1h_tokens=1000,
        source="stream",
    )


GPT_DOUBLE_COUNTED = {
    "inputTokens": 4995,
    "outputTokens": 19,
    "totalTokens": 10007,
    "cacheWriteInputTokens": 4993,
}


def test_converse_stream_openai_guard_removes_cache_write_from_input() -> None:
    usage = _converse_stream("openai.gpt-oss-120b-1:0", GPT_DOUBLE_COUNTED)
    assert (usage.input_tokens, usage.cache_write_5m_tokens) == (2, 4993)


def test_converse_stream_guard_is_only_for_openai() -> None:
    usage = _converse_stream(HAIKU, GPT_DOUBLE_COUNTED)
    assert (usage.input_tokens, usage.cache_write_5m_tokens) == (4995, 4993)


def test_converse_stream_openai_guard_never_goes_negative() -> None:
    usage = _converse_stream(
        "openai.gpt-oss-120b-1:0", {"inputTokens": 2, "outputTokens": 19, "cacheWriteInputTokens": 4993}
    )
    assert usage.input_tokens == 2


def test_converse_stream_cut_before_metadata_reports_nothing() -> None:
    acc = StreamUsage(parse_model_id(HAIKU))
    acc.feed_converse_event("messageStart", {"role": "assistant"})
    acc.feed_converse_event("contentBlockDelta", {"delta": {"text": "Hi"}, "contentBlockIndex": 0})
    assert acc.usage() == Usage(source="none")
