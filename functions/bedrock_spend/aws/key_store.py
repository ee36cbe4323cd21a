"""Key records in DynamoDB (ApiKeyTable; partition key = hash of the key)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from bedrock_spend import aws
from bedrock_spend.domain.keys import KeyRecord, KeyStatus

KEY_ID_INDEX = "KeyIdIndex"


class KeyStoreError(RuntimeError):
    pass


class KeyExistsError(KeyStoreError):
    pass


def to_item(record: KeyRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        "KeyHash": record.key_hash,
        "KeyId": record.key_id,
        "Username": record.username,
        "CreatedAt": record.created_at.isoformat(),
        "Status": record.status,
    }
    optional: dict[str, Any] = {
        "Team": record.team or None,
        "ExpiresAt": record.expires_at.isoformat() if record.expires_at else None,
        "MonthlyBudgetUsd": record.monthly_budget_usd,
        "MaxInFlight": record.max_in_flight,
        "AllowedModels": list(record.allowed_models) or None,
        "Description": record.description or None,
        "RevokedAt": record.revoked_at.isoformat() if record.revoked_at else None,
        "ReplacedBy": record.replaced_by or None,
    }
    values.update({name: value for name, value in optional.items() if value is not None})
    return aws.marshal(values)


def from_item(item: dict[str, Any]) -> KeyRecord:
    values = aws.unmarshal(item)

    def s(name: str) -> str | None:
        value = values.get(name)
        return value if isinstance(value, str) else None

    def ts(name: str) -> datetime | None:
        value = s(name)
        return datetime.fromisoformat(value) if value else None

    budget = values.get("MonthlyBudgetUsd")
    max_in_flight = values.get("MaxInFlight")
    status = s("Status") or "active"
    models = values.get("AllowedModels")
    return KeyRecord(
        key_hash=s("KeyHash") or "",
        key_id=s("KeyId") or "",
        username=s("Username") or "",
        created_at=ts("CreatedAt") or datetime.fromtimestamp(0).astimezone(),
        status=cast(KeyStatus, status if status in ("active", "revoked") else "revoked"),
        team=s("Team"),
        expires_at=ts("ExpiresAt"),
        monthly_budget_usd=Decimal(budget) if isinstance(budget, Decimal) else None,
        allowed_models=tuple(v for v in models if isinstance(v, str)) if isinstance(models, list) else (),
        max_in_flight=int(max_in_flight) if isinstance(max_in_flight, Decimal) else None,
        description=s("Description") or "",
        revoked_at=ts("RevokedAt"),
        replaced_by=s("ReplacedBy"),
    )


class KeyStore:
    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table_name = table_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def get_by_hash(self, key_hash: str) -> KeyRecord | None:
        response = self.client.get_item(TableName=self.table_name, Key=aws.marshal({"KeyHash": key_hash}))
        item = response.get("Item")
        return from_item(item) if item else None

    def get_by_id(self, key_id: str) -> KeyRecord | None:
        response = self.client.query(
            TableName=self.table_name,
            IndexName=KEY_ID_INDEX,
            KeyConditionExpression="KeyId = :id",
            ExpressionAttributeValues=aws.marshal({":id": key_id}),
        )
        items = response.get("Items", [])
        if not items:
            return None
        # The index projects keys only; read the full record from the table.
        return self.get_by_hash(str(aws.unmarshal(items[0])["KeyHash"]))

    def create(self, record: KeyRecord) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_item(record),
                ConditionExpression="attribute_not_exists(KeyHash)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise KeyExistsError("a key with this hash already exists") from exc
            raise

    def save(self, record: KeyRecord) -> None:
        """Overwrite an existing record (it must exist: updates never resurrect deleted keys)."""
        self.client.put_item(
            TableName=self.table_name,
            Item=to_item(record),
            ConditionExpression="attribute_exists(KeyHash)",
        )

    def scan(self) -> Iterator[KeyRecord]:
        """Every key record. For the CLI only: never on the request path."""
        paginator = self.client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table_name):
            for item in page.get("Items", []):
                yield from_item(item)
