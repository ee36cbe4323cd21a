"""Faults after and around the Bedrock call: the caller always gets a well-formed answer or
error (or, once Bedrock's answer has started, Bedrock's bytes up to the fault and a cut-short
response), and no call Bedrock may have billed goes unrecorded (it is in the ledger or in a
replayable USAGE_RECORD_UNSAVED log line).

Which calls are recorded follows from where the fault is: a connection to Bedrock that never
opened sent nothing (503, not recorded); a connection that broke or went silent after the
request was sent is a call Bedrock may bill (502 / 504 or a cut-short stream, recorded as
what the meter saw, with ``StreamError``). Timeouts are scaled down: a 1 s idle timeout
stands in for API Gateway's 5 minutes, so the tests take seconds, not minutes.
"""

from __future__ import annotations

import json
import socket
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bedrock_spend import aws
from bedrock_spend_local.eventstream import chunk_event
from bedrock_spend_local.tables import create_tables
from tests import proxy_client
from tests.conftest import KEY_TABLE, USAGE_TABLE, load_event, reset_caches
from tests.helpers import (
    BedrockTraffic,
    breaking_endpoint,
    chunk_payloads,
    claude_body,
    cli_runner,
    emf_records,
    header,
    metric_names,
    served_over_http,
    spy_on_bedrock,
    stream_messages,
    usage_records,
)

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
pytestmark = pytest.mark.usefixtures("proxy_env")
ROUTES = ("invoke-model", "converse", "invoke-with-response-stream", "converse-stream")
STREAMS = ("invoke-with-response-stream", "converse-stream")
EVENT_STREAM = "application/vnd.amazon.eventstream"


def call(text: str, request_id: str = "fault-1") -> dict[str, Any]:
    event = load_event("invoke_model")
    event["requestContext"]["requestId"] = request_id
    event["body"] = json.dumps({"modelId": HAIKU, "body": claude_body(text)})
    return proxy_client.invoke(event)


def route_event(route: str, text: str, request_id: str, model: str = HAIKU) -> dict[str, Any]:
    """The event API Gateway delivers for a call of ``model`` on one of the metered routes."""
    if route == "invoke-model":
        event = load_event("invoke_model")
        event["requestContext"]["requestId"] = request_id
        event["body"] = json.dumps({"modelId": model, "body": model_body(model, text)})
        return event
    converse = route.startswith("converse")
    event = load_event("converse" if converse else "native_invoke")
    path = f"/model/{quote(model, safe='')}/{route}"
    event["path"] = path
    event["pathParameters"] = {"proxy": path.removeprefix("/model/")}
    event["requestContext"]["path"] = "/v1" + path
    event["requestContext"]["requestId"] = request_id
    body = (
        {"messages": [{"role": "user", "content": [{"text": text}]}]} if converse else model_body(model, text)
    )
    event["body"] = json.dumps(body)
    return event


def model_body(model: str, text: str) -> dict[str, Any]:
    return {"prompt": text, "max_gen_len": 60} if "llama" in model else claude_body(text)


def route_call(route: str, text: str, request_id: str, model: str = HAIKU) -> dict[str, Any]:
    return proxy_client.invoke(route_event(route, text, request_id, model))


def error(response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert "Traceback" not in response["body"]
    return dict(body["error"])


def assert_json_error(response: dict[str, Any], status: int, error_type: str) -> None:
    """The proxy's own error: JSON with ``message`` and ``error: {type, message}``."""
    assert response["statusCode"] == status, response["body"][:300]
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "x-amzn-errortype") == error_type
    details = error(response)
    assert details["type"] == error_type and details["message"]
    assert json.loads(response["body"])["message"] == details["message"]


def ledger_items(dynamodb: Any) -> list[dict[str, Any]]:
    return usage_records(dynamodb.scan(TableName=USAGE_TABLE)["Items"])


def unsaved_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.usage_record for r in caplog.records if r.getMessage() == "USAGE_RECORD_UNSAVED"]


def eventually(check: Callable[[], Any], seconds: float = 15) -> Any:
    """``check()``'s first truthy value, polling: for what happens after the answer is sent."""
    deadline = time.monotonic() + seconds
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Settings for the proxy app, read when it builds its collaborators on its first request."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_caches()


def assert_recorded_unpriced(item: dict[str, Any], request_id: str, stream_error: str) -> None:
    """A call Bedrock may have billed whose usage the proxy never saw."""
    assert item["RequestId"]["S"] == request_id
    assert item["StreamError"]["S"] == stream_error
    assert (item["Priced"]["BOOL"], item["UsageSource"]["S"]) == (False, "none")


@pytest.fixture
def bedrock_traffic(monkeypatch: pytest.MonkeyPatch) -> BedrockTraffic:
    return spy_on_bedrock(monkeypatch)


@pytest.fixture
def idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, BEDROCK_IDLE_TIMEOUT_SECONDS="1")


# --- Bedrock silent: the idle timeout -----------------------------------------------------------


@pytest.mark.usefixtures("idle_timeout")
@pytest.mark.parametrize("route", ROUTES)
def test_bedrock_silent_past_the_idle_timeout_is_a_json_504_and_the_call_is_recorded(
    route: str, emulator: Any, dynamodb: Any
) -> None:
    response = route_call(route, "slow [[emulator latency_ms=2000]]", f"silent-{route}")
    assert_json_error(response, 504, "BedrockTimeout")
    # Bedrock billed it (the emulator answers late); the proxy never saw the usage, so the
    # call is recorded as unpriced with no usage rather than not at all.
    assert len(eventually(emulator.billed)) == 1
    [item] = ledger_items(dynamodb)
    assert_recorded_unpriced(item, f"silent-{route}", "BedrockTimeout")


def test_a_slow_answer_inside_the_idle_timeout_is_served_and_recorded(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, dynamodb: Any
) -> None:
    set_env(monkeypatch, BEDROCK_IDLE_TIMEOUT_SECONDS="3")
    response = call("slow but in time [[emulator latency_ms=500]]")
    assert response["statusCode"] == 200
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert int(item["OutputTokens"]["N"]) == billed["output_tokens"]
    assert "StreamError" not in item


@pytest.mark.usefixtures("idle_timeout")
def test_a_stream_stalling_past_the_idle_timeout_is_cut_short_and_recorded_with_the_usage_seen(
    emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    # The first frame comes at once, the next 2.5 s later: the proxy gives up after 1 s.
    text = "a stalling story [[emulator chunk_delay_ms=2500]]"
    response = route_call("invoke-with-response-stream", text, "stalled", model=LLAMA)
    assert response["statusCode"] == 200  # the answer had started: it can only be cut short
    assert response["raw"] == b"".join(bedrock_traffic.received)
    messages, left = stream_messages(response["raw"])
    [chunk] = chunk_payloads(messages)
    assert left == 0 and chunk["stop_reason"] is None  # one frame, the answer unfinished
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "BedrockTimeout"
    assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
    assert int(item["OutputTokens"]["N"]) == chunk["generation_token_count"] < billed["output_tokens"]
    assert item["Priced"]["BOOL"] is True


@pytest.mark.usefixtures("idle_timeout")
@pytest.mark.parametrize("route", STREAMS)
def test_a_stream_longer_than_the_idle_timeout_but_never_silent_that_long_completes(
    route: str, emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    # 8 events or more, 300 ms apart: over 2 s in all, twice the idle timeout. Nothing limits
    # the whole call short of MAX_CALL_SECONDS; the idle timeout limits only silence.
    model = LLAMA if route == "invoke-with-response-stream" else HAIKU
    text = " ".join(["word"] * 20) + " [[emulator chunk_delay_ms=300]]"
    response = route_call(route, text, f"paced-{route}", model=model)
    assert response["statusCode"] == 200
    assert response["raw"] == b"".join(bedrock_traffic.received)
    messages, left = stream_messages(response["raw"])
    assert left == 0 and len(messages) >= 8
    [billed] = emulator.billed()
    # It did outlive the idle timeout: the emulator slept 300 ms before each event but the first.
    assert billed["waited_ms"] == 300 * (len(messages) - 1) > 2 * 1000
    [item] = ledger_items(dynamodb)
    assert "StreamError" not in item
    assert (int(item["InputTokens"]["N"]), int(item["OutputTokens"]["N"])) == (
        billed["input_tokens"],
        billed["output_tokens"],
    )
    assert item["Priced"]["BOOL"] is True


def test_a_stream_reaching_the_calls_deadline_is_cut_short_and_recorded(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, dynamodb: Any
) -> None:
    # MAX_CALL_SECONDS bounds the whole call (the function must outlive it by the time
    # recording takes). 11 events 300 ms apart take 3 s: the call is cut at 2 s.
    set_env(monkeypatch, MAX_CALL_SECONDS="2", FUNCTION_TIMEOUT_SECONDS="17")
    text = " ".join(["word"] * 30) + " [[emulator chunk_delay_ms=300]]"
    response = route_call("invoke-with-response-stream", text, "deadline", model=LLAMA)
    assert response["statusCode"] == 200
    messages, left = stream_messages(response["raw"])
    chunks = chunk_payloads(messages)
    assert left == 0 and chunks and chunks[-1]["stop_reason"] is None  # the answer unfinished
    [billed] = emulator.billed()
    [item] = ledger_items(dynamodb)
    assert item["StreamError"]["S"] == "ProxyDeadline"
    assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
    # The meter saw every event relayed (and perhaps the one on its way when time ran out).
    assert chunks[-1]["generation_token_count"] <= int(item["OutputTokens"]["N"]) < billed["output_tokens"]


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"MAX_CALL_SECONDS": "890"}, "MAX_CALL_SECONDS"),
        ({"BEDROCK_IDLE_TIMEOUT_SECONDS": "0"}, "positive"),
        ({"BEDROCK_IDLE_TIMEOUT_SECONDS": "soon"}, "number"),
    ],
)
def test_invalid_timeout_settings_refuse_every_call_before_bedrock(
    settings: dict[str, str],
    fragment: str,
    emulator: Any,
    dynamodb: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 890 s + the time recording takes > the function's 900 s: a call could be cut off by
    # Lambda after Bedrock billed it and before it was recorded. Refused loudly instead.
    set_env(monkeypatch, **settings)
    response = call("never sent")
    assert_json_error(response, 500, "InternalServerError")
    assert emulator.billed() == [] and ledger_items(dynamodb) == []
    assert any(fragment in r.getMessage() or fragment in str(r.exc_info) for r in caplog.records)


# --- Bedrock not reached, or the connection broken ------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("route", ["invoke-model", "converse-stream"])
def test_unreachable_bedrock_is_a_json_503_and_nothing_is_recorded(
    route: str, monkeypatch: pytest.MonkeyPatch, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    set_env(monkeypatch, AWS_ENDPOINT_URL_BEDROCK_RUNTIME=f"http://127.0.0.1:{closed_port()}")
    response = route_call(route, "hello", f"unreachable-{route}")
    assert_json_error(response, 503, "BedrockUnavailable")
    # Nothing was sent: no call, nothing billed, nothing recorded (not even as unpriced).
    assert ledger_items(dynamodb) == [] and unsaved_records(caplog) == []


@pytest.mark.parametrize("route", ROUTES)
def test_bedrock_hanging_up_after_the_request_is_a_json_502_and_the_call_is_recorded(
    route: str, monkeypatch: pytest.MonkeyPatch, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The request was sent whole, then the connection closed without a byte of answer:
    # Bedrock may have run (and billed) the call.
    with breaking_endpoint() as url:
        set_env(monkeypatch, AWS_ENDPOINT_URL_BEDROCK_RUNTIME=url)
        response = route_call(route, "hello", f"hangup-{route}")
    assert_json_error(response, 502, "BedrockConnectionLost")
    [item] = ledger_items(dynamodb)
    assert_recorded_unpriced(item, f"hangup-{route}", "BedrockConnectionLost")
    assert unsaved_records(caplog) == []


@pytest.mark.parametrize("route", ["invoke-model", "converse"])
def test_the_emulator_dropping_the_connection_is_a_json_502_and_the_call_is_recorded(
    route: str, emulator: Any, dynamodb: Any
) -> None:
    response = route_call(route, "hello [[emulator disconnect]]", f"dropped-{route}")
    assert_json_error(response, 502, "BedrockConnectionLost")
    [item] = ledger_items(dynamodb)
    assert_recorded_unpriced(item, f"dropped-{route}", "BedrockConnectionLost")


@pytest.mark.parametrize("route", STREAMS)
def test_a_stream_broken_mid_answer_is_cut_short_and_recorded_with_the_usage_seen(
    route: str, emulator: Any, dynamodb: Any, bedrock_traffic: BedrockTraffic
) -> None:
    model = LLAMA if route == "invoke-with-response-stream" else HAIKU
    text = "a story cut short [[emulator disconnect after=3]]"
    response = route_call(route, text, f"broken-{route}", model=model)
    assert response["statusCode"] == 200
    assert header(response, "Content-Type") == EVENT_STREAM
    # Bedrock's bytes up to the break, then the end: three frames, no more.
    assert response["raw"] == b"".join(bedrock_traffic.received)
    messages, left = stream_messages(response["raw"])
    assert (len(messages), left) == (3, 0)
    [billed] = emulator.billed()
    assert billed["error"] == "disconnect"
    [item] = ledger_items(dynamodb)
    assert item["RequestId"]["S"] == f"broken-{route}"
    assert item["StreamError"]["S"] == "BedrockConnectionLost"
    if route == "invoke-with-response-stream":
        # Llama's chunks carry running counts: the usage up to the break is exact.
        assert (int(item["InputTokens"]["N"]), int(item["OutputTokens"]["N"])) == (
            billed["input_tokens"],
            billed["output_tokens"],
        )
        assert item["Priced"]["BOOL"] is True
    else:
        # ConverseStream tells usage only in its last event: unknown, recorded as unpriced.
        assert (item["Priced"]["BOOL"], item["UsageSource"]["S"]) == (False, "none")


HALF_ANSWERS = {
    "json": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n"
        b"x-amzn-requestid: half-1\r\n\r\n"
        b'{"id":"msg_bdrk_01","type":"message","role":"assistant","content":[{"type":"te'
    ),
    "event-stream": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n"
        b"Transfer-Encoding: chunked\r\nx-amzn-requestid: half-2\r\n\r\n"
        + b"%x\r\n%b\r\n" % (len(frame := chunk_event({"type": "message_stop"})), frame)
        + b"%x\r\n%b\r\n" % (20, frame[:20])
    ),
}


@pytest.mark.parametrize(
    ("route", "answer"), [("invoke-model", "json"), ("invoke-with-response-stream", "event-stream")]
)
def test_bedrock_hanging_up_mid_answer_relays_what_came_and_records_the_call(
    route: str, answer: str, monkeypatch: pytest.MonkeyPatch, dynamodb: Any
) -> None:
    raw = HALF_ANSWERS[answer]
    with breaking_endpoint(raw) as url:
        set_env(monkeypatch, AWS_ENDPOINT_URL_BEDROCK_RUNTIME=url)
        response = route_call(route, "hello", f"half-{answer}")
    assert response["statusCode"] == 200  # the answer had started: it can only be cut short
    assert header(response, "x-amzn-requestid") == {"json": "half-1", "event-stream": "half-2"}[answer]
    body = raw.partition(b"\r\n\r\n")[2]
    if answer == "json":
        assert response["raw"] == body
    else:
        messages, left = stream_messages(response["raw"])
        assert (len(messages), left) == (1, 20)  # the whole frame, then the half one
    [item] = ledger_items(dynamodb)
    assert_recorded_unpriced(item, f"half-{answer}", "BedrockConnectionLost")


@pytest.mark.parametrize(
    ("route", "fault", "status"),
    [
        ("invoke-model", "error=ThrottlingException", 429),
        ("converse", "disconnect", 502),
        ("invoke-with-response-stream", "disconnect after=2", 200),
        ("converse-stream", "stream_error=throttlingException after=1", 200),
        ("invoke-model", "latency_ms=2000", 504),
        ("converse", "malformed", 200),
    ],
)
def test_a_faulted_call_gives_back_its_in_flight_place(
    route: str, fault: str, status: int, monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    # A key with a budget has one place here: a place a faulted call kept would refuse the
    # next call (429 TooManyCallsInFlight after the 2 s wait) until it expired.
    set_env(
        monkeypatch, MAX_IN_FLIGHT_PER_KEY="1", IN_FLIGHT_WAIT_SECONDS="2", BEDROCK_IDLE_TIMEOUT_SECONDS="1"
    )
    for n, text in enumerate([f"faulted [[emulator {fault}]]", "fine"]):
        event = route_event(route, text, f"place-{n}")
        event["requestContext"]["authorizer"]["monthlyBudgetUsd"] = "100"
        response = proxy_client.invoke(event)
        assert response["statusCode"] == (status if n == 0 else 200), response["body"][:300]


# --- the caller's side, over real HTTP ----------------------------------------------------------


def http_request(base: str, event: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    method, target, headers, data = proxy_client.request_of(event)
    return method, base + target, headers, data


def test_a_cut_short_answer_never_looks_complete_to_the_callers_http_client(
    emulator: Any, dynamodb: Any
) -> None:
    from bedrock_spend.proxy.app import create_app

    with served_over_http(create_app()) as base, httpx.Client(timeout=30) as client:
        method, url, headers, data = http_request(base, route_event("converse-stream", "hi", "whole"))
        complete = client.request(method, url, headers=headers, content=data)
        assert complete.status_code == 200
        text = "cut [[emulator disconnect after=2]]"
        method, url, headers, data = http_request(base, route_event("converse-stream", text, "cut"))
        with pytest.raises(httpx.RemoteProtocolError):  # an incomplete chunked body
            client.request(method, url, headers=headers, content=data)
    recorded = {
        i["RequestId"]["S"]: i
        for i in eventually(lambda: len(ledger_items(dynamodb)) == 2 and ledger_items(dynamodb))
    }
    assert "StreamError" not in recorded["whole"]
    assert recorded["cut"]["StreamError"]["S"] == "BedrockConnectionLost"


def test_a_caller_hanging_up_mid_stream_still_gets_the_call_recorded_in_full(
    emulator: Any, dynamodb: Any
) -> None:
    from bedrock_spend.proxy.app import create_app

    text = " ".join(["word"] * 20) + " [[emulator chunk_delay_ms=200]]"
    event = route_event("invoke-with-response-stream", text, "gone", model=LLAMA)
    # A mark of this call in the metadata Bedrock receives: the emulator's tally may also hold
    # calls other tests' apps were still reading to their end.
    mark = uuid.uuid4().hex
    event["headers"]["X-Amzn-Bedrock-Request-Metadata"] = json.dumps({"test": mark})
    with served_over_http(create_app()) as base, httpx.Client(timeout=30) as client:
        method, url, headers, data = http_request(base, event)
        with client.stream(method, url, headers=headers, content=data) as response:
            assert response.status_code == 200
            next(response.iter_raw())  # the first event, then the caller goes away
        # The proxy reads Bedrock's answer to its end, so the record has the final counts.
        [item] = eventually(lambda: [i for i in ledger_items(dynamodb) if i["RequestId"]["S"] == "gone"])
    [billed] = [b for b in emulator.billed() if mark in str(b["request_metadata"])]
    assert "StreamError" not in item
    assert (int(item["InputTokens"]["N"]), int(item["OutputTokens"]["N"])) == (
        billed["input_tokens"],
        billed["output_tokens"],
    )


# --- every Bedrock error, on every metered route ------------------------------------------------

# The status each Bedrock error shape has: the "Errors" sections of the Amazon Bedrock API
# Reference (e.g. https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html),
# the error shapes' httpStatusCode in botocore's bedrock-runtime service model. Written out here,
# not imported, so the test is an independent check that the proxy relays them unchanged.
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
ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


def assert_every_billed_call_recorded(
    emulator: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture, answers: dict[str, dict[str, Any]]
) -> None:
    """Each call the emulator billed is in the ledger or in a USAGE_RECORD_UNSAVED line.

    ``answers`` maps our request ids to the proxy's responses, which carry Bedrock's
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
def test_every_bedrock_error_is_relayed_unchanged_and_nothing_is_recorded(
    route: str,
    error_type: str,
    status: int,
    emulator: Any,
    dynamodb: Any,
    caplog: pytest.LogCaptureFixture,
    bedrock_traffic: BedrockTraffic,
) -> None:
    emulator.fault(error_type)
    response = route_call(route, "hello", f"error-{route}")
    assert response["statusCode"] == status
    # Bedrock's answer as it sent it, so SDKs raise the exception class they expect.
    assert header(response, "x-amzn-errortype") == f"{error_type}:{ERROR_NAMESPACE}"
    assert header(response, "Content-Type") == "application/json"
    assert response["raw"] == b"".join(bedrock_traffic.received)
    assert json.loads(response["body"])["message"] == f"Emulated {error_type}"
    assert emulator.billed() == []  # refused before the model ran: not billed, not recorded
    assert ledger_items(dynamodb) == [] and unsaved_records(caplog) == []


# --- the ledger unavailable or throttled ------------------------------------------------------------


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
