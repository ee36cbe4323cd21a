"""Template parameters on the local stack (`make run ARGS="--parameter-overrides ..."`), so the
deny policy and a profile mapping can be tried without deploying."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from bedrock_spend_local.server import LocalStack, parse_args
from tests.e2e.conftest import aws_client, emulator_billed, http, mint_key, running_stack
from tests.helpers import claude_body

pytestmark = pytest.mark.e2e

PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123def456"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
UNPRICED = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef012345"


@pytest.fixture(scope="module")
def strict_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    args = parse_args(
        [
            "--parameter-overrides",
            "UnpricedModelPolicy=deny",
            f"AppProfileModels={json.dumps({PROFILE: HAIKU})}",
        ]
    )
    overrides = dict(args.parameter_overrides)
    with running_stack(tmp_path_factory, "strict", parameter_overrides=overrides) as local:
        yield local


def invoke(stack: LocalStack, key: str, model_id: str) -> tuple[int, dict[str, object]]:
    reply = http(
        f"{stack.url}/model/{quote(model_id, safe='')}/invoke",
        body=json.dumps(claude_body("hello")).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    return reply.status, reply.json()


def test_the_deny_policy_refuses_an_unpriced_model_before_bedrock(strict_stack: LocalStack) -> None:
    key, _ = mint_key(strict_stack, "strict")
    before = len(emulator_billed(strict_stack))
    status, body = invoke(strict_stack, key, UNPRICED)
    assert status == 400
    assert isinstance(body["error"], dict) and body["error"]["type"] == "UnpricedModel"
    assert len(emulator_billed(strict_stack)) == before


def test_a_mapped_application_profile_is_priced_as_its_model(strict_stack: LocalStack) -> None:
    key, _ = mint_key(strict_stack, "profiled")
    status, _ = invoke(strict_stack, key, PROFILE)
    assert status == 200
    items = aws_client(strict_stack, "dynamodb").scan(TableName=strict_stack.tables["UsageTable"])["Items"]
    [item] = [i for i in items if i["PK"]["S"] == "USAGE#User::profiled"]
    assert item["BaseModel"]["S"] == HAIKU and item["Priced"]["BOOL"] is True


def test_unknown_or_invalid_parameters_are_refused_by_name() -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--parameter-overrides", "UnpricedModelPolicy=maybe"])
    assert caught.value.code == 2
