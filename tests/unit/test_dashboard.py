"""The dashboard and alarms in template.yaml reference only metrics the functions emit.

Emitted metrics are not taken from a list: each emitter runs and its EMF output is
parsed, so a renamed metric or dimension breaks this test, not the dashboard.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bedrock_spend.aws import metrics
from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend_local.tables import load_template
from tests.helpers import emf_records

NAMESPACE = "BedrockCostApportionment"
SUBSTITUTIONS = {
    "MetricsNamespace": NAMESPACE,
    "AWS::Region": "us-east-1",
    "AWS::StackName": "bedrock-spend",
    "StageName": "v1",
    "ProxyFunction": "bedrock-spend-ProxyFunction-abc",
}
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} MetricName=\\?\"(\w+)\\?\"")
SCHEMA = re.compile(r"SELECT \w+\((\w+)\) FROM SCHEMA\(\\?\"([^\"\\]+)\\?\",\s*([\w, ]+)\)")
Ref = tuple[str, str, frozenset[str]]


def substitute(text: str) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: SUBSTITUTIONS[m.group(1)], text)


def resources() -> dict[str, Any]:
    return dict(load_template()["Resources"])


def dashboard() -> dict[str, Any]:
    body = resources()["CostDashboard"]["Properties"]["DashboardBody"]["Sub"]
    return dict(json.loads(substitute(body)))


def refs_in_expression(expression: str) -> set[Ref]:
    found: set[Ref] = set()
    for match in SEARCH.finditer(expression):
        namespace, *dimensions = [part.strip() for part in match.group(1).split(",")]
        found.add((namespace, match.group(2), frozenset(dimensions)))
    for match in SCHEMA.finditer(expression):
        dimensions = frozenset(d.strip() for d in match.group(3).split(","))
        found.add((match.group(2), match.group(1), dimensions))
    return found


def dashboard_refs() -> set[Ref]:
    found: set[Ref] = set()
    for widget in dashboard()["widgets"]:
        for row in widget.get("properties", {}).get("metrics", []):
            if isinstance(row[0], dict):
                found |= refs_in_expression(row[0]["expression"])
            else:
                plain = [item for item in row if isinstance(item, str)]
                namespace, name, pairs = plain[0], plain[1], plain[2:]
                found.add((namespace, name, frozenset(pairs[0::2])))
    return found


def alarm_refs() -> set[Ref]:
    found: set[Ref] = set()
    for resource in resources().values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        for metric in props.get("Metrics", []):
            expression = metric["Expression"]
            found |= refs_in_expression(
                substitute(expression["Sub"] if isinstance(expression, dict) else expression)
            )
        if "MetricName" in props:
            namespace = props["Namespace"]
            namespace = NAMESPACE if namespace == {"Ref": "MetricsNamespace"} else namespace
            found.add(
                (namespace, props["MetricName"], frozenset(d["Name"] for d in props.get("Dimensions", [])))
            )
    return found


def record(priced: bool) -> UsageRecord:
    cost = (
        Cost(priced=True, price_book_version="v", input=Decimal(1), output=Decimal(2))
        if priced
        else Cost(priced=False, price_book_version="v", reason="no price")
    )
    return UsageRecord(
        request_id="r",
        requested_at=datetime(2026, 11, 29, tzinfo=UTC),
        caller=Caller(principal_id="User::a", key_id="kid_1", username="a"),
        operation="InvokeModel",
        model_id="m.x",
        base_model="m.x",
        region="us-east-1",
        usage=Usage(input_tokens=1, output_tokens=1, cache_read_tokens=1, cache_write_5m_tokens=1, images=1),
        cost=cost,
    )


@pytest.fixture
def emitted(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> set[Ref]:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    metrics.emit_call(record(priced=True))
    metrics.emit_call(record(priced=False))
    metrics.emit_bedrock_error("ThrottlingException")
    metrics.emit_denial("unknown key")
    metrics.emit_budget_refusal("User::a")
    metrics.emit_budget_threshold("User::a")
    metrics.emit_unsaved_record()
    found: set[Ref] = set()
    for emf in emf_records(capsys.readouterr().out):
        for directive in emf["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], frozenset(dimensions)))
    return found


def test_dashboard_body_is_valid_json_with_widgets() -> None:
    assert len(dashboard()["widgets"]) >= 10


def test_every_dashboard_metric_is_emitted(emitted: set[Ref]) -> None:
    ours = {ref for ref in dashboard_refs() if ref[0] == NAMESPACE}
    assert ours, "the dashboard shows none of the proxy's metrics"
    assert ours <= emitted, sorted(ours - emitted)


def test_every_alarm_metric_is_emitted(emitted: set[Ref]) -> None:
    ours = {ref for ref in alarm_refs() if ref[0] == NAMESPACE}
    assert {name for _, name, _ in ours} >= {
        "UnpricedInvocations",
        "BudgetSoftThresholdCrossed",
        "BedrockErrors",
    }
    assert ours <= emitted, sorted(ours - emitted)


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    names = {name for _, name, _ in dashboard_refs()}
    wanted = {
        "TotalCost",
        "InputTokensUsed",
        "OutputTokensUsed",
        "Invocations",
        "UnpricedInvocations",
        "BudgetRefusals",
        "BedrockErrors",
        "AuthorizerDenials",
        "Latency",
    }
    assert wanted <= names, sorted(wanted - names)


def test_the_cross_check_would_catch_a_renamed_metric(emitted: set[Ref]) -> None:
    assert (NAMESPACE, "TotalCost", frozenset({"PrincipalId", "ModelId"})) in emitted
    assert (NAMESPACE, "TotalCosts", frozenset({"PrincipalId", "ModelId"})) not in emitted
    assert (NAMESPACE, "TotalCost", frozenset({"PrincipalId"})) not in emitted
