"""End to end: the local stack (`make run`) over real HTTPS on 127.0.0.1.

Keys are minted with the `bedrock-spend` CLI against the stack's moto server, requests go
through the API Gateway emulation to the real authorizer and the proxy's ASGI app and on to
the Bedrock emulator, and metrics are read back from CloudWatch (moto). The gateway's own
behaviour (the Lambda Web Adapter's request mapping, streaming relay, gateway responses) is
also checked with a throwaway ASGI app in the proxy's place.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPException, HTTPSConnection
from pathlib import Path
from typing import Any, cast

import pytest

from bedrock_spend_local.api import Route
from bedrock_spend_local.gateway import AuthorizerCache, FunctionError
from bedrock_spend_local.server import LocalStack, main
from tests.e2e.conftest import Reply, aws_client, cli, emulator_billed, http, log_lines, mint_key, tls_context
from tests.helpers import claude_body

pytestmark = pytest.mark.e2e

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
UNAUTHORIZED_BODY = {
    "message": "missing, malformed or unknown API key",
    "error": {"type": "Unauthorized", "message": "missing, malformed or unknown API key"},
}
REVOKED_BODY = {
    "message": "API key revoked or expired",
    "error": {"type": "AccessDeniedException", "message": "API key revoked or expired"},
}


def invoke(stack: LocalStack, key: str | None, payload: Any = None, **headers: str) -> Reply:
    sent = {"Content-Type": "application/json", **headers}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    body = (
        payload
        if isinstance(payload, bytes)
        else json.dumps(payload or {"modelId": HAIKU, "body": claude_body()})
    )
    return http(
        f"{stack.url}/invoke-model", body=body.encode() if isinstance(body, str) else body, headers=sent
    )


def metric_sum(stack: LocalStack, name: str, dimensions: dict[str, str]) -> float | None:
    now = datetime.now(UTC)
    stats = aws_client(stack, "cloudwatch").get_metric_statistics(
        Namespace="BedrockCostApportionment",
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
        Period=3600,
        Statistics=["Sum"],
    )
    points = stats["Datapoints"]
    return sum(p["Sum"] for p in points) if points else None


# --- the happy path ---------------------------------------------------------------------------


def test_a_minted_key_gets_the_models_answer(stack: LocalStack) -> None:
    key, _ = mint_key(stack, "alice")
    before = len(emulator_billed(stack))
    reply = invoke(stack, key)
    assert reply.status == 200, reply.body
    answer = reply.json()
    billed = emulator_billed(stack)[before:]
    assert len(billed) == 1
    assert answer["type"] == "message" and answer["content"][0]["type"] == "text"
    assert answer["usage"]["input_tokens"] == billed[0]["input_tokens"]
    assert answer["usage"]["output_tokens"] == billed[0]["output_tokens"]
    assert reply.header("Content-Type") == "application/json"
    assert reply.header("x-amzn-RequestId")  # API Gateway's own request id
    assert reply.header("x-amzn-Remapped-x-amzn-RequestId") == billed[0]["request_id"]


def test_the_calls_metrics_are_in_cloudwatch(stack: LocalStack) -> None:
    key, _ = mint_key(stack, "bob")
    before = len(emulator_billed(stack))
    assert invoke(stack, key).status == 200
    [billed] = emulator_billed(stack)[before:]
    assert stack.flush()
    dimensions = {"PrincipalId": "User::bob", "ModelId": HAIKU}
    assert metric_sum(stack, "InputTokensUsed", dimensions) == billed["input_tokens"]
    assert metric_sum(stack, "OutputTokensUsed", dimensions) == billed["output_tokens"]
    assert metric_sum(stack, "Invocations", dimensions) == 1
    expected = (billed["input_tokens"] * 0.25 + billed["output_tokens"] * 1.25) / 1e6  # Claude 3 Haiku
    assert metric_sum(stack, "TotalCost", dimensions) == pytest.approx(expected)
    metrics = aws_client(stack, "cloudwatch").list_metrics(Namespace="BedrockCostApportionment")["Metrics"]
    names = {
        m["MetricName"] for m in metrics if {"Name": "PrincipalId", "Value": "User::bob"} in m["Dimensions"]
    }
    # Four custom metrics per principal x model, no more: each costs every month.
    assert names == {"Invocations", "InputTokensUsed", "OutputTokensUsed", "TotalCost"}


def test_the_usage_cli_shows_the_calls_tokens_and_cost(stack: LocalStack) -> None:
    key, key_id = mint_key(stack, "carol")
    before = len(emulator_billed(stack))
    assert invoke(stack, key).status == 200
    [billed] = emulator_billed(stack)[before:]
    code, out = cli(stack, "usage", "--principal", "User::carol", "--format", "json")
    assert code == 0
    [row] = json.loads(out)
    assert row["principal"] == "User::carol"
    assert (row["calls"], row["input_tokens"], row["output_tokens"]) == (
        1,
        billed["input_tokens"],
        billed["output_tokens"],
    )
    cost = (
        Decimal(billed["input_tokens"]) * Decimal("0.25") + Decimal(billed["output_tokens"]) * Decimal("1.25")
    ) / 10**6
    assert Decimal(str(row["cost_usd"])) == cost.quantize(Decimal("0.000001"))
    # The table form the banner's command prints.
    code, table = cli(stack, "usage")
    assert code == 0
    [line] = [line for line in table.splitlines() if "User::carol" in line]
    assert str(billed["input_tokens"]) in line.split() and str(billed["output_tokens"]) in line.split()
    # The authorizer's context reached the proxy: the ledger names the key that paid.
    items = aws_client(stack, "dynamodb").scan(TableName=stack.tables["UsageTable"])["Items"]
    [record] = [i for i in items if i["PK"]["S"] == "USAGE#User::carol"]
    assert record["KeyId"]["S"] == key_id


def test_the_demo_key_from_the_banner_works(stack: LocalStack) -> None:
    assert stack.demo_key.startswith("bsk_")
    assert stack.demo_key in stack.banner() and f"{stack.url}/invoke-model" in stack.curl_command()
    assert invoke(stack, stack.demo_key).status == 200


def test_function_output_goes_to_the_log_files(stack: LocalStack) -> None:
    proxy_log = stack.log_files["proxy"]
    before = len(log_lines(proxy_log))
    assert invoke(stack, stack.demo_key).status == 200
    new = [json.loads(line) for line in log_lines(proxy_log)[before:] if line.startswith("{")]
    assert any("_aws" in record and record.get("PrincipalId") == "User::demo" for record in new)


# --- the authorizer ---------------------------------------------------------------------------


def test_an_unknown_key_is_401_with_the_templates_body(stack: LocalStack) -> None:
    reply = invoke(stack, "bsk_" + "x" * 43)
    assert reply.status == 401
    assert reply.json() == UNAUTHORIZED_BODY
    assert reply.header("x-amzn-errortype") == "Unauthorized"


def test_a_missing_authorization_header_is_401_without_calling_the_authorizer(stack: LocalStack) -> None:
    authorizer_log = stack.log_files["authorizer"]
    before = log_lines(authorizer_log)
    for headers in ({}, {"Authorization": ""}):
        reply = http(f"{stack.url}/invoke-model", body=b"{}", headers=headers)
        assert reply.status == 401
        assert reply.json() == UNAUTHORIZED_BODY
    assert log_lines(authorizer_log) == before


def test_a_revoked_key_is_refused_at_once_without_a_cache(stack: LocalStack, authorizer_ttl: Any) -> None:
    authorizer_ttl(0)
    key, key_id = mint_key(stack, "dave")
    assert invoke(stack, key).status == 200
    assert cli(stack, "keys", "revoke", key_id)[0] == 0
    reply = invoke(stack, key)
    assert reply.status == 403
    assert reply.json() == REVOKED_BODY
    assert reply.header("x-amzn-errortype") == "AccessDeniedException"


@pytest.fixture
def authorizer_clock(stack: LocalStack) -> Iterator[list[float]]:
    """The gateway's authorizer cache on a clock the test sets (``clock[0]``, in seconds)."""
    assert stack.gateway is not None
    gateway = stack.gateway
    original = gateway.cache
    clock = [0.0]
    gateway.cache = AuthorizerCache(lambda: clock[0])
    yield clock
    gateway.cache = original


def test_a_revoked_key_works_until_the_cached_decision_expires(
    stack: LocalStack, authorizer_ttl: Any, authorizer_clock: list[float]
) -> None:
    authorizer_ttl(1)
    key, key_id = mint_key(stack, "erin")
    authorizer_log = stack.log_files["authorizer"]
    assert invoke(stack, key).status == 200  # the Allow is cached for 1 s
    assert cli(stack, "keys", "revoke", key_id)[0] == 0
    before = log_lines(authorizer_log)
    authorizer_clock[0] = 0.9
    assert invoke(stack, key).status == 200  # the cached Allow: the authorizer is not asked
    assert log_lines(authorizer_log) == before
    authorizer_clock[0] = 1.0  # the decision expires: the authorizer is asked again
    reply = invoke(stack, key)
    assert reply.status == 403
    assert reply.json() == REVOKED_BODY
    assert log_lines(authorizer_log) != before


def test_the_template_default_ttl_caches_decisions(stack: LocalStack) -> None:
    assert stack.gateway is not None and stack.api is not None and stack.api.authorizer is not None
    assert stack.gateway.authorizer_ttl == stack.api.authorizer.ttl_seconds
    assert stack.gateway.authorizer_ttl == int(stack.api.parameters["AuthorizerCacheTtl"]) > 0


# --- API Gateway's own answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("HEAD", "/v1/invoke-model"),
        ("GET", "/v1/invoke-model"),
        ("POST", "/"),
        ("GET", "/v2/x"),
    ],
)
def test_an_unknown_route_is_403_missing_authentication_token(
    stack: LocalStack, method: str, path: str
) -> None:
    reply = http(stack.base_url + path, method=method)
    assert reply.status == 403
    if method != "HEAD":
        assert reply.json() == {"message": "Missing Authentication Token"}
    assert reply.header("x-amzn-ErrorType") == "MissingAuthenticationTokenException"


def test_a_bearer_token_on_an_unknown_route_is_read_as_a_bad_signature(stack: LocalStack) -> None:
    reply = http(f"{stack.url}/invoke", body=b"{}", headers={"Authorization": f"Bearer {stack.demo_key}"})
    assert reply.status == 403
    assert reply.json()["message"].startswith(
        "Invalid key=value pair (missing equal-sign) in Authorization header"
    )
    assert reply.header("x-amzn-ErrorType") == "IncompleteSignatureException"


def test_a_body_over_10_mb_is_refused_by_the_gateway(stack: LocalStack) -> None:
    reply = invoke(stack, stack.demo_key, b"x" * (10 * 1024 * 1024 + 1))
    assert reply.status == 413
    assert reply.body == b"HTTP content length exceeded 10485760 bytes."


def _connection(stack: LocalStack) -> HTTPSConnection:
    host, port = stack.base_url.removeprefix("https://").split(":")
    return HTTPSConnection(host, int(port), timeout=30, context=tls_context(stack))


def test_a_chunked_upload_is_read_whole(stack: LocalStack) -> None:
    connection = _connection(stack)
    body = json.dumps({"modelId": HAIKU, "body": claude_body()}).encode()
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
    try:
        connection.request(
            "POST",
            f"/{stack.stage}/invoke-model",
            body=iter(chunks),
            headers={"Authorization": f"Bearer {stack.demo_key}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert json.loads(response.read())["type"] == "message"
    finally:
        connection.close()


def test_a_bad_content_length_is_400(stack: LocalStack) -> None:
    host, port = stack.base_url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        tls_context(stack).wrap_socket(raw, server_hostname=host) as sock,
    ):
        sock.sendall(
            f"POST /{stack.stage}/invoke-model HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")


def test_a_slow_proxy_is_504_integration_timeout(stack: LocalStack) -> None:
    assert stack.gateway is not None
    before = stack.gateway.integration_timeout
    stack.gateway.integration_timeout = 0.5
    try:
        reply = invoke(
            stack, stack.demo_key, {"modelId": HAIKU, "body": claude_body("hi [[emulator latency_ms=1500]]")}
        )
    finally:
        stack.gateway.integration_timeout = before
    assert reply.status == 504
    assert reply.json()["error"]["type"] == "GatewayTimeout"
    time.sleep(1.5)  # let the emulator finish the abandoned call before the next test


def test_path_parameters_keep_their_percent_encoding() -> None:
    route = Route("POST", "/model/{modelId}/invoke", "ProxyFunction")
    arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku"
    assert route.match("POST", f"/model/{arn}/invoke") == {"modelId": arn}
    assert route.match("POST", "/model/a/b/invoke") is None
    assert route.match("GET", f"/model/{arn}/invoke") is None


# --- the request the app gets (LWA's mapping), seen through a throwaway ASGI app --------------


class _EchoApp:
    """Takes the proxy app's place: records each request, answers with ``respond``.

    ``respond(scope, body)`` returns (status, headers, chunks, seconds between chunks), or an
    ``async pause(index)`` awaited before each chunk but the first in place of the seconds.
    """

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.requests: list[tuple[dict[str, Any], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((scope, body))
        status, headers, chunks, pause = self.respond(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, chunk in enumerate(chunks):
            if index and callable(pause):
                await pause(index)
            elif index and pause:
                await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def headers(self, index: int = -1) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.requests[index][0]["headers"]:
            out.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        return out

    def context(self, index: int = -1) -> dict[str, Any]:
        [raw] = self.headers(index)["x-amzn-request-context"]
        return cast(dict[str, Any], json.loads(raw))


def _ok(scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[bytes, bytes]], list[bytes], float]:
    return 200, [(b"content-type", b"application/json")], [b"{}"], 0


@pytest.fixture
def stand_in(stack: LocalStack) -> Iterator[Any]:
    """Put a throwaway ASGI app in the proxy app's place for one test."""
    assert stack.gateway is not None
    gateway = stack.gateway
    original = gateway.app

    def install(respond: Any = _ok) -> _EchoApp:
        gateway.app = _EchoApp(respond)
        return cast(_EchoApp, gateway.app)

    yield install
    gateway.app = original


def test_the_app_gets_the_request_as_the_web_adapter_maps_it(stack: LocalStack, stand_in: Any) -> None:
    model = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x-v1%3A0"
    raw_path = f"/model/{model}/invoke"
    fake = stand_in()
    sent_at = time.time()
    reply = http(
        f"{stack.url}{raw_path}?a=1&a=2&b=x%20y",
        body=b'{"hello": "world"}',
        headers={
            "Authorization": f"Bearer {stack.demo_key}",
            "Content-Type": "application/json",
            "X-Team": "t",
        },
    )
    assert reply.status == 200, reply.body
    [(scope, body)] = fake.requests
    assert body == b'{"hello": "world"}'
    # The event's path: percent-encoding kept, the stage not in it (no REMOVE_BASE_PATH needed).
    assert scope["raw_path"] == raw_path.encode() and scope["path"] == "/model/arn:aws:bedrock:" + (
        "us-east-1:123456789012:inference-profile/us.x-v1:0/invoke"
    )
    assert scope["query_string"] == b"a=1&a=2&b=x%20y" and scope["method"] == "POST"
    headers = fake.headers()
    assert headers["authorization"] == [f"Bearer {stack.demo_key}"] and headers["x-team"] == ["t"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"] and headers["x-forwarded-proto"] == ["https"]
    assert headers["content-length"] == [str(len(body))]
    context = fake.context()
    assert context["stage"] == stack.stage and context["path"] == f"/{stack.stage}{raw_path}"
    assert context["resourcePath"] == "/model/{proxy+}" or "{" in context["resourcePath"]
    assert context["httpMethod"] == "POST" and context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["accountId"] == "123456789012"
    assert str(uuid.UUID(context["requestId"])) == context["requestId"]
    assert context["requestId"] == reply.header("x-amzn-RequestId")
    # Milliseconds since the epoch, taken while the request was being served.
    assert int(sent_at * 1000) <= context["requestTimeEpoch"] <= time.time() * 1000
    authorizer = context["authorizer"]
    assert authorizer["principalId"] == "User::demo" and authorizer["username"] == "demo"
    assert authorizer["keyId"] == stack.demo_key_id and isinstance(authorizer["integrationLatency"], int)
    [lambda_context] = headers["x-amzn-lambda-context"]
    assert json.loads(lambda_context)["env_config"]["function_name"].endswith("ProxyFunction")


def test_a_caller_sent_request_context_is_replaced_not_appended(stack: LocalStack, stand_in: Any) -> None:
    fake = stand_in()
    forged = json.dumps({"authorizer": {"principalId": "User::mallory", "username": "mallory"}})
    reply = invoke(stack, stack.demo_key, **{"x-amzn-request-context": forged, "X-Amzn-Lambda-Context": "{}"})
    assert reply.status == 200
    headers = fake.headers()
    assert len(headers["x-amzn-request-context"]) == 1 and len(headers["x-amzn-lambda-context"]) == 1
    assert fake.context()["authorizer"]["principalId"] == "User::demo"


def test_a_forged_request_context_does_not_change_who_is_billed(stack: LocalStack) -> None:
    key, _ = mint_key(stack, "victor")
    forged = {
        "requestId": str(uuid.uuid4()),
        "stage": stack.stage,
        "authorizer": {"principalId": "User::mallory", "username": "mallory", "keyId": "forged"},
    }
    reply = invoke(stack, key, **{"x-amzn-request-context": json.dumps(forged)})
    assert reply.status == 200, reply.body
    items = aws_client(stack, "dynamodb").scan(TableName=stack.tables["UsageTable"])["Items"]
    principals = {item["PK"]["S"] for item in items}
    assert "USAGE#User::victor" in principals and "USAGE#User::mallory" not in principals


def test_non_ascii_context_values_reach_the_app_as_utf_8_bytes(
    stack: LocalStack, stand_in: Any, replace_authorizer: Any
) -> None:
    # LWA serializes the context with serde_json, which writes non-ASCII as UTF-8 (no \\u
    # escapes); an app reading the header as Latin-1 (ASGI's rule) must re-decode it as UTF-8.
    replace_authorizer(
        lambda event: {
            "principalId": "User::zoe",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}],
            },
            "context": {"team": "Équipe-北"},
        }
    )
    fake = stand_in()
    assert invoke(stack, stack.demo_key).status == 200
    [(scope, _)] = fake.requests
    [raw] = [value for name, value in scope["headers"] if name == b"x-amzn-request-context"]
    assert "Équipe-北".encode() in raw
    assert json.loads(raw.decode("utf-8"))["authorizer"]["team"] == "Équipe-北"


def test_response_headers_reserved_ones_remapped_and_transfer_encoding_dropped(
    stack: LocalStack, stand_in: Any
) -> None:
    stand_in(
        lambda scope, body: (
            201,
            [(b"x-one", b"1"), (b"date", b"yesterday"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
            [b"created"],
            0,
        )
    )
    reply = invoke(stack, stack.demo_key)
    assert (reply.status, reply.body) == (201, b"created")
    assert reply.header("Content-Type") == "application/json"  # API Gateway's default
    assert reply.header("x-amzn-Remapped-Date") == "yesterday" and reply.header("Date") != "yesterday"
    assert reply.header("X-One") == "1" and reply.header_values("Set-Cookie") == ["a=1", "b=2"]


def test_an_app_that_fails_before_answering_is_502(stack: LocalStack, stand_in: Any) -> None:
    def broken(scope: dict[str, Any], body: bytes) -> Any:
        raise RuntimeError("bug")

    stand_in(broken)
    reply = invoke(stack, stack.demo_key)
    assert reply.status == 502
    assert reply.json() == {"message": "Internal server error"}


class _Rendezvous:
    """An app that answers only once ``expected`` requests are inside it at the same time."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.all_inside = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        self.inside += 1
        if self.inside == self.expected:
            self.all_inside.set()
        try:
            await asyncio.wait_for(self.all_inside.wait(), 10)
            status = 200
        except TimeoutError:
            status = 409  # the others never came in: requests were served one at a time
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_requests_are_served_concurrently(stack: LocalStack, stand_in: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    assert stack.gateway is not None
    stand_in()  # restores the real app afterwards
    stack.gateway.app = _Rendezvous(3)
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: invoke(stack, stack.demo_key), range(3)))
    assert [reply.status for reply in replies] == [200, 200, 200]


def _arrivals(stack: LocalStack, path: str, body: bytes, key: str) -> tuple[list[float], bytes]:
    """Seconds (from sending) at which each piece of the response body arrived."""
    connection = _connection(stack)
    try:
        started = time.monotonic()
        connection.request(
            "POST",
            f"/{stack.stage}{path}",
            body=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        times, data = [], b""
        while piece := response.read1(65536):
            times.append(time.monotonic() - started)
            data += piece
        return times, data
    finally:
        connection.close()


class _Receiver:
    """Reads a response body piece by piece as it arrives, so that the sender can wait until the
    client has received what it sent so far before sending more."""

    def __init__(self) -> None:
        self.data = b""
        self._arrived = threading.Condition()
        self._gave_up = False

    def has(self, received: Callable[[bytes], bool]) -> bool:
        """Wait until ``received(body so far)``; False if it never came (buffered on the way)."""
        with self._arrived:
            # A hang guard, not a measurement: once a wait gave up, the next ones do not wait.
            came = self._arrived.wait_for(lambda: received(self.data), timeout=0 if self._gave_up else 10)
        self._gave_up = self._gave_up or not came
        return came

    def read(self, stack: LocalStack, path: str, body: bytes, key: str) -> bytes:
        connection = _connection(stack)
        try:
            connection.request(
                "POST",
                f"/{stack.stage}{path}",
                body=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.status == 200, response.read()
            while piece := response.read1(65536):
                with self._arrived:
                    self.data += piece
                    self._arrived.notify_all()
            return self.data
        finally:
            connection.close()


def _chunk_events(data: bytes) -> list[Any]:
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [message for message in buffer if message.headers.get(":event-type") == "chunk"]


def test_the_gateway_relays_each_chunk_as_the_app_sends_it(stack: LocalStack, stand_in: Any) -> None:
    chunks = [b"event-%d;" % i for i in range(10)]
    receiver = _Receiver()
    relayed: list[bool] = []

    async def once_the_client_has_the_last_chunk(index: int) -> None:
        # The app sends a chunk only when the client has the one before: were it held back
        # anywhere on the way, it would not get there (the wait gives up).
        relayed.append(await asyncio.to_thread(receiver.has, lambda data: chunks[index - 1] in data))

    stand_in(
        lambda scope, body: (
            200,
            [(b"content-type", b"text/plain")],
            chunks,
            once_the_client_has_the_last_chunk,
        )
    )
    data = receiver.read(stack, "/invoke-model", b"{}", stack.demo_key)
    assert data == b"".join(chunks)
    assert relayed == [True] * (len(chunks) - 1)


def test_a_streamed_answer_reaches_the_client_event_by_event(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = _Receiver()
    pauses: list[tuple[float, bool]] = []  # (seconds, whether the client had every event sent so far)

    def sleep(seconds: float) -> None:
        # The emulator's n-th pause comes after its n-th event: through the proxy and the gateway
        # unbuffered, that event reaches the client while the emulator waits here.
        sent = len(pauses) + 1
        pauses.append((seconds, receiver.has(lambda data: len(_chunk_events(data)) >= sent)))

    monkeypatch.setattr(stack._emulator, "sleep", sleep)
    text = "count to ten [[emulator chunk_delay_ms=200]]"
    body = json.dumps(claude_body(text)).encode()
    data = receiver.read(stack, f"/model/{HAIKU}/invoke-with-response-stream", body, stack.demo_key)
    events = _chunk_events(data)
    assert len(events) >= 5
    assert pauses == [(0.2, True)] * (len(events) - 1)


class _FakeAuthorizer:
    """Takes the authorizer function's place: records each event, answers ``respond(event)``."""

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> Any:
        self.events.append(json.loads(json.dumps(event)))
        return self.respond(event)


@pytest.fixture
def replace_authorizer(stack: LocalStack) -> Iterator[Any]:
    assert stack.gateway is not None
    gateway = stack.gateway
    original = gateway.authorize

    def install(respond: Any) -> _FakeAuthorizer:
        gateway.cache.clear()  # decisions cached by earlier tests would skip the fake
        gateway.authorize = _FakeAuthorizer(respond)
        return cast(_FakeAuthorizer, gateway.authorize)

    yield install
    gateway.authorize = original
    gateway.cache.clear()


def _raise(error: Exception) -> Any:
    raise error


@pytest.mark.parametrize(
    ("respond", "kind"),
    [
        (lambda event: _raise(FunctionError("Exception", "boom")), "AUTHORIZER_FAILURE"),
        (lambda event: {"principalId": "x"}, "AUTHORIZER_CONFIGURATION_ERROR"),  # no policy
        (
            lambda event: {
                "principalId": "x",
                "policyDocument": {"Version": "2012-10-17", "Statement": []},
            },
            "AUTHORIZER_CONFIGURATION_ERROR",
        ),
        (
            lambda event: {
                "principalId": "x",
                "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}],
                },
                "context": {"nested": {"not": "allowed"}},
            },
            "AUTHORIZER_CONFIGURATION_ERROR",
        ),
    ],
)
def test_a_failing_authorizer_is_500(
    stack: LocalStack, replace_authorizer: Any, respond: Any, kind: str
) -> None:
    replace_authorizer(respond)
    reply = invoke(stack, stack.demo_key)
    assert reply.status == 500
    assert reply.json()["error"]["type"] == kind  # the template's DEFAULT_5XX, $context.error.responseType
    assert "message" in reply.json()  # valid JSON: messageString arrives already quoted (or null)
    assert reply.header("x-amzn-ErrorType") == "AuthorizerConfigurationException"


def test_a_policy_that_does_not_cover_the_method_is_403(stack: LocalStack, replace_authorizer: Any) -> None:
    assert stack.gateway is not None
    other = f"arn:aws:execute-api:{stack.region}:123456789012:{stack.gateway.api_id}/{stack.stage}/GET/*"
    fake = replace_authorizer(
        lambda event: {
            "principalId": "User::x",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": other}],
            },
        },
    )
    reply = invoke(stack, stack.demo_key)
    assert reply.status == 403
    assert reply.json() == REVOKED_BODY  # the template's ACCESS_DENIED body
    [event] = fake.events
    assert event["type"] == "TOKEN" and event["authorizationToken"] == f"Bearer {stack.demo_key}"
    assert event["methodArn"] == other.replace("/GET/*", "/POST/invoke-model")


def test_cached_decisions_are_reused_per_token(
    stack: LocalStack, replace_authorizer: Any, stand_in: Any, authorizer_ttl: Any
) -> None:
    authorizer_ttl(300)
    allow = {
        "principalId": "User::demo",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}],
        },
        "context": {"username": "demo", "count": 3, "flag": True},
    }
    fake = replace_authorizer(lambda event: allow)
    proxy = stand_in()
    for _ in range(3):
        assert invoke(stack, stack.demo_key).status == 200
    assert invoke(stack, "bsk_" + "y" * 43).status == 200  # another token: another call
    assert len(fake.events) == 2
    first, cached = proxy.context(0)["authorizer"], proxy.context(1)["authorizer"]
    assert first["count"] == "3" and first["flag"] == "true"  # context values reach the proxy as strings
    assert cached["integrationLatency"] == 0 and cached["principalId"] == "User::demo"


# --- the command ------------------------------------------------------------------------------


def _command() -> list[str]:
    script = Path(sys.executable).parent / "bedrock-spend-local"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bedrock_spend_local.server"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env.update({"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1"})
    return env


def test_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*_command(), "--port", str(port), "--log-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(tmp_path),
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use (try --port {port + 1})"


def test_a_bad_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--port", "http"], ["--authorizer-ttl", "3601"], ["--bedrock", "gcp"], ["--stage", "a/b"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "usage: bedrock-spend-local" in capsys.readouterr().err


def test_the_command_prints_the_banner_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*_command(), "--port", "0", "--log-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        banner: list[str] = []
        deadline = time.monotonic() + 20
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            banner.append(line)
            if "Ctrl-C to stop" in line:
                break
        text = "".join(banner)
        assert "all state (keys, usage, metrics) is in memory" in text
        assert "curl -sS --cacert " in text and "https://127.0.0.1:" in text and "/v1/invoke-model" in text
        assert "AWS_CA_BUNDLE=" in text and "AWS_BEARER_TOKEN_BEDROCK=" in text
        assert " usage" in text and "list-metrics --namespace BedrockCostApportionment" in text
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)


# --- Bedrock's connection breaking ----------------------------------------------------------


def test_a_connection_broken_before_bedrock_answers_is_a_json_error(stack: LocalStack) -> None:
    before = len(emulator_billed(stack))
    payload = {"modelId": HAIKU, "body": claude_body("hi [[emulator disconnect]]")}
    reply = invoke(stack, stack.demo_key, payload)
    assert reply.status >= 500, reply.body
    assert reply.json()["error"]["type"]
    assert len(emulator_billed(stack)) == before  # not billed, so nothing to record


def test_a_connection_broken_mid_stream_ends_the_clients_stream(stack: LocalStack) -> None:
    from botocore.eventstream import EventStreamBuffer

    text = "tell me a story [[emulator disconnect after=2 chunk_delay_ms=20]]"
    body = json.dumps(claude_body(text, max_tokens=200)).encode()
    ending: BaseException | None = None
    connection = _connection(stack)
    try:
        connection.request(
            "POST",
            f"/{stack.stage}/model/{HAIKU}/invoke-with-response-stream",
            body=body,
            headers={"Authorization": f"Bearer {stack.demo_key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200
        data = b""
        try:
            while piece := response.read1(65536):
                data += piece
        except (OSError, HTTPException) as error:
            ending = error  # a truncated chunked body: how a broken stream looks to the client
    finally:
        connection.close()
    # Cut short by the break (the chunked body unfinished), not ended cleanly nor by the read timeout.
    assert ending is not None and not isinstance(ending, TimeoutError)
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    chunks = [m for m in buffer if m.headers.get(":event-type") == "chunk"]
    assert len(chunks) == 2  # what Bedrock sent before the break, and nothing more


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_stream_longer_than_the_integration_timeout_arrives_whole_and_is_recorded(
    stack: LocalStack,
) -> None:
    from botocore.eventstream import EventStreamBuffer

    def events(data: bytes) -> list[Any]:
        buffer = EventStreamBuffer()
        buffer.add_data(data)
        return [m for m in buffer if m.headers.get(":event-type") == "chunk"]

    key, _ = mint_key(stack, "longstream")
    prompt = "Write a long story about a lighthouse."
    path = f"/model/{HAIKU}/invoke-with-response-stream"
    _, quick = _arrivals(stack, path, json.dumps(claude_body(prompt, max_tokens=400)).encode(), key)
    count = len(events(quick))
    delay_ms = 50_000 // max(count - 1, 1)  # about 50 s in all: past API Gateway's 29 s
    slow_body = claude_body(f"{prompt} [[emulator chunk_delay_ms={delay_ms}]]", max_tokens=400)
    times, data = _arrivals(stack, path, json.dumps(slow_body).encode(), key)
    assert len(events(data)) == count
    assert times[-1] > 45
    assert sum(1 for t in times if t < 29) >= count // 4  # it streamed, it was not held back
    items = aws_client(stack, "dynamodb").scan(TableName=stack.tables["UsageTable"])["Items"]
    assert sum(1 for item in items if item["PK"]["S"] == "USAGE#User::longstream") == 2
