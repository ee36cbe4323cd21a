"""Video generation with unmodified boto3 against the local stack over HTTPS: start_async_invoke
and get_async_invoke through the proxy (``AsyncOutputBuckets`` given as a parameter override, as
``make run --parameter-overrides`` does), the ledger row's seconds and exact cost, and the
refusals (a bucket outside the list, a model outside the allow-list) that never reach Bedrock."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bedrock_spend_local.server import LocalStack
from tests.e2e.conftest import cli, emulator_billed, running_stack
from tests.e2e.test_sdk import ledger_for, new_key, run_client

pytestmark = pytest.mark.e2e

REEL = "amazon.nova-reel-v1:1"
BUCKET = "team-videos"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    overrides = {"AsyncOutputBuckets": f"{BUCKET},archive-videos"}
    with running_stack(tmp_path_factory, "video", parameter_overrides=overrides) as local:
        yield local


def start_params(s3_uri: str = f"s3://{BUCKET}/kites/", model_id: str = REEL) -> dict[str, Any]:
    return {
        "modelId": model_id,
        "modelInput": {
            "taskType": "TEXT_VIDEO",
            "textToVideoParams": {"text": f"A red kite over the sea {uuid.uuid4().hex}"},
            "videoGenerationConfig": {"durationSeconds": 6, "fps": 24, "dimension": "1280x720", "seed": 1},
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": s3_uri}},
    }


def test_start_and_get_async_invoke_record_the_video_seconds(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    started = run_client(stack, key, "start_async_invoke", tmp_path, **start_params())
    assert "error" not in started, started
    arn = started["response"]["invocationArn"]
    assert arn.startswith("arn:aws:bedrock:") and ":async-invoke/" in arn

    status = run_client(stack, key, "get_async_invoke", tmp_path, invocationArn=arn)
    assert "error" not in status, status
    job = status["response"]
    assert (job["invocationArn"], job["status"]) == (arn, "Completed")
    assert job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"] == f"s3://{BUCKET}/kites/"

    [billed] = [call for call in emulator_billed(stack) if call.get("invocation_arn") == arn]
    assert (billed["operation"], billed["video_seconds"]) == ("StartAsyncInvoke", 6)
    assert billed["authorization_scheme"] != "Bearer"  # the proxy's credentials, not the key
    [item] = ledger_for(stack, principal)  # one row: the status read is not recorded
    assert item["Operation"]["S"] == "StartAsyncInvoke"
    assert (item["VideoSeconds"]["N"], item["ImageVariant"]["S"], item["Priced"]["BOOL"]) == (
        "6",
        "720p",
        True,
    )
    # 6 s x $0.08 per second of 720p video = $0.48, exactly
    assert Decimal(item["VideoSecondsCostMicroUsd"]["N"]) == Decimal(item["CostMicroUsd"]["N"]) == 480000


def test_a_bucket_outside_the_list_is_refused_before_bedrock(stack: LocalStack, tmp_path: Path) -> None:
    key, principal = new_key(stack)
    before = len(emulator_billed(stack))
    outcome = run_client(stack, key, "start_async_invoke", tmp_path, **start_params("s3://not-ours/x/"))
    assert outcome["error"]["code"] == "ValidationException"
    assert len(emulator_billed(stack)) == before
    assert ledger_for(stack, principal) == []


def test_a_model_outside_the_allow_list_is_refused_before_bedrock(stack: LocalStack, tmp_path: Path) -> None:
    username = f"sdk-{uuid.uuid4().hex[:10]}"
    code, out = cli(
        stack,
        "keys",
        "create",
        "--username",
        username,
        "--model",
        "amazon.nova-lite-v1:0",
        "--format",
        "json",
    )
    assert code == 0, out
    key = json.loads(out)["key"]
    before = len(emulator_billed(stack))
    outcome = run_client(stack, key, "start_async_invoke", tmp_path, **start_params())
    assert outcome["error"]["code"] == "ModelNotAllowed"
    assert len(emulator_billed(stack)) == before
    assert ledger_for(stack, f"User::{username}") == []


def test_list_async_invokes_is_refused(stack: LocalStack, tmp_path: Path) -> None:
    key, _ = new_key(stack)
    outcome = run_client(stack, key, "list_async_invokes", tmp_path)
    assert outcome["error"] == {"class": "AccessDeniedException", "code": "AccessDeniedException"}
