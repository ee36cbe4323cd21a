"""Unmodified clients against the local stack over HTTPS: boto3's bedrock-runtime client and
the Anthropic SDK's ``AnthropicBedrock``.

Each client runs in its own process, as a team's application would: its environment has
``AWS_BEARER_TOKEN_BEDROCK`` (a proxy key), a region and the stack's CA (``AWS_CA_BUNDLE`` for
botocore, ``SSL_CERT_FILE`` for the Anthropic SDK's HTTP client), no AWS credentials, no config
files, and the client gets nothing but the endpoint (the stack's URL, stage included). botocore
>= 1.44 refuses a bearer token over plain HTTP, so this is the only way they can reach it.
The stack runs in this process with its own environment, untouched.

Each call's recorded usage (ledger) is compared with what the emulator billed; the two
are matched through the request metadata the proxy adds (``principalId``), so each test
mints its own key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import aws_client, emulator_billed, mint_key
from tests.helpers import claude_body, usage_records

pytestmark = pytest.mark.e2e

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
# Priced for cache reads and both cache-write TTLs.
CACHING = "anthropic.claude-haiku-4-5-20251001-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"

# The application: plain boto3, one call, its outcome printed as JSON.
CLIENT = r"""
import json, sys
import boto3
from botocore.exceptions import ClientError

spec = json.loads(sys.argv[1])
client = boto3.client("bedrock-runtime", endpoint_url=spec["endpoint_url"])
events = []
try:
    response = getattr(client, spec["call"])(**spec["params"])
    if "body" in response and hasattr(response["body"], "read"):  # invoke_model
        response["body"] = json.loads(response["body"].read())
    for key in ("body", "stream"):  # the two event streams
        if key in response and not isinstance(response[key], dict):
            for event in response[key]:
                if "chunk" in event:
                    event = {"chunk": json.loads(event["chunk"]["bytes"])}
                events.append(event)
            response[key] = None
    outcome = {"response": response, "events": events}
except ClientError as error:
    outcome = {
        "error": {"class": type(error).__name__, "code": error.response["Error"]["Code"]},
        "events": events,
        "modelled": isinstance(error, client.exceptions.ThrottlingException),
    }
print(json.dumps(outcome, default=str))
"""


def run_client(stack: LocalStack, key: str, call: str, tmp_path: Path, **params: Any) -> dict[str, Any]:
    spec = {"endpoint_url": stack.url, "call": call, "params": params}
    return _run(CLIENT, client_env(stack, key, tmp_path), spec)


def client_env(stack: LocalStack, key: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # no ~/.aws
        "AWS_REGION": stack.region,
        "AWS_DEFAULT_REGION": stack.region,  # the variable boto3 reads
        "AWS_BEARER_TOKEN_BEDROCK": key,
        "AWS_CA_BUNDLE": str(stack.ca_file),
        "SSL_CERT_FILE": str(stack.ca_file),
    }


def _run(program: str, env: dict[str, str], spec: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", program, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def new_key(stack: LocalStack) -> tuple[str, str]:
    """A key of a user of its own: (key, principal id)."""
    username = f"sdk-{uuid.uuid4().hex[:10]}"
    key, _ = mint_key(stack, username)
    return key, f"User::{username}"


def billed_for(stack: LocalStack, principal: str) -> list[dict[str, Any]]:
    """The emulator's tally of the calls the proxy made for ``principal`` (request metadata)."""
    found = []
    for call in emulator_billed(stack):
        metadata = call["request_metadata"]
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        if (metadata or {}).get("principalId") == principal:
            found.append(call)
    return found


def ledger_for(stack: LocalStack, principal: str) -> list[dict[str, Any]]:
    items = aws_client(stack, "dynamodb").query(
        TableName=stack.tables["UsageTable"],
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"USAGE#{principal}"}},
    )["Items"]
    return usage_records(items)


def assert_recorded_as_billed(stack: LocalStack, principal: str, operation: str) -> dict[str, Any]:
    [billed] = billed_for(stack, principal)
    [item] = ledger_for(stack, principal)
    assert billed["operation"] == item["Operation"]["S"] == operation
    assert billed["authorization_scheme"] != "Bearer"  # the proxy's own credentials, not the key
    recorded = {
        "input_tokens": int(item["InputTokens"]["N"]),
        "output_tokens": int(item["OutputTokens"]["N"]),
        "cache_read_tokens": int(item["CacheReadTokens"]["N"]),
        "cache_write_5m_tokens": int(item["CacheWrite5mTokens"]["N"]),
        "cache_write_1h_tokens": int(item["CacheWrite1hTokens"]["N"]),
    }
    assert recorded == {name: billed[name] for name in recorded}
    assert item["Priced"]["BOOL"] is True
    return item


def cached_messages() -> dict[str, Any]:
    """A prompt with a 1-hour and a 5-minute cache point, new to the emulator's cache."""
    return {
        "system": [
            {"text": f"Session {uuid.uuid4().hex}. " + "You answer in one short sentence. " * 20},
            {"cachePoint": {"type": "default", "ttl": "1h"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "A long document worth caching. " * 30},
                    {"cachePoint": {"type": "default"}},
                    {"text": "What is it about?"},
                ],
            }
        ],
    }


def test_invoke_model(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    outcome = run_client(stack, key, "invoke_model", tmp_path, modelId=HAIKU, body=json.dumps(claude_body()))
    response = outcome["response"]
    assert response["contentType"] == "application/json"
    assert response["body"]["type"] == "message"
    item = assert_recorded_as_billed(stack, principal, "InvokeModel")
    assert response["body"]["usage"]["output_tokens"] == int(item["OutputTokens"]["N"])


def test_converse_with_prompt_caching(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    outcome = run_client(stack, key, "converse", tmp_path, modelId=CACHING, **cached_messages())
    response = outcome["response"]
    usage = response["usage"]
    assert response["stopReason"] == "end_turn"
    assert usage["cacheWriteInputTokens"] > 0
    assert {d["ttl"] for d in usage["cacheDetails"]} == {"5m", "1h"}
    item = assert_recorded_as_billed(stack, principal, "Converse")
    assert int(item["CacheWrite1hTokens"]["N"]) > 0 and int(item["CacheWrite5mTokens"]["N"]) > 0


def test_invoke_model_with_response_stream(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    outcome = run_client(
        stack,
        key,
        "invoke_model_with_response_stream",
        tmp_path,
        modelId=HAIKU,
        body=json.dumps(claude_body("Tell me a story about a lighthouse keeper.", max_tokens=300)),
    )
    chunks = [event["chunk"] for event in outcome["events"]]
    assert chunks[0]["type"] == "message_start"
    assert chunks[-1]["type"] == "message_stop"
    text = "".join(c["delta"].get("text", "") for c in chunks if c["type"] == "content_block_delta")
    item = assert_recorded_as_billed(stack, principal, "InvokeModelWithResponseStream")
    assert len(text.split()) == int(item["OutputTokens"]["N"])  # the whole text arrived


def test_converse_stream_with_prompt_caching(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    outcome = run_client(stack, key, "converse_stream", tmp_path, modelId=CACHING, **cached_messages())
    events = outcome["events"]
    assert list(events[0]) == ["messageStart"]
    assert list(events[-1]) == ["metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    usage = events[-1]["metadata"]["usage"]
    assert len(text.split()) == usage["outputTokens"]
    item = assert_recorded_as_billed(stack, principal, "ConverseStream")
    assert int(item["CacheWrite1hTokens"]["N"]) == next(
        d["inputTokens"] for d in usage["cacheDetails"] if d["ttl"] == "1h"
    )


def test_a_mid_stream_error_raises_event_stream_error_and_is_recorded(
    stack: LocalStack, tmp_path: Path
) -> None:
    key, principal = new_key(stack)
    prompt = "tell me a story [[emulator stream_error=modelStreamErrorException after=3]]"
    outcome = run_client(
        stack,
        key,
        "invoke_model_with_response_stream",
        tmp_path,
        modelId=LLAMA,
        body=json.dumps({"prompt": prompt, "max_gen_len": 100}),
    )
    assert outcome["error"] == {"class": "EventStreamError", "code": "modelStreamErrorException"}
    assert len(outcome["events"]) == 3  # the chunks before the error reached the application
    item = assert_recorded_as_billed(stack, principal, "InvokeModelWithResponseStream")
    assert item["StreamError"]["S"] == "ModelStreamErrorException"


def test_a_throttled_call_raises_throttling_exception(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    prompt = "hello [[emulator error=ThrottlingException]]"
    outcome = run_client(
        stack,
        key,
        "converse",
        tmp_path,
        modelId=HAIKU,
        messages=[{"role": "user", "content": [{"text": prompt}]}],
    )
    assert outcome["error"] == {"class": "ThrottlingException", "code": "ThrottlingException"}
    assert outcome["modelled"] is True
    assert ledger_for(stack, principal) == []


def test_count_tokens_is_answered_and_not_recorded(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    messages = [{"role": "user", "content": [{"text": "Say hello in three languages."}]}]
    outcome = run_client(
        stack, key, "count_tokens", tmp_path, modelId=HAIKU, input={"converse": {"messages": messages}}
    )
    assert outcome["response"]["inputTokens"] > 0
    assert ledger_for(stack, principal) == []


# --- the Anthropic SDK ------------------------------------------------------------------------

# AnthropicBedrock takes AWS_BEARER_TOKEN_BEDROCK as its api_key and then sends
# "Authorization: Bearer <key>" instead of signing; it calls /model/{id}/invoke and, for
# stream=True, /model/{id}/invoke-with-response-stream (anthropic/lib/bedrock/_client.py).
ANTHROPIC_CLIENT = r"""
import json, sys
from anthropic import AnthropicBedrock

spec = json.loads(sys.argv[1])
client = AnthropicBedrock(base_url=spec["base_url"], aws_region=spec["region"])
params = dict(model=spec["model"], max_tokens=200, messages=[{"role": "user", "content": spec["prompt"]}])
if spec["stream"]:
    types, text, usage = [], "", None
    for event in client.messages.create(stream=True, **params):
        types.append(event.type)
        if event.type == "content_block_delta":
            text += event.delta.text
        if event.type == "message_delta":
            usage = event.usage.output_tokens
    print(json.dumps({"types": types, "text": text, "output_tokens": usage}))
else:
    message = client.messages.create(**params)
    print(json.dumps({"text": message.content[0].text, "usage": message.usage.model_dump()}))
"""


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_the_anthropic_sdk_with_a_bearer_key(stack: LocalStack, tmp_path: Path, stream: bool) -> None:
    pytest.importorskip("anthropic")
    key, principal = new_key(stack)
    spec = {
        "base_url": stack.url,
        "region": stack.region,
        "model": HAIKU,
        "prompt": "Tell me about lighthouses.",
        "stream": stream,
    }
    outcome = _run(ANTHROPIC_CLIENT, client_env(stack, key, tmp_path), spec)
    [billed] = billed_for(stack, principal)
    assert billed["authorization_scheme"] != "Bearer"
    operation = "InvokeModelWithResponseStream" if stream else "InvokeModel"
    item = assert_recorded_as_billed(stack, principal, operation)
    if stream:
        assert outcome["types"][0] == "message_start" and outcome["types"][-1] == "message_stop"
        assert outcome["output_tokens"] == int(item["OutputTokens"]["N"])
    else:
        assert outcome["usage"]["output_tokens"] == int(item["OutputTokens"]["N"])
    assert len(outcome["text"].split()) == int(item["OutputTokens"]["N"])


# A long call: boto3 with a read timeout above the call's length, each event's arrival timed.
LONG_CLIENT = r"""
import json, sys, time
import boto3
from botocore.config import Config

spec = json.loads(sys.argv[1])
config = Config(read_timeout=180, retries={"total_max_attempts": 1})
client = boto3.client("bedrock-runtime", endpoint_url=spec["endpoint_url"], config=config)
started = time.monotonic()
response = getattr(client, spec["call"])(**spec["params"])
arrivals, usage = [], response.get("usage")
for event in response.get("stream") or []:
    arrivals.append(time.monotonic() - started)
    usage = event.get("metadata", {}).get("usage", usage)
print(json.dumps({"seconds": time.monotonic() - started, "arrivals": arrivals, "usage": usage}))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("call", ["converse_stream", "converse"])
def test_calls_far_past_29_seconds_complete_and_are_metered_exactly(
    stack: LocalStack, tmp_path: Path, call: str
) -> None:
    key, principal = new_key(stack)

    def spec(directive: str) -> dict[str, Any]:
        text = f"Tell a short tale. {directive}"
        return {
            "endpoint_url": stack.url,
            "call": call,
            "params": {
                "modelId": HAIKU,
                "messages": [{"role": "user", "content": [{"text": text}]}],
                "inferenceConfig": {"maxTokens": 40},
            },
        }

    env = client_env(stack, key, tmp_path)
    if call == "converse_stream":  # about 48 s in all, whatever the number of events
        events = len(_run(LONG_CLIENT, env, spec(""))["arrivals"])
        directive, seconds = f"[[emulator chunk_delay_ms={48_000 // max(events - 1, 1)}]]", 45
    else:
        directive, seconds = "[[emulator latency_ms=60000]]", 60
    key, principal = new_key(stack)
    env = client_env(stack, key, tmp_path)
    outcome = _run(LONG_CLIENT, env, spec(directive), timeout=240)
    assert outcome["seconds"] > seconds
    if call == "converse_stream":
        arrivals = outcome["arrivals"]
        assert sum(1 for t in arrivals if t < 29) >= 3  # streamed as generated, not held back
    operation = "ConverseStream" if call == "converse_stream" else "Converse"
    item = assert_recorded_as_billed(stack, principal, operation)
    assert outcome["usage"]["outputTokens"] == int(item["OutputTokens"]["N"])
    # Claude 3 Haiku: $0.25 / $1.25 per 1M input / output tokens, exactly.
    input_tokens, output_tokens = int(item["InputTokens"]["N"]), int(item["OutputTokens"]["N"])
    assert Decimal(item["CostMicroUsd"]["N"]) == input_tokens * Decimal("0.25") + output_tokens * Decimal(
        "1.25"
    )
