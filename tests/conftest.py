"""Shared fixtures: canonical events, a moto server for DynamoDB/CloudWatch, the Bedrock
emulator, and the environment the Lambda functions read.

AWS services are reached over real HTTP on 127.0.0.1 through boto3's own endpoint
variables (AWS_ENDPOINT_URL_DYNAMODB, ...), the same way the local stack runs them.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest

EVENTS = Path(__file__).resolve().parents[1] / "events"
KEY_TABLE = "test-api-keys"
USAGE_TABLE = "test-usage"


@cache
def _event(name: str) -> str:
    return (EVENTS / f"{name}.json").read_text(encoding="utf-8")


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of events/<name>.json."""
    return copy.deepcopy(json.loads(_event(name)))


def reset_caches() -> None:
    """Forget clients and the authorizer's settings cached per process (a Lambda runs one test)."""
    from bedrock_spend import aws, settings
    from bedrock_spend.authorizer import service

    for cached in (aws.client, aws.session, settings.authorizer_settings, service.key_store):
        cached.cache_clear()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    from bedrock_spend_local.emulator import BedrockEmulator

    emulator = BedrockEmulator()
    url = emulator.start()
    yield url
    emulator.stop()


@pytest.fixture
def emulator(emulator_url: str) -> Iterator[Any]:
    """The session's emulator, with an empty tally and no queued faults."""
    urllib.request.urlopen(urllib.request.Request(emulator_url + "/_emulator/reset", method="POST"))
    yield _EmulatorClient(emulator_url)


class _EmulatorClient:
    def __init__(self, url: str) -> None:
        self.url = url

    def billed(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/_emulator/billed") as response:
            return list(json.load(response))

    def fault(self, error: str, times: int = 1) -> None:
        request = urllib.request.Request(
            self.url + "/_emulator/faults",
            data=json.dumps({"error": error, "times": times}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request).read()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> Iterator[dict[str, str]]:
    """Fresh moto state with both tables, and the environment both functions read."""
    urllib.request.urlopen(urllib.request.Request(moto_url + "/moto-api/reset", method="POST"))
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
        "AWS_ENDPOINT_URL_CLOUDWATCH": moto_url,
        # The Bedrock control plane (application inference profiles) stays on loopback too.
        "AWS_ENDPOINT_URL_BEDROCK": moto_url,
        "AWS_ENDPOINT_URL_CLOUDFORMATION": moto_url,
        "API_KEY_TABLE": KEY_TABLE,
        "USAGE_TABLE": USAGE_TABLE,
        "POWERTOOLS_METRICS_NAMESPACE": "BedrockCostApportionment",
        "POWERTOOLS_SERVICE_NAME": "bedrock-spend-test",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    from bedrock_spend_local.tables import create_tables

    create_tables(
        boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1"),
        {"ApiKeyTable": KEY_TABLE, "UsageTable": USAGE_TABLE},
    )
    reset_caches()
    yield env
    reset_caches()


@pytest.fixture
def dynamodb(aws_env: dict[str, str]) -> Any:
    return boto3.client(
        "dynamodb", endpoint_url=aws_env["AWS_ENDPOINT_URL_DYNAMODB"], region_name="us-east-1"
    )


@pytest.fixture
def proxy_env(
    aws_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """aws_env plus Bedrock Runtime served by the emulator, and a fresh proxy app serving
    :func:`tests.proxy_client.invoke` (it reads the environment on its first request)."""
    from bedrock_spend.proxy.app import create_app
    from tests import proxy_client

    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emulator.url)
    reset_caches()
    with proxy_client.running(create_app()):
        yield {**aws_env, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": emulator.url}
