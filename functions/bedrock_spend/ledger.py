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
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from bedrock_spend import aws
from bedrock_spend.usage_record import UsageRecord

DAY_INDEX = "GSI1"


RECORDS_PREFIX = "USAGE#"
TOTAL_PREFIX = "TOTAL#"
MONTH_PREFIX = "MONTH#"
DAY_PREFIX = "DAY#"


def record_key(record: UsageRecord) -> dict[str, Any]:
    stamp = record.requested_at.astimezone(UTC).isoformat(timespec="milliseconds")
    return {"PK": {"S": RECORDS_PREFIX + record.principal_id}, "SK": {"S": f"{stamp}#{record.request_id}"}}


def total_key(principal_id: str, month: str) -> dict[str, Any]:
    return {"PK": {"S": TOTAL_PREFIX + principal_id}, "SK": {"S": MONTH_PREFIX + month}}


def principal_of_total(item: Mapping[str, Any]) -> str:
    """The principal a monthly total item belongs to."""
    return str(item["PK"]["S"]).removeprefix(TOTAL_PREFIX)


def records_of_day(day: date) -> dict[str, Any]:
    """Query arguments for one UTC day's request records, through the day index."""
    return {
        "IndexName": DAY_INDEX,
        "KeyConditionExpression": "GSI1PK = :day",
        "ExpressionAttributeValues": {":day": {"S": f"{DAY_PREFIX}{day.isoformat()}"}},
    }


def records_of_principal(principal_id: str, first: date, last: date) -> dict[str, Any]:
    """Query arguments for a principal's request records from ``first`` to ``last`` (UTC days)."""
    # Sort keys start with the ISO time: "<yyyy-mm-dd>T..." sorts between these two.
    return {
        "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": {
            ":pk": {"S": RECORDS_PREFIX + principal_id},
            ":lo": {"S": f"{first.isoformat()}T"},
            ":hi": {"S": f"{last.isoformat()}T~"},
        },
    }


def monthly_totals(month: str) -> dict[str, Any]:
    """Scan arguments for every principal's total of ``month``."""
    return {
        "FilterExpression": "SK = :sk AND begins_with(PK, :pk)",
        "ExpressionAttributeValues": {":sk": {"S": MONTH_PREFIX + month}, ":pk": {"S": TOTAL_PREFIX}},
    }


def in_flight_key(principal_id: str) -> dict[str, Any]:
    return {"PK": {"S": f"INFLIGHT#{principal_id}"}, "SK": {"S": "LEASES"}}


def _n(value: int | Decimal) -> dict[str, str]:
    return {"N": str(value)}


def to_item(record: UsageRecord, ttl_days: int) -> dict[str, Any]:
    usage, cost = record.usage, record.cost
    when = record.requested_at.astimezone(UTC)
    item: dict[str, Any] = {
        **record_key(record),
        "GSI1PK": {"S": f"DAY#{when.date().isoformat()}"},
        "GSI1SK": record_key(record)["SK"],
        "RequestId": {"S": record.request_id},
        "RequestedAt": {"S": when.isoformat(timespec="milliseconds")},
        "PrincipalId": {"S": record.principal_id},
        "KeyId": {"S": record.caller.key_id},
        "Username": {"S": record.caller.username},
        "Team": {"S": record.caller.team},
        "Operation": {"S": record.operation},
        "ModelId": {"S": record.model_id},
        "BaseModel": {"S": record.base_model or ""},
        "Region": {"S": record.region},
        "InputTokens": _n(usage.input_tokens or 0),
        "OutputTokens": _n(usage.output_tokens or 0),
        "CacheReadTokens": _n(usage.cache_read_tokens),
        "CacheWrite5mTokens": _n(usage.cache_write_5m_tokens),
        "CacheWrite1hTokens": _n(usage.cache_write_1h_tokens),
        "Images": _n(usage.images),
        "UsageSource": {"S": usage.source},
        "Priced": {"BOOL": cost.priced},
        "CostMicroUsd": _n(cost.total),
        "InputCostMicroUsd": _n(cost.input),
        "OutputCostMicroUsd": _n(cost.output),
        "CacheReadCostMicroUsd": _n(cost.cache_read),
        "CacheWriteCostMicroUsd": _n(cost.cache_write),
        "ImagesCostMicroUsd": _n(cost.images),
        "PriceBookVersion": {"S": cost.price_book_version},
        "ExpiresAt": _n(int((when + timedelta(days=ttl_days)).timestamp())),
    }
    optional = {
        "ServiceTier": record.service_tier,
        "Latency": record.latency,
        "UnpricedReason": cost.reason,
        "StreamError": record.stream_error,
        "ImageVariant": usage.image_variant,
    }
    item.update({name: {"S": value} for name, value in optional.items() if value})
    return item


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

        usage, cost = record.usage, record.cost
        values = {
            ":calls": _n(1),
            ":unpriced": _n(0 if cost.priced else 1),
            ":cost": _n(cost.total if cost.priced else Decimal(0)),
            ":input": _n(usage.input_tokens or 0),
            ":output": _n(usage.output_tokens or 0),
            ":cread": _n(usage.cache_read_tokens),
            ":cwrite": _n(usage.cache_write_tokens),
            ":images": _n(usage.images),
        }
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
                            "UpdateExpression": (
                                "ADD Calls :calls, UnpricedCalls :unpriced, CostMicroUsd :cost, "
                                "InputTokens :input, OutputTokens :output, CacheReadTokens :cread, "
                                "CacheWriteTokens :cwrite, Images :images"
                            ),
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
        value = response.get("Item", {}).get("CostMicroUsd", {}).get("N")
        return Decimal(value) if value is not None else Decimal(0)

    def records(self, principal_id: str, since: datetime) -> list[dict[str, Any]]:
        """The principal's request records from ``since`` on, oldest first (consistent reads)."""
        stamp = since.astimezone(UTC).isoformat(timespec="milliseconds")
        items: list[dict[str, Any]] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND SK >= :since",
            ExpressionAttributeValues={":pk": {"S": RECORDS_PREFIX + principal_id}, ":since": {"S": stamp}},
            ConsistentRead=True,
        ):
            items.extend(page.get("Items", []))
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
                    ExpressionAttributeValues={":expires": _n(expires_ms), ":cap": _n(cap)},
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
                    ExpressionAttributeValues={":leases": {"M": {lease_id: _n(expires_ms)}}},
                )
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        raise RuntimeError(f"the in-flight item of {principal_id} changed under every attempt")

    def _remove_expired(self, principal_id: str, now_ms: int) -> bool:
        """Remove leases past their expiry; True if any was removed."""
        from botocore.exceptions import ClientError

        item = self.client.get_item(
            TableName=self.table_name, Key=in_flight_key(principal_id), ConsistentRead=True
        ).get("Item", {})
        removed = False
        for lease_id, expiry in item.get("Leases", {}).get("M", {}).items():
            if int(expiry.get("N", "0")) > now_ms:
                continue
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=in_flight_key(principal_id),
                    UpdateExpression="REMOVE Leases.#id",
                    ConditionExpression="Leases.#id = :expiry",
                    ExpressionAttributeNames={"#id": lease_id},
                    ExpressionAttributeValues={":expiry": expiry},
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
