"""Budgets and allow-lists on the local stack: keys minted with the CLI, calls over HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import cli, emulator_billed, http
from tests.helpers import claude_body

pytestmark = pytest.mark.e2e
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def invoke(stack: LocalStack, key: str, model_id: str = HAIKU) -> tuple[int, dict[str, object]]:
    reply = http(
        f"{stack.url}/invoke-model",
        body=json.dumps({"modelId": model_id, "body": claude_body("spend a little")}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    return reply.status, reply.json()


def create(stack: LocalStack, *options: str) -> str:
    code, out = cli(stack, "keys", "create", "--format", "json", *options)
    assert code == 0, out
    return str(json.loads(out)["key"])


def test_a_key_over_budget_is_refused_without_a_bedrock_call(stack: LocalStack) -> None:
    # One Claude 3 Haiku call of this size costs about $0.00002: the budget is spent by the first.
    key = create(stack, "--username", "frugal", "--budget", "0.00001")
    before = len(emulator_billed(stack))
    assert invoke(stack, key)[0] == 200
    status, body = invoke(stack, key)
    assert status == 429
    error = body["error"]
    assert isinstance(error, dict) and error["type"] == "BudgetExceeded"
    assert error["budgetUsd"] == "0.00001"
    assert len(emulator_billed(stack)) == before + 1
    code, out = cli(stack, "usage", "--principal", "frugal", "--format", "json")
    assert code == 0, out
    [row] = json.loads(out)
    assert row["calls"] == 1  # the refused call is not in the ledger either


def test_an_allow_list_refuses_other_models_without_a_bedrock_call(stack: LocalStack) -> None:
    key = create(stack, "--username", "narrow", "--model", "amazon.nova-*")
    before = len(emulator_billed(stack))
    status, body = invoke(stack, key)
    assert status == 403
    assert isinstance(body["error"], dict) and body["error"]["type"] == "ModelNotAllowed"
    assert len(emulator_billed(stack)) == before


def test_32_concurrent_callers_overshoot_a_tiny_budget_by_at_most_four_calls(stack: LocalStack) -> None:
    """Real concurrency through the stack, Bedrock answering after 1 s: without a bound every
    call in flight when the budget is crossed finishes past it (measured before: +100 %)."""
    budget = Decimal("0.00001")  # less than one call: the first round of calls crosses it
    key = create(stack, "--username", "crowd", "--budget", str(budget))
    before = len(emulator_billed(stack))
    body = json.dumps({"modelId": HAIKU, "body": claude_body("crowd [[emulator latency_ms=1000]]")}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def call(_: int) -> tuple[int, dict[str, Any]]:
        reply = http(f"{stack.url}/invoke-model", body=body, headers=headers)
        return reply.status, reply.json()

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(32)))

    served = [body for status, body in results if status == 200]
    refused = [body for status, body in results if status != 200]
    billed = emulator_billed(stack)[before:]
    assert 1 <= len(served) == len(billed) <= 4  # MaxInFlightPerKey's default
    for body in refused:
        error = body["error"]
        assert error["type"] == "BudgetExceeded", error
        assert error["budgetUsd"] == str(budget) and Decimal(error["spentUsd"]) > budget
        assert error["resetsAt"].endswith("-01T00:00:00Z")
    code, out = cli(stack, "usage", "--principal", "crowd", "--format", "json")
    assert code == 0, out
    [row] = json.loads(out)
    assert row["calls"] == len(billed)
    spent = Decimal(str(row["cost_micro_usd"])) / 1_000_000
    assert spent - budget <= 4 * (spent / len(billed))  # the documented bound: 4 calls' worth
