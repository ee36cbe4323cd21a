"""End to end: the local stack (`make run`) over real HTTP on 127.0.0.1.

Keys are minted with the `bedrock-spend` CLI against the stack's moto server, requests go
through the API Gateway emulation to the real authorizer and proxy handlers and on to the
Bedrock emulator, and metrics are read back from CloudWatch (moto).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, cast

import pytest

from bedrock_spend_local.api import Route
from bedrock_spend_local.runtime import FunctionError, LambdaFunction, StdoutCapture
from bedrock_spend_local.server import LocalStack, main
from tests.e2e.conftest import Reply, aws_client, cli, emulator_billed, http, log_lines, mint_key
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
    assert {"InputTokensCost", "OutputTokensCost", "CacheReadTokensUsed"} <= names


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


def test_a_revoked_key_works_until_the_cached_decision_expires(
    stack: LocalStack, authorizer_ttl: Any
) -> None:
    authorizer_ttl(1)
    key, key_id = mint_key(stack, "erin")
    assert invoke(stack, key).status == 200
    revoked_at = time.monotonic()
    assert cli(stack, "keys", "revoke", key_id)[0] == 0
    if time.monotonic() - revoked_at < 0.8:
        assert invoke(stack, key).status == 200  # the cached Allow
    deadline = time.monotonic() + 10
    while (status := invoke(stack, key).status) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 403
    assert time.monotonic() - revoked_at < 10


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


def test_an_event_over_lambdas_6_mb_is_the_request_too_large_gateway_response(stack: LocalStack) -> None:
    payload = {"modelId": HAIKU, "body": claude_body("word " * (7 * 1024 * 1024 // 5))}
    reply = invoke(stack, stack.demo_key, payload)
    assert reply.status == 413
    assert reply.json()["error"]["type"] == "PayloadTooLarge"


def test_a_chunked_upload_is_read_whole(stack: LocalStack) -> None:
    host, port = stack.base_url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=30)
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
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
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
    time.sleep(1.5)  # let the abandoned invocation finish before the next test uses the proxy


def test_path_parameters_keep_their_percent_encoding() -> None:
    route = Route("POST", "/model/{modelId}/invoke", "ProxyFunction")
    arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku"
    assert route.match("POST", f"/model/{arn}/invoke") == {"modelId": arn}
    assert route.match("POST", "/model/a/b/invoke") is None
    assert route.match("GET", f"/model/{arn}/invoke") is None


# --- the REST v1 proxy event and result, seen through a stand-in proxy function ------------


class _StandIn:
    """Takes the proxy function's place: records each event, answers with ``respond(event)``."""

    name = "proxy"

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any], wait_seconds: float) -> Any:
        self.events.append(json.loads(json.dumps(event)))
        return self.respond(event)


@pytest.fixture
def replace(stack: LocalStack) -> Iterator[Any]:
    """Put a stand-in in place of a function (by logical id) for one test."""
    assert stack.gateway is not None
    functions = cast(dict[str, Any], stack.gateway.functions)
    originals = dict(functions)

    def install(logical_id: str, respond: Any) -> _StandIn:
        functions[logical_id] = _StandIn(respond)
        return cast(_StandIn, functions[logical_id])

    yield install
    functions.update(originals)
    stack.gateway.cache.clear()


@pytest.fixture
def stand_in(stack: LocalStack, replace: Any) -> Any:
    """Put a stand-in in place of the proxy function."""
    assert stack.api is not None
    name = next(r.function for r in stack.api.routes if r.path == "/invoke-model")
    return lambda respond: replace(name, respond)


def _ok(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}


def test_the_event_is_a_rest_v1_proxy_event(stack: LocalStack, stand_in: Any) -> None:
    assert stack.api is not None
    greedy = [r for r in stack.api.routes if "{" in r.path]
    if not greedy:
        pytest.skip("the template has no route with a path parameter")
    route = greedy[0]
    model = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x-v1%3A0"
    literal = route.path.split("{")[0]  # e.g. /model/
    raw_path = f"{literal}{model}/invoke"
    fake = stand_in(_ok)
    reply = http(
        f"{stack.url}{raw_path}?a=1&a=2&b=x%20y",
        body=b'{"hello": "world"}',
        headers={
            "authorization": f"Bearer {stack.demo_key}",
            "Content-Type": "application/json",
            "X-Team": "t",
        },
        method=route.method if route.method != "ANY" else "POST",
    )
    assert reply.status == 200, reply.body
    [event] = fake.events
    assert event["resource"] == route.path
    assert event["path"] == raw_path  # still percent-encoded, as REST APIs pass it
    assert list(event["pathParameters"].values()) == [raw_path.removeprefix(literal)]
    assert event["queryStringParameters"] == {"a": "2", "b": "x y"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x y"]}
    assert event["headers"]["Authorization"] == f"Bearer {stack.demo_key}"  # capitalized
    assert event["headers"]["X-Team"] == "t" and event["multiValueHeaders"]["X-Team"] == ["t"]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert "Content-Length" not in event["headers"] and "Connection" not in event["headers"]
    assert event["stageVariables"] is None
    assert (event["body"], event["isBase64Encoded"]) == ('{"hello": "world"}', False)
    context = event["requestContext"]
    assert context["stage"] == stack.stage and context["path"] == f"/{stack.stage}{raw_path}"
    assert context["resourcePath"] == route.path and context["httpMethod"] == event["httpMethod"]
    assert context["accountId"] == "123456789012" and context["identity"]["sourceIp"] == "127.0.0.1"
    assert str(uuid.UUID(context["requestId"])) == context["requestId"]
    assert context["requestId"] == reply.header("x-amzn-RequestId")
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 60
    authorizer = context["authorizer"]
    assert authorizer["principalId"] == "User::demo" and authorizer["username"] == "demo"
    assert authorizer["keyId"] == stack.demo_key_id and isinstance(authorizer["integrationLatency"], int)


def test_a_binary_media_type_body_arrives_base64_encoded(stack: LocalStack, stand_in: Any) -> None:
    assert stack.api is not None and stack.api.binary_media_types
    media = stack.api.binary_media_types[0].replace("*", "x")
    fake = stand_in(_ok)
    payload = bytes(range(256))
    reply = invoke(stack, stack.demo_key, payload, **{"Content-Type": media})
    assert reply.status == 200
    [event] = fake.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_a_base64_result_is_decoded_only_for_a_binary_accept(stack: LocalStack, stand_in: Any) -> None:
    assert stack.api is not None
    media = stack.api.binary_media_types[0].replace("*", "x")
    frames = b"\x00\x00\x00\x10binary\xff"
    stand_in(
        lambda event: {
            "statusCode": 200,
            "headers": {"Content-Type": media},
            "body": base64.b64encode(frames).decode(),
            "isBase64Encoded": True,
        }
    )
    assert invoke(stack, stack.demo_key, Accept=media).body == frames
    # API Gateway decides on the first Accept type only; no Accept (botocore sends none) is text.
    assert invoke(stack, stack.demo_key).body == base64.b64encode(frames)
    assert invoke(stack, stack.demo_key, Accept=f"text/plain, {media}").body == base64.b64encode(frames)


def test_result_headers_are_merged_and_reserved_ones_remapped(stack: LocalStack, stand_in: Any) -> None:
    stand_in(
        lambda event: {
            "statusCode": 201,
            "headers": {"X-One": "1", "Date": "yesterday", "X-Flag": True},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-One": ["1"]},
            "body": "created",
        }
    )
    reply = invoke(stack, stack.demo_key)
    assert (reply.status, reply.body) == (201, b"created")
    assert reply.header("Content-Type") == "application/json"  # API Gateway's default
    assert reply.header("x-amzn-Remapped-Date") == "yesterday" and reply.header("Date") != "yesterday"
    assert reply.header("X-Flag") == "true" and reply.header("X-One") == "1"
    assert reply.header_values("Set-Cookie") == ["a=1", "b=2"]
    assert reply.header_values("X-One") == ["1"]  # the same pair in both appears once


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": 200, "body": "{}", "cookies": []},  # a key REST proxy results cannot have
        {"statusCode": "two hundred", "body": "{}"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "headers": {"X-Count": 3}, "body": ""},
        ["not", "an", "object"],
    ],
)
def test_a_malformed_result_is_502(stack: LocalStack, stand_in: Any, result: Any) -> None:
    stand_in(lambda event: result)
    reply = invoke(stack, stack.demo_key)
    assert reply.status == 502
    assert reply.json() == {"message": "Internal server error"}


def test_a_raising_or_oversized_function_is_502(stack: LocalStack, stand_in: Any) -> None:
    assert stack.gateway is not None and stack.api is not None
    spec = stack.api.functions[next(r.function for r in stack.api.routes if r.path == "/invoke-model")]
    real = LambdaFunction(spec, stack.region, StdoutCapture.instance())

    def big(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": "x" * (6 * 1024 * 1024 + 200)}

    def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    for handler in (big, broken):
        real._handler = handler
        stand_in(lambda event, real=real: real.invoke(event, 29))
        reply = invoke(stack, stack.demo_key)
        assert reply.status == 502
        assert reply.json() == {"message": "Internal server error"}


def _authorizer_id(stack: LocalStack) -> str:
    assert stack.api is not None and stack.api.authorizer is not None
    return str(stack.api.authorizer.function)


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
def test_a_failing_authorizer_is_500(stack: LocalStack, replace: Any, respond: Any, kind: str) -> None:
    replace(_authorizer_id(stack), respond)
    reply = invoke(stack, stack.demo_key)
    assert reply.status == 500
    assert reply.json()["error"]["type"] == kind  # the template's DEFAULT_5XX, $context.error.responseType
    assert "message" in reply.json()  # valid JSON: messageString arrives already quoted (or null)
    assert reply.header("x-amzn-ErrorType") == "AuthorizerConfigurationException"


def test_a_policy_that_does_not_cover_the_method_is_403(stack: LocalStack, replace: Any) -> None:
    assert stack.gateway is not None
    other = f"arn:aws:execute-api:{stack.region}:123456789012:{stack.gateway.api_id}/{stack.stage}/GET/*"
    fake = replace(
        _authorizer_id(stack),
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
    stack: LocalStack, replace: Any, stand_in: Any, authorizer_ttl: Any
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
    fake = replace(_authorizer_id(stack), lambda event: allow)
    proxy = stand_in(_ok)
    for _ in range(3):
        assert invoke(stack, stack.demo_key).status == 200
    assert invoke(stack, "bsk_" + "y" * 43).status == 200  # another token: another call
    assert len(fake.events) == 2
    first, cached = (
        proxy.events[0]["requestContext"]["authorizer"],
        proxy.events[1]["requestContext"]["authorizer"],
    )
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
        assert "curl -sS http://127.0.0.1:" in text and "/v1/invoke-model" in text
        assert " usage" in text and "list-metrics --namespace BedrockCostApportionment" in text
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
