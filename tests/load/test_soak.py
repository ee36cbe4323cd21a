"""Load and soak: 20,000 calls from 32 concurrent clients through the local stack, counted exactly.

Real HTTP on 127.0.0.1 to the API Gateway emulation, the real authorizer and proxy, the Bedrock
emulator and moto. Four keys, five models, both of this API's routes and all four metered
Bedrock operations (streams included), with prompt caching on one of them. Afterwards the
emulator's tally is the truth: every call it billed is in the ledger exactly once with the
same tokens, every monthly total is the exact sum of its principal's records, and CloudWatch
(metrics forwarded from the functions' EMF lines) holds the same sums.

moto would measure itself instead of the proxy, so this module runs with the same correction
as `make bench` (``faster_moto`` in scripts/bench.py): transactions that do not copy the whole
table (otherwise each ledger write costs O(table size) and the run O(n^2)) and request routing
without a directory listing per request.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import queue
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import aws_client, emulator_billed, mint_key

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CALLS = 20_000
CLIENTS = 32
DEADLINE_S = 480  # the whole load phase; each request also has its own socket timeout
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


# --- moto, corrected as in scripts/bench.py ----------------------------------------------------------


@contextlib.contextmanager
def faster_moto() -> Iterator[None]:
    """moto's TransactWriteItems saving only the items it touches instead of deep-copying the
    tables, and its request routing without a directory listing per request."""
    from moto import backends
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        try:
            for entry in transact_items:
                operation = next(iter(entry.values()))
                table = self.get_table(operation["TableName"])
                names = [n for n in (table.hash_key_attr, table.range_key_attr) if n]
                key = operation.get("Key") or {name: operation["Item"][name] for name in names}
                hash_key, range_key = self.get_keys_value(table, key)
                saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        except Exception:  # an invalid request: moto's own code reports it
            saved = []
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(saved):
                holder = table.items[hash_key] if range_key is not None else table.items
                slot = range_key if range_key is not None else hash_key
                if before is None:
                    holder.pop(slot, None)
                else:
                    holder[slot] = before
            raise

    listed = tuple(backends.list_of_moto_modules())
    list_modules = backends.list_of_moto_modules
    backends.list_of_moto_modules = lambda: listed
    DynamoDBBackend.transact_write_items = transact_write_items
    Table.__deepcopy__ = lambda self, memo: self
    try:
        yield
    finally:
        backends.list_of_moto_modules = list_modules
        DynamoDBBackend.transact_write_items = original
        del Table.__deepcopy__


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


def drive(url: str, keys: dict[str, str], calls: list[Call]) -> tuple[list[Answer], float]:
    """Send every call from CLIENTS keep-alive connections at once; (answers, seconds)."""
    parts = urlsplit(url)
    work: queue.SimpleQueue[Call] = queue.SimpleQueue()
    for call in calls:
        work.put(call)
    answers: list[Answer] = []
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE_S

    def connect() -> HTTPConnection:
        connection = HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
        connection.connect()
        assert connection.sock is not None
        # http.client writes headers and body separately: without this, Nagle holds the body back.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def client() -> None:
        connection = connect()
        mine = []
        while time.monotonic() < deadline:
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
        thread.join(timeout=DEADLINE_S + 120)
    return answers, time.monotonic() - started


# --- reading back what was recorded -----------------------------------------------------------


RECORD_ATTRIBUTES = (
    "RequestId, RequestedAt, PrincipalId, ModelId, CostMicroUsd, "
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


def metric_sums(stack: LocalStack, name: str, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Sum of a metric per (PrincipalId, ModelId), every datapoint of the last hours."""
    cloudwatch = aws_client(stack, "cloudwatch")
    now = datetime.now(UTC)
    sums = {}
    for principal, model in pairs:
        stats = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE,
            MetricName=name,
            Dimensions=[{"Name": "PrincipalId", "Value": principal}, {"Name": "ModelId", "Value": model}],
            StartTime=now - timedelta(hours=2),
            EndTime=now + timedelta(hours=1),
            Period=3600,
            Statistics=["Sum"],
        )
        sums[(principal, model)] = sum(point["Sum"] for point in stats["Datapoints"])
    return sums


# --- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    saved = dict(os.environ)
    with faster_moto():
        stack = LocalStack(
            port=0,
            region="us-east-1",
            log_dir=tmp_path_factory.mktemp("soak-logs"),
            echo_logs=False,
            access_log=False,
        )
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()
            os.environ.clear()
            os.environ.update(saved)


@pytest.mark.timeout(DEADLINE_S + 240)
def test_20000_concurrent_calls_are_all_answered_and_counted_exactly_once(soak_stack: LocalStack) -> None:
    stack = soak_stack
    keys = {user: mint_key(stack, user)[0] for user in USERS}
    calls = plan_calls(CALLS)
    assert len({(c.path.split("/")[-1], c.model) for c in calls}) >= 10 and len({c.model for c in calls}) == 5

    answers, seconds = drive(stack.url, keys, calls)

    # Every call answered, none failed.
    assert len(answers) == CALLS, f"only {len(answers)} of {CALLS} calls were made in {DEADLINE_S} s"
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
    records = [r for p in sorted(principals) for r in partition(stack, f"USAGE#{p}", RECORD_ATTRIBUTES)]
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

    # CloudWatch: the functions' EMF lines, forwarded, sum to the same per principal x model.
    assert stack.flush(timeout=120)
    per_pair: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for answer in answers:
        bill = billed[answer.bedrock_id]
        pair = (f"User::{answer.call.user}", answer.call.model)
        per_pair[pair]["Invocations"] += 1
        per_pair[pair]["InputTokensUsed"] += bill["input_tokens"]
        per_pair[pair]["OutputTokensUsed"] += bill["output_tokens"]
        per_pair[pair]["CacheReadTokensUsed"] += bill["cache_read_tokens"]
    for metric in ("Invocations", "InputTokensUsed", "OutputTokensUsed", "CacheReadTokensUsed"):
        sums = metric_sums(stack, metric, set(per_pair))
        assert sums == {pair: float(counts[metric]) for pair, counts in per_pair.items()}, metric

    # Nothing needed the fallback, and the run stayed within its bound.
    proxy_log = Path(stack.log_files["proxy"])
    assert "USAGE_RECORD_UNSAVED" not in proxy_log.read_text(encoding="utf-8")
    print(f"\nsoak: {CALLS} calls from {CLIENTS} clients in {seconds:.0f} s ({CALLS / seconds:.0f} req/s)")
