"""CloudWatch metrics as Embedded Metric Format lines on stdout (Powertools Metrics).

EMF instead of the reference design's synchronous PutMetricData: no added latency, no
API charge or throttle, and nothing that can fail the caller's request after Bedrock
has billed it. Every emission is its own metric set, flushed at once, so one call's
metrics never mix with another's dimensions, and a failure here is logged and dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from decimal import Decimal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from bedrock_spend.domain.parts import PARTS, Part
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import UsageRecord

logger = Logger(child=True)

DEFAULT_NAMESPACE = "BedrockCostApportionment"
MICRO = Decimal(1_000_000)

# Metric names the proxy emits, by dimension set. The dashboard test checks every metric
# template.yaml references against what the emitters print.
#
# Custom metrics cost every month per unique name x dimension values (about $0.30 each), and
# (principal, model) pairs multiply: 100 principals x 5 models is 500 pairs. So only four
# metrics are kept per pair; the rest are per model, and the cost by part rides along in the
# EMF line as properties (Logs Insights can query them), and exactly in the ledger.
CALL_DIMENSIONS = ("PrincipalId", "ModelId")
# Each billed part's metric (parts.py) is per pair only where the table says so.
_PAIR_PARTS = tuple(part for part in PARTS if part.metric and part.metric_per_principal)
_MODEL_PARTS = tuple(part for part in PARTS if part.metric and not part.metric_per_principal)
CALL_METRICS: dict[str, MetricUnit] = {
    "Invocations": MetricUnit.Count,
    **{str(part.metric): MetricUnit.Count for part in _PAIR_PARTS},
    "TotalCost": MetricUnit.NoUnit,
}
MODEL_DIMENSIONS = ("ModelId",)
MODEL_METRICS: dict[str, MetricUnit] = {
    **{str(part.metric): MetricUnit.Count for part in _MODEL_PARTS},
    "UnpricedInvocations": MetricUnit.Count,
}
ERROR_DIMENSIONS = ("ErrorType",)
DENIAL_DIMENSIONS = ("Reason",)
PRINCIPAL_DIMENSIONS = ("PrincipalId",)
OTHER_METRICS: dict[str, tuple[tuple[str, ...], MetricUnit]] = {
    "BedrockErrors": (ERROR_DIMENSIONS, MetricUnit.Count),
    "AuthorizerDenials": (DENIAL_DIMENSIONS, MetricUnit.Count),
    "BudgetRefusals": (PRINCIPAL_DIMENSIONS, MetricUnit.Count),
    "BudgetSoftThresholdCrossed": (PRINCIPAL_DIMENSIONS, MetricUnit.Count),
    "UsageRecordsUnsaved": ((), MetricUnit.Count),
}


def namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE


def _emit(
    dimensions: dict[str, str],
    values: Iterable[tuple[str, MetricUnit, float]],
    metadata: dict[str, str] | None = None,
) -> None:
    try:
        # service="" keeps Powertools from adding a "service" dimension: the dimension sets
        # are part of the metric identity that dashboards and alarms select on.
        provider = AmazonCloudWatchEMFProvider(namespace=namespace(), service="")
        for dimension, dimension_value in dimensions.items():
            provider.add_dimension(name=dimension, value=dimension_value)
        for name, unit, value in values:
            provider.add_metric(name=name, unit=unit, value=value)
        for key, text in (metadata or {}).items():
            provider.add_metadata(key=key, value=text)
        provider.flush_metrics()
    except Exception:  # metrics must never fail a call that Bedrock already billed
        logger.exception("metric emission failed", extra={"dimensions": dimensions})


def _dollars(micro_usd: Decimal) -> float:
    return float(micro_usd / MICRO)


def _reported(usage: Usage, part: Part) -> int | None:
    """The part's count; None when it is a single count that was not reported."""
    if len(part.counts) == 1 and part.counts[0].optional:
        value: int | None = getattr(usage, part.counts[0].field)
        return value
    return usage.total(part)


def emit_call(record: UsageRecord) -> None:
    usage, cost = record.usage, record.cost
    per_pair: list[tuple[str, MetricUnit, float]] = [("Invocations", MetricUnit.Count, 1)]
    for part in _PAIR_PARTS:
        count = _reported(usage, part)
        if count is not None:
            per_pair.append((str(part.metric), MetricUnit.Count, count))
    # Properties, not dimensions: they tie each data point to its price book and ledger record
    # without multiplying the metric's identity.
    properties = {"PriceBookVersion": cost.price_book_version, "RequestId": record.request_id}
    if cost.priced:
        per_pair.append(("TotalCost", MetricUnit.NoUnit, _dollars(cost.total)))
        properties.update(
            {part.cost_property: str(_dollars(cost.of(part))) for part in PARTS if part.cost_property}
        )
    _emit({"PrincipalId": record.principal_id, "ModelId": record.model_id}, per_pair, properties)
    per_model = [
        (name, MetricUnit.Count, float(count))
        for name, count in (
            *((str(part.metric), usage.total(part)) for part in _MODEL_PARTS),
            # Never a silent $0: an unpriced call has no cost metric, only this count.
            ("UnpricedInvocations", 0 if cost.priced else 1),
        )
        if count
    ]
    if per_model:
        _emit({"ModelId": record.model_id}, per_model)


def _emit_one(name: str, dimension_values: tuple[str, ...]) -> None:
    dimension_names, unit = OTHER_METRICS[name]
    _emit(dict(zip(dimension_names, dimension_values, strict=True)), [(name, unit, 1)])


def emit_bedrock_error(error_type: str) -> None:
    _emit_one("BedrockErrors", (error_type,))


def emit_denial(reason: str) -> None:
    _emit_one("AuthorizerDenials", (reason,))


def emit_budget_refusal(principal_id: str) -> None:
    _emit_one("BudgetRefusals", (principal_id,))


def emit_budget_threshold(principal_id: str) -> None:
    _emit_one("BudgetSoftThresholdCrossed", (principal_id,))


def emit_unsaved_record() -> None:
    _emit_one("UsageRecordsUnsaved", ())
