"""Call the proxy app with an API Gateway REST event, the way the Lambda Web Adapter does.

The adapter turns the invocation event into an HTTP request for the app: the event's path
(still percent-encoded, no stage), its headers and body, and the event's ``requestContext``
as the JSON header ``x-amzn-request-context``, replacing any a caller sent. Tests keep
writing realistic events (``events/``) and get back what API Gateway would return, in the
shape of a Lambda proxy response, plus the raw body bytes.

The app runs in one event loop for the whole test (a TestClient used as a context manager),
as it does under uvicorn.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

_client: TestClient | None = None


@contextmanager
def running(app: Any) -> Iterator[TestClient]:
    """Serve ``app`` for the duration of the block; :func:`invoke` calls it."""
    global _client
    with TestClient(app, raise_server_exceptions=False) as client:
        _client = client
        try:
            yield client
        finally:
            _client = None


def request_of(event: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    """(method, raw path + query, headers, body) of an API Gateway REST event, as LWA builds them."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items() if v is not None}
    headers["x-amzn-request-context"] = json.dumps(event.get("requestContext") or {})
    body = event.get("body")
    if body is None:
        data = b""
    elif event.get("isBase64Encoded"):
        data = base64.b64decode(body)
    else:
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    query = event.get("queryStringParameters") or {}
    target = str(event.get("path") or "/")
    if query:
        target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return str(event.get("httpMethod") or "POST"), target, headers, data


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    """The app's answer to ``event``: statusCode, headers, body (text) and raw (bytes)."""
    if _client is None:
        raise RuntimeError("no proxy app is running: use the proxy_env fixture")
    method, target, headers, data = request_of(event)
    headers.pop("content-length", None)
    headers.pop("host", None)
    response = _client.request(method, target, headers=headers, content=data)
    raw = response.content
    return {
        "statusCode": response.status_code,
        "headers": dict(response.headers.items()),
        "body": raw.decode("utf-8", "replace"),
        "raw": raw,
    }
