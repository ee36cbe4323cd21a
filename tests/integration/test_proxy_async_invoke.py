"""Bedrock Runtime's async API (video models) through the real proxy app, the Bedrock emulator and
moto: StartAsyncInvoke metered at submission for the seconds asked for (exact cost by
resolution), GetAsyncInvoke passed through, ListAsyncInvokes refused, and every refusal (output
bucket, allow-list, unpriced policy, no buckets configured) made before Bedrock is called."""

from __future__ import annotations

import itertools
import json
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest

from tests import proxy_client
from tests.conftest import USAGE_TABLE, load_event
from tests.helpers import BedrockTraffic, header, spy_on_bedrock, usage_records

REEL = "amazon.nova-reel-v1:0"
REEL_11 = "amazon.nova-reel-v1:1"
LUMA = "luma.ray-v2:0"
BUCKET = "team-videos"
REEL_USD_PER_SECOND = Decimal("0.08")  # the book's 720p price for both Nova Reel versions
pytestmark = pytest.mark.usefixtures("proxy_env")
_REQUEST_TIMES = itertools.count(1795947362000, 1000)


@pytest.fixture(autouse=True)
def buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the proxy on its first request.
    monkeypatch.setenv("ASYNC_OUTPUT_BUCKETS", f"{BUCKET},other-bucket")


@pytest.fixture
def bedrock_traffic(monkeypatch: pytest.MonkeyPatch) -> BedrockTraffic:
    return spy_on_bedrock(monkeypatch)


def event(method: str, path: str, body: Any = None, **authorizer: str) -> dict[str, Any]:
    ev = load_event("native_invoke")
    ev["httpMethod"] = method
    ev["path"] = path
    ev["resource"] = ev["requestContext"]["resourcePath"] = "/async-invoke"
    ev["pathParameters"] = None
    ev["requestContext"]["httpMethod"] = method
    ev["requestContext"]["path"] = "/v1" + path
    ev["requestContext"]["requestId"] = str(uuid.uuid4())
    ev["requestContext"]["requestTimeEpoch"] = next(_REQUEST_TIMES)
    ev["requestContext"]["authorizer"].update(authorizer)
    ev["body"] = None if body is None else json.dumps(body)
    return ev


def start(
    model_id: str, model_input: Any, s3_uri: str = f"s3://{BUCKET}/jobs/", **auth: str
) -> dict[str, Any]:
    body = {
        "modelId": model_id,
        "modelInput": model_input,
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": s3_uri}},
        "clientRequestToken": str(uuid.uuid4()),
    }
    return proxy_client.invoke(event("POST", "/async-invoke", body, **auth))


def text_video(seconds: int = 6, text: str = "a red kite over the sea") -> dict[str, Any]:
    return {
        "taskType": "TEXT_VIDEO",
        "textToVideoParams": {"text": text},
        "videoGenerationConfig": {"durationSeconds": seconds, "fps": 24, "dimension": "1280x720", "seed": 7},
    }


def ledger_items(dynamodb: Any) -> list[dict[str, Any]]:
    return usage_records(dynamodb.scan(TableName=USAGE_TABLE)["Items"])


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert header(response, "x-amzn-errortype") == body["error"]["type"]
    return dict(body["error"])


def test_a_6_second_720p_nova_reel_video_is_recorded_at_submission(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = start(REEL, text_video(6))
    assert response["statusCode"] == 200, response["body"]
    arn = json.loads(response["body"])["invocationArn"]
    [billed] = emulator.billed()
    assert (billed["operation"], billed["model_id"], billed["video_seconds"]) == ("StartAsyncInvoke", REEL, 6)
    assert billed["invocation_arn"] == arn and billed["s3_uri"] == f"s3://{BUCKET}/jobs/"
    [request] = bedrock_traffic.requests
    assert (request.method, request.url.raw_path) == ("POST", b"/async-invoke")
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")  # the proxy's role
    [item] = ledger_items(dynamodb)
    assert item["Operation"]["S"] == "StartAsyncInvoke"
    assert item["ModelId"]["S"] == REEL
    assert item["VideoSeconds"]["N"] == "6"
    assert item["ImageVariant"]["S"] == "720p"
    assert item["Priced"]["BOOL"] is True
    # 6 s x $0.08 per second, exactly, in micro-USD
    assert Decimal(item["VideoSecondsCostMicroUsd"]["N"]) == 6 * REEL_USD_PER_SECOND * 1_000_000 == 480000
    assert Decimal(item["CostMicroUsd"]["N"]) == 480000


def test_a_12_second_multi_shot_video(emulator: Any, dynamodb: Any) -> None:
    model_input = {
        "taskType": "MULTI_SHOT_MANUAL",
        "multiShotManualParams": {"shots": [{"text": "a kite rises"}, {"text": "it falls"}]},
        "videoGenerationConfig": {"fps": 24, "dimension": "1280x720"},
    }
    response = start("us." + REEL_11, model_input)
    assert response["statusCode"] == 200, response["body"]
    assert emulator.billed()[0]["video_seconds"] == 12
    [item] = ledger_items(dynamodb)
    assert (item["VideoSeconds"]["N"], Decimal(item["CostMicroUsd"]["N"])) == ("12", Decimal(960000))


def test_luma_9_seconds_at_540p_is_recorded_unpriced(emulator: Any, dynamodb: Any) -> None:
    response = start(LUMA, {"prompt": "a kite", "duration": "9s", "resolution": "540p"})
    assert response["statusCode"] == 200, response["body"]
    [item] = ledger_items(dynamodb)
    assert (item["VideoSeconds"]["N"], item["ImageVariant"]["S"]) == ("9", "540p")
    assert item["Priced"]["BOOL"] is False
    assert item["UnpricedReason"]["S"] == "no price for model 'luma.ray-v2:0'"


def test_get_async_invoke_is_passed_through_and_not_recorded(emulator: Any, dynamodb: Any) -> None:
    arn = json.loads(start(REEL, text_video())["body"])["invocationArn"]
    response = proxy_client.invoke(event("GET", "/async-invoke/" + quote(arn, safe="")))
    assert response["statusCode"] == 200, response["body"]
    job = json.loads(response["body"])
    assert (job["invocationArn"], job["status"]) == (arn, "Completed")
    assert job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"] == f"s3://{BUCKET}/jobs/"
    assert len(ledger_items(dynamodb)) == 1  # the submission only
    assert len(emulator.billed()) == 1


def test_a_malformed_invocation_arn_is_refused(emulator: Any) -> None:
    response = proxy_client.invoke(event("GET", "/async-invoke/" + quote("arn:aws:s3:::bucket/x", safe="")))
    assert response["statusCode"] == 400
    assert "not an async invocation ARN" in error_of(response)["message"]


def test_list_async_invokes_is_refused_with_the_reason(
    emulator: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = proxy_client.invoke(event("GET", "/async-invoke"))
    assert response["statusCode"] == 403
    error = error_of(response)
    assert error["type"] == "AccessDeniedException"
    assert "every caller in the AWS account" in error["message"]
    assert bedrock_traffic.requests == []


def test_a_bucket_outside_the_list_is_refused_before_bedrock(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    response = start(REEL, text_video(), s3_uri="s3://someone-elses-bucket/x/")
    assert response["statusCode"] == 400
    error = error_of(response)
    assert error["type"] == "ValidationException"
    assert "'someone-elses-bucket'" in error["message"] and "AsyncOutputBuckets" in error["message"]
    assert bedrock_traffic.requests == [] and emulator.billed() == [] and ledger_items(dynamodb) == []


def test_a_model_outside_the_allow_list_is_refused_before_bedrock(emulator: Any, dynamodb: Any) -> None:
    response = start(REEL, text_video(), allowedModels="amazon.nova-lite-v1:0")
    assert response["statusCode"] == 403
    assert error_of(response)["type"] == "ModelNotAllowed"
    assert emulator.billed() == [] and ledger_items(dynamodb) == []


def test_a_submission_bedrock_refuses_is_not_recorded(emulator: Any, dynamodb: Any) -> None:
    emulator.fault("ValidationException")
    response = start(REEL, text_video())
    assert response["statusCode"] == 400
    assert header(response, "x-amzn-errortype").startswith("ValidationException")
    assert emulator.billed() == [] and ledger_items(dynamodb) == []


def test_the_unpriced_policy_applies(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNPRICED_MODEL_POLICY", "deny")
    response = start(LUMA, {"prompt": "a kite", "duration": "5s", "resolution": "720p"})
    assert response["statusCode"] == 400
    assert error_of(response)["type"] == "UnpricedModel"
    assert emulator.billed() == []


def test_without_output_buckets_video_is_refused_naming_the_parameter(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNC_OUTPUT_BUCKETS", "")
    response = start(REEL, text_video())
    assert response["statusCode"] == 400
    assert "AsyncOutputBuckets" in error_of(response)["message"]
    assert emulator.billed() == []
