"""The authorizer Lambda end to end against a real DynamoDB API (moto server)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from bedrock_spend.authorizer import app
from bedrock_spend.aws.key_store import KeyStore
from bedrock_spend.domain.keys import KeyRecord, hash_key, mint_key, utcnow
from tests.conftest import KEY_TABLE, load_event
from tests.helpers import LambdaContext


def add_key(**overrides: Any) -> str:
    key = mint_key()
    fields: dict[str, Any] = {
        "key_hash": hash_key(key),
        "key_id": "kid_0a1b2c3d4e5f",
        "username": "alice",
        "created_at": utcnow(),
        "team": "search",
    }
    fields.update(overrides)
    KeyStore(KEY_TABLE).create(KeyRecord(**fields))
    return key


def authorize(token: str) -> dict[str, Any]:
    event = load_event("authorizer_token")
    event["authorizationToken"] = token
    return app.lambda_handler(event, LambdaContext())  # type: ignore[arg-type]


@pytest.mark.usefixtures("aws_env")
def test_known_key_is_allowed_for_every_route_with_context(capsys: pytest.CaptureFixture[str]) -> None:
    key = add_key()
    result = authorize(f"Bearer {key}")
    assert result["principalId"] == "User::alice"
    statement = result["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow"
    # Cached per key for all methods: the policy must cover the whole stage.
    assert statement["Resource"] == ["arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/*/*"]
    assert result["context"]["keyId"] == "kid_0a1b2c3d4e5f"
    assert result["context"]["username"] == "alice"
    assert key not in capsys.readouterr().out


@pytest.mark.usefixtures("aws_env")
def test_raw_key_without_bearer_is_allowed() -> None:
    key = add_key()
    assert authorize(key)["policyDocument"]["Statement"][0]["Effect"] == "Allow"


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("token", ["", "Bearer ", "bsk_" + "x" * 43, "Bearer not a key", "b" * 5000])
def test_missing_malformed_or_unknown_keys_are_unauthorized(
    token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_key()
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(token)
    out = capsys.readouterr().out
    if len(token.strip()) > 8:
        assert token.strip() not in out
    denials = [json.loads(line) for line in out.splitlines() if '"AuthorizerDenials"' in line]
    assert denials and denials[0]["Reason"] in ("unknown key", "missing or malformed key")


@pytest.mark.usefixtures("aws_env")
def test_revoked_key_gets_an_explicit_deny() -> None:
    key = add_key(status="revoked")
    result = authorize(f"Bearer {key}")
    assert result["policyDocument"]["Statement"][0]["Effect"] == "Deny"


@pytest.mark.usefixtures("aws_env")
def test_expired_key_gets_an_explicit_deny() -> None:
    key = add_key(expires_at=utcnow() - timedelta(seconds=1))
    assert authorize(f"Bearer {key}")["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def authorize_request(headers: dict[str, str]) -> dict[str, Any]:
    """The REQUEST event the Anthropic Messages routes send (events/authorizer_request.json)."""
    event = load_event("authorizer_request")
    event["headers"] = headers
    event["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
    return app.lambda_handler(event, LambdaContext())  # type: ignore[arg-type]


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("header", ["x-api-key", "X-Api-Key", "Authorization"])
def test_a_request_event_reads_the_key_from_x_api_key_or_authorization(header: str) -> None:
    key = add_key()
    value = f"Bearer {key}" if header == "Authorization" else key
    result = authorize_request({"content-type": "application/json", header: value})
    assert result["principalId"] == "User::alice"
    assert result["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert result["context"]["keyId"] == "kid_0a1b2c3d4e5f"


@pytest.mark.usefixtures("aws_env")
def test_authorization_wins_over_x_api_key() -> None:
    key = add_key()
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize_request({"Authorization": "Bearer not a key", "x-api-key": key})
    assert authorize_request({"Authorization": f"Bearer {key}", "x-api-key": "junk"})["principalId"]


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "bsk_" + "x" * 43}])
def test_a_request_event_without_a_known_key_is_unauthorized(headers: dict[str, str]) -> None:
    add_key()
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize_request(headers)


@pytest.mark.usefixtures("aws_env")
def test_a_revoked_key_in_x_api_key_gets_an_explicit_deny() -> None:
    key = add_key(status="revoked")
    assert authorize_request({"x-api-key": key})["policyDocument"]["Statement"][0]["Effect"] == "Deny"
