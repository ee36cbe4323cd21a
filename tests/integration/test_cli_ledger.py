"""`bedrock-spend ledger replay` and `bedrock-spend usage` against a real DynamoDB API (moto server)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from bedrock_spend.aws.ledger import record_key, total_key
from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend_cli import config
from tests.conftest import KEY_TABLE, USAGE_TABLE
from tests.helpers import CliResult, CliRun, cli_runner

MONTH = "2026-01"
START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


Result = CliResult
Run = CliRun


@pytest.fixture
def run(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.delenv(config.KEYS_TABLE_ENV, raising=False)
    monkeypatch.delenv(config.USAGE_TABLE_ENV, raising=False)
    endpoint = aws_env["AWS_ENDPOINT_URL_DYNAMODB"]

    return cli_runner(
        capsys, "--endpoint-url", endpoint, "--keys-table", KEY_TABLE, "--usage-table", USAGE_TABLE
    )


def make_record(
    n: int, user: str = "alice", cost: Decimal | None = Decimal("1.5"), when: datetime | None = None
) -> UsageRecord:
    """A billed call; ``cost=None`` makes it unpriced."""
    priced = cost is not None
    return UsageRecord(
        request_id=f"req-{user}-{n}",
        requested_at=when or START + timedelta(minutes=n),
        caller=Caller(principal_id=f"User::{user}", key_id=f"kid_{user}", username=user, team="search"),
        operation="InvokeModel",
        model_id="us.anthropic.claude-3-5-haiku-20241022-v1:0",
        base_model="anthropic.claude-3-5-haiku-20241022-v1:0",
        region="us-east-1",
        usage=Usage(
            input_tokens=100 + n,
            output_tokens=10 + n,
            cache_read_tokens=n,
            cache_write_5m_tokens=2,
            source="anthropic",
        ),
        cost=Cost(
            priced=priced,
            price_book_version="2026-01-01",
            input=cost or Decimal(0),
            output=Decimal("0.000001") if priced else Decimal(0),
            reason=None if priced else "no price for model",
        ),
    )


RECORDS = [
    make_record(1, cost=Decimal("1234.567891")),
    make_record(2, cost=Decimal("98765.4321")),
    make_record(3, cost=Decimal("0.000007")),
    make_record(1, user="bob", cost=Decimal("500")),
    make_record(2, user="bob", cost=None),
]


def _proxy_logger() -> tuple[logging.Logger, io.StringIO]:
    """A stdlib logger with Powertools' JSON formatter: the proxy's line format, without
    Powertools' per-service logger cache (other tests may have set that logger up first)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(LambdaPowertoolsFormatter(service="bedrock-spend-proxy"))
    log = logging.getLogger("tests.integration.test_cli_ledger.proxy")
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, buffer


_LOGGER, _LOG = _proxy_logger()


def powertools_line(record: UsageRecord) -> str:
    """The exact line metering.save logs when the ledger write fails."""
    _LOG.seek(0)
    _LOG.truncate()
    try:
        raise RuntimeError("ProvisionedThroughputExceededException")
    except RuntimeError:
        _LOGGER.exception("USAGE_RECORD_UNSAVED", extra={"usage_record": record.to_dict()})
    return _LOG.getvalue().strip()


def noise() -> list[str]:
    return [
        "START RequestId: 6f7c Version: $LATEST",
        json.dumps({"level": "INFO", "message": "request served", "service": "bedrock-spend-proxy"}),
        "END RequestId: 6f7c",
        "REPORT RequestId: 6f7c\tDuration: 812.33 ms",
    ]


def raw_lines(records: list[UsageRecord]) -> str:
    return "\n".join([*noise()[:2], *(powertools_line(r) for r in records), *noise()[2:]]) + "\n"


def prefixed_lines(records: list[UsageRecord]) -> str:
    """Half as a Lambda text log (timestamp, request id, level), half as filter-log-events --output text."""
    lines = []
    for i, record in enumerate(records):
        line = powertools_line(record)
        if i % 2:
            lines.append(f"EVENTS\t3799{i}\t1768471200000\t2026/01/15/[$LATEST]abc\t{line}\t1768471200000")
        else:
            lines.append(f"2026-01-15T10:00:0{i}.000Z\t6f7c-{i}\tERROR\t{line}")
    return "\n".join([noise()[0], *lines]) + "\n"


def events_document(records: list[UsageRecord]) -> str:
    """`aws logs filter-log-events` default (JSON) output."""
    events = [
        {
            "logStreamName": "2026/01/15/[$LATEST]abc",
            "timestamp": 1768471200000 + i,
            "message": powertools_line(record) + "\n",
            "ingestionTime": 1768471200100 + i,
            "eventId": f"3799{i}",
        }
        for i, record in enumerate(records)
    ]
    events.insert(1, {"logStreamName": "s", "timestamp": 1, "message": noise()[1], "eventId": "1"})
    return json.dumps({"events": events, "searchedLogStreams": []}, indent=4)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def counts(result: Result) -> dict[str, Any]:
    assert result.code in (0, 1), result.err
    return dict(result.json())


def in_ledger(dynamodb: Any, record: UsageRecord) -> bool:
    return "Item" in dynamodb.get_item(TableName=USAGE_TABLE, Key=record_key(record))


def total(dynamodb: Any, principal: str) -> dict[str, Any]:
    item = dynamodb.get_item(TableName=USAGE_TABLE, Key=total_key(principal, MONTH)).get("Item")
    assert item is not None
    return dict(item)


# --- the three input formats ---


@pytest.mark.parametrize("render", [raw_lines, prefixed_lines, events_document])
def test_replay_writes_every_record_of_each_format(
    run: Run, dynamodb: Any, tmp_path: Path, render: Callable[[list[UsageRecord]], str]
) -> None:
    path = write(tmp_path, "logs.txt", render(RECORDS))
    result = run("ledger", "replay", path, "--format", "json")
    assert result.code == 0, result.err
    assert counts(result) == {
        "found": 5,
        "written": 5,
        "already_present": 0,
        "unreadable": 0,
        "failed": 0,
        "dry_run": False,
    }
    assert all(in_ledger(dynamodb, record) for record in RECORDS)


def test_replay_table_output_names_the_counts(run: Run, tmp_path: Path) -> None:
    result = run("ledger", "replay", write(tmp_path, "a.log", raw_lines(RECORDS[:2])))
    assert result.code == 0
    lines = {" ".join(line.split()[:-1]): line.split()[-1] for line in result.out.splitlines()}
    assert lines == {
        "records found": "2",
        "written": "2",
        "already present": "0",
        "unreadable": "0",
        "failed": "0",
    }


def test_replaying_twice_finds_everything_already_present(run: Run, dynamodb: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "logs.txt", raw_lines(RECORDS))
    assert counts(run("ledger", "replay", path, "--format", "json"))["written"] == 5
    before = total(dynamodb, "User::alice")
    again = counts(run("ledger", "replay", path, "--format", "json"))
    assert (again["found"], again["written"], again["already_present"]) == (5, 0, 5)
    assert total(dynamodb, "User::alice") == before


def test_the_same_record_in_two_inputs_is_written_once(run: Run, tmp_path: Path) -> None:
    first = write(tmp_path, "a.log", raw_lines(RECORDS[:1]))
    second = write(tmp_path, "b.json", events_document(RECORDS[:1]))
    result = counts(run("ledger", "replay", first, second, "--format", "json"))
    assert (result["found"], result["written"], result["already_present"]) == (2, 1, 1)


def test_monthly_total_is_the_exact_sum(run: Run, dynamodb: Any, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "logs.txt", prefixed_lines(RECORDS)))
    alice = [r for r in RECORDS if r.caller.username == "alice"]
    item = total(dynamodb, "User::alice")
    assert Decimal(item["CostMicroUsd"]["N"]) == sum((r.cost.total for r in alice), Decimal(0))
    assert item["CostMicroUsd"]["N"] == "100000.000001"
    assert int(item["Calls"]["N"]) == 3
    assert int(item["InputTokens"]["N"]) == sum(r.usage.input_tokens or 0 for r in alice)
    assert int(item["CacheReadTokens"]["N"]) == sum(r.usage.cache_read_tokens for r in alice)
    bob = total(dynamodb, "User::bob")
    assert Decimal(bob["CostMicroUsd"]["N"]) == Decimal("500.000001")  # the unpriced call adds nothing
    assert (int(bob["Calls"]["N"]), int(bob["UnpricedCalls"]["N"])) == (2, 1)


# --- unreadable input, dry run, stdin, files ---


def test_unreadable_records_are_counted_and_reported(run: Run, dynamodb: Any, tmp_path: Path) -> None:
    good = powertools_line(RECORDS[0])
    incomplete = json.loads(powertools_line(RECORDS[1]))
    del incomplete["usage_record"]["cost"]
    newer = json.loads(powertools_line(RECORDS[2]))
    newer["usage_record"]["v"] = 99
    lines = [
        good,
        good[: len(good) // 2],  # truncated by the log pipeline
        json.dumps(incomplete),
        json.dumps({"level": "ERROR", "message": "USAGE_RECORD_UNSAVED"}),
        json.dumps(newer),
        *noise(),
        "not json at all",
    ]
    result = run("ledger", "replay", write(tmp_path, "logs.txt", "\n".join(lines)), "--format", "json")
    assert result.code == 0
    assert counts(result) == {
        "found": 5,
        "written": 1,
        "already_present": 0,
        "unreadable": 4,
        "failed": 0,
        "dry_run": False,
    }
    assert result.err.count("unreadable usage record") == 4
    assert "logs.txt:2:" in result.err
    assert in_ledger(dynamodb, RECORDS[0])


def test_dry_run_writes_nothing(run: Run, dynamodb: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "logs.txt", raw_lines(RECORDS))
    result = run("ledger", "replay", "--dry-run", path)
    assert result.code == 0
    assert "dry run: nothing was written" in result.out
    assert "would write" in result.out
    assert dynamodb.scan(TableName=USAGE_TABLE)["Items"] == []


def test_dry_run_tells_what_is_already_present(run: Run, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "first.log", raw_lines(RECORDS[:2])))
    result = counts(
        run(
            "ledger",
            "replay",
            "--dry-run",
            write(tmp_path, "all.log", raw_lines(RECORDS)),
            "--format",
            "json",
        )
    )
    assert (result["written"], result["already_present"], result["dry_run"]) == (3, 2, True)


@pytest.mark.parametrize("argv", [[], ["-"]])
def test_replay_reads_stdin(
    run: Run, dynamodb: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(events_document(RECORDS[:2]).encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    result = counts(run("ledger", "replay", *argv, "--format", "json"))
    assert result["written"] == 2
    assert in_ledger(dynamodb, RECORDS[1])


def test_replay_reads_gzipped_exports(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "000000.gz"
    path.write_bytes(gzip.compress(prefixed_lines(RECORDS[:3]).encode()))
    assert counts(run("ledger", "replay", str(path), "--format", "json"))["written"] == 3


def test_missing_file_is_an_error_and_nothing_is_written(run: Run, dynamodb: Any, tmp_path: Path) -> None:
    good = write(tmp_path, "good.log", raw_lines(RECORDS[:1]))
    result = run("ledger", "replay", good, str(tmp_path / "missing.log"))
    assert result.code == 1
    assert result.err.startswith("error: cannot read")
    assert dynamodb.scan(TableName=USAGE_TABLE)["Items"] == []


def test_failed_writes_exit_1(run: Run, tmp_path: Path) -> None:
    path = write(tmp_path, "logs.txt", raw_lines(RECORDS[:2]))
    result = run("--usage-table", "no-such-table", "ledger", "replay", path, "--format", "json")
    assert result.code == 1
    assert counts(result)["failed"] == 2
    assert "req-alice-1 not written" in result.err


def test_input_without_records_writes_nothing_and_needs_no_table(run: Run, tmp_path: Path) -> None:
    result = run(
        "--usage-table", "no-such-table", "ledger", "replay", write(tmp_path, "x.log", "\n".join(noise()))
    )
    assert result.code == 0
    assert result.out.splitlines()[0].split() == ["records", "found", "0"]


# --- usage ---


def test_usage_gives_totals_per_principal_after_replay(run: Run, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "logs.txt", raw_lines(RECORDS)))
    rows = run("usage", "--month", MONTH, "--format", "json").json()
    by_principal = {row["principal"]: row for row in rows}
    assert set(by_principal) == {"User::alice", "User::bob"}
    alice = by_principal["User::alice"]
    assert alice["calls"] == 3
    assert alice["unpriced_calls"] == 0
    assert alice["input_tokens"] == 306
    assert alice["output_tokens"] == 36
    assert alice["cache_read_tokens"] == 6
    assert alice["cache_write_tokens"] == 6
    assert alice["cost_micro_usd"] == "100000.000001"
    assert alice["cost_usd"] == "0.100000"
    bob = by_principal["User::bob"]
    assert (bob["calls"], bob["unpriced_calls"], bob["cost_usd"]) == (2, 1, "0.000500")
    assert rows[0]["principal"] == "User::alice"  # highest cost first


def test_usage_table_has_a_total_row_and_notes_unpriced_calls(run: Run, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "logs.txt", raw_lines(RECORDS)))
    result = run("usage", "--month", MONTH)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == f"month {MONTH} (UTC), month to date"
    assert lines[1].split()[:2] == ["PRINCIPAL", "CALLS"]
    total_row = next(line for line in lines if line.startswith("TOTAL"))
    assert total_row.split()[1] == "5"
    assert total_row.split()[-1] == "0.100500"
    assert "1 call(s) had no price" in result.out


def test_usage_for_one_principal_by_username_or_principal(run: Run, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "logs.txt", raw_lines(RECORDS)))
    by_name = run("usage", "--month", MONTH, "--principal", "bob", "--format", "json").json()
    by_principal = run("usage", "--month", MONTH, "--principal", "User::bob", "--format", "json").json()
    assert by_name == by_principal
    assert [row["principal"] for row in by_name] == ["User::bob"]


def test_usage_of_a_month_without_calls(run: Run, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "logs.txt", raw_lines(RECORDS)))
    assert "no usage recorded" in run("usage", "--month", "2025-12").out
    assert run("usage", "--month", "2025-12", "--principal", "alice", "--format", "json").json() == []


def test_usage_csv(run: Run, tmp_path: Path) -> None:
    run("ledger", "replay", write(tmp_path, "logs.txt", raw_lines(RECORDS)))
    lines = run("usage", "--month", MONTH, "--format", "csv").out.splitlines()
    assert lines[0].startswith("PRINCIPAL,CALLS,UNPRICED,")
    assert lines[1].startswith("User::alice,3,0,306,36,")
    assert lines[1].endswith(",0.100000")
