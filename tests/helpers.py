"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


class LambdaContext:
    function_name = "test-function"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def emf_records(output: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format objects among printed lines."""
    records = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def log_records(output: str) -> list[dict[str, Any]]:
    """Powertools JSON log lines (not EMF) among printed lines."""
    records = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' not in line:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def emf_value(record: dict[str, Any], name: str) -> float:
    """A metric's value in an EMF record (Powertools writes single values as one-item lists)."""
    value = record[name]
    if isinstance(value, list):
        assert len(value) == 1, value
        return float(value[0])
    return float(value)


def header(response: dict[str, Any], name: str) -> str | None:
    """A header of a Lambda proxy response, whichever of the two header maps carries it."""
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return str(values[0])
    return None


def metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def claude_body(text: str = "Say hello in three languages.", max_tokens: int = 200) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


CliRun = Callable[..., CliResult]


def cli_runner(capsys: Any, *leading: str, before: Callable[[], None] | None = None) -> CliRun:
    """Run ``bedrock-spend`` in-process with ``leading`` arguments first; capture its output."""
    from bedrock_spend_cli.main import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        if before is not None:
            before()
        code = main([*leading, *argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


# --- what the proxy sends to and reads from Bedrock -------------------------------------------------


@dataclass
class BedrockTraffic:
    """Every HTTP request the proxy sent to Bedrock, and every body byte it read back."""

    requests: list[Any]  # httpx.Request, as sent (signed)
    received: list[bytes]


def spy_on_bedrock(monkeypatch: Any) -> BedrockTraffic:
    """Record the proxy's traffic with Bedrock: its httpx requests and Bedrock's raw body bytes."""
    import httpx

    from bedrock_spend.transport import forwarding

    traffic = BedrockTraffic([], [])
    send, chunks = httpx.AsyncClient.send, forwarding.Upstream.chunks

    async def spy_send(self: Any, request: Any, **kwargs: Any) -> Any:
        traffic.requests.append(request)
        return await send(self, request, **kwargs)

    async def spy_chunks(self: Any) -> Any:
        async for data in chunks(self):
            traffic.received.append(data)
            yield data

    monkeypatch.setattr(httpx.AsyncClient, "send", spy_send)
    monkeypatch.setattr(forwarding.Upstream, "chunks", spy_chunks)
    return traffic


# --- event streams ------------------------------------------------------------------------------


def stream_messages(data: bytes) -> tuple[list[Any], int]:
    """The event-stream messages in ``data`` (botocore's decoder) and the bytes left after the
    last complete one (0 for a stream that ends on a message boundary)."""
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages = list(buffer)
    return messages, len(data) - sum(m.prelude.total_length for m in messages)


def chunk_payloads(messages: list[Any]) -> list[dict[str, Any]]:
    """The model-native JSON of each ``chunk`` event (InvokeModelWithResponseStream)."""
    import base64

    return [
        json.loads(base64.b64decode(json.loads(m.payload)["bytes"]))
        for m in messages
        if m.headers.get(":event-type") == "chunk"
    ]


# --- a Bedrock endpoint that breaks -------------------------------------------------------------


@contextlib.contextmanager
def breaking_endpoint(answer: bytes = b"") -> Iterator[str]:
    """A one-connection HTTP server on 127.0.0.1 that reads a whole request, sends ``answer``
    (nothing, or the start of a reply) and closes the connection. Yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                more = connection.recv(65536)
                if not more:
                    return
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                more = connection.recv(65536)
                if not more:
                    return
                body += more
            if answer:
                connection.sendall(answer)
            connection.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=serve, name="breaking-endpoint", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting
        listener.close()
        thread.join(timeout=5)


@contextlib.contextmanager
def served_over_http(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1, as in Lambda behind the Web Adapter;
    yields its base URL. For what only a real HTTP connection shows (a cut-short body, a
    caller that hangs up)."""
    import uvicorn

    listener = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def usage_records(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger's per-request records among raw DynamoDB items, sorted by key, each with its
    unused parts filled in as 0: the ledger leaves them out, and its readers take them as 0."""
    from bedrock_spend.domain.parts import PARTS

    zeros = {
        name: {"N": "0"}
        for part in PARTS
        for name in (part.cost_attribute, *(c.attribute for c in part.counts))
    }
    records = [item for item in items if item["PK"]["S"].startswith("USAGE#")]
    return [{**zeros, **item} for item in sorted(records, key=lambda item: item["SK"]["S"])]
