"""Budgets and allow-lists are enforced before Bedrock is called; the soft threshold warns."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.aws.ledger import Ledger, total_key
from tests import proxy_client
from tests.conftest import USAGE_TABLE, load_event
from tests.helpers import claude_body, emf_records, emf_value, metric_names

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
pytestmark = pytest.mark.usefixtures("proxy_env")


def call(n: int, *, budget: str = "", models: str = "", model_id: str = HAIKU) -> dict[str, Any]:
    event = load_event("invoke_model")
    event["requestContext"]["requestId"] = f"req-{n}"
    event["requestContext"]["authorizer"].update(monthlyBudgetUsd=budget, allowedModels=models)
    event["body"] = json.dumps({"modelId": model_id, "body": claude_body("what does a budget buy")})
    return proxy_client.invoke(event)


def month_spend(dynamodb: Any) -> Decimal:
    item = dynamodb.get_item(TableName=USAGE_TABLE, Key=total_key("User::alice", "2026-11")).get("Item", {})
    return Decimal(item.get("CostMicroUsd", {}).get("N", "0"))


def test_a_spent_budget_refuses_the_next_call_without_calling_bedrock(
    emulator: Any, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert call(0)["statusCode"] == 200
    one_call = month_spend(dynamodb) / 1_000_000  # USD
    budget = str(one_call * 2)  # exactly two calls' worth
    assert call(1, budget=budget)["statusCode"] == 200
    refused = call(2, budget=budget)
    assert refused["statusCode"] == 429
    error = json.loads(refused["body"])["error"]
    assert error["type"] == "BudgetExceeded"
    assert error["budgetUsd"] == budget
    assert Decimal(error["spentUsd"]) == one_call * 2
    assert error["resetsAt"] == "2026-12-01T00:00:00Z"  # the event's request time is 2026-11-29
    assert budget in error["message"]
    assert len(emulator.billed()) == 2  # the refused call never reached Bedrock
    refusals = [r for r in emf_records(capsys.readouterr().out) if "BudgetRefusals" in metric_names(r)]
    assert [r["PrincipalId"] for r in refusals] == ["User::alice"]


def test_budget_overshoot_is_bounded_by_calls_in_flight(emulator: Any, dynamodb: Any) -> None:
    # Sequential calls have one call in flight: spend may pass the budget by at most one call.
    budget = Decimal("0.00005")
    statuses = [call(n, budget=str(budget))["statusCode"] for n in range(6)]
    served = statuses.count(200)
    assert statuses == [200] * served + [429] * (6 - served)
    spent = month_spend(dynamodb) / 1_000_000
    per_call = spent / served
    assert spent >= budget and spent - per_call < budget


def test_soft_threshold_warns_once_when_crossed(
    emulator: Any, dynamodb: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert call(0)["statusCode"] == 200
    one_call = month_spend(dynamodb) / 1_000_000
    budget = str(one_call * 3)  # 80 % of it is 2.4 calls: crossed by the third call, not the second

    def crossings() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [r for r in emf_records(out) if "BudgetSoftThresholdCrossed" in metric_names(r)]

    crossings()
    assert call(1, budget=budget)["statusCode"] == 200  # spend: 2 calls
    assert crossings() == []
    assert call(2, budget=budget)["statusCode"] == 200  # spend: 3 calls, past 2.4
    [crossing] = crossings()
    assert crossing["PrincipalId"] == "User::alice"
    assert emf_value(crossing, "BudgetSoftThresholdCrossed") == 1
    assert any(r.getMessage() == "budget soft threshold crossed" for r in caplog.records)
    assert call(3, budget=str(one_call * 10))["statusCode"] == 200  # already past: no second warning
    assert crossings() == []


def test_allow_list_refuses_a_model_outside_it_before_bedrock(emulator: Any) -> None:
    refused = call(0, models="amazon.nova-*,meta.*")
    assert refused["statusCode"] == 403
    error = json.loads(refused["body"])["error"]
    assert error["type"] == "ModelNotAllowed"
    assert HAIKU in error["message"]
    assert emulator.billed() == []
    assert call(1, models="anthropic.claude-3-haiku-*")["statusCode"] == 200


def test_allow_list_matches_geo_profiles_by_their_base_model(emulator: Any) -> None:
    assert call(0, models="anthropic.*", model_id=f"eu.{HAIKU}")["statusCode"] == 200


def test_monthly_totals_equal_the_sum_of_request_records(emulator: Any, dynamodb: Any) -> None:
    for n in range(5):
        assert call(n)["statusCode"] == 200
    items = [i for i in dynamodb.scan(TableName=USAGE_TABLE)["Items"] if i["PK"]["S"].startswith("USAGE#")]
    assert month_spend(dynamodb) == sum(Decimal(i["CostMicroUsd"]["N"]) for i in items)
    assert Ledger(USAGE_TABLE).month_spend("User::alice", "2026-11") == month_spend(dynamodb)
