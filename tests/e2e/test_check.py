"""``bedrock-spend check`` end to end against the local stack: it passes there, it names the
cause when streams are buffered or Bedrock refuses the model, and it revokes its keys."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest

from bedrock_spend.aws.key_store import KeyStore
from bedrock_spend_cli.check_cmd import Cause, Status, StreamReply, judge_stream
from bedrock_spend_cli.check_cmd import Reply as CheckReply
from bedrock_spend_local.gateway import AsgiApp
from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import HTTP_TIMEOUT, aws_client, mint_key

pytestmark = pytest.mark.e2e
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
METERED = {"invoke-model", "invoke", "converse", "invoke-with-response-stream", "converse-stream"}
REFUSALS = {"refuse: no key", "refuse: revoked key", "refuse: model not allowed", "refuse: over budget"}


def check(stack: LocalStack, *options: str, model: str | None = HAIKU) -> tuple[int, str, str]:
    """``bedrock-spend check`` against the stack: (exit status, stdout, stderr)."""
    from bedrock_spend_cli.main import main

    arguments = [*stack.cli_args(), "check", "--endpoint", stack.url, "--ca-bundle", str(stack.ca_file)]
    arguments += ["--model", model] if model else []
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*arguments, *options])
    return code, out.getvalue(), err.getvalue()


def check_json(stack: LocalStack, *options: str) -> tuple[int, dict[str, Any]]:
    code, out, err = check(stack, "--yes", "--format", "json", *options)
    assert out, err
    return code, json.loads(out)


def results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["check"]: row for row in document["results"]}


def assert_keys_revoked(stack: LocalStack, document: dict[str, Any]) -> None:
    store = KeyStore(stack.tables["ApiKeyTable"], client=aws_client(stack, "dynamodb"))
    assert document["keys"], "the check minted no key"
    for key in document["keys"]:
        record = store.get_by_id(key["key_id"])
        assert record is not None and record.status == "revoked", key
        assert key["revoked"] is True


def emulator(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    assert stack.emulator_url is not None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(stack.emulator_url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        return json.load(response)


class BufferWholeResponse:
    """ASGI middleware that holds a response until it is complete, as API Gateway does for an
    integration in BUFFERED mode or LWA in buffered invoke mode."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[dict[str, Any]] = []

        async def hold(message: dict[str, Any]) -> None:
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                for each in held:
                    await send(each)

        await self.app(scope, receive, hold)


@pytest.fixture
def buffering(stack: LocalStack) -> Iterator[None]:
    """The stack's app behind :class:`BufferWholeResponse` for one test (LocalConfig.app_factory
    does the same for a new stack; swapping it here saves starting a second one)."""
    assert stack.gateway is not None
    app = stack.gateway.app
    stack.gateway.app = BufferWholeResponse(app)
    try:
        yield
    finally:
        stack.gateway.app = app


@pytest.fixture
def model_denied(stack: LocalStack) -> Iterator[None]:
    """Bedrock answers AccessDeniedException for Claude 3 Haiku, as for a role without access."""
    emulator(
        stack, "POST", "/_emulator/faults", {"error": "AccessDeniedException", "times": 50, "model": HAIKU}
    )
    try:
        yield
    finally:
        emulator(stack, "DELETE", "/_emulator/faults")


def test_check_passes_against_the_local_stack_and_revokes_its_keys(stack: LocalStack) -> None:
    code, document = check_json(stack)
    rows = results(document)
    assert code == 0, rows
    assert document["passed"] is True
    assert {name for name, row in rows.items() if row["status"] == "PASS"} >= METERED | REFUSALS | {
        "count-tokens",
        "ledger",
    }
    assert not [row for row in rows.values() if row["status"] == "FAIL"]
    for name in ("invoke-with-response-stream", "converse-stream"):
        assert rows[name]["measured"]["events"] >= 3  # judged incremental (PASS above) from 3 or more
    assert Decimal(document["cost_micro_usd"]) > 0
    assert {key["role"] for key in document["keys"]} == {"calls", "revoked", "refusals"}
    assert_keys_revoked(stack, document)


def test_the_ledger_total_is_what_the_usage_command_reports_for_the_run(stack: LocalStack) -> None:
    from tests.e2e.conftest import cli

    code, document = check_json(stack)
    assert code == 0
    [principal] = {key["principal"] for key in document["keys"]}
    code, out = cli(stack, "usage", "--principal", principal.removeprefix("User::"), "--format", "json")
    assert code == 0, out
    [row] = json.loads(out)
    assert row["calls"] == results(document)["ledger"]["measured"]["calls"]


def test_the_table_names_each_check_and_the_run_cost(stack: LocalStack) -> None:
    code, out, err = check(stack, "--yes")
    assert code == 0, out + err
    assert "converse-stream" in out and "PASS" in out
    assert "cost of the run: $0.0" in out
    assert out.rstrip().splitlines()[-1].startswith("PASS:")
    assert "billed calls to" in err and "at most $" in err  # the cost, stated before the first call


@pytest.mark.usefixtures("buffering")
def test_buffered_streams_fail_naming_stream_mode(stack: LocalStack) -> None:
    code, document = check_json(stack)
    rows = results(document)
    assert code == 3
    for name in ("invoke-with-response-stream", "converse-stream"):
        assert rows[name]["status"] == "FAIL", rows[name]
        assert rows[name]["cause"] == Cause.STREAM_MODE.value
        assert "STREAM" in rows[name]["look_at"] and "LWA" in rows[name]["look_at"]
        assert "all at once" in rows[name]["detail"]
    assert rows["converse"]["status"] == "PASS"  # buffering breaks nothing but streams
    assert_keys_revoked(stack, document)


@pytest.mark.usefixtures("model_denied")
def test_a_denied_model_fails_naming_iam_and_model_access_and_keys_are_still_revoked(
    stack: LocalStack,
) -> None:
    code, document = check_json(stack)
    rows = results(document)
    assert code == 3
    for name in METERED:
        assert rows[name]["status"] == "FAIL", rows[name]
        assert rows[name]["cause"] == Cause.MODEL_ACCESS.value
        assert "403 AccessDeniedException" in rows[name]["detail"]
        assert "IAM" in rows[name]["look_at"] and "model access" in rows[name]["look_at"]
    assert rows["refuse: over budget"]["status"] == "PASS"  # refusals never reach Bedrock
    assert rows["ledger"]["status"] == "SKIP"  # nothing was billed
    assert_keys_revoked(stack, document)


def test_a_given_key_is_used_and_not_revoked(stack: LocalStack) -> None:
    key, key_id = mint_key(stack, "checker")
    code, document = check_json(stack, "--key", key)
    assert code == 0, results(document)
    assert results(document)["ledger"]["status"] == "PASS"
    assert "calls" not in {k["role"] for k in document["keys"]}
    store = KeyStore(stack.tables["ApiKeyTable"], client=aws_client(stack, "dynamodb"))
    record = store.get_by_id(key_id)
    assert record is not None and record.status == "active"


def test_without_a_model_and_no_model_listing_it_asks_for_model(stack: LocalStack) -> None:
    code, out, err = check(stack, "--yes", model=None)
    assert code == 2
    assert "--model" in err and out == ""


def test_without_yes_and_no_terminal_it_refuses_to_spend(stack: LocalStack) -> None:
    code, _, err = check(stack)
    assert code == 2
    assert "--yes" in err
    store = KeyStore(stack.tables["ApiKeyTable"], client=aws_client(stack, "dynamodb"))
    assert not [
        r for r in store.scan() if r.username.startswith("bedrock-spend-check-") and r.status == "active"
    ]


def test_an_unreachable_endpoint_fails_naming_the_endpoint(stack: LocalStack) -> None:
    code, out, _ = check(stack, "--yes", "--format", "json", "--endpoint", "https://127.0.0.1:9/v1")
    assert code == 3
    document = json.loads(out)
    rows = results(document)
    assert rows["converse"]["cause"] == Cause.ENDPOINT.value
    assert_keys_revoked(stack, document)


@pytest.mark.slow
def test_long_call_outlives_the_old_29_s_limit(stack: LocalStack) -> None:
    code, document = check_json(stack, "--long")
    row = results(document)["long-call"]
    assert code == 0, row
    assert row["status"] == "PASS" and row["measured"]["seconds"] > 29


# The verdict on a stream's timing, without a stack.


def stream(arrivals: list[float]) -> StreamReply:
    return StreamReply(
        CheckReply(200, {}, b"", arrivals[-1] if arrivals else 0), arrivals, ["chunk"] * len(arrivals)
    )


def test_events_within_a_few_milliseconds_are_a_buffered_stream() -> None:
    result = judge_stream("s", stream([1.200, 1.201, 1.201, 1.202]))
    assert result.status is Status.FAIL and result.cause is Cause.STREAM_MODE


def test_events_spread_over_the_generation_are_a_stream() -> None:
    result = judge_stream("s", stream([0.3, 0.35, 0.41, 0.48, 0.9]))
    assert result.status is Status.PASS
    assert result.measured["first_event_seconds"] == 0.3


def test_too_few_events_cannot_prove_streaming() -> None:
    assert judge_stream("s", stream([0.3, 0.6])).status is Status.FAIL


def test_with_the_authorizer_cache_off_a_used_key_is_refused_once_revoked(
    stack: LocalStack, authorizer_ttl: Any
) -> None:
    authorizer_ttl(0)
    code, document = check_json(stack, "--authorizer-ttl", "0", "--wait-revocation")
    row = results(document)["refuse: revoked while cached"]
    assert code == 0, row
    assert row["status"] == "PASS" and "403 AccessDeniedException" in row["detail"]
