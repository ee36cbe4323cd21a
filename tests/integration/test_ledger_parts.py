"""The ledger's schema against DynamoDB (moto): billed parts as attributes, monthly totals,
items written before a part existed, and the CLI's report and usage reading them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.aws import ledger
from bedrock_spend.aws.ledger import Ledger
from bedrock_spend.domain.parts import PARTS
from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend_cli import config, ledger_cmd, report_cmd
from tests.conftest import USAGE_TABLE
from tests.helpers import CliRun, cli_runner

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RERANK = "cohere.rerank-v3-5:0"


def make(n: int, usage: Usage, cost: Cost, model: str = RERANK) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{n}",
        requested_at=datetime(2026, 12, 1, 9, n, tzinfo=UTC),
        caller=Caller(principal_id="User::ann", key_id="kid", username="ann", team="search"),
        operation="InvokeModel",
        model_id=model,
        base_model=model,
        region="us-east-1",
        usage=usage,
        cost=cost,
    )


RERANKS = [
    make(1, Usage(queries=3, source="rerank"), Cost(True, "v1", queries=Decimal("6000.000000"))),
    make(2, Usage(queries=1, source="rerank"), Cost(False, "v1", reason="no rerank query price")),
]
CHAT = make(
    3,
    Usage(
        input_tokens=10, output_tokens=5, cache_write_5m_tokens=2, cache_write_1h_tokens=1, source="anthropic"
    ),
    Cost(True, "v1", input=Decimal("10"), output=Decimal("20"), cache_write=Decimal("7")),
    model="anthropic.claude-3-haiku-20240307-v1:0",
)


@pytest.fixture
def run(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> CliRun:
    monkeypatch.delenv(config.KEYS_TABLE_ENV, raising=False)
    monkeypatch.delenv(config.USAGE_TABLE_ENV, raising=False)
    monkeypatch.setattr(report_cmd, "utcnow", lambda: NOW)
    monkeypatch.setattr(ledger_cmd, "utcnow", lambda: NOW)
    return cli_runner(
        capsys, "--endpoint-url", aws_env["AWS_ENDPOINT_URL_DYNAMODB"], "--usage-table", USAGE_TABLE
    )


@pytest.fixture
def written(dynamodb: Any) -> Ledger:
    writer = Ledger(USAGE_TABLE, client=dynamodb)
    for record in [*RERANKS, CHAT]:
        assert writer.record(record)
    return writer


def test_each_part_is_stored_under_the_table_names(written: Ledger, dynamodb: Any) -> None:
    item = ledger.unmarshal(dynamodb.get_item(TableName=USAGE_TABLE, Key=ledger.record_key(CHAT))["Item"])

    assert (item["InputTokens"], item["OutputTokens"]) == (10, 5)
    assert (item["CacheWrite5mTokens"], item["CacheWrite1hTokens"]) == (2, 1)
    assert item["CacheWriteCostMicroUsd"] == 7 and item["CostMicroUsd"] == 37
    # Parts the call did not use are not stored (a typical record stays under 1 KB): they read as 0.
    unused = {"CacheReadTokens", "Images", "Queries", "VideoSeconds", "InputImages", "ImagesCostMicroUsd"}
    assert not unused & set(item)
    assert ledger.usage_of(item) == Usage(
        input_tokens=10, output_tokens=5, cache_write_5m_tokens=2, cache_write_1h_tokens=1, source="anthropic"
    )
    rerank = ledger.unmarshal(
        dynamodb.get_item(TableName=USAGE_TABLE, Key=ledger.record_key(RERANKS[0]))["Item"]
    )
    assert (rerank["Queries"], rerank["QueriesCostMicroUsd"], rerank["Priced"]) == (3, Decimal(6000), True)


def test_the_monthly_total_adds_every_part(written: Ledger, dynamodb: Any) -> None:
    item = dynamodb.get_item(TableName=USAGE_TABLE, Key=ledger.total_key("User::ann", "2026-12"))["Item"]
    total = ledger.month_total(item)

    assert (total.principal, total.month, total.calls, total.unpriced_calls) == ("User::ann", "2026-12", 3, 1)
    written_counts = {"input_tokens": 10, "output_tokens": 5, "cache_write_tokens": 3, "queries": 4}
    assert total.counts == {part.total: written_counts.get(part.total, 0) for part in PARTS}
    assert total.cost_micro_usd == Decimal(6037)  # the unpriced call adds nothing
    assert written.month_spend("User::ann", "2026-12") == Decimal(6037)


def test_an_item_without_a_part_reads_it_as_zero(dynamodb: Any) -> None:
    old = ledger.to_item(CHAT, ttl_days=30)
    for part in PARTS:
        if part.name == "queries":
            assert part.cost_attribute not in old and part.counts[0].attribute not in old
    dynamodb.put_item(TableName=USAGE_TABLE, Item=old)

    summary = ledger.summary(dynamodb.get_item(TableName=USAGE_TABLE, Key=ledger.record_key(CHAT))["Item"])
    assert summary.counts["queries"] == 0 and summary.counts["cache_write_tokens"] == 3
    assert summary.tokens == 18


def test_report_and_usage_show_a_column_per_part(written: Ledger, run: CliRun) -> None:
    document = run("report", "--from", "2026-12-01", "--format", "json").json()
    assert (document["total"]["queries"], document["total"]["cache_write_tokens"]) == (4, 3)
    assert document["total"]["unpriced_calls"] == 1

    text = run("report", "--from", "2026-12-01").out
    header = re.split(r"\s{2,}", text.splitlines()[1].strip())
    assert header == [
        "PRINCIPAL",
        "CALLS",
        *(part.column for part in PARTS),
        "COST USD",
        "UNPRICED CALLS",
        "UNPRICED TOKENS",
    ]
    assert header[2:6] == ["INPUT TOKENS", "OUTPUT TOKENS", "CACHE READ", "CACHE WRITE"]

    rows = json.loads(run("usage", "--format", "json").out)
    assert [(row["principal"], row["queries"], row["images"], row["calls"]) for row in rows] == [
        ("User::ann", 4, 0, 3)
    ]
