"""Lazily created, cached botocore clients for the functions' AWS calls other than Bedrock Runtime.

botocore alone, not boto3: boto3 adds resources and s3transfer to every cold start and
nothing here uses them.

Never created at import time: tests start moto (or point AWS_ENDPOINT_URL_* at a local
server) before the first client exists, and cold starts only pay for clients they use.
Endpoints come from botocore's own configuration (e.g. AWS_ENDPOINT_URL_DYNAMODB), so the
same code talks to AWS, moto or the local stack.

Timeouts and retries are short and bounded: these calls sit on the request path, some of
them after Bedrock has billed, where botocore's defaults (up to 10 attempts with backoff
for DynamoDB) could outlast API Gateway's 29 s. A call that still fails degrades (an
unresolved profile is unpriced; an unsaved record goes to the log) instead of waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import cache
from typing import Any

CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 2.0
MAX_ATTEMPTS = 2


# One Session for every client: a second Session loads botocore's data files again (about
# 30 ms of cold start). Creating clients from one Session is not thread-safe, hence the lock
# (the local stack runs both functions in one process).
_CLIENT_LOCK = threading.Lock()


@cache
def session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def new_client(service: str, config: Any) -> Any:
    with _CLIENT_LOCK:
        return session().create_client(service, config=config)


@cache
def client(service: str) -> Any:
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    return new_client(service, config)


# --- DynamoDB items: boto3's serializers, loaded on first use ----------------------------------
#
# boto3.dynamodb.types imports boto3 (about 30-40 ms on top of botocore, mostly s3transfer), so
# it is imported when an item is first built or read, not when a module is; prime() loads it
# ahead (the proxy calls it before a SnapStart snapshot). Each table's schema stays with its
# owner: ledger.py (usage table) and key_store.py (key table).


@cache
def _codec() -> tuple[Any, Any]:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def prime() -> None:
    _codec()


def marshal(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values (str, int, Decimal, bool, dict, list) as DynamoDB attribute values."""
    serialize = _codec()[0].serialize
    return {name: serialize(value) for name, value in values.items()}


def unmarshal(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values as Python values (numbers as Decimal)."""
    deserialize = _codec()[1].deserialize
    return {name: deserialize(value) for name, value in item.items()}
