"""Lazily created, cached boto3 clients.

Never created at import time: tests start moto (or point AWS_ENDPOINT_URL_* at a local
server) before the first client exists, and cold starts only pay for clients they use.
Endpoints come from boto3's own configuration (e.g. AWS_ENDPOINT_URL_DYNAMODB), so the
same code talks to AWS, moto or the local stack.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(service, config=Config(**config) if config else None)  # type: ignore[call-overload]
