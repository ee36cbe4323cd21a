"""``bedrock-spend report reconcile``: the ledger's tokens per model against Bedrock's own
CloudWatch metrics for the same window, flagging drift beyond a threshold.

What is compared, per model id as called (the ``ModelId`` dimension of ``AWS/Bedrock``):

* ``InputTokenCount`` with the ledger's ``InputTokens``: the non-cached input. Bedrock reports
  cache reads and writes apart from input tokens (Converse ``TokenUsage`` has ``inputTokens``
  next to ``cacheReadInputTokens`` / ``cacheWriteInputTokens``; InvokeModel has separate
  ``x-amzn-bedrock-cache-*-input-token-count`` headers), and the proxy records them apart
  (``Usage.input_tokens`` is the non-cached rest). ``--include-cache`` adds the ledger's cache
  tokens for an account where the metric turns out to include them.
* ``OutputTokenCount`` with the ledger's ``OutputTokens``.

Metric names and the dimension are from the Amazon Bedrock User Guide, "Monitor
bedrock-runtime inference using CloudWatch metrics" (runtime metrics, namespace AWS/Bedrock,
dimension ModelId).
"""

from __future__ import annotations

import argparse
import csv
import io
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from bedrock_spend.domain.keys import utcnow
from bedrock_spend_cli.config import Aws, Tables
from bedrock_spend_cli.output import Column, dumps, render_table
from bedrock_spend_cli.report_cmd import (
    RANGE_HELP,
    Call,
    Progress,
    add_range_options,
    plain,
    read_calls,
    resolve_range,
)

AddCommand = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", str, str, str], argparse.ArgumentParser
]

NAMESPACE = "AWS/Bedrock"
METRICS = {"input": "InputTokenCount", "output": "OutputTokenCount"}
EXIT_DRIFT = 3
DAY_SECONDS = 86_400
# GetMetricData takes at most 500 queries per call.
MAX_QUERIES = 500
DEFAULT_THRESHOLD = Decimal("0.05")
# Bedrock publishes its metrics within minutes; a window ending later than this is still filling.
SETTLE = timedelta(hours=1)
WRAP = 100

CAUSES = [
    "Calls that bypass the proxy: anything else in this account and Region that calls Bedrock "
    "(other applications, the console playgrounds, Agents, Knowledge Bases, batch inference, "
    "evaluations) is in AWS/Bedrock but not in the ledger, so CloudWatch is higher; a model "
    '"not in ledger" is the typical sign.',
    "Clock windows: the ledger dates a call by the time the proxy received it, CloudWatch by the "
    "time Bedrock recorded it, and publishes it minutes later. Calls near midnight UTC can fall on "
    "either side, and a window that ends now misses the newest data: compare whole days that "
    "ended at least an hour ago.",
    "Usage records not written yet: when the ledger write fails the proxy logs the record "
    "(USAGE_RECORD_UNSAVED) until `bedrock-spend ledger replay` writes it; the ledger is lower "
    "until then (alarm UsageRecordsUnsaved).",
    "Usage Bedrock did not report to the proxy (usage source none) is recorded as 0 tokens: the "
    "ledger is lower by those calls.",
    "Prompt caching: the ledger's input is the non-cached input; cache reads and writes are its "
    "own columns (LEDGER CACHE). If the input drift matches them, run again with --include-cache.",
    "Regions and model ids: CloudWatch metrics are per Region (--bedrock-region) and per model id "
    "as called; ledger records of other Regions are not compared.",
    "Retention: per-request ledger records expire after UsageRecordTtlDays (default 400 days), "
    "so an older window reads low in the ledger.",
]


def threshold(value: str) -> Decimal:
    """An argparse type: a fraction (0.05) or a percentage (5%)."""
    text = value.strip()
    try:
        amount = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0 or amount > 1:
        raise argparse.ArgumentTypeError(
            f"invalid threshold {value!r}: give a fraction from 0 to 1 (0.05) or a percentage (5%)"
        )
    return amount


# --- the two sides ---------------------------------------------------------------------------


@dataclass
class LedgerTokens:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = 0
    no_usage_calls: int = 0

    def add(self, call: Call) -> None:
        self.calls += 1
        self.input_tokens += call.counts["input_tokens"]
        self.output_tokens += call.counts["output_tokens"]
        self.cache_tokens += call.counts["cache_read_tokens"] + call.counts["cache_write_tokens"]
        if call.usage_source == "none":
            self.no_usage_calls += 1


def ledger_by_model(calls: Iterable[Call], region: str) -> tuple[dict[str, LedgerTokens], Counter[str]]:
    """Tokens per model of the calls made in ``region``; and call counts of other Regions."""
    models: dict[str, LedgerTokens] = {}
    elsewhere: Counter[str] = Counter()
    for call in calls:
        if call.region and call.region != region:
            elsewhere[call.region] += 1
            continue
        models.setdefault(call.model, LedgerTokens()).add(call)
    return models, elsewhere


def cloudwatch_models(client: Any) -> set[str]:
    """Model ids that have AWS/Bedrock token metrics (ListMetrics: active in the last two weeks)."""
    found: set[str] = set()
    paginator = client.get_paginator("list_metrics")
    for name in METRICS.values():
        for page in paginator.paginate(Namespace=NAMESPACE, MetricName=name):
            for metric in page.get("Metrics", []):
                dimensions = metric.get("Dimensions") or []
                if len(dimensions) == 1 and dimensions[0].get("Name") == "ModelId":
                    found.add(dimensions[0]["Value"])
    return found


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cloudwatch_sums(
    client: Any, models: Iterable[str], start: datetime, end: datetime
) -> dict[tuple[str, str], int | None]:
    """Sum of each token metric per model over [start, end); None where there is no datapoint."""
    wanted = [(model, kind) for model in sorted(models) for kind in METRICS]
    sums: dict[tuple[str, str], int | None] = dict.fromkeys(wanted)
    paginator = client.get_paginator("get_metric_data")
    for chunk in _chunks(wanted, MAX_QUERIES):
        ids = {f"q{i}": key for i, key in enumerate(chunk)}
        queries = [
            {
                "Id": query_id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": METRICS[kind],
                        "Dimensions": [{"Name": "ModelId", "Value": model}],
                    },
                    "Period": DAY_SECONDS,
                    "Stat": "Sum",
                },
                "ReturnData": True,
            }
            for query_id, (model, kind) in ids.items()
        ]
        for page in paginator.paginate(MetricDataQueries=queries, StartTime=start, EndTime=end):
            for result in page.get("MetricDataResults", []):
                key = ids.get(result.get("Id", ""))
                points = result.get("Values") or []
                if key is None or not points:
                    continue
                sums[key] = (sums[key] or 0) + round(sum(points))
    return sums


# --- comparing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    model: str
    tokens: str  # input / output
    ledger: int
    cloudwatch: int | None
    ledger_cache: int | None  # the ledger's cache tokens, on input lines
    drift: Decimal | None  # (ledger - cloudwatch) / cloudwatch
    status: str  # ok, drift, no CloudWatch data, not in ledger

    @property
    def flagged(self) -> bool:
        return self.status != "ok"

    @property
    def difference(self) -> int:
        return self.ledger - (self.cloudwatch or 0)


def compare(
    ledger: dict[str, LedgerTokens],
    cloudwatch: dict[tuple[str, str], int | None],
    limit: Decimal,
    include_cache: bool = False,
) -> list[Line]:
    lines = []
    for model in sorted(set(ledger) | {model for model, _ in cloudwatch}):
        mine = ledger.get(model, LedgerTokens())
        for kind in METRICS:
            counted = mine.input_tokens if kind == "input" else mine.output_tokens
            if kind == "input" and include_cache:
                counted += mine.cache_tokens
            theirs = cloudwatch.get((model, kind))
            if not counted and not theirs:
                continue
            drift = None
            if not theirs:
                status = "no CloudWatch data"
            elif not counted and not mine.calls:
                status = "not in ledger"
                drift = Decimal(-1)
            else:
                drift = (Decimal(counted - theirs) / Decimal(theirs)).quantize(Decimal("0.000001"))
                status = "drift" if abs(drift) > limit else "ok"
            cache = mine.cache_tokens if kind == "input" else None
            lines.append(Line(model, kind, counted, theirs, cache, drift, status))
    return lines


# --- output ----------------------------------------------------------------------------------


def _percent(value: Any) -> str:
    if not isinstance(value, Decimal):
        return "-"
    return f"{value * 100:+.2f}%"


def _limit(value: Decimal) -> str:
    """A threshold as a short percentage: 5%, 2.5%."""
    return f"{plain((value * 100).normalize())}%"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


COLUMNS = [
    Column("MODEL", "model"),
    Column("TOKENS", "tokens"),
    Column("LEDGER", "ledger", show=_number, align_right=True),
    Column("CLOUDWATCH", "cloudwatch", show=_number, align_right=True),
    Column("DIFFERENCE", "difference", show=lambda v: f"{v:+,}", align_right=True),
    Column("DRIFT", "drift", show=_percent, align_right=True),
    Column("LEDGER CACHE", "ledger_cache", show=_number, align_right=True),
    Column("STATUS", "status"),
]


def row(line: Line) -> dict[str, Any]:
    return {
        "model": line.model,
        "tokens": line.tokens,
        "ledger": line.ledger,
        "cloudwatch": line.cloudwatch,
        "difference": line.difference,
        "drift": line.drift,
        "ledger_cache": line.ledger_cache,
        "status": line.status,
    }


def notes(
    ledger: dict[str, LedgerTokens], elsewhere: Counter[str], end: datetime, now: datetime
) -> list[str]:
    found = []
    if end > now - SETTLE:
        found.append(
            "the window ends less than an hour ago (or later): CloudWatch may not have the newest "
            "calls yet; compare again later or end the window yesterday"
        )
    for region, n in sorted(elsewhere.items()):
        found.append(
            f"{n:,} ledger call(s) in {region} not compared: run again with --bedrock-region {region}"
        )
    no_usage = sum(t.no_usage_calls for t in ledger.values())
    if no_usage:
        found.append(f"{no_usage:,} ledger call(s) had no usage reported by Bedrock (0 tokens recorded)")
    return found


def _csv(lines: list[Line]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.key for c in COLUMNS])
    for line in lines:
        values = row(line)
        writer.writerow(
            [
                plain(v) if isinstance(v, Decimal) else ("" if v is None else v)
                for v in (values[c.key] for c in COLUMNS)
            ]
        )
    return buffer.getvalue().rstrip("\n")


# --- command ---------------------------------------------------------------------------------


def reconcile(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    now = utcnow()
    first, last = resolve_range(getattr(args, "start", None), getattr(args, "end", None), now.date())
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    # The ledger stays where the stack is; the metrics are read where Bedrock was called.
    metrics = Aws(region=args.bedrock_region, profile=aws.profile, endpoint_url=aws.endpoint_url)
    cloudwatch = (metrics if args.bedrock_region else aws).client("cloudwatch")
    region = str(cloudwatch.meta.region_name)
    progress = Progress(getattr(args, "progress", None))
    calls = read_calls(aws.client("dynamodb"), tables.usage(), first, last, progress=progress)
    ledger, elsewhere = ledger_by_model(calls, region)
    sums = cloudwatch_sums(cloudwatch, set(ledger) | cloudwatch_models(cloudwatch), start, end)
    lines = compare(ledger, sums, args.threshold, args.include_cache)
    flagged = [line for line in lines if line.flagged]
    found = notes(ledger, elsewhere, end, now)
    input_means = "non-cached input + cache read + cache write" if args.include_cache else "non-cached input"

    if args.format == "json":
        print(
            dumps(
                {
                    "from": first.isoformat(),
                    "to": last.isoformat(),
                    "window_start": start,
                    "window_end": end,
                    "region": region,
                    "threshold": plain(args.threshold),
                    "ledger_input": input_means,
                    "rows": [
                        {k: plain(v) if isinstance(v, Decimal) else v for k, v in row(line).items()}
                        for line in lines
                    ],
                    "drift_found": bool(flagged),
                    "notes": found,
                    "causes": CAUSES if flagged else [],
                }
            )
        )
    elif args.format == "csv":
        print(_csv(lines))
    else:
        print(f"{first} to {last} (UTC, both days included), Region {region}")
        print(
            f"ledger vs {NAMESPACE} {METRICS['input']} / {METRICS['output']} by ModelId; "
            f"threshold {_limit(args.threshold)}; ledger input = {input_means}"
        )
        if lines:
            print(render_table([row(line) for line in lines], COLUMNS))
        else:
            print("no tokens in the ledger or in CloudWatch for this window")
        for note in found:
            print(textwrap.fill(note, WRAP, initial_indent="note: ", subsequent_indent="      "))
        if flagged:
            print(
                f"{len(flagged)} of {len(lines)} comparison(s) differ by more than "
                f"{_limit(args.threshold)}. Usual causes:"
            )
            for cause in CAUSES:
                print(textwrap.fill(cause, WRAP, initial_indent="  - ", subsequent_indent="    "))
        else:
            print(f"ledger and CloudWatch agree within {_limit(args.threshold)}")
    return EXIT_DRIFT if flagged else 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_command: AddCommand,
) -> None:
    p = add_command(
        sub,
        "reconcile",
        "compare the ledger's tokens per model with Bedrock's CloudWatch metrics",
        f"""\
examples:
  bedrock-spend report reconcile --from last-month
  bedrock-spend report reconcile --from 2026-01-01 --to 2026-01-31 --threshold 2%
  bedrock-spend report reconcile --from last-month --bedrock-region eu-west-1
  bedrock-spend report reconcile --from 7d --to yesterday --format json

{RANGE_HELP}
For each model id (as called) the ledger's input and output tokens of the calls made in
one Region (--bedrock-region, default the stack's --region) are compared with the sums of
{NAMESPACE} {METRICS["input"]} and {METRICS["output"]} (dimension ModelId, daily periods)
over the same UTC days. The ledger's input is the non-cached input (cache reads and writes
are their own ledger columns, shown as LEDGER CACHE); --include-cache adds them.
DRIFT = (ledger - CloudWatch) / CloudWatch.

exit status: 0 every model within the threshold; 3 drift found (a model beyond the threshold,
or tokens on one side only); 1 AWS error; 2 usage error.
""",
    )
    add_range_options(p, suppress=True, principals=False)
    p.add_argument(
        "--threshold",
        type=threshold,
        default=DEFAULT_THRESHOLD,
        metavar="FRACTION",
        help="largest drift that is fine: 0.05 or 5%% (default: 0.05)",
    )
    p.add_argument(
        "--bedrock-region",
        metavar="REGION",
        help="Region whose AWS/Bedrock metrics and ledger calls to compare (default: --region)",
    )
    p.add_argument(
        "--include-cache",
        action="store_true",
        help="count the ledger's cache read and write tokens as input",
    )
    p.set_defaults(handler=reconcile)
