"""Pricing through the proxy: every model-id form of one model, caching, the unpriced policy.

Expected dollars are worked out by hand from AWS's published prices (per 1M tokens):
Claude Haiku 4.5: global $1 in / $5 out / $0.10 cache read / $1.25 cache write (5m);
regional (in-Region and geo profiles) +10%: $1.10 / $5.50 / $0.11 / $1.375.
Claude Sonnet 4: $3 in / $15 out / $0.30 cache read / $3.75 cache write (5m).
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from tests import proxy_client
from tests.conftest import USAGE_TABLE, load_event, reset_caches
from tests.helpers import usage_records

pytestmark = pytest.mark.usefixtures("proxy_env")

HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
REGIONAL = [
    HAIKU_45,
    f"us.{HAIKU_45}",
    f"eu.{HAIKU_45}",
    f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU_45}",
    f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{HAIKU_45}",
    APP_PROFILE,
]
GLOBAL = [f"global.{HAIKU_45}", f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.{HAIKU_45}"]


def claude(text: str, *, cached_prefix: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if cached_prefix:
        content.append({"type": "text", "text": cached_prefix, "cache_control": {"type": "ephemeral"}})
    content.append({"type": "text", "text": text})
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": content}],
    }


def call(model_id: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
    event = load_event("invoke_model")
    event["requestContext"]["requestId"] = request_id
    event["body"] = json.dumps({"modelId": model_id, "body": body})
    return proxy_client.invoke(event)


def item(dynamodb: Any, request_id: str) -> dict[str, Any]:
    items = usage_records(dynamodb.scan(TableName=USAGE_TABLE)["Items"])
    [found] = [i for i in items if i.get("RequestId", {}).get("S") == request_id]
    return found


def micro(found: dict[str, Any], name: str = "CostMicroUsd") -> Decimal:
    return Decimal(found[name]["N"])


@pytest.fixture
def app_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PROFILE_MODELS", json.dumps({APP_PROFILE: HAIKU_45}))
    reset_caches()


@pytest.mark.usefixtures("app_profile")
def test_every_id_form_of_one_model_costs_the_same_or_the_documented_uplift(
    emulator: Any, dynamodb: Any
) -> None:
    body = claude("count the same words every time please")
    for n, model_id in enumerate(REGIONAL + GLOBAL):
        assert call(model_id, body, f"form-{n}")["statusCode"] == 200, model_id
    billed = emulator.billed()
    assert len({(b["input_tokens"], b["output_tokens"]) for b in billed}) == 1
    tokens_in, tokens_out = billed[0]["input_tokens"], billed[0]["output_tokens"]
    regional = Decimal(tokens_in) * Decimal("1.10") + Decimal(tokens_out) * Decimal("5.50")
    global_ = Decimal(tokens_in) * Decimal("1") + Decimal(tokens_out) * Decimal("5")
    costs = {model_id: micro(item(dynamodb, f"form-{n}")) for n, model_id in enumerate(REGIONAL + GLOBAL)}
    for model_id in REGIONAL:
        assert costs[model_id] == regional, model_id
    for model_id in GLOBAL:
        assert costs[model_id] == global_, model_id
    assert regional == global_ * Decimal("1.1")


def test_cache_heavy_calls_cost_what_the_price_page_says(emulator: Any, dynamodb: Any) -> None:
    sonnet = "anthropic.claude-sonnet-4-20250514-v1:0"
    prefix = " ".join(f"policy{n}" for n in range(400))  # a long shared system context
    assert call(sonnet, claude("first question", cached_prefix=prefix), "write")["statusCode"] == 200
    assert call(sonnet, claude("second question", cached_prefix=prefix), "read")["statusCode"] == 200
    write_call, read_call = emulator.billed()
    assert write_call["cache_write_5m_tokens"] > 400 and write_call["cache_read_tokens"] == 0
    assert read_call["cache_read_tokens"] == write_call["cache_write_5m_tokens"]

    written, read = item(dynamodb, "write"), item(dynamodb, "read")
    # Sonnet 4: cache write $3.75/M = 1.25 x input; cache read $0.30/M = 0.1 x input.
    assert micro(written, "CacheWriteCostMicroUsd") == write_call["cache_write_5m_tokens"] * Decimal("3.75")
    assert micro(read, "CacheReadCostMicroUsd") == read_call["cache_read_tokens"] * Decimal("0.30")
    assert micro(read, "InputCostMicroUsd") == read_call["input_tokens"] * Decimal("3")
    assert micro(read) == (
        read_call["input_tokens"] * Decimal("3")
        + read_call["output_tokens"] * Decimal("15")
        + read_call["cache_read_tokens"] * Decimal("0.30")
    )
    # Cache tokens are never also priced as input: the read call is cheaper than the write.
    assert micro(read) < micro(written)


def test_deny_policy_refuses_unpriced_models_before_bedrock(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNPRICED_MODEL_POLICY", "deny")
    reset_caches()
    provisioned = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef012345"
    response = call(provisioned, claude("hi"), "denied")
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["type"] == "UnpricedModel"
    assert emulator.billed() == []
    assert call(HAIKU_45, claude("hi"), "priced")["statusCode"] == 200


def test_unresolvable_application_profile_is_served_and_unpriced(emulator: Any, dynamodb: Any) -> None:
    # No static mapping and no reachable control plane: served, recorded, flagged unpriced.
    response = call(APP_PROFILE, claude("hi"), "unresolved")
    assert response["statusCode"] == 200
    found = item(dynamodb, "unresolved")
    assert found["Priced"]["BOOL"] is False
    assert "application inference profile" in found["UnpricedReason"]["S"]


def test_no_lambda_handler_imports_the_price_catalogue() -> None:
    code = (
        "import sys, bedrock_spend.proxy.app, bedrock_spend.authorizer.app;"
        "print('genai_prices' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
