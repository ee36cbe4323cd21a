"""The local stack on free ports, shared by a module's tests, and HTTPS helpers.

The stack runs in this process (like `make run`, which runs it in its own), and every test
talks to it over real HTTPS on 127.0.0.1, trusting the CA the stack made at start.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import boto3
import pytest

from bedrock_spend_local.server import LocalStack

HTTP_TIMEOUT = 30


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def tls_context(stack: LocalStack | None = None) -> ssl.SSLContext:
    """A client context trusting the running stack's CA (the one in AWS_CA_BUNDLE)."""
    stack = stack or LocalStack.running()
    assert stack.ca_file is not None
    return ssl.create_default_context(cafile=str(stack.ca_file))


def http(
    url: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    context = tls_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=context) as response:
            return Reply(response.status, list(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, list(error.headers.items()), error.read())


def cli(stack: LocalStack, *arguments: str) -> tuple[int, str]:
    """Run the ``bedrock-spend`` CLI against the stack's moto server; (exit status, stdout)."""
    from bedrock_spend_cli.main import main

    out = StringIO()
    with redirect_stdout(out):
        code = main([*stack.cli_args(), *arguments])
    return code, out.getvalue()


def mint_key(stack: LocalStack, username: str) -> tuple[str, str]:
    """A new key for ``username`` from ``bedrock-spend keys create``: (key, key id)."""
    code, out = cli(stack, "keys", "create", "--username", username, "--format", "json")
    assert code == 0, out
    created = json.loads(out)
    return created["key"], created["key_id"]


def aws_client(stack: LocalStack, service: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=stack.moto_url,
        region_name=stack.region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def emulator_billed(stack: LocalStack) -> list[dict[str, Any]]:
    assert stack.emulator_url is not None
    with urllib.request.urlopen(stack.emulator_url + "/_emulator/billed", timeout=HTTP_TIMEOUT) as response:
        return list(json.load(response))


@contextmanager
def running_stack(tmp_path_factory: pytest.TempPathFactory, name: str, **config: Any) -> Iterator[LocalStack]:
    """A local stack on free ports for a module's tests; the environment restored after it."""
    saved = dict(os.environ)
    local = LocalStack(
        port=0,
        region="us-east-1",
        log_dir=tmp_path_factory.mktemp(f"{name}-logs"),
        echo_logs=False,
        access_log=False,
        **config,
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory, "local") as local:
        yield local


@pytest.fixture
def authorizer_ttl(stack: LocalStack) -> Iterator[Any]:
    """Set the authorizer cache TTL for one test (starting with an empty cache)."""
    assert stack.gateway is not None
    gateway = stack.gateway
    before = gateway.authorizer_ttl

    def set_ttl(seconds: int) -> None:
        gateway.authorizer_ttl = seconds
        gateway.cache.clear()

    yield set_ttl
    set_ttl(before)


def log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
