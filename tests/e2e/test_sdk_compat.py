"""The newest OpenAI and Anthropic SDKs through the local stack over HTTPS, changed in nothing but
the base URL and the key: Chat Completions and Responses (bedrock-runtime's /openai/v1 and
Mantle's /v1), the Anthropic Messages API on Mantle, streamed and not, usage asked for and not.

Each client runs in its own process with only the stack's CA trusted (``SSL_CERT_FILE``); each
call's ledger record is compared with what the emulator billed, matched by the test's own key.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import cli, emulator_billed, http
from tests.e2e.test_sdk import _run, client_env, ledger_for

pytestmark = pytest.mark.e2e

GPT_OSS = "openai.gpt-oss-120b-1:0"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"

OPENAI_CLIENT = r"""
import json, sys
import openai

spec = json.loads(sys.argv[1])
client = openai.OpenAI(base_url=spec["base_url"], api_key=spec["key"], max_retries=0)
out = {"texts": [], "usage": None}
try:
    if spec["api"] == "chat":
        messages = [{"role": "user", "content": spec["prompt"]}]
        kwargs = dict(model=spec["model"], messages=messages, max_tokens=30)
        if spec.get("user"):
            kwargs["user"] = spec["user"]
        if spec["stream"]:
            if spec.get("include_usage"):
                kwargs["stream_options"] = {"include_usage": True}
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                if chunk.choices and chunk.choices[0].delta.content:
                    out["texts"].append(chunk.choices[0].delta.content)
                if chunk.usage is not None:
                    out["usage"] = chunk.usage.model_dump()
        else:
            answer = client.chat.completions.create(**kwargs)
            out["texts"].append(answer.choices[0].message.content)
            out["usage"] = answer.usage.model_dump()
    else:
        kwargs = dict(model=spec["model"], input=spec["prompt"], max_output_tokens=30)
        if spec["stream"]:
            for event in client.responses.create(stream=True, **kwargs):
                if event.type == "response.output_text.delta":
                    out["texts"].append(event.delta)
                if event.type == "response.completed":
                    out["usage"] = event.response.usage.model_dump()
        else:
            answer = client.responses.create(**kwargs)
            out["texts"].append(answer.output_text)
            out["usage"] = answer.usage.model_dump()
except openai.APIStatusError as error:
    out["error"] = {"status": error.status_code, "body": error.body}
print(json.dumps(out))
"""

ANTHROPIC_CLIENT = r"""
import json, sys
import anthropic

spec = json.loads(sys.argv[1])
if spec.get("client") == "anthropic":  # the SDK's own client: the key goes in x-api-key
    client = anthropic.Anthropic(base_url=spec["base_url"], api_key=spec["key"], max_retries=0)
else:
    client = anthropic.AnthropicBedrockMantle(
        base_url=spec["base_url"], api_key=spec["key"], aws_region="us-east-1", max_retries=0
    )
out = {"texts": [], "usage": None}
messages = [{"role": "user", "content": spec["prompt"]}]
extra = {"metadata": {"user_id": spec["user"]}} if spec.get("user") else {}
try:
    if spec["stream"]:
        with client.messages.stream(model=spec["model"], max_tokens=30, messages=messages, **extra) as stream:
            for text in stream.text_stream:
                out["texts"].append(text)
            out["usage"] = stream.get_final_message().usage.model_dump()
    else:
        answer = client.messages.create(model=spec["model"], max_tokens=30, messages=messages, **extra)
        out["texts"].append(answer.content[0].text)
        out["usage"] = answer.usage.model_dump()
except anthropic.APIStatusError as error:
    out["error"] = {"status": error.status_code, "body": error.body}
except anthropic.APIError as error:  # an error event mid-stream
    out["error"] = {"status": None, "body": error.body, "message": str(error)}
print(json.dumps(out, default=str))
"""


def new_key(stack: LocalStack, *options: str) -> tuple[str, str]:
    username = f"compat-{uuid.uuid4().hex[:10]}"
    code, out = cli(stack, "keys", "create", "--username", username, "--format", "json", *options)
    assert code == 0, out
    return json.loads(out)["key"], f"User::{username}"


def call_openai(stack: LocalStack, tmp_path: Path, key: str, prefix: str, **spec: Any) -> dict[str, Any]:
    full = {"base_url": f"{stack.url}{prefix}", "key": key, "prompt": "Say hello.", **spec}
    return _run(OPENAI_CLIENT, client_env(stack, key, tmp_path), full)


def call_anthropic(stack: LocalStack, tmp_path: Path, key: str, **spec: Any) -> dict[str, Any]:
    full = {"base_url": f"{stack.url}/mantle/anthropic", "key": key, "prompt": "Say hello.", **spec}
    return _run(ANTHROPIC_CLIENT, client_env(stack, key, tmp_path), full)


def recorded(stack: LocalStack, principal: str) -> dict[str, Any]:
    [item] = ledger_for(stack, principal)
    return item


def billed_last(stack: LocalStack, before: int) -> dict[str, Any]:
    [billed] = emulator_billed(stack)[before:]
    return billed


# Each case starts a client process; the default suite runs one of each kind, test-slow the rest.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("prefix", "api", "stream", "include_usage"),
    [
        ("/openai/v1", "chat", False, None),
        ("/mantle/v1", "chat", True, False),
        ("/openai/v1", "responses", True, None),
        pytest.param("/openai/v1", "chat", True, True, marks=_SLOW),
        pytest.param("/openai/v1", "chat", True, False, marks=_SLOW),
        pytest.param("/openai/v1", "responses", False, None, marks=_SLOW),
        pytest.param("/mantle/v1", "chat", False, None, marks=_SLOW),
        pytest.param("/mantle/v1", "chat", True, True, marks=_SLOW),
        pytest.param("/mantle/v1", "responses", False, None, marks=_SLOW),
        pytest.param("/mantle/v1", "responses", True, None, marks=_SLOW),
    ],
)
def test_the_openai_sdk_works_unchanged_and_every_call_is_metered(
    stack: LocalStack, tmp_path: Path, prefix: str, api: str, stream: bool, include_usage: bool | None
) -> None:
    key, principal = new_key(stack)
    before = len(emulator_billed(stack))
    out = call_openai(
        stack, tmp_path, key, prefix, api=api, model=GPT_OSS, stream=stream, include_usage=include_usage
    )
    assert "error" not in out, out
    assert "".join(out["texts"])
    billed = billed_last(stack, before)
    item = recorded(stack, principal)
    assert (
        int(item["InputTokens"]["N"]) + int(item["CacheReadTokens"]["N"])
        == billed["input_tokens"] + billed["cache_read_tokens"]
    )
    assert int(item["OutputTokens"]["N"]) == billed["output_tokens"]
    assert item["Operation"]["S"] == ("ChatCompletions" if api == "chat" else "Responses")
    if api == "chat" and stream and not include_usage:
        assert out["usage"] is None  # the chunk the proxy asked for never reached the caller
    else:
        assert out["usage"] is not None


@pytest.mark.parametrize("stream", [False, True])
def test_the_anthropic_mantle_client_works_unchanged_and_every_call_is_metered(
    stack: LocalStack, tmp_path: Path, stream: bool
) -> None:
    key, principal = new_key(stack)
    before = len(emulator_billed(stack))
    out = call_anthropic(stack, tmp_path, key, model=HAIKU_45, stream=stream)
    assert "error" not in out, out
    billed = billed_last(stack, before)
    item = recorded(stack, principal)
    assert out["usage"]["output_tokens"] == int(item["OutputTokens"]["N"]) == billed["output_tokens"]
    assert int(item["InputTokens"]["N"]) == billed["input_tokens"]
    assert item["Operation"]["S"] == "Messages" and item["Priced"]["BOOL"] is True


@pytest.mark.parametrize("stream", [False, pytest.param(True, marks=_SLOW)])
def test_the_anthropic_sdks_own_client_sends_x_api_key_and_is_metered(
    stack: LocalStack, tmp_path: Path, stream: bool
) -> None:
    key, principal = new_key(stack)
    before = len(emulator_billed(stack))
    out = call_anthropic(stack, tmp_path, key, model=HAIKU_45, stream=stream, client="anthropic")
    assert "error" not in out, out
    billed = billed_last(stack, before)
    item = recorded(stack, principal)
    assert out["usage"]["output_tokens"] == int(item["OutputTokens"]["N"]) == billed["output_tokens"]
    assert item["Operation"]["S"] == "Messages"
    # Bedrock is reached with the proxy's own signature: the caller's key is not passed on.
    assert billed["authorization_scheme"] == "AWS4-HMAC-SHA256"


def test_x_api_key_is_read_only_on_the_anthropic_routes(stack: LocalStack) -> None:
    code, created = cli(
        stack, "keys", "create", "--username", f"xkey-{uuid.uuid4().hex[:8]}", "--format", "json"
    )
    assert code == 0, created
    key, key_id = json.loads(created)["key"], json.loads(created)["key_id"]
    body = json.dumps({"model": HAIKU_45, "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
    before = len(emulator_billed(stack))
    for path in ("/openai/v1/chat/completions", "/mantle/v1/chat/completions"):
        reply = http(f"{stack.url}{path}", body=body.encode(), headers={"x-api-key": key})
        assert reply.status == 401, (path, reply.body)
    anthropic_path = f"{stack.url}/mantle/anthropic/v1/messages"
    assert http(anthropic_path, body=body.encode(), headers={"x-api-key": "bsk_" + "0" * 43}).status == 401
    assert http(anthropic_path, body=body.encode()).status == 401
    assert len(emulator_billed(stack)) == before
    # A revoked key is refused at once: this authorizer is not cached.
    assert cli(stack, "keys", "revoke", key_id)[0] == 0
    assert http(anthropic_path, body=body.encode(), headers={"x-api-key": key}).status == 403
    assert len(emulator_billed(stack)) == before


def test_the_end_user_each_sdk_names_is_in_the_ledger(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    chat = call_openai(
        stack, tmp_path, key, "/openai/v1", api="chat", model=GPT_OSS, stream=False, user="app-user-17"
    )
    message = call_anthropic(stack, tmp_path, key, model=HAIKU_45, stream=True, user="app-user-23")
    assert "error" not in chat and "error" not in message, (chat, message)
    items = sorted(ledger_for(stack, principal), key=lambda item: item["Operation"]["S"])
    assert [(i["Operation"]["S"], i["EndUser"]["S"]) for i in items] == [
        ("ChatCompletions", "app-user-17"),
        ("Messages", "app-user-23"),
    ]
    code, out = cli(stack, "report", "--principal", principal, "--by", "end-user", "--format", "json")
    assert code == 0, out
    assert sorted(row["end-user"] for row in json.loads(out)["rows"]) == ["app-user-17", "app-user-23"]


def test_a_model_outside_the_allow_list_is_refused_in_each_sdks_shape(
    stack: LocalStack, tmp_path: Path
) -> None:
    key, _ = new_key(stack, "--model", "amazon.nova-*")
    before = len(emulator_billed(stack))
    openai_out = call_openai(stack, tmp_path, key, "/openai/v1", api="chat", model=GPT_OSS, stream=False)
    anthropic_out = call_anthropic(stack, tmp_path, key, model=HAIKU_45, stream=False)
    assert openai_out["error"]["status"] == 403
    assert openai_out["error"]["body"]["type"] == "ModelNotAllowed"  # the SDK hands over body["error"]
    assert anthropic_out["error"]["status"] == 403
    assert anthropic_out["error"]["body"]["error"]["type"] == "permission_error"
    assert len(emulator_billed(stack)) == before


def test_an_over_budget_key_is_refused_before_bedrock(stack: LocalStack, tmp_path: Path) -> None:
    key, _ = new_key(stack, "--budget", "0.000001")
    assert "error" not in call_openai(
        stack, tmp_path, key, "/openai/v1", api="chat", model=GPT_OSS, stream=False
    )
    before = len(emulator_billed(stack))
    out = call_openai(stack, tmp_path, key, "/openai/v1", api="responses", model=GPT_OSS, stream=False)
    assert out["error"]["status"] == 429
    assert (
        out["error"]["body"]["type"] == "BudgetExceeded" and out["error"]["body"]["budgetUsd"] == "0.000001"
    )
    assert len(emulator_billed(stack)) == before


def test_a_bedrock_error_mid_stream_reaches_the_sdk_and_the_call_is_recorded(
    stack: LocalStack, tmp_path: Path
) -> None:
    key, principal = new_key(stack)
    out = call_anthropic(
        stack,
        tmp_path,
        key,
        model=HAIKU_45,
        stream=True,
        prompt="Hi [[emulator stream_error=ServiceUnavailableException after=2]]",
    )
    assert "error" in out  # the SDK raised on the error event
    item = recorded(stack, principal)
    assert item["StreamError"]["S"]  # the error's type, as the stream named it
    assert int(item["InputTokens"]["N"]) > 0  # what message_start reported before the error
