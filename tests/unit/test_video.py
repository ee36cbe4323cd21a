"""Video generation (StartAsyncInvoke): the seconds and resolution read from the request, their
exact price per second by resolution, the request checks of the async route, and the part's
record, ledger and metric names."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.domain.errors import BadRequestError
from bedrock_spend.domain.model_ids import parse_model_id
from bedrock_spend.domain.parts import PARTS
from bedrock_spend.domain.prices import DEFAULT_BOOK_PATH, PriceBook, load_price_book
from bedrock_spend.domain.usage import UNREADABLE, Usage, VideoRequest, usage_from_async_invoke, video_request
from bedrock_spend.transport import async_invoke
from bedrock_spend.transport.meters import Requested, meter_for

REEL = parse_model_id("amazon.nova-reel-v1:0")
REEL_11 = parse_model_id("amazon.nova-reel-v1:1")
LUMA = parse_model_id("luma.ray-v2:0")
ARN = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abcdefghij12"
BUCKETS = ("video-out",)


def reel_price(model: str = "amazon.nova-reel-v1:0") -> Decimal:
    """The book's USD per second of 720p Nova Reel video (the book is someone else's data)."""
    with open(DEFAULT_BOOK_PATH, encoding="utf-8") as f:
        book = json.load(f)
    return Decimal(book["models"][model]["video_seconds"]["720p"])


def text_video(**config: Any) -> dict[str, Any]:
    return {
        "taskType": "TEXT_VIDEO",
        "textToVideoParams": {"text": "a red kite"},
        "videoGenerationConfig": config,
    }


# --- seconds and resolution, from the request ----------------------------------------------------


@pytest.mark.parametrize(
    ("model_input", "want"),
    [
        (text_video(durationSeconds=6, fps=24, dimension="1280x720", seed=1), VideoRequest(6, "720p")),
        (text_video(), VideoRequest(6, "720p")),  # 6 s and 1280x720 are the defaults
        ({"taskType": "TEXT_VIDEO", "textToVideoParams": {"text": "x"}}, VideoRequest(6, "720p")),
        (
            {
                "taskType": "MULTI_SHOT_AUTOMATED",
                "multiShotAutomatedParams": {"text": "a story"},
                "videoGenerationConfig": {"durationSeconds": 12, "dimension": "1280x720"},
            },
            VideoRequest(12, "720p"),
        ),
        (
            {
                "taskType": "MULTI_SHOT_AUTOMATED",
                "multiShotAutomatedParams": {"text": "a", "durationSeconds": 18},
            },
            VideoRequest(18, "720p"),
        ),
        (
            {
                "taskType": "MULTI_SHOT_MANUAL",
                "multiShotManualParams": {"shots": [{"text": "one"}, {"text": "two"}, {"text": "three"}]},
            },
            VideoRequest(18, "720p"),
        ),
        (text_video(durationSeconds=6, dimension="720x1280"), VideoRequest(6, "720p")),
        (text_video(durationSeconds=6, dimension="1920x1080"), VideoRequest(6, "1080p")),
        (text_video(durationSeconds=6, dimension="big"), VideoRequest(6, None)),
    ],
)
def test_nova_reel_seconds_and_resolution(model_input: dict[str, Any], want: VideoRequest) -> None:
    assert video_request(REEL, model_input) == want
    assert video_request(REEL_11, model_input) == want


@pytest.mark.parametrize(
    ("model_input", "reason"),
    [
        ([], "modelInput is not a JSON object"),
        ({"textToVideoParams": {"text": "x"}}, "taskType None is not TEXT_VIDEO"),
        (text_video(durationSeconds="6"), "durationSeconds '6' of TEXT_VIDEO"),
        (text_video(durationSeconds=0), "durationSeconds 0 of TEXT_VIDEO"),
        (text_video(durationSeconds=6.5), "durationSeconds 6.5 of TEXT_VIDEO"),
        (text_video(durationSeconds=True), "durationSeconds True"),
        (
            {"taskType": "MULTI_SHOT_AUTOMATED", "multiShotAutomatedParams": {"text": "x"}},
            "durationSeconds None",
        ),
        (
            {"taskType": "MULTI_SHOT_MANUAL", "multiShotManualParams": {"shots": []}},
            "shots is not a non-empty",
        ),
        ({"taskType": "TEXT_VIDEO", "videoGenerationConfig": "6s"}, "videoGenerationConfig is not an object"),
    ],
)
def test_an_unreadable_nova_reel_request_says_why(model_input: Any, reason: str) -> None:
    read = video_request(REEL, model_input)
    assert isinstance(read, str) and reason in read


@pytest.mark.parametrize(
    ("model_input", "want"),
    [
        ({"prompt": "x", "duration": "9s", "resolution": "540p"}, VideoRequest(9, "540p")),
        ({"prompt": "x", "duration": "5s", "resolution": "720P"}, VideoRequest(5, "720p")),
        ({"prompt": "x", "duration": "5s"}, VideoRequest(5, None)),  # no resolution: not guessed
        ({"prompt": "x"}, "duration None is not a length such as '5s'"),
        ({"prompt": "x", "duration": 9}, "duration 9 is not"),
        ({"prompt": "x", "duration": "0s"}, "duration '0s' is not"),
    ],
)
def test_luma_ray_seconds_and_resolution(model_input: dict[str, Any], want: VideoRequest | str) -> None:
    read = video_request(LUMA, model_input)
    if isinstance(want, str):
        assert isinstance(read, str) and want in read
    else:
        assert read == want


def test_another_model_has_no_reader() -> None:
    read = video_request(parse_model_id("amazon.nova-canvas-v1:0"), {"taskType": "TEXT_VIDEO"})
    assert isinstance(read, str) and "no reader of video requests" in read


# --- usage from a StartAsyncInvoke ---------------------------------------------------------------


def start_body(model_id: str, model_input: Any) -> bytes:
    return json.dumps(
        {
            "modelId": model_id,
            "modelInput": model_input,
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://video-out/jobs/"}},
        }
    ).encode()


def test_an_accepted_submission_bills_the_requested_seconds() -> None:
    body = start_body(REEL.raw, text_video(durationSeconds=6, dimension="1280x720"))
    usage = usage_from_async_invoke(REEL, body, json.dumps({"invocationArn": ARN}).encode())
    assert (usage.video_seconds, usage.image_variant, usage.source, usage.known) == (6, "720p", "video", True)
    assert (usage.input_tokens, usage.output_tokens) == (None, None)


def test_an_answer_without_an_invocation_arn_is_unreadable() -> None:
    usage = usage_from_async_invoke(REEL, start_body(REEL.raw, text_video()), b"{}")
    assert usage.source == UNREADABLE + "Bedrock's answer has no invocationArn"
    assert not usage.known


def test_the_meter_reads_the_request_and_the_answer() -> None:
    body = start_body(LUMA.raw, {"prompt": "x", "duration": "9s", "resolution": "540p"})
    meter = meter_for("StartAsyncInvoke", LUMA, {"content-type": "application/json"}, Requested(body=body))
    answer = json.dumps({"invocationArn": ARN}).encode()
    meter.feed(answer[:10])
    meter.feed(answer[10:])
    measured = meter.finish()
    assert (measured.usage.video_seconds, measured.usage.image_variant) == (9, "540p")
    assert measured.stream_error is None


# --- pricing ------------------------------------------------------------------------------------


def test_a_6_second_720p_nova_reel_video_is_6_times_the_per_second_price() -> None:
    book = load_price_book()
    usage = Usage(video_seconds=6, image_variant="720p", source="video")
    cost = book.price(usage, REEL, region="us-east-1")
    assert cost.priced, cost.reason
    assert cost.video_seconds == 6 * reel_price() * 1_000_000
    assert cost.video_seconds == Decimal("480000.000000")  # 6 s x $0.08 = $0.48
    assert cost.total == cost.video_seconds


def test_a_12_second_multi_shot_nova_reel_11_video() -> None:
    model_input = {
        "taskType": "MULTI_SHOT_MANUAL",
        "multiShotManualParams": {"shots": [{"text": "one"}, {"text": "two"}]},
        "videoGenerationConfig": {"dimension": "1280x720"},
    }
    usage = usage_from_async_invoke(
        REEL_11, start_body(REEL_11.raw, model_input), json.dumps({"invocationArn": ARN}).encode()
    )
    cost = load_price_book().price(usage, parse_model_id("us.amazon.nova-reel-v1:1"), region="us-east-1")
    assert usage.video_seconds == 12
    assert cost.priced and cost.total == 12 * reel_price("amazon.nova-reel-v1:1") * 1_000_000
    assert cost.total == Decimal("960000.000000")


def book(entry: dict[str, Any]) -> PriceBook:
    return PriceBook.from_dict(
        {
            "schema_version": 1,
            "version": "test",
            "service_tiers": {"default": "1", "priority": "1.75", "flex": "0.5"},
            "models": {"luma.ray-v2:0": entry},
        }
    )


def test_luma_9_seconds_at_540p_priced_by_resolution() -> None:
    prices = book({"video_seconds": {"540p": "0.75", "720p": "1.5"}})
    usage = Usage(video_seconds=9, image_variant="540p", source="video")
    cost = prices.price(usage, LUMA, region="us-east-1")
    assert cost.priced and cost.video_seconds == Decimal("6750000.000000")  # 9 x $0.75
    high = prices.price(
        Usage(video_seconds=9, image_variant="720p", source="video"), LUMA, region="us-east-1"
    )
    assert high.video_seconds == Decimal("13500000.000000")
    assert prices.is_priced(LUMA, region="us-east-1")


def test_luma_has_no_price_in_the_shipped_book() -> None:
    usage = Usage(video_seconds=9, image_variant="540p", source="video")
    cost = load_price_book().price(usage, LUMA, region="us-east-1")
    assert not cost.priced and cost.reason == "no price for model 'luma.ray-v2:0'"


def test_a_flat_price_needs_no_resolution() -> None:
    prices = book({"video_seconds": {"*": "0.1"}})
    cost = prices.price(Usage(video_seconds=5, source="video"), LUMA, region="us-east-1")
    assert cost.priced and cost.video_seconds == Decimal("500000.000000")


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        (Usage(video_seconds=6, image_variant="1080p", source="video"), "no video second price for '1080p'"),
        (Usage(video_seconds=6, source="video"), "video second variant unknown"),
        (Usage(source=UNREADABLE + "duration None is not a length"), UNREADABLE + "duration None is not"),
        (Usage(source="none"), "no usage reported"),
    ],
)
def test_what_cannot_be_priced_is_unpriced_with_a_reason(usage: Usage, reason: str) -> None:
    cost = load_price_book().price(usage, REEL, region="us-east-1")
    assert not cost.priced and cost.reason is not None and cost.reason.startswith(reason)
    assert cost.total == 0


def test_video_seconds_take_the_tier_multiplier() -> None:
    prices = book({"video_seconds": {"720p": "0.08"}})
    cost = prices.price(
        Usage(video_seconds=6, image_variant="720p", source="video"),
        LUMA,
        region="us-east-1",
        service_tier="flex",
    )
    assert cost.video_seconds == Decimal("240000.000000")


def test_a_video_price_must_be_a_map_of_decimal_strings() -> None:
    with pytest.raises(ValueError, match="non-empty map"):
        book({"video_seconds": "0.08"})
    with pytest.raises(ValueError, match="not a decimal string"):
        book({"video_seconds": {"720p": 0.08}})


def test_the_part_names_are_a_stored_schema() -> None:
    [part] = [p for p in PARTS if p.name == "video_seconds"]
    [count] = part.counts
    assert (count.record, count.attribute, part.cost_attribute, part.total_attribute, part.column) == (
        "videoSeconds",
        "VideoSeconds",
        "VideoSecondsCostMicroUsd",
        "VideoSeconds",
        "VIDEO SECONDS",
    )


# --- the async route's request checks ------------------------------------------------------------


def test_start_forwards_the_checked_body() -> None:
    body = start_body(REEL.raw, text_video())
    call = async_invoke.parse_start(body, BUCKETS)
    assert (call.operation, call.model_id) == ("StartAsyncInvoke", REEL.raw)
    assert (call.outbound.method, call.outbound.path) == ("POST", "/async-invoke")
    assert json.loads(call.outbound.body) == json.loads(body)
    assert call.requested.body == call.outbound.body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (start_body(REEL.raw, text_video()).replace(b"video-out", b"elsewhere"), "output bucket 'elsewhere'"),
        (json.dumps({"modelInput": {}}).encode(), "modelId is required"),
        (json.dumps({"modelId": REEL.raw}).encode(), "modelInput is required"),
        (json.dumps({"modelId": REEL.raw, "modelInput": {}}).encode(), "s3Uri is required"),
        (start_body(REEL.raw, {}).replace(b"s3://video-out/jobs/", b"https://video-out"), "is not an S3 URI"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_start_refuses_before_bedrock(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        async_invoke.parse_start(body, BUCKETS)


def test_a_duplicated_member_cannot_show_bedrock_another_bucket() -> None:
    good = '{"s3OutputDataConfig":{"s3Uri":"s3://video-out/x"}}'
    bad = '{"s3OutputDataConfig":{"s3Uri":"s3://elsewhere/x"}}'
    # Python keeps the last duplicate; the forwarded body holds only the one checked.
    body = f'{{"modelId":"{REEL.raw}","modelInput":{{}},"outputDataConfig":{bad},"outputDataConfig":{good}}}'
    call = async_invoke.parse_start(body.encode(), BUCKETS)
    assert b"elsewhere" not in call.outbound.body


def test_without_buckets_the_route_names_the_parameter() -> None:
    with pytest.raises(BadRequestError, match="AsyncOutputBuckets"):
        async_invoke.parse_start(start_body(REEL.raw, text_video()), ())


def test_the_status_path_is_the_arn_encoded_as_botocore_encodes_it() -> None:
    encoded = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aasync-invoke%2Fabcdefghij12"
    assert async_invoke.status_path("/async-invoke/" + encoded) == "/async-invoke/" + encoded
    assert async_invoke.status_path("/async-invoke/" + ARN) == "/async-invoke/" + encoded
    for bad in ("arn%253Aaws", "arn:aws:bedrock:us-east-1:123456789012:async-invoke/../x", ""):
        with pytest.raises(BadRequestError, match="not an async invocation ARN"):
            async_invoke.status_path("/async-invoke/" + bad)
