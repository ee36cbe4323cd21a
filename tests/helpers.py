"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class LambdaContext:
    function_name = "test-function"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def emf_records(output: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format objects among printed lines."""
    records = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def log_records(output: str) -> list[dict[str, Any]]:
    """Powertools JSON log lines (not EMF) among printed lines."""
    records = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' not in line:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def emf_value(record: dict[str, Any], name: str) -> float:
    """A metric's value in an EMF record (Powertools writes single values as one-item lists)."""
    value = record[name]
    if isinstance(value, list):
        assert len(value) == 1, value
        return float(value[0])
    return float(value)


def header(response: dict[str, Any], name: str) -> str | None:
    """A header of a Lambda proxy response, whichever of the two header maps carries it."""
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return str(values[0])
    return None


def metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def claude_body(text: str = "Say hello in three languages.", max_tokens: int = 200) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


CliRun = Callable[..., CliResult]


def cli_runner(capsys: Any, *leading: str, before: Callable[[], None] | None = None) -> CliRun:
    """Run ``bedrock-spend`` in-process with ``leading`` arguments first; capture its output."""
    from bedrock_spend_cli.main import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        if before is not None:
            before()
        code = main([*leading, *argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
