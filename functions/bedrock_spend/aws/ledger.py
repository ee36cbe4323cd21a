"""The usage ledger (DynamoDB UsageTable): exactly one record per billed call, plus
per-principal monthly totals kept atomically for budget checks.

Item layout (single table, string keys PK/SK):

    request record  PK=USAGE#<principal>   SK=<requestedAt ISO ms>#<requestId>
                    GSI1PK=DAY#<yyyy-mm-dd> GSI1SK=<requestedAt>#<requestId>   (reports by day)
                    ExpiresAt=<epoch s>  (DynamoDB TTL, per-request records only)
    monthly total   PK=TOTAL#<principal>   SK=MONTH#<yyyy-mm>
    calls in flight PK=INFLIGHT#<principal> SK=LEASES  Leases={<lease id>: <expiry epoch ms>}

The record and the total change in one transaction whose put is conditional on the record
not existing, so a retried or replayed request id is a no-op and totals never count twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from bedrock_spend import aws
from bedrock_spend.aws import marshal, unmarshal
from bedrock_spend.domain.parts import COUNTS, PARTS
from bedrock_spend.domain.usage import Usage
from bedrock_spend.domain.usage_record import UsageRecord

DAY_INDEX = "GSI1"


RECORDS_PREFIX = "USAGE#"
TOTAL_PREFIX = "TOTAL#"
MONTH_PREFIX = "MONTH#"
DAY_PREFIX = "DAY#"
IN_FLIGHT_PREFIX = "INFLIGHT#"
LEASES_SK = "LEASES"

# Request-record attributes that summaries (reports) read; to_item writes them.
SUMMARY_ATTRIBUTES = (
    "RequestedAt",
    "PrincipalId",
    "Team",
    "ModelId",
    "Region",
    *(count.attribute for count in COUNTS),
    "Priced",
    "CostMicroUsd",
    "PriceBookVersion",
    "UnpricedReason",
    "UsageSource",
    "EndUser",
)


# --- keys and queries --------------------------------------------------------------------------


def _record_sk(record: UsageRecord) -> str:
    stamp = record.requested_at.astimezone(UTC).isoformat(timespec="milliseconds")
    return f"{stamp}#{record.request_id}"


def record_key(record: UsageRecord) -> dict[str, Any]:
    return marshal({"PK": RECORDS_PREFIX + record.principal_id, "SK": _record_sk(record)})


def total_key(principal_id: str, month: str) -> dict[str, Any]:
    return marshal({"PK": TOTAL_PREFIX + principal_id, "SK": MONTH_PREFIX + month})


def in_flight_key(principal_id: str) -> dict[str, Any]:
    return marshal({"PK": IN_FLIGHT_PREFIX + principal_id, "SK": LEASES_SK})


def records_of_day(day: date) -> dict[str, Any]:
    """Query arguments for one UTC day's request records, through the day index."""
    return {
        "IndexName": DAY_INDEX,
        "KeyConditionExpression": "GSI1PK = :day",
        "ExpressionAttributeValues": marshal({":day": f"{DAY_PREFIX}{day.isoformat()}"}),
    }


def records_of_principal(principal_id: str, first: date, last: date) -> dict[str, Any]:
    """Query arguments for a principal's request records from ``first`` to ``last`` (UTC days)."""
    # Sort keys start with the ISO time: "<yyyy-mm-dd>T..." sorts between these two.
    return {
        "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": marshal(
            {
                ":pk": RECORDS_PREFIX + principal_id,
                ":lo": f"{first.isoformat()}T",
                ":hi": f"{last.isoformat()}T~",
            }
        ),
    }


def monthly_totals(month: str) -> dict[str, Any]:
    """Scan arguments for every principal's total of ``month``."""
    return {
        "FilterExpression": "SK = :sk AND begins_with(PK, :pk)",
        "ExpressionAttributeValues": marshal({":sk": MONTH_PREFIX + month, ":pk": TOTAL_PREFIX}),
    }


def summary_projection() -> dict[str, Any]:
    """ProjectionExpression arguments that read a request record's :data:`SUMMARY_ATTRIBUTES`."""
    names = {f"#a{i}": name for i, name in enumerate(SUMMARY_ATTRIBUTES)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


# --- items -------------------------------------------------------------------------------------


# Parts a call did not use are left out of its record: readers take an absent count as 0, and
# the zeros of every part would take a typical text call's record past 1 KB (measured: 964
# bytes with them, about 750 without), doubling its write units. Input and output tokens, and
# their costs, are always stored: every call has them, and "not reported" reads as 0 here too.
_ALWAYS_STORED = frozenset(
    name
    for part in PARTS
    for count in part.counts
    if count.optional
    for name in (count.attribute, part.cost_attribute)
)


def to_item(record: UsageRecord, ttl_days: int) -> dict[str, Any]:
    usage, cost = record.usage, record.cost
    when = record.requested_at.astimezone(UTC)
    values: dict[str, Any] = {
        "PK": RECORDS_PREFIX + record.principal_id,
        "SK": _record_sk(record),
        "GSI1PK": f"{DAY_PREFIX}{when.date().isoformat()}",
        "GSI1SK": _record_sk(record),
        "RequestId": record.request_id,
        "RequestedAt": when.isoformat(timespec="milliseconds"),
        "PrincipalId": record.principal_id,
        "KeyId": record.caller.key_id,
        "Username": record.caller.username,
        "Team": record.caller.team,
        "Operation": record.operation,
        "ModelId": record.model_id,
        "BaseModel": record.base_model or "",
        "Region": record.region,
        **{
            count.attribute: n
            for count in COUNTS
            if (n := usage.count(count.field)) or count.attribute in _ALWAYS_STORED
        },
        "UsageSource": usage.source,
        "Priced": cost.priced,
        "CostMicroUsd": cost.total,
        **{
            part.cost_attribute: value
            for part in PARTS
            if (value := cost.of(part)) or part.cost_attribute in _ALWAYS_STORED
        },
        "PriceBookVersion": cost.price_book_version,
        "ExpiresAt": int((when + timedelta(days=ttl_days)).timestamp()),
    }
    optional = {
        "ServiceTier": record.service_tier,
        "Latency": record.latency,
        "UnpricedReason": cost.reason,
        "StreamError": record.stream_error,
        "ImageVariant": usage.image_variant,
        "EndUser": record.end_user,
    }
    values.update({name: value for name, value in optional.items() if value})
    return marshal(values)


def usage_of(values: Mapping[str, Any]) -> Usage:
    """The usage an unmarshalled request record holds (absent counts are 0)."""
    return Usage(
        image_variant=values.get("ImageVariant"),
        source=str(values.get("UsageSource", "none")),
        **{count.field: int(values.get(count.attribute, 0)) for count in COUNTS},
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """A request record as reports read it (:data:`SUMMARY_ATTRIBUTES`)."""

    day: str
    principal: str
    team: str
    model: str
    region: str
    counts: Mapping[str, int]  # each billed part's counts summed, by Part.total
    priced: bool
    cost_micro_usd: Decimal
    price_book_version: str
    unpriced_reason: str
    usage_source: str
    end_user: str = ""  # the caller's own end user, "" when the request named none

    @property
    def tokens(self) -> int:
        return sum(self.counts.get(part.total, 0) for part in PARTS if part.tokens)


def summary(item: Mapping[str, Any]) -> Summary:
    """A request record item (as read from DynamoDB) as a :class:`Summary`."""
    values = unmarshal(item)

    def s(name: str) -> str:
        return str(values.get(name, ""))

    return Summary(
        day=s("RequestedAt")[:10],
        principal=s("PrincipalId"),
        team=s("Team"),
        model=s("ModelId"),
        region=s("Region"),
        counts={
            part.total: sum(int(values.get(count.attribute, 0)) for count in part.counts) for part in PARTS
        },
        priced=bool(values.get("Priced", False)),
        cost_micro_usd=Decimal(values.get("CostMicroUsd", 0)),
        price_book_version=s("PriceBookVersion"),
        unpriced_reason=s("UnpricedReason"),
        usage_source=s("UsageSource"),
        end_user=s("EndUser"),
    )


@dataclass(frozen=True, slots=True)
class MonthTotal:
    """A principal's monthly total (PK=TOTAL#<principal>, SK=MONTH#<month>)."""

    principal: str
    month: str
    calls: int
    unpriced_calls: int
    counts: Mapping[str, int]  # by Part.total
    cost_micro_usd: Decimal


def month_total(item: Mapping[str, Any]) -> MonthTotal:
    values = unmarshal(item)
    return MonthTotal(
        principal=str(values["PK"]).removeprefix(TOTAL_PREFIX),
        month=str(values["SK"]).removeprefix(MONTH_PREFIX),
        calls=int(values.get("Calls", 0)),
        unpriced_calls=int(values.get("UnpricedCalls", 0)),
        counts={part.total: int(values.get(part.total_attribute, 0)) for part in PARTS},
        cost_micro_usd=Decimal(values.get("CostMicroUsd", 0)),
    )


def _month_total_update(record: UsageRecord) -> tuple[str, dict[str, str], dict[str, Any]]:
    """UpdateExpression, names and values that add a record to its monthly total."""
    usage, cost = record.usage, record.cost
    names = {f"#p{i}": part.total_attribute for i, part in enumerate(PARTS)}
    values: dict[str, Any] = {
        ":calls": 1,
        ":unpriced": 0 if cost.priced else 1,
        ":cost": cost.total if cost.priced else Decimal(0),
        **{f":p{i}": usage.total(part) for i, part in enumerate(PARTS)},
    }
    adds = ", ".join(f"#p{i} :p{i}" for i in range(len(PARTS)))
    expression = f"ADD Calls :calls, UnpricedCalls :unpriced, CostMicroUsd :cost, {adds}"
    return expression, names, marshal(values)


class Ledger:
    def __init__(self, table_name: str, client: Any | None = None, ttl_days: int = 400) -> None:
        self.table_name = table_name
        self.ttl_days = ttl_days
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def record(self, record: UsageRecord) -> bool:
        """Write the record and add it to its monthly total. False if it was already there."""
        from botocore.exceptions import ClientError

        expression, names, values = _month_total_update(record)
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": to_item(record, self.ttl_days),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": total_key(record.principal_id, record.month),
                            "UpdateExpression": expression,
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _is_duplicate(exc):
                return False
            raise
        return True

    def month_spend(self, principal_id: str, month: str) -> Decimal:
        """Month-to-date priced spend of a principal, in micro-USD (one GetItem)."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key=total_key(principal_id, month),
            ProjectionExpression="CostMicroUsd",
        )
        return Decimal(unmarshal(response.get("Item", {})).get("CostMicroUsd", 0))

    def records(self, principal_id: str, since: datetime) -> list[dict[str, Any]]:
        """The principal's request records from ``since`` on, oldest first (consistent reads), decoded."""
        stamp = since.astimezone(UTC).isoformat(timespec="milliseconds")
        items: list[dict[str, Any]] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND SK >= :since",
            ExpressionAttributeValues=marshal({":pk": RECORDS_PREFIX + principal_id, ":since": stamp}),
            ConsistentRead=True,
        ):
            items.extend(unmarshal(item) for item in page.get("Items", []))
        return items

    # --- calls in flight -------------------------------------------------------------------------

    def acquire_lease(self, principal_id: str, lease_id: str, *, cap: int, now_ms: int, ttl_ms: int) -> bool:
        """Take one of ``cap`` places for a call of ``principal_id``; False when all are taken.

        A lease carries its expiry, so the place of an environment that died mid-call frees
        itself: expired leases are removed (each only if unchanged) before giving up.
        """
        from botocore.exceptions import ClientError

        for _ in range(2):
            try:
                self._put_lease(principal_id, lease_id, cap, now_ms + ttl_ms)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
            if not self._remove_expired(principal_id, now_ms):
                return False
        return False

    def release_lease(self, principal_id: str, lease_id: str) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=in_flight_key(principal_id),
            UpdateExpression="REMOVE Leases.#id",
            ExpressionAttributeNames={"#id": lease_id},
        )

    def _put_lease(self, principal_id: str, lease_id: str, cap: int, expires_ms: int) -> None:
        """Add the lease if fewer than ``cap`` are held; ConditionalCheckFailed (ClientError) if not."""
        from botocore.exceptions import ClientError

        for _ in range(2):
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=in_flight_key(principal_id),
                    UpdateExpression="SET Leases.#id = :expires",
                    ConditionExpression="attribute_not_exists(Leases) OR size(Leases) < :cap",
                    ExpressionAttributeNames={"#id": lease_id},
                    ExpressionAttributeValues=marshal({":expires": expires_ms, ":cap": cap}),
                )
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ValidationException":
                    raise
            # No Leases map yet (a path into a missing map is invalid): create it with this lease,
            # unless another call just did, in which case the loop adds to that one.
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=in_flight_key(principal_id),
                    UpdateExpression="SET Leases = :leases",
                    ConditionExpression="attribute_not_exists(Leases)",
                    ExpressionAttributeValues=marshal({":leases": {lease_id: expires_ms}}),
                )
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        raise RuntimeError(f"the in-flight item of {principal_id} changed under every attempt")

    def _remove_expired(self, principal_id: str, now_ms: int) -> bool:
        """Remove leases past their expiry; True if any was removed."""
        from botocore.exceptions import ClientError

        item = unmarshal(
            self.client.get_item(
                TableName=self.table_name, Key=in_flight_key(principal_id), ConsistentRead=True
            ).get("Item", {})
        )
        removed = False
        for lease_id, expiry in item.get("Leases", {}).items():
            if int(expiry) > now_ms:
                continue
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=in_flight_key(principal_id),
                    UpdateExpression="REMOVE Leases.#id",
                    ConditionExpression="Leases.#id = :expiry",
                    ExpressionAttributeNames={"#id": lease_id},
                    ExpressionAttributeValues=marshal({":expiry": expiry}),
                )
                removed = True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        return removed


def _is_duplicate(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    if error.get("Code") != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    # Only the conditional put failing means "already recorded"; anything else is an error.
    return bool(reasons) and reasons[0].get("Code") == "ConditionalCheckFailed"
