"""The billed-parts table (parts.py) and what reads it: Usage, Cost, pricing, the usage record,
the metrics; and rerank queries, the part added through it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.domain import parts
from bedrock_spend.domain.model_ids import parse_model_id
from bedrock_spend.domain.parts import COUNTS, PARTS, Count, Part
from bedrock_spend.domain.prices import Cost, PriceBook
from bedrock_spend.domain.usage import Usage, usage_from_invoke
from bedrock_spend.domain.usage_record import Caller, UsageRecord

COHERE = "cohere.rerank-v3-5:0"
AMAZON = "amazon.rerank-v1:0"


def book(**models: dict[str, Any]) -> PriceBook:
    return PriceBook.from_dict(
        {
            "schema_version": 1,
            "version": "test-1",
            "models": {name.replace("_", "."): entry for name, entry in models.items()},
            "service_tiers": {"default": "1", "flex": "0.5", "reserved": None},
        }
    )


RERANK_BOOK = book(
    **{"cohere_rerank-v3-5:0": {"queries": "0.002"}, "amazon_rerank-v1:0": {"prices": {"input": "0"}}}
)


def rerank(model_id: str, documents: int | None, **extra: Any) -> Usage:
    request: dict[str, Any] = {"query": "which is cheapest?", **extra}
    if documents is not None:
        request["documents"] = [f"doc {n}" for n in range(documents)]
    response = {"results": [{"index": 0, "relevance_score": 0.9}]}
    headers = {"x-amzn-bedrock-input-token-count": "123"}
    return usage_from_invoke(
        parse_model_id(model_id), json.dumps(response).encode(), headers, json.dumps(request).encode()
    )


# --- the table ---


def test_every_count_is_a_usage_keyword_and_attribute() -> None:
    usage = Usage(**{count.field: n + 1 for n, count in enumerate(COUNTS)})

    for n, count in enumerate(COUNTS):
        assert getattr(usage, count.field) == n + 1
    for part in PARTS:
        assert getattr(usage, part.total) == sum(getattr(usage, c.field) for c in part.counts)


def test_every_part_is_a_cost_keyword_and_attribute() -> None:
    cost = Cost(True, "v", **{part.name: Decimal(n + 1) for n, part in enumerate(PARTS)})

    assert [getattr(cost, part.name) for part in PARTS] == [Decimal(n + 1) for n in range(len(PARTS))]
    assert cost.total == sum(Decimal(n + 1) for n in range(len(PARTS)))


def test_unknown_names_are_refused() -> None:
    with pytest.raises(TypeError, match="no count 'tokens'"):
        Usage(tokens=1)
    with pytest.raises(TypeError, match="no part 'imgs'"):
        Cost(True, "v", imgs=Decimal(1))
    with pytest.raises(AttributeError):
        _ = Usage().imgs


def test_a_name_declared_twice_is_refused() -> None:
    images = next(part for part in PARTS if part.name == "images")
    clash = replace(images, name="more_images", counts=(replace(images.counts[0], field="more"),))

    with pytest.raises(ValueError, match="declared twice"):
        parts._check((*PARTS, clash))


def test_stored_names_are_those_existing_ledgers_and_logs_hold() -> None:
    # Renaming any of these would orphan data already written: the list only grows.
    assert [(c.field, c.record, c.attribute) for c in COUNTS][:6] == [
        ("input_tokens", "inputTokens", "InputTokens"),
        ("output_tokens", "outputTokens", "OutputTokens"),
        ("cache_read_tokens", "cacheReadTokens", "CacheReadTokens"),
        ("cache_write_5m_tokens", "cacheWrite5mTokens", "CacheWrite5mTokens"),
        ("cache_write_1h_tokens", "cacheWrite1hTokens", "CacheWrite1hTokens"),
        ("images", "images", "Images"),
    ]
    assert [(p.cost_record, p.cost_attribute, p.total_attribute, p.metric) for p in PARTS][:5] == [
        ("inputMicroUsd", "InputCostMicroUsd", "InputTokens", "InputTokensUsed"),
        ("outputMicroUsd", "OutputCostMicroUsd", "OutputTokens", "OutputTokensUsed"),
        ("cacheReadMicroUsd", "CacheReadCostMicroUsd", "CacheReadTokens", "CacheReadTokensUsed"),
        ("cacheWriteMicroUsd", "CacheWriteCostMicroUsd", "CacheWriteTokens", "CacheWriteTokensUsed"),
        ("imagesMicroUsd", "ImagesCostMicroUsd", "Images", "ImagesGenerated"),
    ]


def test_only_the_metric_budget_is_per_principal() -> None:
    from bedrock_spend.aws import metrics

    assert list(metrics.CALL_METRICS) == ["Invocations", "InputTokensUsed", "OutputTokensUsed", "TotalCost"]
    assert "RerankQueries" in metrics.MODEL_METRICS


def test_usage_equality_and_repr_read_the_counts() -> None:
    assert Usage(input_tokens=1, images=0) == Usage(input_tokens=1)
    assert Usage(input_tokens=None) != Usage(input_tokens=0)
    assert repr(Usage(input_tokens=5, queries=2, source="x")) == (
        "Usage(input_tokens=5, output_tokens=None, queries=2, source='x')"
    )


def test_part_and_count_are_plain_frozen_values() -> None:
    assert isinstance(PARTS[0], Part) and isinstance(COUNTS[0], Count)
    with pytest.raises(AttributeError):
        PARTS[0].name = "x"  # type: ignore[misc]


# --- rerank queries: counted ---


@pytest.mark.parametrize(
    ("documents", "queries"), [(0, 1), (1, 1), (100, 1), (101, 2), (250, 3), (1000, 10), (None, 1)]
)
def test_a_rerank_call_bills_one_query_per_100_documents(documents: int | None, queries: int) -> None:
    usage = rerank(COHERE, documents, top_n=3, api_version=2)

    assert (usage.queries, usage.source, usage.known) == (queries, "rerank", True)


def test_rerank_tokens_are_not_billed() -> None:
    usage = rerank(AMAZON, 5)

    assert (usage.input_tokens, usage.output_tokens, usage.queries) == (None, None, 1)


def test_an_unreadable_rerank_request_is_not_reported() -> None:
    usage = usage_from_invoke(parse_model_id(COHERE), b"{}", {}, b"not json")

    assert (usage.queries, usage.source, usage.known) == (0, "none", False)


def test_other_models_bill_no_queries() -> None:
    body = {"usage": {"input_tokens": 3, "output_tokens": 4}}
    usage = usage_from_invoke(
        parse_model_id("anthropic.claude-3-haiku-20240307-v1:0"),
        json.dumps(body).encode(),
        {},
        json.dumps({"documents": ["a"] * 300}).encode(),
    )

    assert (usage.queries, usage.input_tokens) == (0, 3)


# --- rerank queries: priced ---


def test_queries_are_priced_per_query_exactly() -> None:
    cost = RERANK_BOOK.price(rerank(COHERE, 250), parse_model_id(COHERE), region="us-east-1")

    assert cost.priced, cost.reason
    assert cost.queries == Decimal("6000.000000")  # 3 queries x $0.002 = 6000 micro-USD
    assert cost.total == cost.queries


def test_queries_take_the_tier_multiplier() -> None:
    cost = RERANK_BOOK.price(
        rerank(COHERE, 1), parse_model_id(COHERE), region="us-east-1", service_tier="flex"
    )

    assert cost.queries == Decimal("1000.000000")


def test_a_rerank_model_without_a_query_price_is_unpriced_with_a_reason() -> None:
    cost = RERANK_BOOK.price(rerank(AMAZON, 3), parse_model_id(AMAZON), region="us-east-1")

    assert not cost.priced
    assert cost.reason == "amazon.rerank-v1:0 has no rerank query price"


def test_a_query_only_entry_is_priced_in_every_scope() -> None:
    assert RERANK_BOOK.is_priced(parse_model_id(COHERE), region="eu-west-1")
    assert not RERANK_BOOK.is_priced(parse_model_id("cohere.rerank-v9:0"), region="us-east-1")


def test_a_query_price_must_be_a_decimal_string() -> None:
    with pytest.raises(ValueError, match="not a decimal string"):
        book(**{"cohere_rerank-v3-5:0": {"queries": 0.002}})


# --- rerank queries: recorded ---


def rerank_record(usage: Usage, cost: Cost) -> UsageRecord:
    return UsageRecord(
        request_id="req-1",
        requested_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        caller=Caller(principal_id="User::ann", key_id="kid", username="ann"),
        operation="InvokeModel",
        model_id=COHERE,
        base_model=COHERE,
        region="us-east-1",
        usage=usage,
        cost=cost,
    )


def test_the_usage_record_round_trips_queries() -> None:
    usage = rerank(COHERE, 101)
    record = rerank_record(usage, RERANK_BOOK.price(usage, parse_model_id(COHERE), region="us-east-1"))
    data = json.loads(json.dumps(record.to_dict()))

    assert data["usage"]["queries"] == 2
    assert data["cost"]["queriesMicroUsd"] == "4000.000000"
    assert UsageRecord.from_dict(data) == record


def test_a_record_logged_before_queries_existed_still_reads() -> None:
    record = rerank_record(Usage(input_tokens=1, output_tokens=2), Cost(True, "v", input=Decimal(1)))
    data = json.loads(json.dumps(record.to_dict()))
    del data["usage"]["queries"], data["cost"]["queriesMicroUsd"]

    assert UsageRecord.from_dict(data) == record


def test_a_record_missing_an_old_part_cost_is_refused() -> None:
    record = rerank_record(Usage(input_tokens=1), Cost(True, "v", input=Decimal(1)))
    data = record.to_dict()
    del data["cost"]["inputMicroUsd"]

    with pytest.raises(KeyError):
        UsageRecord.from_dict(data)


def test_metrics_count_queries_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    from bedrock_spend.aws import metrics

    usage = rerank(COHERE, 250)
    metrics.emit_call(
        rerank_record(usage, RERANK_BOOK.price(usage, parse_model_id(COHERE), region="us-east-1"))
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]

    per_model = [
        line for line in lines if line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["ModelId"]]
    ]
    assert [line["RerankQueries"] for line in per_model] == [[3.0]]
    per_pair = next(line for line in lines if "PrincipalId" in line)
    assert "RerankQueries" not in per_pair and per_pair["TotalCost"] == [0.006]
