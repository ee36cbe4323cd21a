"""The CLI's argument parsing, value parsers, renderers and log-line reader: no AWS involved."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bedrock_spend.domain.prices import Cost
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import Caller, UsageRecord
from bedrock_spend_cli import output, values
from bedrock_spend_cli.ledger_cmd import find_records
from bedrock_spend_cli.main import build_parser, main

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

COMMANDS = [
    [],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "show"],
    ["keys", "update"],
    ["keys", "revoke"],
    ["keys", "rotate"],
    ["ledger"],
    ["ledger", "replay"],
    ["usage"],
]


# --- values ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("0", timedelta(0)),
        ("0h", timedelta(0)),
    ],
)
def test_duration(text: str, expected: timedelta) -> None:
    assert values.duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "-1d", "1w", "1.5h", "2 days", "d"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        values.duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", NOW + timedelta(days=30)),
        ("90m", NOW + timedelta(minutes=90)),
        ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC)),
        ("2026-12-31T18:30", datetime(2026, 12, 31, 18, 30, tzinfo=UTC)),
        ("2026-12-31T18:30:00Z", datetime(2026, 12, 31, 18, 30, tzinfo=UTC)),
        ("2026-12-31T18:30:00+02:00", datetime(2026, 12, 31, 16, 30, tzinfo=UTC)),
    ],
)
def test_instant_is_utc(text: str, expected: datetime) -> None:
    when = values.instant(text, NOW)
    assert when == expected
    assert when.utcoffset() == timedelta(0)


def test_expiry_must_be_in_the_future() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not in the future"):
        values.expiry("2026-03-10T11:59:59Z", NOW)
    assert values.expiry("1m", NOW) == NOW + timedelta(minutes=1)


def test_bad_instant() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid time"):
        values.instant("next tuesday", NOW)


def test_never_and_none() -> None:
    assert values.expiry_or_never("never") is None
    assert values.budget_or_none("none") is None
    assert values.budget_or_none("3.5") == Decimal("3.5")


@pytest.mark.parametrize("text", ["1", "25", "12.50", "0.000001", "999999999999"])
def test_budget(text: str) -> None:
    assert values.budget(text) == Decimal(text)


@pytest.mark.parametrize("text", ["0", "0.00", "-1", "1e3", "NaN", "inf", "1.0000001", "", "12,50"])
def test_bad_budget(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="budget"):
        values.budget(text)


@pytest.mark.parametrize("name", ["alice", "bob@example.com", "a.b_c-d+e", "x" * 128, "A1"])
def test_username(name: str) -> None:
    assert values.username(name) == name


@pytest.mark.parametrize("name", ["", "x" * 129, "al ice", "alice:admin", "ali/ce", "älice", "a#b", "a\nb"])
def test_bad_username(name: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid username"):
        values.username(name)


def test_key_id_refuses_a_secret_without_echoing_it() -> None:
    secret = "bsk_" + "s3cr3t" * 7
    with pytest.raises(argparse.ArgumentTypeError) as info:
        values.key_id(secret)
    assert secret not in str(info.value)
    assert values.key_id("kid_0a1b2c3d4e5f") == "kid_0a1b2c3d4e5f"


@pytest.mark.parametrize("text", ["2026-01", "1999-12"])
def test_month(text: str) -> None:
    assert values.month(text) == text


@pytest.mark.parametrize("text", ["2026-1", "2026-13", "2026-00", "26-01", "2026/01"])
def test_bad_month(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid month"):
        values.month(text)


# --- parser ---


def test_global_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--format", "json", "--region", "eu-west-1", "keys", "list"])
    after = parser.parse_args(["keys", "list", "--format", "json", "--region", "eu-west-1"])
    for args in (before, after):
        assert (args.format, args.region, args.stack) == ("json", "eu-west-1", "bedrock-spend")


def test_defaults() -> None:
    args = build_parser().parse_args(["keys", "list"])
    assert (args.format, args.status, args.keys_table, args.endpoint_url) == ("table", "all", None, None)


def test_update_options_are_absent_unless_given() -> None:
    args = build_parser().parse_args(["keys", "update", "kid_0a1b2c3d4e5f", "--budget", "none"])
    given = vars(args)
    assert given["budget"] is None
    assert "model" not in given and "expires" not in given and "clear_models" not in given


def test_models_repeat() -> None:
    args = build_parser().parse_args(
        ["keys", "create", "--username", "a", "--model", "a.*", "--model", "*.a.*"]
    )
    assert args.model == ["a.*", "*.a.*"]


@pytest.mark.parametrize("argv", COMMANDS)
def test_help_of_every_command_exits_0_with_examples(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["keys"], ["ledger"], ["nope"], ["keys", "nope"]])
def test_missing_or_unknown_command_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "usage: bedrock-spend" in capsys.readouterr().err


def test_import_and_help_do_not_load_boto3() -> None:
    code = (
        "import sys\n"
        "from bedrock_spend_cli.main import main\n"
        "assert main(['keys', 'create', '--help']) == 0\n"
        "assert main(['keys', 'create', '--username', 'bad name']) == 2\n"
        "loaded = [m for m in ('boto3', 'botocore', 'aws_lambda_powertools') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --- output ---


def test_table_is_aligned_with_an_underlined_header() -> None:
    columns = [output.Column("NAME", "name"), output.Column("COST", "cost", align_right=True)]
    rows = [{"name": "alice", "cost": Decimal("1.5")}, {"name": "bo", "cost": None}]
    assert output.render_table(rows, columns).splitlines() == [
        "NAME   COST",
        "-----  ----",
        "alice   1.5",
        "bo        -",
    ]


def test_json_keeps_decimals_exact_and_datetimes_iso() -> None:
    data = {"cost": Decimal("0.1000000000000000055511151231257827"), "at": NOW, "models": ("a", "b")}
    assert json.loads(output.dumps(data)) == {
        "cost": "0.1000000000000000055511151231257827",
        "at": "2026-03-10T12:00:00Z",
        "models": ["a", "b"],
    }


def test_csv_quotes_and_leaves_missing_values_empty() -> None:
    columns = [output.Column("MODELS", "models"), output.Column("TEAM", "team")]
    assert output.render_csv([{"models": ["a.*", "b.*"], "team": None}], columns) == 'MODELS,TEAM\n"a.*,b.*",'


# --- reading USAGE_RECORD_UNSAVED lines ---


def _record(request_id: str = "req-1") -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        requested_at=NOW,
        caller=Caller(principal_id="User::alice", key_id="kid_0a1b2c3d4e5f", username="alice"),
        operation="Converse",
        model_id="amazon.nova-lite-v1:0",
        base_model="amazon.nova-lite-v1:0",
        region="us-east-1",
        usage=Usage(input_tokens=3, output_tokens=4, source="converse"),
        cost=Cost(priced=True, price_book_version="t", input=Decimal("0.18"), output=Decimal("0.96")),
    )


def _line(record: UsageRecord) -> str:
    return json.dumps(
        {
            "level": "ERROR",
            "location": "save:170",
            "message": "USAGE_RECORD_UNSAVED",
            "timestamp": "2026-03-10 12:00:00,000+0000",
            "service": "bedrock-spend-proxy",
            "usage_record": record.to_dict(),
            "exception": 'Traceback (most recent call last):\n  File "x", line 1\nError: {boom}',
        },
        separators=(",", ":"),
    )


def test_reads_a_raw_line_back_into_the_same_record() -> None:
    [found] = find_records(_line(_record()), "f")
    assert found.record == _record()
    assert found.where == "f:1"


@pytest.mark.parametrize(
    "prefix",
    [
        "2026-03-10T12:00:00.000Z\t6f7c1c2a-2f3e\tERROR\t",
        "EVENTS\t37999\t1773144000000\t2026/03/10/[$LATEST]abc\t",
        "2026-03-10T12:00:00.000000+00:00 2026/03/10/[$LATEST]abc ",
        "{not json} ",
    ],
)
def test_reads_prefixed_lines(prefix: str) -> None:
    [found] = find_records(f"{prefix}{_line(_record())}\t1773144000000", "f")
    assert found.record == _record()


def test_reads_filter_log_events_documents_even_concatenated() -> None:
    page = {"events": [{"message": _line(_record("a")) + "\n"}, {"message": "START RequestId: x"}]}
    text = json.dumps(page, indent=2) + "\n" + json.dumps({"events": [{"message": _line(_record("b"))}]})
    assert [f.record.request_id for f in find_records(text, "f") if f.record] == ["a", "b"]


def test_reads_a_line_wrapped_in_another_json_log_event() -> None:
    wrapper = json.dumps({"time": "2026-03-10T12:00:00Z", "type": "function", "message": _line(_record())})
    [found] = find_records(wrapper, "f")
    assert found.record == _record()


def test_ignores_other_lines() -> None:
    text = "\n".join(
        [
            "START RequestId: x",
            json.dumps({"level": "INFO", "message": "usage record", "usage_record": _record().to_dict()}),
            json.dumps({"level": "INFO", "message": "counted USAGE_RECORD_UNSAVED lines: 0"}),
            "",
        ]
    )
    assert list(find_records(text, "f")) == []


def test_truncated_or_incomplete_lines_are_problems_not_records() -> None:
    line = _line(_record())
    data = json.loads(line)
    data["usage_record"]["requestedAt"] = "yesterday"
    found = list(find_records("\n".join([line[:300], json.dumps(data)]), "f"))
    assert [f.record for f in found] == [None, None]
    assert [f.where for f in found] == ["f:1", "f:2"]
    assert all(f.problem for f in found)


def test_the_cli_takes_its_region_as_the_aws_cli_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from bedrock_spend_cli.config import Aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert Aws().client("dynamodb").meta.region_name == "eu-central-1"  # AWS_REGION first
    assert Aws(region="ap-south-1").client("dynamodb").meta.region_name == "ap-south-1"  # --region wins
    monkeypatch.delenv("AWS_REGION")
    assert Aws().client("dynamodb").meta.region_name == "eu-west-1"
