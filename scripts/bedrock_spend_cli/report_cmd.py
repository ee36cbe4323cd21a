"""``bedrock-spend report``: who spent what, read from the usage ledger.

The ledger is read with queries only, never a Scan: one Query of the day index (GSI1,
``GSI1PK=DAY#<yyyy-mm-dd>``) per day of the range, or, with ``--principal``, one Query of
the base table per principal (``PK=USAGE#<principal>``, ``SK`` between the range's bounds).
Money is summed in exact decimal micro-USD; unpriced calls are counted on their own and
never as $0.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Rounded, localcontext
from typing import Any, TextIO

from bedrock_spend.aws.ledger import Summary as Call
from bedrock_spend.domain.keys import principal_for, utcnow
from bedrock_spend.domain.parts import PARTS
from bedrock_spend_cli import values
from bedrock_spend_cli.config import Aws, CliError, Tables, UsageError
from bedrock_spend_cli.output import Column, count, dumps, render_table, text

AddCommand = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", str, str, str], argparse.ArgumentParser
]

# end-user: the caller's own user as its request named it (OpenAI `safety_identifier`/`user`,
# Anthropic `metadata.user_id`); "-" for calls that named none.
DIMENSIONS = ("principal", "team", "model", "day", "end-user")
PART_TOTALS = tuple(part.total for part in PARTS)  # the count columns, in the parts table's order
ZERO = Decimal(0)
SIX_PLACES = Decimal("0.000001")
# Sums must be exact: a step that would round raises instead.
EXACT = Context(prec=60, traps=[Inexact, Rounded, InvalidOperation])
_ROUND = Context(prec=60, traps=[InvalidOperation])

_WORDS = ("today", "yesterday", "this-month", "last-month")
_DAYS_RE = re.compile(r"([1-9]\d{0,3})d")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

# --- the range -----------------------------------------------------------------------------


def day_word(value: str) -> str:
    """An argparse type: a date (YYYY-MM-DD) or today, yesterday, this-month, last-month, <N>d."""
    word = value.strip().lower()
    if word in _WORDS or _DAYS_RE.fullmatch(word):
        return word
    if _DATE_RE.fullmatch(word):
        try:
            date.fromisoformat(word)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid date {value!r}: no such day") from None
        return word
    raise argparse.ArgumentTypeError(
        f"invalid day {value!r}: use a date (2026-01-31) or today, yesterday, this-month, "
        "last-month, or a number of days ending today (7d, 30d)"
    )


def span(word: str, today: date) -> tuple[date, date]:
    """The first and last day (both included) a :func:`day_word` names."""
    if word == "today":
        return today, today
    if word == "yesterday":
        day = today - timedelta(days=1)
        return day, day
    if word == "this-month":
        return today.replace(day=1), today
    if word == "last-month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    match = _DAYS_RE.fullmatch(word)
    if match:
        return today - timedelta(days=int(match.group(1)) - 1), today
    day = date.fromisoformat(word)
    return day, day


def resolve_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """``--from``/``--to`` as two days, both included (UTC).

    --from takes the first day of what it names, --to the last. Without --to the range ends
    where --from's words end (``--from last-month`` is all of last month) or, after a date,
    today. Without --from it starts on the first of --to's month; without both it is this month.
    """
    if start is None and end is None:
        start = "this-month"
    if start is None:
        assert end is not None
        last = span(end, today)[1]
        first = last.replace(day=1)
    else:
        first, start_end = span(start, today)
        if end is not None:
            last = span(end, today)[1]
        elif _DATE_RE.fullmatch(start):
            last = max(today, first)
        else:
            last = start_end
    if first > last:
        raise UsageError(f"--from ({first}) is after --to ({last})")
    return first, last


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- reading the ledger ----------------------------------------------------------------------


class Progress:
    """``read N records from D days`` on stderr, never on stdout.

    ``enabled=None`` means automatic: only when stderr is a terminal, and only once the read
    has taken a while (many pages). At most one update per ``interval`` seconds; on a terminal
    the line is rewritten in place.
    """

    def __init__(
        self,
        enabled: bool | None,
        stream: TextIO | None = None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream)
        self.enabled = self.tty if enabled is None else enabled
        self.delay = 1.0 if enabled is None else 0.0
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last: float | None = None
        self.shown = False

    def update(self, message: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.started < self.delay:
            return
        if self.last is not None and now - self.last < self.interval:
            return
        self.last = now
        self._write(message, final=False)

    def done(self, message: str) -> None:
        if self.enabled and (self.shown or self.delay == 0.0):
            self._write(message, final=True)

    def _write(self, message: str, *, final: bool) -> None:
        self.shown = True
        if self.tty:
            end = "\n" if final else ""
            self.stream.write(f"\r{message}\x1b[K{end}")
        else:
            self.stream.write(message + "\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def read_calls(
    client: Any,
    table: str,
    first: date,
    last: date,
    principals: Sequence[str] = (),
    progress: Progress | None = None,
) -> Iterator[Call]:
    """Every request record from ``first`` to ``last`` (UTC, both included), by Query."""
    from bedrock_spend.aws.ledger import records_of_day, records_of_principal, summary, summary_projection

    progress = progress or Progress(False)
    paginator = client.get_paginator("query")
    if principals:
        queries = [records_of_principal(principal, first, last) for principal in principals]
        unit = "principal"
    else:
        queries = [records_of_day(day) for day in days(first, last)]
        unit = "day"
    seen = 0
    for done, query in enumerate(queries):
        for page in paginator.paginate(TableName=table, **query, **summary_projection()):
            for item in page.get("Items", []):
                seen += 1
                yield summary(item)
            progress.update(f"read {seen:,} records ({unit} {done + 1} of {len(queries)})")
    progress.done(f"read {seen:,} records from {_plural(len(queries), unit)}")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


# --- totals ----------------------------------------------------------------------------------


@dataclass
class Totals:
    calls: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PART_TOTALS, 0))  # by Part.total
    cost_micro_usd: Decimal = ZERO  # priced calls only
    unpriced_calls: int = 0
    unpriced_tokens: int = 0
    versions: set[str] = field(default_factory=set)

    def add(self, call: Call) -> None:
        self.calls += 1
        for name in PART_TOTALS:
            self.counts[name] += call.counts.get(name, 0)
        if call.priced:
            with localcontext(EXACT):
                self.cost_micro_usd += call.cost_micro_usd
        else:
            self.unpriced_calls += 1
            self.unpriced_tokens += call.tokens
        if call.price_book_version:
            self.versions.add(call.price_book_version)


@dataclass
class Report:
    """The ledger between two days, summed by the chosen keys, by day x principal and by model."""

    first: date
    last: date
    group_by: tuple[str, ...]
    principals: tuple[str, ...] = ()
    groups: dict[tuple[str, ...], Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)
    daily: dict[tuple[str, str], Totals] = field(default_factory=dict)
    models: dict[str, Totals] = field(default_factory=dict)
    unpriced_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, call: Call) -> None:
        keys = tuple(_key(call, name) for name in self.group_by)
        for totals in (
            self.groups.setdefault(keys, Totals()),
            self.total,
            self.daily.setdefault((call.day, call.principal), Totals()),
            self.models.setdefault(call.model, Totals()),
        ):
            totals.add(call)
        if not call.priced:
            self.unpriced_reasons[call.unpriced_reason or "no reason recorded"] += 1

    def add_all(self, calls: Iterable[Call]) -> Report:
        for call in calls:
            self.add(call)
        return self

    def rows(self) -> list[dict[str, Any]]:
        """One row per group, ordered by the group keys."""
        return [
            {**dict(zip(self.group_by, keys, strict=True)), **figures(totals)}
            for keys, totals in sorted(self.groups.items())
        ]

    def total_row(self) -> dict[str, Any]:
        labels = {name: "" for name in self.group_by}
        labels[self.group_by[0]] = "TOTAL"
        return {**labels, **figures(self.total)}

    @property
    def versions(self) -> list[str]:
        return sorted(self.total.versions)


def _key(call: Call, name: str) -> str:
    if name == "end-user":
        return call.end_user or "-"
    return str(getattr(call, name))


def usd(micro: Decimal) -> Decimal:
    """Micro-USD as USD, exactly."""
    return micro.scaleb(-6)


def round6(amount: Decimal) -> Decimal:
    """USD with six decimals (half-even), for reading."""
    return amount.quantize(SIX_PLACES, rounding=ROUND_HALF_EVEN, context=_ROUND)


def usd6(micro: Decimal) -> Decimal:
    return round6(usd(micro))


def plain(value: Decimal) -> str:
    """A decimal as a plain string, never in exponent notation."""
    return format(value, "f")


def readable_usd(amount: Decimal) -> Decimal:
    """Six decimals, or three significant digits where that takes more (never a bare 0.000000)."""
    if amount == 0 or amount.adjusted() >= -4:
        return round6(amount)
    three = amount.quantize(
        Decimal(1).scaleb(amount.adjusted() - 2), rounding=ROUND_HALF_EVEN, context=_ROUND
    )
    # No padding zeros past the sixth decimal: 0.000029, not 0.0000290.
    digits = format(three, "f").rstrip("0").partition(".")[2]
    return three.quantize(Decimal(1).scaleb(-max(len(digits), 6)), context=_ROUND)


def cost_text(row: Mapping[str, Any], *, none: str) -> str:
    """A row's COST USD as read; ``none`` when every call was unpriced (its cost is unknown, not 0)."""
    if row["calls"] and row["unpriced_calls"] == row["calls"]:
        return none
    return plain(readable_usd(usd(row["cost_micro_usd"])))


def figures(totals: Totals) -> dict[str, Any]:
    return {
        "calls": totals.calls,
        **totals.counts,
        "cost_micro_usd": totals.cost_micro_usd,
        "cost_usd": usd(totals.cost_micro_usd),
        "unpriced_calls": totals.unpriced_calls,
        "unpriced_tokens": totals.unpriced_tokens,
        "price_book_versions": sorted(totals.versions),
    }


# --- output ----------------------------------------------------------------------------------

KEY_HEADERS = {
    "principal": "PRINCIPAL",
    "team": "TEAM",
    "model": "MODEL",
    "day": "DAY",
    "end-user": "END USER",
}
FIGURE_COLUMNS = [
    ("CALLS", "calls"),
    *((part.column, part.total) for part in PARTS),
    ("COST USD", "cost_usd"),
    ("UNPRICED CALLS", "unpriced_calls"),
    ("UNPRICED TOKENS", "unpriced_tokens"),
]
CSV_FIELDS = [
    "calls",
    *PART_TOTALS,
    "cost_usd",
    "cost_micro_usd",
    "unpriced_calls",
    "unpriced_tokens",
    "price_book_versions",
]


def _money(value: Any) -> str:
    """An exact USD amount with six decimals."""
    return plain(round6(value)) if isinstance(value, Decimal) else text(value)


def table_columns(group_by: Sequence[str]) -> list[Column]:
    keys = [Column(KEY_HEADERS[name], name) for name in group_by]
    return keys + [
        Column(header, key, show=_money if key == "cost_usd" else count, align_right=True)
        for header, key in FIGURE_COLUMNS
    ]


def describe_range(report: Report) -> str:
    where = f"{report.first} to {report.last} (UTC, both days included)"
    if report.principals:
        where += ", principals " + ", ".join(report.principals)
    return where


def render_text(report: Report) -> str:
    lines = [f"{describe_range(report)}, by {', '.join(report.group_by)}"]
    if not report.total.calls:
        lines.append("no usage recorded")
        return "\n".join(lines)
    rows = [{**row, "cost_usd": cost_text(row, none="-")} for row in [*report.rows(), report.total_row()]]
    lines.append(render_table(rows, table_columns(report.group_by)))
    lines.append(f"price book versions: {', '.join(report.versions) or '-'}")
    if report.total.unpriced_calls:
        lines.append(
            f"{report.total.unpriced_calls:,} call(s) had no price: their cost is unknown and not in "
            "COST USD (see UNPRICED CALLS / UNPRICED TOKENS). Reasons:"
        )
        lines.extend(f"  {n:,} x {reason}" for reason, n in report.unpriced_reasons.most_common())
    return "\n".join(lines)


def render_csv(report: Report) -> str:
    """Pure CSV: a header, one line per group, then the TOTAL line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.group_by, *CSV_FIELDS])
    for row in [*report.rows(), report.total_row()]:
        cells = [row[name] for name in report.group_by]
        for name in CSV_FIELDS:
            value = row[name]
            if name == "cost_usd":
                value = cost_text(row, none="")
            elif name == "price_book_versions":
                value = ";".join(value)
            elif isinstance(value, Decimal):
                value = plain(value)
            cells.append(value)
        writer.writerow(cells)
    return buffer.getvalue().rstrip("\n")


def _json_figures(row: dict[str, Any]) -> dict[str, Any]:
    return {key: plain(value) if isinstance(value, Decimal) else value for key, value in row.items()}


def render_json(report: Report) -> str:
    total = {key: value for key, value in report.total_row().items() if key not in report.group_by}
    return dumps(
        {
            "from": report.first.isoformat(),
            "to": report.last.isoformat(),
            "timezone": "UTC",
            "group_by": list(report.group_by),
            "principals": list(report.principals),
            "rows": [_json_figures(row) for row in report.rows()],
            "total": _json_figures(total),
            "price_book_versions": report.versions,
            "unpriced_reasons": dict(report.unpriced_reasons.most_common()),
        }
    )


# --- commands --------------------------------------------------------------------------------


def group_by(value: str) -> list[str]:
    """An argparse type: a comma-separated list of principal, team, model, day."""
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in DIMENSIONS]
    if not names or unknown:
        bad = ", ".join(repr(name) for name in unknown) or repr(value)
        raise argparse.ArgumentTypeError(
            f"invalid --by {bad}: choose from {', '.join(DIMENSIONS)} (comma-separated, e.g. principal,model)"
        )
    return names


def principals_of(args: argparse.Namespace) -> tuple[str, ...]:
    given = getattr(args, "principal", None) or []
    found = [p if "::" in p else principal_for(p) for p in given]
    return tuple(dict.fromkeys(found))


def build(args: argparse.Namespace, aws: Aws, tables: Tables, group: Sequence[str]) -> Report:
    """Read the range ``args`` names and sum it."""
    first, last = resolve_range(getattr(args, "start", None), getattr(args, "end", None), utcnow().date())
    principals = principals_of(args)
    report = Report(first, last, tuple(group), principals)
    progress = Progress(getattr(args, "progress", None))
    calls = read_calls(aws.client("dynamodb"), tables.usage(), first, last, principals, progress)
    return report.add_all(calls)


def report(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    chosen = [name for value in args.by or [["principal"]] for name in value]
    result = build(args, aws, tables, list(dict.fromkeys(chosen)))
    if args.html:
        from bedrock_spend_cli.report_html import render_html

        page = render_html(result, source=tables.usage(), generated_at=utcnow())
        try:
            with open(args.html, "w", encoding="utf-8") as handle:
                handle.write(page)
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror or exc}") from exc
        print(f"wrote {args.html} ({len(page.encode()):,} bytes)", file=sys.stderr)
    if args.format == "json":
        print(render_json(result))
    elif args.format == "csv":
        print(render_csv(result))
    else:
        print(render_text(result))
    return 0


# --- parsers ---------------------------------------------------------------------------------

RANGE_HELP = """\
--from / --to take a date (2026-01-31) or a word: today, yesterday, this-month,
last-month, or <N>d (the N days ending today, e.g. 7d, 30d). Days are UTC and both ends
are included. --from alone: a word covers what it names (--from last-month is all of last
month), a date runs to today. Neither: this month.
"""


def add_range_options(
    parser: argparse.ArgumentParser, *, suppress: bool = False, principals: bool = True
) -> None:
    """--from, --to, --progress and (for reports) --principal.

    ``suppress``: for a subcommand of ``report``, so it does not reset what was given before it.
    """
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--from",
        dest="start",
        type=day_word,
        default=default,
        metavar="DAY",
        help="first day: YYYY-MM-DD, today, yesterday, this-month, last-month, 7d, 30d",
    )
    parser.add_argument(
        "--to", dest="end", type=day_word, default=default, metavar="DAY", help="last day, included"
    )
    if principals:
        parser.add_argument(
            "--principal",
            action="append",
            type=values.principal,
            default=default,
            metavar="P",
            help="only this principal: User::<name> or the username (repeatable)",
        )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="progress on stderr (default: only on a terminal, for long reads)",
    )


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_command: AddCommand,
) -> None:
    from bedrock_spend_cli import report_reconcile

    p = add_command(
        commands,
        "report",
        "calls, tokens and cost by principal, team, model and day, from the ledger",
        f"""\
examples:
  bedrock-spend report                                   # this month, by principal
  bedrock-spend report --from last-month --by principal,model
  bedrock-spend report --from 2026-01-01 --to 2026-01-31 --by team,day --format csv > jan.csv
  bedrock-spend report --from 30d --by model --format json
  bedrock-spend report --principal alice --by end-user   # alice's app, split by its own users
  bedrock-spend report --from this-month --html spend.html
  bedrock-spend report reconcile --from last-month       # ledger vs AWS/Bedrock metrics

{RANGE_HELP}
COST USD is what priced calls cost (exact micro-USD / 1e6, six decimals, or three
significant digits for smaller sums; JSON keeps the exact strings cost_micro_usd and
cost_usd); "-" (CSV: empty) when every call of the row was unpriced. Calls without a
price are counted in UNPRICED CALLS / UNPRICED TOKENS, never as $0. TOTAL sums every
group. The price book versions that priced the calls are listed after the table (CSV:
price_book_versions, ";" separated). --html writes one self-contained page (chart of daily cost by principal,
cost by model, and the table) that opens offline; the usual output still goes to stdout.
Reads with Query only: GSI1 once per day, or the principal's records with --principal.
""",
    )
    add_range_options(p)
    p.add_argument(
        "--by",
        action="append",
        type=group_by,
        metavar="KEYS",
        help="group by principal, team, model, day, end-user; comma-separated (default: principal)",
    )
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report to FILE")
    p.set_defaults(handler=report)
    sub = p.add_subparsers(dest="report_command", metavar="SUBCOMMAND")
    report_reconcile.register(sub, add_command)
