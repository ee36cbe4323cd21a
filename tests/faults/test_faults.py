"""Faults after and around the Bedrock call: the caller always gets a well-formed answer or
error, and no call Bedrock billed goes unrecorded (it is in the ledger or in a replayable
USAGE_RECORD_UNSAVED log line).

Timeouts are scaled down: a 1 s Bedrock read timeout stands in for the 26 s one that keeps
calls inside API Gateway's 29 s, so the tests take seconds, not minutes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import types
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bedrock_spend import aws
from bedrock_spend.proxy import app
from bedrock_spend_local.tables import create_tables
from tests.conftest import KEY_TABLE, USAGE_TABLE, load_event, reset_caches
from tests.helpers import LambdaContext, claude_body, cli_runner, emf_records, header, metric_names

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


def test_bedrock_closing_the_connection_is_a_json_503(
    monkeypatch: pytest.MonkeyPatch, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def hang_up() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)  # read the request, then close without an answer

        threading.Thread(target=hang_up, daemon=True).start()
        monkeypatch.setenv(
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", f"http://127.0.0.1:{listener.getsockname()[1]}"
        )
        reset_caches()
        response = call("hello")
    assert_json_error(response, 503, "BedrockUnavailable")
    assert ledger_items(dynamodb) == [] and unsaved_records(caplog) == []


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


# --- every Bedrock error, on every metered route ------------------------------------------------

# Reference §6 (botocore's model): the status each Bedrock error shape has. Written out here,
# not imported, so the test is an independent check of the proxy's mapping.
REFERENCE_ERRORS = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "ConflictException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
ROUTES = ("invoke-model", "converse", "invoke-with-response-stream", "converse-stream")


def route_call(route: str, text: str, request_id: str) -> dict[str, Any]:
    """A call of Claude 3 Haiku on one of the metered routes, as API Gateway delivers it."""
    if route == "invoke-model":
        return call(text, request_id)
    converse = route.startswith("converse")
    event = load_event("converse" if converse else "native_invoke")
    path = f"/model/{quote(HAIKU, safe='')}/{route}"
    event["path"] = path
    event["pathParameters"] = {"proxy": path.removeprefix("/model/")}
    event["requestContext"]["path"] = "/v1" + path
    event["requestContext"]["requestId"] = request_id
    body = {"messages": [{"role": "user", "content": [{"text": text}]}]} if converse else claude_body(text)
    event["body"] = json.dumps(body)
    return app.lambda_handler(event, LambdaContext())  # type: ignore[arg-type]


def assert_json_error(response: dict[str, Any], status: int, error_type: str) -> None:
    assert response["statusCode"] == status, response["body"][:300]
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "x-amzn-errortype") == error_type
    details = error(response)
    assert details["type"] == error_type and details["message"]


def assert_every_billed_call_recorded(
    emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture, answers: dict[str, dict[str, Any]]
) -> None:
    """Each call the emulator billed is in the ledger or in a USAGE_RECORD_UNSAVED line.

    ``answers`` maps our request ids to the handler's responses, which carry Bedrock's
    request id; a billed call no answer names (a timeout) must still be recorded by our id.
    """
    bedrock_ids = {header(r, "x-amzn-requestid"): ours for ours, r in answers.items()}
    recorded = {i["RequestId"]["S"] for i in ledger_items(dynamodb)}
    logged = {r["requestId"] for r in unsaved_records(caplog)}
    billed = emulator.billed()
    named = [bedrock_ids[b["request_id"]] for b in billed if b["request_id"] in bedrock_ids]
    assert set(named) <= recorded | logged
    assert len(billed) <= len(recorded | logged)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("error_type", "status"), sorted(REFERENCE_ERRORS.items()))
def test_every_bedrock_error_keeps_its_status_and_type_and_nothing_is_recorded(
    route: str, error_type: str, status: int, emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.fault(error_type)
    response = route_call(route, "hello", f"error-{route}")
    assert_json_error(response, status, error_type)
    assert emulator.billed() == []  # refused before the model ran: not billed, not recorded
    assert ledger_items(dynamodb) == [] and unsaved_records(caplog) == []


# --- the ledger unavailable or throttled ------------------------------------------------------------


def test_a_deleted_ledger_table_still_answers_and_the_logged_record_replays_exactly_once(
    emulator: Any,
    dynamodb: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    before = call("recorded as usual", "table-1")
    dynamodb.delete_table(TableName=USAGE_TABLE)
    during = call("the ledger table is gone", "table-2")
    assert before["statusCode"] == during["statusCode"] == 200
    assert json.loads(during["body"])["type"] == "message"  # the caller still gets the answer

    [record] = unsaved_records(caplog)
    billed = emulator.billed()
    assert record["requestId"] == "table-2" and len(billed) == 2
    assert (record["usage"]["inputTokens"], record["usage"]["outputTokens"]) == (
        billed[1]["input_tokens"],
        billed[1]["output_tokens"],
    )
    assert record["modelId"] == HAIKU and record["principalId"] == "User::alice"
    emitted = emf_records(capsys.readouterr().out)
    assert any("UsageRecordsUnsaved" in metric_names(r) for r in emitted)

    create_tables(dynamodb, {"UsageTable": USAGE_TABLE})
    log = tmp_path / "proxy.log"
    log.write_text(
        json.dumps({"level": "ERROR", "message": "USAGE_RECORD_UNSAVED", "usage_record": record}) + "\n"
    )
    run = cli_runner(
        capsys, "--endpoint-url", aws_env["AWS_ENDPOINT_URL_DYNAMODB"], "--usage-table", USAGE_TABLE
    )
    first = run("ledger", "replay", str(log), "--format", "json")
    second = run("ledger", "replay", str(log), "--format", "json")
    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert (first.json()["written"], second.json()["written"], second.json()["already_present"]) == (1, 0, 1)
    [item] = ledger_items(dynamodb)
    assert item["RequestId"]["S"] == "table-2"
    assert int(item["OutputTokens"]["N"]) == billed[1]["output_tokens"]
    total = dynamodb.get_item(
        TableName=USAGE_TABLE,
        Key={"PK": {"S": "TOTAL#User::alice"}, "SK": {"S": f"MONTH#{record['requestedAt'][:7]}"}},
    )["Item"]
    assert int(total["Calls"]["N"]) == 1  # the replayed call, counted once


def fail_ledger_writes(code: str, status: int) -> None:
    """Every TransactWriteItems on the functions' DynamoDB client answers ``code``."""

    def refuse(model: Any, **_: Any) -> tuple[Any, dict[str, Any]]:
        http = types.SimpleNamespace(status_code=status, headers={}, raw=None)
        return http, {
            "Error": {"Code": code, "Message": code},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    aws.client("dynamodb").meta.events.register("before-call.dynamodb.TransactWriteItems", refuse)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("RequestLimitExceeded", 400),
        ("InternalServerError", 500),
        ("TransactionConflictException", 400),
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_a_failing_ledger_write_never_fails_the_caller_nor_loses_the_call(
    code: str, status: int, route: str, emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fail_ledger_writes(code, status)
    response = route_call(route, "the ledger refuses this write", f"refused-{route}")
    assert response["statusCode"] == 200, response["body"][:300]
    assert ledger_items(dynamodb) == []
    [record] = unsaved_records(caplog)
    [billed] = emulator.billed()
    assert record["requestId"] == f"refused-{route}"
    assert record["usage"]["inputTokens"] == billed["input_tokens"]
    assert_every_billed_call_recorded(emulator, dynamodb, caplog, {f"refused-{route}": response})


# --- malformed and slow answers -------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_malformed_bedrock_body_is_passed_on_and_the_call_recorded(
    route: str, emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    response = route_call(route, "garbled [[emulator malformed]]", f"malformed-{route}")
    assert response["statusCode"] == 200, response["body"][:300]
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["RequestId"]["S"] == f"malformed-{route}"
    if route == "invoke-model":
        # Passed on byte for byte; the counts come from Bedrock's token headers.
        assert "<html>" in response["body"]
        assert item["UsageSource"]["S"] == "headers"
        assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
        assert int(item["OutputTokens"]["N"]) == billed["output_tokens"]
    assert_every_billed_call_recorded(emulator, dynamodb, caplog, {f"malformed-{route}": response})


@pytest.mark.usefixtures("short_timeout")
@pytest.mark.parametrize("route", ["invoke-with-response-stream", "converse-stream"])
def test_a_stream_outliving_the_timeout_ends_with_an_error_event_and_is_recorded(
    route: str, emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    text = " ".join(["word"] * 30) + " [[emulator chunk_delay_ms=120]]"
    response = route_call(route, text, f"long-{route}")
    assert response["statusCode"] == 200
    assert "BedrockTimeout" in response["body"]  # the event-stream error after the events read
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "BedrockTimeout"
    deadline = time.monotonic() + 10
    while not emulator.billed() and time.monotonic() < deadline:
        time.sleep(0.05)
    [billed] = emulator.billed()
    if route == "invoke-with-response-stream":
        assert int(item["InputTokens"]["N"]) == billed["input_tokens"]  # Claude's message_start says
    else:
        # ConverseStream reports usage only in its last (metadata) event: nothing is known, and
        # the record says so instead of pricing the call at $0.
        assert (item["Priced"]["BOOL"], item["UsageSource"]["S"]) == (False, "none")
    assert_every_billed_call_recorded(emulator, dynamodb, caplog, {f"long-{route}": response})


@pytest.mark.parametrize(("read_timeout", "attempts"), [("27", "1"), ("13", "2")])
def test_timeouts_that_could_outlive_api_gateway_refuse_every_call_before_bedrock(
    read_timeout: str, attempts: str, emulator: Any, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (2 s connect + read) x attempts >= 29 s: API Gateway would answer its bare 504 first.
    monkeypatch.setenv("BEDROCK_READ_TIMEOUT_SECONDS", read_timeout)
    monkeypatch.setenv("BEDROCK_MAX_ATTEMPTS", attempts)
    reset_caches()
    response = call("never sent")
    assert response["statusCode"] == 500
    assert "Traceback" not in response["body"] and error(response)["message"]
    assert emulator.billed() == [] and ledger_items(dynamodb) == []
