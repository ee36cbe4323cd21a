"""`bedrock-spend report` and `report reconcile` against a real DynamoDB and CloudWatch API (moto server).

The ledger is written with Ledger.record, the proxy's own writer; expected figures are summed
here from the UsageRecords themselves, so a report that misreads an attribute fails.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from bedrock_spend.aws import ledger as ledger_module
from bedrock_spend.aws.ledger import Ledger
from bedrock_spend.domain.parts import PARTS
from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend_cli import config, report_cmd, report_reconcile
from bedrock_spend_cli.report_cmd import Progress, resolve_range
from tests.conftest import KEY_TABLE, USAGE_TABLE
from tests.helpers import CliResult, CliRun, cli_runner

HAIKU = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-lite-v1:0"
NOW = datetime(2026, 1, 16, 12, 0, tzinfo=UTC)


Result = CliResult
Run = CliRun


def record(
    n: int,
    user: str,
    model: str,
    when: datetime,
    cost: Decimal | None,
    *,
    team: str = "search",
    version: str = "2026-01-01",
    region: str = "us-east-1",
    cache_read: int = 0,
    partial: Decimal = Decimal(0),
    end_user: str | None = None,
) -> UsageRecord:
    """A billed call. ``cost=None`` makes it unpriced (``partial``: cost of its priced parts)."""
    priced = cost is not None
    return UsageRecord(
        request_id=f"req-{user}-{n}",
        requested_at=when,
        caller=Caller(principal_id=f"User::{user}", key_id=f"kid_{n}", username=user, team=team),
        operation="InvokeModel",
        model_id=model,
        base_model=None,
        region=region,
        end_user=end_user,
        usage=Usage(
            input_tokens=100 * n + 7,
            output_tokens=10 * n + 3,
            cache_read_tokens=cache_read,
            cache_write_5m_tokens=n % 3,
            cache_write_1h_tokens=1 if n % 4 == 0 else 0,
            images=0,
            source="anthropic" if "claude" in model else "nova",
        ),
        cost=Cost(
            priced=priced,
            price_book_version=version,
            input=cost if priced else partial,
            output=Decimal("0.000001") if priced else Decimal(0),
            reason=None if priced else "no price for model in us-east-1",
        ),
    )


def at(day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


# Two principals in two teams, two models, three days (14-16 January), priced and unpriced,
# two price book versions; plus calls just outside the range on both sides.
RECORDS = [
    record(1, "alice", HAIKU, at(14), Decimal("1234.567891"), end_user="u-1"),
    record(2, "alice", HAIKU, at(14, 23, 59), Decimal("0.000007")),
    record(
        3, "alice", NOVA, at(15), Decimal("98765.4321"), version="2026-01-10", cache_read=40, end_user="u-1"
    ),
    record(4, "alice", NOVA, at(16), None, partial=Decimal("12.5")),
    record(5, "bob", HAIKU, at(14, 0, 0), Decimal("500"), team="ads", end_user="u-2"),
    record(6, "bob", NOVA, at(15), None, team="ads"),
    record(7, "bob", NOVA, at(16, 23, 59), Decimal("0.123456"), team="ads", version="2026-01-10"),
    record(8, "bob", HAIKU, at(16, 8), Decimal("2000000"), team="ads"),
]
OUTSIDE = [
    record(9, "alice", HAIKU, datetime(2026, 1, 13, 23, 59, 59, 999000, tzinfo=UTC), Decimal(1)),
    record(10, "bob", HAIKU, datetime(2026, 1, 17, 0, 0, tzinfo=UTC), Decimal(1), team="ads"),
]
RANGE = ("--from", "2026-01-14", "--to", "2026-01-16")

KEYS: dict[str, Callable[[UsageRecord], str]] = {
    "principal": lambda r: r.principal_id,
    "team": lambda r: r.caller.team,
    "model": lambda r: r.model_id,
    "day": lambda r: r.requested_at.date().isoformat(),
    "end-user": lambda r: r.end_user or "-",
}


def expected(records: list[UsageRecord], by: list[str]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The report's rows, summed independently from the records."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in records:
        key = tuple(KEYS[name](r) for name in by)
        row = rows.setdefault(
            key,
            {
                "calls": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "images": 0,
                "cost_micro_usd": Decimal(0),
                "unpriced_calls": 0,
                "unpriced_tokens": 0,
                "price_book_versions": set(),
            },
        )
        u = r.usage
        row["calls"] += 1
        row["input_tokens"] += u.input_tokens or 0
        row["output_tokens"] += u.output_tokens or 0
        row["cache_read_tokens"] += u.cache_read_tokens
        row["cache_write_tokens"] += u.cache_write_tokens
        row["price_book_versions"].add(r.cost.price_book_version)
        if r.cost.priced:
            row["cost_micro_usd"] += r.cost.total
        else:
            row["unpriced_calls"] += 1
            row["unpriced_tokens"] += (
                (u.input_tokens or 0) + (u.output_tokens or 0) + u.cache_read_tokens + u.cache_write_tokens
            )
    return rows


def six(micro: Decimal) -> str:
    # Six decimals; a sum below $0.0001 keeps three significant digits instead of rounding away.
    usd = micro / Decimal(1_000_000)
    if usd == 0 or usd >= Decimal("0.0001"):
        return str(usd.quantize(Decimal("0.000001")))
    return format(usd.quantize(Decimal(1).scaleb(usd.adjusted() - 2)), "f")


@pytest.fixture
def operations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every DynamoDB/CloudWatch operation the CLI sends, with its parameters."""
    seen: list[tuple[str, dict[str, Any]]] = []
    original = config.Aws.client

    def client(self: config.Aws, service: str) -> Any:
        made = original(self, service)
        if service not in getattr(self, "_watched", set()):
            self._watched = {*getattr(self, "_watched", set()), service}  # type: ignore[attr-defined]

            def note(model: Any, params: dict[str, Any], **_: Any) -> None:
                seen.append((model.name, params))

            service_id = made.meta.service_model.service_id.hyphenize()
            made.meta.events.register(f"before-parameter-build.{service_id}", note)
        return made

    monkeypatch.setattr(config.Aws, "client", client)
    return seen


@pytest.fixture
def run(
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    operations: list[tuple[str, dict[str, Any]]],
) -> Run:
    monkeypatch.delenv(config.KEYS_TABLE_ENV, raising=False)
    monkeypatch.delenv(config.USAGE_TABLE_ENV, raising=False)
    monkeypatch.setattr(report_cmd, "utcnow", lambda: NOW)
    monkeypatch.setattr(report_reconcile, "utcnow", lambda: NOW)
    endpoint = aws_env["AWS_ENDPOINT_URL_DYNAMODB"]

    tables = ("--keys-table", KEY_TABLE, "--usage-table", USAGE_TABLE)
    return cli_runner(capsys, "--endpoint-url", endpoint, *tables, before=operations.clear)


@pytest.fixture
def ledger(dynamodb: Any) -> Ledger:
    writer = Ledger(USAGE_TABLE, client=dynamodb)
    for r in RECORDS + OUTSIDE:
        assert writer.record(r)
    return writer


@pytest.fixture
def cloudwatch(aws_env: dict[str, str]) -> Any:
    return boto3.client(
        "cloudwatch", endpoint_url=aws_env["AWS_ENDPOINT_URL_CLOUDWATCH"], region_name="us-east-1"
    )


def json_rows(result: Result, by: list[str]) -> dict[tuple[str, ...], dict[str, Any]]:
    assert result.code == 0, result.err
    return {tuple(row[name] for name in by): row for row in result.json()["rows"]}


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name in ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert got[name] == want[name], name
    assert (got["images"], got["unpriced_calls"], got["unpriced_tokens"]) == (
        want["images"],
        want["unpriced_calls"],
        want["unpriced_tokens"],
    )
    assert Decimal(got["cost_micro_usd"]) == want["cost_micro_usd"]
    assert Decimal(got["cost_usd"]) == want["cost_micro_usd"] / Decimal(1_000_000)
    assert got["price_book_versions"] == sorted(want["price_book_versions"])


# --- exact totals, every format ------------------------------------------------------------


def test_the_table_by_principal_and_model_prints_the_exact_ledger_totals(run: Run, ledger: Ledger) -> None:
    result = run("report", *RANGE, "--by", "principal,model")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "2026-01-14 to 2026-01-16 (UTC, both days included), by principal, model"
    assert lines[1].split()[:3] == ["PRINCIPAL", "MODEL", "CALLS"]
    body = {tuple(line.split()[:2]): line.split() for line in lines[3:] if line.startswith("User::")}
    want = expected(RECORDS, ["principal", "model"])
    assert set(body) == set(want)
    for key, cells in body.items():
        row = want[key]
        # PRINCIPAL MODEL CALLS <a column per billed part> COST UNPRICED-CALLS UNPRICED-TOKENS; these
        # records bill tokens only, so every other part's column is 0.
        parts = [f"{row[part.total]:,}" if part.total in row else "0" for part in PARTS]
        assert cells[2:] == [
            f"{row['calls']:,}",
            *parts,
            six(row["cost_micro_usd"]),
            f"{row['unpriced_calls']:,}",
            f"{row['unpriced_tokens']:,}",
        ]
    [total] = [line.split() for line in lines if line.startswith("TOTAL")]
    everything = expected(RECORDS, [])[()]
    assert total[1:3] == ["-", str(everything["calls"])]
    cost_column = 3 + len(PARTS)
    assert total[cost_column] == six(everything["cost_micro_usd"]) == "2.100500"
    assert total[cost_column + 1] == "2"
    assert "price book versions: 2026-01-01, 2026-01-10" in lines
    assert any("2 call(s) had no price" in line for line in lines)
    assert "  2 x no price for model in us-east-1" in lines


def test_json_keeps_exact_decimal_strings_and_parses(run: Run, ledger: Ledger) -> None:
    by = ["principal", "model"]
    result = run("report", *RANGE, "--by", ",".join(by), "--format", "json")
    document = result.json()
    got = json_rows(result, by)
    want = expected(RECORDS, by)
    assert set(got) == set(want)
    for key, row in want.items():
        assert_same(got[key], row)
    assert got[("User::alice", HAIKU)]["cost_micro_usd"] == "1234.567900"
    assert got[("User::alice", HAIKU)]["cost_usd"] == "0.001234567900"
    assert_same(document["total"], expected(RECORDS, [])[()])
    assert document["total"]["cost_usd"] == "2.100500123460"  # exact: 2,100,500.123460 micro-USD
    assert (document["from"], document["to"], document["group_by"]) == ("2026-01-14", "2026-01-16", by)
    assert document["price_book_versions"] == ["2026-01-01", "2026-01-10"]
    assert document["unpriced_reasons"] == {"no price for model in us-east-1": 2}


def test_csv_parses_with_a_total_line_and_versions_in_one_column(run: Run, ledger: Ledger) -> None:
    by = ["principal", "model"]
    result = run("report", *RANGE, "--by", "principal,model", "--format", "csv")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert list(rows[0]) == [*by, *report_cmd.CSV_FIELDS]
    *groups, total = rows
    want = expected(RECORDS, by)
    assert {(r["principal"], r["model"]) for r in groups} == set(want)
    for r in groups:
        row = want[(r["principal"], r["model"])]
        assert int(r["calls"]) == row["calls"] and int(r["unpriced_calls"]) == row["unpriced_calls"]
        assert Decimal(r["cost_micro_usd"]) == row["cost_micro_usd"]
        assert r["cost_usd"] == six(row["cost_micro_usd"])
        assert r["price_book_versions"] == ";".join(sorted(row["price_book_versions"]))
    assert (total["principal"], total["model"]) == ("TOTAL", "")
    assert total["cost_usd"] == "2.100500" and total["calls"] == "8"
    assert total["price_book_versions"] == "2026-01-01;2026-01-10"


@pytest.mark.parametrize(
    "by",
    [
        ["principal"],
        ["team"],
        ["model"],
        ["day"],
        ["end-user"],
        ["team", "day"],
        ["model", "principal", "day"],
        ["principal", "end-user"],
    ],
)
def test_every_grouping_sums_to_the_records(run: Run, ledger: Ledger, by: list[str]) -> None:
    result = run("report", *RANGE, "--by", ",".join(by), "--format", "json")
    got = json_rows(result, by)
    want = expected(RECORDS, by)
    assert list(got) == sorted(want)  # rows come in key order
    for key, row in want.items():
        assert_same(got[key], row)


def test_by_may_be_repeated(run: Run, ledger: Ledger) -> None:
    once = run("report", *RANGE, "--by", "team,model", "--format", "json").json()
    twice = run("report", *RANGE, "--by", "team", "--by", "model", "--format", "json").json()
    assert once == twice


def test_an_unpriced_call_is_never_folded_into_the_cost(run: Run, ledger: Ledger) -> None:
    # alice's only NOVA call on the 16th is unpriced although its input part had a price.
    result = run(
        "report", "--from", "2026-01-16", "--to", "2026-01-16", "--by", "principal", "--format", "json"
    )
    [alice] = [row for row in result.json()["rows"] if row["principal"] == "User::alice"]
    assert (alice["calls"], alice["unpriced_calls"], alice["cost_micro_usd"]) == (1, 1, "0")
    assert alice["unpriced_tokens"] == 407 + 43 + 1 + 1


def test_a_row_of_unpriced_calls_shows_no_cost(run: Run, ledger: Ledger) -> None:
    # alice's only call on the 16th is unpriced: no cost figure, not 0.000000.
    day = ("--from", "2026-01-16", "--to", "2026-01-16", "--by", "principal")
    table = run("report", *day).out.splitlines()
    [alice] = [line.split() for line in table if line.startswith("User::alice")]
    # PRINCIPAL CALLS <a column per billed part> COST
    assert alice[2 + len(PARTS)] == "-"
    rows = list(csv.DictReader(io.StringIO(run("report", *day, "--format", "csv").out)))
    [alice_csv] = [row for row in rows if row["principal"] == "User::alice"]
    assert alice_csv["cost_usd"] == "" and alice_csv["unpriced_calls"] == "1"


def test_the_range_includes_both_days_and_nothing_outside(run: Run, ledger: Ledger) -> None:
    inside = run("report", *RANGE, "--format", "json").json()
    assert inside["total"]["calls"] == len(RECORDS)
    wider = run("report", "--from", "2026-01-13", "--to", "2026-01-17", "--format", "json").json()
    assert wider["total"]["calls"] == len(RECORDS) + len(OUTSIDE)


def test_an_empty_range_says_so(run: Run, ledger: Ledger) -> None:
    result = run("report", "--from", "2025-06-01", "--to", "2025-06-02")
    assert result.code == 0
    assert result.out.splitlines()[1] == "no usage recorded"
    document = run("report", "--from", "2025-06-01", "--to", "2025-06-02", "--format", "json").json()
    assert document["rows"] == [] and document["total"]["calls"] == 0


# --- how the ledger is read ------------------------------------------------------------------


def test_a_range_is_read_with_one_day_index_query_per_day_never_a_scan(
    run: Run, ledger: Ledger, operations: list[tuple[str, dict[str, Any]]]
) -> None:
    assert run("report", *RANGE, "--format", "json").code == 0
    assert {name for name, _ in operations} == {"Query"}
    assert [p["IndexName"] for _, p in operations] == ["GSI1"] * 3
    assert [p["ExpressionAttributeValues"][":day"]["S"] for _, p in operations] == [
        "DAY#2026-01-14",
        "DAY#2026-01-15",
        "DAY#2026-01-16",
    ]


def test_many_pages_are_all_read(run: Run, dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = Ledger(USAGE_TABLE, client=dynamodb)
    many = [record(100 + n, "carol", HAIKU, at(15, n // 60, n % 60), Decimal(n)) for n in range(130)]
    for r in many:
        writer.record(r)
    # Small pages: the paginator must follow LastEvaluatedKey.
    projection = ledger_module.summary_projection
    monkeypatch.setattr(ledger_module, "summary_projection", lambda: {**projection(), "Limit": 25})
    document = run("report", "--from", "2026-01-15", "--to", "2026-01-15", "--format", "json").json()
    assert document["total"]["calls"] == 130
    assert Decimal(document["total"]["cost_micro_usd"]) == sum(r.cost.total for r in many)


def test_a_principal_filter_queries_its_records_by_key(
    run: Run, ledger: Ledger, operations: list[tuple[str, dict[str, Any]]]
) -> None:
    result = run("report", *RANGE, "--principal", "alice", "--by", "model", "--format", "json")
    got = json_rows(result, ["model"])
    want = expected([r for r in RECORDS if r.principal_id == "User::alice"], ["model"])
    assert set(got) == set(want)
    for key, row in want.items():
        assert_same(got[key], row)
    assert result.json()["principals"] == ["User::alice"]
    [(name, params)] = operations
    assert name == "Query" and "IndexName" not in params
    assert params["ExpressionAttributeValues"][":pk"] == {"S": "USAGE#User::alice"}


def test_principal_filters_add_up(run: Run, ledger: Ledger) -> None:
    both = run("report", *RANGE, "--principal", "User::alice", "--principal", "bob", "--format", "json")
    assert both.json()["total"]["calls"] == len(RECORDS)


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--by", "principal,colour"], "invalid --by 'colour'"),
        (["--by", ","], "choose from principal, team, model, day"),
        (["--from", "2026-02-30"], "no such day"),
        (["--from", "last-week"], "invalid day 'last-week'"),
        (["--from", "2026-01-16", "--to", "2026-01-14"], "--from (2026-01-16) is after --to (2026-01-14)"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(run: Run, argv: list[str], message: str) -> None:
    result = run("report", *argv)
    assert result.code == 2
    assert message in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("start", "end", "first", "last"),
    [
        (None, None, "2026-01-01", "2026-01-16"),
        ("this-month", None, "2026-01-01", "2026-01-16"),
        ("last-month", None, "2025-12-01", "2025-12-31"),
        ("7d", None, "2026-01-10", "2026-01-16"),
        ("30d", "yesterday", "2025-12-18", "2026-01-15"),
        ("today", None, "2026-01-16", "2026-01-16"),
        ("yesterday", None, "2026-01-15", "2026-01-15"),
        ("2026-01-02", None, "2026-01-02", "2026-01-16"),
        ("2025-11-20", "last-month", "2025-11-20", "2025-12-31"),
        (None, "2025-12-10", "2025-12-01", "2025-12-10"),
    ],
)
def test_relative_days_resolve_against_today(
    start: str | None, end: str | None, first: str, last: str
) -> None:
    assert resolve_range(start, end, date(2026, 1, 16)) == (
        date.fromisoformat(first),
        date.fromisoformat(last),
    )


def test_last_month_knows_month_lengths() -> None:
    assert resolve_range("last-month", None, date(2024, 3, 31)) == (date(2024, 2, 1), date(2024, 2, 29))


def test_relative_days_use_the_clock(run: Run, ledger: Ledger) -> None:
    document = run("report", "--from", "7d", "--format", "json").json()
    assert (document["from"], document["to"]) == ("2026-01-10", "2026-01-16")
    assert document["total"]["calls"] == len(RECORDS) + 1  # and the 13th's


# --- progress --------------------------------------------------------------------------------


def test_progress_goes_to_stderr_only_when_asked(run: Run, ledger: Ledger) -> None:
    quiet = run("report", *RANGE, "--format", "json")
    assert quiet.err == ""
    loud = run("report", *RANGE, "--format", "json", "--progress")
    assert json.loads(loud.out) == quiet.json()
    assert loud.err.splitlines()[-1] == "read 8 records from 3 days"


def test_progress_is_throttled_and_rewrites_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    ticks = iter([0.0, 0.1, 0.2, 0.3, 0.7, 0.8, 1.3, 1.4])
    stream = Terminal()
    progress = Progress(True, stream=stream, interval=0.5, clock=lambda: next(ticks))
    for n in range(1, 8):
        progress.update(f"read {n} records")
    progress.done("read 7 records from 2 days")
    shown = stream.getvalue()
    assert shown.count("\r") == 4  # 0.1, 0.7, 1.3 and the final line
    assert shown.endswith("\rread 7 records from 2 days\x1b[K\n")


def test_automatic_progress_stays_quiet_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(None, stream=stream)
    progress.update("read 1 records")
    progress.done("read 1 records from 1 day")
    assert stream.getvalue() == ""


# --- HTML ------------------------------------------------------------------------------------


def html_report(run: Run, tmp_path: Path, *argv: str) -> str:
    path = tmp_path / "report.html"
    result = run("report", *RANGE, "--by", "principal,model", "--html", str(path), *argv)
    assert result.code == 0, result.err
    assert f"wrote {path}" in result.err
    assert result.out.startswith("2026-01-14 to 2026-01-16")  # the table still goes to stdout
    return path.read_text(encoding="utf-8")


def test_the_html_report_is_self_contained(run: Run, ledger: Ledger, tmp_path: Path) -> None:
    page = html_report(run, tmp_path)
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "<script" not in lowered and "<link" not in lowered and " src=" not in lowered
    assert "@import" not in lowered and "url(" not in lowered
    assert "default-src 'none'" in page  # a CSP that forbids scripts and remote loads


def test_the_html_report_has_the_chart_the_models_and_the_table(
    run: Run, ledger: Ledger, tmp_path: Path
) -> None:
    from bedrock_spend_cli.report_html import PALETTE

    page = html_report(run, tmp_path)
    svg = page[page.index("<svg") : page.index("</svg>")]
    bars = re.findall(r'<rect class="bar"[^>]*fill="(#[0-9A-F]{6})"><title>([^<]*)</title>', svg)
    # bob spent more, so he gets the first colour; one bar per principal and day with a priced call.
    assert {(colour, title.split(",")[0]) for colour, title in bars} == {
        (PALETTE[0], "User::bob"),
        (PALETTE[1], "User::alice"),
    }
    assert "User::bob, 2026-01-16: $2.000000 (2 calls)" in [t for _, t in bars]
    assert len(bars) == 4  # alice on the 14th and 15th, bob on the 14th and 16th
    assert "<title" in svg and "Cost (USD)" in svg and "Day (UTC)" in svg
    assert 'aria-labelledby="chart-title chart-desc"' in svg
    assert "unpriced call(s), cost unknown" in svg  # the 15th and the 16th are marked
    models = page[page.index('aria-label="cost by model"') :]
    assert models.index(HAIKU) < models.index(NOVA)  # by cost
    assert '<tfoot><tr><td class="k">TOTAL</td><td class="k">-</td>' in page
    assert "<th>Price book</th>" in page  # two versions: each row names its own
    assert "$2.100500" in page


def test_user_derived_strings_are_escaped(run: Run, dynamodb: Any, tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    writer = Ledger(USAGE_TABLE, client=dynamodb)
    writer.record(record(1, evil, f'{HAIKU}"><img onerror=x>', at(15), Decimal(5), team="<b>t</b>"))
    path = tmp_path / "evil.html"
    result = run("report", *RANGE, "--by", "principal,team,model", "--html", str(path))
    assert result.code == 0, result.err
    page = path.read_text(encoding="utf-8")
    assert evil not in page and "<img" not in page and "<b>t</b>" not in page
    assert "User::&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img onerror=x&gt;" in page


def test_an_unwritable_html_path_is_an_error(run: Run, ledger: Ledger, tmp_path: Path) -> None:
    result = run("report", *RANGE, "--html", str(tmp_path / "missing" / "r.html"))
    assert result.code == 1
    assert "error: cannot write" in result.err


# --- reconcile -------------------------------------------------------------------------------


def put_tokens(cloudwatch: Any, model: str, day: int, input_tokens: int, output_tokens: int) -> None:
    cloudwatch.put_metric_data(
        Namespace="AWS/Bedrock",
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "ModelId", "Value": model}],
                "Timestamp": at(day, 12),
                "Value": value,
                "Unit": "Count",
            }
            for name, value in (("InputTokenCount", input_tokens), ("OutputTokenCount", output_tokens))
        ],
    )


def ledger_tokens(model: str) -> tuple[int, int]:
    mine = [r for r in RECORDS if r.model_id == model]
    return sum(r.usage.input_tokens or 0 for r in mine), sum(r.usage.output_tokens or 0 for r in mine)


@pytest.fixture
def bedrock_metrics(cloudwatch: Any) -> Iterator[Callable[[str, float, float], None]]:
    """Put AWS/Bedrock token metrics per model, spread over the range's days, scaled."""

    def put(model: str, input_scale: float = 1.0, output_scale: float = 1.0) -> None:
        tokens_in, tokens_out = ledger_tokens(model)
        first_in, first_out = tokens_in // 2, tokens_out // 2
        put_tokens(cloudwatch, model, 14, first_in, first_out)
        put_tokens(
            cloudwatch,
            model,
            16,
            round(tokens_in * input_scale) - first_in,
            round(tokens_out * output_scale) - first_out,
        )

    yield put


def reconcile_rows(result: Result) -> dict[tuple[str, str], str]:
    """Table lines by (model, tokens)."""
    found = {}
    for line in result.out.splitlines():
        cells = line.split()
        if len(cells) > 2 and cells[1] in ("input", "output"):
            found[(cells[0], cells[1])] = line
    return found


def test_reconcile_agrees_when_cloudwatch_matches(
    run: Run, ledger: Ledger, bedrock_metrics: Callable[..., None], operations: list[Any]
) -> None:
    bedrock_metrics(HAIKU)
    bedrock_metrics(NOVA)
    result = run("report", "reconcile", *RANGE)
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert lines[0] == "2026-01-14 to 2026-01-16 (UTC, both days included), Region us-east-1"
    assert lines[1].startswith("ledger vs AWS/Bedrock InputTokenCount / OutputTokenCount by ModelId")
    rows = reconcile_rows(result)
    assert len(rows) == 4 and all(line.endswith(" ok") for line in rows.values())
    assert lines[-1] == "ledger and CloudWatch agree within 5%"
    assert "Scan" not in {name for name, _ in operations}
    assert {"Query", "ListMetrics", "GetMetricData"} <= {name for name, _ in operations}


def test_reconcile_flags_drift_and_explains_it_with_exit_3(
    run: Run, ledger: Ledger, bedrock_metrics: Callable[..., None], cloudwatch: Any
) -> None:
    bedrock_metrics(HAIKU, input_scale=1.2)  # CloudWatch 20% higher: calls that bypassed the proxy
    bedrock_metrics(NOVA, output_scale=1.01)
    put_tokens(cloudwatch, "meta.llama3-8b-instruct-v1:0", 15, 1000, 100)  # never through the proxy
    result = run("report", "reconcile", *RANGE)
    assert result.code == 3
    rows = reconcile_rows(result)
    assert rows[(HAIKU, "input")].endswith("drift")
    # (ledger - cw) / cw, with CloudWatch's counts rounded to whole tokens
    assert rows[(HAIKU, "input")].split()[2:6] == ["1,628", "1,954", "-326", "-16.68%"]
    assert rows[(HAIKU, "output")].endswith("ok")
    assert rows[(NOVA, "output")].endswith("ok")  # 1% is within 5%
    assert rows[("meta.llama3-8b-instruct-v1:0", "input")].endswith("not in ledger")
    assert "Calls that bypass the proxy" in result.out and "Clock windows" in result.out


def test_reconcile_threshold_and_json(run: Run, ledger: Ledger, bedrock_metrics: Callable[..., None]) -> None:
    bedrock_metrics(HAIKU, input_scale=1.03)
    bedrock_metrics(NOVA)
    loose = run("report", "reconcile", *RANGE, "--format", "json")
    assert loose.code == 0
    strict = run("report", "reconcile", *RANGE, "--threshold", "2%", "--format", "json")
    assert strict.code == 3
    document = strict.json()
    assert document["drift_found"] is True and document["threshold"] == "0.02"
    assert document["region"] == "us-east-1" and document["ledger_input"] == "non-cached input"
    [flagged] = [row for row in document["rows"] if row["status"] != "ok"]
    tokens_in, _ = ledger_tokens(HAIKU)
    assert (flagged["model"], flagged["tokens"], flagged["ledger"]) == (HAIKU, "input", tokens_in)
    assert flagged["cloudwatch"] == round(tokens_in * 1.03)
    assert Decimal(flagged["drift"]) == (
        Decimal(tokens_in - flagged["cloudwatch"]) / flagged["cloudwatch"]
    ).quantize(Decimal("0.000001"))
    assert document["causes"]


def test_reconcile_without_cloudwatch_data_flags_the_ledger_side(run: Run, ledger: Ledger) -> None:
    result = run("report", "reconcile", *RANGE, "--format", "csv")
    assert result.code == 3
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert {r["status"] for r in rows} == {"no CloudWatch data"}
    assert {r["model"] for r in rows} == {HAIKU, NOVA}


def test_reconcile_can_count_cache_tokens_as_input(
    run: Run, ledger: Ledger, cloudwatch: Any, bedrock_metrics: Callable[..., None]
) -> None:
    bedrock_metrics(HAIKU)
    tokens_in, tokens_out = ledger_tokens(NOVA)
    cache = sum(r.usage.cache_read_tokens + r.usage.cache_write_tokens for r in RECORDS if r.model_id == NOVA)
    put_tokens(cloudwatch, NOVA, 15, tokens_in + cache, tokens_out)
    assert run("report", "reconcile", *RANGE, "--threshold", "0").code == 3
    assert run("report", "reconcile", *RANGE, "--threshold", "0", "--include-cache").code == 3  # HAIKU too
    document = run("report", "reconcile", *RANGE, "--include-cache", "--format", "json").json()
    nova_in = next(r for r in document["rows"] if r["model"] == NOVA and r["tokens"] == "input")
    assert (nova_in["ledger"], nova_in["cloudwatch"], nova_in["status"]) == (tokens_in + cache,) * 2 + ("ok",)


def test_reconcile_notes_other_regions_and_a_window_still_filling(
    run: Run, ledger: Ledger, dynamodb: Any, bedrock_metrics: Callable[..., None]
) -> None:
    Ledger(USAGE_TABLE, client=dynamodb).record(
        record(50, "alice", HAIKU, at(15), Decimal(1), region="eu-west-1")
    )
    bedrock_metrics(HAIKU)
    bedrock_metrics(NOVA)
    result = run("report", "reconcile", "--from", "2026-01-14")  # runs to today, NOW is noon
    assert result.code == 0, result.out
    assert (
        "note: 1 ledger call(s) in eu-west-1 not compared: run again with --bedrock-region eu-west-1"
        in result.out
    )
    assert "note: the window ends less than an hour ago" in result.out
    other = run("report", "reconcile", *RANGE, "--bedrock-region", "eu-west-1", "--format", "json")
    assert other.code == 3  # no eu-west-1 metrics for that call
    document = other.json()
    assert document["region"] == "eu-west-1"
    assert [(r["model"], r["tokens"], r["status"]) for r in document["rows"]] == [
        (HAIKU, "input", "no CloudWatch data"),
        (HAIKU, "output", "no CloudWatch data"),
    ]
    assert any("us-east-1 not compared" in note for note in document["notes"])


@pytest.mark.parametrize("value", ["-1", "5", "abc", "150%"])
def test_a_bad_threshold_exits_2(run: Run, value: str) -> None:
    result = run("report", "reconcile", *RANGE, "--threshold", value)
    assert result.code == 2 and "invalid threshold" in result.err


def test_reconcile_keeps_a_range_given_before_it(run: Run, ledger: Ledger) -> None:
    result = run("report", "--from", "2025-06-01", "--to", "2025-06-02", "reconcile")
    assert result.code == 0
    assert result.out.startswith("2025-06-01 to 2025-06-02")
