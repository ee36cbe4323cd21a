"""Multimodal embeddings: images embedded are billed per image on top of the text tokens;
audio and video (billed per second, reported nowhere) leave the call unpriced, never guessed."""

from __future__ import annotations

import json
from decimal import Decimal

from bedrock_spend.domain.model_ids import parse_model_id
from bedrock_spend.domain.prices import load_price_book
from bedrock_spend.domain.usage import UNREADABLE, StreamUsage, usage_from_invoke

TITAN_MM = parse_model_id("amazon.titan-embed-image-v1")
NOVA_MM = parse_model_id("us.amazon.nova-2-multimodal-embeddings-v1:0")
TOKENS_HEADER = {"x-amzn-bedrock-input-token-count": "7"}


def nova_request(**params: object) -> bytes:
    return json.dumps(
        {
            "taskType": "SINGLE_EMBEDDING",
            "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", **params},
        }
    ).encode()


def test_a_titan_multimodal_embedding_of_text_and_an_image_bills_both() -> None:
    request = json.dumps({"inputText": "a red bicycle", "inputImage": "iVBORw0KGgo="}).encode()
    answer = json.dumps({"embedding": [0.1, 0.2], "inputTextTokenCount": 5}).encode()
    usage = usage_from_invoke(TITAN_MM, answer, {}, request)
    assert (usage.input_tokens, usage.output_tokens, usage.input_images) == (5, 0, 1)
    cost = load_price_book().price(usage, TITAN_MM, region="us-east-1")
    assert cost.priced, cost.reason
    # 5 tokens x $0.80 per 1M = 4 micro-USD; 1 image x $0.00006 = 60 micro-USD.
    assert (cost.input, cost.input_images, cost.total) == (Decimal(4), Decimal(60), Decimal(64))


def test_a_text_only_titan_multimodal_embedding_bills_no_image() -> None:
    request = json.dumps({"inputText": "a red bicycle"}).encode()
    answer = json.dumps({"embedding": [0.1], "inputTextTokenCount": 5}).encode()
    usage = usage_from_invoke(TITAN_MM, answer, {}, request)
    assert usage.input_images == 0
    assert load_price_book().price(usage, TITAN_MM, region="us-east-1").total == Decimal(4)


def test_a_nova_multimodal_image_embedding_bills_the_image() -> None:
    request = nova_request(image={"format": "png", "source": {"bytes": "iVBORw0KGgo="}})
    usage = usage_from_invoke(NOVA_MM, b'{"embeddings": []}', TOKENS_HEADER, request)
    assert (usage.input_tokens, usage.output_tokens, usage.input_images) == (7, 0, 1)
    cost = load_price_book().price(usage, NOVA_MM, region="us-east-1")
    assert cost.priced, cost.reason
    assert cost.input_images == Decimal(60)


def test_a_nova_multimodal_video_or_audio_embedding_is_unpriced_with_the_reason() -> None:
    for media in ("video", "audio"):
        request = nova_request(**{media: {"format": "mp4", "source": {"s3Location": {"uri": "s3://b/k"}}}})
        usage = usage_from_invoke(NOVA_MM, b'{"embeddings": []}', TOKENS_HEADER, request)
        assert usage.source.startswith(UNREADABLE)
        cost = load_price_book().price(usage, NOVA_MM, region="us-east-1")
        assert not cost.priced
        assert cost.reason is not None and "seconds" in cost.reason


def test_a_video_analysis_call_is_unpriced_rather_than_priced_on_its_tokens_alone() -> None:
    # Pegasus bills per second of the video it reads; no answer or header reports those seconds.
    pegasus = parse_model_id("us.twelvelabs.pegasus-1-2-v1:0")
    answer = json.dumps({"message": "a cat", "finishReason": "stop"}).encode()
    usage = usage_from_invoke(pegasus, answer, {"x-amzn-bedrock-output-token-count": "12"}, b"{}")
    cost = load_price_book().price(usage, pegasus, region="us-east-1")
    assert not cost.priced
    assert cost.reason is not None and "seconds of the video" in cost.reason
    stream = StreamUsage(pegasus)
    stream.feed_chunk({"message": "a cat"})
    assert stream.usage().source.startswith(UNREADABLE)
