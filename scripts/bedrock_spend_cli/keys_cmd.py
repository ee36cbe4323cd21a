"""``bedrock-spend keys ...``: create, list, show, update, revoke and rotate API keys.

A new key is printed exactly once (create, rotate); hashes are never printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bedrock_spend.domain.keys import KeyRecord, utcnow
from bedrock_spend_cli import values
from bedrock_spend_cli.config import Aws, CliError, Tables, UsageError, aws_error_message
from bedrock_spend_cli.output import Column, emit_record, emit_rows, text

if TYPE_CHECKING:
    from bedrock_spend.aws.key_store import KeyStore

AddGroup = Callable[[str, str, str], "argparse._SubParsersAction[argparse.ArgumentParser]"]
AddCommand = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", str, str, str], argparse.ArgumentParser
]

STATUSES = ("active", "revoked", "expired", "all")
CACHE_NOTE = (
    "The authorizer caches decisions per key for up to AuthorizerCacheTtl seconds (default 300), "
    "so the change takes effect within that time."
)


def _models(value: Any) -> str:
    return ",".join(value) if value else "any"


def _short(value: Any) -> str:
    result = text(value)
    return result if len(result) <= 40 else result[:39] + "…"


LIST_COLUMNS = [
    Column("KEY ID", "key_id"),
    Column("USERNAME", "username"),
    Column("TEAM", "team"),
    Column("STATUS", "status"),
    Column("CREATED", "created_at"),
    Column("EXPIRES", "expires_at"),
    Column("BUDGET USD", "monthly_budget_usd", align_right=True),
    Column("IN FLIGHT", "max_in_flight", align_right=True),
    Column("MODELS", "allowed_models", show=_models),
    Column("DESCRIPTION", "description", show=_short),
]

SHOW_LABELS = {
    "key_id": "key id",
    "principal": "principal",
    "username": "username",
    "team": "team",
    "status": "status",
    "created_at": "created",
    "expires_at": "expires",
    "monthly_budget_usd": "budget USD/month",
    "max_in_flight": "calls in flight (max)",
    "allowed_models": "models",
    "description": "description",
    "revoked_at": "revoked",
    "replaced_by": "replaced by",
}
SHOW_FORMATS = {"allowed_models": _models}


def status_of(record: KeyRecord, now: datetime) -> str:
    """active, revoked, or expired (active but past its expiry)."""
    if record.status != "active":
        return "revoked"
    return "expired" if record.is_expired(now) else "active"


def view(record: KeyRecord, now: datetime) -> dict[str, Any]:
    """Every field an operator may see: no secret, no hash."""
    return {
        "key_id": record.key_id,
        "principal": record.principal_id,
        "username": record.username,
        "team": record.team,
        "status": status_of(record, now),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "monthly_budget_usd": record.monthly_budget_usd,
        "max_in_flight": record.max_in_flight,
        "allowed_models": list(record.allowed_models),
        "description": record.description,
        "revoked_at": record.revoked_at,
        "replaced_by": record.replaced_by,
    }


def key_store(aws: Aws, tables: Tables) -> KeyStore:
    from bedrock_spend.aws.key_store import KeyStore

    return KeyStore(tables.keys(), client=aws.client("dynamodb"))


def load(store: KeyStore, key_id: str) -> KeyRecord:
    record = store.get_by_id(key_id)
    if record is None:
        raise CliError(f"no key with id {key_id} in table {store.table_name}")
    return record


def _print_new_key(key: str, record: KeyRecord, fmt: str) -> None:
    if fmt == "table":
        print()
        print(f"API key for {record.principal_id} (key id {record.key_id}):")
        print()
        print(f"    {key}")
        print()
        print("Store it now: this is the only time it is shown. It cannot be recovered, only rotated.")
        return
    emit_record(
        {"key_id": record.key_id, "principal": record.principal_id, "key": key},
        {"key_id": "key_id", "principal": "principal", "key": "key"},
        fmt,
    )
    print("warning: the key is shown only this once; store it now.", file=sys.stderr)


# --- commands ---


def create(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    from bedrock_spend.domain.keys import hash_key, mint_key, new_key_id

    store = key_store(aws, tables)
    key = mint_key()
    record = KeyRecord(
        key_hash=hash_key(key),
        key_id=new_key_id(),
        username=args.username,
        created_at=utcnow(),
        team=args.team,
        expires_at=args.expires,
        monthly_budget_usd=args.budget,
        max_in_flight=args.max_in_flight,
        allowed_models=tuple(args.model or ()),
        description=args.description or "",
    )
    store.create(record)
    if args.format == "table":
        print(f"Created key {record.key_id} for {record.principal_id}.")
        emit_record(view(record, record.created_at), SHOW_LABELS, "table", shows=SHOW_FORMATS)
    _print_new_key(key, record, args.format)
    return 0


def list_keys(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    now = utcnow()
    rows = [
        view(record, now)
        for record in key_store(aws, tables).scan()
        if (args.username is None or record.username == args.username)
        and (args.status == "all" or status_of(record, now) == args.status)
    ]
    rows.sort(key=lambda row: (row["username"], row["created_at"], row["key_id"]))
    emit_rows(rows, LIST_COLUMNS, args.format, empty_message="no keys")
    return 0


def show(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    now = utcnow()
    record = load(key_store(aws, tables), args.key_id)
    month = now.strftime("%Y-%m")
    data = view(record, now)
    data["month"] = month
    data["month_spend_usd"] = _month_spend_usd(aws, tables, record.principal_id, month)
    if data["month_spend_usd"] is None and args.format != "json":
        data["month_spend_usd"] = "n/a"
    labels = {**SHOW_LABELS, "month": "month", "month_spend_usd": "spend USD (month to date)"}
    emit_record(data, labels, args.format, shows=SHOW_FORMATS)
    return 0


def _month_spend_usd(aws: Aws, tables: Tables, principal_id: str, month: str) -> Decimal | None:
    """Month-to-date spend of the principal, or None when no usage table can be read."""
    from bedrock_spend.aws.ledger import Ledger

    try:
        table = tables.usage()
    except CliError:
        return None
    try:
        micro = Ledger(table, client=aws.client("dynamodb")).month_spend(principal_id, month)
    except Exception as exc:
        message = aws_error_message(exc, aws.endpoint_url)
        if message is None:
            raise
        print(f"warning: month-to-date spend unavailable: {message}", file=sys.stderr)
        return None
    return (micro / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def update(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    given = vars(args)
    changes: dict[str, Any] = {}
    if "budget" in given:
        changes["monthly_budget_usd"] = args.budget
    if "max_in_flight" in given:
        changes["max_in_flight"] = args.max_in_flight
    if "model" in given:
        changes["allowed_models"] = tuple(args.model)
    if given.get("clear_models"):
        changes["allowed_models"] = ()
    if "expires" in given:
        changes["expires_at"] = args.expires
    if "description" in given:
        changes["description"] = args.description
    if not changes:
        raise UsageError(
            "nothing to change: give --budget, --max-in-flight, --model, --clear-models, --expires "
            "or --description"
        )
    store = key_store(aws, tables)
    record = load(store, args.key_id)
    updated = replace(record, **changes)
    store.save(updated)
    now = utcnow()
    if args.format == "table":
        before, after = view(record, now), view(updated, now)
        print(f"Updated key {record.key_id} ({record.principal_id}):")
        for name in changes:
            label = SHOW_LABELS[name]
            show_value = _models if name == "allowed_models" else text
            print(f"  {label}: {show_value(before[name])} -> {show_value(after[name])}")
        print(CACHE_NOTE)
    else:
        emit_record(view(updated, now), SHOW_LABELS, args.format)
    return 0


def revoke(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    store = key_store(aws, tables)
    record = load(store, args.key_id)
    if record.status == "revoked":
        if args.format == "table":
            since = f" since {text(record.revoked_at)}" if record.revoked_at else ""
            print(f"Key {record.key_id} ({record.principal_id}) is already revoked{since}.")
        else:
            emit_record(view(record, utcnow()), SHOW_LABELS, args.format)
        return 0
    now = utcnow()
    revoked = record.revoke(now)
    store.save(revoked)
    if args.format == "table":
        print(f"Revoked key {record.key_id} ({record.principal_id}).")
        print(CACHE_NOTE)
    else:
        emit_record(view(revoked, now), SHOW_LABELS, args.format)
    return 0


def rotate(args: argparse.Namespace, aws: Aws, tables: Tables) -> int:
    from bedrock_spend.domain.keys import hash_key, mint_key, new_key_id

    store = key_store(aws, tables)
    old = load(store, args.key_id)
    if old.status == "revoked":
        raise CliError(
            f"key {old.key_id} is revoked; create a new key with `bedrock-spend keys create` instead"
        )
    if old.replaced_by:
        raise CliError(f"key {old.key_id} was already rotated to {old.replaced_by}; rotate that key instead")
    now = utcnow()
    if "expires" in vars(args):
        new_expiry = args.expires
    else:
        # Keep an end date the owner set (e.g. a contract's), unless it has passed.
        new_expiry = old.expires_at if old.expires_at and old.expires_at > now else None
    key = mint_key()
    new = KeyRecord(
        key_hash=hash_key(key),
        key_id=new_key_id(),
        username=old.username,
        created_at=now,
        team=old.team,
        expires_at=new_expiry,
        monthly_budget_usd=old.monthly_budget_usd,
        max_in_flight=old.max_in_flight,
        allowed_models=old.allowed_models,
        description=old.description,
    )
    store.create(new)
    if args.grace:
        grace_end = now + args.grace
        # Rotation shortens the old key's life, never extends it.
        if old.expires_at is not None and old.expires_at < grace_end:
            grace_end = old.expires_at
        retired = replace(old, expires_at=grace_end, replaced_by=new.key_id)
    else:
        retired = replace(old.revoke(now), replaced_by=new.key_id)
    try:
        store.save(retired)
    except BaseException:
        # The new key exists: its only copy must not be lost with the error.
        _print_new_key(key, new, args.format)
        print(
            f"warning: key {new.key_id} was created but old key {old.key_id} was not changed; "
            f"revoke it with `bedrock-spend keys revoke {old.key_id}`",
            file=sys.stderr,
        )
        raise
    if args.format == "table":
        print(f"Rotated key {old.key_id} ({old.principal_id}) to {new.key_id}.")
        if retired.status == "revoked":
            print(f"Old key {old.key_id} is revoked now.")
        else:
            print(f"Old key {old.key_id} keeps working until {text(retired.expires_at)}.")
    _print_new_key(key, new, args.format)
    return 0


# --- parsers ---


def register(add_group: AddGroup, add_command: AddCommand) -> None:
    group = add_group(
        "keys",
        "create, list, show, update, revoke and rotate API keys",
        """\
examples:
  bedrock-spend keys create --username alice --team search --budget 50
  bedrock-spend keys list --status active
  bedrock-spend keys show kid_0123456789ab
  bedrock-spend keys rotate kid_0123456789ab --grace 24h
""",
    )

    p = add_command(
        group,
        "create",
        "create a key and print it once",
        """\
examples:
  bedrock-spend keys create --username alice
  bedrock-spend keys create --username bob@example.com --team search --budget 25.50 \\
      --model 'anthropic.claude-*' --model '*.anthropic.claude-*' --expires 90d \\
      --description 'search relevance experiments'

The key is printed once; only its SHA-256 hash is stored. Budgets are per user
(principal User::<username>) and per calendar month (UTC). --model takes glob patterns
matched against the model id as called and against its base model id; no --model means
every model. --expires takes an ISO date (00:00 UTC that day), an ISO datetime (UTC unless
it has a zone) or a duration from now: 30d, 12h, 90m.
""",
    )
    p.add_argument(
        "--username", required=True, type=values.username, help="owner; the principal is User::<username>"
    )
    p.add_argument("--team", type=values.team, help="team, for reports")
    p.add_argument(
        "--budget", type=values.budget, metavar="USD", help="monthly budget in USD (default: none)"
    )
    p.add_argument(
        "--max-in-flight",
        type=values.max_in_flight,
        metavar="N",
        help="calls the key may have in flight at once (default: the deployment's MaxInFlightPerKey "
        "for keys with a budget, no cap otherwise)",
    )
    p.add_argument(
        "--model",
        action="append",
        type=values.model_pattern,
        metavar="PATTERN",
        help="allowed model id or glob (repeatable; default: any model)",
    )
    p.add_argument(
        "--expires", type=values.expiry, metavar="WHEN", help="expiry: ISO date/datetime or 30d/12h/90m"
    )
    p.add_argument("--description", type=values.description, metavar="TEXT", help="free text")
    p.set_defaults(handler=create)

    p = add_command(
        group,
        "list",
        "list keys (never secrets or hashes)",
        """\
examples:
  bedrock-spend keys list
  bedrock-spend keys list --username alice --status active
  bedrock-spend keys list --status expired --format json

Status "expired" means active but past its expiry. Reads the whole table (Scan).
""",
    )
    p.add_argument("--username", type=values.username, help="only this user's keys")
    p.add_argument("--status", choices=STATUSES, default="all", help="filter by status (default: all)")
    p.set_defaults(handler=list_keys)

    p = add_command(
        group,
        "show",
        "show one key and its user's month-to-date spend",
        """\
examples:
  bedrock-spend keys show kid_0123456789ab
  bedrock-spend keys show kid_0123456789ab --format json

The spend is the principal's (all keys of the user) for the current UTC month; "n/a"
when no usage table can be found.
""",
    )
    p.add_argument("key_id", metavar="KEY_ID", type=values.key_id, help="key id, e.g. kid_0123456789ab")
    p.set_defaults(handler=show)

    p = add_command(
        group,
        "update",
        "change a key's budget, models, expiry or description",
        """\
examples:
  bedrock-spend keys update kid_0123456789ab --budget 100
  bedrock-spend keys update kid_0123456789ab --budget none --expires never
  bedrock-spend keys update kid_0123456789ab --model 'amazon.nova-*' --model '*.amazon.nova-*'
  bedrock-spend keys update kid_0123456789ab --clear-models --description 'all models again'
""",
    )
    p.add_argument("key_id", metavar="KEY_ID", type=values.key_id, help="key id, e.g. kid_0123456789ab")
    p.add_argument(
        "--budget",
        type=values.budget_or_none,
        default=argparse.SUPPRESS,
        metavar="USD|none",
        help="monthly budget in USD, or none to remove it",
    )
    p.add_argument(
        "--max-in-flight",
        type=values.max_in_flight_or_default,
        default=argparse.SUPPRESS,
        metavar="N|default",
        help="calls the key may have in flight at once, or default for the deployment's",
    )
    models = p.add_mutually_exclusive_group()
    models.add_argument(
        "--model",
        action="append",
        type=values.model_pattern,
        default=argparse.SUPPRESS,
        metavar="PATTERN",
        help="replace the allow-list with these patterns (repeatable)",
    )
    models.add_argument(
        "--clear-models", action="store_true", default=argparse.SUPPRESS, help="allow every model"
    )
    p.add_argument(
        "--expires",
        type=values.expiry_or_never,
        default=argparse.SUPPRESS,
        metavar="WHEN|never",
        help="new expiry (ISO date/datetime or 30d/12h/90m), or never",
    )
    p.add_argument(
        "--description",
        type=values.description,
        default=argparse.SUPPRESS,
        metavar="TEXT",
        help="new description",
    )
    p.set_defaults(handler=update)

    p = add_command(
        group,
        "revoke",
        "revoke a key at once (idempotent)",
        """\
examples:
  bedrock-spend keys revoke kid_0123456789ab

Revoking an already revoked key succeeds and says so.
""",
    )
    p.add_argument("key_id", metavar="KEY_ID", type=values.key_id, help="key id, e.g. kid_0123456789ab")
    p.set_defaults(handler=revoke)

    p = add_command(
        group,
        "rotate",
        "replace a key with a new one; the old one works for a grace period",
        """\
examples:
  bedrock-spend keys rotate kid_0123456789ab --grace 24h
  bedrock-spend keys rotate kid_0123456789ab --grace 0      # old key revoked at once

The new key gets the old key's username, team, budget, models and description, and its
expiry unless --expires is given (an expiry already passed is not carried over). The old
key expires after the grace period (never later than it already would) and records the
new key id as replaced_by. Revoked keys, and keys already rotated, cannot be rotated.
""",
    )
    p.add_argument("key_id", metavar="KEY_ID", type=values.key_id, help="key id, e.g. kid_0123456789ab")
    p.add_argument(
        "--grace",
        required=True,
        type=values.duration,
        metavar="DURATION",
        help="how long the old key keeps working: 30d, 12h, 90m, or 0 to revoke it now",
    )
    p.add_argument(
        "--expires",
        type=values.expiry_or_never,
        default=argparse.SUPPRESS,
        metavar="WHEN|never",
        help="expiry of the new key (default: the old key's, if still ahead)",
    )
    p.set_defaults(handler=rotate)
