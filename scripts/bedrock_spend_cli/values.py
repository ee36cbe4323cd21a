"""Parsers for command-line values. Each raises ``argparse.ArgumentTypeError`` (exit 2).

Kept free of AWS imports: they run while arguments are parsed, before any command.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from bedrock_spend.domain.keys import KEY_PREFIX, utcnow

# Usernames become part of CloudWatch dimension values and DynamoDB keys (User::<name>).
_NAME_RE = re.compile(r"[A-Za-z0-9._@+\-]{1,128}")
_KEY_ID_RE = re.compile(r"kid_[A-Za-z0-9_\-]{1,64}")
_DURATION_RE = re.compile(r"(\d{1,6})([dhms])")
_DECIMAL_RE = re.compile(r"\d{1,12}(\.\d{1,6})?")
_MONTH_RE = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def username(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid username {value!r}: use 1-128 characters of letters, digits and . _ @ + -"
        )
    return value


def team(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid team {value!r}: use 1-128 characters of letters, digits and . _ @ + -"
        )
    return value


def key_id(value: str) -> str:
    if value.startswith(KEY_PREFIX):
        # Never echo it: it is a secret pasted by mistake.
        raise argparse.ArgumentTypeError(
            "that looks like a secret API key, not a key id (key ids start with kid_); "
            "if it was pasted somewhere shared, rotate it"
        )
    if not _KEY_ID_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid key id {value!r}: key ids look like kid_0123456789ab")
    return value


def budget(value: str) -> Decimal:
    """A positive amount of USD with at most 6 decimals, e.g. ``25`` or ``12.50``."""
    if not _DECIMAL_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid budget {value!r}: give a positive amount of USD such as 25 or 12.50"
        )
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already rules it out
        raise argparse.ArgumentTypeError(f"invalid budget {value!r}") from exc
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"invalid budget {value!r}: it must be greater than 0")
    return amount


def budget_or_none(value: str) -> Decimal | None:
    return None if value.lower() == "none" else budget(value)


def max_in_flight(value: str) -> int:
    """How many calls a key may have in flight at once: a whole number from 1 to 1000."""
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise argparse.ArgumentTypeError(
            f"invalid number of calls in flight {value!r}: give a whole number from 1 to 1000"
        )
    return int(value)


def max_in_flight_or_default(value: str) -> int | None:
    return None if value.lower() == "default" else max_in_flight(value)


def model_pattern(value: str) -> str:
    if not value or len(value) > 256 or any(ch.isspace() for ch in value):
        raise argparse.ArgumentTypeError(
            f"invalid model pattern {value!r}: give a model id or glob without spaces, "
            "e.g. 'anthropic.claude-*' or '*.amazon.nova-lite-v1:0'"
        )
    return value


def description(value: str) -> str:
    if len(value) > 1024 or _CONTROL_RE.search(value):
        raise argparse.ArgumentTypeError(
            "invalid description: at most 1024 characters, no control characters"
        )
    return value


def duration(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, or ``0``."""
    if value == "0":
        return timedelta(0)
    match = _DURATION_RE.fullmatch(value)
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid duration {value!r}: use a number and a unit, e.g. 30d, 12h, 90m, 45s (or 0)"
        )
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def instant(value: str, now: datetime | None = None) -> datetime:
    """An ISO date or datetime (UTC unless it has a zone) or a duration from now.

    A bare date means 00:00 UTC that day.
    """
    now = now or utcnow()
    if _DURATION_RE.fullmatch(value):
        return now + duration(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {value!r}: use an ISO date or datetime (2026-01-31, 2026-01-31T18:00Z) "
            "or a duration from now (30d, 12h, 90m)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def expiry(value: str, now: datetime | None = None) -> datetime:
    """A future instant: a key that is born expired is always a typo."""
    now = now or utcnow()
    when = instant(value, now)
    if when <= now:
        raise argparse.ArgumentTypeError(f"expiry {value!r} is not in the future")
    return when


def expiry_or_never(value: str) -> datetime | None:
    return None if value.lower() == "never" else expiry(value)


def principal(value: str) -> str:
    """``User::<name>``, or a username (the CLI adds ``User::``)."""
    if len(value) > 256 or not value or any(ch.isspace() for ch in value) or _CONTROL_RE.search(value):
        raise argparse.ArgumentTypeError(f"invalid principal {value!r}: e.g. User::alice or alice")
    return value


def month(value: str) -> str:
    if not _MONTH_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid month {value!r}: use YYYY-MM, e.g. 2026-01")
    return value
