"""Load and soak: 10,000 calls from 32 concurrent clients through the local stack, counted exactly.

Real HTTPS on 127.0.0.1 to the API Gateway emulation, the real authorizer and proxy app, the Bedrock
emulator and moto. Four keys, five models, both of this API's routes and all four metered
Bedrock operations (streams included), with prompt caching on one of them. Afterwards the
emulator's tally is the truth: every call it billed is in the ledger exactly once with the
same tokens, every monthly total is the exact sum of its principal's records, and CloudWatch
(metrics forwarded from the functions' EMF lines) holds the same sums.

The number of calls is fixed (``SOAK_CALLS`` overrides it) and the test checks exactness only:
no wall-clock target, which would flake on a busy machine; the timeout is a hang guard. The
local stack runs moto with ``bedrock_spend_local.moto_fixes.faster_moto`` (transactions that do
not copy the whole table, so the run is not O(n^2) in time and memory).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import socket
import ssl
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import aws_client, emulator_billed, mint_key, running_stack, tls_context
from tests.helpers import usage_records

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CALLS = int(os.environ.get("SOAK_CALLS", "10000"))
CLIENTS = 32
HANG_GUARD_S = 3600  # pytest-timeout: only catches a hang; speed is not asserted
NAMESPACE = "BedrockCostApportionment"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
CACHING = "anthropic.claude-haiku-4-5-20251001-v1:0"
USERS = ("ana", "ben", "cy", "dee")
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
)
LEDGER_FIELDS = {
    "input_tokens": "InputTokens",
    "output_tokens": "OutputTokens",
    "cache_read_tokens": "CacheReadTokens",
    "cache_write_5m_tokens": "CacheWrite5mTokens",
    "cache_write_1h_tokens": "CacheWrite1hTokens",
}


# --- the calls -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    user: str
    path: str  # under the stage
    body: bytes
    model: str  # the model id as the proxy records it


def _words(n: int) -> str:
    return " ".join(itertools.islice(itertools.cycle(("alpha", "beta", "gamma", "delta", "omega")), n))


def _claude(n: int) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": _words(n)}]}],
    }


def _messages(n: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"text": _words(n)}]}],
        "inferenceConfig": {"maxTokens": 64},
    }


def _cached(n: int) -> dict[str, Any]:
    return {
        "system": [{"text": "Answer in one short sentence. " * 10}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": _words(n)}]}],
        "inferenceConfig": {"maxTokens": 32},
    }


def _native(model: str, action: str) -> str:
    return f"/model/{quote(model, safe='')}/{action}"


def _shapes(n: int) -> list[tuple[str, Any, str]]:
    """(path, body, model) of every kind of call in the mix, prompt length n."""

    def own(model: str, body: dict[str, Any]) -> tuple[str, Any, str]:
        return "/invoke-model", {"modelId": model, "body": body}, model

    return [
        own(HAIKU, _claude(n)),
        own(NOVA, _messages(n)),
        own(LLAMA, {"prompt": _words(n), "max_gen_len": 64}),
        own(TITAN_EMBED, {"inputText": _words(n), "dimensions": 256}),
        (_native(HAIKU, "invoke"), _claude(n), HAIKU),
        (_native(NOVA, "converse"), _messages(n), NOVA),
        (_native(HAIKU, "converse"), _messages(n), HAIKU),
        (_native(CACHING, "converse"), _cached(n), CACHING),
        (_native(HAIKU, "invoke-with-response-stream"), _claude(n), HAIKU),
        (_native(LLAMA, "invoke-with-response-stream"), {"prompt": _words(n), "max_gen_len": 64}, LLAMA),
        (_native(NOVA, "converse-stream"), _messages(n), NOVA),
        (_native(HAIKU, "converse-stream"), _messages(n), HAIKU),
    ]


def plan_calls(count: int) -> list[Call]:
    """A deterministic mix: every shape for every user, prompt lengths from 1 to 60 words."""
    shapes_by_length = {n: _shapes(n) for n in range(1, 61)}
    calls = []
    for index in range(count):
        path, body, model = shapes_by_length[1 + index % 60][index % 12]
        calls.append(Call(USERS[(index // 12) % len(USERS)], path, json.dumps(body).encode(), model))
    return calls


@dataclass
class Answer:
    call: Call
    status: int
    gateway_id: str | None
    bedrock_id: str | None
    body: bytes


def drive(
    url: str, keys: dict[str, str], calls: list[Call], tls: ssl.SSLContext
) -> tuple[list[Answer], float]:
    """Send every call from CLIENTS keep-alive connections at once; (answers, seconds)."""
    parts = urlsplit(url)
    work: queue.SimpleQueue[Call] = queue.SimpleQueue()
    for call in calls:
        work.put(call)
    answers: list[Answer] = []
    lock = threading.Lock()

    def connect() -> HTTPSConnection:
        connection = HTTPSConnection(
            parts.hostname or "127.0.0.1", parts.port or 443, timeout=120, context=tls
        )
        connection.connect()
        assert connection.sock is not None
        # http.client writes headers and body separately: without this, Nagle holds the body back.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def client() -> None:
        connection = connect()
        mine = []
        while True:
            try:
                call = work.get_nowait()
            except queue.Empty:
                break
            headers = {"Authorization": f"Bearer {keys[call.user]}", "Content-Type": "application/json"}
            try:
                connection.request("POST", parts.path + call.path, body=call.body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                mine.append(
                    Answer(
                        call,
                        response.status,
                        response.getheader("x-amzn-RequestId"),
                        response.getheader("x-amzn-Remapped-x-amzn-RequestId"),
                        data if response.status != 200 else b"",
                    )
                )
            except OSError as error:
                mine.append(Answer(call, 0, None, None, repr(error).encode()))
                connection.close()
                connection = connect()
        connection.close()
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=client, name=f"soak-client-{i}") for i in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, time.monotonic() - started


# --- reading back what was recorded -----------------------------------------------------------


RECORD_ATTRIBUTES = (
    "PK, SK, RequestId, RequestedAt, PrincipalId, ModelId, CostMicroUsd, "
    "InputTokens, OutputTokens, CacheReadTokens, CacheWrite5mTokens, CacheWrite1hTokens"
)


def partition(stack: LocalStack, pk: str, projection: str | None = None) -> list[dict[str, Any]]:
    """Every item of one partition of the usage table (a Query, paginated)."""
    paginator = aws_client(stack, "dynamodb").get_paginator("query")
    params: dict[str, Any] = {
        "TableName": stack.tables["UsageTable"],
        "KeyConditionExpression": "PK = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
    }
    if projection:
        params["ProjectionExpression"] = projection
    return [item for page in paginator.paginate(**params) for item in page["Items"]]


def metric_sums(stack: LocalStack, name: str, keys: set[tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    """Sum of a metric per (PrincipalId, ModelId), or per (ModelId,), over the last hours."""
    cloudwatch = aws_client(stack, "cloudwatch")
    now = datetime.now(UTC)
    sums = {}
    for key in keys:
        names = ("PrincipalId", "ModelId") if len(key) == 2 else ("ModelId",)
        stats = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE,
            MetricName=name,
            Dimensions=[{"Name": n, "Value": v} for n, v in zip(names, key, strict=True)],
            StartTime=now - timedelta(hours=2),
            EndTime=now + timedelta(hours=1),
            Period=3600,
            Statistics=["Sum"],
        )
        sums[key] = sum(point["Sum"] for point in stats["Datapoints"])
    return sums


# --- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory, "soak") as local:
        yield local


@pytest.mark.timeout(HANG_GUARD_S)
def test_concurrent_calls_are_all_answered_and_counted_exactly_once(soak_stack: LocalStack) -> None:
    stack = soak_stack
    keys = {user: mint_key(stack, user)[0] for user in USERS}
    calls = plan_calls(CALLS)
    assert len({(c.path.split("/")[-1], c.model) for c in calls}) >= 10 and len({c.model for c in calls}) == 5

    answers, seconds = drive(stack.url, keys, calls, tls_context(stack))

    # Every call answered, none failed.
    assert len(answers) == CALLS, f"only {len(answers)} of {CALLS} calls were made"
    failures = Counter((a.status, a.body[:200]) for a in answers if a.status != 200)
    assert not failures, failures.most_common(5)
    gateway_to_bedrock = {a.gateway_id: a.bedrock_id for a in answers}
    assert len(gateway_to_bedrock) == CALLS and None not in gateway_to_bedrock

    # The emulator billed each call once, and nothing else.
    billed = {b["request_id"]: b for b in emulator_billed(stack)}
    assert len(billed) == CALLS
    assert set(billed) == set(gateway_to_bedrock.values())

    # The ledger holds each billed call exactly once, with exactly the billed tokens.
    principals = {f"User::{user}" for user in USERS}
    records = usage_records(
        r for p in sorted(principals) for r in partition(stack, f"USAGE#{p}", RECORD_ATTRIBUTES)
    )
    assert len(records) == CALLS
    by_request = {r["RequestId"]["S"]: r for r in records}
    assert set(by_request) == set(gateway_to_bedrock)
    for answer in answers:
        record = by_request[answer.gateway_id]
        bill = billed[answer.bedrock_id]
        assert record["ModelId"]["S"] == answer.call.model == bill["model_id"]
        assert record["PrincipalId"]["S"] == f"User::{answer.call.user}"
        assert {f: int(record[LEDGER_FIELDS[f]]["N"]) for f in TOKEN_FIELDS} == {
            f: bill[f] for f in TOKEN_FIELDS
        }
    assert {r["PrincipalId"]["S"] for r in records} == principals

    # Monthly totals are the exact sums of their principal's records (cost in micro-USD, exact).
    expected: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for record in records:
        total = expected[(record["PrincipalId"]["S"], record["RequestedAt"]["S"][:7])]
        total["Calls"] += 1
        total["InputTokens"] += int(record["InputTokens"]["N"])
        total["OutputTokens"] += int(record["OutputTokens"]["N"])
        total["CacheReadTokens"] += int(record["CacheReadTokens"]["N"])
        total["CacheWriteTokens"] += int(record["CacheWrite5mTokens"]["N"]) + int(
            record["CacheWrite1hTokens"]["N"]
        )
        total["CostMicroUsd"] += Decimal(record["CostMicroUsd"]["N"])
    totals = {
        (principal, item["SK"]["S"].removeprefix("MONTH#")): item
        for principal in principals
        for item in partition(stack, f"TOTAL#{principal}")
    }
    assert set(totals) == set(expected)
    for key, want in expected.items():
        got = {name: Decimal(totals[key][name]["N"]) for name in want}
        assert got == {name: Decimal(value) for name, value in want.items()}, key
    assert sum(Decimal(t["CacheReadTokens"]["N"]) for t in totals.values()) > 0  # caching was exercised

    # CloudWatch: the functions' EMF lines, forwarded, sum to the same per principal x model
    # (and, for cache tokens, per model).
    assert stack.flush(timeout=120)
    per_key: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for answer in answers:
        bill = billed[answer.bedrock_id]
        pair = (f"User::{answer.call.user}", answer.call.model)
        per_key[pair]["Invocations"] += 1
        per_key[pair]["InputTokensUsed"] += bill["input_tokens"]
        per_key[pair]["OutputTokensUsed"] += bill["output_tokens"]
        per_key[(answer.call.model,)]["CacheReadTokensUsed"] += bill["cache_read_tokens"]
    for metric in ("Invocations", "InputTokensUsed", "OutputTokensUsed", "CacheReadTokensUsed"):
        expected = {key: float(counts[metric]) for key, counts in per_key.items() if metric in counts}
        expected = {key: value for key, value in expected.items() if value or len(key) == 2}
        assert metric_sums(stack, metric, set(expected)) == expected, metric

    # Nothing needed the fallback.
    proxy_log = Path(stack.log_files["proxy"])
    assert "USAGE_RECORD_UNSAVED" not in proxy_log.read_text(encoding="utf-8")
    print(f"\nsoak: {CALLS} calls from {CLIENTS} clients in {seconds:.0f} s ({CALLS / seconds:.0f} req/s)")
