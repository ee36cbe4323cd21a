"""Faults after and around the Bedrock call: the caller always gets a well-formed answer or
error, and no call Bedrock billed goes unrecorded (it is in the ledger or in a replayable
USAGE_RECORD_UNSAVED log line).

Timeouts are scaled down: a 1 s Bedrock read timeout stands in for the 26 s one that keeps
calls inside API Gateway's 29 s, so the tests take seconds, not minutes.
"""

from __future__ import annotations

import json
import socket
import time
import types
from pathlib import Path
from typing import Any

import pytest

from bedrock_spend import aws
from bedrock_spend.proxy import app
from tests.conftest import KEY_TABLE, USAGE_TABLE, load_event, reset_caches
from tests.helpers import LambdaContext, claude_body, cli_runner

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
pytestmark = pytest.mark.usefixtures("proxy_env")


def call(text: str, request_id: str = "fault-1") -> dict[str, Any]:
    event = load_event("invoke_model")
    event["requestContext"]["requestId"] = request_id
    event["body"] = json.dumps({"modelId": HAIKU, "body": claude_body(text)})
    return app.lambda_handler(event, LambdaContext())  # type: ignore[arg-type]


def error(response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert "Traceback" not in response["body"]
    return dict(body["error"])


def ledger_items(dynamodb: Any) -> list[dict[str, Any]]:
    items = dynamodb.scan(TableName=USAGE_TABLE)["Items"]
    return [i for i in items if i["PK"]["S"].startswith("USAGE#")]


def unsaved_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.usage_record for r in caplog.records if r.getMessage() == "USAGE_RECORD_UNSAVED"]


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDROCK_READ_TIMEOUT_SECONDS", "1")
    reset_caches()


@pytest.mark.usefixtures("short_timeout")
def test_a_bedrock_timeout_is_a_json_504_and_the_abandoned_call_is_recorded(
    emulator: Any, dynamodb: Any
) -> None:
    response = call("slow [[emulator latency_ms=1500]]")
    assert response["statusCode"] == 504
    assert error(response)["type"] == "BedrockTimeout"
    # Bedrock billed it (the emulator answers late); the proxy never saw the usage, so the
    # call is recorded as unpriced with no usage rather than not at all.
    deadline = time.monotonic() + 5
    while not emulator.billed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emulator.billed()) == 1  # Bedrock billed the call the proxy gave up on
    [item] = ledger_items(dynamodb)
    assert item["RequestId"]["S"] == "fault-1"
    assert item["StreamError"]["S"] == "BedrockTimeout"
    assert item["Priced"]["BOOL"] is False


@pytest.mark.usefixtures("short_timeout")
def test_a_slow_answer_inside_the_timeout_is_served_and_recorded(emulator: Any, dynamodb: Any) -> None:
    response = call("slow but in time [[emulator latency_ms=500]]")
    assert response["statusCode"] == 200
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert int(item["OutputTokens"]["N"]) == billed["output_tokens"]


def test_unreachable_bedrock_is_a_json_503(monkeypatch: pytest.MonkeyPatch, dynamodb: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", f"http://127.0.0.1:{closed_port}")
    reset_caches()
    response = call("hello")
    assert response["statusCode"] == 503
    assert error(response)["type"] == "BedrockUnavailable"
    assert ledger_items(dynamodb) == []


def throttle_ledger_writes() -> list[str]:
    """Make every TransactWriteItems on the functions' DynamoDB client fail as throttled."""
    refused: list[str] = []

    def throttled(model: Any, **_: Any) -> tuple[Any, dict[str, Any]]:
        refused.append(model.name)
        http = types.SimpleNamespace(status_code=400, headers={}, raw=None)
        parsed = {
            "Error": {
                "Code": "ThrottlingException",
                "Message": "Rate of requests exceeds the allowed throughput.",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return http, parsed

    aws.client("dynamodb").meta.events.register("before-call.dynamodb.TransactWriteItems", throttled)
    return refused


def test_throttled_dynamodb_still_answers_and_the_logged_record_replays_exactly_once(
    emulator: Any,
    dynamodb: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    refused = throttle_ledger_writes()
    response = call("a call whose record cannot be written")
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["type"] == "message"
    assert refused == ["TransactWriteItems"]
    assert ledger_items(dynamodb) == []

    [record] = unsaved_records(caplog)
    [billed] = emulator.billed()
    assert (record["usage"]["inputTokens"], record["usage"]["outputTokens"]) == (
        billed["input_tokens"],
        billed["output_tokens"],
    )
    log = tmp_path / "proxy.log"
    log.write_text(
        json.dumps({"level": "ERROR", "message": "USAGE_RECORD_UNSAVED", "usage_record": record}) + "\n"
    )

    endpoint = aws_env["AWS_ENDPOINT_URL_DYNAMODB"]
    run = cli_runner(
        capsys, "--endpoint-url", endpoint, "--keys-table", KEY_TABLE, "--usage-table", USAGE_TABLE
    )
    assert run("ledger", "replay", str(log)).code == 0
    assert run("ledger", "replay", str(log)).code == 0  # the second replay finds it already there
    [item] = ledger_items(dynamodb)
    assert item["RequestId"]["S"] == "fault-1"
    assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
    assert item["CostMicroUsd"]["N"] == record["cost"]["totalMicroUsd"]


def test_every_billed_call_is_in_the_ledger_or_the_log_across_mixed_faults(
    emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [
        "fine",
        "no body counts [[emulator malformed]]",
        "refused [[emulator error=ThrottlingException]]",
        "model failed [[emulator error=ModelErrorException]]",
        "fine again",
    ]
    statuses = []
    for n, text in enumerate(texts):
        if n == 4:
            throttle_ledger_writes()
        statuses.append(call(text, f"mixed-{n}")["statusCode"])
    assert statuses == [200, 200, 429, 424, 200]
    billed = {b["request_id"] for b in emulator.billed()}
    assert len(billed) == 3  # errors before the call are not billed
    recorded = {i["RequestId"]["S"] for i in ledger_items(dynamodb)}
    logged = {r["requestId"] for r in unsaved_records(caplog)}
    assert recorded == {"mixed-0", "mixed-1"} and logged == {"mixed-4"}
    assert len(recorded | logged) == len(billed)
