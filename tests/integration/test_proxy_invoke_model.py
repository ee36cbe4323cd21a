"""POST /invoke-model through the real proxy handler, the Bedrock emulator and moto."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.aws import metrics
from bedrock_spend.domain.prices import load_price_book
from bedrock_spend_local.emulator import error_statuses
from tests import proxy_client
from tests.conftest import USAGE_TABLE, load_event
from tests.helpers import (
    claude_body,
    emf_records,
    emf_value,
    header,
    metric_names,
    usage_records,
)

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
pytestmark = pytest.mark.usefixtures("proxy_env")


def call(payload: Any, *, raw: str | None = None, **authorizer: str) -> dict[str, Any]:
    event = load_event("invoke_model")
    event["body"] = raw if raw is not None else json.dumps(payload)
    event["requestContext"]["authorizer"].update(authorizer)
    return proxy_client.invoke(event)


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    assert header(response, "Content-Type") == "application/json"
    body = json.loads(response["body"])
    assert set(body["error"]) >= {"type", "message"}
    return dict(body["error"])


def ledger_items(dynamodb: Any) -> list[dict[str, Any]]:
    return usage_records(dynamodb.scan(TableName=USAGE_TABLE)["Items"])


def test_claude_call_returns_the_model_body_and_emits_metrics(
    emulator: Any, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    response = call({"modelId": HAIKU, "body": claude_body()})
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    billed = emulator.billed()
    assert len(billed) == 1
    assert body["type"] == "message"
    assert body["usage"]["input_tokens"] == billed[0]["input_tokens"]

    records = emf_records(capsys.readouterr().out)
    [emf] = [r for r in records if "Invocations" in metric_names(r)]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["PrincipalId", "ModelId"]]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "BedrockCostApportionment"
    assert (emf["PrincipalId"], emf["ModelId"]) == ("User::alice", HAIKU)
    assert emf["PriceBookVersion"] == load_price_book().version
    assert emf["RequestId"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    # Four metrics per principal x model: what costs money every month is kept small.
    assert metric_names(emf) == {"Invocations", "InputTokensUsed", "OutputTokensUsed", "TotalCost"}
    assert emf_value(emf, "InputTokensUsed") == billed[0]["input_tokens"]
    assert emf_value(emf, "OutputTokensUsed") == billed[0]["output_tokens"]
    units = {m["Name"]: m["Unit"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["InputTokensUsed"] == "Count" and units["TotalCost"] == "None"
    # Claude 3 Haiku: $0.25 / 1M input, $1.25 / 1M output; part costs ride along as properties.
    expected = Decimal(billed[0]["input_tokens"]) * Decimal("0.25") / 10**6
    assert float(emf["InputTokensCost"]) == pytest.approx(float(expected))
    total = expected + Decimal(billed[0]["output_tokens"]) * Decimal("1.25") / 10**6
    assert emf_value(emf, "TotalCost") == pytest.approx(float(total))

    [item] = ledger_items(dynamodb)
    assert item["PrincipalId"]["S"] == "User::alice"
    assert item["KeyId"]["S"] == "kid_0a1b2c3d4e5f"
    assert int(item["InputTokens"]["N"]) == billed[0]["input_tokens"]
    assert item["Priced"]["BOOL"] is True


@pytest.mark.parametrize(
    "model_id",
    [
        "eu.anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
        "amazon.nova-lite-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
        "amazon.titan-embed-text-v2:0",
        "mistral.mistral-large-2407-v1:0",
    ],
)
def test_every_model_id_form_and_family_is_served_and_recorded(
    model_id: str, emulator: Any, dynamodb: Any
) -> None:
    body: dict[str, Any] = claude_body()
    if "titan-embed" in model_id:
        body = {"inputText": "hello world"}
    elif "llama" in model_id or "mistral" in model_id:
        body = {"prompt": "hello there", "max_tokens": 20}
    elif "nova" in model_id:
        body = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}
    response = call({"modelId": model_id, "body": body})
    assert response["statusCode"] == 200, response["body"]
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["ModelId"]["S"] == model_id
    assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
    assert int(item["OutputTokens"]["N"]) == billed["output_tokens"]


def test_unpriced_model_is_served_and_flagged(
    emulator: Any, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    model_id = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef012345"
    response = call({"modelId": model_id, "body": claude_body()})
    assert response["statusCode"] == 200
    records = emf_records(capsys.readouterr().out)
    [emf] = [r for r in records if "Invocations" in metric_names(r)]
    assert "TotalCost" not in metric_names(emf)
    [by_model] = [r for r in records if "UnpricedInvocations" in metric_names(r)]
    assert by_model["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["ModelId"]]
    assert emf_value(by_model, "UnpricedInvocations") == 1
    [item] = ledger_items(dynamodb)
    assert item["Priced"]["BOOL"] is False
    assert item["UnpricedReason"]["S"]


def bedrock_error_type(response: dict[str, Any]) -> str:
    """Bedrock's error, relayed unchanged: its JSON message and its x-amzn-errortype header."""
    assert header(response, "Content-Type") == "application/json"
    assert json.loads(response["body"])["message"]
    return str(header(response, "x-amzn-errortype")).split(":", 1)[0]


def test_throttled_bedrock_call_is_relayed_as_bedrock_sent_it(emulator: Any) -> None:
    emulator.fault("ThrottlingException")
    response = call({"modelId": HAIKU, "body": claude_body()})
    assert response["statusCode"] == 429
    assert bedrock_error_type(response) == "ThrottlingException"
    assert emulator.billed() == []


@pytest.mark.parametrize(
    "error_type", sorted(set(error_statuses()) - {"ConflictException", "ModelStreamErrorException"})
)
def test_every_bedrock_error_maps_to_its_own_status(
    error_type: str, emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.fault(error_type)
    response = call({"modelId": HAIKU, "body": claude_body()})
    assert response["statusCode"] == error_statuses()[error_type]
    assert bedrock_error_type(response) == error_type
    assert "Traceback" not in response["body"]
    errors = [r for r in emf_records(capsys.readouterr().out) if "BedrockErrors" in metric_names(r)]
    assert errors and errors[0]["ErrorType"] == error_type


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("this is not json", "not valid JSON"),
        ('{"body": {}}', "'modelId' is required"),
        ('{"modelId": "anthropic.claude-3-haiku-20240307-v1:0", "body": {}, "extra": 1}', "unknown field"),
        ('{"modelId": "not a model id", "body": {}}', "invalid modelId"),
    ],
)
def test_bad_requests_are_400_and_never_reach_bedrock(raw: str, fragment: str, emulator: Any) -> None:
    response = call(None, raw=raw)
    assert response["statusCode"] == 400
    assert fragment in error_of(response)["message"]
    assert emulator.billed() == []


def test_malformed_bedrock_body_is_passed_through_and_still_recorded(emulator: Any, dynamodb: Any) -> None:
    response = call({"modelId": HAIKU, "body": claude_body("hi [[emulator malformed]]")})
    assert response["statusCode"] == 200
    [item] = ledger_items(dynamodb)
    # The body had no usage; the token-count headers still did.
    assert int(item["InputTokens"]["N"]) == emulator.billed()[0]["input_tokens"]


def test_metric_failure_does_not_fail_the_call(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, dynamodb: Any
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("metrics backend exploded")

    monkeypatch.setattr(metrics.AmazonCloudWatchEMFProvider, "flush_metrics", broken)
    response = call({"modelId": HAIKU, "body": claude_body()})
    assert response["statusCode"] == 200
    assert len(ledger_items(dynamodb)) == 1


def test_ledger_failure_logs_a_replayable_record_and_still_answers(
    monkeypatch: pytest.MonkeyPatch,
    emulator: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("USAGE_TABLE", "no-such-table")
    from tests.conftest import reset_caches

    reset_caches()
    response = call({"modelId": HAIKU, "body": claude_body()})
    assert response["statusCode"] == 200
    [line] = [r for r in caplog.records if r.getMessage() == "USAGE_RECORD_UNSAVED"]
    record = line.usage_record
    assert record["principalId"] == "User::alice"
    assert record["usage"]["inputTokens"] == emulator.billed()[0]["input_tokens"]
    assert Decimal(record["cost"]["totalMicroUsd"]) > 0
    unsaved = [r for r in emf_records(capsys.readouterr().out) if "UsageRecordsUnsaved" in metric_names(r)]
    assert unsaved


def test_unknown_route_is_a_json_404() -> None:
    event = load_event("invoke_model")
    event["path"] = event["resource"] = "/nope"
    response = proxy_client.invoke(event)
    assert response["statusCode"] == 404
    assert error_of(response)["type"] == "NotFound"


def test_request_without_authorizer_context_is_refused(emulator: Any) -> None:
    event = load_event("invoke_model")
    event["requestContext"]["authorizer"] = None
    response = proxy_client.invoke(event)
    assert response["statusCode"] == 401
    assert emulator.billed() == []


def test_same_request_id_is_recorded_once(emulator: Any, dynamodb: Any) -> None:
    for _ in range(2):
        assert call({"modelId": HAIKU, "body": claude_body()})["statusCode"] == 200
    assert len(emulator.billed()) == 2
    assert len(ledger_items(dynamodb)) == 1


def test_service_tier_bedrock_reports_is_the_one_priced(emulator: Any, dynamodb: Any) -> None:
    body = {"messages": [{"role": "user", "content": [{"text": "price me at two tiers"}]}]}
    model = "amazon.nova-pro-v1:0"
    assert call({"modelId": model, "body": body})["statusCode"] == 200
    event_items = ledger_items(dynamodb)
    default_cost = Decimal(event_items[0]["CostMicroUsd"]["N"])

    event = load_event("invoke_model")
    event["requestContext"]["requestId"] = "second-request"
    event["body"] = json.dumps({"modelId": model, "body": body, "serviceTier": "flex"})
    assert proxy_client.invoke(event)["statusCode"] == 200  # type: ignore[arg-type]
    [flex] = [i for i in ledger_items(dynamodb) if i["RequestId"]["S"] == "second-request"]
    assert flex["ServiceTier"]["S"] == "flex"
    # Flex is half the standard rate in the price book (docs/prices.md).
    assert Decimal(flex["CostMicroUsd"]["N"]) * 2 == default_cost
