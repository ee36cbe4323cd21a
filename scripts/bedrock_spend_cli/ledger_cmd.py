"""``bedrock-spend ledger replay`` and ``bedrock-spend usage``: write back and read the ledger.

Replay reads the proxy's fallback log lines (message ``USAGE_RECORD_UNSAVED``, written by
``metering.save`` when the ledger could not be written) and records them. Ledger.record is
idempotent on the request id, so replaying the same logs twice never counts a call twice.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from bedrock_spend.domain.keys import principal_for, utcnow
from bedrock_spend.domain.parts import PARTS
from bedrock_spend_cli import values
from bedrock_spend_cli.config import Aws, CliError, Tables
from bedrock_spend_cli.output import Column, count, emit_record, emit_rows

if TYPE_CHECKING:
    from bedrock_spend.domain.usage_record import UsageRecord

AddGroup = Callable[[str, str, str], "argparse._SubParsersAction[argparse.ArgumentParser]"]
AddCommand = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", str, str, str], argparse.ArgumentParser
]

MARKER = "USAGE_RECORD_UNSAVED"
MICRO = Decimal(1_000_000)
SIX_PLACES = Decimal("0.000001")
# A line with more braces than this before its JSON object is not a log line we wrote.
_MAX_OBJECT_STARTS = 32
_MAX_NESTING = 3
_OUR_LINE_RE = re.compile(r'\\?"message\\?"\s*:\s*\\?"' + MARKER + r'\\?"')


# --- reading log lines ---


@dataclass(frozen=True, slots=True)
class Found:
    """One USAGE_RECORD_UNSAVED line: its record, or why it could not be read."""

    where: str
    record: UsageRecord | None = None
    problem: str | None = None


def read_input(name: str) -> str:
    """A file's text (``-``: stdin); gzip (as CloudWatch Logs exports to S3) is unpacked."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        else:
            with open(name, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise CliError(f"cannot read {name}: not a valid gzip file ({exc})") from exc
    return data.decode("utf-8", errors="replace")


def find_records(text: str, source: str) -> Iterator[Found]:
    """Every USAGE_RECORD_UNSAVED record in a log text, in order.

    Accepts raw Powertools JSON lines, lines with a prefix (timestamp, request id, tabs:
    CloudWatch Logs exports, ``aws logs filter-log-events --output text``, ``aws logs tail``),
    and ``aws logs filter-log-events`` JSON documents (``{"events": [{"message": ...}]}``).
    """
    documents = _json_documents(text)
    if documents and all(isinstance(doc, dict) and isinstance(doc.get("events"), list) for doc in documents):
        for d, doc in enumerate(documents):
            for e, event in enumerate(doc["events"]):
                message = event.get("message") if isinstance(event, dict) else None
                if isinstance(message, str):
                    where = (
                        f"{source}: events[{e}]" if len(documents) == 1 else f"{source}: doc {d} events[{e}]"
                    )
                    yield from _from_line(message, where)
        return
    for number, line in enumerate(text.splitlines(), 1):
        yield from _from_line(line, f"{source}:{number}")


def _json_documents(text: str) -> list[Any] | None:
    """The JSON values the whole text consists of, or None if it is not only JSON."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(stripped):
        try:
            doc, index = decoder.raw_decode(stripped, index)
        except ValueError:
            return None
        documents.append(doc)
        while index < len(stripped) and stripped[index].isspace():
            index += 1
    return documents


def _from_line(line: str, where: str, depth: int = 0) -> Iterator[Found]:
    marker_at = line.find(MARKER)
    if marker_at < 0:
        return
    obj = _first_object(line, before=marker_at)
    if obj is None:
        # Only a line that is our log line, cut short, is a lost record; prose that merely
        # mentions the marker is not.
        if _OUR_LINE_RE.search(line):
            yield Found(where, problem="not a complete JSON log line (truncated?)")
        return
    message = obj.get("message")
    if message == MARKER:
        yield _rebuild(obj.get("usage_record"), where)
    elif isinstance(message, str) and MARKER in message and depth < _MAX_NESTING:
        # A wrapper whose message is our log line, e.g. a Lambda JSON-format log event.
        yield from _from_line(message, where, depth + 1)


def _first_object(line: str, before: int) -> dict[str, Any] | None:
    """The first JSON object that starts before ``before`` (the log line holding the marker)."""
    decoder = json.JSONDecoder()
    start = line.find("{", 0, before)
    for _ in range(_MAX_OBJECT_STARTS):
        if start < 0:
            return None
        try:
            obj, _end = decoder.raw_decode(line, start)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return obj
        start = line.find("{", start + 1, before)
    return None


def _rebuild(data: Any, where: str) -> Found:
    from bedrock_spend.domain.usage_record import RECORD_VERSION, UsageRecord

    if not isinstance(data, dict):
        return Found(where, problem="no usage_record object in the line")
    version = data.get("v", RECORD_VERSION)
    if not isinstance(version, int) or version > RECORD_VERSION:
        return Found(
            where, problem=f"record version {version!r} is newer than this CLI reads ({RECORD_VERSION})"
        )
    try:
        record = UsageRecord.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as exc:
        return Found(where, problem=f"incomplete usage_record ({type(exc).__name__}: {exc})")
    if record.requested_at.tzinfo is None:
        return Found(where, problem="requestedAt has no time zone")
    return Found(where, record=record)


# --- commands ---


def replay(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    from botocore.exceptions import ClientError

    from bedrock_spend.aws.ledger import Ledger, record_key

    sources = args.files or ["-"]
    found = [item for name in sources for item in find_records(read_input(name), _label(name))]
    records = [(item.where, item.record) for item in found if item.record is not None]
    for item in found:
        if item.problem:
            print(f"warning: {item.where}: unreadable usage record: {item.problem}", file=sys.stderr)

    counts = {
        "found": len(found),
        "written": 0,
        "already_present": 0,
        "unreadable": len(found) - len(records),
    }
    counts["failed"] = 0
    if records:
        table = tables.usage()
        ledger = Ledger(table, client=aws.client("dynamodb"))
        for where, record in records:
            try:
                if args.dry_run:
                    response = ledger.client.get_item(
                        TableName=table, Key=record_key(record), ProjectionExpression="PK"
                    )
                    written = "Item" not in response
                else:
                    written = ledger.record(record)
            except ClientError as exc:
                counts["failed"] += 1
                error = exc.response.get("Error", {})
                print(
                    f"error: {where}: request {record.request_id} not written: "
                    f"{error.get('Code')}: {error.get('Message')}",
                    file=sys.stderr,
                )
                continue
            counts["written" if written else "already_present"] += 1

    labels = {
        "found": "records found",
        "written": "would write" if args.dry_run else "written",
        "already_present": "already present",
        "unreadable": "unreadable",
        "failed": "failed",
    }
    if args.format == "json":
        emit_record({**counts, "dry_run": args.dry_run}, labels, "json")
    else:
        if args.dry_run and args.format == "table":
            print("dry run: nothing was written")
        emit_record(counts, labels, args.format)
    return 1 if counts["failed"] else 0


def _label(name: str) -> str:
    return "<stdin>" if name == "-" else name


USAGE_COLUMNS = [
    Column("PRINCIPAL", "principal"),
    Column("CALLS", "calls", show=count, align_right=True),
    Column("UNPRICED", "unpriced_calls", show=count, align_right=True),
    *(Column(part.column, part.total, show=count, align_right=True) for part in PARTS),
    Column("COST USD", "cost_usd", align_right=True),
]
_COUNTS = ("calls", "unpriced_calls", *(part.total for part in PARTS))


def usage_row(item: dict[str, Any], month: str) -> dict[str, Any]:
    """A monthly total item (PK=TOTAL#<principal>, SK=MONTH#<month>) as a row."""
    from bedrock_spend.aws.ledger import month_total

    total = month_total(item)
    return {
        "principal": total.principal,
        "month": month,
        "calls": total.calls,
        "unpriced_calls": total.unpriced_calls,
        **total.counts,
        "cost_micro_usd": total.cost_micro_usd,
        "cost_usd": (total.cost_micro_usd / MICRO).quantize(SIX_PLACES),
    }


def usage(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    from bedrock_spend.aws.ledger import monthly_totals, total_key

    month = args.month or utcnow().strftime("%Y-%m")
    table = tables.usage()
    client = aws.client("dynamodb")
    items: list[dict[str, Any]] = []
    if args.principal:
        principal = args.principal if "::" in args.principal else principal_for(args.principal)
        item = client.get_item(TableName=table, Key=total_key(principal, month)).get("Item")
        items = [item] if item else []
    else:
        # A Scan reads the whole table (per-request records too); fine for an ops tool on
        # demand. Reports over many months will query by key instead.
        for page in client.get_paginator("scan").paginate(TableName=table, **monthly_totals(month)):
            items.extend(page.get("Items", []))
    rows = sorted(
        (usage_row(item, month) for item in items), key=lambda r: (-r["cost_micro_usd"], r["principal"])
    )
    if args.format != "table":
        emit_rows(rows, USAGE_COLUMNS, args.format)
        return 0
    print(f"month {month} (UTC), month to date")
    unpriced = sum(row["unpriced_calls"] for row in rows)
    if len(rows) > 1:
        total: dict[str, Any] = {"principal": "TOTAL"}
        for key in (*_COUNTS, "cost_micro_usd"):
            total[key] = sum(row[key] for row in rows)
        total["cost_usd"] = (total["cost_micro_usd"] / MICRO).quantize(SIX_PLACES)
        rows = [*rows, total]
    emit_rows(rows, USAGE_COLUMNS, "table", empty_message="no usage recorded")
    if unpriced:
        print(f"{unpriced} call(s) had no price: their cost is not in COST USD.")
    return 0


# --- parsers ---


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_group: AddGroup,
    add_command: AddCommand,
) -> None:
    group = add_group(
        "ledger",
        "maintain the usage ledger",
        """\
examples:
  bedrock-spend ledger replay proxy-logs.jsonl
""",
    )
    p = add_command(
        group,
        "replay",
        "write usage records the proxy could only log (USAGE_RECORD_UNSAVED) to the ledger",
        """\
examples:
  bedrock-spend ledger replay proxy.log
  aws logs filter-log-events --log-group-name /aws/lambda/bedrock-spend-proxy \\
      --filter-pattern '"USAGE_RECORD_UNSAVED"' > unsaved.json
  bedrock-spend ledger replay unsaved.json
  aws logs tail /aws/lambda/bedrock-spend-proxy --since 7d | bedrock-spend ledger replay --dry-run

Reads raw Powertools JSON lines, lines prefixed by a timestamp / request id (CloudWatch
Logs exports, also gzipped; filter-log-events --output text; aws logs tail), and
filter-log-events JSON documents. Every record is written once: records already in the
ledger are counted as "already present", so replaying the same logs again is safe.
--dry-run reads the ledger to tell what would be written, and writes nothing.
Exit status 1 if any record failed to write; unreadable lines are reported on stderr.
""",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="log files (default or -: stdin)")
    p.add_argument("--dry-run", action="store_true", help="count and check, write nothing")
    p.set_defaults(handler=replay)

    p = add_command(
        commands,
        "usage",
        "month-to-date calls, tokens and cost per principal",
        """\
examples:
  bedrock-spend usage
  bedrock-spend usage --month 2026-01 --format csv > 2026-01.csv
  bedrock-spend usage --principal alice          # same as --principal User::alice

COST USD is the priced spend (micro-USD / 1e6, six decimals); calls without a price are
counted in UNPRICED and not in the cost. Without --principal this scans the usage table
(fine on demand; not meant for frequent automated use).
""",
    )
    p.add_argument(
        "--month", type=values.month, metavar="YYYY-MM", help="calendar month, UTC (default: this month)"
    )
    p.add_argument(
        "--principal", type=values.principal, metavar="P", help="User::<name>, or just the username"
    )
    p.set_defaults(handler=usage)
